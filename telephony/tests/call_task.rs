//! The per-call task over an in-memory socket, in tokio's paused (virtual) time: long replies
//! flow without the task and its TTS worker waiting on each other, and a connection that goes
//! silent ends the call.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::sync::{Semaphore, mpsc};

use agent::conversation::{CallEvent, ConversationConfig, TurnSummary};
use agent::engine::{Brain, BrainEvent, BrainRequest, EngineError};
use agent::testing::{ScriptedStt, ToneTts};
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
    turns: Mutex<Vec<TurnSummary>>,
    ended: Mutex<Option<CallEnd>>,
}

impl CallHooks for Hooks {
    fn setup(&self, _start: &Start) -> BoxFuture<'static, Result<CallSetup, Rejected>> {
        Box::pin(async {
            Ok(CallSetup {
                conversation: ConversationConfig {
                    greeting: "Hi.".into(),
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
    fn event(&self, _call: &CallInfo, _event: &CallEvent) {}
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
