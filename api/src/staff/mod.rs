//! The staff surface: `/api/v1` (REST, with its OpenAPI document), sign-in and API keys, the live
//! call stream, outgoing webhooks and the dashboard, all served by the same binary.
//!
//! Every handler takes an [`auth::Auth`] (a signed-in user or an API key, always of one
//! organisation) and passes its `org` to the store, which filters every query on it: another
//! organisation's call, recording, appointment or document is simply not found (404).

pub mod auth;
pub mod calls;
pub mod crypto;
pub mod dashboard;
pub mod delivery;
pub mod error;
pub mod events;
pub mod limit;
pub mod live;
pub mod ops;
pub mod resources;
pub mod retention;
pub mod webhooks;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};

pub use error::ApiError;

use crate::server::AppState;

/// Largest request body `/api/v1` reads (a clinic file with its knowledge inline is the largest).
pub const MAX_API_BODY: usize = 1024 * 1024;

/// The OpenAPI document, served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// `/api/v1`, JSON errors included.
pub fn api_routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/auth/login", post(resources::login))
        .route("/api/v1/auth/refresh", post(resources::refresh))
        .route("/api/v1/auth/logout", post(resources::logout))
        .route("/api/v1/me", get(resources::me))
        .route("/api/v1/calls", get(calls::list))
        .route("/api/v1/calls/outbound", post(resources::outbound))
        .route("/api/v1/calls/{sid}", get(calls::detail))
        .route("/api/v1/calls/{sid}/recording", get(calls::recording))
        .route("/api/v1/live", get(live::live))
        .route("/api/v1/appointments", get(resources::appointments))
        .route("/api/v1/contacts", get(resources::contacts))
        .route("/api/v1/messages", get(resources::messages))
        .route("/api/v1/messages/{id}/done", post(resources::message_done))
        .route("/api/v1/knowledge", get(resources::knowledge))
        .route(
            "/api/v1/clinic",
            get(resources::get_clinic).put(resources::put_clinic),
        )
        .route("/api/v1/numbers", get(resources::numbers))
        .route(
            "/api/v1/users",
            get(resources::list_users).post(resources::create_user),
        )
        .route("/api/v1/users/{id}", delete(resources::disable_user))
        .route(
            "/api/v1/api-keys",
            get(resources::list_keys).post(resources::create_key),
        )
        .route("/api/v1/api-keys/{id}", delete(resources::revoke_key))
        .route("/api/v1/secrets", get(resources::list_secrets))
        .route(
            "/api/v1/secrets/{name}",
            put(resources::put_secret).delete(resources::delete_secret),
        )
        .route("/api/v1/chat", post(resources::chat))
        .merge(webhooks::routes())
        .route("/api/v1/{*rest}", axum::routing::any(not_found))
        .layer(DefaultBodyLimit::max(MAX_API_BODY))
        .layer(axum::middleware::map_response(json_errors))
}

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("endpoint")
}

/// Errors axum makes itself (body too large, a missing path parameter, a wrong method) become
/// the same JSON errors as ours.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/event-stream"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    if status == StatusCode::RANGE_NOT_SATISFIABLE {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let message = String::from_utf8_lossy(&text).trim().to_string();
    let message = if message.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        message
    };
    let mut out = error::from_rejection(status, message).into_response();
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

/// CORS for `/api/v1`: only the configured origins (none by default: the dashboard is served
/// from the same origin).
pub fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    tower_http::cors::CorsLayer::new()
        .allow_origin(list)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::RANGE])
        .expose_headers([header::CONTENT_RANGE, header::ACCEPT_RANGES])
        .max_age(std::time::Duration::from_secs(600))
}
