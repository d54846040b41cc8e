//! Outgoing webhook delivery: the event bus's webhook side into the durable queue (the
//! **enqueuer**), and the queue out to each endpoint over HTTP (the **worker**).
//!
//! - An event's id (`evt_…`, the idempotency key) is derived from what it is about (the
//!   organisation, the type, the call's sid or the appointment's or message's id), so the same
//!   fact published twice is queued once per endpoint (`UNIQUE (endpoint_id, event_id)`).
//! - The body is fixed when the event is queued and stored as sent; each attempt signs it anew
//!   with the time of that attempt: `Voxanne-Signature: t=<unix seconds>,v1=<hex
//!   HMAC-SHA256(secret, "<t>.<body>")>`, keyed by the endpoint's secret (`whsec_…`, the string as
//!   returned when the endpoint was made).
//! - A 2xx is recorded as delivered and the row is never claimed again. Anything else (another
//!   status, a timeout, a refused connection) schedules the next attempt after the configured
//!   wait (`VOXANNE_WEBHOOK_RETRIES`, each drawn up to 20% longer); after the last, the delivery
//!   is failed. Redirects are not followed (a 3xx is a failure).
//! - At least once, not exactly once, from the receiver's side: a process killed between the
//!   receiver's 2xx and the database recording it sends that delivery again when its lease ends.
//!   Receivers dedupe on `Voxanne-Event-Id`. From ours, a recorded 2xx is final.
//! - An event lives in memory only between its publication and the enqueuer's insert (a few
//!   milliseconds; longer while the database is down, in the bus's bounded channel). A process
//!   killed in that window loses it; once the row is written it survives restarts.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use storage::{AttemptOutcome, ClaimedDelivery, OrgId, StoreError};
use tokio::sync::{Notify, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use super::crypto::{self, Keys, Sealed};
use super::events::{Published, StaffEvent};
use crate::server::AppState;

/// The signature header: `t=<unix seconds>,v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "Voxanne-Signature";
/// The event's id: the receiver's idempotency key.
pub const EVENT_ID_HEADER: &str = "Voxanne-Event-Id";
pub const EVENT_TYPE_HEADER: &str = "Voxanne-Event-Type";

/// What a webhook endpoint's secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";

/// How far a receiver should let the signature's time be from its clock (documented for
/// receivers, used by [`verify_signature`]'s callers): 5 minutes, as Stripe and Svix do.
pub const SIGNATURE_TOLERANCE_SECS: i64 = 300;

/// Deliveries in flight at once (across all endpoints). 8: a slow receiver (up to the timeout
/// each) holds one slot, so a few slow endpoints do not stop the others.
pub const CONCURRENCY: usize = 8;

/// Longest the worker sleeps between looks at the queue when nothing is due sooner: other
/// processes on the same database queue events too, and a crashed worker's leases end.
const POLL_MAX: Duration = Duration::from_secs(1);

/// A claim holds a delivery this long beyond the attempt's timeout: long enough that an attempt
/// in progress on a busy machine is never claimed again (which would send it twice), short enough
/// that a crashed process's deliveries go out a minute later.
const LEASE_MARGIN: Duration = Duration::from_secs(60);

/// Bytes of a failed answer's body kept in the delivery log (`last_error`), for staff debugging
/// their receiver.
const ERROR_BODY_BYTES: usize = 200;

/// The sealing context of an endpoint's secret: a ciphertext copied to another endpoint's row
/// does not open.
pub fn secret_context(org: OrgId, endpoint: Uuid) -> String {
    format!("org/{}/webhook/{endpoint}", org.0)
}

/// The retry schedule: the waits after each failed attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    waits: Vec<Duration>,
}

impl RetryPolicy {
    pub fn new(waits: Vec<Duration>) -> Self {
        Self { waits }
    }

    /// Attempts before a delivery is failed.
    pub fn max_attempts(&self) -> i32 {
        self.waits.len() as i32 + 1
    }

    /// How long to wait after attempt `attempt` (1 = the first) failed, or `None` when that was
    /// the last. `jitter` in `[0, 1)` lengthens the wait by up to 20%.
    pub fn wait_after(&self, attempt: i32, jitter: f64) -> Option<Duration> {
        let i = usize::try_from(attempt.checked_sub(1)?).ok()?;
        let base = *self.waits.get(i)?;
        Some(base.mul_f64(1.0 + 0.2 * jitter.clamp(0.0, 1.0)))
    }
}

/// A uniform number in `[0, 1)` from the OS (jitter needs no seedable generator).
fn jitter() -> f64 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

/// The signature header's value for `body` sent at unix time `t`.
pub fn signature_header(secret: &str, t: i64, body: &str) -> String {
    let mac = crypto::hmac_sha256_hex(secret.as_bytes(), format!("{t}.{body}").as_bytes());
    format!("t={t},v1={mac}")
}

/// Why a signature was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no t= or no v1= in the signature header")]
    Malformed,
    #[error("signed {0} s away from now, beyond the tolerance")]
    Stale(i64),
    #[error("no v1 signature matches")]
    Mismatch,
}

/// What a receiver does: `header` must carry a `t` within `tolerance_secs` of `now` and a `v1`
/// that is the HMAC of `"<t>.<body>"` under `secret` (several `v1`s are allowed: any may match).
pub fn verify_signature(
    secret: &str,
    header: &str,
    body: &str,
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => sigs.push(v),
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if sigs.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - t).abs() > tolerance_secs {
        return Err(SignatureError::Stale(now - t));
    }
    let signed = format!("{t}.{body}");
    if sigs
        .iter()
        .any(|s| crypto::hmac_sha256_verify_hex(secret.as_bytes(), signed.as_bytes(), s))
    {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The event's idempotency key: `evt_` and 32 hex digits of SHA-256 over the organisation, the
/// type and what the event is about. `None` for events that are not webhooks.
pub fn event_id(org: OrgId, event: &StaffEvent) -> Option<String> {
    let id_of = |v: &Value| match &v["id"] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let about = match event {
        StaffEvent::CallStarted { sid, .. } | StaffEvent::CallEnded { sid, .. } => sid.clone(),
        StaffEvent::AppointmentBooked { appointment } => id_of(appointment),
        StaffEvent::AppointmentChanged {
            change,
            appointment,
        } => format!("{change}/{}", id_of(appointment)),
        StaffEvent::MessageTaken { message } => id_of(message),
        StaffEvent::Turn { .. } | StaffEvent::CallEvent { .. } => return None,
    };
    // An event about nothing nameable (never made by our publishers) is still delivered once.
    let about = if about.is_empty() || about.ends_with('/') {
        Uuid::new_v4().to_string()
    } else {
        about
    };
    let digest = crypto::sha256_hex(&format!("{}/{}/{about}", org.0, event.name()));
    Some(format!("evt_{}", &digest[..32]))
}

/// The JSON body: `{"id", "type", "created_at", "org_id", "data"}`, `data` being the event's own
/// fields.
pub fn payload(event_id: &str, p: &Published) -> String {
    let mut data = serde_json::to_value(&p.event).unwrap_or_else(|_| json!({}));
    if let Some(map) = data.as_object_mut() {
        map.remove("type");
    }
    json!({
        "id": event_id,
        "type": p.event.name(),
        "created_at": p.at,
        "org_id": p.org,
        "data": data,
    })
    .to_string()
}

/// The two tasks, and how to stop them.
#[derive(Debug)]
pub struct WebhookTasks {
    shutdown: CancellationToken,
    enqueuer: JoinHandle<()>,
    worker: JoinHandle<()>,
}

impl WebhookTasks {
    /// Stops taking new work: the enqueuer writes what the bus already handed it, the worker
    /// lets attempts in flight finish (each bounded by the timeout). Waits at most `grace`.
    pub async fn shutdown(self, grace: Duration) {
        self.shutdown.cancel();
        let both = async {
            let _ = self.enqueuer.await;
            let _ = self.worker.await;
        };
        if tokio::time::timeout(grace, both).await.is_err() {
            warn!("webhook tasks still busy at shutdown; leased deliveries go out after a restart");
        }
    }
}

/// Starts the enqueuer (takes the bus's webhook side: call before anything is published) and
/// the worker.
pub fn spawn(state: AppState) -> WebhookTasks {
    let shutdown = CancellationToken::new();
    let notify = Arc::new(Notify::new());
    let rx = state.events().webhook_receiver();
    let enqueuer = tokio::spawn(enqueue_loop(
        state.clone(),
        rx,
        notify.clone(),
        shutdown.clone(),
    ));
    let worker = tokio::spawn(deliver_loop(state, notify, shutdown.clone()));
    WebhookTasks {
        shutdown,
        enqueuer,
        worker,
    }
}

async fn enqueue_loop(
    state: AppState,
    mut rx: mpsc::Receiver<Arc<Published>>,
    notify: Arc<Notify>,
    shutdown: CancellationToken,
) {
    loop {
        let p = tokio::select! {
            p = rx.recv() => match p {
                Some(p) => p,
                None => return,
            },
            _ = shutdown.cancelled() => break,
        };
        enqueue(&state, &p, &shutdown).await;
        notify.notify_one();
    }
    // What the bus already handed over is written before the process goes.
    rx.close();
    while let Ok(p) = rx.try_recv() {
        enqueue(&state, &p, &shutdown).await;
    }
}

/// Writes one event's delivery rows. The database being down is waited out (the bus's channel
/// holds what comes meanwhile); while shutting down, one more try.
async fn enqueue(state: &AppState, p: &Published, shutdown: &CancellationToken) {
    let Some(id) = event_id(p.org, &p.event) else {
        return;
    };
    let body = payload(&id, p);
    let mut wait = Duration::from_millis(100);
    loop {
        match state
            .store()
            .enqueue_webhook(p.org, &id, p.event.name(), &body)
            .await
        {
            Ok(n) => {
                state
                    .metrics()
                    .webhook_deliveries_queued
                    .fetch_add(n, Ordering::Relaxed);
                debug!(event = p.event.name(), event_id = %id, deliveries = n, "webhook event queued");
                return;
            }
            Err(e) if e.is_transient() && !shutdown.is_cancelled() => {
                warn!(error = %e, event_id = %id, retry_in_ms = wait.as_millis() as u64, "cannot queue webhook event yet");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => {}
                }
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                state
                    .metrics()
                    .webhook_events_lost
                    .fetch_add(1, Ordering::Relaxed);
                error!(error = %e, event = p.event.name(), event_id = %id, "webhook event not queued; it will not be delivered");
                return;
            }
        }
    }
}

async fn deliver_loop(state: AppState, notify: Arc<Notify>, shutdown: CancellationToken) {
    ::engines::models::install_tls_provider();
    let config = state.config();
    let timeout = config.webhook_timeout;
    let policy = Arc::new(RetryPolicy::new(config.webhook_retries.clone()));
    let client = match reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Voxanne-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "cannot build the webhook HTTP client; no webhooks will be delivered");
            return;
        }
    };
    let lease = chrono::Duration::from_std(timeout + LEASE_MARGIN).unwrap_or(chrono::Duration::MAX);
    let mut in_flight: JoinSet<()> = JoinSet::new();
    // What each attempt in flight is about: an attempt that panics is recorded from here (else
    // its row would stay claimed until the lease ends, and be claimed and panic again, forever).
    let mut attempting: HashMap<tokio::task::Id, ClaimedDelivery> = HashMap::new();
    let mut db_wait = Duration::from_millis(250);
    info!(
        max_attempts = policy.max_attempts(),
        timeout_ms = timeout.as_millis() as u64,
        "webhook delivery worker started"
    );
    while !shutdown.is_cancelled() {
        let free = CONCURRENCY - in_flight.len();
        let mut wait = POLL_MAX;
        if free > 0 {
            match claim_due(&state, lease, free).await {
                Ok(Look::Claimed(claimed)) => {
                    db_wait = Duration::from_millis(250);
                    // Claimed some: look again at once (more may be due). None, though the
                    // queue said some were due: another process took them; a moment later.
                    wait = if claimed.is_empty() {
                        Duration::from_millis(100)
                    } else {
                        Duration::ZERO
                    };
                    for c in claimed {
                        let task = in_flight.spawn(attempt(
                            state.clone(),
                            client.clone(),
                            policy.clone(),
                            c.clone(),
                        ));
                        attempting.insert(task.id(), c);
                    }
                }
                Ok(Look::NothingDue(until)) => {
                    db_wait = Duration::from_millis(250);
                    wait = until.min(POLL_MAX);
                }
                Err(e) => {
                    warn!(error = %e, "cannot claim webhook deliveries; will try again");
                    wait = db_wait;
                    db_wait = (db_wait * 2).min(Duration::from_secs(10));
                }
            }
        }
        let slots_full = in_flight.len() == CONCURRENCY;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = notify.notified() => {}
            Some(done) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                attempt_ended(&state, &policy, &mut attempting, done).await;
            }
            _ = tokio::time::sleep(wait), if !slots_full => {}
        }
    }
    // Attempts in flight finish (each within the timeout) and are recorded.
    while let Some(done) = in_flight.join_next_with_id().await {
        attempt_ended(&state, &policy, &mut attempting, done).await;
    }
}

/// Forgets a finished attempt; one that panicked (its outcome never recorded) is recorded as a
/// failed attempt, retried per the policy like any other.
async fn attempt_ended(
    state: &AppState,
    policy: &RetryPolicy,
    attempting: &mut HashMap<tokio::task::Id, ClaimedDelivery>,
    done: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
) {
    let (id, failure) = match done {
        Ok((id, ())) => (id, None),
        Err(e) => (e.id(), Some(e)),
    };
    let Some(c) = attempting.remove(&id) else {
        return;
    };
    let Some(e) = failure else {
        return;
    };
    error!(error = %e, delivery = %c.delivery.id, "webhook attempt panicked; recorded as a failed attempt");
    let outcome = retry_or_fail(
        policy,
        c.delivery.attempts,
        None,
        "internal error while sending (see the server log)".into(),
    );
    count(state, &outcome);
    record(state, &c, &outcome).await;
}

/// The outcome of failed attempt number `attempts`: another try after the policy's wait, or
/// failed when that was the last.
fn retry_or_fail(
    policy: &RetryPolicy,
    attempts: i32,
    status: Option<i32>,
    error: String,
) -> AttemptOutcome {
    match policy.wait_after(attempts, jitter()) {
        Some(w) => AttemptOutcome::Retry {
            status,
            error,
            retry_at: Utc::now()
                + chrono::Duration::from_std(w).unwrap_or(chrono::Duration::hours(24)),
        },
        None => AttemptOutcome::Failed { status, error },
    }
}

/// Counts an attempt's outcome in `/metrics`.
fn count(state: &AppState, outcome: &AttemptOutcome) {
    let m = state.metrics();
    let counter = match outcome {
        AttemptOutcome::Delivered { .. } => &m.webhook_delivered,
        AttemptOutcome::Retry { .. } => &m.webhook_retried,
        AttemptOutcome::Failed { .. } => &m.webhook_failed,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What one look at the queue found.
enum Look {
    Claimed(Vec<ClaimedDelivery>),
    /// Nothing is due for this long (or for [`POLL_MAX`] if nothing is pending).
    NothingDue(Duration),
}

/// Reads the queue's state (refreshing the gauge) and claims up to `free` deliveries only if one
/// is due: a queue with nothing due costs one read, never a write (on SQLite a write takes the
/// database's one writer lock, which calls' records and bookings need).
async fn claim_due(
    state: &AppState,
    lease: chrono::Duration,
    free: usize,
) -> Result<Look, StoreError> {
    let q = state.store().webhook_queue_state().await?;
    state
        .metrics()
        .webhook_pending
        .store(q.pending, Ordering::Relaxed);
    let now = Utc::now();
    match q.next_due {
        Some(due) if due <= now => Ok(Look::Claimed(
            state
                .store()
                .claim_webhook_deliveries(now, now + lease, free as u32)
                .await?,
        )),
        Some(due) => Ok(Look::NothingDue(
            (due - now).to_std().unwrap_or(Duration::ZERO),
        )),
        None => Ok(Look::NothingDue(POLL_MAX)),
    }
}

/// One attempt of one claimed delivery, and its outcome recorded.
async fn attempt(
    state: AppState,
    client: reqwest::Client,
    policy: Arc<RetryPolicy>,
    c: ClaimedDelivery,
) {
    let d = &c.delivery;
    let outcome = if c.endpoint_disabled {
        AttemptOutcome::Failed {
            status: None,
            error: "endpoint deleted".into(),
        }
    } else {
        match open_secret(state.keys(), &c) {
            Ok(secret) => {
                let (status, error) = send(&client, &c, &secret).await;
                match error {
                    None => AttemptOutcome::Delivered {
                        status: status.unwrap_or(200),
                    },
                    Some(error) => retry_or_fail(&policy, d.attempts, status, error),
                }
            }
            Err(e) => {
                error!(error = %e, delivery = %d.id, "webhook secret does not open; delivery failed");
                AttemptOutcome::Failed {
                    status: None,
                    error: "the endpoint's secret cannot be opened with the server's keys".into(),
                }
            }
        }
    };
    count(&state, &outcome);
    match &outcome {
        AttemptOutcome::Delivered { status } => {
            info!(delivery = %d.id, event_id = %d.event_id, attempts = d.attempts, status, "webhook delivered")
        }
        AttemptOutcome::Retry {
            error, retry_at, ..
        } => {
            warn!(delivery = %d.id, event_id = %d.event_id, attempts = d.attempts, %error, %retry_at, "webhook attempt failed; will retry")
        }
        AttemptOutcome::Failed { error, .. } => {
            warn!(delivery = %d.id, event_id = %d.event_id, attempts = d.attempts, %error, "webhook delivery failed; no more attempts")
        }
    }
    record(&state, &c, &outcome).await;
}

/// Records the outcome, trying a few times if the database is briefly away: a delivered row left
/// unrecorded would be sent again when its lease ends.
async fn record(state: &AppState, c: &ClaimedDelivery, outcome: &AttemptOutcome) {
    let mut wait = Duration::from_millis(200);
    for _ in 0..6 {
        match state
            .store()
            .finish_webhook_attempt(c.delivery.id, c.delivery.attempts, outcome)
            .await
        {
            Ok(true) => return,
            Ok(false) => {
                warn!(delivery = %c.delivery.id, "webhook delivery was claimed again while it was attempted; outcome not recorded");
                return;
            }
            Err(e) if e.is_transient() => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => {
                error!(error = %e, delivery = %c.delivery.id, "cannot record webhook outcome");
                return;
            }
        }
    }
    error!(delivery = %c.delivery.id, "cannot record webhook outcome (database away); it is attempted again when its lease ends");
}

fn open_secret(keys: &Keys, c: &ClaimedDelivery) -> Result<String, crypto::KeyError> {
    let plain = keys.open(
        &secret_context(c.delivery.org, c.delivery.endpoint_id),
        &Sealed {
            key_id: c.key_id.clone(),
            nonce: c.secret_nonce.clone(),
            ciphertext: c.secret_cipher.clone(),
        },
    )?;
    String::from_utf8(plain).map_err(|_| crypto::KeyError::Corrupt)
}

/// POSTs the delivery: `(status, None)` on a 2xx, else the status (if any) and why it failed.
async fn send(
    client: &reqwest::Client,
    c: &ClaimedDelivery,
    secret: &str,
) -> (Option<i32>, Option<String>) {
    let d = &c.delivery;
    let t = Utc::now().timestamp();
    let sent = client
        .post(&c.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature_header(secret, t, &d.payload))
        .header(EVENT_ID_HEADER, &d.event_id)
        .header(EVENT_TYPE_HEADER, &d.event_type)
        .body(d.payload.clone())
        .send()
        .await;
    match sent {
        Ok(mut resp) => {
            let status = resp.status();
            let code = Some(i32::from(status.as_u16()));
            if status.is_success() {
                return (code, None);
            }
            let mut body = Vec::new();
            while body.len() < ERROR_BODY_BYTES {
                match resp.chunk().await {
                    Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                    _ => break,
                }
            }
            body.truncate(ERROR_BODY_BYTES);
            let text = String::from_utf8_lossy(&body);
            let text = text.trim();
            let error = if text.is_empty() {
                format!("HTTP {}", status.as_u16())
            } else {
                format!("HTTP {}: {text}", status.as_u16())
            };
            (code, Some(error))
        }
        Err(e) if e.is_timeout() => (None, Some("timed out".into())),
        Err(e) => {
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why.push_str(": ");
                why.push_str(&s.to_string());
                source = s.source();
            }
            truncate_chars(&mut why, 300);
            (None, Some(why))
        }
    }
}

/// Cuts `s` to at most `max` bytes, at a character boundary (an error text may hold any
/// character: `String::truncate` inside one panics).
fn truncate_chars(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut at = max;
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    s.truncate(at);
}

/// Re-seals every endpoint's secret that is not under the current key (`voxanne secrets
/// rotate`). Returns how many were re-sealed.
pub async fn rotate_webhook_secrets(
    store: &storage::Store,
    keys: &Keys,
) -> Result<usize, StoreError> {
    let mut n = 0;
    for e in store.all_webhook_endpoints().await? {
        if e.key_id == keys.current_id() {
            continue;
        }
        let context = secret_context(e.org, e.id);
        let plain = match keys.open(
            &context,
            &Sealed {
                key_id: e.key_id.clone(),
                nonce: e.secret_nonce.clone(),
                ciphertext: e.secret_cipher.clone(),
            },
        ) {
            Ok(p) => p,
            Err(err) => {
                warn!(error = %err, endpoint = %e.id, "webhook secret does not open; left as it is");
                continue;
            }
        };
        let sealed = keys.seal(&context, &plain);
        if store
            .reseal_webhook_secret(
                e.org,
                e.id,
                &sealed.key_id,
                &sealed.nonce,
                &sealed.ciphertext,
            )
            .await?
        {
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_with_its_secret_only_within_the_tolerance() {
        let secret = "whsec_test-secret";
        let body = r#"{"id":"evt_1","type":"call.started"}"#;
        let header = signature_header(secret, 1_700_000_000, body);
        assert!(header.starts_with("t=1700000000,v1="), "{header}");
        assert_eq!(header.len(), "t=1700000000,v1=".len() + 64);
        assert_eq!(
            verify_signature(secret, &header, body, 1_700_000_100, 300),
            Ok(())
        );
        assert_eq!(
            verify_signature("whsec_other", &header, body, 1_700_000_100, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(
                secret,
                &header,
                &body.replace("evt_1", "evt_2"),
                1_700_000_000,
                300
            ),
            Err(SignatureError::Mismatch),
            "the body is signed"
        );
        assert_eq!(
            verify_signature(secret, &header, body, 1_700_000_301, 300),
            Err(SignatureError::Stale(301))
        );
        // The time is signed too: moving it breaks the signature.
        let moved = header.replace("t=1700000000", "t=1700000200");
        assert_eq!(
            verify_signature(secret, &moved, body, 1_700_000_200, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(secret, "v1=abc", body, 0, 300),
            Err(SignatureError::Malformed)
        );
        // Any of several v1 values may match (room for rolling a secret).
        let v1 = header.split("v1=").nth(1).unwrap();
        let two = format!("t=1700000000,v1={},v1={v1}", "0".repeat(64));
        assert_eq!(
            verify_signature(secret, &two, body, 1_700_000_000, 300),
            Ok(())
        );
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body_in_hex() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let header = signature_header("Jefe", 0, "what do ya want for nothing?");
        // Our data is "0." + body, so compute the reference over the same bytes.
        assert_eq!(
            crypto::hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            header,
            format!(
                "t=0,v1={}",
                crypto::hmac_sha256_hex(b"Jefe", b"0.what do ya want for nothing?")
            )
        );
    }

    #[test]
    fn the_signature_matches_the_readmes_python_receiver() {
        // hmac.new(b"whsec_abc", b"1700000000." + body, hashlib.sha256).hexdigest(), as in
        // README "Outgoing webhooks".
        assert_eq!(
            signature_header("whsec_abc", 1_700_000_000, r#"{"id":"evt_1"}"#),
            "t=1700000000,v1=79f159714a0d01d9505691104b38e71f0dbb0d4bdeef387b113d07b870f50db3"
        );
    }

    #[test]
    fn an_error_text_is_cut_at_a_character_boundary() {
        // "é" is two bytes, "€" three: a cut at 300 bytes falls inside one of them.
        for filler in ["é", "€", "a€", "😀"] {
            let mut s = filler.repeat(400);
            truncate_chars(&mut s, 300);
            assert!(s.len() <= 300 && s.len() > 295, "{}", s.len());
            assert!(s.chars().all(|c| filler.contains(c)));
        }
        let mut short = "déjà vu".to_string();
        truncate_chars(&mut short, 300);
        assert_eq!(short, "déjà vu");
        let mut exact = "ab€".to_string();
        truncate_chars(&mut exact, 4);
        assert_eq!(exact, "ab", "not inside the euro sign");
    }

    #[test]
    fn the_backoff_follows_the_schedule_with_up_to_a_fifth_more_then_stops() {
        let p = RetryPolicy::new(vec![
            Duration::from_secs(5),
            Duration::from_secs(30),
            Duration::from_secs(120),
        ]);
        assert_eq!(p.max_attempts(), 4);
        assert_eq!(p.wait_after(1, 0.0), Some(Duration::from_secs(5)));
        assert_eq!(p.wait_after(2, 0.0), Some(Duration::from_secs(30)));
        assert_eq!(p.wait_after(3, 0.5), Some(Duration::from_secs(132)));
        let most = p.wait_after(1, 0.999_999).unwrap();
        assert!(most < Duration::from_secs(6) && most > Duration::from_millis(5_999));
        assert_eq!(
            p.wait_after(4, 0.0),
            None,
            "the fourth attempt was the last"
        );
        assert_eq!(p.wait_after(0, 0.0), None);
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }

    #[test]
    fn an_event_id_names_the_fact_so_publishing_it_twice_is_one_event() {
        let a = OrgId(Uuid::from_u128(1));
        let b = OrgId(Uuid::from_u128(2));
        let booked = |id: &str| StaffEvent::AppointmentBooked {
            appointment: json!({ "id": id, "service": "Cleaning" }),
        };
        let id = event_id(a, &booked("ap-1")).unwrap();
        assert!(id.starts_with("evt_") && id.len() == 36, "{id}");
        assert_eq!(Some(id.clone()), event_id(a, &booked("ap-1")));
        assert_ne!(Some(id.clone()), event_id(a, &booked("ap-2")));
        assert_ne!(Some(id.clone()), event_id(b, &booked("ap-1")), "per org");
        let changed = |change: &str| StaffEvent::AppointmentChanged {
            change: change.into(),
            appointment: json!({ "id": "ap-1" }),
        };
        assert_ne!(
            event_id(a, &changed("cancelled")),
            event_id(a, &changed("rescheduled"))
        );
        assert_ne!(event_id(a, &changed("cancelled")), Some(id));
        let turn = StaffEvent::Turn {
            sid: "CA1".into(),
            seq: 0,
            role: "caller".into(),
            text: "hi".into(),
            interrupted: false,
        };
        assert_eq!(event_id(a, &turn), None, "turns are not webhooks");
    }

    #[test]
    fn the_payload_carries_the_id_type_time_org_and_the_events_own_fields() {
        let org = OrgId(Uuid::from_u128(7));
        let p = Published {
            id: 1,
            org,
            at: Utc::now(),
            event: StaffEvent::CallEnded {
                sid: "CA1".into(),
                end_reason: "caller_hung_up".into(),
                duration_ms: 1200,
                outcome: "booked".into(),
                summary: "Booked a cleaning.".into(),
            },
        };
        let v: Value = serde_json::from_str(&payload("evt_x", &p)).unwrap();
        assert_eq!(v["id"], "evt_x");
        assert_eq!(v["type"], "call.ended");
        assert_eq!(v["org_id"], json!(org.0.to_string()));
        assert_eq!(v["data"]["outcome"], "booked");
        assert_eq!(v["data"]["summary"], "Booked a cleaning.");
        assert!(v["data"].get("type").is_none());
        assert!(v["created_at"].as_str().unwrap().starts_with("20"));
    }
}
