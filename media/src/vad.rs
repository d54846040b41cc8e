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
/// each call's answer covers audio from that call. Frames of other lengths are accepted too (a
/// call that completes no earshot frame returns the previous score). The detector lives on the
/// heap (it is ~8 KiB) and nothing is allocated per frame.
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
#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ENGINE_FRAME, ENGINE_RATE};
    use std::f64::consts::PI;

    /// Deterministic white noise in [-1, 1) (xorshift64), so tests never flake.
    struct Noise(u64);

    impl Noise {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        }
    }

    /// A synthetic voice (see [`crate::testsignal`]) of `len` samples at 16 kHz.
    fn vowel(len: usize, seed: u64) -> Vec<i16> {
        let ms = (len as u64 * 1000 / u64::from(ENGINE_RATE)) as u32;
        let mut v = crate::testsignal::voice(ENGINE_RATE, ms, seed);
        v.resize(len, 0);
        v
    }

    fn white_noise(len: usize, amplitude: f64, seed: u64) -> Vec<i16> {
        let mut noise = Noise(seed);
        (0..len)
            .map(|_| (noise.next() * amplitude) as i16)
            .collect()
    }

    fn scores(vad: &mut impl VoiceDetector, signal: &[i16]) -> Vec<f32> {
        signal
            .chunks_exact(ENGINE_FRAME)
            .map(|frame| vad.speech_probability(frame))
            .collect()
    }

    fn mean(xs: &[f32]) -> f32 {
        xs.iter().sum::<f32>() / xs.len() as f32
    }

    /// Frames in the 100 ms earshot needs to settle after a start or a reset.
    const WARM_UP: usize = 5;

    // Thresholds below were set from measured earshot 1.2.2 scores, with margin: silence scores
    // 0.15..0.28 (highest in the first frames), -55/-45 dBFS noise 0.12..0.39, the synthetic vowel
    // 0.62..0.96 once warmed up.

    #[test]
    fn earshot_scores_digital_silence_low() {
        let probs = scores(&mut EarshotVad::new(), &vec![0; 2 * ENGINE_RATE as usize]);
        assert!(probs.iter().all(|&p| p < 0.35), "{probs:?}");
        assert!(mean(&probs) < 0.25);
    }

    #[test]
    fn earshot_scores_low_white_noise_low() {
        // Uniform noise of amplitude 100 / 300: RMS -55 / -45 dBFS.
        for amplitude in [100.0, 300.0] {
            let noise = white_noise(2 * ENGINE_RATE as usize, amplitude, 42);
            let probs = scores(&mut EarshotVad::new(), &noise);
            assert!(
                probs.iter().all(|&p| p < 0.45),
                "amplitude {amplitude}: {probs:?}"
            );
            assert!(mean(&probs) < 0.3, "amplitude {amplitude}");
        }
    }

    #[test]
    fn earshot_scores_a_synthetic_vowel_high() {
        for seed in [7, 99] {
            let probs = scores(
                &mut EarshotVad::new(),
                &vowel(2 * ENGINE_RATE as usize, seed),
            );
            let settled = &probs[WARM_UP..];
            assert!(settled.iter().all(|&p| p > 0.5), "seed {seed}: {probs:?}");
            assert!(mean(settled) > 0.75, "seed {seed}");
        }
    }

    #[test]
    fn earshot_follows_silence_then_voice() {
        let mut signal = vec![0; ENGINE_RATE as usize];
        signal.extend(vowel(ENGINE_RATE as usize, 3));
        let probs = scores(&mut EarshotVad::new(), &signal);
        let (silent, voiced) = probs.split_at(probs.len() / 2);
        assert!(silent.iter().all(|&p| p < 0.35), "{silent:?}");
        assert!(voiced[WARM_UP..].iter().all(|&p| p > 0.5), "{voiced:?}");
    }

    #[test]
    fn earshot_reframing_matches_native_256_sample_frames() {
        // Feeding 320-sample frames must score exactly as earshot itself does on 256-sample
        // frames: each call reports the most recent complete native frame.
        let signal = vowel(ENGINE_RATE as usize, 11);
        let mut native = earshot::Detector::default();
        let native_scores: Vec<f32> = signal
            .chunks_exact(EARSHOT_FRAME)
            .map(|f| native.predict_i16(f))
            .collect();
        let mut vad = EarshotVad::new();
        for (i, frame) in signal.chunks_exact(ENGINE_FRAME).enumerate() {
            let p = vad.speech_probability(frame);
            let completed = (i + 1) * ENGINE_FRAME / EARSHOT_FRAME;
            assert_eq!(p, native_scores[completed - 1], "frame {i}");
        }
    }

    #[test]
    fn earshot_reset_forgets_the_stream() {
        let voice = vowel(ENGINE_RATE as usize / 2, 5);
        let silence = vec![0i16; ENGINE_RATE as usize / 2];
        let fresh = scores(&mut EarshotVad::new(), &silence);
        let mut vad = EarshotVad::default();
        scores(&mut vad, &voice);
        // Leave a partial earshot frame pending too.
        vad.speech_probability(&voice[..100]);
        vad.reset();
        assert_eq!(scores(&mut vad, &silence), fresh);
    }

    #[test]
    fn energy_vad_thresholds_on_dbfs() {
        let sine = |amplitude: f64| -> Vec<i16> {
            (0..ENGINE_FRAME)
                .map(|i| {
                    (amplitude * (2.0 * PI * 500.0 * i as f64 / 16_000.0).sin()).round() as i16
                })
                .collect()
        };
        // A sine of amplitude A is 20 log10(A / sqrt 2 / 32768) dBFS: 3277 -> -23.0 dBFS.
        let level = EnergyVad::level_dbfs(&sine(3277.0));
        assert!((level - -23.0).abs() < 0.1, "{level}");
        let full_scale = EnergyVad::level_dbfs(&sine(32767.0));
        assert!((full_scale - -3.01).abs() < 0.01, "{full_scale}");

        let mut vad = EnergyVad::new(-30.0);
        assert_eq!(vad.threshold_dbfs(), -30.0);
        assert_eq!(vad.speech_probability(&sine(3277.0)), 1.0); // -23 dBFS
        assert_eq!(vad.speech_probability(&sine(1500.0)), 1.0); // -29.8 dBFS
        assert_eq!(vad.speech_probability(&sine(1400.0)), 0.0); // -30.4 dBFS
        assert_eq!(vad.speech_probability(&vec![0; ENGINE_FRAME]), 0.0);
        assert_eq!(vad.speech_probability(&[]), 0.0);
        vad.reset();
        assert_eq!(
            vad.speech_probability(&sine(3277.0)),
            1.0,
            "stateless across reset"
        );
    }

    #[test]
    fn energy_vad_is_a_voice_detector_object() {
        let mut detectors: Vec<Box<dyn VoiceDetector>> =
            vec![Box::new(EnergyVad::new(-40.0)), Box::new(EarshotVad::new())];
        let silence = vec![0i16; ENGINE_FRAME];
        for d in &mut detectors {
            let p = d.speech_probability(&silence);
            assert!((0.0..0.5).contains(&p));
        }
    }
}
