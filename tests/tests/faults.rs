//! End to end, when something goes wrong: a replayed media stream, a database that is slow or
//! down while calls are set up, more calls than the limits allow, and what `/health` and
//! `/metrics` tell the world about it.

mod common;

use std::time::Duration;

use api::caller::{Line, LineStart, place_call};
use common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use media::{PHONE_RATE, testsignal};
use storage::{CallSid, LocalRecordingStore, RecordingStore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// What a replayed stream got from the server.
#[derive(Debug)]
struct Replay {
    /// The server closed the socket (within the test's patience).
    closed: bool,
    /// Media messages the server sent (agent audio).
    media: u64,
}

/// Opens a media stream the way Twilio does (signed opening request, `connected`, `start` with
/// `parameters`), sends a second of caller audio and `stop`, and reads until the server closes.
/// This is what someone who captured a call's TwiML (its stream token) could send later.
async fn replay_stream(
    server: &api::Server,
    call_sid: &str,
    parameters: &[(&str, String)],
) -> Replay {
    let ws_url = format!("ws://{}/twilio/media", server.addr);
    let stream_url = server.state.config().stream_url();
    let mut request = ws_url.as_str().into_client_request().unwrap();
    let signature = telephony::signature::compute(AUTH_TOKEN, &stream_url, &[]);
    request
        .headers_mut()
        .insert("X-Twilio-Signature", signature.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let stream_sid = api::caller::new_sid("MZ");
    let start = telephony::protocol::Start {
        account_sid: "AC00000000000000000000000000000000".into(),
        stream_sid: stream_sid.clone(),
        call_sid: call_sid.into(),
        tracks: vec!["inbound".into()],
        media_format: telephony::protocol::MediaFormat {
            encoding: "audio/x-mulaw".into(),
            sample_rate: 8_000,
            channels: 1,
        },
        custom_parameters: parameters
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    };
    let mut outgoing = vec![
        telephony::protocol::twilio::connected(),
        telephony::protocol::twilio::start(1, &start),
    ];
    let voice = testsignal::voice(PHONE_RATE, 1_000, 51);
    for (i, frame) in voice.chunks(160).enumerate() {
        let ulaw: Vec<u8> = frame.iter().map(|&s| media::mulaw::encode(s)).collect();
        outgoing.push(telephony::protocol::twilio::media(
            i as u64 + 2,
            &stream_sid,
            i as u64 + 1,
            i as u64 * 20,
            &ulaw,
        ));
    }
    outgoing.push(telephony::protocol::twilio::stop(
        1_000,
        &stream_sid,
        &start.account_sid,
        call_sid,
    ));
    let mut media = 0;
    let mut closed = false;
    let _ = tokio::time::timeout(Duration::from_secs(15), async {
        let mut outgoing = outgoing.into_iter();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Some(text) = outgoing.next() {
                        // A refused stream may already be closed: sending then fails, which is fine.
                        let _ = ws.send(Message::Text(text.into())).await;
                    }
                }
                msg = ws.next() => match msg {
                    Some(Ok(Message::Text(text))) => {
                        if text.contains("\"media\"") {
                            media += 1;
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        closed = true;
                        return;
                    }
                    Some(Ok(_)) => {}
                },
            }
        }
    })
    .await;
    Replay { closed, media }
}

/// Waits (bounded) for the call's recording row and returns its WAV file's bytes.
async fn stored_recording(
    server: &api::Server,
    dir: &std::path::Path,
    org: storage::OrgId,
    sid: &CallSid,
) -> (storage::RecordingRecord, Vec<u8>) {
    let store = server.state.store();
    for _ in 0..100 {
        let _ = server.state.queue().flush(Duration::from_secs(1)).await;
        if let Some(rec) = store.get_recording(org, sid).await.unwrap() {
            let path = LocalRecordingStore::in_data_dir(dir)
                .local_path(&rec.location)
                .expect("local recording");
            let bytes = std::fs::read(&path).unwrap();
            return (rec, bytes);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no recording row for {sid}");
}

/// Waits (bounded) until no call is in progress.
async fn calls_finished(server: &api::Server) {
    for _ in 0..100 {
        if server.state.active_calls() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} calls still active", server.state.active_calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_stream_for_a_finished_call_is_refused_and_its_recording_kept() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Backend::Sqlite).await;
    let store = server.state.store().clone();
    let script = vec![Line::Speak {
        audio: testsignal::voice(PHONE_RATE, 1_200, 52),
        start: LineStart::AfterAgent {
            pause: Duration::from_millis(500),
        },
    }];
    let report = place_call(&caller(&server), &script).await.expect("call");
    assert!(
        report.first_audio_after_line[0].is_some(),
        "the line was answered"
    );
    calls_finished(&server).await;
    let org = org_of(&report);
    let sid = CallSid(report.call_sid.clone());
    let (recording, wav) = stored_recording(&server, dir.path(), org, &sid).await;
    drain_writes(&server).await;
    let turns = store.list_turns(org, &sid).await.unwrap();
    assert_eq!(turns.len(), 3, "greeting, the caller's line, the reply");

    // The stream's parameters as the voice webhook issued them (the number is not assigned, so
    // the default organisation and assistant answered): a valid token for this CallSid.
    let (default_org, assistant) = store.ensure_default_org().await.unwrap();
    assert_eq!(default_org, org);
    let (org_s, assistant_s) = (org.to_string(), assistant.to_string());
    let params_issued_at = |issued: i64| {
        let token =
            telephony::webhook::stream_token(AUTH_TOKEN, &sid.0, &org_s, &assistant_s, issued);
        [
            ("org", org_s.clone()),
            ("assistant", assistant_s.clone()),
            ("token", token),
        ]
    };
    let parameters = params_issued_at(chrono::Utc::now().timestamp());

    let check_nothing_changed = |what: &str, replay: &Replay| {
        assert!(replay.closed, "{what}: the replayed stream was not closed");
        assert_eq!(replay.media, 0, "{what}: the replayed stream was answered");
    };
    let replay = replay_stream(&server, &sid.0, &parameters).await;
    check_nothing_changed("replay", &replay);
    // Refused before it took a call slot, and nothing was recorded or written for it.
    calls_finished(&server).await;
    drain_writes(&server).await;
    let path = LocalRecordingStore::in_data_dir(dir.path())
        .local_path(&recording.location)
        .unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        wav,
        "the recording was changed"
    );
    assert_eq!(
        store.get_recording(org, &sid).await.unwrap(),
        Some(recording.clone())
    );
    let after = store.list_turns(org, &sid).await.unwrap();
    assert_eq!(
        after.iter().map(|t| (&t.role, &t.text)).collect::<Vec<_>>(),
        turns.iter().map(|t| (&t.role, &t.text)).collect::<Vec<_>>()
    );
    let staging = LocalRecordingStore::in_data_dir(dir.path())
        .staging_path(org, &sid)
        .unwrap();
    assert!(!staging.exists(), "the replay recorded into staging");

    // After a restart the server has forgotten which streams ended, but the stored recording
    // still says the call had its stream.
    server.shutdown(Duration::from_secs(5)).await;
    let server = start_with(config(dir.path(), None, &[])).await;
    let replay = replay_stream(&server, &sid.0, &parameters).await;
    check_nothing_changed("replay after a restart", &replay);
    calls_finished(&server).await;
    assert_eq!(
        std::fs::read(&path).unwrap(),
        wav,
        "the recording was changed"
    );

    // Retention deletes the recording (file, then row; a day after the call at the soonest) and
    // the server restarts: nothing remembers the call had its stream but the token's age. A
    // token captured from that call is refused as expired, and nothing is recorded for it.
    std::fs::remove_file(&path).unwrap();
    assert!(store.delete_recording_row(org, &sid).await.unwrap());
    server.shutdown(Duration::from_secs(5)).await;
    let server = start_with(config(dir.path(), None, &[])).await;
    let day_ago = chrono::Utc::now().timestamp() - 24 * 3600;
    let replay = replay_stream(&server, &sid.0, &params_issued_at(day_ago)).await;
    check_nothing_changed("replay after retention and a restart", &replay);
    calls_finished(&server).await;
    drain_writes(&server).await;
    assert!(!path.exists(), "the replay recorded the call again");
    assert!(!staging.exists(), "the replay recorded into staging");
    assert_eq!(store.get_recording(org, &sid).await.unwrap(), None);
    assert_eq!(
        store
            .list_turns(org, &sid)
            .await
            .unwrap()
            .iter()
            .map(|t| (&t.role, &t.text))
            .collect::<Vec<_>>(),
        turns.iter().map(|t| (&t.role, &t.text)).collect::<Vec<_>>(),
        "the replay added turns"
    );
    server.shutdown(Duration::from_secs(5)).await;
}

/// Postgres tables the voice webhook reads (which clinic a number is), call setup reads
/// (assistant, clinic and knowledge, the caller's contact and appointments) and the write queue
/// writes: locked, every query on them waits.
const LOCKED_TABLES: &str = "phone_numbers, assistants, clinics, knowledge_chunks, contacts, appointments, calls, turns, call_events, recordings";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_set_up_while_the_database_hangs_is_greeted_and_recorded_later() {
    use sqlx::Connection as _;
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(Backend::Postgres).await.unwrap();
    let server = start_with(config(dir.path(), Some(url.clone()), &[])).await;
    // Another session holds exclusive locks: the queries of call setup neither fail nor answer
    // (a database stuck behind a migration or a long transaction), the worst case for a timeout.
    let mut lock = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut lock).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE {LOCKED_TABLES} IN ACCESS EXCLUSIVE MODE"
    )))
    .execute(&mut lock)
    .await
    .unwrap();

    // A caller who says nothing and hangs up once the agent has been quiet for a while; one who
    // is never answered gives up `hang_up_after + no_answer` (9 s) into the call.
    let report = place_call(&caller(&server), &[]).await.expect("call");
    // This fresh server has no clinic in its cache and the assistant lookup timed out, so the
    // greeting is the fallback clinic's opening (not the clinic's cached greeting).
    let first_voice = report.heard.iter().position(|s| s.unsigned_abs() > 64);
    assert!(
        first_voice.is_some(),
        "the caller heard nothing while the database hung ({} frames)",
        report.frames_received
    );
    eprintln!(
        "greeting heard {} ms into the call",
        first_voice.unwrap() * 1000 / PHONE_RATE as usize
    );
    // Nothing could be written yet.
    let org = org_of(&report);
    let sid = CallSid(report.call_sid.clone());
    assert!(server.state.queue().stats().pending > 0);

    // The database comes back: the queue writes the call.
    sqlx::raw_sql("ROLLBACK").execute(&mut lock).await.unwrap();
    lock.close().await.unwrap();
    calls_finished(&server).await;
    drain_writes(&server).await;
    let store = server.state.store();
    let call = store
        .get_call(org, &sid)
        .await
        .unwrap()
        .expect("call stored");
    assert!(call.end_reason.is_some(), "{call:?}");
    let turns = store.list_turns(org, &sid).await.unwrap();
    assert_eq!(
        turns.first().map(|t| t.role.as_str()),
        Some("agent"),
        "{turns:?}"
    );
    assert!(!turns[0].text.is_empty());
    let (_, wav) = stored_recording(&server, dir.path(), org, &sid).await;
    assert!(wav.len() > 44, "the recording holds audio");
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_the_database_is_down_without_the_drivers_error() {
    let cluster = storage::testing::PgCluster::start_local(Default::default());
    let dir = tempfile::tempdir().unwrap();
    let url = cluster.create_database().await;
    let server = start_with(config(dir.path(), Some(url), &[])).await;
    let http = reqwest::Client::new();
    let health = format!("{}/health", base_url(&server));
    let up = http
        .get(&health)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let up: serde_json::Value = serde_json::from_str(&up).unwrap();
    assert_eq!(up["status"], "ok", "{up}");

    tokio::task::block_in_place(|| cluster.stop());
    let driver_error = server
        .state
        .store()
        .health()
        .await
        .expect_err("the database is down")
        .to_string();
    let resp = http.get(&health).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let body = resp.text().await.unwrap();
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], "degraded", "{body}");
    assert_eq!(json["database"]["state"], "down", "{body}");
    assert!(
        !body.contains(&driver_error),
        "{body} leaks {driver_error:?}"
    );
    assert!(!body.contains("error"), "{body}");
    server.shutdown(Duration::from_secs(5)).await;
}

/// A caller who says one line and hangs up 4 s after the answer: a call that stays up for
/// several seconds.
fn short_call(server: &api::Server, to: &str) -> (api::caller::CallerConfig, Vec<Line>) {
    let mut config = caller(server);
    config.to = to.into();
    config.hang_up_after = Duration::from_secs(4);
    let script = vec![Line::Speak {
        audio: testsignal::voice(PHONE_RATE, 800, 53),
        start: LineStart::AfterAgent {
            pause: Duration::from_millis(300),
        },
    }];
    (config, script)
}

/// Waits (bounded) until `n` calls are in progress.
async fn active_calls_reach(server: &api::Server, n: usize) {
    for _ in 0..200 {
        if server.state.active_calls() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("only {} calls became active", server.state.active_calls());
}

/// The value of an unlabelled metric in `/metrics`.
async fn metric(server: &api::Server, name: &str) -> f64 {
    let body = reqwest::get(format!("{}/metrics", base_url(server)))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {body}"))
        .trim()
        .parse()
        .unwrap()
}

/// Asserts that placing this call got the busy message (a `<Say>` and `<Hangup/>`, no stream).
async fn assert_busy(config: &api::caller::CallerConfig, script: &[Line]) {
    match place_call(config, script).await {
        Err(api::caller::CallerError::Twiml(twiml)) => {
            assert!(twiml.contains("lines are busy"), "{twiml}");
            assert!(twiml.contains("<Hangup/>"), "{twiml}");
        }
        other => panic!("expected the busy message, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_limits_hear_the_busy_message_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(config(
        dir.path(),
        None,
        &[
            ("VOXANNE_MAX_CALLS", "3"),
            ("VOXANNE_MAX_CALLS_PER_NUMBER", "2"),
        ],
    ))
    .await;
    assert_eq!(metric(&server, "voxanne_max_calls").await, 3.0);
    assert_eq!(metric(&server, "voxanne_max_calls_per_number").await, 2.0);
    let (a, script) = short_call(&server, "+15550100201");
    let (b, _) = short_call(&server, "+15550100202");
    let (c, _) = short_call(&server, "+15550100203");
    let place = |mut config: api::caller::CallerConfig| {
        config.call_sid = api::caller::new_sid("CA");
        let script = script.clone();
        tokio::spawn(async move { place_call(&config, &script).await })
    };
    // Two calls on number A: its limit.
    let first = [place(a.clone()), place(a.clone())];
    active_calls_reach(&server, 2).await;
    let mut third = a.clone();
    third.call_sid = api::caller::new_sid("CA");
    assert_busy(&third, &script).await;
    // Number B still has room, and takes the server's last slot.
    let on_b = place(b.clone());
    active_calls_reach(&server, 3).await;
    // Now the server is full for every number.
    let mut on_c = c.clone();
    on_c.call_sid = api::caller::new_sid("CA");
    assert_busy(&on_c, &script).await;
    assert_eq!(
        metric(&server, "voxanne_calls_rejected_number_busy_total").await,
        1.0
    );
    assert_eq!(
        metric(&server, "voxanne_calls_rejected_busy_total").await,
        1.0
    );
    // The accepted calls were answered as usual.
    for call in first.into_iter().chain([on_b]) {
        let report = call.await.unwrap().expect("an accepted call");
        assert!(
            report.first_audio_after_line[0].is_some(),
            "the accepted call's line was answered"
        );
    }
    calls_finished(&server).await;
    // A burst: webhooks answered whose streams have not started yet hold their places, so the
    // third of three simultaneous calls on one number is declined before any stream exists.
    let d = "+15550100204";
    assert!(voice_webhook(&server, d).await.contains("<Connect"));
    assert!(voice_webhook(&server, d).await.contains("<Connect"));
    assert!(voice_webhook(&server, d).await.contains("lines are busy"));
    assert_eq!(
        metric(&server, "voxanne_calls_rejected_number_busy_total").await,
        2.0
    );
    // With the calls over, number A takes calls again (two places are held by D's webhooks,
    // one is free).
    let mut again = a.clone();
    again.call_sid = api::caller::new_sid("CA");
    let report = place_call(&again, &script)
        .await
        .expect("a call after the burst");
    assert!(report.first_audio_after_line[0].is_some());
    assert_eq!(
        metric(&server, "voxanne_calls_rejected_busy_total").await,
        1.0
    );
    server.shutdown(Duration::from_secs(5)).await;
}

/// Posts Twilio's voice webhook for a new inbound call to `to` (signed), without opening the
/// stream the answer points to; returns the TwiML.
async fn voice_webhook(server: &api::Server, to: &str) -> String {
    let sid = api::caller::new_sid("CA");
    let params: Vec<(String, String)> = [
        ("AccountSid", "AC00000000000000000000000000000000"),
        ("CallSid", sid.as_str()),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
        ("From", "+15550100001"),
        ("To", to),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let url = format!("{}/twilio/voice", base_url(server));
    let signature = telephony::signature::compute(AUTH_TOKEN, &url, &params);
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish();
    let response = reqwest::Client::new()
        .post(&url)
        .header("X-Twilio-Signature", signature)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_while_the_database_is_down_is_answered_by_its_clinic_and_stored_when_it_returns() {
    let cluster = storage::testing::PgCluster::start_local(Default::default());
    let dir = tempfile::tempdir().unwrap();
    let url = cluster.create_database().await;
    // The clinic is applied while the database is up, then the server restarts: what it knows
    // of the clinic comes from start-up, not from an earlier call.
    let server = start_with(config(dir.path(), Some(url.clone()), &[])).await;
    let file = api::clinic::read_file(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/bright-smile.toml"),
    )
    .unwrap();
    // Knowledge needs the embedding model, which this test (test engines) does without.
    let file = receptionist::clinic::ClinicFile {
        knowledge: Vec::new(),
        ..file
    };
    let greeting = file
        .clinic
        .greeting
        .clone()
        .expect("the example has a greeting");
    let number = file.clinic.numbers[0].clone();
    let summary = api::clinic::apply(server.state.store(), file, None)
        .await
        .unwrap();
    server.shutdown(Duration::from_secs(5)).await;
    let server = start_with(config(dir.path(), Some(url), &[])).await;

    tokio::task::block_in_place(|| cluster.stop());
    let mut call = caller(&server);
    call.to = number;
    let script = vec![Line::Speak {
        audio: testsignal::voice(PHONE_RATE, 1_000, 54),
        start: LineStart::AfterAgent {
            pause: Duration::from_millis(400),
        },
    }];
    let report = place_call(&call, &script)
        .await
        .expect("the call is answered while the database is down");
    assert_eq!(
        org_of(&report),
        summary.org,
        "routed to the clinic that owns the number"
    );
    let first_voice = report.heard.iter().position(|s| s.unsigned_abs() > 64);
    assert!(first_voice.is_some(), "the caller heard nothing");
    assert!(
        report.first_audio_after_line[0].is_some(),
        "the caller's line was answered"
    );
    calls_finished(&server).await;

    tokio::task::block_in_place(|| cluster.start());
    drain_writes(&server).await;
    let store = server.state.store();
    let sid = CallSid(report.call_sid.clone());
    let stored = store
        .get_call(summary.org, &sid)
        .await
        .unwrap()
        .expect("the call is stored once the database is back");
    assert!(stored.end_reason.is_some(), "{stored:?}");
    let turns = store.list_turns(summary.org, &sid).await.unwrap();
    assert_eq!(
        turns.first().map(|t| t.text.as_str()),
        Some(greeting.as_str()),
        "greeted with the clinic's own greeting: {turns:?}"
    );
    assert!(
        turns.len() >= 3,
        "greeting, the caller's line, a reply: {turns:?}"
    );
    let (_, wav) = stored_recording(&server, dir.path(), summary.org, &sid).await;
    assert!(wav.len() > 44 + 8_000 * 4, "the recording holds the call");
    server.shutdown(Duration::from_secs(5)).await;
}
