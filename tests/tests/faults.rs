//! End to end, when something goes wrong: a replayed media stream, a database that is slow or
//! down while calls are set up, and what `/health` tells the world about it.

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
    let token = telephony::webhook::stream_token(AUTH_TOKEN, &sid.0, &org_s, &assistant_s);
    let parameters = [
        ("org", org_s.clone()),
        ("assistant", assistant_s.clone()),
        ("token", token),
    ];

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
    server.shutdown(Duration::from_secs(5)).await;
}

/// Postgres tables call setup reads (assistant, clinic and knowledge, the caller's contact and
/// appointments) and the write queue writes: locked, every query on them waits.
const LOCKED_TABLES: &str = "assistants, clinics, knowledge_chunks, contacts, appointments, calls, turns, call_events, recordings";

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
