//! Test doubles for the receptionist's tools: an in-memory diary with the same rules the store
//! enforces (no overlapping bookings, idempotency keys), and knowledge search by word overlap
//! instead of embeddings. For unit tests of the dialogue; calls and `voxanne chat` use the real
//! store and the MiniLM engine through `api`.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;

use crate::clinic::{Clinic, chunks};
use crate::tools::{
    Appointment, BookingOutcome, BookingRequest, CallerRecord, ClinicTools, KnowledgeHit,
    MessageRequest, ToolError,
};

/// The example clinic shipped in `examples/`.
pub const EXAMPLE_CLINIC: &str = include_str!("../../examples/bright-smile.toml");

/// The example clinic, validated.
pub fn example_clinic() -> Clinic {
    crate::clinic::ClinicFile::from_toml(EXAMPLE_CLINIC)
        .and_then(|f| f.validate())
        .expect("the example clinic is valid")
}

#[derive(Debug, Default)]
struct Diary {
    appointments: Vec<(Appointment, bool /*booked*/)>,
    keys: HashMap<String, BookingOutcome>,
    messages: Vec<MessageRequest>,
    contacts: HashMap<String, String>,
    next_id: u32,
}

/// In-memory tools. `fail` makes every call fail (a database that is down).
#[derive(Debug, Default)]
pub struct MemoryTools {
    diary: Mutex<Diary>,
    knowledge: Vec<(String, String)>,
    pub fail: bool,
}

impl MemoryTools {
    pub fn new(clinic: &Clinic) -> Self {
        Self {
            knowledge: chunks(&clinic.file.knowledge)
                .into_iter()
                .map(|c| (c.title, c.text))
                .collect(),
            ..Self::default()
        }
    }

    /// Tools whose every call fails, as over a database that is down.
    pub fn failing() -> Self {
        Self {
            fail: true,
            ..Self::default()
        }
    }

    /// Books directly (test setup: a returning caller's appointment, or a taken slot).
    pub fn seed(
        &self,
        service: &str,
        starts_at: DateTime<Utc>,
        minutes: i64,
        name: &str,
        phone: &str,
    ) -> Appointment {
        let mut d = self.diary.lock().unwrap();
        d.next_id += 1;
        let a = Appointment {
            id: format!("appt-{}", d.next_id),
            service: service.into(),
            starts_at,
            ends_at: starts_at + chrono::Duration::minutes(minutes),
            name: name.into(),
            phone: phone.into(),
        };
        d.appointments.push((a.clone(), true));
        d.contacts.insert(phone.into(), name.into());
        a
    }

    pub fn booked(&self) -> Vec<Appointment> {
        let d = self.diary.lock().unwrap();
        d.appointments
            .iter()
            .filter(|(_, b)| *b)
            .map(|(a, _)| a.clone())
            .collect()
    }

    pub fn messages(&self) -> Vec<MessageRequest> {
        self.diary.lock().unwrap().messages.clone()
    }

    fn check(&self) -> Result<(), ToolError> {
        if self.fail {
            Err(ToolError("database unavailable".into()))
        } else {
            Ok(())
        }
    }
}

fn overlaps(a: &Appointment, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
    a.starts_at < to && from < a.ends_at
}

/// Content words for the overlap score.
fn words(s: &str) -> Vec<String> {
    const STOP: &[&str] = &[
        "the", "a", "an", "is", "are", "do", "you", "i", "to", "of", "and", "can", "there", "we",
        "it", "in", "on", "for", "my", "what", "how", "your", "any",
    ];
    s.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 2 && !STOP.contains(w))
        .map(|w| w.trim_end_matches('s').to_string())
        .collect()
}

impl ClinicTools for MemoryTools {
    fn lookup_caller(&self, phone: String) -> BoxFuture<'static, Result<CallerRecord, ToolError>> {
        let r = self.check().map(|()| {
            let d = self.diary.lock().unwrap();
            let mut upcoming: Vec<Appointment> = d
                .appointments
                .iter()
                .filter(|(a, b)| *b && a.phone == phone)
                .map(|(a, _)| a.clone())
                .collect();
            upcoming.sort_by_key(|a| a.starts_at);
            CallerRecord {
                name: d.contacts.get(&phone).cloned(),
                upcoming,
            }
        });
        Box::pin(async move { r })
    }

    fn busy(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> BoxFuture<'static, Result<Vec<(DateTime<Utc>, DateTime<Utc>)>, ToolError>> {
        let r = self.check().map(|()| {
            let d = self.diary.lock().unwrap();
            d.appointments
                .iter()
                .filter(|(a, b)| *b && overlaps(a, from, to))
                .map(|(a, _)| (a.starts_at, a.ends_at))
                .collect()
        });
        Box::pin(async move { r })
    }

    fn book(
        &self,
        request: BookingRequest,
    ) -> BoxFuture<'static, Result<BookingOutcome, ToolError>> {
        let r = self.check().map(|()| {
            let mut d = self.diary.lock().unwrap();
            if let Some(o) = d.keys.get(&request.idempotency_key) {
                return o.clone();
            }
            if d.appointments
                .iter()
                .any(|(a, b)| *b && overlaps(a, request.starts_at, request.ends_at))
            {
                return BookingOutcome::Conflict;
            }
            d.next_id += 1;
            let a = Appointment {
                id: format!("appt-{}", d.next_id),
                service: request.service.clone(),
                starts_at: request.starts_at,
                ends_at: request.ends_at,
                name: request.name.clone(),
                phone: request.phone.clone(),
            };
            d.appointments.push((a.clone(), true));
            d.contacts
                .insert(request.phone.clone(), request.name.clone());
            let o = BookingOutcome::Booked(a);
            d.keys.insert(request.idempotency_key.clone(), o.clone());
            o
        });
        Box::pin(async move { r })
    }

    fn reschedule(
        &self,
        id: String,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        key: String,
    ) -> BoxFuture<'static, Result<BookingOutcome, ToolError>> {
        let r = self.check().and_then(|()| {
            let mut d = self.diary.lock().unwrap();
            if let Some(o) = d.keys.get(&key) {
                return Ok(o.clone());
            }
            if d.appointments
                .iter()
                .any(|(a, b)| *b && a.id != id && overlaps(a, starts_at, ends_at))
            {
                return Ok(BookingOutcome::Conflict);
            }
            let Some((a, _)) = d.appointments.iter_mut().find(|(a, b)| *b && a.id == id) else {
                return Err(ToolError(format!("no appointment {id}")));
            };
            a.starts_at = starts_at;
            a.ends_at = ends_at;
            let o = BookingOutcome::Booked(a.clone());
            d.keys.insert(key, o.clone());
            Ok(o)
        });
        Box::pin(async move { r })
    }

    fn cancel(&self, id: String) -> BoxFuture<'static, Result<(), ToolError>> {
        let r = self.check().map(|()| {
            let mut d = self.diary.lock().unwrap();
            for (a, b) in d.appointments.iter_mut() {
                if a.id == id {
                    *b = false;
                }
            }
        });
        Box::pin(async move { r })
    }

    fn take_message(&self, message: MessageRequest) -> BoxFuture<'static, Result<(), ToolError>> {
        let r = self.check().map(|()| {
            let mut d = self.diary.lock().unwrap();
            if !d
                .messages
                .iter()
                .any(|m| m.idempotency_key == message.idempotency_key)
            {
                d.messages.push(message);
            }
        });
        Box::pin(async move { r })
    }

    fn search_knowledge(
        &self,
        question: String,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<KnowledgeHit>, ToolError>> {
        let q = words(&question);
        let mut hits: Vec<KnowledgeHit> = self
            .knowledge
            .iter()
            .map(|(title, text)| {
                let t = words(&format!("{title} {text}"));
                let common = q.iter().filter(|w| t.contains(w)).count();
                let score = if q.is_empty() {
                    0.0
                } else {
                    common as f32 / q.len() as f32
                };
                KnowledgeHit {
                    title: title.clone(),
                    text: text.clone(),
                    score,
                }
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(limit);
        let r = self.check().map(|()| hits);
        Box::pin(async move { r })
    }
}
