//! What the receptionist can do in the world, as a trait `api` implements over storage and the
//! embedding engine. The dialogue never sees SQL or sockets; tests implement it in memory.
//!
//! Every side-effecting call carries an idempotency key made from the call and what is being
//! done (see [`crate::dialogue`]), so a reply that is abandoned and asked again never books
//! twice.

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::Serialize;

/// A booked interval, half-open `[start, end)`.
pub type Interval = (DateTime<Utc>, DateTime<Utc>);

/// A tool failed (database down, engine missing). The dialogue apologises and offers a person or
/// a message; the detail goes to the call's events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ToolError(pub String);

/// An appointment as the receptionist knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Appointment {
    pub id: String,
    pub service: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub name: String,
    pub phone: String,
}

/// Who is calling, if we know them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CallerRecord {
    pub name: Option<String>,
    /// Booked appointments from now on, soonest first.
    pub upcoming: Vec<Appointment>,
}

/// A booking to make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BookingRequest {
    pub idempotency_key: String,
    pub service: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub name: String,
    pub phone: String,
}

/// What a booking (or a move) came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum BookingOutcome {
    Booked(Appointment),
    /// The slot was taken in the meantime (another caller confirmed it first).
    Conflict,
}

/// A message for staff to call back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageRequest {
    pub idempotency_key: String,
    pub name: String,
    pub phone: String,
    pub reason: String,
    pub urgent: bool,
}

/// A knowledge chunk that matched a question.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KnowledgeHit {
    pub title: String,
    pub text: String,
    /// Cosine similarity of the question and the chunk, -1..=1.
    pub score: f32,
}

/// The receptionist's tools. Futures own their inputs (`'static`) so a cancelled turn drops them.
pub trait ClinicTools: Send + Sync + std::fmt::Debug {
    /// The caller's name and upcoming appointments, by phone number.
    fn lookup_caller(&self, phone: String) -> BoxFuture<'static, Result<CallerRecord, ToolError>>;
    /// Booked intervals overlapping `[from, to)`.
    fn busy(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> BoxFuture<'static, Result<Vec<Interval>, ToolError>>;
    /// Books, transactionally: a conflict is an answer, not an error.
    fn book(
        &self,
        request: BookingRequest,
    ) -> BoxFuture<'static, Result<BookingOutcome, ToolError>>;
    /// Moves an appointment (its own old slot does not conflict).
    fn reschedule(
        &self,
        appointment_id: String,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        idempotency_key: String,
    ) -> BoxFuture<'static, Result<BookingOutcome, ToolError>>;
    /// Cancels (idempotent).
    fn cancel(&self, appointment_id: String) -> BoxFuture<'static, Result<(), ToolError>>;
    /// Stores a callback request.
    fn take_message(&self, message: MessageRequest) -> BoxFuture<'static, Result<(), ToolError>>;
    /// The knowledge chunks nearest to `question`, best first (at most `limit`).
    fn search_knowledge(
        &self,
        question: String,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<KnowledgeHit>, ToolError>>;
}
