//! Word error rate, for tests and benchmarks of speech-to-text.

/// Lowercase words with punctuation removed (apostrophes inside words kept: "that's").
pub fn normalize(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || c == '-')
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'')
                .flat_map(char::to_lowercase)
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect()
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
}
