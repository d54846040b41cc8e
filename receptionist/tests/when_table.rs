//! A table of date and time expressions, each resolved against a fixed clinic-local "now", and
//! the caller development set (`../shared/testdata/callers/utterances.tsv`) checked against its
//! `day=` / `time=` / `window=` / `shift=` / `phone=` / `name=` expectations.

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, Weekday};
use receptionist::text::{digits_in, normalize, spelled_name};
use receptionist::when::{DaySpec, TimeSpec, WhenQuery, parse_shift, parse_when};

/// Tuesday 1 December 2026, 10:00 (checked in `default_now_is_a_tuesday`).
const NOW: &str = "2026-12-01T10:00";

fn dt(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M").unwrap()
}
fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}
fn time(s: &str) -> NaiveTime {
    NaiveTime::parse_from_str(s, "%H:%M").unwrap()
}

/// "" = none, "any", "2026-12-02", "2026-12-07..2026-12-13".
fn day(s: &str) -> Option<DaySpec> {
    match s {
        "" => None,
        "any" => Some(DaySpec::AnyDay),
        _ => Some(match s.split_once("..") {
            Some((a, b)) => DaySpec::Range {
                from: date(a),
                to: date(b),
            },
            None => DaySpec::Date(date(s)),
        }),
    }
}

/// "" = none, "earliest", "14:00", "08:00-12:00".
fn tod(s: &str) -> Option<TimeSpec> {
    match s {
        "" => None,
        "earliest" => Some(TimeSpec::Earliest),
        _ => Some(match s.split_once('-') {
            Some((a, b)) => TimeSpec::Window {
                from: time(a),
                to: time(b),
            },
            None => TimeSpec::At(time(s)),
        }),
    }
}

/// (now, what the caller said, expected day, expected time)
const TABLE: &[(&str, &str, &str, &str)] = &[
    // Relative days
    (NOW, "today", "2026-12-01", ""),
    (
        NOW,
        "Is there any chance of a slot today?",
        "2026-12-01",
        "",
    ),
    (NOW, "tomorrow", "2026-12-02", ""),
    (NOW, "the day after tomorrow", "2026-12-03", ""),
    (NOW, "day after tomorrow at 3", "2026-12-03", "15:00"),
    (NOW, "in two weeks", "2026-12-15", ""),
    (NOW, "in a week", "2026-12-08", ""),
    (NOW, "in 3 days", "2026-12-04", ""),
    (NOW, "in a fortnight", "2026-12-15", ""),
    (NOW, "in a couple of weeks", "2026-12-15", ""),
    (NOW, "in two weeks' time", "2026-12-15", ""),
    (NOW, "two weeks from today", "2026-12-15", ""),
    (NOW, "a week today", "2026-12-08", ""),
    (NOW, "a week tomorrow", "2026-12-09", ""),
    (NOW, "in a month", "2027-01-01", ""),
    // Weekdays (now is a Tuesday)
    (NOW, "friday", "2026-12-04", ""),
    (NOW, "on Friday", "2026-12-04", ""),
    (NOW, "this friday", "2026-12-04", ""),
    (NOW, "next friday", "2026-12-11", ""),
    (NOW, "tuesday", "2026-12-01", ""),
    (NOW, "next tuesday", "2026-12-08", ""),
    (NOW, "monday", "2026-12-07", ""),
    (NOW, "next monday", "2026-12-07", ""),
    (NOW, "sunday", "2026-12-06", ""),
    (NOW, "next sunday", "2026-12-13", ""),
    (NOW, "wednesday", "2026-12-02", ""),
    (NOW, "on a thursday", "2026-12-03", ""),
    (NOW, "Are you open on Saturdays?", "2026-12-05", ""),
    (NOW, "a week on friday", "2026-12-11", ""),
    (NOW, "friday week", "2026-12-11", ""),
    (NOW, "this coming monday", "2026-12-07", ""),
    (NOW, "tuesday next week", "2026-12-08", ""),
    (NOW, "friday next week", "2026-12-11", ""),
    (NOW, "I came in last friday", "", ""),
    ("2026-12-04T09:00", "friday", "2026-12-04", ""),
    ("2026-12-04T09:00", "next friday", "2026-12-11", ""),
    ("2026-12-05T09:00", "next friday", "2026-12-11", ""),
    ("2026-12-06T09:00", "monday", "2026-12-07", ""),
    // Days of month
    (NOW, "the 14th", "2026-12-14", ""),
    (NOW, "on the fourteenth", "2026-12-14", ""),
    (NOW, "on the 1st", "2026-12-01", ""),
    (NOW, "the 3rd", "2026-12-03", ""),
    (NOW, "on the third", "2026-12-03", ""),
    (NOW, "on the thirtieth", "2026-12-30", ""),
    (NOW, "the 31st", "2026-12-31", ""),
    (NOW, "monday the 14th", "2026-12-14", ""),
    (NOW, "monday the 3rd", "2026-12-03", ""),
    (NOW, "sunday the 3rd", "2027-01-03", ""),
    (NOW, "the 14th next month", "2027-01-14", ""),
    ("2026-12-20T10:00", "the 3rd", "2027-01-03", ""),
    ("2026-11-15T10:00", "the 31st", "2026-12-31", ""),
    ("2027-02-10T10:00", "the 30th", "2027-03-30", ""),
    // Month and day
    (NOW, "march 3rd", "2027-03-03", ""),
    (NOW, "3rd of march", "2027-03-03", ""),
    (NOW, "3 march", "2027-03-03", ""),
    (NOW, "march the third", "2027-03-03", ""),
    (NOW, "the twenty fifth of december", "2026-12-25", ""),
    (NOW, "december 25th", "2026-12-25", ""),
    (NOW, "1st december", "2026-12-01", ""),
    (NOW, "november 30th", "2027-11-30", ""),
    (NOW, "january second", "2027-01-02", ""),
    (NOW, "february 29th", "2028-02-29", ""),
    (NOW, "14/12", "2026-12-14", ""),
    (NOW, "3/1", "2027-01-03", ""),
    (NOW, "14/12/2026", "2026-12-14", ""),
    // Ranges
    (NOW, "this week", "2026-12-01..2026-12-06", ""),
    (NOW, "sometime next week", "2026-12-07..2026-12-13", ""),
    (NOW, "the week after next", "2026-12-14..2026-12-20", ""),
    (NOW, "later this week", "2026-12-02..2026-12-06", ""),
    (NOW, "next month", "2027-01-01..2027-01-31", ""),
    (NOW, "this month", "2026-12-01..2026-12-31", ""),
    (NOW, "the weekend", "2026-12-05..2026-12-06", ""),
    (NOW, "this weekend", "2026-12-05..2026-12-06", ""),
    (NOW, "next weekend", "2026-12-12..2026-12-13", ""),
    (NOW, "saturday or sunday", "2026-12-05..2026-12-06", ""),
    (NOW, "in january", "2027-01-01..2027-01-31", ""),
    (NOW, "in the next few days", "2026-12-01..2026-12-04", ""),
    (NOW, "any day", "any", ""),
    (NOW, "any day next week", "2026-12-07..2026-12-13", ""),
    (NOW, "whenever suits", "any", ""),
    (
        "2026-12-06T10:00",
        "next week",
        "2026-12-07..2026-12-13",
        "",
    ),
    (
        "2026-12-06T10:00",
        "this week",
        "2026-12-06..2026-12-06",
        "",
    ),
    ("2026-12-05T10:00", "weekend", "2026-12-05..2026-12-06", ""),
    (
        "2026-01-31T10:00",
        "next month",
        "2026-02-01..2026-02-28",
        "",
    ),
    // Year rollover
    ("2026-12-31T10:00", "tomorrow", "2027-01-01", ""),
    ("2026-12-25T10:00", "in two weeks", "2027-01-08", ""),
    (
        "2026-12-28T10:00",
        "next week",
        "2027-01-04..2027-01-10",
        "",
    ),
    // Exact times
    (NOW, "at 3", "", "15:00"),
    (NOW, "at 2", "", "14:00"),
    (NOW, "at 10", "", "10:00"),
    (NOW, "at 12", "", "12:00"),
    (NOW, "at 7", "", "07:00"),
    (NOW, "at 1", "", "13:00"),
    (NOW, "at one", "", "13:00"),
    (NOW, "3pm", "", "15:00"),
    (NOW, "3 p.m.", "", "15:00"),
    (NOW, "10am", "", "10:00"),
    (NOW, "10 a.m.", "", "10:00"),
    (NOW, "12pm", "", "12:00"),
    (NOW, "15:00", "", "15:00"),
    (NOW, "3:30", "", "15:30"),
    (NOW, "3.30", "", "15:30"),
    (NOW, "08:30", "", "08:30"),
    (NOW, "9:15 am", "", "09:15"),
    (NOW, "three thirty", "", "15:30"),
    (NOW, "ten fifteen", "", "10:15"),
    (NOW, "half past two", "", "14:30"),
    (NOW, "half past ten", "", "10:30"),
    (NOW, "half ten", "", "10:30"),
    (NOW, "half two", "", "14:30"),
    (NOW, "quarter past ten", "", "10:15"),
    (NOW, "quarter to four", "", "15:45"),
    (NOW, "a quarter to nine", "", "08:45"),
    (NOW, "quarter to one", "", "12:45"),
    (NOW, "quarter to twelve", "", "11:45"),
    (NOW, "ten to five", "", "16:50"),
    (NOW, "twenty past three", "", "15:20"),
    (NOW, "twenty five past eleven", "", "11:25"),
    (NOW, "at 5 past 4", "", "16:05"),
    (NOW, "noon", "", "12:00"),
    (NOW, "midday", "", "12:00"),
    (NOW, "12 noon", "", "12:00"),
    (NOW, "4 o'clock", "", "16:00"),
    (NOW, "eleven o'clock", "", "11:00"),
    (NOW, "at 1530", "", "15:30"),
    (NOW, "at 330", "", "15:30"),
    (NOW, "around 11", "", "11:00"),
    (NOW, "11ish", "", "11:00"),
    (NOW, "about 3", "", "15:00"),
    (NOW, "at about half past 2", "", "14:30"),
    (NOW, "at 8 in the evening", "", "20:00"),
    // Windows
    (NOW, "after 4", "", "16:00-23:59"),
    (NOW, "any time after 4", "", "16:00-23:59"),
    (NOW, "after 4 o'clock", "", "16:00-23:59"),
    (NOW, "before 11", "", "00:00-11:00"),
    (NOW, "by 3", "", "00:00-15:00"),
    (NOW, "until 2", "", "00:00-14:00"),
    (NOW, "from 2", "", "14:00-23:59"),
    (NOW, "between 2 and 4", "", "14:00-16:00"),
    (NOW, "from 11 to 1", "", "11:00-13:00"),
    (NOW, "before lunch", "", "00:00-12:00"),
    (NOW, "after lunch", "", "14:00-23:59"),
    (NOW, "after work", "", "17:00-23:59"),
    (NOW, "in the morning", "", "08:00-12:00"),
    (NOW, "afternoon", "", "12:00-17:00"),
    (NOW, "in the evening", "", "17:00-21:00"),
    (NOW, "lunchtime", "", "12:00-14:00"),
    (NOW, "late afternoon", "", "15:00-17:00"),
    (NOW, "early morning", "", "08:00-10:00"),
    (NOW, "not before 10", "", ""),
    // Earliest
    (NOW, "first thing", "", "earliest"),
    (NOW, "the earliest you have", "", "earliest"),
    (NOW, "asap", "", "earliest"),
    (NOW, "as soon as possible", "", "earliest"),
    (NOW, "first thing in the morning", "", "earliest"),
    // Days with times
    (NOW, "first thing monday", "2026-12-07", "earliest"),
    (
        NOW,
        "the earliest appointment on friday",
        "2026-12-04",
        "earliest",
    ),
    (NOW, "tonight", "2026-12-01", "17:00-21:00"),
    (NOW, "this afternoon", "2026-12-01", "12:00-17:00"),
    (NOW, "tomorrow morning", "2026-12-02", "08:00-12:00"),
    (NOW, "friday morning at 10", "2026-12-04", "10:00"),
    (NOW, "thursday after 4", "2026-12-03", "16:00-23:59"),
    (NOW, "monday morning, after 10", "2026-12-07", "10:00-12:00"),
    (
        NOW,
        "Can I book a filling for tomorrow at 2?",
        "2026-12-02",
        "14:00",
    ),
    (
        NOW,
        "can I come in on the 14th, like, around 11?",
        "2026-12-14",
        "11:00",
    ),
    (
        NOW,
        "um, the, the 3rd at, uh, half past 3",
        "2026-12-03",
        "15:30",
    ),
    (NOW, "nine thirty tomorrow", "2026-12-02", "09:30"),
    (NOW, "can we say wednesday at half 9", "2026-12-02", "09:30"),
    (
        NOW,
        "I'm free after 3 on wednesdays",
        "2026-12-02",
        "15:00-23:59",
    ),
    (
        NOW,
        "something in the morning, any day",
        "any",
        "08:00-12:00",
    ),
    // Negation
    (NOW, "not thursday", "", ""),
    (NOW, "no, not tuesday, wednesday", "2026-12-02", ""),
    (NOW, "I can't do friday, how about monday", "2026-12-07", ""),
    (NOW, "can we make that 4 instead of 3", "", "16:00"),
    // Numbers that are not times or dates
    (NOW, "I want to come in", "", ""),
    (NOW, "can I book for 4 people", "", ""),
    (NOW, "I need 2 fillings", "", ""),
    (NOW, "my son is 8", "", ""),
    (NOW, "the first one please", "", ""),
    (NOW, "I'll take the second", "", ""),
    (NOW, "it's my 2nd appointment", "", ""),
    (NOW, "is it £45.50", "", ""),
    (NOW, "0 7 9 1 1 1 2 3 4 5 6", "", ""),
    (NOW, "07700 900 123", "", ""),
];

#[test]
fn default_now_is_a_tuesday() {
    assert_eq!(dt(NOW).weekday(), Weekday::Tue);
}

#[test]
fn table() {
    assert!(TABLE.len() >= 120, "{} rows", TABLE.len());
    let mut failures = Vec::new();
    for &(now, said, d, t) in TABLE {
        let got = parse_when(said, dt(now));
        let want = WhenQuery {
            day: day(d),
            time: tod(t),
        };
        if got != want {
            failures.push(format!(
                "{said:?} at {now}: got {got:?}, want {want:?} (norm {:?})",
                normalize(said)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}",
        failures.len(),
        TABLE.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The caller development set.

const UTTERANCES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/testdata/callers/utterances.tsv"
);

fn utterances() -> Option<Vec<(String, String, String)>> {
    let Ok(text) = std::fs::read_to_string(UTTERANCES) else {
        eprintln!("skipping: {UTTERANCES} is absent");
        return None;
    };
    Some(
        text.lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let mut cols = l.split('\t');
                let mut next = || cols.next().unwrap_or("").trim().to_string();
                (next(), next(), next())
            })
            .collect(),
    )
}

/// `expect` as (key, value) pairs: "service=filling; day=tomorrow; time=14:00".
fn expectations(expect: &str) -> Vec<(&str, &str)> {
    expect
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect()
}

/// The date a `day=` value names, derived independently of the parser: the first date from
/// today on that fits every word of it ("tomorrow", a weekday, "14th", "monday 3rd").
fn expected_date(value: &str, today: NaiveDate) -> NaiveDate {
    match value {
        "today" => return today,
        "tomorrow" => return today + Duration::days(1),
        _ => {}
    }
    let weekdays = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    let mut wd = None;
    let mut dom = None;
    for w in value.split_whitespace() {
        if let Some(i) = weekdays.iter().position(|x| *x == w) {
            wd = Some(i);
        } else {
            dom = Some(
                w.trim_end_matches(|c: char| c.is_alphabetic())
                    .parse::<u32>()
                    .unwrap(),
            );
        }
    }
    today
        .iter_days()
        .take(400)
        .find(|d| {
            wd.is_none_or(|i| d.weekday().num_days_from_monday() as usize == i)
                && dom.is_none_or(|n| d.day() == n)
        })
        .unwrap()
}

fn expected_range(value: &str, today: NaiveDate) -> Option<DaySpec> {
    let monday = today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
    let (from, to) = match value {
        "this week" => (today, monday + Duration::days(6)),
        "next week" => (monday + Duration::days(7), monday + Duration::days(13)),
        "next month" => {
            let first = NaiveDate::from_ymd_opt(today.year(), today.month(), 1).unwrap();
            let from = first.checked_add_months(chrono::Months::new(1)).unwrap();
            (
                from,
                from.checked_add_months(chrono::Months::new(1)).unwrap() - Duration::days(1),
            )
        }
        _ => return None,
    };
    Some(DaySpec::Range { from, to })
}

fn expected_window(value: &str) -> Option<TimeSpec> {
    let w = |a: &str, b: &str| {
        Some(TimeSpec::Window {
            from: time(a),
            to: time(b),
        })
    };
    match value {
        "morning" => w("08:00", "12:00"),
        "afternoon" => w("12:00", "17:00"),
        "evening" => w("17:00", "21:00"),
        "earliest" => Some(TimeSpec::Earliest),
        v => v.strip_prefix("after ").and_then(|t| w(t, "23:59")),
    }
}

/// Every utterance with `day=`, `time=` or `window=`, said on each day of one week (so every
/// weekday is "today" once; the week holds a Monday the 3rd).
#[test]
fn caller_utterances_agree_with_their_expectations() {
    let Some(rows) = utterances() else { return };
    let mut checked = 0;
    let mut failures = Vec::new();
    for day_of_week in 0..7 {
        let now = dt("2026-07-27T10:00") + Duration::days(day_of_week);
        let today = now.date();
        for (_, said, expect) in &rows {
            let exp = expectations(expect);
            let got = parse_when(said, now);
            // `from=` names the booking being changed: a second moment in the same turn.
            let two_moments = exp.iter().any(|(k, _)| *k == "from");
            for (key, value) in &exp {
                let want_day = match *key {
                    "day" if !two_moments => Some(Some(DaySpec::Date(expected_date(value, today)))),
                    "window" if !two_moments => expected_range(value, today).map(Some),
                    _ => None,
                };
                let want_time = match *key {
                    "time" => Some(Some(TimeSpec::At(time(value)))),
                    "window" => expected_window(value).map(Some),
                    _ => None,
                };
                if let Some(want) = want_day {
                    checked += 1;
                    if got.day != want {
                        failures.push(format!(
                            "{said:?} on {today}: day {:?}, want {want:?}",
                            got.day
                        ));
                    }
                }
                if let Some(want) = want_time {
                    checked += 1;
                    if got.time != want {
                        failures.push(format!(
                            "{said:?} on {today}: time {:?}, want {want:?}",
                            got.time
                        ));
                    }
                }
            }
        }
    }
    assert!(checked > 0);
    assert!(
        failures.is_empty(),
        "{} of {checked} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Lines whose `expect` names no moment must not grow one. The exception is listed with why.
#[test]
fn caller_utterances_without_moments_parse_to_nothing() {
    let Some(rows) = utterances() else { return };
    // The expect column leaves this one blank, but "at lunchtime" is a time window.
    let names_a_moment = ["Is the surgery open at lunchtime?"];
    let keys = ["day", "time", "window", "from", "shift", "dates"];
    let now = dt(NOW);
    let mut failures = Vec::new();
    for (_, said, expect) in &rows {
        if expectations(expect).iter().any(|(k, _)| keys.contains(k))
            || names_a_moment.contains(&said.as_str())
        {
            continue;
        }
        let got = parse_when(said, now);
        if got != WhenQuery::default() {
            failures.push(format!("{said:?}: {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn caller_utterances_shifts_phones_and_names() {
    let Some(rows) = utterances() else { return };
    let mut checked = 0;
    for (_, said, expect) in &rows {
        for (key, value) in expectations(expect) {
            match key {
                "shift" => {
                    let (n, unit) = value.trim_start_matches('+').split_once(' ').unwrap();
                    let n: i64 = n.parse().unwrap();
                    let want = match unit.trim_end_matches('s') {
                        "week" => Duration::weeks(n),
                        "day" => Duration::days(n),
                        "hour" => Duration::hours(n),
                        other => panic!("unknown shift unit {other}"),
                    };
                    assert_eq!(parse_shift(said), Some(want), "{said}");
                    checked += 1;
                }
                "phone" if value.chars().all(|c| c.is_ascii_digit() || c == '+') => {
                    assert_eq!(digits_in(said).as_deref(), Some(value), "{said}");
                    checked += 1;
                }
                "name" if said.contains('-') => {
                    assert_eq!(
                        spelled_name(said).map(|n| n.to_lowercase()).as_deref(),
                        Some(value),
                        "{said}"
                    );
                    checked += 1;
                }
                _ => {}
            }
        }
    }
    assert!(checked > 0);
}

#[test]
fn normalize_is_idempotent_on_the_caller_set() {
    let Some(rows) = utterances() else { return };
    for (_, said, _) in &rows {
        let once = normalize(said);
        assert_eq!(normalize(&once), once, "{said}");
        assert_eq!(
            parse_when(&once, dt(NOW)),
            parse_when(said, dt(NOW)),
            "{said}"
        );
    }
}
