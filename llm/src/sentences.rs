//! Streamed tokens into spoken sentences.
//!
//! A model streams a few characters at a time; text-to-speech wants whole sentences (a sentence
//! spoken in pieces sounds wrong, and one that waits for the whole reply costs the caller the
//! model's whole generation time). [`SentenceSplitter`] yields each sentence as soon as it is
//! known to be complete: at `.`, `!`, `?` or a line break followed by whitespace, except after
//! abbreviations that do not end a sentence ("Dr. Patel", "e.g. a filling", "3 p.m. works").
//! A sentence end that depends on the next word ("3 p.m." then "Thanks" or "works") waits for
//! that word's first letter.

/// Titles before a name: never a sentence end ("Dr. Patel").
const TITLES: &[&str] = &[
    "dr", "mr", "mrs", "ms", "mx", "prof", "st", "jr", "sr", "no", "vs", "approx", "dept", "mt",
];

/// Abbreviations inside a sentence: never a sentence end ("e.g. a filling").
const INNER: &[&str] = &["e.g", "i.e", "cf"];

/// Abbreviations that end a sentence only when the next word starts a new one (capital
/// letter): "3 p.m. works" goes on, "at 3 p.m. Thanks!" ends.
const TIMES: &[&str] = &["a.m", "p.m", "am", "pm"];

/// Longest piece held before it is spoken anyway, at a clause break (`,` `;` `:`) or, failing
/// that, a space: a model that writes a very long sentence must not keep the caller waiting
/// past the call core's per-event brain timeout. 240 characters is ~4 s of speech, ~60 tokens.
pub const MAX_HELD_CHARS: usize = 240;

/// Buffers streamed text and yields complete sentences.
#[derive(Debug, Default, Clone)]
pub struct SentenceSplitter {
    buf: String,
}

/// What the character after a `.` and its spaces says.
enum After {
    /// Not known yet: more text must arrive.
    Unknown,
    /// A letter or digit: lowercase/digit continue the sentence, uppercase starts a new one.
    Starts(char),
}

impl SentenceSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds streamed text; returns the sentences it completed, in order.
    pub fn push(&mut self, text: &str) -> Vec<String> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        while let Some(cut) = self.next_end() {
            let s = self.buf[..cut].trim().to_string();
            self.buf.drain(..cut);
            if !s.is_empty() {
                out.push(s);
            }
        }
        while self.buf.len() > MAX_HELD_CHARS {
            // A clause break or a space; failing both (one long word, a language without
            // spaces), a hard cut at the last character boundary within the limit.
            let cut = self.clause_break().unwrap_or_else(|| {
                let mut at = MAX_HELD_CHARS;
                while !self.buf.is_char_boundary(at) {
                    at -= 1;
                }
                at
            });
            let s = self.buf[..cut].trim().to_string();
            self.buf.drain(..cut);
            if !s.is_empty() {
                out.push(s);
            }
        }
        out
    }

    /// The end of the reply: whatever is left is the last sentence.
    pub fn finish(&mut self) -> Option<String> {
        let s = self.buf.trim().to_string();
        self.buf.clear();
        (!s.is_empty()).then_some(s)
    }

    /// Text held, not yet yielded.
    pub fn pending(&self) -> &str {
        &self.buf
    }

    /// Byte index just after the first complete sentence, if one is complete.
    fn next_end(&self) -> Option<usize> {
        let b = &self.buf;
        let chars: Vec<(usize, char)> = b.char_indices().collect();
        let mut i = 0;
        while i < chars.len() {
            let (at, c) = chars[i];
            if !matches!(c, '.' | '!' | '?' | '\n' | '。' | '！' | '？') {
                i += 1;
                continue;
            }
            if c == '\n' {
                return Some(at + 1);
            }
            if matches!(c, '。' | '！' | '？') {
                // Full-width ends need no space after them; closing quotes stay with them.
                let mut j = i + 1;
                while j < chars.len() && matches!(chars[j].1, '」' | '』' | '）' | '”' | '’')
                {
                    j += 1;
                }
                return Some(chars.get(j).map_or(b.len(), |&(e, _)| e));
            }
            // Closing quotes or brackets belong to the sentence.
            let mut j = i + 1;
            while j < chars.len() && matches!(chars[j].1, '"' | '\'' | ')' | '”' | '’') {
                j += 1;
            }
            let Some(&(end, next)) = chars.get(j) else {
                // Punctuation last in the buffer: the next character decides.
                return None;
            };
            if !next.is_whitespace() {
                // "8.30", "e.g" mid-abbreviation, "?!": not an end here.
                i += 1;
                continue;
            }
            if c == '.' {
                let word = last_word(&b[..at]).to_lowercase();
                let word = word.trim_start_matches(['(', '"', '\'']);
                let initial = word.chars().count() == 1 && word.chars().all(char::is_alphabetic);
                if TITLES.contains(&word) || INNER.contains(&word) || initial {
                    i += 1;
                    continue;
                }
                if TIMES.contains(&word) {
                    match after_spaces(&chars[j..]) {
                        After::Unknown => return None,
                        After::Starts(n) if !n.is_uppercase() => {
                            i += 1;
                            continue;
                        }
                        After::Starts(_) => {}
                    }
                }
            }
            return Some(end);
        }
        None
    }

    /// Byte index after the last clause break (or space) in the held text.
    fn clause_break(&self) -> Option<usize> {
        let b = &self.buf;
        b.rfind([',', ';', ':'])
            .map(|i| i + 1)
            .or_else(|| b.trim_end().rfind(' ').map(|i| i + 1))
            .filter(|&i| i > 0)
    }
}

/// The word just before byte `end` (the text before a `.`).
fn last_word(text: &str) -> &str {
    let start = text.rfind(|c: char| c.is_whitespace()).map_or(0, |i| i + 1);
    &text[start..]
}

fn after_spaces(rest: &[(usize, char)]) -> After {
    rest.iter()
        .map(|&(_, c)| c)
        .find(|c| !c.is_whitespace())
        .map_or(After::Unknown, After::Starts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `text` a few characters at a time, as a model streams it, and collects every
    /// sentence (the tail included).
    fn split(text: &str, step: usize) -> Vec<String> {
        let mut s = SentenceSplitter::new();
        let chars: Vec<char> = text.chars().collect();
        let mut out = Vec::new();
        for piece in chars.chunks(step) {
            out.extend(s.push(&piece.iter().collect::<String>()));
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn sentences_end_at_terminal_punctuation() {
        for step in [1, 2, 3, 7, 100] {
            assert_eq!(
                split(
                    "Hello there! We open at 8.30 tomorrow. Is that ok? Great",
                    step
                ),
                vec![
                    "Hello there!",
                    "We open at 8.30 tomorrow.",
                    "Is that ok?",
                    "Great"
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn abbreviations_do_not_split_a_sentence() {
        for step in [1, 4, 100] {
            assert_eq!(
                split(
                    "Dr. Patel can see you at 3 p.m. tomorrow. Mr. and Mrs. Jones booked e.g. a \
                     check-up at 9 a.m. on Friday. See you at 3 p.m. Thanks for calling!",
                    step
                ),
                vec![
                    "Dr. Patel can see you at 3 p.m. tomorrow.",
                    "Mr. and Mrs. Jones booked e.g. a check-up at 9 a.m. on Friday.",
                    "See you at 3 p.m.",
                    "Thanks for calling!"
                ],
                "step {step}"
            );
        }
        assert_eq!(
            split("Yes, 3 p.m. works. Ask for J. Smith at reception.", 2),
            vec!["Yes, 3 p.m. works.", "Ask for J. Smith at reception."]
        );
    }

    #[test]
    fn a_sentence_is_yielded_as_soon_as_it_is_complete() {
        let mut s = SentenceSplitter::new();
        assert!(s.push("I have Monday at nine").is_empty());
        assert!(s.push(".").is_empty(), "the next character decides");
        assert_eq!(s.push(" "), vec!["I have Monday at nine."]);
        // "p.m." waits for the next word: "works" continues, "Would" starts a new sentence.
        assert!(s.push("Or at 3 p.m. ").is_empty());
        assert_eq!(s.push("Would"), vec!["Or at 3 p.m."]);
        assert_eq!(s.pending().trim(), "Would");
        assert!(s.push(" that suit you").is_empty());
        assert_eq!(s.finish().as_deref(), Some("Would that suit you"));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn quotes_and_line_breaks() {
        assert_eq!(
            split("They said \"see you soon.\" Then they left.\nBye", 3),
            vec!["They said \"see you soon.\"", "Then they left.", "Bye"]
        );
    }

    #[test]
    fn a_very_long_sentence_is_spoken_at_a_clause_break() {
        let long = "We have appointments on many days, ".repeat(10);
        let mut s = SentenceSplitter::new();
        let out = s.push(&long);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].ends_with(','), "{out:?}");
        assert!(s.pending().len() <= MAX_HELD_CHARS);
    }

    #[test]
    fn text_without_any_break_is_cut_hard_at_a_character_boundary() {
        // No space, no clause break, multi-byte characters: never held past the limit, never
        // cut inside a character.
        let long = "é".repeat(MAX_HELD_CHARS * 2);
        let mut s = SentenceSplitter::new();
        let out = s.push(&long);
        assert!(!out.is_empty(), "spoken before the end");
        assert!(out.iter().all(|p| p.len() <= MAX_HELD_CHARS), "{out:?}");
        assert!(s.pending().len() <= MAX_HELD_CHARS);
        let mut all: String = out.concat();
        all.push_str(&s.finish().unwrap_or_default());
        assert_eq!(all, long, "nothing lost");
    }

    #[test]
    fn full_width_punctuation_ends_a_sentence() {
        for step in [1, 2, 100] {
            assert_eq!(
                split("こんにちは。金曜日は空いています！いかがですか？はい", step),
                vec![
                    "こんにちは。",
                    "金曜日は空いています！",
                    "いかがですか？",
                    "はい"
                ],
                "step {step}"
            );
        }
    }
}
