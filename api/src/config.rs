//! Configuration: read once from the environment at start, validated, handed down as types.
//! Every variable is documented in README.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use engines::embedded::{EmbeddedOptions, TtsChoice, VadChoice};

/// Which engines answer calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineChoice {
    /// Test doubles (scripted STT, tone TTS; the receptionist still answers unless
    /// `VOXANNE_BRAIN=echo`): for trying the call flow and for load tests. Never the default.
    Test,
    /// The embedded offline engines (Whisper, Piper, earshot or Silero). The default.
    Embedded,
}

/// Which brain answers calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrainChoice {
    /// The offline clinic receptionist, one session per call built from the clinic's file. The
    /// default, with either engine set.
    Receptionist,
    /// The engines' shared brain (`VOXANNE_BRAIN=echo`: the echo test double, which repeats
    /// what it heard; tests inject others). A call's transfer is still only ever to its
    /// clinic's `transfer_number`.
    Shared,
}

/// Concurrent offline calls one core sustains (Whisper base + Piper, the receptionist): 8 calls
/// on 2 cores keep voice-to-voice p50 at 1.3–1.7 s, 10 reach 1.5–1.8 s and 12 fall behind
/// (2.8–3 s, turns queueing for the CPU), measured with `voxanne load --spoken`.
pub const CALLS_PER_CORE: usize = 4;

fn list(v: Option<String>) -> Vec<String> {
    v.map(|v| {
        v.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

/// Server configuration.
/// `Debug` leaves secrets out (see the impl below): a configuration printed in a log or a panic
/// message carries no token, key or database password.
#[derive(Clone)]
pub struct Config {
    /// `VOXANNE_ADDR`: where to listen. Default `127.0.0.1:8080`.
    pub addr: SocketAddr,
    /// `VOXANNE_PUBLIC_URL`: the URL Twilio reaches us at (`https://…`), without a trailing
    /// slash. Signatures are checked against it and the `wss://` stream URL derives from it.
    /// Default `http://{addr}` (local use only).
    pub public_url: String,
    /// `TWILIO_AUTH_TOKEN`: checks Twilio's signatures and signs stream tokens. Required:
    /// there is no mode that skips signature checks.
    pub auth_token: String,
    /// `DATABASE_URL`: `postgres://…` for Postgres; unset for SQLite in the data dir.
    pub database_url: Option<String>,
    /// `VOXANNE_SECRET_KEY`: 32 bytes (base64 or hex) from which the access-token signing key
    /// and the key sealing clinics' secrets are derived. Unset: a key file the server creates in
    /// the data dir (`secret.key`, mode 0600) on first start. See `staff::crypto` for rotation.
    pub secret_key: Option<String>,
    /// `VOXANNE_SECRET_KEYS_PREVIOUS`: comma-separated keys rotated out, still accepted to open
    /// old secrets and verify tokens until they expire.
    pub secret_keys_previous: Vec<String>,
    /// `VOXANNE_CORS_ORIGINS`: comma-separated origins allowed to call `/api/v1` from a
    /// browser (e.g. `https://admin.clinic.example`). Default: none (the dashboard is served
    /// from the same origin and needs no CORS).
    pub cors_origins: Vec<String>,
    /// `VOXANNE_METRICS_TOKEN`: when set, `/metrics` needs `Authorization: Bearer <token>`;
    /// unset, `/metrics` answers only clients on loopback (a Prometheus on the same box).
    pub metrics_token: Option<String>,
    /// `VOXANNE_DATA_DIR`: recordings, the SQLite database, spill files, models. Default
    /// `./data`.
    pub data_dir: PathBuf,
    /// `VOXANNE_ENGINES`: `embedded` (default) or `test`.
    pub engines: EngineChoice,
    /// `VOXANNE_BRAIN`: `receptionist` (default), `llm` (every clinic's calls through an
    /// OpenAI-compatible server, see [`Config::llm`]) or `echo` (with the test engines only).
    pub brain: BrainChoice,
    /// `VOXANNE_LLM_*`: the server's LLM defaults, under each clinic file's `[llm]` table
    /// (`default_on` is `VOXANNE_BRAIN=llm`). A clinic with an `[llm]` table uses the LLM even
    /// when `VOXANNE_BRAIN` is `receptionist`.
    pub llm: llm::LlmDefaults,
    /// `VOXANNE_MAX_CALLS`: concurrent calls accepted; more get a polite busy message. Default:
    /// with the embedded engines, [`CALLS_PER_CORE`] per core (what the cores sustain: beyond
    /// it every call's replies slow down together); with the test engines, 100.
    pub max_calls: usize,
    /// `VOXANNE_MAX_CALLS_PER_NUMBER`: concurrent calls to one of our numbers (one clinic's
    /// line), so one clinic's lunchtime burst cannot take every slot of a shared server.
    /// Default: no limit beyond `max_calls`.
    pub max_calls_per_number: Option<usize>,
    /// `VOXANNE_STT_CONCURRENCY`: concurrent speech-to-text decodes across all calls. Default:
    /// the number of cores.
    pub stt_concurrency: usize,
    /// `VOXANNE_MODELS_DIR`: where model files are. Default `<data dir>/models`.
    pub models_dir: PathBuf,
    /// `VOXANNE_STT_MODEL`: `base` (default), `tiny.en` (less CPU, less accurate) or the path
    /// of any whisper.cpp ggml model.
    pub stt_model: String,
    /// `VOXANNE_TTS`: `piper` (default) or `festival` (the permissive fallback voice).
    pub tts: TtsChoice,
    /// `VOXANNE_PIPER_VOICE`: path of a Piper `.onnx` voice (its `.onnx.json` next to it).
    /// Default: the fetched `en_US-joe-medium`.
    pub piper_voice: Option<PathBuf>,
    /// `VOXANNE_VAD`: `earshot` (default) or `silero` (noisy lines).
    pub vad: VadChoice,
    /// `VOXANNE_TTS_CONCURRENCY`: sentences synthesised at once across all calls. Default:
    /// the number of cores.
    pub tts_concurrency: usize,
    /// `VOXANNE_EARLY_TRANSCRIBE_MS`: start transcribing after this much caller silence,
    /// before the turn has ended (0: off). Default 250 with the embedded engines (the reply
    /// no longer waits for the decode after the 700 ms end-of-turn silence); off with the test
    /// engines, whose scripted transcripts come in request order.
    pub early_transcribe_ms: Option<u32>,
    /// `VOXANNE_TWILIO_API_URL`: Twilio's REST API base, for placing outbound calls (tests
    /// point it at a local server). Default `https://api.twilio.com`.
    pub twilio_api_url: String,
    /// `VOXANNE_WEBHOOK_RATE`: `burst/per_second`, the Twilio webhook requests (voice,
    /// status, connect action, media stream upgrades) one client address may make before it is
    /// answered 429. Default `300/50`: far above what Twilio sends for one clinic line (a voice
    /// webhook and a few status callbacks per call), far below a flood.
    pub webhook_rate: (u32, f64),
    /// `VOXANNE_WEBHOOK_RETRIES`: comma-separated waits before each retry of an outgoing
    /// webhook delivery that failed (`500ms`, `5s`, `2m`, `1h`); one attempt more than there are
    /// waits, then the delivery is marked failed. Default [`DEFAULT_WEBHOOK_RETRIES`].
    pub webhook_retries: Vec<Duration>,
    /// `VOXANNE_WEBHOOK_TIMEOUT`: how long one delivery attempt may take (connect, send, the
    /// receiver's answer) before it counts as failed. Default 10 s.
    pub webhook_timeout: Duration,
    /// `VOXANNE_TEST_TRANSCRIPTS`: with the test engines, what the scripted speech-to-text
    /// "hears", `|`-separated, in order. Default: a short booking call ending in "bye".
    pub test_transcripts: Option<Vec<String>>,
}

/// `VOXANNE_BRAIN=llm` and `VOXANNE_LLM_*` from the process environment alone, for commands
/// that need no whole [`Config`] (`voxanne chat`).
pub fn llm_from_env() -> Result<llm::LlmDefaults, ConfigError> {
    let get = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty());
    let on = get("VOXANNE_BRAIN").as_deref() == Some("llm");
    llm_defaults(&get, on)
}

/// `VOXANNE_LLM_*`. With `VOXANNE_BRAIN=llm` the base URL and the model are required: the
/// caller's words go to that server, so where is never a default.
fn llm_defaults(
    nonempty: &impl Fn(&str) -> Option<String>,
    default_on: bool,
) -> Result<llm::LlmDefaults, ConfigError> {
    let base_url = nonempty("VOXANNE_LLM_BASE_URL").map(|u| u.trim().to_string());
    if let Some(url) = &base_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(ConfigError::Invalid {
            name: "VOXANNE_LLM_BASE_URL",
            value: url.clone(),
            why: "expected an http:// or https:// URL ending in the API's version, e.g. \
                  https://api.openai.com/v1 or http://127.0.0.1:11434/v1"
                .into(),
        });
    }
    let model = nonempty("VOXANNE_LLM_MODEL").map(|m| m.trim().to_string());
    if default_on {
        if base_url.is_none() {
            return Err(ConfigError::Missing {
                name: "VOXANNE_LLM_BASE_URL",
                why: "VOXANNE_BRAIN=llm sends callers' words to an OpenAI-compatible server; \
                      name it (e.g. https://api.openai.com/v1)",
            });
        }
        if model.is_none() {
            return Err(ConfigError::Missing {
                name: "VOXANNE_LLM_MODEL",
                why: "VOXANNE_BRAIN=llm needs the model to ask (e.g. gpt-4o-mini, llama3.1)",
            });
        }
    }
    let temperature = match nonempty("VOXANNE_LLM_TEMPERATURE") {
        None => None,
        Some(v) => match v.trim().parse::<f32>() {
            Ok(t) if (0.0..=2.0).contains(&t) => Some(t),
            _ => {
                return Err(ConfigError::Invalid {
                    name: "VOXANNE_LLM_TEMPERATURE",
                    value: v,
                    why: "expected a number from 0 to 2".into(),
                });
            }
        },
    };
    let max_tokens = match nonempty("VOXANNE_LLM_MAX_TOKENS") {
        None => None,
        Some(v) => match v.trim().parse::<u32>() {
            Ok(n) if (1..=4096).contains(&n) => Some(n),
            _ => {
                return Err(ConfigError::Invalid {
                    name: "VOXANNE_LLM_MAX_TOKENS",
                    value: v,
                    why: "expected a whole number from 1 to 4096".into(),
                });
            }
        },
    };
    let mut headers = Vec::new();
    if let Some(v) = nonempty("VOXANNE_LLM_HEADERS") {
        for pair in v.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            match pair.split_once(':') {
                Some((k, val)) if !k.trim().is_empty() => {
                    headers.push((k.trim().to_string(), val.trim().to_string()))
                }
                _ => {
                    return Err(ConfigError::Invalid {
                        name: "VOXANNE_LLM_HEADERS",
                        value: "(not shown: may hold keys)".into(),
                        why: "expected `Name: value` pairs separated by `;`".into(),
                    });
                }
            }
        }
    }
    Ok(llm::LlmDefaults {
        default_on,
        base_url,
        model,
        api_key: nonempty("VOXANNE_LLM_API_KEY"),
        temperature,
        max_tokens,
        headers,
    })
}

/// Waits between outgoing webhook attempts: 8 retries over about 22 hours (a receiver down
/// overnight still gets the day's events), each wait drawn up to 20% longer so endpoints that
/// fail together do not retry together.
pub const DEFAULT_WEBHOOK_RETRIES: &str = "5s,30s,2m,10m,1h,3h,6h,12h";

/// `250ms`, `5s`, `2m`, `1h` (a bare number is seconds).
fn parse_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let n: u64 = n.parse().ok()?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    };
    (!d.is_zero()).then_some(d)
}

/// A comma-separated list of [`parse_duration`]s, at least one, at most 30.
fn parse_durations(v: &str) -> Option<Vec<Duration>> {
    let list: Option<Vec<Duration>> = v.split(',').map(parse_duration).collect();
    list.filter(|l| !l.is_empty() && l.len() <= 30)
}

/// `burst/per_second`, both above zero.
fn parse_rate(v: &str) -> Option<(u32, f64)> {
    let (burst, rate) = v.trim().split_once('/')?;
    let burst: u32 = burst.trim().parse().ok()?;
    let rate: f64 = rate.trim().parse().ok()?;
    (burst > 0 && rate > 0.0 && rate.is_finite()).then_some((burst, rate))
}

/// `postgres://user:password@host/db` with the password replaced.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |v: &Option<String>| if v.is_some() { "set" } else { "unset" };
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("public_url", &self.public_url)
            .field("auth_token", &"***")
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("secret_key", &set(&self.secret_key))
            .field("secret_keys_previous", &self.secret_keys_previous.len())
            .field("cors_origins", &self.cors_origins)
            .field("metrics_token", &set(&self.metrics_token))
            .field("data_dir", &self.data_dir)
            .field("engines", &self.engines)
            .field("brain", &self.brain)
            .field("llm", &self.llm)
            .field("max_calls", &self.max_calls)
            .field("max_calls_per_number", &self.max_calls_per_number)
            .field("stt_concurrency", &self.stt_concurrency)
            .field("models_dir", &self.models_dir)
            .field("stt_model", &self.stt_model)
            .field("tts", &self.tts)
            .field("vad", &self.vad)
            .field("tts_concurrency", &self.tts_concurrency)
            .field("early_transcribe_ms", &self.early_transcribe_ms)
            .field("webhook_rate", &self.webhook_rate)
            .field("twilio_api_url", &self.twilio_api_url)
            .field("webhook_retries", &self.webhook_retries)
            .field("webhook_timeout", &self.webhook_timeout)
            .finish_non_exhaustive()
    }
}

/// A configuration error, naming the variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is required: {why}")]
    Missing {
        name: &'static str,
        why: &'static str,
    },
    #[error("{name}={value:?} is invalid: {why}")]
    Invalid {
        name: &'static str,
        value: String,
        why: String,
    },
}

impl Config {
    /// Reads the configuration from `get` (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let nonempty = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let addr_text = nonempty("VOXANNE_ADDR").unwrap_or_else(|| "127.0.0.1:8080".into());
        let addr: SocketAddr = addr_text.parse().map_err(|e| ConfigError::Invalid {
            name: "VOXANNE_ADDR",
            value: addr_text.clone(),
            why: format!("{e} (expected host:port, e.g. 0.0.0.0:8080)"),
        })?;
        let public_url = nonempty("VOXANNE_PUBLIC_URL")
            .unwrap_or_else(|| format!("http://{addr}"))
            .trim_end_matches('/')
            .to_string();
        if !(public_url.starts_with("https://") || public_url.starts_with("http://")) {
            return Err(ConfigError::Invalid {
                name: "VOXANNE_PUBLIC_URL",
                value: public_url,
                why: "must start with https:// (or http:// for local use)".into(),
            });
        }
        let auth_token = nonempty("TWILIO_AUTH_TOKEN").ok_or(ConfigError::Missing {
            name: "TWILIO_AUTH_TOKEN",
            why: "every Twilio webhook is signature-checked; use your account's auth token \
                  (any secret string for local simulation)",
        })?;
        let engines = match nonempty("VOXANNE_ENGINES").as_deref() {
            None | Some("embedded") => EngineChoice::Embedded,
            Some("test") => EngineChoice::Test,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "VOXANNE_ENGINES",
                    value: other.into(),
                    why: "expected `embedded` or `test`".into(),
                });
            }
        };
        let (brain, llm_default_on) = match nonempty("VOXANNE_BRAIN").as_deref() {
            None | Some("receptionist") => (BrainChoice::Receptionist, false),
            Some("llm") => (BrainChoice::Receptionist, true),
            Some("echo") if engines == EngineChoice::Test => (BrainChoice::Shared, false),
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "VOXANNE_BRAIN",
                    value: other.into(),
                    why: "expected `receptionist`, `llm` (or `echo` with VOXANNE_ENGINES=test)"
                        .into(),
                });
            }
        };
        let llm = llm_defaults(&nonempty, llm_default_on)?;
        let number = |name: &'static str, default: usize| -> Result<usize, ConfigError> {
            match nonempty(name) {
                None => Ok(default),
                Some(v) => match v.parse::<usize>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(ConfigError::Invalid {
                        name,
                        value: v,
                        why: "expected a positive whole number".into(),
                    }),
                },
            }
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let tts = match nonempty("VOXANNE_TTS").as_deref() {
            None | Some("piper") => TtsChoice::Piper,
            Some("festival") => TtsChoice::Festival,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "VOXANNE_TTS",
                    value: other.into(),
                    why: "expected `piper` or `festival`".into(),
                });
            }
        };
        let vad = match nonempty("VOXANNE_VAD").as_deref() {
            None | Some("earshot") => VadChoice::Earshot,
            Some("silero") => VadChoice::Silero,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "VOXANNE_VAD",
                    value: other.into(),
                    why: "expected `earshot` or `silero`".into(),
                });
            }
        };
        let (data_dir, models_dir) = dirs_from_lookup(&get);
        let webhook_rate = match nonempty("VOXANNE_WEBHOOK_RATE") {
            None => (300, 50.0),
            Some(v) => parse_rate(&v).ok_or_else(|| ConfigError::Invalid {
                name: "VOXANNE_WEBHOOK_RATE",
                value: v.clone(),
                why: "expected burst/per_second with both above zero, e.g. 300/50".into(),
            })?,
        };
        let webhook_retries = {
            let v = nonempty("VOXANNE_WEBHOOK_RETRIES")
                .unwrap_or_else(|| DEFAULT_WEBHOOK_RETRIES.into());
            parse_durations(&v).ok_or_else(|| ConfigError::Invalid {
                name: "VOXANNE_WEBHOOK_RETRIES",
                value: v.clone(),
                why: "expected 1 to 30 comma-separated waits above zero, e.g. 5s,30s,2m,1h".into(),
            })?
        };
        let webhook_timeout = match nonempty("VOXANNE_WEBHOOK_TIMEOUT") {
            None => Duration::from_secs(10),
            Some(v) => parse_duration(&v)
                .filter(|d| *d <= Duration::from_secs(120))
                .ok_or_else(|| ConfigError::Invalid {
                    name: "VOXANNE_WEBHOOK_TIMEOUT",
                    value: v.clone(),
                    why: "expected a duration above zero, at most 120s, e.g. 10s or 500ms".into(),
                })?,
        };
        Ok(Self {
            webhook_rate,
            webhook_retries,
            webhook_timeout,
            twilio_api_url: nonempty("VOXANNE_TWILIO_API_URL")
                .unwrap_or_else(|| crate::outbound::TWILIO_API_BASE.to_string())
                .trim_end_matches('/')
                .to_string(),
            addr,
            public_url,
            auth_token,
            database_url: nonempty("DATABASE_URL"),
            secret_key: nonempty("VOXANNE_SECRET_KEY"),
            secret_keys_previous: list(nonempty("VOXANNE_SECRET_KEYS_PREVIOUS")),
            cors_origins: list(nonempty("VOXANNE_CORS_ORIGINS")),
            metrics_token: nonempty("VOXANNE_METRICS_TOKEN"),
            models_dir,
            data_dir,
            engines,
            brain,
            llm,
            stt_model: nonempty("VOXANNE_STT_MODEL").unwrap_or_else(|| "base".into()),
            tts,
            piper_voice: nonempty("VOXANNE_PIPER_VOICE").map(PathBuf::from),
            vad,
            tts_concurrency: number("VOXANNE_TTS_CONCURRENCY", cores)?,
            early_transcribe_ms: match nonempty("VOXANNE_EARLY_TRANSCRIBE_MS") {
                None if engines == EngineChoice::Embedded => Some(250),
                None => None,
                Some(v) => match v.parse::<u32>() {
                    Ok(0) => None,
                    Ok(n) if n <= 3000 => Some(n),
                    _ => {
                        return Err(ConfigError::Invalid {
                            name: "VOXANNE_EARLY_TRANSCRIBE_MS",
                            value: v,
                            why: "expected milliseconds, 0 (off) to 3000".into(),
                        });
                    }
                },
            },
            max_calls: number(
                "VOXANNE_MAX_CALLS",
                match engines {
                    EngineChoice::Embedded => CALLS_PER_CORE * cores,
                    EngineChoice::Test => 100,
                },
            )?,
            max_calls_per_number: match nonempty("VOXANNE_MAX_CALLS_PER_NUMBER") {
                None => None,
                Some(_) => Some(number("VOXANNE_MAX_CALLS_PER_NUMBER", 1)?),
            },
            stt_concurrency: number("VOXANNE_STT_CONCURRENCY", cores)?,
            test_transcripts: nonempty("VOXANNE_TEST_TRANSCRIPTS")
                .map(|v| v.split('|').map(|l| l.trim().to_string()).collect()),
        })
    }

    /// What the embedded engines should load.
    pub fn embedded_options(&self) -> EmbeddedOptions {
        EmbeddedOptions {
            models_dir: self.models_dir.clone(),
            stt_model: self.stt_model.clone(),
            tts: self.tts,
            piper_voice: self.piper_voice.clone(),
            vad: self.vad,
            stt_decoders: self.stt_concurrency,
            tts_sessions: self.tts_concurrency,
        }
    }

    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The Media Streams URL Twilio should open (`wss://` for an `https://` public URL).
    pub fn stream_url(&self) -> String {
        let ws = if let Some(rest) = self.public_url.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = self.public_url.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            self.public_url.clone()
        };
        format!("{ws}/twilio/media")
    }
}

/// `VOXANNE_DATA_DIR` (default `./data`) and `VOXANNE_MODELS_DIR` (default `<data dir>/models`),
/// for commands that need only these (`voxanne models`), not a whole [`Config`].
pub fn dirs_from_lookup(get: impl Fn(&str) -> Option<String>) -> (PathBuf, PathBuf) {
    let nonempty = |name: &str| get(name).filter(|v| !v.trim().is_empty());
    let data_dir = PathBuf::from(nonempty("VOXANNE_DATA_DIR").unwrap_or_else(|| "data".into()));
    let models_dir = nonempty("VOXANNE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| data_dir.join("models"));
    (data_dir, models_dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_need_only_the_auth_token() {
        let c = config(&[("TWILIO_AUTH_TOKEN", "t")]).unwrap();
        assert_eq!(c.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.public_url, "http://127.0.0.1:8080");
        assert_eq!(c.stream_url(), "ws://127.0.0.1:8080/twilio/media");
        assert_eq!(c.engines, EngineChoice::Embedded);
        assert!(c.database_url.is_none());
        assert_eq!(c.models_dir, PathBuf::from("data/models"));
        assert_eq!(c.stt_model, "base");
        assert_eq!((c.tts, c.vad), (TtsChoice::Piper, VadChoice::Earshot));
        assert_eq!(c.early_transcribe_ms, Some(250));
        let t = config(&[("TWILIO_AUTH_TOKEN", "t"), ("VOXANNE_ENGINES", "test")]).unwrap();
        assert_eq!(t.early_transcribe_ms, None);
    }

    #[test]
    fn the_llm_brain_needs_its_server_and_model_named() {
        let base = [("TWILIO_AUTH_TOKEN", "t"), ("VOXANNE_BRAIN", "llm")];
        let err = |vars: &[(&str, &str)]| config(vars).unwrap_err().to_string();
        assert!(
            err(&base).contains("VOXANNE_LLM_BASE_URL"),
            "{}",
            err(&base)
        );
        let with_url = [
            base[0],
            base[1],
            ("VOXANNE_LLM_BASE_URL", "http://127.0.0.1:11434/v1"),
        ];
        assert!(err(&with_url).contains("VOXANNE_LLM_MODEL"));
        let c = config(&[
            with_url[0],
            with_url[1],
            with_url[2],
            ("VOXANNE_LLM_MODEL", "llama3.1"),
            ("VOXANNE_LLM_API_KEY", "sk-secret-1"),
            ("VOXANNE_LLM_TEMPERATURE", "0.3"),
            ("VOXANNE_LLM_MAX_TOKENS", "200"),
            (
                "VOXANNE_LLM_HEADERS",
                "X-Gateway: g1; OpenAI-Organization: org-2",
            ),
        ])
        .unwrap();
        assert_eq!(
            c.brain,
            BrainChoice::Receptionist,
            "per-call sessions, wrapped"
        );
        assert!(c.llm.default_on);
        assert_eq!(c.llm.model.as_deref(), Some("llama3.1"));
        assert_eq!(c.llm.temperature, Some(0.3));
        assert_eq!(c.llm.max_tokens, Some(200));
        assert_eq!(
            c.llm.headers,
            [
                ("X-Gateway".to_string(), "g1".to_string()),
                ("OpenAI-Organization".to_string(), "org-2".to_string())
            ]
        );
        assert!(
            !format!("{c:?}").contains("sk-secret-1"),
            "the key stays out of logs"
        );
        for (name, value) in [
            ("VOXANNE_LLM_BASE_URL", "api.openai.com"),
            ("VOXANNE_LLM_TEMPERATURE", "3"),
            ("VOXANNE_LLM_MAX_TOKENS", "0"),
            ("VOXANNE_LLM_HEADERS", "no colon"),
        ] {
            let mut vars = vec![
                ("TWILIO_AUTH_TOKEN", "t"),
                ("VOXANNE_LLM_BASE_URL", "http://x/v1"),
                ("VOXANNE_LLM_MODEL", "m"),
            ];
            vars.retain(|(k, _)| *k != name);
            vars.push((name, value));
            assert!(err(&vars).contains(name), "{name}={value}: {}", err(&vars));
        }
        // Without VOXANNE_BRAIN=llm the variables are defaults for clinics' `[llm]` tables.
        let off = config(&[("TWILIO_AUTH_TOKEN", "t"), ("VOXANNE_LLM_MODEL", "m")]).unwrap();
        assert!(!off.llm.default_on);
    }

    #[test]
    fn webhook_retries_and_timeout_are_durations_or_a_clear_error() {
        let c = config(&[("TWILIO_AUTH_TOKEN", "t")]).unwrap();
        assert_eq!(c.webhook_retries.len(), 8);
        assert_eq!(c.webhook_retries[0], Duration::from_secs(5));
        assert_eq!(c.webhook_retries[7], Duration::from_secs(12 * 3600));
        assert_eq!(c.webhook_timeout, Duration::from_secs(10));
        let c = config(&[
            ("TWILIO_AUTH_TOKEN", "t"),
            ("VOXANNE_WEBHOOK_RETRIES", "200ms, 1s,2m,3"),
            ("VOXANNE_WEBHOOK_TIMEOUT", "1500ms"),
        ])
        .unwrap();
        assert_eq!(
            c.webhook_retries,
            [
                Duration::from_millis(200),
                Duration::from_secs(1),
                Duration::from_secs(120),
                Duration::from_secs(3)
            ]
        );
        assert_eq!(c.webhook_timeout, Duration::from_millis(1500));
        for (name, bad) in [
            ("VOXANNE_WEBHOOK_RETRIES", "5s,,1m"),
            ("VOXANNE_WEBHOOK_RETRIES", "0s"),
            ("VOXANNE_WEBHOOK_RETRIES", "5 days"),
            ("VOXANNE_WEBHOOK_TIMEOUT", "10 minutes"),
            ("VOXANNE_WEBHOOK_TIMEOUT", "5m"),
        ] {
            let e = config(&[("TWILIO_AUTH_TOKEN", "t"), (name, bad)])
                .unwrap_err()
                .to_string();
            assert!(e.contains(name), "{bad}: {e}");
        }
    }

    #[test]
    fn debug_output_carries_no_secret() {
        let c = config(&[
            ("TWILIO_AUTH_TOKEN", "twilio-token-123"),
            (
                "DATABASE_URL",
                "postgres://voxanne:pg-pass-456@db.internal:5432/voxanne",
            ),
            ("VOXANNE_SECRET_KEY", "secret-key-789"),
            ("VOXANNE_SECRET_KEYS_PREVIOUS", "old-key-000"),
            ("VOXANNE_METRICS_TOKEN", "metrics-token-321"),
        ])
        .unwrap();
        let printed = format!("{c:?} {c:#?}");
        for secret in [
            "twilio-token-123",
            "pg-pass-456",
            "secret-key-789",
            "old-key-000",
            "metrics-token-321",
        ] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert!(printed.contains("postgres://voxanne:***@db.internal:5432/voxanne"));
        assert!(printed.contains("metrics_token: \"set\""), "{printed}");
    }

    #[test]
    fn webhook_rate_is_burst_and_rate_or_a_clear_error() {
        let c = config(&[("TWILIO_AUTH_TOKEN", "t")]).unwrap();
        assert_eq!(c.webhook_rate, (300, 50.0));
        let c = config(&[
            ("TWILIO_AUTH_TOKEN", "t"),
            ("VOXANNE_WEBHOOK_RATE", "5 / 0.5"),
        ])
        .unwrap();
        assert_eq!(c.webhook_rate, (5, 0.5));
        for bad in ["5", "0/1", "5/0", "a/b", "5/-1", "5/inf"] {
            let e = config(&[("TWILIO_AUTH_TOKEN", "t"), ("VOXANNE_WEBHOOK_RATE", bad)])
                .unwrap_err()
                .to_string();
            assert!(e.contains("VOXANNE_WEBHOOK_RATE"), "{bad}: {e}");
        }
    }

    #[test]
    fn there_is_no_way_to_run_without_an_auth_token() {
        let err = config(&[]).unwrap_err();
        assert!(err.to_string().contains("TWILIO_AUTH_TOKEN"));
        assert!(config(&[("TWILIO_AUTH_TOKEN", "  ")]).is_err());
    }

    #[test]
    fn public_url_gives_a_wss_stream_url() {
        let c = config(&[
            ("TWILIO_AUTH_TOKEN", "t"),
            ("VOXANNE_PUBLIC_URL", "https://voice.example.com/"),
        ])
        .unwrap();
        assert_eq!(c.public_url, "https://voice.example.com");
        assert_eq!(c.stream_url(), "wss://voice.example.com/twilio/media");
    }

    #[test]
    fn bad_values_are_named() {
        let e = config(&[("TWILIO_AUTH_TOKEN", "t"), ("VOXANNE_ADDR", "nope")]).unwrap_err();
        assert!(e.to_string().contains("VOXANNE_ADDR"));
        let e = config(&[("TWILIO_AUTH_TOKEN", "t"), ("VOXANNE_ENGINES", "gpt")]).unwrap_err();
        assert!(e.to_string().contains("VOXANNE_ENGINES"));
        let e = config(&[("TWILIO_AUTH_TOKEN", "t"), ("VOXANNE_TTS", "polly")]).unwrap_err();
        assert!(e.to_string().contains("VOXANNE_TTS"));
        let e = config(&[("TWILIO_AUTH_TOKEN", "t"), ("VOXANNE_VAD", "webrtc")]).unwrap_err();
        assert!(e.to_string().contains("VOXANNE_VAD"));
        let e = config(&[("TWILIO_AUTH_TOKEN", "t"), ("VOXANNE_MAX_CALLS", "0")]).unwrap_err();
        assert!(e.to_string().contains("VOXANNE_MAX_CALLS"));
        let e = config(&[
            ("TWILIO_AUTH_TOKEN", "t"),
            ("VOXANNE_PUBLIC_URL", "ftp://x"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("VOXANNE_PUBLIC_URL"));
        let e = config(&[
            ("TWILIO_AUTH_TOKEN", "t"),
            ("VOXANNE_MAX_CALLS_PER_NUMBER", "none"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("VOXANNE_MAX_CALLS_PER_NUMBER"));
    }

    #[test]
    fn the_call_limit_follows_the_cores_with_the_embedded_engines() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let c = config(&[("TWILIO_AUTH_TOKEN", "t")]).unwrap();
        assert_eq!(c.max_calls, CALLS_PER_CORE * cores);
        assert_eq!(c.max_calls_per_number, None);
        let c = config(&[("TWILIO_AUTH_TOKEN", "t"), ("VOXANNE_ENGINES", "test")]).unwrap();
        assert_eq!(c.max_calls, 100);
        let c = config(&[
            ("TWILIO_AUTH_TOKEN", "t"),
            ("VOXANNE_MAX_CALLS", "12"),
            ("VOXANNE_MAX_CALLS_PER_NUMBER", "5"),
        ])
        .unwrap();
        assert_eq!((c.max_calls, c.max_calls_per_number), (12, Some(5)));
    }
}
