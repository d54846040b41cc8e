//! Recording retention: an organisation with `recording_retention_days` has recordings of calls
//! older than that deleted (file, then row) by a job that runs hourly. The call, its transcript
//! and events stay; the call page then shows no recording. The same job deletes outgoing webhook
//! deliveries finished more than [`WEBHOOK_LOG_DAYS`] ago.

use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::server::AppState;

/// How often the job runs.
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

/// Recordings deleted per organisation per run (the next run takes the rest).
const BATCH: u32 = 500;

/// Days the outgoing webhook delivery log keeps a delivered or failed delivery (its body carries
/// callers' names and numbers): a month is long enough to debug a receiver, replay by hand, or
/// answer "did you send it?".
pub const WEBHOOK_LOG_DAYS: i64 = 30;

/// One pass over every organisation. Returns the recordings deleted.
pub async fn run_once(state: &AppState) -> usize {
    let orgs = match state.store().list_orgs().await {
        Ok(o) => o,
        Err(e) => {
            warn!(error = %e, "retention: cannot list organisations; will try again");
            return 0;
        }
    };
    let mut deleted = 0;
    for org in orgs {
        let Some(days) = org.recording_retention_days else {
            continue;
        };
        let cutoff = Utc::now() - chrono::Duration::days(i64::from(days));
        let old = match state.store().recordings_before(org.id, cutoff, BATCH).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, org = %org.id.0, "retention: cannot list recordings");
                continue;
            }
        };
        for r in old {
            // The file first: a row without a file is a 404 on play; a file without a row would
            // be kept forever.
            if let Some(path) = state.recordings().local_path(&r.location)
                && let Err(e) = tokio::fs::remove_file(&path).await
                && e.kind() != std::io::ErrorKind::NotFound
            {
                warn!(error = %e, call_sid = %r.sid, "retention: cannot delete recording file");
                continue;
            }
            match state.store().delete_recording_row(org.id, &r.sid).await {
                Ok(_) => deleted += 1,
                Err(e) => warn!(error = %e, call_sid = %r.sid, "retention: cannot delete row"),
            }
        }
    }
    if deleted > 0 {
        info!(
            deleted,
            "retention: recordings past their organisation's retention deleted"
        );
    }
    let cutoff = Utc::now() - chrono::Duration::days(WEBHOOK_LOG_DAYS);
    match state.store().prune_webhook_deliveries(cutoff).await {
        Ok(0) => {}
        Ok(n) => info!(
            deleted = n,
            "retention: webhook deliveries older than {WEBHOOK_LOG_DAYS} days deleted"
        ),
        Err(e) => warn!(error = %e, "retention: cannot prune the webhook delivery log"),
    }
    deleted
}

/// The hourly job (the first pass a minute after start).
pub fn spawn(state: AppState, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut wait = Duration::from_secs(60);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            run_once(&state).await;
            wait = RETENTION_INTERVAL;
        }
    })
}
