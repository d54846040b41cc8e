//! Storage benchmark: turn write throughput through the `WriteQueue`, and dashboard query latency with
//! 100k calls loaded, on SQLite and on a throwaway PostgreSQL cluster (real fsync, default durability).
//!
//! ```sh
//! cargo run --release -p storage --example throughput            # both backends
//! cargo run --release -p storage --example throughput -- sqlite  # one
//! ```
//! Environment: `CALLS` (default 100000), `TURN_CALLS` (concurrent calls writing turns, default 20),
//! `TURNS_PER_CALL` (default 1000), `QUEUE_CAPACITY` (default: the production 4096; the burst of 20k turns
//! then overflows into the spill file, which is part of what is measured).

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use storage::testing::{PgCluster, PgClusterOptions};
use storage::{
    CallQuery, CallSid, OrgId, QueueConfig, Store, TurnLatency, TurnRecord, WriteOp, WriteQueue,
};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_790_000_000 + secs, 0).unwrap()
}

fn turn(org: OrgId, sid: &CallSid, seq: i32) -> WriteOp {
    WriteOp::Turn(TurnRecord {
        org,
        sid: sid.clone(),
        seq,
        role: if seq % 2 == 0 { "caller" } else { "agent" }.into(),
        text: "I'd like to book a cleaning for next Tuesday morning if you have anything.".into(),
        heard_text: (seq % 2 == 1)
            .then(|| "Of course, let me check Tuesday morning for you.".into()),
        interrupted: false,
        start_ms: i64::from(seq) * 3000,
        end_ms: i64::from(seq) * 3000 + 2500,
        latency: TurnLatency {
            endpointing_ms: Some(300),
            stt_ms: Some(110),
            brain_first_token_ms: Some(320),
            tts_first_audio_ms: Some(170),
            voice_to_voice_ms: Some(900),
        },
    })
}

struct Timing {
    median: Duration,
    p99: Duration,
}

async fn time_query<F, Fut>(runs: usize, mut f: F) -> Timing
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    // Warm up (plan cache, page cache).
    for _ in 0..5 {
        f().await;
    }
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let rows = f().await;
        samples.push(start.elapsed());
        assert!(rows > 0, "query returned nothing");
    }
    samples.sort();
    Timing {
        median: samples[runs / 2],
        p99: samples[(runs * 99) / 100],
    }
}

async fn bench(store: Store, spill_dir: &std::path::Path) {
    let calls = env_usize("CALLS", 100_000);
    let turn_calls = env_usize("TURN_CALLS", 20);
    let turns_per_call = env_usize("TURNS_PER_CALL", 1000);
    println!("== {} ==", store.backend());
    let (org, _) = store.ensure_default_org().await.unwrap();
    let noise = store.create_org("other clinic").await.unwrap();

    // 1. Turns through the write queue: `turn_calls` calls submitting concurrently, as call tasks do.
    let config = QueueConfig {
        capacity: env_usize("QUEUE_CAPACITY", QueueConfig::default().capacity),
        ..QueueConfig::default()
    };
    let (queue, writer) =
        WriteQueue::spawn_with(store.clone(), spill_dir.join("spill.jsonl"), config);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..turn_calls {
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            let sid = CallSid(format!("CAturns{c:026}"));
            let mut worst = Vec::with_capacity(turns_per_call + 1);
            let submit = |op: WriteOp, worst: &mut Vec<Duration>| {
                let s = Instant::now();
                queue.submit(op);
                worst.push(s.elapsed());
            };
            submit(
                WriteOp::CallStarted {
                    org,
                    assistant: None,
                    sid: sid.clone(),
                    from: "+15550100001".into(),
                    to: "+15550100999".into(),
                    direction: "inbound".into(),
                    started_at: t(c as i64),
                },
                &mut worst,
            );
            for i in 0..turns_per_call {
                submit(turn(org, &sid, i as i32), &mut worst);
                if i % 16 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            worst
        }));
    }
    let mut submits = Vec::new();
    for task in tasks {
        submits.extend(task.await.unwrap());
    }
    submits.sort();
    let pct = |p: f64| submits[((submits.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
    let submitted_in = start.elapsed();
    queue.flush(Duration::from_secs(600)).await.unwrap();
    let elapsed = start.elapsed();
    let turns = turn_calls * turns_per_call;
    let stats = queue.stats();
    println!(
        "write queue: {turns} turns from {turn_calls} concurrent calls in {:.2} s = {:.0} turns/s \
         (all submitted in {:.0} ms; submit() median {:.1} µs, p99 {:.1} µs, max {:.0} µs; spilled {}, dropped {})",
        elapsed.as_secs_f64(),
        turns as f64 / elapsed.as_secs_f64(),
        submitted_in.as_secs_f64() * 1e3,
        pct(0.5),
        pct(0.99),
        pct(1.0),
        stats.spilled,
        stats.dropped
    );
    drop(queue);
    writer.await.unwrap();

    // Unbatched, for contrast: one transaction per turn.
    let sid = CallSid("CAunbatched000000000000000000000".into());
    let n = 500;
    let start = Instant::now();
    for i in 0..n {
        store.apply(&turn(org, &sid, i)).await.unwrap();
    }
    let el = start.elapsed();
    println!(
        "store.apply one turn per transaction: {:.0} turns/s",
        f64::from(n) / el.as_secs_f64()
    );

    // 2. Load calls: `calls` for the org on the dashboard, a fifth as many for another org, interleaved in time.
    let statuses = [
        "completed",
        "completed",
        "completed",
        "completed",
        "completed",
        "completed",
        "no-answer",
        "busy",
        "failed",
        "in-progress",
    ];
    let start = Instant::now();
    let mut batch = Vec::with_capacity(2000);
    for i in 0..calls {
        let (o, prefix) = if i % 6 == 5 {
            (noise, "CAn")
        } else {
            (org, "CAd")
        };
        let sid = CallSid(format!("{prefix}{i:029}"));
        let at = t(i as i64 * 7);
        batch.push(WriteOp::CallStarted {
            org: o,
            assistant: None,
            sid: sid.clone(),
            from: format!("+1555{:07}", i % 9_999_999),
            to: "+15550100999".into(),
            direction: "inbound".into(),
            started_at: at,
        });
        let st = statuses[i % statuses.len()];
        if st != "in-progress" {
            batch.push(WriteOp::CallStatus {
                org: o,
                sid,
                status: st.into(),
                at: at + chrono::Duration::seconds(90),
            });
        }
        if batch.len() >= 2000 {
            store.apply_batch(&batch).await.unwrap();
            batch.clear();
        }
    }
    store.apply_batch(&batch).await.unwrap();
    store.optimize().await.unwrap();
    let in_org = store.count_calls(org, None).await.unwrap();
    println!(
        "loaded {calls} calls ({in_org} in the dashboard's org) in {:.1} s",
        start.elapsed().as_secs_f64()
    );

    // 3. Dashboard queries.
    let runs = 200;
    let first = time_query(runs, || async {
        store
            .list_calls(
                org,
                &CallQuery {
                    status: None,
                    before: None,
                    limit: 50,
                },
            )
            .await
            .unwrap()
            .len()
    })
    .await;
    // A deep page: keyset from 90% of the way down.
    let deep_before = t((calls as i64 / 10) * 7);
    let deep = time_query(runs, || async {
        store
            .list_calls(
                org,
                &CallQuery {
                    status: None,
                    before: Some(deep_before),
                    limit: 50,
                },
            )
            .await
            .unwrap()
            .len()
    })
    .await;
    let status_first = time_query(runs, || async {
        store
            .list_calls(
                org,
                &CallQuery {
                    status: Some("no-answer".into()),
                    before: None,
                    limit: 50,
                },
            )
            .await
            .unwrap()
            .len()
    })
    .await;
    let status_deep = time_query(runs, || async {
        store
            .list_calls(
                org,
                &CallQuery {
                    status: Some("no-answer".into()),
                    before: Some(deep_before),
                    limit: 50,
                },
            )
            .await
            .unwrap()
            .len()
    })
    .await;
    let one = CallSid(format!("CAd{:029}", calls / 2 + 1 - (calls / 2 + 1) % 6));
    let by_sid = time_query(runs, || async {
        usize::from(store.get_call(org, &one).await.unwrap().is_some())
    })
    .await;
    let count = time_query(20, || async {
        store.count_calls(org, None).await.unwrap() as usize
    })
    .await;
    for (name, tm) in [
        ("list_calls limit 50, first page", first),
        ("list_calls limit 50, keyset page 90% deep", deep),
        ("list_calls status=no-answer, first page", status_first),
        ("list_calls status=no-answer, 90% deep", status_deep),
        ("get_call by CallSid", by_sid),
        ("count_calls (whole org)", count),
    ] {
        println!(
            "  {name:<44} median {:>7.3} ms   p99 {:>7.3} ms",
            tm.median.as_secs_f64() * 1e3,
            tm.p99.as_secs_f64() * 1e3
        );
    }
}

#[tokio::main]
async fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "both".into());
    if which == "both" || which == "sqlite" {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(None, dir.path()).await.unwrap();
        bench(store, dir.path()).await;
    }
    if which == "both" || which == "postgres" {
        // A real server configuration: fsync and synchronous_commit on.
        let cluster = PgCluster::start_local(PgClusterOptions {
            unsafe_fast: false,
            ..PgClusterOptions::default()
        });
        let url = cluster.create_database().await;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(Some(&url), dir.path()).await.unwrap();
        bench(store.clone(), dir.path()).await;
        store.close().await;
    }
}
