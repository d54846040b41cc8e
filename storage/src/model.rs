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
    /// A booking; `id` (chosen by the writer) is the key, the newest `updated_at` wins.
    Appointment(AppointmentRecord),
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
            WriteOp::Appointment(a) => a.org,
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
            WriteOp::Appointment(a) => a.call.as_ref(),
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
            WriteOp::Appointment(_) => "appointment",
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

/// A booking made (or changed) by the agent or staff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppointmentRecord {
    pub org: OrgId,
    /// Chosen by the writer when the booking is first made, so retries and replays hit the same row.
    pub id: Uuid,
    /// The call during which it was booked, if any.
    pub call: Option<CallSid>,
    /// The contact it is for (E.164), if known. A contact row is created if missing.
    pub contact_phone: Option<String>,
    pub starts_at: DateTime<Utc>,
    pub duration_min: i32,
    /// What it is for ("cleaning", "consultation", ...).
    pub reason: String,
    /// `"booked"`, `"cancelled"`, ...
    pub status: String,
    /// Last-writer-wins clock.
    pub updated_at: DateTime<Utc>,
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
