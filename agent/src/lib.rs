//! Voxanne's agent: the conversation core and the engines it drives.
//!
//! - [`conversation`]: the sans-IO state machine that owns turn-taking for one call (greeting,
//!   endpointing, barge-in, DTMF, silence prompts, goodbye). It never reads a clock and never
//!   does I/O: time comes in with each input, effects go out as [`conversation::Output`]s.
//! - [`engine`]: the traits for speech-to-text, the brain and text-to-speech, shared by all calls.
//! - [`testing`]: honest test doubles for those traits (scripted text, tones), for tests, benches
//!   and demos; never the product's default.
//!
//! Invariant: nothing here depends on Twilio, HTTP or storage; `telephony` drives this crate.

pub mod conversation;
pub mod engine;
pub mod testing;
