//! The staff surface's rows: users, sign-in sessions, API keys, sealed secrets, and the call search
//! the dashboard and `/api/v1/calls` run.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{CallSid, OrgId};
use crate::model::CallSummary;

/// A staff member who signs in. Belongs to one organisation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub org: OrgId,
    pub id: Uuid,
    /// Stored lower-cased; unique across organisations (sign-in names no organisation).
    pub email: String,
    pub name: String,
    /// `"admin"` or `"staff"`.
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

/// What [`Store::create_user`](crate::Store::create_user) needs.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub org: OrgId,
    pub email: String,
    pub name: String,
    pub role: String,
    /// argon2id PHC string; the store never sees a password.
    pub password_hash: String,
}

/// A signed-in session as an access token's check sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: Uuid,
    pub user: User,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// An API key (never its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub org: OrgId,
    pub id: Uuid,
    pub name: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A secret as stored: sealed by the server (the store never sees plaintext).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedSecret {
    pub name: String,
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub updated_at: DateTime<Utc>,
}

/// An organisation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Org {
    pub id: OrgId,
    pub name: String,
    pub slug: Option<String>,
    pub recording_retention_days: Option<i32>,
}

/// A known caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub phone: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub notes: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// What a call came to, derived from its rows when read (so it is never out of date):
/// in order, `in_progress` (not ended), `booked` (an appointment made in it), `transferred`,
/// `message` (a callback request taken), `escalated` (an escalation event without a transfer),
/// `answered` (the caller spoke), else `abandoned`.
pub const OUTCOMES: [&str; 7] = [
    "in_progress",
    "booked",
    "transferred",
    "message",
    "escalated",
    "answered",
    "abandoned",
];

/// The call search. Every filter is optional; results are newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallFilter {
    /// Started at or after.
    pub from: Option<DateTime<Utc>>,
    /// Started before.
    pub to: Option<DateTime<Utc>>,
    pub status: Option<String>,
    /// `inbound` or `outbound` (Twilio's `outbound-api`/`outbound-dial` count as outbound).
    pub direction: Option<String>,
    /// One of [`OUTCOMES`].
    pub outcome: Option<String>,
    /// Digits the other party's number contains.
    pub caller: Option<String>,
    /// Words any turn's text contains (case-insensitive, as a substring).
    pub text: Option<String>,
    /// Keyset cursor: the last row of the previous page (`started_at`, `sid`).
    pub after: Option<(DateTime<Utc>, CallSid)>,
    /// Page size, 1..=[`MAX_PAGE`](crate::MAX_PAGE) (0: [`DEFAULT_PAGE`](crate::DEFAULT_PAGE)).
    pub limit: u32,
}

/// A call in a search result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallListItem {
    #[serde(flatten)]
    pub call: CallSummary,
    pub outcome: String,
}
