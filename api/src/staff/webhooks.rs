//! Outgoing webhooks: per-organisation endpoints and their delivery log over `/api/v1/webhooks`
//! (delivery itself is in [`super::delivery`]). An endpoint is made and deleted by an admin; its
//! signing secret (`whsec_…`) is in the creating response only, sealed at rest like the clinic's
//! secrets. Anyone of the organisation reads the endpoints and the log; another organisation's
//! endpoint is a 404.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use storage::{WebhookDelivery, WebhookEndpoint};
use uuid::Uuid;

use super::ApiError;
use super::auth::Auth;
use super::crypto;
use super::delivery::{SECRET_PREFIX, secret_context};
use super::events::StaffEvent;
use crate::server::AppState;

/// Endpoints one organisation may have: each event is queued once per endpoint, so this bounds
/// the fan-out of one event (a CRM, a chat channel and a spare are the usual few).
pub const MAX_ENDPOINTS_PER_ORG: usize = 10;

/// Longest endpoint URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// `/api/v1/webhooks…` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/webhooks", get(list).post(create))
        .route("/api/v1/webhooks/{id}", get(detail).delete(remove))
        .route("/api/v1/webhooks/{id}/deliveries", get(deliveries))
}

fn endpoint_json(e: &WebhookEndpoint) -> Value {
    json!({
        "id": e.id,
        "url": e.url,
        "events": if e.events.is_empty() {
            StaffEvent::WEBHOOK_TYPES.iter().map(|t| t.to_string()).collect()
        } else {
            e.events.clone()
        },
        "created_at": e.created_at,
    })
}

fn delivery_json(d: &WebhookDelivery) -> Value {
    json!({
        "id": d.id,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": (d.status == storage::DELIVERY_PENDING).then_some(d.next_attempt_at),
        "last_status": d.last_status,
        "last_error": d.last_error,
        "created_at": d.created_at,
        "delivered_at": d.delivered_at,
        "payload": serde_json::from_str::<Value>(&d.payload).unwrap_or(Value::Null),
    })
}

/// Problems with an endpoint URL, for a 400's details.
pub fn url_problems(url: &str) -> Vec<String> {
    if url.is_empty() {
        return vec!["url is required".into()];
    }
    if url.len() > MAX_URL_LEN {
        return vec![format!("url is at most {MAX_URL_LEN} characters")];
    }
    let parsed = match reqwest::Url::parse(url) {
        Ok(u) => u,
        Err(e) => return vec![format!("url is not a URL ({e})")],
    };
    let mut problems = Vec::new();
    if !matches!(parsed.scheme(), "https" | "http") {
        problems.push(format!(
            "url must be http:// or https://, not {}://",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        problems.push("url has no host".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        problems.push(
            "url must not carry a user name or password (verify the signature instead)".into(),
        );
    }
    if parsed.fragment().is_some() {
        problems.push("url must not have a #fragment".into());
    }
    problems
}

fn invalid(problems: Vec<String>) -> ApiError {
    let mut e = ApiError::invalid(problems.join("; "));
    e.details = Some(problems);
    e
}

#[derive(Deserialize)]
struct NewEndpointBody {
    url: Option<String>,
    events: Option<Vec<String>>,
}

/// `POST /api/v1/webhooks` (admin): `{url, events?}`; no `events` (or `[]`) is every type. The
/// response carries the signing secret, which is never shown again.
async fn create(
    auth: Auth,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    auth.require_admin()?;
    let b: NewEndpointBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(format!("request body: {e}")))?;
    let url = b.url.as_deref().map(str::trim).unwrap_or("").to_string();
    let mut problems = url_problems(&url);
    let mut events: Vec<String> = Vec::new();
    for e in b.events.unwrap_or_default() {
        let e = e.trim().to_string();
        if !StaffEvent::WEBHOOK_TYPES.contains(&e.as_str()) {
            problems.push(format!(
                "unknown event type {e:?}; expected any of {}",
                StaffEvent::WEBHOOK_TYPES.join(", ")
            ));
        } else if !events.contains(&e) {
            events.push(e);
        }
    }
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    if events.len() == StaffEvent::WEBHOOK_TYPES.len() {
        // Every type named is every type (and so includes types added later).
        events.clear();
    }
    if state.store().list_webhook_endpoints(auth.org).await?.len() >= MAX_ENDPOINTS_PER_ORG {
        return Err(ApiError::conflict(format!(
            "an organisation has at most {MAX_ENDPOINTS_PER_ORG} webhook endpoints; delete one first"
        )));
    }
    let id = Uuid::new_v4();
    let secret = format!("{SECRET_PREFIX}{}", crypto::random_token(32));
    let sealed = state
        .keys()
        .seal(&secret_context(auth.org, id), secret.as_bytes());
    let endpoint = WebhookEndpoint {
        org: auth.org,
        id,
        url,
        events,
        key_id: sealed.key_id,
        secret_nonce: sealed.nonce,
        secret_cipher: sealed.ciphertext,
        created_at: Utc::now(),
        disabled_at: None,
    };
    state.store().create_webhook_endpoint(&endpoint).await?;
    let mut v = endpoint_json(&endpoint);
    v["secret"] = json!(secret);
    Ok((StatusCode::CREATED, Json(v)))
}

/// `GET /api/v1/webhooks`.
async fn list(auth: Auth, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let items = state.store().list_webhook_endpoints(auth.org).await?;
    Ok(Json(json!({
        "items": items.iter().map(endpoint_json).collect::<Vec<_>>()
    })))
}

async fn find(state: &AppState, auth: &Auth, id: &str) -> Result<WebhookEndpoint, ApiError> {
    let id = Uuid::parse_str(id).map_err(|_| ApiError::not_found("webhook endpoint"))?;
    state
        .store()
        .get_webhook_endpoint(auth.org, id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))
}

/// `GET /api/v1/webhooks/{id}`.
async fn detail(
    auth: Auth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(endpoint_json(&find(&state, &auth, &id).await?)))
}

/// `DELETE /api/v1/webhooks/{id}` (admin): nothing more is sent to it; pending deliveries are
/// marked failed.
async fn remove(
    auth: Auth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    let e = find(&state, &auth, &id).await?;
    if state
        .store()
        .disable_webhook_endpoint(auth.org, e.id)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("webhook endpoint"))
    }
}

#[derive(Debug, Deserialize)]
struct DeliveryParams {
    cursor: Option<String>,
    limit: Option<u32>,
}

fn encode_cursor(d: &WebhookDelivery) -> String {
    URL_SAFE_NO_PAD.encode(format!(
        "{}|{}",
        d.created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        d.id
    ))
}

fn decode_cursor(c: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let bad = || ApiError::invalid("cursor is not one this API gave");
    let text =
        String::from_utf8(URL_SAFE_NO_PAD.decode(c).map_err(|_| bad())?).map_err(|_| bad())?;
    let (t, id) = text.split_once('|').ok_or_else(bad)?;
    let t = DateTime::parse_from_rfc3339(t).map_err(|_| bad())?;
    Ok((
        t.with_timezone(&Utc),
        Uuid::parse_str(id).map_err(|_| bad())?,
    ))
}

/// `GET /api/v1/webhooks/{id}/deliveries?limit&cursor`: newest first; `next_cursor` pages on.
async fn deliveries(
    auth: Auth,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(p): Query<DeliveryParams>,
) -> Result<Json<Value>, ApiError> {
    let e = find(&state, &auth, &id).await?;
    let limit = p.limit.unwrap_or(50);
    if !(1..=storage::MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit must be 1–{}",
            storage::MAX_PAGE
        )));
    }
    let before = p
        .cursor
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(decode_cursor)
        .transpose()?;
    let items = state
        .store()
        .list_webhook_deliveries(auth.org, e.id, before, limit)
        .await?;
    let next = (items.len() == limit as usize)
        .then(|| items.last().map(encode_cursor))
        .flatten();
    Ok(Json(json!({
        "items": items.iter().map(delivery_json).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_and_https_urls_with_a_host_are_endpoints() {
        assert!(url_problems("https://crm.example/hooks/voxanne").is_empty());
        assert!(url_problems("http://127.0.0.1:9000/hook?x=1").is_empty());
        for bad in [
            "",
            "crm.example/hook",
            "ftp://crm.example/hook",
            "file:///etc/passwd",
            "https://user:pass@crm.example/hook",
            "https://crm.example/hook#frag",
            "javascript:alert(1)",
        ] {
            assert!(!url_problems(bad).is_empty(), "{bad:?} accepted");
        }
        assert!(
            !url_problems(&format!("https://a.example/{}", "x".repeat(MAX_URL_LEN))).is_empty()
        );
    }

    #[test]
    fn a_delivery_cursor_round_trips_and_a_forged_one_is_refused() {
        let d = WebhookDelivery {
            org: storage::OrgId(Uuid::from_u128(1)),
            id: Uuid::from_u128(9),
            endpoint_id: Uuid::from_u128(2),
            event_id: "evt_1".into(),
            event_type: "call.started".into(),
            payload: "{}".into(),
            status: "pending".into(),
            attempts: 0,
            next_attempt_at: Utc::now(),
            last_status: None,
            last_error: None,
            created_at: Utc::now(),
            delivered_at: None,
        };
        let (t, id) = decode_cursor(&encode_cursor(&d)).unwrap();
        assert_eq!(id, d.id);
        assert_eq!(t.timestamp_micros(), d.created_at.timestamp_micros());
        assert!(decode_cursor("not-a-cursor").is_err());
    }
}
