//! Operations: `/healthz` (the process answers), `/readyz` (the database answers, the engines
//! are loaded: 503 when not), who may read `/health` and `/metrics`, security headers and
//! request ids.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use subtle::ConstantTimeEq;
use tower_http::request_id::{MakeRequestId, RequestId};
use tracing::warn;

use crate::server::AppState;

const READY_DB_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /healthz`: 200 while the process serves requests.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 when the database answers within 2 s, else 503. Anonymous callers see
/// only `ready`; the checks are shown to loopback clients and holders of the metrics token.
pub async fn readyz(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let db = match tokio::time::timeout(READY_DB_TIMEOUT, state.store().health()).await {
        Ok(Ok(())) => "up",
        Ok(Err(e)) => {
            warn!(error = %e, "readiness: database unavailable");
            "down"
        }
        Err(_) => "timeout",
    };
    let ready = db == "up";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = if ops_allowed(&state, peer, &headers) {
        json!({
            "ready": ready,
            "checks": {
                "database": { "backend": state.store().backend(), "state": db },
                "engines": { "choice": format!("{:?}", state.config().engines).to_lowercase() },
                "knowledge_model": state.embedder().is_some(),
            }
        })
    } else {
        json!({ "ready": ready })
    };
    (status, Json(body)).into_response()
}

/// Whether a request may read operational details (`/health`, `/metrics`, `/readyz`'s checks):
/// with `VOXANNE_METRICS_TOKEN` set, only with `Authorization: Bearer <that token>`; unset, only
/// from loopback (a Prometheus or an operator on the same box).
pub fn ops_allowed(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> bool {
    match &state.config().metrics_token {
        Some(token) => super::auth::bearer(headers)
            .is_some_and(|t| bool::from(t.as_bytes().ct_eq(token.as_bytes()))),
        None => peer.ip().is_loopback(),
    }
}

/// Middleware for `/health` and `/metrics`: a reader [`ops_allowed`] refuses gets a plain 404
/// (nothing to learn).
pub async fn require_ops(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if ops_allowed(&state, peer, request.headers()) {
        next.run(request).await
    } else {
        (StatusCode::NOT_FOUND, "not found").into_response()
    }
}

/// Security headers on every response that does not set its own.
pub fn security_headers() -> [(HeaderName, HeaderValue); 5] {
    [
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self'; \
                 script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
                 form-action 'self'",
            ),
        ),
        (
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        ),
    ]
}

/// Request ids: a client's `x-request-id` is kept (if sane), else a new UUID.
#[derive(Clone, Copy, Debug, Default)]
pub struct MakeId;

impl MakeRequestId for MakeId {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
            .ok()
            .map(RequestId::new)
    }
}

/// The `x-request-id` header name.
pub fn request_id_header() -> HeaderName {
    HeaderName::from_static("x-request-id")
}
