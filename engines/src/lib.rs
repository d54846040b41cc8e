//! Embedded offline engines: everything a call needs without a cloud key.
//!
//! - [`whisper`]: speech-to-text with Whisper (whisper.cpp), a pool of one-thread decoders.
//! - [`ct2`] + [`ggml`]: Whisper weights converted from CTranslate2 to ggml in Rust.
//! - [`piper`] (phonemes from [`espeak`], a child process) and [`festival`]: text-to-speech.
//! - [`silero`]: the optional VAD; [`onnx`]: the ONNX Runtime they run on.
//! - [`minilm`]: sentence embeddings (all-MiniLM-L6-v2) for knowledge retrieval, with its
//!   hand-written BERT tokenizer in [`wordpiece`].
//! - [`models`]: fetch and verify model files; [`embedded`]: configuration → loaded engines;
//!   [`wer`]: word error rate.
//!
//! Engines load once per process and are shared by all calls (`Arc`); a call never waits on
//! a model load.

pub mod ct2;
pub mod embedded;
pub mod espeak;
pub mod festival;
pub mod ggml;
pub mod minilm;
pub mod models;
pub mod onnx;
pub mod piper;
pub mod silero;
pub mod wer;
pub mod whisper;
pub mod wordpiece;
