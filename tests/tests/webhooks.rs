//! Outgoing webhooks over HTTP against a real server and a real database (SQLite, and Postgres on
//! a throwaway cluster), delivered to a local receiver that fails, hangs and then succeeds:
//! signatures verify with the secret given at creation (and not with another), every event is
//! delivered exactly once from the receiver's side even though it was retried, the delivery log
//! tells staff what happened, one organisation's endpoints and events never reach another's, and
//! a delivery pending when the server stops goes out from the next process.
//!
//! Events come from what produces them in service: a call placed through the simulated Twilio
//! (`call.started`, `call.ended`) and the receptionist in `POST /api/v1/chat` (a booking, a
//! message).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::caller::{Line, LineStart, place_call};
use api::staff::auth::{self, Role};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::response::IntoResponse;
use chrono::Utc;
use common::*;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;
use storage::{CallSid, OrgId};

const NUMBER_A: &str = "+442071234567";
const NUMBER_B: &str = "+441610000001";
const PASSWORD: &str = "correct horse battery";

/// Short waits so retries happen within the test; six attempts in all.
const FAST_RETRIES: &str = "200ms,200ms,200ms,200ms,200ms";
/// The receiver that hangs is given up on after this. Long: an attempt the receiver answered at
/// once must never time out on a loaded 2-core machine (it would then be sent again, and the
/// receiver would rightly see it twice, breaking the exactly-once assertions). Only the one
/// hung attempt pays it.
const TIMEOUT: &str = "15s";

/// Longest any wait for a delivery may take: generous, for a loaded 2-core machine (and above
/// [`TIMEOUT`] with room to spare).
const DEADLINE: Duration = Duration::from_secs(180);

// ---- the receiver ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Ok,
    Fail,
    /// Never answers (the sender's timeout must end it).
    Hang,
}

#[derive(Clone, Debug)]
struct Received {
    /// Which receiver path (one per endpoint).
    path: String,
    event_id: String,
    event_type: String,
    signature: String,
    content_type: String,
    body: String,
    answer: Answer,
    at: i64,
}

#[derive(Default)]
struct Book {
    requests: Vec<Received>,
    /// For (path, event type): how the n-th request of each event is answered (then `Ok`).
    plans: HashMap<(String, String), Vec<Answer>>,
    /// Every request answered 500 (the restart test's first process).
    always_fail: bool,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Book>>);

impl Receiver {
    fn plan(&self, path: &str, event_type: &str, answers: &[Answer]) {
        self.0
            .lock()
            .unwrap()
            .plans
            .insert((path.into(), event_type.into()), answers.to_vec());
    }

    fn always_fail(&self, on: bool) {
        self.0.lock().unwrap().always_fail = on;
    }

    fn requests(&self) -> Vec<Received> {
        self.0.lock().unwrap().requests.clone()
    }

    fn on(&self, path: &str) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Requests to `path` of type `event_type`, in arrival order.
    fn of(&self, path: &str, event_type: &str) -> Vec<Received> {
        self.on(path)
            .into_iter()
            .filter(|r| r.event_type == event_type)
            .collect()
    }

    fn successes(&self, path: &str, event_type: &str) -> usize {
        self.of(path, event_type)
            .iter()
            .filter(|r| r.answer == Answer::Ok)
            .count()
    }

    async fn start(&self) -> String {
        let app = axum::Router::new()
            .route("/{path}", axum::routing::post(receive))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}")
    }
}

async fn receive(
    State(r): State<Receiver>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let event_id = header("voxanne-event-id");
    let event_type = header("voxanne-event-type");
    let answer = {
        let mut book = r.0.lock().unwrap();
        let earlier = book
            .requests
            .iter()
            .filter(|q| q.path == path && q.event_id == event_id)
            .count();
        let answer = if book.always_fail {
            Answer::Fail
        } else {
            book.plans
                .get(&(path.clone(), event_type.clone()))
                .and_then(|p| p.get(earlier).copied())
                .unwrap_or(Answer::Ok)
        };
        book.requests.push(Received {
            path,
            event_id,
            event_type,
            signature: header("voxanne-signature"),
            content_type: header("content-type"),
            body,
            answer,
            at: Utc::now().timestamp(),
        });
        answer
    };
    match answer {
        Answer::Ok => (AxumStatus::OK, "thanks").into_response(),
        Answer::Fail => (AxumStatus::INTERNAL_SERVER_ERROR, "receiver broke").into_response(),
        Answer::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    }
}

/// What a receiver does, written independently of the server's code: the `t` of the header if
/// its `v1` is HMAC-SHA256(secret, "<t>.<body>") in hex.
fn verified_time(secret: &str, header: &str, body: &str) -> Option<i64> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = Some(v.to_string()),
            _ => {}
        }
    }
    let t = t?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (v1? == expected).then_some(t)
}

/// Polls `cond` until it holds; after [`DEADLINE`], panics with `what` and what `receiver` got.
async fn until(receiver: &Receiver, what: &str, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        if tokio::time::Instant::now() >= end {
            let got: Vec<_> = receiver
                .requests()
                .iter()
                .map(|r| format!("{} {} {:?}", r.path, r.event_type, r.answer))
                .collect();
            panic!("timed out waiting: {what}; the receiver got {got:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- the server and its tenants -------------------------------------------------------------

struct Rig {
    server: api::Server,
    http: reqwest::Client,
    base: String,
}

impl Rig {
    fn new(server: api::Server) -> Rig {
        let base = base_url(&server);
        Rig {
            server,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            base,
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {token}"));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let bytes = resp.bytes().await.expect("body");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{method} {path}: not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        // Every answer is the one the OpenAPI document promises.
        let doc: Value = serde_json::from_str(api::staff::OPENAPI).expect("the document");
        let problems =
            common::schema::response_errors(&doc, method.as_str(), path, status.as_u16(), &value);
        assert!(
            problems.is_empty(),
            "{method} {path}: {problems:#?}\n{value:#}"
        );
        (status, value)
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, token, None).await
    }

    async fn login(&self, email: &str) -> String {
        let resp = self
            .http
            .post(format!("{}/api/v1/auth/login", self.base))
            .header("content-type", "application/json")
            .body(json!({ "email": email, "password": PASSWORD }).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        v["access_token"].as_str().unwrap().to_string()
    }

    /// Says each line to a new receptionist chat of the token's organisation.
    async fn chat(&self, token: &str, lines: &[&str]) -> Vec<String> {
        let (s, v) = self
            .send(Method::POST, "/api/v1/chat", token, Some(json!({})))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let session = v["session"].as_str().unwrap().to_string();
        let mut said = Vec::new();
        for line in lines {
            let (s, v) = self
                .send(
                    Method::POST,
                    "/api/v1/chat",
                    token,
                    Some(json!({ "session": session, "text": line })),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            said.extend(
                v["reply"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap_or("").to_string()),
            );
        }
        said
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

fn items(v: &Value) -> &Vec<Value> {
    v["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {v}"))
}

struct Tenant {
    org: OrgId,
    admin: String,
    staff: String,
    key: String,
    number: String,
}

/// The example clinic (knowledge left out: no embedding model needed) as `slug` on `number`.
fn clinic_file(slug: &str, number: &str) -> receptionist::clinic::ClinicFile {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bright-smile.toml");
    let mut file = api::clinic::read_file(&path).expect("the example clinic reads");
    file.knowledge.clear();
    file.clinic.id = slug.to_string();
    file.clinic.name = slug.to_string();
    file.clinic.numbers = vec![number.to_string()];
    file
}

async fn tenant(rig: &Rig, slug: &str, number: &str) -> Tenant {
    let store = rig.server.state.store();
    let org = api::clinic::apply(store, clinic_file(slug, number), None)
        .await
        .expect("clinic applies")
        .org;
    let admin_email = format!("admin@{slug}.example");
    auth::create_user(store, org, &admin_email, "Admin", Role::Admin, PASSWORD)
        .await
        .unwrap();
    let staff_email = format!("desk@{slug}.example");
    auth::create_user(store, org, &staff_email, "Desk", Role::Staff, PASSWORD)
        .await
        .unwrap();
    let (_, key) = auth::create_api_key(store, org, "crm", Role::Admin)
        .await
        .unwrap();
    Tenant {
        org,
        admin: rig.login(&admin_email).await,
        staff: rig.login(&staff_email).await,
        key,
        number: number.into(),
    }
}

/// A registered endpoint: its id and the secret shown once.
struct Endpoint {
    id: String,
    secret: String,
}

async fn create_endpoint(rig: &Rig, token: &str, url: &str, events: Option<&[&str]>) -> Endpoint {
    let mut body = json!({ "url": url });
    if let Some(e) = events {
        body["events"] = json!(e);
    }
    let (s, v) = rig
        .send(Method::POST, "/api/v1/webhooks", token, Some(body))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let secret = v["secret"].as_str().unwrap().to_string();
    assert!(
        secret.starts_with("whsec_") && secret.len() > 40,
        "{secret}"
    );
    Endpoint {
        id: v["id"].as_str().unwrap().to_string(),
        secret,
    }
}

/// `ms` of a voiced, speech-loud tone (the VAD hears it as speech).
fn speech_like(ms: usize) -> Vec<i16> {
    (0..ms * 8)
        .map(|i| {
            let t = i as f64 / 8000.0;
            ((t * 220.0 * std::f64::consts::TAU).sin() * 6000.0
                + (t * 660.0 * std::f64::consts::TAU).sin() * 2000.0) as i16
        })
        .collect()
}

/// One short call from `from` to `to` through the simulated Twilio; returns its CallSid once its
/// record has landed.
async fn call(rig: &Rig, from: &str, to: &str) -> String {
    let mut cfg = caller(&rig.server);
    cfg.from = from.to_string();
    cfg.to = to.to_string();
    let script = vec![Line::Speak {
        audio: speech_like(1_200),
        start: LineStart::AfterAgent {
            pause: Duration::from_millis(400),
        },
    }];
    let report = place_call(&cfg, &script).await.expect("call");
    assert_eq!(report.protocol_errors, 0);
    let sid = report.call_sid.clone();
    let store = rig.server.state.store().clone();
    let org = org_of(&report);
    for _ in 0..600 {
        drain_writes(&rig.server).await;
        if store
            .get_call(org, &CallSid(sid.clone()))
            .await
            .unwrap()
            .is_some_and(|c| c.end_reason.is_some())
        {
            return sid;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("call {sid} never finished its record");
}

fn server_config(dir: &std::path::Path, url: Option<String>, retries: &str) -> api::config::Config {
    config(
        dir,
        url,
        &[
            ("VOXANNE_WEBHOOK_RETRIES", retries),
            ("VOXANNE_WEBHOOK_TIMEOUT", TIMEOUT),
        ],
    )
}

/// [`server_config`] with the server key given (hex).
fn keyed_config(
    dir: &std::path::Path,
    url: Option<String>,
    retries: &str,
    key: &str,
) -> api::config::Config {
    config(
        dir,
        url,
        &[
            ("VOXANNE_WEBHOOK_RETRIES", retries),
            ("VOXANNE_WEBHOOK_TIMEOUT", TIMEOUT),
            ("VOXANNE_SECRET_KEY", key),
        ],
    )
}

/// Every request `r` carries: JSON, the event's id and type in the headers as in the body, a
/// signature that verifies with `secret` (and with no other), made within the last minutes.
fn assert_signed(r: &Received, secret: &str, other_secret: &str) -> Value {
    assert_eq!(r.content_type, "application/json", "{r:?}");
    let body: Value = serde_json::from_str(&r.body).expect("the body is JSON");
    assert_eq!(body["id"], json!(r.event_id), "{r:?}");
    assert_eq!(body["type"], json!(r.event_type), "{r:?}");
    assert!(r.event_id.starts_with("evt_"), "{r:?}");
    let t = verified_time(secret, &r.signature, &r.body)
        .unwrap_or_else(|| panic!("signature does not verify: {r:?}"));
    assert!(
        verified_time(other_secret, &r.signature, &r.body).is_none(),
        "another secret verifies too: {r:?}"
    );
    assert!(
        verified_time(secret, &r.signature, &r.body.replacen('{', "{ ", 1)).is_none(),
        "a changed body still verifies"
    );
    assert!(
        (r.at - t).abs() <= 60,
        "signed at {t}, received at {}",
        r.at
    );
    body
}

// ---- the tests --------------------------------------------------------------------------------

async fn deliveries_retried_signed_and_once(backend: Backend) {
    let receiver = Receiver::default();
    let hooks = receiver.start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(backend).await;
    let rig = Rig::new(start_with(server_config(dir.path(), url, FAST_RETRIES)).await);
    let a = tenant(&rig, "clinic-a", NUMBER_A).await;
    let b = tenant(&rig, "clinic-b", NUMBER_B).await;

    validation(&rig, &a).await;

    let ea = create_endpoint(&rig, &a.admin, &format!("{hooks}/a"), None).await;
    let ea_msgs = create_endpoint(
        &rig,
        &a.key,
        &format!("{hooks}/a-messages"),
        Some(&["message.taken"]),
    )
    .await;
    let eb = create_endpoint(&rig, &b.admin, &format!("{hooks}/b"), None).await;
    // A's endpoint fails call.started twice with 500, and hangs on call.ended once.
    receiver.plan("a", "call.started", &[Answer::Fail, Answer::Fail]);
    receiver.plan("a", "call.ended", &[Answer::Hang]);

    // The secret is shown once: never in a listing or a read.
    let (s, v) = rig.get("/api/v1/webhooks", &a.staff).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(items(&v).len(), 2, "{v}");
    assert!(!v.to_string().contains(&ea.secret), "{v}");
    let (s, v) = rig
        .get(&format!("/api/v1/webhooks/{}", ea.id), &a.staff)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v.get("secret").is_none(), "{v}");
    assert_eq!(
        v["events"].as_array().unwrap().len(),
        5,
        "no list: every type: {v}"
    );

    // An endpoint whose receiver never recovers: the booking is given up on after six attempts.
    let ea_broken = create_endpoint(
        &rig,
        &a.admin,
        &format!("{hooks}/a-broken"),
        Some(&["appointment.booked"]),
    )
    .await;
    receiver.plan("a-broken", "appointment.booked", &[Answer::Fail; 6]);

    // A call to clinic A: call.started and call.ended.
    let sid = call(&rig, "+447700900001", &a.number).await;
    until(&receiver, "A's call events delivered", || {
        receiver.successes("a", "call.started") == 1 && receiver.successes("a", "call.ended") == 1
    })
    .await;
    let started = receiver.of("a", "call.started");
    assert_eq!(
        started.iter().map(|r| r.answer).collect::<Vec<_>>(),
        [Answer::Fail, Answer::Fail, Answer::Ok],
        "two failures, then the one success"
    );
    assert!(
        started.iter().all(|r| r.event_id == started[0].event_id),
        "every retry carries the same event id"
    );
    assert!(
        started.windows(2).all(|w| w[0].body == w[1].body),
        "the body is the same on every attempt"
    );
    for r in &started {
        let body = assert_signed(r, &ea.secret, &eb.secret);
        assert_eq!(body["org_id"], json!(a.org.0.to_string()));
        assert_eq!(body["data"]["sid"], json!(sid));
        assert_eq!(body["data"]["to"], json!(a.number));
    }
    let ended = receiver.of("a", "call.ended");
    assert_eq!(
        ended.iter().map(|r| r.answer).collect::<Vec<_>>(),
        [Answer::Hang, Answer::Ok],
        "the hung attempt timed out and was retried"
    );
    let body = assert_signed(&ended[1], &ea.secret, &eb.secret);
    assert_eq!(body["data"]["sid"], json!(sid));
    assert!(body["data"]["outcome"].is_string(), "{body}");
    assert!(body["data"]["summary"].is_string(), "{body}");
    assert!(body["data"]["end_reason"].is_string(), "{body}");

    // A booking and a message through the receptionist chat.
    let said = rig
        .chat(
            &a.staff,
            &[
                "I'd like to book a check-up next Tuesday at 10am",
                "Sam Jones",
                "07700 900123",
                "yes please",
                "I'd like to leave a message",
                "please ask Dr Patel to call me about my results",
                "Sam Jones",
                "07700 900123",
            ],
        )
        .await;
    assert!(
        said.iter().any(|s| s.contains("booked in")),
        "the chat booked: {said:?}"
    );
    assert!(
        said.iter().any(|s| s.contains("passed that on")),
        "the chat took the message: {said:?}"
    );
    until(&receiver, "A's booking and message delivered", || {
        receiver.successes("a", "appointment.booked") == 1
            && receiver.successes("a", "message.taken") == 1
            && receiver.successes("a-messages", "message.taken") == 1
    })
    .await;
    let booked = assert_signed(
        &receiver.of("a", "appointment.booked")[0],
        &ea.secret,
        &eb.secret,
    );
    assert_eq!(booked["data"]["appointment"]["service"], "Check-up");
    assert_eq!(booked["data"]["appointment"]["name"], "Sam Jones");
    let taken = assert_signed(
        &receiver.of("a-messages", "message.taken")[0],
        &ea_msgs.secret,
        &ea.secret,
    );
    assert!(
        taken["data"]["message"]["reason"]
            .as_str()
            .unwrap()
            .contains("Dr Patel"),
        "{taken}"
    );
    until(&receiver, "the broken endpoint tried six times", || {
        receiver.of("a-broken", "appointment.booked").len() == 6
    })
    .await;
    let booked_id = receiver.of("a", "appointment.booked")[0].event_id.clone();
    // The sixth attempt's outcome lands just after the receiver answered it.
    let end = tokio::time::Instant::now() + DEADLINE;
    let (failed, v) = loop {
        let (s, v) = rig
            .get(
                &format!("/api/v1/webhooks/{}/deliveries", ea_broken.id),
                &a.staff,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let d = items(&v).first().cloned().unwrap_or(Value::Null);
        if d["status"] == "failed" {
            break (d, v);
        }
        assert!(tokio::time::Instant::now() < end, "never failed: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(items(&v).len(), 1, "{v}");
    assert_eq!(failed["event_id"], json!(booked_id), "{v}");
    assert_eq!(failed["status"], "failed", "{v}");
    assert_eq!(failed["attempts"], 6, "{v}");
    assert_eq!(failed["last_status"], 500, "{v}");
    assert_eq!(failed["last_error"], "HTTP 500: receiver broke", "{v}");
    assert!(failed["delivered_at"].is_null() && failed["next_attempt_at"].is_null());
    let a_message_id = &receiver.of("a", "message.taken")[0].event_id;
    assert_eq!(
        a_message_id,
        &receiver.of("a-messages", "message.taken")[0].event_id,
        "one event, one id, whichever endpoint"
    );
    assert!(
        receiver
            .on("a-messages")
            .iter()
            .all(|r| r.event_type == "message.taken"),
        "an endpoint gets only the types it asked for"
    );

    // Clinic B's call: its events go to B's endpoint, and none of A's ever did.
    let b_sid = call(&rig, "+447700900002", &b.number).await;
    until(&receiver, "B's call events delivered", || {
        receiver.successes("b", "call.started") == 1 && receiver.successes("b", "call.ended") == 1
    })
    .await;
    for r in receiver.on("b") {
        let body = assert_signed(&r, &eb.secret, &ea.secret);
        assert_eq!(body["org_id"], json!(b.org.0.to_string()), "{body}");
        assert_eq!(body["data"]["sid"], json!(b_sid), "{body}");
    }
    for path in ["a", "a-messages"] {
        for r in receiver.on(path) {
            assert!(!r.body.contains(&b_sid), "B's call reached A: {r:?}");
        }
    }

    // Exactly once: after B's later deliveries went out, each of A's events had one success
    // and nothing more came.
    let mut per_event: HashMap<(String, String), usize> = HashMap::new();
    for r in receiver.requests() {
        if r.answer == Answer::Ok {
            *per_event
                .entry((r.path.clone(), r.event_id.clone()))
                .or_default() += 1;
        }
    }
    // A: call.started, call.ended, appointment.booked, message.taken; A's message endpoint:
    // message.taken; B: call.started, call.ended.
    assert_eq!(per_event.len(), 7, "{per_event:?}");
    assert_eq!(
        receiver.of("a-broken", "appointment.booked").len(),
        6,
        "no seventh try"
    );
    assert!(per_event.values().all(|&n| n == 1), "{per_event:?}");
    assert_eq!(receiver.of("a", "call.started").len(), 3);
    assert_eq!(receiver.of("a", "call.ended").len(), 2);

    delivery_log(&rig, &a, &ea, &started[0].event_id, &ended[0].event_id).await;
    cross_org(&rig, &a, &b, &ea).await;
    metrics(&rig).await;

    // A deleted endpoint is gone for its own organisation too.
    let (s, v) = rig
        .send(
            Method::DELETE,
            &format!("/api/v1/webhooks/{}", ea_msgs.id),
            &a.staff,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "staff cannot delete: {v}");
    let (s, _) = rig
        .send(
            Method::DELETE,
            &format!("/api/v1/webhooks/{}", ea_msgs.id),
            &a.admin,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = rig
        .get(&format!("/api/v1/webhooks/{}", ea_msgs.id), &a.admin)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (_, v) = rig.get("/api/v1/webhooks", &a.admin).await;
    assert_eq!(items(&v).len(), 2, "{v}");
    let queued = rig
        .server
        .state
        .store()
        .enqueue_webhook(a.org, "evt_after_delete", "message.taken", "{}")
        .await
        .unwrap();
    assert_eq!(queued, 1, "only the endpoint left gets new events");

    rig.server.shutdown(Duration::from_secs(5)).await;
}

/// Bad URLs and unknown event types are a 400 with a stable code and every problem named;
/// only an admin makes endpoints.
async fn validation(rig: &Rig, a: &Tenant) {
    for (body, needle) in [
        (json!({ "url": "ftp://crm.example/hook" }), "http"),
        (json!({ "url": "not a url" }), "not a URL"),
        (json!({}), "url is required"),
        (
            json!({ "url": "https://user:pw@crm.example/h" }),
            "password",
        ),
        (
            json!({ "url": "https://crm.example/h", "events": ["call.started", "call.exploded"] }),
            "call.exploded",
        ),
    ] {
        let (s, v) = rig
            .send(
                Method::POST,
                "/api/v1/webhooks",
                &a.admin,
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(code(&v), "invalid_request", "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
        assert!(!v["error"]["details"].as_array().unwrap().is_empty(), "{v}");
    }
    let (s, v) = rig
        .send(
            Method::POST,
            "/api/v1/webhooks",
            &a.admin,
            Some(json!({ "url": "gopher://x", "events": ["nope"] })),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        v["error"]["details"].as_array().unwrap().len(),
        2,
        "every problem at once: {v}"
    );
    let (s, v) = rig
        .send(
            Method::POST,
            "/api/v1/webhooks",
            &a.admin,
            Some(json!({ "url": 5 })),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = rig
        .send(
            Method::POST,
            "/api/v1/webhooks",
            &a.staff,
            Some(json!({ "url": "https://crm.example/hook" })),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(code(&v), "forbidden");
    let (_, v) = rig.get("/api/v1/webhooks", &a.admin).await;
    assert!(items(&v).is_empty(), "nothing was made: {v}");
}

/// Staff read the log: newest first, attempts and the last status of each delivery, paged.
///
/// A delivery is recorded `delivered` once the sender has read the receiver's answer, a moment
/// after the receiver saw it: the log is read until all four are (or [`DEADLINE`]).
async fn delivery_log(rig: &Rig, a: &Tenant, ea: &Endpoint, started_id: &str, ended_id: &str) {
    let end = tokio::time::Instant::now() + DEADLINE;
    let v = loop {
        let (s, v) = rig
            .get(&format!("/api/v1/webhooks/{}/deliveries", ea.id), &a.staff)
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let done = items(&v).len() == 4 && items(&v).iter().all(|d| d["status"] == "delivered");
        if done || tokio::time::Instant::now() >= end {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = items(&v);
    assert_eq!(log.len(), 4, "{v}");
    let by_event = |id: &str| {
        log.iter()
            .find(|d| d["event_id"] == json!(id))
            .unwrap_or_else(|| panic!("{id} not in {v}"))
            .clone()
    };
    let started = by_event(started_id);
    assert_eq!(started["event_type"], "call.started");
    assert_eq!(started["status"], "delivered");
    assert_eq!(started["attempts"], 3);
    assert_eq!(started["last_status"], 200);
    assert!(started["last_error"].is_null(), "{started}");
    assert!(started["delivered_at"].is_string(), "{started}");
    assert!(started["next_attempt_at"].is_null(), "{started}");
    assert_eq!(started["payload"]["id"], json!(started_id));
    let ended = by_event(ended_id);
    assert_eq!(ended["status"], "delivered");
    assert_eq!(ended["attempts"], 2);
    for d in log {
        assert_eq!(d["status"], "delivered", "{d}");
    }
    let created: Vec<&str> = log
        .iter()
        .map(|d| d["created_at"].as_str().unwrap())
        .collect();
    let mut sorted = created.clone();
    sorted.sort_by(|x, y| y.cmp(x));
    assert_eq!(created, sorted, "newest first");

    // Paged one at a time, the same four.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("?limit=1&cursor={c}"),
            None => "?limit=1".into(),
        };
        let (s, v) = rig
            .get(
                &format!("/api/v1/webhooks/{}/deliveries{q}", ea.id),
                &a.staff,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        paged.extend(items(&v).iter().map(|d| d["id"].clone()));
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(paged.len() <= 4, "paging does not end: {paged:?}");
    }
    assert_eq!(
        paged,
        log.iter().map(|d| d["id"].clone()).collect::<Vec<_>>()
    );
    let (s, v) = rig
        .get(
            &format!("/api/v1/webhooks/{}/deliveries?cursor=forged", ea.id),
            &a.staff,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, _) = rig
        .get(
            &format!("/api/v1/webhooks/{}/deliveries?limit=0", ea.id),
            &a.staff,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

/// Organisation B, with its admin token and its API key, cannot see, read the log of, or
/// delete A's endpoint; A's endpoint is unchanged afterwards.
async fn cross_org(rig: &Rig, a: &Tenant, b: &Tenant, ea: &Endpoint) {
    for token in [b.admin.as_str(), b.key.as_str()] {
        let (_, v) = rig.get("/api/v1/webhooks", token).await;
        assert!(
            !v.to_string().contains(&ea.id) && items(&v).len() == 1,
            "B lists only its own: {v}"
        );
        let (s, v) = rig.get(&format!("/api/v1/webhooks/{}", ea.id), token).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        assert_eq!(code(&v), "not_found");
        let (s, v) = rig
            .get(&format!("/api/v1/webhooks/{}/deliveries", ea.id), token)
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        let (s, v) = rig
            .send(
                Method::DELETE,
                &format!("/api/v1/webhooks/{}", ea.id),
                token,
                None,
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    }
    let (s, _) = rig.get("/api/v1/webhooks/not-a-uuid", &a.admin).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = rig
        .get(&format!("/api/v1/webhooks/{}", ea.id), &a.admin)
        .await;
    assert_eq!(s, StatusCode::OK, "A's endpoint is still there: {v}");
}

/// `/metrics` counts attempts by result and shows the queue.
///
/// An outcome is counted once the sender has read the receiver's answer, a moment after the
/// receiver saw the request: the counts are read until they are complete (or [`DEADLINE`]), then
/// checked exactly.
async fn metrics(rig: &Rig) {
    fn value(text: &str, line: &str) -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(line))
            .unwrap_or_else(|| panic!("no {line} in {text}"))
            .trim()
            .parse()
            .unwrap()
    }
    let end = tokio::time::Instant::now() + DEADLINE;
    let text = loop {
        let text = rig
            .http
            .get(format!("{}/metrics", rig.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let counted = value(
            &text,
            "voxanne_webhook_attempts_total{result=\"delivered\"}",
        ) + value(&text, "voxanne_webhook_attempts_total{result=\"retry\"}")
            + value(&text, "voxanne_webhook_attempts_total{result=\"failed\"}");
        // 7 delivered + 8 retried + 1 failed: every attempt the receiver saw.
        if counted >= 16 || tokio::time::Instant::now() >= end {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let value = |line: &str| value(&text, line);
    assert_eq!(
        value("voxanne_webhook_attempts_total{result=\"delivered\"}"),
        7
    );
    // call.started twice, call.ended once, the broken endpoint five times (then it failed).
    assert_eq!(value("voxanne_webhook_attempts_total{result=\"retry\"}"), 8);
    assert_eq!(
        value("voxanne_webhook_attempts_total{result=\"failed\"}"),
        1
    );
    assert_eq!(value("voxanne_webhook_deliveries_queued_total"), 8);
    assert_eq!(value("voxanne_webhook_events_dropped_total"), 0);
    assert!(text.contains("voxanne_webhook_pending "), "{text}");
}

/// A delivery the first process could not make (its receiver answered 500 every time) is still
/// pending when it stops; the server key is rotated (`voxanne secrets rotate`) meanwhile; the next
/// process, on the same database and with only the new key, delivers it once, signed with the
/// endpoint's unchanged secret.
async fn a_pending_delivery_survives_a_restart(backend: Backend) {
    let receiver = Receiver::default();
    let hooks = receiver.start().await;
    receiver.always_fail(true);
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(backend).await;
    // Two quick attempts, then many slower ones: the first process keeps failing and never
    // gives up, however slow its shutdown (28 × 2 s is far beyond it).
    let many = ["300ms", "300ms"]
        .into_iter()
        .chain(std::iter::repeat_n("2s", 28))
        .collect::<Vec<_>>()
        .join(",");
    let (old_key, new_key) = ([0x11u8; 32], [0x22u8; 32]);
    let hex = |k: [u8; 32]| k.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let rig =
        Rig::new(start_with(keyed_config(dir.path(), url.clone(), &many, &hex(old_key))).await);
    let a = tenant(&rig, "clinic-a", NUMBER_A).await;
    let ea = create_endpoint(&rig, &a.admin, &format!("{hooks}/a"), None).await;
    rig.chat(
        &a.staff,
        &[
            "I'd like to leave a message",
            "please call me about my invoice",
            "Sam Jones",
            "07700 900123",
        ],
    )
    .await;
    until(&receiver, "the first process tried twice", || {
        receiver.of("a", "message.taken").len() >= 2
    })
    .await;
    let event_id = receiver.of("a", "message.taken")[0].event_id.clone();
    rig.server.shutdown(Duration::from_secs(5)).await;
    let tried_before = receiver.of("a", "message.taken");
    assert!(tried_before.iter().all(|r| r.answer == Answer::Fail));

    // The key is rotated while the server is down: every sealed secret, the endpoint's
    // included, is re-sealed with the new key.
    let store = storage::Store::open(url.as_deref(), dir.path())
        .await
        .unwrap();
    let keys = api::staff::crypto::Keys::from_bytes(new_key, &[old_key]);
    let resealed = api::staff::resources::rotate_secrets(&store, &keys)
        .await
        .map_err(|e| e.message)
        .unwrap();
    assert_eq!(resealed, 1, "the endpoint's secret");
    store.close().await;

    // The receiver is fixed; a new process on the same data and database, with the new key
    // only.
    receiver.always_fail(false);
    let rig =
        Rig::new(start_with(keyed_config(dir.path(), url, FAST_RETRIES, &hex(new_key))).await);
    until(&receiver, "the new process delivered it", || {
        receiver.successes("a", "message.taken") == 1
    })
    .await;
    let all = receiver.of("a", "message.taken");
    assert!(all.iter().all(|r| r.event_id == event_id), "{all:?}");
    let success = all.iter().find(|r| r.answer == Answer::Ok).unwrap();
    assert_signed(success, &ea.secret, "whsec_not-the-secret");
    // Tokens and the key survive the restart (same data directory).
    let token = rig.login("admin@clinic-a.example").await;
    // Recorded once the sender has read the answer, a moment after the receiver saw it.
    let end = tokio::time::Instant::now() + DEADLINE;
    let v = loop {
        let (s, v) = rig
            .get(&format!("/api/v1/webhooks/{}/deliveries", ea.id), &token)
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        if items(&v)[0]["status"] == "delivered" || tokio::time::Instant::now() >= end {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let d = &items(&v)[0];
    assert_eq!(d["event_id"], json!(event_id));
    assert_eq!(d["status"], "delivered");
    assert_eq!(d["last_status"], 200);
    assert_eq!(
        d["attempts"],
        json!(all.len()),
        "every attempt counted, across both processes: {d}"
    );
    assert!(all.len() > tried_before.len());
    rig.server.shutdown(Duration::from_secs(5)).await;
}

/// A call that ends while the server is shutting down still has its `call.ended` queued: the
/// server waits for the event (published once the call's writes landed) before its webhook
/// enqueuer stops, so the next process delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_ending_during_shutdown_still_queues_call_ended() {
    let receiver = Receiver::default();
    let hooks = receiver.start().await;
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::new(start_with(server_config(dir.path(), None, FAST_RETRIES)).await);
    let a = tenant(&rig, "clinic-a", NUMBER_A).await;
    let ea = create_endpoint(&rig, &a.admin, &format!("{hooks}/a"), None).await;
    // The caller says a line, then holds until the server is stopping; then says another and
    // hangs up, so the call ends during the shutdown's drain.
    let mut cfg = caller(&rig.server);
    cfg.from = "+447700900003".into();
    cfg.to = a.number.clone();
    let (release, hold) = tokio::sync::watch::channel(false);
    let script = vec![
        Line::Speak {
            audio: speech_like(1_200),
            start: LineStart::AfterAgent {
                pause: Duration::from_millis(400),
            },
        },
        Line::HoldUntil(hold),
        Line::Speak {
            audio: speech_like(1_000),
            start: LineStart::AfterAgent {
                pause: Duration::from_millis(400),
            },
        },
    ];
    let call = tokio::spawn(async move { place_call(&cfg, &script).await });
    until(&receiver, "call.started delivered", || {
        receiver.successes("a", "call.started") == 1
    })
    .await;
    let Rig { server, base, .. } = rig;
    let stopping = tokio::spawn(server.shutdown(Duration::from_secs(120)));
    // The server stops accepting connections first: then the call is let go.
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        let fresh = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        if fresh.get(format!("{base}/health")).send().await.is_err() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "the server never stopped accepting"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    release.send(true).unwrap();
    let report = call.await.unwrap().expect("the call");
    assert_eq!(report.protocol_errors, 0);
    tokio::time::timeout(DEADLINE, stopping)
        .await
        .expect("the shutdown ends")
        .unwrap();

    let store = storage::Store::open(None, dir.path()).await.unwrap();
    let endpoint = ea.id.parse().unwrap();
    let queued = store
        .list_webhook_deliveries(a.org, endpoint, None, 10)
        .await
        .unwrap();
    store.close().await;
    let types: Vec<&str> = queued.iter().map(|d| d.event_type.as_str()).collect();
    assert!(
        types.contains(&"call.ended"),
        "call.ended was queued before the process went: {types:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_sqlite() {
    deliveries_retried_signed_and_once(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_postgres() {
    deliveries_retried_signed_and_once(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_restart_sqlite() {
    a_pending_delivery_survives_a_restart(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_restart_postgres() {
    a_pending_delivery_survives_a_restart(Backend::Postgres).await;
}
