//! Voice activity detection: how likely a 20 ms frame of caller audio is speech.
//!
//! [`VoiceDetector`] is what endpointing and barge-in consume. Two implementations:
//! - [`EarshotVad`], over the `earshot` crate: a small neural VAD in pure Rust, the production
//!   detector. earshot's native frame is 256 samples (16 ms) at 16 kHz; our frames are
//!   [`crate::ENGINE_FRAME`] = 320 samples (20 ms), so samples are re-framed internally.
//! - [`EnergyVad`], a deterministic RMS threshold: the detector for synthetic-tone tests and
//!   benchmarks, where a neural model's opinion of a sine wave is not what is being tested.

/// Something that scores frames of 16 kHz mono audio for speech.
pub trait VoiceDetector: Send {
    /// Probability in `[0, 1]` that `frame` — one 20 ms frame at 16 kHz, [`crate::ENGINE_FRAME`]
    /// samples — contains speech. Frames must be fed in stream order; detectors keep state.
    fn speech_probability(&mut self, frame: &[i16]) -> f32;

    /// Forgets all state: the next frame starts a new stream.
    fn reset(&mut self);
}

/// Samples per earshot frame: `earshot::Detector::predict_i16` takes exactly 256 samples
/// (16 ms at 16 kHz) and returns -1 for any other length.
pub const EARSHOT_FRAME: usize = 256;

/// Neural VAD over `earshot`.
///
/// Each call appends the frame to a 256-sample re-framing buffer and runs earshot on every
/// complete 256-sample frame; it returns the score of the most recent one. A 320-sample frame
/// always completes at least one earshot frame (at most 255 samples are ever carried over), so
/// each call's answer covers audio from that call. The detector lives on the heap (it is ~8 KiB)
/// and nothing is allocated per frame.
pub struct EarshotVad {
    detector: Box<earshot::Detector>,
    /// Samples carried over to the next earshot frame; `pending[..pending_len]` is valid.
    pending: [i16; EARSHOT_FRAME],
    pending_len: usize,
    /// Score of the most recent complete earshot frame (0 before the first one).
    last: f32,
}

impl std::fmt::Debug for EarshotVad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EarshotVad")
            .field("pending_len", &self.pending_len)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl EarshotVad {
    /// A fresh detector with earshot's default model.
    pub fn new() -> Self {
        Self {
            detector: earshot::Detector::default_boxed(),
            pending: [0; EARSHOT_FRAME],
            pending_len: 0,
            last: 0.0,
        }
    }
}

impl Default for EarshotVad {
    fn default() -> Self {
        Self::new()
    }
}

impl VoiceDetector for EarshotVad {
    fn speech_probability(&mut self, frame: &[i16]) -> f32 {
        let mut rest = frame;
        while !rest.is_empty() {
            let take = (EARSHOT_FRAME - self.pending_len).min(rest.len());
            let (now, later) = rest.split_at(take);
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(now);
            self.pending_len += take;
            rest = later;
            if self.pending_len == EARSHOT_FRAME {
                self.last = self.detector.predict_i16(&self.pending).clamp(0.0, 1.0);
                self.pending_len = 0;
            }
        }
        self.last
    }

    fn reset(&mut self) {
        self.detector.reset();
        self.pending_len = 0;
        self.last = 0.0;
    }
}

/// Deterministic energy detector: probability 1.0 when the frame's RMS level is above
/// `threshold_dbfs`, else 0.0.
///
/// dBFS here is relative to a full-scale square wave (RMS 32768), so a full-scale sine is
/// −3.01 dBFS. Meant for synthetic-tone tests and benchmarks, not for real callers: it cannot
/// tell speech from noise.
#[derive(Debug, Clone, Copy)]
pub struct EnergyVad {
    threshold_dbfs: f32,
    /// Mean square (in 16-bit units²) the frame must exceed; precomputed so no log per frame.
    threshold_mean_square: f64,
}

impl EnergyVad {
    /// A detector that fires above `threshold_dbfs` (e.g. −40.0).
    pub fn new(threshold_dbfs: f32) -> Self {
        let rms = 32768.0 * 10f64.powf(f64::from(threshold_dbfs) / 20.0);
        Self {
            threshold_dbfs,
            threshold_mean_square: rms * rms,
        }
    }

    /// The threshold this detector was built with.
    pub fn threshold_dbfs(&self) -> f32 {
        self.threshold_dbfs
    }

    /// RMS level of `frame` in dBFS (−∞ for digital silence or an empty frame).
    pub fn level_dbfs(frame: &[i16]) -> f32 {
        let ms = mean_square(frame);
        (10.0 * (ms / (32768.0 * 32768.0)).log10()) as f32
    }
}

/// Mean of the squared samples, 0 for an empty frame.
fn mean_square(frame: &[i16]) -> f64 {
    if frame.is_empty() {
        return 0.0;
    }
    let sum: f64 = frame
        .iter()
        .map(|&s| {
            let s = f64::from(s);
            s * s
        })
        .sum();
    sum / frame.len() as f64
}

impl VoiceDetector for EnergyVad {
    fn speech_probability(&mut self, frame: &[i16]) -> f32 {
        if !frame.is_empty() && mean_square(frame) > self.threshold_mean_square {
            1.0
        } else {
            0.0
        }
    }

    fn reset(&mut self) {}
}
