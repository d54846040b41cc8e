//! Normalising what the caller said, as Whisper writes it.
//!
//! Whisper's phone transcripts carry fillers ("um", "you know"), restarts ("i i want"), numbers
//! as words or digits, "3pm" or "3 p.m.", and punctuation that is sometimes there and sometimes
//! not. [`normalize`] turns all of that into one lowercase, space-separated form that the later
//! steps (dates and times in [`crate::when`], intents and slots) can match with plain token rules:
//!
//! - punctuation is dropped, except `:` and `.` between digits (time separators: "3:30", "3.30"),
//!   `/` between digits ("14/12"), apostrophes inside words ("i'd", "don't", "o'clock") and a
//!   currency sign glued to an amount ("£45", so a price is never read as a time);
//! - digits are split from glued words ("3pm" → "3 pm", "11ish" → "11 ish") but ordinals stay
//!   ("14th");
//! - number words become digits ("twenty five" → "25", "three thirty" → "3 30", "nine hundred"
//!   → "900", "fourteenth" → "14th"); "to", "too" and "for" are never touched (whether "at two"
//!   is a time is [`crate::when`]'s decision, made in context);
//! - "o'clock" / "o clock" → "oclock", "a.m." / "p m" after a number → "am" / "pm".
//!
//! Invariant: `normalize(&normalize(x)) == normalize(x)`, so later steps may be given either the
//! raw transcript or its normal form.

/// Filler words Whisper keeps from phone speech. Dropped everywhere: none of them can carry a
/// slot. ("mhm" and "mm" are left alone: they mean yes.)
const FILLERS: &[&str] = &[
    "um", "umm", "uhm", "uh", "uhh", "erm", "er", "err", "hmm", "ehm",
];

/// Words after which "like" is the verb ("i'd like, um, a check-up"), never a filler.
const LIKE_IS_A_VERB_AFTER: &[&str] = &[
    "i", "i'd", "id", "we", "we'd", "you", "you'd", "they", "they'd", "he'd", "she'd", "would",
    "should", "do", "don't", "dont", "didn't", "really", "might", "i'll", "we'll", "not",
];

/// Words before "you know" / "i mean" that make them part of a real question ("do you know
/// where…", "what i mean is…"), not a filler.
const PHRASE_IS_REAL_AFTER: &[&str] = &[
    "do", "does", "did", "don't", "dont", "didn't", "would", "will", "if", "as", "what", "that",
];

const UNITS: &[(&str, u32)] = &[
    ("zero", 0),
    ("one", 1),
    ("two", 2),
    ("three", 3),
    ("four", 4),
    ("five", 5),
    ("six", 6),
    ("seven", 7),
    ("eight", 8),
    ("nine", 9),
];

const TEENS: &[(&str, u32)] = &[
    ("ten", 10),
    ("eleven", 11),
    ("twelve", 12),
    ("thirteen", 13),
    ("fourteen", 14),
    ("fifteen", 15),
    ("sixteen", 16),
    ("seventeen", 17),
    ("eighteen", 18),
    ("nineteen", 19),
];

const TENS: &[(&str, u32)] = &[
    ("twenty", 20),
    ("thirty", 30),
    ("forty", 40),
    ("fourty", 40),
    ("fifty", 50),
    ("sixty", 60),
    ("seventy", 70),
    ("eighty", 80),
    ("ninety", 90),
];

const ORDINALS: &[(&str, u32)] = &[
    ("first", 1),
    ("second", 2),
    ("third", 3),
    ("fourth", 4),
    ("fifth", 5),
    ("sixth", 6),
    ("seventh", 7),
    ("eighth", 8),
    ("ninth", 9),
    ("tenth", 10),
    ("eleventh", 11),
    ("twelfth", 12),
    ("thirteenth", 13),
    ("fourteenth", 14),
    ("fifteenth", 15),
    ("sixteenth", 16),
    ("seventeenth", 17),
    ("eighteenth", 18),
    ("nineteenth", 19),
    ("twentieth", 20),
    ("thirtieth", 30),
];

/// Month names, for the ordinal context rule below (and shared with [`crate::when`]).
pub(crate) const MONTHS: &[(&str, u32)] = &[
    ("january", 1),
    ("jan", 1),
    ("february", 2),
    ("feb", 2),
    ("march", 3),
    ("april", 4),
    ("may", 5),
    ("june", 6),
    ("july", 7),
    ("august", 8),
    ("aug", 8),
    ("september", 9),
    ("sept", 9),
    ("october", 10),
    ("oct", 10),
    ("november", 11),
    ("nov", 11),
    ("december", 12),
    ("dec", 12),
];

const WEEKDAY_WORDS: &[&str] = &[
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// Words after which "one" is the hour or a number ("at one", "half past one"); elsewhere "one"
/// stays a word ("the first one", "book one for friday").
const ONE_IS_A_NUMBER_AFTER: &[&str] = &[
    "at", "around", "about", "by", "after", "before", "from", "until", "till", "past", "to",
    "half", "and", "between",
];

/// Words after "first"/"second"/"third" that make it a choice or a count, not a date ("the
/// first one", "my second appointment").
const ORDINAL_IS_NOT_A_DATE_BEFORE: &[&str] = &[
    "one",
    "option",
    "slot",
    "appointment",
    "time",
    "thing",
    "available",
    "visit",
    "choice",
    "opening",
    "free",
    "possible",
];

fn lookup(table: &[(&str, u32)], word: &str) -> Option<u32> {
    table.iter().find(|(w, _)| *w == word).map(|(_, n)| *n)
}

fn is_month(word: &str) -> bool {
    lookup(MONTHS, word).is_some()
}

fn is_weekday(word: &str) -> bool {
    WEEKDAY_WORDS
        .iter()
        .any(|w| word.trim_end_matches('s') == *w)
}

/// The English ordinal suffix of `n` (1 → "st", 12 → "th", 22 → "nd").
pub fn ordinal_suffix(n: u32) -> &'static str {
    match (n % 100, n % 10) {
        (11..=13, _) => "th",
        (_, 1) => "st",
        (_, 2) => "nd",
        (_, 3) => "rd",
        _ => "th",
    }
}

/// A word of the transcript, with whether punctuation touched it (fillers are told apart from
/// real words by the commas Whisper puts around them).
#[derive(Debug, Clone)]
struct Word {
    text: String,
    punct_before: bool,
    punct_after: bool,
}

/// Splits lowercase text into words, keeping the separators times and contractions need.
fn lex(raw: &str) -> Vec<Word> {
    let lower = raw.to_lowercase().replace(['’', '‘'], "'");
    let chars: Vec<char> = lower.chars().collect();
    let mut words: Vec<Word> = Vec::new();
    let mut cur = String::new();
    let mut pending_punct = false;
    let flush = |cur: &mut String, words: &mut Vec<Word>, pending: &mut bool| {
        if !cur.is_empty() {
            words.push(Word {
                text: std::mem::take(cur),
                punct_before: *pending,
                punct_after: false,
            });
            *pending = false;
        }
    };
    for (i, &c) in chars.iter().enumerate() {
        let prev = cur.chars().last();
        let next = chars.get(i + 1).copied();
        let keep = if c.is_alphanumeric() {
            true
        } else {
            match c {
                '\'' => {
                    prev.is_some_and(char::is_alphabetic) && next.is_some_and(char::is_alphabetic)
                }
                ':' | '.' | '/' => {
                    prev.is_some_and(|p| p.is_ascii_digit())
                        && next.is_some_and(|n| n.is_ascii_digit())
                }
                '£' | '$' | '€' => cur.is_empty() && next.is_some_and(|n| n.is_ascii_digit()),
                _ => false,
            }
        };
        if keep {
            cur.push(c);
            continue;
        }
        flush(&mut cur, &mut words, &mut pending_punct);
        let glued = prev.is_some() && next.is_some_and(char::is_alphanumeric);
        let is_punct = match c {
            c if c.is_whitespace() => false,
            // "check-up", "p.m.", "S-I-O-B-H-A-N": a separator, not a pause.
            '-' | '.' | '\'' if glued => false,
            '+' | '£' | '$' | '€' | '\'' | '"' => false,
            _ => true,
        };
        if is_punct {
            if let Some(last) = words.last_mut() {
                last.punct_after = true;
            }
            pending_punct = true;
        }
    }
    flush(&mut cur, &mut words, &mut pending_punct);
    split_glued(words)
}

/// "3pm" → "3" "pm", "11ish" → "11" "ish", "elevenish" → "eleven" "ish"; "14th" stays.
fn split_glued(words: Vec<Word>) -> Vec<Word> {
    let mut out = Vec::with_capacity(words.len());
    for w in words {
        let t = &w.text;
        let split_at = if t.starts_with(|c: char| c.is_ascii_digit()) {
            t.find(|c: char| c.is_alphabetic()).filter(|&at| {
                let (num, rest) = t.split_at(at);
                let ordinal = matches!(rest, "st" | "nd" | "rd" | "th")
                    && num.chars().all(|c| c.is_ascii_digit());
                !ordinal && rest.chars().all(char::is_alphabetic)
            })
        } else if let Some(stem) = t.strip_suffix("ish") {
            let number = lookup(UNITS, stem)
                .or(lookup(TEENS, stem))
                .or(lookup(TENS, stem));
            number.map(|_| stem.len())
        } else {
            None
        };
        match split_at {
            Some(at) => {
                let (a, b) = t.split_at(at);
                out.push(Word {
                    text: a.to_string(),
                    punct_before: w.punct_before,
                    punct_after: false,
                });
                out.push(Word {
                    text: b.to_string(),
                    punct_before: false,
                    punct_after: w.punct_after,
                });
            }
            None => out.push(w),
        }
    }
    out
}

/// Drops fillers: the [`FILLERS`], "like" between commas when it is not the verb, and "you
/// know" / "i mean" when they are asides.
fn drop_fillers(words: Vec<Word>) -> Vec<Word> {
    let mut out: Vec<Word> = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        let prev = out.last().map(|p| p.text.as_str());
        let prev_is = |set: &[&str]| prev.is_some_and(|p| set.contains(&p));
        if FILLERS.contains(&w.text.as_str()) {
            if let Some(last) = out.last_mut() {
                last.punct_after |= w.punct_after;
            }
            i += 1;
            continue;
        }
        if w.text == "like" && (w.punct_before || w.punct_after) && !prev_is(LIKE_IS_A_VERB_AFTER) {
            i += 1;
            continue;
        }
        if let Some(next) = words.get(i + 1) {
            let pair = (w.text.as_str(), next.text.as_str());
            let aside =
                w.punct_before || prev.is_none() || next.punct_after || i + 2 == words.len();
            if matches!(pair, ("you", "know") | ("i", "mean"))
                && aside
                && !prev_is(PHRASE_IS_REAL_AFTER)
                && !next.punct_before
            {
                i += 2;
                continue;
            }
        }
        out.push(w.clone());
        i += 1;
    }
    out
}

/// Whether a word is (part of) a number, so that repeats of it are real ("seven seven").
fn is_numeric_word(w: &str) -> bool {
    w.starts_with(|c: char| c.is_ascii_digit())
        || lookup(UNITS, w).is_some()
        || lookup(TEENS, w).is_some()
        || lookup(TENS, w).is_some()
        || matches!(w, "oh" | "o" | "double" | "triple" | "hundred" | "nought")
}

/// Collapses restarts: "i i want" → "i want", "can i can i book" → "can i book". Numbers are
/// never collapsed (phone digits repeat).
fn collapse_repeats(words: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(words.len());
    for w in words {
        let n = out.len();
        if n >= 1 && out[n - 1] == w && !is_numeric_word(&w) {
            continue;
        }
        // A repeated pair: "can i can i" → drop the first copy once the second completes.
        if n >= 3
            && out[n - 1] == out[n - 3]
            && out[n - 2] == w
            && !is_numeric_word(&w)
            && !is_numeric_word(&out[n - 1])
        {
            out.pop();
            continue;
        }
        out.push(w);
    }
    out
}

/// Number words to digits, ordinals to "14th", "o clock" to "oclock", "p m" to "pm".
fn convert_numbers(words: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(words.len());
    let mut i = 0;
    let get = |j: usize| words.get(j).map(String::as_str);
    while i < words.len() {
        let w = words[i].as_str();
        let prev = out.last().map(String::as_str);
        let next = get(i + 1);
        // o'clock
        if w == "o'clock" || w == "oclock" || (w == "o" && next == Some("clock")) {
            out.push("oclock".into());
            i += if w == "o" { 2 } else { 1 };
            continue;
        }
        // "p m" / "a m" after a number (what "p.m." lexes to).
        if (w == "p" || w == "a")
            && next == Some("m")
            && prev.is_some_and(|p| p.starts_with(|c: char| c.is_ascii_digit()) || p == "oclock")
        {
            out.push(format!("{w}m"));
            i += 2;
            continue;
        }
        if matches!(w, "p.m" | "a.m") {
            out.push(w.replace('.', ""));
            i += 1;
            continue;
        }
        // Tens, optionally with a unit or unit ordinal: "twenty five", "twenty first".
        if let Some(t) = lookup(TENS, w) {
            if let Some(u) = next.and_then(|n| lookup(UNITS, n)).filter(|u| *u > 0) {
                out.push((t + u).to_string());
                i += 2;
            } else if let Some(o) = next.and_then(|n| lookup(ORDINALS, n)).filter(|o| *o < 10) {
                out.push(format!("{}{}", t + o, ordinal_suffix(t + o)));
                i += 2;
            } else {
                out.push(t.to_string());
                i += 1;
            }
            continue;
        }
        let small = lookup(UNITS, w).or(lookup(TEENS, w));
        if let Some(n) = small {
            // "nine hundred", "one hundred and fifty"
            if next == Some("hundred") {
                let mut value = n * 100;
                let mut j = i + 2;
                if get(j) == Some("and") && get(j + 1).is_some_and(|x| small_value(x).is_some()) {
                    j += 1;
                }
                if let Some(t) = get(j).and_then(|x| lookup(TENS, x)) {
                    value += t;
                    j += 1;
                    if let Some(u) = get(j).and_then(|x| lookup(UNITS, x)).filter(|u| *u > 0) {
                        value += u;
                        j += 1;
                    }
                } else if let Some(s) = get(j).and_then(|x| lookup(UNITS, x).or(lookup(TEENS, x))) {
                    value += s;
                    j += 1;
                }
                out.push(value.to_string());
                i = j;
                continue;
            }
            if w == "one" && !one_is_a_number(prev, next) {
                out.push(w.into());
            } else {
                out.push(n.to_string());
            }
            i += 1;
            continue;
        }
        if let Some(n) = lookup(ORDINALS, w) {
            let date_context = n > 3
                || prev.is_some_and(|p| is_month(p) || is_weekday(p))
                || next == Some("of")
                || (prev == Some("the")
                    && out.len() >= 2
                    && (out[out.len() - 2] == "on"
                        || is_weekday(&out[out.len() - 2])
                        || is_month(&out[out.len() - 2])));
            let not_a_date = next.is_some_and(|n| ORDINAL_IS_NOT_A_DATE_BEFORE.contains(&n));
            if date_context && !not_a_date {
                out.push(format!("{n}{}", ordinal_suffix(n)));
            } else {
                out.push(w.into());
            }
            i += 1;
            continue;
        }
        out.push(w.into());
        i += 1;
    }
    out
}

fn small_value(w: &str) -> Option<u32> {
    lookup(UNITS, w).or(lookup(TEENS, w)).or(lookup(TENS, w))
}

fn one_is_a_number(prev: Option<&str>, next: Option<&str>) -> bool {
    if next.is_some_and(|n| matches!(n, "of" | "point" | "stage" | "day" | "more")) {
        return false;
    }
    prev.is_some_and(|p| ONE_IS_A_NUMBER_AFTER.contains(&p))
        || next.is_some_and(|n| {
            matches!(n, "am" | "pm" | "oclock" | "o'clock" | "ish" | "hundred")
                || (n.starts_with(|c: char| c.is_ascii_digit()))
                || lookup(TENS, n).is_some()
                || lookup(TEENS, n).is_some()
        })
}

/// The normal form of a caller's words: see the module docs.
pub fn normalize(raw: &str) -> String {
    let words = drop_fillers(lex(raw));
    let words = collapse_repeats(words.into_iter().map(|w| w.text).collect());
    convert_numbers(words).join(" ")
}

/// The words of a normalised text.
pub fn tokens(norm: &str) -> Vec<&str> {
    norm.split_whitespace().collect()
}

/// Fewest digits a phone number can have: UK numbers are 10–11 digits, but a caller may give a
/// local 7-digit number; anything shorter is a time, a price or a count.
pub const MIN_PHONE_DIGITS: usize = 7;

/// A phone number spoken as digits or words: "0 7 9 1 1 1 2 3 4 5 6", "07700 900 123",
/// "+44 20 7123 4567", "oh seven seven double oh, nine hundred, four five six". Returns the
/// digits (with a leading `+` if the caller said one) of the longest such run, if it has at
/// least [`MIN_PHONE_DIGITS`] digits.
///
/// A run is broken by any word that is not a digit word (fillers excepted) and by `:` or `/`
/// (so times and dates never join a number).
pub fn digits_in(raw: &str) -> Option<String> {
    let lower = raw.to_lowercase();
    // Tokens: alphanumeric runs, "+" on its own, and breaks (":" "/").
    let mut toks: Vec<String> = Vec::new();
    let mut cur = String::new();
    for c in lower.chars() {
        if c.is_alphanumeric() || c == '\'' {
            cur.push(c);
        } else {
            if !cur.is_empty() {
                toks.push(std::mem::take(&mut cur));
            }
            match c {
                '+' => toks.push("+".into()),
                ':' | '/' => toks.push("|".into()),
                _ => {}
            }
        }
    }
    if !cur.is_empty() {
        toks.push(cur);
    }

    let digit_word = |w: &str| -> Option<u32> {
        match w {
            "oh" | "o" | "nought" | "zero" => Some(0),
            _ => lookup(UNITS, w),
        }
    };
    let mut best: Option<String> = None;
    let mut run = String::new();
    let mut plus = false;
    let mut i = 0;
    let finish = |run: &mut String, plus: &mut bool, best: &mut Option<String>| {
        let count = run.chars().filter(char::is_ascii_digit).count();
        if count >= MIN_PHONE_DIGITS
            && best
                .as_ref()
                .is_none_or(|b| b.chars().filter(char::is_ascii_digit).count() < count)
        {
            *best = Some(if *plus {
                format!("+{run}")
            } else {
                run.clone()
            });
        }
        run.clear();
        *plus = false;
    };
    while i < toks.len() {
        let t = toks[i].as_str();
        let next = toks.get(i + 1).map(String::as_str);
        if t.chars().all(|c| c.is_ascii_digit()) {
            run.push_str(t);
        } else if t == "+"
            || (t == "plus"
                && next.is_some_and(|n| {
                    n.starts_with(|c: char| c.is_ascii_digit()) || digit_word(n).is_some()
                }))
        {
            finish(&mut run, &mut plus, &mut best);
            plus = true;
        } else if let (Some(times), Some(d)) = (
            match t {
                "double" => Some(2),
                "triple" => Some(3),
                _ => None,
            },
            next.and_then(digit_word),
        ) {
            for _ in 0..times {
                run.push_str(&d.to_string());
            }
            i += 1;
        } else if let Some(d) = digit_word(t) {
            // "oh" only counts next to other digits ("oh wait" is not a zero).
            let lone_oh = matches!(t, "oh" | "o")
                && run.is_empty()
                && !next.is_some_and(|n| {
                    n.starts_with(|c: char| c.is_ascii_digit())
                        || digit_word(n).is_some()
                        || matches!(n, "double" | "triple")
                });
            if lone_oh {
                finish(&mut run, &mut plus, &mut best);
            } else {
                run.push_str(&d.to_string());
            }
        } else if let Some(n) = lookup(TEENS, t) {
            run.push_str(&n.to_string());
        } else if let Some(n) = lookup(TENS, t) {
            match next.and_then(|x| lookup(UNITS, x)).filter(|u| *u > 0) {
                Some(u) => {
                    run.push_str(&(n + u).to_string());
                    i += 1;
                }
                None => run.push_str(&n.to_string()),
            }
        } else if t == "hundred" && !run.is_empty() {
            run.push_str("00");
        } else if t == "thousand" && !run.is_empty() {
            run.push_str("000");
        } else if FILLERS.contains(&t) {
            // "oh seven seven, um, nine hundred": a filler does not end the number.
        } else {
            finish(&mut run, &mut plus, &mut best);
        }
        i += 1;
    }
    finish(&mut run, &mut plus, &mut best);
    best
}

/// Fewest letters a spelled-out name has ("S-I-O-B-H-A-N"); two letters are more often an
/// abbreviation than a name.
const MIN_SPELLED_LETTERS: usize = 3;

/// A name spelled letter by letter, "S-I-O-B-H-A-N" or "s i o b h a n", as "Siobhan". The
/// longest spelled run wins.
pub fn spelled_name(raw: &str) -> Option<String> {
    let mut best: Option<String> = None;
    let mut consider = |letters: &str| {
        if letters.chars().count() >= MIN_SPELLED_LETTERS
            && best
                .as_ref()
                .is_none_or(|b| b.chars().count() < letters.chars().count())
        {
            let mut cs = letters.chars();
            let first = cs
                .next()
                .map(|c| c.to_uppercase().collect::<String>())
                .unwrap_or_default();
            best = Some(first + &cs.as_str().to_lowercase());
        }
    };
    // Hyphen- or dot-joined: "S-I-O-B-H-A-N", "S.I.O.B.H.A.N".
    for word in raw.split(|c: char| c.is_whitespace() || c == ',') {
        let parts: Vec<&str> = word
            .trim_matches(|c: char| !c.is_alphabetic())
            .split(['-', '.'])
            .collect();
        if parts.len() >= 2
            && parts
                .iter()
                .all(|p| p.chars().count() == 1 && p.chars().all(char::is_alphabetic))
        {
            consider(&parts.concat());
        }
    }
    // Space-separated single letters: "s i o b h a n".
    let mut run = String::new();
    for word in raw.split(|c: char| c.is_whitespace() || c == ',') {
        let w = word.trim_matches(|c: char| !c.is_alphabetic());
        if w.chars().count() == 1 && w.chars().all(char::is_alphabetic) {
            run.push_str(w);
        } else {
            consider(&run);
            run.clear();
        }
    }
    consider(&run);
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fillers_and_punctuation_go() {
        assert_eq!(
            normalize("Yeah hi, um, can I book in for a check up?"),
            "yeah hi can i book in for a check up"
        );
        assert_eq!(
            normalize("Can I come in on the 14th, like, around 11?"),
            "can i come in on the 14th around 11"
        );
        assert_eq!(
            normalize("I'd like, um, a check-up."),
            "i'd like a check up"
        );
        assert_eq!(normalize("You know, I mean, it's fine"), "it's fine");
        assert_eq!(
            normalize("Do you know where you are?"),
            "do you know where you are"
        );
        assert_eq!(
            normalize("I would like a cleaning"),
            "i would like a cleaning"
        );
    }

    #[test]
    fn restarts_collapse_but_digits_do_not() {
        assert_eq!(
            normalize("I I want to, can I can I book"),
            "i want to can i book"
        );
        assert_eq!(normalize("seven seven double oh"), "7 7 double oh");
        assert_eq!(normalize("0 7 9 1 1 1 2"), "0 7 9 1 1 1 2");
    }

    #[test]
    fn times_keep_their_separators() {
        assert_eq!(normalize("At 3:30pm, or 3.30?"), "at 3:30 pm or 3.30");
        assert_eq!(normalize("3 p.m. please."), "3 pm please");
        assert_eq!(normalize("Four o'clock"), "4 oclock");
        assert_eq!(normalize("ten o clock"), "10 oclock");
        assert_eq!(normalize("11ish"), "11 ish");
        assert_eq!(normalize("elevenish"), "11 ish");
        assert_eq!(normalize("14/12"), "14/12");
        assert_eq!(normalize("It's £45.50."), "it's £45.50");
    }

    #[test]
    fn number_words() {
        assert_eq!(normalize("twenty five"), "25");
        assert_eq!(normalize("three thirty"), "3 30");
        assert_eq!(normalize("half past two"), "half past 2");
        assert_eq!(normalize("quarter to four"), "quarter to 4");
        assert_eq!(normalize("at one"), "at 1");
        assert_eq!(normalize("one thirty"), "1 30");
        assert_eq!(normalize("book one for friday"), "book one for friday");
        assert_eq!(normalize("nine hundred"), "900");
        assert_eq!(normalize("one hundred and fifty"), "150");
    }

    #[test]
    fn to_and_for_are_never_numbers() {
        assert_eq!(
            normalize("I want to come in for a filling too"),
            "i want to come in for a filling too"
        );
    }

    #[test]
    fn ordinals() {
        assert_eq!(normalize("the fourteenth"), "the 14th");
        assert_eq!(normalize("the 14th"), "the 14th");
        assert_eq!(normalize("twenty first of march"), "21st of march");
        assert_eq!(normalize("on the third"), "on the 3rd");
        assert_eq!(normalize("monday the first"), "monday the 1st");
        assert_eq!(normalize("march second"), "march 2nd");
        assert_eq!(normalize("first thing monday"), "first thing monday");
        assert_eq!(normalize("the first one please"), "the first one please");
        assert_eq!(normalize("I'll take the second"), "i'll take the second");
    }

    #[test]
    fn normalize_is_idempotent() {
        for s in [
            "Yeah hi, um, can I book in for a check up?",
            "on the 14th, like, around 11",
            "quarter to four on monday the third",
            "3 p.m.",
            "oh seven seven double oh, nine hundred",
            "I'd like, like, a check-up",
        ] {
            let once = normalize(s);
            assert_eq!(normalize(&once), once, "{s}");
        }
    }

    #[test]
    fn phone_numbers() {
        assert_eq!(
            digits_in("You can get me on 07700 900 123.").as_deref(),
            Some("07700900123")
        );
        assert_eq!(
            digits_in("Oh seven seven double oh, nine hundred, four five six.").as_deref(),
            Some("07700900456")
        );
        assert_eq!(
            digits_in("it's 0 7 9 1 1 1 2 3 4 5 6").as_deref(),
            Some("07911123456")
        );
        assert_eq!(
            digits_in("+44 20 7123 4567").as_deref(),
            Some("+442071234567")
        );
        assert_eq!(
            digits_in("plus four four, seven seven double oh, nine hundred, one two three")
                .as_deref(),
            Some("+447700900123")
        );
        assert_eq!(digits_in("at 3:30 on the 14/12/2026"), None);
        assert_eq!(digits_in("Oh wait, it's for my husband"), None);
        assert_eq!(digits_in("book 2 fillings"), None);
    }

    #[test]
    fn spelled_names() {
        assert_eq!(
            spelled_name("Sorry, my name's spelt S-I-O-B-H-A-N.").as_deref(),
            Some("Siobhan")
        );
        assert_eq!(
            spelled_name("it's s i o b h a n").as_deref(),
            Some("Siobhan")
        );
        assert_eq!(spelled_name("I need a check-up"), None);
        assert_eq!(spelled_name("a b"), None);
    }
}
