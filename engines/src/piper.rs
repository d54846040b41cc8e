//! Text-to-speech with Piper voices (VITS, `.onnx` + `.onnx.json`) on ONNX Runtime.
//!
//! Text → espeak-ng IPA (a child process, see [`crate::espeak`]) → phoneme ids from the
//! voice's `phoneme_id_map` (`^`, then each phoneme followed by the pad `_`, then `$`) → the
//! model (`input`, `input_lengths`, `scales` = noise, length, noise-w) → f32 audio, clipped to
//! 16-bit. A sentence is synthesised clause by clause and each clause is streamed as soon as it
//! is ready, so the first audio leaves before the whole reply — or even the whole sentence —
//! is synthesised. Sessions (one intra-op thread each) are pooled and shared by all calls.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use agent::engine::{EngineError, TextToSpeech};
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;
use serde::Deserialize;

use crate::espeak::{Clause, Espeak};
use crate::models::{FETCH_COMMAND, ModelId};
use crate::onnx;

/// Clauses shorter than this many words are merged with the next (a lone "Hi," sounds clipped
/// and costs a model run of its own).
const MIN_CHUNK_WORDS: usize = 3;

#[derive(Debug, Clone, Deserialize)]
struct VoiceConfig {
    audio: AudioConfig,
    #[serde(default)]
    espeak: EspeakConfig,
    #[serde(default)]
    inference: InferenceConfig,
    phoneme_id_map: HashMap<String, Vec<i64>>,
    #[serde(default)]
    num_speakers: u32,
}

#[derive(Debug, Clone, Deserialize)]
struct AudioConfig {
    sample_rate: u32,
}

#[derive(Debug, Clone, Deserialize)]
struct EspeakConfig {
    voice: String,
}

impl Default for EspeakConfig {
    fn default() -> Self {
        EspeakConfig {
            voice: "en-us".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
struct InferenceConfig {
    noise_scale: f32,
    length_scale: f32,
    noise_w: f32,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        InferenceConfig {
            noise_scale: 0.667,
            length_scale: 1.0,
            noise_w: 0.8,
        }
    }
}

/// Piper text-to-speech, loaded once and shared by every call.
#[derive(Clone)]
pub struct PiperTts {
    inner: Arc<Inner>,
}

struct Inner {
    config: VoiceConfig,
    ids: HashMap<char, Vec<i64>>,
    espeak: Espeak,
    /// Idle model instances; a synthesis waits (on its blocking thread) for one.
    sessions: Mutex<Vec<ort::session::Session>>,
    returned: Condvar,
    name: String,
    path: PathBuf,
}

impl std::fmt::Debug for PiperTts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PiperTts")
            .field("voice", &self.inner.path)
            .field("sample_rate", &self.inner.config.audio.sample_rate)
            .finish()
    }
}

/// One synthesised chunk with its cost, for benches.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub audio: Vec<i16>,
    pub synth_seconds: f64,
}

impl PiperTts {
    /// Loads a Piper voice (`voice.onnx` with `voice.onnx.json` next to it) with `sessions`
    /// model instances (how many sentences can be synthesised at once).
    pub fn load(voice: &Path, models_dir: &Path, sessions: usize) -> Result<PiperTts, EngineError> {
        let config_path = PathBuf::from(format!("{}.json", voice.display()));
        if !voice.is_file() || !config_path.is_file() {
            return Err(EngineError::Unavailable(format!(
                "Piper voice {} (with its .json) not found; run `{FETCH_COMMAND}`, or download {}",
                voice.display(),
                ModelId::PiperJoe.elsewhere()
            )));
        }
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| EngineError::Unavailable(format!("{}: {e}", config_path.display())))?;
        let config: VoiceConfig = serde_json::from_str(&text).map_err(|e| {
            EngineError::Unavailable(format!(
                "{} is not a Piper voice config: {e}",
                config_path.display()
            ))
        })?;
        let mut ids = HashMap::new();
        for (k, v) in &config.phoneme_id_map {
            let mut chars = k.chars();
            if let (Some(c), None) = (chars.next(), chars.next()) {
                ids.insert(c, v.clone());
            }
        }
        for required in ['^', '$', '_'] {
            if !ids.contains_key(&required) {
                return Err(EngineError::Unavailable(format!(
                    "{}: phoneme_id_map lacks {required:?}",
                    config_path.display()
                )));
            }
        }
        if config.num_speakers > 1 {
            tracing::info!(
                speakers = config.num_speakers,
                "multi-speaker voice: using speaker 0"
            );
        }
        let espeak = Espeak::new(&config.espeak.voice)?;
        onnx::init(models_dir)?;
        let started = Instant::now();
        let n = sessions.max(1);
        let mut pool = Vec::with_capacity(n);
        for _ in 0..n {
            pool.push(onnx::session(voice)?);
        }
        let name = format!(
            "piper-{}",
            voice
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("voice")
        );
        tracing::info!(
            voice = %voice.display(),
            sessions = n,
            load_ms = started.elapsed().as_millis() as u64,
            "piper loaded"
        );
        Ok(PiperTts {
            inner: Arc::new(Inner {
                config,
                ids,
                espeak,
                sessions: Mutex::new(pool),
                returned: Condvar::new(),
                name,
                path: voice.to_path_buf(),
            }),
        })
    }

    fn phoneme_ids(&self, clauses: &[Clause]) -> Vec<i64> {
        phoneme_ids(&self.inner.ids, clauses)
    }

    /// Groups a sentence's clauses into chunks of at least [`MIN_CHUNK_WORDS`] words.
    fn chunks(clauses: Vec<Clause>) -> Vec<Vec<Clause>> {
        let mut out: Vec<Vec<Clause>> = Vec::new();
        let mut current = Vec::new();
        let mut words = 0;
        for c in clauses {
            words += c.words;
            current.push(c);
            if words >= MIN_CHUNK_WORDS {
                out.push(std::mem::take(&mut current));
                words = 0;
            }
        }
        if !current.is_empty() {
            match out.last_mut() {
                Some(last) if words < MIN_CHUNK_WORDS => last.extend(current),
                _ => out.push(current),
            }
        }
        out
    }

    /// Runs the model on phoneme ids (blocking; call from a blocking thread).
    fn infer(&self, ids: Vec<i64>) -> Result<Vec<i16>, EngineError> {
        let inf = self.inner.config.inference;
        let n = ids.len();
        let fail = |e: ort::Error| EngineError::Failed(format!("piper: {e}"));
        let input = ort::value::Tensor::from_array(([1usize, n], ids)).map_err(fail)?;
        let lengths = ort::value::Tensor::from_array(([1usize], vec![n as i64])).map_err(fail)?;
        let scales = ort::value::Tensor::from_array((
            [3usize],
            vec![inf.noise_scale, inf.length_scale, inf.noise_w],
        ))
        .map_err(fail)?;
        let poisoned = |_| EngineError::Failed("piper pool poisoned".into());
        let mut idle = self.inner.sessions.lock().map_err(poisoned)?;
        let mut session = loop {
            match idle.pop() {
                Some(s) => break s,
                None => idle = self.inner.returned.wait(idle).map_err(poisoned)?,
            }
        };
        drop(idle);
        let result = (|| {
            let mut inputs = ort::inputs![
                "input" => input,
                "input_lengths" => lengths,
                "scales" => scales,
            ];
            if self.inner.config.num_speakers > 1 {
                let sid = ort::value::Tensor::from_array(([1usize], vec![0i64])).map_err(fail)?;
                inputs.push(("sid".into(), sid.into()));
            }
            let outputs = session.run(inputs).map_err(fail)?;
            let (_, audio) = outputs[0].try_extract_tensor::<f32>().map_err(fail)?;
            Ok(audio
                .iter()
                .map(|&s| (s.clamp(-1.0, 1.0) * 32767.0) as i16)
                .collect())
        })();
        if let Ok(mut pool) = self.inner.sessions.lock() {
            pool.push(session);
            self.inner.returned.notify_one();
        }
        result
    }

    /// Synthesises `text` on the calling thread, chunk by chunk (for benches and tools).
    pub fn synthesize_blocking(&self, text: &str) -> Result<Vec<Chunk>, EngineError> {
        let clauses = self.inner.espeak.phonemize(text)?;
        let mut out = Vec::new();
        for chunk in Self::chunks(clauses) {
            let started = Instant::now();
            let audio = self.infer(self.phoneme_ids(&chunk))?;
            out.push(Chunk {
                audio,
                synth_seconds: started.elapsed().as_secs_f64(),
            });
        }
        Ok(out)
    }
}

/// Phoneme ids for a chunk of clauses, as Piper builds them: `^`, then each phoneme followed by
/// the pad `_`, then `$`; each clause's punctuation after it and a space between clauses.
fn phoneme_ids(ids: &HashMap<char, Vec<i64>>, clauses: &[Clause]) -> Vec<i64> {
    let pad = &ids[&'_'];
    let mut out = ids[&'^'].clone();
    out.extend(pad);
    let mut text = String::new();
    for (i, c) in clauses.iter().enumerate() {
        if i > 0 {
            text.push(' ');
        }
        text.push_str(&c.phonemes);
        if let Some(p) = c.punctuation {
            text.push(p);
        }
    }
    for ch in text.chars() {
        // Characters the voice has no id for are skipped, as Piper does.
        if let Some(v) = ids.get(&ch) {
            out.extend(v);
            out.extend(pad);
        }
    }
    out.extend(&ids[&'$']);
    out
}

impl TextToSpeech for PiperTts {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn sample_rate(&self) -> u32 {
        self.inner.config.audio.sample_rate
    }

    fn synthesize(&self, text: String) -> BoxStream<'static, Result<Vec<i16>, EngineError>> {
        let this = self.clone();
        // State: the chunks still to synthesise (phonemized lazily on first poll).
        let state: Option<std::vec::IntoIter<Vec<Clause>>> = None;
        futures_util::stream::unfold((this, text, state), |(this, text, state)| async move {
            let mut chunks = match state {
                Some(chunks) => chunks,
                None => {
                    let espeak_this = this.clone();
                    let t = text.clone();
                    let clauses =
                        tokio::task::spawn_blocking(move || espeak_this.inner.espeak.phonemize(&t))
                            .await;
                    match clauses {
                        Ok(Ok(clauses)) => Self::chunks(clauses).into_iter(),
                        Ok(Err(e)) => {
                            return Some((Err(e), (this, text, Some(Vec::new().into_iter()))));
                        }
                        Err(e) => {
                            return Some((
                                Err(EngineError::Failed(format!("piper task: {e}"))),
                                (this, text, Some(Vec::new().into_iter())),
                            ));
                        }
                    }
                }
            };
            let chunk = chunks.next()?;
            let ids = this.phoneme_ids(&chunk);
            let worker = this.clone();
            let audio = tokio::task::spawn_blocking(move || worker.infer(ids)).await;
            let item = match audio {
                Ok(r) => r,
                Err(e) => Err(EngineError::Failed(format!("piper task: {e}"))),
            };
            Some((item, (this, text, Some(chunks))))
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clause(phonemes: &str, punctuation: Option<char>, words: usize) -> Clause {
        Clause {
            phonemes: phonemes.into(),
            punctuation,
            words,
        }
    }

    #[test]
    fn ids_interleave_the_pad_and_keep_punctuation() {
        let ids: HashMap<char, Vec<i64>> = [
            ('_', 0),
            ('^', 1),
            ('$', 2),
            (' ', 3),
            (',', 8),
            ('.', 10),
            ('h', 20),
            ('a', 21),
            ('ˈ', 120),
        ]
        .into_iter()
        .map(|(c, i)| (c, vec![i]))
        .collect();
        let got = phoneme_ids(
            &ids,
            &[clause("hˈa", Some(','), 1), clause("a✗h", Some('.'), 1)],
        );
        // ^ _ h _ ˈ _ a _ , _ ␠ _ a _ h _ . _ $   (✗ has no id and is skipped)
        assert_eq!(
            got,
            vec![
                1, 0, 20, 0, 120, 0, 21, 0, 8, 0, 3, 0, 21, 0, 20, 0, 10, 0, 2
            ]
        );
    }

    #[test]
    fn short_clauses_are_merged_into_chunks_of_three_words() {
        let chunks = PiperTts::chunks(vec![
            clause("a", Some(','), 1),
            clause("b", Some(','), 4),
            clause("c", Some('.'), 5),
            clause("d", None, 1),
        ]);
        let shape: Vec<Vec<&str>> = chunks
            .iter()
            .map(|c| c.iter().map(|c| c.phonemes.as_str()).collect())
            .collect();
        // "a," joins "b,"; "c." stands alone; the trailing one-word "d" joins "c.".
        assert_eq!(shape, vec![vec!["a", "b"], vec!["c", "d"]]);
        assert!(PiperTts::chunks(Vec::new()).is_empty());
    }

    #[test]
    fn a_missing_voice_names_the_fetch_command() {
        let dir = tempfile::tempdir().unwrap();
        let err = PiperTts::load(&dir.path().join("nope.onnx"), dir.path(), 1).unwrap_err();
        assert!(err.to_string().contains(FETCH_COMMAND), "{err}");
    }
}
