//! `/api/v1` handlers other than calls and live: sign-in, the clinic's data, users, API keys,
//! secrets, the receptionist chat and outbound calls. Every handler scopes by `auth.org`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::SocketAddr;
use uuid::Uuid;

use receptionist::clinic::ClinicFile;
use receptionist::dialogue::Direction;
use storage::{SealedSecret, User};

use super::ApiError;
use super::auth::{self, Auth, Role};
use super::calls::{appointment_json, message_json};
use super::crypto::Sealed;
use crate::server::AppState;

/// Secrets a clinic may store with us (write-only).
pub const SECRET_NAMES: [&str; 3] = ["twilio_account_sid", "twilio_auth_token", "llm_api_key"];

pub fn user_json(u: &User) -> Value {
    json!({
        "id": u.id,
        "email": u.email,
        "name": u.name,
        "role": u.role,
        "created_at": u.created_at,
        "disabled": u.disabled_at.is_some(),
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("request body: {e}")))
}

fn parse_id(id: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::not_found(what))
}

#[derive(Deserialize)]
struct LoginBody {
    email: String,
    password: String,
}

/// `POST /api/v1/auth/login`. Rate-limited per client address and per email.
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: LoginBody = parse_json(&body)?;
    let limit = state.login_limit();
    if !limit.allow(&format!("ip:{}", peer.ip()))
        || !limit.allow(&format!("email:{}", b.email.trim().to_lowercase()))
    {
        let mut r = ApiError::rate_limited().into_response();
        if let Ok(v) = limit.retry_after().as_secs().to_string().parse() {
            r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
        }
        return Ok(r);
    }
    let tokens = auth::login(&state, &b.email, &b.password).await?;
    Ok(Json(tokens_json(tokens)).into_response())
}

fn tokens_json(t: auth::Tokens) -> Value {
    json!({
        "access_token": t.access_token,
        "refresh_token": t.refresh_token,
        "expires_in": t.expires_in,
        "token_type": "Bearer",
        "user": user_json(&t.user),
    })
}

#[derive(Deserialize)]
struct RefreshBody {
    refresh_token: String,
}

/// `POST /api/v1/auth/refresh`.
pub async fn refresh(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: RefreshBody = parse_json(&body)?;
    if !state.login_limit().allow(&format!("refresh:{}", peer.ip())) {
        return Err(ApiError::rate_limited());
    }
    Ok(Json(tokens_json(
        auth::refresh(&state, &b.refresh_token).await?,
    )))
}

/// `POST /api/v1/auth/logout`: ends the session (its access and refresh tokens stop working).
pub async fn logout(auth: Auth, State(state): State<AppState>) -> Result<StatusCode, ApiError> {
    let session = auth
        .session
        .ok_or_else(|| ApiError::invalid("an API key has no session; revoke the key instead"))?;
    state.store().revoke_session(auth.org, session).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/me`.
pub async fn me(auth: Auth, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let org = state
        .store()
        .get_org(auth.org)
        .await?
        .ok_or_else(|| ApiError::not_found("organisation"))?;
    let user = match auth.user {
        Some(id) => state
            .store()
            .get_user(auth.org, id)
            .await?
            .map(|u| user_json(&u)),
        None => None,
    };
    Ok(Json(json!({
        "user": user,
        "org": { "id": org.id, "name": org.name, "slug": org.slug,
                 "recording_retention_days": org.recording_retention_days },
        "role": auth.role.as_str(),
        "via": if auth.api_key.is_some() { "api_key" } else { "session" },
    })))
}

#[derive(Debug, Deserialize)]
pub struct RangeParams {
    from: Option<String>,
    to: Option<String>,
}

fn time(name: &str, v: Option<&str>, default: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    Ok(super::calls::time_param(name, v)?.unwrap_or(default))
}

/// `GET /api/v1/appointments?from&to` (default: from the start of today, 14 days).
pub async fn appointments(
    auth: Auth,
    State(state): State<AppState>,
    Query(p): Query<RangeParams>,
) -> Result<Json<Value>, ApiError> {
    let today = Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    let from = time("from", p.from.as_deref(), today)?;
    let to = time("to", p.to.as_deref(), from + chrono::Duration::days(14))?;
    if to <= from || to - from > chrono::Duration::days(366) {
        return Err(ApiError::invalid(
            "to must be after from, at most a year later",
        ));
    }
    let items = state.store().list_appointments(auth.org, from, to).await?;
    Ok(Json(
        json!({ "items": items.iter().map(appointment_json).collect::<Vec<_>>() }),
    ))
}

/// `GET /api/v1/contacts`.
pub async fn contacts(auth: Auth, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let items = state.store().list_contacts(auth.org, 1000).await?;
    Ok(Json(json!({ "items": items })))
}

#[derive(Debug, Deserialize)]
pub struct MessageParams {
    status: Option<String>,
}

/// `GET /api/v1/messages?status=open|done` (urgent first).
pub async fn messages(
    auth: Auth,
    State(state): State<AppState>,
    Query(p): Query<MessageParams>,
) -> Result<Json<Value>, ApiError> {
    let status = p.status.as_deref().unwrap_or("open");
    if !matches!(status, "open" | "done" | "all") {
        return Err(ApiError::invalid("status must be open, done or all"));
    }
    let mut items = state
        .store()
        .list_callbacks(auth.org, status == "open")
        .await?;
    if status == "done" {
        items.retain(|m| m.status == "done");
    }
    Ok(Json(
        json!({ "items": items.iter().map(message_json).collect::<Vec<_>>() }),
    ))
}

/// `POST /api/v1/messages/{id}/done`.
pub async fn message_done(
    auth: Auth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id, "message")?;
    let m = state
        .store()
        .complete_callback(auth.org, id)
        .await?
        .ok_or_else(|| ApiError::not_found("message"))?;
    Ok(Json(message_json(&m)))
}

/// `GET /api/v1/knowledge`.
pub async fn knowledge(auth: Auth, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let items = state.store().list_knowledge(auth.org).await?;
    Ok(Json(json!({
        "items": items.iter().map(|k| json!({ "id": k.id, "title": k.title, "text": k.text }))
            .collect::<Vec<_>>()
    })))
}

/// `GET /api/v1/numbers`.
pub async fn numbers(auth: Auth, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let items = state.store().org_numbers(auth.org).await?;
    Ok(Json(json!({
        "items": items.iter().map(|e| json!({ "e164": e })).collect::<Vec<_>>()
    })))
}

/// `GET /api/v1/clinic`: the clinic file as TOML (and as JSON).
pub async fn get_clinic(
    auth: Auth,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let stored = state.store().get_clinic(auth.org).await?;
    let Some(json) = stored else {
        return Ok(Json(json!({ "toml": null, "config": null })));
    };
    let mut file = ClinicFile::from_json(&json).map_err(ApiError::internal)?;
    // Any staff user reads this: a key in the file is never shown.
    file.llm = file.llm.as_ref().map(|l| l.redacted());
    let mut config: Value = serde_json::from_str(&json).map_err(ApiError::internal)?;
    if let Some(k) = config.pointer_mut("/llm/api_key")
        && !k.is_null()
    {
        *k = Value::String(receptionist::clinic::REDACTED_KEY.into());
    }
    Ok(Json(json!({ "toml": file.to_toml(), "config": config })))
}

/// `PUT /api/v1/clinic` (admin): the clinic file as TOML, validated as `voxanne clinic apply`
/// does. Its `clinic.id` must be this organisation's: a file cannot move to another clinic.
pub async fn put_clinic(
    auth: Auth,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    auth.require_admin()?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::invalid("the clinic file must be UTF-8 TOML"))?;
    let invalid = |problems: Vec<String>| {
        let mut e = ApiError::invalid(format!(
            "the clinic file has problems: {}",
            problems.join("; ")
        ));
        e.details = Some(problems);
        e
    };
    let file = ClinicFile::from_toml(text).map_err(|e| invalid(e.0))?;
    if let Some(llm) = &file.llm
        && let Some(key) = &llm.api_key
    {
        // The redacted value `GET /api/v1/clinic` showed keeps the stored key (one the
        // operator applied with `voxanne clinic apply`): see `clinic::apply`.
        if key != receptionist::clinic::REDACTED_KEY {
            return Err(invalid(vec![
                "llm.api_key: a key is not accepted in a clinic file sent over the API (anyone \
                 who can read the clinic would see it); store it as the sealed llm_api_key secret \
                 (PUT /api/v1/secrets/llm_api_key) and remove llm.api_key"
                    .into(),
            ]));
        }
    }
    if let Some(k) = file.knowledge.iter().find(|k| k.text.is_none()) {
        return Err(invalid(vec![format!(
            "knowledge {:?}: give its text inline (`text = …`); files cannot be read over the API",
            k.title
        )]));
    }
    file.clone().validate().map_err(|e| invalid(e.0))?;
    let org = state
        .store()
        .get_org(auth.org)
        .await?
        .ok_or_else(|| ApiError::not_found("organisation"))?;
    if org.slug.as_deref() != Some(file.clinic.id.as_str()) {
        return Err(invalid(vec![format!(
            "clinic.id is {:?} but this organisation's clinic is {:?}",
            file.clinic.id,
            org.slug.unwrap_or_default()
        )]));
    }
    let summary = crate::clinic::apply(state.store(), file, state.embedder())
        .await
        .map_err(|e| {
            let text = e.to_string();
            if text.contains("another organisation") {
                ApiError::conflict(text)
            } else {
                ApiError::invalid(text)
            }
        })?;
    state.forget_clinic(auth.org);
    Ok(Json(json!({
        "changed": summary.config_changed || summary.chunks_embedded > 0 || summary.chunks_removed > 0,
        "numbers": summary.numbers,
        "knowledge": { "embedded": summary.chunks_embedded, "kept": summary.chunks_kept,
                       "removed": summary.chunks_removed },
        "problems": [],
    })))
}

/// `GET /api/v1/users` (admin).
pub async fn list_users(
    auth: Auth,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    auth.require_admin()?;
    let users = state.store().list_users(auth.org).await?;
    Ok(Json(
        json!({ "items": users.iter().map(user_json).collect::<Vec<_>>() }),
    ))
}

#[derive(Deserialize)]
struct NewUserBody {
    email: String,
    name: String,
    role: String,
    password: String,
}

/// `POST /api/v1/users` (admin).
pub async fn create_user(
    auth: Auth,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    auth.require_admin()?;
    let b: NewUserBody = parse_json(&body)?;
    let role =
        Role::parse(&b.role).ok_or_else(|| ApiError::invalid("role must be admin or staff"))?;
    let id = auth::create_user(
        state.store(),
        auth.org,
        &b.email,
        &b.name,
        role,
        &b.password,
    )
    .await?;
    let user = state
        .store()
        .get_user(auth.org, id)
        .await?
        .ok_or_else(|| ApiError::internal("user vanished after creation"))?;
    Ok((StatusCode::CREATED, Json(user_json(&user))))
}

/// `DELETE /api/v1/users/{id}` (admin): disables the user and ends their sessions.
pub async fn disable_user(
    auth: Auth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    let id = parse_id(&id, "user")?;
    if auth.user == Some(id) {
        return Err(ApiError::invalid("you cannot disable yourself"));
    }
    if state.store().get_user(auth.org, id).await?.is_none() {
        return Err(ApiError::not_found("user"));
    }
    state.store().disable_user(auth.org, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/api-keys` (admin).
pub async fn list_keys(auth: Auth, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    auth.require_admin()?;
    let keys = state.store().list_api_keys(auth.org).await?;
    Ok(Json(json!({
        "items": keys.iter().map(|k| json!({
            "id": k.id, "name": k.name, "role": k.role, "created_at": k.created_at,
            "last_used_at": k.last_used_at, "revoked": k.revoked_at.is_some(),
        })).collect::<Vec<_>>()
    })))
}

#[derive(Deserialize)]
struct NewKeyBody {
    name: String,
    role: Option<String>,
}

/// `POST /api/v1/api-keys` (admin): the key is in this response only.
pub async fn create_key(
    auth: Auth,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    auth.require_admin()?;
    let b: NewKeyBody = parse_json(&body)?;
    let role = Role::parse(b.role.as_deref().unwrap_or("staff"))
        .ok_or_else(|| ApiError::invalid("role must be admin or staff"))?;
    let (id, key) = auth::create_api_key(state.store(), auth.org, &b.name, role).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id, "name": b.name.trim(), "role": role.as_str(), "key": key })),
    ))
}

/// `DELETE /api/v1/api-keys/{id}` (admin).
pub async fn revoke_key(
    auth: Auth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    let id = parse_id(&id, "API key")?;
    if !state
        .store()
        .list_api_keys(auth.org)
        .await?
        .iter()
        .any(|k| k.id == id)
    {
        return Err(ApiError::not_found("API key"));
    }
    state.store().revoke_api_key(auth.org, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn secret_context(org: storage::OrgId, name: &str) -> String {
    format!("org/{}/secret/{name}", org.0)
}

/// A clinic's secret, opened (for the server's own use: never returned by the API).
pub async fn open_secret(
    state: &AppState,
    org: storage::OrgId,
    name: &str,
) -> Result<Option<String>, ApiError> {
    open_secret_with(state.store(), state.keys(), org, name).await
}

async fn open_secret_with(
    store: &storage::Store,
    keys: &super::crypto::Keys,
    org: storage::OrgId,
    name: &str,
) -> Result<Option<String>, ApiError> {
    let Some(s) = store.get_secret(org, name).await? else {
        return Ok(None);
    };
    let plain = keys
        .open(
            &secret_context(org, name),
            &Sealed {
                key_id: s.key_id,
                nonce: s.nonce,
                ciphertext: s.ciphertext,
            },
        )
        .map_err(ApiError::internal)?;
    String::from_utf8(plain)
        .map(Some)
        .map_err(ApiError::internal)
}

/// Re-seals every secret of every organisation with the current key (`voxanne secrets rotate`).
/// Returns how many were re-sealed.
pub async fn rotate_secrets(
    store: &storage::Store,
    keys: &super::crypto::Keys,
) -> Result<usize, ApiError> {
    let mut n = 0;
    for org in store.list_orgs().await? {
        for s in store.list_secrets(org.id).await? {
            if s.key_id == keys.current_id() {
                continue;
            }
            let value = open_secret_with(store, keys, org.id, &s.name)
                .await?
                .ok_or_else(|| ApiError::internal("secret vanished"))?;
            seal_and_store(store, keys, org.id, &s.name, &value).await?;
            n += 1;
        }
    }
    n += super::delivery::rotate_webhook_secrets(store, keys).await?;
    Ok(n)
}

/// Seals `value` with the current key and stores it as `org`'s secret `name`.
pub async fn seal_and_store(
    store: &storage::Store,
    keys: &super::crypto::Keys,
    org: storage::OrgId,
    name: &str,
    value: &str,
) -> Result<(), ApiError> {
    let sealed = keys.seal(&secret_context(org, name), value.as_bytes());
    store
        .put_secret(
            org,
            &SealedSecret {
                name: name.to_string(),
                key_id: sealed.key_id,
                nonce: sealed.nonce,
                ciphertext: sealed.ciphertext,
                updated_at: Utc::now(),
            },
        )
        .await?;
    Ok(())
}

/// `GET /api/v1/secrets` (admin): names and when they were set; never values.
pub async fn list_secrets(
    auth: Auth,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    auth.require_admin()?;
    let items = state.store().list_secrets(auth.org).await?;
    Ok(Json(json!({
        "items": items.iter().map(|s| json!({ "name": s.name, "updated_at": s.updated_at }))
            .collect::<Vec<_>>()
    })))
}

#[derive(Deserialize)]
struct SecretBody {
    value: String,
}

/// `PUT /api/v1/secrets/{name}` (admin): sealed with AES-256-GCM before it is stored.
pub async fn put_secret(
    auth: Auth,
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    if !SECRET_NAMES.contains(&name.as_str()) {
        return Err(ApiError::invalid(format!(
            "unknown secret {name:?}; expected one of {}",
            SECRET_NAMES.join(", ")
        )));
    }
    let b: SecretBody = parse_json(&body)?;
    if b.value.trim().is_empty() || b.value.len() > 4096 {
        return Err(ApiError::invalid("value must be 1–4096 characters"));
    }
    seal_and_store(state.store(), state.keys(), auth.org, &name, b.value.trim()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/secrets/{name}` (admin).
pub async fn delete_secret(
    auth: Auth,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    if state.store().delete_secret(auth.org, &name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("secret"))
    }
}

/// Text chats with the receptionist, by session id: bounded in number and idle time.
#[derive(Debug, Default)]
pub struct ChatSessions {
    sessions: Mutex<HashMap<String, ChatEntry>>,
}

/// A chat's organisation, when it was last used, and the chat.
type ChatEntry = (
    storage::OrgId,
    Instant,
    std::sync::Arc<tokio::sync::Mutex<crate::chat::Chat>>,
);

const CHAT_IDLE: Duration = Duration::from_secs(30 * 60);
const CHAT_MAX: usize = 1000;

#[derive(Deserialize)]
struct ChatBody {
    session: Option<String>,
    text: Option<String>,
}

/// `POST /api/v1/chat`: without `session`, starts a chat (the reply is the greeting).
pub async fn chat(
    auth: Auth,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: ChatBody = parse_json(&body)?;
    let sessions = state.chats();
    let (id, chat, opening) = match b.session {
        Some(id) => {
            let mut map = sessions.sessions.lock().unwrap_or_else(|p| p.into_inner());
            let entry = map
                .get_mut(&id)
                .filter(|(org, _, _)| *org == auth.org)
                .ok_or_else(|| ApiError::not_found("chat session"))?;
            entry.1 = Instant::now();
            (id, entry.2.clone(), None)
        }
        None => {
            let loaded = state.clinic_for(auth.org).await;
            let mut c = crate::chat::Chat::with_events(
                state.store(),
                &loaded,
                state.embedder().cloned(),
                None,
                Direction::Inbound,
                crate::receptionist::system_clock(),
                Some(state.events().clone()),
            );
            // The clinic's calls' brain: the LLM (saying its own filler) when configured.
            if let Some(p) = state.llm_provider(&loaded).await {
                c = c.with_llm(p, Some(llm::Filler::default()));
            }
            let opening = c.opening();
            let id = super::crypto::random_token(16);
            let chat = std::sync::Arc::new(tokio::sync::Mutex::new(c));
            let mut map = sessions.sessions.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|_, (_, at, _)| at.elapsed() < CHAT_IDLE);
            if map.len() >= CHAT_MAX {
                return Err(ApiError::rate_limited());
            }
            map.insert(id.clone(), (auth.org, Instant::now(), chat.clone()));
            (id, chat, Some(opening))
        }
    };
    let text = b.text.as_deref().map(str::trim).filter(|t| !t.is_empty());
    if text.is_some_and(|t| t.chars().count() > 1000) {
        return Err(ApiError::invalid("text is at most 1000 characters"));
    }
    let mut reply = Vec::new();
    if let Some(o) = opening {
        reply.push(o);
    }
    let mut chat = chat.lock().await;
    if let Some(text) = text {
        if chat.ended {
            return Err(ApiError::conflict("this chat has ended; start a new one"));
        }
        let r = chat.say(text).await;
        reply.extend(r.say);
    }
    Ok(Json(
        json!({ "session": id, "reply": reply, "done": chat.ended }),
    ))
}

#[derive(Deserialize)]
struct OutboundBody {
    to: String,
    appointment_id: Option<String>,
}

/// `POST /api/v1/calls/outbound` (admin): places a call from the clinic's first number through
/// the clinic's own Twilio account (secrets `twilio_account_sid` and `twilio_auth_token`).
pub async fn outbound(
    auth: Auth,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    auth.require_admin()?;
    let b: OutboundBody = parse_json(&body)?;
    let to = b.to.trim();
    if !(to.starts_with('+') && to.len() >= 8 && to[1..].bytes().all(|c| c.is_ascii_digit())) {
        return Err(ApiError::invalid(
            "to must be an E.164 number like +15551234567",
        ));
    }
    if let Some(a) = &b.appointment_id {
        let id = parse_id(a, "appointment")?;
        state
            .store()
            .get_appointment(auth.org, id)
            .await?
            .ok_or_else(|| ApiError::not_found("appointment"))?;
    }
    let from = state
        .store()
        .org_numbers(auth.org)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::invalid("this clinic has no phone number to call from"))?;
    let account_sid = open_secret(&state, auth.org, "twilio_account_sid").await?;
    let auth_token = open_secret(&state, auth.org, "twilio_auth_token").await?;
    let (Some(account_sid), Some(auth_token)) = (account_sid, auth_token) else {
        return Err(ApiError::invalid(
            "set the clinic's twilio_account_sid and twilio_auth_token secrets first",
        ));
    };
    let request = crate::outbound::CallRequest {
        api_base: state.config().twilio_api_url.clone(),
        account_sid,
        auth_token,
        from,
        to: to.to_string(),
        public_url: state.config().public_url.clone(),
        appointment: b.appointment_id,
    };
    let sid = crate::outbound::place(&request)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "upstream", e.to_string()))?;
    Ok((StatusCode::CREATED, Json(json!({ "sid": sid }))))
}
