//! The offline clinic receptionist: Voxanne's default brain.
//!
//! A deterministic, grounded dialogue manager: no language model decides facts. What the caller
//! said (as Whisper writes it) is normalised ([`text`]), dates and times are read by a small
//! grammar resolved in the clinic's time zone ([`when`]), intents and slots are found
//! ([`nlu`]), and a per-call [`session`] runs the dialogue policy ([`dialogue`]): a booking form
//! that asks only for what is missing, answers from the clinic file and its knowledge, and
//! escalation to a human. Side effects (availability, booking, messages, caller look-up,
//! knowledge search) go through the [`tools::ClinicTools`] trait, which `api` implements over
//! storage and the embedding engine.
//!
//! Invariants:
//! - nothing here reads a clock: the clinic-local time is an input of every turn;
//! - nothing here does I/O except through [`tools::ClinicTools`];
//! - the only number the agent may transfer to is the clinic's `transfer_number`.

pub mod clinic;
pub mod dialogue;
pub mod nlu;
pub mod session;
pub mod slots;
pub mod speak;
pub mod testing;
pub mod text;
pub mod tools;
pub mod when;
