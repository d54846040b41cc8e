//! Which provider and model a clinic's calls use: the server's defaults (`VOXANNE_LLM_*`, read
//! by `api`) under the clinic file's `[llm]` table.

use std::time::Duration;

use receptionist::clinic::LlmSection;

/// Where no base URL is configured: OpenAI's.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// How long a turn waits for the model's first token (or first tool-call delta) before the
/// offline receptionist answers it. 3 s: the call core says its filler ("One moment,
/// please.") at 1.5 s, so the caller hears something at 1.5 s and the offline answer at ~3 s;
/// the core gives a brain 6 s per event, so the fallback always lands well inside that. A
/// healthy hosted model's first token takes 0.2–1 s; a local one on a busy box, up to ~2 s.
pub const FIRST_TOKEN_TIMEOUT: Duration = Duration::from_secs(3);

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
}

impl LlmDefaults {
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
                Some(env(name).ok_or_else(|| SettingsError::KeyNotSet(name.clone()))?)
            }
            (None, None) => self.api_key.clone(),
        };
        let mut headers = self.headers.clone();
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
            s.first_token_timeout = Duration::from_millis(u64::from(ms));
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
            api_key_env: Some("CLINIC_KEY".into()),
            ..LlmSection::default()
        };
        let s = server
            .resolve(Some(&section), |k| (k == "CLINIC_KEY").then(|| "ck".into()))
            .unwrap()
            .unwrap();
        assert_eq!(s.model, "big");
        assert_eq!(s.base_url, "http://gw/v1");
        assert_eq!(s.api_key.as_deref(), Some("ck"));
        assert_eq!(s.temperature, Some(0.2));
        assert_eq!(
            server.resolve(Some(&section), |_| None),
            Err(SettingsError::KeyNotSet("CLINIC_KEY".into()))
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
}
