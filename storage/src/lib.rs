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
//! | `organisations` (0002) | unique `slug` | the clinic config's key ([`Store::upsert_org`], [`Store::org_by_slug`]) |
//! | `contacts` | `(org_id, phone)` | name, email, notes |
//! | `appointments` | `id`; unique `(org_id, idempotency_key)` | call, contact, patient name, service, `[starts_at, ends_at)`, status `booked`/`cancelled`, `rescheduled_from` |
//! | `clinics` | `org_id` | the clinic config JSON, exactly as given, and its SHA-256 |
//! | `knowledge_chunks` | `(org_id, id)` | title, text, `text_sha256`, embedding model, embedding (f32 LE bytes), `dims` |
//! | `callback_requests` | `id`; unique `(org_id, idempotency_key)` | call, name, phone, reason, urgent, status `open`/`done` |
//! | `webhook_endpoints` (0003) | `id`; unique `(org_id, id)` | URL, event types (JSON), the signing secret sealed by the server, `disabled_at` |
//! | `webhook_deliveries` (0003) | `id`; unique `(endpoint_id, event_id)` | the durable queue and delivery log: body as sent, status `pending`/`delivered`/`failed`, attempts, next attempt (or lease end), last status and error (rules: [`WebhookDelivery`]'s module, `src/webhooks.rs`) |
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
//! - `Contact`: last writer wins by the record's own `updated_at`.
//!
//! Bookings and callback requests are not `WriteOp`s: the receptionist needs their outcome before it
//! speaks, so they are written synchronously, each keyed by an idempotency key the caller makes (the same
//! key again returns the first result). (Migration 0002 removed `WriteOp::Appointment`, a last-writer-wins
//! booking nothing used, which could not honour the no-overlap rule below: the queue would have parked a
//! refused booking in the rejected file after the caller was told it was booked.)
//!
//! Each [`Store::apply_batch`] is one transaction (multi-row changes land together or not at all).
//!
//! **Placeholders.** A write about a call whose `CallStarted` has not landed (a status callback that beat the
//! media stream, or a turn replayed from the spill file before its call) creates a placeholder call row:
//! org known, `placeholder = true`, status `unknown` (or the callback's), `started_at` the earliest time seen,
//! from/to empty. `CallStarted` later fills it in. Nothing is lost and no foreign key is violated.
//!
//! [`Store::book_appointment`], [`Store::reschedule_appointment`] and [`Store::take_message`] use the same
//! mechanism when they name a call: they run while the call is live, before its `CallStarted` (queued) may
//! have landed, so they insert the placeholder in their own transaction (a no-op if the row exists).
//!
//! A write naming a call that belongs to another organisation fails with [`StoreError::OrgMismatch`] and
//! changes nothing.
//!
//! # Appointments
//! **Invariant: the database refuses two overlapping `booked` appointments of one organisation** (one
//! schedule per clinic; a clinic with several chairs would add a resource column to the rule). Intervals are
//! half-open, so back-to-back slots do not conflict; cancelled appointments do not count. Postgres: an
//! exclusion constraint, `EXCLUDE USING gist (org_id WITH =, tstzrange(starts_at, ends_at) WITH &&) WHERE
//! (status = 'booked')` (extension `btree_gist`). SQLite: `BEFORE INSERT`/`BEFORE UPDATE` triggers with the
//! same rule (`RAISE(ABORT, 'appointments_no_overlap')`). Booking runs in one transaction (SQLite: `BEGIN
//! IMMEDIATE`, so the write lock is held from the first check): key seen? → slot free? → placeholder call,
//! contact → insert. A concurrent booking that slips between the check and the insert (Postgres, read
//! committed) is refused by the constraint or the key's unique index, and the outcome is read again:
//! `AlreadyBooked` if the key committed, else `Conflict`. A reschedule cancels the old appointment and books a
//! new one (`rescheduled_from`) in one transaction, so the old slot does not conflict with the new.
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

mod error;
mod ids;
mod model;
mod queue;
mod recording;
mod staff;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod time;
mod webhooks;

pub use error::StoreError;
pub use ids::{AssistantId, CallSid, OrgId};
pub use model::{
    APPOINTMENT_BOOKED, APPOINTMENT_CANCELLED, Appointment, Assistant, BookOutcome, CallQuery,
    CallSummary, CallbackRequest, ContactRecord, EventRecord, KnowledgeChunk, NewAssistant,
    NewBooking, NewCallback, RecordingRecord, TurnLatency, TurnRecord, WriteOp,
};
pub use queue::{QueueConfig, QueueStats, WriteQueue};
pub use recording::{
    BoxFuture, LocalRecordingStore, RecordingReader, RecordingStore, StoredRecording, sha256_file,
};
pub use staff::{
    ApiKey, CallFilter, CallListItem, Contact, NewUser, OUTCOMES, Org, SealedSecret, Session, User,
};
pub use store::{
    DEFAULT_ASSISTANT_ID, DEFAULT_ORG_ID, DEFAULT_PAGE, MAX_PAGE, SQLITE_FILE_NAME, Store,
    StoreOptions, sha256_hex,
};
pub use webhooks::{
    AttemptOutcome, ClaimedDelivery, DELIVERY_DELIVERED, DELIVERY_FAILED, DELIVERY_PENDING,
    WebhookDelivery, WebhookEndpoint, WebhookQueueState,
};
