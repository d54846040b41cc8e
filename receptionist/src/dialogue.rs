//! The receptionist's policy: given what the caller said (understood by [`crate::nlu`]), the
//! dialogue state, the clinic and the clinic-local time, decide what to say, which tools to call
//! and what to do next.
//!
//! The state is a booking *form* in the Rasa sense: it holds the slots gathered so far (service,
//! day and time, name, phone) and asks only for what is missing; any turn may correct any slot
//! ("no, Wednesday", "actually make it 4"). Nothing is booked without a read-back and a yes.
//! Medical questions are never answered: they are escalated (a person during opening hours, an
//! urgent message otherwise); emergencies are told to ring the emergency number first. The only
//! number ever transferred to is the clinic's `transfer_number`.

use chrono::{NaiveDateTime, NaiveTime, Timelike};
use serde_json::json;

use agent::engine::Action;

use crate::clinic::Clinic;
use crate::nlu::{self, Intent, Understanding};
use crate::slots::{self, Slot};
use crate::speak;
use crate::tools::{
    Appointment, BookingOutcome, BookingRequest, CallerRecord, ClinicTools, MessageRequest,
};
use crate::when::{DaySpec, TimeSpec, WhenQuery};

/// Cosine similarity (all-MiniLM-L6-v2, question against `title: sentence` chunks) at or
/// above which a knowledge chunk answers a question. Calibrated on the 32 calibration questions
/// in `tests/tests/receptionist.rs` (24 answerable, 8 not): right answers scored 0.25–0.66
/// (median 0.48), questions the clinic cannot answer 0.06–0.48 (median 0.19). 0.38 answers
/// 26 of 32 correctly; 0.40 gave 25, 0.45 gave 21 (more "I don't know"s), 0.30 gave 24 (more
/// wrong answers). Below it the receptionist says it does not know and offers a person or a
/// message, so a miss costs a hand-off, not a wrong fact.
pub const KNOWLEDGE_MIN_SCORE: f32 = 0.38;

/// Misunderstood turns before the receptionist offers a person or a message instead of asking
/// again.
pub const MAX_REASKS: u32 = 1;

/// Whether the call came in or we placed it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    Inbound,
    /// An appointment reminder we placed.
    Reminder(Appointment),
}

/// Who and what this call is, fixed at setup.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// Identifies the call in idempotency keys (the CallSid, or a chat session id).
    pub call_id: String,
    /// Caller ID (E.164), if the network gave one.
    pub caller: Option<String>,
    pub direction: Direction,
}

/// What the receptionist is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Awaiting {
    #[default]
    Nothing,
    Service,
    When,
    SlotChoice,
    Name,
    Phone,
    Confirm,
    CancelConfirm,
    MessageReason,
    MessageName,
    MessagePhone,
    /// "Shall I put you through or take a message?"
    PersonOrMessage,
    ReminderAnswer,
}

/// The job in hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Task {
    #[default]
    None,
    Book,
    Reschedule,
    Cancel,
    Message {
        urgent: bool,
    },
}

/// The booking form.
#[derive(Debug, Clone, Default)]
pub struct Form {
    pub service: Option<usize>,
    pub when: WhenQuery,
    pub offered: Vec<Slot>,
    pub chosen: Option<Slot>,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub for_whom: Option<String>,
    /// The caller confirmed the number they are calling from.
    pub phone_confirmed: bool,
}

/// A message being taken.
#[derive(Debug, Clone, Default)]
pub struct MessageForm {
    pub reason: Option<String>,
    pub name: Option<String>,
    pub phone: Option<String>,
}

/// Everything the receptionist remembers of this call.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub task: Task,
    pub awaiting: Awaiting,
    pub form: Form,
    pub message: MessageForm,
    /// The appointment being moved or cancelled.
    pub target: Option<Appointment>,
    pub caller: Option<CallerRecord>,
    pub misunderstood: u32,
    /// Appointments booked (or moved) on this call: the tool results the dialogue keeps.
    pub booked: Vec<Appointment>,
    /// The last reply's text, to tell whether the caller heard a confirmation.
    pub last_reply: String,
    /// The last reply confirmed a booking (so if it was not heard in full, say it again).
    pub last_reply_confirmed: Option<Appointment>,
    pub greeted_by_name: bool,
}

/// A tool call and its result, for the call's events and `voxanne chat --json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub name: &'static str,
    pub arguments: serde_json::Value,
    pub result: serde_json::Value,
}

/// One reply.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reply {
    /// Sentences to say, in order.
    pub say: Vec<String>,
    pub tools: Vec<ToolCall>,
    /// Escalations and other notable moments: (kind, detail).
    pub notes: Vec<(&'static str, serde_json::Value)>,
    pub action: Option<Action>,
}

impl Reply {
    fn say(&mut self, s: impl Into<String>) {
        self.say.push(s.into());
    }
}

/// The input text `session` passes for `agent::engine::CallerInput::Unheard` (the caller
/// spoke, speech-to-text kept failing); no transcript looks like it.
pub const UNHEARD_INPUT: &str = "__unheard__";

/// The receptionist for one call.
#[derive(Debug)]
pub struct Dialogue<'a> {
    pub clinic: &'a Clinic,
    pub context: &'a CallContext,
    pub tools: &'a dyn ClinicTools,
    /// Clinic-local time of this turn.
    pub now: NaiveDateTime,
}

impl Dialogue<'_> {
    /// The opening line of an outbound reminder call.
    pub fn reminder_opening(&self, appointment: &Appointment) -> String {
        let start = slots::local(self.clinic, appointment.starts_at);
        format!(
            "Hello, this is {} calling to remind you of your {} {} at {}. Can you still make it?",
            self.clinic.name(),
            appointment.service.to_lowercase(),
            speak::date(start.date(), self.now.date()),
            speak::time(start.time(), false)
        )
    }

    /// Answers one caller turn, updating `state`.
    pub async fn respond(&self, state: &mut State, heard_last: Option<&str>, input: &str) -> Reply {
        let mut reply = Reply::default();
        // Speech-to-text failed on several turns in a row (the core has already asked the
        // caller to repeat): offer a way round it rather than guess.
        if input == UNHEARD_INPUT {
            reply.say("I'm sorry, I'm having trouble hearing you.");
            reply.say("I can put you through to the team, or take a message so they can call you back. Which would you prefer?");
            state.awaiting = Awaiting::PersonOrMessage;
            state.last_reply = reply.say.join(" ");
            return reply;
        }
        if state.caller.is_none()
            && let Some(phone) = &self.context.caller
        {
            match self.tools.lookup_caller(phone.clone()).await {
                Ok(record) => {
                    reply.tools.push(ToolCall {
                        name: "lookup_caller",
                        arguments: json!({ "phone": phone }),
                        result: json!({ "name": record.name, "upcoming": record.upcoming.len() }),
                    });
                    state.caller = Some(record);
                }
                Err(e) => {
                    reply.notes.push((
                        "tool_error",
                        json!({ "tool": "lookup_caller", "error": e.0 }),
                    ));
                    state.caller = Some(CallerRecord::default());
                }
            }
        }
        // A confirmation the caller may not have heard (they talked over it): say it again
        // before anything else, since the booking stands.
        if let Some(appt) = state.last_reply_confirmed.take()
            && heard_last.is_some_and(|h| h.trim().len() + 3 < state.last_reply.trim().len())
        {
            reply.say(format!(
                "Just so you know, your {} is booked {}.",
                appt.service.to_lowercase(),
                self.when_words(&appt)
            ));
        }
        let u = nlu::understand(input, self.clinic, self.now);
        self.turn(state, &u, &mut reply).await;
        if reply.say.is_empty() {
            reply.say("Sorry, could you say that again?".to_string());
        }
        state.last_reply = reply.say.join(" ");
        reply
    }

    async fn turn(&self, state: &mut State, u: &Understanding, reply: &mut Reply) {
        // Safety first, whatever we were doing.
        if u.has(Intent::Emergency) {
            reply
                .notes
                .push(("escalation", json!({ "kind": "emergency", "said": u.raw })));
            reply.say(format!(
                "That sounds like an emergency. Please hang up now and call {} straight away.",
                spaced_digits(&self.clinic.file.clinic.emergency_number)
            ));
            reply.say("If it isn't life-threatening, I can put you through to the team or take an urgent message.");
            state.awaiting = Awaiting::PersonOrMessage;
            state.task = Task::Message { urgent: true };
            return;
        }
        if u.has(Intent::Medical) {
            reply
                .notes
                .push(("escalation", json!({ "kind": "medical", "said": u.raw })));
            reply.say("I'm sorry, I can't give medical advice over the phone, but the clinical team can help.");
            self.escalate(state, reply, true);
            return;
        }
        if u.has(Intent::Person) {
            reply
                .notes
                .push(("escalation", json!({ "kind": "person", "said": u.raw })));
            self.escalate(state, reply, false);
            return;
        }

        // Answers to what we asked.
        match state.awaiting {
            Awaiting::Confirm => {
                if u.yes && !u.has_booking_slots() {
                    return self.commit(state, reply).await;
                }
                if u.for_whom.is_some() {
                    // "Oh wait, it's for my husband": the name read back was the caller's.
                    state.form.for_whom = u.for_whom.clone();
                    state.form.name = u.name.clone();
                    return self.advance(state, reply).await;
                }
                if u.no || u.has_booking_slots() || u.name.is_some() {
                    if !self.apply_corrections(state, u) {
                        state.awaiting = Awaiting::Nothing;
                        reply.say("No problem. What would you like to change: the day, the time, or the name?");
                        state.awaiting = Awaiting::When;
                        return;
                    }
                    return self.advance(state, reply).await;
                }
            }
            Awaiting::CancelConfirm => {
                if u.yes {
                    return self.do_cancel(state, reply).await;
                }
                if u.no {
                    state.task = Task::None;
                    state.awaiting = Awaiting::Nothing;
                    state.target = None;
                    reply.say(
                        "Okay, I've left it as it is. Is there anything else I can help with?",
                    );
                    return;
                }
            }
            Awaiting::ReminderAnswer => {
                if u.has(Intent::Cancel) {
                    if let Direction::Reminder(a) = &self.context.direction {
                        state.target = Some(a.clone());
                    }
                    state.task = Task::Cancel;
                    return self.ask_cancel(state, reply);
                }
                if u.has(Intent::Reschedule) || u.has_booking_slots() {
                    if let Direction::Reminder(a) = &self.context.direction {
                        state.target = Some(a.clone());
                        self.start_reschedule_for(state, a.clone());
                    }
                    self.apply_corrections(state, u);
                    return self.advance(state, reply).await;
                }
                if u.yes {
                    state.awaiting = Awaiting::Nothing;
                    reply.notes.push(("reminder_confirmed", json!({})));
                    reply.say("Great, we'll see you then. Is there anything else I can help with?");
                    return;
                }
                if u.no {
                    reply.say(
                        "No problem. Would you like to move it to another time, or cancel it?",
                    );
                    if let Direction::Reminder(a) = &self.context.direction {
                        state.target = Some(a.clone());
                    }
                    return;
                }
            }
            Awaiting::PersonOrMessage => {
                if u.has(Intent::Message) || nlu::has_phrase(&u.norm, "message") {
                    return self.start_message(
                        state,
                        reply,
                        u,
                        matches!(state.task, Task::Message { urgent: true }),
                    );
                }
                if u.yes
                    || nlu::has_phrase(&u.norm, "through")
                    || nlu::has_phrase(&u.norm, "transfer")
                {
                    return self.escalate(state, reply, false);
                }
                if u.no && u.intents.is_empty() {
                    state.awaiting = Awaiting::Nothing;
                    state.task = Task::None;
                    reply.say("Okay. Is there anything else I can help with?");
                    return;
                }
            }
            Awaiting::MessageReason if u.intents.is_empty() || u.has(Intent::Message) => {
                state.message.reason = Some(u.raw.trim().to_string());
                return self.advance_message(state, reply).await;
            }
            Awaiting::MessageName => {
                if let Some(n) = u.name.clone().or_else(|| nlu::bare_name(&u.raw)) {
                    state.message.name = Some(n);
                    return self.advance_message(state, reply).await;
                }
            }
            Awaiting::MessagePhone => {
                if let Some(p) = u.phone.clone() {
                    state.message.phone = Some(p);
                    return self.advance_message(state, reply).await;
                }
                if u.yes {
                    state.message.phone = self.context.caller.clone();
                    return self.advance_message(state, reply).await;
                }
            }
            Awaiting::Name => {
                if let Some(n) = u.name.clone().or_else(|| {
                    (u.intents.is_empty() && !u.has_booking_slots())
                        .then(|| nlu::bare_name(&u.raw))
                        .flatten()
                }) {
                    state.form.name = Some(n);
                    return self.advance(state, reply).await;
                }
            }
            Awaiting::Phone => {
                if let Some(p) = u.phone.clone() {
                    state.form.phone = Some(p);
                    state.form.phone_confirmed = true;
                    return self.advance(state, reply).await;
                }
                if u.yes && self.context.caller.is_some() {
                    state.form.phone = self.context.caller.clone();
                    state.form.phone_confirmed = true;
                    return self.advance(state, reply).await;
                }
                if u.no {
                    reply.say("What's the best number to reach you on?");
                    return;
                }
            }
            Awaiting::SlotChoice => {
                if let Some(slot) = pick(&state.form.offered, u) {
                    state.form.chosen = Some(slot);
                    return self.advance(state, reply).await;
                }
                if u.no && !u.has_booking_slots() {
                    reply.say("Is there another day or time that would suit you better?");
                    state.awaiting = Awaiting::When;
                    state.form.offered.clear();
                    return;
                }
            }
            _ => {}
        }

        // A booking in progress takes corrections and slots from any turn.
        if matches!(state.task, Task::Book | Task::Reschedule)
            && u.has_booking_slots()
            && !u.has(Intent::Cancel)
        {
            self.apply_corrections(state, u);
            if u.has(Intent::Price) {
                self.answer_price(u, reply);
            }
            return self.advance(state, reply).await;
        }
        if matches!(state.task, Task::Book | Task::Reschedule)
            && state.awaiting == Awaiting::Name
            && u.for_whom.is_some()
        {
            state.form.for_whom = u.for_whom.clone();
            state.form.name = u.name.clone();
            return self.advance(state, reply).await;
        }

        // Questions are answered whatever else is going on, then the form resumes.
        let mut answered = false;
        if u.has(Intent::Hours) {
            self.answer_hours(u, reply);
            answered = true;
        }
        if u.has(Intent::Location) {
            self.answer_location(u, reply).await;
            answered = true;
        }
        if u.has(Intent::Price) {
            self.answer_price(u, reply);
            answered = true;
        }
        if u.has(Intent::Services) && !u.has(Intent::Book) {
            self.answer_services(u, reply).await;
            answered = true;
        }
        if u.has(Intent::Cancel) {
            state.task = Task::Cancel;
            return self.find_target(state, u, reply);
        }
        if u.has(Intent::Reschedule) {
            state.task = Task::Reschedule;
            self.find_target(state, u, reply);
            if state.target.is_some() {
                // "move my Thursday appointment to Friday morning": the new time is after "to".
                let new_when = target_when(u, self.now);
                state.form.when = new_when;
                return self.advance(state, reply).await;
            }
            return;
        }
        if u.has(Intent::Message) && !u.has_booking_slots() {
            return self.start_message(state, reply, u, u.urgent);
        }
        if u.has(Intent::Book) {
            if !matches!(state.task, Task::Book | Task::Reschedule) {
                state.task = Task::Book;
                state.form = Form::default();
            }
            state.form.for_whom = u.for_whom.clone().or(state.form.for_whom.take());
            if u.for_whom.is_some() {
                state.form.name = u.name.clone();
            }
            self.apply_corrections(state, u);
            return self.advance(state, reply).await;
        }
        if u.has(Intent::Message) {
            return self.start_message(state, reply, u, u.urgent);
        }
        if answered {
            state.misunderstood = 0;
            self.resume_prompt(state, reply);
            return;
        }
        if u.has(Intent::CheckLine) {
            reply.say("Yes, I can hear you. How can I help?");
            return;
        }
        if u.has(Intent::WrongNumber) {
            reply.say(format!(
                "No problem. This is {}. Goodbye!",
                self.clinic.name()
            ));
            reply.action = Some(Action::Hangup);
            return;
        }
        if u.has(Intent::Goodbye)
            || (u.no
                && state.task == Task::None
                && state.awaiting == Awaiting::Nothing
                && !state.last_reply.is_empty()
                && state.last_reply.ends_with("help with?"))
        {
            reply.say("Thank you for calling. Goodbye!");
            reply.action = Some(Action::Hangup);
            return;
        }
        if u.yes && state.task == Task::None && state.last_reply.ends_with("help with?") {
            reply.say("Of course, what can I do for you?");
            return;
        }
        // Anything else may be a question the knowledge answers.
        if self.answer_from_knowledge(u, reply).await {
            state.misunderstood = 0;
            self.resume_prompt(state, reply);
            return;
        }
        if u.intents.contains(&Intent::Question) {
            reply.say("I'm sorry, I don't have that information.");
            reply.say("I can take a message for the team to call you back, or put you through. Which would you prefer?");
            state.awaiting = Awaiting::PersonOrMessage;
            return;
        }
        // Not understood.
        state.misunderstood += 1;
        if state.misunderstood > MAX_REASKS {
            reply
                .notes
                .push(("not_understood", json!({ "said": u.raw })));
            reply.say("I'm sorry, I'm having trouble understanding.");
            reply.say("Would you like me to put you through to the team, or take a message?");
            state.awaiting = Awaiting::PersonOrMessage;
            state.misunderstood = 0;
            return;
        }
        match state.awaiting {
            Awaiting::Name => reply.say("Sorry, I didn't catch that. Could you tell me your full name?"),
            Awaiting::When => reply.say("Sorry, which day and time would suit you? For example, Tuesday morning."),
            Awaiting::Phone => reply.say("Sorry, what's the best phone number to reach you on?"),
            _ => reply.say("Sorry, I didn't quite catch that. I can book, move or cancel an appointment, or answer questions about the clinic. What can I do for you?"),
        }
    }

    /// Puts the caller through (open, with a number) or offers a message.
    fn escalate(&self, state: &mut State, reply: &mut Reply, urgent: bool) {
        let open = self.open_now();
        match (&self.clinic.file.clinic.transfer_number, open) {
            (Some(number), true) => {
                reply.say("I'll put you through to a member of the team now.");
                reply.notes.push(("transfer", json!({ "to": number })));
                reply.action = Some(Action::Transfer { to: number.clone() });
                state.awaiting = Awaiting::Nothing;
            }
            _ => {
                reply.say(if open {
                    "There's no one I can put you through to right now, but I can take a message and the team will call you back."
                } else {
                    "The surgery is closed at the moment, but I can take a message and the team will call you back as soon as they're in."
                });
                state.task = Task::Message { urgent };
                state.message = MessageForm::default();
                if urgent {
                    state.message.reason = Some("Medical question (urgent)".into());
                }
                self.ask_message_next(state, reply);
            }
        }
    }

    fn open_now(&self) -> bool {
        self.clinic
            .hours_on(self.now.date())
            .is_some_and(|h| self.now.time() >= h.open && self.now.time() < h.close)
    }

    fn start_message(&self, state: &mut State, reply: &mut Reply, u: &Understanding, urgent: bool) {
        state.task = Task::Message { urgent };
        state.message = MessageForm::default();
        // "Just tell them Sarah rang about the bill": the reason (and maybe the name) are here.
        let substantive = u.norm.split_whitespace().count() > 6
            || nlu::has_phrase(&u.norm, "about")
            || nlu::has_phrase(&u.norm, "rang");
        if substantive {
            state.message.reason = Some(u.raw.trim().to_string());
        }
        if let Some(n) = &u.name {
            state.message.name = Some(n.clone());
        } else if let Some(n) = state.caller.as_ref().and_then(|c| c.name.clone()) {
            state.message.name = Some(n);
        }
        reply.say("Of course, I can take a message.");
        self.ask_message_next(state, reply);
    }

    fn ask_message_next(&self, state: &mut State, reply: &mut Reply) {
        if state.message.reason.is_none() {
            reply.say("What would you like me to pass on?");
            state.awaiting = Awaiting::MessageReason;
        } else if state.message.name.is_none() {
            reply.say("Can I take your name, please?");
            state.awaiting = Awaiting::MessageName;
        } else if state.message.phone.is_none() {
            if self.context.caller.is_some() {
                reply
                    .say("And is the number you're calling from the best one to call you back on?");
            } else {
                reply.say("And what's the best number to call you back on?");
            }
            state.awaiting = Awaiting::MessagePhone;
        }
    }

    async fn advance_message(&self, state: &mut State, reply: &mut Reply) {
        if state.message.reason.is_none()
            || state.message.name.is_none()
            || state.message.phone.is_none()
        {
            return self.ask_message_next(state, reply);
        }
        let urgent = matches!(state.task, Task::Message { urgent: true });
        let m = MessageRequest {
            idempotency_key: format!(
                "{}:message:{}",
                self.context.call_id,
                state.message.reason.as_deref().unwrap_or_default()
            ),
            name: state.message.name.clone().unwrap_or_default(),
            phone: state.message.phone.clone().unwrap_or_default(),
            reason: state.message.reason.clone().unwrap_or_default(),
            urgent,
        };
        let args =
            json!({ "name": m.name, "phone": m.phone, "reason": m.reason, "urgent": urgent });
        match self.tools.take_message(m).await {
            Ok(()) => {
                reply.tools.push(ToolCall {
                    name: "take_message",
                    arguments: args,
                    result: json!({ "ok": true }),
                });
                reply.say(if urgent {
                    "Thank you. I've marked that as urgent, and the team will call you back as soon as possible."
                } else {
                    "Thank you, I've passed that on and someone will call you back."
                });
                reply.say("Is there anything else I can help with?");
                state.task = Task::None;
                state.awaiting = Awaiting::Nothing;
            }
            Err(e) => {
                reply.tools.push(ToolCall {
                    name: "take_message",
                    arguments: args,
                    result: json!({ "error": e.0 }),
                });
                reply.say("I'm sorry, I couldn't save your message just now.");
                self.escalate_after_failure(state, reply);
            }
        }
    }

    fn escalate_after_failure(&self, state: &mut State, reply: &mut Reply) {
        match (&self.clinic.file.clinic.transfer_number, self.open_now()) {
            (Some(number), true) => {
                reply.say("Let me put you through to the team.");
                reply.action = Some(Action::Transfer { to: number.clone() });
            }
            _ => reply.say("Please call back during opening hours and the team will help you."),
        }
        state.task = Task::None;
        state.awaiting = Awaiting::Nothing;
    }

    /// Takes day, time, service, name and phone from `u` into the form. Returns whether anything
    /// changed.
    fn apply_corrections(&self, state: &mut State, u: &Understanding) -> bool {
        let f = &mut state.form;
        let mut changed = false;
        if let Some(s) = u.service
            && f.service != Some(s)
        {
            f.service = Some(s);
            changed = true;
        }
        if let Some(d) = &u.when.day {
            f.when.day = Some(*d);
            // A new day keeps the asked time ("no, Wednesday" at the same time).
            changed = true;
        }
        if let Some(t) = &u.when.time {
            f.when.time = Some(*t);
            changed = true;
        }
        if u.when.day.is_some() || u.when.time.is_some() {
            f.chosen = None;
            f.offered.clear();
        }
        if let Some(n) = &u.name
            && state.awaiting != Awaiting::Nothing
        {
            f.name = Some(n.clone());
            changed = true;
        }
        if let Some(p) = &u.phone {
            f.phone = Some(p.clone());
            f.phone_confirmed = true;
            changed = true;
        }
        if let Some(w) = &u.for_whom {
            f.for_whom = Some(w.clone());
            changed = true;
        }
        changed
    }

    fn service_minutes(&self, state: &State) -> u32 {
        match (&state.task, &state.target) {
            (Task::Reschedule, Some(t)) => ((t.ends_at - t.starts_at).num_minutes().max(5)) as u32,
            _ => state
                .form
                .service
                .and_then(|i| self.clinic.services.get(i))
                .map_or(30, |s| s.minutes),
        }
    }

    fn service_name(&self, state: &State) -> String {
        match (&state.task, &state.target) {
            (Task::Reschedule, Some(t)) => t.service.clone(),
            _ => state
                .form
                .service
                .and_then(|i| self.clinic.services.get(i))
                .map_or_else(|| "appointment".into(), |s| s.name.clone()),
        }
    }

    /// Asks for the next missing piece of the booking, offers slots, or reads back.
    async fn advance(&self, state: &mut State, reply: &mut Reply) {
        state.misunderstood = 0;
        let booking = state.task == Task::Book;
        if booking && state.form.service.is_none() && !self.clinic.services.is_empty() {
            let names: Vec<String> = self
                .clinic
                .services
                .iter()
                .take(3)
                .map(|s| article(&s.name.to_lowercase()))
                .collect();
            reply.say(format!(
                "Of course. What would you like to book: {}?",
                speak::list_or(&names)
            ));
            state.awaiting = Awaiting::Service;
            return;
        }
        if self.clinic.services.is_empty() && booking {
            reply.say("I'm sorry, I can't book appointments on this line yet.");
            reply.say("I can take a message and the team will call you back. Would that help?");
            state.task = Task::Message { urgent: false };
            state.awaiting = Awaiting::PersonOrMessage;
            return;
        }
        if state.form.chosen.is_none() {
            if state.form.when.day.is_none() && state.form.when.time.is_none() {
                let what = self.service_name(state).to_lowercase();
                reply.say(if state.task == Task::Reschedule {
                    "When would you like to move it to?".to_string()
                } else {
                    format!("Sure, {}. What day would suit you?", article(&what))
                });
                state.awaiting = Awaiting::When;
                return;
            }
            return self.offer(state, reply).await;
        }
        if booking && state.form.name.is_none() {
            if state.form.for_whom.is_none()
                && let Some(name) = state.caller.as_ref().and_then(|c| c.name.clone())
            {
                state.form.name = Some(name);
            } else {
                reply.say(match &state.form.for_whom {
                    Some(w) => format!("And what's your {w}'s full name?"),
                    None => "Can I take your full name, please?".to_string(),
                });
                state.awaiting = Awaiting::Name;
                return;
            }
        }
        if booking && state.form.phone.is_none() {
            match &self.context.caller {
                Some(number) => state.form.phone = Some(number.clone()),
                None => {
                    reply.say("And what's the best phone number to reach you on?");
                    state.awaiting = Awaiting::Phone;
                    return;
                }
            }
        }
        self.read_back(state, reply);
    }

    fn read_back(&self, state: &mut State, reply: &mut Reply) {
        let Some(slot) = state.form.chosen else {
            return;
        };
        let at = speak::time(slot.start.time(), true);
        let when = format!(
            "{} at {at}",
            speak::date(slot.start.date(), self.now.date())
        );
        // "move it to Friday the 11th…", not "to on Friday".
        let to_when = format!("{} at {at}", speak::day(slot.start.date(), self.now.date()));
        if state.task == Task::Reschedule {
            let target = state
                .target
                .as_ref()
                .map(|t| t.service.to_lowercase())
                .unwrap_or_default();
            reply.say(format!(
                "So I'll move your {target} to {to_when}. Is that right?"
            ));
        } else {
            let who = state.form.name.clone().unwrap_or_default();
            let phone_part =
                if !state.form.phone_confirmed && state.form.phone == self.context.caller {
                    ", and we'll use the number you're calling from"
                } else {
                    ""
                };
            reply.say(format!(
                "So that's {} {when}, for {who}{phone_part}. Shall I book that?",
                article(&self.service_name(state).to_lowercase())
            ));
        }
        state.awaiting = Awaiting::Confirm;
    }

    /// Finds free slots for the form and offers two or three, or says why there are none.
    async fn offer(&self, state: &mut State, reply: &mut Reply) {
        let minutes = self.service_minutes(state);
        let today = self.now.date();
        let when = state.form.when;
        let mut dates = slots::dates(self.clinic, when.day.as_ref(), today);
        let asked_closed = match &when.day {
            Some(DaySpec::Date(d)) => self.clinic.hours_on(*d).is_none(),
            _ => false,
        };
        if asked_closed || dates.is_empty() {
            // Nothing that day (closed, or in the past): look at the next two weeks instead.
            if let Some(DaySpec::Date(d)) = &when.day
                && self.clinic.hours_on(*d).is_none()
            {
                reply.say(format!(
                    "I'm sorry, we're closed {}.",
                    speak::date(*d, today)
                ));
            }
            let from = match &when.day {
                Some(DaySpec::Date(d)) => (*d).max(today),
                _ => today,
            };
            dates = slots::fortnight_from(self.clinic, from, today);
        }
        let Some((from, to)) = slots::busy_range(self.clinic, &dates) else {
            reply.say("I'm sorry, I can only book up to a couple of months ahead. Is there an earlier day that suits you?");
            state.awaiting = Awaiting::When;
            return;
        };
        let busy = match self.tools.busy(from, to).await {
            Ok(b) => b,
            Err(e) => {
                reply.notes.push((
                    "tool_error",
                    json!({ "tool": "availability", "error": e.0 }),
                ));
                reply.say("I'm sorry, I can't see the diary just now.");
                state.task = Task::Message { urgent: false };
                state.message = MessageForm {
                    reason: Some(format!("Wants to book a {}", self.service_name(state))),
                    ..MessageForm::default()
                };
                self.ask_message_next(state, reply);
                return;
            }
        };
        let mut free = slots::free_slots(self.clinic, &dates, minutes, &busy, self.now);
        if let Some(t) = &state.target {
            // Moving an appointment: its own slot is not free to itself in the offer (it is
            // where it already is).
            let own = slots::local(self.clinic, t.starts_at);
            free.retain(|s| s.start != own);
        }
        let mut offer = slots::choose(&free, &when);
        let mut widened = false;
        if offer.is_empty() {
            // Nothing in the asked window that day: the nearest on other days.
            let wider = slots::fortnight_from(self.clinic, dates[0], today);
            if let Some((a, b)) = slots::busy_range(self.clinic, &wider) {
                let busy = self.tools.busy(a, b).await.unwrap_or(busy);
                let free = slots::free_slots(self.clinic, &wider, minutes, &busy, self.now);
                offer = slots::choose(
                    &free,
                    &WhenQuery {
                        day: None,
                        time: when.time,
                    },
                );
                if offer.is_empty() {
                    offer = free.iter().take(2).copied().collect();
                }
                widened = true;
            }
        }
        if offer.is_empty() {
            reply.say("I'm sorry, I can't find anything free then.");
            reply.say("Would another day suit you, or shall I take a message for the team?");
            state.awaiting = Awaiting::When;
            return;
        }
        let exact = match (&when.time, offer.as_slice()) {
            (Some(TimeSpec::At(t)), [only]) => only.start.time() == *t,
            _ => false,
        };
        state.form.offered = offer.clone();
        if exact {
            state.form.chosen = Some(offer[0]);
            reply.say(format!(
                "Yes, {} at {} is free.",
                speak::day(offer[0].start.date(), today),
                speak::time(offer[0].start.time(), true)
            ));
            return Box::pin(self.advance(state, reply)).await;
        }
        let asked_time_taken = matches!(when.time, Some(TimeSpec::At(_))) && !widened;
        let phrases = self.slot_phrases(&offer);
        let verb = if offer.len() == 1 { "is" } else { "are" };
        let lead = if asked_time_taken {
            format!("That time's taken, but the nearest I have {verb}")
        } else if widened {
            format!("I don't have anything then, but the nearest I have {verb}")
        } else {
            "I have".to_string()
        };
        let question = if offer.len() == 1 {
            "Would that work?"
        } else {
            "Would either of those work?"
        };
        reply.say(format!("{lead} {}. {question}", speak::list_or(&phrases)));
        state.awaiting = Awaiting::SlotChoice;
    }

    /// "Tuesday the 8th at ten o'clock" / "at half past two" (the day said once when shared).
    fn slot_phrases(&self, offer: &[Slot]) -> Vec<String> {
        let today = self.now.date();
        let same_day = offer
            .iter()
            .all(|s| s.start.date() == offer[0].start.date());
        offer
            .iter()
            .enumerate()
            .map(|(i, s)| {
                // "half past one or three o'clock in the afternoon": the period once, when the
                // next time shares it.
                let period = |t: NaiveTime| t.hour() / 12 + u32::from(t.hour() >= 17);
                let shares_next = offer
                    .get(i + 1)
                    .is_some_and(|n| same_day && period(n.start.time()) == period(s.start.time()));
                let t = speak::time(s.start.time(), !shares_next);
                if same_day && i > 0 {
                    t
                } else {
                    format!("{} at {t}", speak::day(s.start.date(), today))
                }
            })
            .collect()
    }

    /// Books (or moves) after the caller's yes.
    async fn commit(&self, state: &mut State, reply: &mut Reply) {
        let Some(slot) = state.form.chosen else {
            return self.advance(state, reply).await;
        };
        let Some((starts_at, ends_at)) = slot.utc(self.clinic) else {
            reply.say(
                "I'm sorry, that time doesn't exist on the clock that day. Could we pick another?",
            );
            state.awaiting = Awaiting::When;
            return;
        };
        let outcome = if state.task == Task::Reschedule {
            let Some(target) = state.target.clone() else {
                return self.advance(state, reply).await;
            };
            let key = format!(
                "{}:move:{}:{}",
                self.context.call_id,
                target.id,
                starts_at.to_rfc3339()
            );
            let args =
                json!({ "appointment_id": target.id, "starts_at": starts_at, "ends_at": ends_at });
            let r = self
                .tools
                .reschedule(target.id.clone(), starts_at, ends_at, key)
                .await;
            reply.tools.push(ToolCall {
                name: "reschedule",
                arguments: args,
                result: result_json(&r),
            });
            r
        } else {
            let request = BookingRequest {
                idempotency_key: format!(
                    "{}:book:{}:{}",
                    self.context.call_id,
                    starts_at.to_rfc3339(),
                    self.service_name(state)
                ),
                service: self.service_name(state),
                starts_at,
                ends_at,
                name: state.form.name.clone().unwrap_or_default(),
                phone: state.form.phone.clone().unwrap_or_default(),
            };
            let args = serde_json::to_value(&request).unwrap_or_default();
            let r = self.tools.book(request).await;
            reply.tools.push(ToolCall {
                name: "book",
                arguments: args,
                result: result_json(&r),
            });
            r
        };
        match outcome {
            Ok(BookingOutcome::Booked(appt)) => {
                let moved = state.task == Task::Reschedule;
                reply.say(format!(
                    "{} Your {} is {} {}.",
                    if moved { "Done." } else { "You're booked in." },
                    appt.service.to_lowercase(),
                    if moved { "now" } else { "booked" },
                    self.when_words(&appt)
                ));
                reply.say("Is there anything else I can help with?");
                // A move may give the appointment a new id (the store keeps the old row,
                // cancelled, for history).
                let old_id = state.target.as_ref().map(|t| t.id.clone());
                if let Some(c) = state.caller.as_mut() {
                    c.upcoming
                        .retain(|a| a.id != appt.id && Some(&a.id) != old_id.as_ref());
                    c.upcoming.push(appt.clone());
                    if c.name.is_none() && state.form.for_whom.is_none() {
                        c.name = state.form.name.clone();
                    }
                }
                state.booked.push(appt.clone());
                state.last_reply_confirmed = Some(appt);
                state.task = Task::None;
                state.awaiting = Awaiting::Nothing;
                state.target = None;
                let keep_name = state.form.name.clone();
                state.form = Form {
                    name: keep_name,
                    ..Form::default()
                };
            }
            Ok(BookingOutcome::Conflict) => {
                reply.say("I'm sorry, that slot has just been taken.");
                state.form.chosen = None;
                state.form.offered.clear();
                Box::pin(self.offer(state, reply)).await;
            }
            Err(e) => {
                reply
                    .notes
                    .push(("tool_error", json!({ "tool": "book", "error": e.0 })));
                reply.say("I'm sorry, I couldn't complete the booking just now.");
                state.task = Task::Message { urgent: false };
                state.message = MessageForm {
                    reason: Some(format!(
                        "Booking failed: {} {}",
                        self.service_name(state),
                        slot.start
                    )),
                    name: state.form.name.clone(),
                    phone: state.form.phone.clone(),
                };
                reply.say(
                    "I've noted your details; shall I have the team call you back to confirm?",
                );
                state.awaiting = Awaiting::PersonOrMessage;
            }
        }
    }

    /// "on Tuesday the 8th of December at half past two in the afternoon".
    fn when_words(&self, appt: &Appointment) -> String {
        let start = slots::local(self.clinic, appt.starts_at);
        format!(
            "{} at {}",
            speak::date(start.date(), self.now.date()),
            speak::time(start.time(), true)
        )
    }

    /// Finds the appointment to move or cancel from the caller's upcoming ones.
    fn find_target(&self, state: &mut State, u: &Understanding, reply: &mut Reply) {
        let upcoming = state
            .caller
            .as_ref()
            .map(|c| c.upcoming.clone())
            .unwrap_or_default();
        let from_when = source_when(u, self.now);
        let matching: Vec<Appointment> = upcoming
            .iter()
            .filter(|a| {
                let local = slots::local(self.clinic, a.starts_at);
                match &from_when.day {
                    Some(DaySpec::Date(d)) => local.date() == *d,
                    Some(DaySpec::Range { from, to }) => {
                        local.date() >= *from && local.date() <= *to
                    }
                    _ => true,
                }
            })
            .cloned()
            .collect();
        let chosen = match matching.as_slice() {
            [one] => Some(one.clone()),
            [] if upcoming.len() == 1 && from_when.day.is_none() => Some(upcoming[0].clone()),
            [first, ..] if from_when.day.is_some() => Some(first.clone()),
            _ => None,
        };
        match chosen {
            Some(appt) => {
                state.target = Some(appt.clone());
                if state.task == Task::Cancel {
                    self.ask_cancel(state, reply);
                } else {
                    self.start_reschedule_for(state, appt);
                }
            }
            None if upcoming.is_empty() => {
                reply.say("I'm sorry, I can't find an upcoming appointment for the number you're calling from.");
                reply.say("I can take a message for the team, or put you through. Which would you prefer?");
                state.task = Task::Message { urgent: false };
                state.message = MessageForm {
                    reason: Some(format!(
                        "Wants to {} an appointment",
                        if state.task == Task::Cancel {
                            "cancel"
                        } else {
                            "change"
                        }
                    )),
                    ..MessageForm::default()
                };
                state.awaiting = Awaiting::PersonOrMessage;
            }
            None => {
                let list: Vec<String> = upcoming
                    .iter()
                    .take(3)
                    .map(|a| format!("your {} {}", a.service.to_lowercase(), self.when_words(a)))
                    .collect();
                reply.say(format!(
                    "I can see {}. Which one is it?",
                    speak::list_and(&list)
                ));
                state.awaiting = Awaiting::When;
                // The answer names a day; the caller's turn comes back through `find_target`.
                state.task = if state.task == Task::Cancel {
                    Task::Cancel
                } else {
                    Task::Reschedule
                };
            }
        }
    }

    fn start_reschedule_for(&self, state: &mut State, appt: Appointment) {
        state.task = Task::Reschedule;
        state.target = Some(appt);
        state.form = Form::default();
    }

    fn ask_cancel(&self, state: &mut State, reply: &mut Reply) {
        let Some(t) = state.target.clone() else {
            return;
        };
        reply.say(format!(
            "Just to confirm, you'd like to cancel your {} {}?",
            t.service.to_lowercase(),
            self.when_words(&t)
        ));
        state.awaiting = Awaiting::CancelConfirm;
    }

    async fn do_cancel(&self, state: &mut State, reply: &mut Reply) {
        let Some(t) = state.target.take() else { return };
        let r = self.tools.cancel(t.id.clone()).await;
        reply.tools.push(ToolCall {
            name: "cancel",
            arguments: json!({ "appointment_id": t.id }),
            result: match &r {
                Ok(()) => json!({ "ok": true }),
                Err(e) => json!({ "error": e.0 }),
            },
        });
        match r {
            Ok(()) => {
                if let Some(c) = state.caller.as_mut() {
                    c.upcoming.retain(|a| a.id != t.id);
                }
                reply.say(format!(
                    "That's done, your {} is cancelled.",
                    t.service.to_lowercase()
                ));
                reply.say("Would you like to book another time?");
                state.task = Task::None;
                state.awaiting = Awaiting::Nothing;
                state.last_reply_confirmed = None;
            }
            Err(e) => {
                reply
                    .notes
                    .push(("tool_error", json!({ "tool": "cancel", "error": e.0 })));
                reply.say("I'm sorry, I couldn't cancel it just now.");
                self.escalate_after_failure(state, reply);
            }
        }
    }

    fn resume_prompt(&self, state: &mut State, reply: &mut Reply) {
        match state.awaiting {
            Awaiting::Service => reply.say("Now, what would you like to book?"),
            Awaiting::When => reply.say("Which day would suit you?"),
            Awaiting::SlotChoice => reply.say("Would one of those times work for you?"),
            Awaiting::Name => reply.say("Could I take your full name?"),
            Awaiting::Confirm => reply.say("Shall I go ahead with that booking?"),
            _ => reply.say("Is there anything else I can help with?"),
        }
    }

    fn answer_hours(&self, u: &Understanding, reply: &mut Reply) {
        let today = self.now.date();
        match &u.when.day {
            Some(DaySpec::Date(d)) => match self.clinic.hours_on(*d) {
                Some(h) => reply.say(format!(
                    "{} we're open from {} to {}.",
                    capitalise(&speak::date(*d, today)),
                    speak::time(h.open, false),
                    speak::time(h.close, false)
                )),
                None => reply.say(format!("We're closed {}.", speak::date(*d, today))),
            },
            _ => {
                let closed_soon: Vec<String> = self
                    .clinic
                    .closed_dates
                    .iter()
                    .filter(|d| **d >= today && (**d - today).num_days() <= 31)
                    .map(|d| speak::date_plain(*d))
                    .collect();
                if let Some(TimeSpec::Window { from, to }) = &u.when.time
                    && nlu::has_phrase(&u.norm, "lunchtime")
                {
                    let open_through = self.clinic.week[..5]
                        .iter()
                        .flatten()
                        .all(|h| h.open <= *from && h.close >= *to);
                    reply.say(if open_through {
                        "Yes, we're open right through lunchtime on weekdays."
                    } else {
                        "We're open at lunchtime on some days; "
                    });
                    if open_through {
                        return;
                    }
                }
                reply.say(hours_summary(self.clinic));
                if nlu::has_phrase(&u.norm, "christmas") || nlu::has_phrase(&u.norm, "holiday") {
                    if closed_soon.is_empty() {
                        reply.say("We have no holiday closures coming up.");
                    } else {
                        reply.say(format!(
                            "We're closed on {}.",
                            speak::list_and(&closed_soon)
                        ));
                    }
                }
            }
        }
    }

    async fn answer_location(&self, u: &Understanding, reply: &mut Reply) {
        let wants_address = nlu::has_phrase(&u.norm, "address")
            || nlu::has_phrase(&u.norm, "where are you")
            || nlu::has_phrase(&u.norm, "located")
            || nlu::has_phrase(&u.norm, "postcode");
        if wants_address && let Some(a) = &self.clinic.file.clinic.address {
            reply.say(format!("We're at {a}."));
            return;
        }
        if !self.answer_from_knowledge(u, reply).await {
            match &self.clinic.file.clinic.address {
                Some(a) => reply.say(format!("We're at {a}.")),
                None => reply.say("I'm sorry, I don't have directions to hand. I can take a message for the team."),
            }
        }
    }

    fn answer_price(&self, u: &Understanding, reply: &mut Reply) {
        let priced: Vec<&crate::clinic::Service> = self
            .clinic
            .services
            .iter()
            .filter(|s| s.price.is_some())
            .collect();
        match u.service.and_then(|i| self.clinic.services.get(i)) {
            Some(s) => match &s.price {
                Some(p) => reply.say(format!(
                    "{} is {}.",
                    capitalise(&article(&s.name.to_lowercase())),
                    speak::prices(p)
                )),
                None => reply.say(format!(
                    "I don't have a price for {} to hand; the team can tell you.",
                    article(&s.name.to_lowercase())
                )),
            },
            None if priced.is_empty() => {
                reply.say("I don't have prices to hand, but the team can tell you.")
            }
            None => {
                let items: Vec<String> = priced
                    .iter()
                    .take(3)
                    .map(|s| {
                        format!(
                            "{} is {}",
                            article(&s.name.to_lowercase()),
                            speak::prices(s.price.as_deref().unwrap_or_default())
                        )
                    })
                    .collect();
                reply.say(format!("{}.", capitalise(&speak::list_and(&items))));
            }
        }
    }

    async fn answer_services(&self, u: &Understanding, reply: &mut Reply) {
        if let Some(s) = u.service.and_then(|i| self.clinic.services.get(i)) {
            let price = s
                .price
                .as_deref()
                .map(|p| format!(", and it's {}", speak::prices(p)))
                .unwrap_or_default();
            reply.say(format!("Yes, we do {}{price}.", s.name.to_lowercase()));
            return;
        }
        if !self.answer_from_knowledge(u, reply).await {
            reply.say(
                "I'm not sure we offer that. I can take a message and the team will let you know.",
            );
        }
    }

    /// Speaks the best knowledge chunk above [`KNOWLEDGE_MIN_SCORE`] (its first two sentences).
    async fn answer_from_knowledge(&self, u: &Understanding, reply: &mut Reply) -> bool {
        let hits = match self.tools.search_knowledge(u.raw.clone(), 3).await {
            Ok(h) => h,
            Err(e) => {
                reply.notes.push((
                    "tool_error",
                    json!({ "tool": "search_knowledge", "error": e.0 }),
                ));
                return false;
            }
        };
        let best = hits.first();
        reply.tools.push(ToolCall {
            name: "search_knowledge",
            arguments: json!({ "question": u.raw }),
            result: json!({ "best": best.map(|h| &h.title), "score": best.map(|h| h.score) }),
        });
        match best {
            Some(hit) if hit.score >= KNOWLEDGE_MIN_SCORE => {
                for s in crate::clinic::sentences(&hit.text).into_iter().take(2) {
                    reply.say(speak::prices(&s));
                }
                true
            }
            _ => false,
        }
    }
}

fn result_json(r: &Result<BookingOutcome, crate::tools::ToolError>) -> serde_json::Value {
    match r {
        Ok(o) => serde_json::to_value(o).unwrap_or_default(),
        Err(e) => json!({ "error": e.0 }),
    }
}

/// Which offered slot the caller picked: "the first one", "half past two", "Wednesday", "yes"
/// (when one was offered).
fn pick(offered: &[Slot], u: &Understanding) -> Option<Slot> {
    if offered.is_empty() {
        return None;
    }
    if let Some(i) = u.choice {
        return offered.get(i.min(offered.len() - 1)).copied();
    }
    if u.when.time.is_none() {
        // "three is fine", "the 10": a bare hour names an offered time.
        let hours: Vec<u32> = u
            .norm
            .split_whitespace()
            .filter_map(|w| w.parse::<u32>().ok())
            .filter(|n| (1..=12).contains(n))
            .collect();
        if let [h] = hours.as_slice() {
            let matching: Vec<&Slot> = offered
                .iter()
                .filter(|s| s.start.hour() % 12 == h % 12)
                .collect();
            if let [one] = matching.as_slice() {
                return Some(**one);
            }
        }
    }
    if let Some(TimeSpec::At(t)) = &u.when.time {
        let day_ok = |s: &Slot| match &u.when.day {
            Some(DaySpec::Date(d)) => s.start.date() == *d,
            _ => true,
        };
        if let Some(s) = offered.iter().find(|s| s.start.time() == *t && day_ok(s)) {
            return Some(*s);
        }
        return None;
    }
    if let Some(DaySpec::Date(d)) = &u.when.day
        && u.when.time.is_none()
    {
        let on_day: Vec<&Slot> = offered.iter().filter(|s| s.start.date() == *d).collect();
        if on_day.len() == 1 {
            return Some(*on_day[0]);
        }
        return None;
    }
    if let Some(TimeSpec::Window { from, to }) = &u.when.time {
        let inside: Vec<&Slot> = offered
            .iter()
            .filter(|s| s.start.time() >= *from && s.start.time() < *to)
            .collect();
        if inside.len() == 1 {
            return Some(*inside[0]);
        }
        return None;
    }
    if u.yes && !u.no && (offered.len() == 1 || nlu::has_phrase(&u.norm, "either")) {
        return Some(offered[0]);
    }
    None
}

/// The "from" part of a reschedule or cancel: the text before " to " / " for " / "instead".
fn source_when(u: &Understanding, now: NaiveDateTime) -> WhenQuery {
    let lower = u.raw.to_lowercase();
    let cut = [" to ", " for ", " instead", " make it "]
        .iter()
        .filter_map(|m| lower.find(m))
        .filter(|&i| i > 0)
        .min();
    match cut {
        Some(i) => crate::when::parse_when(&u.raw[..i], now),
        None => u.when,
    }
}

/// The "to" part: the text after the last " to " / "make it" (when the caller names both days).
fn target_when(u: &Understanding, now: NaiveDateTime) -> WhenQuery {
    let lower = u.raw.to_lowercase();
    let cut = [" to ", " make it ", " for "]
        .iter()
        .filter_map(|m| lower.rfind(m).map(|i| i + m.len()))
        .max();
    if let Some(i) = cut {
        let after = crate::when::parse_when(&u.raw[i..], now);
        if after.day.is_some() || after.time.is_some() {
            return after;
        }
    }
    // One day named: it is the appointment's day, not the new one ("I can't make Thursday").
    WhenQuery {
        day: None,
        time: None,
    }
}

/// "a check-up" / "an exam".
fn article(name: &str) -> String {
    let first = name.chars().next().unwrap_or('x').to_ascii_lowercase();
    if "aeiou".contains(first) {
        format!("an {name}")
    } else {
        format!("a {name}")
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// "112" → "1 1 2" so TTS says digits, not a number.
fn spaced_digits(n: &str) -> String {
    n.chars().map(String::from).collect::<Vec<_>>().join(" ")
}

/// "We're open Monday to Wednesday from half past eight to half past five, Thursday …, and
/// closed on Sunday."
pub fn hours_summary(clinic: &Clinic) -> String {
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    /// Consecutive weekdays with the same hours: (first, last, hours).
    type Group = (usize, usize, Option<(NaiveTime, NaiveTime)>);
    let mut groups: Vec<Group> = Vec::new();
    for (i, h) in clinic.week.iter().enumerate() {
        let h = h.map(|h| (h.open, h.close));
        match groups.last_mut() {
            Some((_, end, g)) if *g == h && *end + 1 == i => *end = i,
            _ => groups.push((i, i, h)),
        }
    }
    let mut open = Vec::new();
    let mut closed = Vec::new();
    for (a, b, h) in groups {
        let days = match b - a {
            0 => DAYS[a].to_string(),
            1 => format!("{} and {}", DAYS[a], DAYS[b]),
            _ => format!("{} to {}", DAYS[a], DAYS[b]),
        };
        match h {
            Some((o, c)) => open.push(format!(
                "{days} from {} to {}",
                speak::time(o, false),
                speak::time(c, false)
            )),
            None => closed.push(days),
        }
    }
    if open.is_empty() {
        return "I'm sorry, I don't have our opening hours to hand.".into();
    }
    let mut s = format!("We're open {}", speak::list_and(&open));
    if !closed.is_empty() {
        s.push_str(&format!(", and closed on {}", speak::list_and(&closed)));
    }
    s.push('.');
    s
}
