//! Deterministic speech-like test signals: a synthetic voice for the simulator, the load
//! generator and tests, so a "caller" needs no recorded audio and no TTS.
//!
//! The signal is a glottal pulse train (F0 around 120 Hz with vibrato and jitter) through four
//! vowel formant resonators, under a syllable-rate (4 Hz) loudness envelope: the VAD scores it
//! as speech, unlike a pure tone. It is not intelligible; speech-to-text sees noise.

use std::f64::consts::PI;

use crate::resample::resample;

/// Rate the voice is synthesised at before resampling (formants up to 3.3 kHz need > 8 kHz).
const SYNTH_RATE: u32 = 16_000;

/// A small deterministic noise source (xorshift), so signals are reproducible.
#[derive(Debug, Clone)]
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

fn resonator(x: &mut [f64], freq: f64, bandwidth: f64, out: &mut [f64]) {
    let fs = f64::from(SYNTH_RATE);
    let r = (-PI * bandwidth / fs).exp();
    let a1 = 2.0 * r * (2.0 * PI * freq / fs).cos();
    let a2 = -r * r;
    let (mut y1, mut y2) = (0.0, 0.0);
    for (o, &v) in out.iter_mut().zip(x.iter()) {
        let y = (1.0 - r) * v + a1 * y1 + a2 * y2;
        (y2, y1) = (y1, y);
        *o += y;
    }
}

/// `duration_ms` of synthetic voiced speech at `sample_rate`, peak about −8 dBFS. Different
/// `seed`s give different (but equally speech-like) signals.
pub fn voice(sample_rate: u32, duration_ms: u32, seed: u64) -> Vec<i16> {
    let fs = f64::from(SYNTH_RATE);
    let len = (u64::from(duration_ms) * u64::from(SYNTH_RATE) / 1000) as usize;
    let mut noise = Noise(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut phase: f64 = 0.0;
    let mut previous = 0.0;
    let mut source: Vec<f64> = (0..len)
        .map(|i| {
            let t = i as f64 / fs;
            let f0 = 120.0 + 20.0 * (2.0 * PI * 3.0 * t).sin() + 2.0 * noise.next();
            phase = (phase + f0 / fs) % 1.0;
            let pulse = if phase < 0.4 {
                (PI * phase / 0.4).sin()
            } else {
                0.0
            };
            let glottal = pulse + 0.02 * noise.next();
            let radiated = glottal - previous;
            previous = glottal;
            radiated
        })
        .collect();
    let mut voiced = vec![0.0; len];
    for (freq, bw) in [
        (700.0, 80.0),
        (1220.0, 90.0),
        (2600.0, 120.0),
        (3300.0, 200.0),
    ] {
        resonator(&mut source, freq, bw, &mut voiced);
    }
    let peak = voiced.iter().fold(1e-9f64, |m, v| m.max(v.abs()));
    let pcm: Vec<i16> = voiced
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let envelope = 0.6 + 0.4 * (2.0 * PI * 4.0 * i as f64 / fs).sin();
            (v / peak * 13_000.0 * envelope) as i16
        })
        .collect();
    if sample_rate == SYNTH_RATE {
        return pcm;
    }
    resample(&pcm, SYNTH_RATE, sample_rate).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vad::{EarshotVad, VoiceDetector};
    use crate::{ENGINE_FRAME, ENGINE_RATE};

    #[test]
    fn voice_has_the_requested_length_and_is_deterministic() {
        let a = voice(8_000, 1_000, 1);
        assert_eq!(a.len(), 8_000);
        assert_eq!(a, voice(8_000, 1_000, 1));
        assert_ne!(a, voice(8_000, 1_000, 2));
        let peak = a.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!((8_000..=16_000).contains(&peak), "peak {peak}");
    }

    #[test]
    fn earshot_hears_it_as_speech() {
        let v = voice(ENGINE_RATE, 2_000, 7);
        let mut vad = EarshotVad::new();
        let scores: Vec<f32> = v
            .chunks_exact(ENGINE_FRAME)
            .map(|f| vad.speech_probability(f))
            .collect();
        // After the detector settles (~100 ms), nearly every frame is speech.
        let settled = &scores[10..];
        let speech = settled.iter().filter(|&&p| p >= 0.5).count();
        assert!(
            speech * 10 >= settled.len() * 9,
            "{speech}/{}",
            settled.len()
        );
    }
}
