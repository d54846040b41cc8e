//! Outgoing webhooks' rows: the endpoints an organisation registered and the durable delivery
//! queue (one row per endpoint and event, which is also the delivery log staff read).
//!
//! The queue's rules, kept by the SQL in `webhooks_sql.rs`:
//! - one row per `(endpoint, event_id)`: enqueueing an event twice adds nothing;
//! - a worker **claims** due rows (`pending`, `next_attempt_at <= now`) by counting the attempt
//!   and pushing `next_attempt_at` to the end of a lease in one `UPDATE … WHERE status =
//!   'pending' AND next_attempt_at <= now`: of two workers (in one process or two), one gets a
//!   row; the other's update matches nothing. A worker that dies mid-attempt leaves the row to
//!   be claimed again when its lease ends;
//! - the outcome is recorded only by the claim that made the attempt (`attempts` still equal to
//!   the claim's): a worker whose lease ran out cannot overwrite a newer attempt's result;
//! - a row is never claimed again once `delivered` (or `failed`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::OrgId;

/// `webhook_deliveries.status`: waiting for its first or next attempt (or being attempted).
pub const DELIVERY_PENDING: &str = "pending";
/// The receiver answered 2xx; never sent again.
pub const DELIVERY_DELIVERED: &str = "delivered";
/// Every attempt failed (or the endpoint was deleted first); never sent again.
pub const DELIVERY_FAILED: &str = "failed";

/// A registered endpoint. The signing secret is sealed by the server; the store never sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookEndpoint {
    pub org: OrgId,
    pub id: Uuid,
    pub url: String,
    /// Event types it receives; empty: all of them.
    pub events: Vec<String>,
    pub key_id: String,
    pub secret_nonce: Vec<u8>,
    pub secret_cipher: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

impl WebhookEndpoint {
    /// Whether this endpoint receives events of type `event_type`.
    pub fn wants(&self, event_type: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == event_type)
    }
}

/// A row of the delivery queue and log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    pub org: OrgId,
    pub id: Uuid,
    pub endpoint_id: Uuid,
    /// The idempotency key the receiver sees (`Voxanne-Event-Id`).
    pub event_id: String,
    pub event_type: String,
    /// The JSON body, exactly as sent (and signed).
    pub payload: String,
    /// [`DELIVERY_PENDING`], [`DELIVERY_DELIVERED`] or [`DELIVERY_FAILED`].
    pub status: String,
    /// Attempts made (or started) so far.
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    /// The receiver's HTTP status on the last attempt (none: timeout or connection error).
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A claimed delivery with what is needed to send it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedDelivery {
    pub delivery: WebhookDelivery,
    pub url: String,
    pub key_id: String,
    pub secret_nonce: Vec<u8>,
    pub secret_cipher: Vec<u8>,
    /// The endpoint was deleted after this row was queued: record it failed, send nothing.
    pub endpoint_disabled: bool,
}

/// How a claimed attempt ended, for [`Store::finish_webhook_attempt`](crate::Store::finish_webhook_attempt).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// 2xx: the delivery is done.
    Delivered { status: i32 },
    /// Try again at `retry_at`.
    Retry {
        status: Option<i32>,
        error: String,
        retry_at: DateTime<Utc>,
    },
    /// No more attempts.
    Failed { status: Option<i32>, error: String },
}

/// The queue's state at a glance: for `/metrics` and for when the worker next wakes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WebhookQueueState {
    /// Rows still `pending` (due or not).
    pub pending: i64,
    /// The soonest `next_attempt_at` of a pending row.
    pub next_due: Option<DateTime<Utc>>,
}
