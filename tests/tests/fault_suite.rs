//! The fault suite (issue 9, "never silent, never lost"): each case injects one fault into a real
//! call — the real server (`api::start`), Twilio's real Media Streams protocol on a loopback
//! WebSocket, the simulated caller — and checks, from the caller's side, how long they were left
//! in silence and how the call ended, then that every record of the call landed: turns, events,
//! the call's end and a recording whose channels hold what was said and what was heard.
//!
//! Faults: the engines (speech-to-text, brain, text-to-speech) erroring, hanging, panicking or
//! running slower than real time, on every call to them or on one; the database stopped mid-call,
//! stopped before the call, or hanging; bad input on the stream mid-call (through a tampering
//! proxy between the caller and the server).
//!
//! Covered elsewhere and not redone here: a replayed stream for a finished call
//! (`faults.rs`, `a_replayed_stream_for_a_finished_call_is_refused_and_its_recording_kept`), call
//! setup while the database hangs (`faults.rs`, `a_call_set_up_while_the_database_hangs_…`; here
//! the hang also covers the voice webhook), kill -9 of the real binary mid-call
//! (`api/tests/crash.rs`), garbage sent before the first audio (`call.rs`).
//!
//! Each case prints one row of `| fault | longest dead air heard (ms) | outcome | data intact |`
//! (run with `--nocapture`). Dead air is measured on the caller's timeline (`CallReport::heard`):
//! the longest stretch of silence from the end of a caller line (or the call's start) until the
//! agent's last sound before the caller's next line, or the whole stretch if the agent said
//! nothing. Bounds are the design's, with margins for a shared 2-core machine; lower bounds prove
//! the fault was in effect (a timeout cannot fire early).

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agent::conversation::ConversationConfig;
use agent::engine::{
    Brain, BrainEvent, BrainRequest, CallerInput, EngineError, SpeechToText, TextToSpeech,
};
use agent::testing::{EchoBrain, ScriptedStt, ToneTts};
use api::Server;
use api::caller::{CallReport, CallerConfig, Line, LineStart, place_call};
use common::*;
use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream};
use futures_util::{SinkExt as _, StreamExt as _};
use media::{PHONE_RATE, mulaw, testsignal};
use storage::testing::PgCluster;
use storage::{
    CallSid, CallSummary, EventRecord, LocalRecordingStore, RecordingRecord, RecordingStore,
    TurnRecord,
};
use telephony::call::CallEngines;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

// ---- the faults ------------------------------------------------------------------------------

/// What an engine does wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Returns an error at once.
    Error,
    /// Never completes (a future that stays pending, a stream that never yields).
    Hang,
    /// Panics when called (building its future or stream, not polling it: the in-poll panics
    /// are covered in `telephony/tests/call_task.rs`).
    Panic,
    /// Works, but slower than real time ([`SLOW_FACTOR`]; the brain: [`BRAIN_SLOW`] to its
    /// first event).
    Slow,
}

/// On which calls the fault happens.
#[derive(Debug, Clone, Copy)]
enum When {
    Always,
    /// Only the nth call (from 1).
    Nth(usize),
    /// Only on text containing this (text-to-speech sentences).
    Saying(&'static str),
}

/// Work takes this many times its audio's duration when [`Fault::Slow`].
const SLOW_FACTOR: f64 = 1.5;
/// A slow brain's first event comes this long after it is asked: past the 1.5 s filler, well
/// within the 6 s step timeout.
const BRAIN_SLOW: Duration = Duration::from_secs(3);
/// The agent's own voice and the fallback voice (as in `api::engines::test_engines`).
const PRIMARY_HZ: f64 = 440.0;
const FALLBACK_HZ: f64 = 660.0;

/// Decides, call by call, whether an engine suffers its fault.
#[derive(Debug)]
struct Trigger {
    fault: Option<(Fault, When)>,
    calls: AtomicUsize,
}

impl Trigger {
    fn new(fault: Option<(Fault, When)>) -> Self {
        Self {
            fault,
            calls: AtomicUsize::new(0),
        }
    }

    /// The fault this call suffers, if any.
    fn fires(&self, text: &str) -> Option<Fault> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let (fault, when) = self.fault?;
        let hit = match when {
            When::Always => true,
            When::Nth(k) => n == k,
            When::Saying(s) => text.contains(s),
        };
        hit.then_some(fault)
    }
}

/// The scripted recogniser, faulty on cue. The scripted line is taken even when the decode then
/// fails, so the caller's line i is always `LINES[i]`.
#[derive(Debug)]
struct FaultySpeechToText {
    inner: ScriptedStt,
    trigger: Trigger,
}

impl SpeechToText for FaultySpeechToText {
    fn name(&self) -> &str {
        "faulty-stt"
    }

    fn transcribe(
        &self,
        audio: Vec<i16>,
        sample_rate: u32,
    ) -> BoxFuture<'static, Result<String, EngineError>> {
        let seconds = audio.len() as f64 / f64::from(sample_rate);
        let line = self.inner.transcribe(audio, sample_rate);
        match self.trigger.fires("") {
            None => line,
            Some(Fault::Error) => Box::pin(async {
                Err(EngineError::Unavailable(
                    "injected recogniser outage".into(),
                ))
            }),
            Some(Fault::Hang) => Box::pin(std::future::pending()),
            Some(Fault::Panic) => panic!("injected speech-to-text panic"),
            Some(Fault::Slow) => Box::pin(async move {
                tokio::time::sleep(Duration::from_secs_f64(seconds * SLOW_FACTOR)).await;
                line.await
            }),
        }
    }
}

/// The echo brain, faulty on cue. It is asked every request (so `seen` shows them all), and its
/// answer is thrown away when the fault fires.
#[derive(Debug)]
struct FaultyBrain {
    inner: Arc<EchoBrain>,
    trigger: Trigger,
}

impl Brain for FaultyBrain {
    fn name(&self) -> &str {
        "faulty-brain"
    }

    fn respond(
        &self,
        request: BrainRequest,
    ) -> BoxStream<'static, Result<BrainEvent, EngineError>> {
        let fault = self.trigger.fires("");
        let reply = self.inner.respond(request);
        match fault {
            None => reply,
            Some(Fault::Error) => {
                stream::iter([Err(EngineError::Failed("injected brain failure".into()))]).boxed()
            }
            Some(Fault::Hang) => stream::pending().boxed(),
            Some(Fault::Panic) => panic!("injected brain panic"),
            Some(Fault::Slow) => stream::once(async move {
                tokio::time::sleep(BRAIN_SLOW).await;
                reply
            })
            .flatten()
            .boxed(),
        }
    }
}

/// The tone voice, faulty on cue.
#[derive(Debug)]
struct FaultyTextToSpeech {
    inner: ToneTts,
    trigger: Trigger,
}

impl TextToSpeech for FaultyTextToSpeech {
    fn name(&self) -> &str {
        "faulty-tts"
    }

    fn sample_rate(&self) -> u32 {
        self.inner.sample_rate()
    }

    fn synthesize(&self, text: String) -> BoxStream<'static, Result<Vec<i16>, EngineError>> {
        let rate = f64::from(self.inner.sample_rate());
        match self.trigger.fires(&text) {
            None => self.inner.synthesize(text),
            Some(Fault::Error) => {
                stream::iter([Err(EngineError::Failed("injected voice failure".into()))]).boxed()
            }
            Some(Fault::Hang) => stream::pending().boxed(),
            Some(Fault::Panic) => panic!("injected text-to-speech panic"),
            Some(Fault::Slow) => self
                .inner
                .synthesize(text)
                .then(move |chunk| async move {
                    if let Ok(c) = &chunk {
                        let seconds = c.len() as f64 / rate * SLOW_FACTOR;
                        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
                    }
                    chunk
                })
                .boxed(),
        }
    }
}

/// Which engine fails, how and when.
#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    stt: Option<(Fault, When)>,
    brain: Option<(Fault, When)>,
    tts: Option<(Fault, When)>,
}

/// Decoder slots of the test server (as `VOXANNE_STT_CONCURRENCY` would give).
const STT_SLOTS: usize = 2;

/// Injected panics print one line and no backtrace: with `RUST_BACKTRACE` set, capturing and
/// symbolising one blocks a runtime worker for seconds in a debug build, which stalls the other
/// calls of the test (their callers fall behind real time, then catch up in a burst). Any other
/// panic goes to the usual hook.
fn quiet_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let usual = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .unwrap_or_default();
            if text.starts_with("injected ") {
                eprintln!("(an engine panicked on purpose: {text})");
            } else {
                usual(info);
            }
        }));
    });
}

/// The test engines with `faults`, a 660 Hz fallback voice behind the 440 Hz one, and the real
/// earshot VAD; returns the echo brain behind the faulty one, to see what it was asked.
fn faulty_engines(faults: Faults) -> (CallEngines, Arc<EchoBrain>) {
    quiet_injected_panics();
    let echo = Arc::new(EchoBrain::default());
    let engines = CallEngines {
        stt: Arc::new(FaultySpeechToText {
            inner: ScriptedStt::new(LINES),
            trigger: Trigger::new(faults.stt),
        }),
        brain: Arc::new(FaultyBrain {
            inner: echo.clone(),
            trigger: Trigger::new(faults.brain),
        }),
        tts: Arc::new(FaultyTextToSpeech {
            inner: ToneTts::new(16_000, PRIMARY_HZ as f32),
            trigger: Trigger::new(faults.tts),
        }),
        tts_fallback: Some(Arc::new(ToneTts::new(16_000, FALLBACK_HZ as f32))),
        stt_permits: Arc::new(Semaphore::new(STT_SLOTS)),
        vad: Arc::new(|| Box::new(media::vad::EarshotVad::new())),
    };
    (engines, echo)
}

/// A server answering with `engines` and the shared (echo) brain, on SQLite in `dir` or on
/// `database_url`.
async fn start_server(dir: &Path, database_url: Option<String>, engines: CallEngines) -> Server {
    ::engines::models::install_tls_provider();
    let config = config(dir, database_url, &[("VOXANNE_BRAIN", "echo")]);
    api::start(config, engines).await.expect("server starts")
}

// ---- the caller ------------------------------------------------------------------------------

/// Each caller line: 1 s of the formant voice.
const LINE_MS: u32 = 1_000;

/// A caller line that starts once the agent has answered and been quiet `pause_ms`.
fn line(seed: u64, pause_ms: u64) -> Line {
    Line::Speak {
        audio: testsignal::voice(PHONE_RATE, LINE_MS, seed),
        start: LineStart::AfterAgent {
            pause: Duration::from_millis(pause_ms),
        },
    }
}

/// The caller of these tests: patient (waits 30 s for an answer that does not come, so a slow
/// fault delays the call instead of changing its course), and hangs up 2 s after the agent's
/// last answer.
fn patient_caller(server: &Server) -> CallerConfig {
    let mut c = caller(server);
    c.no_answer = Duration::from_secs(30);
    c.hang_up_after = Duration::from_secs(2);
    c
}

fn line_lens(script: &[Line]) -> Vec<usize> {
    script
        .iter()
        .map(|l| match l {
            Line::Speak { audio, .. } => audio.len(),
            Line::Press { .. } | Line::HoldUntil(_) => 0,
        })
        .collect()
}

/// What the echo brain answers to `line`.
fn echo(line: &str) -> String {
    format!(
        "You said: {}. Is there anything else I can help with?",
        line.trim_end_matches(['.', '!', '?'])
    )
}

/// The default assistant's greeting.
const GREETING: &str = "Hello, thank you for calling. How can I help you today?";

// ---- what the caller heard -------------------------------------------------------------------

const FRAME: usize = 160;

fn frame_voiced(frame: &[i16]) -> bool {
    frame.iter().any(|s| s.unsigned_abs() > 64)
}

fn ms_of_frames(frames: usize) -> u64 {
    frames as u64 * 20
}

/// One stretch of the call in which the caller was waiting for the agent: from the end of a
/// line (or the call's start) to the start of the next line (or the call's end), in frames.
#[derive(Debug, Clone, Copy)]
struct Wait {
    from: usize,
    to: usize,
    /// Silence from `from` to the agent's first sound (the whole wait if it said nothing).
    first_sound_ms: u64,
    /// The longest silence from `from` to the agent's last sound in the wait.
    longest_ms: u64,
}

/// The caller's waits, in order: before the greeting, then after each line.
fn waits(report: &CallReport, line_lens: &[usize]) -> Vec<Wait> {
    let voiced: Vec<bool> = report.heard.chunks(FRAME).map(frame_voiced).collect();
    let mut bounds = Vec::new();
    let mut from = 0usize;
    for (end, len) in report.line_ends.iter().zip(line_lens) {
        let end = (end.as_millis() / 20) as usize;
        let start = end.saturating_sub(len.div_ceil(FRAME));
        bounds.push((from, start.max(from)));
        from = end;
    }
    bounds.push((from, voiced.len().max(from)));
    bounds
        .into_iter()
        .map(|(from, to)| {
            let span = &voiced[from.min(voiced.len())..to.min(voiced.len())];
            let Some(last) = span.iter().rposition(|&v| v) else {
                let all = ms_of_frames(to - from);
                return Wait {
                    from,
                    to,
                    first_sound_ms: all,
                    longest_ms: all,
                };
            };
            let first = span.iter().position(|&v| v).unwrap_or(0);
            let mut longest = 0;
            let mut run = 0;
            for &v in &span[..=last] {
                run = if v { 0 } else { run + 1 };
                longest = longest.max(run);
            }
            Wait {
                from,
                to,
                first_sound_ms: ms_of_frames(first),
                longest_ms: ms_of_frames(longest),
            }
        })
        .collect()
}

fn longest_dead_air(waits: &[Wait]) -> u64 {
    waits.iter().map(|w| w.longest_ms).max().unwrap_or(0)
}

/// Power of `samples` (8 kHz) at `hz` (Goertzel).
fn tone_power(samples: &[i16], hz: f64) -> f64 {
    let w = std::f64::consts::TAU * hz / f64::from(PHONE_RATE);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// Which voice spoke the voiced frames of `heard[from..to]` (frames): (primary, fallback, neither).
fn voices(heard: &[i16], from: usize, to: usize) -> (usize, usize, usize) {
    let mut count = (0, 0, 0);
    for frame in heard.chunks(FRAME).take(to).skip(from) {
        if !frame_voiced(frame) {
            continue;
        }
        let (p, f) = (
            tone_power(frame, PRIMARY_HZ),
            tone_power(frame, FALLBACK_HZ),
        );
        if p > 4.0 * f {
            count.0 += 1;
        } else if f > 4.0 * p {
            count.1 += 1;
        } else {
            count.2 += 1;
        }
    }
    count
}

/// Asserts that (nearly) every voiced frame of the wait was spoken by `hz`, and that there were
/// some; returns how many.
fn assert_voice(case: &str, heard: &[i16], wait: &Wait, hz: f64) -> usize {
    let (primary, fallback, neither) = voices(heard, wait.from, wait.to);
    let (mine, other) = if hz == PRIMARY_HZ {
        (primary, fallback)
    } else {
        (fallback, primary)
    };
    assert!(
        mine > 25 && other == 0 && neither * 10 <= mine,
        "{case}: frames {}..{}: {hz} Hz {mine}, the other voice {other}, unclear {neither}",
        wait.from,
        wait.to
    );
    mine
}

// ---- what was stored -------------------------------------------------------------------------

/// Everything the server stored about one call.
#[derive(Debug)]
struct Stored {
    call: CallSummary,
    turns: Vec<TurnRecord>,
    events: Vec<EventRecord>,
    recording: RecordingRecord,
    wav: Vec<u8>,
    left: Vec<i16>,
    right: Vec<i16>,
}

/// Waits (bounded) until the call has ended and its recording row is in, then reads it all.
async fn stored(server: &Server, dir: &Path, report: &CallReport) -> Stored {
    let store = server.state.store();
    let org = org_of(report);
    let sid = CallSid(report.call_sid.clone());
    for _ in 0..300 {
        let _ = server.state.queue().flush(Duration::from_secs(1)).await;
        let call = store.get_call(org, &sid).await.unwrap();
        let recording = store.get_recording(org, &sid).await.unwrap();
        if let (Some(call), Some(recording)) = (call, recording)
            && call.end_reason.is_some()
        {
            drain_writes(server).await;
            let path = LocalRecordingStore::in_data_dir(dir)
                .local_path(&recording.location)
                .expect("a local recording");
            let wav = std::fs::read(&path).unwrap();
            let mut reader = hound::WavReader::new(std::io::Cursor::new(&wav)).unwrap();
            assert_eq!(reader.spec().channels, 2);
            assert_eq!(reader.spec().sample_rate, PHONE_RATE);
            let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
            return Stored {
                call,
                turns: store.list_turns(org, &sid).await.unwrap(),
                events: store.list_events(org, &sid).await.unwrap(),
                recording,
                wav,
                left: samples.iter().step_by(2).copied().collect(),
                right: samples.iter().skip(1).step_by(2).copied().collect(),
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("call {sid} never ended with a recording in the store");
}

/// What a case expects to find stored.
#[derive(Debug)]
struct Expect {
    /// (role, text) of every turn in order; `None`: any text.
    turns: Vec<(&'static str, Option<String>)>,
    /// (kind, a part of the detail, how many): events the fault must have left, exactly.
    events: Vec<(&'static str, &'static str, usize)>,
    /// The stored end reason.
    end: &'static str,
}

fn detail(e: &EventRecord) -> &str {
    e.detail["detail"].as_str().unwrap_or("")
}

/// Asserts the call's records are whole and match what the caller saw; returns a summary.
fn check_intact(
    case: &str,
    report: &CallReport,
    waits: &[Wait],
    s: &Stored,
    expect: &Expect,
) -> String {
    // How it ended, as the caller saw it and as stored.
    assert_eq!(s.call.end_reason.as_deref(), Some(expect.end), "{case}");
    let agent_ended = expect.end != "caller_hung_up";
    assert_eq!(report.ended_by_server, agent_ended, "{case}: who hung up");
    assert_eq!(
        report.protocol_errors, 0,
        "{case}: the server spoke bad Twilio"
    );

    // Every turn, in order, none lost or doubled.
    let got: Vec<(String, String)> = s
        .turns
        .iter()
        .map(|t| (t.role.clone(), t.text.clone()))
        .collect();
    assert_eq!(
        s.turns.iter().map(|t| t.seq).collect::<Vec<_>>(),
        (0..s.turns.len() as i32).collect::<Vec<_>>(),
        "{case}: turn numbers {got:?}"
    );
    assert_eq!(s.turns.len(), expect.turns.len(), "{case}: turns {got:?}");
    for (t, (role, text)) in s.turns.iter().zip(&expect.turns) {
        assert_eq!(t.role, *role, "{case}: turns {got:?}");
        match text {
            Some(text) => assert_eq!(&t.text, text, "{case}: turn {}", t.seq),
            None => assert!(!t.text.is_empty(), "{case}: turn {}", t.seq),
        }
        if t.role == "agent" {
            // Nothing was cut off: the caller heard every word of every agent turn.
            assert!(!t.interrupted, "{case}: turn {} interrupted", t.seq);
            assert_eq!(t.heard_text.as_deref(), Some(t.text.as_str()), "{case}");
        }
    }

    // Every event, numbered without gaps, from the start to the end of the call.
    let kinds: Vec<&str> = s.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        s.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (0..s.events.len() as i32).collect::<Vec<_>>(),
        "{case}: event numbers {kinds:?}"
    );
    assert_eq!(kinds.first(), Some(&"start"), "{case}: {kinds:?}");
    let last = if agent_ended { "hangup" } else { "stop" };
    assert_eq!(kinds.last(), Some(&last), "{case}: {kinds:?}");
    for (kind, part, n) in &expect.events {
        let found = s
            .events
            .iter()
            .filter(|e| e.kind == *kind && detail(e).contains(part))
            .count();
        assert_eq!(
            found,
            *n,
            "{case}: {kind} events with {part:?}: {:?}",
            s.events
                .iter()
                .map(|e| (e.kind.as_str(), detail(e)))
                .collect::<Vec<_>>()
        );
    }

    // The call's media time is the caller's: every frame sent was counted, once.
    let said_ms = (report.said.len() / 8) as i64;
    let duration = s.call.duration_ms.expect("a duration");
    // The agent ends the call when its goodbye has played; the caller may send a few more
    // frames before it sees the socket close.
    let slack = if agent_ended { 300 } else { 0 };
    assert!(
        duration <= said_ms && duration + slack >= said_ms,
        "{case}: call {duration} ms, caller sent {said_ms} ms"
    );

    // The recording: checksummed, as long as the call (the agent channel may run up to the
    // playout lead past the last caller frame), the caller channel exactly what was said, the
    // agent channel every frame the caller got.
    assert_eq!(s.recording.sha256, storage::sha256_hex(&s.wav), "{case}");
    assert_eq!((s.recording.channels, s.recording.sample_rate), (2, 8_000));
    let wav_ms = (s.left.len() * 1000 / PHONE_RATE as usize) as i64;
    assert!(
        (s.recording.duration_ms - wav_ms).abs() <= 1,
        "{case}: row {} ms, file {wav_ms} ms",
        s.recording.duration_ms
    );
    assert!(
        wav_ms >= duration && wav_ms <= duration + 100,
        "{case}: recording {wav_ms} ms, call {duration} ms"
    );
    let n = report.said.len().min(s.left.len());
    assert_eq!(n as i64 * 1000 / 8000, duration.min(said_ms), "{case}");
    assert!(
        s.left[..n] == report.said[..n],
        "{case}: the caller channel is not what the caller said"
    );
    assert!(
        s.left[n..].iter().all(|&x| x == 0),
        "{case}: caller audio past the call's end"
    );
    // The agent channel: what the caller heard, where they heard it, wait by wait (the greeting,
    // then each answer). The recording places a frame at the media time it was due to play; the
    // caller played it on the next tick.
    let right_voiced = voiced_frames(&s.right) as i64;
    let heard_voiced = voiced_frames(&report.heard) as i64;
    for (i, w) in waits.iter().enumerate() {
        let heard = voiced_frames(frames(&report.heard, w.from, w.to));
        let recorded = voiced_frames(frames(&s.right, w.from, w.to));
        assert!(
            recorded.abs_diff(heard) <= 5,
            "{case}: wait {i} (frames {}..{}): the caller heard {heard} voiced frames, the \
             recording has {recorded}; voiced runs heard {:?}, recorded {:?}",
            w.from,
            w.to,
            voiced_runs(&report.heard),
            voiced_runs(&s.right)
        );
    }
    assert!(heard_voiced > 0, "{case}: the caller heard nothing");
    let summary = format!(
        "{} turns, {} events, end {}, WAV {:.2} s = call {:.2} s (+{} ms), caller ch = said, agent ch {} voiced frames (heard {})",
        s.turns.len(),
        s.events.len(),
        expect.end,
        wav_ms as f64 / 1000.0,
        duration as f64 / 1000.0,
        wav_ms - duration,
        right_voiced,
        heard_voiced
    );
    summary
}

/// Frames `from..to` (20 ms) of `samples`, clamped to its length.
fn frames(samples: &[i16], from: usize, to: usize) -> &[i16] {
    &samples[(from * FRAME).min(samples.len())..(to * FRAME).min(samples.len())]
}

/// (first frame, frames) of each stretch of voiced frames, for failure messages.
fn voiced_runs(samples: &[i16]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, frame) in samples.chunks(FRAME).enumerate() {
        if !frame_voiced(frame) {
            continue;
        }
        match runs.last_mut() {
            Some((start, len)) if *start + *len == i => *len += 1,
            _ => runs.push((i, 1)),
        }
    }
    runs
}

fn row(fault: &str, dead_air_ms: u64, outcome: &str, intact: &str) {
    eprintln!("| {fault} | {dead_air_ms} | {outcome} | {intact} |");
}

/// Places `script` on `server` and waits for its records.
async fn call(
    server: &Server,
    dir: &Path,
    caller: &CallerConfig,
    script: &[Line],
) -> (CallReport, Stored) {
    let report = place_call(caller, script).await.expect("the call connects");
    let stored = stored(server, dir, &report).await;
    (report, stored)
}

// ---- 1. speech-to-text -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_to_text_faults() {
    tokio::join!(
        stt_fails_every_turn(Fault::Error),
        stt_fails_every_turn(Fault::Panic),
        stt_hangs_on_the_first_turn(),
        stt_slower_than_real_time(),
    );
}

/// Every decode fails: the caller is asked to repeat twice, then the brain is told it could not
/// hear them (`CallerInput::Unheard`) and says so.
async fn stt_fails_every_turn(fault: Fault) {
    let case = format!("STT {fault:?} on every turn");
    let dir = tempfile::tempdir().unwrap();
    let (engines, echo) = faulty_engines(Faults {
        stt: Some((fault, When::Always)),
        ..Faults::default()
    });
    let server = start_server(dir.path(), None, engines).await;
    let script = vec![line(101, 500), line(102, 500), line(103, 500)];
    let (report, s) = call(&server, dir.path(), &patient_caller(&server), &script).await;

    let waits = waits(&report, &line_lens(&script));
    assert_eq!(report.line_ends.len(), 3, "{case}");
    for w in &waits[1..] {
        // Endpointing (700 ms) and a prompt that needs no engine but the voice.
        assert!(w.longest_ms < 2_500, "{case}: {waits:?}");
    }
    let seen = echo.seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter().map(|r| r.input.clone()).collect::<Vec<_>>(),
        [CallerInput::Unheard],
        "{case}: the brain was asked only once, with Unheard"
    );
    let prompt = ConversationConfig::default().unheard_prompt;
    let expect = Expect {
        turns: vec![
            ("agent", Some(GREETING.into())),
            ("agent", Some(prompt.clone())),
            ("agent", Some(prompt)),
            ("agent", Some("I'm sorry, I can't hear you well.".into())),
        ],
        events: vec![
            ("error", "speech-to-text", 3),
            ("unheard", "", 3),
            ("unheard", "3 in a row", 1),
        ],
        end: "caller_hung_up",
    };
    let intact = check_intact(&case, &report, &waits, &s, &expect);
    let why = s
        .events
        .iter()
        .find(|e| e.kind == "error")
        .map(|e| detail(e).to_string())
        .unwrap_or_default();
    row(
        &case,
        longest_dead_air(&waits),
        &format!(
            "asked to repeat ×2, then the brain got Unheard and answered; caller hung up (error: {why:?})"
        ),
        &intact,
    );
    server.shutdown(Duration::from_secs(5)).await;
}

/// The first decode never completes: the caller waits out the speech-to-text timeout (8 s plus
/// the turn's length, at most 20 s: the known bound, nothing covers that silence), is asked to
/// repeat, and the repeat is answered.
async fn stt_hangs_on_the_first_turn() {
    let case = "STT hangs on the 1st turn";
    let dir = tempfile::tempdir().unwrap();
    let (engines, _) = faulty_engines(Faults {
        stt: Some((Fault::Hang, When::Nth(1))),
        ..Faults::default()
    });
    let permits = engines.stt_permits.clone();
    let server = start_server(dir.path(), None, engines).await;
    let script = vec![line(111, 500), line(112, 500)];
    let (report, s) = call(&server, dir.path(), &patient_caller(&server), &script).await;

    let waits = waits(&report, &line_lens(&script));
    // 700 ms of endpointing, then the speech-to-text timeout: 8 s plus the turn's length (the
    // 1 s line, 300 ms pre-roll, 200 ms tail), at most 20 s — 10.2 s here.
    assert!(
        (9_500..13_000).contains(&waits[1].first_sound_ms),
        "{case}: {waits:?}"
    );
    assert!(waits[2].longest_ms < 2_500, "{case}: {waits:?}");
    let expect = Expect {
        turns: vec![
            ("agent", Some(GREETING.into())),
            ("agent", Some(ConversationConfig::default().unheard_prompt)),
            ("caller", Some(LINES[1].into())),
            ("agent", Some(echo(LINES[1]))),
        ],
        events: vec![
            ("error", "speech-to-text timed out", 1),
            ("unheard", "1 in a row", 1),
        ],
        end: "caller_hung_up",
    };
    let intact = check_intact(case, &report, &waits, &s, &expect);
    row(
        case,
        longest_dead_air(&waits),
        &format!(
            "silence until the STT timeout (8 s + the turn), asked to repeat, the repeat answered; caller hung up; the hung decode still holds {} of {STT_SLOTS} decoder slots after the call",
            STT_SLOTS - permits.available_permits()
        ),
        &intact,
    );
    server.shutdown(Duration::from_secs(5)).await;
}

/// Every decode takes 1.5× its audio: the answers come, late by the decode.
async fn stt_slower_than_real_time() {
    let case = "STT 1.5× slower than real time, every turn";
    let dir = tempfile::tempdir().unwrap();
    let (engines, _) = faulty_engines(Faults {
        stt: Some((Fault::Slow, When::Always)),
        ..Faults::default()
    });
    let server = start_server(dir.path(), None, engines).await;
    let script = vec![line(121, 500), line(122, 500)];
    let (report, s) = call(&server, dir.path(), &patient_caller(&server), &script).await;

    let waits = waits(&report, &line_lens(&script));
    // The turn sent to STT is the line plus 300 ms pre-roll and 200 ms tail: 1.5 s of audio,
    // 2.25 s to decode, after 700 ms of endpointing. No filler covers speech-to-text.
    for w in &waits[1..] {
        assert!(
            (2_500..5_500).contains(&w.first_sound_ms) && w.longest_ms == w.first_sound_ms,
            "{case}: {waits:?}"
        );
    }
    let expect = Expect {
        turns: vec![
            ("agent", Some(GREETING.into())),
            ("caller", Some(LINES[0].into())),
            ("agent", Some(echo(LINES[0]))),
            ("caller", Some(LINES[1].into())),
            ("agent", Some(echo(LINES[1]))),
        ],
        events: vec![("error", "", 0)],
        end: "caller_hung_up",
    };
    let intact = check_intact(case, &report, &waits, &s, &expect);
    row(
        case,
        longest_dead_air(&waits),
        "every line answered, each late by its decode (no filler covers STT); caller hung up",
        &intact,
    );
    server.shutdown(Duration::from_secs(5)).await;
}

// ---- 2. the brain ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brain_faults() {
    tokio::join!(
        brain_fails_on_the_first_reply(Fault::Error),
        brain_fails_on_the_first_reply(Fault::Panic),
        brain_hangs_on_the_first_reply(),
        brain_is_slow_on_the_first_reply(),
    );
}

/// The first reply fails at once: the apology, and the next line is answered.
async fn brain_fails_on_the_first_reply(fault: Fault) {
    let case = format!("brain {fault:?} on the 1st reply");
    let dir = tempfile::tempdir().unwrap();
    let (engines, _) = faulty_engines(Faults {
        brain: Some((fault, When::Nth(1))),
        ..Faults::default()
    });
    let server = start_server(dir.path(), None, engines).await;
    let script = vec![line(201, 500), line(202, 500)];
    let (report, s) = call(&server, dir.path(), &patient_caller(&server), &script).await;

    let waits = waits(&report, &line_lens(&script));
    for w in &waits[1..] {
        assert!(w.longest_ms < 2_500, "{case}: {waits:?}");
    }
    let part = if fault == Fault::Panic {
        "panicked"
    } else {
        "injected brain failure"
    };
    let expect = Expect {
        turns: vec![
            ("agent", Some(GREETING.into())),
            ("caller", Some(LINES[0].into())),
            ("agent", Some(ConversationConfig::default().apology)),
            ("caller", Some(LINES[1].into())),
            ("agent", Some(echo(LINES[1]))),
        ],
        events: vec![("error", part, 1), ("filler", "", 0)],
        end: "caller_hung_up",
    };
    let intact = check_intact(&case, &report, &waits, &s, &expect);
    row(
        &case,
        longest_dead_air(&waits),
        "apology at once, the next line answered; caller hung up",
        &intact,
    );
    server.shutdown(Duration::from_secs(5)).await;
}

/// The first reply never comes: the filler at 1.5 s, the apology when the 6 s brain step
/// timeout fires, and the next line is answered. The longest silence is between the two.
async fn brain_hangs_on_the_first_reply() {
    let case = "brain hangs on the 1st reply";
    let dir = tempfile::tempdir().unwrap();
    let (engines, _) = faulty_engines(Faults {
        brain: Some((Fault::Hang, When::Nth(1))),
        ..Faults::default()
    });
    let server = start_server(dir.path(), None, engines).await;
    // The caller waits 5 s after the filler: longer than the wait for the apology after it.
    let script = vec![line(211, 500), line(212, 5_000)];
    let (report, s) = call(&server, dir.path(), &patient_caller(&server), &script).await;

    let waits = waits(&report, &line_lens(&script));
    let w = waits[1];
    // The filler: 700 ms of endpointing + 1.5 s.
    assert!(
        (1_800..3_500).contains(&w.first_sound_ms),
        "{case}: {waits:?}"
    );
    // Then silence until the 6 s step timeout: 6 s − 1.5 s − the filler's ~1 s of speech.
    assert!((2_500..5_000).contains(&w.longest_ms), "{case}: {waits:?}");
    assert!(waits[2].longest_ms < 2_500, "{case}: {waits:?}");
    let config = ConversationConfig::default();
    let expect = Expect {
        turns: vec![
            ("agent", Some(GREETING.into())),
            ("caller", Some(LINES[0].into())),
            (
                "agent",
                Some(format!("{} {}", config.filler.unwrap(), config.apology)),
            ),
            ("caller", Some(LINES[1].into())),
            ("agent", Some(echo(LINES[1]))),
        ],
        events: vec![("filler", "", 1), ("error", "brain timed out", 1)],
        end: "caller_hung_up",
    };
    let intact = check_intact(case, &report, &waits, &s, &expect);
    row(
        case,
        longest_dead_air(&waits),
        &format!(
            "filler after {} ms of silence, then {} ms more silence until the apology (6 s step timeout), the next line answered; caller hung up",
            w.first_sound_ms, w.longest_ms
        ),
        &intact,
    );
    server.shutdown(Duration::from_secs(5)).await;
}

/// The first reply's first text comes after 3 s: the filler, then the real answer.
async fn brain_is_slow_on_the_first_reply() {
    let case = "brain slow (first text after 3 s) on the 1st reply";
    let dir = tempfile::tempdir().unwrap();
    let (engines, _) = faulty_engines(Faults {
        brain: Some((Fault::Slow, When::Nth(1))),
        ..Faults::default()
    });
    let server = start_server(dir.path(), None, engines).await;
    // The caller waits 2 s after the filler: longer than the ~0.5 s before the answer.
    let script = vec![line(221, 500), line(222, 2_000)];
    let (report, s) = call(&server, dir.path(), &patient_caller(&server), &script).await;

    let waits = waits(&report, &line_lens(&script));
    let w = waits[1];
    assert!(
        (1_800..3_500).contains(&w.first_sound_ms) && w.longest_ms < 3_500,
        "{case}: {waits:?}"
    );
    let config = ConversationConfig::default();
    let expect = Expect {
        turns: vec![
            ("agent", Some(GREETING.into())),
            ("caller", Some(LINES[0].into())),
            (
                "agent",
                Some(format!("{} {}", config.filler.unwrap(), echo(LINES[0]))),
            ),
            ("caller", Some(LINES[1].into())),
            ("agent", Some(echo(LINES[1]))),
        ],
        events: vec![("filler", "", 1), ("error", "", 0)],
        end: "caller_hung_up",
    };
    let intact = check_intact(case, &report, &waits, &s, &expect);
    row(
        case,
        longest_dead_air(&waits),
        &format!(
            "filler after {} ms, then the real answer; caller hung up",
            w.first_sound_ms
        ),
        &intact,
    );
    server.shutdown(Duration::from_secs(5)).await;
}

// ---- 3. text-to-speech -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_to_speech_faults() {
    tokio::join!(
        voice_fails_on_a_reply_sentence(Fault::Error),
        voice_fails_on_a_reply_sentence(Fault::Panic),
        voice_fails_on_a_reply_sentence(Fault::Hang),
        voice_slower_than_real_time(),
    );
}

/// The voice fails on the first reply's first sentence: the fallback voice (660 Hz) speaks it
/// and the rest of the call; the greeting was the primary voice (440 Hz).
async fn voice_fails_on_a_reply_sentence(fault: Fault) {
    let case = format!("TTS {fault:?} on the 1st reply sentence");
    let dir = tempfile::tempdir().unwrap();
    let (engines, _) = faulty_engines(Faults {
        tts: Some((fault, When::Saying("You said"))),
        ..Faults::default()
    });
    let server = start_server(dir.path(), None, engines).await;
    let script = vec![line(301, 500), line(302, 500)];
    let (report, s) = call(&server, dir.path(), &patient_caller(&server), &script).await;

    let waits = waits(&report, &line_lens(&script));
    if fault == Fault::Hang {
        // 700 ms of endpointing, then the 5 s TTS step timeout before the fallback speaks.
        assert!(
            (5_000..8_000).contains(&waits[1].longest_ms),
            "{case}: {waits:?}"
        );
    } else {
        assert!(waits[1].longest_ms < 2_500, "{case}: {waits:?}");
    }
    assert!(waits[2].longest_ms < 2_500, "{case}: {waits:?}");
    let greeting = assert_voice(&case, &report.heard, &waits[0], PRIMARY_HZ);
    let first = assert_voice(&case, &report.heard, &waits[1], FALLBACK_HZ);
    let second = assert_voice(&case, &report.heard, &waits[2], FALLBACK_HZ);
    let part = match fault {
        Fault::Error => "injected voice failure",
        Fault::Panic => "panicked",
        Fault::Hang => "timed out",
        Fault::Slow => unreachable!(),
    };
    let expect = Expect {
        turns: vec![
            ("agent", Some(GREETING.into())),
            ("caller", Some(LINES[0].into())),
            ("agent", Some(echo(LINES[0]))),
            ("caller", Some(LINES[1].into())),
            ("agent", Some(echo(LINES[1]))),
        ],
        events: vec![("tts_fallback", part, 1), ("tts_fallback", "", 1)],
        end: "caller_hung_up",
    };
    let intact = check_intact(&case, &report, &waits, &s, &expect);
    row(
        &case,
        longest_dead_air(&waits),
        &format!(
            "greeting in the primary voice ({greeting} frames at 440 Hz), the failed sentence and the rest of the call in the fallback voice ({first} + {second} frames at 660 Hz); caller hung up"
        ),
        &intact,
    );
    server.shutdown(Duration::from_secs(5)).await;
}

/// The voice takes 1.5× real time on every chunk: playout runs dry between chunks, but every
/// sentence is heard whole in the primary voice.
async fn voice_slower_than_real_time() {
    let case = "TTS 1.5× slower than real time, every sentence";
    let dir = tempfile::tempdir().unwrap();
    let (engines, _) = faulty_engines(Faults {
        tts: Some((Fault::Slow, When::Always)),
        ..Faults::default()
    });
    let server = start_server(dir.path(), None, engines).await;
    let script = vec![line(311, 500), line(312, 500)];
    let (report, s) = call(&server, dir.path(), &patient_caller(&server), &script).await;

    let waits = waits(&report, &line_lens(&script));
    for w in &waits[1..] {
        assert!(w.longest_ms < 2_500, "{case}: {waits:?}");
    }
    // The first reply as heard: all of its tone (55 ms a character), in the primary voice,
    // stretched over more time than it lasts.
    let reply = echo(LINES[0]);
    let tone_frames = ToneTts::new(8_000, 440.0)
        .samples_for("You said: I would like to book a cleaning.")
        .div_ceil(FRAME)
        + ToneTts::new(8_000, 440.0)
            .samples_for("Is there anything else I can help with?")
            .div_ceil(FRAME);
    let heard = assert_voice(case, &report.heard, &waits[1], PRIMARY_HZ);
    assert!(
        heard.abs_diff(tone_frames) <= 6,
        "{case}: heard {heard} frames of a {tone_frames}-frame reply"
    );
    let heard_frames: Vec<bool> = report.heard.chunks(FRAME).map(frame_voiced).collect();
    let span = &heard_frames[waits[1].from..waits[1].to];
    let first = span.iter().position(|&v| v).unwrap();
    let last = span.iter().rposition(|&v| v).unwrap();
    let gaps = span[first..=last]
        .windows(2)
        .filter(|w| w[0] && !w[1])
        .count();
    assert!(
        (last - first + 1) as f64 >= 1.2 * tone_frames as f64 && gaps > 5,
        "{case}: {tone_frames} frames of speech took {} frames with {gaps} gaps",
        last - first + 1
    );
    let expect = Expect {
        turns: vec![
            ("agent", Some(GREETING.into())),
            ("caller", Some(LINES[0].into())),
            ("agent", Some(reply)),
            ("caller", Some(LINES[1].into())),
            ("agent", Some(echo(LINES[1]))),
        ],
        events: vec![("tts_fallback", "", 0), ("error", "", 0)],
        end: "caller_hung_up",
    };
    let intact = check_intact(case, &report, &waits, &s, &expect);
    row(
        case,
        longest_dead_air(&waits),
        &format!(
            "every sentence heard whole in the primary voice, choppy: the 1st reply's {tone_frames} frames spread over {} with {gaps} gaps; no fallback; caller hung up",
            last - first + 1
        ),
        &intact,
    );
    server.shutdown(Duration::from_secs(5)).await;
}

// ---- 4. the database -------------------------------------------------------------------------

/// Postgres is stopped while the call is on (after its greeting began): the call goes on and
/// ends as if nothing happened; once the database is back every write lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_stopped_mid_call() {
    let case = "Postgres stopped mid-call";
    let cluster = tokio::task::block_in_place(|| PgCluster::start_local(Default::default()));
    let url = cluster.create_database().await;
    let dir = tempfile::tempdir().unwrap();
    let (engines, _) = faulty_engines(Faults::default());
    let server = start_server(dir.path(), Some(url), engines).await;
    let script = vec![line(401, 500), line(402, 500), line(403, 500)];
    let caller = patient_caller(&server);
    let placed = {
        let (caller, script) = (caller.clone(), script.clone());
        tokio::spawn(async move { place_call(&caller, &script).await })
    };
    // The stream has started (setup read the database) and the greeting is under way.
    for _ in 0..200 {
        if server.state.metrics().calls_started.load(Ordering::Relaxed) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        server.state.metrics().calls_started.load(Ordering::Relaxed),
        1,
        "the call never started"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| cluster.stop());
    let report = placed.await.unwrap().expect("the call connects");

    let waits = waits(&report, &line_lens(&script));
    for w in &waits {
        assert!(w.longest_ms < 2_500, "{case}: {waits:?}");
    }
    // Nothing of the call since the stop could be written; the queue holds it.
    for _ in 0..100 {
        if server.state.active_calls() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = server.state.queue().stats();
    // At least the seven turns (all finished after the stop), the call's end and its recording.
    assert!(
        held.pending >= 9 && !held.db_up,
        "{case}: the writes went somewhere while the database was down: {held:?}"
    );
    tokio::task::block_in_place(|| cluster.start());
    let back = Instant::now();
    server
        .state
        .queue()
        .flush(Duration::from_secs(60))
        .await
        .expect("the writes land once the database is back");
    let landed_in = back.elapsed();
    let s = stored(&server, dir.path(), &report).await;
    let stats = server.state.queue().stats();
    assert_eq!((stats.dropped, stats.rejected), (0, 0), "{case}: {stats:?}");
    let expect = Expect {
        turns: vec![
            ("agent", Some(GREETING.into())),
            ("caller", Some(LINES[0].into())),
            ("agent", Some(echo(LINES[0]))),
            ("caller", Some(LINES[1].into())),
            ("agent", Some(echo(LINES[1]))),
            ("caller", Some(LINES[2].into())),
            ("agent", Some("Thank you for calling. Goodbye!".into())),
        ],
        events: vec![("error", "", 0), ("hangup", "agent_hung_up", 1)],
        end: "agent_hung_up",
    };
    let intact = check_intact(case, &report, &waits, &s, &expect);
    row(
        case,
        longest_dead_air(&waits),
        &format!(
            "call unaffected, agent hung up after the goodbye; {} writes held while down ({} retries, {} spilled), all landed {} ms after the restart",
            held.pending,
            stats.retried,
            stats.spilled,
            landed_in.as_millis()
        ),
        &intact,
    );
    server.shutdown(Duration::from_secs(5)).await;
}

/// Posts a signed voice webhook for a fresh CallSid; how long it took to get TwiML back, or
/// `None` if it did not within `patience`.
async fn time_webhook(server: &Server, patience: Duration) -> Option<Duration> {
    let url = format!("{}/twilio/voice", base_url(server));
    let sid = api::caller::new_sid("CA");
    let params: Vec<(String, String)> = [
        ("AccountSid", "AC00000000000000000000000000000000"),
        ("CallSid", sid.as_str()),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
        ("From", "+15550100001"),
        ("To", "+15550100002"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let signature = telephony::signature::compute(AUTH_TOKEN, &url, &params);
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish();
    let began = Instant::now();
    let sent = reqwest::Client::new()
        .post(&url)
        .header("X-Twilio-Signature", signature)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send();
    match tokio::time::timeout(patience, sent).await {
        Ok(Ok(r)) if r.status() == 200 => Some(began.elapsed()),
        Ok(Ok(r)) => panic!("the voice webhook answered {}", r.status()),
        Ok(Err(e)) => panic!("the voice webhook failed: {e}"),
        Err(_) => None,
    }
}

/// Twilio gives up on a voice webhook after 15 s (and plays its "application error" message).
const TWILIO_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(15);

/// Postgres is stopped after the server started and before the call: the webhook is answered,
/// the call greeted and answered; once the database is back, every write lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_stopped_before_the_call() {
    let case = "Postgres stopped before the call";
    let cluster = tokio::task::block_in_place(|| PgCluster::start_local(Default::default()));
    let url = cluster.create_database().await;
    let dir = tempfile::tempdir().unwrap();
    let (engines, _) = faulty_engines(Faults::default());
    let server = start_server(dir.path(), Some(url), engines).await;
    tokio::task::block_in_place(|| cluster.stop());

    let webhook = time_webhook(&server, TWILIO_WEBHOOK_TIMEOUT).await;
    assert!(
        webhook.is_some(),
        "{case}: the voice webhook did not answer within Twilio's 15 s"
    );
    let webhook = webhook.unwrap();
    let script = vec![line(411, 500), line(412, 500)];
    let began = Instant::now();
    let report = place_call(&patient_caller(&server), &script)
        .await
        .expect("the call connects");
    let wall = began.elapsed();
    let waits = waits(&report, &line_lens(&script));
    // Setup reads the assistant and the clinic (2 s bound each, side by side) and the caller
    // (0.5 s bound) before the greeting.
    assert!(waits[0].first_sound_ms < 4_000, "{case}: {waits:?}");
    for w in &waits[1..] {
        assert!(w.longest_ms < 2_500, "{case}: {waits:?}");
    }
    // Before the stream: the webhook (the caller hears ringing meanwhile).
    let before_stream = wall.saturating_sub(Duration::from_millis(report.said.len() as u64 / 8));
    tokio::task::block_in_place(|| cluster.start());
    server
        .state
        .queue()
        .flush(Duration::from_secs(60))
        .await
        .expect("the writes land once the database is back");
    let s = stored(&server, dir.path(), &report).await;
    let expect = Expect {
        // The assistant could not be read: the greeting is the fallback clinic's.
        turns: vec![
            ("agent", None),
            ("caller", Some(LINES[0].into())),
            ("agent", Some(echo(LINES[0]))),
            ("caller", Some(LINES[1].into())),
            ("agent", Some(echo(LINES[1]))),
        ],
        events: vec![("error", "", 0)],
        end: "caller_hung_up",
    };
    let intact = check_intact(case, &report, &waits, &s, &expect);
    row(
        case,
        longest_dead_air(&waits),
        &format!(
            "voice webhook answered in {} ms (a lone one; ~{} ms before the call's stream opened), greeting {} ms into the stream, every line answered; caller hung up",
            webhook.as_millis(),
            before_stream.as_millis(),
            waits[0].first_sound_ms
        ),
        &intact,
    );
    server.shutdown(Duration::from_secs(5)).await;
}

/// Every table a call touches, the number look-up's included, is locked by another session for
/// the whole call (a database stuck behind a migration): the webhook must still be answered in
/// time, the call greeted and answered, and once the lock goes every write lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_hanging_through_the_whole_call() {
    use sqlx::Connection as _;
    let case = "Postgres hangs (tables locked) from the webhook to the call's end";
    let url = database_url(Backend::Postgres).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (engines, _) = faulty_engines(Faults::default());
    let server = start_server(dir.path(), Some(url.clone()), engines).await;
    let mut lock = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut lock).await.unwrap();
    sqlx::raw_sql(
        "LOCK TABLE phone_numbers, assistants, clinics, knowledge_chunks, contacts, \
         appointments, calls, turns, call_events, recordings IN ACCESS EXCLUSIVE MODE",
    )
    .execute(&mut lock)
    .await
    .unwrap();

    let webhook = time_webhook(&server, TWILIO_WEBHOOK_TIMEOUT).await;
    let Some(webhook) = webhook else {
        sqlx::raw_sql("ROLLBACK").execute(&mut lock).await.unwrap();
        panic!(
            "{case}: the voice webhook did not answer within Twilio's 15 s \
             (api/src/server.rs `resolve`: the number look-up is not bounded)"
        );
    };
    let script = vec![line(421, 500), line(422, 500)];
    let report = place_call(&patient_caller(&server), &script)
        .await
        .expect("the call connects");
    let waits = waits(&report, &line_lens(&script));
    assert!(waits[0].first_sound_ms < 4_000, "{case}: {waits:?}");
    for w in &waits[1..] {
        assert!(w.longest_ms < 2_500, "{case}: {waits:?}");
    }
    assert!(server.state.queue().stats().pending > 0);
    sqlx::raw_sql("ROLLBACK").execute(&mut lock).await.unwrap();
    lock.close().await.unwrap();
    let s = stored(&server, dir.path(), &report).await;
    let expect = Expect {
        turns: vec![
            ("agent", None),
            ("caller", Some(LINES[0].into())),
            ("agent", Some(echo(LINES[0]))),
            ("caller", Some(LINES[1].into())),
            ("agent", Some(echo(LINES[1]))),
        ],
        events: vec![("error", "", 0)],
        end: "caller_hung_up",
    };
    let intact = check_intact(case, &report, &waits, &s, &expect);
    row(
        case,
        longest_dead_air(&waits),
        &format!(
            "voice webhook answered in {} ms, greeting {} ms into the stream, every line answered; caller hung up",
            webhook.as_millis(),
            waits[0].first_sound_ms
        ),
        &intact,
    );
    server.shutdown(Duration::from_secs(5)).await;
}

// ---- 5. bad input on the stream --------------------------------------------------------------

/// When the proxy injects a batch.
#[derive(Debug, Clone, Copy)]
enum At {
    /// After the caller's nth media message (from 1).
    Frame(u64),
    /// After the nth media message carrying the caller's voice.
    VoicedFrame(u64),
    /// On the caller's `start`, before it is sent (only a stall is taken from the batch).
    Start,
}

/// Something the proxy sends the server that Twilio would not.
#[derive(Debug, Clone)]
enum Inject {
    Text(String),
    Binary(Vec<u8>),
    /// The caller's last media message again (a duplicate chunk).
    RepeatLast,
    /// The media message this many before the last one again (out of order).
    Resend(usize),
    /// The caller's `start` again.
    RepeatStart,
    /// A valid (silent) frame whose chunk number is this far past the last one.
    ChunkAhead(u64),
    /// Hold the caller's messages this long, then send them at once (a network stall).
    Stall(Duration),
}

/// A tampering man in the middle between the simulated Twilio and the server: it forwards the
/// voice webhook and the media stream both ways, and injects its plan into the caller's stream.
#[derive(Debug)]
struct Tamperer {
    upstream: SocketAddr,
    plan: Vec<(At, Vec<Inject>)>,
    /// Messages injected so far.
    injected: Arc<AtomicU64>,
}

impl Tamperer {
    /// Serves on a loopback port; returns its address.
    async fn start(self) -> SocketAddr {
        use axum::routing::{get, post};
        let app = axum::Router::new()
            .route("/twilio/voice", post(proxy_webhook))
            .route("/twilio/media", get(proxy_stream))
            .with_state(Arc::new(self));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        addr
    }
}

async fn proxy_webhook(
    axum::extract::State(t): axum::extract::State<Arc<Tamperer>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let mut request = reqwest::Client::new()
        .post(format!("http://{}/twilio/voice", t.upstream))
        .body(body.to_vec());
    for name in ["x-twilio-signature", "content-type"] {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
            request = request.header(name, v);
        }
    }
    let response = request.send().await.unwrap();
    let status = axum::http::StatusCode::from_u16(response.status().as_u16()).unwrap();
    let text = response.text().await.unwrap();
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        text,
    )
        .into_response()
}

async fn proxy_stream(
    axum::extract::State(t): axum::extract::State<Arc<Tamperer>>,
    headers: axum::http::HeaderMap,
    ws: axum::extract::ws::WebSocketUpgrade,
) -> axum::response::Response {
    let signature = headers.get("x-twilio-signature").cloned();
    ws.max_message_size(4 << 20)
        .on_upgrade(move |socket| pump(t, socket, signature))
}

/// Carries one stream both ways, injecting the plan into the caller's side.
async fn pump(
    t: Arc<Tamperer>,
    mut client: axum::extract::ws::WebSocket,
    signature: Option<axum::http::HeaderValue>,
) {
    use axum::extract::ws::Message as AxMessage;
    use telephony::protocol::Inbound;
    let mut request = format!("ws://{}/twilio/media", t.upstream)
        .into_client_request()
        .unwrap();
    if let Some(sig) = signature {
        request.headers_mut().insert("X-Twilio-Signature", sig);
    }
    let (mut server, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut start: Option<String> = None;
    let mut recent: VecDeque<String> = VecDeque::new();
    let mut last: Option<(String, u64, u64)> = None; // stream, chunk, timestamp
    let mut count = Counts::default();
    let mut done = vec![false; t.plan.len()];
    let mut payload = Vec::new();
    // While stalled, the caller's messages are held, then sent at once.
    let mut stalled_until: Option<tokio::time::Instant> = None;
    let mut held: Vec<WsMessage> = Vec::new();
    loop {
        let stall = async {
            match stalled_until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let mut due = Vec::new();
        tokio::select! {
            _ = stall => {
                stalled_until = None;
                for m in held.drain(..) {
                    let _ = server.send(m).await;
                }
            }
            msg = client.recv() => match msg {
                Some(Ok(AxMessage::Text(text))) => {
                    let text = text.as_str().to_string();
                    if text.contains(r#""event":"start""#) {
                        count.started = true;
                        for inject in due_now(&t.plan, &mut done, &count) {
                            if let Inject::Stall(d) = inject {
                                t.injected.fetch_add(1, Ordering::SeqCst);
                                stalled_until = Some(tokio::time::Instant::now() + d);
                            }
                        }
                    }
                    if stalled_until.is_some() {
                        held.push(WsMessage::Text(text.clone().into()));
                    } else if server.send(WsMessage::Text(text.clone().into())).await.is_err() {
                        break;
                    }
                    match telephony::protocol::parse(&text) {
                        Ok(Inbound::Start(s)) => {
                            start = Some(text);
                            last = Some((s.stream_sid, 0, 0));
                        }
                        Ok(Inbound::Media(m)) => {
                            count.frames += 1;
                            telephony::protocol::decode_payload(&m.payload, &mut payload).unwrap();
                            if payload.iter().any(|&u| mulaw::decode(u).unsigned_abs() > 64) {
                                count.voiced += 1;
                            }
                            if let Some(l) = last.as_mut() {
                                (l.1, l.2) = (m.chunk, m.timestamp_ms);
                            }
                            recent.push_back(text);
                            if recent.len() > 16 {
                                recent.pop_front();
                            }
                            due = due_now(&t.plan, &mut done, &count);
                        }
                        _ => {}
                    }
                }
                Some(Ok(AxMessage::Binary(b))) => {
                    let _ = server.send(WsMessage::Binary(b)).await;
                }
                Some(Ok(AxMessage::Close(_))) | None | Some(Err(_)) => {
                    for m in held.drain(..) {
                        let _ = server.send(m).await;
                    }
                    let _ = server.close(None).await;
                    break;
                }
                Some(Ok(_)) => {}
            },
            msg = server.next() => match msg {
                Some(Ok(WsMessage::Text(text))) => {
                    if client.send(AxMessage::Text(text.as_str().into())).await.is_err() {
                        break;
                    }
                }
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => {
                    let _ = client.send(AxMessage::Close(None)).await;
                    break;
                }
                Some(Ok(_)) => {}
            },
        }
        for inject in due {
            t.injected.fetch_add(1, Ordering::SeqCst);
            let message = match inject {
                Inject::Stall(d) => {
                    stalled_until = Some(tokio::time::Instant::now() + d);
                    continue;
                }
                Inject::Text(s) => WsMessage::Text(s.into()),
                Inject::Binary(b) => WsMessage::Binary(b.into()),
                Inject::RepeatLast => WsMessage::Text(recent.back().unwrap().clone().into()),
                Inject::Resend(back) => {
                    WsMessage::Text(recent[recent.len() - 1 - back].clone().into())
                }
                Inject::RepeatStart => WsMessage::Text(start.clone().unwrap().into()),
                Inject::ChunkAhead(ahead) => {
                    let (sid, chunk, ts) = last.clone().unwrap();
                    let silence = [mulaw::SILENCE; FRAME];
                    let media = telephony::protocol::twilio::media(
                        0,
                        &sid,
                        chunk + ahead,
                        ts + 20,
                        &silence,
                    );
                    WsMessage::Text(media.into())
                }
            };
            let _ = server.send(message).await;
        }
    }
}

/// What the tamperer has seen of a stream.
#[derive(Debug, Default)]
struct Counts {
    /// The caller's `start` has been seen.
    started: bool,
    /// The caller's media messages.
    frames: u64,
    /// Of those, the ones carrying the caller's voice.
    voiced: u64,
}

/// The batches of `plan` that are due and not yet sent, marked sent.
fn due_now(plan: &[(At, Vec<Inject>)], done: &mut [bool], count: &Counts) -> Vec<Inject> {
    let mut due = Vec::new();
    for (i, (at, batch)) in plan.iter().enumerate() {
        let reached = match at {
            At::Frame(n) => count.frames >= *n,
            At::VoicedFrame(n) => count.voiced >= *n,
            At::Start => count.started,
        };
        if reached && !done[i] {
            done[i] = true;
            due.extend(batch.iter().cloned());
        }
    }
    due
}

/// A caller that reaches `server` through `proxy` (signing for the server, as Twilio would).
fn caller_through(server: &Server, proxy: SocketAddr) -> CallerConfig {
    let mut c = patient_caller(server);
    c.server = format!("http://{proxy}");
    c.public_url = base_url(server);
    c
}

/// One batch of what Twilio never sends, grouped by how the server counts it: malformed, a bad
/// payload, or dropped uncounted in the metrics (the call's own stream counters are neither
/// exported nor stored).
fn garbage() -> Vec<Inject> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    vec![
        // Malformed (6).
        Inject::Text("{not json".into()),
        Inject::Text("[1, 2, 3]".into()),
        Inject::Text(String::new()),
        Inject::Text(format!(
            r#"{{"event":"media","pad":"{}"}}"#,
            "x".repeat(100_000)
        )),
        Inject::Text(r#"{"event":"dtmf","dtmf":{"digit":"xyz"}}"#.into()),
        Inject::Text(r#"{"event":"mark"}"#.into()),
        // Bad payloads (2): not base64; 9 000 bytes (over the 8 000 a message may carry).
        Inject::Text(
            r#"{"event":"media","media":{"track":"inbound","payload":"%%%not-base64"}}"#.into(),
        ),
        Inject::Text(format!(
            r#"{{"event":"media","media":{{"track":"inbound","payload":"{}"}}}}"#,
            b64.encode(vec![0x55u8; 9_000])
        )),
        // Dropped without a payload count: an unknown event, a binary frame, the other track,
        // a mark we never sent, `connected` and `start` again, a duplicate and a stale chunk.
        Inject::Text(r#"{"event":"teleport","teleport":{}}"#.into()),
        Inject::Binary(vec![1, 2, 3]),
        Inject::Text(format!(
            r#"{{"event":"media","media":{{"track":"outbound","payload":"{}"}}}}"#,
            b64.encode([0x10u8; FRAME])
        )),
        Inject::Text(r#"{"event":"mark","mark":{"name":"seg-9999"}}"#.into()),
        Inject::Text(telephony::protocol::twilio::connected()),
        Inject::RepeatStart,
        Inject::RepeatLast,
        Inject::Resend(5),
    ]
}

/// Messages of [`garbage`] the server counts in `voxanne_malformed_messages_total`.
const GARBAGE_COUNTED: u64 = 8;

/// Garbage twice mid-call — during the greeting and while the caller speaks: the call goes on
/// as if it were not there; the counters count it; the recording holds exactly what was said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_mid_call_is_counted_and_dropped() {
    let case = "bad input mid-call (×2: during the greeting, during the caller's 1st line)";
    let dir = tempfile::tempdir().unwrap();
    let (engines, _) = faulty_engines(Faults::default());
    let server = start_server(dir.path(), None, engines).await;
    let batch = garbage();
    let injected = Arc::new(AtomicU64::new(0));
    let proxy = Tamperer {
        upstream: server.addr,
        plan: vec![
            (At::Frame(40), batch.clone()),
            (At::VoicedFrame(20), batch.clone()),
        ],
        injected: injected.clone(),
    }
    .start()
    .await;
    let script = vec![line(501, 500), line(502, 500)];
    let (report, s) = call(
        &server,
        dir.path(),
        &caller_through(&server, proxy),
        &script,
    )
    .await;

    assert_eq!(
        injected.load(Ordering::SeqCst),
        2 * batch.len() as u64,
        "{case}: the plan was not carried out"
    );
    let waits = waits(&report, &line_lens(&script));
    for w in &waits {
        assert!(w.longest_ms < 2_500, "{case}: {waits:?}");
    }
    let m = server.state.metrics();
    let malformed = m.malformed_messages.load(Ordering::Relaxed);
    let frames_in = m.frames_in.load(Ordering::Relaxed);
    assert_eq!(malformed, 2 * GARBAGE_COUNTED, "{case}: malformed count");
    assert_eq!(
        frames_in,
        (report.said.len() / FRAME) as u64,
        "{case}: caller frames counted (duplicates and the other track are not frames)"
    );
    let expect = Expect {
        turns: vec![
            ("agent", Some(GREETING.into())),
            ("caller", Some(LINES[0].into())),
            ("agent", Some(echo(LINES[0]))),
            ("caller", Some(LINES[1].into())),
            ("agent", Some(echo(LINES[1]))),
        ],
        events: vec![("error", "", 0), ("barge_in", "", 0), ("dtmf", "", 0)],
        end: "caller_hung_up",
    };
    let intact = check_intact(case, &report, &waits, &s, &expect);
    row(
        case,
        longest_dead_air(&waits),
        &format!(
            "{} messages injected; call unaffected, both lines answered; malformed + bad payloads counted {malformed}, caller frames counted {frames_in} = sent; caller hung up",
            2 * batch.len()
        ),
        &intact,
    );
    server.shutdown(Duration::from_secs(5)).await;
}

/// One media message whose chunk number is far ahead of the stream's (1 000 frames, 20 s),
/// during the greeting: the caller's frames after it must still be heard and answered.
///
/// Failed before the fix: `handle_media` took any chunk number above the last as the new last,
/// so the next 1 000 real frames were dropped as out of order and the agent heard nothing. A
/// step forward must now agree with the timestamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_number_far_ahead_does_not_deafen_the_call() {
    let case = "one media message with a chunk number 1000 ahead, during the greeting";
    let dir = tempfile::tempdir().unwrap();
    let (engines, _) = faulty_engines(Faults::default());
    let server = start_server(dir.path(), None, engines).await;
    let injected = Arc::new(AtomicU64::new(0));
    let proxy = Tamperer {
        upstream: server.addr,
        plan: vec![(At::Frame(40), vec![Inject::ChunkAhead(1_000)])],
        injected: injected.clone(),
    }
    .start()
    .await;
    let script = vec![line(511, 500), line(512, 500)];
    let mut caller = caller_through(&server, proxy);
    // An unanswered line is not waited for long: the caller goes on after 8 s.
    caller.no_answer = Duration::from_secs(8);
    let (report, s) = call(&server, dir.path(), &caller, &script).await;
    assert_eq!(injected.load(Ordering::SeqCst), 1, "{case}");
    let waits = waits(&report, &line_lens(&script));
    for w in &waits {
        assert!(
            w.longest_ms < 2_500,
            "{case}: the caller was not heard after the bogus chunk: {waits:?}"
        );
    }
    let frames_in = server.state.metrics().frames_in.load(Ordering::Relaxed);
    let expect = Expect {
        turns: vec![
            ("agent", Some(GREETING.into())),
            ("caller", Some(LINES[0].into())),
            ("agent", Some(echo(LINES[0]))),
            ("caller", Some(LINES[1].into())),
            ("agent", Some(echo(LINES[1]))),
        ],
        events: vec![("error", "", 0)],
        end: "caller_hung_up",
    };
    let intact = check_intact(case, &report, &waits, &s, &expect);
    row(
        case,
        longest_dead_air(&waits),
        &format!(
            "both lines answered; caller frames counted {frames_in} of {} sent; caller hung up",
            report.said.len() / FRAME
        ),
        &intact,
    );
    server.shutdown(Duration::from_secs(5)).await;
}

/// The stream's `start` and its first second of audio reach the server at once (a network stall
/// as the call connects; the same happens when call setup is slow, as in the database cases
/// above, since the call task reads nothing during setup): the call goes on, and the recording
/// must hold all of the greeting where the caller heard it.
///
/// Failed before the fix: the greeting's playout was anchored while the call task was still
/// reading that backlog, so the caller clock ran ahead of its schedule and the recorder dropped
/// the greeting (all but a few frames) as late, though the caller heard all of it. The call task
/// now reads what is waiting on the socket before it starts the greeting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_caller_audio_at_the_start_keeps_the_greeting_in_the_recording() {
    let case = "start and the first 1 s of the caller's audio delivered at once";
    let dir = tempfile::tempdir().unwrap();
    let (engines, _) = faulty_engines(Faults::default());
    let server = start_server(dir.path(), None, engines).await;
    let injected = Arc::new(AtomicU64::new(0));
    let proxy = Tamperer {
        upstream: server.addr,
        plan: vec![(At::Start, vec![Inject::Stall(Duration::from_secs(1))])],
        injected: injected.clone(),
    }
    .start()
    .await;
    let script = vec![line(521, 500)];
    let (report, s) = call(
        &server,
        dir.path(),
        &caller_through(&server, proxy),
        &script,
    )
    .await;
    assert_eq!(injected.load(Ordering::SeqCst), 1, "{case}");
    let waits = waits(&report, &line_lens(&script));
    let expect = Expect {
        turns: vec![
            ("agent", Some(GREETING.into())),
            ("caller", Some(LINES[0].into())),
            ("agent", Some(echo(LINES[0]))),
        ],
        events: vec![("error", "", 0)],
        end: "caller_hung_up",
    };
    let intact = check_intact(case, &report, &waits, &s, &expect);
    row(
        case,
        longest_dead_air(&waits),
        "the line answered; caller hung up",
        &intact,
    );
    server.shutdown(Duration::from_secs(5)).await;
}
