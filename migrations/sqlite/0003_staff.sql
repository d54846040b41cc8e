-- The staff surface: users and their sign-in sessions, API keys, secrets clinics give us (encrypted by the
-- server before they reach the database), outgoing webhook endpoints and their durable delivery queue, and a
-- recordings retention period per organisation. Mirrors migrations/postgres/0003_staff.sql table for table
-- (UUIDs are BLOBs, timestamps fixed-width UTC text).

-- Staff who sign in. An email is one user across all organisations (sign-in names no org).
CREATE TABLE users (
    id             BLOB PRIMARY KEY,
    org_id         BLOB NOT NULL REFERENCES organisations (id),
    email          TEXT NOT NULL,
    name           TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('admin', 'staff')),
    password_hash  TEXT NOT NULL,               -- argon2id PHC string
    created_at     TEXT NOT NULL,
    disabled_at    TEXT,
    UNIQUE (org_id, id)
) STRICT;
CREATE UNIQUE INDEX users_email ON users (email);

-- One signed-in session: a refresh token (stored as its SHA-256) that is rotated on every refresh. Access
-- tokens name their session, so signing out (revoked_at) refuses them at once.
CREATE TABLE auth_sessions (
    id             BLOB PRIMARY KEY,
    org_id         BLOB NOT NULL REFERENCES organisations (id),
    user_id        BLOB NOT NULL,
    refresh_hash   TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    revoked_at     TEXT,
    UNIQUE (org_id, id),
    FOREIGN KEY (org_id, user_id) REFERENCES users (org_id, id)
) STRICT;
CREATE UNIQUE INDEX auth_sessions_refresh ON auth_sessions (refresh_hash);

-- Server-to-server keys, one organisation each. Shown once; the secret is stored as its SHA-256 (it is
-- 256 random bits, so a slow hash adds nothing).
CREATE TABLE api_keys (
    id             BLOB PRIMARY KEY,
    org_id         BLOB NOT NULL REFERENCES organisations (id),
    name           TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('admin', 'staff')),
    secret_hash    TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    last_used_at   TEXT,
    revoked_at     TEXT,
    UNIQUE (org_id, id)
) STRICT;

-- Secrets a clinic gives us (its Twilio account and auth token, LLM keys): AES-256-GCM ciphertext made by
-- the server, the key's id (for rotation) and the 96-bit nonce. Never returned by the API.
CREATE TABLE org_secrets (
    org_id         BLOB NOT NULL REFERENCES organisations (id),
    name           TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    nonce          BLOB NOT NULL,
    ciphertext     BLOB NOT NULL,
    updated_at     TEXT NOT NULL,
    PRIMARY KEY (org_id, name)
) STRICT;

-- Where an organisation wants its events posted. The signing secret is encrypted like org_secrets.
CREATE TABLE webhook_endpoints (
    id             BLOB PRIMARY KEY,
    org_id         BLOB NOT NULL REFERENCES organisations (id),
    url            TEXT NOT NULL,
    events         TEXT NOT NULL,               -- JSON array of event types; empty array = all
    key_id         TEXT NOT NULL,
    secret_nonce   BLOB NOT NULL,
    secret_cipher  BLOB NOT NULL,
    created_at     TEXT NOT NULL,
    disabled_at    TEXT,
    UNIQUE (org_id, id)
) STRICT;

-- The durable delivery queue and its log: one row per (endpoint, event), delivered at most once by the
-- queue's own bookkeeping and at least once by its retries; receivers dedupe on event_id.
CREATE TABLE webhook_deliveries (
    id               BLOB PRIMARY KEY,
    org_id           BLOB NOT NULL REFERENCES organisations (id),
    endpoint_id      BLOB NOT NULL,
    event_id         TEXT NOT NULL,             -- the idempotency key receivers see
    event_type       TEXT NOT NULL,
    payload          TEXT NOT NULL,             -- the JSON body, exactly as signed
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL,
    next_attempt_at  TEXT NOT NULL,
    last_status      INTEGER,
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    delivered_at     TEXT,
    UNIQUE (org_id, id),
    UNIQUE (endpoint_id, event_id),
    FOREIGN KEY (org_id, endpoint_id) REFERENCES webhook_endpoints (org_id, id)
) STRICT;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_org ON webhook_deliveries (org_id, endpoint_id, created_at DESC);

-- Days a call's recording is kept; NULL keeps it forever. The cleanup job deletes older files and rows.
ALTER TABLE organisations ADD COLUMN recording_retention_days INTEGER CHECK (recording_retention_days > 0);
