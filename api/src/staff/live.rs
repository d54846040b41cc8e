//! `GET /api/v1/live`: the organisation's calls as they happen, as server-sent events.
//!
//! The first event is a `snapshot` of the calls in progress (or, on a reconnect with
//! `Last-Event-ID` still in the server's ring of recent events, the events missed instead). The
//! id may also come as `?last_event_id=N` (the header wins): a page that opens a new
//! `EventSource` itself, to put a fresh access token in its URL, cannot set the header. Each
//! subscriber reads a bounded broadcast: one that falls [`SUBSCRIBER_BACKLOG`] events behind is
//! ended (its client reconnects and resumes), so a slow or vanished client never holds more
//! than that, and a closed connection drops its receiver at once.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::json;
use tokio::sync::broadcast;

use super::auth::Auth;
use super::events::{Published, SUBSCRIBER_BACKLOG};
use crate::server::AppState;

fn sse(p: &Published) -> Event {
    Event::default()
        .id(p.id.to_string())
        .event(p.event.name())
        .data(serde_json::to_string(p).unwrap_or_else(|_| "{}".into()))
}

/// `GET /api/v1/live`'s query (besides the access token the auth extractor reads).
#[derive(Debug, Default, serde::Deserialize)]
pub struct LiveQuery {
    /// The last event id the client saw, when it cannot send `Last-Event-ID`. Not a number:
    /// ignored (a fresh snapshot), like a bad header.
    last_event_id: Option<String>,
}

/// `GET /api/v1/live`.
pub async fn live(
    auth: Auth,
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<LiveQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let org = auth.org;
    let parse = |v: &str| v.trim().parse::<u64>().ok();
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(parse)
        .or_else(|| query.last_event_id.as_deref().and_then(parse));
    let bus = state.events().clone();
    let (rx, first): (broadcast::Receiver<Arc<Published>>, Vec<Event>) =
        match last_id.map(|id| bus.subscribe(Some(id))) {
            Some((rx, Some(missed))) => (
                rx,
                missed
                    .iter()
                    .filter(|p| p.org == org)
                    .map(|p| sse(p))
                    .collect(),
            ),
            _ => {
                let (rx, calls, last) = bus.subscribe_with_snapshot(org);
                let snapshot = Event::default()
                    .id(last.to_string())
                    .event("snapshot")
                    .data(json!({ "calls": calls }).to_string());
                (rx, vec![snapshot])
            }
        };
    let live = stream::unfold(Some(rx), move |rx| async move {
        let mut rx = rx?;
        loop {
            match rx.recv().await {
                Ok(p) if p.org == org => return Some((sse(&p), Some(rx))),
                Ok(_) => continue,
                // Fell behind by SUBSCRIBER_BACKLOG: say so and end; the client reconnects.
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let e = Event::default()
                        .event("lagged")
                        .data(json!({ "missed": n, "backlog": SUBSCRIBER_BACKLOG }).to_string());
                    return Some((e, None));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let events = stream::iter(first).chain(live).map(Ok);
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
