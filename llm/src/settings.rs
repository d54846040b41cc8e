//! Which provider and model a clinic's calls use: the server's defaults (`VOXANNE_LLM_*`, read
//! by `api`) under the clinic file's `[llm]` table.

use std::time::Duration;

use receptionist::clinic::{LLM_KEY_ENV_PREFIX, LlmSection};

/// Where no base URL is configured: OpenAI's.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// How long a turn waits for the model's first token (or first tool-call delta) before the
/// offline receptionist answers it. 3 s: the call core says its filler ("One moment,
/// please.") at 1.5 s, so the caller hears something at 1.5 s and the offline answer at ~3 s;
/// the core gives a brain 6 s per event, so the fallback always lands well inside that. A
/// healthy hosted model's first token takes 0.2–1 s; a local one on a busy box, up to ~2 s.
pub const FIRST_TOKEN_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest first-token timeout a clinic file may set (`first_token_timeout_ms`): below the
/// turn's event budget ([`crate::brain::EVENT_BUDGET`], 4.5 s, itself below the call core's
/// 6 s), so the first-token fallback, not the budget, answers a slow model.
pub const MAX_FIRST_TOKEN_TIMEOUT: Duration = Duration::from_secs(4);

/// Longest wait for this turn's knowledge retrieval (an embedding of the caller's words and a
/// scan of the clinic's chunks: a few milliseconds normally). 500 ms: past it the prompt goes
/// without notes rather than the caller waiting; the model can still say it does not know.
pub const KNOWLEDGE_TIMEOUT: Duration = Duration::from_millis(500);

/// Longest silence between two chunks of a stream that has started before it counts as
/// stalled. 3 s: token gaps of a working stream are tens of milliseconds; a pause of seconds
/// is a provider in trouble, and the caller is already hearing nothing.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Model calls per caller turn (each tool round is one). 4: check availability, then book,
/// then speak is three; a fourth allows one correction. A model looping on tools past that is
/// cut off and the offline receptionist answers.
pub const MAX_ROUNDS: usize = 4;

/// One clinic's LLM settings, resolved.
#[derive(Clone, PartialEq)]
pub struct LlmSettings {
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    pub headers: Vec<(String, String)>,
    pub first_token_timeout: Duration,
    pub stall_timeout: Duration,
    pub max_rounds: usize,
    /// Ask for `stream_options.include_usage`.
    pub stream_usage: bool,
    /// [`KNOWLEDGE_TIMEOUT`] (tests on a loaded machine set it long).
    pub knowledge_timeout: Duration,
    /// Longest the turn sends the call core nothing ([`crate::brain::EVENT_BUDGET`]).
    pub event_budget: Duration,
}

impl std::fmt::Debug for LlmSettings {
    // The key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmSettings")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "…"))
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("first_token_timeout", &self.first_token_timeout)
            .finish_non_exhaustive()
    }
}

impl LlmSettings {
    /// Settings for `model` at `base_url`, with the documented defaults.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            temperature: None,
            max_tokens: None,
            headers: Vec::new(),
            first_token_timeout: FIRST_TOKEN_TIMEOUT,
            stall_timeout: STALL_TIMEOUT,
            max_rounds: MAX_ROUNDS,
            stream_usage: true,
            knowledge_timeout: KNOWLEDGE_TIMEOUT,
            event_budget: crate::brain::EVENT_BUDGET,
        }
    }
}

/// The server's defaults (`VOXANNE_BRAIN=llm` and `VOXANNE_LLM_*`).
#[derive(Clone, Default, PartialEq)]
pub struct LlmDefaults {
    /// `VOXANNE_BRAIN=llm`: every clinic's calls use the LLM unless its `[llm]` says
    /// `enabled = false`.
    pub default_on: bool,
    pub base_url: Option<String>,
    pub model: Option<String>,
    pub api_key: Option<String>,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for LlmDefaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmDefaults")
            .field("default_on", &self.default_on)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

/// Why a clinic that asked for the LLM cannot have it (its calls get the offline receptionist).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("no model: set VOXANNE_LLM_MODEL or the clinic file's llm.model")]
    NoModel,
    #[error("llm.api_key_env names {0}, which is not set")]
    KeyNotSet(String),
    #[error("llm.api_key_env names {0}: only VOXANNE_LLM_KEY_* variables may hold a clinic's key")]
    KeyEnvNotAllowed(String),
}

impl LlmDefaults {
    /// Whether `url` is the server's own provider (`VOXANNE_LLM_BASE_URL`, else
    /// [`DEFAULT_BASE_URL`]), ignoring a trailing slash: the only URL the server's
    /// `VOXANNE_LLM_API_KEY` is sent to.
    pub fn is_server_url(&self, url: &str) -> bool {
        let server = self.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL);
        url.trim_end_matches('/') == server.trim_end_matches('/')
    }

    /// The settings for a clinic with this `[llm]` table: `Ok(None)` when its calls use the
    /// offline receptionist. `env` reads the server's environment (for `api_key_env`).
    pub fn resolve(
        &self,
        clinic: Option<&LlmSection>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<LlmSettings>, SettingsError> {
        let on = match clinic {
            Some(s) => s.enabled.unwrap_or(true),
            None => self.default_on,
        };
        if !on {
            return Ok(None);
        }
        let section = clinic.cloned().unwrap_or_default();
        let model = section
            .model
            .clone()
            .or_else(|| self.model.clone())
            .ok_or(SettingsError::NoModel)?;
        let base_url = section
            .base_url
            .clone()
            .or_else(|| self.base_url.clone())
            .unwrap_or_else(|| DEFAULT_BASE_URL.into());
        let api_key = match (&section.api_key, &section.api_key_env) {
            (Some(k), _) => Some(k.clone()),
            (None, Some(name)) => {
                // Checked again here (the clinic file checks it too): the variable's value is
                // sent to the clinic's base URL, which its admin chooses.
                if !name.starts_with(LLM_KEY_ENV_PREFIX) || name.len() == LLM_KEY_ENV_PREFIX.len() {
                    return Err(SettingsError::KeyEnvNotAllowed(name.clone()));
                }
                Some(env(name).ok_or_else(|| SettingsError::KeyNotSet(name.clone()))?)
            }
            // The server's key goes only to the server's own provider, never to a URL a
            // clinic file chose.
            (None, None) if self.is_server_url(&base_url) => self.api_key.clone(),
            (None, None) => None,
        };
        // The server's extra headers may carry credentials too (`api-key`, a gateway token):
        // like its key, they go only to the server's own provider.
        let mut headers = if self.is_server_url(&base_url) {
            self.headers.clone()
        } else {
            Vec::new()
        };
        for (k, v) in &section.headers {
            headers.retain(|(name, _)| !name.eq_ignore_ascii_case(k));
            headers.push((k.clone(), v.clone()));
        }
        let mut s = LlmSettings::new(base_url, model);
        s.api_key = api_key;
        s.temperature = section.temperature.or(self.temperature);
        s.max_tokens = section.max_tokens.or(self.max_tokens);
        s.headers = headers;
        if let Some(ms) = section.first_token_timeout_ms {
            // The clinic file allows at most this too; kept below the event budget here anyway.
            s.first_token_timeout =
                Duration::from_millis(u64::from(ms)).min(MAX_FIRST_TOKEN_TIMEOUT);
        }
        s.stream_usage = section.stream_usage.unwrap_or(true);
        Ok(Some(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clinic_table_overrides_the_server_defaults() {
        let server = LlmDefaults {
            default_on: false,
            base_url: Some("http://gw/v1".into()),
            model: Some("small".into()),
            api_key: Some("server-key".into()),
            temperature: Some(0.2),
            ..LlmDefaults::default()
        };
        assert_eq!(server.resolve(None, |_| None), Ok(None), "off by default");
        let section = LlmSection {
            model: Some("big".into()),
            api_key_env: Some("VOXANNE_LLM_KEY_CLINIC".into()),
            ..LlmSection::default()
        };
        let s = server
            .resolve(Some(&section), |k| {
                (k == "VOXANNE_LLM_KEY_CLINIC").then(|| "ck".into())
            })
            .unwrap()
            .unwrap();
        assert_eq!(s.model, "big");
        assert_eq!(s.base_url, "http://gw/v1");
        assert_eq!(s.api_key.as_deref(), Some("ck"));
        assert_eq!(s.temperature, Some(0.2));
        assert_eq!(
            server.resolve(Some(&section), |_| None),
            Err(SettingsError::KeyNotSet("VOXANNE_LLM_KEY_CLINIC".into()))
        );
        let on = LlmDefaults {
            default_on: true,
            ..server.clone()
        };
        let off = LlmSection {
            enabled: Some(false),
            ..LlmSection::default()
        };
        assert_eq!(on.resolve(Some(&off), |_| None), Ok(None));
        assert_eq!(
            on.resolve(None, |_| None)
                .unwrap()
                .unwrap()
                .api_key
                .as_deref(),
            Some("server-key")
        );
        assert!(!format!("{s:?}").contains("ck"), "the key is not in logs");
    }

    #[test]
    fn the_first_token_timeout_stays_inside_the_event_budget() {
        const { assert!(FIRST_TOKEN_TIMEOUT.as_millis() < MAX_FIRST_TOKEN_TIMEOUT.as_millis()) };
        const { assert!(MAX_FIRST_TOKEN_TIMEOUT.as_millis() < crate::brain::EVENT_BUDGET.as_millis()) };
        let server = LlmDefaults {
            default_on: true,
            model: Some("m".into()),
            ..LlmDefaults::default()
        };
        let section = LlmSection {
            first_token_timeout_ms: Some(60_000),
            ..LlmSection::default()
        };
        let s = server.resolve(Some(&section), |_| None).unwrap().unwrap();
        assert_eq!(s.first_token_timeout, MAX_FIRST_TOKEN_TIMEOUT);
    }

    #[test]
    fn a_clinic_file_cannot_read_server_variables_or_get_the_servers_key_elsewhere() {
        let server = LlmDefaults {
            default_on: true,
            base_url: Some("http://gw/v1/".into()),
            model: Some("small".into()),
            api_key: Some("server-key".into()),
            headers: vec![("api-key".into(), "server-header-key".into())],
            ..LlmDefaults::default()
        };
        let env = |k: &str| Some(format!("value of {k}"));
        for name in ["VOXANNE_SECRET_KEY", "DATABASE_URL", "VOXANNE_LLM_KEY_"] {
            let section = LlmSection {
                api_key_env: Some(name.into()),
                ..LlmSection::default()
            };
            assert_eq!(
                server.resolve(Some(&section), env),
                Err(SettingsError::KeyEnvNotAllowed(name.into()))
            );
        }
        // Another URL: no key at all, not the server's.
        let elsewhere = LlmSection {
            base_url: Some("http://tenant.example/v1".into()),
            ..LlmSection::default()
        };
        let s = server.resolve(Some(&elsewhere), env).unwrap().unwrap();
        assert_eq!(s.api_key, None);
        assert_eq!(s.headers, Vec::<(String, String)>::new(), "nor its headers");
        // The server's own URL (trailing slash aside): the server's key.
        let same = LlmSection {
            base_url: Some("http://gw/v1".into()),
            ..LlmSection::default()
        };
        let s = server.resolve(Some(&same), env).unwrap().unwrap();
        assert_eq!(s.api_key.as_deref(), Some("server-key"));
        assert_eq!(
            s.headers,
            vec![("api-key".to_string(), "server-header-key".to_string())]
        );
        // No server URL: the default is OpenAI's, and only it gets the key.
        let openai = LlmDefaults {
            base_url: None,
            ..server.clone()
        };
        assert_eq!(
            openai
                .resolve(None, env)
                .unwrap()
                .unwrap()
                .api_key
                .as_deref(),
            Some("server-key")
        );
        assert_eq!(
            openai
                .resolve(Some(&elsewhere), env)
                .unwrap()
                .unwrap()
                .api_key,
            None
        );
    }
}
