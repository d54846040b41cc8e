//! The short soak: the load generator drives a hundred concurrent simulated Twilio callers
//! ([`CALLERS`]: twenty in an unoptimised build) against the real server in-process, with the
//! test engines, for a minute; each call lasts 15-30 s and its caller dials again as it ends, so
//! a few hundred calls are set up and torn down. Nothing may fail, every call's records must be in the store (the call with its end and
//! status, every turn and event, the recording matching what the caller sent), and afterwards
//! the server must be idle: no call in progress, nothing queued, nothing left in staging.
//!
//! No timing or CPU thresholds: the machine is shared. `scripts/soak.sh` is the long version
//! (a release server, 30 minutes, memory sampled).

mod common;

use std::time::Duration;

use api::load::{CallLength, Failure, LoadOptions, VerifyTarget};
use common::*;
use storage::LocalRecordingStore;

/// What the scripted speech-to-text hears, in turn across all calls: no goodbye and nothing that
/// hands the caller to a person, so every call lasts until its caller hangs up.
const SOAK_LINES: [&str; 5] = [
    "Hi, I would like to book a cleaning.",
    "Tuesday morning would be great.",
    "How much is a check-up?",
    "What time do you open on Saturday?",
    "Is there parking?",
];

/// A hundred callers with an optimised build (`cargo test --release`). An unoptimised one spends
/// ~55 ms of CPU per second of call (server and callers together, measured; ~8 ms optimised),
/// so a hundred would need five cores and two shared ones are overloaded into dead-connection
/// timeouts; twenty take about one core and leave the machine room.
const CALLERS: usize = if cfg!(debug_assertions) { 20 } else { 100 };

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_for_a_minute_lose_nothing_and_leave_the_server_idle() {
    let dir = tempfile::tempdir().unwrap();
    // Headroom over the callers: a caller dials again the moment its call ends, before the
    // server has given the old call's slot back.
    let max_calls = (CALLERS + CALLERS / 10 + 2).to_string();
    let config = config(
        dir.path(),
        None,
        &[("VOXANNE_MAX_CALLS", max_calls.as_str())],
    );
    engines::models::install_tls_provider();
    let server = api::start(config, api::engines::test_engines(&SOAK_LINES, 2))
        .await
        .expect("server starts");
    let base = base_url(&server);
    let report = api::load::run(LoadOptions {
        server: base.clone(),
        public_url: base,
        auth_token: AUTH_TOKEN.into(),
        calls: CALLERS,
        duration: Duration::from_secs(60),
        call_length: Some(CallLength {
            min: Duration::from_secs(15),
            max: Duration::from_secs(30),
        }),
        ramp: Duration::from_millis(20),
        to: None,
        // In-process: the memory and CPU reported are the test's, server and callers together.
        server_pid: Some(std::process::id()),
        sample_every: Duration::from_secs(15),
        spoken: Vec::new(),
        verify: Some(VerifyTarget {
            store: server.state.store().clone(),
            recordings: LocalRecordingStore::in_data_dir(dir.path()),
        }),
    })
    .await
    .expect("the load runs");

    // Every call placed ran to its end, without an error on either side.
    let failed: Vec<(&str, &(Failure, String))> = report
        .calls
        .iter()
        .filter_map(|c| Some((c.call_sid.as_str(), c.outcome.as_ref().err()?)))
        .collect();
    assert!(
        failed.is_empty(),
        "{} calls failed: {failed:?}",
        failed.len()
    );
    assert!(
        report.placed() > CALLERS,
        "callers dial again: {} calls",
        report.placed()
    );
    assert_eq!(
        report.protocol_errors(),
        0,
        "every message was valid Twilio"
    );

    // Every call's records are there and match what its caller did.
    let v = report.verification.as_ref().expect("verified");
    assert_eq!(v.checked, report.placed());
    assert!(v.lost.is_empty(), "lost records: {:?}", v.lost);
    assert!(v.mismatched.is_empty(), "wrong records: {:?}", v.mismatched);
    assert_eq!(v.complete, report.placed());
    assert_eq!(
        v.store_calls,
        report.placed() as i64,
        "one call row per call placed, no other"
    );
    assert_eq!(
        v.end_reasons.get("caller_hung_up").copied(),
        Some(report.placed())
    );
    assert_eq!(v.error_events(), 0, "events: {:?}", v.event_kinds);

    // The server is back to idle: no call, no write waiting or lost, no staged recording.
    assert!(report.idle.idle, "{:?}", report.idle);
    assert_eq!(server.state.active_calls(), 0);
    let q = server.state.queue().stats();
    assert_eq!(
        (q.pending, q.queued, q.spilled, q.dropped, q.rejected),
        (0, 0, 0, 0, 0),
        "{q:?}"
    );
    assert!(q.db_up);
    let staged = LocalRecordingStore::in_data_dir(dir.path())
        .list_staged()
        .unwrap();
    assert!(staged.is_empty(), "recordings left in staging: {staged:?}");
    assert!(report.passed());
    server.shutdown(Duration::from_secs(10)).await;
}
