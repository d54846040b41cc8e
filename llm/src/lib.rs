//! The LLM brain: any OpenAI-compatible Chat Completions server (OpenAI, Groq, vLLM, llama.cpp,
//! Ollama…) as a call's brain (issue 11), with the offline receptionist's tools, rules and
//! answers behind it.
//!
//! [`LlmBrain`] wraps a call's `ReceptionistSession`: the receptionist's escalation rules run
//! first on every caller turn, the model's reply is streamed sentence by sentence
//! ([`sentences`]), its tool calls run through [`tools`], and any provider failure hands the
//! turn to the receptionist ([`brain`] has the whole turn).
//!
//! HTTP: `async-openai` 0.43 (the design card's choice) on the workspace's reqwest 0.13, both
//! with `rustls-no-provider`: [`provider`] installs rustls' ring provider, so the build keeps
//! one TLS stack (rustls 0.23 on ring, shared with sqlx and the model downloads) and no aws-lc
//! C build or OpenSSL (checked with `cargo tree -i rustls` and the lock file). Its `middleware`
//! feature is used only to build the client without the default retry layer.
//!
//! Invariants:
//! - emergencies, medical questions, "a person" and questions the receptionist is waiting on
//!   never reach the model ([`brain::policy_turn`]);
//! - the transfer number is the clinic's `transfer_number`, never the model's ([`tools`]);
//! - a booking, move or cancellation needs a free slot of a real service and the caller's yes
//!   this turn, with the offline receptionist's idempotency keys ([`tools`]);
//! - no turn is left unanswered: an error, stall, cut stream or garbage means the receptionist
//!   answers it, recorded as an `llm_fallback` call event ([`brain::Fallback`]);
//! - a provider that keeps failing is skipped by every call for a while ([`breaker`],
//!   [`provider`]);
//! - the API key never appears in `Debug` output or logs ([`settings`]).

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
