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

/// Length of rubato's fixed input chunk, in milliseconds of input audio.
///
/// 20 ms is the telephone frame: at 8 kHz → 16 kHz a 160-sample phone frame is exactly one chunk
/// and comes out as exactly one 320-sample engine frame (and vice versa), with no extra buffering
/// latency. FFT blocks this size still give a transition band well above the speech band (the
/// 440 Hz round trip in the tests keeps > 30 dB SNR), and rubato's delay is half a block (10 ms).
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
        d.field("from_hz", &self.from_hz).field("to_hz", &self.to_hz);
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

impl Resampler {
    /// A resampler from `from_hz` to `to_hz`. Equal rates make a cheap passthrough.
    pub fn new(from_hz: u32, to_hz: u32) -> Result<Self, ResampleError> {
        if from_hz == 0 || to_hz == 0 {
            return Err(ResampleError::ZeroRate { from_hz, to_hz });
        }
        let engine = if from_hz == to_hz {
            None
        } else {
            let chunk = (from_hz * CHUNK_MS).div_ceil(1000) as usize;
            let fft = Fft::<f32>::new(
                from_hz as usize,
                to_hz as usize,
                chunk,
                1,
                FixedSync::Both,
            )
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
