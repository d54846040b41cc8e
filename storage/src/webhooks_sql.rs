// Webhook endpoints and deliveries: SQL shared by both backends (included like backend.rs). The queue's
// rules are in `webhooks.rs`.

#[derive(sqlx::FromRow)]
struct WebhookEndpointRow {
    org_id: OrgId,
    id: Uuid,
    url: String,
    events: String,
    key_id: String,
    secret_nonce: Vec<u8>,
    secret_cipher: Vec<u8>,
    created_at: DbTime,
    disabled_at: Option<DbTime>,
}

impl From<WebhookEndpointRow> for WebhookEndpoint {
    fn from(r: WebhookEndpointRow) -> Self {
        WebhookEndpoint {
            org: r.org_id,
            id: r.id,
            url: r.url,
            // Written by `webhook_create_endpoint` only; an unreadable list would mean every event.
            events: serde_json::from_str(&r.events).unwrap_or_default(),
            key_id: r.key_id,
            secret_nonce: r.secret_nonce,
            secret_cipher: r.secret_cipher,
            created_at: r.created_at.0,
            disabled_at: r.disabled_at.map(|t| t.0),
        }
    }
}

const WEBHOOK_ENDPOINT_COLS: &str =
    "org_id, id, url, events, key_id, secret_nonce, secret_cipher, created_at, disabled_at";

#[derive(sqlx::FromRow)]
struct WebhookDeliveryRow {
    org_id: OrgId,
    id: Uuid,
    endpoint_id: Uuid,
    event_id: String,
    event_type: String,
    payload: String,
    status: String,
    attempts: i32,
    next_attempt_at: DbTime,
    last_status: Option<i32>,
    last_error: Option<String>,
    created_at: DbTime,
    delivered_at: Option<DbTime>,
}

impl From<WebhookDeliveryRow> for WebhookDelivery {
    fn from(r: WebhookDeliveryRow) -> Self {
        WebhookDelivery {
            org: r.org_id,
            id: r.id,
            endpoint_id: r.endpoint_id,
            event_id: r.event_id,
            event_type: r.event_type,
            payload: r.payload,
            status: r.status,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at.0,
            last_status: r.last_status,
            last_error: r.last_error,
            created_at: r.created_at.0,
            delivered_at: r.delivered_at.map(|t| t.0),
        }
    }
}

const WEBHOOK_DELIVERY_COLS: &str = "org_id, id, endpoint_id, event_id, event_type, payload, status, attempts, \
    next_attempt_at, last_status, last_error, created_at, delivered_at";

pub(super) async fn webhook_create_endpoint(pool: &DbPool, e: &WebhookEndpoint) -> Result<(), StoreError> {
    let events = serde_json::to_string(&e.events).map_err(StoreError::Spill)?;
    let res = sqlx::query(
        "INSERT INTO webhook_endpoints (id, org_id, url, events, key_id, secret_nonce, secret_cipher, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(e.id)
    .bind(e.org)
    .bind(&e.url)
    .bind(events)
    .bind(&e.key_id)
    .bind(&e.secret_nonce)
    .bind(&e.secret_cipher)
    .bind(DbTime(e.created_at))
    .execute(pool)
    .await;
    match res {
        Ok(_) => Ok(()),
        Err(err) if is_violation(&err, ErrorKind::ForeignKeyViolation) => Err(StoreError::NotFound("organisation")),
        Err(err) => Err(err.into()),
    }
}

/// The org's endpoints that are not deleted, oldest first.
pub(super) async fn webhook_list_endpoints(pool: &DbPool, org: OrgId) -> Result<Vec<WebhookEndpoint>, StoreError> {
    let rows: Vec<WebhookEndpointRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {WEBHOOK_ENDPOINT_COLS} FROM webhook_endpoints WHERE org_id = $1 AND disabled_at IS NULL \
         ORDER BY created_at, id"
    )))
    .bind(org)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(WebhookEndpoint::from).collect())
}

/// The endpoint, deleted or not (callers decide what a deleted one means).
pub(super) async fn webhook_get_endpoint(pool: &DbPool, org: OrgId, id: Uuid) -> Result<Option<WebhookEndpoint>, StoreError> {
    let row: Option<WebhookEndpointRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {WEBHOOK_ENDPOINT_COLS} FROM webhook_endpoints WHERE org_id = $1 AND id = $2"
    )))
    .bind(org)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(WebhookEndpoint::from))
}

/// Marks the endpoint deleted and fails its pending deliveries, in one transaction. `false` if there is no
/// such live endpoint in `org`.
pub(super) async fn webhook_disable_endpoint(pool: &DbPool, org: OrgId, id: Uuid, now: DateTime<Utc>) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query("UPDATE webhook_endpoints SET disabled_at = $3 WHERE org_id = $1 AND id = $2 AND disabled_at IS NULL")
        .bind(org)
        .bind(id)
        .bind(DbTime(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query(
        "UPDATE webhook_deliveries SET status = 'failed', last_error = 'endpoint deleted' \
         WHERE org_id = $1 AND endpoint_id = $2 AND status = 'pending'",
    )
    .bind(org)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(n == 1)
}

/// One delivery row per live endpoint of `org` that wants `event_type`, in one transaction; an
/// `(endpoint, event_id)` already queued is left as it is. Returns the rows added.
pub(super) async fn webhook_enqueue(
    pool: &DbPool,
    org: OrgId,
    event_id: &str,
    event_type: &str,
    payload: &str,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await?;
    let rows: Vec<WebhookEndpointRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {WEBHOOK_ENDPOINT_COLS} FROM webhook_endpoints WHERE org_id = $1 AND disabled_at IS NULL"
    )))
    .bind(org)
    .fetch_all(&mut *tx)
    .await?;
    let mut added = 0;
    for endpoint in rows.into_iter().map(WebhookEndpoint::from).filter(|e| e.wants(event_type)) {
        added += sqlx::query(
            "INSERT INTO webhook_deliveries (id, org_id, endpoint_id, event_id, event_type, payload, status, attempts, \
             next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7) \
             ON CONFLICT (endpoint_id, event_id) DO NOTHING",
        )
        .bind(Uuid::new_v4())
        .bind(org)
        .bind(endpoint.id)
        .bind(event_id)
        .bind(event_type)
        .bind(payload)
        .bind(DbTime(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(added)
}

/// Claims up to `limit` due deliveries (any organisation: the worker serves all of them): counts the attempt
/// and moves `next_attempt_at` to `lease_until`, so no other claim takes them until the lease ends. The
/// re-checked `WHERE` makes two concurrent claims disjoint (Postgres re-evaluates it on the locked row;
/// SQLite has one writer at a time). On Postgres the subquery takes its rows `FOR UPDATE SKIP LOCKED`
/// ([`CLAIM_LOCK`]): a second worker skips what the first is claiming rather than waiting on it.
pub(super) async fn webhook_claim(
    pool: &DbPool,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<ClaimedDelivery>, StoreError> {
    let claimed: Vec<WebhookDeliveryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH picked AS {CLAIM_MATERIALIZED}(SELECT id FROM webhook_deliveries \
                      WHERE status = 'pending' AND next_attempt_at <= $1 \
                      ORDER BY next_attempt_at LIMIT $3{CLAIM_LOCK}) \
         UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = $2 \
         WHERE id IN (SELECT id FROM picked) \
         AND status = 'pending' AND next_attempt_at <= $1 \
         RETURNING {WEBHOOK_DELIVERY_COLS}"
    )))
    .bind(DbTime(now))
    .bind(DbTime(lease_until))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(claimed.len());
    for row in claimed {
        let d = WebhookDelivery::from(row);
        let endpoint = webhook_get_endpoint(pool, d.org, d.endpoint_id).await?;
        match endpoint {
            Some(e) => out.push(ClaimedDelivery {
                url: e.url,
                key_id: e.key_id,
                secret_nonce: e.secret_nonce,
                secret_cipher: e.secret_cipher,
                endpoint_disabled: e.disabled_at.is_some(),
                delivery: d,
            }),
            // The foreign key keeps the endpoint; a row without one is nothing to send.
            None => continue,
        }
    }
    Ok(out)
}

/// Records the outcome of the attempt a claim made: only while the row is still pending with that claim's
/// attempt count, so a claim whose lease ran out (and was claimed again) changes nothing. `false` then.
pub(super) async fn webhook_finish(
    pool: &DbPool,
    id: Uuid,
    attempts: i32,
    outcome: &AttemptOutcome,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let q = match outcome {
        AttemptOutcome::Delivered { status } => sqlx::query(
            "UPDATE webhook_deliveries SET status = 'delivered', last_status = $3, last_error = NULL, delivered_at = $4 \
             WHERE id = $1 AND attempts = $2 AND status = 'pending'",
        )
        .bind(id)
        .bind(attempts)
        .bind(*status)
        .bind(DbTime(now)),
        AttemptOutcome::Retry { status, error, retry_at } => sqlx::query(
            "UPDATE webhook_deliveries SET last_status = $3, last_error = $4, next_attempt_at = $5 \
             WHERE id = $1 AND attempts = $2 AND status = 'pending'",
        )
        .bind(id)
        .bind(attempts)
        .bind(*status)
        .bind(error.clone())
        .bind(DbTime(*retry_at)),
        AttemptOutcome::Failed { status, error } => sqlx::query(
            "UPDATE webhook_deliveries SET status = 'failed', last_status = $3, last_error = $4 \
             WHERE id = $1 AND attempts = $2 AND status = 'pending'",
        )
        .bind(id)
        .bind(attempts)
        .bind(*status)
        .bind(error.clone()),
    };
    Ok(q.execute(pool).await?.rows_affected() == 1)
}

/// The endpoint's deliveries, newest first, after the keyset cursor `before` (`created_at`, `id`).
pub(super) async fn webhook_list_deliveries(
    pool: &DbPool,
    org: OrgId,
    endpoint: Uuid,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<WebhookDelivery>, StoreError> {
    let mut q = sqlx::QueryBuilder::<Db>::new(format!(
        "SELECT {WEBHOOK_DELIVERY_COLS} FROM webhook_deliveries WHERE org_id = "
    ));
    q.push_bind(org).push(" AND endpoint_id = ").push_bind(endpoint);
    if let Some((at, id)) = before {
        q.push(" AND (created_at < ")
            .push_bind(DbTime(at))
            .push(" OR (created_at = ")
            .push_bind(DbTime(at))
            .push(" AND id < ")
            .push_bind(id)
            .push("))");
    }
    q.push(" ORDER BY created_at DESC, id DESC LIMIT ").push_bind(limit);
    let rows: Vec<WebhookDeliveryRow> = q.build_query_as().fetch_all(pool).await?;
    Ok(rows.into_iter().map(WebhookDelivery::from).collect())
}

/// One delivery by its event, for tests and support: `(endpoint, event_id)` is unique.
pub(super) async fn webhook_delivery_of_event(
    pool: &DbPool,
    org: OrgId,
    endpoint: Uuid,
    event_id: &str,
) -> Result<Option<WebhookDelivery>, StoreError> {
    let row: Option<WebhookDeliveryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {WEBHOOK_DELIVERY_COLS} FROM webhook_deliveries WHERE org_id = $1 AND endpoint_id = $2 AND event_id = $3"
    )))
    .bind(org)
    .bind(endpoint)
    .bind(event_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(WebhookDelivery::from))
}

pub(super) async fn webhook_queue_state(pool: &DbPool) -> Result<WebhookQueueState, StoreError> {
    let (pending, next_due): (i64, Option<DbTime>) =
        sqlx::query_as("SELECT COUNT(*), MIN(next_attempt_at) FROM webhook_deliveries WHERE status = 'pending'")
            .fetch_one(pool)
            .await?;
    Ok(WebhookQueueState { pending, next_due: next_due.map(|t| t.0) })
}

/// Re-seals an endpoint's secret (key rotation).
pub(super) async fn webhook_reseal(
    pool: &DbPool,
    org: OrgId,
    id: Uuid,
    key_id: &str,
    nonce: &[u8],
    cipher: &[u8],
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE webhook_endpoints SET key_id = $3, secret_nonce = $4, secret_cipher = $5 WHERE org_id = $1 AND id = $2",
    )
    .bind(org)
    .bind(id)
    .bind(key_id)
    .bind(nonce)
    .bind(cipher)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Every organisation's endpoints, deleted ones included (key rotation re-seals them all).
pub(super) async fn webhook_all_endpoints(pool: &DbPool) -> Result<Vec<WebhookEndpoint>, StoreError> {
    let rows: Vec<WebhookEndpointRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {WEBHOOK_ENDPOINT_COLS} FROM webhook_endpoints ORDER BY created_at, id")))
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(WebhookEndpoint::from).collect())
}

/// Deletes finished (delivered or failed) deliveries queued before `before`; pending ones stay whatever
/// their age.
pub(super) async fn webhook_prune(pool: &DbPool, before: DateTime<Utc>) -> Result<u64, StoreError> {
    Ok(sqlx::query("DELETE FROM webhook_deliveries WHERE status <> 'pending' AND created_at < $1")
        .bind(DbTime(before))
        .execute(pool)
        .await?
        .rows_affected())
}
