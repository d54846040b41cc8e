//! The LLM brain against a local server speaking the real OpenAI streaming wire format
//! ([`common::fake_llm`]): bookings through streamed tool calls land in the database, the
//! offline rules escalate before the model is asked, a transfer goes only to the clinic's
//! number, and every way a provider fails (stall, 429, 500, a stream cut mid-reply, garbage,
//! an outage the circuit breaker skips) leaves the caller answered by the offline receptionist
//! with the failure recorded. Most turns go through `voxanne chat`'s text path (the same
//! brain, tools and database as a call); one call goes through audio over the Media Streams
//! protocol.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime, TimeZone};
use serde_json::{Value, json};

use agent::engine::Action;
use api::chat::Chat;
use api::receptionist::LoadedClinic;
use common::fake_llm::{
    Call, FakeLlm, Reply, Stream, last_tool_result, nothing, text, text_deltas, text_to_finish,
    tool_calls,
};
use engines::minilm::MiniLm;
use llm::{Filler, LlmSettings, Providers};
use receptionist::dialogue::{Direction, Reply as ChatReply};
use storage::Store;

/// The caller's number (caller ID).
const CALLER: &str = "+447700900123";
/// The example clinic's `transfer_number`.
const TRANSFER_NUMBER: &str = "+442071234500";

/// Tuesday 8 December 2026, 10:00 in London: the clinic is open.
fn now() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2026, 12, 8)
        .unwrap()
        .and_hms_opt(10, 0, 0)
        .unwrap()
}

fn models_dir() -> PathBuf {
    std::env::var_os("VOXANNE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/voxanne/models")
        })
}

/// MiniLM, loaded once: the clinic's knowledge is embedded and retrieved per turn for real.
async fn embedder() -> MiniLm {
    static MODEL: std::sync::OnceLock<MiniLm> = std::sync::OnceLock::new();
    if let Some(m) = MODEL.get() {
        return m.clone();
    }
    let m = tokio::task::spawn_blocking(|| {
        MiniLm::load_default(&models_dir(), 1).unwrap_or_else(|e| {
            panic!(
                "{e}: run `cargo run -p api -- models fetch` with VOXANNE_MODELS_DIR={}",
                models_dir().display()
            )
        })
    })
    .await
    .unwrap();
    MODEL.get_or_init(|| m).clone()
}

struct Rig {
    store: Store,
    embedder: MiniLm,
    loaded: LoadedClinic,
    fake: FakeLlm,
    base_url: String,
    _dir: tempfile::TempDir,
}

/// The example clinic on a fresh SQLite store, and a fresh fake provider.
async fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(None, dir.path()).await.unwrap();
    let file = api::clinic::read_file(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/bright-smile.toml"),
    )
    .unwrap();
    let embedder = embedder().await;
    let summary = api::clinic::apply(&store, file, Some(&embedder))
        .await
        .unwrap();
    let loaded = api::receptionist::load_clinic(&store, summary.org, "x")
        .await
        .unwrap();
    let (fake, base_url) = FakeLlm::start().await;
    Rig {
        store,
        embedder,
        loaded,
        fake,
        base_url,
        _dir: dir,
    }
}

/// Settings whose timeouts never fire on a working local server, however loaded the machine
/// (the tests that need a timeout set their own).
fn settings(base_url: &str) -> LlmSettings {
    let mut s = LlmSettings::new(base_url, "test-model");
    s.first_token_timeout = Duration::from_secs(20);
    s.stall_timeout = Duration::from_secs(20);
    // MiniLM on a loaded 2-core machine: retrieval always finishes (the medical test reads the
    // knowledge in the prompt), and no budget of the call core's applies to the text path.
    s.knowledge_timeout = Duration::from_secs(10);
    s.event_budget = Duration::from_secs(60);
    s
}

fn chat(rig: &Rig, providers: &Providers, settings: &LlmSettings, filler: Option<Filler>) -> Chat {
    let clock = api::chat::clock_from(Some(now()), rig.loaded.clinic.tz).unwrap();
    Chat::new(
        &rig.store,
        &rig.loaded,
        Some(rig.embedder.clone()),
        Some(CALLER.into()),
        Direction::Inbound,
        clock,
    )
    .with_llm(providers.provider(settings).unwrap(), filler)
}

fn notes<'a>(reply: &'a ChatReply, kind: &str) -> Vec<&'a Value> {
    reply
        .notes
        .iter()
        .filter(|(k, _)| *k == kind)
        .map(|(_, d)| d)
        .collect()
}

/// The turn's `llm_turn` record (exactly one per turn).
fn turn_record(reply: &ChatReply) -> Value {
    let t = notes(reply, "llm_turn");
    assert_eq!(t.len(), 1, "one llm_turn record per turn: {reply:?}");
    t[0].clone()
}

/// The turn's fallback reason, asserting the offline receptionist answered it.
fn fell_back(reply: &ChatReply) -> String {
    let f = notes(reply, "llm_fallback");
    assert_eq!(f.len(), 1, "one llm_fallback event: {reply:?}");
    let t = turn_record(reply);
    assert_eq!(t["brain"], "receptionist", "{t}");
    assert!(!reply.say.is_empty(), "the caller is answered: {reply:?}");
    f[0]["reason"].as_str().unwrap().to_string()
}

fn roles(request: &Value) -> Vec<String> {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_booking_through_streamed_tool_calls_lands_in_the_database() {
    let rig = rig().await;
    let providers = Providers::new();
    let mut chat = chat(&rig, &providers, &settings(&rig.base_url), None);

    // Turn 1: text before a tool call, the call's arguments in 5-character fragments.
    rig.fake.push(Reply::Stream(tool_calls(
        Some("Let me check what we have. "),
        &[Call(
            "call_avail",
            "check_availability",
            json!({ "service": "cleaning", "date": "2026-12-09" }).to_string(),
        )],
        5,
    )));
    rig.fake.push(Reply::Dynamic(Box::new(|req| {
        let offer = last_tool_result(req)["offer"][0]["say"].clone();
        match offer.as_str() {
            Some(say) => Reply::Stream(text(
                &format!("I have {say}. Shall I book that, and may I have your full name?"),
                4,
            )),
            None => Reply::Status(400),
        }
    })));
    let r1 = chat
        .say("Hi, I'd like to book a cleaning on Wednesday please.")
        .await;
    assert_eq!(r1.say[0], "Let me check what we have.", "{r1:?}");
    assert!(
        r1.say
            .last()
            .unwrap()
            .ends_with("may I have your full name?"),
        "{r1:?}"
    );
    assert_eq!(r1.tools.len(), 1);
    assert_eq!(r1.tools[0].name, "check_availability");
    assert_eq!(r1.tools[0].arguments["date"], "2026-12-09");
    assert_eq!(turn_record(&r1)["brain"], "llm");

    // Turn 2: two tool calls in one response, their fragments interleaved by index; the start
    // is the one the first turn's tool result offered, which the model reads back from the
    // conversation (the earlier exchange is given back).
    rig.fake.push(Reply::Dynamic(Box::new(|req| {
        let first_result = req["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["role"] == "tool")
            .and_then(|m| m["content"].as_str())
            .and_then(|c| serde_json::from_str::<Value>(c).ok());
        let Some(start) =
            first_result.and_then(|r| r["offer"][0]["start"].as_str().map(String::from))
        else {
            return Reply::Status(400);
        };
        Reply::Stream(tool_calls(
            None,
            &[
                Call("call_look", "lookup_caller", "{}".into()),
                Call(
                    "call_book",
                    "book_appointment",
                    json!({ "service": "Cleaning", "start": start, "name": "Ann Lee" }).to_string(),
                ),
            ],
            3,
        ))
    })));
    rig.fake.push(Reply::Dynamic(Box::new(|req| {
        if last_tool_result(req)["booked"] == true {
            Reply::Stream(text(
                "You're all booked in with Dr. Patel at 9 a.m. on Wednesday. Is there anything else?",
                3,
            ))
        } else {
            Reply::Stream(text("Sorry, that did not work.", 3))
        }
    })));
    let r2 = chat.say("Yes please, my name is Ann Lee.").await;
    assert_eq!(
        r2.say,
        [
            "You're all booked in with Dr. Patel at 9 a.m. on Wednesday.",
            "Is there anything else?"
        ],
        "{r2:?}"
    );
    let names: Vec<&str> = r2.tools.iter().map(|t| t.name).collect();
    assert_eq!(names, ["lookup_caller", "book_appointment"]);
    assert_eq!(r2.tools[1].result["booked"], true, "{r2:?}");
    let t = turn_record(&r2);
    assert_eq!(t["brain"], "llm");
    assert_eq!(t["rounds"], 2);
    assert_eq!(t["usage_reported"], true);
    assert!(t["tokens_in"].as_u64().unwrap() > 0 && t["tokens_out"].as_u64().unwrap() > 0);
    assert!(
        t["first_token_ms"].is_u64() && t["first_sentence_ms"].is_u64(),
        "{t}"
    );

    // In the database: one appointment, the caller's, for the offered time.
    let org = rig.loaded.org;
    let utc_now = rig
        .loaded
        .clinic
        .tz
        .from_local_datetime(&now())
        .unwrap()
        .to_utc();
    let booked = rig
        .store
        .upcoming_appointments(org, CALLER, utc_now)
        .await
        .unwrap();
    assert_eq!(booked.len(), 1, "{booked:?}");
    assert_eq!(booked[0].patient_name, "Ann Lee");
    assert_eq!(booked[0].service, "Cleaning");

    // What the provider was sent.
    let requests = rig.fake.requests();
    assert_eq!(requests.len(), 4);
    // The words spoken before the tool call are the assistant message's content.
    let calls_message = requests[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "assistant" && m["tool_calls"].is_array())
        .cloned()
        .unwrap();
    assert_eq!(
        calls_message["content"], "Let me check what we have.",
        "{calls_message}"
    );
    assert!(requests[0].get("tool_choice").is_none(), "tools allowed");
    let first = &requests[0];
    assert_eq!(first["model"], "test-model");
    assert_eq!(first["stream"], true);
    assert_eq!(first["stream_options"]["include_usage"], true);
    assert_eq!(first["tools"].as_array().unwrap().len(), 8);
    let system = first["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("Bright Smile Dental") && system.contains("Cleaning: 45 minutes, £65"));
    assert!(
        !system.contains(TRANSFER_NUMBER),
        "the model is never given a number"
    );
    // Turn 2's first request: the greeting, turn 1 with its tool exchange, what was said, the
    // caller's new words.
    assert_eq!(
        roles(&requests[2]),
        [
            "system",
            "assistant",
            "user",
            "assistant",
            "tool",
            "assistant",
            "user"
        ]
    );
    assert_eq!(rig.fake.unused(), 0);
}

#[tokio::test]
async fn a_stalled_provider_gets_the_filler_then_the_offline_answer() {
    let rig = rig().await;
    let providers = Providers::new();
    let mut s = settings(&rig.base_url);
    // Counted from when the prompt is ready (knowledge retrieval is not in it), and far past
    // the filler's 100 ms, so the filler always comes first.
    s.first_token_timeout = Duration::from_secs(2);
    let filler = Filler {
        after: Duration::from_millis(100),
        text: "One moment, please.".into(),
    };
    let mut chat = chat(&rig, &providers, &s, Some(filler));

    // Never answers at all (no response headers).
    rig.fake.push(Reply::Stall);
    let r = chat.say("What time do you open on Friday?").await;
    assert_eq!(r.say[0], "One moment, please.", "{r:?}");
    assert_eq!(fell_back(&r), "first_token_timeout");
    let answer = r.say[1..].join(" ");
    assert!(
        answer.contains("8:30") || answer.to_lowercase().contains("half past eight"),
        "{r:?}"
    );

    // Answers with headers, then sends nothing.
    rig.fake.push(Reply::Stream(
        text("We open at nine.", 4).paced(Duration::from_secs(3600), Duration::ZERO),
    ));
    let r = chat.say("And how much is a check-up?").await;
    assert_eq!(r.say[0], "One moment, please.", "{r:?}");
    assert_eq!(fell_back(&r), "first_token_timeout");
    assert!(r.say.join(" ").contains("fifty-five"), "{r:?}");
    assert!(!r.say.join(" ").contains("nine"));
    assert_eq!(rig.fake.request_count(), 2);
}

#[tokio::test]
async fn http_errors_cut_streams_and_garbage_are_answered_offline_and_recorded() {
    let rig = rig().await;
    let providers = Providers::with_breaker(100, Duration::from_secs(600));
    let mut chat = chat(&rig, &providers, &settings(&rig.base_url), None);

    rig.fake.push(Reply::Status(429));
    let r = chat.say("How much is a check-up?").await;
    assert_eq!(fell_back(&r), "provider_error");
    assert!(
        notes(&r, "llm_fallback")[0]["error"]
            .as_str()
            .unwrap()
            .contains("scripted 429"),
        "{r:?}"
    );
    assert!(r.say.join(" ").contains("fifty-five"), "{r:?}");

    rig.fake.push(Reply::Status(500));
    let r = chat.say("Where are you?").await;
    assert_eq!(fell_back(&r), "provider_error");
    assert!(r.say.join(" ").contains("Mill Lane"), "{r:?}");

    // Cut mid-sentence: the half sentence is never said.
    rig.fake.push(Reply::Cut(Stream::new(text_deltas(
        "We are open from half past eight until",
        4,
    ))));
    let r = chat.say("When are you open on Monday?").await;
    let reason = fell_back(&r);
    assert!(reason == "cut" || reason == "provider_error", "{reason}");
    assert!(!r.say.join(" ").contains("until"), "{r:?}");

    // A stream that ends without a finish reason (closed cleanly, no [DONE]) is cut too.
    let mut chunks = text_deltas("Our address is", 4);
    chunks.truncate(3);
    rig.fake.push(Reply::Cut(Stream::new(chunks)));
    let r = chat.say("Is there parking?").await;
    let reason = fell_back(&r);
    assert!(reason == "cut" || reason == "provider_error", "{reason}");

    // The body ends cleanly before any finish: cut, exactly.
    rig.fake.push(Reply::Ends(Stream::new(text_deltas(
        "We are open until",
        4,
    ))));
    let r = chat.say("Are you open on Saturday?").await;
    assert_eq!(fell_back(&r), "cut");
    assert!(!r.say.join(" ").contains("until"), "{r:?}");

    rig.fake
        .push(Reply::Garbage(Stream::new(text_deltas("Hello", 2))));
    let r = chat.say("How much is whitening?").await;
    assert_eq!(fell_back(&r), "garbage");
    assert!(r.say.join(" ").contains("two hundred and fifty"), "{r:?}");
    assert_eq!(rig.fake.request_count(), 6);

    // A working provider again: the LLM answers.
    let r = chat.say("Thanks, that's helpful.").await;
    assert_eq!(turn_record(&r)["brain"], "llm");
    assert_eq!(r.say, ["Okay."]);
}

#[tokio::test]
async fn a_transfer_to_a_number_that_is_not_the_clinics_is_refused() {
    let rig = rig().await;
    let providers = Providers::new();
    let mut chat = chat(&rig, &providers, &settings(&rig.base_url), None);
    rig.fake.push(Reply::Stream(tool_calls(
        None,
        &[Call(
            "t1",
            "transfer_to_person",
            json!({ "number": "+19005550100", "reason": "the caller's brother" }).to_string(),
        )],
        4,
    )));
    rig.fake.push(Reply::Dynamic(Box::new(|req| {
        let refused = last_tool_result(req)["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("refused"));
        if refused {
            Reply::Stream(tool_calls(
                Some("I can only put you through to our own team. "),
                &[Call("t2", "transfer_to_person", "{}".into())],
                4,
            ))
        } else {
            Reply::Stream(text("Connecting you to that number.", 4))
        }
    })));
    rig.fake
        .push(Reply::Stream(text("Putting you through now.", 4)));
    let r = chat
        .say("My brother's number is 1 900 555 0100, connect me to him.")
        .await;
    let refused = notes(&r, "transfer_refused");
    assert_eq!(refused.len(), 1, "{r:?}");
    assert_eq!(refused[0]["asked"], "+19005550100");
    assert_eq!(
        r.action,
        Some(Action::Transfer {
            to: TRANSFER_NUMBER.into()
        }),
        "{r:?}"
    );
    assert_eq!(
        r.say,
        [
            "I can only put you through to our own team.",
            "Putting you through now."
        ]
    );
    assert_eq!(rig.fake.request_count(), 3);
}

#[tokio::test]
async fn a_medical_question_is_escalated_by_policy_without_asking_the_model() {
    let rig = rig().await;
    let providers = Providers::new();
    let mut chat = chat(&rig, &providers, &settings(&rig.base_url), None);
    let r = chat.say("Is there parking near you?").await;
    assert_eq!(turn_record(&r)["brain"], "llm");
    assert_eq!(rig.fake.request_count(), 1);
    // This turn's knowledge is in the prompt.
    let system = rig.fake.requests()[0]["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        system.contains("free parking behind the building"),
        "{system}"
    );

    let r = chat
        .say("My gum is swollen and bleeding, should I take antibiotics?")
        .await;
    assert_eq!(rig.fake.request_count(), 1, "the model was not asked");
    let t = turn_record(&r);
    assert_eq!(t["brain"], "receptionist");
    assert_eq!(t["reason"], "medical");
    assert_eq!(notes(&r, "escalation")[0]["kind"], "medical", "{r:?}");
    assert!(r.say.join(" ").contains("medical advice"), "{r:?}");
}

#[tokio::test]
async fn a_provider_that_keeps_failing_is_skipped_for_a_while() {
    let rig = rig().await;
    let providers = Providers::with_breaker(3, Duration::from_secs(600));
    let mut chat = chat(&rig, &providers, &settings(&rig.base_url), None);
    for _ in 0..3 {
        rig.fake.push(Reply::Status(500));
    }
    for q in [
        "How much is a check-up?",
        "Where are you?",
        "How much is a filling?",
    ] {
        let r = chat.say(q).await;
        assert_eq!(fell_back(&r), "provider_error");
    }
    assert_eq!(rig.fake.request_count(), 3);
    for q in ["How much is whitening?", "Is there parking?"] {
        let r = chat.say(q).await;
        assert_eq!(fell_back(&r), "breaker_open");
    }
    assert_eq!(
        rig.fake.request_count(),
        3,
        "no request while the breaker is open"
    );
    // Another call to the same provider is skipped too: the breaker is the provider's.
    let mut other = chat_for_other_call(&rig, &providers);
    let r = other.say("How much is a cleaning?").await;
    assert_eq!(fell_back(&r), "breaker_open");
    assert_eq!(rig.fake.request_count(), 3);
}

fn chat_for_other_call(rig: &Rig, providers: &Providers) -> Chat {
    chat(rig, providers, &settings(&rig.base_url), None)
}

/// One call through audio with `VOXANNE_BRAIN=llm`: scripted speech-to-text, tone speech, real
/// Media Streams over a loopback WebSocket, the LLM answering from the local server.
#[tokio::test]
async fn a_call_through_audio_is_answered_by_the_llm() {
    use api::caller::{Line, LineStart, place_call};
    use media::{PHONE_RATE, testsignal};

    let (fake, base_url) = FakeLlm::start().await;
    fake.push(Reply::Stream(
        text(
            "Of course, I can help with a cleaning. Which day suits you?",
            4,
        )
        .paced(Duration::from_millis(50), Duration::from_millis(10)),
    ));
    fake.push(Reply::Stream(text("Tuesday morning works well.", 4)));
    fake.push(Reply::Stream(tool_calls(
        Some("Thank you for calling, goodbye. "),
        &[Call("e1", "end_call", "{}".into())],
        4,
    )));
    fake.push(Reply::Stream(text("Take care.", 4)));

    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        dir.path(),
        None,
        &[
            ("VOXANNE_BRAIN", "llm"),
            ("VOXANNE_LLM_BASE_URL", &base_url),
            ("VOXANNE_LLM_MODEL", "test-model"),
            ("VOXANNE_LLM_API_KEY", "server-key"),
        ],
    );
    let server = common::start_with(config).await;
    // The organisation's sealed key wins over the server's.
    let (default_org, _) = server.state.store().ensure_default_org().await.unwrap();
    api::staff::resources::seal_and_store(
        server.state.store(),
        server.state.keys(),
        default_org,
        "llm_api_key",
        "clinic-key",
    )
    .await
    .unwrap();
    let after = |ms| LineStart::AfterAgent {
        pause: Duration::from_millis(ms),
    };
    let script = vec![
        Line::Speak {
            audio: testsignal::voice(PHONE_RATE, 1_200, 21),
            start: after(600),
        },
        Line::Speak {
            audio: testsignal::voice(PHONE_RATE, 1_000, 22),
            start: after(600),
        },
        Line::Speak {
            audio: testsignal::voice(PHONE_RATE, 900, 23),
            start: after(600),
        },
    ];
    let report = place_call(&common::caller(&server), &script)
        .await
        .expect("call");
    assert_eq!(report.protocol_errors, 0);
    assert!(report.ended_by_server, "the LLM's end_call hung up");
    assert!(
        report.first_audio_after_line.iter().all(Option::is_some),
        "every line was answered: {:?}",
        report.first_audio_after_line
    );
    assert_eq!(fake.request_count(), 4);
    assert!(
        fake.authorizations()
            .iter()
            .all(|a| a.as_deref() == Some("Bearer clinic-key")),
        "{:?}",
        fake.authorizations()
    );

    let store = server.state.store().clone();
    let org = common::org_of(&report);
    let sid = storage::CallSid(report.call_sid.clone());
    let mut events = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        common::drain_writes(&server).await;
        let call = store.get_call(org, &sid).await.unwrap();
        if call.is_some_and(|c| c.end_reason.is_some()) {
            events = store.list_events(org, &sid).await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let llm_turns: Vec<Value> = events
        .iter()
        .filter(|e| e.kind == "llm_turn")
        .filter_map(|e| e.detail["detail"].as_str())
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    assert_eq!(llm_turns.len(), 3, "{events:?}");
    assert!(
        llm_turns.iter().all(|t| t["brain"] == "llm"),
        "{llm_turns:?}"
    );
    let turns = store.list_turns(org, &sid).await.unwrap();
    let agent: Vec<&str> = turns
        .iter()
        .filter(|t| t.role == "agent")
        .map(|t| t.text.as_str())
        .collect();
    assert!(
        agent.contains(&"Of course, I can help with a cleaning. Which day suits you?"),
        "{agent:?}"
    );
    assert!(agent.iter().any(|t| t.contains("Take care.")), "{agent:?}");
    let m = server.state.metrics();
    assert_eq!(m.llm_turns.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!(
        m.llm_fallbacks.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

/// The call core re-asks a turn whose reply nobody heard (same history length, the caller's
/// words merged): the abandoned reply's tool exchange is forgotten; a heard reply's is kept.
#[tokio::test]
async fn an_abandoned_replys_tool_exchange_is_forgotten_and_a_heard_ones_kept() {
    use agent::engine::{Brain, BrainEvent, BrainRequest, CallerInput, Message, Role};
    use futures_util::StreamExt;

    let rig = rig().await;
    let providers = Providers::new();
    let clock = api::chat::clock_from(Some(now()), rig.loaded.clinic.tz).unwrap();
    let session = api::receptionist::session(
        &rig.store,
        &rig.loaded,
        Some(rig.embedder.clone()),
        receptionist::dialogue::CallContext {
            call_id: "CAreask".into(),
            caller: Some(CALLER.into()),
            direction: Direction::Inbound,
        },
        None,
        clock,
    );
    let brain = llm::LlmBrain::new(
        session,
        providers.provider(&settings(&rig.base_url)).unwrap(),
    );
    let greeting = Message {
        role: Role::Agent,
        text: "Thank you for calling Bright Smile Dental.".into(),
    };
    let check = |id: &'static str| {
        Reply::Stream(tool_calls(
            None,
            &[Call(
                id,
                "check_availability",
                json!({ "service": "Cleaning", "date": "2026-12-09" }).to_string(),
            )],
            6,
        ))
    };
    let said = |brain: &llm::LlmBrain, history: Vec<Message>, input: &str| {
        let mut events = brain.respond(BrainRequest {
            history,
            input: CallerInput::Speech(input.into()),
        });
        async move {
            let mut say = Vec::new();
            while let Some(e) = events.next().await {
                if let Ok(BrainEvent::Text(t)) = e {
                    say.push(t);
                }
            }
            say
        }
    };
    let tool_ids = |req: &Value| -> Vec<String> {
        req["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "tool")
            .map(|m| m["tool_call_id"].as_str().unwrap().to_string())
            .collect()
    };

    // Turn 1: tools run, the reply is then abandoned unheard.
    rig.fake.push(check("call_abandoned"));
    rig.fake
        .push(Reply::Stream(text("Wednesday at nine is free.", 4)));
    said(&brain, vec![greeting.clone()], "Any cleaning on Wednesday?").await;

    // Asked again with the same history: the abandoned exchange is not in the request.
    rig.fake.push(check("call_heard"));
    rig.fake
        .push(Reply::Stream(text("Wednesday at nine or ten.", 4)));
    let s = said(
        &brain,
        vec![greeting.clone()],
        "Any cleaning on Wednesday? Or Thursday.",
    )
    .await;
    assert_eq!(s, ["Wednesday at nine or ten."]);
    let requests = rig.fake.requests();
    assert!(
        tool_ids(&requests[2]).is_empty(),
        "{:?}",
        roles(&requests[2])
    );

    // Heard (in part): the next turn sees that reply's exchange, and only it.
    let history = vec![
        greeting,
        Message {
            role: Role::Caller,
            text: "Any cleaning on Wednesday? Or Thursday.".into(),
        },
        Message {
            role: Role::Agent,
            text: "Wednesday at nine".into(),
        },
    ];
    said(&brain, history, "Nine is fine.").await;
    let requests = rig.fake.requests();
    assert_eq!(tool_ids(&requests[4]), ["call_heard"]);
    assert_eq!(
        roles(&requests[4]),
        [
            "system",
            "assistant",
            "user",
            "assistant",
            "tool",
            "assistant",
            "user"
        ]
    );
}

/// A clinic file is written by its organisation's admin over the API, so it must not be a way
/// to the server's secrets: `api_key_env` only names `VOXANNE_LLM_KEY_*` variables, the
/// server's `VOXANNE_LLM_API_KEY` goes only to the server's own `VOXANNE_LLM_BASE_URL`, a
/// plaintext `llm.api_key` is refused over the API, and a stored key (applied by the operator)
/// is never shown by `GET /api/v1/clinic` or `clinic export`, nor lost by putting back what
/// they showed.
#[tokio::test]
async fn a_clinic_file_cannot_reach_the_servers_secrets_or_show_its_key() {
    use api::staff::auth::{self, Role};

    let (server_fake, server_url) = FakeLlm::start().await;
    let (tenant_fake, tenant_url) = FakeLlm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        dir.path(),
        None,
        &[
            ("VOXANNE_BRAIN", "llm"),
            ("VOXANNE_LLM_BASE_URL", &server_url),
            ("VOXANNE_LLM_MODEL", "test-model"),
            ("VOXANNE_LLM_API_KEY", "server-key"),
        ],
    );
    let server = common::start_with(config).await;
    let store = server.state.store().clone();
    let mut file = api::clinic::read_file(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/bright-smile.toml"),
    )
    .unwrap();
    file.knowledge.clear();
    let org = api::clinic::apply(&store, file.clone(), None)
        .await
        .unwrap()
        .org;
    let (_, admin) = auth::create_api_key(&store, org, "admin", Role::Admin)
        .await
        .unwrap();
    let (_, staff) = auth::create_api_key(&store, org, "desk", Role::Staff)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let base = common::base_url(&server);
    let put = |toml: String| {
        let http = http.clone();
        let url = format!("{base}/api/v1/clinic");
        let admin = admin.clone();
        async move {
            let r = http
                .put(url)
                .header("authorization", format!("Bearer {admin}"))
                .header("content-type", "application/toml")
                .body(toml)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let with_llm = |llm: receptionist::clinic::LlmSection| {
        let mut f = file.clone();
        f.llm = Some(llm);
        f.to_toml()
    };

    // A server variable by name: refused, with what to do instead.
    let (status, body) = put(with_llm(receptionist::clinic::LlmSection {
        base_url: Some(tenant_url.clone()),
        api_key_env: Some("VOXANNE_SECRET_KEY".into()),
        ..Default::default()
    }))
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("VOXANNE_LLM_KEY_"), "{body}");
    // A plaintext key over the API: refused, pointing at the sealed secret.
    let (status, body) = put(with_llm(receptionist::clinic::LlmSection {
        api_key: Some("sk-plain".into()),
        ..Default::default()
    }))
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("/api/v1/secrets/llm_api_key"), "{body}");

    // The tenant's own URL without a key: the server's key is not sent there.
    let (status, body) = put(with_llm(receptionist::clinic::LlmSection {
        base_url: Some(tenant_url.clone()),
        ..Default::default()
    }))
    .await;
    assert_eq!(status, 200, "{body}");
    let loaded = api::receptionist::load_clinic(&store, org, "x")
        .await
        .unwrap();
    let provider = server.state.llm_provider(&loaded).await.expect("the LLM");
    let clock = api::chat::clock_from(Some(now()), loaded.clinic.tz).unwrap();
    let mut chat = Chat::new(
        &store,
        &loaded,
        None,
        Some(CALLER.into()),
        Direction::Inbound,
        clock,
    )
    .with_llm(provider, None);
    let r = chat.say("Thanks, that's helpful.").await;
    assert_eq!(r.say, ["Okay."], "{r:?}");
    assert_eq!(tenant_fake.request_count(), 1);
    assert_eq!(server_fake.request_count(), 0);
    let seen = tenant_fake.authorizations();
    assert!(
        seen.iter()
            .all(|a| !a.as_deref().unwrap_or("").contains("server-key")),
        "{seen:?}"
    );

    // A key the operator applied from their own box is stored, but never shown...
    let mut keyed = file.clone();
    keyed.llm = Some(receptionist::clinic::LlmSection {
        base_url: Some(tenant_url.clone()),
        api_key: Some("sk-clinic-secret".into()),
        ..Default::default()
    });
    api::clinic::apply(&store, keyed, None).await.unwrap();
    let r = http
        .get(format!("{base}/api/v1/clinic"))
        .header("authorization", format!("Bearer {staff}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let shown: Value = r.json().await.unwrap();
    assert!(!shown.to_string().contains("sk-clinic-secret"), "{shown}");
    assert_eq!(shown["config"]["llm"]["api_key"], "***", "{shown}");
    let exported = api::clinic::export(&store, &file.clinic.id).await.unwrap();
    assert!(!exported.contains("sk-clinic-secret"), "{exported}");
    // ... and putting back what was shown keeps it.
    let (status, body) = put(shown["toml"].as_str().unwrap().to_string()).await;
    assert_eq!(status, 200, "{body}");
    let loaded = api::receptionist::load_clinic(&store, org, "x")
        .await
        .unwrap();
    let provider = server.state.llm_provider(&loaded).await.expect("the LLM");
    assert_eq!(
        provider.settings().api_key.as_deref(),
        Some("sk-clinic-secret")
    );
    server.shutdown(Duration::from_secs(5)).await;
}

/// A finish with nothing in it (a content filter, blank text) is dead air: the offline
/// receptionist answers, recorded as `empty`; it does not count against the provider.
#[tokio::test]
async fn an_empty_completion_is_answered_offline() {
    let rig = rig().await;
    let providers = Providers::with_breaker(1, Duration::from_secs(600));
    let mut chat = chat(&rig, &providers, &settings(&rig.base_url), None);
    rig.fake
        .push(Reply::Stream(nothing("content_filter", None)));
    let r = chat.say("How much is a check-up?").await;
    assert_eq!(fell_back(&r), "empty");
    assert!(r.say.join(" ").contains("fifty-five"), "{r:?}");
    rig.fake.push(Reply::Stream(nothing("stop", Some("  \n "))));
    let r = chat.say("Where are you?").await;
    assert_eq!(fell_back(&r), "empty");
    assert!(r.say.join(" ").contains("Mill Lane"), "{r:?}");
    // Not an outage: the one-failure breaker is still closed.
    let r = chat.say("Thanks, that's helpful.").await;
    assert_eq!(turn_record(&r)["brain"], "llm", "{r:?}");
    assert_eq!(r.say, ["Okay."]);
}

/// A connection reset after the finish (no usage, no `[DONE]`) leaves the reply as it was: the
/// offline receptionist does not answer a second time.
#[tokio::test]
async fn a_reset_after_the_finish_is_not_a_failure() {
    let rig = rig().await;
    let providers = Providers::with_breaker(1, Duration::from_secs(600));
    let mut chat = chat(&rig, &providers, &settings(&rig.base_url), None);
    // Paced, so the response's headers and first chunks are out before the reset (an abort
    // before any byte is a failed request, which is a provider error).
    rig.fake.push(Reply::Cut(
        text_to_finish("We open at half past eight.", 4)
            .paced(Duration::ZERO, Duration::from_millis(20)),
    ));
    let r = chat.say("When do you open on Friday?").await;
    assert!(notes(&r, "llm_fallback").is_empty(), "{r:?}");
    assert_eq!(turn_record(&r)["brain"], "llm", "{r:?}");
    assert_eq!(r.say, ["We open at half past eight."]);
    // Ended cleanly without `[DONE]` after the finish: the same.
    rig.fake
        .push(Reply::Ends(text_to_finish("It is on Mill Lane.", 4)));
    let r = chat.say("Where are you?").await;
    assert!(notes(&r, "llm_fallback").is_empty(), "{r:?}");
    assert_eq!(r.say, ["It is on Mill Lane."]);
}

/// The last round may not call tools (`tool_choice: none`), and an action a tool round decided
/// is still taken when the model then fails.
#[tokio::test]
async fn the_last_round_speaks_and_a_decided_hang_up_survives_a_fallback() {
    let rig = rig().await;
    let providers = Providers::with_breaker(100, Duration::from_secs(600));
    let mut s = settings(&rig.base_url);
    s.max_rounds = 2;
    let mut chat = chat(&rig, &providers, &s, None);
    rig.fake.push(Reply::Stream(tool_calls(
        Some("Thank you for calling, goodbye. "),
        &[Call("e1", "end_call", "{}".into())],
        4,
    )));
    rig.fake.push(Reply::Status(500));
    // A question the receptionist answers without hanging up: the hang-up is the tool's.
    let r = chat.say("How much is a check-up?").await;
    let requests = rig.fake.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[0].get("tool_choice").is_none());
    assert_eq!(
        requests[1]["tool_choice"], "none",
        "the last round must speak"
    );
    assert_eq!(fell_back(&r), "provider_error");
    assert!(r.say.join(" ").contains("fifty-five"), "{r:?}");
    assert_eq!(r.action, Some(Action::Hangup), "{r:?}");
}

/// A provider that sends nothing for the turn's event budget (below the call core's 6 s) is
/// given up on by the brain itself, so the offline receptionist answers and the failure is
/// recorded, rather than the core dropping the turn with a bare apology.
#[tokio::test]
async fn a_silent_provider_is_given_up_within_the_event_budget() {
    let rig = rig().await;
    let providers = Providers::with_breaker(100, Duration::from_secs(600));
    let mut s = settings(&rig.base_url);
    s.event_budget = Duration::from_secs(1);
    let mut chat = chat(&rig, &providers, &s, None);
    rig.fake.push(Reply::Stall);
    let r = chat.say("How much is a check-up?").await;
    assert_eq!(fell_back(&r), "silent");
    assert!(r.say.join(" ").contains("fifty-five"), "{r:?}");
}
