//! The per-call task over an in-memory socket, in tokio's paused (virtual) time: long replies
//! flow without the task and its TTS worker waiting on each other, and a connection that goes
//! silent ends the call, and engines that hang, panic or dawdle over cancelled speech cost
//! the call nothing more than an error for that turn.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::sync::{Semaphore, mpsc};

use agent::conversation::{CallEvent, ConversationConfig, TurnSummary};
use agent::engine::{
    Brain, BrainEvent, BrainRequest, EngineError, Role, SpeechToText, TextToSpeech,
};
use agent::testing::{EchoBrain, ScriptedStt, ToneTts};
use media::vad::EnergyVad;
use media::{PHONE_RATE, mulaw, testsignal};
use telephony::call::{
    CallEnd, CallEngines, CallHooks, CallInfo, CallSetup, MediaSocket, Rejected, SocketError,
    SocketMessage, run_call,
};
use telephony::protocol::{self, MediaFormat, Outbound, Start};

/// The socket: what the test sends in, what the task sends out.
struct ChannelSocket {
    inbound: mpsc::Receiver<String>,
    outbound: mpsc::Sender<String>,
}

impl MediaSocket for ChannelSocket {
    async fn recv(&mut self) -> Option<Result<SocketMessage, SocketError>> {
        self.inbound
            .recv()
            .await
            .map(|t| Ok(SocketMessage::Text(t)))
    }
    async fn send(&mut self, text: String) -> Result<(), SocketError> {
        self.outbound
            .send(text)
            .await
            .map_err(|_| SocketError("closed".into()))
    }
    async fn close(&mut self) {}
}

#[derive(Default)]
struct Hooks {
    /// The call's greeting; `None`: "Hi.".
    greeting: Option<String>,
    turns: Mutex<Vec<TurnSummary>>,
    /// Each event with the value `probe` had when it was reported.
    events: Mutex<Vec<(CallEvent, usize)>>,
    /// A count an engine double keeps (e.g. decodes finished), sampled at each event.
    probe: Arc<AtomicUsize>,
    ended: Mutex<Option<CallEnd>>,
}

impl CallHooks for Hooks {
    fn setup(&self, _start: &Start) -> BoxFuture<'static, Result<CallSetup, Rejected>> {
        let greeting = self.greeting.clone().unwrap_or_else(|| "Hi.".into());
        Box::pin(async {
            Ok(CallSetup {
                conversation: ConversationConfig {
                    greeting,
                    ..ConversationConfig::default()
                },
                recording_path: None,
                org: "test".into(),
                brain: None,
            })
        })
    }
    fn call_started(&self, _call: &CallInfo) {}
    fn turn_finished(&self, _call: &CallInfo, turn: &TurnSummary) {
        self.turns.lock().unwrap().push(turn.clone());
    }
    fn event(&self, _call: &CallInfo, event: &CallEvent) {
        let probe = self.probe.load(Ordering::SeqCst);
        self.events.lock().unwrap().push((event.clone(), probe));
    }
    fn call_ended(&self, _call: &CallInfo, end: &CallEnd) {
        *self.ended.lock().unwrap() = Some(end.clone());
    }
    fn reply_latency(&self, _call: &CallInfo, _latency: Duration) {}
    fn transfer_requested(&self, _call: &CallInfo, _to: &str) {}
}

/// Replies with many long sentences: more than the TTS request channel holds, each longer than
/// the engine-event channel holds in chunks.
#[derive(Debug)]
struct Monologue;

impl Brain for Monologue {
    fn name(&self) -> &str {
        "monologue"
    }
    fn respond(&self, _r: BrainRequest) -> BoxStream<'static, Result<BrainEvent, EngineError>> {
        let sentence = "This is a very long sentence that keeps going for many seconds of tone, \
                        well beyond what one channel of audio chunks can hold at once.";
        stream::iter((0..20).map(move |i| Ok(BrainEvent::Text(format!("{i}. {sentence}"))))).boxed()
    }
}

fn start_message() -> String {
    let start = Start {
        account_sid: "AC1".into(),
        stream_sid: "MZ1".into(),
        call_sid: "CA1".into(),
        tracks: vec!["inbound".into()],
        media_format: MediaFormat {
            encoding: "audio/x-mulaw".into(),
            sample_rate: 8_000,
            channels: 1,
        },
        custom_parameters: BTreeMap::new(),
    };
    protocol::twilio::start(1, &start)
}

fn engines(brain: Arc<dyn Brain>) -> CallEngines {
    CallEngines {
        stt: Arc::new(ScriptedStt::new(["tell me everything"])),
        brain,
        // 100 ms chunks: one sentence of ~7 s is ~70 chunks, more than the 64-event channel.
        tts: Arc::new(ToneTts::new(16_000, 440.0)),
        tts_fallback: None,
        stt_permits: Arc::new(Semaphore::new(1)),
        vad: Arc::new(|| Box::new(EnergyVad::new(-40.0))),
    }
}

type CallTask = tokio::task::JoinHandle<Option<CallEnd>>;

/// Starts a call with the monologue brain; returns Twilio's side of the socket.
async fn start_call(
    outbound_capacity: usize,
) -> (
    mpsc::Sender<String>,
    mpsc::Receiver<String>,
    Arc<Hooks>,
    CallTask,
) {
    let (in_tx, in_rx) = mpsc::channel(64);
    let (out_tx, out_rx) = mpsc::channel(outbound_capacity);
    let hooks = Arc::new(Hooks::default());
    let task = tokio::spawn(run_call(
        ChannelSocket {
            inbound: in_rx,
            outbound: out_tx,
        },
        engines(Arc::new(Monologue)),
        hooks.clone(),
    ));
    in_tx.send(protocol::twilio::connected()).await.unwrap();
    in_tx.send(start_message()).await.unwrap();
    (in_tx, out_rx, hooks, task)
}

#[tokio::test(start_paused = true)]
async fn a_long_reply_flows_and_the_call_still_hears_stop() {
    let (in_tx, mut out_rx, hooks, task) = start_call(64).await;
    // The caller: 1 s of voice after the greeting, then silence, for 60 s of call; counting
    // what comes back, echoing nothing (marks are not needed for audio to flow).
    let voice = testsignal::voice(PHONE_RATE, 1_000, 9);
    let mut media_frames = 0u64;
    let mut ulaw = Vec::new();
    for n in 0..3_000u64 {
        let t = n * 20;
        let frame: Vec<i16> = if (1_000..2_000).contains(&t) {
            let at = ((t - 1_000) * 8) as usize;
            voice[at..at + 160].to_vec()
        } else {
            vec![0; 160]
        };
        mulaw::encode_into(&frame, &mut ulaw);
        // A task that stops reading its socket (deadlocked) fails here rather than hanging.
        tokio::time::timeout(
            Duration::from_secs(5),
            in_tx.send(protocol::twilio::media(n + 2, "MZ1", n + 1, t, &ulaw)),
        )
        .await
        .expect("the call task stopped reading the socket")
        .unwrap();
        while let Ok(text) = out_rx.try_recv() {
            if let Ok(Outbound::Media { .. }) = protocol::parse_outbound(&text) {
                media_frames += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    in_tx
        .send(protocol::twilio::stop(9_999, "MZ1", "AC1", "CA1"))
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the call ended after stop")
        .unwrap()
        .expect("the call ran");
    assert_eq!(end.reason, "caller_hung_up");
    // ~58 s of reply audio at 50 frames a second went out while we listened.
    assert!(media_frames > 2_500, "{media_frames} frames");
    let turns = hooks.turns.lock().unwrap();
    let reply = turns.iter().find(|t| t.text.starts_with("0.")).unwrap();
    assert!(reply.interrupted, "the caller hung up mid-monologue");
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_goes_silent_ends_the_call() {
    let (in_tx, mut out_rx, hooks, task) = start_call(1_024).await;
    tokio::spawn(async move { while out_rx.recv().await.is_some() {} });
    // Twilio goes quiet without closing (a half-open connection): no more messages.
    let end = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the call ended")
        .unwrap()
        .expect("the call ran");
    assert_eq!(end.reason, "socket_silent");
    assert!(hooks.ended.lock().unwrap().is_some());
    drop(in_tx);
}

// ---- engines that fail in the ways real ones do ----------------------------------------------

/// A call with chosen engines and greeting; returns Twilio's side of the socket.
async fn start_call_with(
    engines: CallEngines,
    hooks: Arc<Hooks>,
) -> (mpsc::Sender<String>, mpsc::Receiver<String>, CallTask) {
    let (in_tx, in_rx) = mpsc::channel(64);
    let (out_tx, out_rx) = mpsc::channel(1_024);
    let task = tokio::spawn(run_call(
        ChannelSocket {
            inbound: in_rx,
            outbound: out_tx,
        },
        engines,
        hooks,
    ));
    in_tx.send(protocol::twilio::connected()).await.unwrap();
    in_tx.send(start_message()).await.unwrap();
    (in_tx, out_rx, task)
}

/// Plays the caller for `total_ms` of stream: voice during each `voiced` interval (stream ms),
/// silence otherwise, every mark echoed back as Twilio does once the audio before it played.
/// Returns the stream times (ms) at which agent media frames arrived, then ends the call with
/// `stop` and returns how it ended.
async fn play_caller(
    in_tx: mpsc::Sender<String>,
    mut out_rx: mpsc::Receiver<String>,
    task: CallTask,
    voiced: &[(u64, u64)],
    total_ms: u64,
) -> (Vec<u64>, CallEnd) {
    let voice: Vec<Vec<i16>> = voiced
        .iter()
        .enumerate()
        .map(|(i, (a, b))| testsignal::voice(PHONE_RATE, (b - a) as u32, 9 + i as u64))
        .collect();
    let mut heard = Vec::new();
    let mut ulaw = Vec::new();
    let mut seq = 2u64;
    for n in 0..total_ms / 20 {
        let t = n * 20;
        let frame: Vec<i16> = match voiced.iter().position(|(a, b)| (*a..*b).contains(&t)) {
            Some(i) => {
                let at = ((t - voiced[i].0) * 8) as usize;
                voice[i][at..at + 160].to_vec()
            }
            None => vec![0; 160],
        };
        mulaw::encode_into(&frame, &mut ulaw);
        seq += 1;
        tokio::time::timeout(
            Duration::from_secs(5),
            in_tx.send(protocol::twilio::media(seq, "MZ1", n + 1, t, &ulaw)),
        )
        .await
        .expect("the call task stopped reading the socket")
        .unwrap();
        while let Ok(text) = out_rx.try_recv() {
            match protocol::parse_outbound(&text) {
                Ok(Outbound::Media { .. }) => heard.push(t),
                Ok(Outbound::Mark { name, .. }) => {
                    seq += 1;
                    in_tx
                        .send(protocol::twilio::mark(seq, "MZ1", &name))
                        .await
                        .unwrap();
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    in_tx
        .send(protocol::twilio::stop(seq + 1, "MZ1", "AC1", "CA1"))
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the call ended after stop")
        .unwrap()
        .expect("the call ran");
    (heard, end)
}

fn tone_engines(stt: Arc<dyn SpeechToText>, brain: Arc<dyn Brain>, permits: usize) -> CallEngines {
    CallEngines {
        stt,
        brain,
        tts: Arc::new(ToneTts::new(16_000, 440.0)),
        tts_fallback: None,
        stt_permits: Arc::new(Semaphore::new(permits)),
        vad: Arc::new(|| Box::new(EnergyVad::new(-40.0))),
    }
}

/// How long [`BlockingStt`]'s decode runs: well past the call's speech-to-text timeout (8 s plus
/// the turn, at most 20 s).
const SLOW_DECODE: Duration = Duration::from_secs(60);

/// Speech-to-text like Whisper's: the decode runs as work of its own (whisper uses
/// `spawn_blocking`), so dropping the returned future stops the wait, not the decode.
#[derive(Debug, Default)]
struct BlockingStt {
    in_flight: Arc<AtomicUsize>,
    most_in_flight: Arc<AtomicUsize>,
    finished: Arc<AtomicUsize>,
}

impl SpeechToText for BlockingStt {
    fn name(&self) -> &str {
        "blocking-stt"
    }
    fn transcribe(
        &self,
        _audio: Vec<i16>,
        _rate: u32,
    ) -> BoxFuture<'static, Result<String, EngineError>> {
        let in_flight = self.in_flight.clone();
        let most = self.most_in_flight.clone();
        let finished = self.finished.clone();
        Box::pin(async move {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            // A task rather than spawn_blocking: a running blocking task stops paused time
            // from advancing, and what matters here is only that it outlives this future.
            let decode = tokio::spawn(async move {
                tokio::time::sleep(SLOW_DECODE).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                finished.fetch_add(1, Ordering::SeqCst);
                "hello".to_string()
            });
            decode.await.map_err(|e| EngineError::Failed(e.to_string()))
        })
    }
}

#[tokio::test(start_paused = true)]
async fn timed_out_decodes_keep_their_slot_until_the_decode_ends() {
    let stt = Arc::new(BlockingStt::default());
    let permits = Arc::new(Semaphore::new(1));
    let mut calls = Vec::new();
    // Two calls arrive, a second apart; their callers speak a turn every 6 s for 80 s.
    for i in 0..2u64 {
        let mut engines = tone_engines(stt.clone(), Arc::new(EchoBrain::default()), 1);
        engines.stt_permits = permits.clone();
        let hooks = Arc::new(Hooks {
            probe: stt.finished.clone(),
            ..Hooks::default()
        });
        let (in_tx, out_rx, task) = start_call_with(engines, hooks.clone()).await;
        let voiced: Vec<(u64, u64)> = (0..13)
            .map(|k| (1_000 + k * 6_000, 2_000 + k * 6_000))
            .collect();
        calls.push((
            hooks,
            tokio::spawn(async move { play_caller(in_tx, out_rx, task, &voiced, 80_000).await }),
        ));
        if i == 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    for (hooks, call) in calls {
        let (_, end) = call.await.unwrap();
        assert_eq!(end.reason, "caller_hung_up");
        let events = hooks.events.lock().unwrap();
        let timeouts: Vec<_> = events
            .iter()
            .filter(|(e, _)| e.kind == "error" && e.detail.contains("speech-to-text timed out"))
            .collect();
        assert!(
            timeouts.len() >= 2,
            "each call's turns time out: {events:?}"
        );
        // The first time-out reached the core while the decode it gave up on was still running:
        // a time-out stops the waiting, not the work, and does not wait for it.
        assert_eq!(
            timeouts[0].1, 0,
            "the first time-out waited for a decode to finish"
        );
    }
    assert_eq!(
        stt.most_in_flight.load(Ordering::SeqCst),
        1,
        "more decodes ran at once than there are decoder slots"
    );
    // Every abandoned decode runs to its end and gives its slot back.
    tokio::time::sleep(SLOW_DECODE * 2).await;
    assert_eq!(stt.in_flight.load(Ordering::SeqCst), 0);
    assert_eq!(permits.available_permits(), 1);
}

/// A brain whose first turn panics; later turns answer like [`EchoBrain`].
#[derive(Debug, Default)]
struct PanicsOnceBrain {
    calls: AtomicUsize,
    echo: EchoBrain,
}

impl Brain for PanicsOnceBrain {
    fn name(&self) -> &str {
        "panics-once-brain"
    }
    fn respond(&self, r: BrainRequest) -> BoxStream<'static, Result<BrainEvent, EngineError>> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            return stream::once(async { panic!("brain bug") }).boxed();
        }
        self.echo.respond(r)
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_brain_turn_is_apologised_for_and_the_call_goes_on() {
    let hooks = Arc::new(Hooks::default());
    let engines = tone_engines(
        Arc::new(ScriptedStt::new(["hello there"])),
        Arc::new(PanicsOnceBrain::default()),
        1,
    );
    let (in_tx, out_rx, task) = start_call_with(engines, hooks.clone()).await;
    let (heard, end) = play_caller(
        in_tx,
        out_rx,
        task,
        &[(1_000, 2_000), (12_000, 13_000)],
        25_000,
    )
    .await;
    assert_eq!(end.reason, "caller_hung_up");
    let apology = ConversationConfig::default().apology;
    let turns = hooks.turns.lock().unwrap();
    let said: Vec<&str> = turns
        .iter()
        .filter(|t| t.role == Role::Agent)
        .map(|t| t.text.as_str())
        .collect();
    assert!(said.contains(&apology.as_str()), "no apology: {said:?}");
    assert!(
        heard.iter().any(|&t| (2_000..12_000).contains(&t)),
        "the caller heard nothing after the first turn"
    );
    assert!(
        said.iter().any(|t| t.starts_with("You said: hello there")),
        "{said:?}"
    );
    assert!(
        heard.iter().any(|&t| t > 13_000),
        "the second turn went unanswered"
    );
    let events = hooks.events.lock().unwrap();
    assert!(
        events.iter().any(|(e, _)| e.kind == "error"
            && e.detail.contains("brain")
            && e.detail.contains("panicked")),
        "{events:?}"
    );
}

/// Speech-to-text whose first decode panics; later ones return their line.
#[derive(Debug, Default)]
struct PanicsOnceStt {
    calls: AtomicUsize,
}

impl SpeechToText for PanicsOnceStt {
    fn name(&self) -> &str {
        "panics-once-stt"
    }
    fn transcribe(
        &self,
        _audio: Vec<i16>,
        _rate: u32,
    ) -> BoxFuture<'static, Result<String, EngineError>> {
        let first = self.calls.fetch_add(1, Ordering::SeqCst) == 0;
        Box::pin(async move {
            if first {
                panic!("decoder bug");
            }
            Ok("hello there".to_string())
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_decode_is_an_error_and_the_next_turn_is_answered() {
    let hooks = Arc::new(Hooks::default());
    let engines = tone_engines(
        Arc::new(PanicsOnceStt::default()),
        Arc::new(EchoBrain::default()),
        1,
    );
    let (in_tx, out_rx, task) = start_call_with(engines, hooks.clone()).await;
    let (heard, end) = play_caller(
        in_tx,
        out_rx,
        task,
        &[(1_000, 2_000), (6_000, 7_000)],
        20_000,
    )
    .await;
    assert_eq!(end.reason, "caller_hung_up");
    let events = hooks.events.lock().unwrap();
    assert!(
        events.iter().any(|(e, _)| e.kind == "error"
            && e.detail.contains("speech-to-text")
            && e.detail.contains("panicked")),
        "{events:?}"
    );
    let turns = hooks.turns.lock().unwrap();
    assert!(
        turns
            .iter()
            .any(|t| t.role == Role::Agent && t.text.starts_with("You said: hello there")),
        "the turn after the panic went unanswered: {turns:?}"
    );
    assert!(
        heard.iter().any(|&t| t > 7_000),
        "the caller heard no reply"
    );
}

/// Text-to-speech whose first utterance (the greeting) panics; later ones are a tone.
#[derive(Debug, Default)]
struct PanicsOnceTts {
    calls: AtomicUsize,
    tone: ToneTts,
}

impl TextToSpeech for PanicsOnceTts {
    fn name(&self) -> &str {
        "panics-once-tts"
    }
    fn sample_rate(&self) -> u32 {
        self.tone.sample_rate()
    }
    fn synthesize(&self, text: String) -> BoxStream<'static, Result<Vec<i16>, EngineError>> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            return stream::once(async { panic!("voice bug") }).boxed();
        }
        self.tone.synthesize(text)
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_synthesis_is_an_error_and_the_next_reply_is_heard() {
    let hooks = Arc::new(Hooks::default());
    let mut engines = tone_engines(
        Arc::new(ScriptedStt::new(["hello there"])),
        Arc::new(EchoBrain::default()),
        1,
    );
    engines.tts = Arc::new(PanicsOnceTts::default());
    let (in_tx, out_rx, task) = start_call_with(engines, hooks.clone()).await;
    let (heard, end) = play_caller(in_tx, out_rx, task, &[(1_000, 2_000)], 15_000).await;
    assert_eq!(end.reason, "caller_hung_up");
    let events = hooks.events.lock().unwrap();
    assert!(
        events.iter().any(|(e, _)| e.kind == "error"
            && e.detail.contains("text-to-speech")
            && e.detail.contains("panicked")),
        "{events:?}"
    );
    assert!(heard.iter().any(|&t| t > 2_000), "the reply was not heard");
}

/// Text-to-speech that takes [`SLOW_CHUNK`] to make each 2 s chunk (slower than real time, within
/// the 5 s step timeout), and logs what it starts, makes and drops.
#[derive(Debug, Default)]
struct SlowTts {
    log: Arc<Mutex<Vec<String>>>,
}

/// How long [`SlowTts`] takes per chunk.
const SLOW_CHUNK: Duration = Duration::from_secs(4);

/// Logs how a [`SlowTts`] stream ended when it is dropped.
struct DropLog {
    log: Arc<Mutex<Vec<String>>>,
    text: String,
    making: Arc<AtomicBool>,
}

impl Drop for DropLog {
    fn drop(&mut self) {
        let how = if self.making.load(Ordering::SeqCst) {
            "mid-chunk"
        } else {
            "between chunks"
        };
        self.log
            .lock()
            .unwrap()
            .push(format!("dropped {how}: {}", self.text));
    }
}

impl TextToSpeech for SlowTts {
    fn name(&self) -> &str {
        "slow-tts"
    }
    fn sample_rate(&self) -> u32 {
        PHONE_RATE
    }
    fn synthesize(&self, text: String) -> BoxStream<'static, Result<Vec<i16>, EngineError>> {
        self.log.lock().unwrap().push(format!("start: {text}"));
        let making = Arc::new(AtomicBool::new(false));
        let guard = DropLog {
            log: self.log.clone(),
            text: text.clone(),
            making: making.clone(),
        };
        let log = self.log.clone();
        let chunks = text.len().div_ceil(40);
        stream::iter(0..chunks)
            .then(move |i| {
                let (log, making, text) = (log.clone(), making.clone(), text.clone());
                async move {
                    making.store(true, Ordering::SeqCst);
                    tokio::time::sleep(SLOW_CHUNK).await;
                    making.store(false, Ordering::SeqCst);
                    log.lock().unwrap().push(format!("made chunk {i}: {text}"));
                    Ok(vec![4_000i16; 2 * PHONE_RATE as usize])
                }
            })
            // The closure owns the guard, so it logs when the stream is dropped.
            .map(move |c| {
                let _ = &guard;
                c
            })
            .boxed()
    }
}

#[tokio::test(start_paused = true)]
async fn barge_in_frees_the_voice_for_the_next_reply_at_once() {
    // The greeting is two sentences, so two segments: the first (one chunk) plays from 4 s to
    // 6 s; the second's only chunk is being made from 4 s to 8 s. The caller cuts in at 4.5 s
    // and the reply is asked for about a second later, before that chunk is done.
    let first = "Hello, thank you for calling the clinic.";
    let second = "This second sentence takes a slow chunk to say.";
    let log = Arc::new(Mutex::new(Vec::new()));
    let hooks = Arc::new(Hooks {
        greeting: Some(format!("{first} {second}")),
        ..Hooks::default()
    });
    let mut engines = tone_engines(
        Arc::new(ScriptedStt::new(["hello there"])),
        Arc::new(EchoBrain::default()),
        1,
    );
    engines.tts = Arc::new(SlowTts { log: log.clone() });
    let (in_tx, out_rx, task) = start_call_with(engines, hooks.clone()).await;
    let (heard, end) = play_caller(in_tx, out_rx, task, &[(4_500, 5_300)], 30_000).await;
    assert_eq!(end.reason, "caller_hung_up");
    let log = log.lock().unwrap();
    assert!(log.contains(&format!("made chunk 0: {first}")), "{log:?}");
    let reply = log
        .iter()
        .position(|l| l.starts_with("start: You said"))
        .unwrap_or_else(|| panic!("the reply was never synthesised: {log:?}"));
    // The reply started once the cancelled sentence was dropped mid-chunk, and that chunk was
    // never finished: the reply did not wait for it.
    assert!(
        log[..reply].contains(&format!("dropped mid-chunk: {second}")),
        "the reply waited for the cancelled sentence's chunk: {log:?}"
    );
    assert!(
        !log.contains(&format!("made chunk 0: {second}")),
        "the cancelled sentence's chunk was still made: {log:?}"
    );
    let turns = hooks.turns.lock().unwrap();
    assert!(
        turns.iter().any(|t| t.role == Role::Agent && t.interrupted),
        "the greeting was not cut off: {turns:?}"
    );
    assert!(heard.iter().any(|&t| t > 10_000), "the reply was not heard");
}

/// A voice that logs each sentence it is asked for (`"{name}: {text}"`) and, on sentences
/// containing `hang_on`, never makes a chunk.
#[derive(Debug)]
struct LoggedVoice {
    name: &'static str,
    hang_on: Option<&'static str>,
    log: Arc<Mutex<Vec<String>>>,
    tone: ToneTts,
}

impl TextToSpeech for LoggedVoice {
    fn name(&self) -> &str {
        self.name
    }
    fn sample_rate(&self) -> u32 {
        self.tone.sample_rate()
    }
    fn synthesize(&self, text: String) -> BoxStream<'static, Result<Vec<i16>, EngineError>> {
        self.log
            .lock()
            .unwrap()
            .push(format!("{}: {text}", self.name));
        if self.hang_on.is_some_and(|h| text.contains(h)) {
            return stream::pending().boxed();
        }
        self.tone.synthesize(text)
    }
}

#[tokio::test(start_paused = true)]
async fn a_sentence_the_voice_hangs_on_is_spoken_by_the_fallback_which_keeps_the_call() {
    let hooks = Arc::new(Hooks::default());
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut engines = tone_engines(
        Arc::new(ScriptedStt::new(["hello there", "and again"])),
        Arc::new(EchoBrain::default()),
        1,
    );
    engines.tts = Arc::new(LoggedVoice {
        name: "primary",
        hang_on: Some("hello there"),
        log: log.clone(),
        tone: ToneTts::default(),
    });
    engines.tts_fallback = Some(Arc::new(LoggedVoice {
        name: "fallback",
        hang_on: None,
        log: log.clone(),
        tone: ToneTts::default(),
    }));
    let (in_tx, out_rx, task) = start_call_with(engines, hooks.clone()).await;
    let (heard, end) = play_caller(
        in_tx,
        out_rx,
        task,
        &[(1_000, 2_000), (14_000, 15_000)],
        25_000,
    )
    .await;
    assert_eq!(end.reason, "caller_hung_up");
    let log = log.lock().unwrap().clone();
    let voices: Vec<&str> = log.iter().map(|l| l.split(':').next().unwrap()).collect();
    // The greeting by the primary; the sentence it hung on, again by the fallback; and from
    // then on only the fallback.
    assert_eq!(voices[0], "primary", "{log:?}");
    let hung = log
        .iter()
        .position(|l| l.starts_with("primary") && l.contains("hello there"))
        .unwrap_or_else(|| panic!("{log:?}"));
    assert!(
        log[hung + 1].starts_with("fallback") && log[hung + 1].contains("hello there"),
        "{log:?}"
    );
    assert!(
        voices[hung + 1..].iter().all(|v| *v == "fallback"),
        "the primary was asked again after it failed: {log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.starts_with("fallback") && l.contains("and again"))
    );
    let events = hooks.events.lock().unwrap();
    assert!(
        events
            .iter()
            .any(|(e, _)| e.kind == "tts_fallback" && e.detail.contains("timed out")),
        "{events:?}"
    );
    // The reply was heard in full: the caller waited the 5 s step timeout, not forever.
    let turns = hooks.turns.lock().unwrap();
    let reply = turns
        .iter()
        .find(|t| t.role == Role::Agent && t.text.contains("hello there"))
        .unwrap_or_else(|| panic!("{turns:?}"));
    assert_eq!(
        reply.heard.as_deref(),
        Some(reply.text.as_str()),
        "{reply:?}"
    );
    let first_after = heard.iter().copied().find(|&t| t > 2_000).unwrap();
    assert!(
        first_after < 2_000 + 1_500 + 5_000 + 1_000,
        "the reply began at {first_after} ms"
    );
}
