//! The development set of caller phrasings (`../shared/testdata/callers/utterances.tsv`), each
//! run through the receptionist in the situation it belongs to, and judged by what the
//! receptionist *did* (started a booking, escalated, answered with the right fact, took the
//! name…), not by an intent label. Skips when `../shared` is absent. Prints each miss and the
//! success rate; the bar is every line but a documented few.

use std::path::Path;

use chrono::{NaiveDate, NaiveDateTime, Timelike};

use agent::engine::Action;
use receptionist::dialogue::{Awaiting, CallContext, Dialogue, Form, State, Task};
use receptionist::nlu::{self, understand};
use receptionist::testing::{MemoryTools, example_clinic};
use receptionist::when::{DaySpec, TimeSpec};
use receptionist::{slots, text};

const CALLER: &str = "+447700900123";

fn now() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2026, 12, 1)
        .unwrap()
        .and_hms_opt(10, 0, 0)
        .unwrap()
}

fn load() -> Option<Vec<(String, String, String)>> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/callers/utterances.tsv");
    let text = std::fs::read_to_string(&path).ok()?;
    Some(
        text.lines()
            .skip(1)
            .filter_map(|l| {
                let mut f = l.split('\t');
                Some((
                    f.next()?.to_string(),
                    f.next()?.to_string(),
                    f.next().unwrap_or("").to_string(),
                ))
            })
            .collect(),
    )
}

/// Runs one utterance from `state` and returns the reply text, the reply and the new state.
async fn turn(
    tools: &MemoryTools,
    state: &mut State,
    said: &str,
) -> (String, receptionist::dialogue::Reply) {
    let clinic = example_clinic();
    let context = CallContext {
        call_id: "CAdev".into(),
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

fn tools_with_appointments() -> MemoryTools {
    let clinic = example_clinic();
    let tools = MemoryTools::new(&clinic);
    for (local, service) in [
        ("2026-12-03T10:00", "Check-up"),
        ("2026-12-07T09:00", "Cleaning"),
    ] {
        let t = NaiveDateTime::parse_from_str(local, "%Y-%m-%dT%H:%M").unwrap();
        let at = slots::Slot {
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

/// A booking in progress, read back and awaiting a yes.
fn at_read_back() -> State {
    let t = NaiveDateTime::parse_from_str("2026-12-03T15:00", "%Y-%m-%dT%H:%M").unwrap();
    let slot = slots::Slot {
        start: t,
        minutes: 30,
    };
    State {
        task: Task::Book,
        awaiting: Awaiting::Confirm,
        form: Form {
            service: Some(0),
            when: receptionist::when::WhenQuery {
                day: Some(DaySpec::Date(t.date())),
                time: Some(TimeSpec::At(t.time())),
            },
            offered: vec![slot],
            chosen: Some(slot),
            name: Some("Gareth Jones".into()),
            phone: Some(CALLER.into()),
            ..Form::default()
        },
        caller: Some(Default::default()),
        ..State::default()
    }
}

#[tokio::test]
async fn the_development_set_is_handled() {
    let Some(rows) = load() else {
        eprintln!("skipped: ../shared/testdata/callers/utterances.tsv is absent");
        return;
    };
    let clinic = example_clinic();
    let mut misses = Vec::new();
    for (label, said, expect) in &rows {
        let tools = tools_with_appointments();
        let mut state = State {
            caller: None,
            ..State::default()
        };
        let ok = match label.as_str() {
            "book" => {
                let (_, _) = turn(&tools, &mut state, said).await;
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
            "location" | "parking" => {
                let (s, _) = turn(&tools, &mut state, said).await;
                s.contains("Mill Lane") || s.contains("parking") || s.contains("station")
            }
            "price" => {
                let (s, _) = turn(&tools, &mut state, said).await;
                s.contains("pounds")
            }
            "services" | "knowledge" => {
                let (s, _) = turn(&tools, &mut state, said).await;

                clinic.file.knowledge.iter().any(|k| {
                    receptionist::clinic::sentences(k.text.as_deref().unwrap_or(""))
                        .iter()
                        .any(|sentence| s.contains(&receptionist::speak::prices(sentence)))
                }) || s.contains("we do")
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
            "yes" => {
                let mut state = at_read_back();
                turn(&tools, &mut state, said).await;
                tools.booked().len() == 3
            }
            "no" => {
                let u = understand(said, &clinic, now());
                u.no && !u.yes
            }
            "name" => {
                let want = expect
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim_start_matches("name=")
                    .trim();
                let got = nlu::said_name(said)
                    .or_else(|| nlu::bare_name(said))
                    .unwrap_or_default();
                got.to_lowercase() == want
            }
            "phone" => {
                let want = expect.trim_start_matches("phone=").trim();
                if want == "caller id" {
                    understand(said, &clinic, now()).yes
                } else {
                    text::digits_in(said).as_deref() == Some(want)
                }
            }
            "correction" => {
                let mut state = at_read_back();
                turn(&tools, &mut state, said).await;
                let f = &state.form;
                if expect.contains("day=tuesday") {
                    // Tuesday the 8th (today is Tuesday the 1st, and 10:00 + notice leaves today).
                    f.chosen
                        .map(|s| s.start.date().to_string())
                        .or_else(|| f.offered.first().map(|s| s.start.date().to_string()))
                        .is_some_and(|d| d == "2026-12-01" || d == "2026-12-08")
                } else if expect.contains("time=16:00") {
                    f.chosen
                        .or(f.offered.first().copied())
                        .is_some_and(|s| s.start.hour() == 16)
                } else if expect.contains("for=husband") {
                    f.for_whom.as_deref() == Some("husband")
                } else if expect.contains("name=siobhan") {
                    f.name.as_deref() == Some("Siobhan")
                } else {
                    false
                }
            }
            "mixed" => {
                let (s, _) = turn(&tools, &mut state, said).await;
                if said.contains("how much") {
                    s.contains("fifty-five pounds") && state.task == Task::Book
                } else if said.contains("cancel") {
                    state.task == Task::Reschedule
                } else {
                    s.contains("Saturday") && state.task == Task::Book
                }
            }
            _ => continue,
        };
        if !ok {
            misses.push(format!("{label}: {said}"));
        }
    }
    let total = rows.len();
    let rate = 1.0 - misses.len() as f64 / total as f64;
    eprintln!(
        "development set: {}/{} handled ({:.0}%)",
        total - misses.len(),
        total,
        rate * 100.0
    );
    for m in &misses {
        eprintln!("  miss: {m}");
    }
    assert!(
        misses.len() <= 3,
        "{} misses:\n{}",
        misses.len(),
        misses.join("\n")
    );
}
