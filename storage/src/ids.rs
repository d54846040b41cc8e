//! Identifier newtypes. They bind directly as SQL parameters (`sqlx(transparent)`), so an `OrgId` can never
//! be passed where an `AssistantId` is expected.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An organisation (a clinic or clinic group): the tenant boundary. Every row in the database carries one.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize, sqlx::Type,
)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct OrgId(pub Uuid);

/// A configured voice assistant (greeting, voice, brain settings) belonging to one organisation.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize, sqlx::Type,
)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct AssistantId(pub Uuid);

/// Twilio's call identifier (`CA` + 32 hex digits). Globally unique, so it is the calls table's key and the
/// idempotency key for every write about a call.
#[derive(
    Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize, sqlx::Type,
)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct CallSid(pub String);

impl OrgId {
    /// A fresh random id.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

impl Default for OrgId {
    fn default() -> Self {
        Self::new()
    }
}

impl AssistantId {
    /// A fresh random id.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

impl Default for AssistantId {
    fn default() -> Self {
        Self::new()
    }
}

impl CallSid {
    /// The sid as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for CallSid {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<String> for CallSid {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for AssistantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for CallSid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
