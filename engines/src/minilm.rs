//! Sentence embeddings with all-MiniLM-L6-v2 on ONNX Runtime: the receptionist's knowledge
//! retrieval (a caller's question against the clinic's FAQ entries).
//!
//! Text → WordPiece ids ([`crate::wordpiece`], `[CLS]` … `[SEP]`, at most [`MAX_TOKENS`]) →
//! the model (`input_ids`, `attention_mask`, and `token_type_ids` all 0 when the export takes
//! them) → `last_hidden_state` `[batch, tokens, 384]` → mean over the tokens the attention mask
//! keeps → L2-normalised, so the cosine of two embeddings is their dot product. This is what
//! sentence-transformers does for this model (`1_Pooling`: mean tokens, then `Normalize`).
//!
//! The default model (`voxanne models fetch`, [`ModelId::MiniLm`]) is the int8-weight export;
//! its embeddings are within cosine 0.998 of the f32 model's. Any other all-MiniLM-L6-v2 ONNX
//! export with the BERT uncased `vocab.txt` works as it is; its embeddings get a different
//! [`MiniLm::model_version`], so stored vectors can be recomputed when the model changes.
//!
//! **Blocking:** [`MiniLm::embed`] is CPU work (~4 ms a short sentence on one thread): async
//! callers run it on tokio's blocking pool (`tokio::task::spawn_blocking`), never on a worker
//! thread. A small pool of sessions (one intra-op thread each) is shared by all calls; an
//! embedding waits, on its blocking thread, for an idle session — the same scheme as Piper.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use agent::engine::EngineError;

use crate::models::{self, FETCH_COMMAND, ModelId};
use crate::onnx;
use crate::wordpiece::WordPiece;

/// Width of an embedding.
pub const MINILM_DIMS: usize = 384;

/// Longest input in tokens, `[CLS]` and `[SEP]` included; longer text is cut at the end. 128
/// is what the model was trained with (its `tokenizer.json` truncates there; position
/// embeddings go to 512, but quality past 128 is untested) — FAQ entries and caller questions
/// are far shorter. Index long documents in passages of a few sentences.
pub const MAX_TOKENS: usize = 128;

/// Model version of embeddings from the pinned files ([`ModelId::MiniLm`]). Store it with
/// each embedding: a vector computed with another version must be recomputed, not compared.
pub const MINILM_MODEL_VERSION: &str = "all-MiniLM-L6-v2-int8";

/// How many hex digits of a user-supplied file's SHA-256 go into its model version.
const VERSION_HASH_DIGITS: usize = 16;

/// all-MiniLM-L6-v2, loaded once and shared by every call (cheap to clone).
#[derive(Clone)]
pub struct MiniLm {
    inner: Arc<Inner>,
}

struct Inner {
    vocab: WordPiece,
    /// Idle model instances; an embedding waits (on its blocking thread) for one.
    sessions: Mutex<Vec<ort::session::Session>>,
    returned: Condvar,
    /// Whether the export takes `token_type_ids` (most BERT exports do; some drop it).
    token_types: bool,
    /// The output holding per-token states.
    output: String,
    pad: i64,
    version: String,
    path: PathBuf,
}

impl std::fmt::Debug for MiniLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiniLm")
            .field("model", &self.inner.path)
            .field("version", &self.inner.version)
            .finish()
    }
}

impl MiniLm {
    /// Loads the model and its vocabulary with `sessions` model instances (how many
    /// embeddings can run at once; 1–2 is plenty at a few ms each). `models_dir` is where
    /// ONNX Runtime itself is found (see [`onnx::init`]).
    pub fn load(
        model: &Path,
        vocab: &Path,
        models_dir: &Path,
        sessions: usize,
    ) -> Result<MiniLm, EngineError> {
        if !model.is_file() || !vocab.is_file() {
            return Err(EngineError::Unavailable(format!(
                "MiniLM model {} or vocabulary {} not found; run `{FETCH_COMMAND}`, or download {}",
                model.display(),
                vocab.display(),
                ModelId::MiniLm.elsewhere()
            )));
        }
        let started = Instant::now();
        let text = std::fs::read_to_string(vocab)
            .map_err(|e| EngineError::Unavailable(format!("{}: {e}", vocab.display())))?;
        let wordpiece = WordPiece::from_vocab(&text)
            .map_err(|e| EngineError::Unavailable(format!("{}: {e}", vocab.display())))?;
        // Padding is masked out, so its id only has to be valid; BERT's is 0.
        let pad = i64::from(wordpiece.id("[PAD]").unwrap_or(0));
        let version = model_version(model, vocab)?;

        onnx::init(models_dir)?;
        let n = sessions.max(1);
        let mut pool = Vec::with_capacity(n);
        for _ in 0..n {
            pool.push(onnx::session(model)?);
        }
        let (token_types, output) = check_signature(&pool[0], model)?;
        tracing::info!(
            model = %model.display(),
            version = %version,
            sessions = n,
            load_ms = started.elapsed().as_millis() as u64,
            "minilm loaded"
        );
        Ok(MiniLm {
            inner: Arc::new(Inner {
                vocab: wordpiece,
                sessions: Mutex::new(pool),
                returned: Condvar::new(),
                token_types,
                output,
                pad,
                version,
                path: model.to_path_buf(),
            }),
        })
    }

    /// Loads the fetched model from `models_dir` (`minilm/model.onnx` + `minilm/vocab.txt`).
    pub fn load_default(models_dir: &Path, sessions: usize) -> Result<MiniLm, EngineError> {
        let files = ModelId::MiniLm.files();
        MiniLm::load(
            &models_dir.join(files[0].0),
            &models_dir.join(files[1].0),
            models_dir,
            sessions,
        )
    }

    /// The version to store with every embedding this instance makes:
    /// [`MINILM_MODEL_VERSION`] for the pinned files, otherwise one naming the files' hashes.
    pub fn model_version(&self) -> &str {
        &self.inner.version
    }

    /// The tokenizer (for inspection and tests).
    pub fn tokenizer(&self) -> &WordPiece {
        &self.inner.vocab
    }

    /// The unit-length embedding of `text` ([`MINILM_DIMS`] values). Blocking: run it on the
    /// blocking pool. Text past [`MAX_TOKENS`] tokens is ignored.
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, EngineError> {
        let mut out = self.embed_batch(&[text])?;
        out.pop()
            .ok_or_else(|| EngineError::Failed("minilm: no embedding returned".into()))
    }

    /// Embeddings of several texts in one model run (padded to the longest; padding is masked
    /// out, so each equals its [`MiniLm::embed`] to float rounding). Cheaper per text than
    /// one run each when indexing a knowledge base; blocking like [`MiniLm::embed`].
    pub fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EngineError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encoded: Vec<Vec<i64>> = texts
            .iter()
            .map(|t| self.inner.vocab.encode(t, MAX_TOKENS).ids)
            .collect();
        let batch = encoded.len();
        let len = encoded.iter().map(Vec::len).max().unwrap_or(2);
        let mut ids = Vec::with_capacity(batch * len);
        let mut mask = Vec::with_capacity(batch * len);
        for e in &encoded {
            ids.extend_from_slice(e);
            ids.extend(std::iter::repeat_n(self.inner.pad, len - e.len()));
            mask.extend(std::iter::repeat_n(1i64, e.len()));
            mask.extend(std::iter::repeat_n(0i64, len - e.len()));
        }
        let states = self.run(ids, mask.clone(), batch, len)?;
        Ok(pool_and_normalize(&states, &mask, batch, len))
    }

    /// Runs the model; returns `last_hidden_state` flattened `[batch, len, MINILM_DIMS]`.
    fn run(
        &self,
        ids: Vec<i64>,
        mask: Vec<i64>,
        batch: usize,
        len: usize,
    ) -> Result<Vec<f32>, EngineError> {
        use ort::value::Tensor;
        let fail = |e: ort::Error| EngineError::Failed(format!("minilm: {e}"));
        let input_ids = Tensor::from_array(([batch, len], ids)).map_err(fail)?;
        let attention = Tensor::from_array(([batch, len], mask)).map_err(fail)?;
        let mut inputs = ort::inputs![
            "input_ids" => input_ids,
            "attention_mask" => attention,
        ];
        if self.inner.token_types {
            let types =
                Tensor::from_array(([batch, len], vec![0i64; batch * len])).map_err(fail)?;
            inputs.push(("token_type_ids".into(), types.into()));
        }
        let poisoned = |_| EngineError::Failed("minilm pool poisoned".into());
        let mut idle = self.inner.sessions.lock().map_err(poisoned)?;
        let mut session = loop {
            match idle.pop() {
                Some(s) => break s,
                None => idle = self.inner.returned.wait(idle).map_err(poisoned)?,
            }
        };
        drop(idle);
        let result = (|| {
            let outputs = session.run(inputs).map_err(fail)?;
            let value = outputs.get(&self.inner.output).ok_or_else(|| {
                EngineError::Failed(format!("minilm: no output {}", self.inner.output))
            })?;
            let (shape, data) = value.try_extract_tensor::<f32>().map_err(fail)?;
            let expected = [batch as i64, len as i64, MINILM_DIMS as i64];
            if **shape != expected {
                return Err(EngineError::Failed(format!(
                    "minilm: output shape {:?}, expected {expected:?}",
                    &**shape
                )));
            }
            Ok(data.to_vec())
        })();
        if let Ok(mut pool) = self.inner.sessions.lock() {
            pool.push(session);
            self.inner.returned.notify_one();
        }
        result
    }
}

/// Mean of each text's token states where the mask is 1, scaled to unit length.
fn pool_and_normalize(states: &[f32], mask: &[i64], batch: usize, len: usize) -> Vec<Vec<f32>> {
    (0..batch)
        .map(|b| {
            let mut sum = vec![0f32; MINILM_DIMS];
            let mut kept = 0usize;
            for t in 0..len {
                if mask[b * len + t] == 0 {
                    continue;
                }
                kept += 1;
                let row = &states[(b * len + t) * MINILM_DIMS..][..MINILM_DIMS];
                for (s, v) in sum.iter_mut().zip(row) {
                    *s += v;
                }
            }
            let kept = kept.max(1) as f32;
            sum.iter_mut().for_each(|s| *s /= kept);
            normalize(&mut sum);
            sum
        })
        .collect()
}

/// Scales `v` to unit length (a zero vector stays zero).
fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    // Below 1e-12 the vector is zero for all purposes (sentence-transformers uses the same
    // epsilon); dividing would only amplify rounding noise.
    if norm > 1e-12 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Cosine similarity of two vectors (for unit embeddings, their dot product); 0 when either is
/// zero or their lengths differ.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na <= f32::EPSILON || nb <= f32::EPSILON {
        return 0.0;
    }
    dot / (na * nb)
}

/// Checks the export's inputs and picks its token-state output. Returns (takes
/// `token_type_ids`, output name).
fn check_signature(
    session: &ort::session::Session,
    model: &Path,
) -> Result<(bool, String), EngineError> {
    let names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
    for required in ["input_ids", "attention_mask"] {
        if !names.contains(&required) {
            return Err(EngineError::Unavailable(format!(
                "{} is not a BERT embedding model: inputs are {names:?}, expected input_ids, \
                 attention_mask (and optionally token_type_ids)",
                model.display()
            )));
        }
    }
    let token_types = names.contains(&"token_type_ids");
    let outputs: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
    let output = ["last_hidden_state", "token_embeddings"]
        .into_iter()
        .find(|n| outputs.contains(n))
        .or(outputs.first().copied())
        .ok_or_else(|| EngineError::Unavailable(format!("{} has no outputs", model.display())))?;
    Ok((token_types, output.to_string()))
}

/// [`MINILM_MODEL_VERSION`] when both files are the pinned ones, otherwise
/// `all-MiniLM-L6-v2@<model sha256 prefix>+<vocab sha256 prefix>`.
fn model_version(model: &Path, vocab: &Path) -> Result<String, EngineError> {
    let hash = |p: &Path| {
        models::sha256_file(p)
            .map_err(|e| EngineError::Unavailable(format!("{}: {e}", p.display())))
    };
    let (model_sha, vocab_sha) = (hash(model)?, hash(vocab)?);
    let pinned = ModelId::MiniLm.files();
    if model_sha == pinned[0].1 && vocab_sha == pinned[1].1 {
        Ok(MINILM_MODEL_VERSION.to_string())
    } else {
        Ok(format!(
            "all-MiniLM-L6-v2@{}+{}",
            &model_sha[..VERSION_HASH_DIGITS],
            &vocab_sha[..VERSION_HASH_DIGITS]
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_known_vectors() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-6);
        assert!(cosine(&[1.0, 0.0], &[0.0, 2.0]).abs() < 1e-6);
        assert!((cosine(&[1.0, 1.0], &[-2.0, -2.0]) + 1.0).abs() < 1e-6);
        assert!((cosine(&[3.0, 4.0], &[4.0, 3.0]) - 24.0 / 25.0).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
        assert_eq!(cosine(&[1.0], &[1.0, 0.0]), 0.0);
    }

    #[test]
    fn pooling_averages_only_unmasked_tokens_and_normalises() {
        // Two texts of length 2 padded to 3 tokens: text 0 keeps tokens 0–1, text 1 all three.
        let len = 3;
        let mut states = vec![0f32; 2 * len * MINILM_DIMS];
        let mut set = |b: usize, t: usize, d: usize, v: f32| {
            states[(b * len + t) * MINILM_DIMS + d] = v;
        };
        set(0, 0, 0, 1.0);
        set(0, 1, 1, 1.0);
        set(0, 2, 2, 100.0); // padding: must not count
        set(1, 0, 0, 3.0);
        set(1, 1, 0, 3.0);
        set(1, 2, 1, 4.0);
        let mask = [1, 1, 0, 1, 1, 1];
        let out = pool_and_normalize(&states, &mask, 2, len);
        let h = std::f32::consts::FRAC_1_SQRT_2;
        assert!((out[0][0] - h).abs() < 1e-6 && (out[0][1] - h).abs() < 1e-6);
        assert_eq!(out[0][2], 0.0);
        // Mean (2, 4/3) → unit length (0.832, 0.555).
        let n = (4.0f32 + 16.0 / 9.0).sqrt();
        assert!((out[1][0] - 2.0 / n).abs() < 1e-6);
        assert!((out[1][1] - 4.0 / 3.0 / n).abs() < 1e-6);
        for v in &out {
            let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn a_zero_vector_stays_zero() {
        let mut v = vec![0f32; 4];
        normalize(&mut v);
        assert_eq!(v, [0.0; 4]);
    }
}
