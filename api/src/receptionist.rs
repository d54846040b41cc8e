//! The receptionist's tools over storage and the embedding engine, and the per-call sessions
//! built from a clinic's stored config.
//!
//! Every store call a tool makes has [`TOOL_TIMEOUT`]: a database that stalls becomes a tool
//! error the dialogue apologises for, never a silent caller.

use crate::staff::events::{EventBus, StaffEvent};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use tracing::warn;

use engines::minilm::{MiniLm, cosine};
use receptionist::clinic::{Clinic, ClinicFile};
use receptionist::dialogue::CallContext;
use receptionist::session::{Clock, ReceptionistSession};
use receptionist::tools::{
    Appointment, BookingOutcome, BookingRequest, CallerRecord, ClinicTools, KnowledgeHit,
    MessageRequest, ToolError,
};
use storage::{BookOutcome, CallSid, KnowledgeChunk, NewBooking, NewCallback, OrgId, Store};

/// Longest a tool waits for the database. Bookings are a single short transaction; 5 s covers a
/// busy box, and past it the caller is better served by an apology and a message.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(5);

/// A clinic as calls use it: validated config and its embedded knowledge.
#[derive(Debug, Clone)]
pub struct LoadedClinic {
    pub org: OrgId,
    pub clinic: Arc<Clinic>,
    pub knowledge: Arc<Vec<KnowledgeChunk>>,
}

impl LoadedClinic {
    /// [`Clinic::fallback`] with no knowledge.
    pub fn fallback(org: OrgId, name: &str) -> Self {
        Self {
            org,
            clinic: Arc::new(Clinic::fallback(name)),
            knowledge: Arc::new(Vec::new()),
        }
    }
}

/// Loads an organisation's clinic; an organisation without a clinic file gets
/// [`Clinic::fallback`] (answers, takes messages, books nothing).
pub async fn load_clinic(
    store: &Store,
    org: OrgId,
    org_name: &str,
) -> Result<LoadedClinic, String> {
    let config = store.get_clinic(org).await.map_err(|e| e.to_string())?;
    let clinic = match config {
        Some(json) => ClinicFile::from_json(&json)
            .and_then(ClinicFile::validate)
            .map_err(|e| e.to_string())?,
        None => Clinic::fallback(org_name),
    };
    let knowledge = store.list_knowledge(org).await.map_err(|e| e.to_string())?;
    Ok(LoadedClinic {
        org,
        clinic: Arc::new(clinic),
        knowledge: Arc::new(knowledge),
    })
}

/// The system clock, as the session's injected clock.
pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

/// Builds a call's receptionist.
pub fn session(
    store: &Store,
    loaded: &LoadedClinic,
    embedder: Option<MiniLm>,
    context: CallContext,
    call_sid: Option<CallSid>,
    clock: Clock,
) -> ReceptionistSession {
    session_with_events(store, loaded, embedder, context, call_sid, clock, None)
}

/// [`session`] whose bookings, changes and messages are published on `events` (the live stream
/// and outgoing webhooks).
pub fn session_with_events(
    store: &Store,
    loaded: &LoadedClinic,
    embedder: Option<MiniLm>,
    context: CallContext,
    call_sid: Option<CallSid>,
    clock: Clock,
    events: Option<EventBus>,
) -> ReceptionistSession {
    let mut tools = StoreTools::new(store, loaded, embedder, call_sid).with_clock(clock.clone());
    tools.events = events;
    ReceptionistSession::new(loaded.clinic.clone(), context, Arc::new(tools), clock)
}

/// [`ClinicTools`] over the store (bookings are synchronous transactions) and MiniLM.
#[derive(Debug, Clone)]
pub struct StoreTools {
    store: Store,
    org: OrgId,
    /// The call the tools act for (bookings and messages record it); `None` for chat.
    call_sid: Option<CallSid>,
    knowledge: Arc<Vec<KnowledgeChunk>>,
    embedder: Option<MiniLm>,
    /// "Now" for which appointments are upcoming: the session's clock (`voxanne chat --now`
    /// and tests set it), so the look-up agrees with the dialogue's idea of the date.
    clock: ToolClock,
    /// Where bookings, changes and messages are announced (`None`: nowhere, e.g. `voxanne chat`).
    events: Option<EventBus>,
}

/// The session's clock, for `StoreTools`.
#[derive(Clone)]
struct ToolClock(Clock);

impl std::fmt::Debug for ToolClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ToolClock({})", (self.0)())
    }
}

impl StoreTools {
    /// The same tools with `clock` as "now" (default: the system clock).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = ToolClock(clock);
        self
    }

    /// Tools for one call (or chat) of `loaded`'s organisation.
    pub fn new(
        store: &Store,
        loaded: &LoadedClinic,
        embedder: Option<MiniLm>,
        call_sid: Option<CallSid>,
    ) -> Self {
        Self {
            store: store.clone(),
            org: loaded.org,
            call_sid,
            knowledge: loaded.knowledge.clone(),
            embedder,
            clock: ToolClock(system_clock()),
            events: None,
        }
    }
}

async fn bounded<T, E: std::fmt::Display>(
    what: &str,
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, ToolError> {
    match tokio::time::timeout(TOOL_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            warn!(error = %e, "{what} failed");
            Err(ToolError(format!("{what}: {e}")))
        }
        Err(_) => {
            warn!("{what} timed out");
            Err(ToolError(format!("{what}: timed out")))
        }
    }
}

/// A stored appointment as the receptionist sees it.
pub fn appointment(a: storage::Appointment) -> Appointment {
    Appointment {
        id: a.id.to_string(),
        service: a.service,
        starts_at: a.starts_at,
        ends_at: a.ends_at,
        name: a.patient_name,
        phone: a.phone.unwrap_or_default(),
    }
}

fn outcome(o: BookOutcome) -> BookingOutcome {
    match o {
        BookOutcome::Booked(a) | BookOutcome::AlreadyBooked(a) => {
            BookingOutcome::Booked(appointment(a))
        }
        BookOutcome::Conflict => BookingOutcome::Conflict,
    }
}

fn parse_id(id: &str) -> Result<uuid::Uuid, ToolError> {
    id.parse()
        .map_err(|_| ToolError(format!("no appointment {id:?}")))
}

impl ClinicTools for StoreTools {
    fn lookup_caller(&self, phone: String) -> BoxFuture<'static, Result<CallerRecord, ToolError>> {
        let t = self.clone();
        Box::pin(async move {
            let contact = bounded("caller lookup", t.store.get_contact(t.org, &phone)).await?;
            let upcoming = bounded(
                "caller lookup",
                t.store.upcoming_appointments(t.org, &phone, (t.clock.0)()),
            )
            .await?;
            Ok(CallerRecord {
                name: contact.and_then(|c| c.name).filter(|n| !n.is_empty()),
                upcoming: upcoming.into_iter().map(appointment).collect(),
            })
        })
    }

    fn busy(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> BoxFuture<'static, Result<Vec<(DateTime<Utc>, DateTime<Utc>)>, ToolError>> {
        let t = self.clone();
        Box::pin(
            async move { bounded("availability", t.store.busy_intervals(t.org, from, to)).await },
        )
    }

    fn book(
        &self,
        request: BookingRequest,
    ) -> BoxFuture<'static, Result<BookingOutcome, ToolError>> {
        let t = self.clone();
        Box::pin(async move {
            let booking = NewBooking {
                org: t.org,
                idempotency_key: request.idempotency_key,
                call_sid: t.call_sid.clone(),
                phone: request.phone,
                name: request.name,
                service: request.service,
                starts_at: request.starts_at,
                ends_at: request.ends_at,
            };
            let booked = bounded("booking", t.store.book_appointment(&booking)).await?;
            if let (BookOutcome::Booked(a), Some(events)) = (&booked, &t.events) {
                events.publish(
                    t.org,
                    StaffEvent::AppointmentBooked {
                        appointment: crate::staff::calls::appointment_json(a),
                    },
                );
            }
            Ok(outcome(booked))
        })
    }

    fn reschedule(
        &self,
        appointment_id: String,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        idempotency_key: String,
    ) -> BoxFuture<'static, Result<BookingOutcome, ToolError>> {
        let t = self.clone();
        Box::pin(async move {
            let id = parse_id(&appointment_id)?;
            let moved = bounded(
                "reschedule",
                t.store
                    .reschedule_appointment(t.org, id, starts_at, ends_at, &idempotency_key),
            )
            .await?;
            if let (BookOutcome::Booked(a), Some(events)) = (&moved, &t.events) {
                events.publish(
                    t.org,
                    StaffEvent::AppointmentChanged {
                        change: "rescheduled".into(),
                        appointment: crate::staff::calls::appointment_json(a),
                    },
                );
            }
            Ok(outcome(moved))
        })
    }

    fn cancel(&self, appointment_id: String) -> BoxFuture<'static, Result<(), ToolError>> {
        let t = self.clone();
        Box::pin(async move {
            let id = parse_id(&appointment_id)?;
            match bounded("cancel", t.store.cancel_appointment(t.org, id)).await? {
                Some(a) => {
                    if let Some(events) = &t.events {
                        events.publish(
                            t.org,
                            StaffEvent::AppointmentChanged {
                                change: "cancelled".into(),
                                appointment: crate::staff::calls::appointment_json(&a),
                            },
                        );
                    }
                    Ok(())
                }
                None => Err(ToolError(format!("no appointment {appointment_id:?}"))),
            }
        })
    }

    fn take_message(&self, message: MessageRequest) -> BoxFuture<'static, Result<(), ToolError>> {
        let t = self.clone();
        Box::pin(async move {
            let m = NewCallback {
                org: t.org,
                idempotency_key: message.idempotency_key,
                call_sid: t.call_sid.clone(),
                name: message.name,
                phone: message.phone,
                reason: message.reason,
                urgent: message.urgent,
            };
            let taken = bounded("message", t.store.take_message(&m)).await?;
            if let Some(events) = &t.events {
                events.publish(
                    t.org,
                    StaffEvent::MessageTaken {
                        message: crate::staff::calls::message_json(&taken),
                    },
                );
            }
            Ok(())
        })
    }

    fn search_knowledge(
        &self,
        question: String,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<KnowledgeHit>, ToolError>> {
        let t = self.clone();
        Box::pin(async move {
            if t.knowledge.is_empty() {
                return Ok(vec![]);
            }
            let Some(embedder) = t.embedder.clone() else {
                return Err(ToolError(
                    "knowledge search: the MiniLM model is not loaded (voxanne models fetch)"
                        .into(),
                ));
            };
            let version = embedder.model_version().to_string();
            let q = tokio::task::spawn_blocking(move || embedder.embed(&question))
                .await
                .map_err(|e| ToolError(format!("knowledge search: {e}")))?
                .map_err(|e| ToolError(format!("knowledge search: {e}")))?;
            let mut hits: Vec<KnowledgeHit> = t
                .knowledge
                .iter()
                .filter(|c| c.model == version && c.embedding.len() == q.len())
                .map(|c| KnowledgeHit {
                    title: c.title.clone(),
                    text: c.text.clone(),
                    score: cosine(&q, &c.embedding),
                })
                .collect();
            hits.sort_by(|a, b| b.score.total_cmp(&a.score));
            hits.truncate(limit);
            Ok(hits)
        })
    }
}
