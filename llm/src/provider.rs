//! Providers: one HTTP client (connection pool) and one circuit breaker per OpenAI-compatible
//! server, shared by every call of the process, so a second call reuses the first one's
//! connection (no new TCP/TLS handshake per turn) and a provider that is down is skipped by all
//! calls at once.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::middleware::ReqwestService;

use crate::breaker::{CircuitBreaker, FAILURES_TO_OPEN, OPEN_FOR, Permit};
use crate::settings::LlmSettings;

/// Longest wait for a TCP (and TLS) connection to the provider. 2 s: inside the first-token
/// timeout, so a provider that is unreachable fails the turn rather than the timeout doing it
/// with a half-open connection left behind.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The provider could not be set up (a header the HTTP library refuses).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("LLM provider: {0}")]
pub struct ProviderError(pub String);

/// One provider, as a call's brain uses it.
#[derive(Clone)]
pub struct Provider {
    pub(crate) client: Client<OpenAIConfig>,
    breaker: Arc<Mutex<CircuitBreaker>>,
    pub(crate) settings: LlmSettings,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Provider {
    pub fn settings(&self) -> &LlmSettings {
        &self.settings
    }

    /// The Chat Completions client (shared connection pool).
    pub fn client(&self) -> &Client<OpenAIConfig> {
        &self.client
    }

    /// Asks the breaker whether this turn may use the provider.
    pub fn permit(&self) -> Permit {
        self.breaker
            .lock()
            .map(|mut b| b.permit(Instant::now()))
            .unwrap_or(Permit::Allowed)
    }

    /// Reports how a turn that used the provider went.
    pub fn record(&self, ok: bool) {
        if let Ok(mut b) = self.breaker.lock() {
            if ok {
                b.record_success();
            } else {
                b.record_failure(Instant::now());
            }
        }
    }

    /// Whether the breaker is open (the provider is being skipped).
    pub fn is_skipped(&self) -> bool {
        self.breaker.lock().map(|b| b.is_open()).unwrap_or(false)
    }
}

/// A breaker's key: (base URL without a trailing slash, hash of the API key, model).
type BreakerKey = (String, u64, String);

/// Every provider of the process: clients by (base URL, key, headers), breakers by (base URL,
/// key, model) — one clinic's wrong key or model must not open the breaker for every clinic on
/// the same server. Keys enter the maps only as hashes (per-process random [`RandomState`]),
/// so neither the maps nor `Debug` hold a secret.
pub struct Providers {
    clients: Mutex<HashMap<u64, Client<OpenAIConfig>>>,
    breakers: Mutex<HashMap<BreakerKey, Arc<Mutex<CircuitBreaker>>>>,
    hasher: RandomState,
    failures_to_open: u32,
    open_for: Duration,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let clients = self.clients.lock().map(|c| c.len()).unwrap_or(0);
        let breakers: Vec<(String, String)> = self
            .breakers
            .lock()
            .map(|b| b.keys().map(|(u, _, m)| (u.clone(), m.clone())).collect())
            .unwrap_or_default();
        f.debug_struct("Providers")
            .field("clients", &clients)
            .field("breakers", &breakers)
            .field("failures_to_open", &self.failures_to_open)
            .field("open_for", &self.open_for)
            .finish()
    }
}

impl Default for Providers {
    fn default() -> Self {
        Self::new()
    }
}

impl Providers {
    /// With the documented breaker ([`FAILURES_TO_OPEN`], [`OPEN_FOR`]).
    pub fn new() -> Self {
        Self::with_breaker(FAILURES_TO_OPEN, OPEN_FOR)
    }

    pub fn with_breaker(failures_to_open: u32, open_for: Duration) -> Self {
        Self {
            clients: Mutex::new(HashMap::new()),
            breakers: Mutex::new(HashMap::new()),
            hasher: RandomState::new(),
            failures_to_open,
            open_for,
        }
    }

    /// The provider for `settings`, built on first use.
    pub fn provider(&self, settings: &LlmSettings) -> Result<Provider, ProviderError> {
        let key = self.hasher.hash_one((
            &settings.base_url,
            settings.api_key.as_deref().unwrap_or(""),
            &settings.headers,
        ));
        let key_hash = self
            .hasher
            .hash_one(settings.api_key.as_deref().unwrap_or(""));
        let client = {
            let mut clients = self
                .clients
                .lock()
                .map_err(|_| ProviderError("poisoned".into()))?;
            match clients.get(&key) {
                Some(c) => c.clone(),
                None => {
                    let c = build_client(settings)?;
                    clients.insert(key, c.clone());
                    c
                }
            }
        };
        let breaker = self
            .breakers
            .lock()
            .map_err(|_| ProviderError("poisoned".into()))?
            .entry((
                settings.base_url.trim_end_matches('/').to_string(),
                key_hash,
                settings.model.clone(),
            ))
            .or_insert_with(|| {
                Arc::new(Mutex::new(CircuitBreaker::new(
                    self.failures_to_open,
                    self.open_for,
                )))
            })
            .clone();
        Ok(Provider {
            client,
            breaker,
            settings: settings.clone(),
        })
    }
}

/// Installs rustls' ring provider (reqwest is built without one, to keep aws-lc's C build out;
/// idempotent) and builds the client without async-openai's default retry layer: a retry with
/// backoff after a 429 or 500 would spend the caller's first-token budget in silence, where the
/// offline receptionist answers at once.
fn build_client(settings: &LlmSettings) -> Result<Client<OpenAIConfig>, ProviderError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .map_err(|e| ProviderError(e.to_string()))?;
    let mut config = OpenAIConfig::new()
        .with_api_base(settings.base_url.trim_end_matches('/'))
        // Never the process's OPENAI_API_KEY by accident: the key is what was configured.
        .with_api_key(settings.api_key.clone().unwrap_or_default());
    for (name, value) in &settings.headers {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| ProviderError(format!("header {name:?}: {e}")))?;
        config = config
            .with_header(name, value.as_str())
            .map_err(|e| ProviderError(e.to_string()))?;
    }
    Ok(Client::with_config(config).with_http_service(ReqwestService::new(http)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breakers_are_per_key_and_model_and_debug_shows_no_key() {
        let providers = Providers::with_breaker(1, Duration::from_secs(600));
        let mut a = LlmSettings::new("http://gw/v1", "m");
        a.api_key = Some("sk-secret-a".into());
        let mut b = a.clone();
        b.api_key = Some("sk-secret-b".into());
        let mut c = a.clone();
        c.model = "other".into();
        let pa = providers.provider(&a).unwrap();
        assert_eq!(pa.permit(), Permit::Allowed);
        pa.record(false);
        assert!(pa.is_skipped(), "one failure opens this test's breaker");
        assert!(!providers.provider(&b).unwrap().is_skipped(), "another key");
        assert!(
            !providers.provider(&c).unwrap().is_skipped(),
            "another model"
        );
        assert!(providers.provider(&a).unwrap().is_skipped(), "the same one");
        let debug = format!("{providers:?}");
        assert!(!debug.contains("sk-secret"), "{debug}");
    }
}
