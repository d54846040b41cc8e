//! The conversation core: a sans-IO state machine that owns turn-taking for one call.
//!
//! The driver (one task per call, in `telephony`) feeds it [`Input`]s with the current time via
//! [`Conversation::handle_input`], then drains [`Conversation::poll_output`] and sleeps until
//! [`Conversation::poll_timeout`]. The core never reads a clock and never does I/O; media time is
//! counted in caller samples (8 kHz), so every rule below is testable in virtual time.
//!
//! What it does:
//! - greets first, then listens: caller audio is upsampled to 16 kHz, scored by the VAD and
//!   endpointed; each finished caller turn goes out as [`Output::Transcribe`].
//! - asks the brain ([`Output::AskBrain`]), turns each streamed sentence into a TTS request
//!   ([`Output::Synthesize`]), and queues the synthesised audio for playout.
//! - paces playout itself: 20 ms frames are released on an anchored schedule (no drift, no
//!   sleeps), at most [`PLAYOUT_LEAD`] ahead of real time, each sentence followed by a named mark.
//! - barge-in: caller speech during agent playout that lasts `barge_in_min_ms` stops the agent at
//!   once ([`Output::Clear`] + cancellations) and the agent's turn is recorded as what the caller
//!   heard, judged by the marks Twilio echoed, not as what was generated.
//! - DTMF, silence prompts, hang-up after repeated silence, a maximum call length and a graceful
//!   goodbye.
//! - engine failures are never mistaken for conversation: a sentence TTS failed on is not heard
//!   (and a reply of which nothing could be spoken is apologised for, once); a real caller turn
//!   speech-to-text failed on is not silence (the caller is asked to repeat, and after
//!   `max_unheard_prompts` such prompts in a row the brain gets [`CallerInput::Unheard`]).
//!
//! Invariant: the brain's history holds, for agent turns, only what the caller actually heard.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use media::endpoint::{EndpointConfig, EndpointEvent, Endpointer};
use media::resample::Resampler;
use media::vad::VoiceDetector;
use media::{ENGINE_FRAME, ENGINE_RATE, PHONE_FRAME, PHONE_RATE, mulaw};

use crate::engine::{Action, BrainRequest, CallerInput, EngineError, Message, Role};

/// Time as the core sees it: elapsed since the driver's epoch (normally the call's start).
pub type Now = Duration;

/// Length of one outbound frame: Twilio plays 20 ms μ-law frames.
pub const FRAME_DURATION: Duration = Duration::from_millis(20);

/// How far ahead of real time playout may run. Three frames (60 ms) keep Twilio's jitter buffer
/// from running dry when our task is scheduled late, yet a barge-in `clear` has at most 60 ms of
/// already-sent audio to discard; Twilio itself asks not to be flooded.
pub const PLAYOUT_LEAD: Duration = Duration::from_millis(60);

/// Prefix of the marks we send after each sentence; the rest is the segment number.
const MARK_PREFIX: &str = "seg-";

/// Identifies one caller turn (and the agent reply to it) within a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TurnId(pub u32);

/// Identifies one TTS request (a sentence) within a call. Ids only grow, so "everything up to
/// N" names a set of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId(pub u32);

/// Turn-taking settings. Defaults are documented with how they were chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationConfig {
    /// Said when the call connects, before the caller speaks.
    pub greeting: String,
    /// Endpointer thresholds (see [`EndpointConfig`]).
    pub endpoint: EndpointConfig,
    /// Voiced caller speech needed to interrupt the agent. 400 ms: a cough, "mm-hm" or "yeah"
    /// (typically 150–350 ms voiced) does not cut in; "no, wait" does.
    pub barge_in_min_ms: u32,
    /// Audio kept before the detected start of speech, so STT hears the first phoneme
    /// (the VAD needs a few frames to commit). 300 ms.
    pub pre_roll_ms: u32,
    /// Audio kept after the last speech frame: word-final consonants are quiet. 200 ms.
    pub tail_ms: u32,
    /// Caller silence (agent idle) before a prompt. 8 s: long enough to look something up.
    pub silence_timeout: Duration,
    /// What the agent says after `silence_timeout`.
    pub silence_prompt: String,
    /// Prompts before the agent says goodbye and hangs up. 2.
    pub max_silence_prompts: u32,
    /// Longest call; then the agent says goodbye. 15 minutes.
    pub max_call: Duration,
    /// Said before the agent hangs up on its own (silence, maximum length).
    pub goodbye: String,
    /// Said when the brain fails before saying anything, or when none of a reply could be
    /// synthesised.
    pub apology: String,
    /// Said when speech-to-text fails on a real caller turn (one that reached
    /// `barge_in_min_ms` of voiced speech): the caller spoke, we did not get it.
    pub unheard_prompt: String,
    /// Consecutive failed transcripts answered with `unheard_prompt`; the next one in a row
    /// goes to the brain as [`CallerInput::Unheard`] so it can offer a person or a message.
    /// 2, as for silence: asking a third time to repeat only frustrates a caller on a bad line
    /// (or during a recogniser outage).
    pub max_unheard_prompts: u32,
    /// How long after the last frame's play time we wait for Twilio to echo its marks before
    /// assuming the audio was heard. 2 s: Twilio echoes within a frame or two of playback.
    pub mark_grace: Duration,
    /// Start transcribing a turn once the caller has been silent this long, before the turn is
    /// known to have ended, so the transcript is ready (or nearly) when it does: the reply no
    /// longer waits `end_silence_ms` *and then* the decode. If the caller speaks again, that
    /// early transcript is discarded and the turn is transcribed again later. `None`: off (the
    /// default here; the server turns it on for real recognisers, whose results depend only on
    /// the audio — a scripted test recogniser answers in request order).
    pub early_transcribe_ms: Option<u32>,
    /// Said once when the brain has not begun a reply `filler_after` after it was asked (a slow
    /// tool, a slow provider), so the caller hears that we are on it instead of dead air. It is
    /// spoken and recorded like any sentence of the reply, and the reply follows it; a brain that
    /// then fails still gets the apology. `None`: never.
    pub filler: Option<String>,
    /// 1.5 s: a person on the phone fills a pause about then; the offline receptionist answers
    /// in milliseconds, so only a stalled tool or provider reaches it.
    pub filler_after: Duration,
}

impl Default for ConversationConfig {
    fn default() -> Self {
        Self {
            greeting: "Hello, thank you for calling. How can I help you today?".into(),
            endpoint: EndpointConfig::default(),
            barge_in_min_ms: 400,
            pre_roll_ms: 300,
            tail_ms: 200,
            silence_timeout: Duration::from_secs(8),
            silence_prompt: "Are you still there?".into(),
            max_silence_prompts: 2,
            max_call: Duration::from_secs(15 * 60),
            goodbye: "Thank you for calling. Goodbye.".into(),
            early_transcribe_ms: None,
            apology: "I'm sorry, I'm having trouble right now. Could you say that again?".into(),
            unheard_prompt: "Sorry, I didn't catch that — could you say it again?".into(),
            max_unheard_prompts: 2,
            mark_grace: Duration::from_secs(2),
            filler: Some("One moment, please.".into()),
            filler_after: Duration::from_millis(1500),
        }
    }
}

/// Why a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The caller hung up (Twilio sent `stop` or closed the socket).
    CallerHungUp,
    /// The brain decided the conversation was over.
    AgentHungUp,
    /// The caller stayed silent through every prompt.
    SilenceTimeout,
    /// The call reached `max_call`.
    MaxDuration,
    /// The caller was handed to a human.
    Transfer { to: String },
}

impl EndReason {
    /// Stable name, as stored.
    pub fn as_str(&self) -> &'static str {
        match self {
            EndReason::CallerHungUp => "caller_hung_up",
            EndReason::AgentHungUp => "agent_hung_up",
            EndReason::SilenceTimeout => "silence_timeout",
            EndReason::MaxDuration => "max_duration",
            EndReason::Transfer { .. } => "transfer",
        }
    }
}

/// Per-stage latency of a turn, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latency {
    /// End of caller speech to the endpoint decision (media time).
    pub endpointing_ms: Option<u32>,
    /// Endpoint decision to transcript.
    pub stt_ms: Option<u32>,
    /// Brain asked to first text.
    pub brain_first_token_ms: Option<u32>,
    /// First TTS request to first audio.
    pub tts_first_audio_ms: Option<u32>,
    /// End of caller speech to the first agent frame sent.
    pub voice_to_voice_ms: Option<u32>,
}

/// A finished turn, for the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnSummary {
    /// Order within the call, from 0.
    pub seq: u32,
    pub role: Role,
    /// What was said (agent: what was generated).
    pub text: String,
    /// Agent turns: what the caller actually heard.
    pub heard: Option<String>,
    /// Agent turns: cut off by the caller or the call's end.
    pub interrupted: bool,
    /// Media time, milliseconds from the start of the stream.
    pub start_ms: u64,
    pub end_ms: u64,
    pub latency: Latency,
}

/// Something worth recording about the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEvent {
    /// Order within the call, from 0.
    pub seq: u32,
    /// Media time in milliseconds.
    pub at_ms: u64,
    /// `start`, `dtmf`, `barge_in`, `backchannel`, `silence_prompt`, `error`, `hangup`, ...
    pub kind: &'static str,
    pub detail: String,
}

/// One 20 ms frame of agent audio, due now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaFrame {
    /// μ-law, ready for Twilio.
    pub ulaw: [u8; PHONE_FRAME],
    /// The same audio as PCM, for the recording.
    pub pcm: [i16; PHONE_FRAME],
    /// Media time (in caller samples) at which it is due to play: where it goes in the
    /// recording. Frames released together ahead of time get successive positions.
    pub at_sample: u64,
}

/// Inputs to the core.
#[derive(Debug)]
pub enum Input<'a> {
    /// The media stream started: greet.
    Start,
    /// One frame of caller audio, 8 kHz PCM (normally 160 samples).
    CallerAudio(&'a [i16]),
    /// A keypad press.
    Dtmf(char),
    /// Twilio echoed a mark: the audio before it has been played.
    MarkPlayed(&'a str),
    /// Speech-to-text finished for a turn.
    Transcript {
        turn: TurnId,
        result: Result<String, EngineError>,
    },
    /// The brain streamed text for a turn.
    BrainText { turn: TurnId, text: String },
    /// An engine reported something worth recording (the brain's tool call and its result or an
    /// escalation, the voice falling back): becomes a call event. Recorded even for a cancelled
    /// turn, since the side effect happened.
    EngineNote { kind: &'static str, detail: String },
    /// The brain finished a turn, with an action to take after speaking.
    BrainDone {
        turn: TurnId,
        result: Result<Option<Action>, EngineError>,
    },
    /// Synthesised audio for a segment, 8 kHz PCM, in order.
    SpeechAudio {
        segment: SegmentId,
        samples: &'a [i16],
    },
    /// A segment's synthesis is complete (or failed).
    SpeechDone {
        segment: SegmentId,
        result: Result<(), EngineError>,
    },
    /// Nothing happened; time passed (the driver's timer fired).
    Timeout,
    /// The stream ended (Twilio `stop`, or the socket closed).
    Stop,
}

/// Effects the driver must carry out, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this frame to Twilio now.
    Media(Box<MediaFrame>),
    /// Send a mark with this name now.
    Mark(String),
    /// Send `clear`: drop the audio Twilio has buffered.
    Clear,
    /// Transcribe this caller turn (mono PCM at `sample_rate`). `early`: the turn may not be
    /// over (see `early_transcribe_ms`); the driver may decline it by answering with an error
    /// (e.g. no idle decoder), and the turn is then transcribed when it ends.
    Transcribe {
        turn: TurnId,
        audio: Vec<i16>,
        sample_rate: u32,
        early: bool,
    },
    /// Ask the brain for a reply. `endpointed_at`: when the caller's turn was found to have
    /// ended (for reply latency); `None` for a key press.
    AskBrain {
        turn: TurnId,
        request: BrainRequest,
        endpointed_at: Option<Now>,
    },
    /// Synthesise this text; deliver audio as [`Input::SpeechAudio`] in request order.
    Synthesize { segment: SegmentId, text: String },
    /// Stop the brain turn; its late results will be ignored anyway.
    CancelBrain { turn: TurnId },
    /// Stop every synthesis request up to and including this segment.
    CancelSpeech { through: SegmentId },
    /// A turn is finished: persist it.
    TurnFinished(TurnSummary),
    /// Something happened: persist it.
    Event(CallEvent),
    /// End the call (close the media stream) for this reason.
    Hangup(EndReason),
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConversationStats {
    pub caller_frames: u64,
    pub frames_sent: u64,
    /// Times playout ran dry in the middle of an agent turn (TTS slower than real time).
    pub underruns: u64,
    pub barge_ins: u64,
    pub backchannels: u64,
    /// Marks we did not expect (e.g. those Twilio echoes for audio dropped by a `clear`).
    pub stale_marks: u64,
    /// Results that arrived for a turn or segment already cancelled.
    pub stale_results: u64,
    /// Early transcriptions thrown away because the caller went on speaking.
    pub early_discarded: u64,
    /// Playout runs moved forward in media time because the caller clock overtook them.
    pub reanchored: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AgentKind {
    Greeting,
    Reply,
    Prompt,
    Goodbye,
}

#[derive(Debug)]
struct Segment {
    id: SegmentId,
    text: String,
    /// Samples (8 kHz) queued for playout.
    queued: u64,
    synth_done: bool,
    /// Twilio echoed this segment's mark.
    heard_at: Option<Now>,
    /// When its first frame was released.
    first_sent: Option<Now>,
    /// Synthesis failed: whatever audio it had still plays (and its mark is still sent, so
    /// the turn completes on time), but its text never counts as heard.
    failed: bool,
    /// The filler said while the brain was slow, not part of its answer.
    filler: bool,
}

#[derive(Debug)]
struct AgentTurn {
    turn: Option<TurnId>,
    kind: AgentKind,
    /// The caller input this turn answers, restored if the turn is abandoned unheard.
    caller_text: Option<String>,
    segments: Vec<Segment>,
    brain_done: bool,
    action: Option<Action>,
    /// The brain failed and this turn already carries the apology: if that fails to play too,
    /// nothing more is tried (no apology for an apology).
    apologised: bool,
    /// The filler has been said (or is no longer due): at most once per turn.
    filler_said: bool,
    asked_at: Now,
    first_text_at: Option<Now>,
    first_synth_at: Option<Now>,
    first_audio_at: Option<Now>,
    first_sent_at: Option<Now>,
    first_sent_sample: Option<u64>,
    /// Due time of the last frame released: marks should come back soon after it.
    last_frame_due: Option<Now>,
    /// The caller turn this answers: (time of the endpoint decision, endpointing ms, stt ms).
    answers: Option<(Now, u32, u32)>,
}

impl AgentTurn {
    fn new(kind: AgentKind, turn: Option<TurnId>, now: Now) -> Self {
        Self {
            turn,
            kind,
            caller_text: None,
            segments: Vec::new(),
            brain_done: turn.is_none(),
            action: None,
            apologised: false,
            filler_said: false,
            asked_at: now,
            first_text_at: None,
            first_synth_at: None,
            first_audio_at: None,
            first_sent_at: None,
            first_sent_sample: None,
            last_frame_due: None,
            answers: None,
        }
    }

    fn segment_mut(&mut self, id: SegmentId) -> Option<&mut Segment> {
        self.segments.iter_mut().find(|s| s.id == id)
    }

    fn text(&self) -> String {
        join(self.segments.iter().map(|s| s.text.as_str()))
    }

    /// What the caller heard by `now`: every segment whose mark came back, then the part of the
    /// segment playing now, estimated by how long it has been playing (words in proportion).
    fn heard(&self, now: Now) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut previous_end: Option<Now> = None;
        for s in &self.segments {
            if s.heard_at.is_some() {
                if !s.failed {
                    parts.push(s.text.clone());
                }
                previous_end = s.heard_at;
                continue;
            }
            if s.failed && s.first_sent.is_none() {
                // Failed with no audio: nothing of it plays; the next sentence may.
                continue;
            }
            let Some(first_sent) = s.first_sent else {
                break;
            };
            if s.failed {
                // Playing what there was of a failed sentence: none of its words count.
                break;
            }
            let started = previous_end.map_or(first_sent, |p| p.max(first_sent));
            let duration = s.queued as f64 / f64::from(PHONE_RATE);
            if duration > 0.0 {
                let played = now.saturating_sub(started).as_secs_f64();
                let fraction = (played / duration).clamp(0.0, 1.0);
                let words: Vec<&str> = s.text.split_whitespace().collect();
                let n = (words.len() as f64 * fraction).floor() as usize;
                if n > 0 {
                    parts.push(words[..n].join(" "));
                }
            }
            break;
        }
        join(parts.iter().map(String::as_str))
    }

    /// What the caller heard of a turn that played to the end: every sentence but those TTS
    /// failed on.
    fn heard_whole(&self) -> String {
        join(
            self.segments
                .iter()
                .filter(|s| !s.failed)
                .map(|s| s.text.as_str()),
        )
    }

    /// Whether any of the brain's own words (not the filler) were spoken.
    fn said_anything(&self) -> bool {
        self.segments.iter().any(|s| !s.failed && !s.filler)
    }

    /// When the filler is due: a reply the brain has not begun, still waiting for it.
    fn filler_due(&self, after: Duration) -> Option<Now> {
        let waiting = self.kind == AgentKind::Reply
            && self.turn.is_some()
            && !self.brain_done
            && !self.filler_said
            && self.segments.is_empty();
        waiting.then(|| self.asked_at + after)
    }

    fn all_heard(&self) -> bool {
        self.segments
            .iter()
            .all(|s| s.heard_at.is_some() || (s.synth_done && s.queued == 0))
    }

    fn synthesis_done(&self) -> bool {
        self.brain_done && self.segments.iter().all(|s| s.synth_done)
    }
}

fn join<'a>(parts: impl Iterator<Item = &'a str>) -> String {
    parts
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Frames are stored inline (not boxed): the queue holds seconds of audio and a box per 20 ms
/// frame would be an allocation per frame on the hot path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum PlayoutItem {
    Frame {
        segment: SegmentId,
        pcm: [i16; PHONE_FRAME],
    },
    Mark(SegmentId),
}

/// A caller turn being captured.
#[derive(Debug)]
struct CallerTurn {
    /// 16 kHz audio from pre-roll onwards.
    audio: Vec<i16>,
    /// Voiced time so far.
    voiced_ms: u32,
    /// Reached `barge_in_min_ms`: a real turn, not a backchannel.
    confirmed: bool,
    /// A transcription started during a pause (see `early_transcribe_ms`).
    early: Option<EarlyTranscript>,
}

/// A transcription of a caller turn started before the turn ended.
#[derive(Debug)]
struct EarlyTranscript {
    id: TurnId,
    /// `voiced_ms` when the audio was taken: more voiced audio since makes it stale.
    voiced_ms: u32,
    result: Option<Result<String, EngineError>>,
    arrived_at: Option<Now>,
}

/// A caller turn handed to STT.
#[derive(Debug)]
struct PendingTranscript {
    start_ms: u64,
    end_ms: u64,
    endpointed_at: Now,
    endpointing_ms: u32,
    /// The turn reached `barge_in_min_ms` of voiced speech: the caller really spoke, so a
    /// failed transcript of it is not noise.
    confirmed: bool,
    result: Option<Result<String, EngineError>>,
    arrived_at: Option<Now>,
}

/// The boxed detector, so [`Conversation`] can derive `Debug`.
struct Detector(Box<dyn VoiceDetector>);

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VoiceDetector")
    }
}

/// Errors building a conversation.
#[derive(Debug, thiserror::Error)]
pub enum ConversationError {
    #[error("cannot build the caller resampler: {0}")]
    Resampler(#[from] media::resample::ResampleError),
}

/// The conversation core for one call. See the module docs.
#[derive(Debug)]
pub struct Conversation {
    config: ConversationConfig,
    // Inbound path.
    upsampler: Resampler,
    vad: Detector,
    endpointer: Endpointer,
    /// Reused buffer for each upsampled caller frame.
    upsampled: Vec<i16>,
    /// Pending 16 kHz samples not yet making a whole VAD frame.
    vad_frame: Vec<i16>,
    /// The last `recent_cap` 16 kHz samples, for pre-roll.
    recent: VecDeque<i16>,
    recent_cap: usize,
    caller_turn: Option<CallerTurn>,
    /// Media clock: caller samples (8 kHz) received.
    caller_samples: u64,
    // Turn bookkeeping.
    next_turn: u32,
    next_segment: u32,
    next_turn_seq: u32,
    next_event_seq: u32,
    pending: BTreeMap<TurnId, PendingTranscript>,
    /// Caller text whose answer was abandoned before it was heard; prefixed to the next input.
    carry_over: Option<String>,
    history: Vec<Message>,
    agent: Option<AgentTurn>,
    // Playout.
    playout: VecDeque<PlayoutItem>,
    /// The current segment's samples that do not yet fill a frame.
    partial: Vec<i16>,
    /// Playout schedule: frame `n = frames_sent - anchor.1` of the current run is due at
    /// `anchor.0 + n * 20 ms` and plays at media sample `anchor.2 + n * 160`.
    anchor: Option<(Now, u64, u64)>,
    /// Where the last run ends (due time and media sample after its last frame), so a run that
    /// starts while it is still playing continues after it instead of overlapping it.
    playout_end: (Now, u64),
    // Timers and lifecycle.
    started_at: Option<Now>,
    idle_since: Option<Now>,
    silence_prompts: u32,
    /// Real caller turns in a row that speech-to-text failed on (see `max_unheard_prompts`).
    unheard_in_row: u32,
    /// The call is ending for this reason once the current agent turn has been heard.
    ending: Option<EndReason>,
    ended: Option<EndReason>,
    outputs: VecDeque<Output>,
    stats: ConversationStats,
}

impl Conversation {
    /// A conversation that will detect speech with `vad`.
    pub fn new(
        config: ConversationConfig,
        vad: Box<dyn VoiceDetector>,
    ) -> Result<Self, ConversationError> {
        let endpointer = Endpointer::new(config.endpoint, ENGINE_RATE);
        let recent_ms = config.pre_roll_ms + config.endpoint.min_speech_ms + 40;
        let recent_cap = (recent_ms * ENGINE_RATE / 1000) as usize;
        Ok(Self {
            upsampler: Resampler::new(PHONE_RATE, ENGINE_RATE)?,
            vad: Detector(vad),
            endpointer,
            upsampled: Vec::with_capacity(ENGINE_FRAME * 2),
            vad_frame: Vec::with_capacity(ENGINE_FRAME * 2),
            recent: VecDeque::with_capacity(recent_cap),
            recent_cap,
            caller_turn: None,
            caller_samples: 0,
            next_turn: 0,
            next_segment: 0,
            next_turn_seq: 0,
            next_event_seq: 0,
            pending: BTreeMap::new(),
            carry_over: None,
            history: Vec::new(),
            agent: None,
            playout: VecDeque::new(),
            partial: Vec::with_capacity(PHONE_FRAME),
            anchor: None,
            playout_end: (Duration::ZERO, 0),
            started_at: None,
            idle_since: None,
            silence_prompts: 0,
            unheard_in_row: 0,
            ending: None,
            ended: None,
            outputs: VecDeque::new(),
            stats: ConversationStats::default(),
            config,
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> ConversationStats {
        self.stats
    }

    /// The conversation as the brain sees it.
    pub fn history(&self) -> &[Message] {
        &self.history
    }

    /// Why the call ended, once it has.
    pub fn ended(&self) -> Option<&EndReason> {
        self.ended.as_ref()
    }

    /// Media time in milliseconds (caller audio received).
    pub fn media_ms(&self) -> u64 {
        self.caller_samples * 1000 / u64::from(PHONE_RATE)
    }

    /// Whether the agent is mid-turn (preparing or playing a reply).
    pub fn agent_active(&self) -> bool {
        self.agent.is_some()
    }

    /// The next effect to carry out, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When the core next needs [`Input::Timeout`], if ever.
    pub fn poll_timeout(&self) -> Option<Now> {
        if self.ended.is_some() {
            return None;
        }
        let mut next: Option<Now> = None;
        let mut consider = |t: Now| next = Some(next.map_or(t, |n: Now| n.min(t)));
        if let Some(due) = self.next_frame_due() {
            consider(due.saturating_sub(PLAYOUT_LEAD));
        }
        if let Some(started) = self.started_at
            && self.ending.is_none()
        {
            consider(started + self.config.max_call);
        }
        if let Some(idle) = self.idle_deadline() {
            consider(idle);
        }
        if let Some(t) = self.mark_deadline() {
            consider(t);
        }
        if let Some(t) = self.filler_deadline() {
            consider(t);
        }
        next
    }

    /// Feeds one input at time `now`, then runs any timers that are due.
    pub fn handle_input(&mut self, now: Now, input: Input<'_>) {
        if let Input::EngineNote { kind, detail } = input {
            self.event(kind, detail);
            return;
        }
        if self.ended.is_some() {
            if let Input::SpeechAudio { .. }
            | Input::Transcript { .. }
            | Input::BrainText { .. }
            | Input::BrainDone { .. } = input
            {
                self.stats.stale_results += 1;
            }
            return;
        }
        match input {
            Input::Start => self.handle_start(now),
            Input::CallerAudio(samples) => self.handle_caller_audio(now, samples),
            Input::Dtmf(digit) => self.handle_dtmf(now, digit),
            Input::MarkPlayed(name) => self.handle_mark(now, name),
            Input::Transcript { turn, result } => self.handle_transcript(now, turn, result),
            Input::BrainText { turn, text } => self.handle_brain_text(now, turn, text),
            Input::BrainDone { turn, result } => self.handle_brain_done(now, turn, result),
            Input::EngineNote { .. } => {}
            Input::SpeechAudio { segment, samples } => {
                self.handle_speech_audio(now, segment, samples)
            }
            Input::SpeechDone { segment, result } => self.handle_speech_done(now, segment, result),
            Input::Timeout => {}
            Input::Stop => {
                self.handle_stop(now);
                return;
            }
        }
        self.run_timers(now);
    }

    // ---- inputs -------------------------------------------------------------------------------

    fn handle_start(&mut self, now: Now) {
        if self.started_at.is_some() {
            return;
        }
        self.started_at = Some(now);
        self.event("start", String::new());
        let greeting = self.config.greeting.clone();
        self.speak_fixed(now, AgentKind::Greeting, &greeting);
    }

    fn handle_caller_audio(&mut self, now: Now, samples: &[i16]) {
        self.stats.caller_frames += 1;
        self.caller_samples += samples.len() as u64;
        self.upsampled.clear();
        self.upsampler.process(samples, &mut self.upsampled);
        let mut offset = 0;
        while offset < self.upsampled.len() {
            let take = (ENGINE_FRAME - self.vad_frame.len()).min(self.upsampled.len() - offset);
            self.vad_frame
                .extend_from_slice(&self.upsampled[offset..offset + take]);
            offset += take;
            if self.vad_frame.len() == ENGINE_FRAME {
                self.process_vad_frame(now);
                self.vad_frame.clear();
            }
        }
    }

    fn process_vad_frame(&mut self, now: Now) {
        let probability = self.vad.0.speech_probability(&self.vad_frame);
        // Keep the pre-roll window.
        self.recent.extend(self.vad_frame.iter().copied());
        let excess = self.recent.len().saturating_sub(self.recent_cap);
        self.recent.drain(..excess);
        if let Some(turn) = self.caller_turn.as_mut() {
            turn.audio.extend_from_slice(&self.vad_frame);
            if probability >= self.config.endpoint.speech_threshold {
                turn.voiced_ms += 20;
            }
        }
        match self.endpointer.push(probability, ENGINE_FRAME) {
            Some(EndpointEvent::SpeechStarted { start }) => self.caller_started(start),
            Some(EndpointEvent::TurnEnded { start, end, .. }) => {
                self.caller_finished(now, start, end)
            }
            None => {}
        }
        let confirm = self
            .caller_turn
            .as_ref()
            .is_some_and(|t| !t.confirmed && t.voiced_ms >= self.config.barge_in_min_ms);
        if confirm {
            if let Some(t) = self.caller_turn.as_mut() {
                t.confirmed = true;
            }
            self.caller_confirmed(now);
        }
        self.transcribe_early();
    }

    /// Starts (or discards) the early transcription of the turn in progress.
    fn transcribe_early(&mut self) {
        let Some(after_ms) = self.config.early_transcribe_ms else {
            return;
        };
        let agent_audible = self
            .agent
            .as_ref()
            .is_some_and(|a| a.first_sent_at.is_some());
        let tail = u64::from(self.config.tail_ms * ENGINE_RATE / 1000);
        let position = self.endpointer.position();
        let trailing = self.endpointer.trailing_silence();
        let Some(turn) = self.caller_turn.as_mut() else {
            return;
        };
        if let Some(early) = &turn.early {
            if turn.voiced_ms == early.voiced_ms {
                return;
            }
            // The caller spoke again: that transcript misses words. Its result, if still to
            // come, is counted stale.
            turn.early = None;
            self.stats.early_discarded += 1;
        }
        let Some((speech_end, silence)) = trailing else {
            return;
        };
        // A short sound while the agent talks may be a backchannel: not worth a decode.
        if silence < u64::from(after_ms) * u64::from(ENGINE_RATE) / 1000
            || (!turn.confirmed && agent_audible)
        {
            return;
        }
        let excess = position.saturating_sub(speech_end + tail) as usize;
        let audio = turn.audio[..turn.audio.len().saturating_sub(excess)].to_vec();
        let id = TurnId(self.next_turn);
        self.next_turn += 1;
        turn.early = Some(EarlyTranscript {
            id,
            voiced_ms: turn.voiced_ms,
            result: None,
            arrived_at: None,
        });
        self.outputs.push_back(Output::Transcribe {
            turn: id,
            audio,
            sample_rate: ENGINE_RATE,
            early: true,
        });
    }

    fn caller_started(&mut self, start: u64) {
        let position = self.endpointer.position();
        let speech = (position - start) as usize;
        let pre_roll = (self.config.pre_roll_ms * ENGINE_RATE / 1000) as usize;
        let keep = (speech + pre_roll).min(self.recent.len());
        let mut audio = Vec::with_capacity(ENGINE_RATE as usize * 4);
        audio.extend(self.recent.iter().skip(self.recent.len() - keep));
        self.caller_turn = Some(CallerTurn {
            audio,
            voiced_ms: (speech as u64 * 1000 / u64::from(ENGINE_RATE)) as u32,
            confirmed: false,
            early: None,
        });
        self.idle_since = None;
    }

    /// The caller has spoken long enough to mean it: interrupt the agent if it is talking.
    fn caller_confirmed(&mut self, now: Now) {
        let interruptible = self
            .agent
            .as_ref()
            .is_some_and(|a| a.kind != AgentKind::Goodbye);
        if interruptible {
            self.interrupt_agent(now, "speech");
        }
    }

    fn caller_finished(&mut self, now: Now, start: u64, end: u64) {
        let Some(mut turn) = self.caller_turn.take() else {
            return;
        };
        // Only while the agent's voice is playing is a short sound a backchannel; while it is
        // still preparing a reply, a short "yes" or "Tuesday" is a real turn.
        let agent_audible = self
            .agent
            .as_ref()
            .is_some_and(|a| a.first_sent_at.is_some());
        if !turn.confirmed && agent_audible {
            // A short sound while the agent talks: a backchannel, not a turn.
            self.stats.backchannels += 1;
            self.event("backchannel", format!("{} ms voiced", turn.voiced_ms));
            return;
        }
        // Trim trailing silence beyond the tail.
        let position = self.endpointer.position();
        let tail = u64::from(self.config.tail_ms * ENGINE_RATE / 1000);
        let excess = position.saturating_sub(end + tail) as usize;
        let keep = turn.audio.len().saturating_sub(excess);
        turn.audio.truncate(keep);
        let endpointing_ms = ((position - end) * 1000 / u64::from(ENGINE_RATE)) as u32;
        let mut pending = PendingTranscript {
            start_ms: start * 1000 / u64::from(ENGINE_RATE),
            end_ms: end * 1000 / u64::from(ENGINE_RATE),
            endpointed_at: now,
            endpointing_ms,
            confirmed: turn.confirmed,
            result: None,
            arrived_at: None,
        };
        let usable = |e: &EarlyTranscript| {
            e.voiced_ms == turn.voiced_ms && !matches!(e.result, Some(Err(_)))
        };
        if let Some(early) = turn.early.take().filter(usable) {
            // Transcribed during the pause that turned out to end the turn.
            pending.result = early.result;
            pending.arrived_at = early.arrived_at;
            self.pending.insert(early.id, pending);
            self.answer_in_order(now);
            return;
        }
        let id = TurnId(self.next_turn);
        self.next_turn += 1;
        self.pending.insert(id, pending);
        self.outputs.push_back(Output::Transcribe {
            turn: id,
            audio: turn.audio,
            sample_rate: ENGINE_RATE,
            early: false,
        });
    }

    fn handle_transcript(&mut self, now: Now, turn: TurnId, result: Result<String, EngineError>) {
        if let Some(early) = self
            .caller_turn
            .as_mut()
            .and_then(|t| t.early.as_mut())
            .filter(|e| e.id == turn)
        {
            // Early: kept until the turn ends (or discarded if the caller goes on). A failed or
            // declined early transcript is not retried for the same audio; the turn is
            // transcribed normally when it ends.
            early.result = Some(result);
            early.arrived_at = Some(now);
            return;
        }
        let Some(p) = self.pending.get_mut(&turn) else {
            self.stats.stale_results += 1;
            return;
        };
        p.result = Some(result);
        p.arrived_at = Some(now);
        self.answer_in_order(now);
    }

    /// Answers finished transcripts in the order the caller spoke them.
    fn answer_in_order(&mut self, now: Now) {
        while let Some(entry) = self.pending.first_entry() {
            if entry.get().result.is_none() {
                break;
            }
            let (id, p) = entry.remove_entry();
            self.transcribed(now, id, p);
        }
    }

    fn transcribed(&mut self, now: Now, id: TurnId, p: PendingTranscript) {
        let arrived = p.arrived_at.unwrap_or(now);
        let stt_ms = ms(arrived.saturating_sub(p.endpointed_at));
        let text = match p.result {
            Some(Ok(text)) => text.trim().to_string(),
            Some(Err(e)) => {
                self.event("error", format!("speech-to-text: {e}"));
                if p.confirmed {
                    // The caller spoke and we failed to hear it: not silence, not noise.
                    self.caller_unheard(now, id, (p.endpointed_at, p.endpointing_ms, stt_ms));
                    return;
                }
                // Too short to be a real turn (a cough, a click): treated as noise below.
                String::new()
            }
            None => String::new(),
        };
        if text.is_empty() {
            // Nothing intelligible: noise. If that noise abandoned an unheard reply, answer the
            // words it abandoned; otherwise, if nothing else is going on, we are idle again.
            let quiet =
                self.agent.is_none() && self.pending.is_empty() && self.caller_turn.is_none();
            if quiet && self.ending.is_none() {
                if let Some(earlier) = self.carry_over.take() {
                    self.ask_brain(now, id, earlier, None);
                    return;
                }
                self.idle_since = Some(now);
            }
            return;
        }
        let latency = Latency {
            endpointing_ms: Some(p.endpointing_ms),
            stt_ms: Some(stt_ms),
            ..Latency::default()
        };
        self.finish_turn(TurnSummary {
            seq: 0,
            role: Role::Caller,
            text: text.clone(),
            heard: None,
            interrupted: false,
            start_ms: p.start_ms,
            end_ms: p.end_ms,
            latency,
        });
        self.silence_prompts = 0;
        self.unheard_in_row = 0;
        if self.ending.is_some() {
            // The agent is saying goodbye: the words are recorded, not answered.
            return;
        }
        if self.agent.is_some() {
            // A newer input supersedes whatever the agent was preparing or prompting (an
            // unheard reply's words move to `carry_over` and are answered with these).
            self.interrupt_agent(now, "newer_input");
        }
        let text = match self.carry_over.take() {
            Some(earlier) => format!("{earlier} {text}"),
            None => text,
        };
        if self.caller_turn.as_ref().is_some_and(|t| t.confirmed) {
            // The caller is still talking: wait and answer everything together.
            self.carry_over = Some(text);
            return;
        }
        self.ask_brain(
            now,
            id,
            text,
            Some((p.endpointed_at, p.endpointing_ms, stt_ms)),
        );
    }

    /// Speech-to-text failed on a real caller turn. The caller is there (so the silence count
    /// starts again) and is asked to repeat; after `max_unheard_prompts` such prompts in a row
    /// the brain is asked with [`CallerInput::Unheard`] instead, so it can offer a person or a
    /// message. Words carried over from an abandoned reply stay carried over for the next
    /// transcript.
    fn caller_unheard(&mut self, now: Now, id: TurnId, answers: (Now, u32, u32)) {
        self.silence_prompts = 0;
        self.unheard_in_row += 1;
        self.event("unheard", format!("{} in a row", self.unheard_in_row));
        let quiet = self.agent.is_none() && self.pending.is_empty() && self.caller_turn.is_none();
        if !quiet || self.ending.is_some() {
            // The caller is speaking again, later turns are on their way, or the agent is
            // already busy (or saying goodbye): nothing to say now.
            return;
        }
        if self.unheard_in_row > self.config.max_unheard_prompts {
            self.unheard_in_row = 0;
            let mut agent = AgentTurn::new(AgentKind::Reply, Some(id), now);
            agent.answers = Some(answers);
            self.send_to_brain(id, agent, CallerInput::Unheard, "(unheard)".into());
        } else {
            let prompt = self.config.unheard_prompt.clone();
            self.speak_fixed(now, AgentKind::Prompt, &prompt);
        }
    }

    /// Starts the agent's reply to what the caller said.
    fn ask_brain(&mut self, now: Now, id: TurnId, text: String, answers: Option<(Now, u32, u32)>) {
        let mut agent = AgentTurn::new(AgentKind::Reply, Some(id), now);
        agent.caller_text = Some(text.clone());
        agent.answers = answers;
        self.send_to_brain(id, agent, CallerInput::Speech(text.clone()), text);
    }

    /// Makes `agent` the current turn and asks the brain to answer `input`, which the history
    /// records as the caller's line `line`.
    fn send_to_brain(&mut self, id: TurnId, agent: AgentTurn, input: CallerInput, line: String) {
        let answers = agent.answers;
        let request = BrainRequest {
            history: self.history.clone(),
            input,
        };
        self.history.push(Message {
            role: Role::Caller,
            text: line,
        });
        self.agent = Some(agent);
        self.idle_since = None;
        self.outputs.push_back(Output::AskBrain {
            turn: id,
            request,
            endpointed_at: answers.map(|(at, _, _)| at),
        });
    }

    fn handle_dtmf(&mut self, now: Now, digit: char) {
        self.event("dtmf", digit.to_string());
        self.silence_prompts = 0;
        self.unheard_in_row = 0;
        if self
            .agent
            .as_ref()
            .is_some_and(|a| a.kind == AgentKind::Goodbye)
        {
            return;
        }
        if self.agent.is_some() {
            self.interrupt_agent(now, "dtmf");
        }
        let id = TurnId(self.next_turn);
        self.next_turn += 1;
        let request = BrainRequest {
            history: self.history.clone(),
            input: CallerInput::Dtmf(digit),
        };
        self.history.push(Message {
            role: Role::Caller,
            text: format!("(pressed {digit})"),
        });
        self.agent = Some(AgentTurn::new(AgentKind::Reply, Some(id), now));
        self.idle_since = None;
        self.outputs.push_back(Output::AskBrain {
            turn: id,
            request,
            endpointed_at: None,
        });
    }

    fn handle_brain_text(&mut self, now: Now, turn: TurnId, text: String) {
        let Some(agent) = self.agent.as_mut().filter(|a| a.turn == Some(turn)) else {
            self.stats.stale_results += 1;
            return;
        };
        agent.first_text_at.get_or_insert(now);
        let text = text.trim().to_string();
        if text.is_empty() {
            return;
        }
        self.add_segment(now, text);
    }

    fn handle_brain_done(
        &mut self,
        now: Now,
        turn: TurnId,
        result: Result<Option<Action>, EngineError>,
    ) {
        let Some(agent) = self.agent.as_mut().filter(|a| a.turn == Some(turn)) else {
            self.stats.stale_results += 1;
            return;
        };
        agent.brain_done = true;
        match result {
            Ok(action) => agent.action = action,
            Err(e) => {
                let nothing_said = agent.segments.iter().all(|s| s.filler);
                agent.apologised = nothing_said;
                self.event("error", format!("brain: {e}"));
                if nothing_said {
                    let apology = self.config.apology.clone();
                    self.add_segment(now, apology);
                }
            }
        }
        self.check_agent_complete(now);
    }

    fn handle_speech_audio(&mut self, now: Now, segment: SegmentId, samples: &[i16]) {
        let Some(agent) = self.agent.as_mut() else {
            self.stats.stale_results += 1;
            return;
        };
        let Some(seg) = agent.segment_mut(segment) else {
            self.stats.stale_results += 1;
            return;
        };
        if seg.synth_done {
            self.stats.stale_results += 1;
            return;
        }
        seg.queued += samples.len() as u64;
        agent.first_audio_at.get_or_insert(now);
        let mut rest = samples;
        while !rest.is_empty() {
            let take = (PHONE_FRAME - self.partial.len()).min(rest.len());
            self.partial.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.partial.len() == PHONE_FRAME {
                let mut pcm = [0i16; PHONE_FRAME];
                pcm.copy_from_slice(&self.partial);
                self.partial.clear();
                self.playout.push_back(PlayoutItem::Frame { segment, pcm });
            }
        }
        self.pump(now);
    }

    fn handle_speech_done(
        &mut self,
        now: Now,
        segment: SegmentId,
        result: Result<(), EngineError>,
    ) {
        let Some(seg) = self.agent.as_mut().and_then(|a| a.segment_mut(segment)) else {
            self.stats.stale_results += 1;
            return;
        };
        if seg.synth_done {
            return;
        }
        seg.synth_done = true;
        seg.failed = result.is_err();
        let queued = seg.queued;
        if !self.partial.is_empty() {
            // Pad the last partial frame with silence so the mark follows all of the sentence.
            let mut pcm = [0i16; PHONE_FRAME];
            pcm[..self.partial.len()].copy_from_slice(&self.partial);
            self.partial.clear();
            self.playout.push_back(PlayoutItem::Frame { segment, pcm });
        }
        if queued > 0 {
            self.playout.push_back(PlayoutItem::Mark(segment));
        }
        if let Err(e) = result {
            self.event(
                "error",
                format!(
                    "text-to-speech: segment {} ({queued} samples synthesised): {e}",
                    segment.0
                ),
            );
        }
        self.pump(now);
        self.check_agent_complete(now);
    }

    fn handle_mark(&mut self, now: Now, name: &str) {
        let id = name
            .strip_prefix(MARK_PREFIX)
            .and_then(|n| n.parse::<u32>().ok())
            .map(SegmentId);
        let seg = id.and_then(|id| self.agent.as_mut().and_then(|a| a.segment_mut(id)));
        match seg {
            Some(seg) if seg.heard_at.is_none() => {
                seg.heard_at = Some(now);
                self.check_agent_complete(now);
            }
            _ => self.stats.stale_marks += 1,
        }
    }

    fn handle_stop(&mut self, now: Now) {
        if let Some(agent) = self.agent.take() {
            self.finish_agent_turn(now, agent, true);
        }
        self.cancel_pending_work();
        let reason = self.ending.take().unwrap_or(EndReason::CallerHungUp);
        self.event("stop", reason.as_str().to_string());
        self.ended = Some(reason);
    }

    // ---- agent speech -------------------------------------------------------------------------

    /// Starts an agent turn that speaks fixed text (greeting, prompt, goodbye, apology).
    fn speak_fixed(&mut self, now: Now, kind: AgentKind, text: &str) {
        self.agent = Some(AgentTurn::new(kind, None, now));
        self.idle_since = None;
        let mut buffer = format!("{text} ");
        let sentences = crate::engine::drain_sentences(&mut buffer);
        for s in sentences {
            self.add_segment(now, s);
        }
        let rest = buffer.trim().to_string();
        if !rest.is_empty() {
            self.add_segment(now, rest);
        }
    }

    fn add_segment(&mut self, now: Now, text: String) {
        self.push_segment(now, text, false);
    }

    fn push_segment(&mut self, now: Now, text: String, filler: bool) {
        let id = SegmentId(self.next_segment);
        self.next_segment += 1;
        let Some(agent) = self.agent.as_mut() else {
            return;
        };
        agent.first_synth_at.get_or_insert(now);
        agent.segments.push(Segment {
            id,
            text: text.clone(),
            queued: 0,
            synth_done: false,
            heard_at: None,
            first_sent: None,
            failed: false,
            filler,
        });
        self.outputs
            .push_back(Output::Synthesize { segment: id, text });
    }

    fn next_frame_due(&self) -> Option<Now> {
        let (anchor_time, anchor_frames, _) = self.anchor?;
        match self.playout.front()? {
            PlayoutItem::Frame { .. } => {
                let n = (self.stats.frames_sent - anchor_frames) as u32;
                Some(anchor_time + FRAME_DURATION * n)
            }
            PlayoutItem::Mark(_) => Some(anchor_time),
        }
    }

    /// Releases every frame that is due, and the marks between them.
    fn pump(&mut self, now: Now) {
        loop {
            match self.playout.front() {
                None => {
                    if self.anchor.take().is_some() {
                        let mid_turn = self.agent.as_ref().is_some_and(|a| !a.synthesis_done());
                        if mid_turn {
                            self.stats.underruns += 1;
                        }
                    }
                    return;
                }
                Some(PlayoutItem::Mark(id)) => {
                    let id = *id;
                    self.playout.pop_front();
                    self.outputs
                        .push_back(Output::Mark(format!("{MARK_PREFIX}{}", id.0)));
                }
                Some(PlayoutItem::Frame { .. }) => {
                    let (end_time, end_sample) = self.playout_end;
                    let (anchor_time, anchor_frames, anchor_sample) = *self.anchor.get_or_insert((
                        now.max(end_time),
                        self.stats.frames_sent,
                        self.caller_samples.max(end_sample),
                    ));
                    let n = self.stats.frames_sent - anchor_frames;
                    let due = anchor_time + FRAME_DURATION * n as u32;
                    if due > now + PLAYOUT_LEAD {
                        return;
                    }
                    let Some(PlayoutItem::Frame { segment, pcm }) = self.playout.pop_front() else {
                        return;
                    };
                    let mut ulaw = [mulaw::SILENCE; PHONE_FRAME];
                    for (u, &s) in ulaw.iter_mut().zip(pcm.iter()) {
                        *u = mulaw::encode(s);
                    }
                    self.stats.frames_sent += 1;
                    // Its place in media time is when it is due to play, not when it leaves:
                    // frames released together (the lead) play one after another.
                    let mut at_sample = anchor_sample + n * PHONE_FRAME as u64;
                    if at_sample < self.caller_samples {
                        // The caller clock ran ahead of the schedule: caller frames that were
                        // held up (a stall on the network or while the call was set up) arrived
                        // in a burst after the run was anchored. The frame plays now, which is
                        // the end of that burst in media time; the run moves there, so the
                        // recording (which cannot place audio behind the caller clock) keeps it.
                        let behind = self.caller_samples - at_sample;
                        if let Some(anchor) = self.anchor.as_mut() {
                            anchor.2 += behind;
                        }
                        at_sample = self.caller_samples;
                        self.stats.reanchored += 1;
                    }
                    self.playout_end = (due + FRAME_DURATION, at_sample + PHONE_FRAME as u64);
                    if let Some(agent) = self.agent.as_mut() {
                        agent.first_sent_at.get_or_insert(now);
                        agent.first_sent_sample.get_or_insert(at_sample);
                        agent.last_frame_due = Some(due + FRAME_DURATION);
                        if let Some(seg) = agent.segment_mut(segment) {
                            seg.first_sent.get_or_insert(now.max(due));
                        }
                    }
                    self.outputs.push_back(Output::Media(Box::new(MediaFrame {
                        ulaw,
                        pcm,
                        at_sample,
                    })));
                }
            }
        }
    }

    fn mark_deadline(&self) -> Option<Now> {
        let agent = self.agent.as_ref()?;
        if !agent.synthesis_done() || !self.playout.is_empty() || agent.all_heard() {
            return None;
        }
        Some(agent.last_frame_due? + self.config.mark_grace)
    }

    fn check_agent_complete(&mut self, now: Now) {
        let complete = self.agent.as_ref().is_some_and(|a| {
            a.synthesis_done()
                && self.playout.is_empty()
                && self.partial.is_empty()
                && a.all_heard()
        });
        if !complete {
            return;
        }
        let Some(agent) = self.agent.take() else {
            return;
        };
        let kind = agent.kind;
        let action = agent.action.clone();
        // A reply of which TTS could speak nothing: the caller heard silence. Apologise (once;
        // the apology is a fixed turn, which is never apologised for). A reply with an action
        // goes ahead with it instead: "say that again?" before hanging up would be worse.
        let apologise = kind == AgentKind::Reply
            && action.is_none()
            && !agent.apologised
            && agent.segments.iter().any(|s| s.failed)
            && !agent.said_anything();
        self.finish_agent_turn(now, agent, false);
        self.idle_since = Some(now);
        if apologise {
            let apology = self.config.apology.clone();
            self.speak_fixed(now, AgentKind::Prompt, &apology);
            return;
        }
        let reason = match (kind, action) {
            (AgentKind::Goodbye, _) => Some(self.ending.clone().unwrap_or(EndReason::AgentHungUp)),
            (_, Some(Action::Hangup)) => Some(EndReason::AgentHungUp),
            (_, Some(Action::Transfer { to })) => {
                self.event("transfer", to.clone());
                Some(EndReason::Transfer { to })
            }
            (_, None) => None,
        };
        if let Some(reason) = reason {
            self.hang_up(reason);
        }
    }

    fn hang_up(&mut self, reason: EndReason) {
        self.cancel_pending_work();
        self.event("hangup", reason.as_str().to_string());
        self.ending = None;
        self.ended = Some(reason.clone());
        self.outputs.push_back(Output::Hangup(reason));
    }

    /// Forgets caller turns still being captured or transcribed: nobody will answer them.
    fn cancel_pending_work(&mut self) {
        self.pending.clear();
        self.caller_turn = None;
    }

    /// Stops the agent now: drops queued audio, clears Twilio's buffer if anything was sent,
    /// cancels the brain and TTS, and records the turn as what the caller heard.
    fn interrupt_agent(&mut self, now: Now, cause: &str) {
        let Some(agent) = self.agent.take() else {
            return;
        };
        let sent_anything = agent.first_sent_at.is_some();
        self.playout.clear();
        self.partial.clear();
        self.anchor = None;
        if sent_anything {
            self.outputs.push_back(Output::Clear);
            // Twilio's buffer is empty now: the next run starts from the present.
            self.playout_end = (Duration::ZERO, 0);
        }
        if let Some(turn) = agent.turn
            && !agent.brain_done
        {
            self.outputs.push_back(Output::CancelBrain { turn });
        }
        if let Some(last) = agent.segments.last()
            && agent.segments.iter().any(|s| !s.synth_done)
        {
            self.outputs
                .push_back(Output::CancelSpeech { through: last.id });
        }
        if sent_anything || agent.kind != AgentKind::Reply {
            self.stats.barge_ins += 1;
            let heard = agent.heard(now);
            self.event(
                "barge_in",
                format!(
                    "cause={cause} heard_words={} generated_words={}",
                    heard.split_whitespace().count(),
                    agent.text().split_whitespace().count()
                ),
            );
            self.finish_agent_turn(now, agent, true);
        } else {
            // Nothing was heard: forget the reply and answer the caller's words together with
            // what they say next.
            self.event("reply_abandoned", format!("cause={cause}"));
            if let Some(text) = agent.caller_text {
                if self
                    .history
                    .last()
                    .is_some_and(|m| m.role == Role::Caller && m.text == text)
                {
                    self.history.pop();
                }
                self.carry_over = Some(match self.carry_over.take() {
                    Some(earlier) => format!("{earlier} {text}"),
                    None => text,
                });
            }
        }
    }

    fn finish_agent_turn(&mut self, now: Now, agent: AgentTurn, interrupted: bool) {
        let text = agent.text();
        let heard = if interrupted {
            agent.heard(now)
        } else {
            agent.heard_whole()
        };
        let mut latency = Latency::default();
        if let Some((endpointed_at, endpointing_ms, stt_ms)) = agent.answers {
            latency.endpointing_ms = Some(endpointing_ms);
            latency.stt_ms = Some(stt_ms);
            latency.voice_to_voice_ms = agent
                .first_sent_at
                .map(|t| endpointing_ms + ms(t.saturating_sub(endpointed_at)));
        }
        latency.brain_first_token_ms = agent
            .first_text_at
            .map(|t| ms(t.saturating_sub(agent.asked_at)));
        latency.tts_first_audio_ms = match (agent.first_audio_at, agent.first_synth_at) {
            (Some(a), Some(s)) => Some(ms(a.saturating_sub(s))),
            _ => None,
        };
        let start_ms = agent
            .first_sent_sample
            .map_or(self.media_ms(), |s| s * 1000 / u64::from(PHONE_RATE));
        if !heard.is_empty() {
            self.history.push(Message {
                role: Role::Agent,
                text: heard.clone(),
            });
        }
        if text.is_empty() {
            return;
        }
        self.finish_turn(TurnSummary {
            seq: 0,
            role: Role::Agent,
            text,
            heard: Some(heard),
            interrupted,
            start_ms,
            end_ms: self.media_ms().max(start_ms),
            latency,
        });
    }

    // ---- timers -------------------------------------------------------------------------------

    /// When the filler is due, if it is: the brain is slow on a reply, the caller is not
    /// speaking, and the call is not ending.
    fn filler_deadline(&self) -> Option<Now> {
        self.config.filler.as_ref()?;
        if self.caller_turn.is_some() || self.ending.is_some() {
            return None;
        }
        self.agent.as_ref()?.filler_due(self.config.filler_after)
    }

    fn idle_deadline(&self) -> Option<Now> {
        if self.agent.is_some() || self.caller_turn.is_some() || !self.pending.is_empty() {
            return None;
        }
        Some(self.idle_since? + self.config.silence_timeout)
    }

    fn run_timers(&mut self, now: Now) {
        self.pump(now);
        if self.ended.is_some() {
            return;
        }
        if let Some(started) = self.started_at
            && self.ending.is_none()
            && now >= started + self.config.max_call
        {
            self.begin_goodbye(now, EndReason::MaxDuration);
            return;
        }
        if let Some(deadline) = self.idle_deadline()
            && now >= deadline
        {
            self.silence_prompts += 1;
            if self.silence_prompts > self.config.max_silence_prompts {
                self.begin_goodbye(now, EndReason::SilenceTimeout);
            } else {
                self.event("silence_prompt", self.silence_prompts.to_string());
                let prompt = self.config.silence_prompt.clone();
                self.speak_fixed(now, AgentKind::Prompt, &prompt);
            }
            return;
        }
        if let Some(deadline) = self.filler_deadline()
            && now >= deadline
            && let Some(filler) = self.config.filler.clone()
        {
            if let Some(agent) = self.agent.as_mut() {
                agent.filler_said = true;
            }
            self.event(
                "filler",
                format!("brain silent for {} ms", ms(self.config.filler_after)),
            );
            self.push_segment(now, filler, true);
        }
        if let Some(deadline) = self.mark_deadline()
            && now >= deadline
        {
            // Twilio did not echo our marks: assume the audio played rather than hang forever.
            self.event(
                "error",
                "mark echo overdue; assuming the audio was heard".into(),
            );
            if let Some(agent) = self.agent.as_mut() {
                for s in &mut agent.segments {
                    s.heard_at.get_or_insert(now);
                }
            }
            self.check_agent_complete(now);
        }
    }

    fn begin_goodbye(&mut self, now: Now, reason: EndReason) {
        if self.agent.is_some() {
            self.interrupt_agent(now, reason.as_str());
        }
        self.ending = Some(reason);
        let goodbye = self.config.goodbye.clone();
        self.speak_fixed(now, AgentKind::Goodbye, &goodbye);
    }

    // ---- records ------------------------------------------------------------------------------

    fn finish_turn(&mut self, mut summary: TurnSummary) {
        summary.seq = self.next_turn_seq;
        self.next_turn_seq += 1;
        self.outputs.push_back(Output::TurnFinished(summary));
    }

    fn event(&mut self, kind: &'static str, detail: String) {
        let seq = self.next_event_seq;
        self.next_event_seq += 1;
        let at_ms = self.media_ms();
        self.outputs.push_back(Output::Event(CallEvent {
            seq,
            at_ms,
            kind,
            detail,
        }));
    }
}

fn ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}
