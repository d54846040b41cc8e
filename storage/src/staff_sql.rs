// The staff surface's SQL (users, sessions, API keys, secrets, call search): shared by both backends,
// included like backend.rs.

#[derive(sqlx::FromRow)]
struct UserRow {
    org_id: OrgId,
    id: Uuid,
    email: String,
    name: String,
    role: String,
    created_at: DbTime,
    disabled_at: Option<DbTime>,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        User {
            org: r.org_id,
            id: r.id,
            email: r.email,
            name: r.name,
            role: r.role,
            created_at: r.created_at.0,
            disabled_at: r.disabled_at.map(|t| t.0),
        }
    }
}

const USER_COLS: &str = "org_id, id, email, name, role, created_at, disabled_at";

pub(super) async fn create_user(pool: &DbPool, id: Uuid, u: &NewUser, now: DateTime<Utc>) -> Result<bool, StoreError> {
    let res = sqlx::query(
        "INSERT INTO users (id, org_id, email, name, role, password_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (email) DO NOTHING",
    )
    .bind(id)
    .bind(u.org)
    .bind(&u.email)
    .bind(&u.name)
    .bind(&u.role)
    .bind(&u.password_hash)
    .bind(DbTime(now))
    .execute(pool)
    .await;
    match res {
        Ok(r) => Ok(r.rows_affected() == 1),
        Err(e) if is_violation(&e, ErrorKind::ForeignKeyViolation) => Err(StoreError::NotFound("organisation")),
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn user_credentials(pool: &DbPool, email: &str) -> Result<Option<(User, String)>, StoreError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        user: UserRow,
        password_hash: String,
    }
    let row: Option<Row> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {USER_COLS}, password_hash FROM users WHERE email = $1")))
            .bind(email)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|r| (r.user.into(), r.password_hash)))
}

pub(super) async fn get_user(pool: &DbPool, org: OrgId, id: Uuid) -> Result<Option<User>, StoreError> {
    let row: Option<UserRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {USER_COLS} FROM users WHERE org_id = $1 AND id = $2")))
        .bind(org)
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(User::from))
}

pub(super) async fn list_users(pool: &DbPool, org: OrgId) -> Result<Vec<User>, StoreError> {
    let rows: Vec<UserRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {USER_COLS} FROM users WHERE org_id = $1 ORDER BY created_at, email")))
            .bind(org)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(User::from).collect())
}

/// Disables the user and revokes their sessions, in one transaction.
pub(super) async fn disable_user(pool: &DbPool, org: OrgId, id: Uuid, now: DateTime<Utc>) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query("UPDATE users SET disabled_at = $3 WHERE org_id = $1 AND id = $2 AND disabled_at IS NULL")
        .bind(org)
        .bind(id)
        .bind(DbTime(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("UPDATE auth_sessions SET revoked_at = $3 WHERE org_id = $1 AND user_id = $2 AND revoked_at IS NULL")
        .bind(org)
        .bind(id)
        .bind(DbTime(now))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(n == 1)
}

pub(super) async fn set_password(pool: &DbPool, org: OrgId, id: Uuid, hash: &str) -> Result<bool, StoreError> {
    let n = sqlx::query("UPDATE users SET password_hash = $3 WHERE org_id = $1 AND id = $2")
        .bind(org)
        .bind(id)
        .bind(hash)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(n == 1)
}

pub(super) async fn create_session(
    pool: &DbPool,
    id: Uuid,
    org: OrgId,
    user: Uuid,
    refresh_hash: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO auth_sessions (id, org_id, user_id, refresh_hash, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(org)
    .bind(user)
    .bind(refresh_hash)
    .bind(DbTime(now))
    .bind(DbTime(expires_at))
    .execute(pool)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    session_id: Uuid,
    expires_at: DbTime,
    revoked_at: Option<DbTime>,
    #[sqlx(flatten)]
    user: UserRow,
}

impl From<SessionRow> for Session {
    fn from(r: SessionRow) -> Self {
        Session {
            id: r.session_id,
            user: r.user.into(),
            expires_at: r.expires_at.0,
            revoked_at: r.revoked_at.map(|t| t.0),
        }
    }
}

const SESSION_SELECT: &str = "SELECT s.id AS session_id, s.expires_at, s.revoked_at, u.org_id, u.id, u.email, u.name, \
    u.role, u.created_at, u.disabled_at FROM auth_sessions s JOIN users u ON u.org_id = s.org_id AND u.id = s.user_id";

pub(super) async fn get_session(pool: &DbPool, org: OrgId, id: Uuid) -> Result<Option<Session>, StoreError> {
    let row: Option<SessionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!("{SESSION_SELECT} WHERE s.org_id = $1 AND s.id = $2")))
        .bind(org)
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(Session::from))
}

pub(super) async fn session_by_refresh(pool: &DbPool, refresh_hash: &str) -> Result<Option<Session>, StoreError> {
    let row: Option<SessionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!("{SESSION_SELECT} WHERE s.refresh_hash = $1")))
        .bind(refresh_hash)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(Session::from))
}

/// Swaps the session's refresh token if it is still `old_hash` and the session is live: a refresh
/// token works once, and two refreshes racing with the same token cannot both win.
pub(super) async fn rotate_refresh(
    pool: &DbPool,
    id: Uuid,
    old_hash: &str,
    new_hash: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE auth_sessions SET refresh_hash = $3, expires_at = $5 \
         WHERE id = $1 AND refresh_hash = $2 AND revoked_at IS NULL AND expires_at > $4",
    )
    .bind(id)
    .bind(old_hash)
    .bind(new_hash)
    .bind(DbTime(now))
    .bind(DbTime(expires_at))
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub(super) async fn revoke_session(pool: &DbPool, org: OrgId, id: Uuid, now: DateTime<Utc>) -> Result<bool, StoreError> {
    let n = sqlx::query("UPDATE auth_sessions SET revoked_at = $3 WHERE org_id = $1 AND id = $2 AND revoked_at IS NULL")
        .bind(org)
        .bind(id)
        .bind(DbTime(now))
        .execute(pool)
        .await?
        .rows_affected();
    Ok(n == 1)
}

#[derive(sqlx::FromRow)]
struct ApiKeyRow {
    org_id: OrgId,
    id: Uuid,
    name: String,
    role: String,
    created_at: DbTime,
    last_used_at: Option<DbTime>,
    revoked_at: Option<DbTime>,
}

impl From<ApiKeyRow> for ApiKey {
    fn from(r: ApiKeyRow) -> Self {
        ApiKey {
            org: r.org_id,
            id: r.id,
            name: r.name,
            role: r.role,
            created_at: r.created_at.0,
            last_used_at: r.last_used_at.map(|t| t.0),
            revoked_at: r.revoked_at.map(|t| t.0),
        }
    }
}

const API_KEY_COLS: &str = "org_id, id, name, role, created_at, last_used_at, revoked_at";

#[allow(clippy::too_many_arguments)]
pub(super) async fn create_api_key(
    pool: &DbPool,
    org: OrgId,
    id: Uuid,
    name: &str,
    role: &str,
    secret_hash: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let res = sqlx::query(
        "INSERT INTO api_keys (id, org_id, name, role, secret_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(org)
    .bind(name)
    .bind(role)
    .bind(secret_hash)
    .bind(DbTime(now))
    .execute(pool)
    .await;
    match res {
        Ok(_) => Ok(()),
        Err(e) if is_violation(&e, ErrorKind::ForeignKeyViolation) => Err(StoreError::NotFound("organisation")),
        Err(e) => Err(e.into()),
    }
}

/// The key and its secret's hash, by id (any organisation: the id is in the presented key).
pub(super) async fn api_key_secret(pool: &DbPool, id: Uuid) -> Result<Option<(ApiKey, String)>, StoreError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        key: ApiKeyRow,
        secret_hash: String,
    }
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {API_KEY_COLS}, secret_hash FROM api_keys WHERE id = $1")))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| (r.key.into(), r.secret_hash)))
}

pub(super) async fn touch_api_key(pool: &DbPool, id: Uuid, now: DateTime<Utc>) -> Result<(), StoreError> {
    sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")
        .bind(id)
        .bind(DbTime(now))
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn list_api_keys(pool: &DbPool, org: OrgId) -> Result<Vec<ApiKey>, StoreError> {
    let rows: Vec<ApiKeyRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {API_KEY_COLS} FROM api_keys WHERE org_id = $1 ORDER BY created_at, id")))
            .bind(org)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(ApiKey::from).collect())
}

pub(super) async fn revoke_api_key(pool: &DbPool, org: OrgId, id: Uuid, now: DateTime<Utc>) -> Result<bool, StoreError> {
    let n = sqlx::query("UPDATE api_keys SET revoked_at = $3 WHERE org_id = $1 AND id = $2 AND revoked_at IS NULL")
        .bind(org)
        .bind(id)
        .bind(DbTime(now))
        .execute(pool)
        .await?
        .rows_affected();
    Ok(n == 1)
}

pub(super) async fn put_secret(pool: &DbPool, org: OrgId, s: &SealedSecret) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO org_secrets (org_id, name, key_id, nonce, ciphertext, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (org_id, name) DO UPDATE SET key_id = excluded.key_id, nonce = excluded.nonce, \
         ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
    )
    .bind(org)
    .bind(&s.name)
    .bind(&s.key_id)
    .bind(&s.nonce)
    .bind(&s.ciphertext)
    .bind(DbTime(s.updated_at))
    .execute(pool)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct SecretRow {
    name: String,
    key_id: String,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
    updated_at: DbTime,
}

impl From<SecretRow> for SealedSecret {
    fn from(r: SecretRow) -> Self {
        SealedSecret { name: r.name, key_id: r.key_id, nonce: r.nonce, ciphertext: r.ciphertext, updated_at: r.updated_at.0 }
    }
}

pub(super) async fn get_secret(pool: &DbPool, org: OrgId, name: &str) -> Result<Option<SealedSecret>, StoreError> {
    let row: Option<SecretRow> = sqlx::query_as(
        "SELECT name, key_id, nonce, ciphertext, updated_at FROM org_secrets WHERE org_id = $1 AND name = $2",
    )
    .bind(org)
    .bind(name)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(SealedSecret::from))
}

pub(super) async fn list_secrets(pool: &DbPool, org: OrgId) -> Result<Vec<SealedSecret>, StoreError> {
    let rows: Vec<SecretRow> = sqlx::query_as(
        "SELECT name, key_id, nonce, ciphertext, updated_at FROM org_secrets WHERE org_id = $1 ORDER BY name",
    )
    .bind(org)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(SealedSecret::from).collect())
}

pub(super) async fn delete_secret(pool: &DbPool, org: OrgId, name: &str) -> Result<bool, StoreError> {
    let n = sqlx::query("DELETE FROM org_secrets WHERE org_id = $1 AND name = $2")
        .bind(org)
        .bind(name)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(n == 1)
}

pub(super) async fn list_orgs(pool: &DbPool) -> Result<Vec<Org>, StoreError> {
    let rows: Vec<(OrgId, String, Option<String>, Option<i32>)> =
        sqlx::query_as("SELECT id, name, slug, recording_retention_days FROM organisations ORDER BY name, id")
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, slug, recording_retention_days)| Org { id, name, slug, recording_retention_days })
        .collect())
}

pub(super) async fn set_retention(pool: &DbPool, org: OrgId, days: Option<i32>) -> Result<bool, StoreError> {
    let n = sqlx::query("UPDATE organisations SET recording_retention_days = $2 WHERE id = $1")
        .bind(org)
        .bind(days)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(n == 1)
}

/// Recordings of `org`'s calls that started before `cutoff`, oldest first.
pub(super) async fn recordings_before(
    pool: &DbPool,
    org: OrgId,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<RecordingRecord>, StoreError> {
    let rows: Vec<(OrgId, CallSid, String, i32, i32, i64, String)> = sqlx::query_as(
        "SELECT r.org_id, r.call_sid, r.location, r.channels, r.sample_rate, r.duration_ms, r.sha256 \
         FROM recordings r JOIN calls c ON c.org_id = r.org_id AND c.sid = r.call_sid \
         WHERE r.org_id = $1 AND c.started_at < $2 ORDER BY c.started_at LIMIT $3",
    )
    .bind(org)
    .bind(DbTime(cutoff))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(org, sid, location, channels, sample_rate, duration_ms, sha256)| RecordingRecord {
            org,
            sid,
            location,
            channels,
            sample_rate,
            duration_ms,
            sha256,
        })
        .collect())
}

pub(super) async fn delete_recording_row(pool: &DbPool, org: OrgId, sid: &CallSid) -> Result<bool, StoreError> {
    let n = sqlx::query("DELETE FROM recordings WHERE org_id = $1 AND call_sid = $2")
        .bind(org)
        .bind(sid)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(n == 1)
}

pub(super) async fn list_contacts(pool: &DbPool, org: OrgId, limit: i64) -> Result<Vec<Contact>, StoreError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        phone: String,
        name: Option<String>,
        email: Option<String>,
        notes: Option<String>,
        updated_at: DbTime,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT phone, name, email, notes, updated_at FROM contacts WHERE org_id = $1 ORDER BY updated_at DESC, phone \
         LIMIT $2",
    )
    .bind(org)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Contact { phone: r.phone, name: r.name, email: r.email, notes: r.notes, updated_at: r.updated_at.0 })
        .collect())
}

pub(super) async fn org_numbers(pool: &DbPool, org: OrgId) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT e164 FROM phone_numbers WHERE org_id = $1 ORDER BY e164")
        .bind(org)
        .fetch_all(pool)
        .await?)
}

pub(super) async fn get_org(pool: &DbPool, org: OrgId) -> Result<Option<Org>, StoreError> {
    let row: Option<(OrgId, String, Option<String>, Option<i32>)> =
        sqlx::query_as("SELECT id, name, slug, recording_retention_days FROM organisations WHERE id = $1")
            .bind(org)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(id, name, slug, recording_retention_days)| Org { id, name, slug, recording_retention_days }))
}

pub(super) async fn appointments_of_call(pool: &DbPool, org: OrgId, sid: &CallSid) -> Result<Vec<Appointment>, StoreError> {
    let rows: Vec<AppointmentRow> = sqlx::query_as(select_appointments!(
        "WHERE org_id = $1 AND call_sid = $2 ORDER BY created_at, id"
    ))
    .bind(org)
    .bind(sid)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Appointment::from).collect())
}

pub(super) async fn callbacks_of_call(pool: &DbPool, org: OrgId, sid: &CallSid) -> Result<Vec<CallbackRequest>, StoreError> {
    let rows: Vec<CallbackRow> = sqlx::query_as(select_callbacks!(
        "WHERE org_id = $1 AND call_sid = $2 ORDER BY created_at, id"
    ))
    .bind(org)
    .bind(sid)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(CallbackRequest::from).collect())
}

/// The derived outcome of call `c` (see [`OUTCOMES`]), as a SQL expression both dialects accept.
const OUTCOME_SQL: &str = "CASE \
    WHEN c.ended_at IS NULL THEN 'in_progress' \
    WHEN EXISTS (SELECT 1 FROM appointments a WHERE a.org_id = c.org_id AND a.call_sid = c.sid) THEN 'booked' \
    WHEN EXISTS (SELECT 1 FROM call_events e WHERE e.org_id = c.org_id AND e.call_sid = c.sid AND e.kind = 'transfer') \
        THEN 'transferred' \
    WHEN EXISTS (SELECT 1 FROM callback_requests m WHERE m.org_id = c.org_id AND m.call_sid = c.sid) THEN 'message' \
    WHEN EXISTS (SELECT 1 FROM call_events e WHERE e.org_id = c.org_id AND e.call_sid = c.sid AND e.kind = 'escalation') \
        THEN 'escalated' \
    WHEN EXISTS (SELECT 1 FROM turns t WHERE t.org_id = c.org_id AND t.call_sid = c.sid AND t.role = 'caller') \
        THEN 'answered' \
    ELSE 'abandoned' END";

#[derive(sqlx::FromRow)]
struct CallItemRow {
    #[sqlx(flatten)]
    call: CallRow,
    outcome: String,
}

/// `LIKE` pattern for text containing `s` (wildcards in `s` escaped with `\`).
fn contains_pattern(s: &str) -> String {
    let mut p = String::from("%");
    for ch in s.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(ch);
    }
    p.push('%');
    p
}

pub(super) async fn search_calls(pool: &DbPool, org: OrgId, f: &CallFilter, limit: i64) -> Result<Vec<CallListItem>, StoreError> {
    let mut q = sqlx::QueryBuilder::<Db>::new(format!(
        "SELECT * FROM (SELECT c.org_id, c.sid, c.assistant_id, c.from_number, c.to_number, c.direction, c.status, \
         c.started_at, c.ended_at, c.end_reason, c.duration_ms, {OUTCOME_SQL} AS outcome FROM calls c WHERE c.org_id = "
    ));
    q.push_bind(org);
    q.push(" AND c.placeholder = ");
    q.push_bind(false);
    if let Some(from) = f.from {
        q.push(" AND c.started_at >= ").push_bind(DbTime(from));
    }
    if let Some(to) = f.to {
        q.push(" AND c.started_at < ").push_bind(DbTime(to));
    }
    if let Some(status) = &f.status {
        q.push(" AND c.status = ").push_bind(status.clone());
    }
    match f.direction.as_deref() {
        Some("inbound") => {
            q.push(" AND c.direction = 'inbound'");
        }
        Some(_) => {
            q.push(" AND c.direction LIKE 'outbound%'");
        }
        None => {}
    }
    if let Some(caller) = &f.caller {
        q.push(" AND (CASE WHEN c.direction LIKE 'outbound%' THEN c.to_number ELSE c.from_number END) LIKE ")
            .push_bind(contains_pattern(caller))
            .push(" ESCAPE '\\'");
    }
    if let Some(text) = &f.text {
        q.push(" AND EXISTS (SELECT 1 FROM turns t WHERE t.org_id = c.org_id AND t.call_sid = c.sid AND lower(t.text) LIKE ")
            .push_bind(contains_pattern(&text.to_lowercase()))
            .push(" ESCAPE '\\')");
    }
    if let Some((at, sid)) = &f.after {
        q.push(" AND (c.started_at < ")
            .push_bind(DbTime(*at))
            .push(" OR (c.started_at = ")
            .push_bind(DbTime(*at))
            .push(" AND c.sid < ")
            .push_bind(sid.clone())
            .push("))");
    }
    q.push(") x");
    if let Some(outcome) = &f.outcome {
        q.push(" WHERE x.outcome = ").push_bind(outcome.clone());
    }
    q.push(" ORDER BY x.started_at DESC, x.sid DESC LIMIT ").push_bind(limit);
    let rows: Vec<CallItemRow> = q.build_query_as().fetch_all(pool).await?;
    Ok(rows.into_iter().map(|r| CallListItem { call: r.call.into(), outcome: r.outcome }).collect())
}

pub(super) async fn call_outcome(pool: &DbPool, org: OrgId, sid: &CallSid) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {OUTCOME_SQL} FROM calls c WHERE c.org_id = $1 AND c.sid = $2")))
        .bind(org)
        .bind(sid)
        .fetch_optional(pool)
        .await?)
}
