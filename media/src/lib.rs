//! Pure audio DSP and formats for Voxanne.
//!
//! Everything here is deterministic and synchronous: no tokio, no clock, no files opened by name.
//! Time is media time, counted in samples. Writers and readers take `impl Write`/`impl Read + Seek`,
//! so the caller decides where bytes go.
//!
//! Invariants:
//! - No allocation per 20 ms frame on the hot path: every per-frame API writes into a buffer the
//!   caller owns and reuses.
//! - μ-law is bit-exact to ITU-T G.191 (checked against its reference vectors when `../shared` is
//!   present, and by property tests always).

pub mod endpoint;
pub mod mulaw;
pub mod recording;
pub mod resample;
pub mod testsignal;
pub mod vad;

/// Sample rate of the telephone leg (Twilio Media Streams: 8 kHz μ-law).
pub const PHONE_RATE: u32 = 8_000;
/// Samples in one 20 ms telephone frame: Twilio sends and expects 20 ms frames.
pub const PHONE_FRAME: usize = 160;
/// Sample rate the VAD and speech-to-text engines work at.
pub const ENGINE_RATE: u32 = 16_000;
/// Samples in one 20 ms frame at [`ENGINE_RATE`].
pub const ENGINE_FRAME: usize = 320;
