//! The receptionist as a per-call [`Brain`]: built at call setup with the call's context (clinic,
//! caller, direction) and its own dialogue state.
//!
//! State and barge-in: each reply starts from the state the previous reply left, except when the
//! core re-asks the same turn (a reply abandoned before the caller heard any of it, answered
//! again together with what the caller said next): then it starts from the state *before* the
//! abandoned reply, so nothing is applied twice. Tool calls are idempotent by key (call + what is
//! done), so a booking made by an abandoned reply is found again, never made twice. What the
//! caller heard of the last reply comes in the request's history; a booking confirmation cut off
//! by a barge-in is repeated (the booking stands).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::sync::Mutex;

use agent::engine::{Brain, BrainEvent, BrainRequest, CallerInput, EngineError, Role};

use crate::clinic::Clinic;
use crate::dialogue::{Awaiting, CallContext, Dialogue, Direction, Reply, State};
use crate::tools::ClinicTools;

/// The wall clock, injected: the dialogue itself never reads one.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

#[derive(Debug, Default)]
struct Memory {
    /// The state after the last reply.
    current: State,
    /// The state the last reply started from.
    before_last: State,
    /// History length of the last request (a re-asked turn has the same).
    last_history_len: Option<usize>,
    /// Tool calls made before the first turn (the caller look-up at setup), reported with the
    /// first reply.
    early_tools: Vec<crate::dialogue::ToolCall>,
}

/// One call's receptionist.
pub struct ReceptionistSession {
    clinic: Arc<Clinic>,
    context: CallContext,
    tools: Arc<dyn ClinicTools>,
    clock: Clock,
    memory: Arc<Mutex<Memory>>,
}

impl std::fmt::Debug for ReceptionistSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceptionistSession")
            .field("clinic", &self.clinic.name())
            .field("call", &self.context.call_id)
            .finish()
    }
}

impl ReceptionistSession {
    pub fn new(
        clinic: Arc<Clinic>,
        context: CallContext,
        tools: Arc<dyn ClinicTools>,
        clock: Clock,
    ) -> Self {
        let mut memory = Memory::default();
        if matches!(context.direction, Direction::Reminder(_)) {
            memory.current.awaiting = Awaiting::ReminderAnswer;
        }
        Self {
            clinic,
            context,
            tools,
            clock,
            memory: Arc::new(Mutex::new(memory)),
        }
    }

    /// Looks the caller up by caller ID before the call is answered, so a returning caller is
    /// greeted by name. Callers bound it with a timeout (the greeting must not wait on a slow
    /// database); if it is cut short, the look-up happens on the first turn instead.
    pub async fn prepare(&self) {
        let Some(phone) = self.context.caller.clone() else {
            return;
        };
        let Ok(record) = self.tools.lookup_caller(phone.clone()).await else {
            return;
        };
        let mut memory = self.memory.lock().await;
        memory.early_tools.push(crate::dialogue::ToolCall {
            name: "lookup_caller",
            arguments: serde_json::json!({ "phone": phone }),
            result: serde_json::json!({ "name": record.name, "upcoming": record.upcoming.len() }),
        });
        memory.current.caller = Some(record);
    }

    /// The first thing the agent says: the clinic's greeting (with a returning caller's first
    /// name), or a reminder call's opening.
    pub fn opening(&self) -> String {
        match &self.context.direction {
            Direction::Reminder(appt) => self.dialogue().reminder_opening(appt),
            Direction::Inbound => {
                let name = self.memory.try_lock().ok().and_then(|m| {
                    m.current
                        .caller
                        .as_ref()
                        .and_then(|c| c.name.clone())
                        .and_then(|n| n.split_whitespace().next().map(str::to_string))
                });
                match name {
                    Some(first) => format!("Hello {first}! {}", self.clinic.greeting()),
                    None => self.clinic.greeting(),
                }
            }
        }
    }

    fn dialogue(&self) -> Dialogue<'_> {
        Dialogue {
            clinic: &self.clinic,
            context: &self.context,
            tools: self.tools.as_ref(),
            now: crate::slots::local(&self.clinic, (self.clock)()),
        }
    }

    /// Answers one turn as text (what `voxanne chat` and the tests use; the phone path goes
    /// through [`Brain::respond`], which calls this).
    pub async fn reply(&self, history_len: usize, heard_last: Option<&str>, input: &str) -> Reply {
        let mut memory = self.memory.lock().await;
        let mut state = if memory.last_history_len == Some(history_len) {
            memory.before_last.clone()
        } else {
            memory.current.clone()
        };
        memory.before_last = state.clone();
        memory.last_history_len = Some(history_len);
        let mut reply = self.dialogue().respond(&mut state, heard_last, input).await;
        memory.current = state;
        let mut early = std::mem::take(&mut memory.early_tools);
        if !early.is_empty() {
            early.append(&mut reply.tools);
            reply.tools = early;
        }
        reply
    }

    pub fn context(&self) -> &CallContext {
        &self.context
    }

    pub fn clinic(&self) -> &Arc<Clinic> {
        &self.clinic
    }

    /// The call's tools (another brain wrapping this session, such as the LLM's, uses the same
    /// ones, with the same idempotency keys).
    pub fn tools(&self) -> Arc<dyn ClinicTools> {
        self.tools.clone()
    }

    pub fn clock(&self) -> Clock {
        self.clock.clone()
    }

    /// Whether the receptionist's last reply asked the caller something it is waiting to hear
    /// (a message's reason, "put you through or take a message?", a reminder's answer): a
    /// brain wrapping this session lets it finish what it started.
    pub async fn awaiting_answer(&self) -> bool {
        self.memory.lock().await.current.awaiting != Awaiting::Nothing
    }
}

/// A reply as the brain's event stream: tool calls and notes first (they already happened),
/// then the sentences, then the action.
pub fn reply_events(reply: Reply) -> Vec<Result<BrainEvent, EngineError>> {
    let mut events = Vec::new();
    for t in reply.tools {
        events.push(Ok(BrainEvent::Note {
            kind: "tool_call",
            detail:
                serde_json::json!({ "name": t.name, "arguments": t.arguments, "result": t.result })
                    .to_string(),
        }));
    }
    for (kind, detail) in reply.notes {
        events.push(Ok(BrainEvent::Note {
            kind,
            detail: detail.to_string(),
        }));
    }
    for s in reply.say {
        events.push(Ok(BrainEvent::Text(s)));
    }
    if let Some(a) = reply.action {
        events.push(Ok(BrainEvent::Action(a)));
    }
    events
}

impl Brain for ReceptionistSession {
    fn name(&self) -> &str {
        "receptionist"
    }

    fn respond(
        &self,
        request: BrainRequest,
    ) -> BoxStream<'static, Result<BrainEvent, EngineError>> {
        let session = Self {
            clinic: self.clinic.clone(),
            context: self.context.clone(),
            tools: self.tools.clone(),
            clock: self.clock.clone(),
            memory: self.memory.clone(),
        };
        let input = match request.input {
            CallerInput::Speech(text) => text,
            CallerInput::Dtmf(d) => d.to_string(),
            CallerInput::Unheard => crate::dialogue::UNHEARD_INPUT.to_string(),
        };
        let heard_last = request
            .history
            .iter()
            .rev()
            .find(|m| m.role == Role::Agent)
            .map(|m| m.text.clone());
        let history_len = request.history.len();
        stream::once(async move {
            let reply = session
                .reply(history_len, heard_last.as_deref(), &input)
                .await;
            stream::iter(reply_events(reply))
        })
        .flatten()
        .boxed()
    }
}
