-- Voxanne call metadata, Postgres. Mirrors migrations/sqlite/0001_initial.sql table for table.
-- Every tenant row carries org_id NOT NULL with a foreign key; child rows reference their parent through
-- (org_id, parent_key), so a row can never point at another organisation's call, assistant or contact.

CREATE TABLE organisations (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE assistants (
    id              UUID PRIMARY KEY,
    org_id          UUID NOT NULL REFERENCES organisations (id),
    name            TEXT NOT NULL,
    greeting        TEXT NOT NULL,
    voice           TEXT NOT NULL,
    transfer_number TEXT,
    -- brain/engine settings (model, prompt, STT/TTS engines...), owned by the agent crate
    settings        JSONB NOT NULL DEFAULT '{}'::jsonb,
    knowledge_base  TEXT NOT NULL DEFAULT '',
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (org_id, id)
);

CREATE TABLE phone_numbers (
    e164         TEXT PRIMARY KEY,
    org_id       UUID NOT NULL REFERENCES organisations (id),
    assistant_id UUID NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    FOREIGN KEY (org_id, assistant_id) REFERENCES assistants (org_id, id)
);
CREATE INDEX phone_numbers_org ON phone_numbers (org_id);

CREATE TABLE calls (
    sid          TEXT PRIMARY KEY,              -- Twilio CallSid
    org_id       UUID NOT NULL REFERENCES organisations (id),
    assistant_id UUID,
    from_number  TEXT NOT NULL DEFAULT '',
    to_number    TEXT NOT NULL DEFAULT '',
    direction    TEXT NOT NULL DEFAULT '',
    status       TEXT NOT NULL,
    -- status order: 0 unknown, 1 queued, 2 initiated, 3 ringing, 4 in-progress, 5 terminal; never decreases
    status_rank  INTEGER NOT NULL,
    status_at    TIMESTAMPTZ,
    started_at   TIMESTAMPTZ NOT NULL,
    ended_at     TIMESTAMPTZ,
    end_reason   TEXT,
    duration_ms  BIGINT,
    -- true while only later writes (status, turns, events) have arrived; CallStarted fills the row in
    placeholder  BOOLEAN NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    UNIQUE (org_id, sid),
    FOREIGN KEY (org_id, assistant_id) REFERENCES assistants (org_id, id)
);
-- dashboard: newest calls of an org, and newest calls of an org with a status (keyset paging on started_at)
CREATE INDEX calls_org_started ON calls (org_id, started_at DESC, sid DESC);
CREATE INDEX calls_org_status_started ON calls (org_id, status, started_at DESC, sid DESC);

CREATE TABLE turns (
    call_sid              TEXT NOT NULL,
    seq                   INTEGER NOT NULL,
    org_id                UUID NOT NULL REFERENCES organisations (id),
    role                  TEXT NOT NULL,
    text                  TEXT NOT NULL,
    heard_text            TEXT,
    interrupted           BOOLEAN NOT NULL,
    start_ms              BIGINT NOT NULL,
    end_ms                BIGINT NOT NULL,
    endpointing_ms        BIGINT,
    stt_ms                BIGINT,
    brain_first_token_ms  BIGINT,
    tts_first_audio_ms    BIGINT,
    voice_to_voice_ms     BIGINT,
    created_at            TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (call_sid, seq),
    FOREIGN KEY (org_id, call_sid) REFERENCES calls (org_id, sid) ON DELETE CASCADE
);
CREATE INDEX turns_org ON turns (org_id);

CREATE TABLE call_events (
    call_sid    TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    org_id      UUID NOT NULL REFERENCES organisations (id),
    at_ms       BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    detail      JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (call_sid, seq),
    FOREIGN KEY (org_id, call_sid) REFERENCES calls (org_id, sid) ON DELETE CASCADE
);
CREATE INDEX call_events_org_kind ON call_events (org_id, kind);

CREATE TABLE recordings (
    call_sid     TEXT PRIMARY KEY,
    org_id       UUID NOT NULL REFERENCES organisations (id),
    location     TEXT NOT NULL,
    channels     INTEGER NOT NULL,
    sample_rate  INTEGER NOT NULL,
    duration_ms  BIGINT NOT NULL,
    sha256       TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    FOREIGN KEY (org_id, call_sid) REFERENCES calls (org_id, sid) ON DELETE CASCADE
);
CREATE INDEX recordings_org ON recordings (org_id);

CREATE TABLE contacts (
    org_id      UUID NOT NULL REFERENCES organisations (id),
    phone       TEXT NOT NULL,
    name        TEXT,
    email       TEXT,
    notes       TEXT,
    -- last-writer-wins clock; the epoch for a placeholder made by an appointment
    updated_at  TIMESTAMPTZ NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (org_id, phone)
);

CREATE TABLE appointments (
    id             UUID PRIMARY KEY,
    org_id         UUID NOT NULL REFERENCES organisations (id),
    call_sid       TEXT,
    contact_phone  TEXT,
    starts_at      TIMESTAMPTZ NOT NULL,
    duration_min   INTEGER NOT NULL,
    reason         TEXT NOT NULL,
    status         TEXT NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    UNIQUE (org_id, id),
    FOREIGN KEY (org_id, call_sid) REFERENCES calls (org_id, sid),
    FOREIGN KEY (org_id, contact_phone) REFERENCES contacts (org_id, phone)
);
CREATE INDEX appointments_org_starts ON appointments (org_id, starts_at);
