//! The webhook delivery queue on both backends: endpoints per organisation, enqueueing once per
//! (endpoint, event), claims that two workers never share, outcomes recorded only by the claim
//! that made the attempt, and the delivery log's paging.

mod common;

use std::collections::HashSet;

use chrono::{Duration, Utc};
use common::*;
use storage::{AttemptOutcome, OrgId, Store, WebhookEndpoint};
use uuid::Uuid;

backend_tests!(webhooks, "multi_thread":
    endpoints_are_per_org_and_deleting_fails_pending_deliveries,
    an_event_is_queued_once_per_endpoint_that_wants_it,
    two_workers_never_claim_the_same_delivery,
    only_the_claim_that_attempted_records_the_outcome,
    the_delivery_log_pages_newest_first,
    old_finished_deliveries_are_pruned_and_pending_ones_kept,
);

fn endpoint(org: OrgId, url: &str, events: &[&str]) -> WebhookEndpoint {
    WebhookEndpoint {
        org,
        id: Uuid::new_v4(),
        url: url.into(),
        events: events.iter().map(|e| e.to_string()).collect(),
        key_id: "k1".into(),
        secret_nonce: vec![1; 12],
        secret_cipher: vec![2; 40],
        created_at: Utc::now(),
        disabled_at: None,
    }
}

async fn two_orgs(store: &Store) -> (OrgId, OrgId) {
    (
        store.create_org("A").await.unwrap(),
        store.create_org("B").await.unwrap(),
    )
}

async fn endpoints_are_per_org_and_deleting_fails_pending_deliveries(db: TestDb) {
    let s = &db.store;
    let (a, b) = two_orgs(s).await;
    let ea = endpoint(a, "https://a.example/hook", &[]);
    s.create_webhook_endpoint(&ea).await.unwrap();
    let eb = endpoint(b, "https://b.example/hook", &[]);
    s.create_webhook_endpoint(&eb).await.unwrap();
    let got = s.get_webhook_endpoint(a, ea.id).await.unwrap().unwrap();
    assert_eq!(got.url, ea.url);
    assert_eq!(got.secret_cipher, ea.secret_cipher);
    assert!(s.get_webhook_endpoint(b, ea.id).await.unwrap().is_none());
    assert_eq!(s.list_webhook_endpoints(b).await.unwrap().len(), 1);
    assert!(!s.disable_webhook_endpoint(b, ea.id).await.unwrap());

    s.enqueue_webhook(a, "evt_1", "call.started", "{}")
        .await
        .unwrap();
    assert!(s.disable_webhook_endpoint(a, ea.id).await.unwrap());
    assert!(!s.disable_webhook_endpoint(a, ea.id).await.unwrap(), "once");
    assert!(s.get_webhook_endpoint(a, ea.id).await.unwrap().is_none());
    assert!(s.list_webhook_endpoints(a).await.unwrap().is_empty());
    let d = s
        .webhook_delivery_of_event(a, ea.id, "evt_1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.status, "failed");
    assert_eq!(d.last_error.as_deref(), Some("endpoint deleted"));
    // A deleted endpoint gets nothing new.
    assert_eq!(
        s.enqueue_webhook(a, "evt_2", "call.started", "{}")
            .await
            .unwrap(),
        0
    );
    let claimed = s
        .claim_webhook_deliveries(Utc::now(), Utc::now() + Duration::seconds(60), 10)
        .await
        .unwrap();
    assert!(claimed.is_empty(), "{claimed:?}");
}

async fn an_event_is_queued_once_per_endpoint_that_wants_it(db: TestDb) {
    let s = &db.store;
    let (a, b) = two_orgs(s).await;
    let all = endpoint(a, "https://a.example/all", &[]);
    let bookings = endpoint(a, "https://a.example/bookings", &["appointment.booked"]);
    let other = endpoint(b, "https://b.example/all", &[]);
    for e in [&all, &bookings, &other] {
        s.create_webhook_endpoint(e).await.unwrap();
    }
    assert_eq!(
        s.enqueue_webhook(a, "evt_call", "call.started", "{\"x\":1}")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.enqueue_webhook(a, "evt_book", "appointment.booked", "{}")
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        s.enqueue_webhook(a, "evt_book", "appointment.booked", "{}")
            .await
            .unwrap(),
        0,
        "the same event again adds nothing"
    );
    let claimed = s
        .claim_webhook_deliveries(Utc::now(), Utc::now() + Duration::seconds(60), 100)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    assert!(
        claimed.iter().all(|c| c.delivery.org == a),
        "B's endpoint gets none of A's events"
    );
    let call = claimed
        .iter()
        .find(|c| c.delivery.event_id == "evt_call")
        .unwrap();
    assert_eq!(call.url, all.url);
    assert_eq!(call.delivery.payload, "{\"x\":1}");
    assert_eq!(call.delivery.attempts, 1);
    let state = s.webhook_queue_state().await.unwrap();
    assert_eq!(state.pending, 3);
}

async fn two_workers_never_claim_the_same_delivery(db: TestDb) {
    let (a, _) = two_orgs(&db.store).await;
    let e = endpoint(a, "https://a.example/all", &[]);
    db.store.create_webhook_endpoint(&e).await.unwrap();
    const EVENTS: usize = 60;
    for i in 0..EVENTS {
        db.store
            .enqueue_webhook(a, &format!("evt_{i}"), "message.taken", "{}")
            .await
            .unwrap();
    }
    let second = db.second_store().await;
    let claim = |store: Store| async move {
        let mut mine = Vec::new();
        loop {
            let got = store
                .claim_webhook_deliveries(Utc::now(), Utc::now() + Duration::seconds(600), 4)
                .await
                .unwrap();
            if got.is_empty() {
                return mine;
            }
            mine.extend(got.into_iter().map(|c| c.delivery.id));
        }
    };
    let (x, y) = tokio::join!(
        tokio::spawn(claim(db.store.clone())),
        tokio::spawn(claim(second))
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    let xs: HashSet<_> = x.iter().collect();
    let ys: HashSet<_> = y.iter().collect();
    assert_eq!(xs.len(), x.len());
    assert_eq!(ys.len(), y.len());
    assert!(xs.is_disjoint(&ys), "a delivery claimed twice");
    assert_eq!(x.len() + y.len(), EVENTS, "every delivery claimed once");
}

async fn only_the_claim_that_attempted_records_the_outcome(db: TestDb) {
    let s = &db.store;
    let (a, _) = two_orgs(s).await;
    let e = endpoint(a, "https://a.example/all", &[]);
    s.create_webhook_endpoint(&e).await.unwrap();
    s.enqueue_webhook(a, "evt_1", "call.ended", "{}")
        .await
        .unwrap();
    let now = Utc::now();
    // A claim whose lease has already ended (its worker died): claimed again by another.
    let first = s
        .claim_webhook_deliveries(now, now - Duration::seconds(1), 1)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let second = s
        .claim_webhook_deliveries(Utc::now(), Utc::now() + Duration::seconds(60), 1)
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].delivery.attempts, 2);
    // Nothing is due while the second claim's lease runs.
    assert!(
        s.claim_webhook_deliveries(Utc::now(), Utc::now() + Duration::seconds(60), 1)
            .await
            .unwrap()
            .is_empty()
    );
    let stale = s
        .finish_webhook_attempt(
            first[0].delivery.id,
            first[0].delivery.attempts,
            &AttemptOutcome::Failed {
                status: Some(500),
                error: "HTTP 500".into(),
            },
        )
        .await
        .unwrap();
    assert!(!stale, "the stale claim records nothing");
    let retry_at = Utc::now() - Duration::seconds(1);
    assert!(
        s.finish_webhook_attempt(
            second[0].delivery.id,
            2,
            &AttemptOutcome::Retry {
                status: Some(503),
                error: "HTTP 503".into(),
                retry_at,
            },
        )
        .await
        .unwrap()
    );
    let third = s
        .claim_webhook_deliveries(Utc::now(), Utc::now() + Duration::seconds(60), 1)
        .await
        .unwrap();
    assert_eq!(third[0].delivery.last_status, Some(503));
    assert!(
        s.finish_webhook_attempt(
            third[0].delivery.id,
            3,
            &AttemptOutcome::Delivered { status: 204 }
        )
        .await
        .unwrap()
    );
    assert!(
        !s.finish_webhook_attempt(
            third[0].delivery.id,
            3,
            &AttemptOutcome::Delivered { status: 204 }
        )
        .await
        .unwrap(),
        "recorded once"
    );
    let d = s
        .webhook_delivery_of_event(a, e.id, "evt_1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.status, "delivered");
    assert_eq!(d.attempts, 3);
    assert_eq!(d.last_status, Some(204));
    assert!(d.last_error.is_none() && d.delivered_at.is_some());
    // A delivered row is never claimed again, however far the clock goes.
    assert!(
        s.claim_webhook_deliveries(
            Utc::now() + Duration::days(365),
            Utc::now() + Duration::days(366),
            10
        )
        .await
        .unwrap()
        .is_empty()
    );
    assert_eq!(s.webhook_queue_state().await.unwrap().pending, 0);
}

async fn the_delivery_log_pages_newest_first(db: TestDb) {
    let s = &db.store;
    let (a, b) = two_orgs(s).await;
    let e = endpoint(a, "https://a.example/all", &[]);
    s.create_webhook_endpoint(&e).await.unwrap();
    for i in 0..7 {
        s.enqueue_webhook(a, &format!("evt_{i}"), "message.taken", "{}")
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = s.list_webhook_deliveries(a, e.id, before, 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        before = page.last().map(|d| (d.created_at, d.id));
        seen.extend(page);
    }
    let ids: Vec<&str> = seen.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "evt_6", "evt_5", "evt_4", "evt_3", "evt_2", "evt_1", "evt_0"
        ]
    );
    assert!(
        s.list_webhook_deliveries(b, e.id, None, 10)
            .await
            .unwrap()
            .is_empty(),
        "another organisation reads none of it"
    );
}

async fn old_finished_deliveries_are_pruned_and_pending_ones_kept(db: TestDb) {
    let s = &db.store;
    let (a, _) = two_orgs(s).await;
    let e = endpoint(a, "https://a.example/all", &[]);
    s.create_webhook_endpoint(&e).await.unwrap();
    for i in 0..3 {
        s.enqueue_webhook(a, &format!("evt_{i}"), "message.taken", "{}")
            .await
            .unwrap();
    }
    let claimed = s
        .claim_webhook_deliveries(Utc::now(), Utc::now() + Duration::seconds(60), 2)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    let outcomes = [
        AttemptOutcome::Delivered { status: 200 },
        AttemptOutcome::Failed {
            status: Some(410),
            error: "HTTP 410".into(),
        },
    ];
    for (c, o) in claimed.iter().zip(&outcomes) {
        assert!(
            s.finish_webhook_attempt(c.delivery.id, c.delivery.attempts, o)
                .await
                .unwrap()
        );
    }
    assert_eq!(
        s.prune_webhook_deliveries(Utc::now() - Duration::days(1))
            .await
            .unwrap(),
        0,
        "nothing is old yet"
    );
    assert_eq!(
        s.prune_webhook_deliveries(Utc::now() + Duration::seconds(1))
            .await
            .unwrap(),
        2,
        "the delivered and the failed one"
    );
    let left = s.list_webhook_deliveries(a, e.id, None, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].status, "pending");
}
