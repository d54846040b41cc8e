//! The HTTP surface: Twilio's webhooks, the Media Streams WebSocket, health and metrics.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use futures_util::future::BoxFuture;
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tracing::{error, info, warn};

use agent::conversation::{CallEvent, ConversationConfig, TurnSummary};
use storage::{
    AssistantId, CallSid, EventRecord, LocalRecordingStore, OrgId, RecordingRecord, RecordingStore,
    Store, TurnLatency, TurnRecord, WriteOp, WriteQueue,
};
use telephony::call::{
    CallEnd, CallEngines, CallHooks, CallInfo, CallSetup, MediaSocket, Rejected, SocketError,
    SocketMessage, run_call,
};
use telephony::protocol::Start;
use telephony::webhook::{
    StatusCallback, VoiceWebhook, parse_form, stream_token, verify_stream_token,
};
use telephony::{signature, twiml};

use crate::config::{BrainChoice, Config};
use crate::receptionist::LoadedClinic;
use crate::staff::crypto::Keys;
use crate::staff::events::{EventBus, StaffEvent};
use crate::staff::limit::RateLimiter;
use engines::minilm::MiniLm;
use receptionist::dialogue::{CallContext, Direction};
use receptionist::session::ReceptionistSession;

/// Largest webhook body we read. Twilio's voice and status callbacks are a few KiB of form
/// fields; 64 KiB is generous and keeps a flood of junk cheap to refuse (413).
pub const MAX_WEBHOOK_BYTES: usize = 64 * 1024;

/// Largest WebSocket message the server reads at all (1 MiB). Messages up to
/// [`telephony::protocol::MAX_MESSAGE_BYTES`] are parsed; larger ones up to this cap are dropped and counted; beyond
/// it the socket is closed, so memory per call stays bounded.
pub const MAX_SOCKET_MESSAGE_BYTES: usize = 1024 * 1024;

/// Shared server state. Cloning is cheap.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    store: Store,
    queue: WriteQueue,
    recordings: Arc<dyn RecordingStore>,
    engines: CallEngines,
    /// One permit per call in progress: caps concurrent calls (a new call beyond it hears a
    /// busy message); shutdown waits until all are returned.
    call_slots: Arc<Semaphore>,
    default_org: (OrgId, AssistantId),
    metrics: Metrics,
    /// Which CallSids have (or had) a media stream: a CallSid gets one stream, ever, so a
    /// replayed stream token can neither attach a second stream to a call nor start a new one
    /// after it ended. One lock for both sets, so a stream ending cannot slip between the checks.
    streams: Mutex<StreamRegistry>,
    /// Transfers the agent asked for, by CallSid, until Twilio asks `<Connect action>` what to
    /// do next (with when they were asked, to forget ones Twilio never asks about).
    transfers: Mutex<HashMap<String, (String, Instant)>>,
    /// What the voice webhook learnt of each call (caller ID, direction, a reminder's
    /// appointment), until its media stream starts and builds the call's receptionist.
    pending_calls: Mutex<HashMap<String, (CallMeta, Instant)>>,
    /// Calls in progress on each of our numbers (streams that started), for
    /// `max_calls_per_number`.
    number_calls: Mutex<HashMap<String, usize>>,
    /// Which organisation and assistant answer each of our numbers, as last looked up: the
    /// voice webhook answers from it when the database is slow or down.
    numbers: Mutex<HashMap<String, (OrgId, AssistantId)>>,
    /// The last clinic loaded for each organisation: a call whose clinic cannot be loaded
    /// (database slow or down at setup) is answered with this instead of silence.
    clinics: Mutex<HashMap<OrgId, LoadedClinic>>,
    /// The LLM providers every call shares: one connection pool and one circuit breaker per
    /// OpenAI-compatible server (see `llm::provider`).
    llm: llm::Providers,
    /// Sentence embeddings for knowledge answers (`None`: knowledge questions are answered
    /// "I don't have that information" and offered a person or a message).
    embedder: Option<MiniLm>,
    /// The server's keys: access tokens, signed recording URLs, sealed secrets.
    keys: Keys,
    /// What happens on calls and bookings, for the live stream and outgoing webhooks.
    events: EventBus,
    /// Tasks that publish an event after the call or request that caused it has gone (a call's
    /// `call.ended` waits for its writes): shutdown waits for them before the webhook enqueuer
    /// stops, or their events would be lost.
    publishers: tokio_util::task::TaskTracker,
    /// Sign-in attempts per client address and per email.
    login_limit: RateLimiter,
    /// Twilio webhook requests per client address.
    webhook_limit: RateLimiter,
    /// Text chats with the receptionist (`POST /api/v1/chat`).
    chats: crate::staff::resources::ChatSessions,
}

/// A call as its voice webhook described it.
#[derive(Debug, Clone, Default)]
struct CallMeta {
    /// Our number: the clinic's line the call is on.
    number: String,
    from: String,
    /// The appointment an outbound reminder call is about.
    appointment: Option<String>,
    /// Twilio's `Direction` (`inbound`, `outbound-api`).
    direction: String,
}

/// How long an unclaimed webhook's call details are kept: Twilio opens the stream within
/// seconds of our TwiML.
const PENDING_CALL_TTL: Duration = Duration::from_secs(120);

/// A webhook answered this recently whose stream has not started yet holds a place under the
/// call limits, so a burst of calls cannot all pass the check before any stream takes its slot.
/// Twilio opens the stream within a second or two of our TwiML; 15 s covers a slow network,
/// and a caller who hung up before it opened frees the place after that.
const PENDING_HOLDS_PLACE: Duration = Duration::from_secs(15);

/// Longest the voice webhook waits for the database to say which clinic a number belongs to:
/// past it the last answer for that number is used (or the default organisation), so a slow
/// database never makes Twilio's webhook time out on a ringing caller.
const NUMBER_LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest call setup waits to recognise a returning caller before greeting: past it the
/// generic greeting is said and the caller is looked up on their first turn.
const CALLER_LOOKUP_TIMEOUT: Duration = Duration::from_millis(500);

/// Longest call setup waits for the clinic's config: past it the call is answered from the
/// cached clinic (or the default greeting) and the caller is never left in silence.
const CLINIC_LOAD_TIMEOUT: Duration = Duration::from_secs(2);

/// How many ended streams' CallSids are remembered. 100 000: a busy one-box clinic takes a few
/// thousand calls a day, so this is weeks of calls, at ~100 bytes each ~10 MB at most.
const ENDED_STREAMS_MAX: usize = 100_000;

/// How long an ended stream's CallSid is remembered: 24 h, far past a stream token's life
/// ([`telephony::webhook::STREAM_TOKEN_MAX_AGE_SECS`], 10 min), so while this process runs a
/// replay of a token that is still fresh is refused here. After a restart (the memory is empty)
/// it is refused by the call's stored recording ([`RecordingStore::exists`]), which retention
/// keeps for a day at least; later than that the token has expired. A recording is never
/// overwritten in any case ([`RecordingStore::put`]).
const ENDED_STREAM_TTL: Duration = Duration::from_secs(24 * 3600);

/// The CallSids with a live stream, and those whose stream has ended (bounded by
/// [`ENDED_STREAMS_MAX`] and [`ENDED_STREAM_TTL`], oldest forgotten first).
#[derive(Debug, Default)]
struct StreamRegistry {
    live: HashSet<String>,
    ended: HashSet<String>,
    /// `ended` in the order the streams ended, to forget the oldest.
    ended_order: VecDeque<(String, Instant)>,
}

impl StreamRegistry {
    /// Claims `sid`'s one stream; refused if it has a live stream or had one.
    fn claim(&mut self, sid: &str) -> Result<(), Rejected> {
        self.forget_old(Instant::now());
        if self.ended.contains(sid) {
            return Err(Rejected(
                "this call's media stream has already ended".into(),
            ));
        }
        if !self.live.insert(sid.to_string()) {
            return Err(Rejected("this call already has a media stream".into()));
        }
        Ok(())
    }

    /// Gives back a claim that never became a call (no call slot): the stream may try again.
    fn unclaim(&mut self, sid: &str) {
        self.live.remove(sid);
    }

    /// The stream's call has ended: no other stream may claim `sid`.
    fn end(&mut self, sid: &str, now: Instant) {
        self.live.remove(sid);
        if self.ended.insert(sid.to_string()) {
            self.ended_order.push_back((sid.to_string(), now));
        }
        self.forget_old(now);
    }

    fn forget_old(&mut self, now: Instant) {
        while let Some((sid, at)) = self.ended_order.front() {
            if self.ended_order.len() <= ENDED_STREAMS_MAX
                && now.saturating_duration_since(*at) < ENDED_STREAM_TTL
            {
                break;
            }
            self.ended.remove(sid);
            self.ended_order.pop_front();
        }
    }
}

/// Longest `/health` waits for the database: a database that does not answer in 2 s is
/// reported down (a load balancer's probe must not hang on the pool's 5 s acquire timeout).
const HEALTH_DB_TIMEOUT: Duration = Duration::from_secs(2);

/// Counters and the reply-latency histogram behind `/metrics`.
#[derive(Debug)]
pub struct Metrics {
    pub calls_started: AtomicU64,
    pub calls_ended: AtomicU64,
    pub calls_rejected_busy: AtomicU64,
    /// Calls declined because their number had `max_calls_per_number` calls.
    pub calls_rejected_number_busy: AtomicU64,
    pub webhooks_forbidden: AtomicU64,
    /// Twilio webhooks and stream upgrades answered 429 (`VOXANNE_WEBHOOK_RATE`).
    pub webhook_rate_limited: AtomicU64,
    /// Transfers a brain asked for to a number other than the clinic's transfer number.
    pub transfers_refused: AtomicU64,
    /// Caller turns the LLM answered (`llm_turn` events with `brain: llm`).
    pub llm_turns: AtomicU64,
    /// LLM turns answered by the offline receptionist instead (`llm_fallback` events:
    /// provider errors, timeouts, cut streams, garbage, breaker open).
    pub llm_fallbacks: AtomicU64,
    pub malformed_messages: AtomicU64,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    /// Outgoing webhook deliveries queued (one per endpoint per event).
    pub webhook_deliveries_queued: AtomicU64,
    /// Webhook events the database refused (not a transient error): never delivered.
    pub webhook_events_lost: AtomicU64,
    /// Webhook attempts answered 2xx.
    pub webhook_delivered: AtomicU64,
    /// Webhook attempts that failed and will be tried again.
    pub webhook_retried: AtomicU64,
    /// Webhook deliveries given up on (last attempt failed, or the endpoint was deleted).
    pub webhook_failed: AtomicU64,
    /// Pending webhook deliveries when the worker last looked.
    pub webhook_pending: std::sync::atomic::AtomicI64,
    /// Endpoint decision to first reply frame, microseconds.
    pub reply_latency_us: Mutex<Histogram<u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            calls_started: AtomicU64::new(0),
            calls_ended: AtomicU64::new(0),
            calls_rejected_busy: AtomicU64::new(0),
            calls_rejected_number_busy: AtomicU64::new(0),
            webhooks_forbidden: AtomicU64::new(0),
            webhook_rate_limited: AtomicU64::new(0),
            transfers_refused: AtomicU64::new(0),
            llm_turns: AtomicU64::new(0),
            llm_fallbacks: AtomicU64::new(0),
            malformed_messages: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            webhook_deliveries_queued: AtomicU64::new(0),
            webhook_events_lost: AtomicU64::new(0),
            webhook_delivered: AtomicU64::new(0),
            webhook_retried: AtomicU64::new(0),
            webhook_failed: AtomicU64::new(0),
            webhook_pending: std::sync::atomic::AtomicI64::new(0),
            // 1 µs to 10 minutes, 3 significant figures.
            reply_latency_us: Mutex::new(
                Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"),
            ),
        }
    }
}

impl AppState {
    /// Builds the state; the store must be open and migrated.
    pub fn new(
        config: Config,
        store: Store,
        queue: WriteQueue,
        engines: CallEngines,
        default_org: (OrgId, AssistantId),
        embedder: Option<MiniLm>,
        keys: Keys,
    ) -> Self {
        let recordings: Arc<dyn RecordingStore> =
            Arc::new(LocalRecordingStore::in_data_dir(&config.data_dir));
        let (webhook_burst, webhook_rate) = config.webhook_rate;
        Self {
            inner: Arc::new(Inner {
                call_slots: Arc::new(Semaphore::new(config.max_calls)),
                config,
                store,
                queue,
                recordings,
                engines,
                default_org,
                metrics: Metrics::default(),
                streams: Mutex::new(StreamRegistry::default()),
                transfers: Mutex::new(HashMap::new()),
                pending_calls: Mutex::new(HashMap::new()),
                number_calls: Mutex::new(HashMap::new()),
                numbers: Mutex::new(HashMap::new()),
                clinics: Mutex::new(HashMap::new()),
                llm: llm::Providers::new(),
                embedder,
                keys,
                events: EventBus::new(),
                publishers: tokio_util::task::TaskTracker::new(),
                // 10 attempts, then one every 6 s: a person mistyping is never stopped, a
                // password guesser gets 10 a minute per address and per email.
                login_limit: RateLimiter::new(10, 1.0 / 6.0),
                // Twilio sends a voice webhook and a few status callbacks per call.
                webhook_limit: RateLimiter::new(webhook_burst, webhook_rate),
                chats: Default::default(),
            }),
        }
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn queue(&self) -> &WriteQueue {
        &self.inner.queue
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// `call.started` for the live stream and webhooks, once the call's stream is set up.
    fn publish_call_started(&self, org: OrgId, sid: &str, meta: &CallMeta) {
        let outbound = meta.direction.starts_with("outbound");
        let (from, to) = if outbound {
            (meta.number.clone(), meta.from.clone())
        } else {
            (meta.from.clone(), meta.number.clone())
        };
        let direction = match meta.direction.as_str() {
            "" => "inbound".to_string(),
            d => d.to_string(),
        };
        self.events().publish(
            org,
            StaffEvent::CallStarted {
                sid: sid.to_string(),
                from,
                to,
                direction,
                started_at: Utc::now(),
            },
        );
    }

    pub fn chats(&self) -> &crate::staff::resources::ChatSessions {
        &self.inner.chats
    }

    /// Drops the cached clinic of `org` (its file changed): the next call loads it again.
    pub fn forget_clinic(&self, org: OrgId) {
        if let Ok(mut c) = self.inner.clinics.lock() {
            c.remove(&org);
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub fn events(&self) -> &EventBus {
        &self.inner.events
    }

    /// Where a task that publishes events later is spawned, so shutdown can wait for it.
    pub fn publishers(&self) -> &tokio_util::task::TaskTracker {
        &self.inner.publishers
    }

    pub fn login_limit(&self) -> &RateLimiter {
        &self.inner.login_limit
    }

    pub fn webhook_limit(&self) -> &RateLimiter {
        &self.inner.webhook_limit
    }

    /// The embedder for knowledge answers, if loaded.
    pub fn embedder(&self) -> Option<&MiniLm> {
        self.inner.embedder.as_ref()
    }

    pub fn recordings(&self) -> &Arc<dyn RecordingStore> {
        &self.inner.recordings
    }

    /// Calls in progress.
    pub fn active_calls(&self) -> usize {
        self.inner.config.max_calls - self.inner.call_slots.available_permits()
    }

    /// Waits until every call has ended, or `timeout` passes. Returns the calls still going.
    pub async fn drain_calls(&self, timeout: Duration) -> usize {
        let all = self.inner.config.max_calls as u32;
        match tokio::time::timeout(timeout, self.inner.call_slots.acquire_many(all)).await {
            Ok(Ok(permits)) => {
                drop(permits);
                0
            }
            _ => self.active_calls(),
        }
    }

    /// Which organisation and assistant answer calls to `to`: the number's owner, else the
    /// default organisation (one-box setups route every number there).
    /// The organisation's clinic, loaded within [`CLINIC_LOAD_TIMEOUT`]; on failure the last
    /// one loaded, or the fallback clinic.
    pub(crate) async fn clinic_for(&self, org: OrgId) -> LoadedClinic {
        // An organisation without a clinic file has no name to say; its assistant's greeting
        // is used (see `setup`).
        let name = "the clinic";
        let loaded = tokio::time::timeout(
            CLINIC_LOAD_TIMEOUT,
            crate::receptionist::load_clinic(&self.inner.store, org, name),
        )
        .await;
        let cached = || {
            self.inner
                .clinics
                .lock()
                .ok()
                .and_then(|c| c.get(&org).cloned())
        };
        match loaded {
            Ok(Ok(l)) => {
                if let Ok(mut c) = self.inner.clinics.lock() {
                    c.insert(org, l.clone());
                }
                l
            }
            Ok(Err(e)) => {
                warn!(error = %e, "clinic config could not be loaded; answering from the cache");
                cached().unwrap_or_else(|| LoadedClinic::fallback(org, name))
            }
            Err(_) => {
                warn!("clinic config load timed out; answering from the cache");
                cached().unwrap_or_else(|| LoadedClinic::fallback(org, name))
            }
        }
    }

    /// The call's brain: the LLM over `session` if the server's defaults and the clinic's
    /// `[llm]` table say so, else `session` itself. LLM settings that cannot be used (no
    /// model, a key variable not set, a header refused) leave the call with the offline
    /// receptionist and a warning: a caller is never left without a brain.
    pub async fn brain_for(
        &self,
        loaded: &LoadedClinic,
        session: ReceptionistSession,
    ) -> Arc<dyn agent::engine::Brain> {
        match self.llm_brain(loaded, session, None).await {
            Ok(b) => b,
            Err(session) => Arc::new(session),
        }
    }

    /// The LLM brain for `loaded`'s calls, or `session` back when the clinic's calls use the
    /// offline receptionist. `filler`: said by the brain itself (text paths with no call core).
    pub async fn llm_brain(
        &self,
        loaded: &LoadedClinic,
        session: ReceptionistSession,
        filler: Option<llm::Filler>,
    ) -> Result<Arc<dyn agent::engine::Brain>, ReceptionistSession> {
        match self.llm_provider(loaded).await {
            Some(p) => Ok(Arc::new(llm::LlmBrain::with_filler(session, p, filler))),
            None => Err(session),
        }
    }

    /// The provider `loaded`'s calls use, if they use the LLM (`None`: the offline
    /// receptionist, also when the settings cannot be used, with a warning).
    ///
    /// The API key: the clinic file's `api_key`, else its `api_key_env`, else the
    /// organisation's sealed `llm_api_key` secret (`PUT /api/v1/secrets/llm_api_key`), else
    /// `VOXANNE_LLM_API_KEY` — the server's key only when the clinic's base URL is the server's
    /// `VOXANNE_LLM_BASE_URL` (a clinic file's admin chooses its URL; the server's key must not
    /// go there), and `api_key_env` only names `VOXANNE_LLM_KEY_*` variables
    /// ([`llm::LlmDefaults::resolve`]).
    pub async fn llm_provider(&self, loaded: &LoadedClinic) -> Option<llm::Provider> {
        let mut settings = match self
            .inner
            .config
            .llm
            .resolve(loaded.clinic.file.llm.as_ref(), |k| std::env::var(k).ok())
        {
            Ok(Some(s)) => s,
            Ok(None) => return None,
            Err(e) => {
                warn!(org = %loaded.org.0, error = %e, "the clinic's LLM settings cannot be used; the offline receptionist answers");
                return None;
            }
        };
        let file_has_key = loaded
            .clinic
            .file
            .llm
            .as_ref()
            .is_some_and(|s| s.api_key.is_some() || s.api_key_env.is_some());
        if !file_has_key {
            match tokio::time::timeout(
                CLINIC_LOAD_TIMEOUT,
                crate::staff::resources::open_secret(self, loaded.org, "llm_api_key"),
            )
            .await
            {
                Ok(Ok(Some(key))) => settings.api_key = Some(key),
                Ok(Ok(None)) => {}
                Ok(Err(_)) => {
                    warn!(org = %loaded.org.0, "the clinic's llm_api_key secret cannot be opened; using the server's key if the URL is the server's")
                }
                Err(_) => {
                    warn!(org = %loaded.org.0, "the clinic's llm_api_key secret timed out; using the server's key if the URL is the server's")
                }
            }
        }
        match self.inner.llm.provider(&settings) {
            Ok(p) => Some(p),
            Err(e) => {
                warn!(org = %loaded.org.0, error = %e, "the clinic's LLM provider cannot be set up; the offline receptionist answers");
                None
            }
        }
    }

    /// The call's receptionist session.
    async fn receptionist_for(
        &self,
        loaded: &LoadedClinic,
        call_sid: &str,
        meta: &CallMeta,
    ) -> ReceptionistSession {
        let mut direction = Direction::Inbound;
        if let Some(id) = &meta.appointment
            && let Ok(uuid) = id.parse::<uuid::Uuid>()
        {
            match tokio::time::timeout(
                CLINIC_LOAD_TIMEOUT,
                self.inner.store.get_appointment(loaded.org, uuid),
            )
            .await
            {
                Ok(Ok(Some(a))) => {
                    direction = Direction::Reminder(crate::receptionist::appointment(a))
                }
                _ => warn!(
                    call_sid,
                    "reminder call's appointment not found; answering as inbound"
                ),
            }
        }
        let context = CallContext {
            call_id: call_sid.to_string(),
            caller: Some(meta.from.clone()).filter(|f| !f.is_empty()),
            direction,
        };
        crate::receptionist::session_with_events(
            &self.inner.store,
            loaded,
            self.inner.embedder.clone(),
            context,
            Some(CallSid(call_sid.to_string())),
            crate::receptionist::system_clock(),
            Some(self.inner.events.clone()),
        )
    }

    /// Loads the routing table and every routed organisation's clinic into memory, so a
    /// database that goes down later still has calls answered by the right clinic's greeting
    /// (from these copies) rather than the default. Failures are logged: the caches then fill
    /// call by call.
    pub async fn warm_caches(&self) {
        let numbers = match self.inner.store.list_numbers().await {
            Ok(n) => n,
            Err(e) => {
                warn!(error = %e, "cannot load the routing table; numbers are looked up per call");
                return;
            }
        };
        let mut orgs: Vec<OrgId> = numbers.iter().map(|(_, org, _)| *org).collect();
        if let Ok(mut cache) = self.inner.numbers.lock() {
            for (number, org, assistant) in numbers {
                cache.insert(number, (org, assistant));
            }
        }
        orgs.push(self.inner.default_org.0);
        orgs.sort_by_key(|o| o.to_string());
        orgs.dedup();
        for org in orgs {
            self.clinic_for(org).await;
        }
    }

    /// Which organisation and assistant answer `number`, within [`NUMBER_LOOKUP_TIMEOUT`];
    /// when the database fails or is slow, the last answer for it (or the default).
    async fn resolve(&self, number: &str) -> (OrgId, AssistantId) {
        let cached = || {
            self.inner
                .numbers
                .lock()
                .ok()
                .and_then(|n| n.get(number).copied())
        };
        let found = match tokio::time::timeout(
            NUMBER_LOOKUP_TIMEOUT,
            self.inner.store.resolve_number(number),
        )
        .await
        {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                let found = cached();
                warn!(error = %e, cached = found.is_some(), "number lookup failed; answering from the last look-up");
                return found.unwrap_or(self.inner.default_org);
            }
            Err(_) => {
                let found = cached();
                warn!(
                    cached = found.is_some(),
                    "number lookup timed out; answering from the last look-up"
                );
                return found.unwrap_or(self.inner.default_org);
            }
        };
        let answer = found.unwrap_or(self.inner.default_org);
        if let Ok(mut n) = self.inner.numbers.lock() {
            // Bounded by the numbers that exist (unknown numbers are not cached); a clinic
            // server has a handful.
            if found.is_some() {
                n.insert(number.to_string(), answer);
            } else {
                n.remove(number);
            }
        }
        answer
    }

    /// Why a new call on `number` should hear the busy message, if it should: counting calls
    /// in progress and webhooks answered in the last [`PENDING_HOLDS_PLACE`] whose streams
    /// have not started.
    fn at_capacity(&self, number: &str) -> Option<&'static str> {
        let (pending, pending_here) = self.inner.pending_calls.lock().map_or((0, 0), |p| {
            let recent = p
                .values()
                .filter(|(_, at)| at.elapsed() < PENDING_HOLDS_PLACE);
            recent.fold((0, 0), |(all, here), (meta, _)| {
                (all + 1, here + usize::from(meta.number == number))
            })
        });
        if self.active_calls() + pending >= self.inner.config.max_calls {
            return Some("server");
        }
        let limit = self.inner.config.max_calls_per_number?;
        let active_here = self
            .inner
            .number_calls
            .lock()
            .map_or(0, |n| n.get(number).copied().unwrap_or(0));
        (active_here + pending_here >= limit).then_some("number")
    }
}

/// The application router. Built without a server, so tests drive it with `oneshot`.
pub fn router(state: AppState) -> Router {
    let twilio = Router::new()
        .route("/twilio/voice", post(voice_webhook))
        .route("/twilio/status", post(status_callback))
        .route("/twilio/connect-action", post(connect_action))
        .route("/twilio/media", get(media_stream))
        .layer(DefaultBodyLimit::max(MAX_WEBHOOK_BYTES))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            twilio_rate_limit,
        ));
    let cors = crate::staff::cors(&state.config().cors_origins);
    let api = crate::staff::api_routes().layer(cors);
    let mut app = Router::new()
        .merge(twilio)
        .merge(
            // Operational detail: loopback, or the metrics token (see `staff::ops`).
            Router::new()
                .route("/health", get(health))
                .route("/metrics", get(metrics))
                .route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    crate::staff::ops::require_ops,
                )),
        )
        .route("/healthz", get(crate::staff::ops::healthz))
        .route("/readyz", get(crate::staff::ops::readyz))
        .merge(api)
        .merge(crate::staff::dashboard::routes());
    for (name, value) in crate::staff::ops::security_headers() {
        app =
            app.layer(tower_http::set_header::SetResponseHeaderLayer::if_not_present(name, value));
    }
    let request_id = crate::staff::ops::request_id_header();
    // Outermost last: the id is set first, the span sees it, and the response carries it.
    app.layer(tower_http::request_id::PropagateRequestIdLayer::new(
        request_id.clone(),
    ))
    .layer(
        tower_http::trace::TraceLayer::new_for_http().make_span_with(
            |req: &axum::http::Request<axum::body::Body>| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
            },
        ),
    )
    .layer(tower_http::request_id::SetRequestIdLayer::new(
        request_id,
        crate::staff::ops::MakeId,
    ))
    .with_state(state)
}

/// Twilio's webhooks and stream upgrades, per client address: past `VOXANNE_WEBHOOK_RATE`, 429
/// with `Retry-After` before any signature is checked or any database work is done.
async fn twilio_rate_limit(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    if !state.webhook_limit().allow(&format!("twilio:{peer}")) {
        state
            .metrics()
            .webhook_rate_limited
            .fetch_add(1, Ordering::Relaxed);
        warn!(peer = %peer, path = %req.uri().path(), "Twilio webhook rate limit reached; answered 429");
        let retry = state
            .webhook_limit()
            .retry_after()
            .as_secs()
            .max(1)
            .to_string();
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry)],
            "rate limited",
        )
            .into_response();
    }
    next.run(req).await
}

/// An HTTP error: a status and a short body; details go to the log, never to the client.
#[derive(Debug)]
pub enum AppError {
    Forbidden,
    BadRequest(String),
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            AppError::Forbidden => (StatusCode::FORBIDDEN, "invalid signature").into_response(),
            AppError::BadRequest(why) => (StatusCode::BAD_REQUEST, why).into_response(),
        }
    }
}

fn xml(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response()
}

/// Checks `X-Twilio-Signature` against our public URL for this path and query.
fn verify_signature(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Result<(), AppError> {
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let url = format!("{}{}", state.config().public_url, path);
    if signature::validate(&state.config().auth_token, signature, &url, params) {
        Ok(())
    } else {
        state
            .metrics()
            .webhooks_forbidden
            .fetch_add(1, Ordering::Relaxed);
        warn!(%url, has_signature = !signature.is_empty(), "webhook signature rejected");
        Err(AppError::Forbidden)
    }
}

async fn voice_webhook(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let params = parse_form(&body);
    verify_signature(&state, &uri, &headers, &params)?;
    let hook =
        VoiceWebhook::from_params(&params).map_err(|e| AppError::BadRequest(e.to_string()))?;
    // Our number is `To` on inbound calls and `From` on calls we place.
    let ours = if hook.direction.starts_with("outbound") {
        &hook.from
    } else {
        &hook.to
    };
    if let Some(scope) = state.at_capacity(ours) {
        let counter = match scope {
            "number" => &state.metrics().calls_rejected_number_busy,
            _ => &state.metrics().calls_rejected_busy,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        warn!(call_sid = %hook.call_sid, limit = scope, "at capacity; call declined");
        return Ok(xml(twiml::say_and_hang_up(
            "Sorry, all our lines are busy right now. Please call again in a few minutes.",
        )));
    }
    let (org, assistant) = state.resolve(ours).await;
    state.queue().submit(WriteOp::CallStarted {
        org,
        assistant: Some(assistant),
        sid: CallSid(hook.call_sid.clone()),
        from: hook.from.clone(),
        to: hook.to.clone(),
        direction: hook.direction.clone(),
        started_at: Utc::now(),
    });
    if !hook.call_status.is_empty() {
        state.queue().submit(WriteOp::CallStatus {
            org,
            sid: CallSid(hook.call_sid.clone()),
            status: hook.call_status.clone(),
            at: Utc::now(),
        });
    }
    let appointment = uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "appointment")
            .map(|(_, v)| v.into_owned())
    });
    if let Ok(mut pending) = state.inner.pending_calls.lock() {
        pending.retain(|_, (_, at)| at.elapsed() < PENDING_CALL_TTL);
        pending.insert(
            hook.call_sid.clone(),
            (
                CallMeta {
                    number: ours.clone(),
                    from: if hook.direction.starts_with("outbound") {
                        hook.to.clone()
                    } else {
                        hook.from.clone()
                    },
                    appointment,
                    direction: hook.direction.clone(),
                },
                Instant::now(),
            ),
        );
    }
    let org_s = org.to_string();
    let assistant_s = assistant.to_string();
    let token = stream_token(
        &state.config().auth_token,
        &hook.call_sid,
        &org_s,
        &assistant_s,
        chrono::Utc::now().timestamp(),
    );
    info!(call_sid = %hook.call_sid, org_id = %org_s, "incoming call");
    let action = format!("{}/twilio/connect-action", state.config().public_url);
    Ok(xml(twiml::connect_stream(
        &state.config().stream_url(),
        Some(&action),
        &[
            ("org", &org_s),
            ("assistant", &assistant_s),
            ("token", &token),
        ],
    )))
}

async fn status_callback(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let params = parse_form(&body);
    verify_signature(&state, &uri, &headers, &params)?;
    let cb =
        StatusCallback::from_params(&params).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let ours = if cb.direction.starts_with("outbound") {
        &cb.from
    } else {
        &cb.to
    };
    let (org, _) = state.resolve(ours).await;
    state.queue().submit(WriteOp::CallStatus {
        org,
        sid: CallSid(cb.call_sid),
        status: cb.call_status,
        at: Utc::now(),
    });
    Ok(xml(twiml::empty()))
}

/// Twilio asks what to do once our media stream has ended: dial the number the agent transferred
/// the caller to, or hang up.
async fn connect_action(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let params = parse_form(&body);
    verify_signature(&state, &uri, &headers, &params)?;
    let sid = params
        .iter()
        .find(|(k, _)| k == "CallSid")
        .map(|(_, v)| v.clone())
        .ok_or_else(|| AppError::BadRequest("missing form field `CallSid`".into()))?;
    let transfer = state
        .inner
        .transfers
        .lock()
        .ok()
        .and_then(|mut t| t.remove(&sid));
    Ok(xml(match transfer {
        Some((to, _)) => {
            info!(call_sid = %sid, "transferring the caller");
            twiml::dial(&to)
        }
        None => twiml::hang_up(),
    }))
}

async fn media_stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // Twilio signs the stream's opening request like a webhook, over the stream URL with no
    // parameters. Anything else is not Twilio.
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !signature::validate(
        &state.config().auth_token,
        signature,
        &state.config().stream_url(),
        &[],
    ) {
        state
            .metrics()
            .webhooks_forbidden
            .fetch_add(1, Ordering::Relaxed);
        warn!(
            has_signature = !signature.is_empty(),
            "media stream signature rejected"
        );
        return AppError::Forbidden.into_response();
    }
    // The socket's hard cap is well above what the protocol parser accepts: a message between
    // the two is counted and dropped while the call goes on; only a larger one ends the call.
    ws.max_message_size(MAX_SOCKET_MESSAGE_BYTES)
        .max_frame_size(MAX_SOCKET_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            // The call slot and the CallSid's stream are taken in `setup`, once the stream has
            // proved which call it is; `ApiHooks` gives them back when the call ends.
            let hooks: Arc<dyn CallHooks> = Arc::new(ApiHooks {
                state: state.clone(),
                held: Arc::new(Mutex::new(Held::default())),
            });
            run_call(AxumSocket(socket), state.inner.engines.clone(), hooks).await;
        })
}

/// Anyone may ask, so the answer says only *whether* the database is up (`"state"`: `"up"` or
/// `"down"`); why not (the driver's error: host names, ports, user names) goes to the log at warn.
async fn health(State(state): State<AppState>) -> Response {
    let up = match tokio::time::timeout(HEALTH_DB_TIMEOUT, state.store().health()).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            warn!(error = %e, "health check: database unavailable");
            false
        }
        Err(_) => {
            warn!(timeout = ?HEALTH_DB_TIMEOUT, "health check: database did not answer");
            false
        }
    };
    let q = state.queue().stats();
    let body = serde_json::json!({
        "status": if up { "ok" } else { "degraded" },
        "database": {
            "backend": state.store().backend(),
            "state": if up { "up" } else { "down" },
            "up": up,
            "queue": {
                "queued": q.queued, "written": q.written, "retried": q.retried,
                "spilled": q.spilled, "dropped": q.dropped, "writer_db_up": q.db_up,
            },
        },
        "calls": { "active": state.active_calls(), "max": state.config().max_calls },
    });
    let status = if body["status"] == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let m = state.metrics();
    let mut out = String::new();
    let q = state.queue().stats();
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let counters = [
        (
            "voxanne_calls_started_total",
            "Calls whose media stream started.",
            load(&m.calls_started),
        ),
        (
            "voxanne_calls_ended_total",
            "Calls that ended.",
            load(&m.calls_ended),
        ),
        (
            "voxanne_calls_rejected_busy_total",
            "Calls declined at capacity.",
            load(&m.calls_rejected_busy),
        ),
        (
            "voxanne_calls_rejected_number_busy_total",
            "Calls declined because their number was at VOXANNE_MAX_CALLS_PER_NUMBER.",
            load(&m.calls_rejected_number_busy),
        ),
        (
            "voxanne_webhooks_forbidden_total",
            "Webhooks and streams with a bad signature.",
            load(&m.webhooks_forbidden),
        ),
        (
            "voxanne_webhooks_rate_limited_total",
            "Twilio webhooks and stream upgrades answered 429 (VOXANNE_WEBHOOK_RATE).",
            load(&m.webhook_rate_limited),
        ),
        (
            "voxanne_transfers_refused_total",
            "Transfers to a number other than the clinic's transfer number, refused.",
            load(&m.transfers_refused),
        ),
        (
            "voxanne_llm_turns_total",
            "Caller turns answered by the LLM brain.",
            load(&m.llm_turns),
        ),
        (
            "voxanne_llm_fallbacks_total",
            "LLM turns answered by the offline receptionist instead (provider error, timeout, cut stream, garbage, breaker open).",
            load(&m.llm_fallbacks),
        ),
        (
            "voxanne_malformed_messages_total",
            "Media stream messages dropped as malformed.",
            load(&m.malformed_messages),
        ),
        (
            "voxanne_frames_in_total",
            "Caller media frames received.",
            load(&m.frames_in),
        ),
        (
            "voxanne_frames_out_total",
            "Agent media frames sent.",
            load(&m.frames_out),
        ),
        (
            "voxanne_db_writes_spilled_total",
            "Writes that went to the spill file.",
            q.spilled,
        ),
        (
            "voxanne_db_writes_dropped_total",
            "Writes lost because the spill file was full.",
            q.dropped,
        ),
        (
            "voxanne_webhook_deliveries_queued_total",
            "Outgoing webhook deliveries queued (one per endpoint and event).",
            load(&m.webhook_deliveries_queued),
        ),
        (
            "voxanne_webhook_events_dropped_total",
            "Outgoing webhook events not queued: the enqueuer was 4096 behind, or the database refused them.",
            state.events().webhook_dropped() + load(&m.webhook_events_lost),
        ),
    ];
    for (name, help, value) in counters {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
        ));
    }
    out.push_str(&format!(
        "# HELP voxanne_webhook_attempts_total Outgoing webhook attempts by result: delivered (2xx), retry (failed, tried again later), failed (given up).\n# TYPE voxanne_webhook_attempts_total counter\nvoxanne_webhook_attempts_total{{result=\"delivered\"}} {}\nvoxanne_webhook_attempts_total{{result=\"retry\"}} {}\nvoxanne_webhook_attempts_total{{result=\"failed\"}} {}\n",
        load(&m.webhook_delivered),
        load(&m.webhook_retried),
        load(&m.webhook_failed),
    ));
    out.push_str(&format!(
        "# HELP voxanne_webhook_pending Outgoing webhook deliveries waiting (as the worker last saw).\n# TYPE voxanne_webhook_pending gauge\nvoxanne_webhook_pending {}\n",
        m.webhook_pending.load(Ordering::Relaxed)
    ));
    out.push_str(&format!(
        "# HELP voxanne_active_calls Calls in progress.\n# TYPE voxanne_active_calls gauge\nvoxanne_active_calls {}\n",
        state.active_calls()
    ));
    out.push_str(&format!(
        "# HELP voxanne_max_calls Concurrent calls accepted (VOXANNE_MAX_CALLS).\n# TYPE voxanne_max_calls gauge\nvoxanne_max_calls {}\n",
        state.config().max_calls
    ));
    if let Some(limit) = state.config().max_calls_per_number {
        out.push_str(&format!(
            "# HELP voxanne_max_calls_per_number Concurrent calls accepted on one number (VOXANNE_MAX_CALLS_PER_NUMBER).\n# TYPE voxanne_max_calls_per_number gauge\nvoxanne_max_calls_per_number {limit}\n"
        ));
    }
    if let Ok(h) = m.reply_latency_us.lock() {
        out.push_str("# HELP voxanne_reply_latency_seconds Endpoint decision to first reply frame sent.\n# TYPE voxanne_reply_latency_seconds summary\n");
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            out.push_str(&format!(
                "voxanne_reply_latency_seconds{{quantile=\"{q}\"}} {:.6}\n",
                h.value_at_quantile(q) as f64 / 1e6
            ));
        }
        out.push_str(&format!(
            "voxanne_reply_latency_seconds_count {}\n",
            h.len()
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// axum's WebSocket as the call task's [`MediaSocket`].
struct AxumSocket(WebSocket);

impl MediaSocket for AxumSocket {
    async fn recv(&mut self) -> Option<Result<SocketMessage, SocketError>> {
        loop {
            return match self.0.recv().await? {
                Ok(Message::Text(text)) => Some(Ok(SocketMessage::Text(text.to_string()))),
                Ok(Message::Binary(b)) => Some(Ok(SocketMessage::Binary(b.len()))),
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(Message::Close(_)) => None,
                Err(e) => Some(Err(SocketError(e.to_string()))),
            };
        }
    }

    async fn send(&mut self, text: String) -> Result<(), SocketError> {
        self.0
            .send(Message::Text(text.into()))
            .await
            .map_err(|e| SocketError(e.to_string()))
    }

    async fn close(&mut self) {
        let _ = self.0.send(Message::Close(None)).await;
    }
}

/// Persists what calls do, through the write queue (never waiting on the database).
struct ApiHooks {
    state: AppState,
    held: Arc<Mutex<Held>>,
}

/// What a call holds while it runs: its call slot and its CallSid's stream.
#[derive(Default)]
struct Held {
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Our number this call is counted against (`number_calls`).
    number: Option<String>,
    stream: Option<(AppState, String)>,
    /// The clinic's `transfer_number`: the only number this call may be transferred to.
    transfer_number: Option<String>,
    /// What the call came to so far, from its events (used for `call.ended` when the database
    /// cannot say in time).
    facts: crate::staff::calls::CallFacts,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let (Some(number), Some((state, _))) = (self.number.take(), self.stream.as_ref())
            && let Ok(mut calls) = state.inner.number_calls.lock()
            && let Some(n) = calls.get_mut(&number)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                calls.remove(&number);
            }
        }
        if let Some((state, sid)) = self.stream.take() {
            // A poisoned lock still holds a usable registry; never leave a CallSid claimed.
            let mut streams = state
                .inner
                .streams
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            streams.end(&sid, Instant::now());
        }
    }
}

/// The organisation a verified stream belongs to (checked in `setup`).
fn call_org(call: &CallInfo) -> Option<OrgId> {
    call.custom_parameters
        .get("org")
        .and_then(|o| o.parse().ok())
        .map(OrgId)
}

impl CallHooks for ApiHooks {
    fn setup(&self, start: &Start) -> BoxFuture<'static, Result<CallSetup, Rejected>> {
        let state = self.state.clone();
        let held = self.held.clone();
        let start = start.clone();
        Box::pin(async move {
            let param = |name: &str| {
                start
                    .custom_parameters
                    .get(name)
                    .cloned()
                    .unwrap_or_default()
            };
            let (org_s, assistant_s, token) = (param("org"), param("assistant"), param("token"));
            verify_stream_token(
                &state.config().auth_token,
                &token,
                &start.call_sid,
                &org_s,
                &assistant_s,
                chrono::Utc::now().timestamp(),
            )
            .map_err(|e| Rejected(e.to_string()))?;
            let org = OrgId(org_s.parse().map_err(|_| Rejected("bad org".into()))?);
            let sid = CallSid(start.call_sid.clone());
            // A CallSid gets one stream, ever, decided before the stream takes a call slot: a
            // replay of a token still inside its 10 minutes must not start the call again. The
            // stored recording answers for calls this process has forgotten (a restart).
            match state.inner.recordings.exists(org, &sid).await {
                Ok(true) => {
                    return Err(Rejected(
                        "this call's stream has ended (its recording is stored)".into(),
                    ));
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "cannot tell whether this call was recorded"),
            }
            let streams = || {
                state
                    .inner
                    .streams
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
            };
            streams().claim(&start.call_sid)?;
            let slot = match state.inner.call_slots.clone().try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => {
                    streams().unclaim(&start.call_sid);
                    return Err(Rejected("at capacity".into()));
                }
            };
            if let Ok(mut h) = held.lock() {
                h.slot = Some(slot);
                h.stream = Some((state.clone(), start.call_sid.clone()));
            }
            let assistant = AssistantId(
                assistant_s
                    .parse()
                    .map_err(|_| Rejected("bad assistant".into()))?,
            );
            let mut conversation = ConversationConfig {
                early_transcribe_ms: state.config().early_transcribe_ms,
                ..ConversationConfig::default()
            };
            let mut assistant_greeting = None;
            // The assistant and the clinic are looked up side by side, each bounded by
            // `CLINIC_LOAD_TIMEOUT`, so a database that hangs delays the greeting by that once.
            let (found, loaded) = tokio::join!(
                tokio::time::timeout(
                    CLINIC_LOAD_TIMEOUT,
                    state.store().get_assistant(org, assistant),
                ),
                state.clinic_for(org),
            );
            match found {
                Ok(Ok(Some(a))) => {
                    if !a.greeting.trim().is_empty() {
                        assistant_greeting = Some(a.greeting);
                    }
                    for problem in crate::tuning::apply(&a.settings, &mut conversation) {
                        warn!(assistant = %assistant, "{problem}");
                    }
                }
                Ok(Ok(None)) => {
                    warn!(assistant = %assistant, "assistant not found; using defaults")
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "assistant lookup failed; using the default greeting")
                }
                Err(_) => warn!("assistant lookup timed out; using the default greeting"),
            }
            let meta = state
                .inner
                .pending_calls
                .lock()
                .ok()
                .and_then(|mut p| p.remove(&start.call_sid))
                .map(|(m, _)| m)
                .unwrap_or_default();
            if !meta.number.is_empty()
                && let Ok(mut h) = held.lock()
                && h.stream.is_some()
            {
                if let Ok(mut calls) = state.inner.number_calls.lock() {
                    *calls.entry(meta.number.clone()).or_default() += 1;
                }
                h.number = Some(meta.number.clone());
            }
            let session = state
                .receptionist_for(&loaded, &start.call_sid, &meta)
                .await;
            // A returning caller is greeted by name, if the look-up is quick.
            let _ = tokio::time::timeout(CALLER_LOOKUP_TIMEOUT, session.prepare()).await;
            let opening = session.opening();
            let brain: Option<Arc<dyn agent::engine::Brain>> = match state.config().brain {
                BrainChoice::Receptionist => Some(state.brain_for(&loaded, session).await),
                BrainChoice::Shared => None,
            };
            // A clinic file's greeting (or a reminder's opening) wins; an organisation without
            // one keeps its assistant's greeting.
            conversation.greeting = match (&loaded.clinic.file.clinic.greeting, &meta.appointment) {
                (None, None) => assistant_greeting.unwrap_or(opening),
                _ => opening,
            };
            if let Ok(mut h) = held.lock() {
                h.transfer_number = loaded.clinic.file.clinic.transfer_number.clone();
            }
            state.publish_call_started(org, &start.call_sid, &meta);
            let recording_path = match state.inner.recordings.staging_path(org, &sid) {
                Ok(p) => Some(p),
                Err(e) => {
                    warn!(error = %e, "no recording path for this call");
                    None
                }
            };
            Ok(CallSetup {
                conversation,
                recording_path,
                org: org_s,
                brain,
            })
        })
    }

    fn call_started(&self, _call: &CallInfo) {
        self.state
            .metrics()
            .calls_started
            .fetch_add(1, Ordering::Relaxed);
    }

    fn transfer_requested(&self, call: &CallInfo, to: &str) {
        // Defence in depth: whatever asked for it (the offline receptionist only ever names
        // the clinic's number; an LLM brain might not), a call is only ever transferred to its
        // clinic's `transfer_number`.
        let allowed = self
            .held
            .lock()
            .ok()
            .and_then(|h| h.transfer_number.clone());
        if allowed.as_deref() != Some(to) {
            self.state
                .metrics()
                .transfers_refused
                .fetch_add(1, Ordering::Relaxed);
            error!(call_sid = %call.call_sid, "transfer to a number that is not the clinic's transfer number refused");
            return;
        }
        if let Ok(mut transfers) = self.state.inner.transfers.lock() {
            // Twilio asks within seconds; forget transfers it never asked about.
            transfers.retain(|_, (_, at)| at.elapsed() < Duration::from_secs(600));
            transfers.insert(call.call_sid.clone(), (to.to_string(), Instant::now()));
        }
    }

    fn turn_finished(&self, call: &CallInfo, turn: &TurnSummary) {
        let Some(org) = call_org(call) else { return };
        if let Ok(mut h) = self.held.lock() {
            h.facts.turn(turn.role.as_str());
        }
        self.state.events().publish(
            org,
            StaffEvent::Turn {
                sid: call.call_sid.clone(),
                seq: turn.seq,
                role: turn.role.as_str().to_string(),
                text: turn.heard.clone().unwrap_or_else(|| turn.text.clone()),
                interrupted: turn.interrupted,
            },
        );
        let l = turn.latency;
        let ms = |v: Option<u32>| v.map(i64::from);
        self.state.queue().submit(WriteOp::Turn(TurnRecord {
            org,
            sid: CallSid(call.call_sid.clone()),
            seq: turn.seq as i32,
            role: turn.role.as_str().to_string(),
            text: turn.text.clone(),
            heard_text: turn.heard.clone(),
            interrupted: turn.interrupted,
            start_ms: turn.start_ms as i64,
            end_ms: turn.end_ms as i64,
            latency: TurnLatency {
                endpointing_ms: ms(l.endpointing_ms),
                stt_ms: ms(l.stt_ms),
                brain_first_token_ms: ms(l.brain_first_token_ms),
                tts_first_audio_ms: ms(l.tts_first_audio_ms),
                voice_to_voice_ms: ms(l.voice_to_voice_ms),
            },
        }));
    }

    fn event(&self, call: &CallInfo, event: &CallEvent) {
        match event.kind {
            "llm_fallback" => {
                self.state
                    .metrics()
                    .llm_fallbacks
                    .fetch_add(1, Ordering::Relaxed);
            }
            "llm_turn" if event.detail.contains(r#""brain":"llm""#) => {
                self.state
                    .metrics()
                    .llm_turns
                    .fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        let Some(org) = call_org(call) else { return };
        if let Ok(mut h) = self.held.lock() {
            h.facts.event(event.kind, &event.detail);
        }
        if crate::staff::calls::LIVE_EVENT_KINDS.contains(&event.kind) {
            self.state.events().publish(
                org,
                StaffEvent::CallEvent {
                    sid: call.call_sid.clone(),
                    kind: event.kind.to_string(),
                    detail: event.detail.clone(),
                },
            );
        }
        self.state.queue().submit(WriteOp::Event(EventRecord {
            org,
            sid: CallSid(call.call_sid.clone()),
            seq: event.seq as i32,
            at_ms: event.at_ms as i64,
            kind: event.kind.to_string(),
            detail: serde_json::json!({ "detail": event.detail }),
        }));
    }

    fn call_ended(&self, call: &CallInfo, end: &CallEnd) {
        let m = self.state.metrics();
        m.calls_ended.fetch_add(1, Ordering::Relaxed);
        m.malformed_messages.fetch_add(
            end.stats.malformed + end.stats.bad_payloads,
            Ordering::Relaxed,
        );
        m.frames_in
            .fetch_add(end.stats.media_frames, Ordering::Relaxed);
        m.frames_out
            .fetch_add(end.stats.frames_sent, Ordering::Relaxed);
        let Some(org) = call_org(call) else { return };
        let sid = CallSid(call.call_sid.clone());
        self.state.queue().submit(WriteOp::CallEnded {
            org,
            sid: sid.clone(),
            ended_at: Utc::now(),
            end_reason: end.reason.clone(),
            duration_ms: end.media_ms as i64,
        });
        let facts = self
            .held
            .lock()
            .map(|h| h.facts.clone())
            .unwrap_or_default();
        crate::staff::calls::publish_call_ended(
            self.state.clone(),
            org,
            sid.clone(),
            end.reason.clone(),
            end.media_ms as i64,
            facts,
        );
        let Some(recording) = end.recording.clone() else {
            return;
        };
        let state = self.state.clone();
        // Moving and checksumming the file is I/O: off the call's task.
        tokio::spawn(async move {
            match state.inner.recordings.put(org, &sid).await {
                Ok(stored) => state.queue().submit(WriteOp::Recording(RecordingRecord {
                    org,
                    sid,
                    location: stored.location,
                    channels: 2,
                    sample_rate: recording.sample_rate as i32,
                    duration_ms: recording.duration_ms as i64,
                    sha256: stored.sha256,
                })),
                Err(e) => {
                    error!(error = %e, call_sid = %sid, "recording could not be stored; it stays in staging")
                }
            }
        });
    }

    fn reply_latency(&self, _call: &CallInfo, latency: Duration) {
        if let Ok(mut h) = self.state.metrics().reply_latency_us.lock() {
            let _ = h.record((latency.as_micros() as u64).max(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_llm_brain_speaks_before_the_call_core_gives_up_on_it() {
        // The LLM's event budget, plus room for the offline answer, inside the core's limit.
        let margin = Duration::from_secs(1);
        assert!(
            llm::brain::EVENT_BUDGET + margin <= telephony::call::BRAIN_STEP_TIMEOUT,
            "llm::brain::EVENT_BUDGET must stay below telephony's BRAIN_STEP_TIMEOUT"
        );
        assert!(llm::settings::MAX_FIRST_TOKEN_TIMEOUT < llm::brain::EVENT_BUDGET);
    }

    #[test]
    fn a_call_sid_gets_one_stream_ever_and_ended_ones_are_forgotten_oldest_first() {
        let mut streams = StreamRegistry::default();
        streams.claim("CA1").unwrap();
        assert!(streams.claim("CA1").is_err(), "a second live stream");
        // A claim that never became a call (at capacity) may be made again.
        streams.unclaim("CA1");
        streams.claim("CA1").unwrap();
        let now = Instant::now();
        streams.end("CA1", now);
        assert!(
            streams.claim("CA1").is_err(),
            "a stream after the call ended"
        );

        // Bounded: past ENDED_STREAMS_MAX the oldest ended CallSid is forgotten.
        for i in 0..ENDED_STREAMS_MAX {
            streams.end(&format!("CB{i}"), now);
        }
        assert_eq!(streams.ended.len(), ENDED_STREAMS_MAX);
        assert_eq!(streams.ended_order.len(), ENDED_STREAMS_MAX);
        assert!(!streams.ended.contains("CA1"));
        assert!(streams.claim("CB7").is_err());

        // Time-bounded: what ended longer than ENDED_STREAM_TTL ago is forgotten.
        let mut streams = StreamRegistry::default();
        if let Some(long_ago) = now.checked_sub(ENDED_STREAM_TTL + Duration::from_secs(1)) {
            streams.end("CC1", long_ago);
            streams.end("CC2", now);
            assert!(!streams.ended.contains("CC1"));
            assert!(streams.claim("CC2").is_err());
        }
    }
}
