// The SQL, written once and compiled for each backend: `store.rs` includes this file in a module that defines
// `type Db = sqlx::Sqlite` or `type Db = sqlx::Postgres`. Only syntax both databases accept goes here.

use std::collections::HashSet;

use sqlx::error::ErrorKind;

#[allow(unused_imports)]
use super::*;
use crate::time::DbTime;

type DbPool = sqlx::Pool<Db>;
type Conn = <Db as sqlx::Database>::Connection;

/// `sqlx::Error` for a constraint of `kind`?
fn is_violation(e: &sqlx::Error, kind: ErrorKind) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.kind() == kind)
}

pub(super) async fn health(pool: &DbPool) -> Result<(), StoreError> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

pub(super) async fn schema_version(pool: &DbPool) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await?)
}

pub(super) async fn ensure_default_org(
    pool: &DbPool,
    a: &NewAssistant,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO organisations (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
    )
    .bind(DEFAULT_ORG_ID)
    .bind("Default organisation")
    .bind(DbTime(now))
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO assistants (id, org_id, name, greeting, voice, transfer_number, settings, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (id) DO NOTHING",
    )
    .bind(DEFAULT_ASSISTANT_ID)
    .bind(DEFAULT_ORG_ID)
    .bind(&a.name)
    .bind(&a.greeting)
    .bind(&a.voice)
    .bind(&a.transfer_number)
    .bind(&a.settings)
    .bind(DbTime(now))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn create_org(pool: &DbPool, id: OrgId, name: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO organisations (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(name)
        .bind(DbTime(now))
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn create_assistant(
    pool: &DbPool,
    org: OrgId,
    id: AssistantId,
    a: &NewAssistant,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let res = sqlx::query(
        "INSERT INTO assistants (id, org_id, name, greeting, voice, transfer_number, settings, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
    )
    .bind(id)
    .bind(org)
    .bind(&a.name)
    .bind(&a.greeting)
    .bind(&a.voice)
    .bind(&a.transfer_number)
    .bind(&a.settings)
    .bind(DbTime(now))
    .execute(pool)
    .await;
    match res {
        Ok(_) => Ok(()),
        Err(e) if is_violation(&e, ErrorKind::ForeignKeyViolation) => Err(StoreError::NotFound("organisation")),
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn assign_number(
    pool: &DbPool,
    org: OrgId,
    assistant: AssistantId,
    e164: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    // The composite foreign key (org_id, assistant_id) -> assistants rejects another org's assistant.
    let res = sqlx::query(
        "INSERT INTO phone_numbers (e164, org_id, assistant_id, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (e164) DO UPDATE SET org_id = excluded.org_id, assistant_id = excluded.assistant_id",
    )
    .bind(e164)
    .bind(org)
    .bind(assistant)
    .bind(DbTime(now))
    .execute(pool)
    .await;
    match res {
        Ok(_) => Ok(()),
        Err(e) if is_violation(&e, ErrorKind::ForeignKeyViolation) => Err(StoreError::NotFound("assistant")),
        Err(e) => Err(e.into()),
    }
}

// The routing table (like `resolve_number`, a tenant lookup): which org answers each number.
pub(super) async fn list_numbers(
    pool: &DbPool,
) -> Result<Vec<(String, OrgId, AssistantId)>, StoreError> {
    Ok(sqlx::query_as("SELECT e164, org_id, assistant_id FROM phone_numbers ORDER BY e164")
        .fetch_all(pool)
        .await?)
}

pub(super) async fn resolve_number(
    pool: &DbPool,
    e164: &str,
) -> Result<Option<(OrgId, AssistantId)>, StoreError> {
    Ok(sqlx::query_as("SELECT org_id, assistant_id FROM phone_numbers WHERE e164 = $1")
        .bind(e164)
        .fetch_optional(pool)
        .await?)
}

#[derive(sqlx::FromRow)]
struct AssistantRow {
    id: AssistantId,
    org_id: OrgId,
    name: String,
    greeting: String,
    voice: String,
    transfer_number: Option<String>,
    settings: serde_json::Value,
}

pub(super) async fn get_assistant(
    pool: &DbPool,
    org: OrgId,
    id: AssistantId,
) -> Result<Option<Assistant>, StoreError> {
    let row: Option<AssistantRow> = sqlx::query_as(
        "SELECT id, org_id, name, greeting, voice, transfer_number, settings FROM assistants \
         WHERE org_id = $1 AND id = $2",
    )
    .bind(org)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| Assistant {
        id: r.id,
        org: r.org_id,
        name: r.name,
        greeting: r.greeting,
        voice: r.voice,
        transfer_number: r.transfer_number,
        settings: r.settings,
    }))
}

pub(super) async fn knowledge_base(
    pool: &DbPool,
    org: OrgId,
    id: AssistantId,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT knowledge_base FROM assistants WHERE org_id = $1 AND id = $2")
        .bind(org)
        .bind(id)
        .fetch_optional(pool)
        .await?)
}

pub(super) async fn set_knowledge_base(
    pool: &DbPool,
    org: OrgId,
    id: AssistantId,
    text: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let res = sqlx::query("UPDATE assistants SET knowledge_base = $3, updated_at = $4 WHERE org_id = $1 AND id = $2")
        .bind(org)
        .bind(id)
        .bind(text)
        .bind(DbTime(now))
        .execute(pool)
        .await?;
    if res.rows_affected() == 0 {
        return Err(StoreError::NotFound("assistant"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Writes

pub(super) async fn apply_batch(pool: &DbPool, ops: &[WriteOp], now: DateTime<Utc>) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    // Calls this transaction already made sure exist, so a batch of 50 turns of one call costs one upsert.
    let mut known: HashSet<&str> = HashSet::new();
    for op in ops {
        apply_one(&mut tx, op, now, &mut known).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Makes sure a row for `sid` exists, inserting a placeholder (status `unknown`, `placeholder = true`) if the
/// call's `CallStarted` has not landed yet. Does not check the org of an existing row: the caller's own
/// statement does (a `WHERE org_id` or the composite foreign key).
async fn ensure_call<'a>(
    conn: &mut Conn,
    known: &mut HashSet<&'a str>,
    org: OrgId,
    sid: &'a CallSid,
    started_guess: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if known.contains(sid.as_str()) {
        return Ok(());
    }
    let res = sqlx::query(
        "INSERT INTO calls (sid, org_id, status, status_rank, started_at, placeholder, created_at, updated_at) \
         VALUES ($1, $2, 'unknown', 0, $3, TRUE, $4, $4) ON CONFLICT (sid) DO NOTHING",
    )
    .bind(sid)
    .bind(org)
    .bind(DbTime(started_guess))
    .bind(DbTime(now))
    .execute(&mut *conn)
    .await;
    match res {
        Ok(_) => {}
        Err(e) if is_violation(&e, ErrorKind::ForeignKeyViolation) => return Err(StoreError::NotFound("organisation")),
        Err(e) => return Err(e.into()),
    }
    known.insert(sid.as_str());
    Ok(())
}

/// Called when a write changed nothing: a replay is fine, a call owned by another org is an error.
async fn check_call_org(conn: &mut Conn, org: OrgId, sid: &CallSid) -> Result<(), StoreError> {
    let owner: Option<OrgId> = sqlx::query_scalar("SELECT org_id FROM calls WHERE sid = $1")
        .bind(sid)
        .fetch_optional(&mut *conn)
        .await?;
    match owner {
        Some(o) if o != org => Err(StoreError::OrgMismatch { sid: sid.clone() }),
        _ => Ok(()),
    }
}

/// Maps the composite foreign key (org_id, call_sid) -> calls failing to `OrgMismatch`.
fn child_insert_error(e: sqlx::Error, sid: &CallSid) -> StoreError {
    if is_violation(&e, ErrorKind::ForeignKeyViolation) {
        StoreError::OrgMismatch { sid: sid.clone() }
    } else {
        e.into()
    }
}

async fn apply_one<'a>(
    conn: &mut Conn,
    op: &'a WriteOp,
    now: DateTime<Utc>,
    known: &mut HashSet<&'a str>,
) -> Result<(), StoreError> {
    match op {
        WriteOp::CallStarted { org, assistant, sid, from, to, direction, started_at } => {
            // Insert, or fill in a placeholder. A non-placeholder row is left alone (replay); the status moves
            // forward to in-progress at most.
            let res = sqlx::query(
                "INSERT INTO calls (sid, org_id, assistant_id, from_number, to_number, direction, status, \
                 status_rank, status_at, started_at, placeholder, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'in-progress', $8, $7, $7, FALSE, $9, $9) \
                 ON CONFLICT (sid) DO UPDATE SET \
                   assistant_id = excluded.assistant_id, from_number = excluded.from_number, \
                   to_number = excluded.to_number, direction = excluded.direction, \
                   started_at = excluded.started_at, \
                   status = CASE WHEN calls.status_rank < excluded.status_rank THEN excluded.status ELSE calls.status END, \
                   status_at = CASE WHEN calls.status_rank < excluded.status_rank THEN excluded.status_at ELSE calls.status_at END, \
                   status_rank = CASE WHEN calls.status_rank < excluded.status_rank THEN excluded.status_rank ELSE calls.status_rank END, \
                   placeholder = FALSE, updated_at = excluded.updated_at \
                 WHERE calls.placeholder AND calls.org_id = excluded.org_id",
            )
            .bind(sid)
            .bind(*org)
            .bind(*assistant)
            .bind(from)
            .bind(to)
            .bind(direction)
            .bind(DbTime(*started_at))
            .bind(RANK_IN_PROGRESS)
            .bind(DbTime(now))
            .execute(&mut *conn)
            .await;
            let res = match res {
                Ok(r) => r,
                Err(e) if is_violation(&e, ErrorKind::ForeignKeyViolation) => {
                    return Err(StoreError::NotFound(if assistant.is_some() { "organisation or assistant" } else { "organisation" }));
                }
                Err(e) => return Err(e.into()),
            };
            if res.rows_affected() == 0 {
                check_call_org(conn, *org, sid).await?;
            }
            known.insert(sid.as_str());
        }
        WriteOp::CallStatus { org, sid, status, at } => {
            // Status moves forward only. While the row is a placeholder its started_at is the earliest time
            // seen, so the result does not depend on arrival order.
            let res = sqlx::query(
                "INSERT INTO calls (sid, org_id, status, status_rank, status_at, started_at, placeholder, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5, TRUE, $6, $6) \
                 ON CONFLICT (sid) DO UPDATE SET \
                   status = CASE WHEN calls.status_rank < excluded.status_rank THEN excluded.status ELSE calls.status END, \
                   status_at = CASE WHEN calls.status_rank < excluded.status_rank THEN excluded.status_at ELSE calls.status_at END, \
                   status_rank = CASE WHEN calls.status_rank < excluded.status_rank THEN excluded.status_rank ELSE calls.status_rank END, \
                   started_at = CASE WHEN calls.placeholder AND excluded.started_at < calls.started_at \
                                THEN excluded.started_at ELSE calls.started_at END, \
                   updated_at = excluded.updated_at \
                 WHERE calls.org_id = excluded.org_id AND (calls.status_rank < excluded.status_rank \
                   OR (calls.placeholder AND excluded.started_at < calls.started_at))",
            )
            .bind(sid)
            .bind(*org)
            .bind(status)
            .bind(status_rank(status))
            .bind(DbTime(*at))
            .bind(DbTime(now))
            .execute(&mut *conn)
            .await;
            let res = match res {
                Ok(r) => r,
                Err(e) if is_violation(&e, ErrorKind::ForeignKeyViolation) => return Err(StoreError::NotFound("organisation")),
                Err(e) => return Err(e.into()),
            };
            if res.rows_affected() == 0 {
                check_call_org(conn, *org, sid).await?;
            }
            known.insert(sid.as_str());
        }
        WriteOp::CallEnded { org, sid, ended_at, end_reason, duration_ms } => {
            let started_guess = *ended_at - chrono::Duration::milliseconds(*duration_ms);
            ensure_call(conn, known, *org, sid, started_guess, now).await?;
            let res = sqlx::query(
                "UPDATE calls SET ended_at = $3, end_reason = $4, duration_ms = $5, \
                   status = CASE WHEN status_rank < $6 THEN 'completed' ELSE status END, \
                   status_at = CASE WHEN status_rank < $6 THEN $3 ELSE status_at END, \
                   status_rank = CASE WHEN status_rank < $6 THEN $6 ELSE status_rank END, \
                   updated_at = $7 \
                 WHERE sid = $1 AND org_id = $2 AND ended_at IS NULL",
            )
            .bind(sid)
            .bind(*org)
            .bind(DbTime(*ended_at))
            .bind(end_reason)
            .bind(*duration_ms)
            .bind(RANK_TERMINAL)
            .bind(DbTime(now))
            .execute(&mut *conn)
            .await?;
            if res.rows_affected() == 0 {
                check_call_org(conn, *org, sid).await?;
            }
        }
        WriteOp::Turn(t) => {
            ensure_call(conn, known, t.org, &t.sid, now, now).await?;
            let res = sqlx::query(
                "INSERT INTO turns (call_sid, seq, org_id, role, text, heard_text, interrupted, start_ms, end_ms, \
                 endpointing_ms, stt_ms, brain_first_token_ms, tts_first_audio_ms, voice_to_voice_ms, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
                 ON CONFLICT (call_sid, seq) DO NOTHING",
            )
            .bind(&t.sid)
            .bind(t.seq)
            .bind(t.org)
            .bind(&t.role)
            .bind(&t.text)
            .bind(&t.heard_text)
            .bind(t.interrupted)
            .bind(t.start_ms)
            .bind(t.end_ms)
            .bind(t.latency.endpointing_ms)
            .bind(t.latency.stt_ms)
            .bind(t.latency.brain_first_token_ms)
            .bind(t.latency.tts_first_audio_ms)
            .bind(t.latency.voice_to_voice_ms)
            .bind(DbTime(now))
            .execute(&mut *conn)
            .await
            .map_err(|e| child_insert_error(e, &t.sid))?;
            if res.rows_affected() == 0 {
                check_call_org(conn, t.org, &t.sid).await?;
            }
        }
        WriteOp::Event(ev) => {
            ensure_call(conn, known, ev.org, &ev.sid, now, now).await?;
            let res = sqlx::query(
                "INSERT INTO call_events (call_sid, seq, org_id, at_ms, kind, detail, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (call_sid, seq) DO NOTHING",
            )
            .bind(&ev.sid)
            .bind(ev.seq)
            .bind(ev.org)
            .bind(ev.at_ms)
            .bind(&ev.kind)
            .bind(&ev.detail)
            .bind(DbTime(now))
            .execute(&mut *conn)
            .await
            .map_err(|e| child_insert_error(e, &ev.sid))?;
            if res.rows_affected() == 0 {
                check_call_org(conn, ev.org, &ev.sid).await?;
            }
        }
        WriteOp::Recording(r) => {
            ensure_call(conn, known, r.org, &r.sid, now, now).await?;
            let res = sqlx::query(
                "INSERT INTO recordings (call_sid, org_id, location, channels, sample_rate, duration_ms, sha256, \
                 created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (call_sid) DO NOTHING",
            )
            .bind(&r.sid)
            .bind(r.org)
            .bind(&r.location)
            .bind(r.channels)
            .bind(r.sample_rate)
            .bind(r.duration_ms)
            .bind(&r.sha256)
            .bind(DbTime(now))
            .execute(&mut *conn)
            .await
            .map_err(|e| child_insert_error(e, &r.sid))?;
            if res.rows_affected() == 0 {
                check_call_org(conn, r.org, &r.sid).await?;
            }
        }
        WriteOp::Contact(c) => {
            let res = sqlx::query(
                "INSERT INTO contacts (org_id, phone, name, email, notes, updated_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (org_id, phone) DO UPDATE SET name = excluded.name, email = excluded.email, \
                   notes = excluded.notes, updated_at = excluded.updated_at \
                 WHERE contacts.updated_at < excluded.updated_at",
            )
            .bind(c.org)
            .bind(&c.phone)
            .bind(&c.name)
            .bind(&c.email)
            .bind(&c.notes)
            .bind(DbTime(c.updated_at))
            .bind(DbTime(now))
            .execute(&mut *conn)
            .await;
            match res {
                Ok(_) => {}
                Err(e) if is_violation(&e, ErrorKind::ForeignKeyViolation) => return Err(StoreError::NotFound("organisation")),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Queries. Every one filters on org_id first: isolation is in the SQL, not in the callers.

#[derive(sqlx::FromRow)]
struct CallRow {
    org_id: OrgId,
    sid: CallSid,
    assistant_id: Option<AssistantId>,
    from_number: String,
    to_number: String,
    direction: String,
    status: String,
    started_at: DbTime,
    ended_at: Option<DbTime>,
    end_reason: Option<String>,
    duration_ms: Option<i64>,
}

impl From<CallRow> for CallSummary {
    fn from(r: CallRow) -> Self {
        CallSummary {
            org: r.org_id,
            sid: r.sid,
            assistant: r.assistant_id,
            from: r.from_number,
            to: r.to_number,
            direction: r.direction,
            status: r.status,
            started_at: r.started_at.0,
            ended_at: r.ended_at.map(|t| t.0),
            end_reason: r.end_reason,
            duration_ms: r.duration_ms,
        }
    }
}

// One statement per filter combination (rather than `$2 IS NULL OR ...`) so each has a plan that walks the
// matching index in order and stops after `limit` rows.
const LIST_CALLS: &str = "SELECT org_id, sid, assistant_id, from_number, to_number, direction, status, started_at, \
    ended_at, end_reason, duration_ms FROM calls WHERE org_id = $1 \
    ORDER BY started_at DESC, sid DESC LIMIT $2";
const LIST_CALLS_BEFORE: &str = "SELECT org_id, sid, assistant_id, from_number, to_number, direction, status, \
    started_at, ended_at, end_reason, duration_ms FROM calls WHERE org_id = $1 AND started_at < $3 \
    ORDER BY started_at DESC, sid DESC LIMIT $2";
const LIST_CALLS_STATUS: &str = "SELECT org_id, sid, assistant_id, from_number, to_number, direction, status, \
    started_at, ended_at, end_reason, duration_ms FROM calls WHERE org_id = $1 AND status = $3 \
    ORDER BY started_at DESC, sid DESC LIMIT $2";
const LIST_CALLS_STATUS_BEFORE: &str = "SELECT org_id, sid, assistant_id, from_number, to_number, direction, \
    status, started_at, ended_at, end_reason, duration_ms FROM calls WHERE org_id = $1 AND status = $3 \
    AND started_at < $4 ORDER BY started_at DESC, sid DESC LIMIT $2";

pub(super) async fn list_calls(
    pool: &DbPool,
    org: OrgId,
    status: Option<&str>,
    before: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<CallSummary>, StoreError> {
    let rows: Vec<CallRow> = match (status, before) {
        (None, None) => sqlx::query_as(LIST_CALLS).bind(org).bind(limit).fetch_all(pool).await?,
        (None, Some(b)) => {
            sqlx::query_as(LIST_CALLS_BEFORE).bind(org).bind(limit).bind(DbTime(b)).fetch_all(pool).await?
        }
        (Some(s), None) => sqlx::query_as(LIST_CALLS_STATUS).bind(org).bind(limit).bind(s).fetch_all(pool).await?,
        (Some(s), Some(b)) => {
            sqlx::query_as(LIST_CALLS_STATUS_BEFORE)
                .bind(org)
                .bind(limit)
                .bind(s)
                .bind(DbTime(b))
                .fetch_all(pool)
                .await?
        }
    };
    Ok(rows.into_iter().map(CallSummary::from).collect())
}

pub(super) async fn count_calls(pool: &DbPool, org: OrgId, status: Option<&str>) -> Result<i64, StoreError> {
    let n: i64 = match status {
        None => sqlx::query_scalar("SELECT COUNT(*) FROM calls WHERE org_id = $1").bind(org).fetch_one(pool).await?,
        Some(s) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM calls WHERE org_id = $1 AND status = $2")
                .bind(org)
                .bind(s)
                .fetch_one(pool)
                .await?
        }
    };
    Ok(n)
}

pub(super) async fn get_call(pool: &DbPool, org: OrgId, sid: &CallSid) -> Result<Option<CallSummary>, StoreError> {
    let row: Option<CallRow> = sqlx::query_as(
        "SELECT org_id, sid, assistant_id, from_number, to_number, direction, status, started_at, ended_at, \
         end_reason, duration_ms FROM calls WHERE org_id = $1 AND sid = $2",
    )
    .bind(org)
    .bind(sid)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(CallSummary::from))
}

#[derive(sqlx::FromRow)]
struct TurnRow {
    org_id: OrgId,
    call_sid: CallSid,
    seq: i32,
    role: String,
    text: String,
    heard_text: Option<String>,
    interrupted: bool,
    start_ms: i64,
    end_ms: i64,
    endpointing_ms: Option<i64>,
    stt_ms: Option<i64>,
    brain_first_token_ms: Option<i64>,
    tts_first_audio_ms: Option<i64>,
    voice_to_voice_ms: Option<i64>,
}

pub(super) async fn list_turns(pool: &DbPool, org: OrgId, sid: &CallSid) -> Result<Vec<TurnRecord>, StoreError> {
    let rows: Vec<TurnRow> = sqlx::query_as(
        "SELECT org_id, call_sid, seq, role, text, heard_text, interrupted, start_ms, end_ms, endpointing_ms, \
         stt_ms, brain_first_token_ms, tts_first_audio_ms, voice_to_voice_ms FROM turns \
         WHERE call_sid = $1 AND org_id = $2 ORDER BY seq",
    )
    .bind(sid)
    .bind(org)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| TurnRecord {
            org: r.org_id,
            sid: r.call_sid,
            seq: r.seq,
            role: r.role,
            text: r.text,
            heard_text: r.heard_text,
            interrupted: r.interrupted,
            start_ms: r.start_ms,
            end_ms: r.end_ms,
            latency: crate::model::TurnLatency {
                endpointing_ms: r.endpointing_ms,
                stt_ms: r.stt_ms,
                brain_first_token_ms: r.brain_first_token_ms,
                tts_first_audio_ms: r.tts_first_audio_ms,
                voice_to_voice_ms: r.voice_to_voice_ms,
            },
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct EventRow {
    org_id: OrgId,
    call_sid: CallSid,
    seq: i32,
    at_ms: i64,
    kind: String,
    detail: serde_json::Value,
}

pub(super) async fn list_events(pool: &DbPool, org: OrgId, sid: &CallSid) -> Result<Vec<EventRecord>, StoreError> {
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT org_id, call_sid, seq, at_ms, kind, detail FROM call_events \
         WHERE call_sid = $1 AND org_id = $2 ORDER BY seq",
    )
    .bind(sid)
    .bind(org)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| EventRecord { org: r.org_id, sid: r.call_sid, seq: r.seq, at_ms: r.at_ms, kind: r.kind, detail: r.detail })
        .collect())
}

#[derive(sqlx::FromRow)]
struct RecordingRow {
    org_id: OrgId,
    call_sid: CallSid,
    location: String,
    channels: i32,
    sample_rate: i32,
    duration_ms: i64,
    sha256: String,
}

pub(super) async fn get_recording(
    pool: &DbPool,
    org: OrgId,
    sid: &CallSid,
) -> Result<Option<RecordingRecord>, StoreError> {
    let row: Option<RecordingRow> = sqlx::query_as(
        "SELECT org_id, call_sid, location, channels, sample_rate, duration_ms, sha256 FROM recordings \
         WHERE call_sid = $1 AND org_id = $2",
    )
    .bind(sid)
    .bind(org)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| RecordingRecord {
        org: r.org_id,
        sid: r.call_sid,
        location: r.location,
        channels: r.channels,
        sample_rate: r.sample_rate,
        duration_ms: r.duration_ms,
        sha256: r.sha256,
    }))
}

#[derive(sqlx::FromRow)]
struct ContactRow {
    org_id: OrgId,
    phone: String,
    name: Option<String>,
    email: Option<String>,
    notes: Option<String>,
    updated_at: DbTime,
}

pub(super) async fn get_contact(pool: &DbPool, org: OrgId, phone: &str) -> Result<Option<ContactRecord>, StoreError> {
    let row: Option<ContactRow> = sqlx::query_as(
        "SELECT org_id, phone, name, email, notes, updated_at FROM contacts WHERE org_id = $1 AND phone = $2",
    )
    .bind(org)
    .bind(phone)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| ContactRecord {
        org: r.org_id,
        phone: r.phone,
        name: r.name,
        email: r.email,
        notes: r.notes,
        updated_at: r.updated_at.0,
    }))
}


// ---------------------------------------------------------------------------------------------------------
// Organisations by slug, clinic config, phone numbers.

pub(super) async fn org_by_slug(pool: &DbPool, slug: &str) -> Result<Option<OrgId>, StoreError> {
    // The tenant lookup itself (like `resolve_number`): it finds the org_id every other query filters on.
    Ok(sqlx::query_scalar("SELECT id FROM organisations WHERE slug = $1").bind(slug).fetch_optional(pool).await?)
}

pub(super) async fn upsert_org(
    pool: &DbPool,
    new_id: OrgId,
    slug: &str,
    name: &str,
    assistant_id: AssistantId,
    a: &NewAssistant,
    now: DateTime<Utc>,
) -> Result<OrgId, StoreError> {
    let mut tx = pool.begin().await?;
    // On Postgres the upsert locks the org row until commit, so two concurrent upserts of one slug run the
    // assistant check below one after the other.
    let org: OrgId = sqlx::query_scalar(
        "INSERT INTO organisations (id, slug, name, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (slug) DO UPDATE SET name = excluded.name RETURNING id",
    )
    .bind(new_id)
    .bind(slug)
    .bind(name)
    .bind(DbTime(now))
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO assistants (id, org_id, name, greeting, voice, transfer_number, settings, created_at, \
         updated_at) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $8 \
         WHERE NOT EXISTS (SELECT 1 FROM assistants WHERE org_id = $2)",
    )
    .bind(assistant_id)
    .bind(org)
    .bind(&a.name)
    .bind(&a.greeting)
    .bind(&a.voice)
    .bind(&a.transfer_number)
    .bind(&a.settings)
    .bind(DbTime(now))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(org)
}

pub(super) async fn org_assistant(pool: &DbPool, org: OrgId) -> Result<Option<AssistantId>, StoreError> {
    Ok(sqlx::query_scalar("SELECT id FROM assistants WHERE org_id = $1 ORDER BY created_at, id LIMIT 1")
        .bind(org)
        .fetch_optional(pool)
        .await?)
}

pub(super) async fn put_clinic(
    pool: &DbPool,
    org: OrgId,
    config: &str,
    sha256: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let res = sqlx::query(
        "INSERT INTO clinics (org_id, config, config_sha256, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
         ON CONFLICT (org_id) DO UPDATE SET config = excluded.config, config_sha256 = excluded.config_sha256, \
           updated_at = excluded.updated_at \
         WHERE clinics.config_sha256 <> excluded.config_sha256",
    )
    .bind(org)
    .bind(config)
    .bind(sha256)
    .bind(DbTime(now))
    .execute(pool)
    .await;
    match res {
        Ok(r) => Ok(r.rows_affected() > 0),
        Err(e) if is_violation(&e, ErrorKind::ForeignKeyViolation) => Err(StoreError::NotFound("organisation")),
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn get_clinic(pool: &DbPool, org: OrgId) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT config FROM clinics WHERE org_id = $1").bind(org).fetch_optional(pool).await?)
}

pub(super) async fn set_org_numbers(
    pool: &DbPool,
    org: OrgId,
    assistant: AssistantId,
    numbers: &[String],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    match set_org_numbers_in(&mut tx, org, assistant, numbers, now).await {
        Ok(()) => tx.commit().await?,
        // Rolled back here, not left to the transaction's drop: a drop only queues the rollback, and
        // on SQLite the refused statement's connection went back to the pool still holding the write
        // lock, so the next writer waited out the busy timeout ("database is locked", 1 run in ~15).
        Err(e) => {
            tx.rollback().await?;
            return Err(e);
        }
    }
    Ok(())
}

async fn set_org_numbers_in(
    tx: &mut Conn,
    org: OrgId,
    assistant: AssistantId,
    numbers: &[String],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    for e164 in numbers {
        // Takes a free number or re-points one of ours; one of another org's is left alone (0 rows), and the
        // whole change is rolled back. The composite foreign key rejects another org's assistant.
        let res = sqlx::query(
            "INSERT INTO phone_numbers (e164, org_id, assistant_id, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (e164) DO UPDATE SET assistant_id = excluded.assistant_id \
             WHERE phone_numbers.org_id = excluded.org_id",
        )
        .bind(e164)
        .bind(org)
        .bind(assistant)
        .bind(DbTime(now))
        .execute(&mut *tx)
        .await;
        match res {
            Ok(r) if r.rows_affected() == 0 => return Err(StoreError::NumberTaken(e164.clone())),
            Ok(_) => {}
            Err(e) if is_violation(&e, ErrorKind::ForeignKeyViolation) => return Err(StoreError::NotFound("assistant")),
            Err(e) => return Err(e.into()),
        }
    }
    let keep: HashSet<&str> = numbers.iter().map(String::as_str).collect();
    let current: Vec<String> = sqlx::query_scalar("SELECT e164 FROM phone_numbers WHERE org_id = $1")
        .bind(org)
        .fetch_all(&mut *tx)
        .await?;
    for e164 in current.iter().filter(|n| !keep.contains(n.as_str())) {
        sqlx::query("DELETE FROM phone_numbers WHERE org_id = $1 AND e164 = $2")
            .bind(org)
            .bind(e164)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Knowledge chunks.

pub(super) async fn knowledge_index(
    pool: &DbPool,
    org: OrgId,
) -> Result<std::collections::HashMap<String, (String, String)>, StoreError> {
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT id, text_sha256, model FROM knowledge_chunks WHERE org_id = $1")
            .bind(org)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(|(id, sha, model)| (id, (sha, model))).collect())
}

pub(super) async fn replace_knowledge(
    pool: &DbPool,
    org: OrgId,
    chunks: &[KnowledgeChunk],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    let keep: HashSet<&str> = chunks.iter().map(|c| c.id.as_str()).collect();
    let current: Vec<String> = sqlx::query_scalar("SELECT id FROM knowledge_chunks WHERE org_id = $1")
        .bind(org)
        .fetch_all(&mut *tx)
        .await?;
    for id in current.iter().filter(|id| !keep.contains(id.as_str())) {
        sqlx::query("DELETE FROM knowledge_chunks WHERE org_id = $1 AND id = $2")
            .bind(org)
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    for c in chunks {
        let dims = i32::try_from(c.embedding.len()).map_err(|_| StoreError::InvalidInput("embedding length"))?;
        let bytes: Vec<u8> = c.embedding.iter().flat_map(|x| x.to_le_bytes()).collect();
        // An unchanged chunk keeps its updated_at.
        let res = sqlx::query(
            "INSERT INTO knowledge_chunks (org_id, id, title, text, text_sha256, model, embedding, dims, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (org_id, id) DO UPDATE SET title = excluded.title, text = excluded.text, \
               text_sha256 = excluded.text_sha256, model = excluded.model, embedding = excluded.embedding, \
               dims = excluded.dims, updated_at = excluded.updated_at \
             WHERE knowledge_chunks.text_sha256 <> excluded.text_sha256 OR knowledge_chunks.title <> excluded.title \
               OR knowledge_chunks.model <> excluded.model OR knowledge_chunks.embedding <> excluded.embedding",
        )
        .bind(org)
        .bind(&c.id)
        .bind(&c.title)
        .bind(&c.text)
        .bind(crate::sha256_hex(c.text.as_bytes()))
        .bind(&c.model)
        .bind(bytes)
        .bind(dims)
        .bind(DbTime(now))
        .execute(&mut *tx)
        .await;
        if let Err(e) = res {
            // Rolled back explicitly, as in `set_org_numbers`: a refused statement's transaction
            // left to its drop can keep SQLite's write lock past the next writer's busy timeout.
            tx.rollback().await?;
            return Err(if is_violation(&e, ErrorKind::ForeignKeyViolation) {
                StoreError::NotFound("organisation")
            } else {
                e.into()
            });
        }
    }
    tx.commit().await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct KnowledgeRow {
    id: String,
    title: String,
    text: String,
    model: String,
    embedding: Vec<u8>,
    dims: i32,
}

pub(super) async fn list_knowledge(pool: &DbPool, org: OrgId) -> Result<Vec<KnowledgeChunk>, StoreError> {
    let rows: Vec<KnowledgeRow> = sqlx::query_as(
        "SELECT id, title, text, model, embedding, dims FROM knowledge_chunks WHERE org_id = $1 ORDER BY id",
    )
    .bind(org)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            // The schema's CHECK keeps length = 4 * dims; a row that breaks it was not written by us.
            if usize::try_from(r.dims).ok().and_then(|d| d.checked_mul(4)) != Some(r.embedding.len()) {
                return Err(StoreError::InvalidInput("stored embedding"));
            }
            let embedding = r
                .embedding
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            Ok(KnowledgeChunk { id: r.id, title: r.title, text: r.text, model: r.model, embedding })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------------
// Appointments, booked synchronously. The no-overlap rule is the database's: an exclusion constraint on
// Postgres, triggers on SQLite (migration 0002). The transactions below check first so that a taken slot is
// an answer (`Conflict`) rather than an error; when a concurrent transaction slips in between the check and
// the insert (Postgres, read committed), the constraint refuses the insert and the outcome is decided again
// from what committed.

/// `SELECT <every AppointmentRow column> FROM appointments <rest>`, as one static string.
macro_rules! select_appointments {
    ($rest:literal) => {
        concat!(
            "SELECT id, org_id, call_sid, contact_phone, patient_name, service, starts_at, ends_at, status, \
             idempotency_key, rescheduled_from, created_at, updated_at FROM appointments ",
            $rest
        )
    };
}

#[derive(sqlx::FromRow)]
struct AppointmentRow {
    id: Uuid,
    org_id: OrgId,
    call_sid: Option<CallSid>,
    contact_phone: Option<String>,
    patient_name: String,
    service: String,
    starts_at: DbTime,
    ends_at: DbTime,
    status: String,
    idempotency_key: Option<String>,
    rescheduled_from: Option<Uuid>,
    created_at: DbTime,
    updated_at: DbTime,
}

impl From<AppointmentRow> for Appointment {
    fn from(r: AppointmentRow) -> Self {
        Appointment {
            org: r.org_id,
            id: r.id,
            call: r.call_sid,
            phone: r.contact_phone,
            patient_name: r.patient_name,
            service: r.service,
            starts_at: r.starts_at.0,
            ends_at: r.ends_at.0,
            status: r.status,
            idempotency_key: r.idempotency_key,
            rescheduled_from: r.rescheduled_from,
            created_at: r.created_at.0,
            updated_at: r.updated_at.0,
        }
    }
}

/// The no-overlap rule refused a write: Postgres' exclusion constraint (SQLSTATE 23P01) or SQLite's trigger
/// (`RAISE(ABORT, 'appointments_no_overlap')`); both carry the rule's name.
fn is_overlap_violation(e: &StoreError) -> bool {
    matches!(e, StoreError::Database(sqlx::Error::Database(db))
        if db.code().as_deref() == Some("23P01")
            || db.constraint() == Some("appointments_no_overlap")
            || db.message().contains("appointments_no_overlap"))
}

/// A concurrent booking won the race for the slot or the idempotency key.
fn is_booking_race(e: &StoreError) -> bool {
    is_overlap_violation(e)
        || matches!(e, StoreError::Database(err) if is_violation(err, ErrorKind::UniqueViolation))
}

async fn appointment_by_id(conn: &mut Conn, org: OrgId, id: Uuid) -> Result<Option<Appointment>, StoreError> {
    let row: Option<AppointmentRow> = sqlx::query_as(select_appointments!("WHERE org_id = $1 AND id = $2"))
    .bind(org)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(Appointment::from))
}

async fn appointment_by_key(conn: &mut Conn, org: OrgId, key: &str) -> Result<Option<Appointment>, StoreError> {
    let row: Option<AppointmentRow> = sqlx::query_as(select_appointments!("WHERE org_id = $1 AND idempotency_key = $2"))
    .bind(org)
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(Appointment::from))
}

/// Does `[starts, ends)` overlap a booked appointment of `org`?
async fn slot_taken(conn: &mut Conn, org: OrgId, starts: DateTime<Utc>, ends: DateTime<Utc>) -> Result<bool, StoreError> {
    let hit: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM appointments WHERE org_id = $1 AND status = 'booked' AND starts_at < $3 AND ends_at > $2 \
         LIMIT 1",
    )
    .bind(org)
    .bind(DbTime(starts))
    .bind(DbTime(ends))
    .fetch_optional(&mut *conn)
    .await?;
    Ok(hit.is_some())
}

struct AppointmentInsert<'a> {
    id: Uuid,
    org: OrgId,
    call: Option<&'a CallSid>,
    phone: Option<&'a str>,
    patient_name: &'a str,
    service: &'a str,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    idempotency_key: &'a str,
    rescheduled_from: Option<Uuid>,
}

async fn insert_appointment(conn: &mut Conn, a: &AppointmentInsert<'_>, now: DateTime<Utc>) -> Result<Appointment, StoreError> {
    let res = sqlx::query(
        "INSERT INTO appointments (id, org_id, call_sid, contact_phone, patient_name, service, starts_at, ends_at, \
         status, idempotency_key, rescheduled_from, updated_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'booked', $9, $10, $11, $11)",
    )
    .bind(a.id)
    .bind(a.org)
    .bind(a.call)
    .bind(a.phone)
    .bind(a.patient_name)
    .bind(a.service)
    .bind(DbTime(a.starts_at))
    .bind(DbTime(a.ends_at))
    .bind(a.idempotency_key)
    .bind(a.rescheduled_from)
    .bind(DbTime(now))
    .execute(&mut *conn)
    .await;
    match res {
        Ok(_) => {}
        // The placeholder was made just before, so a failing (org_id, call_sid) key means another org's call.
        Err(e) if is_violation(&e, ErrorKind::ForeignKeyViolation) => {
            return Err(match a.call {
                Some(sid) => StoreError::OrgMismatch { sid: sid.clone() },
                None => StoreError::NotFound("organisation"),
            });
        }
        Err(e) => return Err(e.into()),
    }
    appointment_by_id(conn, a.org, a.id).await?.ok_or(StoreError::NotFound("appointment"))
}

pub(super) async fn book_appointment(
    pool: &DbPool,
    b: &NewBooking,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<BookOutcome, StoreError> {
    match try_book(pool, b, id, now).await {
        Err(e) if is_booking_race(&e) => {
            let mut conn = pool.acquire().await?;
            Ok(match appointment_by_key(&mut conn, b.org, &b.idempotency_key).await? {
                Some(a) => BookOutcome::AlreadyBooked(a),
                None => BookOutcome::Conflict,
            })
        }
        other => other,
    }
}

async fn try_book(pool: &DbPool, b: &NewBooking, id: Uuid, now: DateTime<Utc>) -> Result<BookOutcome, StoreError> {
    // SQLite: BEGIN IMMEDIATE takes the write lock before the checks, so no other connection (or process)
    // can book between them and the insert. Postgres: a plain transaction; the constraint closes the gap.
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    if let Some(a) = appointment_by_key(&mut tx, b.org, &b.idempotency_key).await? {
        return Ok(BookOutcome::AlreadyBooked(a));
    }
    if slot_taken(&mut tx, b.org, b.starts_at, b.ends_at).await? {
        // Postgres reads committed rows statement by statement: a concurrent request with the same
        // key may have committed between the key check and this one, and taken the slot itself.
        // Look again, so a retried request gets its own booking back, not a conflict.
        return Ok(match appointment_by_key(&mut tx, b.org, &b.idempotency_key).await? {
            Some(a) => BookOutcome::AlreadyBooked(a),
            None => BookOutcome::Conflict,
        });
    }
    if let Some(sid) = &b.call_sid {
        // The call row may not have landed yet (it comes through the write queue): a placeholder, as the
        // queue's own writes make; CallStarted fills it in later.
        let mut known = HashSet::new();
        ensure_call(&mut tx, &mut known, b.org, sid, now, now).await?;
    }
    let phone = (!b.phone.is_empty()).then_some(b.phone.as_str());
    if let Some(phone) = phone {
        upsert_contact_name(&mut tx, b.org, phone, &b.name, now).await?;
    }
    let a = insert_appointment(
        &mut tx,
        &AppointmentInsert {
            id,
            org: b.org,
            call: b.call_sid.as_ref(),
            phone,
            patient_name: &b.name,
            service: &b.service,
            starts_at: b.starts_at,
            ends_at: b.ends_at,
            idempotency_key: &b.idempotency_key,
            rescheduled_from: None,
        },
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(BookOutcome::Booked(a))
}

/// Creates the contact, or sets its name (an empty name keeps the stored one). Uses the contacts'
/// last-writer-wins clock like `WriteOp::Contact`, with `now` as this write's time.
async fn upsert_contact_name(conn: &mut Conn, org: OrgId, phone: &str, name: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
    let name = (!name.is_empty()).then_some(name);
    let res = sqlx::query(
        "INSERT INTO contacts (org_id, phone, name, updated_at, created_at) VALUES ($1, $2, $3, $4, $4) \
         ON CONFLICT (org_id, phone) DO UPDATE SET name = COALESCE(excluded.name, contacts.name), \
           updated_at = excluded.updated_at \
         WHERE contacts.updated_at < excluded.updated_at",
    )
    .bind(org)
    .bind(phone)
    .bind(name)
    .bind(DbTime(now))
    .execute(&mut *conn)
    .await;
    match res {
        Ok(_) => Ok(()),
        Err(e) if is_violation(&e, ErrorKind::ForeignKeyViolation) => Err(StoreError::NotFound("organisation")),
        Err(e) => Err(e.into()),
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn reschedule_appointment(
    pool: &DbPool,
    org: OrgId,
    old_id: Uuid,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    key: &str,
    new_id: Uuid,
    now: DateTime<Utc>,
) -> Result<BookOutcome, StoreError> {
    match try_reschedule(pool, org, old_id, starts_at, ends_at, key, new_id, now).await {
        Err(e) if is_booking_race(&e) => {
            let mut conn = pool.acquire().await?;
            Ok(match appointment_by_key(&mut conn, org, key).await? {
                Some(a) => BookOutcome::AlreadyBooked(a),
                None => BookOutcome::Conflict,
            })
        }
        other => other,
    }
}

#[allow(clippy::too_many_arguments)]
async fn try_reschedule(
    pool: &DbPool,
    org: OrgId,
    old_id: Uuid,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    key: &str,
    new_id: Uuid,
    now: DateTime<Utc>,
) -> Result<BookOutcome, StoreError> {
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    if let Some(a) = appointment_by_key(&mut tx, org, key).await? {
        return Ok(BookOutcome::AlreadyBooked(a));
    }
    let old = appointment_by_id(&mut tx, org, old_id).await?.ok_or(StoreError::NotFound("appointment"))?;
    // Cancel first, so the old slot does not conflict with the new one. `status = 'booked'` in the WHERE (not
    // only the check above) makes two concurrent moves of one appointment serialise on its row: the second
    // finds it cancelled.
    let res = sqlx::query(
        "UPDATE appointments SET status = 'cancelled', updated_at = $3 WHERE org_id = $1 AND id = $2 AND status = 'booked'",
    )
    .bind(org)
    .bind(old_id)
    .bind(DbTime(now))
    .execute(&mut *tx)
    .await?;
    if res.rows_affected() == 0 {
        return Err(StoreError::NotFound("booked appointment"));
    }
    if slot_taken(&mut tx, org, starts_at, ends_at).await? {
        // Dropping the transaction rolls the cancellation back. A concurrent request with the
        // same key may have committed since the key check: it gets its result back.
        return Ok(match appointment_by_key(&mut tx, org, key).await? {
            Some(a) => BookOutcome::AlreadyBooked(a),
            None => BookOutcome::Conflict,
        });
    }
    let a = insert_appointment(
        &mut tx,
        &AppointmentInsert {
            id: new_id,
            org,
            call: old.call.as_ref(),
            phone: old.phone.as_deref(),
            patient_name: &old.patient_name,
            service: &old.service,
            starts_at,
            ends_at,
            idempotency_key: key,
            rescheduled_from: Some(old.id),
        },
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(BookOutcome::Booked(a))
}

pub(super) async fn cancel_appointment(
    pool: &DbPool,
    org: OrgId,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<Appointment>, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE appointments SET status = 'cancelled', updated_at = $3 WHERE org_id = $1 AND id = $2 AND status = 'booked'",
    )
    .bind(org)
    .bind(id)
    .bind(DbTime(now))
    .execute(&mut *tx)
    .await?;
    let a = appointment_by_id(&mut tx, org, id).await?;
    tx.commit().await?;
    Ok(a)
}

pub(super) async fn get_appointment(pool: &DbPool, org: OrgId, id: Uuid) -> Result<Option<Appointment>, StoreError> {
    let mut conn = pool.acquire().await?;
    appointment_by_id(&mut conn, org, id).await
}

pub(super) async fn busy_intervals(
    pool: &DbPool,
    org: OrgId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, DateTime<Utc>)>, StoreError> {
    let rows: Vec<(DbTime, DbTime)> = sqlx::query_as(
        "SELECT starts_at, ends_at FROM appointments WHERE org_id = $1 AND status = 'booked' \
         AND starts_at < $3 AND ends_at > $2 ORDER BY starts_at",
    )
    .bind(org)
    .bind(DbTime(from))
    .bind(DbTime(to))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(s, e)| (s.0, e.0)).collect())
}

pub(super) async fn upcoming_appointments(
    pool: &DbPool,
    org: OrgId,
    phone: &str,
    from: DateTime<Utc>,
) -> Result<Vec<Appointment>, StoreError> {
    let rows: Vec<AppointmentRow> = sqlx::query_as(select_appointments!("WHERE org_id = $1 AND contact_phone = $2 \
         AND status = 'booked' AND starts_at >= $3 ORDER BY starts_at, id"))
    .bind(org)
    .bind(phone)
    .bind(DbTime(from))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Appointment::from).collect())
}

pub(super) async fn list_appointments(
    pool: &DbPool,
    org: OrgId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Appointment>, StoreError> {
    let rows: Vec<AppointmentRow> = sqlx::query_as(select_appointments!("WHERE org_id = $1 AND starts_at >= $2 AND starts_at < $3 \
         ORDER BY starts_at, id"))
    .bind(org)
    .bind(DbTime(from))
    .bind(DbTime(to))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Appointment::from).collect())
}

// ---------------------------------------------------------------------------------------------------------
// Callback requests.

/// `SELECT <every CallbackRow column> FROM callback_requests <rest>`, as one static string.
macro_rules! select_callbacks {
    ($rest:literal) => {
        concat!(
            "SELECT id, org_id, call_sid, name, phone, reason, urgent, status, idempotency_key, created_at, \
             updated_at FROM callback_requests ",
            $rest
        )
    };
}

#[derive(sqlx::FromRow)]
struct CallbackRow {
    id: Uuid,
    org_id: OrgId,
    call_sid: Option<CallSid>,
    name: String,
    phone: String,
    reason: String,
    urgent: bool,
    status: String,
    idempotency_key: String,
    created_at: DbTime,
    updated_at: DbTime,
}

impl From<CallbackRow> for CallbackRequest {
    fn from(r: CallbackRow) -> Self {
        CallbackRequest {
            org: r.org_id,
            id: r.id,
            call: r.call_sid,
            name: r.name,
            phone: r.phone,
            reason: r.reason,
            urgent: r.urgent,
            status: r.status,
            idempotency_key: r.idempotency_key,
            created_at: r.created_at.0,
            updated_at: r.updated_at.0,
        }
    }
}

pub(super) async fn take_message(
    pool: &DbPool,
    m: &NewCallback,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<CallbackRequest, StoreError> {
    let mut tx = pool.begin().await?;
    if let Some(sid) = &m.call_sid {
        let mut known = HashSet::new();
        ensure_call(&mut tx, &mut known, m.org, sid, now, now).await?;
    }
    let res = sqlx::query(
        "INSERT INTO callback_requests (id, org_id, call_sid, name, phone, reason, urgent, status, idempotency_key, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'open', $8, $9, $9) \
         ON CONFLICT (org_id, idempotency_key) DO NOTHING",
    )
    .bind(id)
    .bind(m.org)
    .bind(&m.call_sid)
    .bind(&m.name)
    .bind(&m.phone)
    .bind(&m.reason)
    .bind(m.urgent)
    .bind(&m.idempotency_key)
    .bind(DbTime(now))
    .execute(&mut *tx)
    .await;
    if let Err(e) = res {
        // Rolled back explicitly, as in `set_org_numbers`.
        tx.rollback().await?;
        return Err(if is_violation(&e, ErrorKind::ForeignKeyViolation) {
            match &m.call_sid {
                Some(sid) => StoreError::OrgMismatch { sid: sid.clone() },
                None => StoreError::NotFound("organisation"),
            }
        } else {
            e.into()
        });
    }
    let row: CallbackRow = sqlx::query_as(select_callbacks!("WHERE org_id = $1 AND idempotency_key = $2"))
    .bind(m.org)
    .bind(&m.idempotency_key)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.into())
}

pub(super) async fn list_callbacks(
    pool: &DbPool,
    org: OrgId,
    open_only: bool,
) -> Result<Vec<CallbackRequest>, StoreError> {
    let sql = if open_only {
        select_callbacks!("WHERE org_id = $1 AND status = 'open' ORDER BY urgent DESC, created_at, id")
    } else {
        select_callbacks!("WHERE org_id = $1 ORDER BY urgent DESC, created_at, id")
    };
    let rows: Vec<CallbackRow> = sqlx::query_as(sql).bind(org).fetch_all(pool).await?;
    Ok(rows.into_iter().map(CallbackRequest::from).collect())
}

pub(super) async fn complete_callback(
    pool: &DbPool,
    org: OrgId,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<CallbackRequest>, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE callback_requests SET status = 'done', updated_at = $3 WHERE org_id = $1 AND id = $2 AND status = 'open'")
        .bind(org)
        .bind(id)
        .bind(DbTime(now))
        .execute(&mut *tx)
        .await?;
    let row: Option<CallbackRow> = sqlx::query_as(select_callbacks!("WHERE org_id = $1 AND id = $2"))
    .bind(org)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.map(CallbackRequest::from))
}
