//! End to end: a caller speaking from real WAV files, over Twilio's real Media Streams protocol on
//! a loopback WebSocket, to a real server with a real database; then the call record, the turns
//! and the dual-channel recording are read back.

mod common;

use std::time::Duration;

use api::caller::{Line, LineStart, place_call};
use api::simulate::read_wav_8k;
use common::*;
use media::{PHONE_RATE, testsignal};
use storage::{CallSid, LocalRecordingStore, RecordingStore};
use tokio_tungstenite::tungstenite::Message;

/// How long after line `i` ended the caller heard the agent again, in media time (the wall clock
/// runs ahead of it when the machine is loaded, so `first_audio_after_line` is not used here).
fn reply_delay(report: &api::caller::CallReport, i: usize) -> Option<Duration> {
    let end = ms_to_samples(report.line_ends[i].as_millis());
    let first = report
        .heard
        .get(end..)?
        .iter()
        .position(|s| s.unsigned_abs() > 64)?;
    Some(Duration::from_millis(
        (first * 1000 / PHONE_RATE as usize) as u64,
    ))
}

fn after(ms: u64) -> LineStart {
    LineStart::AfterAgent {
        pause: Duration::from_millis(ms),
    }
}

async fn a_call_is_answered_interrupted_recorded_and_stored(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), backend).await;
    let wavs = [
        write_wav(
            dir.path(),
            "line1.wav",
            &testsignal::voice(PHONE_RATE, 1_400, 11),
        ),
        write_wav(
            dir.path(),
            "line2.wav",
            &testsignal::voice(PHONE_RATE, 1_000, 12),
        ),
        write_wav(
            dir.path(),
            "line3.wav",
            &testsignal::voice(PHONE_RATE, 900, 13),
        ),
    ];
    let audio: Vec<Vec<i16>> = wavs.iter().map(|w| read_wav_8k(w).unwrap()).collect();
    let script = vec![
        Line::Speak {
            audio: audio[0].clone(),
            start: after(600),
        },
        // Interrupts the agent's reply to the first line.
        Line::Speak {
            audio: audio[1].clone(),
            start: LineStart::Interrupt {
                after: Duration::from_millis(1_200),
            },
        },
        // "That is all, bye": the agent says goodbye and hangs up.
        Line::Speak {
            audio: audio[2].clone(),
            start: after(600),
        },
    ];
    let report = place_call(&caller(&server), &script).await.expect("call");

    // The protocol, from Twilio's side.
    assert_eq!(report.protocol_errors, 0, "every message was valid Twilio");
    assert!(
        report.ended_by_server,
        "the agent hung up after its goodbye"
    );
    assert_eq!(report.clears.len(), 1, "exactly one barge-in");
    assert!(report.frames_received > 200, "{}", report.frames_received);
    assert!(report.marks_echoed >= 5, "{}", report.marks_echoed);
    assert_eq!(report.line_ends.len(), 3);
    for i in [0, 1, 2] {
        let v2v = reply_delay(&report, i).expect("each line is answered");
        // 700 ms of endpointing silence plus a little; instant engines.
        assert!(
            v2v >= Duration::from_millis(650) && v2v < Duration::from_millis(2_000),
            "line {i}: {v2v:?}"
        );
    }
    // Before the clear the caller heard the agent; right after it, silence.
    let clear = ms_to_samples(report.clears[0].as_millis());
    assert!(
        energy(
            &report.heard,
            clear - ms_to_samples(400),
            clear - ms_to_samples(100)
        ) > 1e5
    );
    let quiet_from = clear + ms_to_samples(60);
    assert!(
        energy(&report.heard, quiet_from, quiet_from + ms_to_samples(500)) < 1.0,
        "audio kept playing after the clear"
    );

    // The record, once the call task has finished (the caller sees the socket close a moment
    // before the server reports the call's end) and the write queue has drained.
    let store = server.state.store().clone();
    let org = org_of(&report);
    let sid = CallSid(report.call_sid.clone());
    let mut call = None;
    for _ in 0..200 {
        drain_writes(&server).await;
        call = store.get_call(org, &sid).await.unwrap();
        if call.as_ref().is_some_and(|c| c.end_reason.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let call = call.expect("call stored");
    assert_eq!(call.end_reason.as_deref(), Some("agent_hung_up"));
    assert_eq!(call.from, "+15550100001");
    let call_ms = (report.said.len() / 8) as i64;
    assert!(
        (call.duration_ms.unwrap() - call_ms).abs() < 500,
        "{call:?} vs {call_ms}"
    );

    let turns = store.list_turns(org, &sid).await.unwrap();
    let roles: Vec<&str> = turns.iter().map(|t| t.role.as_str()).collect();
    assert_eq!(
        roles,
        [
            "agent", "caller", "agent", "caller", "agent", "caller", "agent"
        ]
    );
    let caller_texts: Vec<&str> = turns
        .iter()
        .filter(|t| t.role == "caller")
        .map(|t| t.text.as_str())
        .collect();
    assert_eq!(caller_texts, LINES);
    let cut = &turns[2];
    assert!(cut.interrupted);
    let heard = cut.heard_text.clone().unwrap();
    assert!(
        !heard.is_empty() && cut.text.starts_with(&heard) && heard.len() < cut.text.len(),
        "heard {heard:?} of {:?}",
        cut.text
    );
    assert!(!turns[4].interrupted);
    assert_eq!(turns[6].text, "Thank you for calling. Goodbye!");
    for t in turns.iter().filter(|t| t.role == "caller") {
        assert_eq!(t.latency.endpointing_ms, Some(700));
    }
    let v2v = turns[4].latency.voice_to_voice_ms.unwrap();
    assert!((700..1_500).contains(&v2v), "{v2v}");
    let kinds: Vec<String> = store
        .list_events(org, &sid)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    for kind in ["start", "barge_in", "hangup"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }

    // The recording: stored, checksummed, both sides on their channels, time-aligned.
    let mut recording = None;
    for _ in 0..50 {
        recording = store.get_recording(org, &sid).await.unwrap();
        if recording.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = server.state.queue().flush(Duration::from_secs(1)).await;
    }
    let recording = recording.expect("recording row");
    assert_eq!((recording.channels, recording.sample_rate), (2, 8_000));
    assert_eq!(recording.sha256.len(), 64);
    let path = LocalRecordingStore::in_data_dir(dir.path())
        .local_path(&recording.location)
        .expect("local file");
    let mut wav = hound::WavReader::open(&path).unwrap();
    assert_eq!(wav.spec().channels, 2);
    assert_eq!(wav.spec().sample_rate, 8_000);
    let samples: Vec<i16> = wav.samples::<i16>().map(Result::unwrap).collect();
    let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
    let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
    // Left is exactly what the caller sent (μ-law decodes identically on both sides).
    let n = left.len().min(report.said.len());
    assert!(
        n + 8_000 >= report.said.len(),
        "{n} of {}",
        report.said.len()
    );
    assert_eq!(&left[..n], &report.said[..n], "caller channel differs");
    // Right holds every frame the agent sent (including those the clear dropped before play).
    let agent_frames = voiced_frames(&right) as i64;
    assert!(
        (agent_frames - report.frames_received as i64).abs() <= 10,
        "{agent_frames} voiced frames vs {} sent",
        report.frames_received
    );
    // Time-aligned: while the caller speaks line 1, the agent channel is quiet, and the reply
    // starts in the recording ~700 ms after the line ends, as the caller heard it.
    let line1_end = ms_to_samples(report.line_ends[0].as_millis());
    let line1_start = line1_end - audio[0].len();
    assert!(energy(&left, line1_start + 800, line1_end - 800) > 1e5);
    assert!(energy(&right, line1_start + 800, line1_end) < 1.0);
    let reply = right[line1_end..]
        .iter()
        .position(|s| s.unsigned_abs() > 64)
        .unwrap();
    assert!(
        (ms_to_samples(650)..ms_to_samples(1_200)).contains(&reply),
        "reply starts {} ms after the line",
        reply / 8
    );
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_answered_interrupted_recorded_and_stored_sqlite() {
    a_call_is_answered_interrupted_recorded_and_stored(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_answered_interrupted_recorded_and_stored_postgres() {
    a_call_is_answered_interrupted_recorded_and_stored(Backend::Postgres).await;
}

fn form(params: &[(&str, &str)]) -> (Vec<(String, String)>, String) {
    let pairs: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter())
        .finish();
    (pairs, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_webhooks_are_signature_checked_and_callbacks_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Backend::Sqlite).await;
    let base = base_url(&server);
    let http = reqwest::Client::new();
    let sid = "CA0123456789abcdef0123456789abcdef";
    let (pairs, body) = form(&[
        ("CallSid", sid),
        ("AccountSid", "AC1"),
        ("From", "+15550001111"),
        ("To", "+15550002222"),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
    ]);
    let url = format!("{base}/twilio/voice");
    let post = |sig: Option<String>, body: String, path: &str| {
        let mut req = http
            .post(format!("{base}{path}"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(sig) = sig {
            req = req.header("X-Twilio-Signature", sig);
        }
        req.send()
    };
    // No signature, a wrong one, one for another URL, one with another token: 403.
    assert_eq!(
        post(None, body.clone(), "/twilio/voice")
            .await
            .unwrap()
            .status(),
        403
    );
    let wrong = Some("AAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_string());
    assert_eq!(
        post(wrong, body.clone(), "/twilio/voice")
            .await
            .unwrap()
            .status(),
        403
    );
    let other_url = telephony::signature::compute(AUTH_TOKEN, &format!("{base}/other"), &pairs);
    assert_eq!(
        post(Some(other_url), body.clone(), "/twilio/voice")
            .await
            .unwrap()
            .status(),
        403
    );
    let other_token = telephony::signature::compute("not-the-token", &url, &pairs);
    assert_eq!(
        post(Some(other_token), body.clone(), "/twilio/voice")
            .await
            .unwrap()
            .status(),
        403
    );
    // A tampered body with the original signature: 403.
    let good = telephony::signature::compute(AUTH_TOKEN, &url, &pairs);
    let tampered = body.replace("%2B15550001111", "%2B15559999999");
    assert_eq!(
        post(Some(good.clone()), tampered, "/twilio/voice")
            .await
            .unwrap()
            .status(),
        403
    );
    // The genuine webhook: TwiML that connects a stream with the call's parameters.
    let resp = post(Some(good), body.clone(), "/twilio/voice")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/xml")
    );
    let xml = resp.text().await.unwrap();
    let (stream_url, params) = telephony::twiml::parse_connect_stream(&xml).expect(&xml);
    assert_eq!(stream_url, format!("ws://{}/twilio/media", server.addr));
    let names: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["org", "assistant", "token"]);
    // Signed but missing the CallSid: 400. Oversized: 413.
    let (p2, b2) = form(&[("From", "+1")]);
    let sig2 = telephony::signature::compute(AUTH_TOKEN, &url, &p2);
    assert_eq!(
        post(Some(sig2), b2, "/twilio/voice")
            .await
            .unwrap()
            .status(),
        400
    );
    let huge = format!("CallSid=CA1&Junk={}", "x".repeat(70 * 1024));
    assert_eq!(
        post(None, huge, "/twilio/voice").await.unwrap().status(),
        413
    );

    // Status callbacks: retried, out of order; the call ends up completed, once.
    let status_url = format!("{base}/twilio/status");
    for status in [
        "in-progress",
        "completed",
        "completed",
        "ringing",
        "in-progress",
    ] {
        let (p, b) = form(&[
            ("CallSid", sid),
            ("CallStatus", status),
            ("To", "+15550002222"),
            ("CallDuration", "12"),
        ]);
        let sig = telephony::signature::compute(AUTH_TOKEN, &status_url, &p);
        let resp = post(Some(sig), b, "/twilio/status").await.unwrap();
        assert_eq!(resp.status(), 200, "{status}");
    }
    let (p, b) = form(&[("CallSid", sid), ("CallStatus", "completed")]);
    let _ = p;
    assert_eq!(post(None, b, "/twilio/status").await.unwrap().status(), 403);
    drain_writes(&server).await;
    let (org, _) = server.state.store().ensure_default_org().await.unwrap();
    let call = server
        .state
        .store()
        .get_call(org, &CallSid(sid.into()))
        .await
        .unwrap()
        .expect("call");
    assert_eq!(call.status, "completed");
    assert_eq!(call.from, "+15550001111");
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("voxanne_webhooks_forbidden_total 6"),
        "{metrics}"
    );
    let health = http
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["database"]["backend"], "sqlite");
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_stream_is_counted_and_the_call_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Backend::Sqlite).await;
    let mut config = caller(&server);
    let big_payload = telephony::protocol::twilio::media(9, "MZx", 1, 0, &vec![0xFFu8; 9_000]);
    config.inject = vec![
        Message::Text("{not json".into()),
        Message::Text(r#"{"event":"media","media":{"payload":"%%%not-base64"}}"#.into()),
        Message::Text(big_payload.into()),
        Message::Text(format!(r#"{{"event":"media","pad":"{}"}}"#, "x".repeat(100_000)).into()),
        Message::Text(r#"{"event":"teleport","teleport":{}}"#.into()),
        Message::Binary(vec![1, 2, 3].into()),
        Message::Text(r#"{"event":"dtmf","dtmf":{"digit":"xyz"}}"#.into()),
        Message::Text(r#"{"event":"mark"}"#.into()),
    ];
    config.hang_up_after = Duration::from_secs(2);
    let script = vec![Line::Speak {
        audio: testsignal::voice(PHONE_RATE, 1_200, 21),
        start: after(500),
    }];
    let report = place_call(&config, &script).await.expect("call");
    assert!(
        report.first_audio_after_line[0].is_some(),
        "the call went on and the line was answered"
    );
    assert_eq!(report.protocol_errors, 0);
    assert!(!report.ended_by_server);
    drain_writes(&server).await;
    // Wait for the call task to finish and count what it dropped.
    let mut malformed = 0;
    for _ in 0..50 {
        malformed = server
            .state
            .metrics()
            .malformed_messages
            .load(std::sync::atomic::Ordering::Relaxed);
        if malformed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Bad JSON, bad base64, oversized payload, oversized message, bad digit, nameless mark.
    assert_eq!(malformed, 6);
    let org = org_of(&report);
    let turns = server
        .state
        .store()
        .list_turns(org, &CallSid(report.call_sid.clone()))
        .await
        .unwrap();
    assert_eq!(turns.len(), 3, "greeting, the caller's line, the reply");
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_a_forged_token_is_refused() {
    use futures_util::{SinkExt, StreamExt};
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Backend::Sqlite).await;
    // Parameters from a real webhook for one call, replayed for another CallSid.
    let base = base_url(&server);
    let sid = "CAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let (pairs, body) = form(&[("CallSid", sid), ("To", "+1555"), ("From", "+1666")]);
    let sig = telephony::signature::compute(AUTH_TOKEN, &format!("{base}/twilio/voice"), &pairs);
    let xml = reqwest::Client::new()
        .post(format!("{base}/twilio/voice"))
        .header("X-Twilio-Signature", sig)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (stream_url, params) = telephony::twiml::parse_connect_stream(&xml).unwrap();
    let ws_url = format!("ws://{}/twilio/media", server.addr);
    // Without Twilio's signature on the opening request, there is no stream at all.
    match tokio_tungstenite::connect_async(&ws_url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 403)
        }
        other => panic!("unsigned stream accepted: {:?}", other.map(|_| ())),
    }
    // Signed, but the token belongs to another call.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut request = ws_url.as_str().into_client_request().unwrap();
    let stream_sig = telephony::signature::compute(AUTH_TOKEN, &stream_url, &[]);
    request
        .headers_mut()
        .insert("X-Twilio-Signature", stream_sig.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let start = telephony::protocol::Start {
        account_sid: "AC1".into(),
        stream_sid: "MZforged".into(),
        call_sid: "CAbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb".into(),
        tracks: vec!["inbound".into()],
        media_format: telephony::protocol::MediaFormat {
            encoding: "audio/x-mulaw".into(),
            sample_rate: 8000,
            channels: 1,
        },
        custom_parameters: params.into_iter().collect(),
    };
    ws.send(Message::Text(
        telephony::protocol::twilio::connected().into(),
    ))
    .await
    .unwrap();
    ws.send(Message::Text(
        telephony::protocol::twilio::start(1, &start).into(),
    ))
    .await
    .unwrap();
    // The server closes the stream without saying a word.
    let mut media = 0;
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Text(_)) => media += 1,
                Ok(Message::Close(_)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "stream not closed");
    assert_eq!(media, 0);
    assert_eq!(server.state.active_calls(), 0);
    server.shutdown(Duration::from_secs(5)).await;
}

/// A brain that hands every caller to a human at `to` (standing in for any brain, e.g. an
/// LLM, that names a number).
#[derive(Debug)]
struct TransferBrain {
    to: &'static str,
}

impl agent::engine::Brain for TransferBrain {
    fn name(&self) -> &str {
        "transfer-brain"
    }

    fn respond(
        &self,
        _request: agent::engine::BrainRequest,
    ) -> futures_util::stream::BoxStream<
        'static,
        Result<agent::engine::BrainEvent, agent::engine::EngineError>,
    > {
        use agent::engine::{Action, BrainEvent};
        Box::pin(futures_util::stream::iter([
            Ok(BrainEvent::Text(
                "Let me put you through to our front desk.".into(),
            )),
            Ok(BrainEvent::Action(Action::Transfer { to: self.to.into() })),
        ]))
    }
}

/// A call whose brain transfers to `to`, in the default organisation whose clinic's transfer
/// number is +15550009999; returns what Twilio's `<Connect action>` request gets, twice.
async fn transfer_call(
    to: &'static str,
) -> (String, String, api::Server, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut engines = api::engines::test_engines(&LINES, 2);
    engines.brain = std::sync::Arc::new(TransferBrain { to });
    let mut config = config(dir.path(), None, &[]);
    config.brain = api::config::BrainChoice::Shared;
    let server = api::start(config, engines).await.unwrap();
    let store = server.state.store().clone();
    let (org, _) = store.ensure_default_org().await.unwrap();
    let mut file = receptionist::testing::example_clinic().file;
    file.clinic.transfer_number = Some("+15550009999".into());
    file.clinic.numbers.clear();
    store.put_clinic(org, &file.to_json()).await.unwrap();
    let script = vec![Line::Speak {
        audio: testsignal::voice(PHONE_RATE, 1_000, 31),
        start: after(500),
    }];
    let report = place_call(&caller(&server), &script).await.expect("call");
    assert!(
        report.ended_by_server,
        "the agent ended the stream to transfer"
    );
    // Twilio now asks <Connect action> what to do.
    let base = base_url(&server);
    let url = format!("{base}/twilio/connect-action");
    let (pairs, body) = form(&[("CallSid", &report.call_sid), ("CallStatus", "in-progress")]);
    let ask = || {
        let sig = telephony::signature::compute(AUTH_TOKEN, &url, &pairs);
        reqwest::Client::new()
            .post(&url)
            .header("X-Twilio-Signature", sig)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body.clone())
            .send()
    };
    let first = ask().await.unwrap().text().await.unwrap();
    let again = ask().await.unwrap().text().await.unwrap();
    drain_writes(&server).await;
    let call = store
        .get_call(org, &CallSid(report.call_sid.clone()))
        .await
        .unwrap()
        .unwrap();
    (
        first,
        again,
        server,
        call.end_reason.unwrap_or_default(),
        dir,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_ends_the_stream_and_twilio_is_told_to_dial_the_clinic() {
    let (first, again, server, reason, _dir) = transfer_call("+15550009999").await;
    assert!(first.contains("<Dial>+15550009999</Dial>"), "{first}");
    assert!(again.contains("<Hangup/>"), "dialled once: {again}");
    assert_eq!(reason, "transfer");
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_to_any_other_number_is_refused() {
    let (first, _, server, _, _dir) = transfer_call("+19005550100").await;
    assert!(!first.contains("<Dial>"), "{first}");
    assert!(first.contains("<Hangup/>"), "{first}");
    assert_eq!(
        server
            .state
            .metrics()
            .transfers_refused
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_reaches_its_own_organisation_and_assistant_settings() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Backend::Sqlite).await;
    let store = server.state.store().clone();
    let clinic = store.create_org("Smile Dental").await.unwrap();
    let assistant = store
        .create_assistant(
            clinic,
            &storage::NewAssistant {
                name: "front desk".into(),
                greeting: "Smile Dental, how can we help?".into(),
                voice: "default".into(),
                transfer_number: None,
                settings: serde_json::json!({"end_silence_ms": 1200, "barge_in_min_ms": "soon"}),
            },
        )
        .await
        .unwrap();
    store
        .assign_number(clinic, assistant, "+15557770000")
        .await
        .unwrap();
    let mut config = caller(&server);
    config.to = "+15557770000".into();
    let script = vec![Line::Speak {
        audio: testsignal::voice(PHONE_RATE, 1_000, 41),
        start: after(500),
    }];
    let report = place_call(&config, &script).await.expect("call");
    assert_eq!(report.org.as_deref(), Some(clinic.to_string().as_str()));
    // The configured end-of-turn silence (1200 ms, not the default 700) is in force.
    let v2v = reply_delay(&report, 0).expect("the line is answered");
    assert!(
        v2v >= Duration::from_millis(1_150) && v2v < Duration::from_millis(2_000),
        "{v2v:?}"
    );
    drain_writes(&server).await;
    let sid = CallSid(report.call_sid.clone());
    let turns = store.list_turns(clinic, &sid).await.unwrap();
    assert_eq!(turns[0].text, "Smile Dental, how can we help?");
    assert_eq!(turns[1].latency.endpointing_ms, Some(1_200));
    // The default organisation sees nothing of this call.
    let (default_org, _) = store.ensure_default_org().await.unwrap();
    assert!(store.get_call(default_org, &sid).await.unwrap().is_none());
    assert!(
        store
            .list_turns(default_org, &sid)
            .await
            .unwrap()
            .is_empty()
    );
    server.shutdown(Duration::from_secs(5)).await;
}
