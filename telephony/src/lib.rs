//! Voxanne's Twilio layer: the only crate that knows Twilio's JSON and TwiML.
//!
//! - [`signature`]: `X-Twilio-Signature` validation, as Twilio's helper libraries do it.
//! - [`twiml`]: the `<Connect><Stream>` answer to the voice webhook.
//! - [`webhook`]: the voice and status callbacks' fields, and the stream token that ties a
//!   media stream to the signed webhook that created it.
//! - [`protocol`]: Media Streams messages in and out.
//! - [`call`]: the per-call task that drives the conversation core over a media stream.
//!
//! Invariants: one task drives one call; bad input from the socket is counted and dropped,
//! never fatal to the call; nothing here knows HTTP frameworks, SQL or env vars.

pub mod call;
pub mod protocol;
pub mod signature;
pub mod twiml;
pub mod webhook;
