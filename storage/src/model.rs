//! The records the store reads and writes, and [`WriteOp`], the unit of the write path.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{AssistantId, CallSid, OrgId};

/// What `create_assistant` needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewAssistant {
    pub name: String,
    /// The first thing the agent says when it answers.
    pub greeting: String,
    /// TTS voice name, as the TTS engine understands it.
    pub voice: String,
    /// Where "transfer me to a person" goes (E.164), if anywhere.
    pub transfer_number: Option<String>,
    /// Brain/engine settings (model, prompt, temperature, STT/TTS engine choices...): free-form JSON owned by
    /// the agent crate, stored as JSONB on Postgres and JSON text on SQLite.
    pub settings: serde_json::Value,
}

/// A stored assistant. The knowledge base is a separate column with its own accessors
/// ([`Store::knowledge_base`](crate::Store::knowledge_base)) because it can be large and most readers do not
/// need it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assistant {
    pub id: AssistantId,
    pub org: OrgId,
    pub name: String,
    pub greeting: String,
    pub voice: String,
    pub transfer_number: Option<String>,
    pub settings: serde_json::Value,
}

/// One write. Every variant is idempotent and they commute: replaying any of them, or applying them in another
/// order, ends in the same rows (see the crate docs, "Idempotency"). That is what lets Twilio retries, the
/// write queue's retries and the spill-file replay be safe. Serialised as JSON lines into the spill file, so
/// renaming a variant or field is a format change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum WriteOp {
    /// The call reached us (voice webhook or media stream start). Fills in a placeholder row if other writes
    /// got there first; a replay changes nothing. Moves status forward to `in-progress` at most.
    CallStarted {
        org: OrgId,
        assistant: Option<AssistantId>,
        sid: CallSid,
        from: String,
        to: String,
        direction: String,
        started_at: DateTime<Utc>,
    },
    /// A Twilio status callback (`ringing`, `in-progress`, `completed`, ...). Status only moves forward
    /// (queued < initiated < ringing < in-progress < terminal); the first terminal status wins; a replay or a
    /// late, older callback is a no-op.
    CallStatus {
        org: OrgId,
        sid: CallSid,
        status: String,
        at: DateTime<Utc>,
    },
    /// The call ended on our side. The first `CallEnded` wins; a replay is a no-op.
    CallEnded {
        org: OrgId,
        sid: CallSid,
        ended_at: DateTime<Utc>,
        end_reason: String,
        duration_ms: i64,
    },
    /// A finished turn; `(sid, seq)` is its key, the first write wins.
    Turn(TurnRecord),
    /// A call event; `(sid, seq)` is its key, the first write wins.
    Event(EventRecord),
    /// The call's recording; one per call, the first write wins.
    Recording(RecordingRecord),
    /// A caller's contact details; `(org, phone)` is the key, the newest `updated_at` wins.
    Contact(ContactRecord),
    // Bookings are not write-queue ops: they must be refused when the slot is taken, which an asynchronous,
    // last-writer-wins write cannot do. See `Store::book_appointment`.
}

impl WriteOp {
    /// The organisation the write belongs to.
    pub fn org(&self) -> OrgId {
        match self {
            WriteOp::CallStarted { org, .. }
            | WriteOp::CallStatus { org, .. }
            | WriteOp::CallEnded { org, .. } => *org,
            WriteOp::Turn(t) => t.org,
            WriteOp::Event(e) => e.org,
            WriteOp::Recording(r) => r.org,
            WriteOp::Contact(c) => c.org,
        }
    }

    /// The call the write is about, if any.
    pub fn call_sid(&self) -> Option<&CallSid> {
        match self {
            WriteOp::CallStarted { sid, .. }
            | WriteOp::CallStatus { sid, .. }
            | WriteOp::CallEnded { sid, .. } => Some(sid),
            WriteOp::Turn(t) => Some(&t.sid),
            WriteOp::Event(e) => Some(&e.sid),
            WriteOp::Recording(r) => Some(&r.sid),
            WriteOp::Contact(_) => None,
        }
    }

    /// A short name for logs and metrics (no personal data).
    pub fn kind(&self) -> &'static str {
        match self {
            WriteOp::CallStarted { .. } => "call_started",
            WriteOp::CallStatus { .. } => "call_status",
            WriteOp::CallEnded { .. } => "call_ended",
            WriteOp::Turn(_) => "turn",
            WriteOp::Event(_) => "event",
            WriteOp::Recording(_) => "recording",
            WriteOp::Contact(_) => "contact",
        }
    }
}

/// Per-stage latency of one turn, in milliseconds; `None` where the stage did not happen or was not measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnLatency {
    /// Caller stopped speaking -> endpointer decided the turn was over.
    pub endpointing_ms: Option<i64>,
    /// End of caller speech -> final transcript.
    pub stt_ms: Option<i64>,
    /// Prompt sent -> first token from the brain (LLM).
    pub brain_first_token_ms: Option<i64>,
    /// First text to TTS -> first audio back.
    pub tts_first_audio_ms: Option<i64>,
    /// Caller stopped speaking -> caller hears the agent: the number callers feel.
    pub voice_to_voice_ms: Option<i64>,
}

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TurnRecord {
    pub org: OrgId,
    pub sid: CallSid,
    /// Position in the call, from 0. `(sid, seq)` is the idempotency key.
    pub seq: i32,
    /// `"caller"` or `"agent"`.
    pub role: String,
    /// What was said (caller: transcript; agent: what the brain generated).
    pub text: String,
    /// For agent turns: the part the caller actually heard before a barge-in cut it off.
    pub heard_text: Option<String>,
    pub interrupted: bool,
    /// Media time from the start of the call, in milliseconds.
    pub start_ms: i64,
    pub end_ms: i64,
    pub latency: TurnLatency,
}

/// Something that happened during a call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub org: OrgId,
    pub sid: CallSid,
    /// Position among the call's events, from 0. `(sid, seq)` is the idempotency key.
    pub seq: i32,
    /// Media time from the start of the call, in milliseconds.
    pub at_ms: i64,
    /// `"start"`, `"dtmf"`, `"barge_in"`, `"transfer"`, `"error"`, ...
    pub kind: String,
    pub detail: serde_json::Value,
}

/// Where a call's recording is and how to check it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingRecord {
    pub org: OrgId,
    pub sid: CallSid,
    /// As returned by [`RecordingStore::put`](crate::RecordingStore::put).
    pub location: String,
    pub channels: i32,
    pub sample_rate: i32,
    pub duration_ms: i64,
    /// Hex SHA-256 of the file's bytes.
    pub sha256: String,
}

/// A caller the clinic knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactRecord {
    pub org: OrgId,
    /// E.164; `(org, phone)` is the key.
    pub phone: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub notes: Option<String>,
    /// Last-writer-wins clock: an upsert older than the stored row is ignored.
    pub updated_at: DateTime<Utc>,
}

/// An appointment. Booked synchronously ([`Store::book_appointment`](crate::Store::book_appointment)), so the
/// caller hears "booked" only once the database has it; the database refuses overlapping bookings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appointment {
    pub org: OrgId,
    pub id: Uuid,
    /// The call during which it was booked, if any.
    pub call: Option<CallSid>,
    /// The contact it is for (E.164), if the caller's number was known.
    pub phone: Option<String>,
    /// The name the caller gave; empty for bookings made before names were kept.
    pub patient_name: String,
    /// What it is for ("cleaning", "consultation", ...), as the clinic config names its services.
    pub service: String,
    /// The slot, half-open: `[starts_at, ends_at)`, so back-to-back slots do not overlap.
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// `"booked"` or `"cancelled"`.
    pub status: String,
    /// The key of the request that created it (a booking or a reschedule); `None` for rows older than keys.
    pub idempotency_key: Option<String>,
    /// For a reschedule: the appointment it replaced (now cancelled).
    pub rescheduled_from: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Appointment {
    /// `status == "booked"`.
    pub fn is_booked(&self) -> bool {
        self.status == APPOINTMENT_BOOKED
    }
}

/// [`Appointment::status`] of a live booking: the only status the no-overlap rule applies to.
pub const APPOINTMENT_BOOKED: &str = "booked";
/// [`Appointment::status`] once cancelled (or replaced by a reschedule); its slot is free again.
pub const APPOINTMENT_CANCELLED: &str = "cancelled";

/// What [`Store::book_appointment`](crate::Store::book_appointment) needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewBooking {
    pub org: OrgId,
    /// Made by the caller from the call and what is booked: the same key again returns the first result
    /// ([`BookOutcome::AlreadyBooked`]) and never books twice. Unique per organisation.
    pub idempotency_key: String,
    /// The call it is booked in. Its row need not exist yet (see the crate docs, "Placeholders").
    pub call_sid: Option<CallSid>,
    /// The caller's number (E.164); the contact row is created or its name updated. Empty: no contact.
    pub phone: String,
    /// The patient's name as given; empty keeps the contact's stored name.
    pub name: String,
    pub service: String,
    /// `[starts_at, ends_at)`; `ends_at` must be later than `starts_at`.
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

/// What a booking or reschedule came to. A taken slot is an answer, not an error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "appointment", rename_all = "snake_case")]
pub enum BookOutcome {
    /// Booked now.
    Booked(Appointment),
    /// The idempotency key was seen before: this is what that request created (as it is now: it may have
    /// been cancelled since). Nothing new was booked.
    AlreadyBooked(Appointment),
    /// The slot overlaps a booked appointment of the organisation. Nothing changed.
    Conflict,
}

impl BookOutcome {
    /// The appointment, unless the slot was taken.
    pub fn appointment(&self) -> Option<&Appointment> {
        match self {
            BookOutcome::Booked(a) | BookOutcome::AlreadyBooked(a) => Some(a),
            BookOutcome::Conflict => None,
        }
    }
}

/// A message the receptionist took for staff to call back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackRequest {
    pub org: OrgId,
    pub id: Uuid,
    /// The call it was taken in, if any.
    pub call: Option<CallSid>,
    pub name: String,
    pub phone: String,
    pub reason: String,
    pub urgent: bool,
    /// `"open"` or `"done"`.
    pub status: String,
    pub idempotency_key: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What [`Store::take_message`](crate::Store::take_message) needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCallback {
    pub org: OrgId,
    /// The same key again returns the message first stored with it. Unique per organisation.
    pub idempotency_key: String,
    /// The call it is taken in. Its row need not exist yet (see the crate docs, "Placeholders").
    pub call_sid: Option<CallSid>,
    pub name: String,
    pub phone: String,
    pub reason: String,
    pub urgent: bool,
}

/// One chunk of a clinic's knowledge with its embedding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KnowledgeChunk {
    /// Chosen by the caller, stable across edits (e.g. the section's path); `(org, id)` is the key.
    pub id: String,
    pub title: String,
    pub text: String,
    /// The embedding model's name: a chunk embedded by another model must be embedded again.
    pub model: String,
    /// Stored as f32 little-endian bytes; its length is the `dims` column.
    pub embedding: Vec<f32>,
}

/// Dashboard call list query. Results are newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallQuery {
    /// Only calls with this status.
    pub status: Option<String>,
    /// Keyset paging: only calls that started strictly before this instant (pass the last row's `started_at`).
    /// Calls that started in the very same microsecond as a page's last row would be skipped; at Twilio call
    /// rates per organisation that does not happen in practice, and it keeps the cursor one timestamp.
    pub before: Option<DateTime<Utc>>,
    /// Page size; 0 means [`DEFAULT_PAGE`](crate::DEFAULT_PAGE), capped at [`MAX_PAGE`](crate::MAX_PAGE).
    pub limit: u32,
}

/// A call as the dashboard lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallSummary {
    pub org: OrgId,
    pub sid: CallSid,
    pub assistant: Option<AssistantId>,
    /// Empty until `CallStarted` lands (see "Placeholders" in the crate docs).
    pub from: String,
    pub to: String,
    pub direction: String,
    /// Twilio's status vocabulary; `"unknown"` for a placeholder that only has turns/events so far.
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub end_reason: Option<String>,
    pub duration_ms: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spill file holds these as JSON lines across restarts and upgrades: the shape is a format.
    #[test]
    fn write_ops_round_trip_through_json_in_a_stable_shape() {
        let org = OrgId(Uuid::from_u128(7));
        let op = WriteOp::CallStatus {
            org,
            sid: CallSid::from("CA1"),
            status: "ringing".into(),
            at: DateTime::<Utc>::UNIX_EPOCH,
        };
        let json = serde_json::to_value(&op).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "op": "call_status",
                "org": "00000000-0000-0000-0000-000000000007",
                "sid": "CA1",
                "status": "ringing",
                "at": "1970-01-01T00:00:00Z"
            })
        );
        let turn = WriteOp::Turn(TurnRecord {
            org,
            sid: CallSid::from("CA1"),
            seq: 3,
            role: "agent".into(),
            text: "Hello".into(),
            heard_text: Some("Hel".into()),
            interrupted: true,
            start_ms: 10,
            end_ms: 20,
            latency: TurnLatency {
                voice_to_voice_ms: Some(800),
                ..TurnLatency::default()
            },
        });
        let json = serde_json::to_value(&turn).unwrap();
        assert_eq!(json["op"], "turn");
        assert_eq!(json["seq"], 3);
        assert_eq!(json["latency"]["voice_to_voice_ms"], 800);
        for op in [op, turn] {
            let back: WriteOp = serde_json::from_str(&serde_json::to_string(&op).unwrap()).unwrap();
            assert_eq!(back, op);
        }
    }
}
