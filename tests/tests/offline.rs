//! End to end through audio with the embedded offline engines: a synthesised caller (always a
//! different synthesiser and voice from the agent's) speaks over the phone channel (8 kHz
//! μ-law in Twilio Media Streams JSON); the server transcribes it with Whisper, answers, speaks
//! with Piper (or the Festival fallback); what the caller heard is transcribed back with Whisper
//! and compared with what the agent meant to say.
//!
//! These tests need the model files: `scripts/test.sh` fetches them (`voxanne models fetch`)
//! into `VOXANNE_MODELS_DIR` (default `~/.cache/voxanne/models`). They do not skip: a missing
//! model is a failure that names the command that fetches it.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use api::caller::{Line, LineStart, place_call};
use common::{Backend, caller, config, database_url, drain_writes, org_of};
use engines::wer::wer;
use engines::whisper::{WhisperOptions, WhisperStt};
use media::PHONE_RATE;
use media::resample::resample;
use storage::CallSid;

fn models_dir() -> PathBuf {
    std::env::var_os("VOXANNE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/voxanne/models")
        })
}

/// The test's own Whisper, to transcribe what the caller heard.
fn listener() -> &'static WhisperStt {
    static STT: OnceLock<WhisperStt> = OnceLock::new();
    STT.get_or_init(|| {
        let path = models_dir().join("whisper/ggml-base.bin");
        WhisperStt::load(&path, WhisperOptions::default()).unwrap_or_else(|e| {
            panic!("{e}: run `cargo run -p api -- models fetch` with VOXANNE_MODELS_DIR={} (scripts/test.sh does)", models_dir().display())
        })
    })
}

/// Who speaks the caller's lines.
#[derive(Debug, Clone, Copy)]
enum CallerVoice {
    /// Festival's CMU SLT (female, HTS).
    Festival,
    /// Piper's joe (male, VITS).
    Piper,
}

/// The caller's line as 8 kHz PCM.
fn caller_says(voice: CallerVoice, text: &str) -> Vec<i16> {
    match voice {
        CallerVoice::Festival => {
            let tts = engines::festival::FestivalTts::load()
                .expect("Festival is installed (scripts/test.sh installs it)");
            let audio = tts.synthesize_blocking(text).unwrap();
            resample(&audio, 16_000, PHONE_RATE).unwrap()
        }
        CallerVoice::Piper => {
            let models = models_dir();
            let voice = engines::piper::PiperTts::load(
                &engines::models::ModelId::PiperJoe.path(&models),
                &models,
                1,
            )
            .unwrap();
            api::simulate::speak_8k(&voice, text).unwrap()
        }
    }
}

/// Transcribes 8 kHz audio with the test's Whisper.
fn transcribe_8k(audio: &[i16]) -> String {
    let wide = resample(audio, PHONE_RATE, 16_000).unwrap();
    listener().transcribe_blocking(&wide).unwrap().text
}

/// Slack around an agent turn's recorded media times when cutting what the caller heard: the
/// simulated phone plays a frame up to a frame or two after the media time the server gave it
/// (it plays what has arrived, 20 ms per tick). 100 ms is several frames of margin and far less
/// than the caller's pause (700 ms) between the agent's turns and its own lines.
const TURN_SLACK_MS: i64 = 100;

/// What the caller heard of one agent turn: `heard` (8 kHz, one sample per sample of the call's
/// media time) between the turn's recorded start and end, with leading and trailing silence
/// cut. The turn's times come from the server's record (the media time its first frame was due
/// to play; the media time its last mark came back), so a pause inside the turn (a sentence
/// synthesised late) neither splits it nor moves the cut, as cutting at silences would.
fn heard_during<'a>(heard: &'a [i16], turn: &storage::TurnRecord) -> &'a [i16] {
    let at = |ms: i64| ((ms.max(0) as usize) * PHONE_RATE as usize / 1000).min(heard.len());
    let window = &heard[at(turn.start_ms - TURN_SLACK_MS)..at(turn.end_ms + TURN_SLACK_MS)];
    let frame = PHONE_RATE as usize / 50;
    let loud =
        |f: &[i16]| f.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / f.len() as f64 > 1e4;
    let frames: Vec<&[i16]> = window.chunks(frame).collect();
    match (
        frames.iter().position(|f| loud(f)),
        frames.iter().rposition(|f| loud(f)),
    ) {
        (Some(first), Some(last)) => &window[first * frame..((last + 1) * frame).min(window.len())],
        _ => &[],
    }
}

async fn offline_call(voice: CallerVoice, extra: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let models = models_dir().display().to_string();
    let mut vars = vec![
        ("VOXANNE_ENGINES", "embedded"),
        ("VOXANNE_MODELS_DIR", models.as_str()),
    ];
    vars.extend_from_slice(extra);
    let config = config(dir.path(), database_url(Backend::Sqlite).await, &vars);
    let engines = tokio::task::spawn_blocking({
        let config = config.clone();
        move || api::engines::build(&config)
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{e} (scripts/test.sh fetches the models)"));
    let server = api::start(config, engines).await.expect("server starts");

    let said = [
        "Hi, I would like to book a cleaning appointment.",
        "That's all, thank you. Bye.",
    ];
    let after = |ms| LineStart::AfterAgent {
        pause: Duration::from_millis(ms),
    };
    let script: Vec<Line> = tokio::task::spawn_blocking(move || {
        said.iter()
            .map(|text| Line::Speak {
                audio: caller_says(voice, text),
                start: after(700),
            })
            .collect()
    })
    .await
    .unwrap();
    let mut caller = caller(&server);
    // Every line here is answered; on a loaded machine the answer can take longer than a
    // caller's usual patience (Whisper took 5.7 s on a 2.5 s line under load). Waiting longer
    // than the server's own STT budget (20 s) keeps the call's course the same however slow the
    // engines are; an answer that never comes still fails the test below.
    caller.no_answer = Duration::from_secs(30);
    let report = place_call(&caller, &script).await.expect("call");
    assert_eq!(report.protocol_errors, 0);
    assert!(report.ended_by_server, "the agent said goodbye and hung up");

    drain_writes(&server).await;
    let store = server.state.store().clone();
    let org = org_of(&report);
    let turns = store
        .list_turns(org, &CallSid(report.call_sid.clone()))
        .await
        .unwrap();
    let roles: Vec<&str> = turns.iter().map(|t| t.role.as_str()).collect();
    assert_eq!(
        roles,
        ["agent", "caller", "agent", "caller", "agent"],
        "{turns:#?}"
    );

    // The server understood the caller well enough to act on it.
    for (turn, line) in turns.iter().filter(|t| t.role == "caller").zip(said) {
        let w = wer(line, &turn.text);
        assert!(w <= 0.25, "heard {:?} for {line:?} (WER {w:.2})", turn.text);
    }
    // "bye" made the (echo) brain say goodbye and hang up: the transcript was acted on.
    assert_eq!(turns[4].text, "Thank you for calling. Goodbye!");

    // What the caller heard, transcribed back, is what the agent meant to say: all of it, as
    // no agent turn was cut off (the caller waits for the agent before each line).
    for (turn, next) in turns.iter().zip(turns.iter().skip(1)) {
        assert!(
            turn.end_ms <= next.start_ms + TURN_SLACK_MS,
            "turns overlap: {turns:#?}"
        );
    }
    for turn in turns.iter().filter(|t| t.role == "agent") {
        assert!(
            !turn.interrupted,
            "the caller talked over the agent's {:?} (heard {:?}): {turns:#?}",
            turn.text, turn.heard_text
        );
        let audio = heard_during(&report.heard, turn).to_vec();
        let seconds = audio.len() as f64 / f64::from(PHONE_RATE);
        let back = tokio::task::spawn_blocking(move || transcribe_8k(&audio))
            .await
            .unwrap();
        let w = wer(&turn.text, &back);
        assert!(
            w <= 0.2,
            "agent meant {:?}, caller heard {back:?} ({seconds:.1} s from {} to {} ms; WER {w:.2})",
            turn.text,
            turn.start_ms,
            turn.end_ms
        );
    }
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_call_through_audio_whisper_and_piper() {
    offline_call(CallerVoice::Festival, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_call_with_silero_vad_and_the_festival_fallback_voice() {
    offline_call(
        CallerVoice::Piper,
        &[("VOXANNE_VAD", "silero"), ("VOXANNE_TTS", "festival")],
    )
    .await;
}
