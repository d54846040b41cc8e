//! Phonemes for Piper from espeak-ng, kept behind a process boundary.
//!
//! espeak-ng is GPL-3; Voxanne is Apache-2.0, so it is run as a child process (`espeak-ng -q
//! --ipa`, text on stdin, IPA on stdout), never linked. One short-lived process per sentence
//! costs ~10 ms, against ~150 ms of synthesis for a one-second sentence, and cannot get out of
//! step with its caller the way a long-lived pipe could.
//!
//! espeak-ng prints one line of IPA per clause. Piper's own phonemizer keeps each clause's
//! punctuation (its voices were trained on it: commas and question marks shape prosody), so the
//! clause punctuation found in the text is put back after each line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use agent::engine::EngineError;

/// One clause: IPA phonemes and the punctuation that ended it (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    pub phonemes: String,
    pub punctuation: Option<char>,
    /// Words in the clause's text (for chunking decisions).
    pub words: usize,
}

/// The espeak-ng command line phonemizer.
#[derive(Debug, Clone)]
pub struct Espeak {
    binary: PathBuf,
    voice: String,
}

const CLAUSE_PUNCTUATION: [char; 6] = [',', '.', '!', '?', ';', ':'];

impl Espeak {
    /// Finds `espeak-ng` (`VOXANNE_ESPEAK` or `PATH`) and checks that `voice` exists.
    pub fn new(voice: &str) -> Result<Espeak, EngineError> {
        let binary = std::env::var_os("VOXANNE_ESPEAK")
            .map(PathBuf::from)
            .or_else(|| find_on_path("espeak-ng"))
            .ok_or_else(|| {
                EngineError::Unavailable(
                    "espeak-ng not found (Piper needs it for phonemes): install it with \
                     `apt-get install espeak-ng`, or set VOXANNE_ESPEAK to its path"
                        .into(),
                )
            })?;
        let espeak = Espeak {
            binary,
            voice: voice.to_string(),
        };
        // A real run both checks the voice and warms the page cache.
        let probe = espeak.run("test")?;
        if probe.trim().is_empty() {
            return Err(EngineError::Unavailable(format!(
                "espeak-ng produced no phonemes for voice {voice:?}"
            )));
        }
        Ok(espeak)
    }

    fn run(&self, text: &str) -> Result<String, EngineError> {
        let mut child = Command::new(&self.binary)
            .args(["-q", "--ipa", "-b", "1", "-v", &self.voice])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                EngineError::Unavailable(format!("cannot run {}: {e}", self.binary.display()))
            })?;
        // Text goes in on stdin (never as an argument: a leading '-' would be an option). One
        // line, so espeak-ng reads it as one utterance.
        // `[[…]]` would be read as raw phoneme input.
        let line: String = text
            .chars()
            .map(|c| {
                if c.is_control() || c == '[' || c == ']' {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(line.as_bytes())
                .and_then(|()| stdin.write_all(b"\n"))
                .map_err(|e| EngineError::Failed(format!("espeak-ng stdin: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| EngineError::Failed(format!("espeak-ng: {e}")))?;
        if !out.status.success() {
            return Err(EngineError::Failed(format!(
                "espeak-ng exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        String::from_utf8(out.stdout)
            .map_err(|_| EngineError::Failed("espeak-ng printed invalid UTF-8".into()))
    }

    /// Phonemizes `text` into clauses.
    pub fn phonemize(&self, text: &str) -> Result<Vec<Clause>, EngineError> {
        let ipa = self.run(text)?;
        let lines: Vec<&str> = ipa
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let clauses = split_clauses(text);
        if lines.len() == clauses.len() {
            return Ok(lines
                .iter()
                .zip(&clauses)
                .map(|(l, (punct, words))| Clause {
                    phonemes: l.to_string(),
                    punctuation: *punct,
                    words: *words,
                })
                .collect());
        }
        // espeak-ng split differently from the punctuation (long clause, brackets, quotes):
        // keep its lines, with the text's final punctuation at the end.
        let last = clauses.last().and_then(|(p, _)| *p);
        let n = lines.len();
        let words = text.split_whitespace().count();
        Ok(lines
            .iter()
            .enumerate()
            .map(|(i, l)| Clause {
                phonemes: l.to_string(),
                punctuation: if i + 1 == n { last } else { None },
                words: words / n.max(1),
            })
            .collect())
    }
}

/// The clause boundaries espeak-ng makes at punctuation: the punctuation mark ending each
/// clause and the clause's word count. Only marks followed by whitespace or the end count
/// ("8.30" and "e.g." do not split).
pub fn split_clauses(text: &str) -> Vec<(Option<char>, usize)> {
    let mut out = Vec::new();
    let mut words = 0;
    let mut in_word = false;
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_alphanumeric() {
            if !in_word {
                words += 1;
                in_word = true;
            }
            continue;
        }
        let next_is_space = chars.get(i + 1).is_none_or(|n| n.is_whitespace());
        // "I'm", "8.30" and "3:30" are one word each.
        in_word = in_word && (c == '\'' || (matches!(c, '.' | ':') && !next_is_space));
        if CLAUSE_PUNCTUATION.contains(&c) && next_is_space && words > 0 {
            // In a run like "?!" the last mark ends the clause.
            out.push((Some(c), words));
            words = 0;
        }
    }
    if words > 0 {
        out.push((None, words));
    }
    out
}

pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clauses_follow_punctuation_not_decimals() {
        assert_eq!(
            split_clauses("Hello, we open at 8.30 tomorrow. Is that ok?"),
            vec![(Some(','), 1), (Some('.'), 5), (Some('?'), 3)]
        );
        assert_eq!(split_clauses("No punctuation here"), vec![(None, 3)]);
        assert_eq!(
            split_clauses("Really?! Yes"),
            vec![(Some('!'), 1), (None, 1)]
        );
        assert_eq!(split_clauses("I'm fine."), vec![(Some('.'), 2)]);
        assert!(split_clauses(" ... ").is_empty());
    }
}
