//! Silero VAD v5 on ONNX Runtime: the optional detector for noisy lines (earshot is the
//! default; see ENGINES.md for the trade-off measured here).
//!
//! The model takes 512 new samples at 16 kHz plus the previous 64 as context, and carries an
//! LSTM state between windows. The call core feeds 20 ms frames (320 samples), so frames are
//! re-framed into 32 ms windows; each frame reports the latest window's probability. One model
//! instance is shared by all calls (a run is ~0.1 ms); each call keeps its own state.

use std::path::Path;
use std::sync::{Arc, Mutex};

use agent::engine::EngineError;
use media::vad::VoiceDetector;

use crate::models::{FETCH_COMMAND, ModelId};
use crate::onnx;

const WINDOW: usize = 512;
const CONTEXT: usize = 64;
const STATE: usize = 2 * 128;

/// The loaded model, shared.
pub struct SileroModel {
    session: Mutex<ort::session::Session>,
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
        Ok(Arc::new(SileroModel {
            session: Mutex::new(onnx::session(model)?),
        }))
    }

    /// A detector for one call.
    pub fn detector(self: &Arc<Self>) -> SileroVad {
        SileroVad {
            model: self.clone(),
            state: vec![0.0; STATE],
            context: [0.0; CONTEXT],
            pending: Vec::with_capacity(WINDOW + media::ENGINE_FRAME),
            probability: 0.0,
            failures: 0,
        }
    }

    fn run(&self, input: Vec<f32>, state: &mut [f32]) -> Result<f32, String> {
        use ort::value::Tensor;
        let e = |e: ort::Error| e.to_string();
        let x = Tensor::from_array(([1usize, CONTEXT + WINDOW], input)).map_err(e)?;
        let s = Tensor::from_array(([2usize, 1, 128], state.to_vec())).map_err(e)?;
        let sr = Tensor::from_array(((), vec![media::ENGINE_RATE as i64])).map_err(e)?;
        let mut session = self.session.lock().map_err(|_| "poisoned".to_string())?;
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
            match self.model.run(input, &mut self.state) {
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
