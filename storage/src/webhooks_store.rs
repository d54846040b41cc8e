//! [`Store`] methods of outgoing webhooks (a child of `store.rs`, so it shares its dispatch macros). The
//! queue's rules are in [`crate::webhooks`].

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Pool, Store, postgres_impl, sqlite_impl};
use crate::error::StoreError;
use crate::ids::OrgId;
use crate::store::{DEFAULT_PAGE, MAX_PAGE};
use crate::webhooks::{
    AttemptOutcome, ClaimedDelivery, WebhookDelivery, WebhookEndpoint, WebhookQueueState,
};

impl Store {
    /// Registers an endpoint (its secret already sealed). `NotFound("organisation")` if `e.org` does not
    /// exist.
    pub async fn create_webhook_endpoint(&self, e: &WebhookEndpoint) -> Result<(), StoreError> {
        dispatch_write!(self, webhook_create_endpoint(e))
    }

    /// The org's endpoints that are not deleted, oldest first.
    pub async fn list_webhook_endpoints(
        &self,
        org: OrgId,
    ) -> Result<Vec<WebhookEndpoint>, StoreError> {
        dispatch!(self, webhook_list_endpoints(org))
    }

    /// The endpoint if it is `org`'s and not deleted.
    pub async fn get_webhook_endpoint(
        &self,
        org: OrgId,
        id: Uuid,
    ) -> Result<Option<WebhookEndpoint>, StoreError> {
        Ok(dispatch!(self, webhook_get_endpoint(org, id))?.filter(|e| e.disabled_at.is_none()))
    }

    /// Deletes the endpoint: it receives nothing more and its pending deliveries are marked failed (its log
    /// stays in the database). `false` if there is no such live endpoint in `org`.
    pub async fn disable_webhook_endpoint(&self, org: OrgId, id: Uuid) -> Result<bool, StoreError> {
        dispatch_write!(self, webhook_disable_endpoint(org, id, Utc::now()))
    }

    /// Queues `payload` for every live endpoint of `org` that wants `event_type`, once per
    /// `(endpoint, event_id)` however often it is called. Returns the deliveries added.
    pub async fn enqueue_webhook(
        &self,
        org: OrgId,
        event_id: &str,
        event_type: &str,
        payload: &str,
    ) -> Result<u64, StoreError> {
        if event_id.is_empty() {
            return Err(StoreError::InvalidInput("webhook event id"));
        }
        dispatch_write!(
            self,
            webhook_enqueue(org, event_id, event_type, payload, Utc::now())
        )
    }

    /// Claims up to `limit` deliveries due at `now`, leased until `lease_until` (see [`crate::webhooks`]).
    pub async fn claim_webhook_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        dispatch_write!(
            self,
            webhook_claim(now, lease_until, i64::from(limit.max(1)))
        )
    }

    /// Records how the attempt of a claim ended (`attempts` as the claim returned it). `false` if the row
    /// was claimed again meanwhile (the lease ran out), in which case nothing changes.
    pub async fn finish_webhook_attempt(
        &self,
        id: Uuid,
        attempts: i32,
        outcome: &AttemptOutcome,
    ) -> Result<bool, StoreError> {
        dispatch_write!(self, webhook_finish(id, attempts, outcome, Utc::now()))
    }

    /// The endpoint's delivery log, newest first, keyset-paged (`before`: the last row of the previous page,
    /// its `created_at` and `id`). Empty for another organisation's endpoint.
    pub async fn list_webhook_deliveries(
        &self,
        org: OrgId,
        endpoint: Uuid,
        before: Option<(DateTime<Utc>, Uuid)>,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        let limit = match limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        dispatch!(
            self,
            webhook_list_deliveries(org, endpoint, before, i64::from(limit))
        )
    }

    /// The delivery of `event_id` to `endpoint`, if queued.
    pub async fn webhook_delivery_of_event(
        &self,
        org: OrgId,
        endpoint: Uuid,
        event_id: &str,
    ) -> Result<Option<WebhookDelivery>, StoreError> {
        dispatch!(self, webhook_delivery_of_event(org, endpoint, event_id))
    }

    /// Pending deliveries and the soonest one due.
    pub async fn webhook_queue_state(&self) -> Result<WebhookQueueState, StoreError> {
        dispatch!(self, webhook_queue_state())
    }

    /// Deletes delivered and failed deliveries queued before `before` (the log's retention; their bodies
    /// carry callers' details). Pending deliveries are kept. Returns the rows deleted.
    pub async fn prune_webhook_deliveries(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        dispatch_write!(self, webhook_prune(before))
    }

    /// Every endpoint of every organisation, deleted ones included (key rotation).
    pub async fn all_webhook_endpoints(&self) -> Result<Vec<WebhookEndpoint>, StoreError> {
        dispatch!(self, webhook_all_endpoints())
    }

    /// Replaces an endpoint's sealed secret (key rotation).
    pub async fn reseal_webhook_secret(
        &self,
        org: OrgId,
        id: Uuid,
        key_id: &str,
        nonce: &[u8],
        cipher: &[u8],
    ) -> Result<bool, StoreError> {
        dispatch_write!(self, webhook_reseal(org, id, key_id, nonce, cipher))
    }
}
