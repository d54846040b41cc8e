-- The receptionist: organisation slugs and clinic config, phone numbers per org, knowledge chunks with
-- embeddings, appointments booked synchronously with double-booking made impossible by the database, and
-- callback requests. Mirrors migrations/sqlite/0002_receptionist.sql table for table.

-- A stable, human-chosen name for an organisation (the clinic config file's key). NULL for orgs created
-- without one; unique where set (Postgres and SQLite both let NULLs repeat in a unique index).
ALTER TABLE organisations ADD COLUMN slug TEXT;
CREATE UNIQUE INDEX organisations_slug ON organisations (slug);

-- The clinic's configuration (hours, services, staff...), kept as the exact JSON text it was given (TEXT,
-- not JSONB, which would reorder keys and drop duplicates), with its SHA-256 so an unchanged file is a
-- no-op.
CREATE TABLE clinics (
    org_id         UUID PRIMARY KEY REFERENCES organisations (id),
    config         TEXT NOT NULL,
    config_sha256  TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);

-- The clinic's knowledge, chunked and embedded. embedding: f32 little-endian, dims values.
CREATE TABLE knowledge_chunks (
    org_id       UUID NOT NULL REFERENCES organisations (id),
    id           TEXT NOT NULL,
    title        TEXT NOT NULL,
    text         TEXT NOT NULL,
    text_sha256  TEXT NOT NULL,
    model        TEXT NOT NULL,
    embedding    BYTEA NOT NULL,
    dims         INTEGER NOT NULL CHECK (dims >= 0 AND octet_length(embedding) = 4 * dims),
    updated_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (org_id, id)
);

-- Appointments: the receptionist books them in a transaction of their own (not through the write queue).
-- An interval [starts_at, ends_at) replaces the duration; service replaces reason; patient_name, the
-- idempotency key and the appointment a reschedule replaced are new.
ALTER TABLE appointments RENAME COLUMN reason TO service;
ALTER TABLE appointments ADD COLUMN patient_name TEXT NOT NULL DEFAULT '';
ALTER TABLE appointments ADD COLUMN ends_at TIMESTAMPTZ;
UPDATE appointments SET ends_at = starts_at + make_interval(mins => duration_min);
ALTER TABLE appointments ALTER COLUMN ends_at SET NOT NULL;
ALTER TABLE appointments DROP COLUMN duration_min;
ALTER TABLE appointments ADD COLUMN idempotency_key TEXT;
ALTER TABLE appointments ADD COLUMN rescheduled_from UUID;
ALTER TABLE appointments ADD CONSTRAINT appointments_rescheduled_from
    FOREIGN KEY (org_id, rescheduled_from) REFERENCES appointments (org_id, id);
ALTER TABLE appointments ADD CONSTRAINT appointments_interval CHECK (ends_at > starts_at);
ALTER TABLE appointments ADD CONSTRAINT appointments_status CHECK (status IN ('booked', 'cancelled'));
CREATE UNIQUE INDEX appointments_org_idempotency ON appointments (org_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX appointments_org_phone_starts ON appointments (org_id, contact_phone, starts_at);

-- No two booked appointments of one organisation overlap: one schedule per clinic (a clinic with several
-- chairs or practitioners would add a resource column to the constraint). Half-open ranges, so back-to-back
-- slots (one ends when the next starts) do not conflict. btree_gist supplies `=` on uuid for GiST.
CREATE EXTENSION IF NOT EXISTS btree_gist;
ALTER TABLE appointments ADD CONSTRAINT appointments_no_overlap
    EXCLUDE USING gist (org_id WITH =, tstzrange(starts_at, ends_at) WITH &&) WHERE (status = 'booked');

-- Messages the receptionist took for staff to call back.
CREATE TABLE callback_requests (
    id               UUID PRIMARY KEY,
    org_id           UUID NOT NULL REFERENCES organisations (id),
    call_sid         TEXT,
    name             TEXT NOT NULL,
    phone            TEXT NOT NULL,
    reason           TEXT NOT NULL,
    urgent           BOOLEAN NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('open', 'done')),
    idempotency_key  TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    UNIQUE (org_id, id),
    UNIQUE (org_id, idempotency_key),
    FOREIGN KEY (org_id, call_sid) REFERENCES calls (org_id, sid)
);
-- staff list: open first-class, urgent first, then oldest
CREATE INDEX callback_requests_org_status ON callback_requests (org_id, status, urgent DESC, created_at);
