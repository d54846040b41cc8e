//! Dates and times in natural language, resolved against the clinic-local "now".
//!
//! A small grammar over [`crate::text::normalize`]d words; nothing here reads a clock. What the
//! caller said becomes a [`WhenQuery`]: a day ([`DaySpec`]) and a time ([`TimeSpec`]), each
//! optional. The rules for the ambiguous cases, chosen for a UK clinic:
//!
//! - **Weekday alone** ("friday", "this friday", "on a friday"): the soonest such day *counting
//!   today*, so "friday" said on a Friday is today (callers who mean next week say "next").
//! - **"next friday"**: the Friday of next week (Monday-based), the common UK reading; said on
//!   a Tuesday it is 10 days away, said on a Saturday 6. "a week on friday" / "friday week" is
//!   the bare Friday plus 7 days.
//! - **Day of month** ("the 14th"): the next date with that day, today included, rolling into
//!   the next month (and year); months without that day are skipped. "monday the 3rd" takes
//!   the first of the next two 3rds that is a Monday, else trusts the number (the next 3rd),
//!   since a caller is more often wrong about the weekday than the date.
//! - **Month and day** ("march 3rd", "3rd of march", "3 march", "14/12" UK day/month): this
//!   year, or next year if already past.
//! - **Hour without am/pm** ("at 3"): clinic hours decide: 1–6 are afternoon (13:00–18:00),
//!   7–11 morning, 12 is noon. A day part said in the same turn wins ("at 8 in the evening" is
//!   20:00). "quarter to seven" applies the rule to the spoken hour (seven → 06:45).
//! - **A number is a time only with a cue**: a preceding at / around / about / by / after /
//!   before / from / until / between / "make it", or a following am / pm / oclock / ish, or the
//!   shape itself (3:30, 3.30, "3 30", half / quarter / "ten to five", noon). "book for 4" and
//!   "2 fillings" are not times; "to" and "for" are never numbers.
//! - **Several mentions**: the first day and the first exact time win; windows are intersected
//!   ("morning, after 10" is 10:00–12:00); a weekday or day of month inside a range mentioned
//!   with it is looked for in that range ("tuesday next week"). Mentions right after a negation
//!   ("not thursday", "instead of 3", "can't do friday") are set aside in
//!   [`WhenReading::rejected`].

use chrono::{Datelike, Duration, Months, NaiveDate, NaiveDateTime, NaiveTime, Weekday};

use crate::text::{self, MONTHS};

/// What the caller asked for: a day and a time, each optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WhenQuery {
    pub day: Option<DaySpec>,
    pub time: Option<TimeSpec>,
}

/// Which day(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaySpec {
    Date(NaiveDate),
    /// Inclusive: "this week" (today to Sunday), "next week" (Monday to Sunday), "next month",
    /// "weekend", "in march".
    Range {
        from: NaiveDate,
        to: NaiveDate,
    },
    /// "any day", "whenever": the caller is flexible.
    AnyDay,
}

/// Which time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSpec {
    /// An exact time: "at 3", "half past two", "3:30", "noon", "quarter to four", and also
    /// "around 11" (see [`WhenReading::approx`]).
    At(NaiveTime),
    /// From `from` (inclusive) to `to` (exclusive): "morning", "after 4", "before 11".
    Window { from: NaiveTime, to: NaiveTime },
    /// "first thing", "earliest", "asap", "as soon as possible".
    Earliest,
}

/// A [`WhenQuery`] with what else the grammar noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WhenReading {
    pub query: WhenQuery,
    /// The exact time was hedged ("around 11", "11ish", "about 3").
    pub approx: bool,
    /// What the caller ruled out ("not thursday", "instead of 3", "can't do friday").
    pub rejected: WhenQuery,
}

/// Minutes since midnight.
type Minute = u32;

const fn hm(h: u32, m: u32) -> Minute {
    h * 60 + m
}

/// Earliest a clinic morning starts in practice; "morning" runs from here to noon.
const MORNING: (Minute, Minute) = (hm(8, 0), hm(12, 0));
/// Noon to the usual 17:00 end of the working day.
const AFTERNOON: (Minute, Minute) = (hm(12, 0), hm(17, 0));
/// After work until late-opening clinics close (21:00 is the latest we have seen).
const EVENING: (Minute, Minute) = (hm(17, 0), hm(21, 0));
/// The UK lunch hour with slack either side: people say "lunchtime" for 12–2.
const LUNCHTIME: (Minute, Minute) = (hm(12, 0), hm(14, 0));
/// The first two hours of the morning window.
const EARLY_MORNING: (Minute, Minute) = (hm(8, 0), hm(10, 0));
/// The last two hours of the morning window.
const LATE_MORNING: (Minute, Minute) = (hm(10, 0), hm(12, 0));
/// The first three hours of the afternoon window.
const EARLY_AFTERNOON: (Minute, Minute) = (hm(12, 0), hm(15, 0));
/// The last two hours of the afternoon window.
const LATE_AFTERNOON: (Minute, Minute) = (hm(15, 0), hm(17, 0));
/// The first two hours of the evening window.
const EARLY_EVENING: (Minute, Minute) = (hm(17, 0), hm(19, 0));
/// "after work": the end of a usual working day.
const AFTER_WORK: Minute = hm(17, 0);
/// Open ends of "before X" / "after X": the whole day; the clinic's opening hours are applied by
/// the availability look-up, not here.
const DAY_START: Minute = 0;
const DAY_END: Minute = hm(23, 59);
/// Hours said without am/pm that mean the afternoon: a clinic is not open at 1–6 am, so "at 3"
/// is 15:00; 7–11 mean the morning.
const PM_IF_AMBIGUOUS: std::ops::RangeInclusive<u32> = 1..=6;
/// How far ahead to look for a day of month ("the 31st" skips short months).
const MONTHS_AHEAD: u32 = 24;

fn time_of(m: Minute) -> NaiveTime {
    let m = m.min(DAY_END);
    NaiveTime::from_hms_opt(m / 60, m % 60, 0).unwrap_or(NaiveTime::MIN)
}

/// The caller's day and time, resolved against the clinic-local `now`. Accepts raw or
/// normalised text.
pub fn parse_when(normalized_or_raw: &str, now: NaiveDateTime) -> WhenQuery {
    read_when(normalized_or_raw, now).query
}

/// [`parse_when`] with the hedging and the rejected mentions.
pub fn read_when(normalized_or_raw: &str, now: NaiveDateTime) -> WhenReading {
    let norm = text::normalize(normalized_or_raw);
    let toks: Vec<&str> = text::tokens(&norm);
    let found = scan(&toks, now.date());
    let keep: Vec<&Found> = found.iter().filter(|f| !f.negated).collect();
    let gone: Vec<&Found> = found.iter().filter(|f| f.negated).collect();
    let (time, approx) = resolve_time(&keep);
    let (rejected_time, _) = resolve_time(&gone);
    WhenReading {
        query: WhenQuery {
            day: resolve_day(&keep, now.date()),
            time,
        },
        approx,
        rejected: WhenQuery {
            day: resolve_day(&gone, now.date()),
            time: rejected_time,
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WeekdayMode {
    /// "friday", "this friday": today or the soonest after.
    Bare,
    /// "next friday": in next (Monday-based) week.
    NextWeek,
    /// "a week on friday", "friday week": the bare one plus 7 days.
    WeekOn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DayItem {
    Offset(i64),
    OffsetMonths(u32),
    Weekday(Weekday, WeekdayMode),
    DayOfMonth {
        dom: u32,
        month: Option<u32>,
        year: Option<i32>,
        weekday: Option<Weekday>,
    },
    Range(NaiveDate, NaiveDate),
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeItem {
    /// `alt` is the other half-day reading of an hour said without am/pm.
    At {
        at: Minute,
        alt: Option<Minute>,
        approx: bool,
    },
    Window(Minute, Minute),
    Earliest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    Day(DayItem),
    Time(TimeItem),
}

#[derive(Debug, Clone, Copy)]
struct Found {
    item: Item,
    negated: bool,
}

/// Phrases that rule out the mention right after them.
const NEGATORS: &[&[&str]] = &[
    &["not"],
    &["instead", "of"],
    &["rather", "than"],
    &["except"],
    &["apart", "from"],
    &["can't", "do"],
    &["cant", "do"],
    &["cannot", "do"],
    &["can't", "make"],
    &["cant", "make"],
    &["cannot", "make"],
    &["can't", "manage"],
];
/// Words allowed between a negator and what it negates ("not on thursday", "can't make it on
/// friday").
const NEGATION_GAP: &[&str] = &["on", "the", "in", "for", "it", "that", "at", "a", "any"];
const MAX_NEGATION_GAP: usize = 2;

fn starts_with(toks: &[&str], i: usize, phrase: &[&str]) -> bool {
    toks.len() >= i + phrase.len() && toks[i..i + phrase.len()] == *phrase
}

fn scan(toks: &[&str], today: NaiveDate) -> Vec<Found> {
    let mut found = Vec::new();
    let mut negated = false;
    let mut gap = 0;
    let mut i = 0;
    while i < toks.len() {
        if let Some(p) = NEGATORS.iter().find(|p| starts_with(toks, i, p)) {
            negated = true;
            gap = 0;
            i += p.len();
            continue;
        }
        if let Some((items, len)) = day_at(toks, i, today).or_else(|| time_at(toks, i)) {
            found.extend(items.into_iter().map(|item| Found { item, negated }));
            negated = false;
            i += len.max(1);
            continue;
        }
        if negated {
            if NEGATION_GAP.contains(&toks[i]) && gap < MAX_NEGATION_GAP {
                gap += 1;
            } else {
                negated = false;
            }
        }
        i += 1;
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Days

fn weekday_of(word: &str) -> Option<Weekday> {
    let w = word.strip_suffix("'s").unwrap_or(word);
    let w = w
        .strip_suffix('s')
        .filter(|s| s.ends_with("day"))
        .unwrap_or(w);
    Some(match w {
        "monday" => Weekday::Mon,
        "tuesday" | "tues" => Weekday::Tue,
        "wednesday" | "weds" => Weekday::Wed,
        "thursday" | "thurs" => Weekday::Thu,
        "friday" => Weekday::Fri,
        "saturday" => Weekday::Sat,
        "sunday" => Weekday::Sun,
        _ => return None,
    })
}

fn month_of(word: &str) -> Option<u32> {
    MONTHS.iter().find(|(w, _)| *w == word).map(|(_, n)| *n)
}

fn number(word: &str) -> Option<u32> {
    if word.is_empty() || !word.chars().all(|c| c.is_ascii_digit()) || word.len() > 4 {
        return None;
    }
    word.parse().ok()
}

fn ordinal(word: &str) -> Option<u32> {
    let n = ["st", "nd", "rd", "th"]
        .iter()
        .find_map(|s| word.strip_suffix(s))?;
    number(n).filter(|d| (1..=31).contains(d))
}

/// Words after "the 2nd" that make it a count or a choice, not a date.
const ORDINAL_IS_NOT_A_DATE_BEFORE: &[&str] = &[
    "one",
    "option",
    "slot",
    "appointment",
    "time",
    "visit",
    "choice",
    "available",
];

/// `["the"] NTH ["of"] [MONTH]` or `N ["of"] MONTH`, at `i`: (day, month, length).
fn dom_at(toks: &[&str], i: usize) -> Option<(u32, Option<u32>, usize)> {
    let mut j = i;
    if toks.get(j) == Some(&"the") {
        j += 1;
    }
    let word = *toks.get(j)?;
    let (dom, is_ordinal) = match ordinal(word) {
        Some(d) => (d, true),
        None => (number(word).filter(|d| (1..=31).contains(d))?, false),
    };
    j += 1;
    let month_at = |k: usize| toks.get(k).and_then(|w| month_of(w));
    if let Some(m) = month_at(j) {
        return Some((dom, Some(m), j + 1 - i));
    }
    if toks.get(j) == Some(&"of")
        && let Some(m) = month_at(j + 1)
    {
        return Some((dom, Some(m), j + 2 - i));
    }
    if !is_ordinal
        || toks
            .get(j)
            .is_some_and(|w| ORDINAL_IS_NOT_A_DATE_BEFORE.contains(w))
    {
        return None;
    }
    Some((dom, None, j - i))
}

/// "in 2 weeks", "in a fortnight", "in a couple of days", "in 3 weeks time": (days or months).
fn offset_at(toks: &[&str], i: usize) -> Option<(DayItem, usize)> {
    let mut j = i;
    let n: u32 = match *toks.get(j)? {
        "a" | "an" | "one" => {
            if starts_with(toks, j + 1, &["couple", "of"]) {
                j += 2;
                2
            } else {
                1
            }
        }
        w => number(w).filter(|n| (1..=52).contains(n))?,
    };
    j += 1;
    let unit = *toks.get(j)?;
    let item = match unit {
        "day" | "days" => DayItem::Offset(i64::from(n)),
        "week" | "weeks" | "week's" | "weeks'" => DayItem::Offset(7 * i64::from(n)),
        "fortnight" | "fortnights" => DayItem::Offset(14 * i64::from(n)),
        "month" | "months" => DayItem::OffsetMonths(n),
        _ => return None,
    };
    j += 1;
    if toks.get(j) == Some(&"time") {
        j += 1;
    }
    Some((item, j - i))
}

fn monday_of(d: NaiveDate) -> NaiveDate {
    d - Duration::days(i64::from(d.weekday().num_days_from_monday()))
}

fn month_span(year: i32, month: u32) -> Option<(NaiveDate, NaiveDate)> {
    let first = NaiveDate::from_ymd_opt(year, month, 1)?;
    let last = first.checked_add_months(Months::new(1))? - Duration::days(1);
    Some((first, last))
}

/// The coming weekend: this Saturday–Sunday, or what is left of it.
fn weekend(today: NaiveDate) -> (NaiveDate, NaiveDate) {
    let sunday = monday_of(today) + Duration::days(6);
    let saturday = sunday - Duration::days(1);
    (saturday.max(today), sunday)
}

fn day_at(toks: &[&str], i: usize, today: NaiveDate) -> Option<(Vec<Item>, usize)> {
    let one = |d: DayItem, len: usize| Some((vec![Item::Day(d)], len));
    let t = toks[i];
    let next = toks.get(i + 1).copied();
    let range = |a: NaiveDate, b: NaiveDate, len: usize| one(DayItem::Range(a, b), len);
    let this_monday = monday_of(today);
    let next_monday = this_monday + Duration::days(7);
    let sunday = this_monday + Duration::days(6);

    if starts_with(toks, i, &["day", "after", "tomorrow"]) {
        return one(DayItem::Offset(2), 3);
    }
    match t {
        "today" | "today's" | "todays" => return one(DayItem::Offset(0), 1),
        "tomorrow" | "tomorrow's" | "tomorrows" | "tmrw" | "tomorow" => {
            return if next == Some("week") {
                one(DayItem::Offset(8), 2)
            } else {
                one(DayItem::Offset(1), 1)
            };
        }
        "this" if matches!(next, Some("morning" | "afternoon" | "evening")) => {
            // The day part itself is read as a window on the next step.
            return one(DayItem::Offset(0), 1);
        }
        _ => {}
    }
    if starts_with(toks, i, &["a", "week", "today"]) {
        return one(DayItem::Offset(7), 3);
    }
    if starts_with(toks, i, &["a", "week", "tomorrow"]) {
        return one(DayItem::Offset(8), 3);
    }
    if starts_with(toks, i, &["a", "week", "on"])
        && let Some(wd) = toks.get(i + 3).and_then(|w| weekday_of(w))
    {
        return one(DayItem::Weekday(wd, WeekdayMode::WeekOn), 4);
    }
    if t == "in" {
        if let Some((item, len)) = offset_at(toks, i + 1) {
            return one(item, len + 1);
        }
        if let Some(m) = next.and_then(month_of) {
            return month_range(today, m).and_then(|(a, b)| range(a, b, 2));
        }
    }
    if let Some((item, len)) = offset_at(toks, i) {
        // "2 weeks from today", "a week from now"
        if starts_with(toks, i + len, &["from", "today"])
            || starts_with(toks, i + len, &["from", "now"])
        {
            return one(item, len + 2);
        }
    }
    // Weeks, months, weekends.
    let week_phrases: [(&[&str], (NaiveDate, NaiveDate)); 10] = [
        // "in the next week or so": the coming seven days, not next calendar week.
        (&["the", "next", "week"], (today, today + Duration::days(7))),
        (
            &["the", "next", "few", "days"],
            (today, today + Duration::days(3)),
        ),
        (
            &["the", "next", "couple", "of", "days"],
            (today, today + Duration::days(2)),
        ),
        (
            &["the", "week", "after", "next"],
            (next_monday + Duration::days(7), sunday + Duration::days(14)),
        ),
        (
            &["week", "after", "next"],
            (next_monday + Duration::days(7), sunday + Duration::days(14)),
        ),
        (&["next", "week"], (next_monday, sunday + Duration::days(7))),
        (
            &["later", "this", "week"],
            ((today + Duration::days(1)).min(sunday), sunday),
        ),
        (
            &["later", "in", "the", "week"],
            ((today + Duration::days(1)).min(sunday), sunday),
        ),
        (&["this", "week"], (today, sunday)),
        (
            &["next", "weekend"],
            (
                next_monday + Duration::days(5),
                next_monday + Duration::days(6),
            ),
        ),
    ];
    for (phrase, (a, b)) in week_phrases {
        if starts_with(toks, i, phrase) {
            return range(a, b, phrase.len());
        }
    }
    if matches!(t, "weekend" | "weekends") {
        let (a, b) = weekend(today);
        return range(a, b, 1);
    }
    for (a, b) in [("saturday", "sunday"), ("sunday", "saturday")] {
        for joiner in ["or", "and"] {
            if starts_with(toks, i, &[a, joiner, b]) {
                let (x, y) = weekend(today);
                return range(x, y, 3);
            }
        }
    }
    if starts_with(toks, i, &["next", "month"]) {
        let next = today.checked_add_months(Months::new(1))?;
        let (a, b) = month_span(next.year(), next.month())?;
        return range(a, b, 2);
    }
    if starts_with(toks, i, &["this", "month"]) {
        let (_, b) = month_span(today.year(), today.month())?;
        return range(today, b, 2);
    }
    if matches!(t, "any" | "whichever" | "whatever") && next == Some("day") {
        let len = if starts_with(toks, i + 2, &["of", "the", "week"]) {
            5
        } else {
            2
        };
        return one(DayItem::Any, len);
    }
    if matches!(t, "anyday" | "whenever") {
        return one(DayItem::Any, 1);
    }
    // Weekdays.
    let (mode, skip) = match t {
        "next" => (Some(WeekdayMode::NextWeek), 1),
        "this" | "coming" => (Some(WeekdayMode::Bare), 1),
        "last" => (None, 1),
        _ => (Some(WeekdayMode::Bare), 0),
    };
    if starts_with(toks, i, &["this", "coming"])
        && let Some(wd) = toks.get(i + 2).and_then(|w| weekday_of(w))
    {
        return one(DayItem::Weekday(wd, WeekdayMode::Bare), 3);
    }
    if let Some(wd) = toks.get(i + skip).and_then(|w| weekday_of(w)) {
        let mut len = skip + 1;
        let Some(mut mode) = mode else {
            // "last friday" is history, not a request.
            return Some((Vec::new(), len));
        };
        if toks.get(i + len) == Some(&"week") {
            mode = WeekdayMode::WeekOn;
            len += 1;
        } else if let Some((dom, month, l)) = dom_at(toks, i + len) {
            let item = DayItem::DayOfMonth {
                dom,
                month,
                year: None,
                weekday: Some(wd),
            };
            return one(item, len + l);
        }
        return one(DayItem::Weekday(wd, mode), len);
    }
    // Days of month.
    if let Some(m) = month_of(t) {
        // "march 3rd", "march the 3rd", "march 3"
        let mut j = i + 1;
        if toks.get(j) == Some(&"the") {
            j += 1;
        }
        let dom = toks.get(j).and_then(|w| ordinal(w).or_else(|| number(w)));
        if let Some(dom) = dom.filter(|d| (1..=31).contains(d)) {
            let item = DayItem::DayOfMonth {
                dom,
                month: Some(m),
                year: None,
                weekday: None,
            };
            return one(item, j + 1 - i);
        }
        return None;
    }
    if ordinal(t).is_some() || number(t).is_some() {
        let prev = i.checked_sub(1).map(|p| toks[p]);
        if let Some((dom, month, len)) = dom_at(toks, i)
            && (month.is_some() || matches!(prev, Some("the" | "on")))
        {
            let item = DayItem::DayOfMonth {
                dom,
                month,
                year: None,
                weekday: None,
            };
            return one(item, len);
        }
    }
    // "14/12", "14/12/2026": UK day/month.
    if t.contains('/') {
        let parts: Vec<&str> = t.split('/').collect();
        if let [d, m, rest @ ..] = parts.as_slice() {
            let dom = number(d).filter(|d| (1..=31).contains(d))?;
            let month = number(m).filter(|m| (1..=12).contains(m))?;
            let year = match rest {
                [] => None,
                [y] => {
                    let y = i32::try_from(number(y)?).ok()?;
                    Some(if y < 100 { 2000 + y } else { y })
                }
                _ => return None,
            };
            return one(
                DayItem::DayOfMonth {
                    dom,
                    month: Some(month),
                    year,
                    weekday: None,
                },
                1,
            );
        }
    }
    None
}

/// "in march": the rest of this month if it is March, else the next March.
fn month_range(today: NaiveDate, month: u32) -> Option<(NaiveDate, NaiveDate)> {
    let year = if month < today.month() {
        today.year() + 1
    } else {
        today.year()
    };
    let (a, b) = month_span(year, month)?;
    Some((a.max(today), b))
}

fn resolve_weekday(today: NaiveDate, wd: Weekday, mode: WeekdayMode) -> NaiveDate {
    let ahead = (7 + i64::from(wd.num_days_from_monday())
        - i64::from(today.weekday().num_days_from_monday()))
        % 7;
    let bare = today + Duration::days(ahead);
    match mode {
        WeekdayMode::Bare => bare,
        WeekdayMode::WeekOn => bare + Duration::days(7),
        WeekdayMode::NextWeek => {
            monday_of(today) + Duration::days(7 + i64::from(wd.num_days_from_monday()))
        }
    }
}

/// The next dates (today included) whose day of month is `dom`.
fn next_doms(today: NaiveDate, dom: u32) -> impl Iterator<Item = NaiveDate> {
    let first = NaiveDate::from_ymd_opt(today.year(), today.month(), 1);
    (0..MONTHS_AHEAD)
        .filter_map(move |k| {
            let m = first?.checked_add_months(Months::new(k))?;
            NaiveDate::from_ymd_opt(m.year(), m.month(), dom)
        })
        .filter(move |d| *d >= today)
}

fn resolve_point(item: DayItem, today: NaiveDate) -> Option<NaiveDate> {
    match item {
        DayItem::Offset(n) => Some(today + Duration::days(n)),
        DayItem::OffsetMonths(n) => today.checked_add_months(Months::new(n)),
        DayItem::Weekday(wd, mode) => Some(resolve_weekday(today, wd, mode)),
        DayItem::DayOfMonth {
            dom,
            month: Some(m),
            year: Some(y),
            ..
        } => NaiveDate::from_ymd_opt(y, m, dom),
        DayItem::DayOfMonth {
            dom,
            month: Some(m),
            year: None,
            ..
        } => (0..8)
            .filter_map(|k| NaiveDate::from_ymd_opt(today.year() + k, m, dom))
            .find(|d| *d >= today),
        DayItem::DayOfMonth {
            dom,
            month: None,
            weekday,
            ..
        } => {
            let candidates: Vec<NaiveDate> = next_doms(today, dom).take(2).collect();
            let matching = weekday.and_then(|wd| candidates.iter().find(|d| d.weekday() == wd));
            matching.or(candidates.first()).copied()
        }
        DayItem::Range(..) | DayItem::Any => None,
    }
}

fn resolve_day(found: &[&Found], today: NaiveDate) -> Option<DaySpec> {
    let days: Vec<DayItem> = found
        .iter()
        .filter_map(|f| match f.item {
            Item::Day(d) => Some(d),
            Item::Time(_) => None,
        })
        .collect();
    let range = days.iter().find_map(|d| match d {
        DayItem::Range(a, b) => Some((*a, *b)),
        _ => None,
    });
    for d in &days {
        if matches!(d, DayItem::Range(..) | DayItem::Any) {
            continue;
        }
        // A weekday or bare day of month said with a range is looked for inside it.
        if let Some((a, b)) = range {
            let inside = a.iter_days().take_while(|x| *x <= b).find(|x| match *d {
                DayItem::Weekday(wd, WeekdayMode::Bare) => x.weekday() == wd,
                DayItem::DayOfMonth {
                    dom,
                    month: None,
                    weekday,
                    ..
                } => x.day() == dom && weekday.is_none_or(|wd| x.weekday() == wd),
                _ => false,
            });
            if let Some(x) = inside {
                return Some(DaySpec::Date(x));
            }
        }
        if let Some(x) = resolve_point(*d, today) {
            return Some(DaySpec::Date(x));
        }
    }
    if let Some((from, to)) = range {
        return Some(DaySpec::Range { from, to });
    }
    days.contains(&DayItem::Any).then_some(DaySpec::AnyDay)
}

// ---------------------------------------------------------------------------------------------
// Times

/// An hour expression: the time read with the clinic rule, its other half-day reading, and
/// whether its own shape makes it a time (no cue word needed).
#[derive(Debug, Clone, Copy)]
struct Clock {
    at: Minute,
    alt: Option<Minute>,
    self_cued: bool,
    approx: bool,
    len: usize,
}

fn hour(word: &str) -> Option<u32> {
    if word == "one" {
        return Some(1);
    }
    number(word).filter(|h| *h <= 23 && word.len() <= 2)
}

/// Reads a spoken hour (0–23) with an optional am/pm and minutes added (negative for "to"):
/// (clinic reading, other half-day reading).
fn reading(
    h: u32,
    ampm: Option<&str>,
    leading_zero: bool,
    offset: i32,
) -> Option<(Minute, Option<Minute>)> {
    let shift = |h24: u32| -> Minute {
        let m = i64::from(h24) * 60 + i64::from(offset);
        u32::try_from(m.rem_euclid(24 * 60)).unwrap_or(0)
    };
    match ampm {
        Some("pm") if h <= 12 => Some((shift(if h == 12 { 12 } else { h + 12 }), None)),
        Some("am") if h <= 12 => Some((shift(if h == 12 { 0 } else { h }), None)),
        Some(_) if h > 12 => Some((shift(h), None)),
        _ if h == 0 || h >= 13 || leading_zero => Some((shift(h), None)),
        _ if h == 12 => Some((shift(12), None)),
        _ if PM_IF_AMBIGUOUS.contains(&h) => Some((shift(h + 12), Some(shift(h)))),
        _ => Some((shift(h), Some(shift(h + 12)))),
    }
}

fn clock_at(toks: &[&str], i: usize) -> Option<Clock> {
    clock_at_with(toks, i, true)
}

/// `relative`: whether "10 to 5" / "20 past 3" may be read (not inside "from 11 to 1").
fn clock_at_with(toks: &[&str], i: usize, relative: bool) -> Option<Clock> {
    let get = |j: usize| toks.get(j).copied();
    let t = get(i)?;
    if matches!(t, "noon" | "midday") {
        return Some(Clock {
            at: hm(12, 0),
            alt: None,
            self_cued: true,
            approx: false,
            len: 1,
        });
    }
    // (spoken hour, minutes offset, leading zero, length, shape is a cue)
    let mut j = i;
    if t == "a" && get(i + 1) == Some("quarter") {
        j += 1;
    }
    let core: Option<(u32, i32, bool, usize, bool)> = match get(j)? {
        "half" if get(j + 1) == Some("past") => {
            hour(get(j + 2)?).map(|h| (h, 30, false, j + 3 - i, true))
        }
        // UK "half ten" = 10:30
        "half" => get(j + 1)
            .and_then(hour)
            .map(|h| (h, 30, false, j + 2 - i, true)),
        "quarter" => match get(j + 1)? {
            "past" | "after" => hour(get(j + 2)?).map(|h| (h, 15, false, j + 3 - i, true)),
            "to" | "of" => hour(get(j + 2)?).map(|h| (h, -15, false, j + 3 - i, true)),
            _ => None,
        },
        w if w.contains(':') || (w.contains('.') && !w.starts_with(['£', '$', '€'])) => {
            let (h, m) = w.split_once([':', '.'])?;
            let hh = number(h).filter(|x| *x <= 23 && h.len() <= 2)?;
            let mm = number(m).filter(|x| *x < 60 && m.len() == 2)?;
            Some((
                hh,
                i32::try_from(mm).ok()?,
                h.len() == 2 && h.starts_with('0'),
                1,
                true,
            ))
        }
        w => {
            let h = hour(w);
            let after = get(j + 1);
            let after2 = get(j + 2);
            // "10 to 5", "20 past 3", "20 minutes past 3"
            let (k, rel) = if matches!(after, Some("minutes" | "mins" | "minute")) {
                (j + 2, after2)
            } else {
                (j + 1, after)
            };
            let minutes_rel = number(w)
                .filter(|m| relative && (1..=30).contains(m))
                .and_then(|m| match rel {
                    Some("past" | "after") => get(k + 1)
                        .and_then(hour)
                        .map(|hh| (hh, i32::try_from(m).unwrap_or(0), false, k + 2 - i, true)),
                    Some("to") => get(k + 1)
                        .and_then(hour)
                        .filter(|hh| (1..=12).contains(hh))
                        .map(|hh| (hh, -i32::try_from(m).unwrap_or(0), false, k + 2 - i, true)),
                    _ => None,
                });
            let prev_is_digit = i.checked_sub(1).is_some_and(|p| number(toks[p]).is_some());
            if minutes_rel.is_some() {
                minutes_rel
            } else if let (Some(h), Some(mm)) =
                (h.filter(|h| (1..=12).contains(h)), after.and_then(number))
            {
                // "3 30" (from "three thirty"): minutes said as a two-digit number.
                let next_is_digit = after2.and_then(number).is_some();
                if (10..60).contains(&mm)
                    && after.is_some_and(|a| a.len() == 2)
                    && !prev_is_digit
                    && !next_is_digit
                {
                    Some((h, i32::try_from(mm).unwrap_or(0), false, j + 2 - i, true))
                } else {
                    Some((h, 0, false, j + 1 - i, false))
                }
            } else if let Some(h) = h {
                Some((h, 0, w.len() == 2 && w.starts_with('0'), j + 1 - i, false))
            } else if (3..=4).contains(&w.len()) {
                // "330", "1530" after a cue word.
                let n = number(w)?;
                let (hh, mm) = (n / 100, n % 100);
                (hh <= 23 && mm < 60).then_some((
                    hh,
                    i32::try_from(mm).ok()?,
                    w.len() == 4 && w.starts_with('0'),
                    j + 1 - i,
                    false,
                ))
            } else {
                None
            }
        }
    };
    let (h, offset, leading_zero, mut len, mut self_cued) = core?;
    let mut ampm = None;
    let mut approx = false;
    if get(i + len) == Some("noon") && h == 12 {
        len += 1;
        self_cued = true;
    }
    if get(i + len) == Some("oclock") {
        len += 1;
        self_cued = true;
    }
    if let Some(x @ ("am" | "pm")) = get(i + len) {
        ampm = Some(x);
        len += 1;
        self_cued = true;
    }
    if get(i + len) == Some("ish") {
        approx = true;
        len += 1;
        self_cued = true;
    }
    let (at, alt) = reading(h, ampm, leading_zero, offset)?;
    Some(Clock {
        at,
        alt,
        self_cued,
        approx,
        len,
    })
}

fn window(w: (Minute, Minute), len: usize) -> Option<(Vec<Item>, usize)> {
    Some((vec![Item::Time(TimeItem::Window(w.0, w.1))], len))
}

/// Phrases meaning "the soonest you have".
const EARLIEST: &[&[&str]] = &[
    &["first", "thing", "in", "the", "morning"],
    &["first", "thing"],
    &["as", "soon", "as", "possible"],
    &["as", "early", "as", "possible"],
    &["a", "s", "a", "p"],
    &["asap"],
    &["earliest"],
    &["soonest"],
    &["first", "available"],
    &["next", "available"],
];

/// Day parts, longest first.
const DAY_PARTS: &[(&[&str], (Minute, Minute))] = &[
    (&["early", "morning"], EARLY_MORNING),
    (&["late", "morning"], LATE_MORNING),
    (&["early", "afternoon"], EARLY_AFTERNOON),
    (&["late", "afternoon"], LATE_AFTERNOON),
    (&["early", "evening"], EARLY_EVENING),
    (&["lunch", "time"], LUNCHTIME),
    (&["at", "lunch"], LUNCHTIME),
    (&["over", "lunch"], LUNCHTIME),
    (&["during", "lunch"], LUNCHTIME),
    (&["my", "lunch"], LUNCHTIME),
    (&["lunch", "break"], LUNCHTIME),
    (&["lunchtime"], LUNCHTIME),
    (&["lunchtimes"], LUNCHTIME),
    (&["morning"], MORNING),
    (&["mornings"], MORNING),
    (&["afternoon"], AFTERNOON),
    (&["afternoons"], AFTERNOON),
    (&["evening"], EVENING),
    (&["evenings"], EVENING),
];

/// Cue words before an exact time.
const AT_CUES: &[&[&str]] = &[
    &["at"],
    &["make", "it"],
    &["make", "that"],
    &["change", "it", "to"],
    &["change", "that", "to"],
    &["move", "it", "to"],
    &["how", "about"],
    &["what", "about"],
];
const APPROX_CUES: &[&str] = &[
    "around",
    "about",
    "roughly",
    "approximately",
    "approx",
    "circa",
];
const AFTER_CUES: &[&[&str]] = &[&["after"], &["from"], &["since"], &["later", "than"]];
const BEFORE_CUES: &[&[&str]] = &[
    &["before"],
    &["by"],
    &["until"],
    &["till"],
    &["til"],
    &["up", "to"],
    &["no", "later", "than"],
    &["earlier", "than"],
];

fn time_at(toks: &[&str], i: usize) -> Option<(Vec<Item>, usize)> {
    let one = |t: TimeItem, len: usize| Some((vec![Item::Time(t)], len));
    if let Some(p) = EARLIEST.iter().find(|p| starts_with(toks, i, p)) {
        return one(TimeItem::Earliest, p.len());
    }
    if toks[i] == "tonight" {
        return Some((
            vec![
                Item::Day(DayItem::Offset(0)),
                Item::Time(TimeItem::Window(EVENING.0, EVENING.1)),
            ],
            1,
        ));
    }
    // "between 2 and 4", "from 2 to 4", "from 2 till 4"
    if matches!(toks[i], "between" | "from")
        && let Some(a) = clock_at_with(toks, i + 1, false)
        && let j = i + 1 + a.len
        && toks
            .get(j)
            .is_some_and(|w| matches!(*w, "and" | "to" | "till" | "until" | "til"))
        && let Some(b) = clock_at(toks, j + 1)
    {
        let (from, to) = ordered(a, b);
        return one(TimeItem::Window(from, to), j + 1 + b.len - i);
    }
    for (cues, after) in [(AFTER_CUES, true), (BEFORE_CUES, false)] {
        let Some(cue) = cues.iter().find(|c| starts_with(toks, i, c)) else {
            continue;
        };
        let mut j = i + cue.len();
        if toks.get(j).is_some_and(|w| APPROX_CUES.contains(w)) {
            j += 1;
        }
        if starts_with(toks, j, &["lunch"]) || starts_with(toks, j, &["lunchtime"]) {
            let w = if after {
                (LUNCHTIME.1, DAY_END)
            } else {
                (DAY_START, LUNCHTIME.0)
            };
            return window(w, j + 1 - i);
        }
        if after && starts_with(toks, j, &["work"]) {
            return window((AFTER_WORK, DAY_END), j + 1 - i);
        }
        if let Some(c) = clock_at(toks, j) {
            let w = if after {
                (c.at, DAY_END)
            } else {
                (DAY_START, c.at)
            };
            return window(w, j + c.len - i);
        }
    }
    let mut j = i;
    let mut cued = false;
    let mut approx = false;
    if let Some(cue) = AT_CUES.iter().find(|c| starts_with(toks, i, c)) {
        j += cue.len();
        cued = true;
    }
    if toks.get(j).is_some_and(|w| APPROX_CUES.contains(w)) {
        j += 1;
        cued = true;
        approx = true;
    }
    if let Some(c) = clock_at(toks, j)
        && (cued || c.self_cued)
    {
        return one(
            TimeItem::At {
                at: c.at,
                alt: c.alt,
                approx: approx || c.approx,
            },
            j + c.len - i,
        );
    }
    if let Some((p, w)) = DAY_PARTS.iter().find(|(p, _)| starts_with(toks, i, p)) {
        return window(*w, p.len());
    }
    None
}

/// A window's two ends, choosing half-day readings so that it runs forwards ("from 11 to 1").
fn ordered(a: Clock, b: Clock) -> (Minute, Minute) {
    let mut options = vec![(a.at, b.at)];
    if let Some(bb) = b.alt {
        options.push((a.at, bb));
    }
    if let Some(aa) = a.alt {
        options.push((aa, b.at));
        if let Some(bb) = b.alt {
            options.push((aa, bb));
        }
    }
    options
        .iter()
        .copied()
        .find(|(x, y)| x < y)
        .unwrap_or((a.at, b.at))
}

fn resolve_time(found: &[&Found]) -> (Option<TimeSpec>, bool) {
    let times: Vec<TimeItem> = found
        .iter()
        .filter_map(|f| match f.item {
            Item::Time(t) => Some(t),
            Item::Day(_) => None,
        })
        .collect();
    let mut win: Option<(Minute, Minute)> = None;
    for t in &times {
        if let TimeItem::Window(a, b) = *t {
            win = match win {
                None => Some((a, b)),
                Some((x, y)) if a.max(x) < b.min(y) => Some((a.max(x), b.min(y))),
                keep => keep,
            };
        }
    }
    let exact = times.iter().find_map(|t| match *t {
        TimeItem::At { at, alt, approx } => Some((at, alt, approx)),
        _ => None,
    });
    if let Some((at, alt, approx)) = exact {
        // "at 8 in the evening": the day part picks the half of the day.
        // Distance from the day part's window (0 inside it).
        let gap = |m: Minute| win.map_or(0, |(a, b)| a.saturating_sub(m).max(m.saturating_sub(b)));
        let at = match alt {
            Some(other) if gap(other) < gap(at) => other,
            _ => at,
        };
        return (Some(TimeSpec::At(time_of(at))), approx);
    }
    if let Some((a, b)) = win {
        return (
            Some(TimeSpec::Window {
                from: time_of(a),
                to: time_of(b),
            }),
            false,
        );
    }
    (
        times
            .contains(&TimeItem::Earliest)
            .then_some(TimeSpec::Earliest),
        false,
    )
}

// ---------------------------------------------------------------------------------------------
// Shifts

/// A move of an existing booking: "push it back a week" (+7 days), "a day later", "an hour
/// earlier", "bring it forward half an hour" (−30 min). "back" / "later" / "postpone" / "delay"
/// move later; "forward" / "earlier" / "sooner" move earlier (UK "bring forward"). `None`
/// without both an amount and a direction. Months are not shifts (they have no fixed length):
/// "next month" is a day for [`parse_when`].
pub fn parse_shift(text: &str) -> Option<Duration> {
    let norm = text::normalize(text);
    let toks = text::tokens(&norm);
    let later = toks.iter().any(|w| {
        matches!(
            *w,
            "later" | "back" | "postpone" | "delay" | "delayed" | "postponed"
        )
    });
    let earlier = toks
        .iter()
        .any(|w| matches!(*w, "earlier" | "forward" | "forwards" | "sooner"));
    let sign = match (later, earlier) {
        (true, false) => 1,
        (false, true) => -1,
        // "later" / "earlier" say more than "back" / "forward".
        _ if toks.contains(&"later") && !toks.contains(&"earlier") => 1,
        _ if toks.contains(&"earlier") && !toks.contains(&"later") => -1,
        _ => return None,
    };
    let mut amount: Option<Duration> = None;
    for i in 0..toks.len() {
        if starts_with(&toks, i, &["half", "an", "hour"]) {
            amount = Some(Duration::minutes(30));
            break;
        }
        let (n, j) = match toks[i] {
            "a" | "an" | "one" if starts_with(&toks, i + 1, &["couple", "of"]) => (2, i + 3),
            "a" | "an" | "one" => (1, i + 1),
            w => match number(w) {
                Some(n) => (i64::from(n), i + 1),
                None => continue,
            },
        };
        let unit = match toks.get(j).copied() {
            Some("minute" | "minutes" | "min" | "mins") => Duration::minutes(1),
            Some("hour" | "hours") => Duration::hours(1),
            Some("day" | "days") => Duration::days(1),
            Some("week" | "weeks") => Duration::weeks(1),
            Some("fortnight") => Duration::weeks(2),
            _ => continue,
        };
        let mut d = unit * i32::try_from(n).ok()?;
        if starts_with(&toks, j + 1, &["and", "a", "half"]) {
            d += unit / 2;
        }
        amount = Some(d);
        break;
    }
    amount.map(|d| d * sign)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> NaiveDateTime {
        // Tuesday 1 December 2026, 10:00.
        NaiveDate::from_ymd_opt(2026, 12, 1)
            .unwrap()
            .and_hms_opt(10, 0, 0)
            .unwrap()
    }
    fn date(m: u32, d: u32) -> Option<DaySpec> {
        Some(DaySpec::Date(NaiveDate::from_ymd_opt(2026, m, d).unwrap()))
    }
    fn at(h: u32, m: u32) -> Option<TimeSpec> {
        Some(TimeSpec::At(NaiveTime::from_hms_opt(h, m, 0).unwrap()))
    }

    #[test]
    fn now_is_a_tuesday() {
        assert_eq!(now().date().weekday(), Weekday::Tue);
    }

    #[test]
    fn a_booking_turn() {
        let q = parse_when("Can I book a filling for tomorrow at 2?", now());
        assert_eq!(
            q,
            WhenQuery {
                day: date(12, 2),
                time: at(14, 0)
            }
        );
    }

    #[test]
    fn to_and_for_without_cues_are_not_times() {
        assert_eq!(parse_when("I want to come in", now()), WhenQuery::default());
        assert_eq!(
            parse_when("can I book for four people", now()),
            WhenQuery::default()
        );
        assert_eq!(
            parse_when("I need two fillings", now()),
            WhenQuery::default()
        );
        assert_eq!(parse_when("book for 4 pm", now()).time, at(16, 0));
    }

    #[test]
    fn hedged_times_are_flagged() {
        let r = read_when("around 11", now());
        assert_eq!(r.query.time, at(11, 0));
        assert!(r.approx);
        assert!(read_when("11ish", now()).approx);
        assert!(!read_when("at 11", now()).approx);
    }

    #[test]
    fn negated_mentions_are_rejected() {
        let r = read_when("No, sorry, I said Tuesday, not Thursday.", now());
        assert_eq!(r.query.day, date(12, 1));
        assert_eq!(r.rejected.day, date(12, 3));
        let r = read_when("can we make that 4 instead of 3", now());
        assert_eq!(r.query.time, at(16, 0));
    }

    #[test]
    fn day_part_picks_the_half_day() {
        assert_eq!(parse_when("at 8 in the evening", now()).time, at(20, 0));
        assert_eq!(parse_when("at 6 in the morning", now()).time, at(6, 0));
    }

    #[test]
    fn shifts() {
        assert_eq!(
            parse_shift("Could we push my check up back a week?"),
            Some(Duration::weeks(1))
        );
        assert_eq!(parse_shift("a day later"), Some(Duration::days(1)));
        assert_eq!(parse_shift("an hour earlier"), Some(Duration::hours(-1)));
        assert_eq!(
            parse_shift("bring it forward half an hour"),
            Some(Duration::minutes(-30))
        );
        assert_eq!(
            parse_shift("two days later please"),
            Some(Duration::days(2))
        );
        assert_eq!(
            parse_shift("an hour and a half later"),
            Some(Duration::minutes(90))
        );
        assert_eq!(parse_shift("I want to move my appointment"), None);
        assert_eq!(parse_shift("a week"), None);
    }
}
