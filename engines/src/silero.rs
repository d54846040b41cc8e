//! Silero VAD v5 on ONNX Runtime: the optional detector for noisy lines (earshot is the
//! default; see ENGINES.md for the trade-off measured here).
//!
//! The model takes 512 new samples at 16 kHz plus the previous 64 as context, and carries an
//! LSTM state between windows. The call core feeds 20 ms frames (320 samples), so frames are
//! re-framed into 32 ms windows; each frame reports the latest window's probability. A small
//! pool of model instances ([`SESSIONS`], one intra-op thread each) is shared by all calls and
//! each call keeps its own state: a window takes the first idle instance, so calls on different
//! worker threads never queue behind one lock. A window (~0.1 ms, every 32 ms) runs inline on
//! the call's task, like earshot's per-frame work: handing each to the blocking pool would cost
//! more than the inference (see ARCHITECTURE "Where STYLE.md bends").

use std::path::Path;
use std::sync::{Arc, Mutex};

use agent::engine::EngineError;
use media::vad::VoiceDetector;

use crate::models::{FETCH_COMMAND, ModelId};
use crate::onnx;

const WINDOW: usize = 512;
const CONTEXT: usize = 64;
const STATE: usize = 2 * 128;

/// Model instances in the pool: one per core covers every worker thread running a window at
/// once (tokio runs one worker per core); each instance is ~2 MB.
pub fn sessions() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The loaded model, shared.
pub struct SileroModel {
    sessions: Vec<Mutex<ort::session::Session>>,
    /// Spreads calls over the instances (each call's first choice).
    next: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for SileroModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SileroModel")
    }
}

impl SileroModel {
    pub fn load(model: &Path, models_dir: &Path) -> Result<Arc<SileroModel>, EngineError> {
        if !model.is_file() {
            return Err(EngineError::Unavailable(format!(
                "Silero VAD model {} not found; run `{FETCH_COMMAND}`, or download {}",
                model.display(),
                ModelId::SileroVad.elsewhere()
            )));
        }
        onnx::init(models_dir)?;
        let sessions = (0..sessions().max(1))
            .map(|_| onnx::session(model).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(SileroModel {
            sessions,
            next: std::sync::atomic::AtomicUsize::new(0),
        }))
    }

    /// How many model instances the pool holds.
    pub fn pool_size(&self) -> usize {
        self.sessions.len()
    }

    /// An idle instance, trying the call's own first; if all are busy, waits for its own.
    fn session(
        &self,
        first: usize,
    ) -> Result<std::sync::MutexGuard<'_, ort::session::Session>, String> {
        let n = self.sessions.len();
        for i in 0..n {
            if let Ok(guard) = self.sessions[(first + i) % n].try_lock() {
                return Ok(guard);
            }
        }
        self.sessions[first % n]
            .lock()
            .map_err(|_| "poisoned".to_string())
    }

    /// A detector for one call.
    pub fn detector(self: &Arc<Self>) -> SileroVad {
        SileroVad {
            model: self.clone(),
            first: self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            state: vec![0.0; STATE],
            context: [0.0; CONTEXT],
            pending: Vec::with_capacity(WINDOW + media::ENGINE_FRAME),
            probability: 0.0,
            failures: 0,
        }
    }

    fn run(&self, first: usize, input: Vec<f32>, state: &mut [f32]) -> Result<f32, String> {
        use ort::value::Tensor;
        let e = |e: ort::Error| e.to_string();
        let x = Tensor::from_array(([1usize, CONTEXT + WINDOW], input)).map_err(e)?;
        let s = Tensor::from_array(([2usize, 1, 128], state.to_vec())).map_err(e)?;
        let sr = Tensor::from_array(((), vec![media::ENGINE_RATE as i64])).map_err(e)?;
        let mut session = self.session(first)?;
        let out = session
            .run(ort::inputs!["input" => x, "state" => s, "sr" => sr])
            .map_err(e)?;
        let p = out["output"].try_extract_tensor::<f32>().map_err(e)?.1[0];
        let (_, new_state) = out["stateN"].try_extract_tensor::<f32>().map_err(e)?;
        if new_state.len() != STATE {
            return Err(format!(
                "state has {} values, expected {STATE}",
                new_state.len()
            ));
        }
        state.copy_from_slice(new_state);
        Ok(p)
    }
}

/// Per-call Silero detector.
#[derive(Debug)]
pub struct SileroVad {
    model: Arc<SileroModel>,
    /// The pool instance this call tries first.
    first: usize,
    state: Vec<f32>,
    context: [f32; CONTEXT],
    pending: Vec<f32>,
    probability: f32,
    failures: u64,
}

impl VoiceDetector for SileroVad {
    fn speech_probability(&mut self, frame: &[i16]) -> f32 {
        self.pending
            .extend(frame.iter().map(|&s| s as f32 / 32768.0));
        while self.pending.len() >= WINDOW {
            let mut input = Vec::with_capacity(CONTEXT + WINDOW);
            input.extend_from_slice(&self.context);
            input.extend_from_slice(&self.pending[..WINDOW]);
            self.context
                .copy_from_slice(&self.pending[WINDOW - CONTEXT..WINDOW]);
            self.pending.drain(..WINDOW);
            match self.model.run(self.first, input, &mut self.state) {
                Ok(p) => self.probability = p,
                Err(e) => {
                    // A failed window keeps the last probability; the call goes on.
                    self.failures += 1;
                    if self.failures == 1 || self.failures.is_power_of_two() {
                        tracing::warn!(error = %e, failures = self.failures, "silero vad window failed");
                    }
                }
            }
        }
        self.probability
    }

    fn reset(&mut self) {
        self.state.fill(0.0);
        self.context = [0.0; CONTEXT];
        self.pending.clear();
        self.probability = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models_dir() -> std::path::PathBuf {
        std::env::var_os("VOXANNE_MODELS_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/voxanne/models")
            })
    }

    /// A call's window runs even while another call holds its preferred instance (one shared
    /// instance behind one lock made every call queue; here it would never return).
    #[test]
    fn a_busy_instance_does_not_hold_up_other_calls() {
        let dir = models_dir();
        let model = SileroModel::load(&ModelId::SileroVad.path(&dir), &dir).unwrap_or_else(|e| {
            panic!("{e}: run `cargo run -p api -- models fetch` (scripts/test.sh does)")
        });
        if model.pool_size() < 2 {
            eprintln!("skipped: one core, one instance");
            return;
        }
        let mut vad = model.detector();
        let busy = model.sessions[vad.first % model.pool_size()]
            .lock()
            .unwrap();
        let frame = [0i16; media::ENGINE_FRAME];
        for _ in 0..4 {
            vad.speech_probability(&frame);
        }
        assert_eq!(vad.failures, 0);
        drop(busy);
    }
}
