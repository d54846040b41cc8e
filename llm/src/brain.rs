//! The LLM brain: one call's [`Brain`] that streams each caller turn through an
//! OpenAI-compatible Chat Completions server, with the offline receptionist behind it.
//!
//! One turn:
//! 1. The offline escalation rules run first ([`policy_turn`]): an emergency, a medical question,
//!    a caller asking for a person, a key press, speech-to-text that keeps failing, or a question
//!    the offline receptionist asked and is waiting on: the offline receptionist answers, and
//!    the model is not asked at all.
//! 2. The circuit breaker is asked; a provider being skipped means the offline answer at once.
//! 3. The messages are built: the system prompt from the clinic file and the knowledge
//!    retrieved for this turn ([`crate::prompt`]), then the conversation as the caller heard it
//!    (the request's history, with this call's earlier tool calls and results put back after
//!    the caller line they answered), then the caller's words.
//! 4. The completion is streamed. Text is cut into sentences ([`SentenceSplitter`]) and each
//!    is sent on as soon as it is complete. Tool-call deltas are gathered by `index` (id, name
//!    and argument fragments may each come in any chunk); at `finish_reason` the calls run
//!    through [`crate::tools`] (validation, idempotency, the clinic's transfer number), their
//!    results are appended and the model is asked again, at most
//!    [`crate::settings::LlmSettings::max_rounds`] times.
//! 5. If the provider errors (HTTP 429/500, connection refused), stalls (no first token within
//!    `first_token_timeout`, or a gap of `stall_timeout` in a started stream), is cut mid-reply
//!    (a stream that ends without a `finish_reason`), or sends garbage (a chunk that is not a
//!    completion chunk), the turn is answered by the offline receptionist and an
//!    `llm_fallback` call event says why. Sentences already sent stay said; the partial
//!    sentence in the buffer is dropped.
//!
//! Every turn ends with an `llm_turn` call event: which brain answered, time to first token,
//! time to first sentence, tokens in and out, tool rounds.
//!
//! The turn runs in its own task feeding a bounded channel; dropping the returned stream (the
//! call core abandons a reply on barge-in) aborts the task, so an abandoned turn stops reading
//! the provider at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls,
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestMessage,
    ChatCompletionRequestSystemMessage, ChatCompletionRequestToolMessage,
    ChatCompletionRequestUserMessage, ChatCompletionStreamOptions, CreateChatCompletionRequest,
    FunctionCall,
};
use futures_util::stream::{BoxStream, Stream, StreamExt};
use serde_json::json;
use tokio::sync::{Mutex, mpsc};
use tracing::{debug, warn};

use agent::engine::{
    Action, Brain, BrainEvent, BrainRequest, CallerInput, EngineError, Message, Role,
};
use receptionist::nlu::{self, Intent};
use receptionist::session::ReceptionistSession;
use receptionist::slots;

use crate::breaker::Permit;
use crate::prompt::{self, KNOWLEDGE_HITS, PROMPT_KNOWLEDGE_MIN_SCORE};
use crate::provider::Provider;
use crate::sentences::SentenceSplitter;
use crate::tools::{self, TurnContext};

/// Events of one turn buffered between the turn's task and the call core. 32: a reply is a
/// handful of sentences and notes; the core reads them as they come, so the task only waits
/// here if the core itself is stalled (and then it should not run ahead).
pub const TURN_EVENTS: usize = 32;

/// Longest wait for this turn's knowledge retrieval (an embedding of the caller's words and a
/// scan of the clinic's chunks: a few milliseconds normally). 500 ms: past it the prompt goes
/// without notes rather than the caller waiting; the model can still say it does not know.
pub const KNOWLEDGE_TIMEOUT: Duration = Duration::from_millis(500);

/// Said once by the brain itself when the first token is late, where no call core says one
/// (`voxanne chat`, tests). The phone path leaves it to the core's own filler (same words, at
/// `ConversationConfig::filler_after`, 1.5 s), which the core keeps out of the reply's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filler {
    pub after: Duration,
    pub text: String,
}

impl Default for Filler {
    /// "One moment, please." after 1.5 s: the call core's filler, so both paths sound alike.
    fn default() -> Self {
        Self {
            after: Duration::from_millis(1500),
            text: "One moment, please.".into(),
        }
    }
}

/// Why a turn went to the offline receptionist instead of the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fallback {
    #[error("the provider is being skipped (circuit breaker open)")]
    BreakerOpen,
    #[error("provider error: {0}")]
    Provider(String),
    #[error("no first token within {0} ms")]
    FirstTokenTimeout(u128),
    #[error("the stream stalled for {0} ms")]
    Stalled(u128),
    #[error("the stream ended without a finish reason (cut mid-reply)")]
    Cut,
    #[error("the provider sent something that is not a completion chunk: {0}")]
    Garbage(String),
    #[error("the model was still calling tools after {0} rounds")]
    TooManyRounds(usize),
}

impl Fallback {
    /// Stable name for the call event.
    pub fn kind(&self) -> &'static str {
        match self {
            Fallback::BreakerOpen => "breaker_open",
            Fallback::Provider(_) => "provider_error",
            Fallback::FirstTokenTimeout(_) => "first_token_timeout",
            Fallback::Stalled(_) => "stalled",
            Fallback::Cut => "cut",
            Fallback::Garbage(_) => "garbage",
            Fallback::TooManyRounds(_) => "too_many_rounds",
        }
    }

    /// Whether this failure counts against the provider's breaker (a model looping on tools is
    /// the model's fault, not an outage; a skipped turn never asked).
    fn counts_against_provider(&self) -> bool {
        !matches!(self, Fallback::BreakerOpen | Fallback::TooManyRounds(_))
    }
}

/// The tool calls and results of one earlier turn, kept to give back to the model.
#[derive(Debug, Clone)]
struct Exchange {
    /// The history length of the turn's request: its caller line is `history[history_len]` in
    /// later requests.
    history_len: usize,
    messages: Vec<ChatCompletionRequestMessage>,
}

#[derive(Debug, Default)]
struct Memory {
    exchanges: Vec<Exchange>,
}

struct Inner {
    offline: ReceptionistSession,
    provider: Provider,
    filler: Option<Filler>,
    memory: Mutex<Memory>,
}

/// One call's LLM brain (build one per call, like the receptionist session it wraps).
#[derive(Clone)]
pub struct LlmBrain {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LlmBrain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmBrain")
            .field("offline", &self.inner.offline)
            .field("provider", &self.inner.provider)
            .finish_non_exhaustive()
    }
}

impl LlmBrain {
    /// The LLM brain for a call whose offline receptionist is `offline` (its clinic, caller,
    /// tools and clock are the brain's too).
    pub fn new(offline: ReceptionistSession, provider: Provider) -> Self {
        Self::with_filler(offline, provider, None)
    }

    /// [`LlmBrain::new`] that says `filler` itself when the first token is late (for text paths
    /// without a call core).
    pub fn with_filler(
        offline: ReceptionistSession,
        provider: Provider,
        filler: Option<Filler>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                offline,
                provider,
                filler,
                memory: Mutex::new(Memory::default()),
            }),
        }
    }

    /// The offline receptionist behind it (greeting, caller look-up at setup).
    pub fn offline(&self) -> &ReceptionistSession {
        &self.inner.offline
    }
}

/// Whether the offline rules answer this turn without asking the model, and why.
pub async fn policy_turn(
    offline: &ReceptionistSession,
    input: &CallerInput,
) -> Option<&'static str> {
    let text = match input {
        CallerInput::Speech(t) => t,
        CallerInput::Dtmf(_) => return Some("dtmf"),
        CallerInput::Unheard => return Some("unheard"),
    };
    let clinic = offline.clinic();
    let now = slots::local(clinic, (offline.clock())());
    let u = nlu::understand(text, clinic, now);
    if u.has(Intent::Emergency) {
        return Some("emergency");
    }
    if u.has(Intent::Medical) {
        return Some("medical");
    }
    if u.has(Intent::Person) {
        return Some("person");
    }
    if offline.awaiting_answer().await {
        return Some("offline_awaiting_answer");
    }
    None
}

/// The stream of one turn: the turn's task feeds it; dropping it aborts the task.
struct TurnStream {
    rx: mpsc::Receiver<Result<BrainEvent, EngineError>>,
    task: tokio::task::JoinHandle<()>,
}

impl Stream for TurnStream {
    type Item = Result<BrainEvent, EngineError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for TurnStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Brain for LlmBrain {
    fn name(&self) -> &str {
        "llm"
    }

    fn respond(
        &self,
        request: BrainRequest,
    ) -> BoxStream<'static, Result<BrainEvent, EngineError>> {
        let (tx, rx) = mpsc::channel(TURN_EVENTS);
        let inner = self.inner.clone();
        let task = tokio::spawn(async move {
            let out = Out { tx };
            inner.turn(request, &out).await;
        });
        TurnStream { rx, task }.boxed()
    }
}

/// The turn's output channel. A send fails only when the stream was dropped (the turn is being
/// aborted anyway), so failures are ignored.
struct Out {
    tx: mpsc::Sender<Result<BrainEvent, EngineError>>,
}

impl Out {
    async fn send(&self, e: BrainEvent) {
        let _ = self.tx.send(Ok(e)).await;
    }

    async fn note(&self, kind: &'static str, detail: serde_json::Value) {
        self.send(BrainEvent::Note {
            kind,
            detail: detail.to_string(),
        })
        .await;
    }
}

/// What one turn measured.
#[derive(Debug, Default)]
struct TurnStats {
    first_token: Option<Duration>,
    first_sentence: Option<Duration>,
    tokens_in: u32,
    tokens_out: u32,
    /// Whether the counts came from the provider (`usage`) or were estimated.
    usage_reported: bool,
    rounds: usize,
    sentences: usize,
}

/// A tool call being assembled from its deltas.
#[derive(Debug, Default, Clone)]
struct PendingCall {
    id: String,
    name: String,
    arguments: String,
}

/// What one round's stream came to.
struct Round {
    calls: Vec<PendingCall>,
}

/// Rough tokens in `chars` characters where the provider reports no usage (~4 characters a
/// token in English).
fn estimate_tokens(chars: usize) -> u32 {
    (chars as u32).div_ceil(4)
}

fn user(text: &str) -> ChatCompletionRequestMessage {
    ChatCompletionRequestUserMessage::from(text).into()
}

fn assistant(text: &str) -> ChatCompletionRequestMessage {
    ChatCompletionRequestAssistantMessage::from(text).into()
}

/// The caller's words as the model reads them.
fn caller_line(input: &CallerInput) -> String {
    match input {
        CallerInput::Speech(t) => t.clone(),
        CallerInput::Dtmf(d) => format!("(pressed {d})"),
        CallerInput::Unheard => "(could not be heard)".into(),
    }
}

/// The conversation as heard, with the earlier turns' tool exchanges after the caller lines
/// they answered.
fn conversation(history: &[Message], exchanges: &[Exchange]) -> Vec<ChatCompletionRequestMessage> {
    let mut out = Vec::with_capacity(history.len() + exchanges.len() * 2);
    for (i, m) in history.iter().enumerate() {
        match m.role {
            Role::Caller => {
                out.push(user(&m.text));
                for e in exchanges.iter().filter(|e| e.history_len == i) {
                    out.extend(e.messages.iter().cloned());
                }
            }
            Role::Agent => out.push(assistant(&m.text)),
        }
    }
    out
}

impl Inner {
    async fn turn(&self, request: BrainRequest, out: &Out) {
        // A re-asked turn (its reply abandoned unheard) or a turn after it: forget the
        // exchanges of replies the caller never heard; their bookings are found again by key.
        {
            let mut memory = self.memory.lock().await;
            let len = request.history.len();
            memory.exchanges.retain(|e| e.history_len < len);
        }
        if let Some(reason) = policy_turn(&self.offline, &request.input).await {
            debug!(reason, "the offline receptionist answers by policy");
            self.offline_answer(request, out, reason, TurnStats::default())
                .await;
            return;
        }
        let permit = self.provider.permit();
        if permit == Permit::Skipped {
            let f = Fallback::BreakerOpen;
            out.note(
                "llm_fallback",
                json!({ "reason": f.kind(), "error": f.to_string() }),
            )
            .await;
            self.offline_answer(request, out, f.kind(), TurnStats::default())
                .await;
            return;
        }
        let mut stats = TurnStats::default();
        match self.model_turn(&request, out, &mut stats).await {
            Ok(()) => {
                self.provider.record(true);
                out.note("llm_turn", self.stats_json("llm", None, &stats))
                    .await;
            }
            Err(f) => {
                // A model looping on tools still answered: the provider is up.
                self.provider.record(!f.counts_against_provider());
                warn!(reason = f.kind(), error = %f, "LLM turn failed; the offline receptionist answers");
                out.note(
                    "llm_fallback",
                    json!({ "reason": f.kind(), "error": f.to_string(), "said_before": stats.sentences }),
                )
                .await;
                self.offline_answer(request, out, f.kind(), stats).await;
            }
        }
    }

    fn stats_json(&self, brain: &str, reason: Option<&str>, s: &TurnStats) -> serde_json::Value {
        let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
        json!({
            "brain": brain,
            "reason": reason,
            "model": self.provider.settings().model,
            "first_token_ms": ms(s.first_token),
            "first_sentence_ms": ms(s.first_sentence),
            "tokens_in": s.tokens_in,
            "tokens_out": s.tokens_out,
            "usage_reported": s.usage_reported,
            "rounds": s.rounds,
        })
    }

    /// The offline receptionist answers the turn; its events are passed on.
    async fn offline_answer(
        &self,
        request: BrainRequest,
        out: &Out,
        reason: &'static str,
        stats: TurnStats,
    ) {
        let mut events = self.offline.respond(request);
        while let Some(e) = events.next().await {
            if out.tx.send(e).await.is_err() {
                return;
            }
        }
        out.note(
            "llm_turn",
            self.stats_json("receptionist", Some(reason), &stats),
        )
        .await;
    }

    /// Streams the model's answer to this turn, running its tools.
    async fn model_turn(
        &self,
        request: &BrainRequest,
        out: &Out,
        stats: &mut TurnStats,
    ) -> Result<(), Fallback> {
        let started = Instant::now();
        let settings = self.provider.settings();
        let clinic = self.offline.clinic().clone();
        let context = self.offline.context().clone();
        let tools = self.offline.tools();
        let now = (self.offline.clock())();
        let input_text = caller_line(&request.input);

        let knowledge = match tokio::time::timeout(
            KNOWLEDGE_TIMEOUT,
            tools.search_knowledge(input_text.clone(), KNOWLEDGE_HITS),
        )
        .await
        {
            Ok(Ok(hits)) => hits
                .into_iter()
                .filter(|h| h.score >= PROMPT_KNOWLEDGE_MIN_SCORE)
                .collect(),
            Ok(Err(e)) => {
                debug!(error = %e, "no knowledge for this turn");
                Vec::new()
            }
            Err(_) => {
                debug!("knowledge retrieval timed out");
                Vec::new()
            }
        };
        let system = prompt::system_prompt(
            &clinic,
            slots::local(&clinic, now),
            context.caller.is_some(),
            &knowledge,
        );
        let mut messages: Vec<ChatCompletionRequestMessage> =
            vec![ChatCompletionRequestSystemMessage::from(system).into()];
        {
            let memory = self.memory.lock().await;
            messages.extend(conversation(&request.history, &memory.exchanges));
        }
        messages.push(user(&input_text));

        let u = nlu::understand(&input_text, &clinic, slots::local(&clinic, now));
        let ctx = TurnContext {
            clinic: &clinic,
            call: &context,
            tools: tools.as_ref(),
            now,
            caller_said_yes: u.yes,
        };
        let mut action: Option<Action> = None;
        let mut filler_due = self.filler.as_ref().map(|f| started + f.after);
        let mut splitter = SentenceSplitter::new();

        for round in 0..settings.max_rounds.max(1) {
            stats.rounds = round + 1;
            let body = CreateChatCompletionRequest {
                model: settings.model.clone(),
                messages: messages.clone(),
                tools: Some(tools::definitions()),
                temperature: settings.temperature,
                #[allow(deprecated)]
                max_tokens: settings.max_tokens,
                stream: Some(true),
                stream_options: settings
                    .stream_usage
                    .then_some(ChatCompletionStreamOptions {
                        include_usage: Some(true),
                        include_obfuscation: None,
                    }),
                ..CreateChatCompletionRequest::default()
            };
            let sent_chars: usize = messages.iter().map(message_chars).sum();
            let r = self
                .stream_round(
                    body,
                    started,
                    &mut filler_due,
                    &mut splitter,
                    out,
                    stats,
                    sent_chars,
                )
                .await?;
            if r.calls.is_empty() {
                if let Some(last) = splitter.finish() {
                    self.say(out, stats, started, last).await;
                }
                if let Some(a) = action {
                    out.send(BrainEvent::Action(a)).await;
                }
                return Ok(());
            }
            // Text before the tool calls is spoken now, whole.
            if let Some(before) = splitter.finish() {
                self.say(out, stats, started, before).await;
            }
            let calls: Vec<ChatCompletionMessageToolCalls> = r
                .calls
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    ChatCompletionMessageToolCalls::Function(ChatCompletionMessageToolCall {
                        id: if c.id.is_empty() {
                            format!("call_{round}_{i}")
                        } else {
                            c.id.clone()
                        },
                        function: FunctionCall {
                            name: c.name.clone(),
                            arguments: c.arguments.clone(),
                        },
                    })
                })
                .collect();
            let assistant_calls: ChatCompletionRequestMessage =
                ChatCompletionRequestAssistantMessage {
                    tool_calls: Some(calls.clone()),
                    ..ChatCompletionRequestAssistantMessage::default()
                }
                .into();
            messages.push(assistant_calls.clone());
            // Kept round by round, not at the end of the turn: a reply cut off by a barge-in
            // after its tools ran was partly heard, and the model must see what it did.
            let mut exchange = vec![assistant_calls];
            for (call, wire) in r.calls.iter().zip(&calls) {
                let ChatCompletionMessageToolCalls::Function(wire) = wire else {
                    continue;
                };
                let outcome = ctx.execute(&call.name, &call.arguments).await;
                let arguments: serde_json::Value =
                    serde_json::from_str(&call.arguments).unwrap_or_else(|_| json!(call.arguments));
                out.note(
                    "tool_call",
                    json!({
                        "name": tools::static_name(&call.name).unwrap_or("unknown"),
                        "called": call.name,
                        "arguments": arguments,
                        "result": outcome.result,
                        "brain": "llm",
                    }),
                )
                .await;
                for (kind, detail) in outcome.notes {
                    out.note(kind, detail).await;
                }
                if action.is_none() {
                    action = outcome.action;
                }
                let result: ChatCompletionRequestMessage = ChatCompletionRequestToolMessage {
                    content: outcome.result.to_string().into(),
                    tool_call_id: wire.id.clone(),
                }
                .into();
                messages.push(result.clone());
                exchange.push(result);
            }
            self.remember(request.history.len(), exchange).await;
        }
        // Tools already run stay done (idempotent keys); the offline receptionist answers.
        Err(Fallback::TooManyRounds(settings.max_rounds))
    }

    /// Keeps a tool round (the assistant's calls and their results) for later turns.
    async fn remember(&self, history_len: usize, messages: Vec<ChatCompletionRequestMessage>) {
        self.memory.lock().await.exchanges.push(Exchange {
            history_len,
            messages,
        });
    }

    async fn say(&self, out: &Out, stats: &mut TurnStats, started: Instant, sentence: String) {
        if stats.first_sentence.is_none() {
            stats.first_sentence = Some(started.elapsed());
        }
        stats.sentences += 1;
        out.send(BrainEvent::Text(sentence)).await;
    }

    /// Waits for `fut` until `deadline`, saying the filler once if it falls due first.
    async fn wait<T>(
        &self,
        fut: impl Future<Output = T>,
        deadline: Instant,
        filler_due: &mut Option<Instant>,
        out: &Out,
    ) -> Option<T> {
        tokio::pin!(fut);
        loop {
            let wake = match *filler_due {
                Some(f) if f < deadline => f,
                _ => deadline,
            };
            tokio::select! {
                v = &mut fut => return Some(v),
                _ = tokio::time::sleep_until(wake.into()) => {
                    if Instant::now() >= deadline {
                        return None;
                    }
                    if filler_due.take().is_some()
                        && let Some(f) = &self.filler
                    {
                        out.send(BrainEvent::Text(f.text.clone())).await;
                        out.note("filler", json!({ "after_ms": f.after.as_millis() as u64, "brain": "llm" })).await;
                    }
                }
            }
        }
    }

    /// One model call: streams text out as sentences, gathers tool calls.
    #[allow(clippy::too_many_arguments)]
    async fn stream_round(
        &self,
        body: CreateChatCompletionRequest,
        started: Instant,
        filler_due: &mut Option<Instant>,
        splitter: &mut SentenceSplitter,
        out: &Out,
        stats: &mut TurnStats,
        sent_chars: usize,
    ) -> Result<Round, Fallback> {
        let settings = self.provider.settings();
        let round_started = Instant::now();
        // The first token of the turn is awaited until the turn's first-token deadline; a later
        // round (after tools) gets the same budget from its own start.
        let first_deadline = if stats.first_token.is_none() {
            started + settings.first_token_timeout
        } else {
            round_started + settings.first_token_timeout
        };
        let chat = self.provider.client().chat();
        let mut stream = match self
            .wait(chat.create_stream(body), first_deadline, filler_due, out)
            .await
        {
            None => {
                return Err(Fallback::FirstTokenTimeout(
                    settings.first_token_timeout.as_millis(),
                ));
            }
            Some(Err(e)) => return Err(Fallback::Provider(e.to_string())),
            Some(Ok(s)) => s,
        };
        let mut calls: Vec<PendingCall> = Vec::new();
        let mut got_token = false;
        let mut finished = false;
        let mut usage = None;
        let mut out_chars = 0usize;
        loop {
            let deadline = if got_token {
                Instant::now() + settings.stall_timeout
            } else {
                first_deadline
            };
            let next = match self.wait(stream.next(), deadline, filler_due, out).await {
                None if got_token => {
                    return Err(Fallback::Stalled(settings.stall_timeout.as_millis()));
                }
                None => {
                    return Err(Fallback::FirstTokenTimeout(
                        settings.first_token_timeout.as_millis(),
                    ));
                }
                Some(n) => n,
            };
            let chunk = match next {
                None => break,
                Some(Ok(c)) => c,
                Some(Err(async_openai::error::OpenAIError::JSONDeserialize(e, _))) => {
                    return Err(Fallback::Garbage(e.to_string()));
                }
                Some(Err(e)) => return Err(Fallback::Provider(e.to_string())),
            };
            if let Some(u) = chunk.usage {
                usage = Some(u);
            }
            for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
                let delta = choice.delta;
                let has_text = delta.content.as_deref().is_some_and(|t| !t.is_empty());
                let has_calls = delta.tool_calls.as_ref().is_some_and(|t| !t.is_empty());
                if (has_text || has_calls) && !got_token {
                    got_token = true;
                    // No filler once the model has begun.
                    *filler_due = None;
                    if stats.first_token.is_none() {
                        stats.first_token = Some(started.elapsed());
                    }
                }
                if let Some(text) = delta.content {
                    out_chars += text.len();
                    for sentence in splitter.push(&text) {
                        self.say(out, stats, started, sentence).await;
                    }
                }
                for d in delta.tool_calls.unwrap_or_default() {
                    let i = d.index as usize;
                    if i > 16 {
                        return Err(Fallback::Garbage(format!("tool call index {i}")));
                    }
                    if calls.len() <= i {
                        calls.resize(i + 1, PendingCall::default());
                    }
                    let c = &mut calls[i];
                    if let Some(id) = d.id {
                        c.id = id;
                    }
                    if let Some(f) = d.function {
                        if let Some(n) = f.name {
                            c.name.push_str(&n);
                        }
                        if let Some(a) = f.arguments {
                            out_chars += a.len();
                            c.arguments.push_str(&a);
                        }
                    }
                }
                if choice.finish_reason.is_some() {
                    finished = true;
                }
            }
        }
        if !finished {
            return Err(Fallback::Cut);
        }
        match usage {
            Some(u) => {
                stats.tokens_in += u.prompt_tokens;
                stats.tokens_out += u.completion_tokens;
                stats.usage_reported = true;
            }
            None => {
                stats.tokens_in += estimate_tokens(sent_chars);
                stats.tokens_out += estimate_tokens(out_chars);
            }
        }
        calls.retain(|c| !c.name.is_empty());
        Ok(Round { calls })
    }
}

fn message_chars(m: &ChatCompletionRequestMessage) -> usize {
    serde_json::to_string(m).map_or(0, |s| s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_exchanges_go_back_after_the_caller_line_they_answered() {
        let history = vec![
            Message {
                role: Role::Agent,
                text: "Hello, Bright Smile.".into(),
            },
            Message {
                role: Role::Caller,
                text: "Any time Friday?".into(),
            },
            Message {
                role: Role::Agent,
                text: "Friday at ten is free.".into(),
            },
        ];
        let exchange = Exchange {
            history_len: 1,
            messages: vec![
                ChatCompletionRequestToolMessage {
                    content: "{}".into(),
                    tool_call_id: "c1".into(),
                }
                .into(),
            ],
        };
        let m = conversation(&history, &[exchange]);
        let roles: Vec<String> = m
            .iter()
            .map(|m| {
                serde_json::to_value(m).unwrap()["role"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(roles, ["assistant", "user", "tool", "assistant"]);
    }
}
