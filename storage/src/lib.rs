//! Voxanne's call metadata store: every call, turn, event, recording and booking, in Postgres or in an
//! embedded SQLite file, behind one API ([`Store`]), with a write path ([`WriteQueue`]) that the audio path
//! never waits on.
//!
//! # Backends
//! `DATABASE_URL=postgres://…` selects Postgres; unset means SQLite (`voxanne.db` in `VOXANNE_DATA_DIR`), so
//! one box runs with zero setup. The SQL is written once (`src/backend.rs`) in the dialect both share and
//! compiled against each driver; the schemas (`migrations/postgres`, `migrations/sqlite`, embedded at build
//! time, applied by [`Store::open`] and by `voxanne migrate` via [`Store::migrate`]) have the same tables and
//! columns. Representation differences: on SQLite, UUIDs are 16-byte blobs, timestamps fixed-width UTC text
//! (so text order is time order), JSON is text, tables are `STRICT`. Timestamps are kept to the microsecond on
//! both. The same integration suite (`tests/suite.rs`) runs against each backend.
//!
//! # Schema
//! | table | key | notes |
//! |---|---|---|
//! | `organisations` | `id` | the tenant |
//! | `assistants` | `id`; unique `(org_id, id)` | greeting, voice, transfer number, `settings` JSON (brain/engines), `knowledge_base` |
//! | `phone_numbers` | `e164` | → `(org_id, assistant_id)`; answers "who takes calls to this `To`" |
//! | `calls` | `sid` (Twilio CallSid); unique `(org_id, sid)` | from, to, direction, status (+ `status_rank`), started/ended, end reason, duration, `placeholder` |
//! | `turns` | `(call_sid, seq)` | role, text, heard text, interrupted, media start/end, latency per stage |
//! | `call_events` | `(call_sid, seq)` | start, dtmf, barge-in, transfer, error…, `detail` JSON |
//! | `recordings` | `call_sid` | location, channels, sample rate, duration, sha256 |
//! | `contacts` | `(org_id, phone)` | name, email, notes |
//! | `appointments` | `id` | call, contact, start, duration, reason, status |
//!
//! **Invariant: every tenant row has `org_id NOT NULL` with a foreign key, and child rows reference their
//! parent through `(org_id, parent_key)`**, so a turn can never hang off another organisation's call, nor a
//! phone number point at another organisation's assistant. Every query filters on `org_id`: isolation is in
//! the SQL, not in the callers. Dashboard indexes: `calls (org_id, started_at DESC, sid DESC)` and
//! `calls (org_id, status, started_at DESC, sid DESC)`; the CallSid is the primary key.
//!
//! # Idempotency
//! Twilio retries webhooks, the write queue retries transactions, and a spill file may be replayed after a
//! crash, so every [`WriteOp`] is idempotent, and the set is designed to commute (applying them in any order
//! gives the same rows):
//! - `CallStarted`: insert, or fill in a placeholder; a real row is never overwritten.
//! - `CallStatus`: status only moves forward (`queued < initiated < ringing < in-progress < terminal`); the
//!   first terminal status wins; late or replayed callbacks are no-ops.
//! - `CallEnded`: the first one sets ended-at, reason and duration (and status `completed` unless already
//!   terminal).
//! - `Turn`, `Event`: keyed by `(sid, seq)`; `Recording` by `sid`; the first write wins.
//! - `Contact`, `Appointment`: last writer wins by the record's own `updated_at`.
//!
//! Each [`Store::apply_batch`] is one transaction (multi-row changes land together or not at all).
//!
//! **Placeholders.** A write about a call whose `CallStarted` has not landed (a status callback that beat the
//! media stream, or a turn replayed from the spill file before its call) creates a placeholder call row:
//! org known, `placeholder = true`, status `unknown` (or the callback's), `started_at` the earliest time seen,
//! from/to empty. `CallStarted` later fills it in. Nothing is lost and no foreign key is violated.
//!
//! A write naming a call that belongs to another organisation fails with [`StoreError::OrgMismatch`] and
//! changes nothing.
//!
//! # Write path
//! [`WriteQueue::submit`] never awaits: a bounded channel to one writer task, which commits in batches and
//! retries with backoff while the database is down (calls go on). When the channel is full, ops go to a
//! bounded JSON-lines spill file, written back when the database returns and replayed at the next start if
//! the process stopped first. If the spill bound is ever hit, ops are dropped, counted
//! ([`QueueStats::dropped`]) and logged at error level. A write the database refuses for good is retried on
//! its own and then kept in a `.rejected` file, so one bad op never blocks the queue. [`QueueStats::db_up`] and
//! [`Store::health`] feed the health endpoint. Details in the `queue` module docs.
//!
//! # Recordings
//! Files live behind [`RecordingStore`]: [`LocalRecordingStore`] under `VOXANNE_DATA_DIR/recordings`; an
//! S3-compatible store (`object_store`) can implement the same trait for multi-node deployments.
//!
//! # Tests
//! `storage::testing::PgCluster` (feature `testing`) starts a throwaway Postgres from the machine's
//! `initdb`/`pg_ctl`, or uses `VOXANNE_TEST_DATABASE_URL`.
//! Voxanne's call metadata store (design doc below is filled in with the implementation).

mod error;
mod ids;
mod model;
mod queue;
mod recording;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod time;

pub use error::StoreError;
pub use ids::{AssistantId, CallSid, OrgId};
pub use model::{
    AppointmentRecord, Assistant, CallQuery, CallSummary, ContactRecord, EventRecord, NewAssistant,
    RecordingRecord, TurnLatency, TurnRecord, WriteOp,
};
pub use queue::{QueueConfig, QueueStats, WriteQueue};
pub use recording::{
    BoxFuture, LocalRecordingStore, RecordingReader, RecordingStore, StoredRecording, sha256_file,
};
pub use store::{
    DEFAULT_ASSISTANT_ID, DEFAULT_ORG_ID, DEFAULT_PAGE, MAX_PAGE, SQLITE_FILE_NAME, Store,
    StoreOptions,
};
