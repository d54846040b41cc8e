//! The offline receptionist end to end through audio: the example clinic
//! (`examples/bright-smile.toml`) is applied to a real-engine server's store (with the MiniLM
//! embeddings), a caller speaks with Piper over the real Media Streams protocol to the clinic's
//! number, the server hears it with Whisper, the per-call receptionist answers with Festival, and
//! the test checks what landed in the database and, transcribed back with Whisper, what the
//! caller heard.
//!
//! The server's receptionist reads the real wall clock, so every line is relative to today
//! ("next Monday") and every expectation is computed from today's London date and the clinic's
//! hours, never written as a date. Escalations depend on whether the clinic is open right now.
//!
//! The caller speaks with Piper (joe) and the agent with Festival (CMU SLT), so two different
//! synthesisers and voices meet, as in `offline.rs`.
//!
//! These tests need the fetched models (`VOXANNE_MODELS_DIR`, as scripts/test.sh sets); a
//! missing model is a failure that names the command that fetches it.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{
    Datelike, Duration as Days, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday,
};

use api::caller::{CallReport, Line, LineStart, place_call};
use common::{AUTH_TOKEN, Backend, base_url, caller, config, database_url, drain_writes};
use engines::piper::PiperTts;
use engines::whisper::{WhisperOptions, WhisperStt};
use media::PHONE_RATE;
use media::resample::resample;
use receptionist::clinic::Clinic;
use receptionist::speak;
use storage::{CallSid, EventRecord, NewBooking, OrgId, Store, TurnRecord};

/// The example clinic's Twilio number: calls to it reach the clinic.
const CLINIC_NUMBER: &str = "+442071234567";
/// The example clinic's `transfer_number`: the only number a caller may be put through to.
const TRANSFER_NUMBER: &str = "+442071234500";

fn models_dir() -> PathBuf {
    std::env::var_os("VOXANNE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/voxanne/models")
        })
}

fn fetch_hint() -> String {
    format!(
        "run `cargo run -p api -- models fetch` with VOXANNE_MODELS_DIR={} (scripts/test.sh does)",
        models_dir().display()
    )
}

/// The test's own Whisper, to transcribe what the caller heard.
fn listener() -> &'static WhisperStt {
    static STT: OnceLock<WhisperStt> = OnceLock::new();
    STT.get_or_init(|| {
        let path = models_dir().join("whisper/ggml-base.bin");
        WhisperStt::load(&path, WhisperOptions::default())
            .unwrap_or_else(|e| panic!("{e}: {}", fetch_hint()))
    })
}

/// The caller's voice (Piper's joe), loaded once for all tests.
fn caller_voice() -> &'static PiperTts {
    static VOICE: OnceLock<PiperTts> = OnceLock::new();
    VOICE.get_or_init(|| {
        let models = models_dir();
        PiperTts::load(
            &engines::models::ModelId::PiperJoe.path(&models),
            &models,
            1,
        )
        .unwrap_or_else(|e| panic!("{e}: {}", fetch_hint()))
    })
}

/// Transcribes 8 kHz audio with the test's Whisper.
fn transcribe_8k(audio: &[i16]) -> String {
    let wide = resample(audio, PHONE_RATE, 16_000).unwrap();
    listener().transcribe_blocking(&wide).unwrap().text
}

/// Slack around an agent turn's recorded media times when cutting what the caller heard (as in
/// `offline.rs`): the simulated phone plays a frame up to a frame or two after the media time
/// the server gave it; 100 ms is several frames and far less than the caller's pause.
const TURN_SLACK_MS: i64 = 100;

/// What the caller heard of one agent turn: `heard` between the turn's recorded start and end
/// (the server's media times), with leading and trailing silence cut (as in `offline.rs`).
fn heard_during<'a>(heard: &'a [i16], turn: &TurnRecord) -> &'a [i16] {
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

/// What the caller heard of `turn`, transcribed back and WER-normalised (lowercase words,
/// numbers spelled out), joined by spaces.
async fn heard_back(report: &CallReport, turn: &TurnRecord) -> String {
    let audio = heard_during(&report.heard, turn).to_vec();
    let text = tokio::task::spawn_blocking(move || transcribe_8k(&audio))
        .await
        .unwrap();
    engines::wer::normalize(&text).join(" ")
}

/// A real-engine server (Whisper, Festival, earshot VAD, SQLite) with the example clinic applied.
struct Rig {
    server: api::Server,
    store: Store,
    org: OrgId,
    clinic: Arc<Clinic>,
    _dir: tempfile::TempDir,
}

async fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let models = models_dir().display().to_string();
    let vars = [
        ("VOXANNE_ENGINES", "embedded"),
        ("VOXANNE_MODELS_DIR", models.as_str()),
        // The agent speaks with Festival, the caller with Piper, as in `offline.rs`: two voices
        // (one Piper voice is fetched). Festival also synthesises a sentence whole, so a busy
        // machine (two real-engine calls at once on two cores) delays a sentence rather than
        // leaving a gap inside a word, which Piper's clause-by-clause stream did once under
        // this load ("fifty-five" heard back as "a stiff to five").
        ("VOXANNE_TTS", "festival"),
    ];
    let config = config(dir.path(), database_url(Backend::Sqlite).await, &vars);
    let engines = tokio::task::spawn_blocking({
        let config = config.clone();
        move || api::engines::build(&config)
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{e}: {}", fetch_hint()));
    let server = api::start(config, engines).await.expect("server starts");
    let store = server.state.store().clone();
    let embedder = tokio::task::spawn_blocking(|| {
        engines::minilm::MiniLm::load_default(&models_dir(), 1)
            .unwrap_or_else(|e| panic!("{e}: {}", fetch_hint()))
    })
    .await
    .unwrap();
    let file = api::clinic::read_file(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/bright-smile.toml"),
    )
    .expect("the example clinic reads");
    let summary = api::clinic::apply(&store, file, Some(&embedder))
        .await
        .expect("the example clinic applies");
    let loaded = api::receptionist::load_clinic(&store, summary.org, "x")
        .await
        .unwrap();
    Rig {
        server,
        store,
        org: summary.org,
        clinic: loaded.clinic,
        _dir: dir,
    }
}

/// A polite caller: speaks once the agent has answered and been quiet this long (as in
/// `offline.rs`).
fn after_agent() -> LineStart {
    LineStart::AfterAgent {
        pause: Duration::from_millis(700),
    }
}

/// Renditions of a line the caller's voice tries before settling for the best. Piper samples
/// noise in its model, so one rendition in five or six of "My name is Sam Taylor." is heard by
/// Whisper as "Santailer" or "sent ailer" (measured: 5 of 6 right); a real caller who is
/// misheard says it again. Five tries make a line no clean rendition of vanishingly rare.
const MAX_RENDITIONS: usize = 5;

/// The words of `text` as the caller's renditions are checked: WER-normalised, articles and
/// spaces dropped ("a check-up" and "the checkup" are the same request; Whisper hears Piper's
/// "a" as "the" in most renditions of "How much is a check-up?"), every other word kept.
fn squashed(text: &str) -> String {
    engines::wer::normalize(text)
        .into_iter()
        .filter(|w| !matches!(w.as_str(), "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .concat()
}

/// The rendition as the server might cut it: a few milliseconds later (another resampling
/// phase and mel-frame alignment) and quieter. A rendition heard right only as it is was on
/// the edge: the server's Whisper, given the endpointed turn through its streaming resampler,
/// heard one such "My name is Sam Taylor." as "San Taylor".
fn perturbed(phone: &[i16]) -> impl Iterator<Item = Vec<i16>> + '_ {
    let later: Vec<i16> = std::iter::repeat_n(0, 52)
        .chain(phone.iter().copied())
        .chain(std::iter::repeat_n(0, 1_600))
        .collect();
    let quieter: Vec<i16> = phone.iter().map(|&s| (f32::from(s) * 0.6) as i16).collect();
    [later, quieter].into_iter()
}

/// `text` spoken by the caller's voice, 8 kHz: a rendition that the test's Whisper hears as
/// written over the phone's μ-law, so that what the server's Whisper makes of it is the
/// pipeline's doing, not the synthesiser's luck (or the closest of [`MAX_RENDITIONS`]).
fn clear_rendition(text: &str) -> Vec<i16> {
    let mut best: Option<(f64, Vec<i16>)> = None;
    for _ in 0..MAX_RENDITIONS {
        let audio = api::simulate::speak_8k(caller_voice(), text).unwrap();
        let phone: Vec<i16> = audio
            .iter()
            .map(|&s| media::mulaw::decode(media::mulaw::encode(s)))
            .collect();
        let heard = transcribe_8k(&phone);
        let clear = squashed(&heard) == squashed(text)
            && perturbed(&phone).all(|p| squashed(&transcribe_8k(&p)) == squashed(text));
        if clear {
            return audio;
        }
        let w = engines::wer::wer(text, &heard);
        eprintln!(
            "caller's rendition of {text:?} not heard as written every way (as is: {heard:?}); trying again"
        );
        if best.as_ref().is_none_or(|(b, _)| w < *b) {
            best = Some((w, audio));
        }
    }
    best.expect("at least one rendition").1
}

/// The caller's lines spoken by Piper, 8 kHz.
async fn script(lines: &[(&str, LineStart)]) -> Vec<Line> {
    let lines: Vec<(String, LineStart)> = lines.iter().map(|(t, s)| (t.to_string(), *s)).collect();
    tokio::task::spawn_blocking(move || {
        lines
            .into_iter()
            .map(|(text, start)| Line::Speak {
                audio: clear_rendition(&text),
                start,
            })
            .collect()
    })
    .await
    .unwrap()
}

/// One finished call, as the caller saw it and as the server stored it.
struct Call {
    report: CallReport,
    sid: CallSid,
    turns: Vec<TurnRecord>,
    events: Vec<EventRecord>,
}

impl Call {
    fn agent_turns(&self) -> impl Iterator<Item = &TurnRecord> {
        self.turns.iter().filter(|t| t.role == "agent")
    }

    /// The agent turn right after the caller's `n`th turn (from 0).
    fn reply_to(&self, n: usize) -> &TurnRecord {
        let i = self
            .turns
            .iter()
            .enumerate()
            .filter(|(_, t)| t.role == "caller")
            .nth(n)
            .map(|(i, _)| i)
            .unwrap_or_else(|| panic!("no caller turn {n}: {:#?}", self.turns));
        self.turns[i + 1..]
            .iter()
            .find(|t| t.role == "agent")
            .unwrap_or_else(|| panic!("no reply to caller turn {n}: {:#?}", self.turns))
    }

    fn transcript(&self) -> String {
        self.turns
            .iter()
            .map(|t| {
                format!(
                    "{:>6}: {}{}",
                    t.role,
                    t.text,
                    if t.interrupted {
                        format!("  [interrupted; heard {:?}]", t.heard_text)
                    } else {
                        String::new()
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The escalation events' kinds (`medical`, `person`, `emergency`).
    fn escalations(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e.kind == "escalation")
            .filter_map(|e| {
                let detail: serde_json::Value =
                    serde_json::from_str(e.detail["detail"].as_str()?).ok()?;
                Some(detail["kind"].as_str()?.to_string())
            })
            .collect()
    }
}

/// Calls the clinic's number from `from` and speaks `lines`.
async fn call(rig: &Rig, from: &str, lines: &[(&str, LineStart)]) -> Call {
    let script = script(lines).await;
    let mut c = caller(&rig.server);
    c.from = from.into();
    c.to = CLINIC_NUMBER.into();
    // Every line is answered; waiting longer than the server's own STT budget (20 s) keeps the
    // call's course the same however slow the engines are on a loaded machine (see
    // `offline.rs`); an answer that never comes still fails the test's assertions.
    c.no_answer = Duration::from_secs(30);
    c.max_duration = Duration::from_secs(300);
    let report = place_call(&c, &script).await.expect("call");
    assert_eq!(report.protocol_errors, 0);
    assert_eq!(
        report.org.as_deref(),
        Some(rig.org.to_string().as_str()),
        "the clinic's number reaches the clinic"
    );
    drain_writes(&rig.server).await;
    let sid = CallSid(report.call_sid.clone());
    let turns = rig.store.list_turns(rig.org, &sid).await.unwrap();
    let events = rig.store.list_events(rig.org, &sid).await.unwrap();
    let call = Call {
        report,
        sid,
        turns,
        events,
    };
    eprintln!("call from {from}:\n{}", call.transcript());
    call
}

/// What Twilio's `<Connect action>` request gets once the stream has ended (as `call.rs` asks).
async fn connect_action(rig: &Rig, call_sid: &str) -> String {
    let url = format!("{}/twilio/connect-action", base_url(&rig.server));
    let pairs: Vec<(String, String)> = [("CallSid", call_sid), ("CallStatus", "in-progress")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter())
        .finish();
    let sig = telephony::signature::compute(AUTH_TOKEN, &url, &pairs);
    reqwest::Client::new()
        .post(&url)
        .header("X-Twilio-Signature", sig)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Clinic-local now, from the wall clock (what the server's receptionist reads).
fn local_now(clinic: &Clinic) -> NaiveDateTime {
    Utc::now().with_timezone(&clinic.tz).naive_local()
}

/// Whether the clinic is open at clinic-local `now`, from its hours and closed dates.
fn open_at(clinic: &Clinic, now: NaiveDateTime) -> bool {
    clinic
        .hours_on(now.date())
        .is_some_and(|h| now.time() >= h.open && now.time() < h.close)
}

/// The `weekday` of next (Monday-based) week: "next Monday" as the receptionist reads it.
fn in_next_week(today: NaiveDate, weekday: Weekday) -> NaiveDate {
    let monday = today - Days::days(i64::from(today.weekday().num_days_from_monday()));
    monday + Days::days(7 + i64::from(weekday.num_days_from_monday()))
}

/// The soonest `weekday`, today included: a bare "Friday" as the receptionist reads it.
fn soonest(today: NaiveDate, weekday: Weekday) -> NaiveDate {
    let ahead = (7 + weekday.num_days_from_monday() - today.weekday().num_days_from_monday()) % 7;
    today + Days::days(i64::from(ahead))
}

fn utc_of(clinic: &Clinic, local: NaiveDateTime) -> chrono::DateTime<Utc> {
    clinic
        .tz
        .from_local_datetime(&local)
        .earliest()
        .unwrap()
        .with_timezone(&Utc)
}

/// The org's booked (not cancelled) appointments, a year either side of now.
async fn booked(rig: &Rig) -> Vec<storage::Appointment> {
    rig.store
        .list_appointments(
            rig.org,
            Utc::now() - Days::days(366),
            Utc::now() + Days::days(366),
        )
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.status == "booked")
        .collect()
}

/// Words said aloud for clinic-local `start`, as the receptionist offers them: ("Monday the 7th
/// of December", "half past eight"); the read-back says "on" before the same words.
fn said_as(start: NaiveDateTime, today: NaiveDate) -> (String, String) {
    (
        speak::day(start.date(), today),
        speak::time(start.time(), false),
    )
}

/// The name the caller gives in every script.
const CALLER_NAME: &str = "Sam Taylor";

/// Asserts that `stored` (a booking's or message's name) is the name the server heard the
/// caller give, and that what it heard is the caller's name or one word off it. Whisper, fed
/// the server's endpointed turn, sometimes hears a rendition that the test's own check heard
/// right as "San Taylor" (CI, 2026-12-02): that is a misheard word, which the caller would
/// correct at the read-back, not a lost booking. The receptionist's name handling over text
/// is covered exactly by the dialogue and held-out tests; here the point is that what was
/// heard is what was stored. A name heard as something else entirely ("Santailer") fails.
fn assert_name_as_heard(call: &Call, stored: &str) {
    let t = call.transcript();
    let name = engines::wer::normalize(stored);
    assert!(!name.is_empty(), "no name stored\n{t}");
    assert!(
        call.turns
            .iter()
            .filter(|turn| turn.role == "caller")
            .any(|turn| engines::wer::normalize(&turn.text).ends_with(&name)),
        "stored {stored:?}, which no caller turn ends with\n{t}"
    );
    let off = engines::wer::wer(CALLER_NAME, stored);
    assert!(
        off <= 0.5,
        "stored {stored:?} is more than one word off {CALLER_NAME:?}\n{t}"
    );
}

/// Asserts that the caller's booking landed once, for `service` on `day` within `[from, to)`
/// clinic-local, for the name the caller was heard giving, at the caller's number; that it is the first slot the agent
/// offered (the caller said "the first one") and the one read back. Returns the agent turn
/// that confirmed it.
async fn assert_booked<'a>(
    rig: &Rig,
    call: &'a Call,
    from: &str,
    service: &str,
    day: NaiveDate,
    window: (NaiveTime, NaiveTime),
) -> &'a TurnRecord {
    let t = call.transcript();
    let mine: Vec<storage::Appointment> = booked(rig)
        .await
        .into_iter()
        .filter(|a| a.phone.as_deref() == Some(from))
        .collect();
    assert_eq!(mine.len(), 1, "one booking for the caller: {mine:#?}\n{t}");
    let a = &mine[0];
    assert_eq!(a.service, service, "{t}");
    assert_name_as_heard(call, &a.patient_name);
    assert_eq!(a.call.as_ref(), Some(&call.sid), "booked on this call");
    let start = a.starts_at.with_timezone(&rig.clinic.tz).naive_local();
    assert_eq!(start.date(), day, "{t}");
    assert!(
        start.time() >= window.0 && start.time() < window.1,
        "{start} is outside {window:?}\n{t}"
    );
    let hours = rig.clinic.hours_on(day).expect("an open day");
    assert!(
        start.time() >= hours.open && a.ends_at.with_timezone(&rig.clinic.tz).time() <= hours.close
    );
    // The slot the agent offered first (the caller took "the first one") and read back. The
    // day is said relative to the day of the call: the test's today (a call across midnight
    // would fail here, not silently pass).
    let today = local_now(&rig.clinic).date();
    let (date_words, time_words) = said_as(start, today);
    let offer = &call.reply_to(0).text;
    let first_offered = offer
        .split_once(&format!("{date_words} at "))
        .map(|(_, rest)| rest);
    assert!(
        first_offered.is_some_and(|rest| rest.starts_with(&time_words)),
        "the first slot offered is not {date_words} at {time_words}: {offer:?}\n{t}"
    );
    let read_back = call
        .agent_turns()
        .find(|turn| turn.text.contains("Shall I book that?"))
        .unwrap_or_else(|| panic!("no read-back\n{t}"));
    assert!(
        read_back
            .text
            .contains(&format!("{date_words} at {time_words}")),
        "{:?}\n{t}",
        read_back.text
    );
    call.agent_turns()
        .find(|turn| turn.text.contains("You're booked in"))
        .unwrap_or_else(|| panic!("no confirmation\n{t}"))
}

/// 1. A booking lands: slots offered, the first taken, name, read-back, yes, goodbye.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_through_audio_lands_in_the_database() {
    let rig = rig().await;
    let from = "+447700900101";
    let monday = in_next_week(local_now(&rig.clinic).date(), Weekday::Mon);
    assert!(
        rig.clinic.hours_on(monday).is_some(),
        "next Monday ({monday}) is a closed date; the script assumes an open day"
    );
    let call = call(
        &rig,
        from,
        &[
            (
                "Hi, I'd like to book a check-up next Monday morning, please.",
                after_agent(),
            ),
            ("The first one, please.", after_agent()),
            ("My name is Sam Taylor.", after_agent()),
            ("Yes, please.", after_agent()),
            ("No, that's all, thanks. Bye.", after_agent()),
        ],
    )
    .await;
    let t = call.transcript();
    assert!(
        call.report.ended_by_server,
        "the agent said goodbye and hung up\n{t}"
    );
    let noon = NaiveTime::from_hms_opt(12, 0, 0).unwrap();
    let confirmed = assert_booked(
        &rig,
        &call,
        from,
        "Check-up",
        monday,
        (NaiveTime::MIN, noon),
    )
    .await;
    let heard = heard_back(&call.report, confirmed).await;
    assert!(
        heard.contains("booked"),
        "agent said {:?}, caller heard {heard:?}\n{t}",
        confirmed.text
    );
    rig.server.shutdown(Duration::from_secs(5)).await;
}

/// 2. A price and an opening-hours question are answered with the clinic's facts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn price_and_opening_hours_are_answered_with_the_right_facts() {
    let rig = rig().await;
    let call = call(
        &rig,
        "+447700900102",
        &[
            ("How much is a check-up?", after_agent()),
            ("What time do you open on Saturday?", after_agent()),
            ("No, that's all, thanks. Bye.", after_agent()),
        ],
    )
    .await;
    let t = call.transcript();
    assert!(
        call.report.ended_by_server,
        "the agent said goodbye and hung up\n{t}"
    );
    let price = call.reply_to(0);
    assert!(price.text.contains("fifty-five pounds"), "{t}");
    let heard = heard_back(&call.report, price).await;
    assert!(
        heard.contains("fifty five"),
        "agent said {:?}, caller heard {heard:?}\n{t}",
        price.text
    );
    // "Saturday" is the coming Saturday; on a closed date (Boxing Day 2026 is one) the right
    // fact is that the clinic is closed that day.
    let saturday = soonest(local_now(&rig.clinic).date(), Weekday::Sat);
    let hours = call.reply_to(1);
    if rig.clinic.hours_on(saturday).is_some() {
        assert!(hours.text.contains("open from nine"), "{t}");
        let heard = heard_back(&call.report, hours).await;
        assert!(
            heard.contains("nine"),
            "agent said {:?}, caller heard {heard:?}\n{t}",
            hours.text
        );
    } else {
        assert!(hours.text.contains("closed"), "{t}");
    }
    rig.server.shutdown(Duration::from_secs(5)).await;
}

/// The caller's lines after an escalation while the clinic is closed: the message offer's
/// questions answered, then goodbye.
fn message_lines(reason: Option<&'static str>) -> Vec<(&'static str, LineStart)> {
    let mut lines = Vec::new();
    if let Some(reason) = reason {
        lines.push((reason, after_agent()));
    }
    lines.extend([
        ("My name is Sam Taylor.", after_agent()),
        ("Yes, it is.", after_agent()),
        ("No, that's all, thanks. Bye.", after_agent()),
    ]);
    lines
}

/// Asserts how an escalation ended, which depends on the wall clock: while the clinic is open
/// the receptionist puts the caller through (the stream ends with a transfer and Twilio's
/// `<Connect action>` gets `<Dial>` to the clinic's transfer number, never any other); while it
/// is closed there is no one to put through, so it takes a message instead (stored, for the
/// team's callback list) and Twilio is told to hang up.
async fn assert_escalation_outcome(rig: &Rig, call: &Call, open: bool, from: &str, urgent: bool) {
    let t = call.transcript();
    assert!(call.report.ended_by_server, "the agent ended the call\n{t}");
    let action = connect_action(rig, &call.report.call_sid).await;
    let record = rig
        .store
        .get_call(rig.org, &call.sid)
        .await
        .unwrap()
        .unwrap();
    let messages: Vec<storage::CallbackRequest> = rig
        .store
        .list_callbacks(rig.org, false)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.call.as_ref() == Some(&call.sid))
        .collect();
    if open {
        assert!(
            action.contains(&format!("<Dial>{TRANSFER_NUMBER}</Dial>")),
            "{action}\n{t}"
        );
        assert_eq!(record.end_reason.as_deref(), Some("transfer"), "{t}");
        assert!(
            call.agent_turns()
                .any(|turn| turn.text.contains("put you through")),
            "{t}"
        );
        assert!(messages.is_empty(), "{messages:#?}");
    } else {
        assert!(!action.contains("<Dial>"), "{action}\n{t}");
        assert!(action.contains("<Hangup/>"), "{action}\n{t}");
        assert!(
            call.reply_to(0).text.contains("take a message"),
            "offered a message\n{t}"
        );
        assert_eq!(messages.len(), 1, "{messages:#?}\n{t}");
        let m = &messages[0];
        assert_name_as_heard(call, &m.name);
        assert_eq!(m.phone, from);
        assert_eq!(m.urgent, urgent, "{m:#?}");
    }
}

/// 3. A medical question gets no advice: it is escalated (a person while open, an urgent message
/// while closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_medical_question_is_escalated_without_advice() {
    let rig = rig().await;
    let from = "+447700900103";
    // The server's receptionist decides from the wall clock, so the expected outcome (and the
    // rest of the caller's script) is computed from it too. A call that straddles opening or
    // closing time could see the other branch; the script is a minute long.
    let open = open_at(&rig.clinic, local_now(&rig.clinic));
    let mut lines = vec![(
        "My tooth really hurts, what painkillers should I take?",
        after_agent(),
    )];
    if !open {
        // The reason is already known (an urgent medical question): name, number, goodbye.
        lines.extend(message_lines(None));
    }
    let call = call(&rig, from, &lines).await;
    let t = call.transcript();
    assert_eq!(call.escalations(), ["medical"], "{:#?}\n{t}", call.events);
    assert!(
        call.reply_to(0).text.contains("can't give medical advice"),
        "{t}"
    );
    for turn in call.agent_turns() {
        let said = turn.text.to_lowercase();
        for drug in ["ibuprofen", "paracetamol", "aspirin", "codeine"] {
            assert!(!said.contains(drug), "advice given: {:?}\n{t}", turn.text);
        }
    }
    assert_escalation_outcome(&rig, &call, open, from, true).await;
    rig.server.shutdown(Duration::from_secs(5)).await;
}

/// 4. "Can I speak to someone": put through while open, a message while closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_for_a_person_is_put_through_or_offered_a_message() {
    let rig = rig().await;
    let from = "+447700900104";
    // As in the medical test: the wall clock decides, so the expectation follows it.
    let open = open_at(&rig.clinic, local_now(&rig.clinic));
    let mut lines = vec![("Can I speak to someone, please?", after_agent())];
    if !open {
        lines.extend(message_lines(Some(
            "Please ask them to call me back about my bill.",
        )));
    }
    let call = call(&rig, from, &lines).await;
    let t = call.transcript();
    assert_eq!(call.escalations(), ["person"], "{:#?}\n{t}", call.events);
    assert_escalation_outcome(&rig, &call, open, from, false).await;
    rig.server.shutdown(Duration::from_secs(5)).await;
}

/// How the rescheduling caller names the days, and the dates the receptionist reads them as:
/// bare weekdays ("my Thursday appointment to Friday") are the soonest ones, today included,
/// which on a Thursday or Friday (or when that Friday is a closed date) are not the days a
/// caller with an appointment next week means; then they say "next Thursday", "next Friday".
fn reschedule_days(clinic: &Clinic, now: NaiveDateTime) -> (String, NaiveDate, NaiveDate) {
    let today = now.date();
    let ten = NaiveTime::from_hms_opt(10, 0, 0).unwrap();
    let notice = Days::minutes(i64::from(clinic.file.clinic.min_notice_minutes) + 30);
    let bare = (soonest(today, Weekday::Thu), soonest(today, Weekday::Fri));
    let fits = |(thu, fri): (NaiveDate, NaiveDate)| {
        thu.and_time(ten) > now + notice
            && fri.and_time(ten) > now + notice
            && clinic.hours_on(thu).is_some()
            && clinic.hours_on(fri).is_some()
    };
    if fits(bare) {
        let line = "I need to move my Thursday appointment to Friday at ten.".to_string();
        return (line, bare.0, bare.1);
    }
    let next = (
        in_next_week(today, Weekday::Thu),
        in_next_week(today, Weekday::Fri),
    );
    assert!(fits(next), "no open Thursday and Friday to move between");
    let line = "I need to move my appointment next Thursday to next Friday at ten.".to_string();
    (line, next.0, next.1)
}

/// 5. A returning caller moves their appointment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_caller_reschedules() {
    let rig = rig().await;
    let from = "+447700900105";
    let (line, thursday, friday) = reschedule_days(&rig.clinic, local_now(&rig.clinic));
    let ten = NaiveTime::from_hms_opt(10, 0, 0).unwrap();
    let starts = utc_of(&rig.clinic, thursday.and_time(ten));
    rig.store
        .book_appointment(&NewBooking {
            org: rig.org,
            idempotency_key: "seed-thursday".into(),
            call_sid: None,
            phone: from.into(),
            name: "Sam Taylor".into(),
            service: "Check-up".into(),
            starts_at: starts,
            ends_at: starts + Days::minutes(30),
        })
        .await
        .unwrap()
        .appointment()
        .expect("the seed books");
    let call = call(
        &rig,
        from,
        &[
            (line.as_str(), after_agent()),
            ("Yes, please.", after_agent()),
            ("No, that's all, thanks. Bye.", after_agent()),
        ],
    )
    .await;
    let t = call.transcript();
    assert!(
        call.report.ended_by_server,
        "the agent said goodbye and hung up\n{t}"
    );
    let upcoming = rig
        .store
        .upcoming_appointments(rig.org, from, Utc::now())
        .await
        .unwrap();
    assert_eq!(upcoming.len(), 1, "{upcoming:#?}\n{t}");
    let moved = upcoming[0]
        .starts_at
        .with_timezone(&rig.clinic.tz)
        .naive_local();
    assert_eq!(moved, friday.and_time(ten), "{t}");
    assert_eq!(upcoming[0].service, "Check-up");
    let on_thursday: Vec<_> = booked(&rig)
        .await
        .into_iter()
        .filter(|a| a.starts_at.with_timezone(&rig.clinic.tz).date_naive() == thursday)
        .collect();
    assert!(on_thursday.is_empty(), "{on_thursday:#?}\n{t}");
    assert!(
        call.agent_turns().any(|turn| turn.text.contains("Done.")),
        "{t}"
    );
    rig.server.shutdown(Duration::from_secs(5)).await;
}

/// 6. The caller says yes over the read-back: the agent stops (a `clear`), the turn is
/// recorded as interrupted with what was heard, and the booking lands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yes_over_the_read_back_barges_in_and_books_once() {
    let rig = rig().await;
    let from = "+447700900106";
    let tuesday = in_next_week(local_now(&rig.clinic).date(), Weekday::Tue);
    assert!(
        rig.clinic.hours_on(tuesday).is_some(),
        "next Tuesday ({tuesday}) is a closed date; the script assumes an open day"
    );
    let call = call(
        &rig,
        from,
        &[
            (
                "Hi, I'd like to book a cleaning next Tuesday afternoon, please.",
                after_agent(),
            ),
            ("The first one, please.", after_agent()),
            ("My name is Sam Taylor.", after_agent()),
            // Over the read-back ("So that's a cleaning on …, for Sam Taylor, and we'll use the
            // number you're calling from. Shall I book that?"), which takes several seconds.
            (
                "Yes, please.",
                LineStart::Interrupt {
                    after: Duration::from_millis(1500),
                },
            ),
            ("No, that's all, thanks. Bye.", after_agent()),
        ],
    )
    .await;
    let t = call.transcript();
    assert!(
        call.report.ended_by_server,
        "the agent said goodbye and hung up\n{t}"
    );
    assert!(!call.report.clears.is_empty(), "no clear was sent\n{t}");
    let read_back = call
        .agent_turns()
        .find(|turn| turn.text.contains("Shall I book that?"))
        .unwrap_or_else(|| panic!("no read-back\n{t}"));
    assert!(read_back.interrupted, "{read_back:#?}");
    let heard = read_back.heard_text.as_deref().unwrap_or("");
    assert!(
        heard.len() < read_back.text.len(),
        "heard {heard:?} of {:?}",
        read_back.text
    );
    let noon = NaiveTime::from_hms_opt(12, 0, 0).unwrap();
    let close = rig.clinic.hours_on(tuesday).unwrap().close;
    assert_booked(&rig, &call, from, "Cleaning", tuesday, (noon, close)).await;
    rig.server.shutdown(Duration::from_secs(5)).await;
}
