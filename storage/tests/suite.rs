//! The storage suite. Every test is one `async fn(TestDb)`, run once against SQLite and once against a real
//! PostgreSQL server (`backend_tests!` below), so the two backends are held to the same behaviour.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use storage::{
    BookOutcome, CallQuery, ContactRecord, KnowledgeChunk, NewAssistant, NewBooking, NewCallback,
    OrgId, QueueConfig, StoreError, WriteOp, WriteQueue,
};

backend_tests!(store, "multi_thread":
    migrations_from_empty,
    org_id_is_required_everywhere,
    orgs_assistants_and_numbers,
    replayed_callbacks_change_nothing,
    status_callbacks_out_of_order,
    writes_before_call_started_are_kept,
    a_batch_is_one_transaction,
    concurrent_calls_write_at_once,
    org_isolation,
    dashboard_paging,
    contacts_and_appointments,
    rejected_write_does_not_block_the_queue,
    booking_lands_and_reads_back,
    overlapping_bookings_conflict,
    same_key_books_once,
    concurrent_bookings_of_one_slot,
    reschedule_and_cancel,
    receptionist_data_is_isolated_per_org,
    knowledge_replace_delete_and_hash,
    slugs_clinic_config_and_numbers,
    callback_requests,
);

// On a current-thread runtime, code that does not await keeps the writer task from running, which makes
// "the queue is full" deterministic.
backend_tests!(queue_overflow, "current_thread":
    spill_file_is_written_back,
    spill_file_from_previous_run_is_replayed,
);

async fn migrations_from_empty(db: TestDb) {
    let store = &db.store;
    let latest = store.latest_schema_version();
    assert!(latest >= 1);
    assert_eq!(store.schema_version().await.unwrap(), latest);
    // Running again, and opening again, are no-ops.
    store.migrate().await.unwrap();
    let reopened = match db.backend {
        Backend::Sqlite => storage::Store::open(None, db.dir.path()).await.unwrap(),
        Backend::Postgres => storage::Store::open(db.url.as_deref(), db.dir.path())
            .await
            .unwrap(),
    };
    assert_eq!(reopened.backend(), store.backend());
    assert_eq!(reopened.schema_version().await.unwrap(), latest);
    reopened.health().await.unwrap();
    // Every table is there and empty.
    for table in [
        "SELECT 1 FROM organisations",
        "SELECT 1 FROM assistants",
        "SELECT 1 FROM phone_numbers",
        "SELECT 1 FROM calls",
        "SELECT 1 FROM turns",
        "SELECT 1 FROM call_events",
        "SELECT 1 FROM recordings",
        "SELECT 1 FROM contacts",
        "SELECT 1 FROM appointments",
        "SELECT 1 FROM clinics",
        "SELECT 1 FROM knowledge_chunks",
        "SELECT 1 FROM callback_requests",
        "SELECT slug FROM organisations",
    ] {
        db.raw(table)
            .await
            .unwrap_or_else(|e| panic!("{table}: {e}"));
    }
    assert!(db.raw("SELECT 1 FROM no_such_table").await.is_err());
    let org = store.create_org("x").await.unwrap();
    assert_eq!(store.count_calls(org, None).await.unwrap(), 0);
}

async fn org_id_is_required_everywhere(db: TestDb) {
    // The seeds once had call logs with a null org: the schema must refuse them.
    let (org, _) = db.store.ensure_default_org().await.unwrap();
    let null_org = [
        "INSERT INTO calls (sid, org_id, status, status_rank, started_at, placeholder, created_at, updated_at) \
         VALUES ('CAnull', NULL, 'unknown', 0, '2026-01-01T00:00:00.000000Z', FALSE, '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')",
        "INSERT INTO phone_numbers (e164, org_id, assistant_id) VALUES ('+1555', NULL, NULL)",
        "INSERT INTO contacts (org_id, phone, updated_at, created_at) \
         VALUES (NULL, '+1555', '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')",
    ];
    for sql in null_org {
        let err = db.raw(sql).await.expect_err(sql);
        assert!(matches!(err, sqlx::Error::Database(_)), "{sql}: {err}");
    }
    // An org that does not exist is refused by the foreign key, through the API too.
    let ghost = OrgId::new();
    let err = db
        .store
        .apply(&call_started(ghost, &sid(1), t(0)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    let err = db.store.apply(&turn(ghost, &sid(2), 0)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    assert_eq!(db.store.count_calls(ghost, None).await.unwrap(), 0);
    assert_eq!(db.store.count_calls(org, None).await.unwrap(), 0);
}

async fn orgs_assistants_and_numbers(db: TestDb) {
    let store = &db.store;
    let (org, assistant) = store.ensure_default_org().await.unwrap();
    assert_eq!(store.ensure_default_org().await.unwrap(), (org, assistant));
    let default = store
        .get_assistant(org, assistant)
        .await
        .unwrap()
        .expect("default assistant");
    assert!(!default.greeting.is_empty());

    let clinic = store.create_org("Smile Dental").await.unwrap();
    let settings =
        serde_json::json!({ "brain": { "model": "small", "temperature": 0.3 }, "stt": "whisper" });
    let new = NewAssistant {
        name: "Front desk".into(),
        greeting: "Smile Dental, how can I help?".into(),
        voice: "en-GB-female".into(),
        transfer_number: Some("+15550001111".into()),
        settings: settings.clone(),
    };
    let desk = store.create_assistant(clinic, &new).await.unwrap();
    let got = store
        .get_assistant(clinic, desk)
        .await
        .unwrap()
        .expect("assistant");
    assert_eq!(
        (
            got.id,
            got.org,
            got.name.as_str(),
            got.greeting.as_str(),
            got.voice.as_str()
        ),
        (
            desk,
            clinic,
            "Front desk",
            "Smile Dental, how can I help?",
            "en-GB-female"
        )
    );
    assert_eq!(got.transfer_number.as_deref(), Some("+15550001111"));
    assert_eq!(got.settings, settings);
    // Not visible from another org.
    assert_eq!(store.get_assistant(org, desk).await.unwrap(), None);

    assert_eq!(
        store.knowledge_base(clinic, desk).await.unwrap().as_deref(),
        Some("")
    );
    store
        .set_knowledge_base(clinic, desk, "Open 9-5. Parking at the back.")
        .await
        .unwrap();
    assert_eq!(
        store.knowledge_base(clinic, desk).await.unwrap().as_deref(),
        Some("Open 9-5. Parking at the back.")
    );
    assert!(matches!(
        store.set_knowledge_base(org, desk, "x").await,
        Err(StoreError::NotFound(_))
    ));

    assert_eq!(store.resolve_number("+15550002222").await.unwrap(), None);
    store
        .assign_number(clinic, desk, "+15550002222")
        .await
        .unwrap();
    store
        .assign_number(clinic, desk, "+15550002222")
        .await
        .unwrap();
    assert_eq!(
        store.resolve_number("+15550002222").await.unwrap(),
        Some((clinic, desk))
    );
    // Another org's assistant cannot take the number.
    assert!(matches!(
        store.assign_number(org, desk, "+15550003333").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.resolve_number("+15550003333").await.unwrap(), None);
    // Re-assigning moves it.
    store
        .assign_number(org, assistant, "+15550002222")
        .await
        .unwrap();
    assert_eq!(
        store.resolve_number("+15550002222").await.unwrap(),
        Some((org, assistant))
    );

    assert!(matches!(
        store.create_assistant(OrgId::new(), &new).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn replayed_callbacks_change_nothing(db: TestDb) {
    let store = &db.store;
    let (org, assistant) = store.ensure_default_org().await.unwrap();
    let call = sid(7);
    let mut started = call_started(org, &call, t(0));
    if let WriteOp::CallStarted { assistant: a, .. } = &mut started {
        *a = Some(assistant);
    }
    let ops = vec![
        started,
        status(org, &call, "ringing", t(1)),
        status(org, &call, "in-progress", t(2)),
        turn(org, &call, 0),
        turn(org, &call, 1),
        event(org, &call, 0, "start"),
        event(org, &call, 1, "dtmf"),
        ended(org, &call, t(60), "caller_hangup"),
        status(org, &call, "completed", t(61)),
        recording(org, &call),
    ];
    for op in &ops {
        store.apply(op).await.unwrap();
    }
    let snapshot = (
        store.get_call(org, &call).await.unwrap().expect("call"),
        store.list_turns(org, &call).await.unwrap(),
        store.list_events(org, &call).await.unwrap(),
        store.get_recording(org, &call).await.unwrap(),
    );
    assert_eq!(snapshot.0.status, "completed");
    assert_eq!(snapshot.0.assistant, Some(assistant));
    assert_eq!(snapshot.0.started_at, t(0));
    assert_eq!(snapshot.0.ended_at, Some(t(60)));
    assert_eq!(snapshot.0.end_reason.as_deref(), Some("caller_hangup"));
    assert_eq!(snapshot.0.duration_ms, Some(60_000));
    assert_eq!(
        snapshot.1,
        vec![turn_record(org, &call, 0), turn_record(org, &call, 1)]
    );
    assert_eq!(
        snapshot.2,
        vec![
            event_record(org, &call, 0, "start"),
            event_record(org, &call, 1, "dtmf")
        ]
    );
    assert_eq!(snapshot.3, Some(recording_record(org, &call)));

    // Twilio resends everything, twice, and our side retries too: nothing changes.
    for _ in 0..2 {
        for op in &ops {
            store.apply(op).await.unwrap();
        }
        store.apply_batch(&ops).await.unwrap();
    }
    // Replays that differ are still replays of the same key: the first write stands.
    let mut changed_turn = turn_record(org, &call, 1);
    changed_turn.text = "something else".into();
    store.apply(&WriteOp::Turn(changed_turn)).await.unwrap();
    store
        .apply(&ended(org, &call, t(90), "error"))
        .await
        .unwrap();
    let mut other_started = call_started(org, &call, t(30));
    if let WriteOp::CallStarted { from, .. } = &mut other_started {
        *from = "+19999999999".into();
    }
    store.apply(&other_started).await.unwrap();

    let after = (
        store.get_call(org, &call).await.unwrap().expect("call"),
        store.list_turns(org, &call).await.unwrap(),
        store.list_events(org, &call).await.unwrap(),
        store.get_recording(org, &call).await.unwrap(),
    );
    assert_eq!(after, snapshot);
    assert_eq!(store.count_calls(org, None).await.unwrap(), 1);
}

async fn status_callbacks_out_of_order(db: TestDb) {
    let store = &db.store;
    let (org, _) = store.ensure_default_org().await.unwrap();

    // Completed arrives first, then the earlier callbacks, then our own CallStarted.
    let a = sid(1);
    store
        .apply(&status(org, &a, "completed", t(100)))
        .await
        .unwrap();
    store
        .apply(&status(org, &a, "in-progress", t(20)))
        .await
        .unwrap();
    store
        .apply(&status(org, &a, "ringing", t(10)))
        .await
        .unwrap();
    let placeholder = store
        .get_call(org, &a)
        .await
        .unwrap()
        .expect("placeholder row");
    assert_eq!(placeholder.status, "completed");
    assert_eq!(placeholder.from, "");
    // Earliest time seen, whatever the arrival order.
    assert_eq!(placeholder.started_at, t(10));
    store.apply(&call_started(org, &a, t(12))).await.unwrap();
    let call = store.get_call(org, &a).await.unwrap().unwrap();
    assert_eq!(
        call.status, "completed",
        "CallStarted must not move a call backwards"
    );
    assert_eq!(call.started_at, t(12));
    assert_eq!(call.from, "+15550100001");
    assert_eq!(call.direction, "inbound");

    // The usual order, with a late ringing and a duplicated in-progress.
    let b = sid(2);
    store.apply(&call_started(org, &b, t(0))).await.unwrap();
    assert_eq!(
        store.get_call(org, &b).await.unwrap().unwrap().status,
        "in-progress"
    );
    store
        .apply(&status(org, &b, "in-progress", t(1)))
        .await
        .unwrap();
    store
        .apply(&status(org, &b, "ringing", t(0)))
        .await
        .unwrap();
    store
        .apply(&status(org, &b, "in-progress", t(1)))
        .await
        .unwrap();
    assert_eq!(
        store.get_call(org, &b).await.unwrap().unwrap().status,
        "in-progress"
    );
    // The first terminal status wins; CallEnded does not overwrite it.
    store.apply(&status(org, &b, "busy", t(5))).await.unwrap();
    store
        .apply(&status(org, &b, "completed", t(6)))
        .await
        .unwrap();
    store.apply(&ended(org, &b, t(5), "busy")).await.unwrap();
    let b_row = store.get_call(org, &b).await.unwrap().unwrap();
    assert_eq!(b_row.status, "busy");
    assert_eq!(b_row.ended_at, Some(t(5)));
    // An unknown word never displaces a known status.
    store
        .apply(&status(org, &b, "mystery", t(7)))
        .await
        .unwrap();
    assert_eq!(
        store.get_call(org, &b).await.unwrap().unwrap().status,
        "busy"
    );

    // The same set of callbacks in every order ends in the same row.
    let ops = |s: &storage::CallSid| {
        vec![
            status(org, s, "queued", t(0)),
            status(org, s, "ringing", t(1)),
            call_started(org, s, t(2)),
            status(org, s, "in-progress", t(3)),
            ended(org, s, t(40), "agent_hangup"),
            status(org, s, "completed", t(41)),
        ]
    };
    let orders: [[usize; 6]; 4] = [
        [0, 1, 2, 3, 4, 5],
        [5, 4, 3, 2, 1, 0],
        [2, 5, 0, 4, 1, 3],
        [4, 0, 5, 1, 3, 2],
    ];
    let mut rows = Vec::new();
    for (i, order) in orders.iter().enumerate() {
        let s = sid(100 + i);
        let all = ops(&s);
        for &k in order {
            store.apply(&all[k]).await.unwrap();
        }
        let mut row = store.get_call(org, &s).await.unwrap().unwrap();
        row.sid = sid(0);
        rows.push(row);
    }
    assert_eq!(rows[0].status, "completed");
    assert_eq!(rows[0].started_at, t(2));
    assert!(rows.iter().all(|r| *r == rows[0]), "{rows:#?}");
}

async fn writes_before_call_started_are_kept(db: TestDb) {
    let store = &db.store;
    let (org, _) = store.ensure_default_org().await.unwrap();
    let call = sid(3);
    store.apply(&turn(org, &call, 1)).await.unwrap();
    store.apply(&event(org, &call, 0, "start")).await.unwrap();
    store.apply(&recording(org, &call)).await.unwrap();
    store.apply(&turn(org, &call, 0)).await.unwrap();
    let placeholder = store
        .get_call(org, &call)
        .await
        .unwrap()
        .expect("placeholder");
    assert_eq!(placeholder.status, "unknown");
    assert_eq!(store.list_turns(org, &call).await.unwrap().len(), 2);

    store.apply(&call_started(org, &call, t(0))).await.unwrap();
    let row = store.get_call(org, &call).await.unwrap().unwrap();
    assert_eq!(
        (row.status.as_str(), row.started_at, row.to.as_str()),
        ("in-progress", t(0), "+15550100999")
    );
    let turns = store.list_turns(org, &call).await.unwrap();
    assert_eq!(
        turns,
        vec![turn_record(org, &call, 0), turn_record(org, &call, 1)]
    );
    assert_eq!(store.list_events(org, &call).await.unwrap().len(), 1);
    assert_eq!(
        store.get_recording(org, &call).await.unwrap(),
        Some(recording_record(org, &call))
    );

    // CallEnded first also works: the placeholder's start is end minus duration.
    let other = sid(4);
    store
        .apply(&ended(org, &other, t(600), "caller_hangup"))
        .await
        .unwrap();
    let row = store.get_call(org, &other).await.unwrap().unwrap();
    assert_eq!((row.status.as_str(), row.started_at), ("completed", t(540)));
}

async fn a_batch_is_one_transaction(db: TestDb) {
    let store = &db.store;
    let (org_a, _) = store.ensure_default_org().await.unwrap();
    let org_b = store.create_org("B").await.unwrap();
    let a_call = sid(1);
    store
        .apply(&call_started(org_a, &a_call, t(0)))
        .await
        .unwrap();
    // Org B's batch: a good call and turns, then a turn aimed at org A's call.
    let b_call = sid(2);
    let batch = vec![
        call_started(org_b, &b_call, t(1)),
        turn(org_b, &b_call, 0),
        turn(org_b, &a_call, 0),
    ];
    let err = store.apply_batch(&batch).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::OrgMismatch { sid } if *sid == a_call),
        "{err}"
    );
    // None of it landed.
    assert_eq!(store.get_call(org_b, &b_call).await.unwrap(), None);
    assert!(store.list_turns(org_b, &b_call).await.unwrap().is_empty());
    assert!(store.list_turns(org_a, &a_call).await.unwrap().is_empty());
    // Without the bad op it all lands.
    store.apply_batch(&batch[..2]).await.unwrap();
    assert_eq!(store.list_turns(org_b, &b_call).await.unwrap().len(), 1);
}

async fn concurrent_calls_write_at_once(db: TestDb) {
    const CALLS: usize = 24;
    const TURNS: i32 = 30;
    const EVENTS: i32 = 5;
    let store = db.store.clone();
    let (org, _) = store.ensure_default_org().await.unwrap();
    let (queue, writer) = WriteQueue::spawn(store.clone(), db.spill_path());

    let mut tasks = Vec::new();
    for c in 0..CALLS {
        let queue = queue.clone();
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let s = sid(1000 + c);
            let mut ops = vec![
                status(org, &s, "ringing", t(c as i64)),
                call_started(org, &s, t(c as i64)),
            ];
            for i in 0..TURNS {
                ops.push(turn(org, &s, i));
                if i < EVENTS {
                    ops.push(event(org, &s, i, if i == 0 { "start" } else { "barge_in" }));
                }
            }
            ops.push(ended(org, &s, t(c as i64 + 90), "caller_hangup"));
            ops.push(status(org, &s, "completed", t(c as i64 + 91)));
            for (i, op) in ops.into_iter().enumerate() {
                // Half the calls go through the write queue (the production path); the other half write
                // straight to the store from their own tasks, so the database itself sees concurrent writers,
                // and also resend every status callback (as Twilio's retries would).
                if c % 2 == 0 {
                    queue.submit(op);
                } else {
                    let again = matches!(op, WriteOp::CallStatus { .. });
                    store.apply(&op).await.unwrap();
                    if again {
                        store.apply(&op).await.unwrap();
                    }
                }
                if i % 8 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    queue.flush(Duration::from_secs(60)).await.unwrap();

    assert_eq!(store.count_calls(org, None).await.unwrap(), CALLS as i64);
    assert_eq!(
        store.count_calls(org, Some("completed")).await.unwrap(),
        CALLS as i64
    );
    for c in 0..CALLS {
        let s = sid(1000 + c);
        let turns = store.list_turns(org, &s).await.unwrap();
        assert_eq!(
            turns,
            (0..TURNS)
                .map(|i| turn_record(org, &s, i))
                .collect::<Vec<_>>(),
            "call {c}"
        );
        assert_eq!(
            store.list_events(org, &s).await.unwrap().len(),
            EVENTS as usize
        );
        let row = store.get_call(org, &s).await.unwrap().unwrap();
        assert_eq!(
            (row.started_at, row.ended_at),
            (t(c as i64), Some(t(c as i64 + 90)))
        );
    }
    let stats = queue.stats();
    assert_eq!((stats.dropped, stats.rejected, stats.pending), (0, 0, 0));
    assert_eq!(
        stats.written,
        (CALLS as u64 / 2) * (2 + TURNS as u64 + EVENTS as u64 + 2)
    );
    drop(queue);
    writer.await.unwrap();
}

async fn org_isolation(db: TestDb) {
    let store = &db.store;
    let (org_a, assistant_a) = store.ensure_default_org().await.unwrap();
    let org_b = store.create_org("Other clinic").await.unwrap();
    let call = sid(42);
    let phone = "+15550104242";
    store
        .apply_batch(&[
            call_started(org_a, &call, t(0)),
            turn(org_a, &call, 0),
            event(org_a, &call, 0, "start"),
            recording(org_a, &call),
            WriteOp::Contact(ContactRecord {
                org: org_a,
                phone: phone.into(),
                name: Some("Ada".into()),
                email: None,
                notes: None,
                updated_at: t(1),
            }),
        ])
        .await
        .unwrap();
    let booked = store
        .book_appointment(&booking(org_a, "iso-1", Some(&call), phone, t(86_400), 30))
        .await
        .unwrap();
    assert!(matches!(booked, BookOutcome::Booked(_)), "{booked:?}");
    let a_view = (
        store.get_call(org_a, &call).await.unwrap(),
        store.list_turns(org_a, &call).await.unwrap(),
        store.list_events(org_a, &call).await.unwrap(),
        store.get_recording(org_a, &call).await.unwrap(),
    );
    assert!(a_view.0.is_some() && a_view.1.len() == 1 && a_view.2.len() == 1 && a_view.3.is_some());

    // Reads: org B sees nothing of org A's.
    let everything = CallQuery {
        status: None,
        before: None,
        limit: 500,
    };
    assert!(
        store
            .list_calls(org_b, &everything)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.list_calls(org_a, &everything).await.unwrap().len(), 1);
    assert_eq!(store.get_call(org_b, &call).await.unwrap(), None);
    assert!(store.list_turns(org_b, &call).await.unwrap().is_empty());
    assert!(store.list_events(org_b, &call).await.unwrap().is_empty());
    assert_eq!(store.get_recording(org_b, &call).await.unwrap(), None);
    assert_eq!(store.get_contact(org_b, phone).await.unwrap(), None);
    assert!(
        store
            .list_appointments(org_b, t(0), t(10 * 86_400))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.count_calls(org_b, None).await.unwrap(), 0);
    assert_eq!(store.get_assistant(org_b, assistant_a).await.unwrap(), None);
    assert_eq!(
        store.knowledge_base(org_b, assistant_a).await.unwrap(),
        None
    );

    // Writes: org B cannot attach anything to, or change, org A's call.
    let b_writes = [
        call_started(org_b, &call, t(5)),
        status(org_b, &call, "completed", t(6)),
        ended(org_b, &call, t(7), "hijack"),
        turn(org_b, &call, 0),
        turn(org_b, &call, 1),
        event(org_b, &call, 1, "transfer"),
        recording(org_b, &call),
    ];
    for op in &b_writes {
        let err = store.apply(op).await.expect_err(op.kind());
        assert!(
            matches!(&err, StoreError::OrgMismatch { sid } if *sid == call),
            "{}: {err}",
            op.kind()
        );
    }
    let a_after = (
        store.get_call(org_a, &call).await.unwrap(),
        store.list_turns(org_a, &call).await.unwrap(),
        store.list_events(org_a, &call).await.unwrap(),
        store.get_recording(org_a, &call).await.unwrap(),
    );
    assert_eq!(a_after, a_view);
    assert!(
        store
            .list_calls(org_b, &everything)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store
            .assign_number(org_b, assistant_a, "+15550109999")
            .await,
        Err(StoreError::NotFound(_))
    ));
}

async fn dashboard_paging(db: TestDb) {
    let store = &db.store;
    let (org, _) = store.ensure_default_org().await.unwrap();
    let other = store.create_org("noise").await.unwrap();
    let statuses = ["completed", "completed", "no-answer", "in-progress"];
    let mut ops = Vec::new();
    for i in 0..120usize {
        let s = sid(i);
        ops.push(call_started(org, &s, t(i as i64 * 60)));
        let st = statuses[i % statuses.len()];
        if st != "in-progress" {
            ops.push(status(org, &s, st, t(i as i64 * 60 + 30)));
        }
        // Another org's calls interleaved in time must never show up.
        ops.push(call_started(other, &sid(10_000 + i), t(i as i64 * 60 + 1)));
    }
    store.apply_batch(&ops).await.unwrap();

    let mut seen = Vec::new();
    let mut q = CallQuery {
        status: None,
        before: None,
        limit: 50,
    };
    loop {
        let page = store.list_calls(org, &q).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 50);
        assert!(page.iter().all(|c| c.org == org));
        q.before = Some(page.last().unwrap().started_at);
        seen.extend(page);
    }
    assert_eq!(seen.len(), 120);
    let expected: Vec<_> = (0..120usize).rev().map(sid).collect();
    assert_eq!(
        seen.iter().map(|c| c.sid.clone()).collect::<Vec<_>>(),
        expected
    );

    let no_answer = store
        .list_calls(
            org,
            &CallQuery {
                status: Some("no-answer".into()),
                before: None,
                limit: 50,
            },
        )
        .await
        .unwrap();
    assert_eq!(no_answer.len(), 30);
    assert!(no_answer.iter().all(|c| c.status == "no-answer"));
    assert!(
        no_answer
            .windows(2)
            .all(|w| w[0].started_at > w[1].started_at)
    );
    let completed_page2 = store
        .list_calls(
            org,
            &CallQuery {
                status: Some("completed".into()),
                before: Some(t(60 * 60)),
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(completed_page2.len(), 10);
    assert!(
        completed_page2
            .iter()
            .all(|c| c.status == "completed" && c.started_at < t(3600))
    );
    // limit 0 means the default page, and the cap holds.
    assert_eq!(
        store
            .list_calls(org, &CallQuery::default())
            .await
            .unwrap()
            .len(),
        50
    );
    assert_eq!(
        store.count_calls(org, Some("in-progress")).await.unwrap(),
        30
    );
}

async fn contacts_and_appointments(db: TestDb) {
    let store = &db.store;
    let (org, _) = store.ensure_default_org().await.unwrap();
    let phone = "+15550107777";
    let contact = |name: &str, at: i64| {
        WriteOp::Contact(ContactRecord {
            org,
            phone: phone.into(),
            name: Some(name.into()),
            email: Some("p@example.test".into()),
            notes: None,
            updated_at: t(at),
        })
    };
    // Contacts: last writer wins, by the record's own clock; replays and stale updates change nothing.
    let other = "+15550108888";
    let other_contact = |name: &str, at: i64| match contact(name, at) {
        WriteOp::Contact(c) => WriteOp::Contact(ContactRecord {
            phone: other.into(),
            ..c
        }),
        _ => unreachable!(),
    };
    store.apply(&other_contact("Pat", 5)).await.unwrap();
    store.apply(&other_contact("Patricia", 20)).await.unwrap();
    store.apply(&other_contact("Pat", 5)).await.unwrap();
    assert_eq!(
        store
            .get_contact(org, other)
            .await
            .unwrap()
            .unwrap()
            .name
            .as_deref(),
        Some("Patricia")
    );

    // Booked during a call whose CallStarted has not landed, for a contact not yet stored: the booking makes
    // both (a placeholder call, a contact with the name given).
    let first = store
        .book_appointment(&booking(org, "ca-1", Some(&sid(5)), phone, t(10_000), 45))
        .await
        .unwrap();
    let BookOutcome::Booked(first) = first else {
        panic!("{first:?}")
    };
    assert_eq!(
        store
            .get_contact(org, phone)
            .await
            .unwrap()
            .unwrap()
            .name
            .as_deref(),
        Some("Pat Doe")
    );
    let placeholder = store
        .get_call(org, &sid(5))
        .await
        .unwrap()
        .expect("placeholder call");
    assert_eq!(placeholder.status, "unknown");
    // The call's own writes land later, through the queue, and fill it in.
    store
        .apply(&call_started(org, &sid(5), t(9_000)))
        .await
        .unwrap();
    let call = store.get_call(org, &sid(5)).await.unwrap().unwrap();
    assert_eq!(
        (call.status.as_str(), call.started_at),
        ("in-progress", t(9_000))
    );
    // A later booking without a name keeps the stored one.
    let mut nameless = booking(org, "ca-2", None, phone, t(20_000), 30);
    nameless.name.clear();
    booked(store.book_appointment(&nameless).await.unwrap());
    assert_eq!(
        store
            .get_contact(org, phone)
            .await
            .unwrap()
            .unwrap()
            .name
            .as_deref(),
        Some("Pat Doe")
    );
    store
        .cancel_appointment(org, booked_id(store, org, "ca-2").await)
        .await
        .unwrap();
    let list = store.list_appointments(org, t(0), t(15_000)).await.unwrap();
    assert_eq!(list, vec![first.clone()]);
    assert_eq!(
        (
            list[0].call.clone(),
            list[0].phone.as_deref(),
            list[0].ends_at
        ),
        (Some(sid(5)), Some(phone), t(10_000 + 45 * 60))
    );
    // [from, to) on the start.
    assert!(
        store
            .list_appointments(org, t(0), t(10_000))
            .await
            .unwrap()
            .is_empty()
    );
    store.cancel_appointment(org, first.id).await.unwrap();
    assert_eq!(
        store
            .list_appointments(org, t(0), t(100_000))
            .await
            .unwrap()[0]
            .status,
        "cancelled",
        "cancelled appointments stay listed"
    );
}

/// A booking request for `phone` of `minutes` from `start`, in `call` if any.
fn booking(
    org: OrgId,
    key: &str,
    call: Option<&storage::CallSid>,
    phone: &str,
    start: chrono::DateTime<chrono::Utc>,
    minutes: i64,
) -> NewBooking {
    NewBooking {
        org,
        idempotency_key: key.into(),
        call_sid: call.cloned(),
        phone: phone.into(),
        name: "Pat Doe".into(),
        service: "cleaning".into(),
        starts_at: start,
        ends_at: start + chrono::Duration::minutes(minutes),
    }
}

/// The id of the appointment booked with `key` (through the key's idempotency).
async fn booked_id(store: &storage::Store, org: OrgId, key: &str) -> uuid::Uuid {
    let any = booking(org, key, None, "", t(0), 1);
    match store.book_appointment(&any).await.unwrap() {
        BookOutcome::AlreadyBooked(a) => a.id,
        other => panic!("{key} was not booked: {other:?}"),
    }
}

fn booked(outcome: BookOutcome) -> storage::Appointment {
    match outcome {
        BookOutcome::Booked(a) => a,
        other => panic!("expected Booked, got {other:?}"),
    }
}

/// The writer gets no chance to run while 302 ops are submitted (current-thread runtime, no await), so the
/// 8-slot queue overflows into the spill file; flush must then write everything back, in order.
async fn spill_file_is_written_back(db: TestDb) {
    let store = db.store.clone();
    let (org, _) = store.ensure_default_org().await.unwrap();
    let config = QueueConfig {
        capacity: 8,
        max_batch: 16,
        ..QueueConfig::default()
    };
    let spill = db.spill_path();
    let (queue, writer) = WriteQueue::spawn_with(store.clone(), spill.clone(), config);
    let s = sid(9);
    queue.submit(call_started(org, &s, t(0)));
    for i in 0..300 {
        queue.submit(turn(org, &s, i));
    }
    queue.submit(ended(org, &s, t(900), "caller_hangup"));
    let stats = queue.stats();
    assert_eq!(
        (stats.queued, stats.spilled, stats.written),
        (8, 294, 0),
        "{stats:?}"
    );
    assert!(spill.exists() && stats.spill_bytes > 0);
    queue.flush(Duration::from_secs(60)).await.unwrap();
    let stats = queue.stats();
    assert_eq!(
        (
            stats.written,
            stats.dropped,
            stats.pending,
            stats.spill_bytes
        ),
        (302, 0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(
        store.list_turns(org, &s).await.unwrap(),
        (0..300)
            .map(|i| turn_record(org, &s, i))
            .collect::<Vec<_>>()
    );
    let call = store.get_call(org, &s).await.unwrap().unwrap();
    assert_eq!(
        (call.status.as_str(), call.from.as_str()),
        ("completed", "+15550100001")
    );
    assert!(!spill.exists());

    // Past the spill bound, ops are dropped and counted (and logged at error level), never blocking.
    let tiny = QueueConfig {
        capacity: 1,
        spill_max_bytes: 2_000,
        ..QueueConfig::default()
    };
    let (small, small_writer) =
        WriteQueue::spawn_with(store.clone(), db.dir.path().join("small.jsonl"), tiny);
    let s2 = sid(10);
    for i in 0..40 {
        small.submit(turn(org, &s2, i));
    }
    let stats = small.stats();
    assert!(stats.dropped > 0 && stats.spilled > 0, "{stats:?}");
    assert_eq!(stats.dropped + stats.spilled + stats.queued, 40);
    assert!(stats.spill_bytes <= 2_000);
    small.flush(Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        store.list_turns(org, &s2).await.unwrap().len() as u64,
        40 - small.stats().dropped
    );
    drop((queue, small));
    writer.await.unwrap();
    small_writer.await.unwrap();
}

async fn spill_file_from_previous_run_is_replayed(db: TestDb) {
    let store = db.store.clone();
    let (org, _) = store.ensure_default_org().await.unwrap();
    let spill = db.spill_path();
    let s = sid(11);

    // Run 1 stops before writing anything (shutdown with no time to flush; the writer has not run yet): all
    // of it goes to the spill file.
    let (queue, writer) = WriteQueue::spawn(store.clone(), spill.clone());
    queue.submit(call_started(org, &s, t(0)));
    for i in 0..50 {
        queue.submit(turn(org, &s, i));
    }
    assert!(queue.shutdown(Duration::ZERO).await.is_err());
    // Submitted after shutdown: straight to the spill file for the next run.
    queue.submit(event(org, &s, 0, "error"));
    drop(queue);
    writer.await.unwrap();
    assert_eq!(
        store.get_call(org, &s).await.unwrap(),
        None,
        "run 1 wrote nothing"
    );
    assert!(spill.exists(), "run 1 left a spill file");

    // A crash mid-append leaves a torn last line; replay must skip it and keep the rest.
    {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&spill)
            .unwrap();
        f.write_all(b"{\"run\":1,\"op\":{\"op\":\"turn\",\"org\":")
            .unwrap();
    }

    // Run 2 replays it before anything else.
    let (queue, writer) = WriteQueue::spawn(store.clone(), spill.clone());
    queue.submit(ended(org, &s, t(300), "caller_hangup"));
    queue.flush(Duration::from_secs(60)).await.unwrap();
    let stats = queue.stats();
    assert_eq!((stats.recovered, stats.written), (52, 53), "{stats:?}");
    assert_eq!(store.list_turns(org, &s).await.unwrap().len(), 50);
    assert_eq!(store.list_events(org, &s).await.unwrap().len(), 1);
    let call = store.get_call(org, &s).await.unwrap().unwrap();
    assert_eq!(
        (call.status.as_str(), call.from.as_str()),
        ("completed", "+15550100001")
    );
    assert!(!spill.exists());
    drop(queue);
    writer.await.unwrap();
}

async fn rejected_write_does_not_block_the_queue(db: TestDb) {
    let store = db.store.clone();
    let (org_a, _) = store.ensure_default_org().await.unwrap();
    let org_b = store.create_org("B").await.unwrap();
    let a_call = sid(1);
    store
        .apply(&call_started(org_a, &a_call, t(0)))
        .await
        .unwrap();
    let spill = db.spill_path();
    let (queue, writer) = WriteQueue::spawn(store.clone(), spill.clone());
    let b_call = sid(2);
    queue.submit(call_started(org_b, &b_call, t(0)));
    queue.submit(turn(org_b, &a_call, 0)); // wrong org: refused for good
    for i in 0..20 {
        queue.submit(turn(org_b, &b_call, i));
    }
    queue.flush(Duration::from_secs(30)).await.unwrap();
    let stats = queue.stats();
    assert_eq!(
        (stats.rejected, stats.written, stats.pending, stats.db_up),
        (1, 21, 0, true),
        "{stats:?}"
    );
    assert_eq!(store.list_turns(org_b, &b_call).await.unwrap().len(), 20);
    assert!(store.list_turns(org_a, &a_call).await.unwrap().is_empty());
    let rejected = std::fs::read_to_string(spill.with_file_name("spill.jsonl.rejected")).unwrap();
    assert_eq!(rejected.lines().count(), 1);
    assert!(rejected.contains(&a_call.0));
    drop(queue);
    writer.await.unwrap();
}

// ---------------------------------------------------------------------------------------------------------
// The database goes away mid-call and comes back. Postgres: the throwaway cluster is stopped with
// `pg_ctl stop -m fast` (connections cut) and started again. SQLite has no server to stop; the honest
// equivalent is another process holding the write lock (a backup, a migration, a stuck tool), which makes
// every write fail with SQLITE_BUSY until it lets go.

mod outage {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_database_locked_mid_call_then_released() {
        database_goes_away_mid_call(TestDb::new_dedicated(Backend::Sqlite).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_server_stopped_mid_call_then_restarted() {
        database_goes_away_mid_call(TestDb::new_dedicated(Backend::Postgres).await).await;
    }
}

/// Takes the database away: returns what keeps it away (a lock-holding connection for SQLite).
async fn take_down(db: &TestDb) -> Option<sqlx::SqliteConnection> {
    match db.backend {
        Backend::Postgres => {
            let cluster = db.cluster.as_ref().expect("dedicated cluster");
            tokio::task::block_in_place(|| cluster.stop());
            None
        }
        Backend::Sqlite => {
            use sqlx::Connection as _;
            let opts = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(db.dir.path().join(storage::SQLITE_FILE_NAME))
                .busy_timeout(Duration::from_secs(10));
            let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
            sqlx::raw_sql("BEGIN EXCLUSIVE")
                .execute(&mut conn)
                .await
                .unwrap();
            Some(conn)
        }
    }
}

async fn bring_back(db: &TestDb, lock: Option<sqlx::SqliteConnection>) {
    match db.backend {
        Backend::Postgres => {
            let cluster = db.cluster.as_ref().expect("dedicated cluster");
            tokio::task::block_in_place(|| cluster.start());
        }
        Backend::Sqlite => {
            use sqlx::Connection as _;
            let mut conn = lock.expect("lock connection");
            sqlx::raw_sql("ROLLBACK").execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
    }
}

async fn database_goes_away_mid_call(db: TestDb) {
    let store = db.store.clone();
    let (org, _) = store.ensure_default_org().await.unwrap();
    let spill = db.spill_path();
    // Small queue, so an outage of a few hundred ops exercises the spill file too.
    let config = QueueConfig {
        capacity: 32,
        max_batch: 16,
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        ..QueueConfig::default()
    };
    let (queue, writer) = WriteQueue::spawn_with(store.clone(), spill.clone(), config.clone());
    let call = sid(77);
    queue.submit(call_started(org, &call, t(0)));
    for i in 0..10 {
        queue.submit(turn(org, &call, i));
    }
    queue.flush(Duration::from_secs(30)).await.unwrap();
    assert_eq!(store.list_turns(org, &call).await.unwrap().len(), 10);

    // Mid-call, the database goes away. The call goes on: turns and events keep coming.
    let lock = take_down(&db).await;
    if db.backend == Backend::Postgres {
        assert!(
            store.health().await.is_err(),
            "health must report a stopped server"
        );
    }
    let mut submitted_during_outage = 0;
    for i in 10..210 {
        queue.submit(turn(org, &call, i));
        submitted_during_outage += 1;
        if i % 20 == 0 {
            queue.submit(event(org, &call, i / 20, "barge_in"));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(
        eventually(Duration::from_secs(20), || !queue.stats().db_up).await,
        "queue never noticed the outage: {:?}",
        queue.stats()
    );
    assert!(
        queue.flush(Duration::from_millis(300)).await.is_err(),
        "nothing can be flushed while down"
    );
    let during = queue.stats();
    assert!(
        during.retried > 0 && during.spilled > 0 && during.pending > 0,
        "{during:?}"
    );
    assert_eq!(during.dropped, 0);

    // It comes back; everything lands, in order, nothing lost.
    bring_back(&db, lock).await;
    queue.submit(ended(org, &call, t(700), "caller_hangup"));
    queue.flush(Duration::from_secs(60)).await.unwrap();
    store.health().await.unwrap();
    let after = queue.stats();
    assert!(after.db_up, "{after:?}");
    assert_eq!(
        (
            after.dropped,
            after.rejected,
            after.pending,
            after.spill_bytes
        ),
        (0, 0, 0, 0),
        "{after:?}"
    );
    let turns = store.list_turns(org, &call).await.unwrap();
    assert_eq!(turns.len(), 10 + submitted_during_outage);
    assert_eq!(
        turns,
        (0..210)
            .map(|i| turn_record(org, &call, i))
            .collect::<Vec<_>>()
    );
    assert_eq!(store.list_events(org, &call).await.unwrap().len(), 10);
    assert_eq!(
        store.get_call(org, &call).await.unwrap().unwrap().status,
        "completed"
    );

    // Second outage, and this time the process stops before the database returns: the spill file carries
    // the call over to the next run.
    let call2 = sid(78);
    let lock = take_down(&db).await;
    queue.submit(call_started(org, &call2, t(1000)));
    for i in 0..100 {
        queue.submit(turn(org, &call2, i));
    }
    assert!(eventually(Duration::from_secs(20), || !queue.stats().db_up).await);
    assert!(queue.shutdown(Duration::from_millis(200)).await.is_err());
    drop(queue);
    writer.await.unwrap();
    assert!(spill.exists());
    bring_back(&db, lock).await;

    let (queue, writer) = WriteQueue::spawn_with(store.clone(), spill.clone(), config);
    queue.flush(Duration::from_secs(60)).await.unwrap();
    assert_eq!(store.list_turns(org, &call2).await.unwrap().len(), 100);
    assert_eq!(
        store.get_call(org, &call2).await.unwrap().unwrap().from,
        "+15550100001"
    );
    assert_eq!(queue.stats().recovered, 101);
    assert_eq!(queue.stats().dropped, 0);
    let seen: HashSet<_> = store
        .list_calls(org, &CallQuery::default())
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.sid)
        .collect();
    assert_eq!(seen, HashSet::from([call.clone(), call2.clone()]));
    drop(queue);
    writer.await.unwrap();
}

// ---------------------------------------------------------------------------------------------------------
// The receptionist's data: bookings (synchronous, no double-booking), knowledge, clinic config, numbers,
// callback requests.

async fn booking_lands_and_reads_back(db: TestDb) {
    let store = &db.store;
    let (org, _) = store.ensure_default_org().await.unwrap();
    let phone = "+15550101234";
    let call = sid(21);
    let request = booking(org, "CA21:book:1", Some(&call), phone, t(3_600), 30);
    let a = booked(store.book_appointment(&request).await.unwrap());
    assert_eq!(
        (
            a.org,
            a.call.clone(),
            a.phone.as_deref(),
            a.patient_name.as_str(),
            a.service.as_str(),
            a.starts_at,
            a.ends_at,
            a.status.as_str(),
            a.idempotency_key.as_deref(),
            a.rescheduled_from
        ),
        (
            org,
            Some(call.clone()),
            Some(phone),
            "Pat Doe",
            "cleaning",
            t(3_600),
            t(3_600 + 1_800),
            "booked",
            Some("CA21:book:1"),
            None
        )
    );
    assert!(a.is_booked());
    assert_eq!(
        store.get_appointment(org, a.id).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        store.list_appointments(org, t(0), t(86_400)).await.unwrap(),
        vec![a.clone()]
    );
    assert_eq!(
        store.upcoming_appointments(org, phone, t(0)).await.unwrap(),
        vec![a.clone()]
    );
    // `from` is inclusive on the start; another phone sees nothing.
    assert_eq!(
        store
            .upcoming_appointments(org, phone, t(3_600))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .upcoming_appointments(org, phone, t(3_601))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .upcoming_appointments(org, "+15550100000", t(0))
            .await
            .unwrap()
            .is_empty()
    );
    // Busy intervals: anything overlapping [from, to), half-open on both sides.
    assert_eq!(
        store.busy_intervals(org, t(0), t(86_400)).await.unwrap(),
        vec![(t(3_600), t(5_400))]
    );
    assert_eq!(
        store
            .busy_intervals(org, t(5_000), t(5_001))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .busy_intervals(org, t(5_400), t(9_000))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .busy_intervals(org, t(0), t(3_600))
            .await
            .unwrap()
            .is_empty()
    );
    // The call's row did not exist: a placeholder was made in the same transaction.
    assert_eq!(
        store.get_call(org, &call).await.unwrap().unwrap().status,
        "unknown"
    );
    // Empty and backwards intervals, and a missing key, are refused before any SQL.
    let mut bad = booking(org, "k", None, phone, t(100), 0);
    assert!(matches!(
        store.book_appointment(&bad).await,
        Err(StoreError::InvalidInput(_))
    ));
    bad.ends_at = t(50);
    assert!(matches!(
        store.book_appointment(&bad).await,
        Err(StoreError::InvalidInput(_))
    ));
    let mut keyless = booking(org, "", None, phone, t(100), 10);
    keyless.idempotency_key.clear();
    assert!(matches!(
        store.book_appointment(&keyless).await,
        Err(StoreError::InvalidInput(_))
    ));
    // The database refuses an overlap written behind the store's back too.
    let raw_overlap = match db.backend {
        Backend::Sqlite => {
            "INSERT INTO appointments (id, org_id, service, starts_at, ends_at, status, updated_at, created_at) \
             SELECT randomblob(16), org_id, 'raw', \
             strftime('%Y-%m-%dT%H:%M:%S', starts_at, '+10 minutes') || substr(starts_at, 20), \
             strftime('%Y-%m-%dT%H:%M:%S', ends_at, '+10 minutes') || substr(ends_at, 20), \
             'booked', updated_at, created_at FROM appointments"
        }
        Backend::Postgres => {
            "INSERT INTO appointments (id, org_id, service, starts_at, ends_at, status, updated_at, created_at) \
             SELECT gen_random_uuid(), org_id, 'raw', starts_at + interval '10 minutes', \
             ends_at + interval '10 minutes', 'booked', updated_at, created_at FROM appointments"
        }
    };
    let err = db.raw(raw_overlap).await.expect_err("overlap written raw");
    assert!(err.to_string().contains("appointments_no_overlap"), "{err}");
    assert_eq!(
        store
            .list_appointments(org, t(0), t(86_400))
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn overlapping_bookings_conflict(db: TestDb) {
    let store = &db.store;
    let (org, _) = store.ensure_default_org().await.unwrap();
    let phone = "+15550102000";
    // 10:00-11:00 in test time.
    let ten = 36_000;
    let a = booked(
        store
            .book_appointment(&booking(org, "a", None, phone, t(ten), 60))
            .await
            .unwrap(),
    );
    // Inside, straddling either end, containing, identical: all conflict, and write nothing (not even the
    // contact or the placeholder call of the refused booking).
    let loser_call = sid(31);
    for (i, (start, minutes)) in [
        (ten + 600, 30),
        (ten - 600, 20),
        (ten + 3_000, 30),
        (ten - 600, 120),
        (ten, 60),
        (ten + 3_599, 1),
    ]
    .into_iter()
    .enumerate()
    {
        let request = booking(
            org,
            &format!("overlap-{i}"),
            Some(&loser_call),
            "+15550102999",
            t(start),
            minutes,
        );
        assert_eq!(
            store.book_appointment(&request).await.unwrap(),
            BookOutcome::Conflict,
            "{start} +{minutes}min"
        );
    }
    assert_eq!(store.get_contact(org, "+15550102999").await.unwrap(), None);
    assert_eq!(store.get_call(org, &loser_call).await.unwrap(), None);
    // Adjacent slots (one ends when the next starts) both book.
    let before = booked(
        store
            .book_appointment(&booking(org, "before", None, phone, t(ten - 1_800), 30))
            .await
            .unwrap(),
    );
    let after = booked(
        store
            .book_appointment(&booking(org, "after", None, phone, t(ten + 3_600), 30))
            .await
            .unwrap(),
    );
    assert_eq!((before.ends_at, after.starts_at), (a.starts_at, a.ends_at));
    assert_eq!(
        store.busy_intervals(org, t(0), t(86_400)).await.unwrap(),
        vec![
            (t(ten - 1_800), t(ten)),
            (t(ten), t(ten + 3_600)),
            (t(ten + 3_600), t(ten + 5_400))
        ]
    );
    // A cancelled slot can be booked again; cancelling twice is the same as once.
    let cancelled = store.cancel_appointment(org, a.id).await.unwrap().unwrap();
    assert_eq!(
        (cancelled.id, cancelled.status.as_str()),
        (a.id, "cancelled")
    );
    assert_eq!(
        store.cancel_appointment(org, a.id).await.unwrap(),
        Some(cancelled.clone())
    );
    assert_eq!(
        store
            .cancel_appointment(org, uuid::Uuid::new_v4())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .busy_intervals(org, t(ten), t(ten + 3_600))
            .await
            .unwrap(),
        vec![]
    );
    let again = booked(
        store
            .book_appointment(&booking(org, "again", None, phone, t(ten + 900), 30))
            .await
            .unwrap(),
    );
    assert_ne!(again.id, a.id);
    assert_eq!(
        store
            .list_appointments(org, t(0), t(86_400))
            .await
            .unwrap()
            .len(),
        4
    );
    // Booking the cancelled appointment's key again still answers with it: a key is used once.
    assert_eq!(
        store
            .book_appointment(&booking(org, "a", None, phone, t(50_000), 30))
            .await
            .unwrap(),
        BookOutcome::AlreadyBooked(cancelled)
    );
}

async fn same_key_books_once(db: TestDb) {
    let store = &db.store;
    let (org, _) = store.ensure_default_org().await.unwrap();
    let request = booking(
        org,
        "CA9:book:cleaning",
        Some(&sid(9)),
        "+15550103000",
        t(7_200),
        30,
    );
    let first = booked(store.book_appointment(&request).await.unwrap());
    // The same request again (a retried tool call), and a changed one under the same key (an abandoned
    // reply asked again with other words): both get the first result, and nothing new is booked.
    assert_eq!(
        store.book_appointment(&request).await.unwrap(),
        BookOutcome::AlreadyBooked(first.clone())
    );
    let mut changed = request.clone();
    changed.starts_at = t(20_000);
    changed.ends_at = t(21_000);
    assert_eq!(
        store.book_appointment(&changed).await.unwrap(),
        BookOutcome::AlreadyBooked(first.clone())
    );
    assert_eq!(
        store.list_appointments(org, t(0), t(86_400)).await.unwrap(),
        vec![first]
    );
    // Keys are per organisation.
    let other = store.create_org("Other").await.unwrap();
    let mut theirs = request.clone();
    theirs.org = other;
    theirs.call_sid = None;
    booked(store.book_appointment(&theirs).await.unwrap());
}

/// 16 callers confirm the same slot at the same moment: exactly one gets it. On SQLite half of them go
/// through a second store on the same file (its own pool and writer lock, as another process would have),
/// so only the database's lock (BEGIN IMMEDIATE) and trigger keep them apart. Then 16 retries of one request
/// (same key) race: one books, the others get that booking.
async fn concurrent_bookings_of_one_slot(db: TestDb) {
    const TASKS: usize = 16;
    let (org, _) = db.store.ensure_default_org().await.unwrap();
    let stores = [db.store.clone(), db.second_store().await];
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let store = stores[i % 2].clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            // Distinct callers, calls and keys; the same slot, shifted a little so it is not one value.
            let request = booking(
                org,
                &format!("race-{i}"),
                Some(&sid(500 + i)),
                &format!("+1555010{i:04}"),
                t(40_000 + i as i64 * 60),
                30,
            );
            barrier.wait().await;
            (i, store.book_appointment(&request).await.unwrap())
        }));
    }
    let mut winners = Vec::new();
    let mut conflicts = 0;
    for task in tasks {
        match task.await.unwrap() {
            (i, BookOutcome::Booked(a)) => winners.push((i, a)),
            (_, BookOutcome::Conflict) => conflicts += 1,
            (i, other) => panic!("task {i}: {other:?}"),
        }
    }
    assert_eq!((winners.len(), conflicts), (1, TASKS - 1), "{winners:?}");
    let (winner, a) = &winners[0];
    let all = db
        .store
        .list_appointments(org, t(0), t(86_400))
        .await
        .unwrap();
    assert_eq!(all, vec![a.clone()]);
    // The losers' transactions left nothing behind: no contact, no placeholder call.
    for i in (0..TASKS).filter(|i| i != winner) {
        assert_eq!(
            db.store
                .get_contact(org, &format!("+1555010{i:04}"))
                .await
                .unwrap(),
            None
        );
        assert_eq!(db.store.get_call(org, &sid(500 + i)).await.unwrap(), None);
    }
    assert!(
        db.store
            .get_call(org, &sid(500 + winner))
            .await
            .unwrap()
            .is_some()
    );

    let request = booking(org, "retried", None, "+15550109000", t(80_000), 30);
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let store = stores[i % 2].clone();
        let barrier = barrier.clone();
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store.book_appointment(&request).await.unwrap()
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    let booked_now: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            BookOutcome::Booked(a) => Some(a.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(booked_now.len(), 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| o.appointment() == Some(&booked_now[0])),
        "{outcomes:?}"
    );
    assert_eq!(
        db.store
            .list_appointments(org, t(0), t(86_400))
            .await
            .unwrap()
            .len(),
        2
    );
    stores[1].close().await;
}

async fn reschedule_and_cancel(db: TestDb) {
    let store = &db.store;
    let (org, _) = store.ensure_default_org().await.unwrap();
    let phone = "+15550104000";
    let a = booked(
        store
            .book_appointment(&booking(org, "a", Some(&sid(41)), phone, t(10_000), 60))
            .await
            .unwrap(),
    );
    let b = booked(
        store
            .book_appointment(&booking(org, "b", None, "+15550104001", t(20_000), 60))
            .await
            .unwrap(),
    );
    // Into a taken slot: Conflict, and the appointment keeps its slot.
    assert_eq!(
        store
            .reschedule_appointment(org, a.id, t(19_000), t(21_000), "move-1")
            .await
            .unwrap(),
        BookOutcome::Conflict
    );
    assert_eq!(
        store.get_appointment(org, a.id).await.unwrap(),
        Some(a.clone())
    );
    // Half an hour later, overlapping its own old slot: fine, the old slot does not conflict with itself.
    let moved = booked(
        store
            .reschedule_appointment(org, a.id, t(11_800), t(15_400), "move-2")
            .await
            .unwrap(),
    );
    assert_eq!(
        (
            moved.rescheduled_from,
            moved.starts_at,
            moved.ends_at,
            moved.call.clone(),
            moved.phone.as_deref(),
            moved.service.as_str(),
            moved.patient_name.as_str()
        ),
        (
            Some(a.id),
            t(11_800),
            t(15_400),
            Some(sid(41)),
            Some(phone),
            "cleaning",
            "Pat Doe"
        )
    );
    assert_eq!(
        store
            .get_appointment(org, a.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        "cancelled"
    );
    assert_eq!(
        store.busy_intervals(org, t(0), t(86_400)).await.unwrap(),
        vec![(t(11_800), t(15_400)), (t(20_000), t(23_600))]
    );
    assert_eq!(
        store.upcoming_appointments(org, phone, t(0)).await.unwrap(),
        vec![moved.clone()]
    );
    // The same move again (same key) is the first result; moving the old, cancelled one is refused.
    assert_eq!(
        store
            .reschedule_appointment(org, a.id, t(11_800), t(15_400), "move-2")
            .await
            .unwrap(),
        BookOutcome::AlreadyBooked(moved.clone())
    );
    assert!(matches!(
        store
            .reschedule_appointment(org, a.id, t(30_000), t(31_000), "move-3")
            .await,
        Err(StoreError::NotFound("booked appointment"))
    ));
    assert!(matches!(
        store
            .reschedule_appointment(org, uuid::Uuid::new_v4(), t(30_000), t(31_000), "move-4")
            .await,
        Err(StoreError::NotFound("appointment"))
    ));
    assert!(matches!(
        store
            .reschedule_appointment(org, b.id, t(31_000), t(30_000), "move-5")
            .await,
        Err(StoreError::InvalidInput(_))
    ));
    // Moved again, to a free slot.
    let moved2 = booked(
        store
            .reschedule_appointment(org, moved.id, t(40_000), t(41_800), "move-6")
            .await
            .unwrap(),
    );
    assert_eq!(moved2.rescheduled_from, Some(moved.id));
    assert_eq!(
        store.busy_intervals(org, t(0), t(86_400)).await.unwrap(),
        vec![(t(20_000), t(23_600)), (t(40_000), t(41_800))]
    );
    assert_eq!(
        store
            .list_appointments(org, t(0), t(86_400))
            .await
            .unwrap()
            .len(),
        4,
        "history is kept: two cancelled, two booked"
    );
}

async fn receptionist_data_is_isolated_per_org(db: TestDb) {
    let store = &db.store;
    let (org_a, _) = store.ensure_default_org().await.unwrap();
    let org_b = store
        .upsert_org("other-clinic", "Other clinic")
        .await
        .unwrap();
    let phone = "+15550105000";
    let call = sid(51);
    store
        .apply(&call_started(org_a, &call, t(0)))
        .await
        .unwrap();
    let a = booked(
        store
            .book_appointment(&booking(org_a, "k", Some(&call), phone, t(10_000), 30))
            .await
            .unwrap(),
    );
    let msg = store
        .take_message(&message(org_a, "k", Some(&call), "Ada", true))
        .await
        .unwrap();
    store
        .replace_knowledge(org_a, &[chunk("hours", "Open 9-5", &[1.0, 0.0])])
        .await
        .unwrap();
    store.put_clinic(org_a, r#"{"name":"A"}"#).await.unwrap();

    // Org B sees none of it and cannot change it.
    assert_eq!(store.get_appointment(org_b, a.id).await.unwrap(), None);
    assert_eq!(store.cancel_appointment(org_b, a.id).await.unwrap(), None);
    assert!(matches!(
        store
            .reschedule_appointment(org_b, a.id, t(50_000), t(51_000), "steal")
            .await,
        Err(StoreError::NotFound("appointment"))
    ));
    assert!(
        store
            .busy_intervals(org_b, t(0), t(86_400))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .upcoming_appointments(org_b, phone, t(0))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .list_appointments(org_b, t(0), t(86_400))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.list_callbacks(org_b, false).await.unwrap().is_empty());
    assert_eq!(store.complete_callback(org_b, msg.id).await.unwrap(), None);
    assert!(store.list_knowledge(org_b).await.unwrap().is_empty());
    assert!(store.knowledge_index(org_b).await.unwrap().is_empty());
    assert_eq!(store.get_clinic(org_b).await.unwrap(), None);
    assert_eq!(store.get_contact(org_b, phone).await.unwrap(), None);
    // Org A's call cannot carry org B's booking or message.
    assert!(matches!(
        store
            .book_appointment(&booking(org_b, "k2", Some(&call), phone, t(60_000), 30))
            .await,
        Err(StoreError::OrgMismatch { .. })
    ));
    assert!(matches!(
        store
            .take_message(&message(org_b, "k2", Some(&call), "Eve", false))
            .await,
        Err(StoreError::OrgMismatch { .. })
    ));
    // Each clinic has its own schedule and its own key space: B books A's slot with A's key.
    let b = booked(
        store
            .book_appointment(&booking(org_b, "k", None, phone, t(10_000), 30))
            .await
            .unwrap(),
    );
    assert_ne!(a.id, b.id);
    // Nothing of A's changed.
    assert_eq!(store.get_appointment(org_a, a.id).await.unwrap(), Some(a));
    assert_eq!(store.list_callbacks(org_a, true).await.unwrap(), vec![msg]);
    assert_eq!(store.list_knowledge(org_a).await.unwrap().len(), 1);
}

fn chunk(id: &str, text: &str, embedding: &[f32]) -> KnowledgeChunk {
    KnowledgeChunk {
        id: id.into(),
        title: format!("About {id}"),
        text: text.into(),
        model: "all-MiniLM-L6-v2".into(),
        embedding: embedding.to_vec(),
    }
}

async fn knowledge_replace_delete_and_hash(db: TestDb) {
    let store = &db.store;
    let org = store.create_org("K").await.unwrap();
    assert!(store.knowledge_index(org).await.unwrap().is_empty());
    // Values that survive only if the bytes round-trip exactly (sign, subnormal, extremes).
    let odd = [0.5, -1.25, f32::MIN_POSITIVE / 2.0, f32::MAX, -0.0, 3.0e-7];
    let v1 = vec![
        chunk("hours", "Open 9-5 on weekdays.", &odd),
        chunk(
            "parking",
            "Parking at the back.",
            &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        ),
        chunk("empty", "", &[]),
    ];
    store.replace_knowledge(org, &v1).await.unwrap();
    let listed = store.list_knowledge(org).await.unwrap();
    let mut expected = v1.clone();
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(listed, expected);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&listed[1].embedding), bits(&odd));
    let index = store.knowledge_index(org).await.unwrap();
    assert_eq!(index.len(), 3);
    assert_eq!(
        index["hours"],
        (
            storage::sha256_hex(b"Open 9-5 on weekdays."),
            "all-MiniLM-L6-v2".to_owned()
        )
    );
    assert_eq!(
        index["empty"].0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "SHA-256 of nothing"
    );

    // Second version: parking gone, hours changed, a new chunk, empty unchanged.
    let v2 = vec![
        chunk("hours", "Open 8-6 on weekdays.", &[9.0, 8.0]),
        chunk("empty", "", &[]),
        chunk("prices", "A check-up is 60 pounds.", &[0.0, 1.0]),
    ];
    store.replace_knowledge(org, &v2).await.unwrap();
    let index2 = store.knowledge_index(org).await.unwrap();
    assert_eq!(
        index2.keys().cloned().collect::<HashSet<_>>(),
        HashSet::from(["hours".into(), "empty".into(), "prices".into()])
    );
    assert_ne!(index2["hours"].0, index["hours"].0);
    assert_eq!(index2["empty"], index["empty"]);
    let listed = store.list_knowledge(org).await.unwrap();
    assert_eq!(
        listed.iter().find(|c| c.id == "hours").unwrap().embedding,
        vec![9.0, 8.0]
    );
    // Duplicate ids are refused and change nothing; an empty list deletes everything.
    let dup = vec![chunk("x", "a", &[1.0]), chunk("x", "b", &[2.0])];
    assert!(matches!(
        store.replace_knowledge(org, &dup).await,
        Err(StoreError::InvalidInput(_))
    ));
    assert_eq!(store.list_knowledge(org).await.unwrap(), listed);
    assert!(matches!(
        store.replace_knowledge(OrgId::new(), &v2).await,
        Err(StoreError::NotFound("organisation"))
    ));
    store.replace_knowledge(org, &[]).await.unwrap();
    assert!(store.list_knowledge(org).await.unwrap().is_empty());
}

async fn slugs_clinic_config_and_numbers(db: TestDb) {
    let store = &db.store;
    assert_eq!(store.org_by_slug("smile").await.unwrap(), None);
    let smile = store.upsert_org("smile", "Smile Dental").await.unwrap();
    assert_eq!(store.org_by_slug("smile").await.unwrap(), Some(smile));
    let desk = store
        .org_assistant(smile)
        .await
        .unwrap()
        .expect("default assistant");
    assert_eq!(
        store
            .get_assistant(smile, desk)
            .await
            .unwrap()
            .unwrap()
            .name,
        "Reception"
    );
    // Again, with a new name: the same org, renamed, still one assistant.
    assert_eq!(
        store
            .upsert_org("smile", "Smile Dental Care")
            .await
            .unwrap(),
        smile
    );
    assert_eq!(store.org_assistant(smile).await.unwrap(), Some(desk));
    assert!(matches!(
        store.upsert_org(" ", "x").await,
        Err(StoreError::InvalidInput(_))
    ));
    let bare = store.create_org("No slug").await.unwrap();
    assert_eq!(store.org_assistant(bare).await.unwrap(), None);

    // Clinic config: the exact text (key order, spacing) comes back; unchanged is a no-op.
    let config = "{ \"name\": \"Smile\",\n  \"hours\": {\"mon\": \"9-17\"}, \"a\": 1 }";
    assert_eq!(store.get_clinic(smile).await.unwrap(), None);
    assert!(store.put_clinic(smile, config).await.unwrap());
    assert!(!store.put_clinic(smile, config).await.unwrap());
    assert_eq!(
        store.get_clinic(smile).await.unwrap().as_deref(),
        Some(config)
    );
    let edited = config.replace("9-17", "8-18");
    assert!(store.put_clinic(smile, &edited).await.unwrap());
    assert_eq!(store.get_clinic(smile).await.unwrap(), Some(edited.clone()));
    assert!(matches!(
        store.put_clinic(smile, "{not json").await,
        Err(StoreError::InvalidInput(_))
    ));
    assert_eq!(store.get_clinic(smile).await.unwrap(), Some(edited));
    assert!(matches!(
        store.put_clinic(OrgId::new(), "{}").await,
        Err(StoreError::NotFound("organisation"))
    ));

    // Numbers: exactly the list given.
    let nums = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    store
        .set_org_numbers(smile, desk, &nums(&["+15550106001", "+15550106002"]))
        .await
        .unwrap();
    store
        .set_org_numbers(smile, desk, &nums(&["+15550106002", "+15550106003"]))
        .await
        .unwrap();
    assert_eq!(store.resolve_number("+15550106001").await.unwrap(), None);
    assert_eq!(
        store.resolve_number("+15550106002").await.unwrap(),
        Some((smile, desk))
    );
    assert_eq!(
        store.resolve_number("+15550106003").await.unwrap(),
        Some((smile, desk))
    );
    // A number of another org: refused, and nothing of the change happens.
    let other = store.upsert_org("other", "Other").await.unwrap();
    let other_desk = store.org_assistant(other).await.unwrap().unwrap();
    store
        .set_org_numbers(other, other_desk, &nums(&["+15550106009"]))
        .await
        .unwrap();
    let err = store
        .set_org_numbers(smile, desk, &nums(&["+15550106004", "+15550106009"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NumberTaken(n) if n == "+15550106009"),
        "{err}"
    );
    assert!(!err.is_transient());
    assert_eq!(store.resolve_number("+15550106004").await.unwrap(), None);
    assert_eq!(
        store.resolve_number("+15550106002").await.unwrap(),
        Some((smile, desk))
    );
    assert_eq!(
        store.resolve_number("+15550106009").await.unwrap(),
        Some((other, other_desk))
    );
    // Another org's assistant cannot answer our numbers; an empty list releases them all.
    assert!(matches!(
        store
            .set_org_numbers(smile, other_desk, &nums(&["+15550106002"]))
            .await,
        Err(StoreError::NotFound("assistant"))
    ));
    store.set_org_numbers(smile, desk, &[]).await.unwrap();
    assert_eq!(store.resolve_number("+15550106002").await.unwrap(), None);
    assert_eq!(
        store.resolve_number("+15550106009").await.unwrap(),
        Some((other, other_desk))
    );
}

fn message(
    org: OrgId,
    key: &str,
    call: Option<&storage::CallSid>,
    name: &str,
    urgent: bool,
) -> NewCallback {
    NewCallback {
        org,
        idempotency_key: key.into(),
        call_sid: call.cloned(),
        name: name.into(),
        phone: "+15550107000".into(),
        reason: format!("{name} asks for a call back"),
        urgent,
    }
}

async fn callback_requests(db: TestDb) {
    let store = &db.store;
    let (org, _) = store.ensure_default_org().await.unwrap();
    let call = sid(61);
    // The call's row has not landed yet: a placeholder is made.
    let first = store
        .take_message(&message(org, "m1", Some(&call), "Ada", false))
        .await
        .unwrap();
    assert_eq!(
        (
            first.status.as_str(),
            first.call.clone(),
            first.urgent,
            first.name.as_str()
        ),
        ("open", Some(call.clone()), false, "Ada")
    );
    assert_eq!(
        store.get_call(org, &call).await.unwrap().unwrap().status,
        "unknown"
    );
    // Same key, other details: the first message stands, once.
    assert_eq!(
        store
            .take_message(&message(org, "m1", Some(&call), "Bob", true))
            .await
            .unwrap(),
        first
    );
    let second = store
        .take_message(&message(org, "m2", None, "Cy", false))
        .await
        .unwrap();
    let urgent = store
        .take_message(&message(org, "m3", None, "Di", true))
        .await
        .unwrap();
    assert_eq!(
        store.list_callbacks(org, true).await.unwrap(),
        vec![urgent.clone(), first.clone(), second.clone()],
        "urgent first, then oldest"
    );
    let done = store
        .complete_callback(org, first.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.status, "done");
    assert_eq!(
        store.complete_callback(org, first.id).await.unwrap(),
        Some(done.clone())
    );
    assert_eq!(
        store.list_callbacks(org, true).await.unwrap(),
        vec![urgent.clone(), second.clone()]
    );
    assert_eq!(
        store.list_callbacks(org, false).await.unwrap(),
        vec![urgent, done, second]
    );
    assert!(matches!(
        store
            .take_message(&message(org, "", None, "E", false))
            .await,
        Err(StoreError::InvalidInput(_))
    ));
}
