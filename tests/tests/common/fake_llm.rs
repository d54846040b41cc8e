//! A local OpenAI-compatible Chat Completions server for the LLM brain's tests: it speaks the
//! real streaming wire format (`POST /v1/chat/completions`, server-sent events `data: {json}\n\n`
//! with `choices[0].delta.content` or `delta.tool_calls[{index, id, type, function: {name,
//! arguments}}]` fragments, a `finish_reason`, a usage chunk with empty `choices`, then
//! `data: [DONE]`), and fails the ways real providers fail: HTTP 429 and 500 with an OpenAI
//! error body, a stream cut mid-reply, a chunk that is not JSON, a server that never answers.
//!
//! Each request is answered by the next scripted [`Reply`] (a [`Reply::Dynamic`] reads the
//! request, e.g. to book the time a tool result offered); with the script empty it answers a
//! plain "Okay." Every request body is kept for the test to inspect.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::stream::{self, StreamExt};
use serde_json::{Value, json};

/// One scripted answer.
pub enum Reply {
    /// A stream of chunk objects (each sent as one `data:` event), then `[DONE]`.
    Stream(Stream),
    /// An HTTP error with an OpenAI-style error body.
    Status(u16),
    /// The request is accepted and never answered.
    Stall,
    /// The stream's chunks, then the connection is aborted (no finish reason, no `[DONE]`).
    Cut(Stream),
    /// Chunks, then a `data:` line that is not JSON.
    Garbage(Stream),
    /// The stream's chunks, then the body ends cleanly (no `[DONE]`, no error).
    Ends(Stream),
    /// Decided from the request body.
    Dynamic(Box<dyn Fn(&Value) -> Reply + Send + Sync>),
}

/// The chunks of one streamed answer and its pace.
#[derive(Clone)]
pub struct Stream {
    pub chunks: Vec<Value>,
    /// Before the first chunk (time to first token).
    pub first_delay: Duration,
    /// Between chunks (1 / token rate).
    pub gap: Duration,
}

impl Stream {
    pub fn new(chunks: Vec<Value>) -> Self {
        Self {
            chunks,
            first_delay: Duration::ZERO,
            gap: Duration::ZERO,
        }
    }

    pub fn paced(mut self, first_delay: Duration, gap: Duration) -> Self {
        self.first_delay = first_delay;
        self.gap = gap;
        self
    }
}

/// A reply that finishes (`finish_reason`) with nothing in it: an empty delta, the finish,
/// usage. `text`: whitespace the model sent, if any.
pub fn nothing(finish: &str, text: Option<&str>) -> Stream {
    let mut chunks = vec![chunk(json!({ "role": "assistant", "content": "" }), None)];
    if let Some(t) = text {
        chunks.push(chunk(json!({ "content": t }), None));
    }
    chunks.push(chunk(json!({}), Some(finish)));
    chunks.push(usage(500, 0));
    Stream::new(chunks)
}

/// A whole text answer up to its `finish_reason: stop`, with no usage chunk after it.
pub fn text_to_finish(text: &str, per: usize) -> Stream {
    let mut chunks = text_deltas(text, per);
    chunks.push(chunk(json!({}), Some("stop")));
    Stream::new(chunks)
}

fn chunk(delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1_764_000_000,
        "model": "test-model",
        "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        "usage": null,
    })
}

fn usage(prompt: u32, completion: u32) -> Value {
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1_764_000_000,
        "model": "test-model",
        "choices": [],
        "usage": { "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion },
    })
}

/// `text` as content deltas of about `per` characters (a token is ~4), without a finish.
pub fn text_deltas(text: &str, per: usize) -> Vec<Value> {
    let mut out = vec![chunk(json!({ "role": "assistant", "content": "" }), None)];
    let chars: Vec<char> = text.chars().collect();
    for piece in chars.chunks(per.max(1)) {
        out.push(chunk(
            json!({ "content": piece.iter().collect::<String>() }),
            None,
        ));
    }
    out
}

/// A whole text answer: deltas, `finish_reason: stop`, usage.
pub fn text(text: &str, per: usize) -> Stream {
    let mut chunks = text_deltas(text, per);
    chunks.push(chunk(json!({}), Some("stop")));
    chunks.push(usage(500, (text.len() as u32).div_ceil(4)));
    Stream::new(chunks)
}

/// A tool call as the model streams it: `(id, name, arguments JSON)`.
pub struct Call<'a>(pub &'a str, pub &'a str, pub String);

/// Optional text, then the calls (their argument JSON cut into `per`-character fragments, the
/// calls' fragments interleaved so that deltas of different `index`es alternate), then
/// `finish_reason: tool_calls` and usage.
pub fn tool_calls(before: Option<&str>, calls: &[Call<'_>], per: usize) -> Stream {
    let mut chunks = match before {
        Some(t) => text_deltas(t, 3),
        None => vec![chunk(json!({ "role": "assistant", "content": null }), None)],
    };
    // The first delta of each call names it (id, type, name, no arguments yet).
    for (i, Call(id, name, _)) in calls.iter().enumerate() {
        chunks.push(chunk(
            json!({ "tool_calls": [{ "index": i, "id": id, "type": "function", "function": { "name": name, "arguments": "" } }] }),
            None,
        ));
    }
    let pieces: Vec<Vec<String>> = calls
        .iter()
        .map(|Call(_, _, args)| {
            args.chars()
                .collect::<Vec<_>>()
                .chunks(per.max(1))
                .map(|c| c.iter().collect())
                .collect()
        })
        .collect();
    let longest = pieces.iter().map(Vec::len).max().unwrap_or(0);
    for k in 0..longest {
        for (i, p) in pieces.iter().enumerate() {
            if let Some(piece) = p.get(k) {
                chunks.push(chunk(
                    json!({ "tool_calls": [{ "index": i, "function": { "arguments": piece } }] }),
                    None,
                ));
            }
        }
    }
    chunks.push(chunk(json!({}), Some("tool_calls")));
    chunks.push(usage(600, 40));
    Stream::new(chunks)
}

/// The server's state: the script and what it was asked.
#[derive(Clone, Default)]
pub struct FakeLlm {
    script: Arc<Mutex<VecDeque<Reply>>>,
    requests: Arc<Mutex<Vec<Value>>>,
    /// Each request's `Authorization` header.
    auth: Arc<Mutex<Vec<Option<String>>>>,
}

impl FakeLlm {
    /// Starts the server on a loopback port; returns it and its base URL (`http://…/v1`).
    pub async fn start() -> (Self, String) {
        let fake = Self::default();
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (fake, format!("http://{addr}/v1"))
    }

    pub fn push(&self, reply: Reply) {
        self.script.lock().unwrap().push_back(reply);
    }

    /// Requests received so far (their JSON bodies).
    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    /// Each request's `Authorization` header, in order.
    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.auth.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// Scripted replies not yet used.
    pub fn unused(&self) -> usize {
        self.script.lock().unwrap().len()
    }
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

fn body_of(s: Stream, tail: Tail) -> Body {
    let Stream {
        chunks,
        first_delay,
        gap,
    } = s;
    let events = stream::iter(chunks.into_iter().enumerate()).then(move |(i, c)| async move {
        let wait = if i == 0 { first_delay } else { gap };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok::<Bytes, std::io::Error>(sse(&c))
    });
    let end: stream::BoxStream<'static, Result<Bytes, std::io::Error>> = match tail {
        Tail::Done => stream::iter([Ok(Bytes::from_static(b"data: [DONE]\n\n"))]).boxed(),
        // After the stream's gap like any chunk, so a paced stream's last chunk is flushed
        // before the reset (hyper drops what it has not written yet).
        Tail::Abort => stream::once(async move {
            if !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            Err(std::io::Error::other("connection cut"))
        })
        .boxed(),
        Tail::Garbage => stream::iter([
            Ok(Bytes::from_static(
                b"data: {\"choices\": [{\"delta\": <html>oops\n\n",
            )),
            Ok(Bytes::from_static(b"data: [DONE]\n\n")),
        ])
        .boxed(),
        Tail::Clean => stream::empty().boxed(),
    };
    Body::from_stream(events.chain(end))
}

enum Tail {
    Done,
    Clean,
    Abort,
    Garbage,
}

fn streaming(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .unwrap()
}

async fn completions(
    State(fake): State<FakeLlm>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    fake.auth.lock().unwrap().push(
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(String::from),
    );
    fake.requests.lock().unwrap().push(request.clone());
    let mut reply = fake
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| Reply::Stream(text("Okay.", 4)));
    while let Reply::Dynamic(f) = reply {
        reply = f(&request);
    }
    match reply {
        Reply::Stream(s) => streaming(body_of(s, Tail::Done)),
        Reply::Cut(s) => streaming(body_of(s, Tail::Abort)),
        Reply::Garbage(s) => streaming(body_of(s, Tail::Garbage)),
        Reply::Ends(s) => streaming(body_of(s, Tail::Clean)),
        Reply::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap();
            let kind = if code == 429 {
                "rate_limit_exceeded"
            } else {
                "server_error"
            };
            (
                status,
                [("content-type", "application/json")],
                json!({ "error": { "message": format!("scripted {code}"), "type": kind, "param": null, "code": kind } })
                    .to_string(),
            )
                .into_response()
        }
        Reply::Stall => {
            std::future::pending::<Infallible>().await;
            unreachable!()
        }
        Reply::Dynamic(_) => unreachable!(),
    }
}

/// The `content` of the last `role: tool` message of a request, as JSON.
pub fn last_tool_result(request: &Value) -> Value {
    request["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "tool"))
        .and_then(|m| m["content"].as_str())
        .and_then(|c| serde_json::from_str(c).ok())
        .unwrap_or(Value::Null)
}
