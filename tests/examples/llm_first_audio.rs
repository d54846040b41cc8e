//! Measures (does not assert) what the LLM brain costs the caller, against the local
//! OpenAI-compatible server of the tests at a realistic pace (300 ms to the first token, then
//! 40 tokens a second, a token ~4 characters):
//! - the brain alone: time to the first token, the first sentence and the whole reply;
//! - worst cases: a provider that stalls (the filler, then the offline answer at the
//!   first-token timeout), one that answers 500, one whose stream is cut mid-reply;
//! - through audio (test engines: scripted speech-to-text, tone speech; real Media Streams
//!   over loopback): from the end of the caller's line to the first agent audio, LLM vs the
//!   offline receptionist.
//!
//! `cargo run -p tests --example llm_first_audio` (needs the MiniLM model, as the tests do).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use agent::engine::{Brain, BrainEvent, BrainRequest, CallerInput, Message, Role};
use api::caller::{Line, LineStart, place_call};
use common::fake_llm::{FakeLlm, Reply, Stream, text, text_deltas};
use llm::{Filler, LlmBrain, LlmSettings, Providers};
use media::{PHONE_RATE, testsignal};
use receptionist::dialogue::{CallContext, Direction};

const FIRST_TOKEN: Duration = Duration::from_millis(300);
/// 40 tokens a second.
const TOKEN_GAP: Duration = Duration::from_millis(25);
const REPLY: &str = "Of course, I can help you book a cleaning. We have Wednesday at half past nine or Thursday at two. Which would suit you best?";
const RUNS: usize = 7;

/// A failure the provider is scripted to have.
type ScriptedFailure = Box<dyn Fn() -> Reply>;

fn paced(reply: &str) -> Stream {
    // 4 characters a chunk: one token a chunk.
    text(reply, 4).paced(FIRST_TOKEN, TOKEN_GAP)
}

fn median(mut v: Vec<u128>) -> u128 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// One turn through the brain: when each event came, from the request.
async fn timed_turn(brain: &LlmBrain, input: &str) -> Vec<(u128, String)> {
    let t0 = Instant::now();
    let request = BrainRequest {
        history: vec![Message {
            role: Role::Agent,
            text: "Thank you for calling Bright Smile Dental.".into(),
        }],
        input: CallerInput::Speech(input.into()),
    };
    let mut events = brain.respond(request);
    let mut out = Vec::new();
    while let Some(e) = events.next().await {
        let at = t0.elapsed().as_millis();
        match e {
            Ok(BrainEvent::Text(t)) => out.push((at, format!("say {t:?}"))),
            Ok(BrainEvent::Note { kind, detail }) => out.push((at, format!("{kind} {detail}"))),
            Ok(BrainEvent::Action(a)) => out.push((at, format!("action {a:?}"))),
            Err(e) => out.push((at, format!("error {e}"))),
        }
    }
    out.push((t0.elapsed().as_millis(), "end".into()));
    out
}

async fn brain_for(
    store: &storage::Store,
    loaded: &api::receptionist::LoadedClinic,
    embedder: &engines::minilm::MiniLm,
    providers: &Providers,
    settings: &LlmSettings,
) -> LlmBrain {
    let session = api::receptionist::session(
        store,
        loaded,
        Some(embedder.clone()),
        CallContext {
            call_id: format!("measure-{}", uuid::Uuid::new_v4()),
            caller: Some("+447700900123".into()),
            direction: Direction::Inbound,
        },
        None,
        api::receptionist::system_clock(),
    );
    LlmBrain::with_filler(
        session,
        providers.provider(settings).unwrap(),
        Some(Filler::default()),
    )
}

fn first(events: &[(u128, String)], prefix: &str) -> Option<u128> {
    events
        .iter()
        .find(|(_, e)| e.starts_with(prefix))
        .map(|(t, _)| *t)
}

/// From the end of line `i` to the first agent audio after it, media time.
fn reply_delay(report: &api::caller::CallReport, i: usize) -> Option<u128> {
    let end = common::ms_to_samples(report.line_ends[i].as_millis());
    let first = report
        .heard
        .get(end..)?
        .iter()
        .position(|s| s.unsigned_abs() > 64)?;
    Some((first * 1000 / PHONE_RATE as usize) as u128)
}

async fn audio_call(brain: &str, fake: Option<&FakeLlm>, base_url: &str) -> Vec<u128> {
    if let Some(f) = fake {
        for _ in 0..3 {
            f.push(Reply::Stream(paced(REPLY)));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        dir.path(),
        None,
        &[
            ("VOXANNE_BRAIN", brain),
            ("VOXANNE_LLM_BASE_URL", base_url),
            ("VOXANNE_LLM_MODEL", "test-model"),
        ],
    );
    let server = common::start_with(config).await;
    let after = LineStart::AfterAgent {
        pause: Duration::from_millis(600),
    };
    let script: Vec<Line> = (0..2)
        .map(|i| Line::Speak {
            audio: testsignal::voice(PHONE_RATE, 1_200, 40 + i),
            start: after,
        })
        .collect();
    let report = place_call(&common::caller(&server), &script)
        .await
        .expect("call");
    (0..script.len())
        .filter_map(|i| reply_delay(&report, i))
        .collect()
}

#[tokio::main]
async fn main() {
    engines::models::install_tls_provider();
    let models = std::env::var_os("VOXANNE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/voxanne/models")
        });
    let embedder = engines::minilm::MiniLm::load_default(&models, 1).expect("MiniLM");
    let dir = tempfile::tempdir().unwrap();
    let store = storage::Store::open(None, dir.path()).await.unwrap();
    let file = api::clinic::read_file(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/bright-smile.toml"),
    )
    .unwrap();
    let summary = api::clinic::apply(&store, file, Some(&embedder))
        .await
        .unwrap();
    let loaded = api::receptionist::load_clinic(&store, summary.org, "x")
        .await
        .unwrap();
    let (fake, base_url) = FakeLlm::start().await;
    let settings = LlmSettings::new(&base_url, "test-model");
    println!(
        "provider pace: {} ms to first token, {} tokens/s; defaults: filler {} ms, first-token timeout {} ms",
        FIRST_TOKEN.as_millis(),
        1000 / TOKEN_GAP.as_millis(),
        Filler::default().after.as_millis(),
        settings.first_token_timeout.as_millis()
    );

    // The brain alone, a healthy provider.
    let providers = Providers::new();
    let (mut ttft, mut sentence, mut whole) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        fake.push(Reply::Stream(paced(REPLY)));
        let brain = brain_for(&store, &loaded, &embedder, &providers, &settings).await;
        let ev = timed_turn(&brain, "I'd like to book a cleaning.").await;
        let record = ev.iter().find(|(_, e)| e.starts_with("llm_turn")).unwrap();
        let detail: serde_json::Value =
            serde_json::from_str(record.1.trim_start_matches("llm_turn ")).unwrap();
        ttft.push(u128::from(detail["first_token_ms"].as_u64().unwrap()));
        sentence.push(first(&ev, "say").unwrap());
        whole.push(ev.last().unwrap().0);
    }
    println!(
        "healthy: first token {} ms, first sentence out of the brain {} ms, whole reply {} ms (median of {RUNS})",
        median(ttft),
        median(sentence),
        median(whole)
    );

    // Worst cases, each on a fresh breaker.
    let cases: Vec<(&str, ScriptedFailure)> = vec![
        ("stalled (no response)", Box::new(|| Reply::Stall)),
        ("HTTP 500", Box::new(|| Reply::Status(500))),
        (
            "cut mid-reply after 1 s",
            Box::new(|| {
                let mut chunks = text_deltas(REPLY, 4);
                chunks.truncate(8);
                Reply::Cut(Stream::new(chunks).paced(Duration::from_millis(1000), TOKEN_GAP))
            }),
        ),
    ];
    for (name, reply) in cases {
        let providers = Providers::new();
        let brain = brain_for(&store, &loaded, &embedder, &providers, &settings).await;
        fake.push(reply());
        let ev = timed_turn(&brain, "How much is a check-up?").await;
        let filler = ev
            .iter()
            .find(|(_, e)| e.starts_with("say \"One moment"))
            .map(|(t, _)| *t);
        let fallback = first(&ev, "llm_fallback").unwrap();
        let reason = ev
            .iter()
            .find(|(_, e)| e.starts_with("llm_fallback"))
            .and_then(|(_, e)| {
                serde_json::from_str::<serde_json::Value>(e.trim_start_matches("llm_fallback "))
                    .ok()
            })
            .map(|d| d["reason"].as_str().unwrap_or("?").to_string())
            .unwrap_or_default();
        let answer = ev
            .iter()
            .find(|(t, e)| *t >= fallback && e.starts_with("say"))
            .map(|(t, _)| *t);
        println!(
            "{name}: filler at {} ms, fallback ({reason}) at {fallback} ms, offline answer at {} ms",
            filler.map_or("-".into(), |f| f.to_string()),
            answer.map_or("-".into(), |a| a.to_string())
        );
    }

    // Through audio: end of the caller's line to the first agent audio.
    let mut llm_delays = Vec::new();
    let mut offline_delays = Vec::new();
    for _ in 0..3 {
        llm_delays.extend(audio_call("llm", Some(&fake), &base_url).await);
        offline_delays.extend(audio_call("receptionist", None, &base_url).await);
    }
    println!(
        "through audio (test engines; 700 ms end-of-turn silence included): LLM median {} ms (n={}), offline receptionist median {} ms (n={})",
        median(llm_delays.clone()),
        llm_delays.len(),
        median(offline_delays.clone()),
        offline_delays.len()
    );
}
