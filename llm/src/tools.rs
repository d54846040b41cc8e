//! The receptionist's tools as function calls: their JSON schemas, and their execution through
//! [`ClinicTools`] with the offline receptionist's rules.
//!
//! The model proposes; this module decides. Every argument is validated here, never trusted:
//! - a slot is booked (or moved to) only if it is one of [`slots::free_slots`] for the
//!   clinic's hours, notice and diary at the moment of booking;
//! - a service must be one of the clinic's (matched as tolerantly as the offline receptionist
//!   matches what callers say);
//! - a booking, a move or a cancellation needs the caller's yes in this very turn (the
//!   read-back-and-yes invariant): without it the tool answers "read it back first";
//! - appointments are found only through the caller's own number (caller ID), so a caller can
//!   neither hear nor change anyone else's;
//! - the transfer number is the clinic's `transfer_number`, never the model's: a call naming
//!   another number is refused and recorded (`transfer_refused`);
//! - idempotency keys are the offline receptionist's (`{call}:book:{start}:{service}`,
//!   `{call}:move:{id}:{start}`, `{call}:message:{reason}`), so a turn asked again, or answered
//!   by the other brain, never books twice.

use async_openai::types::chat::{ChatCompletionTool, ChatCompletionTools, FunctionObject};
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde_json::{Value, json};

use agent::engine::Action;
use receptionist::clinic::{Clinic, Service};
use receptionist::dialogue::CallContext;
use receptionist::slots::{self, Slot};
use receptionist::tools::{BookingOutcome, BookingRequest, ClinicTools, MessageRequest};
use receptionist::when::{DaySpec, TimeSpec, WhenQuery};
use receptionist::{nlu, speak, text};

/// Free times listed per availability answer besides the two or three offered: enough for the
/// model to answer "anything later?" without another call, few enough to keep the prompt short.
pub const MAX_LISTED_TIMES: usize = 8;

/// The tools, by the names the model calls them.
pub const TOOL_NAMES: [&str; 8] = [
    "check_availability",
    "book_appointment",
    "lookup_caller",
    "reschedule_appointment",
    "cancel_appointment",
    "transfer_to_person",
    "take_message",
    "end_call",
];

/// The `'static` name of a tool the model called (call events name tools by `&'static str`).
pub fn static_name(name: &str) -> Option<&'static str> {
    TOOL_NAMES.iter().copied().find(|n| *n == name)
}

fn tool(name: &str, description: &str, parameters: Value) -> ChatCompletionTools {
    ChatCompletionTools::Function(ChatCompletionTool {
        function: FunctionObject {
            name: name.into(),
            description: Some(description.into()),
            parameters: Some(parameters),
            strict: None,
        },
    })
}

/// The tool definitions sent with every request.
pub fn definitions() -> Vec<ChatCompletionTools> {
    let start = json!({ "type": "string", "description": "clinic-local start, \"YYYY-MM-DD HH:MM\", exactly as check_availability gave it" });
    vec![
        tool(
            "check_availability",
            "Free appointment times for a service. Call it before offering any time; offer only times it returns.",
            json!({ "type": "object", "properties": {
                "service": { "type": "string", "description": "one of the clinic's services" },
                "date": { "type": "string", "description": "YYYY-MM-DD; omit for the soonest days" },
                "time": { "type": "string", "description": "HH:MM the caller asked for, if any" }
            }, "required": ["service"] }),
        ),
        tool(
            "book_appointment",
            "Books a time check_availability returned. Only after reading the booking back (service, day, time, name) and the caller saying yes.",
            json!({ "type": "object", "properties": {
                "service": { "type": "string" },
                "start": start,
                "name": { "type": "string", "description": "the patient's full name" },
                "phone": { "type": "string", "description": "only if the caller gave a number other than the one they call from" }
            }, "required": ["service", "start", "name"] }),
        ),
        tool(
            "lookup_caller",
            "The caller's name and upcoming appointments (with ids), by the number they are calling from.",
            json!({ "type": "object", "properties": {} }),
        ),
        tool(
            "reschedule_appointment",
            "Moves one of the caller's appointments (id from lookup_caller) to a free time. Only after reading the move back and the caller saying yes.",
            json!({ "type": "object", "properties": {
                "appointment_id": { "type": "string" },
                "start": start
            }, "required": ["appointment_id", "start"] }),
        ),
        tool(
            "cancel_appointment",
            "Cancels one of the caller's appointments (id from lookup_caller). Only after the caller confirmed.",
            json!({ "type": "object", "properties": {
                "appointment_id": { "type": "string" }
            }, "required": ["appointment_id"] }),
        ),
        tool(
            "transfer_to_person",
            "Puts the caller through to the clinic's team, when they ask for a person. The number is the clinic's own; do not give one.",
            json!({ "type": "object", "properties": {
                "reason": { "type": "string" }
            } }),
        ),
        tool(
            "take_message",
            "Leaves a message for the team to call the caller back.",
            json!({ "type": "object", "properties": {
                "name": { "type": "string" },
                "reason": { "type": "string", "description": "what to pass on, in the caller's words" },
                "phone": { "type": "string", "description": "only if not the number they call from" },
                "urgent": { "type": "boolean" }
            }, "required": ["name", "reason"] }),
        ),
        tool(
            "end_call",
            "Ends the call after your goodbye, once the caller has nothing else.",
            json!({ "type": "object", "properties": {} }),
        ),
    ]
}

/// What one turn's tools may act on.
#[derive(Debug)]
pub struct TurnContext<'a> {
    pub clinic: &'a Clinic,
    pub call: &'a CallContext,
    pub tools: &'a dyn ClinicTools,
    /// Now, for slots and for which appointments are upcoming.
    pub now: DateTime<Utc>,
    /// The caller's words this turn are a yes (by the offline receptionist's understanding):
    /// what booking, moving and cancelling require.
    pub caller_said_yes: bool,
}

/// What a tool call came to.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutcome {
    /// Given back to the model as the tool's message.
    pub result: Value,
    /// What the call does after this turn's reply (transfer, hang up).
    pub action: Option<Action>,
    /// Call events besides the `tool_call` itself (`transfer_refused`, `transfer`).
    pub notes: Vec<(&'static str, Value)>,
}

impl ToolOutcome {
    fn result(result: Value) -> Self {
        Self {
            result,
            action: None,
            notes: Vec::new(),
        }
    }

    fn error(message: impl Into<String>) -> Self {
        Self::result(json!({ "error": message.into() }))
    }
}

/// Formats a clinic-local time as tools give it to the model.
fn stamp(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

/// Reads a clinic-local start the model wrote ("YYYY-MM-DD HH:MM", a `T` or seconds allowed).
fn parse_start(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim().replace('T', " ");
    ["%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(&s, f).ok())
}

fn str_arg<'v>(args: &'v Value, key: &str) -> Option<&'v str> {
    args.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

impl TurnContext<'_> {
    fn local_now(&self) -> NaiveDateTime {
        slots::local(self.clinic, self.now)
    }

    fn service(&self, name: &str) -> Option<&Service> {
        let norm = text::normalize(name);
        let exact = self
            .clinic
            .services
            .iter()
            .find(|s| s.names.iter().any(|n| *n == name.to_lowercase()));
        exact.or_else(|| {
            nlu::match_service(&norm, self.clinic).and_then(|i| self.clinic.services.get(i))
        })
    }

    fn spoken(&self, t: NaiveDateTime) -> String {
        format!(
            "{} at {}",
            speak::date(t.date(), self.local_now().date()),
            speak::time(t.time(), true)
        )
    }

    /// Free slots of `minutes` on `dates`, counting every booking except `ignore` (the
    /// appointment being moved).
    async fn free(
        &self,
        dates: &[NaiveDate],
        minutes: u32,
        ignore: Option<(DateTime<Utc>, DateTime<Utc>)>,
    ) -> Result<Vec<Slot>, String> {
        let Some((from, to)) = slots::busy_range(self.clinic, dates) else {
            return Ok(Vec::new());
        };
        let mut busy = self.tools.busy(from, to).await.map_err(|e| e.0)?;
        if let Some(own) = ignore {
            busy.retain(|b| *b != own);
        }
        Ok(slots::free_slots(
            self.clinic,
            dates,
            minutes,
            &busy,
            self.local_now(),
        ))
    }

    /// Runs one tool call. `arguments` is the model's JSON text.
    pub async fn execute(&self, name: &str, arguments: &str) -> ToolOutcome {
        let args: Value = if arguments.trim().is_empty() {
            json!({})
        } else {
            match serde_json::from_str(arguments) {
                Ok(v @ Value::Object(_)) => v,
                _ => return ToolOutcome::error("the arguments are not a JSON object"),
            }
        };
        match name {
            "check_availability" => self.check_availability(&args).await,
            "book_appointment" => self.book(&args).await,
            "lookup_caller" => self.lookup_caller().await,
            "reschedule_appointment" => self.reschedule(&args).await,
            "cancel_appointment" => self.cancel(&args).await,
            "transfer_to_person" => self.transfer(&args),
            "take_message" => self.take_message(&args).await,
            "end_call" => ToolOutcome {
                result: json!({ "ok": true, "say": "a short goodbye" }),
                action: Some(Action::Hangup),
                notes: Vec::new(),
            },
            other => ToolOutcome::error(format!("there is no tool {other:?}")),
        }
    }

    async fn check_availability(&self, args: &Value) -> ToolOutcome {
        let Some(service) = str_arg(args, "service").and_then(|s| self.service(s)) else {
            return ToolOutcome::error(format!(
                "unknown service; the clinic offers: {}",
                self.service_names()
            ));
        };
        let today = self.local_now().date();
        let day = match str_arg(args, "date") {
            Some(d) => match NaiveDate::parse_from_str(d, "%Y-%m-%d") {
                Ok(d) => Some(d),
                Err(_) => return ToolOutcome::error("date must be YYYY-MM-DD"),
            },
            None => None,
        };
        let time = match str_arg(args, "time") {
            Some(t) => match NaiveTime::parse_from_str(t, "%H:%M") {
                Ok(t) => Some(t),
                Err(_) => return ToolOutcome::error("time must be HH:MM"),
            },
            None => None,
        };
        let mut closed_that_day = false;
        let mut dates = slots::dates(self.clinic, day.map(DaySpec::Date).as_ref(), today);
        if let Some(d) = day
            && (self.clinic.hours_on(d).is_none() || dates.is_empty())
        {
            // Closed that day (or in the past): the next two weeks from it instead, as the
            // offline receptionist does.
            closed_that_day = self.clinic.hours_on(d).is_none();
            let from = d.max(today);
            dates = slots::fortnight_from(self.clinic, from, today);
        }
        let free = match self.free(&dates, service.minutes, None).await {
            Ok(f) => f,
            Err(e) => return ToolOutcome::error(format!("the diary is unavailable: {e}")),
        };
        let query = WhenQuery {
            day: if closed_that_day {
                None
            } else {
                day.map(DaySpec::Date)
            },
            time: time.map(TimeSpec::At),
        };
        let offer = slots::choose(&free, &query);
        let first_day = offer.first().map(|s| s.start.date());
        let listed: Vec<String> = free
            .iter()
            .filter(|s| Some(s.start.date()) == first_day)
            .take(MAX_LISTED_TIMES)
            .map(|s| s.start.format("%H:%M").to_string())
            .collect();
        ToolOutcome::result(json!({
            "service": service.name,
            "minutes": service.minutes,
            "price": service.price,
            "closed_on_requested_date": closed_that_day,
            "offer": offer.iter().map(|s| json!({
                "start": stamp(s.start),
                "say": self.spoken(s.start),
            })).collect::<Vec<_>>(),
            "other_free_times_that_day": listed,
        }))
    }

    fn service_names(&self) -> String {
        self.clinic
            .services
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Checks that `start` is a free slot for `minutes`; returns it in UTC.
    async fn free_slot(
        &self,
        start: &str,
        minutes: u32,
        ignore: Option<(DateTime<Utc>, DateTime<Utc>)>,
    ) -> Result<(NaiveDateTime, DateTime<Utc>, DateTime<Utc>), ToolOutcome> {
        let Some(start) = parse_start(start) else {
            return Err(ToolOutcome::error("start must be \"YYYY-MM-DD HH:MM\""));
        };
        let free = self
            .free(&[start.date()], minutes, ignore)
            .await
            .map_err(|e| ToolOutcome::error(format!("the diary is unavailable: {e}")))?;
        let slot = free.iter().find(|s| s.start == start).ok_or_else(|| {
            ToolOutcome::error(
                "that time is not free (or not a bookable time); call check_availability and offer one of its times",
            )
        })?;
        let (a, b) = slot
            .utc(self.clinic)
            .ok_or_else(|| ToolOutcome::error("that time does not exist in the clinic's zone"))?;
        Ok((start, a, b))
    }

    fn needs_yes(&self, what: &str) -> Option<ToolOutcome> {
        (!self.caller_said_yes).then(|| {
            ToolOutcome::error(format!(
                "not confirmed: read the {what} back to the caller and ask them to confirm; call this again only after they say yes"
            ))
        })
    }

    async fn book(&self, args: &Value) -> ToolOutcome {
        let Some(service) = str_arg(args, "service").and_then(|s| self.service(s)) else {
            return ToolOutcome::error(format!(
                "unknown service; the clinic offers: {}",
                self.service_names()
            ));
        };
        let Some(name) = str_arg(args, "name") else {
            return ToolOutcome::error("ask for the patient's full name first");
        };
        let Some(phone) = str_arg(args, "phone")
            .map(str::to_string)
            .or_else(|| self.call.caller.clone())
        else {
            return ToolOutcome::error("ask for a phone number to reach them on");
        };
        let (start, starts_at, ends_at) = match self
            .free_slot(
                str_arg(args, "start").unwrap_or_default(),
                service.minutes,
                None,
            )
            .await
        {
            Ok(s) => s,
            Err(e) => return e,
        };
        if let Some(refusal) = self.needs_yes("booking") {
            return refusal;
        }
        let request = BookingRequest {
            idempotency_key: format!(
                "{}:book:{}:{}",
                self.call.call_id,
                starts_at.to_rfc3339(),
                service.name
            ),
            service: service.name.clone(),
            starts_at,
            ends_at,
            name: name.to_string(),
            phone,
        };
        match self.tools.book(request).await {
            Ok(BookingOutcome::Booked(a)) => ToolOutcome::result(json!({
                "booked": true,
                "appointment_id": a.id,
                "service": a.service,
                "start": stamp(start),
                "say": self.spoken(start),
            })),
            Ok(BookingOutcome::Conflict) => ToolOutcome::error(
                "that slot has just been taken; apologise and offer other times from check_availability",
            ),
            Err(e) => ToolOutcome::error(format!(
                "the booking could not be made ({}); apologise and offer to take a message",
                e.0
            )),
        }
    }

    async fn upcoming(&self) -> Result<Vec<receptionist::tools::Appointment>, ToolOutcome> {
        let Some(phone) = self.call.caller.clone() else {
            return Err(ToolOutcome::error(
                "the caller's number is withheld, so their appointments cannot be looked up; offer to take a message",
            ));
        };
        let record = self
            .tools
            .lookup_caller(phone)
            .await
            .map_err(|e| ToolOutcome::error(format!("the diary is unavailable ({})", e.0)))?;
        Ok(record
            .upcoming
            .into_iter()
            .filter(|a| a.ends_at > self.now)
            .collect())
    }

    async fn lookup_caller(&self) -> ToolOutcome {
        let Some(phone) = self.call.caller.clone() else {
            return ToolOutcome::error("the caller's number is withheld");
        };
        let record = match self.tools.lookup_caller(phone).await {
            Ok(r) => r,
            Err(e) => return ToolOutcome::error(format!("the diary is unavailable ({})", e.0)),
        };
        ToolOutcome::result(json!({
            "name": record.name,
            "upcoming": record.upcoming.iter().filter(|a| a.ends_at > self.now).map(|a| {
                let start = slots::local(self.clinic, a.starts_at);
                json!({ "appointment_id": a.id, "service": a.service, "start": stamp(start), "say": self.spoken(start), "name": a.name })
            }).collect::<Vec<_>>(),
        }))
    }

    async fn reschedule(&self, args: &Value) -> ToolOutcome {
        let upcoming = match self.upcoming().await {
            Ok(u) => u,
            Err(e) => return e,
        };
        let id = str_arg(args, "appointment_id").unwrap_or_default();
        let Some(target) = upcoming.iter().find(|a| a.id == id) else {
            return ToolOutcome::error(
                "no such appointment for this caller; call lookup_caller for their appointments",
            );
        };
        let minutes = ((target.ends_at - target.starts_at).num_minutes()).max(1) as u32;
        let (start, starts_at, ends_at) = match self
            .free_slot(
                str_arg(args, "start").unwrap_or_default(),
                minutes,
                Some((target.starts_at, target.ends_at)),
            )
            .await
        {
            Ok(s) => s,
            Err(e) => return e,
        };
        if let Some(refusal) = self.needs_yes("move") {
            return refusal;
        }
        let key = format!(
            "{}:move:{}:{}",
            self.call.call_id,
            target.id,
            starts_at.to_rfc3339()
        );
        match self
            .tools
            .reschedule(target.id.clone(), starts_at, ends_at, key)
            .await
        {
            Ok(BookingOutcome::Booked(a)) => ToolOutcome::result(json!({
                "moved": true, "appointment_id": a.id, "service": a.service,
                "start": stamp(start), "say": self.spoken(start),
            })),
            Ok(BookingOutcome::Conflict) => ToolOutcome::error(
                "that slot has just been taken; offer other times from check_availability",
            ),
            Err(e) => ToolOutcome::error(format!("the move could not be made ({})", e.0)),
        }
    }

    async fn cancel(&self, args: &Value) -> ToolOutcome {
        let upcoming = match self.upcoming().await {
            Ok(u) => u,
            Err(e) => return e,
        };
        let id = str_arg(args, "appointment_id").unwrap_or_default();
        let Some(target) = upcoming.iter().find(|a| a.id == id) else {
            return ToolOutcome::error(
                "no such appointment for this caller; call lookup_caller for their appointments",
            );
        };
        if let Some(refusal) = self.needs_yes("cancellation") {
            return refusal;
        }
        match self.tools.cancel(target.id.clone()).await {
            Ok(()) => {
                ToolOutcome::result(json!({ "cancelled": true, "appointment_id": target.id }))
            }
            Err(e) => ToolOutcome::error(format!("the cancellation failed ({})", e.0)),
        }
    }

    fn open_now(&self) -> bool {
        let now = self.local_now();
        self.clinic
            .hours_on(now.date())
            .is_some_and(|h| now.time() >= h.open && now.time() < h.close)
    }

    fn transfer(&self, args: &Value) -> ToolOutcome {
        let allowed = self.clinic.file.clinic.transfer_number.clone();
        // The schema has no number; a model that names one anyway is refused unless it is the
        // clinic's own.
        let asked = ["number", "to", "phone", "phone_number"]
            .iter()
            .find_map(|k| str_arg(args, k))
            .map(str::to_string);
        if let Some(asked) = &asked
            && allowed.as_deref() != Some(asked.as_str())
        {
            return ToolOutcome {
                result: json!({ "error": "refused: calls are only put through to the clinic's own team; offer that or a message" }),
                action: None,
                notes: vec![(
                    "transfer_refused",
                    json!({ "asked": asked, "allowed": allowed, "brain": "llm" }),
                )],
            };
        }
        match allowed {
            Some(number) if self.open_now() => ToolOutcome {
                result: json!({ "ok": true, "say": "one short sentence that you are putting them through now" }),
                action: Some(Action::Transfer { to: number.clone() }),
                notes: vec![("transfer", json!({ "to": number, "brain": "llm" }))],
            },
            Some(_) => ToolOutcome::error(
                "the clinic is closed, so no one can take the call; offer to take a message",
            ),
            None => {
                ToolOutcome::error("no one can take calls on this line; offer to take a message")
            }
        }
    }

    async fn take_message(&self, args: &Value) -> ToolOutcome {
        let (Some(name), Some(reason)) = (str_arg(args, "name"), str_arg(args, "reason")) else {
            return ToolOutcome::error("ask for their name and what to pass on first");
        };
        let Some(phone) = str_arg(args, "phone")
            .map(str::to_string)
            .or_else(|| self.call.caller.clone())
        else {
            return ToolOutcome::error("ask for a number to call them back on");
        };
        let urgent = args.get("urgent").and_then(Value::as_bool).unwrap_or(false);
        let message = MessageRequest {
            idempotency_key: format!("{}:message:{}", self.call.call_id, reason),
            name: name.into(),
            phone,
            reason: reason.into(),
            urgent,
        };
        match self.tools.take_message(message).await {
            Ok(()) => ToolOutcome::result(json!({ "ok": true, "urgent": urgent })),
            Err(e) => ToolOutcome::error(format!("the message could not be saved ({})", e.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use receptionist::testing::{MemoryTools, example_clinic};

    fn ctx<'a>(
        clinic: &'a Clinic,
        call: &'a CallContext,
        tools: &'a MemoryTools,
        yes: bool,
    ) -> TurnContext<'a> {
        TurnContext {
            clinic,
            call,
            tools,
            // Tuesday 1 December 2026, 10:00 in London.
            now: Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap(),
            caller_said_yes: yes,
        }
    }

    fn call() -> CallContext {
        CallContext {
            call_id: "CAtest".into(),
            caller: Some("+447700900123".into()),
            ..CallContext::default()
        }
    }

    #[tokio::test]
    async fn only_free_slots_of_real_services_are_booked_and_only_after_a_yes() {
        let clinic = example_clinic();
        let call = call();
        let tools = MemoryTools::new(&clinic);
        let service = clinic.services[0].name.clone();
        let offer = ctx(&clinic, &call, &tools, false)
            .execute(
                "check_availability",
                &json!({ "service": service, "date": "2026-12-02" }).to_string(),
            )
            .await;
        let start = offer.result["offer"][0]["start"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(start.starts_with("2026-12-02"), "{offer:?}");

        let book = json!({ "service": service, "start": start, "name": "Ann Lee" }).to_string();
        let refused = ctx(&clinic, &call, &tools, false)
            .execute("book_appointment", &book)
            .await;
        assert!(
            refused.result["error"]
                .as_str()
                .unwrap()
                .contains("not confirmed")
        );
        assert!(tools.booked().is_empty());

        let unknown = ctx(&clinic, &call, &tools, true)
            .execute(
                "book_appointment",
                &json!({ "service": "liposuction", "start": start, "name": "Ann" }).to_string(),
            )
            .await;
        assert!(
            unknown.result["error"]
                .as_str()
                .unwrap()
                .contains("unknown service")
        );
        let closed = ctx(&clinic, &call, &tools, true)
            .execute(
                "book_appointment",
                &json!({ "service": service, "start": "2026-12-02 03:00", "name": "Ann" })
                    .to_string(),
            )
            .await;
        assert!(
            closed.result["error"]
                .as_str()
                .unwrap()
                .contains("not free")
        );
        assert!(tools.booked().is_empty());

        let booked = ctx(&clinic, &call, &tools, true)
            .execute("book_appointment", &book)
            .await;
        assert_eq!(booked.result["booked"], true, "{booked:?}");
        // Asked again (a re-asked turn): the same key, the same appointment.
        ctx(&clinic, &call, &tools, true)
            .execute("book_appointment", &book)
            .await;
        let all = tools.booked();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].phone, "+447700900123");
        assert_eq!(all[0].name, "Ann Lee");
        assert_eq!(all[0].service, service);
    }

    #[tokio::test]
    async fn a_transfer_goes_only_to_the_clinics_number() {
        let clinic = example_clinic();
        let call = call();
        let tools = MemoryTools::new(&clinic);
        let own = clinic.file.clinic.transfer_number.clone().unwrap();
        let c = ctx(&clinic, &call, &tools, false);
        let refused = c
            .execute("transfer_to_person", r#"{"number": "+19005550100"}"#)
            .await;
        assert_eq!(refused.action, None);
        assert_eq!(refused.notes[0].0, "transfer_refused");
        let ok = c.execute("transfer_to_person", "{}").await;
        assert_eq!(ok.action, Some(Action::Transfer { to: own.clone() }));
        let same = c
            .execute("transfer_to_person", &json!({ "number": own }).to_string())
            .await;
        assert_eq!(same.action, Some(Action::Transfer { to: own }));
    }

    #[tokio::test]
    async fn appointments_are_the_callers_own() {
        let clinic = example_clinic();
        let call = call();
        let tools = MemoryTools::new(&clinic);
        let theirs = tools.seed(
            "Check-up",
            Utc.with_ymd_and_hms(2026, 12, 3, 10, 0, 0).unwrap(),
            30,
            "Bo",
            "+447700900999",
        );
        let mine = tools.seed(
            "Check-up",
            Utc.with_ymd_and_hms(2026, 12, 3, 11, 0, 0).unwrap(),
            30,
            "Ann",
            "+447700900123",
        );
        let c = ctx(&clinic, &call, &tools, true);
        let looked = c.execute("lookup_caller", "{}").await;
        assert_eq!(looked.result["upcoming"].as_array().unwrap().len(), 1);
        let other = c
            .execute(
                "cancel_appointment",
                &json!({ "appointment_id": theirs.id }).to_string(),
            )
            .await;
        assert!(other.result["error"].is_string());
        let own = c
            .execute(
                "cancel_appointment",
                &json!({ "appointment_id": mine.id }).to_string(),
            )
            .await;
        assert_eq!(own.result["cancelled"], true);
        assert_eq!(
            tools.booked().len(),
            1,
            "only the caller's own was cancelled"
        );
        let garbage = c.execute("book_appointment", "{not json").await;
        assert!(garbage.result["error"].is_string());
    }
}
