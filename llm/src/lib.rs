//! The LLM brain: any OpenAI-compatible Chat Completions server as a call's brain (issue 11).
//!
//! Work in progress: the pieces below are written and unit-tested, the `Brain` that streams a
//! turn through them (escalation first, tools, fallback to the offline receptionist) is not
//! yet. Invariants the pieces already keep:
//! - the transfer number is the clinic's `transfer_number`, never the model's ([`tools`]);
//! - a booking, move or cancellation needs a free slot of a real service and the caller's yes
//!   this turn, with the offline receptionist's idempotency keys ([`tools`]);
//! - a provider that keeps failing is skipped by every call for a while ([`breaker`],
//!   [`provider`]).

pub mod brain;
pub mod breaker;
pub mod prompt;
pub mod provider;
pub mod sentences;
pub mod settings;
pub mod tools;

pub use brain::{Fallback, Filler, LlmBrain};
pub use provider::{Provider, Providers};
pub use settings::{LlmDefaults, LlmSettings};
