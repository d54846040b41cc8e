-- The receptionist: organisation slugs and clinic config, phone numbers per org, knowledge chunks with
-- embeddings, appointments booked synchronously with double-booking made impossible by the database, and
-- callback requests. Mirrors migrations/postgres/0002_receptionist.sql table for table (representations as
-- in 0001: UUIDs are BLOBs, timestamps fixed-width UTC text, booleans 0/1).

-- A stable, human-chosen name for an organisation (the clinic config file's key). NULL for orgs created
-- without one; unique where set (NULLs may repeat in a unique index).
ALTER TABLE organisations ADD COLUMN slug TEXT;
CREATE UNIQUE INDEX organisations_slug ON organisations (slug);

-- The clinic's configuration, kept as the exact JSON text it was given, with its SHA-256 so an unchanged
-- file is a no-op.
CREATE TABLE clinics (
    org_id         BLOB PRIMARY KEY REFERENCES organisations (id),
    config         TEXT NOT NULL,
    config_sha256  TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
) STRICT;

-- The clinic's knowledge, chunked and embedded. embedding: f32 little-endian, dims values.
CREATE TABLE knowledge_chunks (
    org_id       BLOB NOT NULL REFERENCES organisations (id),
    id           TEXT NOT NULL,
    title        TEXT NOT NULL,
    text         TEXT NOT NULL,
    text_sha256  TEXT NOT NULL,
    model        TEXT NOT NULL,
    embedding    BLOB NOT NULL,
    dims         INTEGER NOT NULL CHECK (dims >= 0 AND length(embedding) = 4 * dims),
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (org_id, id)
) STRICT;

-- Appointments: rebuilt (SQLite cannot add constraints to a table), the documented way: create, copy,
-- drop, rename. An interval [starts_at, ends_at) replaces the duration; service replaces reason;
-- patient_name, the idempotency key and the appointment a reschedule replaced are new. Nothing references
-- appointments, so dropping the old table touches no other table.
CREATE TABLE appointments_new (
    id                BLOB PRIMARY KEY,
    org_id            BLOB NOT NULL REFERENCES organisations (id),
    call_sid          TEXT,
    contact_phone     TEXT,
    service           TEXT NOT NULL,
    patient_name      TEXT NOT NULL DEFAULT '',
    starts_at         TEXT NOT NULL,
    ends_at           TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('booked', 'cancelled')),
    idempotency_key   TEXT,
    rescheduled_from  BLOB,
    updated_at        TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    UNIQUE (org_id, id),
    CHECK (ends_at > starts_at),
    FOREIGN KEY (org_id, call_sid) REFERENCES calls (org_id, sid),
    FOREIGN KEY (org_id, contact_phone) REFERENCES contacts (org_id, phone),
    FOREIGN KEY (org_id, rescheduled_from) REFERENCES appointments_new (org_id, id)
) STRICT;
-- ends_at keeps starts_at's fixed-width microsecond text: whole seconds from strftime, fraction copied.
INSERT INTO appointments_new (id, org_id, call_sid, contact_phone, service, starts_at, ends_at, status,
    updated_at, created_at)
SELECT id, org_id, call_sid, contact_phone, reason, starts_at,
    strftime('%Y-%m-%dT%H:%M:%S', starts_at, '+' || duration_min || ' minutes') || substr(starts_at, 20),
    status, updated_at, created_at
FROM appointments;
DROP TABLE appointments;
ALTER TABLE appointments_new RENAME TO appointments;
CREATE INDEX appointments_org_starts ON appointments (org_id, starts_at);
CREATE UNIQUE INDEX appointments_org_idempotency ON appointments (org_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX appointments_org_phone_starts ON appointments (org_id, contact_phone, starts_at);

-- No two booked appointments of one organisation overlap: one schedule per clinic. SQLite has no exclusion
-- constraints; these triggers are the same rule (half-open intervals; fixed-width UTC text compares as
-- time), so no writer, ours or another, can store an overlap. The store also checks first, inside a
-- BEGIN IMMEDIATE transaction, so a conflict is an answer rather than an error.
CREATE TRIGGER appointments_no_overlap_insert BEFORE INSERT ON appointments
WHEN NEW.status = 'booked'
BEGIN
    SELECT RAISE(ABORT, 'appointments_no_overlap')
    WHERE EXISTS (SELECT 1 FROM appointments a WHERE a.org_id = NEW.org_id AND a.status = 'booked'
                  AND a.starts_at < NEW.ends_at AND NEW.starts_at < a.ends_at);
END;
CREATE TRIGGER appointments_no_overlap_update BEFORE UPDATE OF org_id, starts_at, ends_at, status ON appointments
WHEN NEW.status = 'booked'
BEGIN
    SELECT RAISE(ABORT, 'appointments_no_overlap')
    WHERE EXISTS (SELECT 1 FROM appointments a WHERE a.org_id = NEW.org_id AND a.status = 'booked'
                  AND a.id <> OLD.id AND a.starts_at < NEW.ends_at AND NEW.starts_at < a.ends_at);
END;

-- Messages the receptionist took for staff to call back.
CREATE TABLE callback_requests (
    id               BLOB PRIMARY KEY,
    org_id           BLOB NOT NULL REFERENCES organisations (id),
    call_sid         TEXT,
    name             TEXT NOT NULL,
    phone            TEXT NOT NULL,
    reason           TEXT NOT NULL,
    urgent           INTEGER NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('open', 'done')),
    idempotency_key  TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    UNIQUE (org_id, id),
    UNIQUE (org_id, idempotency_key),
    FOREIGN KEY (org_id, call_sid) REFERENCES calls (org_id, sid)
) STRICT;
-- staff list: urgent first, then oldest
CREATE INDEX callback_requests_org_status ON callback_requests (org_id, status, urgent DESC, created_at);
