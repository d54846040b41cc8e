//! BERT's uncased WordPiece tokenizer, written out so that embedding needs no tokenizer crate.
//!
//! It reproduces what Hugging Face `tokenizers` does for `bert-base-uncased`-style vocabularies
//! (the `BertNormalizer` + `BertPreTokenizer` + `WordPiece` of all-MiniLM-L6-v2's
//! `tokenizer.json`), step by step:
//!
//! 1. Clean: drop NUL, U+FFFD and control/format characters; every whitespace becomes a space.
//! 2. Put spaces around CJK ideographs (each is a word of its own).
//! 3. Strip accents (NFD, then drop combining marks) and lowercase.
//! 4. Split on whitespace, and make every punctuation character (ASCII punctuation or Unicode
//!    category P) a word of its own: `check-up.` → `check`, `-`, `up`, `.`.
//! 5. WordPiece: longest vocabulary prefix first, continuations prefixed `##`; a word with a
//!    piece the vocabulary lacks, or longer than [`MAX_WORD_CHARS`], becomes `[UNK]` whole.
//!
//! [`WordPiece::encode`] wraps the pieces in `[CLS]` … `[SEP]` and truncates to a maximum
//! length (the model's, see [`crate::minilm::MAX_TOKENS`]).

use std::collections::HashMap;

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};

/// Words longer than this many characters are `[UNK]` without trying pieces: BERT's
/// `max_input_chars_per_word` (100). Real words are far shorter; this bounds the greedy search
/// on pasted junk.
pub const MAX_WORD_CHARS: usize = 100;

/// Prefix of a piece that continues a word.
const CONTINUATION: &str = "##";

/// Why a vocabulary was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VocabError {
    #[error("vocabulary lacks the special token {0}")]
    MissingSpecial(&'static str),
    #[error("vocabulary is empty")]
    Empty,
}

/// A loaded vocabulary (`vocab.txt`: one token a line, the line number is its id).
#[derive(Debug, Clone)]
pub struct WordPiece {
    ids: HashMap<String, u32>,
    tokens: Vec<String>,
    cls: u32,
    sep: u32,
    unk: u32,
}

/// Token ids for the model, with how many word pieces did not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    /// `[CLS]`, the pieces, `[SEP]`.
    pub ids: Vec<i64>,
    /// Pieces dropped to respect the maximum length (0 when the text fitted).
    pub truncated: usize,
}

impl WordPiece {
    /// Parses `vocab.txt` text. Requires `[CLS]`, `[SEP]` and `[UNK]`.
    pub fn from_vocab(text: &str) -> Result<WordPiece, VocabError> {
        let tokens: Vec<String> = text
            .lines()
            .map(|l| l.trim_end_matches('\r').to_string())
            .collect();
        if tokens.is_empty() {
            return Err(VocabError::Empty);
        }
        let mut ids = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            // The first occurrence wins, as in Hugging Face's loader.
            ids.entry(t.clone()).or_insert(i as u32);
        }
        let special = |name: &'static str| {
            ids.get(name)
                .copied()
                .ok_or(VocabError::MissingSpecial(name))
        };
        Ok(WordPiece {
            cls: special("[CLS]")?,
            sep: special("[SEP]")?,
            unk: special("[UNK]")?,
            ids,
            tokens,
        })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The id of a whole token (e.g. `[PAD]`), if the vocabulary has it.
    pub fn id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    /// The token with `id`, if any.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The word-piece ids of `text`, without `[CLS]`/`[SEP]`.
    pub fn piece_ids(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        for word in pre_tokenize(&normalize(text)) {
            self.word_pieces(&word, &mut out);
        }
        out
    }

    /// The word pieces of `text` as strings (for tests and debugging).
    pub fn tokenize(&self, text: &str) -> Vec<&str> {
        self.piece_ids(text)
            .into_iter()
            .map(|id| self.tokens[id as usize].as_str())
            .collect()
    }

    /// `[CLS]` pieces `[SEP]`, at most `max_len` ids (at least 2): pieces past the limit are
    /// dropped from the end, as the model's tokenizer truncates.
    pub fn encode(&self, text: &str, max_len: usize) -> Encoding {
        let pieces = self.piece_ids(text);
        let room = max_len.max(2) - 2;
        let keep = pieces.len().min(room);
        let mut ids = Vec::with_capacity(keep + 2);
        ids.push(i64::from(self.cls));
        ids.extend(pieces[..keep].iter().map(|&i| i64::from(i)));
        ids.push(i64::from(self.sep));
        Encoding {
            ids,
            truncated: pieces.len() - keep,
        }
    }

    /// Greedy longest-match-first WordPiece of one word.
    fn word_pieces(&self, word: &str, out: &mut Vec<u32>) {
        if word.chars().count() > MAX_WORD_CHARS {
            out.push(self.unk);
            return;
        }
        let start_len = out.len();
        let mut start = 0;
        let mut candidate = String::with_capacity(word.len() + CONTINUATION.len());
        while start < word.len() {
            // Char boundaries from the end of the word down to just past `start`.
            let mut found = None;
            let mut end = word.len();
            while end > start {
                candidate.clear();
                if start > 0 {
                    candidate.push_str(CONTINUATION);
                }
                candidate.push_str(&word[start..end]);
                if let Some(&id) = self.ids.get(candidate.as_str()) {
                    found = Some((id, end));
                    break;
                }
                end = prev_boundary(word, end);
            }
            match found {
                Some((id, end)) => {
                    out.push(id);
                    start = end;
                }
                None => {
                    out.truncate(start_len);
                    out.push(self.unk);
                    return;
                }
            }
        }
    }
}

/// The char boundary before `i` in `s` (`i` > 0 and on a boundary).
fn prev_boundary(s: &str, i: usize) -> usize {
    let mut j = i - 1;
    while !s.is_char_boundary(j) {
        j -= 1;
    }
    j
}

/// Steps 1–3: clean, space out CJK, strip accents, lowercase.
pub fn normalize(text: &str) -> String {
    let mut cleaned = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\0' || c == '\u{fffd}' || is_control(c) {
            continue;
        }
        if is_whitespace(c) {
            cleaned.push(' ');
        } else if is_cjk(c) {
            cleaned.push(' ');
            cleaned.push(c);
            cleaned.push(' ');
        } else {
            cleaned.push(c);
        }
    }
    let stripped: String = cleaned
        .nfd()
        .filter(|&c| c.general_category() != GeneralCategory::NonspacingMark)
        .collect();
    stripped.to_lowercase()
}

/// Step 4: words and single punctuation characters.
pub fn pre_tokenize(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if c.is_whitespace() {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
        } else if is_punctuation(c) {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            words.push(c.to_string());
        } else {
            word.push(c);
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

fn is_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

/// Control, format, surrogate, private-use and unassigned characters (Unicode category C),
/// except tab and newlines, which count as whitespace.
fn is_control(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r') && c.general_category_group() == GeneralCategoryGroup::Other
}

/// BERT counts every ASCII non-alphanumeric symbol (`$`, `+`, `^`, `` ` `` …) as punctuation,
/// besides Unicode category P.
fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || c.general_category_group() == GeneralCategoryGroup::Punctuation
}

/// The CJK Unified Ideographs blocks BERT spaces out (not Hangul, Hiragana or Katakana).
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF
        | 0x3400..=0x4DBF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F
        | 0x2B920..=0x2CEAF
        | 0xF900..=0xFAFF
        | 0x2F800..=0x2FA1F)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small vocabulary in BERT's layout: specials, whole words, `##` continuations.
    fn vocab() -> WordPiece {
        let entries = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "i", "'", "d", "like", "a", "check", "-",
            "up", ".", "?", "is", "there", "parking", "un", "##aff", "##able", "cafe", "de",
            "##ja", "vu", "naive", "dr", "smith", "$", "5", "##0", "de", "中", "国",
        ];
        WordPiece::from_vocab(&entries.join("\n")).unwrap()
    }

    #[test]
    fn contractions_and_hyphens_split_at_punctuation() {
        assert_eq!(
            vocab().tokenize("I'd like a check-up."),
            ["i", "'", "d", "like", "a", "check", "-", "up", "."]
        );
    }

    #[test]
    fn rare_words_split_into_continuation_pieces() {
        assert_eq!(vocab().tokenize("Unaffable"), ["un", "##aff", "##able"]);
    }

    #[test]
    fn a_word_with_an_unknown_piece_is_unk_whole() {
        // "unaffablex": "un", "##aff", "##able" match, "##x" does not, so the word is one [UNK].
        assert_eq!(
            vocab().tokenize("is unaffablex parking"),
            ["is", "[UNK]", "parking"]
        );
        assert_eq!(vocab().tokenize("zebra"), ["[UNK]"]);
    }

    #[test]
    fn accents_are_stripped_and_case_folded() {
        assert_eq!(
            vocab().tokenize("Café DÉJÀ vu, naïve"),
            ["cafe", "de", "##ja", "vu", "[UNK]", "naive"]
        );
    }

    #[test]
    fn symbols_and_digits_follow_bert() {
        // `$` is ASCII punctuation for BERT; "50" is "5" + "##0".
        assert_eq!(vocab().tokenize("$50"), ["$", "5", "##0"]);
        assert_eq!(vocab().tokenize("Dr. Smith?"), ["dr", ".", "smith", "?"]);
    }

    #[test]
    fn controls_vanish_and_odd_whitespace_separates() {
        assert_eq!(
            vocab().tokenize("is\u{0007}\u{00a0}there\u{2003}parking\tis\r\nthere"),
            ["is", "there", "parking", "is", "there"]
        );
        // U+200B (zero-width space) is format (Cf): removed, so "is" and "there" join.
        assert_eq!(vocab().tokenize("is\u{200b}there"), ["[UNK]"]);
        assert_eq!(vocab().tokenize("is\u{0}there\u{fffd}"), ["[UNK]"]);
        assert_eq!(vocab().tokenize(" \u{2003} "), Vec::<&str>::new());
    }

    #[test]
    fn cjk_ideographs_are_words_of_their_own() {
        assert_eq!(vocab().tokenize("中国"), ["中", "国"]);
    }

    #[test]
    fn overlong_words_are_unk_without_search() {
        let long = "a".repeat(MAX_WORD_CHARS + 1);
        assert_eq!(vocab().tokenize(&long), ["[UNK]"]);
        // Exactly the limit is still searched ("a" has no "##a" here, so still [UNK], but via
        // the pieces).
        assert_eq!(vocab().tokenize(&"a".repeat(MAX_WORD_CHARS)), ["[UNK]"]);
    }

    #[test]
    fn encode_wraps_and_truncates() {
        let v = vocab();
        let e = v.encode("is there parking?", 128);
        assert_eq!(e.ids, [2, 15, 16, 17, 14, 3]);
        assert_eq!(e.truncated, 0);
        let e = v.encode("is there parking?", 4);
        assert_eq!(e.ids, [2, 15, 16, 3]);
        assert_eq!(e.truncated, 2);
        assert_eq!(v.encode("", 128).ids, [2, 3]);
    }

    #[test]
    fn duplicate_entries_keep_their_first_id() {
        // "de" is listed twice; the first id stays, so ids still match the model's table.
        let v = vocab();
        assert_eq!(v.piece_ids("de"), [22]);
        assert_eq!(v.token(22), Some("de"));
    }

    #[test]
    fn a_vocabulary_without_specials_is_refused() {
        assert_eq!(
            WordPiece::from_vocab("[PAD]\n[UNK]\n[SEP]\nhello").unwrap_err(),
            VocabError::MissingSpecial("[CLS]")
        );
        assert!(WordPiece::from_vocab("").is_err());
    }

    #[test]
    fn multibyte_words_search_on_char_boundaries() {
        // No piece matches the katakana word; the search must step over 3-byte characters without panicking.
        assert_eq!(vocab().tokenize("ナイス"), ["[UNK]"]);
    }
}
