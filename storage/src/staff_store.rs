//! [`Store`] methods of the staff surface (a child of `store.rs`, so it shares its dispatch macros).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Pool, Store, postgres_impl, sqlite_impl};
use crate::error::StoreError;
use crate::ids::{CallSid, OrgId};
use crate::model::{Appointment, CallbackRequest, RecordingRecord};
use crate::staff::{
    ApiKey, CallFilter, CallListItem, Contact, NewUser, Org, SealedSecret, Session, User,
};
use crate::store::{DEFAULT_PAGE, MAX_PAGE};

impl Store {
    /// Creates a user; `Ok(None)` if the email is taken (by anyone: emails are unique across organisations).
    pub async fn create_user(&self, u: &NewUser) -> Result<Option<Uuid>, StoreError> {
        let id = Uuid::new_v4();
        let u = NewUser {
            email: u.email.trim().to_lowercase(),
            ..u.clone()
        };
        let created = dispatch_write!(self, create_user(id, &u, Utc::now()))?;
        Ok(created.then_some(id))
    }

    /// The user with this email (any organisation) and their password hash: sign-in.
    pub async fn user_credentials(
        &self,
        email: &str,
    ) -> Result<Option<(User, String)>, StoreError> {
        dispatch!(self, user_credentials(&email.trim().to_lowercase()))
    }

    pub async fn get_user(&self, org: OrgId, id: Uuid) -> Result<Option<User>, StoreError> {
        dispatch!(self, get_user(org, id))
    }

    pub async fn list_users(&self, org: OrgId) -> Result<Vec<User>, StoreError> {
        dispatch!(self, list_users(org))
    }

    /// Disables the user and revokes every session of theirs. `false` if there is no such live user in `org`.
    pub async fn disable_user(&self, org: OrgId, id: Uuid) -> Result<bool, StoreError> {
        dispatch_write!(self, disable_user(org, id, Utc::now()))
    }

    pub async fn set_password(&self, org: OrgId, id: Uuid, hash: &str) -> Result<bool, StoreError> {
        dispatch_write!(self, set_password(org, id, hash))
    }

    /// A new session for `user`, whose refresh token hashes to `refresh_hash`.
    pub async fn create_session(
        &self,
        org: OrgId,
        user: Uuid,
        refresh_hash: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<Uuid, StoreError> {
        let id = Uuid::new_v4();
        dispatch_write!(
            self,
            create_session(id, org, user, refresh_hash, Utc::now(), expires_at)
        )?;
        Ok(id)
    }

    pub async fn get_session(&self, org: OrgId, id: Uuid) -> Result<Option<Session>, StoreError> {
        dispatch!(self, get_session(org, id))
    }

    pub async fn session_by_refresh(
        &self,
        refresh_hash: &str,
    ) -> Result<Option<Session>, StoreError> {
        dispatch!(self, session_by_refresh(refresh_hash))
    }

    /// Replaces the session's refresh token, only if it is still `old_hash` and the session is live.
    pub async fn rotate_refresh(
        &self,
        id: Uuid,
        old_hash: &str,
        new_hash: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        dispatch_write!(
            self,
            rotate_refresh(id, old_hash, new_hash, Utc::now(), expires_at)
        )
    }

    pub async fn revoke_session(&self, org: OrgId, id: Uuid) -> Result<bool, StoreError> {
        dispatch_write!(self, revoke_session(org, id, Utc::now()))
    }

    pub async fn create_api_key(
        &self,
        org: OrgId,
        id: Uuid,
        name: &str,
        role: &str,
        secret_hash: &str,
    ) -> Result<(), StoreError> {
        dispatch_write!(
            self,
            create_api_key(org, id, name, role, secret_hash, Utc::now())
        )
    }

    /// The key with this id and its secret's hash (any organisation: the id comes from the presented key).
    pub async fn api_key_secret(&self, id: Uuid) -> Result<Option<(ApiKey, String)>, StoreError> {
        dispatch!(self, api_key_secret(id))
    }

    pub async fn touch_api_key(&self, id: Uuid) -> Result<(), StoreError> {
        dispatch_write!(self, touch_api_key(id, Utc::now()))
    }

    pub async fn list_api_keys(&self, org: OrgId) -> Result<Vec<ApiKey>, StoreError> {
        dispatch!(self, list_api_keys(org))
    }

    pub async fn revoke_api_key(&self, org: OrgId, id: Uuid) -> Result<bool, StoreError> {
        dispatch_write!(self, revoke_api_key(org, id, Utc::now()))
    }

    /// Stores (or replaces) a sealed secret.
    pub async fn put_secret(&self, org: OrgId, secret: &SealedSecret) -> Result<(), StoreError> {
        dispatch_write!(self, put_secret(org, secret))
    }

    pub async fn get_secret(
        &self,
        org: OrgId,
        name: &str,
    ) -> Result<Option<SealedSecret>, StoreError> {
        dispatch!(self, get_secret(org, name))
    }

    pub async fn list_secrets(&self, org: OrgId) -> Result<Vec<SealedSecret>, StoreError> {
        dispatch!(self, list_secrets(org))
    }

    pub async fn delete_secret(&self, org: OrgId, name: &str) -> Result<bool, StoreError> {
        dispatch_write!(self, delete_secret(org, name))
    }

    pub async fn list_orgs(&self) -> Result<Vec<Org>, StoreError> {
        dispatch!(self, list_orgs())
    }

    pub async fn get_org(&self, org: OrgId) -> Result<Option<Org>, StoreError> {
        dispatch!(self, get_org(org))
    }

    /// Days `org`'s recordings are kept (`None`: forever).
    pub async fn set_recording_retention(
        &self,
        org: OrgId,
        days: Option<i32>,
    ) -> Result<bool, StoreError> {
        if days.is_some_and(|d| d <= 0) {
            return Err(StoreError::InvalidInput(
                "retention (days must be positive)",
            ));
        }
        dispatch_write!(self, set_retention(org, days))
    }

    /// Up to `limit` of `org`'s recordings of calls that started before `cutoff`, oldest first.
    pub async fn recordings_before(
        &self,
        org: OrgId,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<RecordingRecord>, StoreError> {
        dispatch!(self, recordings_before(org, cutoff, i64::from(limit)))
    }

    pub async fn delete_recording_row(
        &self,
        org: OrgId,
        sid: &CallSid,
    ) -> Result<bool, StoreError> {
        dispatch_write!(self, delete_recording_row(org, sid))
    }

    /// The org's contacts, most recently updated first (at most `limit`).
    pub async fn list_contacts(&self, org: OrgId, limit: u32) -> Result<Vec<Contact>, StoreError> {
        dispatch!(self, list_contacts(org, i64::from(limit)))
    }

    /// The org's phone numbers (E.164).
    pub async fn org_numbers(&self, org: OrgId) -> Result<Vec<String>, StoreError> {
        dispatch!(self, org_numbers(org))
    }

    pub async fn appointments_of_call(
        &self,
        org: OrgId,
        sid: &CallSid,
    ) -> Result<Vec<Appointment>, StoreError> {
        dispatch!(self, appointments_of_call(org, sid))
    }

    pub async fn callbacks_of_call(
        &self,
        org: OrgId,
        sid: &CallSid,
    ) -> Result<Vec<CallbackRequest>, StoreError> {
        dispatch!(self, callbacks_of_call(org, sid))
    }

    /// The org's calls matching `f`, newest first (placeholders, which have no call details yet, are left
    /// out). Each with its outcome, derived from its rows.
    pub async fn search_calls(
        &self,
        org: OrgId,
        f: &CallFilter,
    ) -> Result<Vec<CallListItem>, StoreError> {
        let limit = match f.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        dispatch!(self, search_calls(org, f, i64::from(limit)))
    }

    /// The call's outcome (see [`OUTCOMES`](crate::staff::OUTCOMES)); `None` if it is not `org`'s.
    pub async fn call_outcome(
        &self,
        org: OrgId,
        sid: &CallSid,
    ) -> Result<Option<String>, StoreError> {
        dispatch!(self, call_outcome(org, sid))
    }
}
