//! Word error rate, for tests and benchmarks of speech-to-text.
//!
//! Both texts are normalised first, as speech-to-text evaluations do (Whisper's own English
//! normaliser goes further): case and punctuation are dropped, numbers written as digits are
//! spelled out ("5" → "five", "555-1234" → "five five five one two three four", "3:30" →
//! "three thirty"), and a few title abbreviations are expanded ("Dr." → "doctor"), so a
//! transcript is not charged for writing what was said in another form.

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

/// Words for a run of digits: 0–99 as a number, longer runs digit by digit (phone numbers).
fn spell_digits(digits: &str, out: &mut Vec<String>) {
    match digits.parse::<usize>() {
        Ok(n) if digits.len() <= 2 && n < 20 => out.push(ONES[n].into()),
        Ok(n) if digits.len() <= 2 => {
            out.push(TENS[n / 10].into());
            if n % 10 != 0 {
                out.push(ONES[n % 10].into());
            }
        }
        _ => out.extend(
            digits
                .chars()
                .filter_map(|c| c.to_digit(10))
                .map(|d| ONES[d as usize].to_string()),
        ),
    }
}

/// Lowercase words with punctuation removed (apostrophes inside words kept: "that's"),
/// numbers spelled out and title abbreviations expanded.
pub fn normalize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for raw in text.split(|c: char| c.is_whitespace() || c == '-' || c == ':' || c == '/') {
        let w: String = raw
            .trim_matches(|c: char| !c.is_alphanumeric())
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == '\'')
            .flat_map(char::to_lowercase)
            .collect();
        if w.is_empty() {
            continue;
        }
        if w.chars().all(|c| c.is_ascii_digit()) {
            spell_digits(&w, &mut out);
            continue;
        }
        let expanded = match w.as_str() {
            "dr" => "doctor",
            "mr" => "mister",
            "mrs" => "missus",
            "ok" => "okay",
            other => other,
        };
        out.push(expanded.to_string());
    }
    out
}

/// Word-level edit distance (substitutions, insertions, deletions) between the normalised
/// texts, and the reference's length in words.
pub fn errors(reference: &str, hypothesis: &str) -> (usize, usize) {
    let r = normalize(reference);
    let h = normalize(hypothesis);
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut cur = vec![i + 1; h.len() + 1];
        for (j, hw) in h.iter().enumerate() {
            let sub = prev[j] + usize::from(rw != hw);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    (prev[h.len()], r.len())
}

/// Word error rate of `hypothesis` against `reference` (0.0 is perfect; can exceed 1.0).
pub fn wer(reference: &str, hypothesis: &str) -> f64 {
    let (e, n) = errors(reference, hypothesis);
    e as f64 / n.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wer_counts_substitutions_insertions_and_deletions() {
        assert_eq!(wer("Hello, there!", "hello there"), 0.0);
        assert_eq!(errors("book a cleaning", "book the cleaning"), (1, 3));
        assert_eq!(errors("book a cleaning", "book cleaning"), (1, 3));
        assert_eq!(
            errors("book a cleaning", "please book a cleaning now"),
            (2, 3)
        );
        assert_eq!(errors("", "noise"), (1, 0));
        assert_eq!(
            normalize("That's all. Thank-you"),
            vec!["that's", "all", "thank", "you"]
        );
    }

    #[test]
    fn numbers_and_titles_are_written_out() {
        assert_eq!(
            wer(
                "my number is five five five, one two three four",
                "My number is 555-1234."
            ),
            0.0
        );
        assert_eq!(wer("around five", "around 5"), 0.0);
        assert_eq!(wer("at three thirty", "at 3:30"), 0.0);
        assert_eq!(wer("twenty one", "21"), 0.0);
        assert_eq!(wer("Is Doctor Patel in", "Is Dr. Patel in"), 0.0);
        assert_eq!(errors("around five", "around 6"), (1, 2));
    }
}
