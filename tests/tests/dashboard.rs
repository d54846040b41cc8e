//! The staff dashboard in a real browser: headless Debian Chromium driven over WebDriver
//! (chromedriver), against a real server on SQLite. Signs in through the form, opens a call
//! from the list, plays its recording until the audio element is `playing`, watches a live
//! call's turns appear while a simulated call runs, and visits every other page, at desktop and
//! phone width, with no CSP violation and no uncaught script error. A screenshot of every page
//! is saved (and copied to /work/notes/screens/ when that directory exists) to be looked at.
//!
//! Without `chromium` and `chromedriver` this test skips, unless `VOXANNE_REQUIRE_BROWSER` is
//! set (scripts/test.sh sets it, so CI never skips silently). The assets themselves (types,
//! ETags, the CSP header) are checked over plain HTTP in `assets_are_served_with_types_etags_and_the_csp`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use api::caller::{Line, LineStart, place_call};
use api::staff::auth::{self, Role};
use chrono::Utc;
use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use storage::{CallSid, NewBooking, NewCallback};

const NUMBER: &str = "+442071234567";
/// The clinic's second number, answered by an assistant that never asks "are you still there?"
/// while the live call's caller holds (see the live check).
const LIVE_NUMBER: &str = "+442071234568";
const EMAIL: &str = "admin@bright-smile.example";
const PASSWORD: &str = "correct horse battery";
/// How long any one thing may take to show up in the page (generous: a noisy 2-core machine).
const DEADLINE: Duration = Duration::from_secs(90);

/// chromedriver, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_binary(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

/// The browser and its driver, or `None` (after saying why) when the test should skip.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let chromium = find_binary(&["/usr/lib/chromium/chromium", "/usr/bin/chromium"]);
    let driver = find_binary(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]);
    match (chromium, driver) {
        (Some(c), Some(d)) => Some((c, d)),
        _ if std::env::var_os("VOXANNE_REQUIRE_BROWSER").is_some() => panic!(
            "VOXANNE_REQUIRE_BROWSER is set but chromium or chromedriver is missing: \
             apt-get install chromium chromium-driver (scripts/deps.sh test does)"
        ),
        _ => {
            eprintln!(
                "SKIPPED: the dashboard browser test needs Debian's chromium and chromium-driver \
                 (/usr/bin/chromium, /usr/bin/chromedriver); set VOXANNE_REQUIRE_BROWSER=1 to fail instead"
            );
            None
        }
    }
}

async fn start_driver(path: &Path) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        // The page's days and times are the browser's local ones: UTC, as the test's.
        .env("TZ", "UTC")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let ready = match http.get(format!("{}/status", driver.url)).send().await {
            Ok(r) => r
                .bytes()
                .await
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .is_some_and(|v| v["value"]["ready"] == json!(true)),
            Err(_) => false,
        };
        if ready {
            return driver;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "chromedriver never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn open_browser(driver: &Driver, chromium: &Path) -> Client {
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium.display().to_string(),
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--disable-gpu",
                "--autoplay-policy=no-user-gesture-required",
                "--window-size=1280,900",
                "--lang=en-GB",
            ],
        },
        "goog:loggingPrefs": { "browser": "ALL" },
    });
    let caps = caps.as_object().expect("an object").clone();
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session")
}

/// Runs `js` (a function body returning a value) until it returns something truthy; returns it.
async fn until(b: &Client, js: &str, what: &str) -> Value {
    let started = Instant::now();
    loop {
        let v = b.execute(js, vec![]).await.expect("script runs");
        let truthy =
            !matches!(&v, Value::Null | Value::Bool(false)) && v != json!("") && v != json!(0);
        if truthy {
            return v;
        }
        if started.elapsed() > DEADLINE {
            let text = b
                .execute("return document.body.innerText", vec![])
                .await
                .unwrap_or_default();
            panic!("{what}: not within {DEADLINE:?}; the page reads:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn visible(b: &Client, css: &str) {
    let js = format!(
        "const e = document.querySelector({sel}); return !!e && e.getClientRects().length > 0;",
        sel = json!(css)
    );
    until(b, &js, &format!("{css} is shown")).await;
}

/// Where screenshots go: the test's own directory, and /work/notes/screens/ when it exists.
struct Screens {
    dir: PathBuf,
    shared: Option<PathBuf>,
    taken: Vec<PathBuf>,
}

impl Screens {
    async fn take(&mut self, b: &Client, name: &str) {
        let png = b.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "{name}: a PNG");
        let path = self.dir.join(format!("{name}.png"));
        std::fs::write(&path, &png).expect("write screenshot");
        if let Some(shared) = &self.shared {
            let _ = std::fs::write(shared.join(format!("dashboard-{name}.png")), &png);
        }
        self.taken.push(path);
    }
}

/// No CSP violation and no uncaught error so far, by the page's own record and the browser log.
async fn assert_clean(b: &Client, driver: &Driver, page: &str) {
    let violations = b
        .execute("return window.voxanneCspViolations || null", vec![])
        .await
        .expect("script runs");
    assert_eq!(
        violations,
        json!([]),
        "{page}: CSP violations (or the app never started)"
    );
    let session = b
        .session_id()
        .await
        .expect("session id")
        .expect("a session");
    let resp = reqwest::Client::new()
        .post(format!("{}/session/{session}/se/log", driver.url))
        .header("content-type", "application/json")
        .body(r#"{"type":"browser"}"#)
        .send()
        .await
        .expect("browser log");
    let log: Value = serde_json::from_slice(&resp.bytes().await.expect("log body")).expect("JSON");
    let entries = log["value"].as_array().cloned().unwrap_or_default();
    let bad: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["message"].as_str())
        .filter(|m| {
            m.contains("Content Security Policy")
                || m.contains("Refused to")
                || m.contains("Uncaught")
        })
        .collect();
    assert!(bad.is_empty(), "{page}: the browser logged {bad:#?}");
}

/// The example clinic on `NUMBER`, knowledge inline (stored without embedding below).
fn clinic_file() -> receptionist::clinic::ClinicFile {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bright-smile.toml");
    let mut file = api::clinic::read_file(&path).expect("the example clinic reads");
    file.knowledge.clear();
    file.clinic.numbers = vec![NUMBER.to_string()];
    file
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

/// The caller speaks once after the greeting, and again `second` after the agent's reply.
fn script(second: Option<Duration>) -> Vec<Line> {
    let mut lines = vec![Line::Speak {
        audio: speech_like(1_200),
        start: LineStart::AfterAgent {
            pause: Duration::from_millis(400),
        },
    }];
    if let Some(pause) = second {
        lines.push(Line::Speak {
            audio: speech_like(1_000),
            start: LineStart::AfterAgent { pause },
        });
    }
    lines
}

/// What the caller said in call `sid`, turn by turn, as stored.
async fn caller_turns(server: &api::Server, org: storage::OrgId, sid: &str) -> Vec<String> {
    drain_writes(server).await;
    server
        .state
        .store()
        .list_turns(org, &CallSid(sid.to_string()))
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.role == "caller")
        .map(|t| t.text)
        .collect()
}

/// Waits until call `sid`'s record and recording are stored.
async fn wait_stored(server: &api::Server, org: storage::OrgId, sid: &str) {
    let store = server.state.store().clone();
    let started = Instant::now();
    loop {
        drain_writes(server).await;
        let sid = CallSid(sid.to_string());
        let ended = store
            .get_call(org, &sid)
            .await
            .unwrap()
            .is_some_and(|c| c.end_reason.is_some());
        if ended && store.get_recording(org, &sid).await.unwrap().is_some() {
            return;
        }
        assert!(started.elapsed() < DEADLINE, "call {} never stored", sid.0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_use_the_dashboard_in_a_real_browser() {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Backend::Sqlite).await;
    let base = base_url(&server);
    let store = server.state.store().clone();
    let org = api::clinic::apply(&store, clinic_file(), None)
        .await
        .expect("clinic applies")
        .org;
    auth::create_user(&store, org, EMAIL, "Dana Admin", Role::Admin, PASSWORD)
        .await
        .unwrap();
    store
        .replace_knowledge(
            org,
            &[storage::KnowledgeChunk {
                id: "bright-smile/parking".into(),
                title: "Parking".into(),
                text: "Free parking behind the building, entrance on Mill Lane.".into(),
                model: "test".into(),
                embedding: vec![0.5; 8],
            }],
        )
        .await
        .unwrap();

    // One finished call, with an appointment and an urgent message taken in it.
    let mut cfg = caller(&server);
    cfg.from = "+447700900123".into();
    cfg.to = NUMBER.into();
    let report = place_call(&cfg, &script(None))
        .await
        .expect("the first call");
    let sid = report.call_sid.clone();
    wait_stored(&server, org, &sid).await;
    let start_at = Utc::now() + chrono::Duration::minutes(5);
    store
        .book_appointment(&NewBooking {
            org,
            idempotency_key: "dash-booking".into(),
            call_sid: Some(CallSid(sid.clone())),
            phone: cfg.from.clone(),
            name: "Robin Patel".into(),
            service: "cleaning".into(),
            starts_at: start_at,
            ends_at: start_at + chrono::Duration::minutes(30),
        })
        .await
        .unwrap();
    store
        .take_message(&NewCallback {
            org,
            idempotency_key: "dash-message".into(),
            call_sid: Some(CallSid(sid.clone())),
            name: "Sam Okafor".into(),
            phone: "+447700900456".into(),
            reason: "Tooth pain since last night, please call back".into(),
            urgent: true,
        })
        .await
        .unwrap();
    drain_writes(&server).await;

    let driver = start_driver(&chromedriver).await;
    let b = open_browser(&driver, &chromium).await;
    let shared = Path::new("/work/notes/screens");
    let mut screens = Screens {
        dir: dir.path().join("screens"),
        shared: shared.is_dir().then(|| shared.to_path_buf()),
        taken: Vec::new(),
    };
    std::fs::create_dir_all(&screens.dir).unwrap();
    let seeded = Seeded {
        org,
        sid: sid.clone(),
        day: start_at.date_naive().to_string(),
    };
    let run = drive(&b, &driver, &base, &server, &seeded, &mut screens);
    let result = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(run)).await;
    let _ = b.close().await;
    drop(driver);
    eprintln!("screenshots: {:#?}", screens.taken);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// What the test stored before the browser opened.
struct Seeded {
    org: storage::OrgId,
    /// The finished call (with an appointment and a message taken in it).
    sid: String,
    /// The appointment's day (UTC, as the browser's).
    day: String,
}

/// Everything the browser does (kept apart so the session is closed whatever happens).
async fn drive(
    b: &Client,
    driver: &Driver,
    base: &str,
    server: &api::Server,
    seeded: &Seeded,
    screens: &mut Screens,
) {
    let (org, sid, day) = (seeded.org, seeded.sid.as_str(), seeded.day.as_str());
    // Sign in through the form.
    b.goto(&format!("{base}/")).await.unwrap();
    visible(b, "form#signin").await;
    assert_clean(b, driver, "sign-in").await;
    screens.take(b, "signin").await;
    b.find(Locator::Css("input[name=email]"))
        .await
        .unwrap()
        .send_keys(EMAIL)
        .await
        .unwrap();
    b.find(Locator::Css("input[name=password]"))
        .await
        .unwrap()
        .send_keys("not the password")
        .await
        .unwrap();
    b.find(Locator::Css("form#signin button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        b,
        "const e = document.querySelector('form#signin [role=alert]'); return e && e.innerText",
        "a wrong password is refused",
    )
    .await;
    let password = b.find(Locator::Css("input[name=password]")).await.unwrap();
    password.clear().await.unwrap();
    password.send_keys(PASSWORD).await.unwrap();
    b.find(Locator::Css("form#signin button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // The call list shows the call with its outcome badge.
    let link = format!("a.call-link[href='#/calls/{sid}']");
    visible(b, &link).await;
    let badge = until(
        b,
        "const e = document.querySelector('table.calls tbody tr .badge'); return e && e.innerText",
        "an outcome badge",
    )
    .await;
    assert!(badge.as_str().is_some_and(|t| !t.is_empty()), "{badge}");
    assert_clean(b, driver, "calls").await;
    screens.take(b, "calls").await;

    // A filter that matches nothing, then none.
    b.goto(&format!("{base}/#/calls?outcome=transferred"))
        .await
        .unwrap();
    until(
        b,
        "const s = document.querySelector('.list-status'); return s && s.innerText.includes('No calls match')",
        "the outcome filter applies",
    )
    .await;
    assert_eq!(
        b.execute(
            "return document.querySelector('select[name=outcome]').value",
            vec![]
        )
        .await
        .unwrap(),
        json!("transferred")
    );
    b.goto(&format!("{base}/#/calls")).await.unwrap();
    visible(b, &link).await;

    // Open the call; its transcript and recording are there; the recording plays.
    b.find(Locator::Css(&link))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    visible(b, "audio#recording").await;
    until(
        b,
        "return document.querySelectorAll('.transcript .turn-caller').length > 0 && document.querySelectorAll('.transcript .turn-agent').length > 0",
        "the call's transcript",
    )
    .await;
    let caller_said = b
        .execute(
            "return document.querySelector('.transcript .turn-caller .said').innerText",
            vec![],
        )
        .await
        .unwrap();
    let stored = caller_turns(server, org, sid).await;
    assert_eq!(caller_said, json!(stored[0]), "the stored transcript");
    let play = r#"
        const a = document.getElementById('recording');
        return new Promise((resolve) => {
            if (!a.paused && a.readyState > 2) return resolve('playing');
            a.addEventListener('playing', () => resolve('playing'), { once: true });
            a.addEventListener('error', () => resolve('error: ' + (a.error ? a.error.code + ' ' + a.error.message : '?')), { once: true });
            a.play().catch((e) => resolve('play() refused: ' + e));
        });
    "#;
    assert_eq!(
        b.execute(play, vec![]).await.unwrap(),
        json!("playing"),
        "both channels"
    );
    // Stopped at the start again: a recording that played to its end before the switch would
    // start the mono mix at its end (`ended`, never `playing`).
    b.execute(
        "const a = document.getElementById('recording'); a.pause(); a.currentTime = 0;",
        vec![],
    )
    .await
    .unwrap();
    let src = b
        .execute(
            "return document.getElementById('recording').currentSrc",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        src.as_str()
            .is_some_and(|s| s.contains("mix=both") && s.contains("sig=")),
        "a signed link: {src}"
    );
    screens.take(b, "call").await;
    b.execute("document.getElementById('tr-h').scrollIntoView()", vec![])
        .await
        .unwrap();
    screens.take(b, "call-transcript").await;
    // The mono mix plays too.
    b.find(Locator::Css("#mix-mono"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        b,
        "return document.getElementById('recording').currentSrc.includes('mix=mono')",
        "the mono mix is chosen",
    )
    .await;
    assert_eq!(
        b.execute(play, vec![]).await.unwrap(),
        json!("playing"),
        "mono"
    );
    b.execute("document.getElementById('recording').pause()", vec![])
        .await
        .unwrap();
    assert_clean(b, driver, "call").await;

    // Live: a call placed while the page is open shows its turns as they are spoken.
    b.find(Locator::Css("a[data-nav=live]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    visible(b, ".conn.ok").await;
    screens.take(b, "live-idle").await;
    // The caller says its first line, then holds the line, silent, until the test has seen the
    // call live on screen; then says the second and hangs up. The assistant answering this
    // number waits two minutes of silence before prompting, so nothing happens during the hold.
    let store = server.state.store();
    let patient = store
        .create_assistant(
            org,
            &storage::NewAssistant {
                name: "front desk, patient".into(),
                greeting: String::new(),
                voice: "default".into(),
                transfer_number: None,
                settings: json!({ "silence_timeout_s": 120 }),
            },
        )
        .await
        .unwrap();
    store
        .assign_number(org, patient, LIVE_NUMBER)
        .await
        .unwrap();
    let mut cfg = caller(server);
    cfg.from = "+447700900777".into();
    cfg.to = LIVE_NUMBER.into();
    let live_sid = cfg.call_sid.clone();
    let (release, hold) = tokio::sync::watch::channel(false);
    let mut live_script = script(Some(Duration::from_millis(400)));
    live_script.insert(1, Line::HoldUntil(hold));
    let call = tokio::spawn(async move { place_call(&cfg, &live_script).await });
    let card = format!("[data-sid='{live_sid}']");
    let first = until(
        b,
        &format!(
            "const c = document.querySelector({card}); if (!c) return null;
             const t = [...c.querySelectorAll('.turn-caller .said')].map((e) => e.innerText);
             return t.length ? {{ text: t[0], ended: c.classList.contains('ended') }} : null;",
            card = json!(card)
        ),
        "the live call's first caller turn",
    )
    .await;
    assert!(
        first["text"].as_str().is_some_and(|t| LINES.contains(&t)),
        "{first}"
    );
    assert_eq!(
        first["ended"],
        json!(false),
        "the turn appeared while the call was in progress"
    );
    assert_eq!(
        b.execute(
            &format!(
                "return document.querySelector({}).closest('[aria-live]') !== null",
                json!(format!("{card} .turn-caller"))
            ),
            vec![]
        )
        .await
        .unwrap(),
        json!(true),
        "the transcript is a live region"
    );
    screens.take(b, "live-call").await;
    let _ = release.send(true);
    let report = call.await.unwrap().expect("the live call");
    assert_eq!(report.protocol_errors, 0);
    let ended = until(
        b,
        &format!(
            "const c = document.querySelector({card}); return c && c.classList.contains('ended') && c.querySelectorAll('.turn-caller').length",
            card = json!(card)
        ),
        "the live call ends on screen",
    )
    .await;
    let stored = caller_turns(server, org, &live_sid).await;
    assert_eq!(first["text"], json!(stored[0]), "the first turn as stored");
    assert_eq!(ended, json!(stored.len()), "every caller turn, as stored");
    screens.take(b, "live-ended").await;
    assert_clean(b, driver, "live").await;

    // That call's page marks each turn the caller interrupted, as stored.
    b.find(Locator::Css(&format!("{card} .live-foot a")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    visible(b, ".transcript .turn").await;
    let turns = server
        .state
        .store()
        .list_turns(org, &CallSid(live_sid.clone()))
        .await
        .unwrap();
    let shown = b
        .execute(
            "return [document.querySelectorAll('.transcript .turn').length, document.querySelectorAll('.transcript .tag-warn').length]",
            vec![],
        )
        .await
        .unwrap();
    let interrupted = turns.iter().filter(|t| t.interrupted).count();
    assert_eq!(
        shown,
        json!([turns.len(), interrupted]),
        "turns, interrupted"
    );

    // Appointments today.
    b.goto(&format!("{base}/#/appointments?day={day}"))
        .await
        .unwrap();
    until(
        b,
        "const a = document.querySelector('.appt'); return a && a.innerText.includes('Robin Patel')",
        "today's appointment",
    )
    .await;
    assert_clean(b, driver, "appointments").await;
    screens.take(b, "appointments").await;

    // Messages: urgent first; mark one done.
    b.goto(&format!("{base}/#/messages")).await.unwrap();
    until(
        b,
        "const m = document.querySelector('.message.urgent'); return m && m.innerText.includes('Tooth pain')",
        "the urgent message",
    )
    .await;
    screens.take(b, "messages").await;
    b.find(Locator::Css(".message.urgent button.primary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        b,
        "return !!document.querySelector('.message.urgent.is-done')",
        "the message marked done",
    )
    .await;
    let open = server
        .state
        .store()
        .list_callbacks(org, true)
        .await
        .unwrap();
    assert!(
        open.iter().all(|m| m.name != "Sam Okafor"),
        "done in the database too"
    );
    assert_clean(b, driver, "messages").await;

    // Knowledge.
    b.goto(&format!("{base}/#/knowledge")).await.unwrap();
    until(
        b,
        "const d = document.querySelector('main details summary'); return d && d.innerText === 'Parking'",
        "the knowledge entry",
    )
    .await;
    assert_clean(b, driver, "knowledge").await;
    screens.take(b, "knowledge").await;

    // Clinic settings: a broken file is refused with its problems listed.
    b.goto(&format!("{base}/#/clinic")).await.unwrap();
    until(
        b,
        "const t = document.querySelector('textarea[name=toml]'); return t && t.value.includes('[clinic]')",
        "the clinic file",
    )
    .await;
    screens.take(b, "clinic").await;
    b.execute(
        "const t = document.querySelector('textarea[name=toml]'); t.value = t.value.replace(/^timezone = .*$/m, 'timezone = \"Mars/Olympus\"');",
        vec![],
    )
    .await
    .unwrap();
    b.find(Locator::Css("main form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let problem = until(
        b,
        "const e = document.querySelector('main .error'); return e && e.innerText",
        "the clinic file's problems",
    )
    .await;
    assert!(
        problem.as_str().is_some_and(|p| p.contains("Mars/Olympus")),
        "{problem}"
    );
    assert_clean(b, driver, "clinic").await;
    screens.take(b, "clinic-invalid").await;

    // Try the receptionist.
    b.goto(&format!("{base}/#/chat")).await.unwrap();
    visible(b, ".chat-log .msg-agent").await;
    b.find(Locator::Css(".chat-form input[name=text]"))
        .await
        .unwrap()
        .send_keys("Where can I park?")
        .await
        .unwrap();
    b.find(Locator::Css(".chat-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        b,
        "return document.querySelectorAll('.chat-log .msg-agent').length >= 2 && document.querySelectorAll('.chat-log .msg-you').length === 1",
        "the receptionist's reply",
    )
    .await;
    assert_clean(b, driver, "chat").await;
    screens.take(b, "chat").await;

    // The keyboard: on a fresh load the first Tab reaches the skip link, which moves focus to
    // the page's content and changes no route.
    b.goto(&format!("{base}/#/calls")).await.unwrap();
    b.refresh().await.unwrap();
    visible(b, &format!("a.call-link[href='#/calls/{sid}']")).await;
    b.find(Locator::Css("body"))
        .await
        .unwrap()
        .send_keys(&char::from(fantoccini::key::Key::Tab).to_string())
        .await
        .unwrap();
    let focused = b
        .execute("return document.activeElement.className", vec![])
        .await
        .unwrap();
    assert_eq!(focused, json!("skip"), "the first Tab stop");
    b.active_element()
        .await
        .unwrap()
        .send_keys(&char::from(fantoccini::key::Key::Enter).to_string())
        .await
        .unwrap();
    until(
        b,
        "return document.activeElement.id === 'main' && location.hash === '#/calls'",
        "the skip link focuses the content",
    )
    .await;

    // Phone width: nothing wider than the screen.
    b.set_window_size(375, 812).await.unwrap();
    // Elements reaching past the right edge (none, if the page fits).
    let fits = "const w = document.documentElement.clientWidth;
        return [...document.querySelectorAll('body *')]
            .filter((e) => e.getBoundingClientRect().right > w + 1 && !e.closest('.visually-hidden, .table-wrap, textarea'))
            .map((e) => `${e.tagName.toLowerCase()}.${e.className} ${Math.round(e.getBoundingClientRect().right)}px`)
            .slice(0, 10);";
    for (page, ready, name) in [
        ("#/calls", "table.calls tbody tr", "phone-calls"),
        (&*format!("#/calls/{sid}"), "audio#recording", "phone-call"),
        ("#/live", ".conn.ok", "phone-live"),
        ("#/messages?status=all", ".message", "phone-messages"),
    ] {
        // A fresh load of each page at this size.
        b.goto(&format!("{base}/{page}")).await.unwrap();
        b.refresh().await.unwrap();
        visible(b, ready).await;
        screens.take(b, name).await;
        let wide = b.execute(fits, vec![]).await.unwrap();
        assert_eq!(wide, json!([]), "{page}: wider than 375 px");
    }
    b.set_window_size(1280, 900).await.unwrap();

    // Sign out: the session ends on the server, and the sign-in form is back.
    b.find(Locator::Css("#signout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    visible(b, "form#signin").await;
    let left = b
        .execute("return sessionStorage.getItem('voxanne.session')", vec![])
        .await
        .unwrap();
    assert_eq!(left, Value::Null, "no token left in the tab");
    assert_clean(b, driver, "signed out").await;
}

/// The page and its assets over plain HTTP: content types, ETags (and 304s), the CSP header,
/// and 404 for what is not there.
#[tokio::test]
async fn assets_are_served_with_types_etags_and_the_csp() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Backend::Sqlite).await;
    let base = base_url(&server);
    let http = reqwest::Client::new();
    let page = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let h = page.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    let csp = h["content-security-policy"].to_str().unwrap();
    for directive in [
        "script-src 'self'",
        "style-src 'self'",
        "default-src 'self'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(h["cache-control"], "no-cache");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/assets/app.js">"#));

    for asset in api::staff::dashboard::ASSETS {
        let path = if asset.name == "index.html" {
            "/".to_string()
        } else {
            format!("/assets/{}", asset.name)
        };
        let resp = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["content-type"], asset.content_type, "{path}");
        assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
        let etag = resp.headers()["etag"].to_str().unwrap().to_string();
        assert_eq!(&resp.bytes().await.unwrap()[..], asset.body, "{path}");
        let again = http
            .get(format!("{base}{path}"))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path} revalidates");
        assert!(again.bytes().await.unwrap().is_empty());
        let changed = http
            .get(format!("{base}{path}"))
            .header("if-none-match", "\"something-else\"")
            .send()
            .await
            .unwrap();
        assert_eq!(changed.status(), 200, "{path} with another ETag");
    }
    let js = http
        .get(format!("{base}/assets/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    for missing in [
        "/assets/nope.js",
        "/assets/../Cargo.toml",
        "/assets/index.html",
    ] {
        let r = http.get(format!("{base}{missing}")).send().await.unwrap();
        assert_eq!(r.status(), 404, "{missing}");
    }
}
