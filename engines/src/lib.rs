//! Embedded offline engines: everything a call needs without a cloud key.
//!
//! - [`whisper`]: speech-to-text with Whisper (whisper.cpp), a pool of one-thread decoders.
//! - [`ct2`] + [`ggml`]: Whisper weights converted from CTranslate2 to ggml in Rust.
//!
//! Engines load once per process and are shared by all calls (`Arc`); a call never waits on
//! a model load.

pub mod ct2;
pub mod embedded;
pub mod espeak;
pub mod festival;
pub mod ggml;
pub mod models;
pub mod onnx;
pub mod piper;
pub mod silero;
pub mod wer;
pub mod whisper;

/// Samples in one 20 ms frame at the engine rate (the core's VAD frame).
pub(crate) const FRAME: usize = media::ENGINE_FRAME;
