//! The harness for the held-out sets of caller phrasings (`tests/data/heldout*.tsv`, each run by
//! its own test file): each set was written without reading the
//! understanding code and never tuned against. Each line is run through the receptionist from
//! the start of a call and judged the way `devset.rs` judges the development set — by what the
//! receptionist *did*. The success rate and every miss are printed, not asserted: this is a
//! measurement, and a miss is a finding to look at, not a test to make pass. Booking lines whose
//! `expect` names a service, a day or a time are also checked against the booking form, and that
//! agreement is reported separately.
//!
//! Now is Tuesday 1 December 2026, 10:00 clinic time.

use std::path::Path;

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, Weekday};

use agent::engine::Action;
use receptionist::dialogue::{CallContext, Dialogue, Reply, State, Task};
use receptionist::testing::{MemoryTools, example_clinic};
use receptionist::when::{DaySpec, TimeSpec};

const CALLER: &str = "+447700900123";

/// The labels the held-out file may use.
const LABELS: &[&str] = &[
    "book",
    "reschedule",
    "cancel",
    "hours",
    "location",
    "price",
    "services",
    "knowledge",
    "medical",
    "emergency",
    "person",
    "message",
    "goodbye",
    "unknown",
];

/// The fewest lines the file must hold for the measurement to mean anything.
const MIN_LINES: usize = 80;

fn now() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2026, 12, 1)
        .unwrap()
        .and_hms_opt(10, 0, 0)
        .unwrap()
}

struct Row {
    label: String,
    said: String,
    expect: String,
}

/// Parses the file, panicking on a malformed header, line or label.
fn load(file: &str) -> Vec<Row> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("label\tutterance\texpect"), "header");
    lines
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let f: Vec<&str> = l.split('\t').collect();
            assert!(
                (2..=3).contains(&f.len()),
                "line {}: want 2 or 3 tab-separated fields: {l:?}",
                i + 2
            );
            assert!(
                LABELS.contains(&f[0]),
                "line {}: unknown label {:?}",
                i + 2,
                f[0]
            );
            assert!(!f[1].trim().is_empty(), "line {}: empty utterance", i + 2);
            Row {
                label: f[0].to_string(),
                said: f[1].to_string(),
                expect: f.get(2).unwrap_or(&"").to_string(),
            }
        })
        .collect()
}

/// Runs one utterance from `state` and returns the reply text and the reply.
async fn turn(tools: &MemoryTools, state: &mut State, said: &str) -> (String, Reply) {
    let clinic = example_clinic();
    let context = CallContext {
        call_id: "CAheldout".into(),
        caller: Some(CALLER.into()),
        ..Default::default()
    };
    let d = Dialogue {
        clinic: &clinic,
        context: &context,
        tools,
        now: now(),
    };
    let r = d.respond(state, None, said).await;
    (r.say.join(" "), r)
}

/// The same two existing appointments as the development set (Thursday 3rd and Monday 7th).
fn tools_with_appointments() -> MemoryTools {
    let clinic = example_clinic();
    let tools = MemoryTools::new(&clinic);
    for (local, service) in [
        ("2026-12-03T10:00", "Check-up"),
        ("2026-12-07T09:00", "Cleaning"),
    ] {
        let t = NaiveDateTime::parse_from_str(local, "%Y-%m-%dT%H:%M").unwrap();
        let at = receptionist::slots::Slot {
            start: t,
            minutes: 30,
        }
        .utc(&clinic)
        .unwrap()
        .0;
        tools.seed(service, at, 30, "Gareth Jones", CALLER);
    }
    tools
}

/// The value of `key=` in an `expect` cell.
fn slot<'a>(expect: &'a str, key: &str) -> Option<&'a str> {
    expect
        .split(';')
        .map(str::trim)
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// A day word relative to the call (Tuesday 1 December 2026): `today`, `tomorrow`, a weekday
/// (the next one after today), or a day of the month (`10th`, `monday 7th`).
fn expected_day(word: &str) -> NaiveDate {
    let today = now().date();
    if word == "today" {
        return today;
    }
    if word == "tomorrow" {
        return today + Duration::days(1);
    }
    let digits: String = word.chars().filter(char::is_ascii_digit).collect();
    if let Ok(n) = digits.parse::<u32>() {
        return NaiveDate::from_ymd_opt(today.year(), today.month(), n).unwrap();
    }
    let wd: Weekday = word.parse().expect("weekday");
    (1..=7)
        .map(|i| today + Duration::days(i))
        .find(|d| d.weekday() == wd)
        .unwrap()
}

/// Whether the booking form holds the service, day and time the line names; `None` when it
/// names none of them.
fn form_agrees(clinic: &receptionist::clinic::Clinic, state: &State, expect: &str) -> Option<bool> {
    let mut checked = false;
    let mut ok = true;
    if let Some(want) = slot(expect, "service") {
        checked = true;
        let got = state
            .form
            .service
            .map(|i| clinic.services[i].name.to_lowercase());
        ok &= got.as_deref() == Some(want);
    }
    if let Some(want) = slot(expect, "day") {
        checked = true;
        let want = expected_day(want);
        ok &= matches!(state.form.when.day, Some(DaySpec::Date(d)) if d == want);
    }
    if let Some(want) = slot(expect, "time") {
        checked = true;
        let want = NaiveTime::parse_from_str(want, "%H:%M").expect("time");
        ok &= matches!(state.form.when.time, Some(TimeSpec::At(t)) if t == want);
    }
    checked.then_some(ok)
}

/// Runs every line of `tests/data/{file}`, prints the rate and the misses under `name`.
pub async fn measure(file: &str, name: &str) {
    let rows = load(file);
    let clinic = example_clinic();
    let mut misses = Vec::new();
    let mut slot_checked = 0;
    let mut slot_misses = Vec::new();
    for Row {
        label,
        said,
        expect,
    } in &rows
    {
        let tools = tools_with_appointments();
        let mut state = State {
            caller: None,
            ..State::default()
        };
        let ok = match label.as_str() {
            "book" => {
                let (s, _) = turn(&tools, &mut state, said).await;
                if let Some(agrees) = form_agrees(&clinic, &state, expect) {
                    slot_checked += 1;
                    if !agrees {
                        slot_misses.push(format!(
                            "{said}  [want {expect}; form service={:?} day={:?} time={:?}; said {s:?}]",
                            state.form.service.map(|i| clinic.services[i].name.as_str()),
                            state.form.when.day,
                            state.form.when.time
                        ));
                    }
                }
                state.task == Task::Book
            }
            "reschedule" => {
                turn(&tools, &mut state, said).await;
                state.task == Task::Reschedule
            }
            "cancel" => {
                turn(&tools, &mut state, said).await;
                state.task == Task::Cancel
            }
            "emergency" => {
                let (s, r) = turn(&tools, &mut state, said).await;
                s.contains("9 9 9")
                    && r.notes
                        .iter()
                        .any(|(k, d)| *k == "escalation" && d["kind"] == "emergency")
            }
            "medical" => {
                let (s, r) = turn(&tools, &mut state, said).await;
                s.contains("can't give medical advice")
                    && matches!(r.action, Some(Action::Transfer { .. }))
            }
            "person" => {
                let (_, r) = turn(&tools, &mut state, said).await;
                r.action
                    == Some(Action::Transfer {
                        to: "+442071234500".into(),
                    })
            }
            "message" => {
                turn(&tools, &mut state, said).await;
                matches!(state.task, Task::Message { .. })
            }
            "hours" => {
                let (s, _) = turn(&tools, &mut state, said).await;
                s.contains("open") || s.contains("closed")
            }
            "location" => {
                let (s, _) = turn(&tools, &mut state, said).await;
                s.contains("Mill Lane") || s.contains("parking") || s.contains("station")
            }
            "price" => {
                let (s, _) = turn(&tools, &mut state, said).await;
                s.contains("pounds")
            }
            "services" | "knowledge" => {
                let (s, _) = turn(&tools, &mut state, said).await;
                let grounded = clinic.file.knowledge.iter().any(|k| {
                    receptionist::clinic::sentences(k.text.as_deref().unwrap_or(""))
                        .iter()
                        .any(|sentence| s.contains(&receptionist::speak::prices(sentence)))
                });
                if label == "services" && expect == "unknown service" {
                    // Not offered: grounded in the knowledge (braces), or an honest "no" /
                    // "don't know" — never a "we do".
                    grounded || (!s.contains("we do") && (s.contains("don't") || s.contains("not")))
                } else {
                    grounded || s.contains("we do")
                }
            }
            "goodbye" => {
                state.last_reply = "Is there anything else I can help with?".into();
                let (_, r) = turn(&tools, &mut state, said).await;
                r.action == Some(Action::Hangup)
            }
            "unknown" => {
                let (s, r) = turn(&tools, &mut state, said).await;
                state.task == Task::None
                    && (s.contains("don't have that information")
                        || s.contains("not sure")
                        || s.contains("catch")
                        || s.contains("hear you")
                        || r.action == Some(Action::Hangup))
            }
            other => unreachable!("label {other} passed load()"),
        };
        if !ok {
            misses.push(format!("{label}: {said}"));
        }
    }
    let total = rows.len();
    let rate = 1.0 - misses.len() as f64 / total as f64;
    eprintln!(
        "{name}: {}/{} handled ({:.0}%)",
        total - misses.len(),
        total,
        rate * 100.0
    );
    for m in &misses {
        eprintln!("  miss: {m}");
    }
    eprintln!(
        "{name} booking slots: {}/{} lines with a service/day/time agree with the form",
        slot_checked - slot_misses.len(),
        slot_checked
    );
    for m in &slot_misses {
        eprintln!("  slot miss: {m}");
    }
    assert!(
        total >= MIN_LINES,
        "only {total} held-out lines, want at least {MIN_LINES}"
    );
}
