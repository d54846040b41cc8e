//! Streaming sample-rate conversion between the telephone leg and the engines.
//!
//! Rates in use: 8 kHz ↔ 16 kHz (phone ↔ VAD/STT), 22.05 kHz and 24 kHz → 8 kHz (TTS → phone),
//! 16 kHz → 8 kHz. [`Resampler`] wraps rubato 5's synchronous FFT resampler ([`rubato::Fft`] with
//! [`FixedSync::Both`]) and adds what a call needs on top of it:
//!
//! - **Any input size.** Audio arrives in 160-sample phone frames or in odd-sized TTS chunks; input
//!   is buffered internally until rubato's fixed chunk (20 ms of input, see [`CHUNK_MS`]) is full.
//!   The output therefore depends only on the sample sequence, never on how it was chunked.
//! - **Time alignment.** rubato's FFT resampler delays its output by half an FFT block
//!   ([`rubato::Resampler::output_delay`], in output samples); that many leading output samples are
//!   dropped, so input sample `k` lands at output `k * to / from`.
//! - **Exact length.** [`Resampler::flush`] pushes zeros through until the total output for `N`
//!   input samples is `round(N * to / from)`.
//! - **No allocation per call** once running: rubato's scratch buffers and ours are allocated in
//!   [`Resampler::new`]; output is appended to a caller-owned `Vec`.
//!
//! Samples are carried through rubato as `f32` at 16-bit scale and rounded and saturated back.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler as _};

/// Shortest rubato input chunk, in milliseconds of input audio (rounded up per rate pair, see
/// `chunk_len`: 20 ms for 8, 16 and 24 kHz input, 40 ms for 22.05 kHz).
///
/// 20 ms is the telephone frame: at 8 kHz → 16 kHz a 160-sample phone frame is exactly one chunk
/// and comes out as exactly one 320-sample engine frame (and vice versa), with no extra buffering
/// latency. FFT blocks this size still give a transition band well above the speech band (a 440 Hz
/// sine keeps > 30 dB SNR through every conversion in the tests), and rubato's delay is half a
/// block (10 ms at 20 ms chunks), trimmed from the output.
pub const CHUNK_MS: u32 = 20;

/// Errors from building a [`Resampler`].
#[derive(Debug, thiserror::Error)]
pub enum ResampleError {
    /// A sample rate of zero was asked for.
    #[error("sample rates must be positive (asked {from_hz} Hz -> {to_hz} Hz)")]
    ZeroRate {
        /// Requested input rate.
        from_hz: u32,
        /// Requested output rate.
        to_hz: u32,
    },
    /// rubato refused the configuration.
    #[error("cannot build a {from_hz} Hz -> {to_hz} Hz resampler")]
    Construction {
        /// Requested input rate.
        from_hz: u32,
        /// Requested output rate.
        to_hz: u32,
        /// rubato's reason.
        #[source]
        source: rubato::ResamplerConstructionError,
    },
}

/// A streaming, mono, 16-bit resampler from `from_hz` to `to_hz`. One per audio stream.
pub struct Resampler {
    from_hz: u32,
    to_hz: u32,
    /// `None` when `from_hz == to_hz`: samples are copied through untouched.
    engine: Option<Engine>,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Resampler");
        d.field("from_hz", &self.from_hz)
            .field("to_hz", &self.to_hz);
        if let Some(engine) = &self.engine {
            d.field("chunk_in", &engine.chunk_in)
                .field("chunk_out", &engine.chunk_out)
                .field("delay", &engine.delay)
                .field("buffered", &engine.filled)
                .field("consumed", &engine.consumed)
                .field("emitted", &engine.emitted);
        }
        d.finish()
    }
}

/// The rubato resampler and the buffers around it.
struct Engine {
    fft: Fft<f32>,
    /// Input samples rubato takes per call (fixed, [`FixedSync::Both`]).
    chunk_in: usize,
    /// Output samples rubato returns per call.
    chunk_out: usize,
    /// rubato's output delay in output samples; that many leading samples are dropped.
    delay: usize,
    /// Input waiting for a full chunk; only `input[..filled]` is valid.
    input: Vec<f32>,
    filled: usize,
    /// rubato writes each chunk's output here before it is converted and appended.
    output: Vec<f32>,
    /// Leading output samples still to drop to cancel rubato's delay.
    delay_left: usize,
    /// Input samples accepted since the stream started (for the flush length).
    consumed: u64,
    /// Output samples appended since the stream started.
    emitted: u64,
}

/// Resamples a whole clip (one stream, flushed): `round(len * to / from)` samples out.
pub fn resample(input: &[i16], from_hz: u32, to_hz: u32) -> Result<Vec<i16>, ResampleError> {
    let mut r = Resampler::new(from_hz, to_hz)?;
    let mut out = Vec::with_capacity(input.len() * to_hz as usize / from_hz.max(1) as usize + 8);
    r.process(input, &mut out);
    r.flush(&mut out);
    Ok(out)
}

impl Resampler {
    /// A resampler from `from_hz` to `to_hz`. Equal rates make a cheap passthrough.
    pub fn new(from_hz: u32, to_hz: u32) -> Result<Self, ResampleError> {
        if from_hz == 0 || to_hz == 0 {
            return Err(ResampleError::ZeroRate { from_hz, to_hz });
        }
        let engine = if from_hz == to_hz {
            None
        } else {
            let chunk = chunk_len(from_hz, to_hz);
            let fft = Fft::<f32>::new(from_hz as usize, to_hz as usize, chunk, 1, FixedSync::Both)
                .map_err(|source| ResampleError::Construction {
                    from_hz,
                    to_hz,
                    source,
                })?;
            let chunk_in = fft.input_frames_max();
            let chunk_out = fft.output_frames_max();
            let delay = fft.output_delay();
            Some(Engine {
                fft,
                chunk_in,
                chunk_out,
                delay,
                input: vec![0.0; chunk_in],
                filled: 0,
                output: vec![0.0; chunk_out],
                delay_left: delay,
                consumed: 0,
                emitted: 0,
            })
        };
        Ok(Self {
            from_hz,
            to_hz,
            engine,
        })
    }

    /// Input sample rate.
    pub fn from_hz(&self) -> u32 {
        self.from_hz
    }

    /// Output sample rate.
    pub fn to_hz(&self) -> u32 {
        self.to_hz
    }

    /// Feeds any number of input samples and appends whatever output is ready to `out`.
    ///
    /// Output lags input by less than one chunk ([`CHUNK_MS`] of input) plus rubato's delay; call
    /// [`flush`](Self::flush) at the end of the stream to get the rest.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        let Some(engine) = &mut self.engine else {
            out.extend_from_slice(input);
            return;
        };
        let mut rest = input;
        while !rest.is_empty() {
            let take = (engine.chunk_in - engine.filled).min(rest.len());
            let (now, later) = rest.split_at(take);
            for (slot, &s) in engine.input[engine.filled..engine.filled + take]
                .iter_mut()
                .zip(now)
            {
                *slot = f32::from(s);
            }
            engine.filled += take;
            engine.consumed += take as u64;
            rest = later;
            if engine.filled == engine.chunk_in {
                engine.run_chunk(None);
                engine.filled = 0;
                engine.emit(u64::MAX, out);
            }
        }
    }

    /// Ends the stream: pushes the buffered input through (zero padded) and appends the remaining
    /// output, so that the stream's total output is `round(N * to / from)` samples for `N` input
    /// samples. The resampler is then [reset](Self::reset), ready for a new stream.
    pub fn flush(&mut self, out: &mut Vec<i16>) {
        let (from_hz, to_hz) = (u64::from(self.from_hz), u64::from(self.to_hz));
        let Some(engine) = &mut self.engine else {
            return;
        };
        let target = (engine.consumed * to_hz + from_hz / 2) / from_hz;
        while engine.emitted < target {
            engine.run_chunk(Some(engine.filled));
            engine.filled = 0;
            engine.emit(target, out);
        }
        self.reset();
    }

    /// Drops buffered input and filter state: the next sample starts a new stream.
    pub fn reset(&mut self) {
        if let Some(engine) = &mut self.engine {
            engine.fft.reset();
            engine.filled = 0;
            engine.delay_left = engine.delay;
            engine.consumed = 0;
            engine.emitted = 0;
        }
    }
}

/// rubato's input chunk for `from_hz → to_hz`: at least [`CHUNK_MS`] of input, as a whole number
/// `k` of the smallest block the rate pair allows (`from_hz / gcd` in, `to_hz / gcd` out), with
/// `k` even.
///
/// Why even: rubato's FFT filter is centred on sample `floor(block_in / 2)` while it reports its
/// delay as `floor(block_out / 2)` output samples. The two agree exactly only when both block
/// lengths are even; the two minimal blocks are coprime, so `k` must be even. (With 441 → 160 at
/// 22.05 kHz, the odd block left the output 0.18 samples early and cost 6 dB of SNR on a sine.)
fn chunk_len(from_hz: u32, to_hz: u32) -> usize {
    let (mut a, mut b) = (from_hz, to_hz);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    let min_in = (from_hz / a) as usize;
    let wanted = (from_hz * CHUNK_MS).div_ceil(1000) as usize;
    let k = wanted.div_ceil(min_in);
    (k + (k & 1)) * min_in
}

impl Engine {
    /// Runs one rubato chunk from `input` into `output`. `partial` is how many input samples are
    /// valid (rubato zero-pads the rest); `None` means the whole chunk.
    fn run_chunk(&mut self, partial: Option<usize>) {
        let input = InterleavedSlice::new(&self.input[..], 1, self.chunk_in)
            .expect("input buffer holds one chunk of one channel");
        let mut output = InterleavedSlice::new_mut(&mut self.output[..], 1, self.chunk_out)
            .expect("output buffer holds one chunk of one channel");
        let indexing = partial.map(|n| Indexing::new().partial_len(n));
        self.fft
            .process_into_buffer(&input, &mut output, indexing.as_ref())
            .expect("buffers are sized from the resampler's own chunk sizes");
    }

    /// Appends this chunk's output to `out`, dropping the delay and stopping at `limit` total
    /// samples emitted.
    fn emit(&mut self, limit: u64, out: &mut Vec<i16>) {
        let skip = self.delay_left.min(self.chunk_out);
        self.delay_left -= skip;
        let room = usize::try_from(limit.saturating_sub(self.emitted)).unwrap_or(usize::MAX);
        let ready = &self.output[skip..];
        let ready = &ready[..ready.len().min(room)];
        out.extend(
            ready
                .iter()
                .map(|&x| x.round().clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16),
        );
        self.emitted += ready.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The rate pairs Voxanne uses.
    const RATES: [(u32, u32); 5] = [
        (8_000, 16_000),
        (16_000, 8_000),
        (22_050, 8_000),
        (24_000, 8_000),
        (16_000, 16_000),
    ];

    fn sine(freq: f64, rate: u32, len: usize, amplitude: f64) -> Vec<i16> {
        (0..len)
            .map(|i| {
                let t = i as f64 / f64::from(rate);
                (amplitude * (2.0 * std::f64::consts::PI * freq * t).sin()).round() as i16
            })
            .collect()
    }

    /// Resamples `input` fed in pieces of the given sizes (cycled), then flushes.
    fn run_chunked(from: u32, to: u32, input: &[i16], sizes: &[usize]) -> Vec<i16> {
        let mut resampler = Resampler::new(from, to).unwrap();
        let mut out = Vec::new();
        let mut rest = input;
        for &size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at(size.clamp(1, rest.len()));
            resampler.process(now, &mut out);
            rest = later;
        }
        resampler.flush(&mut out);
        out
    }

    fn expected_len(n: usize, from: u32, to: u32) -> usize {
        (n as f64 * f64::from(to) / f64::from(from)).round() as usize
    }

    /// SNR in dB of `actual` against `reference` over `range`.
    fn snr_db(reference: &[i16], actual: &[i16], range: std::ops::Range<usize>) -> f64 {
        let (mut signal, mut noise) = (0.0, 0.0);
        for i in range {
            let r = f64::from(reference[i]);
            let e = f64::from(actual[i]) - r;
            signal += r * r;
            noise += e * e;
        }
        10.0 * (signal / noise.max(1e-9)).log10()
    }

    #[test]
    fn zero_rate_is_an_error() {
        assert!(matches!(
            Resampler::new(0, 8_000),
            Err(ResampleError::ZeroRate { .. })
        ));
        assert!(matches!(
            Resampler::new(8_000, 0),
            Err(ResampleError::ZeroRate { .. })
        ));
    }

    #[test]
    fn equal_rates_pass_through() {
        let mut resampler = Resampler::new(16_000, 16_000).unwrap();
        assert_eq!((resampler.from_hz(), resampler.to_hz()), (16_000, 16_000));
        let input = sine(440.0, 16_000, 321, 10_000.0);
        let mut out = vec![1, 2];
        resampler.process(&input, &mut out);
        resampler.flush(&mut out);
        assert_eq!(&out[..2], &[1, 2], "process appends");
        assert_eq!(&out[2..], &input[..]);
    }

    #[test]
    fn phone_frame_becomes_engine_frame_without_lag() {
        // At 8 kHz -> 16 kHz one 20 ms phone frame is one rubato chunk: each frame in gives a
        // frame out, except the first, whose first 10 ms are rubato's trimmed delay.
        let mut up = Resampler::new(crate::PHONE_RATE, crate::ENGINE_RATE).unwrap();
        let mut out = Vec::new();
        let frame = sine(440.0, 8_000, crate::PHONE_FRAME, 8_000.0);
        up.process(&frame, &mut out);
        assert_eq!(out.len(), crate::ENGINE_FRAME / 2);
        for k in 2..=10 {
            up.process(&frame, &mut out);
            assert_eq!(out.len(), k * crate::ENGINE_FRAME - crate::ENGINE_FRAME / 2);
        }
    }

    #[test]
    fn flush_of_an_empty_stream_is_empty() {
        for (from, to) in RATES {
            let mut resampler = Resampler::new(from, to).unwrap();
            let mut out = Vec::new();
            resampler.flush(&mut out);
            assert!(out.is_empty(), "{from} -> {to}");
        }
    }

    #[test]
    fn sine_survives_a_round_trip_through_16k() {
        let input = sine(440.0, 8_000, 8_000, 12_000.0);
        let up = run_chunked(8_000, 16_000, &input, &[crate::PHONE_FRAME]);
        assert_eq!(up.len(), 16_000);
        let back = run_chunked(16_000, 8_000, &up, &[crate::ENGINE_FRAME]);
        assert_eq!(back.len(), input.len());

        // Align: the best lag must be zero (the delay is trimmed), and the SNR high there.
        // The first and last 20 ms are excluded: the stream starts and ends abruptly.
        let inner = 160..input.len() - 160;
        let best_lag = (-4i32..=4)
            .max_by(|&a, &b| {
                let snr = |lag: i32| {
                    let shifted: Vec<i16> = (0..input.len())
                        .map(|i| back[(i as i32 + lag).clamp(0, back.len() as i32 - 1) as usize])
                        .collect();
                    snr_db(&input, &shifted, inner.clone())
                };
                snr(a).total_cmp(&snr(b))
            })
            .unwrap();
        assert_eq!(best_lag, 0, "output is time-aligned with the input");
        let snr = snr_db(&input, &back, inner);
        println!("8k -> 16k -> 8k: SNR {snr:.1} dB");
        assert!(snr > 30.0, "round-trip SNR {snr:.1} dB");

        // The upsampled signal is the same sine at 16 kHz.
        let ideal = sine(440.0, 16_000, 16_000, 12_000.0);
        let snr = snr_db(&ideal, &up, 320..16_000 - 320);
        println!("8k -> 16k: SNR {snr:.1} dB");
        assert!(snr > 30.0, "8k -> 16k SNR {snr:.1} dB");
    }

    #[test]
    fn tts_rates_downsample_a_sine_in_time() {
        for from in [22_050, 24_000, 16_000] {
            let input = sine(440.0, from, from as usize, 12_000.0);
            let out = run_chunked(from, 8_000, &input, &[1_000, 37, 4_096]);
            assert_eq!(out.len(), 8_000, "{from} -> 8000");
            let ideal = sine(440.0, 8_000, 8_000, 12_000.0);
            let snr = snr_db(&ideal, &out, 160..8_000 - 160);
            println!("{from} -> 8000: SNR {snr:.1} dB");
            assert!(snr > 30.0, "{from} -> 8000: SNR {snr:.1} dB");
        }
    }

    #[test]
    fn one_block_and_phone_frames_give_the_same_output() {
        let input = sine(300.0, 8_000, 4_321, 9_000.0);
        let whole = run_chunked(8_000, 16_000, &input, &[input.len()]);
        let framed = run_chunked(8_000, 16_000, &input, &[crate::PHONE_FRAME]);
        assert_eq!(whole, framed);
    }

    #[test]
    fn reset_starts_a_new_stream() {
        let input = sine(440.0, 24_000, 2_000, 9_000.0);
        let mut resampler = Resampler::new(24_000, 8_000).unwrap();
        let mut first = Vec::new();
        resampler.process(&input, &mut first);
        resampler.flush(&mut first);

        // Half a stream, abandoned by reset: no trace of it afterwards.
        let mut discarded = Vec::new();
        resampler.process(&input[..777], &mut discarded);
        resampler.reset();
        let mut second = Vec::new();
        resampler.process(&input, &mut second);
        resampler.flush(&mut second);
        assert_eq!(first, second);
    }

    #[test]
    fn loud_input_saturates_instead_of_wrapping() {
        // A full-scale square wave overshoots when band-limited (Gibbs): clamp, never wrap.
        let input: Vec<i16> = (0..1_600)
            .map(|i| {
                if (i / 20) % 2 == 0 {
                    i16::MAX
                } else {
                    i16::MIN
                }
            })
            .collect();
        let out = run_chunked(8_000, 16_000, &input, &[160]);
        assert!(out.contains(&i16::MAX) && out.contains(&i16::MIN));
        // Wrapping would put large values of the wrong sign in the middle of a plateau.
        for (i, &s) in out.iter().enumerate().skip(40).take(3_000) {
            let plateau = (i / 40) % 2 == 0;
            let mid = i % 40 > 10 && i % 40 < 30;
            if mid {
                assert_eq!(s > 0, plateau, "sample {i} = {s}");
            }
        }
    }

    proptest! {
        #[test]
        fn total_length_is_rounded_ratio(
            pair in 0..RATES.len(),
            len in 0usize..6_000,
            sizes in proptest::collection::vec(1usize..700, 1..8),
        ) {
            let (from, to) = RATES[pair];
            let input = vec![1_000i16; len];
            let out = run_chunked(from, to, &input, &sizes);
            prop_assert_eq!(out.len(), expected_len(len, from, to));
        }

        #[test]
        fn output_does_not_depend_on_chunking(
            pair in 0..RATES.len(),
            input in proptest::collection::vec(any::<i16>(), 0..3_000),
            sizes in proptest::collection::vec(1usize..500, 1..8),
        ) {
            let (from, to) = RATES[pair];
            let whole = run_chunked(from, to, &input, &[input.len().max(1)]);
            let chunked = run_chunked(from, to, &input, &sizes);
            prop_assert_eq!(whole, chunked);
        }
    }
}
