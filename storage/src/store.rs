//! [`Store`]: one API over a Postgres or SQLite pool.
//!
//! The SQL lives once, in `backend.rs`, which is compiled twice (`include!`) with `Db` bound to
//! `sqlx::Sqlite` and to `sqlx::Postgres`. Both schemas keep the same table and column names, and every query
//! is written in the dialect the two share (`$n` parameters, `ON CONFLICT ... DO UPDATE ... WHERE`,
//! `RETURNING`), so there is one implementation to read and test, type-checked against each driver.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use uuid::Uuid;

use crate::error::StoreError;
use crate::ids::{AssistantId, CallSid, OrgId};
use crate::model::{
    Appointment, Assistant, BookOutcome, CallQuery, CallSummary, CallbackRequest, ContactRecord,
    EventRecord, KnowledgeChunk, NewAssistant, NewBooking, NewCallback, RecordingRecord,
    TurnRecord, WriteOp,
};
#[allow(unused_imports)]
use crate::staff::{
    ApiKey, CallFilter, CallListItem, Contact, NewUser, Org, SealedSecret, Session, User,
};
#[allow(unused_imports)]
use crate::webhooks::{
    AttemptOutcome, ClaimedDelivery, WebhookDelivery, WebhookEndpoint, WebhookQueueState,
};

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("../migrations/postgres");

/// Name of the SQLite database file inside the data directory.
pub const SQLITE_FILE_NAME: &str = "voxanne.db";

/// Page size when [`CallQuery::limit`] is 0.
pub const DEFAULT_PAGE: u32 = 50;
/// Largest page [`Store::list_calls`] returns: a dashboard page, not an export; bounds the work one request
/// can ask of the database.
pub const MAX_PAGE: u32 = 500;

/// The organisation [`Store::ensure_default_org`] creates: fixed, so every one-box install and every restart
/// agree on it without a lookup table.
pub const DEFAULT_ORG_ID: OrgId = OrgId(Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_0001));
/// The assistant [`Store::ensure_default_org`] creates in [`DEFAULT_ORG_ID`].
pub const DEFAULT_ASSISTANT_ID: AssistantId =
    AssistantId(Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_0002));

/// Connection settings. The defaults suit one media server; tests shorten the timeouts so an outage is seen
/// quickly.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Pool size. 8 for Postgres: the writer uses one connection at a time and the dashboard a few; SQLite
    /// uses at most 4 (one writer at a time anyway, WAL readers beside it).
    pub max_connections: u32,
    /// How long a query waits for a connection before failing (and the write queue retrying). 5 s: long
    /// enough for a Postgres restart's reconnect, short enough that the health endpoint answers.
    pub acquire_timeout: Duration,
    /// How long SQLite waits on a lock held by another connection or process before `SQLITE_BUSY`.
    pub sqlite_busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            sqlite_busy_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Clone, Debug)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The call metadata store. Cheap to clone (a pool handle).
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    /// SQLite allows one writer at a time, and its busy handler (sleep and retry) is neither fair nor
    /// bounded under contention: in-process writers queue here instead, so `SQLITE_BUSY` only ever means
    /// another process holds the lock. Unused for Postgres, which has row locks.
    sqlite_writer: Arc<tokio::sync::Mutex<()>>,
}

/// Like `dispatch!`, for writes: on SQLite, holds the store's writer lock while the function runs.
macro_rules! dispatch_write {
    ($self:expr, $f:ident ( $($arg:expr),* $(,)? )) => {
        match &$self.pool {
            Pool::Sqlite(pool) => {
                let _writer = $self.sqlite_writer.lock().await;
                sqlite_impl::$f(pool, $($arg),*).await
            }
            Pool::Postgres(pool) => postgres_impl::$f(pool, $($arg),*).await,
        }
    };
}

/// Runs the same backend function on whichever pool the store has.
macro_rules! dispatch {
    ($self:expr, $f:ident ( $($arg:expr),* $(,)? )) => {
        match &$self.pool {
            Pool::Sqlite(pool) => sqlite_impl::$f(pool, $($arg),*).await,
            Pool::Postgres(pool) => postgres_impl::$f(pool, $($arg),*).await,
        }
    };
}

impl Store {
    /// `None` => SQLite file [`SQLITE_FILE_NAME`] in `data_dir` (directory created if missing);
    /// `Some("postgres://...")` => Postgres; `Some("sqlite:...")` => that SQLite database. Runs migrations.
    pub async fn open(database_url: Option<&str>, data_dir: &Path) -> Result<Store, StoreError> {
        Self::open_with(database_url, data_dir, &StoreOptions::default()).await
    }

    /// [`Store::open`] with explicit connection settings.
    pub async fn open_with(
        database_url: Option<&str>,
        data_dir: &Path,
        opts: &StoreOptions,
    ) -> Result<Store, StoreError> {
        let store = match database_url.map(str::trim).filter(|u| !u.is_empty()) {
            None => {
                std::fs::create_dir_all(data_dir)?;
                let conn = SqliteConnectOptions::new().filename(data_dir.join(SQLITE_FILE_NAME));
                Self::open_sqlite(conn, opts).await?
            }
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                let conn = PgConnectOptions::from_str(url)?;
                let pool = PgPoolOptions::new()
                    .max_connections(opts.max_connections)
                    .acquire_timeout(opts.acquire_timeout)
                    .connect_with(conn)
                    .await?;
                Store {
                    pool: Pool::Postgres(pool),
                    sqlite_writer: Arc::default(),
                }
            }
            Some(url) if url.starts_with("sqlite:") => {
                Self::open_sqlite(SqliteConnectOptions::from_str(url)?, opts).await?
            }
            Some(_) => return Err(StoreError::UnsupportedUrl),
        };
        store.migrate().await?;
        tracing::info!(backend = store.backend(), "storage opened");
        Ok(store)
    }

    async fn open_sqlite(
        conn: SqliteConnectOptions,
        opts: &StoreOptions,
    ) -> Result<Store, StoreError> {
        let conn = conn
            .create_if_missing(true)
            // WAL: the dashboard reads while the writer writes.
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed call survives power loss, not only a crash; the write queue batches
            // commits, so the fsync per commit is affordable.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(opts.sqlite_busy_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(opts.max_connections.min(4))
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(conn)
            .await?;
        Ok(Store {
            pool: Pool::Sqlite(pool),
            sqlite_writer: Arc::default(),
        })
    }

    /// Applies pending migrations (`migrations/sqlite` or `migrations/postgres`, embedded at build time).
    /// Safe to run concurrently from several processes (sqlx takes a lock) and when already up to date.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite(pool) => SQLITE_MIGRATOR.run(pool).await?,
            Pool::Postgres(pool) => POSTGRES_MIGRATOR.run(pool).await?,
        }
        Ok(())
    }

    /// The newest migration applied to the database (0 before any), for `voxanne migrate` and the health
    /// endpoint.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        dispatch!(self, schema_version())
    }

    /// The newest migration this build embeds; [`Store::schema_version`] equals it after [`Store::migrate`].
    pub fn latest_schema_version(&self) -> i64 {
        let migrator = match self.pool {
            Pool::Sqlite(_) => &SQLITE_MIGRATOR,
            Pool::Postgres(_) => &POSTGRES_MIGRATOR,
        };
        migrator.iter().map(|m| m.version).max().unwrap_or(0)
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// A cheap round trip (`SELECT 1`), for the health endpoint.
    pub async fn health(&self) -> Result<(), StoreError> {
        dispatch!(self, health())
    }

    /// Refreshes the query planner's statistics (`ANALYZE` on Postgres, `PRAGMA optimize` on SQLite). Worth
    /// running after a bulk import and periodically (Postgres' autovacuum does it by itself eventually).
    pub async fn optimize(&self) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite(pool) => {
                sqlx::raw_sql("PRAGMA analysis_limit = 1000; PRAGMA optimize = 0x10002;")
                    .execute(pool)
                    .await?;
            }
            Pool::Postgres(pool) => {
                sqlx::raw_sql("ANALYZE").execute(pool).await?;
            }
        }
        Ok(())
    }

    /// Closes the pool; in-flight queries finish first.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
    }

    /// Creates (idempotently) the default organisation and assistant ([`DEFAULT_ORG_ID`],
    /// [`DEFAULT_ASSISTANT_ID`]) and returns them; for one-box setups and the demo. An existing default
    /// assistant is left as it is (staff may have edited it).
    pub async fn ensure_default_org(&self) -> Result<(OrgId, AssistantId), StoreError> {
        dispatch_write!(self, ensure_default_org(&default_assistant(), Utc::now()))?;
        Ok((DEFAULT_ORG_ID, DEFAULT_ASSISTANT_ID))
    }

    /// Creates an organisation without a slug and without assistants.
    pub async fn create_org(&self, name: &str) -> Result<OrgId, StoreError> {
        let id = OrgId::new();
        dispatch_write!(self, create_org(id, name, Utc::now()))?;
        Ok(id)
    }

    /// Fails with `NotFound("organisation")` if `org` does not exist.
    pub async fn create_assistant(
        &self,
        org: OrgId,
        a: &NewAssistant,
    ) -> Result<AssistantId, StoreError> {
        let id = AssistantId::new();
        dispatch_write!(self, create_assistant(org, id, a, Utc::now()))?;
        Ok(id)
    }

    /// Points a phone number (E.164, Twilio's `To`) at an assistant of `org`; re-assigning moves it.
    /// Fails with `NotFound("assistant")` if the assistant is not `org`'s.
    pub async fn assign_number(
        &self,
        org: OrgId,
        assistant: AssistantId,
        e164: &str,
    ) -> Result<(), StoreError> {
        dispatch_write!(self, assign_number(org, assistant, e164, Utc::now()))
    }

    /// Every number and the org/assistant that answers it: the routing table, which the server
    /// keeps in memory so calls are routed while the database is down.
    pub async fn list_numbers(&self) -> Result<Vec<(String, OrgId, AssistantId)>, StoreError> {
        dispatch!(self, list_numbers())
    }

    /// Which org/assistant answers calls to this number (Twilio's `To`).
    pub async fn resolve_number(
        &self,
        e164: &str,
    ) -> Result<Option<(OrgId, AssistantId)>, StoreError> {
        dispatch!(self, resolve_number(e164))
    }

    pub async fn get_assistant(
        &self,
        org: OrgId,
        id: AssistantId,
    ) -> Result<Option<Assistant>, StoreError> {
        dispatch!(self, get_assistant(org, id))
    }

    /// The assistant's knowledge base (free text the brain may consult), `None` if no such assistant in `org`.
    pub async fn knowledge_base(
        &self,
        org: OrgId,
        id: AssistantId,
    ) -> Result<Option<String>, StoreError> {
        dispatch!(self, knowledge_base(org, id))
    }

    /// Replaces the assistant's knowledge base. `NotFound("assistant")` if no such assistant in `org`.
    pub async fn set_knowledge_base(
        &self,
        org: OrgId,
        id: AssistantId,
        text: &str,
    ) -> Result<(), StoreError> {
        dispatch_write!(self, set_knowledge_base(org, id, text, Utc::now()))
    }

    /// Applies one write, idempotently (see [`WriteOp`]). Callers on the audio path use
    /// [`WriteQueue`](crate::WriteQueue) instead, which never waits on the database.
    pub async fn apply(&self, op: &WriteOp) -> Result<(), StoreError> {
        self.apply_batch(std::slice::from_ref(op)).await
    }

    /// Applies several writes in one transaction: all land or none do. The write queue commits in batches
    /// this way (one fsync for many turns).
    pub async fn apply_batch(&self, ops: &[WriteOp]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        dispatch_write!(self, apply_batch(ops, Utc::now()))
    }

    /// The org's calls, newest first, optionally by status, keyset-paged on `started_at`.
    pub async fn list_calls(
        &self,
        org: OrgId,
        q: &CallQuery,
    ) -> Result<Vec<CallSummary>, StoreError> {
        let limit = match q.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        dispatch!(
            self,
            list_calls(org, q.status.as_deref(), q.before, i64::from(limit))
        )
    }

    /// How many calls the org has (optionally with a status).
    pub async fn count_calls(&self, org: OrgId, status: Option<&str>) -> Result<i64, StoreError> {
        dispatch!(self, count_calls(org, status))
    }

    pub async fn get_call(
        &self,
        org: OrgId,
        sid: &CallSid,
    ) -> Result<Option<CallSummary>, StoreError> {
        dispatch!(self, get_call(org, sid))
    }

    /// The call's turns in order; empty if the call is not `org`'s.
    pub async fn list_turns(
        &self,
        org: OrgId,
        sid: &CallSid,
    ) -> Result<Vec<TurnRecord>, StoreError> {
        dispatch!(self, list_turns(org, sid))
    }

    /// The call's events in order; empty if the call is not `org`'s.
    pub async fn list_events(
        &self,
        org: OrgId,
        sid: &CallSid,
    ) -> Result<Vec<EventRecord>, StoreError> {
        dispatch!(self, list_events(org, sid))
    }

    pub async fn get_recording(
        &self,
        org: OrgId,
        sid: &CallSid,
    ) -> Result<Option<RecordingRecord>, StoreError> {
        dispatch!(self, get_recording(org, sid))
    }

    pub async fn get_contact(
        &self,
        org: OrgId,
        phone: &str,
    ) -> Result<Option<ContactRecord>, StoreError> {
        dispatch!(self, get_contact(org, phone))
    }

    /// The org's appointments (booked and cancelled) starting in `[from, to)`, earliest first.
    pub async fn list_appointments(
        &self,
        org: OrgId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Appointment>, StoreError> {
        dispatch!(self, list_appointments(org, from, to))
    }

    // ---- organisations by slug, clinic config, phone numbers ----

    /// The organisation with this slug (the clinic config's key), if any.
    pub async fn org_by_slug(&self, slug: &str) -> Result<Option<OrgId>, StoreError> {
        dispatch!(self, org_by_slug(slug))
    }

    /// The organisation with this slug, created (with a default assistant) if missing; its name is set to
    /// `name` either way. An existing org that has no assistant gets the default one. Safe to run
    /// concurrently for the same slug: one org results. `InvalidInput` for an empty slug.
    pub async fn upsert_org(&self, slug: &str, name: &str) -> Result<OrgId, StoreError> {
        if slug.trim().is_empty() {
            return Err(StoreError::InvalidInput("organisation slug"));
        }
        dispatch_write!(
            self,
            upsert_org(
                OrgId::new(),
                slug,
                name,
                AssistantId::new(),
                &default_assistant(),
                Utc::now()
            )
        )
    }

    /// The org's default assistant: its first (oldest) one. `None` if it has none (or no such org).
    pub async fn org_assistant(&self, org: OrgId) -> Result<Option<AssistantId>, StoreError> {
        dispatch!(self, org_assistant(org))
    }

    /// Stores the clinic's configuration (JSON text, kept exactly as given). Returns whether anything
    /// changed: `false` when the stored text has the same SHA-256 (nothing is written). `InvalidInput` if it
    /// is not JSON, `NotFound("organisation")` if `org` does not exist.
    pub async fn put_clinic(&self, org: OrgId, config_json: &str) -> Result<bool, StoreError> {
        if serde_json::from_str::<serde::de::IgnoredAny>(config_json).is_err() {
            return Err(StoreError::InvalidInput("clinic config (not JSON)"));
        }
        let sha = sha256_hex(config_json.as_bytes());
        dispatch_write!(self, put_clinic(org, config_json, &sha, Utc::now()))
    }

    /// The clinic's configuration as it was given to [`Store::put_clinic`].
    pub async fn get_clinic(&self, org: OrgId) -> Result<Option<String>, StoreError> {
        dispatch!(self, get_clinic(org))
    }

    /// Makes the org's phone numbers exactly `numbers` (E.164), all answered by `assistant`: missing ones are
    /// added, ones not listed are released. One transaction: if a number answers for another organisation
    /// the result is `NumberTaken(number)` and nothing changes (unlike [`Store::assign_number`], which moves
    /// it). `NotFound("assistant")` if the assistant is not `org`'s.
    pub async fn set_org_numbers(
        &self,
        org: OrgId,
        assistant: AssistantId,
        numbers: &[String],
    ) -> Result<(), StoreError> {
        if numbers.iter().any(|n| n.trim().is_empty()) {
            return Err(StoreError::InvalidInput("phone number"));
        }
        dispatch_write!(self, set_org_numbers(org, assistant, numbers, Utc::now()))
    }

    // ---- knowledge ----

    /// For each of the org's knowledge chunks: `id -> (text_sha256, model)`, so a caller re-embeds only the
    /// chunks whose text ([`sha256_hex`] of it) or embedding model changed.
    pub async fn knowledge_index(
        &self,
        org: OrgId,
    ) -> Result<HashMap<String, (String, String)>, StoreError> {
        dispatch!(self, knowledge_index(org))
    }

    /// Makes the org's knowledge exactly `chunks`, in one transaction: chunks whose id is not listed are
    /// deleted, the others inserted or updated (an unchanged chunk is left as it is). The text's SHA-256 is
    /// computed here. `InvalidInput` if two chunks share an id, `NotFound("organisation")` if `org` does not
    /// exist.
    pub async fn replace_knowledge(
        &self,
        org: OrgId,
        chunks: &[KnowledgeChunk],
    ) -> Result<(), StoreError> {
        let mut ids = HashSet::new();
        if !chunks.iter().all(|c| ids.insert(c.id.as_str())) {
            return Err(StoreError::InvalidInput("knowledge chunk ids (duplicate)"));
        }
        dispatch_write!(self, replace_knowledge(org, chunks, Utc::now()))
    }

    /// The org's knowledge chunks with their embeddings, by id.
    pub async fn list_knowledge(&self, org: OrgId) -> Result<Vec<KnowledgeChunk>, StoreError> {
        dispatch!(self, list_knowledge(org))
    }

    // ---- appointments (synchronous: the caller is told "booked" only once it is) ----

    /// Books `[starts_at, ends_at)`, in one transaction that also creates or names the contact and, when
    /// the booking names a call whose row has not landed yet (call rows come through the write queue), makes
    /// the placeholder call row the queue's own writes would make. The database refuses overlapping booked
    /// appointments of one organisation (see the crate docs, "Appointments"), so of any number of
    /// concurrent bookings of a slot, from any number of processes, exactly one is `Booked` and the others
    /// get `Conflict`. The same idempotency key again returns `AlreadyBooked` with the first result.
    /// Errors: `InvalidInput` for an empty interval or key, `OrgMismatch` if the call is another org's.
    pub async fn book_appointment(&self, b: &NewBooking) -> Result<BookOutcome, StoreError> {
        check_interval(b.starts_at, b.ends_at)?;
        if b.idempotency_key.is_empty() {
            return Err(StoreError::InvalidInput("idempotency key"));
        }
        dispatch_write!(self, book_appointment(b, Uuid::new_v4(), Utc::now()))
    }

    /// Moves a booked appointment to `[starts_at, ends_at)`, in one transaction: the old appointment is
    /// cancelled and a new one (same call, contact, name and service; `rescheduled_from` = the old id) is
    /// booked in its place, so the old slot does not conflict with the new one and the history stays. A
    /// taken slot is `Conflict` and leaves the old appointment booked. The same idempotency key again
    /// returns `AlreadyBooked` with the appointment that request made. `NotFound("appointment")` if there is
    /// no such appointment in `org`, `NotFound("booked appointment")` if it is already cancelled (or moved).
    pub async fn reschedule_appointment(
        &self,
        org: OrgId,
        appointment_id: Uuid,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        idempotency_key: &str,
    ) -> Result<BookOutcome, StoreError> {
        check_interval(starts_at, ends_at)?;
        if idempotency_key.is_empty() {
            return Err(StoreError::InvalidInput("idempotency key"));
        }
        dispatch_write!(
            self,
            reschedule_appointment(
                org,
                appointment_id,
                starts_at,
                ends_at,
                idempotency_key,
                Uuid::new_v4(),
                Utc::now()
            )
        )
    }

    /// Cancels an appointment (idempotent: cancelling a cancelled one changes nothing) and returns it;
    /// `None` if there is no such appointment in `org`.
    pub async fn cancel_appointment(
        &self,
        org: OrgId,
        appointment_id: Uuid,
    ) -> Result<Option<Appointment>, StoreError> {
        dispatch_write!(self, cancel_appointment(org, appointment_id, Utc::now()))
    }

    pub async fn get_appointment(
        &self,
        org: OrgId,
        appointment_id: Uuid,
    ) -> Result<Option<Appointment>, StoreError> {
        dispatch!(self, get_appointment(org, appointment_id))
    }

    /// `[start, end)` of the org's booked appointments that overlap `[from, to)`, earliest first: what the
    /// availability search must avoid.
    pub async fn busy_intervals(
        &self,
        org: OrgId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, DateTime<Utc>)>, StoreError> {
        dispatch!(self, busy_intervals(org, from, to))
    }

    /// The contact's booked appointments starting at or after `from`, soonest first.
    pub async fn upcoming_appointments(
        &self,
        org: OrgId,
        phone: &str,
        from: DateTime<Utc>,
    ) -> Result<Vec<Appointment>, StoreError> {
        dispatch!(self, upcoming_appointments(org, phone, from))
    }

    // ---- callback requests ----

    /// Stores a message for staff to call back (status `open`). The same idempotency key again returns the
    /// message first stored with it, unchanged. A call whose row has not landed yet gets a placeholder, as
    /// in [`Store::book_appointment`]. `OrgMismatch` if the call is another org's.
    pub async fn take_message(&self, m: &NewCallback) -> Result<CallbackRequest, StoreError> {
        if m.idempotency_key.is_empty() {
            return Err(StoreError::InvalidInput("idempotency key"));
        }
        dispatch_write!(self, take_message(m, Uuid::new_v4(), Utc::now()))
    }

    /// The org's callback requests (only `open` ones if `open_only`), urgent first, then oldest first.
    pub async fn list_callbacks(
        &self,
        org: OrgId,
        open_only: bool,
    ) -> Result<Vec<CallbackRequest>, StoreError> {
        dispatch!(self, list_callbacks(org, open_only))
    }

    /// Marks a callback request `done` (idempotent) and returns it; `None` if there is no such request in
    /// `org`.
    pub async fn complete_callback(
        &self,
        org: OrgId,
        id: Uuid,
    ) -> Result<Option<CallbackRequest>, StoreError> {
        dispatch_write!(self, complete_callback(org, id, Utc::now()))
    }
}

/// Status order for Twilio's call statuses. A call's status only ever moves to a higher rank; all terminal
/// statuses share the top rank, so the first one to land stays.
pub(crate) fn status_rank(status: &str) -> i32 {
    match status {
        "queued" => 1,
        "initiated" => 2,
        "ringing" => 3,
        "in-progress" | "answered" => 4,
        "completed" | "busy" | "failed" | "no-answer" | "canceled" => 5,
        // Unknown words never displace a known status.
        _ => 0,
    }
}

const RANK_IN_PROGRESS: i32 = 4;
const RANK_TERMINAL: i32 = 5;

/// A default assistant for a new organisation ([`Store::ensure_default_org`], [`Store::upsert_org`]).
fn default_assistant() -> NewAssistant {
    NewAssistant {
        name: "Reception".to_owned(),
        greeting: "Hello, thank you for calling. How can I help you today?".to_owned(),
        voice: "default".to_owned(),
        transfer_number: None,
        settings: serde_json::json!({}),
    }
}

/// Lower-case hex SHA-256 of `bytes`: the clinic config's `config_sha256` and a knowledge chunk's
/// `text_sha256` (hash the chunk's text with it to compare against [`Store::knowledge_index`]).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn check_interval(starts_at: DateTime<Utc>, ends_at: DateTime<Utc>) -> Result<(), StoreError> {
    if ends_at > starts_at {
        Ok(())
    } else {
        Err(StoreError::InvalidInput(
            "appointment interval (ends_at must be after starts_at)",
        ))
    }
}

#[path = "staff_store.rs"]
mod staff_store;
#[path = "webhooks_store.rs"]
mod webhooks_store;

mod sqlite_impl {
    type Db = sqlx::Sqlite;
    /// Opens a booking transaction. IMMEDIATE takes SQLite's write lock at once, so the overlap check and
    /// the insert see no other writer in between (another connection, or another process, waits on the
    /// busy timeout). A deferred transaction would read first and could fail to upgrade to a writer.
    const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";
    /// No row locks in SQLite (one writer at a time): nothing to add to the webhook claim.
    const CLAIM_LOCK: &str = "";
    const CLAIM_MATERIALIZED: &str = "";
    include!("backend.rs");
    include!("staff_sql.rs");
    include!("webhooks_sql.rs");
}

mod postgres_impl {
    type Db = sqlx::Postgres;
    /// A plain transaction: the exclusion constraint and unique index settle races with row locks.
    const BEGIN_WRITE: &str = "BEGIN";
    /// The webhook claim's subquery locks the rows it picks and skips rows another claim holds:
    /// concurrent workers take disjoint batches at once instead of queueing on each other's locks.
    const CLAIM_LOCK: &str = " FOR UPDATE SKIP LOCKED";
    /// The locking pick runs once, as its own step: a locking subquery inside `IN (…)` may be
    /// run again by the plan, each run past the rows the previous one locked (more than the
    /// limit claimed).
    const CLAIM_MATERIALIZED: &str = "MATERIALIZED ";
    include!("backend.rs");
    include!("staff_sql.rs");
    include!("webhooks_sql.rs");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_rank_orders_twilio_statuses_and_ignores_unknown_words() {
        let order = ["queued", "initiated", "ringing", "in-progress"];
        for w in order.windows(2) {
            assert!(status_rank(w[0]) < status_rank(w[1]), "{w:?}");
        }
        for terminal in ["completed", "busy", "failed", "no-answer", "canceled"] {
            assert_eq!(status_rank(terminal), RANK_TERMINAL);
        }
        assert_eq!(status_rank("in-progress"), RANK_IN_PROGRESS);
        assert_eq!(
            status_rank("Completed"),
            0,
            "Twilio sends lower case; anything else is unknown"
        );
        assert_eq!(status_rank(""), 0);
    }
}
