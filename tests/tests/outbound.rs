//! Outbound reminder calls: `api::outbound::place` against a local server that speaks Twilio's
//! REST format (`POST /2010-04-01/Accounts/{AccountSid}/Calls.json`, Basic auth, form body,
//! JSON answers and errors) and checks what it receives; then that server's part of Twilio is
//! played by the simulated caller: the voice webhook at the `Url` we gave (signed, query
//! included), the media stream, and a status callback. The callee confirms the appointment.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use base64::Engine as _;
use chrono::{TimeZone, Utc};

use api::caller::{Line, LineStart, place_call};
use api::outbound::{CallRequest, OutboundError, place};
use common::{AUTH_TOKEN, base_url, caller, config, drain_writes};
use media::{PHONE_RATE, testsignal};
use storage::{CallSid, NewBooking};

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const CALLEE: &str = "+447700900555";

/// One request's form fields.
type Form = Vec<(String, String)>;

#[derive(Clone, Default)]
struct FakeTwilio {
    received: Arc<Mutex<Vec<Form>>>,
}

async fn create_call(
    State(fake): State<FakeTwilio>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: String,
) -> impl IntoResponse {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT}:{AUTH_TOKEN}"))
    );
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if account != ACCOUNT.trim_end_matches(".json") || auth != expected {
        // Twilio's error body.
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"code": 20003, "message": "Authenticate", "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401}"#.to_string(),
        );
    }
    let form: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    fake.received.lock().unwrap().push(form);
    (
        StatusCode::CREATED,
        r#"{"sid": "CAfeedfacefeedfacefeedfacefeedface", "status": "queued", "direction": "outbound-api"}"#
            .to_string(),
    )
}

async fn fake_twilio() -> (String, FakeTwilio) {
    let fake = FakeTwilio::default();
    let app = Router::new()
        .route(
            "/2010-04-01/Accounts/{account}/Calls.json",
            post(create_call),
        )
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}"), fake)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_call_is_placed_through_the_rest_api_and_confirmed() {
    engines::models::install_tls_provider();
    let (api_base, fake) = fake_twilio().await;
    let dir = tempfile::tempdir().unwrap();
    // The callee's answers, as the scripted speech-to-text hears them.
    let engines = api::engines::test_engines(&["Yes, I'll be there.", "Thanks, bye."], 2);
    let server = api::start(config(dir.path(), None, &[]), engines)
        .await
        .unwrap();
    let store = server.state.store().clone();
    let file = receptionist::testing::example_clinic().file;
    let summary = api::clinic::apply(&store, file.clone(), None).await;
    // No embedder here: the example's knowledge needs one, so apply the config without it.
    assert!(summary.is_err());
    let mut plain = file.clone();
    plain.knowledge.clear();
    let summary = api::clinic::apply(&store, plain, None).await.unwrap();
    let org = summary.org;
    let tz = chrono_tz::Europe::London;
    let starts = tz
        .with_ymd_and_hms(2030, 3, 5, 10, 0, 0)
        .unwrap()
        .with_timezone(&Utc);
    let booked = store
        .book_appointment(&NewBooking {
            org,
            idempotency_key: "seed".into(),
            call_sid: None,
            phone: CALLEE.into(),
            name: "Gareth Jones".into(),
            service: "Check-up".into(),
            starts_at: starts,
            ends_at: starts + chrono::Duration::minutes(30),
        })
        .await
        .unwrap();
    let appointment = booked.appointment().unwrap().id.to_string();

    // Wrong credentials: Twilio's refusal comes back as a clear error.
    let mut request = CallRequest {
        api_base: api_base.clone(),
        account_sid: ACCOUNT.into(),
        auth_token: "wrong".into(),
        from: file.clinic.numbers[0].clone(),
        to: CALLEE.into(),
        public_url: base_url(&server),
        appointment: Some(appointment.clone()),
    };
    match place(&request).await {
        Err(OutboundError::Refused { status, code, .. }) => {
            assert_eq!((status, code), (401, 20003))
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    request.auth_token = AUTH_TOKEN.into();
    let sid = place(&request).await.expect("Twilio accepts the call");
    assert_eq!(sid, "CAfeedfacefeedfacefeedfacefeedface");
    let form = fake.received.lock().unwrap()[0].clone();
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(get("To"), CALLEE);
    assert_eq!(get("From"), "+442071234567");
    let url = get("Url");
    assert_eq!(
        url,
        format!(
            "{}/twilio/voice?appointment={appointment}",
            base_url(&server)
        )
    );
    assert_eq!(
        get("StatusCallback"),
        format!("{}/twilio/status", base_url(&server))
    );
    assert!(
        form.iter()
            .filter(|(k, _)| k == "StatusCallbackEvent")
            .count()
            >= 2
    );

    // Twilio places the call and requests our webhook at that Url; the callee answers.
    let mut call = caller(&server);
    call.call_sid = sid.clone();
    call.direction = "outbound-api".into();
    call.from = "+442071234567".into();
    call.to = CALLEE.into();
    call.webhook = url.trim_start_matches(&base_url(&server)).to_string();
    call.no_answer = Duration::from_secs(30);
    let pause = LineStart::AfterAgent {
        pause: Duration::from_millis(400),
    };
    let script = vec![
        Line::Speak {
            audio: testsignal::voice(PHONE_RATE, 900, 5),
            start: pause,
        },
        Line::Speak {
            audio: testsignal::voice(PHONE_RATE, 700, 6),
            start: pause,
        },
    ];
    let report = place_call(&call, &script)
        .await
        .expect("the reminder call runs");
    assert_eq!(report.org.as_deref(), Some(org.to_string().as_str()));
    assert!(
        report.ended_by_server,
        "the agent says goodbye and hangs up"
    );
    drain_writes(&server).await;
    let sid = CallSid(sid);
    let turns = store.list_turns(org, &sid).await.unwrap();
    assert!(
        turns[0]
            .text
            .contains("calling to remind you of your check-up")
            && turns[0].text.contains("ten o'clock"),
        "{:?}",
        turns[0].text
    );
    let events = store.list_events(org, &sid).await.unwrap();
    assert!(
        events.iter().any(|e| e.kind == "reminder_confirmed"),
        "{events:?}"
    );
    let record = store.get_call(org, &sid).await.unwrap().unwrap();
    assert_eq!(record.direction, "outbound-api");
    assert_eq!(record.from, "+442071234567");
    server.shutdown(Duration::from_secs(5)).await;
}
