//! `voxanne chat`: the same receptionist, tools and database as a phone call, over text. What
//! staff use to try their receptionist, and what tests use to cover many phrasings quickly.

use std::io::{BufRead, Write};
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde_json::json;

use agent::engine::Action;
use engines::minilm::MiniLm;
use receptionist::dialogue::{CallContext, Direction, Reply};
use receptionist::session::{Clock, ReceptionistSession};
use storage::Store;

use crate::receptionist::LoadedClinic;

/// One text conversation.
#[derive(Debug)]
pub struct Chat {
    session: ReceptionistSession,
    /// The LLM brain over `session`'s twin, when the clinic's calls use it ([`Chat::with_llm`]).
    llm: Option<llm::LlmBrain>,
    /// The conversation as the brain's history (the LLM path; every reply heard whole).
    history: Vec<agent::engine::Message>,
    history_len: usize,
    last_reply: Option<String>,
    pub ended: bool,
}

impl Chat {
    pub fn new(
        store: &Store,
        loaded: &LoadedClinic,
        embedder: Option<MiniLm>,
        from: Option<String>,
        direction: Direction,
        clock: Clock,
    ) -> Self {
        Self::with_events(store, loaded, embedder, from, direction, clock, None)
    }

    /// [`Chat::new`] whose bookings, changes and messages are published on `events` (the
    /// dashboard's chat: staff see what it booked in the live stream and webhooks fire).
    pub fn with_events(
        store: &Store,
        loaded: &LoadedClinic,
        embedder: Option<MiniLm>,
        from: Option<String>,
        direction: Direction,
        clock: Clock,
        events: Option<crate::staff::events::EventBus>,
    ) -> Self {
        let context = CallContext {
            call_id: format!("chat-{}", uuid::Uuid::new_v4()),
            caller: from,
            direction,
        };
        Self {
            session: crate::receptionist::session_with_events(
                store, loaded, embedder, context, None, clock, events,
            ),
            llm: None,
            history: Vec::new(),
            history_len: 1,
            last_reply: None,
            ended: false,
        }
    }

    /// The same chat answered by the LLM on `provider`, with the offline receptionist behind it
    /// (as a call with that clinic's `[llm]` settings). The brain says `filler` itself when the
    /// first token is late, as there is no call core here to say one.
    pub fn with_llm(mut self, provider: llm::Provider, filler: Option<llm::Filler>) -> Self {
        let Self { session, .. } = &self;
        let twin = ReceptionistSession::new(
            session.clinic().clone(),
            session.context().clone(),
            session.tools(),
            session.clock(),
        );
        self.llm = Some(llm::LlmBrain::with_filler(twin, provider, filler));
        self
    }

    /// The receptionist answering (the LLM brain's offline one on the LLM path).
    fn offline(&self) -> &ReceptionistSession {
        match &self.llm {
            Some(b) => b.offline(),
            None => &self.session,
        }
    }

    /// Recognises a returning caller by their number (before [`Chat::opening`]).
    pub async fn prepare(&self) {
        self.offline().prepare().await;
    }

    /// The agent's first line.
    pub fn opening(&self) -> String {
        self.offline().opening()
    }

    /// The caller says `text`; the whole reply was heard.
    pub async fn say(&mut self, text: &str) -> Reply {
        if self.llm.is_some() {
            return self.say_llm(text).await;
        }
        let reply = self
            .session
            .reply(self.history_len, self.last_reply.as_deref(), text)
            .await;
        self.history_len += 2;
        self.last_reply = Some(reply.say.join(" "));
        if reply.action.is_some() {
            self.ended = true;
        }
        reply
    }

    /// [`Chat::say`] through the LLM brain: its events gathered into a [`Reply`].
    async fn say_llm(&mut self, text: &str) -> Reply {
        use agent::engine::{Brain, BrainEvent, BrainRequest, CallerInput, Message, Role};
        use futures_util::StreamExt;
        let Some(brain) = &self.llm else {
            return Reply::default();
        };
        if self.history.is_empty() {
            self.history.push(Message {
                role: Role::Agent,
                text: self.offline().opening(),
            });
        }
        let request = BrainRequest {
            history: self.history.clone(),
            input: CallerInput::Speech(text.to_string()),
        };
        let mut reply = Reply::default();
        let mut events = brain.respond(request);
        while let Some(event) = events.next().await {
            match event {
                Ok(BrainEvent::Text(t)) => reply.say.push(t),
                Ok(BrainEvent::Action(a)) => reply.action = Some(a),
                Ok(BrainEvent::Note { kind, detail }) => {
                    let detail: serde_json::Value =
                        serde_json::from_str(&detail).unwrap_or(json!(detail));
                    if kind == "tool_call" {
                        let name = detail["name"]
                            .as_str()
                            .and_then(llm::tools::static_name)
                            .unwrap_or("unknown");
                        reply.tools.push(receptionist::dialogue::ToolCall {
                            name,
                            arguments: detail["arguments"].clone(),
                            result: detail["result"].clone(),
                        });
                    } else {
                        reply.notes.push((kind, detail));
                    }
                }
                Err(e) => {
                    reply
                        .notes
                        .push(("error", json!({ "error": e.to_string() })));
                    break;
                }
            }
        }
        self.history.push(Message {
            role: Role::Caller,
            text: text.to_string(),
        });
        if !reply.say.is_empty() {
            self.history.push(Message {
                role: Role::Agent,
                text: reply.say.join(" "),
            });
        }
        if reply.action.is_some() {
            self.ended = true;
        }
        reply
    }
}

/// A clock that starts at `now` (clinic-local, in the clinic's zone) and runs in real time.
pub fn clock_from(now: Option<NaiveDateTime>, tz: chrono_tz::Tz) -> anyhow::Result<Clock> {
    let Some(now) = now else {
        return Ok(crate::receptionist::system_clock());
    };
    let start: DateTime<Utc> = tz
        .from_local_datetime(&now)
        .earliest()
        .ok_or_else(|| anyhow::anyhow!("{now} does not exist in {tz}"))?
        .with_timezone(&Utc);
    let t0 = std::time::Instant::now();
    Ok(Arc::new(move || {
        start + chrono::Duration::from_std(t0.elapsed()).unwrap_or_default()
    }))
}

/// Prints one reply: plain lines, or one JSON object a line.
pub fn print_reply(out: &mut impl Write, reply: &Reply, as_json: bool) -> std::io::Result<()> {
    if as_json {
        for t in &reply.tools {
            writeln!(
                out,
                "{}",
                json!({ "type": "tool", "name": t.name, "arguments": t.arguments, "result": t.result })
            )?;
        }
        for (kind, detail) in &reply.notes {
            writeln!(
                out,
                "{}",
                json!({ "type": "event", "kind": kind, "detail": detail })
            )?;
        }
        for s in &reply.say {
            writeln!(out, "{}", json!({ "type": "say", "text": s }))?;
        }
        match &reply.action {
            Some(Action::Transfer { to }) => writeln!(
                out,
                "{}",
                json!({ "type": "action", "action": "transfer", "to": to })
            )?,
            Some(Action::Hangup) => {
                writeln!(out, "{}", json!({ "type": "action", "action": "hangup" }))?
            }
            None => {}
        }
    } else {
        for t in &reply.tools {
            writeln!(out, "  [{}] {} -> {}", t.name, t.arguments, t.result)?;
        }
        writeln!(out, "agent: {}", reply.say.join(" "))?;
        match &reply.action {
            Some(Action::Transfer { to }) => writeln!(out, "  [transfer to {to}]")?,
            Some(Action::Hangup) => writeln!(out, "  [hang up]")?,
            None => {}
        }
    }
    out.flush()
}

/// Runs a conversation over `input`/`output` until EOF or the agent ends it.
pub async fn run(
    mut chat: Chat,
    input: impl BufRead,
    mut output: impl Write,
    as_json: bool,
) -> anyhow::Result<()> {
    chat.prepare().await;
    let opening = chat.opening();
    if as_json {
        writeln!(output, "{}", json!({ "type": "say", "text": opening }))?;
    } else {
        writeln!(output, "agent: {opening}")?;
    }
    for line in input.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let reply = chat.say(&line).await;
        print_reply(&mut output, &reply, as_json)?;
        if chat.ended {
            break;
        }
    }
    Ok(())
}
