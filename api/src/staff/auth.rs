//! Sign-in and credentials. Every `/api/v1` request carries one of:
//! - an **access token** (`Authorization: Bearer vxa1.…`): 15 minutes, HMAC-signed by the server
//!   key, naming its organisation, user and session. The session is checked on every request, so
//!   signing out, disabling a user or a role change takes effect at once, not at expiry;
//! - an **API key** (`Authorization: Bearer vxk_<id>_<secret>`): one organisation, a role, shown
//!   once at creation and stored as the secret's SHA-256; revocable.
//!
//! Refresh tokens (opaque, 30 days) are stored hashed and rotated on every use: each works once.
//! There is no mode, flag or build that skips any of this.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use storage::{NewUser, OrgId, Store, User};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::ApiError;
use super::crypto::{Keys, random_token, sha256_hex};
use crate::server::AppState;

/// How long an access token is good for.
pub const ACCESS_TTL_SECS: i64 = 15 * 60;
/// How long a refresh token is good for (each refresh starts the period again).
pub const REFRESH_TTL_DAYS: i64 = 30;
/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;

const TOKEN_PURPOSE: &str = "voxanne access tokens v1";
const ACCESS_PREFIX: &str = "vxa1.";
const KEY_PREFIX: &str = "vxk_";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Staff,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Staff => "staff",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "staff" => Some(Role::Staff),
            _ => None,
        }
    }
}

/// Who is asking: always exactly one organisation.
#[derive(Clone, Debug)]
pub struct Auth {
    pub org: OrgId,
    pub role: Role,
    /// The signed-in user (`None` for an API key).
    pub user: Option<Uuid>,
    /// The session (`None` for an API key).
    pub session: Option<Uuid>,
    /// The API key (`None` for a signed-in user).
    pub api_key: Option<Uuid>,
}

impl Auth {
    /// 403 unless an admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Staff => Err(ApiError::forbidden("this needs an admin")),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Claims {
    /// Organisation.
    o: Uuid,
    /// User.
    u: Uuid,
    /// Session.
    s: Uuid,
    /// Expiry, Unix seconds.
    exp: i64,
}

/// A signed access token for `session`.
pub fn access_token(
    keys: &Keys,
    org: OrgId,
    user: Uuid,
    session: Uuid,
    now: DateTime<Utc>,
) -> String {
    let claims = Claims {
        o: org.0,
        u: user,
        s: session,
        exp: now.timestamp() + ACCESS_TTL_SECS,
    };
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialise"));
    let sig = URL_SAFE_NO_PAD.encode(keys.sign(TOKEN_PURPOSE, body.as_bytes()));
    format!("{ACCESS_PREFIX}{body}.{sig}")
}

/// The token's claims if its signature is ours and it has not expired.
fn verify_access(keys: &Keys, token: &str, now: DateTime<Utc>) -> Result<Claims, ApiError> {
    let forged = || ApiError::unauthorized("invalid access token");
    let rest = token.strip_prefix(ACCESS_PREFIX).ok_or_else(forged)?;
    let (body, sig) = rest.split_once('.').ok_or_else(forged)?;
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| forged())?;
    if !keys.verify(TOKEN_PURPOSE, body.as_bytes(), &sig) {
        return Err(forged());
    }
    let claims: Claims = URL_SAFE_NO_PAD
        .decode(body)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(forged)?;
    if claims.exp <= now.timestamp() {
        return Err(ApiError::unauthorized("access token expired; refresh it"));
    }
    Ok(claims)
}

/// An argon2id hash of `password` (PHC string).
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ApiError::invalid(format!(
            "password must be at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(ApiError::internal)
}

fn password_matches(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// A hash nobody's password matches, checked when the email is unknown so that a wrong email
/// takes as long as a wrong password.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        Argon2::default()
            .hash_password(random_token(24).as_bytes())
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// Adds a user to `org` (`voxanne user add`, `POST /api/v1/users`).
pub async fn create_user(
    store: &Store,
    org: OrgId,
    email: &str,
    name: &str,
    role: Role,
    password: &str,
) -> Result<Uuid, ApiError> {
    let email = email.trim();
    if !email.contains('@') || email.len() > 254 || email.chars().any(char::is_whitespace) {
        return Err(ApiError::invalid(
            "email must be an address like name@clinic.example",
        ));
    }
    if name.trim().is_empty() || name.len() > 200 {
        return Err(ApiError::invalid("name must be 1–200 characters"));
    }
    let password_hash = hash_password(password)?;
    store
        .create_user(&NewUser {
            org,
            email: email.to_string(),
            name: name.trim().to_string(),
            role: role.as_str().to_string(),
            password_hash,
        })
        .await?
        .ok_or_else(|| ApiError::conflict("a user with this email already exists"))
}

/// Creates an API key for `org`; returns its id and the full key (shown once).
pub async fn create_api_key(
    store: &Store,
    org: OrgId,
    name: &str,
    role: Role,
) -> Result<(Uuid, String), ApiError> {
    if name.trim().is_empty() || name.len() > 200 {
        return Err(ApiError::invalid("name must be 1–200 characters"));
    }
    let id = Uuid::new_v4();
    let secret = random_token(32);
    store
        .create_api_key(org, id, name.trim(), role.as_str(), &sha256_hex(&secret))
        .await?;
    Ok((id, format!("{KEY_PREFIX}{}_{secret}", id.simple())))
}

/// Tokens issued by sign-in and refresh.
#[derive(Debug, Serialize)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
    pub user: User,
}

/// Signs in: email and password → a new session.
pub async fn login(state: &AppState, email: &str, password: &str) -> Result<Tokens, ApiError> {
    let wrong = || ApiError::unauthorized("wrong email or password");
    let found = state.store().user_credentials(email).await?;
    let (user, hash) = match found {
        Some((u, h)) => (Some(u), h),
        None => (None, dummy_hash().to_string()),
    };
    let password = password.to_string();
    let ok = tokio::task::spawn_blocking(move || password_matches(&password, &hash))
        .await
        .map_err(ApiError::internal)?;
    let user = user.filter(|_| ok).ok_or_else(wrong)?;
    if user.disabled_at.is_some() {
        return Err(wrong());
    }
    let refresh = random_token(32);
    let now = Utc::now();
    let session = state
        .store()
        .create_session(
            user.org,
            user.id,
            &sha256_hex(&refresh),
            now + ChronoDuration::days(REFRESH_TTL_DAYS),
        )
        .await?;
    Ok(Tokens {
        access_token: access_token(state.keys(), user.org, user.id, session, now),
        refresh_token: refresh,
        expires_in: ACCESS_TTL_SECS,
        user,
    })
}

/// A refresh token → new tokens; the presented refresh token stops working.
pub async fn refresh(state: &AppState, refresh_token: &str) -> Result<Tokens, ApiError> {
    let refused = || ApiError::unauthorized("refresh token expired, revoked or already used");
    let old = sha256_hex(refresh_token);
    let session = state
        .store()
        .session_by_refresh(&old)
        .await?
        .ok_or_else(refused)?;
    let now = Utc::now();
    if session.revoked_at.is_some()
        || session.expires_at <= now
        || session.user.disabled_at.is_some()
    {
        return Err(refused());
    }
    let new = random_token(32);
    let rotated = state
        .store()
        .rotate_refresh(
            session.id,
            &old,
            &sha256_hex(&new),
            now + ChronoDuration::days(REFRESH_TTL_DAYS),
        )
        .await?;
    if !rotated {
        return Err(refused());
    }
    let user = session.user;
    Ok(Tokens {
        access_token: access_token(state.keys(), user.org, user.id, session.id, now),
        refresh_token: new,
        expires_in: ACCESS_TTL_SECS,
        user,
    })
}

/// Checks a presented credential (the `Bearer` value).
pub async fn authenticate(state: &AppState, credential: &str) -> Result<Auth, ApiError> {
    if let Some(rest) = credential.strip_prefix(KEY_PREFIX) {
        let revoked = || ApiError::unauthorized("invalid or revoked API key");
        let (id, secret) = rest.split_once('_').ok_or_else(revoked)?;
        let id = Uuid::parse_str(id).map_err(|_| revoked())?;
        let (key, hash) = state
            .store()
            .api_key_secret(id)
            .await?
            .ok_or_else(revoked)?;
        let matches: bool = sha256_hex(secret).as_bytes().ct_eq(hash.as_bytes()).into();
        if !matches || key.revoked_at.is_some() {
            return Err(revoked());
        }
        let role = Role::parse(&key.role).ok_or_else(revoked)?;
        // Best effort: a failed "last used" write must not refuse a valid key.
        let store = state.store().clone();
        tokio::spawn(async move {
            let _ = store.touch_api_key(id).await;
        });
        return Ok(Auth {
            org: key.org,
            role,
            user: None,
            session: None,
            api_key: Some(id),
        });
    }
    let claims = verify_access(state.keys(), credential, Utc::now())?;
    let org = OrgId(claims.o);
    let session = state
        .store()
        .get_session(org, claims.s)
        .await?
        .filter(|s| s.user.id == claims.u)
        .ok_or_else(|| ApiError::unauthorized("invalid access token"))?;
    if session.revoked_at.is_some() {
        return Err(ApiError::unauthorized("signed out; sign in again"));
    }
    if session.user.disabled_at.is_some() {
        return Err(ApiError::unauthorized("this user is disabled"));
    }
    let role = Role::parse(&session.user.role)
        .ok_or_else(|| ApiError::unauthorized("invalid access token"))?;
    Ok(Auth {
        org,
        role,
        user: Some(session.user.id),
        session: Some(session.id),
        api_key: None,
    })
}

/// The value of an `Authorization: Bearer …` header (the scheme in any case), if any.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, value) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| value.trim())
}

/// The `Bearer` credential of a request, or (only where a browser cannot send headers: the live
/// stream) its `access_token` query parameter.
fn credential(parts: &Parts) -> Option<String> {
    if parts
        .headers
        .contains_key(axum::http::header::AUTHORIZATION)
    {
        return bearer(&parts.headers).map(str::to_string);
    }
    if parts.uri.path() == "/api/v1/live" {
        return parts.uri.query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "access_token")
                .map(|(_, v)| v.into_owned())
        });
    }
    None
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(credential) = credential(parts) else {
            return Err(ApiError::unauthorized(
                "sign in: send Authorization: Bearer <access token or API key>",
            ));
        };
        authenticate(state, &credential).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_tokens_verify_until_expiry_and_refuse_tampering_and_other_keys() {
        let keys = Keys::from_bytes([3; 32], &[]);
        let now = Utc::now();
        let (org, user, session) = (OrgId(Uuid::new_v4()), Uuid::new_v4(), Uuid::new_v4());
        let t = access_token(&keys, org, user, session, now);
        let c = verify_access(&keys, &t, now).unwrap();
        assert_eq!((c.o, c.u, c.s), (org.0, user, session));
        assert!(verify_access(&keys, &t, now + ChronoDuration::seconds(ACCESS_TTL_SECS)).is_err());
        let other = Keys::from_bytes([4; 32], &[]);
        assert!(
            verify_access(&other, &t, now).is_err(),
            "another server's key"
        );
        // Change the organisation in the body, keep the signature.
        let (body, sig) = t
            .strip_prefix(ACCESS_PREFIX)
            .unwrap()
            .split_once('.')
            .unwrap();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap();
        claims["o"] = serde_json::json!(Uuid::new_v4());
        let forged = format!(
            "{ACCESS_PREFIX}{}.{sig}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
        );
        assert!(verify_access(&keys, &forged, now).is_err());
        assert!(verify_access(&keys, "vxa1.garbage", now).is_err());
    }

    #[test]
    fn passwords_hash_with_argon2id_and_short_ones_are_refused() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(password_matches("correct horse battery", &h));
        assert!(!password_matches("correct horse batterY", &h));
        assert!(hash_password("short").is_err());
        assert!(!password_matches("anything at all", dummy_hash()));
    }
}
