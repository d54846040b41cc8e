//! Outgoing webhooks: per-organisation endpoints, signed deliveries from a durable queue.

use axum::Router;

use crate::server::AppState;

/// `/api/v1/webhooks…` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
}
