//! Held-out phrasings: written once, before looking at how the grammar handles them, and not
//! tuned against (a failure here is a finding, fixed in the grammar only if the rule was wrong).
//! Now is Tuesday 1 December 2026, 10:00.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use receptionist::when::{DaySpec, TimeSpec, parse_when};

fn now() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2026, 12, 1)
        .unwrap()
        .and_hms_opt(10, 0, 0)
        .unwrap()
}
fn d(m: u32, day: u32) -> Option<DaySpec> {
    Some(DaySpec::Date(
        NaiveDate::from_ymd_opt(if m < 12 { 2027 } else { 2026 }, m, day).unwrap(),
    ))
}
fn at(h: u32, m: u32) -> Option<TimeSpec> {
    Some(TimeSpec::At(NaiveTime::from_hms_opt(h, m, 0).unwrap()))
}
fn win(a: u32, b: u32) -> Option<TimeSpec> {
    Some(TimeSpec::Window {
        from: NaiveTime::from_hms_opt(a, 0, 0).unwrap(),
        to: NaiveTime::from_hms_opt(b / 100, b % 100, 0).unwrap(),
    })
}

#[test]
fn held_out_phrasings() {
    let cases: &[(&str, Option<DaySpec>, Option<TimeSpec>)] = &[
        (
            "Yeah so, um, would Thursday at, uh, ten thirty work?",
            d(12, 3),
            at(10, 30),
        ),
        (
            "have you got anything Friday afternoon at all",
            d(12, 4),
            win(12, 1700),
        ),
        (
            "I could do the 9th, maybe about two-ish?",
            d(12, 9),
            at(14, 0),
        ),
        (
            "Can I come in Wednesday, like, first thing?",
            d(12, 2),
            Some(TimeSpec::Earliest),
        ),
        (
            "Any chance of next Thursday after three?",
            d(12, 10),
            win(15, 2359),
        ),
        ("I'm only free after five o'clock", None, win(17, 2359)),
        ("Is quarter past nine tomorrow OK?", d(12, 2), at(9, 15)),
        (
            "Monday the seventh, in the morning please",
            d(12, 7),
            win(8, 1200),
        ),
        ("the sixteenth at four p.m.", d(12, 16), at(16, 0)),
        ("How about the 2nd of January?", d(1, 2), None),
        ("I can do Saturday the 5th at 11 a.m.", d(12, 5), at(11, 0)),
        // Held-out finding: first read as next calendar week; "the next week" is now the coming 7 days.
        (
            "Could I get in sometime in the next week or so",
            Some(DaySpec::Range {
                from: NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
                to: NaiveDate::from_ymd_opt(2026, 12, 8).unwrap(),
            }),
            None,
        ),
        (
            "Um I I was wondering if you had something at at half three",
            None,
            at(15, 30),
        ),
        ("Tomorrow is no good, could I do Thursday?", d(12, 2), None),
        ("four thirty on the eighteenth", d(12, 18), at(16, 30)),
        ("before ten on Monday if possible", d(12, 7), win(0, 1000)),
        (
            "Ideally around lunchtime on Friday",
            d(12, 4),
            win(12, 1400),
        ),
        ("Can we do it for 2 people at 3", None, at(15, 0)),
        ("I'd like to come in at twenty to eleven", None, at(10, 40)),
        ("Wednesday the 9th", d(12, 9), None),
        ("the 23rd of December at midday", d(12, 23), at(12, 0)),
        ("in three weeks", d(12, 22), None),
    ];
    let mut failures = Vec::new();
    for (said, day, time) in cases {
        let q = parse_when(said, now());
        if q.day != *day || q.time != *time {
            failures.push(format!(
                "{said:?}: got {q:?}, want day {day:?} time {time:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {}:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
