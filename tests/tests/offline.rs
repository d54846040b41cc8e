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

/// The stretches of `heard` where the agent spoke, split at silences of 600 ms or more.
fn agent_utterances(heard: &[i16]) -> Vec<&[i16]> {
    let frame = PHONE_RATE as usize / 50;
    let loud: Vec<bool> = heard
        .chunks(frame)
        .map(|f| f.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / f.len() as f64 > 1e4)
        .collect();
    let mut out = Vec::new();
    let mut start = None;
    let mut quiet = 0;
    for (i, &l) in loud
        .iter()
        .chain(std::iter::repeat_n(&false, 31))
        .enumerate()
    {
        match (l, start) {
            (true, None) => {
                start = Some(i);
                quiet = 0;
            }
            (true, Some(_)) => quiet = 0,
            (false, Some(s)) => {
                quiet += 1;
                if quiet >= 30 {
                    let end = (i + 1 - quiet).min(loud.len());
                    out.push(&heard[s * frame..(end * frame).min(heard.len())]);
                    start = None;
                }
            }
            (false, None) => {}
        }
    }
    out
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
    let report = place_call(&caller(&server), &script).await.expect("call");
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

    // What the caller heard, transcribed back, is what the agent meant to say.
    let agent: Vec<&str> = turns
        .iter()
        .filter(|t| t.role == "agent")
        .map(|t| t.text.as_str())
        .collect();
    let heard = agent_utterances(&report.heard);
    assert_eq!(
        heard.len(),
        agent.len(),
        "one stretch of agent speech per agent turn"
    );
    for (audio, meant) in heard.iter().zip(&agent) {
        let back = tokio::task::spawn_blocking({
            let audio = audio.to_vec();
            move || transcribe_8k(&audio)
        })
        .await
        .unwrap();
        let w = wer(meant, &back);
        assert!(
            w <= 0.2,
            "agent meant {meant:?}, caller heard {back:?} (WER {w:.2})"
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
