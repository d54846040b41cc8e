//! The per-call task: one tokio task drives one call.
//!
//! It owns the Media Streams socket, the call's engine work, the recording and the sans-IO
//! [`Conversation`]; it feeds the core inputs stamped with the time since the call began, carries
//! out the core's outputs, and sleeps until the core's next timeout. Engine work (STT, brain, TTS)
//! runs in spawned tasks that report back through one bounded channel, so the loop never waits
//! on an engine.
//!
//! Engine work and its failures:
//! - **STT**: a turn's waiter takes a decoder slot (`CallEngines::stt_permits`) and hands it,
//!   with the engine's future, to a detached decode task that holds the slot until that future
//!   completes. Real decodes run on blocking threads and go on when their future is dropped,
//!   so the slot must outlive the wait: `stt_timeout` (8 s plus the turn's length, at most
//!   20 s; the wait for a slot included) and
//!   the call's end stop the *waiting*, and the turn gets its error at once, while the decode
//!   finishes in the background and only then frees its slot. An engine future that never
//!   completes therefore keeps its slot: the engine must bound its own work.
//! - **Brain**: one task per turn; cancelling the turn aborts it.
//! - **TTS**: one worker per call, sentence by sentence. Cancelled segments are marked by a
//!   watermark on a watch channel; the worker wakes when it moves and drops the stream being
//!   synthesised at once, without waiting for the engine's next chunk, so the next reply does
//!   not queue behind speech nobody will hear.
//! - A **panic** in an engine (building or polling its future or stream) is caught and becomes
//!   that turn's or segment's error (`Transcript(Err)`, `BrainDone(Err)`, `SpeechDone(Err)`),
//!   logged at error level: the core records it, apologises for a silent brain, and the call
//!   goes on.

use std::any::Any;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::BufWriter;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::AbortHandle;
use tokio::time::{Instant, MissedTickBehavior, timeout, timeout_at};
use tracing::{Instrument, debug, info, info_span, warn};

use agent::conversation::{
    CallEvent, Conversation, ConversationConfig, Input, Output, SegmentId, TurnId, TurnSummary,
};
use agent::engine::{
    Action, Brain, BrainEvent, BrainRequest, EngineError, SpeechToText, TextToSpeech,
};
use media::recording::DualChannelRecorder;
use media::resample::Resampler;
use media::vad::VoiceDetector;
use media::{PHONE_RATE, mulaw};

use crate::protocol::{self, Inbound, Start};

/// Engine results waiting for the call loop. The loop drains it every iteration; 64 holds a
/// few seconds of TTS chunks, and a full channel only slows the TTS task (sends are awaited:
/// these are control data, never dropped).
const ENGINE_EVENTS: usize = 64;
/// Sentences waiting for the call's TTS task. A reply is a handful of sentences.
const TTS_REQUESTS: usize = 16;
/// How long we wait for Twilio's `start` after the socket opens. Twilio sends `connected` and
/// `start` back to back; 10 s covers a slow network without keeping dead sockets.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// A provider that takes longer than this for one step is treated as down for this turn.
/// STT: [`stt_timeout`], 8 s plus the turn's length, at most 20 s. Brain: 6 s between streamed events — above the
/// receptionist's 5 s tool bound, so a stalled database gets the receptionist's own apology; the
/// caller has heard the filler at 1.5 s. TTS: 5 s between chunks (Piper's first chunk takes
/// 0.3–0.5 s idle, a Festival sentence 0.5–0.7 s), then the fallback voice.
const STT_TIMEOUT: Duration = Duration::from_secs(20);
/// The part of the STT timeout every turn gets, whatever its length.
const STT_TIMEOUT_BASE: Duration = Duration::from_secs(8);

/// How long a turn of `samples` at `rate` may wait for its transcript (a decoder slot
/// included): 8 s plus the turn's own length, at most [`STT_TIMEOUT`]. Whisper base decodes a
/// turn in 0.8–1.3 s on an idle core (0.25 CPU-s per second of speech), so a short turn that
/// is not back in 8 s is a recogniser in trouble, and the caller should be asked again rather
/// than wait out 20 s of silence; a long turn on a busy box still gets its time.
fn stt_timeout(samples: usize, rate: u32) -> Duration {
    let length = Duration::from_secs_f64(samples as f64 / f64::from(rate.max(1)));
    (STT_TIMEOUT_BASE + length).min(STT_TIMEOUT)
}
/// Longest wait for a brain's next streamed event before the turn is abandoned with an apology
/// (the LLM brain keeps its own silences under this: `llm::brain::EVENT_BUDGET`).
pub const BRAIN_STEP_TIMEOUT: Duration = Duration::from_secs(6);
const TTS_STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the recording's header is rewritten so a crash loses at most this much audio.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// Largest gap in Twilio's timestamps we fill with silence to keep the media clock aligned;
/// a larger jump is not packet loss but something odd, and is only counted.
const MAX_GAP_FILL_MS: u64 = 2_000;
/// Most silence filled over a whole call, so a peer cannot make us run the VAD on hours of
/// invented audio; real packet loss is far below this.
const MAX_TOTAL_GAP_FILL_MS: u64 = 30_000;
/// Twilio sends a media frame every 20 ms for the whole call; a stream silent this long is a
/// dead connection, and the call ends.
const INBOUND_SILENCE_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames refused in a row as out of order before the stream's numbering is taken up again:
/// 25 frames, half a second of caller audio.
const RESYNC_AFTER_FRAMES: u32 = 25;
/// A send Twilio does not take within this is a dead connection.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// The engines a call uses, shared by all calls.
#[derive(Clone)]
pub struct CallEngines {
    pub stt: Arc<dyn SpeechToText>,
    pub brain: Arc<dyn Brain>,
    pub tts: Arc<dyn TextToSpeech>,
    /// The voice that speaks a sentence `tts` failed on, and the rest of that call (Festival
    /// behind Piper); `None`: a failed sentence is not heard and the core apologises.
    pub tts_fallback: Option<Arc<dyn TextToSpeech>>,
    /// Caps concurrent speech-to-text decodes across all calls, so calls queue rather than
    /// oversubscribe the cores. A slot is held until the engine's future completes, even after
    /// the turn has timed out or the call has ended (the decode is still using a core).
    pub stt_permits: Arc<Semaphore>,
    /// Makes a voice activity detector for a new call.
    pub vad: Arc<dyn Fn() -> Box<dyn VoiceDetector> + Send + Sync>,
}

impl std::fmt::Debug for CallEngines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallEngines")
            .field("stt", &self.stt.name())
            .field("brain", &self.brain.name())
            .field("tts", &self.tts.name())
            .field(
                "tts_fallback",
                &self.tts_fallback.as_ref().map(|t| t.name()),
            )
            .finish()
    }
}

/// How to run an accepted call.
#[derive(Debug, Clone)]
pub struct CallSetup {
    pub conversation: ConversationConfig,
    /// Where to write the dual-channel recording; `None` records nothing.
    pub recording_path: Option<PathBuf>,
    /// The organisation, for log spans.
    pub org: String,
    /// This call's brain session (built at setup with the call's context: clinic, caller,
    /// direction); `None` uses the engines' shared brain.
    pub brain: Option<Arc<dyn Brain>>,
}

/// Identity of a call, from Twilio's `start` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    pub call_sid: String,
    pub stream_sid: String,
    pub account_sid: String,
    pub custom_parameters: BTreeMap<String, String>,
}

/// Counters of what arrived on the stream, for the call's record and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    pub messages: u64,
    pub media_frames: u64,
    pub frames_sent: u64,
    pub malformed: u64,
    pub bad_payloads: u64,
    pub out_of_order: u64,
    pub unknown_events: u64,
    pub binary_messages: u64,
    pub gap_fill_ms: u64,
    pub recording_errors: u64,
}

/// The recording a call left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingInfo {
    pub path: PathBuf,
    pub sample_rate: u32,
    pub frames: u64,
    pub duration_ms: u64,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEnd {
    /// [`agent::conversation::EndReason::as_str`], or `error:…` when the call failed.
    pub reason: String,
    /// Media time at the end.
    pub media_ms: u64,
    pub recording: Option<RecordingInfo>,
    pub stats: StreamStats,
}

/// Why a stream was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

/// What the call task reports, and how it learns how to run a call. Implemented by `api` to
/// persist calls; every method except `setup` must return at once (no I/O waits).
pub trait CallHooks: Send + Sync + 'static {
    /// Accepts the stream (checking its parameters) and says how to run the call.
    fn setup(&self, start: &Start) -> BoxFuture<'static, Result<CallSetup, Rejected>>;
    fn call_started(&self, call: &CallInfo);
    fn turn_finished(&self, call: &CallInfo, turn: &TurnSummary);
    fn event(&self, call: &CallInfo, event: &CallEvent);
    fn call_ended(&self, call: &CallInfo, end: &CallEnd);
    /// Time from the endpoint decision on a caller turn to the first frame of the reply written
    /// to the socket (engine time included; with instant engines, this is what the server adds).
    fn reply_latency(&self, call: &CallInfo, latency: Duration);
    /// The agent hands the caller to `to`; called before the stream is closed, so the
    /// webhook Twilio requests next can dial it.
    fn transfer_requested(&self, call: &CallInfo, to: &str);
}

/// A message from the socket.
#[derive(Debug)]
pub enum SocketMessage {
    Text(String),
    /// Twilio never sends binary frames; we count and drop them.
    Binary(usize),
}

/// A socket error; the call ends.
#[derive(Debug, thiserror::Error)]
#[error("socket: {0}")]
pub struct SocketError(pub String);

/// The Media Streams WebSocket as the call task needs it. `recv` must be cancel-safe.
pub trait MediaSocket: Send {
    /// The next message; `None` when the peer closed.
    fn recv(&mut self) -> impl Future<Output = Option<Result<SocketMessage, SocketError>>> + Send;
    fn send(&mut self, text: String) -> impl Future<Output = Result<(), SocketError>> + Send;
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

impl EngineEvent {
    fn kind(&self) -> &'static str {
        match self {
            EngineEvent::Transcript(..) => "transcript",
            EngineEvent::BrainText(..) => "brain_text",
            EngineEvent::Note(..) => "note",
            EngineEvent::BrainDone(..) => "brain_done",
            EngineEvent::SpeechAudio(..) => "speech_audio",
            EngineEvent::SpeechDone(..) => "speech_done",
        }
    }
}

/// Results from engine tasks.
#[derive(Debug)]
enum EngineEvent {
    Transcript(TurnId, Result<String, EngineError>),
    BrainText(TurnId, String),
    /// A call event from an engine task: a brain's tool call or escalation, a voice fallback.
    Note(&'static str, String),
    BrainDone(TurnId, Result<Option<Action>, EngineError>),
    SpeechAudio(SegmentId, Vec<i16>),
    SpeechDone(SegmentId, Result<(), EngineError>),
}

/// Runs one call from the socket's first message to its end. Never panics on bad input; a
/// call that fails ends with a stored reason.
pub async fn run_call<S: MediaSocket>(
    mut socket: S,
    engines: CallEngines,
    hooks: Arc<dyn CallHooks>,
) -> Option<CallEnd> {
    let mut stats = StreamStats::default();
    let start = match wait_for_start(&mut socket, &mut stats).await {
        Ok(start) => start,
        Err(why) => {
            warn!(%why, "media stream closed before it started");
            socket.close().await;
            return None;
        }
    };
    if !start.media_format.is_phone_mulaw() {
        warn!(call_sid = %start.call_sid, format = ?start.media_format, "unsupported media format");
        socket.close().await;
        return None;
    }
    let setup = match hooks.setup(&start).await {
        Ok(setup) => setup,
        Err(why) => {
            warn!(call_sid = %start.call_sid, %why, "media stream rejected");
            socket.close().await;
            return None;
        }
    };
    let span = info_span!("call", call_sid = %start.call_sid, org_id = %setup.org);
    let mut engines = engines;
    if let Some(brain) = setup.brain.clone() {
        engines.brain = brain;
    }
    let driver = CallTask::new(start, setup, engines, hooks, stats);
    Some(driver.run(socket).instrument(span).await)
}

async fn wait_for_start<S: MediaSocket>(
    socket: &mut S,
    stats: &mut StreamStats,
) -> Result<Start, String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let msg = match timeout(
            deadline.saturating_duration_since(Instant::now()),
            socket.recv(),
        )
        .await
        {
            Err(_) => return Err("no start message within 10 s".into()),
            Ok(None) => return Err("closed".into()),
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(Some(Ok(m))) => m,
        };
        stats.messages += 1;
        let text = match msg {
            SocketMessage::Text(t) => t,
            SocketMessage::Binary(_) => {
                stats.binary_messages += 1;
                continue;
            }
        };
        match protocol::parse(&text) {
            Ok(Inbound::Start(start)) => return Ok(start),
            Ok(Inbound::Connected { .. }) => {}
            Ok(Inbound::Stop { .. }) => return Err("stopped before start".into()),
            Ok(Inbound::Unknown { .. }) => stats.unknown_events += 1,
            Ok(_) => stats.out_of_order += 1,
            Err(e) => {
                stats.malformed += 1;
                debug!(error = %e, "malformed message before start");
            }
        }
    }
}

struct CallTask {
    info: CallInfo,
    engines: CallEngines,
    hooks: Arc<dyn CallHooks>,
    conversation: Conversation,
    recorder: Option<DualChannelRecorder<BufWriter<File>>>,
    recording_path: Option<PathBuf>,
    stats: StreamStats,
    epoch: Instant,
    events_tx: mpsc::Sender<EngineEvent>,
    events_rx: mpsc::Receiver<EngineEvent>,
    tts_tx: mpsc::Sender<(SegmentId, String)>,
    /// Sentences not yet handed to the TTS task (its channel was full). Kept here rather than
    /// awaited, so the loop never blocks on the TTS task while it waits on us.
    tts_backlog: VecDeque<(SegmentId, String)>,
    /// `{"event":"media","streamSid":"…","media":{"payload":"`, built once per call.
    media_prefix: String,
    /// When the last message arrived from Twilio.
    last_inbound: Instant,
    /// Silence filled into timestamp gaps so far.
    gap_filled_ms: u64,
    /// Segments up to and including this id are cancelled (−1: none). A watch channel rather
    /// than a plain atomic so the TTS task wakes the moment it moves: it drops a cancelled
    /// segment's stream at once instead of waiting for the engine's next chunk.
    tts_cancelled: watch::Sender<i64>,
    tts_task: AbortHandle,
    brain_tasks: HashMap<TurnId, AbortHandle>,
    stt_tasks: Vec<AbortHandle>,
    // Reused per-frame buffers.
    payload: Vec<u8>,
    pcm: Vec<i16>,
    last_chunk: u64,
    /// Twilio's timestamp of the frame that set `last_chunk`.
    last_chunk_ms: u64,
    /// Frames dropped in a row as out of order (see `handle_media`).
    out_of_order_in_row: u32,
    end_reason: Option<String>,
    /// The reply being prepared and when its caller turn was endpointed: the next frame sent
    /// is its first.
    awaiting_first_frame: Option<(TurnId, Duration)>,
}

impl CallTask {
    fn new(
        start: Start,
        setup: CallSetup,
        engines: CallEngines,
        hooks: Arc<dyn CallHooks>,
        stats: StreamStats,
    ) -> Self {
        let (events_tx, events_rx) = mpsc::channel(ENGINE_EVENTS);
        let (tts_tx, tts_rx) = mpsc::channel(TTS_REQUESTS);
        let (tts_cancelled, cancelled_rx) = watch::channel(-1);
        let tts_task = tokio::spawn(
            tts_worker(
                engines.tts.clone(),
                engines.tts_fallback.clone(),
                tts_rx,
                events_tx.clone(),
                cancelled_rx,
            )
            .in_current_span(),
        )
        .abort_handle();
        let vad = (engines.vad)();
        let conversation = Conversation::new(setup.conversation, vad)
            .expect("8 kHz to 16 kHz resampling is always supported");
        let info_stream_sid = start.stream_sid.clone();
        let info = CallInfo {
            call_sid: start.call_sid,
            stream_sid: start.stream_sid,
            account_sid: start.account_sid,
            custom_parameters: start.custom_parameters,
        };
        Self {
            info,
            engines,
            hooks,
            conversation,
            recorder: None,
            recording_path: setup.recording_path,
            stats,
            epoch: Instant::now(),
            events_tx,
            events_rx,
            tts_tx,
            tts_backlog: VecDeque::new(),
            media_prefix: protocol::media_prefix(&info_stream_sid),
            last_inbound: Instant::now(),
            gap_filled_ms: 0,
            tts_cancelled,
            tts_task,
            brain_tasks: HashMap::new(),
            stt_tasks: Vec::new(),
            payload: Vec::with_capacity(protocol::MAX_PAYLOAD_BYTES),
            pcm: Vec::with_capacity(protocol::MAX_PAYLOAD_BYTES),
            last_chunk: 0,
            last_chunk_ms: 0,
            out_of_order_in_row: 0,
            end_reason: None,
            awaiting_first_frame: None,
        }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn open_recording(&mut self) {
        let Some(path) = self.recording_path.clone() else {
            return;
        };
        let opened = File::create(&path)
            .map_err(media::recording::RecordingError::from)
            .and_then(|f| DualChannelRecorder::new(BufWriter::new(f), PHONE_RATE));
        match opened {
            Ok(r) => self.recorder = Some(r),
            Err(e) => {
                self.stats.recording_errors += 1;
                warn!(error = %e, path = %path.display(), "cannot create the recording; the call goes on unrecorded");
                self.recording_path = None;
            }
        }
    }

    async fn run<S: MediaSocket>(mut self, mut socket: S) -> CallEnd {
        info!("call started");
        self.open_recording();
        self.hooks.call_started(&self.info);
        self.read_backlog(&mut socket);
        let now = self.now();
        self.conversation.handle_input(now, Input::Start);
        let mut checkpoint = tokio::time::interval(CHECKPOINT_EVERY);
        checkpoint.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut hangup = false;
        let sleep = tokio::time::sleep_until(Instant::now());
        tokio::pin!(sleep);
        loop {
            if self.drain_outputs(&mut socket).await.is_err() {
                self.stop("socket_error");
                break;
            }
            self.feed_tts();
            if let Some(reason) = self.conversation.ended() {
                // We close the stream only when the agent ended the call; when the caller did,
                // the socket is already gone.
                hangup = *reason != agent::conversation::EndReason::CallerHungUp;
                let reason = reason.as_str().to_string();
                self.end_reason.get_or_insert(reason);
                break;
            }
            let dead_after = self.last_inbound + INBOUND_SILENCE_TIMEOUT;
            let wake = self
                .conversation
                .poll_timeout()
                .map_or(dead_after, |t| (self.epoch + t).min(dead_after));
            sleep.as_mut().reset(wake);
            tokio::select! {
                msg = socket.recv() => match msg {
                    Some(Ok(SocketMessage::Text(text))) => self.handle_text(&text),
                    Some(Ok(SocketMessage::Binary(_))) => {
                        self.last_inbound = Instant::now();
                        self.stats.messages += 1;
                        self.stats.binary_messages += 1;
                    }
                    Some(Err(e)) => {
                        warn!(error = %e, "media socket failed");
                        self.stop("socket_error");
                    }
                    None => self.stop("caller_hung_up"),
                },
                Some(event) = self.events_rx.recv() => self.handle_engine_event(event),
                _ = &mut sleep => {
                    if Instant::now() >= self.last_inbound + INBOUND_SILENCE_TIMEOUT {
                        warn!("no message from Twilio for 5 s; the connection is dead");
                        self.stop("socket_silent");
                    } else {
                        let now = self.now();
                        self.conversation.handle_input(now, Input::Timeout);
                    }
                }
                _ = checkpoint.tick() => self.checkpoint(),
            }
        }
        // Send whatever the last inputs produced (the goodbye's mark, a final event).
        let _ = self.drain_outputs(&mut socket).await;
        if hangup {
            socket.close().await;
        }
        self.finish()
    }

    /// Reads what Twilio sent while the call was being set up (a second or two of caller
    /// frames), without waiting for more. The media clock counts caller samples, so the
    /// greeting must be placed after them: started first, its frames would be given media
    /// times the backlog then overtakes, and the recording would drop them as late.
    fn read_backlog<S: MediaSocket>(&mut self, socket: &mut S) {
        // Bounded: a peer cannot keep the greeting waiting (10 s of frames).
        for _ in 0..500 {
            let Some(msg) = socket.recv().now_or_never() else {
                return;
            };
            match msg {
                Some(Ok(SocketMessage::Text(text))) => self.handle_text(&text),
                Some(Ok(SocketMessage::Binary(_))) => {
                    self.stats.messages += 1;
                    self.stats.binary_messages += 1;
                }
                Some(Err(e)) => {
                    warn!(error = %e, "media socket failed");
                    self.stop("socket_error");
                    return;
                }
                None => {
                    self.stop("caller_hung_up");
                    return;
                }
            }
        }
    }

    /// The stream ended from Twilio's side (stop, close, error).
    fn stop(&mut self, reason: &str) {
        if self.conversation.ended().is_none() {
            let now = self.now();
            self.conversation.handle_input(now, Input::Stop);
            if reason != "caller_hung_up" {
                self.end_reason = Some(reason.to_string());
            }
        }
    }

    fn handle_text(&mut self, text: &str) {
        self.stats.messages += 1;
        self.last_inbound = Instant::now();
        let message = match protocol::parse(text) {
            Ok(m) => m,
            Err(e) => {
                self.stats.malformed += 1;
                if self.stats.malformed <= 3 {
                    warn!(error = %e, "malformed media stream message dropped");
                }
                return;
            }
        };
        let now = self.now();
        match message {
            Inbound::Media(media) => self.handle_media(now, &media),
            Inbound::Mark { name } => self
                .conversation
                .handle_input(now, Input::MarkPlayed(&name)),
            Inbound::Dtmf { digit } => match digit.chars().next() {
                Some(d) if digit.chars().count() == 1 && is_dtmf(d) => {
                    self.conversation.handle_input(now, Input::Dtmf(d))
                }
                _ => self.stats.malformed += 1,
            },
            Inbound::Stop { .. } => self.stop("caller_hung_up"),
            Inbound::Start(_) | Inbound::Connected { .. } => self.stats.out_of_order += 1,
            Inbound::Unknown { event } => {
                self.stats.unknown_events += 1;
                debug!(%event, "unknown media stream event ignored");
            }
        }
    }

    fn handle_media(&mut self, now: Duration, media: &protocol::Media) {
        if media.track != "inbound" && media.track != "inbound_track" {
            self.stats.unknown_events += 1;
            return;
        }
        if media.chunk != 0 {
            // Chunks count up by one per frame. A step forward must agree with the timestamp
            // (packet loss moves both): one bogus chunk number far ahead must not make every
            // real frame after it look stale. If frames keep being refused anyway (a stream
            // renumbered mid-call), the numbering is taken up again after half a second.
            let jump = media.chunk.saturating_sub(self.last_chunk);
            let elapsed_frames = media.timestamp_ms.saturating_sub(self.last_chunk_ms) / 20;
            let in_order = media.chunk > self.last_chunk
                && (self.last_chunk == 0 || jump <= elapsed_frames + 2);
            if !in_order {
                self.stats.out_of_order += 1;
                self.out_of_order_in_row += 1;
                if self.out_of_order_in_row < RESYNC_AFTER_FRAMES {
                    return;
                }
                warn!(
                    chunk = media.chunk,
                    last = self.last_chunk,
                    "chunk numbering taken up again after {RESYNC_AFTER_FRAMES} refused frames"
                );
            }
            self.out_of_order_in_row = 0;
            self.last_chunk = media.chunk;
            self.last_chunk_ms = media.timestamp_ms;
        }
        if let Err(e) = protocol::decode_payload(&media.payload, &mut self.payload) {
            self.stats.bad_payloads += 1;
            if self.stats.bad_payloads <= 3 {
                warn!(error = %e, "bad media payload dropped");
            }
            return;
        }
        self.stats.media_frames += 1;
        // Packet loss upstream shows as a jump in Twilio's timestamp: fill it with silence so the
        // media clock (and the recording's alignment) stays true.
        let expected_ms = self.conversation.media_ms();
        if media.timestamp_ms > expected_ms + 40 {
            let gap = media.timestamp_ms - expected_ms;
            if gap <= MAX_GAP_FILL_MS && self.gap_filled_ms + gap <= MAX_TOTAL_GAP_FILL_MS {
                self.gap_filled_ms += gap;
                self.stats.gap_fill_ms += gap;
                let silence = [0i16; media::PHONE_FRAME];
                for _ in 0..gap / 20 {
                    self.caller_audio(now, &silence);
                }
            }
        }
        let mut pcm = std::mem::take(&mut self.pcm);
        mulaw::decode_into(&self.payload, &mut pcm);
        self.caller_audio(now, &pcm);
        self.pcm = pcm;
    }

    fn caller_audio(&mut self, now: Duration, pcm: &[i16]) {
        if let Some(rec) = self.recorder.as_mut()
            && let Err(e) = rec.write_caller(pcm)
        {
            self.stats.recording_errors += 1;
            warn!(error = %e, "recording write failed");
        }
        self.conversation.handle_input(now, Input::CallerAudio(pcm));
    }

    fn handle_engine_event(&mut self, event: EngineEvent) {
        let now = self.now();
        debug!(event = event.kind(), "engine event");
        let input = match event {
            EngineEvent::Transcript(turn, result) => Input::Transcript { turn, result },
            EngineEvent::BrainText(turn, text) => Input::BrainText { turn, text },
            EngineEvent::Note(kind, detail) => Input::EngineNote { kind, detail },
            EngineEvent::BrainDone(turn, result) => {
                self.brain_tasks.remove(&turn);
                Input::BrainDone { turn, result }
            }
            EngineEvent::SpeechAudio(segment, samples) => {
                self.conversation.handle_input(
                    now,
                    Input::SpeechAudio {
                        segment,
                        samples: &samples,
                    },
                );
                return;
            }
            EngineEvent::SpeechDone(segment, result) => Input::SpeechDone { segment, result },
        };
        self.conversation.handle_input(now, input);
    }

    /// Hands queued sentences to the TTS task as far as its channel has room. Called every loop
    /// iteration; the TTS task's progress (audio events) wakes the loop.
    fn feed_tts(&mut self) {
        while let Some((segment, text)) = self.tts_backlog.pop_front() {
            match self.tts_tx.try_send((segment, text)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(item)) => {
                    self.tts_backlog.push_front(item);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed((segment, _))) => {
                    let now = self.now();
                    self.conversation.handle_input(
                        now,
                        Input::SpeechDone {
                            segment,
                            result: Err(EngineError::Unavailable("tts task ended".into())),
                        },
                    );
                }
            }
        }
    }

    fn checkpoint(&mut self) {
        if let Some(rec) = self.recorder.as_mut()
            && let Err(e) = rec.checkpoint()
        {
            self.stats.recording_errors += 1;
            warn!(error = %e, "recording checkpoint failed");
        }
        self.stt_tasks.retain(|t| !t.is_finished());
    }

    async fn drain_outputs<S: MediaSocket>(&mut self, socket: &mut S) -> Result<(), SocketError> {
        while let Some(output) = self.conversation.poll_output() {
            match output {
                Output::Media(frame) => {
                    if let Some(rec) = self.recorder.as_mut()
                        && let Err(e) = rec.write_agent(frame.at_sample, &frame.pcm)
                    {
                        self.stats.recording_errors += 1;
                        warn!(error = %e, "recording write failed");
                    }
                    let mut text = String::with_capacity(self.media_prefix.len() + 220);
                    protocol::write_media_with_prefix(&self.media_prefix, &frame.ulaw, &mut text);
                    send(socket, text).await?;
                    self.stats.frames_sent += 1;
                    if let Some((turn, at)) = self.awaiting_first_frame.take() {
                        debug!(turn = turn.0, "first reply frame sent");
                        self.hooks
                            .reply_latency(&self.info, self.now().saturating_sub(at));
                    }
                }
                Output::Mark(name) => {
                    send(socket, protocol::mark(&self.info.stream_sid, &name)).await?
                }
                Output::Clear => send(socket, protocol::clear(&self.info.stream_sid)).await?,
                Output::Transcribe {
                    turn,
                    audio,
                    sample_rate,
                    early,
                } => {
                    debug!(turn = turn.0, early, "transcribing");
                    self.spawn_stt(turn, audio, sample_rate, early)
                }
                Output::AskBrain {
                    turn,
                    request,
                    endpointed_at,
                } => {
                    debug!(turn = turn.0, "asking the brain");
                    self.awaiting_first_frame = endpointed_at.map(|at| (turn, at));
                    self.spawn_brain(turn, request)
                }
                Output::Synthesize { segment, text } => {
                    debug!(segment = segment.0, "synthesizing");
                    self.tts_backlog.push_back((segment, text));
                }
                Output::CancelBrain { turn } => {
                    if self.awaiting_first_frame.is_some_and(|(t, _)| t == turn) {
                        self.awaiting_first_frame = None;
                    }
                    if let Some(task) = self.brain_tasks.remove(&turn) {
                        task.abort();
                    }
                }
                Output::CancelSpeech { through } => {
                    // A reply cancelled before its first frame has no latency to report.
                    self.awaiting_first_frame = None;
                    self.tts_backlog.retain(|(s, _)| *s > through);
                    let through = i64::from(through.0);
                    self.tts_cancelled.send_if_modified(|w| {
                        let moved = through > *w;
                        *w = (*w).max(through);
                        moved
                    });
                }
                Output::TurnFinished(turn) => {
                    debug!(role = %turn.role, seq = turn.seq, interrupted = turn.interrupted, "turn finished");
                    self.hooks.turn_finished(&self.info, &turn);
                }
                Output::Event(event) => {
                    if event.kind == "error" {
                        warn!(detail = %event.detail, "call error");
                    } else {
                        debug!(kind = event.kind, "call event");
                    }
                    self.hooks.event(&self.info, &event);
                }
                Output::Hangup(reason) => {
                    info!(reason = reason.as_str(), "agent ends the call");
                    if let agent::conversation::EndReason::Transfer { to } = &reason {
                        self.hooks.transfer_requested(&self.info, to);
                    }
                }
            }
        }
        Ok(())
    }

    fn spawn_stt(&mut self, turn: TurnId, audio: Vec<i16>, sample_rate: u32, early: bool) {
        let limit = stt_timeout(audio.len(), sample_rate);
        let stt = self.engines.stt.clone();
        let permits = self.engines.stt_permits.clone();
        let tx = self.events_tx.clone();
        let task = tokio::spawn(
            async move {
                // Waiting for a decoder counts against the timeout too: a turn stuck in the
                // queue would hold back every later turn of the call.
                let wait = async move {
                    let permit = if early {
                        // Speculative work only runs on an idle decoder: it must never make a
                        // finished turn (this call's or another's) wait. Declined, the turn is
                        // transcribed when it ends.
                        permits.try_acquire_owned().map_err(|_| {
                            EngineError::Unavailable("no idle decoder for an early decode".into())
                        })?
                    } else {
                        permits.acquire_owned().await.map_err(|_| {
                            EngineError::Unavailable("speech-to-text pool closed".into())
                        })?
                    };
                    // The decode runs in a detached task that owns the decoder slot until the
                    // engine's future completes: a real decode goes on on its blocking thread
                    // when the future is dropped, so a slot released at the timeout (or when
                    // the call ends) would let the pool oversubscribe the cores. A timeout
                    // stops this call's waiting, not the work.
                    let (done_tx, done_rx) = oneshot::channel();
                    tokio::spawn(
                        async move {
                            // Building the future is inside the guarded block too: an engine
                            // that panics before returning one fails this turn, not the task.
                            let result = AssertUnwindSafe(async move {
                                stt.transcribe(audio, sample_rate).await
                            })
                            .catch_unwind()
                            .await
                            .unwrap_or_else(|panic| Err(panicked("speech-to-text", &panic)));
                            drop(permit);
                            let _ = done_tx.send(result);
                        }
                        .in_current_span(),
                    );
                    done_rx.await.unwrap_or_else(|_| {
                        Err(EngineError::Failed("speech-to-text task vanished".into()))
                    })
                };
                let result = match timeout(limit, wait).await {
                    Ok(r) => r,
                    Err(_) => Err(EngineError::Unavailable("speech-to-text timed out".into())),
                };
                let _ = tx.send(EngineEvent::Transcript(turn, result)).await;
            }
            .in_current_span(),
        );
        self.stt_tasks.push(task.abort_handle());
    }

    fn spawn_brain(&mut self, turn: TurnId, request: BrainRequest) {
        let brain = self.engines.brain.clone();
        let tx = self.events_tx.clone();
        let task = tokio::spawn(
            async move {
                // `None`: the call is gone, nobody to tell.
                let run = async {
                    let mut stream = brain.respond(request);
                    let mut action = None;
                    loop {
                        match timeout(BRAIN_STEP_TIMEOUT, stream.next()).await {
                            Err(_) => {
                                break Some(Err(EngineError::Unavailable(
                                    "brain timed out".into(),
                                )));
                            }
                            Ok(None) => break Some(Ok(action)),
                            Ok(Some(Err(e))) => break Some(Err(e)),
                            Ok(Some(Ok(BrainEvent::Text(text)))) => {
                                if tx.send(EngineEvent::BrainText(turn, text)).await.is_err() {
                                    break None;
                                }
                            }
                            Ok(Some(Ok(BrainEvent::Action(a)))) => action = Some(a),
                            Ok(Some(Ok(BrainEvent::Note { kind, detail }))) => {
                                if tx.send(EngineEvent::Note(kind, detail)).await.is_err() {
                                    break None;
                                }
                            }
                        }
                    }
                };
                // A panic in the brain (building the stream or polling it) ends the turn with
                // an error, so the core apologises and the call goes on.
                let result = match AssertUnwindSafe(run).catch_unwind().await {
                    Ok(Some(result)) => result,
                    Ok(None) => return,
                    Err(panic) => Err(panicked("brain", &panic)),
                };
                let _ = tx.send(EngineEvent::BrainDone(turn, result)).await;
            }
            .in_current_span(),
        );
        self.brain_tasks.insert(turn, task.abort_handle());
    }

    fn finish(mut self) -> CallEnd {
        self.tts_task.abort();
        for (_, t) in self.brain_tasks.drain() {
            t.abort();
        }
        for t in self.stt_tasks.drain(..) {
            t.abort();
        }
        // Outputs the final inputs produced (turns, events) are reported even though nothing
        // more is sent.
        while let Some(output) = self.conversation.poll_output() {
            match output {
                Output::TurnFinished(turn) => self.hooks.turn_finished(&self.info, &turn),
                Output::Event(event) => self.hooks.event(&self.info, &event),
                _ => {}
            }
        }
        let recording = match (self.recorder.take(), self.recording_path.take()) {
            (Some(rec), Some(path)) => match rec.finish() {
                Ok(summary) => Some(RecordingInfo {
                    path,
                    sample_rate: summary.sample_rate,
                    frames: summary.frames,
                    duration_ms: summary.duration_ms(),
                }),
                Err(e) => {
                    self.stats.recording_errors += 1;
                    warn!(error = %e, "recording could not be finished; it will be repaired at the next start");
                    None
                }
            },
            _ => None,
        };
        let end = CallEnd {
            reason: self
                .end_reason
                .clone()
                .unwrap_or_else(|| "caller_hung_up".into()),
            media_ms: self.conversation.media_ms(),
            recording,
            stats: self.stats,
        };
        let core = self.conversation.stats();
        info!(reason = %end.reason, media_ms = end.media_ms, malformed = self.stats.malformed,
              bad_payloads = self.stats.bad_payloads, barge_ins = core.barge_ins,
              underruns = core.underruns, early_discarded = core.early_discarded, reanchored = core.reanchored, "call ended");
        self.hooks.call_ended(&self.info, &end);
        end
    }
}

/// Sends with a deadline: a peer that stops reading is a dead connection.
async fn send<S: MediaSocket>(socket: &mut S, text: String) -> Result<(), SocketError> {
    match timeout(SEND_TIMEOUT, socket.send(text)).await {
        Ok(r) => r,
        Err(_) => Err(SocketError("send timed out".into())),
    }
}

/// The error a caught engine panic becomes, logged because it is a bug someone must fix.
fn panicked(engine: &str, panic: &Box<dyn Any + Send>) -> EngineError {
    let why = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic".into());
    tracing::error!(engine, panic = %why, "engine panicked; the turn fails and the call goes on");
    EngineError::Failed(format!("{engine} panicked: {why}"))
}

fn is_dtmf(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D')
}

/// Synthesises the call's sentences one at a time, in order, resampled to 8 kHz. A segment at
/// or below the `cancelled` watermark is skipped, and one being synthesised when the watermark
/// passes it is dropped at once (the engine's pending chunk is not awaited), so the next reply
/// does not queue behind speech nobody will hear.
///
/// A sentence the voice fails on (an error, a panic, no chunk within `TTS_STEP_TIMEOUT`) is
/// spoken again, whole, by the fallback voice if there is one, and the fallback speaks the rest
/// of the call: a voice that failed once is likely to fail again, and each failure costs the
/// caller the timeout in silence. The switch is a call event (`tts_fallback`).
async fn tts_worker(
    primary: Arc<dyn TextToSpeech>,
    fallback: Option<Arc<dyn TextToSpeech>>,
    mut requests: mpsc::Receiver<(SegmentId, String)>,
    events: mpsc::Sender<EngineEvent>,
    mut cancelled: watch::Receiver<i64>,
) {
    let mut voice = Voice::new(primary);
    let mut fallback = fallback.map(Voice::new);
    let mut out = Vec::with_capacity(8_000);
    while let Some((segment, text)) = requests.recv().await {
        if is_cancelled(&cancelled, segment) {
            continue;
        }
        let mut result = match voice
            .speak(segment, &text, &events, &mut cancelled, &mut out)
            .await
        {
            Some(r) => r,
            None => return, // The call has ended.
        };
        if let Err(e) = &result
            && !is_cancelled(&cancelled, segment)
            && let Some(next) = fallback.take()
        {
            let note = format!(
                "{} failed ({e}); {} speaks the rest of the call",
                voice.tts.name(),
                next.tts.name()
            );
            warn!(%note, "text-to-speech falls back");
            if events
                .send(EngineEvent::Note("tts_fallback", note))
                .await
                .is_err()
            {
                return;
            }
            voice = next;
            result = match voice
                .speak(segment, &text, &events, &mut cancelled, &mut out)
                .await
            {
                Some(r) => r,
                None => return,
            };
        }
        if events
            .send(EngineEvent::SpeechDone(segment, result))
            .await
            .is_err()
        {
            return;
        }
    }
}

fn is_cancelled(w: &watch::Receiver<i64>, s: SegmentId) -> bool {
    i64::from(s.0) <= *w.borrow()
}

/// A voice and its resampler to the phone's rate.
struct Voice {
    tts: Arc<dyn TextToSpeech>,
    resampler: Result<Resampler, String>,
}

impl Voice {
    fn new(tts: Arc<dyn TextToSpeech>) -> Self {
        let resampler = Resampler::new(tts.sample_rate(), PHONE_RATE).map_err(|e| e.to_string());
        Self { tts, resampler }
    }

    /// Speaks one sentence, streaming its audio as `SpeechAudio` events. `None` when the call
    /// has ended (nobody to tell); otherwise how the synthesis went. A cancelled sentence stops
    /// at once and is `Ok`.
    async fn speak(
        &mut self,
        segment: SegmentId,
        text: &str,
        events: &mpsc::Sender<EngineEvent>,
        cancelled: &mut watch::Receiver<i64>,
        out: &mut Vec<i16>,
    ) -> Option<Result<(), EngineError>> {
        let resampler = match self.resampler.as_mut() {
            Ok(r) => r,
            Err(e) => {
                return Some(Err(EngineError::Unavailable(format!(
                    "TTS sample rate unsupported: {e}"
                ))));
            }
        };
        resampler.reset();
        // A panic in the engine (starting the stream or making a chunk) fails this sentence
        // only; the worker goes on with the next.
        let mut result = Ok(());
        let tts = self.tts.clone();
        let text = text.to_string();
        let started = std::panic::catch_unwind(AssertUnwindSafe(|| tts.synthesize(text)));
        let mut stream = match started {
            Ok(stream) => Some(stream),
            Err(panic) => {
                result = Err(panicked("text-to-speech", &panic));
                None
            }
        };
        let mut deadline = Instant::now() + TTS_STEP_TIMEOUT;
        while let Some(chunks) = stream.as_mut() {
            let step = tokio::select! {
                biased;
                changed = cancelled.changed() => {
                    if changed.is_err() {
                        return None; // The call has ended.
                    }
                    if is_cancelled(cancelled, segment) {
                        break;
                    }
                    continue;
                }
                step = timeout_at(deadline, AssertUnwindSafe(chunks.next()).catch_unwind()) => step,
            };
            match step {
                Err(_) => {
                    result = Err(EngineError::Unavailable("text-to-speech timed out".into()));
                    break;
                }
                Ok(Err(panic)) => {
                    result = Err(panicked("text-to-speech", &panic));
                    break;
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(Err(e)))) => {
                    result = Err(e);
                    break;
                }
                Ok(Ok(Some(Ok(samples)))) => {
                    if is_cancelled(cancelled, segment) {
                        break;
                    }
                    out.clear();
                    resampler.process(&samples, out);
                    if !out.is_empty() {
                        if events
                            .send(EngineEvent::SpeechAudio(segment, out.clone()))
                            .await
                            .is_err()
                        {
                            return None;
                        }
                        // Let the call task (woken by that send, often on this same worker
                        // thread) put the audio on the wire now, instead of after this loop has
                        // filled the channel: a fast engine otherwise delays the first frame by
                        // the time it takes to make dozens of chunks (measured: ~1.3 ms).
                        tokio::task::yield_now().await;
                    }
                    deadline = Instant::now() + TTS_STEP_TIMEOUT;
                }
            }
        }
        // Dropped here, mid-chunk if cancelled: the engine stops (or at least we stop waiting).
        drop(stream);
        out.clear();
        resampler.flush(out);
        if !out.is_empty()
            && !is_cancelled(cancelled, segment)
            && events
                .send(EngineEvent::SpeechAudio(segment, out.clone()))
                .await
                .is_err()
        {
            return None;
        }
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stt_timeout_grows_with_the_turn_up_to_its_cap() {
        assert_eq!(stt_timeout(0, 16_000), Duration::from_secs(8));
        assert_eq!(stt_timeout(3 * 16_000, 16_000), Duration::from_secs(11));
        assert_eq!(stt_timeout(60 * 16_000, 16_000), STT_TIMEOUT);
    }
}
