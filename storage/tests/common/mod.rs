//! Harness for the storage suite: one [`TestDb`] per test, on SQLite (a temp file) or Postgres (a fresh
//! database on the test binary's throwaway cluster), and a macro that instantiates every test for both.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::Connection as _;
use storage::testing::{PgCluster, PgClusterOptions};
use storage::{
    CallSid, EventRecord, OrgId, RecordingRecord, Store, StoreOptions, TurnLatency, TurnRecord,
    WriteOp,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A store on an empty database, plus what a test needs to reach behind it.
pub struct TestDb {
    pub store: Store,
    pub backend: Backend,
    /// Data directory (SQLite file, spill files, recordings).
    pub dir: tempfile::TempDir,
    /// Postgres URL of this test's database.
    pub url: Option<String>,
    /// A cluster of the test's own, when it will stop and start the server.
    pub cluster: Option<PgCluster>,
}

/// Options for tests that keep the database up. `acquire_timeout` bounds getting a connection, and in sqlx
/// that includes *opening* one (TCP, start-up, authentication, and for the first connection to a new
/// database, the server building that database's catalog caches). It was 1 s, and on a 2-core machine busy
/// with Whisper, initdb of the outage test's own cluster and the other test thread, opening the store
/// sometimes took longer (`open postgres: PoolTimedOut`). 30 s (sqlx's own default) is a budget that holds
/// under load; no test waits on it unless the database is really gone. The SQLite busy timeout is the
/// production one: only tests that open a second store on the same file (another "process") contend.
pub fn test_options() -> StoreOptions {
    StoreOptions {
        max_connections: 8,
        acquire_timeout: Duration::from_secs(30),
        ..StoreOptions::default()
    }
}

/// Options for the outage tests, which must see the database go away: a connection attempt to a stopped
/// Postgres is retried until `acquire_timeout`, so this is how long each failed write takes to notice. The
/// production 5 s (not 1 s: opening the store must still succeed under load; see [`test_options`]), and a
/// short SQLite busy timeout so a held lock fails writes quickly.
pub fn outage_options() -> StoreOptions {
    StoreOptions {
        sqlite_busy_timeout: Duration::from_millis(200),
        ..StoreOptions::default()
    }
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => {
                let store = Store::open_with(None, dir.path(), &test_options())
                    .await
                    .expect("open sqlite");
                TestDb {
                    store,
                    backend,
                    dir,
                    url: None,
                    cluster: None,
                }
            }
            Backend::Postgres => {
                let url = PgCluster::shared().create_database().await;
                let store = Store::open_with(Some(&url), dir.path(), &test_options())
                    .await
                    .expect("open postgres");
                TestDb {
                    store,
                    backend,
                    dir,
                    url: Some(url),
                    cluster: None,
                }
            }
        }
    }

    /// Like [`TestDb::new`], but Postgres runs on a cluster of this test's own, so the test may stop it.
    /// Both backends use [`outage_options`].
    pub async fn new_dedicated(backend: Backend) -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        if backend == Backend::Sqlite {
            let store = Store::open_with(None, dir.path(), &outage_options())
                .await
                .expect("open sqlite");
            return TestDb {
                store,
                backend,
                dir,
                url: None,
                cluster: None,
            };
        }
        let cluster = PgCluster::start_local(PgClusterOptions::default());
        let url = cluster.create_database().await;
        let store = Store::open_with(Some(&url), dir.path(), &outage_options())
            .await
            .expect("open postgres");
        TestDb {
            store,
            backend,
            dir,
            url: Some(url),
            cluster: Some(cluster),
        }
    }

    /// A second store on the same database, with its own pool (and, on SQLite, its own writer lock): what
    /// another process sharing the database would be.
    pub async fn second_store(&self) -> Store {
        Store::open_with(self.url.as_deref(), self.dir.path(), &test_options())
            .await
            .expect("open second store")
    }

    pub fn spill_path(&self) -> PathBuf {
        self.dir.path().join("spill.jsonl")
    }

    /// Runs raw SQL on the database, behind the store's back (schema checks).
    pub async fn raw(&self, sql: &'static str) -> Result<(), sqlx::Error> {
        match self.backend {
            Backend::Sqlite => {
                let opts = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(self.dir.path().join(storage::SQLITE_FILE_NAME))
                    .foreign_keys(true);
                let mut conn = sqlx::SqliteConnection::connect_with(&opts).await?;
                sqlx::raw_sql(sql).execute(&mut conn).await?;
                conn.close().await
            }
            Backend::Postgres => {
                let mut conn =
                    sqlx::PgConnection::connect(self.url.as_deref().expect("url")).await?;
                sqlx::raw_sql(sql).execute(&mut conn).await?;
                conn.close().await
            }
        }
    }
}

/// Instantiates each listed `async fn name(db: TestDb)` (defined at the test crate's root) as
/// `<group>::sqlite::name` and `<group>::postgres::name`, on a tokio runtime of the given flavor.
#[macro_export]
macro_rules! backend_tests {
    ($group:ident, $flavor:tt: $($name:ident),* $(,)?) => {
        mod $group {
            mod sqlite {
                $(
                    #[tokio::test(flavor = $flavor)]
                    async fn $name() {
                        $crate::$name($crate::common::TestDb::new($crate::common::Backend::Sqlite).await).await;
                    }
                )*
            }
            mod postgres {
                $(
                    #[tokio::test(flavor = $flavor)]
                    async fn $name() {
                        $crate::$name($crate::common::TestDb::new($crate::common::Backend::Postgres).await).await;
                    }
                )*
            }
        }
    };
}

// ---- builders for test data ----

/// A fixed, microsecond-exact instant `secs` after a base time (stored values compare equal).
pub fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_790_000_000 + secs, 0).unwrap()
}

pub fn sid(n: usize) -> CallSid {
    CallSid(format!("CA{n:032x}"))
}

pub fn call_started(org: OrgId, sid: &CallSid, at: DateTime<Utc>) -> WriteOp {
    WriteOp::CallStarted {
        org,
        assistant: None,
        sid: sid.clone(),
        from: "+15550100001".into(),
        to: "+15550100999".into(),
        direction: "inbound".into(),
        started_at: at,
    }
}

pub fn status(org: OrgId, sid: &CallSid, s: &str, at: DateTime<Utc>) -> WriteOp {
    WriteOp::CallStatus {
        org,
        sid: sid.clone(),
        status: s.into(),
        at,
    }
}

pub fn ended(org: OrgId, sid: &CallSid, at: DateTime<Utc>, reason: &str) -> WriteOp {
    WriteOp::CallEnded {
        org,
        sid: sid.clone(),
        ended_at: at,
        end_reason: reason.into(),
        duration_ms: 60_000,
    }
}

pub fn turn_record(org: OrgId, sid: &CallSid, seq: i32) -> TurnRecord {
    let agent = seq % 2 == 1;
    TurnRecord {
        org,
        sid: sid.clone(),
        seq,
        role: if agent { "agent" } else { "caller" }.into(),
        text: format!("turn {seq} of {sid}"),
        heard_text: agent.then(|| format!("turn {seq}")),
        interrupted: agent && seq % 3 == 0,
        start_ms: i64::from(seq) * 3_000,
        end_ms: i64::from(seq) * 3_000 + 2_500,
        latency: TurnLatency {
            endpointing_ms: Some(300),
            stt_ms: Some(120),
            brain_first_token_ms: agent.then_some(350),
            tts_first_audio_ms: agent.then_some(180),
            voice_to_voice_ms: agent.then_some(950 + i64::from(seq)),
        },
    }
}

pub fn turn(org: OrgId, sid: &CallSid, seq: i32) -> WriteOp {
    WriteOp::Turn(turn_record(org, sid, seq))
}

pub fn event_record(org: OrgId, sid: &CallSid, seq: i32, kind: &str) -> EventRecord {
    EventRecord {
        org,
        sid: sid.clone(),
        seq,
        at_ms: i64::from(seq) * 1_000,
        kind: kind.into(),
        detail: serde_json::json!({ "seq": seq, "digits": "42" }),
    }
}

pub fn event(org: OrgId, sid: &CallSid, seq: i32, kind: &str) -> WriteOp {
    WriteOp::Event(event_record(org, sid, seq, kind))
}

pub fn recording_record(org: OrgId, sid: &CallSid) -> RecordingRecord {
    RecordingRecord {
        org,
        sid: sid.clone(),
        location: format!("local:{org}/{sid}.wav"),
        channels: 2,
        sample_rate: 8000,
        duration_ms: 61_000,
        sha256: "ab".repeat(32),
    }
}

pub fn recording(org: OrgId, sid: &CallSid) -> WriteOp {
    WriteOp::Recording(recording_record(org, sid))
}

/// Polls `cond` every 20 ms for up to `within`; false if it never held.
pub async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}
