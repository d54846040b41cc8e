//! The staff dashboard: static assets embedded in the binary.

use axum::Router;

use crate::server::AppState;

/// `/` and the dashboard's assets.
pub fn routes() -> Router<AppState> {
    Router::new()
}
