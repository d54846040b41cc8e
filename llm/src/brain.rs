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
    ChatCompletionRequestUserMessage, ChatCompletionStreamOptions, ChatCompletionToolChoiceOption,
    CreateChatCompletionRequest, FunctionCall, ToolChoiceOptions,
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

/// Longest a turn goes without sending the call core anything (text or a note) before it gives
/// up and the offline receptionist answers: every wait of a round ends at the earlier of its
/// own deadline and the last event plus this. 4.5 s: below the call core's 6 s per-event
/// limit (`telephony::call::BRAIN_STEP_TIMEOUT`, checked by a test in `api`), which otherwise
/// drops the stream and says a generic apology with no offline answer, no `llm_fallback` and
/// no word to the breaker; the 1.5 s margin is for the offline answer itself.
pub const EVENT_BUDGET: Duration = Duration::from_millis(4500);

/// Longest wait for the rest of a stream after its `finish_reason` (the usage chunk and
/// `[DONE]`). 300 ms: the reply is complete and spoken; a reset or stall after it is not a
/// failure worth the offline receptionist answering again.
pub const AFTER_FINISH_GRACE: Duration = Duration::from_millis(300);

/// Largest tool-call name or arguments gathered from a stream (8 KiB): real calls are a few
/// hundred bytes; more is a provider sending garbage, not a call worth holding in memory.
pub const MAX_TOOL_CALL_BYTES: usize = 8 * 1024;

/// Longest this module keeps of a provider's error text in an `llm_fallback` event.
const MAX_ERROR_CHARS: usize = 200;

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
    /// A connection error, timeout, HTTP 5xx or 429: the provider is in trouble.
    #[error("provider error: {0}")]
    Provider(String),
    /// Any other HTTP 4xx (a wrong key, model or request): this clinic's settings, not an
    /// outage, so the breaker is not told.
    #[error("provider refused the request: {0}")]
    Refused(String),
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
    #[error("the model finished without a word or a tool call")]
    Empty,
    #[error("nothing sent to the call for {0} ms")]
    Silent(u128),
}

impl Fallback {
    /// Stable name for the call event.
    pub fn kind(&self) -> &'static str {
        match self {
            Fallback::BreakerOpen => "breaker_open",
            Fallback::Provider(_) => "provider_error",
            Fallback::Refused(_) => "provider_refused",
            Fallback::FirstTokenTimeout(_) => "first_token_timeout",
            Fallback::Stalled(_) => "stalled",
            Fallback::Cut => "cut",
            Fallback::Garbage(_) => "garbage",
            Fallback::TooManyRounds(_) => "too_many_rounds",
            Fallback::Empty => "empty",
            Fallback::Silent(_) => "silent",
        }
    }

    /// Whether this failure counts against the provider's breaker (a model looping on tools is
    /// the model's fault, not an outage; a skipped turn never asked).
    fn counts_against_provider(&self) -> bool {
        !matches!(
            self,
            Fallback::BreakerOpen
                | Fallback::TooManyRounds(_)
                | Fallback::Empty
                | Fallback::Refused(_)
        )
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
            let out = Out::new(tx);
            inner.turn(request, &out).await;
        });
        TurnStream { rx, task }.boxed()
    }
}

/// The turn's output channel. A send fails only when the stream was dropped (the turn is being
/// aborted anyway), so failures are ignored.
struct Out {
    tx: mpsc::Sender<Result<BrainEvent, EngineError>>,
    /// When the call core last got something from this turn (its per-event clock).
    last: std::sync::Mutex<Instant>,
}

impl Out {
    fn new(tx: mpsc::Sender<Result<BrainEvent, EngineError>>) -> Self {
        Self {
            tx,
            last: std::sync::Mutex::new(Instant::now()),
        }
    }

    /// When the call core last got an event of this turn.
    fn last_event(&self) -> Instant {
        self.last
            .lock()
            .map(|l| *l)
            .unwrap_or_else(|_| Instant::now())
    }

    fn touch(&self) {
        if let Ok(mut l) = self.last.lock() {
            *l = Instant::now();
        }
    }

    async fn send(&self, e: BrainEvent) {
        let _ = self.tx.send(Ok(e)).await;
        self.touch();
    }

    /// Passes on an event of the offline receptionist; false once the stream was dropped.
    async fn pass(&self, e: Result<BrainEvent, EngineError>) -> bool {
        let ok = self.tx.send(e).await.is_ok();
        self.touch();
        ok
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
    /// An action a tool round decided (transfer, hang up), still owed if the turn falls back.
    action: Option<Action>,
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
    /// The round's text, as streamed (spoken before its tool calls).
    text: String,
}

/// Rough tokens in `chars` characters where the provider reports no usage (~4 characters a
/// token in English).
fn estimate_tokens(chars: usize) -> u32 {
    u32::try_from(chars).unwrap_or(u32::MAX).div_ceil(4)
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
                    json!({ "reason": f.kind(), "error": trimmed(&f.to_string()), "said_before": stats.sentences }),
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
        mut stats: TurnStats,
    ) {
        let mut events = self.offline.respond(request);
        let mut acted = false;
        while let Some(e) = events.next().await {
            acted |= matches!(e, Ok(BrainEvent::Action(_)));
            if !out.pass(e).await {
                return;
            }
        }
        // A tool round already decided to transfer or hang up (its tool ran): still done.
        if let Some(a) = stats.action.take()
            && !acted
        {
            out.send(BrainEvent::Action(a)).await;
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
            settings.knowledge_timeout,
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
        let mut filler_due = self.filler.as_ref().map(|f| started + f.after);
        let mut splitter = SentenceSplitter::new();
        // The first-token budget starts once the prompt is ready (knowledge retrieval has its
        // own bound), so the model always gets all of it.
        let asked = Instant::now();
        let rounds = settings.max_rounds.max(1);

        for round in 0..rounds {
            stats.rounds = round + 1;
            let last_round = round + 1 == rounds;
            let body = CreateChatCompletionRequest {
                model: settings.model.clone(),
                messages: messages.clone(),
                tools: Some(tools::definitions()),
                // The last round must speak: its tools would run with nobody told.
                tool_choice: last_round.then_some(ChatCompletionToolChoiceOption::Mode(
                    ToolChoiceOptions::None,
                )),
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
                    asked,
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
                if stats.sentences == 0 && stats.action.is_none() {
                    // A finish with nothing said and nothing done (a content filter, blank
                    // text, calls without names): the caller would hear dead air.
                    return Err(Fallback::Empty);
                }
                if let Some(a) = stats.action.take() {
                    out.send(BrainEvent::Action(a)).await;
                }
                return Ok(());
            }
            if last_round {
                // Told not to call tools and did anyway: they do not run unannounced.
                break;
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
            // The text the caller heard before the calls is the message's content.
            let spoken = r.text.trim();
            let assistant_calls: ChatCompletionRequestMessage =
                ChatCompletionRequestAssistantMessage {
                    content: (!spoken.is_empty()).then(|| spoken.to_string().into()),
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
                if stats.action.is_none() {
                    stats.action = outcome.action;
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

    /// Waits for `fut` until `deadline` or the turn's event budget (the last event sent plus
    /// [`LlmSettings::event_budget`](crate::settings::LlmSettings)), whichever is first, saying
    /// the filler once if it falls due first.
    async fn wait<T>(
        &self,
        fut: impl Future<Output = T>,
        deadline: Instant,
        filler_due: &mut Option<Instant>,
        out: &Out,
    ) -> Result<T, Waited> {
        tokio::pin!(fut);
        let budget = self.provider.settings().event_budget;
        loop {
            let silent_until = out.last_event() + budget;
            let end = deadline.min(silent_until);
            let wake = match *filler_due {
                Some(f) if f < end => f,
                _ => end,
            };
            tokio::select! {
                v = &mut fut => return Ok(v),
                _ = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(Waited::Deadline);
                    }
                    if now >= out.last_event() + budget {
                        return Err(Waited::Silent);
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
        asked: Instant,
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
            asked + settings.first_token_timeout
        } else {
            round_started + settings.first_token_timeout
        };
        let silent = || Fallback::Silent(settings.event_budget.as_millis());
        let chat = self.provider.client().chat();
        let mut stream = match self
            .wait(chat.create_stream(body), first_deadline, filler_due, out)
            .await
        {
            Err(Waited::Deadline) => {
                return Err(Fallback::FirstTokenTimeout(
                    settings.first_token_timeout.as_millis(),
                ));
            }
            Err(Waited::Silent) => return Err(silent()),
            Ok(Err(e)) => return Err(provider_failure(e)),
            Ok(Ok(s)) => s,
        };
        let mut calls: Vec<PendingCall> = Vec::new();
        let mut got_token = false;
        let mut finished = false;
        let mut usage = None;
        let mut out_chars = 0usize;
        let mut text = String::new();
        loop {
            if finished && (usage.is_some() || !settings.stream_usage) {
                // Everything wanted has come; `[DONE]` is not waited for.
                break;
            }
            let deadline = if finished {
                Instant::now() + AFTER_FINISH_GRACE
            } else if got_token {
                Instant::now() + settings.stall_timeout
            } else {
                first_deadline
            };
            let next = match self.wait(stream.next(), deadline, filler_due, out).await {
                // After the finish the reply is whole: a late usage chunk is not worth a fallback.
                Err(_) if finished => break,
                Err(Waited::Silent) => return Err(silent()),
                Err(Waited::Deadline) if got_token => {
                    return Err(Fallback::Stalled(settings.stall_timeout.as_millis()));
                }
                Err(Waited::Deadline) => {
                    return Err(Fallback::FirstTokenTimeout(
                        settings.first_token_timeout.as_millis(),
                    ));
                }
                Ok(n) => n,
            };
            let chunk = match next {
                None => break,
                // A reset or garbage after the finish: the reply was complete.
                Some(Err(e)) if finished => {
                    debug!(error = %e, "the stream failed after its finish; the reply was whole");
                    break;
                }
                Some(Ok(c)) => c,
                Some(Err(e)) => return Err(provider_failure(e)),
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
                if let Some(t) = delta.content {
                    out_chars += t.len();
                    text.push_str(&t);
                    for sentence in splitter.push(&t) {
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
                    if c.name.len() > MAX_TOOL_CALL_BYTES || c.arguments.len() > MAX_TOOL_CALL_BYTES
                    {
                        return Err(Fallback::Garbage(format!(
                            "tool call {i} over {MAX_TOOL_CALL_BYTES} bytes"
                        )));
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
                // Saturating: a provider's bogus usage must not panic a debug build.
                stats.tokens_in = stats.tokens_in.saturating_add(u.prompt_tokens);
                stats.tokens_out = stats.tokens_out.saturating_add(u.completion_tokens);
                stats.usage_reported = true;
            }
            None => {
                stats.tokens_in = stats.tokens_in.saturating_add(estimate_tokens(sent_chars));
                stats.tokens_out = stats.tokens_out.saturating_add(estimate_tokens(out_chars));
            }
        }
        calls.retain(|c| !c.name.is_empty());
        Ok(Round { calls, text })
    }
}

/// What a provider's error means for the turn and the breaker: garbage, a refusal of this
/// clinic's request (4xx but 408 and 429), or trouble (everything else).
fn provider_failure(e: async_openai::error::OpenAIError) -> Fallback {
    use async_openai::error::OpenAIError;
    match e {
        OpenAIError::JSONDeserialize(e, _) => Fallback::Garbage(e.to_string()),
        OpenAIError::ApiError(r)
            if r.status_code.is_client_error()
                && r.status_code != reqwest::StatusCode::TOO_MANY_REQUESTS
                && r.status_code != reqwest::StatusCode::REQUEST_TIMEOUT =>
        {
            let f = Fallback::Refused(r.to_string());
            warn!(error = %f, "the provider refused the request (settings?); not counted against it");
            f
        }
        OpenAIError::InvalidArgument(m) => Fallback::Refused(m),
        e => Fallback::Provider(e.to_string()),
    }
}

/// Why a [`Inner::wait`] ended without its value.
enum Waited {
    /// The wait's own deadline (first token, stall, grace).
    Deadline,
    /// The turn's event budget: the call core has had nothing for too long.
    Silent,
}

/// `text` cut to [`MAX_ERROR_CHARS`] characters (a provider's error body can be a whole page).
fn trimmed(text: &str) -> String {
    match text.char_indices().nth(MAX_ERROR_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
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
