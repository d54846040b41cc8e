//! Saying things the way a receptionist would on the phone: "half past eight", "Tuesday the 8th
//! of December", "fifty-five pounds". Text here is fed to TTS, so numbers are written as words
//! where a voice would otherwise read digits oddly.

use chrono::{Datelike, NaiveDate, NaiveTime, Timelike};

const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

/// A whole number in words, British style ("two hundred and fifty").
pub fn number_words(n: u64) -> String {
    match n {
        0..=19 => ONES[n as usize].to_string(),
        20..=99 => {
            let t = TENS[(n / 10) as usize];
            if n.is_multiple_of(10) {
                t.to_string()
            } else {
                format!("{t}-{}", ONES[(n % 10) as usize])
            }
        }
        100..=999 => {
            let h = format!("{} hundred", ONES[(n / 100) as usize]);
            if n.is_multiple_of(100) {
                h
            } else {
                format!("{h} and {}", number_words(n % 100))
            }
        }
        1000..=999_999 => {
            let th = format!("{} thousand", number_words(n / 1000));
            match n % 1000 {
                0 => th,
                r if r < 100 => format!("{th} and {}", number_words(r)),
                r => format!("{th} {}", number_words(r)),
            }
        }
        _ => n.to_string(),
    }
}

fn hour12(h: u32) -> u32 {
    match h % 12 {
        0 => 12,
        x => x,
    }
}

/// A clock time as said aloud: "half past eight", "quarter to four", "ten o'clock", "two
/// twenty". `with_period` adds "in the morning/afternoon/evening" (used when the hour alone is
/// ambiguous, e.g. reading back a booking).
pub fn time(t: NaiveTime, with_period: bool) -> String {
    let (h, m) = (t.hour(), t.minute());
    if h == 12 && m == 0 {
        return "twelve noon".into();
    }
    let base = match m {
        0 => format!("{} o'clock", number_words(hour12(h).into())),
        15 => format!("quarter past {}", number_words(hour12(h).into())),
        30 => format!("half past {}", number_words(hour12(h).into())),
        45 => format!("quarter to {}", number_words(hour12(h + 1).into())),
        m if m < 10 => format!(
            "{} oh {}",
            number_words(hour12(h).into()),
            number_words(m.into())
        ),
        m => format!(
            "{} {}",
            number_words(hour12(h).into()),
            number_words(m.into())
        ),
    };
    if !with_period {
        return base;
    }
    // The period of the hour the words name ("quarter to one" is afternoon-ish: judge by `h`).
    let period = match h {
        0..=11 => "in the morning",
        12..=16 => "in the afternoon",
        _ => "in the evening",
    };
    format!("{base} {period}")
}

fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

pub fn weekday_name(d: NaiveDate) -> &'static str {
    match d.weekday() {
        chrono::Weekday::Mon => "Monday",
        chrono::Weekday::Tue => "Tuesday",
        chrono::Weekday::Wed => "Wednesday",
        chrono::Weekday::Thu => "Thursday",
        chrono::Weekday::Fri => "Friday",
        chrono::Weekday::Sat => "Saturday",
        chrono::Weekday::Sun => "Sunday",
    }
}

fn month_name(d: NaiveDate) -> &'static str {
    [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ][d.month0() as usize]
}

/// A date relative to `today`: "today", "tomorrow", "on Friday the 11th of December".
pub fn date(d: NaiveDate, today: NaiveDate) -> String {
    let days = (d - today).num_days();
    match days {
        0 => "today".into(),
        1 => "tomorrow".into(),
        _ => format!(
            "on {} the {} of {}",
            weekday_name(d),
            ordinal(d.day()),
            month_name(d)
        ),
    }
}

/// A day as the object of a sentence: "today", "tomorrow", "Monday the 7th of December" ("I
/// have Monday the 7th…", "move it to tomorrow…"), where [`date`] is an adverbial ("booked on
/// Monday the 7th…").
pub fn day(d: NaiveDate, today: NaiveDate) -> String {
    match (d - today).num_days() {
        0 | 1 => date(d, today),
        _ => date_plain(d),
    }
}

/// A date without "on": "Friday the 11th of December".
pub fn date_plain(d: NaiveDate) -> String {
    format!(
        "{} the {} of {}",
        weekday_name(d),
        ordinal(d.day()),
        month_name(d)
    )
}

/// Prices in a text said aloud: "£55" → "fifty-five pounds", "from £120.50" → "from one hundred
/// and twenty pounds fifty"; `$` dollars, `€` euros. Other text is kept.
pub fn prices(text: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let unit = match chars[i] {
            '£' => Some(("pound", "pounds", "p")),
            '$' => Some(("dollar", "dollars", "cents")),
            '€' => Some(("euro", "euros", "cents")),
            _ => None,
        };
        if let Some((one, many, _)) = unit {
            let mut j = i + 1;
            let mut whole = String::new();
            while j < chars.len() && (chars[j].is_ascii_digit() || chars[j] == ',') {
                if chars[j] != ',' {
                    whole.push(chars[j]);
                }
                j += 1;
            }
            let mut frac = String::new();
            if j + 2 < chars.len() + 1
                && chars.get(j) == Some(&'.')
                && chars.get(j + 1).is_some_and(|c| c.is_ascii_digit())
            {
                j += 1;
                while j < chars.len() && chars[j].is_ascii_digit() {
                    frac.push(chars[j]);
                    j += 1;
                }
            }
            if let Ok(n) = whole.parse::<u64>() {
                out.push_str(&number_words(n));
                out.push(' ');
                out.push_str(if n == 1 { one } else { many });
                if let Ok(f) = frac.parse::<u64>()
                    && f > 0
                {
                    out.push(' ');
                    out.push_str(&number_words(f));
                }
                i = j;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// Joins names as speech: "a, b or c".
pub fn list_or(items: &[String]) -> String {
    list(items, "or")
}

pub fn list_and(items: &[String]) -> String {
    list(items, "and")
}

fn list(items: &[String], word: &str) -> String {
    match items {
        [] => String::new(),
        [a] => a.clone(),
        [rest @ .., last] => format!("{} {word} {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    #[test]
    fn times_read_naturally() {
        assert_eq!(time(t(8, 30), false), "half past eight");
        assert_eq!(time(t(15, 45), false), "quarter to four");
        assert_eq!(time(t(10, 0), true), "ten o'clock in the morning");
        assert_eq!(time(t(14, 15), true), "quarter past two in the afternoon");
        assert_eq!(time(t(12, 0), true), "twelve noon");
        assert_eq!(time(t(9, 5), false), "nine oh five");
        assert_eq!(time(t(17, 20), true), "five twenty in the evening");
        assert_eq!(time(t(11, 45), false), "quarter to twelve");
    }

    #[test]
    fn dates_read_relative_to_today() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        assert_eq!(date(today, today), "today");
        assert_eq!(date(today.succ_opt().unwrap(), today), "tomorrow");
        assert_eq!(
            date(NaiveDate::from_ymd_opt(2026, 12, 11).unwrap(), today),
            "on Friday the 11th of December"
        );
        assert_eq!(
            date_plain(NaiveDate::from_ymd_opt(2027, 1, 22).unwrap()),
            "Friday the 22nd of January"
        );
    }

    #[test]
    fn prices_are_spelled_out() {
        assert_eq!(prices("£55"), "fifty-five pounds");
        assert_eq!(
            prices("from £120.50"),
            "from one hundred and twenty pounds fifty"
        );
        assert_eq!(
            prices("$1,250"),
            "one thousand two hundred and fifty dollars"
        );
        assert_eq!(prices("€1"), "one euro");
        assert_eq!(prices("free"), "free");
    }

    #[test]
    fn lists_join_with_or() {
        let items: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(list_or(&items), "a, b or c");
        assert_eq!(list_and(&items[..2]), "a and b");
    }
}
