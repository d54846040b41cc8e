//! The staff API over HTTP against a real server and a real database (SQLite, and Postgres on a
//! throwaway cluster): sign-in, refresh, sign-out; expired, forged and revoked credentials;
//! one organisation's every endpoint refusing another's data; recordings served with exact
//! byte ranges; the live stream carrying only the caller's own organisation. Every response the
//! test receives is checked against the OpenAPI document the server serves (its documented status
//! and content type, its JSON body against the schema), and every documented success response must
//! have been seen.

mod common;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use api::caller::{Line, LineStart, place_call};
use api::staff::auth::{self, Role};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use storage::{CallSid, NewBooking, NewCallback, OrgId};

/// The example clinic's number (calls to it reach clinic A).
const NUMBER_A: &str = "+442071234567";
const NUMBER_B: &str = "+441610000001";
const PASSWORD: &str = "correct horse battery";

/// Everything one organisation has, and the credentials to reach it.
struct Tenant {
    org: OrgId,
    slug: String,
    admin_email: String,
    admin: String,
    staff: String,
    staff_user: String,
    key: String,
    key_id: String,
    sid: String,
    appointment: String,
    message: String,
    phone: String,
    chat: String,
}

struct Rig {
    server: api::Server,
    http: reqwest::Client,
    base: String,
    _dir: tempfile::TempDir,
    /// The OpenAPI document the server serves.
    doc: Value,
    /// The documented responses (path, method, status) real responses were checked against.
    seen: Mutex<BTreeSet<(String, String, u16)>>,
}

impl Rig {
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("request");
        self.read_json(&method, path, resp).await
    }

    /// The response's JSON body (`Null` when empty), checked against the document.
    async fn read_json(
        &self,
        method: &Method,
        path: &str,
        resp: reqwest::Response,
    ) -> (StatusCode, Value) {
        let status = resp.status();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
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
        self.conforms(
            method,
            path,
            status,
            content_type.as_deref(),
            Some((&value, bytes.is_empty())),
        );
        (status, value)
    }

    /// The path template `path` (query ignored) reaches: the documented one with the fewest
    /// parameters, as the router prefers `/calls/outbound` to `/calls/{sid}`.
    fn template(&self, path: &str) -> Option<String> {
        let path = path.split('?').next().unwrap();
        let segments: Vec<&str> = path.split('/').collect();
        self.doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|t| {
                let ts: Vec<&str> = t.split('/').collect();
                ts.len() == segments.len()
                    && ts.iter().zip(&segments).all(|(t, s)| {
                        (t.starts_with('{') && t.ends_with('}') && !s.is_empty()) || t == s
                    })
            })
            .min_by_key(|t| t.matches('{').count())
            .cloned()
    }

    /// Checks a real response against the document: its path, method and status are documented
    /// (2xx and 4xx each by its own status; only 5xx may fall to `default`), its content type is
    /// a documented one, and its body (when read: `(value, was empty)`) matches the schema, an
    /// error's code being the one its documented example names; no body where none is
    /// documented. A path no template matches must be the JSON 404 of the catch-all.
    fn conforms(
        &self,
        method: &Method,
        path: &str,
        status: StatusCode,
        content_type: Option<&str>,
        body: Option<(&Value, bool)>,
    ) {
        let what = format!("{method} {path} ({status})");
        let Some(template) = self.template(path) else {
            assert_eq!(status, StatusCode::NOT_FOUND, "{what}: not documented");
            if let Some((v, _)) = body {
                let e =
                    schema::errors(&self.doc, &json!({"$ref": "#/components/schemas/Error"}), v);
                assert!(e.is_empty(), "{what}: {e:?}: {v}");
            }
            return;
        };
        let m = method.as_str().to_lowercase();
        let op = &self.doc["paths"][&template][&m];
        assert!(op.is_object(), "{what}: {m} {template} is not documented");
        let code = status.as_u16().to_string();
        let response = match op["responses"].get(&code) {
            Some(r) => r,
            None if status.is_server_error() => &op["responses"]["default"],
            None => panic!("{what}: status {code} is not documented for {m} {template}"),
        };
        let response = deref(&self.doc, response);
        assert!(response.is_object(), "{what}: no documented response");
        match response.get("content").and_then(Value::as_object) {
            None => {
                if let Some((v, empty)) = body {
                    assert!(empty, "{what}: a body where none is documented: {v}");
                }
            }
            Some(content) => {
                let ct = content_type.unwrap_or_else(|| panic!("{what}: no content type"));
                let media = ct.split(';').next().unwrap().trim();
                let documented = content
                    .get(media)
                    .unwrap_or_else(|| panic!("{what}: content type {ct} is not documented"));
                if let Some((v, _)) = body {
                    assert_eq!(media, "application/json", "{what}");
                    let e = schema::errors(&self.doc, &documented["schema"], v);
                    assert!(
                        e.is_empty(),
                        "{what}: the body does not match the documented schema: {e:#?}\n{v:#}"
                    );
                    if let Some(code) = documented["example"]["error"]["code"].as_str() {
                        assert_eq!(v["error"]["code"], code, "{what}: {v}");
                    }
                }
            }
        }
        self.seen
            .lock()
            .unwrap()
            .insert((template, m, status.as_u16()));
    }

    /// Every documented success response was met by a real one and checked. The webhooks'
    /// endpoints are checked where they are tested (tests/tests/webhooks.rs).
    fn every_success_response_was_seen(&self) {
        let seen = self.seen.lock().unwrap();
        let mut unseen = Vec::new();
        for (path, method, op) in operations(&self.doc) {
            if path.starts_with("/api/v1/webhooks") {
                continue;
            }
            for status in op["responses"].as_object().unwrap().keys() {
                let Ok(s) = status.parse::<u16>() else {
                    continue;
                };
                let key = (path.to_string(), method.to_string(), s);
                if (200..300).contains(&s) && !seen.contains(&key) {
                    unseen.push(key);
                }
            }
        }
        assert!(
            unseen.is_empty(),
            "documented success responses no request of this test met: {unseen:?}"
        );
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, Some(token), None).await
    }

    async fn login(&self, email: &str, password: &str) -> (StatusCode, Value) {
        self.send(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({ "email": email, "password": password })),
        )
        .await
    }

    /// A GET whose body the caller reads (audio, events): its status and content type are
    /// checked against the document.
    async fn raw(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.http.get(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request");
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        self.conforms(
            &Method::GET,
            path,
            resp.status(),
            content_type.as_deref(),
            None,
        );
        resp
    }
}

/// A response object, following a `$ref` to `#/components/responses/…`.
fn deref<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => schema::resolve(doc, r).unwrap_or_else(|| panic!("{r} does not resolve")),
        None => v,
    }
}

/// Every operation of the document: (path, method, operation).
fn operations(doc: &Value) -> Vec<(&str, &str, &Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().unwrap() {
            if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                out.push((path.as_str(), method.as_str(), op));
            }
        }
    }
    out
}

fn document() -> Value {
    serde_json::from_str(api::staff::OPENAPI).expect("the OpenAPI document is JSON")
}

use common::schema;

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

fn items(v: &Value) -> &Vec<Value> {
    v["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {v}"))
}

fn ids(v: &Value, field: &str) -> BTreeSet<String> {
    items(v)
        .iter()
        .map(|i| match &i[field] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// The example clinic file with its knowledge left out (knowledge is stored directly below, so
/// the test needs no embedding model), as clinic `slug` on `number`.
fn clinic_file(slug: &str, name: &str, number: &str) -> receptionist::clinic::ClinicFile {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bright-smile.toml");
    let mut file = api::clinic::read_file(&path).expect("the example clinic reads");
    file.knowledge.clear();
    file.clinic.id = slug.to_string();
    file.clinic.name = name.to_string();
    file.clinic.numbers = vec![number.to_string()];
    file
}

/// One short call from `from` to `to`: the scripted recogniser hears the test lines.
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
    // Wait for the call's record (and recording) to be complete.
    let store = rig.server.state.store().clone();
    let org = org_of(&report);
    for _ in 0..300 {
        drain_writes(&rig.server).await;
        let done = store
            .get_call(org, &CallSid(sid.clone()))
            .await
            .unwrap()
            .is_some_and(|c| c.end_reason.is_some());
        if done
            && store
                .get_recording(org, &CallSid(sid.clone()))
                .await
                .unwrap()
                .is_some()
        {
            return sid;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("call {sid} never finished its record");
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

async fn tenant(rig: &Rig, slug: &str, number: &str, caller_no: &str) -> Tenant {
    let store = rig.server.state.store();
    let summary = api::clinic::apply(store, clinic_file(slug, slug, number), None)
        .await
        .expect("clinic applies");
    let org = summary.org;
    let admin_email = format!("admin@{slug}.example");
    auth::create_user(store, org, &admin_email, "Admin", Role::Admin, PASSWORD)
        .await
        .unwrap();
    let staff_email = format!("desk@{slug}.example");
    let staff_user = auth::create_user(store, org, &staff_email, "Desk", Role::Staff, PASSWORD)
        .await
        .unwrap()
        .to_string();
    let (key_id, key) = auth::create_api_key(store, org, "crm", Role::Admin)
        .await
        .unwrap();
    store
        .replace_knowledge(
            org,
            &[storage::KnowledgeChunk {
                id: format!("{slug}/parking"),
                title: format!("Parking at {slug}"),
                text: "Free parking behind the building.".into(),
                model: "test".into(),
                embedding: vec![0.5; 8],
            }],
        )
        .await
        .unwrap();

    let (s, v) = rig.login(&admin_email, PASSWORD).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let admin = v["access_token"].as_str().unwrap().to_string();
    let (s, v) = rig.login(&staff_email, PASSWORD).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let staff = v["access_token"].as_str().unwrap().to_string();

    let sid = call(rig, caller_no, number).await;
    let call_row = store
        .get_call(org, &CallSid(sid.clone()))
        .await
        .unwrap()
        .expect("the call is the clinic's");
    assert_eq!(call_row.to, number);

    let start = Utc::now() + chrono::Duration::days(2);
    let booked = store
        .book_appointment(&NewBooking {
            org,
            idempotency_key: format!("{slug}-booking"),
            call_sid: Some(CallSid(sid.clone())),
            phone: caller_no.into(),
            name: format!("Patient of {slug}"),
            service: "cleaning".into(),
            starts_at: start,
            ends_at: start + chrono::Duration::minutes(30),
        })
        .await
        .unwrap();
    let appointment = match booked {
        storage::BookOutcome::Booked(a) | storage::BookOutcome::AlreadyBooked(a) => {
            a.id.to_string()
        }
        other => panic!("not booked: {other:?}"),
    };
    let message = store
        .take_message(&NewCallback {
            org,
            idempotency_key: format!("{slug}-message"),
            call_sid: Some(CallSid(sid.clone())),
            name: format!("Caller of {slug}"),
            phone: caller_no.into(),
            reason: "call me back about my bill".into(),
            urgent: true,
        })
        .await
        .unwrap()
        .id
        .to_string();
    let (s, v) = rig
        .send(
            Method::PUT,
            "/api/v1/secrets/twilio_auth_token",
            Some(&admin),
            Some(json!({ "value": format!("token-of-{slug}") })),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (s, v) = rig
        .send(Method::POST, "/api/v1/chat", Some(&admin), Some(json!({})))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let chat = v["session"].as_str().unwrap().to_string();

    Tenant {
        org,
        slug: slug.into(),
        admin_email,
        admin,
        staff,
        staff_user,
        key,
        key_id: key_id.to_string(),
        sid,
        appointment,
        message,
        phone: caller_no.into(),
        chat,
    }
}

async fn rig(backend: Backend) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let twilio = fake_twilio().await;
    let url = database_url(backend).await;
    let server = start_with(config(
        dir.path(),
        url,
        &[("VOXANNE_TWILIO_API_URL", twilio.as_str())],
    ))
    .await;
    let base = base_url(&server);
    Rig {
        server,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        base,
        _dir: dir,
        doc: document(),
        seen: Mutex::new(BTreeSet::new()),
    }
}

/// The Twilio account clinic A's secrets name: the fake Twilio below places its calls.
const TWILIO_ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
/// The CallSid the fake Twilio gives a placed call.
const PLACED_SID: &str = "CAfeedfacefeedfacefeedfacefeedface";

/// Twilio's call-creating endpoint: places calls for [`TWILIO_ACCOUNT`], refuses any other
/// account as Twilio does (401, code 20003). Returns its base URL.
async fn fake_twilio() -> String {
    async fn create_call(
        axum::extract::Path(account): axum::extract::Path<String>,
    ) -> (axum::http::StatusCode, String) {
        if account == TWILIO_ACCOUNT {
            (
                axum::http::StatusCode::CREATED,
                json!({ "sid": PLACED_SID, "status": "queued" }).to_string(),
            )
        } else {
            (
                axum::http::StatusCode::UNAUTHORIZED,
                json!({ "code": 20003, "message": "Authenticate", "status": 401 }).to_string(),
            )
        }
    }
    let app = axum::Router::new().route(
        "/2010-04-01/Accounts/{account}/Calls.json",
        axum::routing::post(create_call),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// The `/api/v1` routes the router declares, read from its source: the completeness check
/// below fails when a route is added without a cross-organisation test.
fn declared_routes() -> BTreeSet<String> {
    let sources = [
        include_str!("../../api/src/staff/mod.rs"),
        include_str!("../../api/src/staff/webhooks.rs"),
    ];
    let mut out = BTreeSet::new();
    for src in sources {
        for part in src.split("\"/api/v1/").skip(1) {
            let path = part.split('"').next().unwrap();
            if path != "{*rest}" {
                out.insert(format!("/api/v1/{path}"));
            }
        }
    }
    out
}

/// The paths the OpenAPI document describes.
fn documented_routes(doc: &Value) -> BTreeSet<String> {
    doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .cloned()
        .collect()
}

async fn staff_api(backend: Backend) {
    let rig = rig(backend).await;
    let a = tenant(&rig, "clinic-a", NUMBER_A, "+447700900001").await;
    let b = tenant(&rig, "clinic-b", NUMBER_B, "+447700900002").await;
    assert_ne!(a.org, b.org);

    auth_flows(&rig, &a, &b).await;
    cross_org(&rig, &a, &b).await;
    ranges(&rig, &a, &b).await;
    live_is_per_org(&rig, &a, &b).await;
    documented_and_declared(&rig).await;
    remaining_responses(&rig, &a, &b).await;
    sign_in_is_rate_limited(&rig, &a).await;
    rig.every_success_response_was_seen();

    rig.server.shutdown(Duration::from_secs(5)).await;
}

async fn auth_flows(rig: &Rig, a: &Tenant, b: &Tenant) {
    // Wrong password and unknown email: the same refusal.
    let (s, wrong) = rig.login(&a.admin_email, "not the password").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&wrong), "unauthorized", "{wrong}");
    let (s, unknown) = rig.login("nobody@nowhere.example", PASSWORD).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong["error"]["message"], unknown["error"]["message"]);
    // Malformed bodies are clear 400s.
    let resp = rig
        .http
        .post(format!("{}/api/v1/auth/login", rig.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (s, v) = rig
        .read_json(&Method::POST, "/api/v1/auth/login", resp)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(!code(&v).is_empty(), "{v}");

    // No credential, a garbage one, a non-Bearer scheme.
    for bad in [
        None,
        Some("garbage"),
        Some("vxa1.e30.AAAA"),
        Some("vxk_nothing"),
    ] {
        let (s, v) = rig.send(Method::GET, "/api/v1/me", bad, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{bad:?}: {v}");
        assert_eq!(code(&v), "unauthorized");
    }
    let resp = rig
        .raw(
            "/api/v1/me",
            &[("authorization", &format!("Basic {}", a.admin))],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Sign in, refresh, sign out.
    let (s, t) = rig.login(&a.admin_email, PASSWORD).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["user"]["role"], "admin");
    assert!(
        t.to_string().find("password").is_none(),
        "no hash leaks: {t}"
    );
    let access = t["access_token"].as_str().unwrap().to_string();
    let refresh = t["refresh_token"].as_str().unwrap().to_string();
    let (s, me) = rig.get("/api/v1/me", &access).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["org"]["id"], json!(a.org.0.to_string()), "{me}");

    let (s, t2) = rig
        .send(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(json!({ "refresh_token": refresh })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{t2}");
    let access2 = t2["access_token"].as_str().unwrap().to_string();
    let refresh2 = t2["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(refresh, refresh2);
    // A refresh token works once.
    let (s, v) = rig
        .send(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(json!({ "refresh_token": refresh })),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(rig.get("/api/v1/me", &access2).await.0, StatusCode::OK);

    // Expired: a token this server signed, an hour and more ago.
    let claims = token_claims(&access2);
    let user = uuid::Uuid::parse_str(claims["u"].as_str().unwrap()).unwrap();
    let session = uuid::Uuid::parse_str(claims["s"].as_str().unwrap()).unwrap();
    let old = auth::access_token(
        rig.server.state.keys(),
        a.org,
        user,
        session,
        Utc::now() - chrono::Duration::hours(3),
    );
    let (s, v) = rig.get("/api/v1/me", &old).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("expired"),
        "{v}"
    );

    // Forged: a flipped signature; claims moved to another organisation; another key's signature.
    let mut flipped = access2.clone().into_bytes();
    let last = flipped.len() - 2;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    assert_eq!(
        rig.get("/api/v1/me", &flipped).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (body, sig) = access2
        .strip_prefix("vxa1.")
        .unwrap()
        .split_once('.')
        .unwrap();
    let mut moved = claims.clone();
    moved["o"] = json!(b.org.0.to_string());
    let moved_body = URL_SAFE_NO_PAD.encode(moved.to_string());
    assert_ne!(moved_body, body);
    let moved = format!("vxa1.{moved_body}.{sig}");
    assert_eq!(
        rig.get("/api/v1/me", &moved).await.0,
        StatusCode::UNAUTHORIZED
    );
    let other_keys = api::staff::crypto::Keys::from_bytes([7u8; 32], &[]);
    let foreign = auth::access_token(&other_keys, a.org, user, session, Utc::now());
    assert_eq!(
        rig.get("/api/v1/me", &foreign).await.0,
        StatusCode::UNAUTHORIZED
    );
    // A token whose session belongs to another organisation's user, signed by us: refused too.
    let b_claims = token_claims(&b.admin);
    let crossed = auth::access_token(
        rig.server.state.keys(),
        a.org,
        uuid::Uuid::parse_str(b_claims["u"].as_str().unwrap()).unwrap(),
        uuid::Uuid::parse_str(b_claims["s"].as_str().unwrap()).unwrap(),
        Utc::now(),
    );
    assert_eq!(
        rig.get("/api/v1/me", &crossed).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Sign out: the access token and the refresh token stop working.
    let (s, _) = rig
        .send(Method::POST, "/api/v1/auth/logout", Some(&access2), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = rig.get("/api/v1/me", &access2).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let (s, _) = rig
        .send(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(json!({ "refresh_token": refresh2 })),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Other sessions of the same user are untouched.
    assert_eq!(rig.get("/api/v1/me", &a.admin).await.0, StatusCode::OK);

    // Roles: staff cannot manage users, keys, secrets or the clinic file.
    for path in ["/api/v1/users", "/api/v1/api-keys", "/api/v1/secrets"] {
        let (s, v) = rig.get(path, &a.staff).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {v}");
        assert_eq!(code(&v), "forbidden");
    }
    let (s, _) = rig.get("/api/v1/calls", &a.staff).await;
    assert_eq!(s, StatusCode::OK, "staff see calls");

    // API keys: work, are scoped to their organisation, and stop working when revoked.
    let (s, me) = rig.get("/api/v1/me", &a.key).await;
    assert_eq!(s, StatusCode::OK, "{me}");
    assert_eq!(me["org"]["id"], json!(a.org.0.to_string()));
    let wrong_secret = format!("{}x", &a.key[..a.key.len() - 1]);
    assert_eq!(
        rig.get("/api/v1/me", &wrong_secret).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (s, created) = rig
        .send(
            Method::POST,
            "/api/v1/api-keys",
            Some(&a.admin),
            Some(json!({ "name": "temporary", "role": "staff" })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let temp = created["key"].as_str().unwrap().to_string();
    let temp_id = created["id"].as_str().unwrap().to_string();
    let (_, listed) = rig.get("/api/v1/api-keys", &a.admin).await;
    assert!(
        !listed.to_string().contains(&temp),
        "a key is shown once, never listed"
    );
    assert_eq!(rig.get("/api/v1/calls", &temp).await.0, StatusCode::OK);
    let (s, _) = rig
        .send(
            Method::DELETE,
            &format!("/api/v1/api-keys/{temp_id}"),
            Some(&a.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = rig.get("/api/v1/calls", &temp).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");

    // A disabled user: signed-in sessions and new sign-ins are refused.
    let (s, created) = rig
        .send(
            Method::POST,
            "/api/v1/users",
            Some(&a.admin),
            Some(
                json!({ "email": "temp@clinic-a.example", "name": "Temp", "role": "staff",
                         "password": PASSWORD }),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let temp_user = created["id"].as_str().unwrap().to_string();
    let (s, t) = rig.login("temp@clinic-a.example", PASSWORD).await;
    assert_eq!(s, StatusCode::OK);
    let temp_access = t["access_token"].as_str().unwrap().to_string();
    let (s, _) = rig
        .send(
            Method::DELETE,
            &format!("/api/v1/users/{temp_user}"),
            Some(&a.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        rig.get("/api/v1/me", &temp_access).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        rig.login("temp@clinic-a.example", PASSWORD).await.0,
        StatusCode::UNAUTHORIZED
    );
    // A short password and a duplicate email are clear 4xx errors.
    let (s, v) = rig
        .send(
            Method::POST,
            "/api/v1/users",
            Some(&a.admin),
            Some(
                json!({ "email": "x@clinic-a.example", "name": "X", "role": "staff",
                         "password": "short" }),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = rig
        .send(
            Method::POST,
            "/api/v1/users",
            Some(&a.admin),
            Some(
                json!({ "email": a.admin_email, "name": "Again", "role": "staff",
                         "password": PASSWORD }),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
}

fn token_claims(token: &str) -> Value {
    let body = token
        .strip_prefix("vxa1.")
        .unwrap()
        .split('.')
        .next()
        .unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap()
}

/// Organisation B, with its own admin token and its own API key, asks for every one of A's
/// things: each is not found (or absent from B's lists), and A's data is unchanged afterwards.
async fn cross_org(rig: &Rig, a: &Tenant, b: &Tenant) {
    let mut covered: BTreeSet<&str> = BTreeSet::new();
    for token in [b.admin.as_str(), b.key.as_str()] {
        // Lists: B sees its own, never A's.
        let (s, v) = rig.get("/api/v1/calls", token).await;
        assert_eq!(s, StatusCode::OK);
        let calls = ids(&v, "sid");
        assert!(calls.contains(&b.sid) && !calls.contains(&a.sid), "{v}");
        let (_, v) = rig
            .get(
                &format!("/api/v1/calls?caller={}", a.phone.replace('+', "%2B")),
                token,
            )
            .await;
        assert!(items(&v).is_empty(), "{v}");
        let (_, v) = rig.get("/api/v1/calls?q=cleaning", token).await;
        assert!(!ids(&v, "sid").contains(&a.sid), "{v}");
        covered.insert("/api/v1/calls");

        let (s, v) = rig.get(&format!("/api/v1/calls/{}", a.sid), token).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        assert_eq!(code(&v), "not_found");
        covered.insert("/api/v1/calls/{sid}");
        let (s, v) = rig
            .get(&format!("/api/v1/calls/{}/recording", a.sid), token)
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        let (s, _) = rig
            .get(
                &format!("/api/v1/calls/{}/recording?mix=mono", a.sid),
                token,
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        covered.insert("/api/v1/calls/{sid}/recording");

        let (s, v) = rig
            .get(
                "/api/v1/appointments?from=2020-01-01T00:00:00Z&to=2020-12-31T00:00:00Z",
                token,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let (_, v) = rig.get("/api/v1/appointments", token).await;
        let appts = ids(&v, "id");
        assert!(
            appts.contains(&b.appointment) && !appts.contains(&a.appointment),
            "{v}"
        );
        covered.insert("/api/v1/appointments");

        let (_, v) = rig.get("/api/v1/contacts", token).await;
        assert!(!v.to_string().contains(&a.phone), "{v}");
        assert!(v.to_string().contains(&b.phone), "{v}");
        covered.insert("/api/v1/contacts");

        let (_, v) = rig.get("/api/v1/messages?status=all", token).await;
        let msgs = ids(&v, "id");
        assert!(
            msgs.contains(&b.message) && !msgs.contains(&a.message),
            "{v}"
        );
        covered.insert("/api/v1/messages");
        let (s, v) = rig
            .send(
                Method::POST,
                &format!("/api/v1/messages/{}/done", a.message),
                Some(token),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        covered.insert("/api/v1/messages/{id}/done");

        let (_, v) = rig.get("/api/v1/knowledge", token).await;
        let chunks = ids(&v, "id");
        assert!(
            chunks.contains(&format!("{}/parking", b.slug))
                && !chunks.contains(&format!("{}/parking", a.slug)),
            "{v}"
        );
        covered.insert("/api/v1/knowledge");

        let (_, v) = rig.get("/api/v1/numbers", token).await;
        let numbers = ids(&v, "e164");
        assert_eq!(numbers, BTreeSet::from([NUMBER_B.to_string()]), "{v}");
        covered.insert("/api/v1/numbers");

        let (_, v) = rig.get("/api/v1/clinic", token).await;
        assert_eq!(v["config"]["clinic"]["id"], json!(b.slug), "{v}");
        assert!(!v.to_string().contains(NUMBER_A), "{v}");
        // B cannot write A's clinic file (its id), nor claim A's number.
        let a_file = clinic_file(&a.slug, "Hijacked", NUMBER_A).to_toml();
        let (s, v) = put_toml(rig, token, &a_file).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        let grab = clinic_file(&b.slug, &b.slug, NUMBER_A).to_toml();
        let (s, v) = put_toml(rig, token, &grab).await;
        assert!(
            s == StatusCode::CONFLICT || s == StatusCode::BAD_REQUEST,
            "{s}: {v}"
        );
        covered.insert("/api/v1/clinic");

        let (_, v) = rig.get("/api/v1/users", token).await;
        assert!(!v.to_string().contains(&a.admin_email), "{v}");
        let (s, v) = rig
            .send(
                Method::DELETE,
                &format!("/api/v1/users/{}", a.staff_user),
                Some(token),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        covered.insert("/api/v1/users");
        covered.insert("/api/v1/users/{id}");

        let (_, v) = rig.get("/api/v1/api-keys", token).await;
        assert!(!ids(&v, "id").contains(&a.key_id), "{v}");
        let (s, v) = rig
            .send(
                Method::DELETE,
                &format!("/api/v1/api-keys/{}", a.key_id),
                Some(token),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        covered.insert("/api/v1/api-keys");
        covered.insert("/api/v1/api-keys/{id}");

        // Secrets are per organisation by name: B's listing and deletion touch only B's.
        let (_, v) = rig.get("/api/v1/secrets", token).await;
        assert!(
            !v.to_string().contains("token-of-"),
            "values never returned: {v}"
        );
        covered.insert("/api/v1/secrets");
        covered.insert("/api/v1/secrets/{name}");

        let (s, v) = rig
            .send(
                Method::POST,
                "/api/v1/chat",
                Some(token),
                Some(json!({ "session": a.chat, "text": "hello" })),
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        covered.insert("/api/v1/chat");

        let (s, v) = rig
            .send(
                Method::POST,
                "/api/v1/calls/outbound",
                Some(token),
                Some(json!({ "to": "+447700900123", "appointment_id": a.appointment })),
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        covered.insert("/api/v1/calls/outbound");

        let (_, v) = rig.get("/api/v1/me", token).await;
        assert_eq!(v["org"]["id"], json!(b.org.0.to_string()));
        covered.insert("/api/v1/me");
    }
    // B deleting "its" twilio_auth_token removes B's, not A's.
    let (s, _) = rig
        .send(
            Method::DELETE,
            "/api/v1/secrets/twilio_auth_token",
            Some(&b.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = rig
        .send(
            Method::DELETE,
            "/api/v1/secrets/twilio_auth_token",
            Some(&b.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "already gone: B's own, once");

    // A's things are all still there and unchanged.
    let (s, v) = rig.get(&format!("/api/v1/calls/{}", a.sid), &a.admin).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["call"]["sid"], json!(a.sid));
    let (_, v) = rig.get("/api/v1/messages?status=open", &a.admin).await;
    assert!(
        ids(&v, "id").contains(&a.message),
        "A's message is still open: {v}"
    );
    let (_, v) = rig.get("/api/v1/secrets", &a.admin).await;
    assert!(v.to_string().contains("twilio_auth_token"), "{v}");
    assert!(!v.to_string().contains("token-of-"), "{v}");
    let (_, v) = rig.get("/api/v1/clinic", &a.admin).await;
    assert_eq!(v["config"]["clinic"]["name"], json!(a.slug), "{v}");
    assert_eq!(rig.get("/api/v1/me", &a.key).await.0, StatusCode::OK);
    assert_eq!(
        rig.login(&format!("desk@{}.example", a.slug), PASSWORD)
            .await
            .0,
        StatusCode::OK
    );
    let (s, v) = rig
        .send(
            Method::POST,
            "/api/v1/chat",
            Some(&a.admin),
            Some(json!({ "session": a.chat, "text": "what are your opening hours" })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(!v["reply"].as_array().unwrap().is_empty(), "{v}");
    // A can mark its own message done; then it is no longer open.
    let (s, v) = rig
        .send(
            Method::POST,
            &format!("/api/v1/messages/{}/done", a.message),
            Some(&a.staff),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "done");

    // The live stream is checked in its own step; the OpenAPI document needs no organisation.
    covered.insert("/api/v1/live");
    covered.insert("/api/v1/openapi.json");
    covered.insert("/api/v1/auth/login");
    covered.insert("/api/v1/auth/refresh");
    covered.insert("/api/v1/auth/logout");
    for webhooks in [
        "/api/v1/webhooks",
        "/api/v1/webhooks/{id}",
        "/api/v1/webhooks/{id}/deliveries",
    ] {
        // Webhook endpoints are covered by tests/tests/webhooks.rs when they exist.
        covered.insert(webhooks);
    }
    let declared = declared_routes();
    let missing: Vec<&String> = declared
        .iter()
        .filter(|r| !covered.contains(r.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "routes with no cross-organisation check: {missing:?}"
    );
}

async fn put_toml(rig: &Rig, token: &str, toml: &str) -> (StatusCode, Value) {
    let resp = rig
        .http
        .put(format!("{}/api/v1/clinic", rig.base))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/toml")
        .body(toml.to_string())
        .send()
        .await
        .unwrap();
    rig.read_json(&Method::PUT, "/api/v1/clinic", resp).await
}

/// Recordings: whole, then first, middle, last, suffix and open-ended ranges return exactly those
/// bytes; unsatisfiable ranges are 416 with the length; mono is a real one-channel WAV; signed
/// links work without a header and only unaltered.
async fn ranges(rig: &Rig, a: &Tenant, b: &Tenant) {
    let path = format!("/api/v1/calls/{}/recording", a.sid);
    let auth_header = format!("Bearer {}", a.staff);
    let whole = rig.raw(&path, &[("authorization", &auth_header)]).await;
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.headers()["content-type"], "audio/wav");
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    let full = whole.bytes().await.unwrap().to_vec();
    let n = full.len();
    assert!(n > 44 + 8000, "a recording of a real call: {n} bytes");
    let wav = hound::WavReader::new(std::io::Cursor::new(full.clone())).expect("a WAV file");
    assert_eq!(wav.spec().channels, 2, "caller and agent");
    // The stored file itself, byte for byte.
    let rec = rig
        .server
        .state
        .store()
        .get_recording(a.org, &CallSid(a.sid.clone()))
        .await
        .unwrap()
        .unwrap();
    if let Some(p) = rig.server.state.recordings().local_path(&rec.location) {
        assert_eq!(std::fs::read(p).unwrap(), full);
    }

    let cases: Vec<(String, usize, usize)> = vec![
        ("bytes=0-99".into(), 0, 99),
        ("bytes=0-0".into(), 0, 0),
        (
            format!("bytes={}-{}", n / 2, n / 2 + 1000),
            n / 2,
            n / 2 + 1000,
        ),
        (format!("bytes={}-{}", n - 100, n - 1), n - 100, n - 1),
        (format!("bytes={}-{}", n - 10, n + 5000), n - 10, n - 1),
        (format!("bytes={}-", n - 321), n - 321, n - 1),
        ("bytes=-100".into(), n - 100, n - 1),
        (format!("bytes=-{}", n + 50), 0, n - 1),
    ];
    for (range, start, end) in cases {
        let resp = rig
            .raw(&path, &[("authorization", &auth_header), ("range", &range)])
            .await;
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            resp.headers()["content-range"],
            format!("bytes {start}-{end}/{n}").as_str(),
            "{range}"
        );
        let body = resp.bytes().await.unwrap();
        assert_eq!(body.len(), end - start + 1, "{range}");
        assert_eq!(&body[..], &full[start..=end], "{range}");
    }
    for range in [
        format!("bytes={n}-"),
        format!("bytes={}-{}", n + 10, n + 20),
        "bytes=-0".into(),
    ] {
        let resp = rig
            .raw(&path, &[("authorization", &auth_header), ("range", &range)])
            .await;
        assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(
            resp.headers()["content-range"],
            format!("bytes */{n}").as_str(),
            "{range}"
        );
    }

    // Mono: one channel, the same length of audio.
    let mono = rig
        .raw(
            &format!("{path}?mix=mono"),
            &[("authorization", &auth_header)],
        )
        .await;
    assert_eq!(mono.status(), StatusCode::OK);
    let mono = mono.bytes().await.unwrap().to_vec();
    let m = hound::WavReader::new(std::io::Cursor::new(mono.clone())).expect("a mono WAV");
    assert_eq!(m.spec().channels, 1);
    assert_eq!(m.duration(), wav.duration());
    let resp = rig
        .raw(
            &format!("{path}?mix=mono"),
            &[("authorization", &auth_header), ("range", "bytes=-64")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(&resp.bytes().await.unwrap()[..], &mono[mono.len() - 64..]);
    let (s, v) = rig.get(&format!("{path}?mix=left"), &a.staff).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // Signed links (for an <audio> element, which cannot send a header).
    let (_, detail) = rig.get(&format!("/api/v1/calls/{}", a.sid), &a.staff).await;
    let url = detail["recording"]["url"]
        .as_str()
        .expect("a signed url")
        .to_string();
    let resp = rig.raw(&url, &[("range", "bytes=0-43")]).await;
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(&resp.bytes().await.unwrap()[..], &full[..44]);
    let mono_url = detail["recording"]["mono_url"].as_str().unwrap();
    let resp = rig.raw(mono_url, &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), mono);
    // Altered: another mix, another organisation, a later expiry, another call.
    let altered = [
        url.replace("mix=both", "mix=mono"),
        url.replace(&a.org.0.to_string(), &b.org.0.to_string()),
        {
            let exp: i64 = url
                .split("exp=")
                .nth(1)
                .unwrap()
                .split('&')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            url.replace(&format!("exp={exp}"), &format!("exp={}", exp + 3600))
        },
        url.replace(&a.sid, &b.sid),
    ];
    for bad in altered {
        let resp = rig.raw(&bad, &[]).await;
        assert!(
            resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::NOT_FOUND,
            "{bad}: {}",
            resp.status()
        );
    }
    // No credential at all.
    assert_eq!(rig.raw(&path, &[]).await.status(), StatusCode::UNAUTHORIZED);
}

/// Reads SSE events from `resp` until `stop` says so or `limit` passes.
async fn read_sse(
    mut resp: reqwest::Response,
    limit: Duration,
    mut stop: impl FnMut(&str, &Value) -> bool,
) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let chunk = match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(c))) => c,
            _ => return out,
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut event = String::from("message");
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    event = e.trim().to_string();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            if data.is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
            let done = stop(&event, &value);
            out.push((event, value));
            if done {
                return out;
            }
        }
    }
}

/// A's live stream shows A's call as it happens; B's, open at the same time, shows nothing of it.
async fn live_is_per_org(rig: &Rig, a: &Tenant, b: &Tenant) {
    let open = |token: &str| {
        let header = format!("Bearer {token}");
        async move { rig.raw("/api/v1/live", &[("authorization", &header)]).await }
    };
    let a_live = open(&a.staff).await;
    assert_eq!(a_live.status(), StatusCode::OK);
    assert!(
        a_live.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let b_live = open(&b.admin).await;
    assert_eq!(b_live.status(), StatusCode::OK);

    let a_reader = tokio::spawn(read_sse(a_live, Duration::from_secs(60), |e, _| {
        e == "call.ended"
    }));
    let b_reader = tokio::spawn(read_sse(b_live, Duration::from_secs(60), |_, _| false));
    let sid = call(rig, "+447700900009", NUMBER_A).await;
    let a_events = a_reader.await.unwrap();
    let kinds: Vec<&str> = a_events
        .iter()
        .filter(|(_, v)| v["event"]["sid"] == json!(sid) || v["sid"] == json!(sid))
        .map(|(e, _)| e.as_str())
        .collect();
    assert!(kinds.contains(&"call.started"), "{a_events:?}");
    assert!(kinds.contains(&"call.turn"), "{a_events:?}");
    assert!(kinds.contains(&"call.ended"), "{a_events:?}");
    assert_eq!(
        a_events[0].0, "snapshot",
        "a fresh connection starts with a snapshot"
    );
    // A client that cannot send Last-Event-ID (a browser's new EventSource) resumes with
    // `?last_event_id=`: the events after it are replayed (the call's end among them), not a
    // snapshot that no longer shows the call.
    let started_id = a_events
        .iter()
        .find(|(e, v)| e == "call.started" && v["sid"] == json!(sid))
        .and_then(|(_, v)| v["id"].as_u64())
        .unwrap_or_else(|| panic!("call.started has an id: {a_events:?}"));
    let header = format!("Bearer {}", a.staff);
    let resumed = rig
        .raw(
            &format!("/api/v1/live?last_event_id={started_id}"),
            &[("authorization", &header)],
        )
        .await;
    assert_eq!(resumed.status(), StatusCode::OK);
    let replayed = read_sse(resumed, Duration::from_secs(30), |e, v| {
        e == "call.ended" && v["sid"] == json!(sid)
    })
    .await;
    assert_ne!(
        replayed.first().map(|(e, _)| e.as_str()),
        Some("snapshot"),
        "a resume replays: {replayed:?}"
    );
    assert!(
        replayed
            .iter()
            .all(|(_, v)| v["id"].as_u64() > Some(started_id)),
        "only what came after: {replayed:?}"
    );
    assert!(
        replayed
            .iter()
            .any(|(e, v)| e == "call.ended" && v["sid"] == json!(sid)),
        "{replayed:?}"
    );
    // B's stream ran for the same call (and a little longer): nothing of A's.
    b_reader.abort();
    let b_live = open(&b.admin).await;
    let b_events = read_sse(b_live, Duration::from_secs(2), |_, _| false).await;
    let all = format!("{b_events:?}");
    assert!(!all.contains(&sid) && !all.contains(&a.sid), "{all}");
    assert!(b_events.iter().any(|(e, _)| e == "snapshot"), "{all}");

    // The live stream refuses anonymous and revoked credentials.
    assert_eq!(
        rig.raw("/api/v1/live", &[]).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

/// Every route the router declares is in the OpenAPI document and every documented path is
/// routed (asked with no credential, it answers 401, not the catch-all 404).
async fn documented_and_declared(rig: &Rig) {
    let (s, doc) = rig
        .send(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        doc, rig.doc,
        "the served document is the one checked against"
    );
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let documented = documented_routes(&doc);
    let declared = declared_routes();
    let undocumented: Vec<_> = declared.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routed but not documented: {undocumented:?}"
    );
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let Ok(m) = Method::from_bytes(method.to_uppercase().as_bytes()) else {
                continue;
            };
            let concrete = path
                .replace("{sid}", "CA00000000000000000000000000000000")
                .replace("{id}", "00000000-0000-0000-0000-000000000000")
                .replace("{name}", "twilio_auth_token");
            let public = [
                "/api/v1/openapi.json",
                "/api/v1/auth/login",
                "/api/v1/auth/refresh",
            ];
            let (s, v) = rig.send(m.clone(), &concrete, None, None).await;
            if public.contains(&path.as_str()) {
                assert_ne!(s, StatusCode::NOT_FOUND, "{m} {path}: {v}");
            } else {
                assert_eq!(
                    s,
                    StatusCode::UNAUTHORIZED,
                    "{m} {path} without a credential: {v}"
                );
            }
        }
    }
    // An unknown endpoint is a JSON 404 with a stable code.
    let (s, v) = rig
        .send(Method::GET, "/api/v1/nothing-here", None, None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(code(&v), "not_found");
    // Oversized bodies are refused before they are read.
    let big = "x".repeat(api::staff::MAX_API_BODY + 1);
    let resp = rig
        .http
        .post(format!("{}/api/v1/auth/login", rig.base))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    let (s, v) = rig
        .read_json(&Method::POST, "/api/v1/auth/login", resp)
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
}

/// The success responses the steps above did not produce, so each documented one meets a real
/// one: every page of the call search by its cursor, done messages, the clinic file applied by
/// its own admin, an outbound call placed (and one Twilio refuses: 502 upstream); and the call
/// page and every list checked with data in them, not as empty arrays.
async fn remaining_responses(rig: &Rig, a: &Tenant, b: &Tenant) {
    let (s, all) = rig.get("/api/v1/calls", &a.admin).await;
    assert_eq!(s, StatusCode::OK, "{all}");
    assert_eq!(
        all["next_cursor"],
        Value::Null,
        "one page holds them: {all}"
    );
    let all: Vec<&Value> = items(&all).iter().map(|c| &c["sid"]).collect();
    assert!(
        all.len() >= 2,
        "A's calls: the tenant's and the live one: {all:?}"
    );
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..=all.len() {
        let path = match &cursor {
            None => "/api/v1/calls?limit=1".to_string(),
            Some(c) => format!("/api/v1/calls?limit=1&cursor={c}"),
        };
        let (s, page) = rig.get(&path, &a.admin).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        paged.extend(items(&page).iter().map(|c| c["sid"].clone()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(
        paged.iter().collect::<Vec<_>>(),
        all,
        "pages of one, by cursor, are the whole list in order"
    );
    let (s, v) = rig.get("/api/v1/calls?limit=0", &a.admin).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    let (_, v) = rig.get("/api/v1/messages?status=done", &a.staff).await;
    assert!(ids(&v, "id").contains(&a.message), "{v}");

    // The schemas were checked on data, not on empty lists: A's call page and lists hold some.
    let (_, page) = rig.get(&format!("/api/v1/calls/{}", a.sid), &a.admin).await;
    for part in ["turns", "events", "appointments", "messages"] {
        assert!(!page[part].as_array().unwrap().is_empty(), "{part}: {page}");
    }
    assert!(page["recording"].is_object(), "{page}");
    for list in [
        "/api/v1/appointments",
        "/api/v1/contacts",
        "/api/v1/messages?status=all",
        "/api/v1/knowledge",
        "/api/v1/numbers",
        "/api/v1/users",
        "/api/v1/api-keys",
        "/api/v1/secrets",
    ] {
        let (s, v) = rig.get(list, &a.admin).await;
        assert_eq!(s, StatusCode::OK, "{list}: {v}");
        assert!(!items(&v).is_empty(), "{list}: {v}");
    }

    let file = clinic_file(&a.slug, &a.slug, NUMBER_A).to_toml();
    let (s, v) = put_toml(rig, &a.admin, &file).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["numbers"], 1, "{v}");

    // Outbound: staff may not; A's Twilio account places the call; B's is refused by Twilio.
    let reminder = json!({ "to": "+447700900123", "appointment_id": a.appointment });
    let (s, v) = rig
        .send(
            Method::POST,
            "/api/v1/calls/outbound",
            Some(&a.staff),
            Some(reminder.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    for (t, account, token) in [
        (a, TWILIO_ACCOUNT, None),
        (b, "AC00000000000000000000000000000000", Some("token-of-b")),
    ] {
        let mut secrets = vec![("twilio_account_sid", account)];
        secrets.extend(token.map(|t| ("twilio_auth_token", t)));
        for (name, value) in secrets {
            let (s, v) = rig
                .send(
                    Method::PUT,
                    &format!("/api/v1/secrets/{name}"),
                    Some(&t.admin),
                    Some(json!({ "value": value })),
                )
                .await;
            assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
        }
    }
    let (s, v) = rig
        .send(
            Method::POST,
            "/api/v1/calls/outbound",
            Some(&a.admin),
            Some(reminder),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["sid"], PLACED_SID);
    let (s, v) = rig
        .send(
            Method::POST,
            "/api/v1/calls/outbound",
            Some(&b.admin),
            Some(json!({ "to": "+447700900124" })),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
}

/// The document itself: every operation documents a success response, with a JSON schema
/// unless it is a 204, audio or an event stream; every error response is an `Error` whose
/// example is valid and names the code of its status; every path parameter is documented; every
/// object a response can hold is closed (`additionalProperties: false`) unless free-form by
/// design; every schema uses only what the validator checks.
#[test]
fn the_document_describes_every_response() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0", "type arrays for null need 3.1");
    let error_codes = [
        ("400", "invalid_request"),
        ("401", "unauthorized"),
        ("403", "forbidden"),
        ("404", "not_found"),
        ("409", "conflict"),
        ("413", "payload_too_large"),
        ("415", "unsupported_media_type"),
        ("429", "rate_limited"),
        ("502", "upstream"),
    ];
    let mut response_schemas = Vec::new();
    for (path, method, op) in operations(&doc) {
        let what = format!("{method} {path}");
        let responses = op["responses"].as_object().expect("responses");
        let mut successes = 0;
        for (status, r) in responses {
            let r = deref(&doc, r);
            let content = r.get("content").and_then(Value::as_object);
            if status.starts_with('2') {
                successes += 1;
                if status == "204" {
                    assert!(content.is_none(), "{what}: a 204 has no body");
                    continue;
                }
                let content = content.unwrap_or_else(|| panic!("{what} {status}: no content"));
                for (media, c) in content {
                    match media.as_str() {
                        "application/json" => {
                            assert!(
                                c["schema"]["$ref"].is_string(),
                                "{what} {status}: the JSON body is a named schema"
                            );
                            response_schemas.push(c["schema"].clone());
                        }
                        "audio/wav" | "text/event-stream" => {
                            assert!(c["schema"].is_object(), "{what} {status}: {media}")
                        }
                        other => panic!("{what} {status}: unexpected content type {other}"),
                    }
                }
                continue;
            }
            if status == "416" {
                assert!(content.is_none(), "{what}: a 416 has no body");
                continue;
            }
            let c = &content.unwrap_or_else(|| panic!("{what} {status}: no content"))["application/json"];
            assert_eq!(
                c["schema"]["$ref"], "#/components/schemas/Error",
                "{what} {status}"
            );
            let e = schema::errors(&doc, &c["schema"], &c["example"]);
            assert!(e.is_empty(), "{what} {status}: the example: {e:?}");
            if let Some((_, code)) = error_codes.iter().find(|(s, _)| s == status) {
                assert_eq!(c["example"]["error"]["code"], *code, "{what} {status}");
            } else {
                assert_eq!(status, "default", "{what}: an undocumented error status");
            }
        }
        assert!(successes > 0, "{what}: no success response");
        for name in path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        {
            let documented = op["parameters"].as_array().is_some_and(|ps| {
                ps.iter()
                    .any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true)
            });
            assert!(
                documented,
                "{what}: the path parameter {name} is not documented"
            );
        }
        if ["post", "put"].contains(&method) {
            let body = op.get("requestBody");
            let takes_none = path.ends_with("/logout") || path.ends_with("/done");
            assert_eq!(body.is_none(), takes_none, "{what}: its request body");
        }
    }
    // Every object a response can hold, by $ref or inline, is closed unless free-form by design.
    // A call event's detail (by kind) and the clinic file as JSON (its own format).
    let free_form = ["detail", "config"];
    let mut stack = response_schemas;
    let mut visited = BTreeSet::new();
    while let Some(s) = stack.pop() {
        if let Some(r) = s["$ref"].as_str() {
            if visited.insert(r.to_string()) {
                stack.push(schema::resolve(&doc, r).expect("$ref resolves").clone());
            }
            continue;
        }
        if s.get("properties").is_some() {
            assert_eq!(
                s["additionalProperties"], false,
                "an open object in a response: {s}"
            );
        }
        for (name, p) in s["properties"].as_object().into_iter().flatten() {
            if !free_form.contains(&name.as_str()) {
                stack.push(p.clone());
            }
        }
        for key in ["anyOf", "oneOf", "allOf"] {
            stack.extend(s[key].as_array().into_iter().flatten().cloned());
        }
        if s["items"].is_object() {
            stack.push(s["items"].clone());
        }
    }
    assert!(visited.contains("#/components/schemas/CallDetail"));
    // Schemas only use keywords the validator checks.
    for (name, s) in doc["components"]["schemas"].as_object().unwrap() {
        let unchecked = schema::unchecked_keywords(s);
        assert!(unchecked.is_empty(), "{name} uses {unchecked:?}");
    }
}

/// The validator refuses what the document does not allow (so the checks above can fail).
#[test]
fn the_validator_refuses_bad_instances() {
    let doc = document();
    let user = json!({ "$ref": "#/components/schemas/User" });
    let good = json!({
        "id": "0b8a5f0e-6c1e-4f43-9d52-3c1f4f7b2a10",
        "email": "desk@clinic.example",
        "name": "Desk",
        "role": "staff",
        "created_at": "2026-12-03T08:45:00.123456Z",
        "disabled": false,
    });
    assert_eq!(schema::errors(&doc, &user, &good), Vec::<String>::new());
    let with = |k: &str, v: Value| {
        let mut u = good.clone();
        u[k] = v;
        u
    };
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("email");
    for (what, bad) in [
        ("a missing required property", missing),
        ("a wrong type", with("disabled", json!("no"))),
        ("an integer for a string", with("name", json!(7))),
        ("null where not nullable", with("name", Value::Null)),
        (
            "an undocumented property",
            with("password_hash", json!("$argon2id$")),
        ),
        ("a value outside the enum", with("role", json!("owner"))),
        (
            "a malformed date-time",
            with("created_at", json!("yesterday")),
        ),
        ("a malformed uuid", with("id", json!("42"))),
        ("not an object", json!([good.clone()])),
    ] {
        assert!(
            !schema::errors(&doc, &user, &bad).is_empty(),
            "{what} passed: {bad}"
        );
    }
    // Nullable by anyOf: Me.user may be null, not a number.
    let me = json!({ "$ref": "#/components/schemas/Me" });
    let org = json!({ "id": "0b8a5f0e-6c1e-4f43-9d52-3c1f4f7b2a10", "name": "A", "slug": null,
                      "recording_retention_days": null });
    let key_me = json!({ "user": null, "org": org, "role": "admin", "via": "api_key" });
    assert_eq!(schema::errors(&doc, &me, &key_me), Vec::<String>::new());
    let mut bad = key_me.clone();
    bad["user"] = json!(5);
    assert!(!schema::errors(&doc, &me, &bad).is_empty());
    // Deep inside a list: a turn without its latency.
    let list = json!({ "$ref": "#/components/schemas/CallDetail" });
    let e = schema::errors(
        &doc,
        &list,
        &json!({ "call": {}, "turns": [{ "seq": 0 }], "events": [], "recording": null,
                 "appointments": [], "messages": [] }),
    );
    assert!(
        e.iter()
            .any(|e| e.contains("$.turns[0]") && e.contains("latency")),
        "{e:?}"
    );
    assert!(
        e.iter().any(|e| e.contains("$.call") && e.contains("sid")),
        "{e:?}"
    );
    // A keyword it cannot check is an error, not a pass, however deep.
    let pattern = json!({ "type": "string", "pattern": "^x" });
    assert!(!schema::errors(&doc, &pattern, &json!("y")).is_empty());
    let nested = json!({ "type": "object", "properties": { "a": { "items": pattern } } });
    assert_eq!(schema::unchecked_keywords(&nested), ["pattern"]);
}

/// Repeated wrong passwords for one email are refused with 429 and Retry-After before the
/// password is even checked.
async fn sign_in_is_rate_limited(rig: &Rig, a: &Tenant) {
    let mut limited = None;
    for i in 0..50 {
        let (s, v) = rig.login(&a.admin_email, "wrong password!").await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(code(&v), "rate_limited", "{v}");
            limited = Some(i);
            break;
        }
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    }
    let after = limited.expect("sign-in is rate limited");
    assert!(after >= 3, "a few mistakes are allowed first: {after}");
    let resp = rig
        .http
        .post(format!("{}/api/v1/auth/login", rig.base))
        .header("content-type", "application/json")
        .body(json!({ "email": a.admin_email, "password": PASSWORD }).to_string())
        .send()
        .await
        .unwrap();
    assert!(resp.headers().contains_key("retry-after"));
    let (s, v) = rig
        .read_json(&Method::POST, "/api/v1/auth/login", resp)
        .await;
    assert_eq!(
        s,
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password waits: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_api_sqlite() {
    staff_api(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_api_postgres() {
    staff_api(Backend::Postgres).await;
}

/// Twilio's public webhooks are rate limited per client address before any signature check:
/// past the burst, 429 with Retry-After (the limit here is 5 with almost no refill, so the test
/// depends on no timing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_webhooks_are_rate_limited_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(config(
        dir.path(),
        None,
        &[("VOXANNE_WEBHOOK_RATE", "5/0.01")],
    ))
    .await;
    let base = base_url(&server);
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for path in [
        "/twilio/voice",
        "/twilio/status",
        "/twilio/voice",
        "/twilio/connect-action",
    ]
    .iter()
    .cycle()
    .take(8)
    {
        let resp = http
            .post(format!("{base}{path}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("CallSid=CA00000000000000000000000000000001&From=%2B15550100001")
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            let retry: u64 = resp.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(retry >= 1);
        }
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(
        statuses,
        [403, 403, 403, 403, 403, 429, 429, 429],
        "unsigned: 403 until the limit"
    );
    // A media stream upgrade from the same address is refused too.
    let ws =
        tokio_tungstenite::connect_async(format!("{}/twilio/media", base.replace("http", "ws")))
            .await;
    match ws {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
        other => panic!("expected 429, got {other:?}"),
    }
    // The staff API has its own limits.
    let resp = http
        .get(format!("{base}/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("voxanne_webhooks_rate_limited_total 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("voxanne_webhooks_forbidden_total 5"),
        "{metrics}"
    );
    server.shutdown(Duration::from_secs(5)).await;
}
