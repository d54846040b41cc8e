//! The `voxanne` binary's library: configuration, the HTTP server, and the tools that drive it
//! (the call simulator and the load generator).
//!
//! Invariant: this is the only crate that knows HTTP, env vars and `main`. It wires
//! `telephony` (calls) to `storage` (records) and never does DSP or SQL itself.

pub mod caller;
pub mod chat;
pub mod clinic;
pub mod config;
pub mod engines;
pub mod load;
pub mod outbound;
pub mod receptionist;
pub mod server;
pub mod simulate;
pub mod staff;
pub mod tuning;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use storage::{Store, WriteQueue};
use telephony::call::CallEngines;

use crate::config::Config;
use crate::server::AppState;

/// A running server.
#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    pub state: AppState,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    queue_task: JoinHandle<()>,
    webhooks: staff::delivery::WebhookTasks,
}

/// Opens the store (running migrations), repairs recordings a crash left behind, and serves.
/// With `VOXANNE_ADDR` port 0 the OS picks a port; [`Server::addr`] says which.
pub async fn start(mut config: Config, engines: CallEngines) -> anyhow::Result<Server> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create VOXANNE_DATA_DIR {}",
            config.data_dir.display()
        )
    })?;
    let store = open_store_with_retry(&config).await?;
    let default_org = store
        .ensure_default_org()
        .await
        .context("cannot create the default organisation")?;
    let (queue, queue_task) = WriteQueue::spawn(
        store.clone(),
        config.data_dir.join("write-queue.spill.jsonl"),
    );
    let recovered = recover_staged_recordings(&config.data_dir, &queue).await;
    if recovered > 0 {
        warn!(
            recovered,
            "recordings of calls cut off by a crash were stored"
        );
    }
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.addr))?;
    let addr = listener.local_addr()?;
    if config.public_url == format!("http://{}", config.addr) {
        config.public_url = format!("http://{addr}");
    }
    info!(%addr, public_url = %config.public_url, backend = store.backend(), "voxanne listening");
    let embedder = load_embedder(&config)?;
    let keys = staff::crypto::Keys::load(
        config.secret_key.as_deref(),
        &config.secret_keys_previous,
        &config.data_dir,
    )
    .context("cannot load the server key (VOXANNE_SECRET_KEY)")?;
    let state = AppState::new(config, store, queue, engines, default_org, embedder, keys);
    // Before anything can publish: the enqueuer takes the bus's webhook side.
    let webhooks = staff::delivery::spawn(state.clone());
    state.warm_caches().await;
    let shutdown = CancellationToken::new();
    let app = server::router(state.clone());
    staff::retention::spawn(state.clone(), shutdown.clone());
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { token.cancelled().await })
        .await;
        if let Err(e) = served {
            warn!(error = %e, "server stopped with an error");
        }
    });
    Ok(Server {
        addr,
        state,
        shutdown,
        task,
        queue_task,
        webhooks,
    })
}

/// The knowledge engine: required with the embedded engines (`voxanne models fetch` gets it);
/// with the test engines, used when the model is there.
fn load_embedder(config: &Config) -> anyhow::Result<Option<::engines::minilm::MiniLm>> {
    /// Two model instances: an embedding takes a few ms, so two cover many concurrent calls.
    const EMBEDDER_SESSIONS: usize = 2;
    match ::engines::minilm::MiniLm::load_default(&config.models_dir, EMBEDDER_SESSIONS) {
        Ok(m) => Ok(Some(m)),
        Err(e) if config.engines == crate::config::EngineChoice::Embedded => {
            Err(anyhow::Error::new(e).context("cannot load the knowledge embedding model"))
        }
        Err(e) => {
            info!(error = %e, "no knowledge embedding model; knowledge questions get a message offer");
            Ok(None)
        }
    }
}

/// How long `serve` keeps trying to reach the database at start (a database restarting with
/// the box, or a container starting next to us) before giving up with the error.
const DATABASE_START_WAIT: Duration = Duration::from_secs(60);

async fn open_store_with_retry(config: &Config) -> anyhow::Result<Store> {
    let deadline = tokio::time::Instant::now() + DATABASE_START_WAIT;
    let mut backoff = Duration::from_millis(250);
    loop {
        match Store::open(config.database_url.as_deref(), &config.data_dir).await {
            Ok(store) => return Ok(store),
            Err(e) if tokio::time::Instant::now() + backoff < deadline => {
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "database not reachable yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot open the database (tried for {} s)",
                    DATABASE_START_WAIT.as_secs()
                )));
            }
        }
    }
}

impl Server {
    /// Stops accepting, lets calls in progress finish (up to `grace`), and writes out every
    /// queued record.
    pub async fn shutdown(self, grace: Duration) {
        self.shutdown.cancel();
        let left = self.state.drain_calls(grace).await;
        if left > 0 {
            warn!(left, "calls still running at shutdown");
        }
        let _ = self.task.await;
        // Calls that ended publish their `call.ended` once their writes landed (which needs
        // the write queue running): waited for before the queue and the webhook enqueuer stop.
        let publishers = self.state.publishers();
        publishers.close();
        if tokio::time::timeout(Duration::from_secs(10), publishers.wait())
            .await
            .is_err()
        {
            warn!(
                left = publishers.len(),
                "events still being published at shutdown; they may not reach webhooks"
            );
        }
        if let Err(e) = self.state.queue().shutdown(Duration::from_secs(10)).await {
            warn!(error = %e, "write queue did not drain; the rest is in the spill file");
        }
        let _ = self.queue_task.await;
        // Last: what was published above is queued for delivery.
        self.webhooks.shutdown(Duration::from_secs(15)).await;
    }
}

/// Stores the recordings a crash left in staging (their calls never ended cleanly). Only staged
/// files can have a stale header: a recording is finalised before it leaves staging, so nothing
/// else is read at start. Each staged file is repaired, moved to permanent storage, and gets its
/// recording row and an end for its call (`interrupted`; a call that did end keeps its first end,
/// writes being idempotent). Returns how many were stored.
pub async fn recover_staged_recordings(data_dir: &Path, queue: &WriteQueue) -> usize {
    use media::recording::{RecordingError, RepairOutcome, repair};
    use storage::{LocalRecordingStore, RecordingRecord, RecordingStore, WriteOp};
    let store = LocalRecordingStore::in_data_dir(data_dir);
    let staged = match store.list_staged() {
        Ok(staged) => staged,
        Err(e) => {
            warn!(error = %e, "cannot list staged recordings");
            return 0;
        }
    };
    let mut recovered = 0;
    for (org, sid, path) in staged {
        let repaired = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(RecordingError::from)
            .and_then(|mut f| repair(&mut f));
        match repaired {
            Ok(RepairOutcome::Repaired { frames }) => {
                info!(path = %path.display(), frames, "recording cut off by a crash repaired")
            }
            Ok(RepairOutcome::AlreadyValid { .. }) => {}
            Ok(RepairOutcome::NotWav) | Err(_) => {
                warn!(path = %path.display(), "staged recording is not a readable WAV; left alone");
                continue;
            }
        }
        let (rate, frames) = match hound::WavReader::open(&path) {
            Ok(r) => (r.spec().sample_rate, u64::from(r.duration())),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "staged recording unreadable; left alone");
                continue;
            }
        };
        let duration_ms = (frames * 1000 / u64::from(rate.max(1))) as i64;
        match store.put(org, &sid).await {
            Ok(stored) => {
                queue.submit(WriteOp::CallEnded {
                    org,
                    sid: sid.clone(),
                    ended_at: chrono::Utc::now(),
                    end_reason: "interrupted".into(),
                    duration_ms,
                });
                queue.submit(WriteOp::Recording(RecordingRecord {
                    org,
                    sid,
                    location: stored.location,
                    channels: 2,
                    sample_rate: rate as i32,
                    duration_ms,
                    sha256: stored.sha256,
                }));
                recovered += 1;
            }
            Err(e) => {
                warn!(path = %path.display(), error = %e, "staged recording could not be stored")
            }
        }
    }
    recovered
}
