//! The organisation event bus: what happens on calls and bookings, as staff see it. One publisher
//! side (the call hooks and the receptionist's tools), two consumers: the live endpoint (a
//! broadcast every subscriber reads at its own pace; one that falls behind is dropped, never
//! buffered without bound) and the outgoing-webhook queue (a bounded channel into the durable
//! delivery table, so a webhook is not lost because a browser is slow).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;
use storage::OrgId;
use tokio::sync::{broadcast, mpsc};
use tracing::error;

/// Events each live subscriber may fall behind by before it is dropped (its client reconnects
/// and resumes from `Last-Event-ID` or a fresh snapshot).
pub const SUBSCRIBER_BACKLOG: usize = 256;

/// Recent events kept for clients that reconnect with `Last-Event-ID`.
pub const RECENT_EVENTS: usize = 1024;

/// Events waiting to be written into the webhook delivery table.
pub const WEBHOOK_BACKLOG: usize = 4096;

/// What happened. Serialised as `{"type": "...", ...fields}`; the type names are the webhook event
/// names and the live endpoint's SSE event names.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "type")]
pub enum StaffEvent {
    #[serde(rename = "call.started")]
    CallStarted {
        sid: String,
        from: String,
        to: String,
        direction: String,
        started_at: DateTime<Utc>,
    },
    /// One caller or agent turn. For the agent, `text` is what the caller heard.
    #[serde(rename = "call.turn")]
    Turn {
        sid: String,
        seq: u32,
        role: String,
        text: String,
        interrupted: bool,
    },
    /// A call event staff care about as it happens (tool calls, escalations, transfers, errors).
    #[serde(rename = "call.event")]
    CallEvent {
        sid: String,
        kind: String,
        detail: String,
    },
    #[serde(rename = "call.ended")]
    CallEnded {
        sid: String,
        end_reason: String,
        duration_ms: i64,
        outcome: String,
        summary: String,
    },
    #[serde(rename = "appointment.booked")]
    AppointmentBooked { appointment: serde_json::Value },
    /// Rescheduled (`change: "rescheduled"`, the new appointment and the one it replaced) or
    /// cancelled.
    #[serde(rename = "appointment.changed")]
    AppointmentChanged {
        change: String,
        appointment: serde_json::Value,
    },
    #[serde(rename = "message.taken")]
    MessageTaken { message: serde_json::Value },
}

impl StaffEvent {
    /// The event's type name (`call.started`, …).
    pub fn name(&self) -> &'static str {
        match self {
            StaffEvent::CallStarted { .. } => "call.started",
            StaffEvent::Turn { .. } => "call.turn",
            StaffEvent::CallEvent { .. } => "call.event",
            StaffEvent::CallEnded { .. } => "call.ended",
            StaffEvent::AppointmentBooked { .. } => "appointment.booked",
            StaffEvent::AppointmentChanged { .. } => "appointment.changed",
            StaffEvent::MessageTaken { .. } => "message.taken",
        }
    }

    /// The call it is about, if any.
    pub fn call_sid(&self) -> Option<&str> {
        match self {
            StaffEvent::CallStarted { sid, .. }
            | StaffEvent::Turn { sid, .. }
            | StaffEvent::CallEvent { sid, .. }
            | StaffEvent::CallEnded { sid, .. } => Some(sid),
            _ => None,
        }
    }

    /// Webhook event types (the live endpoint carries all of them, and turns and call events).
    pub const WEBHOOK_TYPES: [&'static str; 5] = [
        "call.started",
        "call.ended",
        "appointment.booked",
        "appointment.changed",
        "message.taken",
    ];
}

/// One published event: numbered in publication order across the server (the SSE `id`).
#[derive(Clone, Debug, Serialize)]
pub struct Published {
    pub id: u64,
    #[serde(skip)]
    pub org: OrgId,
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub event: StaffEvent,
}

/// A call in progress as the live stream's snapshot shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ActiveCall {
    #[serde(skip)]
    pub org: OrgId,
    pub sid: String,
    pub from: String,
    pub to: String,
    pub direction: String,
    pub started_at: DateTime<Utc>,
    /// The call's turns so far (the last [`SNAPSHOT_TURNS`]).
    pub turns: Vec<serde_json::Value>,
}

/// Turns a snapshot keeps per call.
pub const SNAPSHOT_TURNS: usize = 200;

/// Cheap to clone; one per server.
#[derive(Clone, Debug)]
pub struct EventBus {
    inner: Arc<BusInner>,
}

#[derive(Debug)]
struct BusInner {
    live: broadcast::Sender<Arc<Published>>,
    webhooks: Mutex<Option<mpsc::Sender<Arc<Published>>>>,
    next: AtomicU64,
    /// The ring of recent events and the calls in progress, under one lock.
    recent: Mutex<Recent>,
    webhook_dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct Recent {
    events: VecDeque<Arc<Published>>,
    active: std::collections::HashMap<String, ActiveCall>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        let (live, _) = broadcast::channel(SUBSCRIBER_BACKLOG);
        Self {
            inner: Arc::new(BusInner {
                live,
                webhooks: Mutex::new(None),
                next: AtomicU64::new(1),
                recent: Mutex::new(Recent::default()),
                webhook_dropped: AtomicU64::new(0),
            }),
        }
    }

    /// Publishes `event` for `org`. Never blocks: the audio path calls this.
    pub fn publish(&self, org: OrgId, event: StaffEvent) {
        let published = {
            // Numbering and the recent ring under one lock, so ids in the ring are in order.
            let mut recent = self.inner.recent.lock().unwrap_or_else(|p| p.into_inner());
            let p = Arc::new(Published {
                id: self.inner.next.fetch_add(1, Ordering::Relaxed),
                org,
                at: Utc::now(),
                event,
            });
            if recent.events.len() == RECENT_EVENTS {
                recent.events.pop_front();
            }
            recent.events.push_back(p.clone());
            match &p.event {
                StaffEvent::CallStarted {
                    sid,
                    from,
                    to,
                    direction,
                    started_at,
                } => {
                    recent.active.insert(
                        sid.clone(),
                        ActiveCall {
                            org,
                            sid: sid.clone(),
                            from: from.clone(),
                            to: to.clone(),
                            direction: direction.clone(),
                            started_at: *started_at,
                            turns: Vec::new(),
                        },
                    );
                }
                StaffEvent::Turn {
                    sid,
                    seq,
                    role,
                    text,
                    interrupted,
                } => {
                    if let Some(call) = recent.active.get_mut(sid) {
                        if call.turns.len() == SNAPSHOT_TURNS {
                            call.turns.remove(0);
                        }
                        call.turns.push(serde_json::json!({
                            "seq": seq, "role": role, "text": text, "interrupted": interrupted
                        }));
                    }
                }
                StaffEvent::CallEnded { sid, .. } => {
                    recent.active.remove(sid);
                }
                _ => {}
            }
            p
        };
        if StaffEvent::WEBHOOK_TYPES.contains(&published.event.name()) {
            let tx = self
                .inner
                .webhooks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(tx) = tx
                && let Err(e) = tx.try_send(published.clone())
            {
                self.inner.webhook_dropped.fetch_add(1, Ordering::Relaxed);
                error!(event = published.event.name(), error = %e, "webhook queue full or closed; event not queued for delivery");
            }
        }
        // No subscriber is not an error.
        let _ = self.inner.live.send(published);
    }

    /// A live subscription: events from now on, plus those after `last_id` still remembered
    /// (`None` if `last_id` is older than the ring: the client needs a fresh snapshot).
    pub fn subscribe(
        &self,
        last_id: Option<u64>,
    ) -> (
        broadcast::Receiver<Arc<Published>>,
        Option<Vec<Arc<Published>>>,
    ) {
        let recent = self.inner.recent.lock().unwrap_or_else(|p| p.into_inner());
        // Subscribing under the ring's lock: nothing published in between is missed or doubled.
        let rx = self.inner.live.subscribe();
        let replay = last_id.and_then(|last| {
            let oldest = recent.events.front().map(|p| p.id).unwrap_or(last + 1);
            (last + 1 >= oldest).then(|| {
                recent
                    .events
                    .iter()
                    .filter(|p| p.id > last)
                    .cloned()
                    .collect()
            })
        });
        (rx, replay)
    }

    /// A subscription that starts with a snapshot of `org`'s calls in progress: the calls, the
    /// last event id the snapshot includes, and the receiver for everything after it.
    pub fn subscribe_with_snapshot(
        &self,
        org: OrgId,
    ) -> (broadcast::Receiver<Arc<Published>>, Vec<ActiveCall>, u64) {
        let recent = self.inner.recent.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.inner.live.subscribe();
        let mut calls: Vec<ActiveCall> = recent
            .active
            .values()
            .filter(|c| c.org == org)
            .cloned()
            .collect();
        calls.sort_by_key(|c| c.started_at);
        let last = recent.events.back().map_or(0, |p| p.id);
        (rx, calls, last)
    }

    /// Live subscribers right now.
    pub fn subscribers(&self) -> usize {
        self.inner.live.receiver_count()
    }

    /// Takes the webhook side of the bus (one consumer: the delivery enqueuer).
    pub fn webhook_receiver(&self) -> mpsc::Receiver<Arc<Published>> {
        let (tx, rx) = mpsc::channel(WEBHOOK_BACKLOG);
        *self
            .inner
            .webhooks
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(tx);
        rx
    }

    /// Webhook events dropped because the enqueuer fell behind by [`WEBHOOK_BACKLOG`].
    pub fn webhook_dropped(&self) -> u64 {
        self.inner.webhook_dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn turn(n: u32) -> StaffEvent {
        StaffEvent::Turn {
            sid: "CA1".into(),
            seq: n,
            role: "caller".into(),
            text: format!("line {n}"),
            interrupted: false,
        }
    }

    #[test]
    fn a_reconnect_resumes_after_its_last_id_or_asks_for_a_snapshot() {
        let bus = EventBus::new();
        let org = OrgId(Uuid::from_u128(1));
        for n in 0..5 {
            bus.publish(org, turn(n));
        }
        let (_rx, replay) = bus.subscribe(Some(3));
        let ids: Vec<u64> = replay.unwrap().iter().map(|p| p.id).collect();
        assert_eq!(ids, vec![4, 5]);
        for n in 0..RECENT_EVENTS as u32 {
            bus.publish(org, turn(n));
        }
        let (_rx, replay) = bus.subscribe(Some(3));
        assert!(replay.is_none(), "id 3 fell out of the ring");
    }

    #[test]
    fn the_snapshot_holds_only_this_orgs_calls_in_progress_with_their_turns() {
        let bus = EventBus::new();
        let (a, b) = (OrgId(Uuid::from_u128(1)), OrgId(Uuid::from_u128(2)));
        let started = |sid: &str| StaffEvent::CallStarted {
            sid: sid.into(),
            from: "+1".into(),
            to: "+2".into(),
            direction: "inbound".into(),
            started_at: Utc::now(),
        };
        bus.publish(a, started("CA1"));
        bus.publish(b, started("CB1"));
        bus.publish(a, started("CA2"));
        bus.publish(a, turn(0));
        bus.publish(
            a,
            StaffEvent::CallEnded {
                sid: "CA2".into(),
                end_reason: "caller_hung_up".into(),
                duration_ms: 1,
                outcome: "abandoned".into(),
                summary: String::new(),
            },
        );
        let (_rx, calls, last) = bus.subscribe_with_snapshot(a);
        assert_eq!(last, 5);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].sid, "CA1");
        assert_eq!(calls[0].turns.len(), 1);
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_so_and_holds_no_more_than_its_backlog() {
        let bus = EventBus::new();
        let org = OrgId(Uuid::from_u128(1));
        let (mut rx, _) = bus.subscribe(None);
        for n in 0..(SUBSCRIBER_BACKLOG as u32 + 10) {
            bus.publish(org, turn(n));
        }
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Lagged(10))
        ));
        drop(rx);
        assert_eq!(bus.subscribers(), 0);
    }

    #[test]
    fn only_webhook_types_reach_the_webhook_queue_and_a_full_queue_counts_drops() {
        let bus = EventBus::new();
        let org = OrgId(Uuid::from_u128(1));
        let mut rx = bus.webhook_receiver();
        bus.publish(org, turn(0));
        bus.publish(
            org,
            StaffEvent::MessageTaken {
                message: serde_json::json!({"name": "Sam"}),
            },
        );
        let got = rx.try_recv().unwrap();
        assert_eq!(got.event.name(), "message.taken");
        assert!(rx.try_recv().is_err());
        for _ in 0..WEBHOOK_BACKLOG + 3 {
            bus.publish(
                org,
                StaffEvent::MessageTaken {
                    message: serde_json::json!({}),
                },
            );
        }
        assert_eq!(bus.webhook_dropped(), 3);
    }

    #[test]
    fn events_serialise_with_their_type_name() {
        let v = serde_json::to_value(turn(2)).unwrap();
        assert_eq!(v["type"], "call.turn");
        assert_eq!(v["seq"], 2);
    }
}
