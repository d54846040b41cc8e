//! A clinic, configured in one file: the TOML `voxanne clinic apply` reads and `voxanne clinic
//! export` writes back.
//!
//! [`ClinicFile`] is the file as written (serde, round-trips through TOML and JSON); [`Clinic`]
//! is the same data validated and parsed once (time zone, opening hours, service lengths), which
//! is what the dialogue uses. Every problem found is reported at once, with where it is, so an
//! admin fixes a file in one pass.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{NaiveDate, NaiveTime, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// Longest knowledge chunk, in characters: about one spoken sentence. Retrieval compares a
/// caller's question with each chunk, and a question matches one sentence of an entry far more
/// closely than the whole entry (on the calibration questions in `tests/tests/receptionist.rs`,
/// whole entries scored 0.23–0.68 for right answers; sentences score higher, see README), and
/// the answer spoken is then that short sentence, not a paragraph.
pub const MAX_CHUNK_CHARS: usize = 160;

/// The clinic file as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClinicFile {
    pub clinic: ClinicSection,
    #[serde(default)]
    pub hours: HoursSection,
    #[serde(default, rename = "services")]
    pub services: Vec<ServiceEntry>,
    #[serde(default, rename = "knowledge")]
    pub knowledge: Vec<KnowledgeEntry>,
    /// `[llm]`: answer this clinic's calls with a language model (the `llm` crate), with the
    /// offline receptionist behind it. Absent: the server's default brain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmSection>,
}

/// The only environment variables `llm.api_key_env` may name: `VOXANNE_LLM_KEY_*`. A clinic
/// file is written by an organisation's admin (`PUT /api/v1/clinic`), and the key is sent as a
/// bearer token to the file's `base_url`: any other name would let a tenant read the server's
/// secrets (`VOXANNE_SECRET_KEY`, `DATABASE_URL`, …) by pointing `base_url` at itself.
pub const LLM_KEY_ENV_PREFIX: &str = "VOXANNE_LLM_KEY_";

/// What `GET /api/v1/clinic` and `voxanne clinic export` show instead of `llm.api_key`; a file
/// applied with this value keeps the stored key.
pub const REDACTED_KEY: &str = "***";

/// `[llm]`: an OpenAI-compatible Chat Completions server for this clinic's calls. Every key is
/// optional and overrides the server's `VOXANNE_LLM_*` default; `enabled = false` keeps the
/// offline receptionist even when the server's default brain is the LLM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// `https://api.openai.com/v1`, `http://127.0.0.1:11434/v1` (Ollama), …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The key itself (stored with the clinic; prefer `api_key_env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// The name of an environment variable of the server that holds the key: it must start
    /// with [`LLM_KEY_ENV_PREFIX`] (`VOXANNE_LLM_KEY_`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// 0.0..=2.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Longest reply, in tokens (1..=4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Extra HTTP headers sent with every request (`OpenAI-Organization`, a gateway's key…).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// How long to wait for the model's first token before the offline receptionist answers
    /// the turn (100..=4000 ms: below the LLM brain's 4.5 s event budget, itself below the call
    /// core's 6 s per brain event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_token_timeout_ms: Option<u32>,
    /// Ask for token usage in the stream (`stream_options.include_usage`); `false` for servers
    /// that refuse it (usage is then estimated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_usage: Option<bool>,
}

impl LlmSection {
    /// The section with `api_key` shown as [`REDACTED_KEY`].
    pub fn redacted(&self) -> Self {
        Self {
            api_key: self.api_key.as_ref().map(|_| REDACTED_KEY.to_string()),
            ..self.clone()
        }
    }

    /// Every problem with the section, each prefixed `llm.`.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(url) = &self.base_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            problems.push(format!(
                "llm.base_url {url:?}: expected an http:// or https:// URL"
            ));
        }
        if self.model.as_deref().is_some_and(|m| m.trim().is_empty()) {
            problems.push("llm.model is empty".into());
        }
        if let Some(name) = &self.api_key_env
            && (name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            problems.push(format!(
                "llm.api_key_env {name:?}: expected an environment variable name"
            ));
        } else if let Some(name) = &self.api_key_env
            && (!name.starts_with(LLM_KEY_ENV_PREFIX) || name.len() == LLM_KEY_ENV_PREFIX.len())
        {
            problems.push(format!(
                "llm.api_key_env {name:?}: only variables named {LLM_KEY_ENV_PREFIX}… may hold a clinic's key (e.g. {LLM_KEY_ENV_PREFIX}BRIGHT_SMILE); or store the key as the sealed llm_api_key secret (PUT /api/v1/secrets/llm_api_key)"
            ));
        }
        if self.api_key.is_some() && self.api_key_env.is_some() {
            problems.push("llm: give api_key or api_key_env, not both".into());
        }
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            problems.push(format!("llm.temperature {t}: expected 0.0..=2.0"));
        }
        if let Some(m) = self.max_tokens
            && !(1..=4096).contains(&m)
        {
            problems.push(format!("llm.max_tokens {m}: expected 1..=4096"));
        }
        if let Some(ms) = self.first_token_timeout_ms
            && !(100..=4000).contains(&ms)
        {
            problems.push(format!(
                "llm.first_token_timeout_ms {ms}: expected 100..=4000 (the call core gives a brain 6 s per event; the offline answer needs the rest)"
            ));
        }
        for (name, value) in &self.headers {
            let token = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
            if !token {
                problems.push(format!("llm.headers: {name:?} is not a header name"));
            }
            if value.chars().any(|c| c.is_control()) {
                problems.push(format!(
                    "llm.headers.{name}: the value has control characters"
                ));
            }
        }
        problems
    }
}

/// `[clinic]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClinicSection {
    /// Stable identifier of the organisation (`bright-smile`): what `clinic export` takes and what
    /// `clinic apply` matches an existing organisation by. Lowercase letters, digits and `-`.
    pub id: String,
    pub name: String,
    /// IANA zone (`Europe/London`); every date and hour in the file is local to it.
    pub timezone: String,
    /// Twilio numbers (E.164) that reach this clinic.
    #[serde(default)]
    pub numbers: Vec<String>,
    /// Where "a person" is: the only number the agent may ever transfer a caller to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_number: Option<String>,
    /// What callers are told to ring in an emergency.
    #[serde(default = "default_emergency")]
    pub emergency_number: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greeting: Option<String>,
    /// Street address, read out for "where are you".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Names callers may ask for (`Dr Patel`); also given to speech recognition as vocabulary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub staff: Vec<String>,
    /// Shortest notice for a booking, in minutes (no slot sooner than now + this).
    #[serde(default = "default_notice")]
    pub min_notice_minutes: u32,
    /// How far ahead bookings are offered, in days.
    #[serde(default = "default_horizon")]
    pub booking_horizon_days: u32,
}

fn default_emergency() -> String {
    "999".into()
}
fn default_notice() -> u32 {
    60
}
fn default_horizon() -> u32 {
    60
}

/// `[hours]`: `monday = "08:30-17:30"` or `"closed"`; a missing weekday is closed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoursSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monday: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuesday: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wednesday: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thursday: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub friday: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saturday: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sunday: Option<String>,
    /// Holidays: `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub closed_dates: Vec<String>,
}

/// `[[services]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceEntry {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    pub minutes: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<String>,
}

/// `[[knowledge]]`: an FAQ entry or a whole document (`text`, or `file` relative to the clinic
/// file, read by `clinic apply`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeEntry {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// Problems found in a clinic file, all at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ClinicError(pub Vec<String>);

impl fmt::Display for ClinicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the clinic file has {} problem(s):", self.0.len())?;
        for p in &self.0 {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// Opening hours of one day, clinic-local.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenHours {
    pub open: NaiveTime,
    pub close: NaiveTime,
}

/// A bookable service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    /// Lowercased name and aliases, as the matcher compares them.
    pub names: Vec<String>,
    pub minutes: u32,
    pub price: Option<String>,
}

/// A validated clinic: what the dialogue reads.
#[derive(Debug, Clone)]
pub struct Clinic {
    pub file: ClinicFile,
    pub tz: Tz,
    /// Monday first.
    pub week: [Option<OpenHours>; 7],
    pub closed_dates: Vec<NaiveDate>,
    pub services: Vec<Service>,
}

impl ClinicFile {
    pub fn from_toml(text: &str) -> Result<Self, ClinicError> {
        toml::from_str(text).map_err(|e| ClinicError(vec![e.to_string()]))
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Canonical JSON, as stored (key order fixed by the struct, so unchanged files hash the same).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<Self, ClinicError> {
        serde_json::from_str(text).map_err(|e| ClinicError(vec![format!("stored clinic: {e}")]))
    }

    /// Validates and parses. Knowledge entries must have `text` by now (`clinic apply` reads
    /// `file`s into `text` first).
    pub fn validate(self) -> Result<Clinic, ClinicError> {
        let mut problems = Vec::new();
        let c = &self.clinic;
        if c.id.is_empty()
            || !c
                .id
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
        {
            problems.push(format!(
                "clinic.id {:?}: use lowercase letters, digits and '-'",
                c.id
            ));
        }
        if c.name.trim().is_empty() {
            problems.push("clinic.name is empty".into());
        }
        let tz: Tz = match c.timezone.parse() {
            Ok(tz) => tz,
            Err(_) => {
                problems.push(format!(
                    "clinic.timezone {:?} is not an IANA time zone (e.g. Europe/London)",
                    c.timezone
                ));
                Tz::UTC
            }
        };
        for n in &c.numbers {
            if !is_e164(n) {
                problems.push(format!(
                    "clinic.numbers: {n:?} is not an E.164 number (+442071234567)"
                ));
            }
        }
        if let Some(t) = &c.transfer_number
            && !is_e164(t)
        {
            problems.push(format!(
                "clinic.transfer_number {t:?} is not an E.164 number"
            ));
        }
        if c.emergency_number.trim().is_empty()
            || !c.emergency_number.chars().all(|ch| ch.is_ascii_digit())
        {
            problems.push(format!(
                "clinic.emergency_number {:?} must be digits (999, 112, 911)",
                c.emergency_number
            ));
        }
        let h = &self.hours;
        let days = [
            ("monday", &h.monday),
            ("tuesday", &h.tuesday),
            ("wednesday", &h.wednesday),
            ("thursday", &h.thursday),
            ("friday", &h.friday),
            ("saturday", &h.saturday),
            ("sunday", &h.sunday),
        ];
        let mut week = [None; 7];
        for (i, (name, value)) in days.iter().enumerate() {
            let Some(value) = value else { continue };
            match parse_hours(value) {
                Ok(hours) => week[i] = hours,
                Err(e) => problems.push(format!("hours.{name}: {e}")),
            }
        }
        let mut closed_dates = Vec::new();
        for d in &h.closed_dates {
            match NaiveDate::parse_from_str(d, "%Y-%m-%d") {
                Ok(d) => closed_dates.push(d),
                Err(_) => problems.push(format!("hours.closed_dates: {d:?} is not YYYY-MM-DD")),
            }
        }
        let mut services = Vec::new();
        let mut seen = BTreeMap::new();
        for (i, s) in self.services.iter().enumerate() {
            if s.name.trim().is_empty() {
                problems.push(format!("services[{i}].name is empty"));
            }
            if s.minutes == 0 || s.minutes > 8 * 60 {
                problems.push(format!(
                    "services[{i}] {:?}: minutes must be 1..=480",
                    s.name
                ));
            }
            let mut names = vec![s.name.to_lowercase()];
            names.extend(s.aliases.iter().map(|a| a.to_lowercase()));
            for n in &names {
                if let Some(other) = seen.insert(n.clone(), s.name.clone())
                    && other != s.name
                {
                    problems.push(format!(
                        "services: {n:?} names both {other:?} and {:?}",
                        s.name
                    ));
                }
            }
            services.push(Service {
                name: s.name.clone(),
                names,
                minutes: s.minutes,
                price: s.price.clone(),
            });
        }
        for (i, k) in self.knowledge.iter().enumerate() {
            if k.title.trim().is_empty() {
                problems.push(format!("knowledge[{i}].title is empty"));
            }
            match (&k.text, &k.file) {
                (Some(t), _) if !t.trim().is_empty() => {}
                (_, Some(f)) => problems.push(format!(
                    "knowledge[{i}] {:?}: file {f:?} was not read",
                    k.title
                )),
                _ => problems.push(format!("knowledge[{i}] {:?}: needs text or file", k.title)),
            }
        }
        if let Some(llm) = &self.llm {
            problems.extend(llm.problems());
        }
        if !problems.is_empty() {
            return Err(ClinicError(problems));
        }
        Ok(Clinic {
            file: self,
            tz,
            week,
            closed_dates,
            services,
        })
    }
}

impl Clinic {
    pub fn name(&self) -> &str {
        &self.file.clinic.name
    }

    /// The greeting: the file's, or one made from the clinic's name.
    pub fn greeting(&self) -> String {
        self.file.clinic.greeting.clone().unwrap_or_else(|| {
            format!(
                "Thank you for calling {}, this is the virtual receptionist. How can I help?",
                self.name()
            )
        })
    }

    /// Opening hours on `date` (`None`: closed).
    pub fn hours_on(&self, date: NaiveDate) -> Option<OpenHours> {
        use chrono::Datelike;
        if self.closed_dates.contains(&date) {
            return None;
        }
        self.week[date.weekday().num_days_from_monday() as usize]
    }

    pub fn hours_for(&self, day: Weekday) -> Option<OpenHours> {
        self.week[day.num_days_from_monday() as usize]
    }

    /// A minimal clinic for an organisation that has no clinic file yet: the receptionist still
    /// answers, offers a message and hands over, but books nothing (no hours, no services).
    pub fn fallback(name: &str) -> Clinic {
        ClinicFile {
            clinic: ClinicSection {
                id: "default".into(),
                name: name.into(),
                timezone: "UTC".into(),
                numbers: vec![],
                transfer_number: None,
                emergency_number: default_emergency(),
                greeting: None,
                address: None,
                staff: vec![],
                min_notice_minutes: default_notice(),
                booking_horizon_days: default_horizon(),
            },
            hours: HoursSection::default(),
            services: vec![],
            knowledge: vec![],
            llm: None,
        }
        .validate()
        .expect("the fallback clinic is valid")
    }

    /// Words speech recognition should expect from callers of this clinic: its name, services and
    /// staff (a Whisper prompt).
    pub fn vocabulary(&self) -> String {
        let mut words = vec![self.name().to_string()];
        words.extend(self.services.iter().map(|s| s.name.clone()));
        words.extend(self.file.clinic.staff.iter().cloned());
        words.join(", ")
    }
}

/// One retrievable piece of a knowledge entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Stable id: `{title}#{n}`.
    pub id: String,
    pub title: String,
    pub text: String,
}

/// Cuts knowledge entries into chunks of whole sentences of at most [`MAX_CHUNK_CHARS`] (a
/// sentence longer than that is its own chunk), so an answer is a few spoken sentences and a
/// long document is still searchable.
pub fn chunks(entries: &[KnowledgeEntry]) -> Vec<Chunk> {
    let mut out = Vec::new();
    for e in entries {
        let Some(text) = &e.text else { continue };
        let mut current = String::new();
        let mut n = 0;
        let mut push = |current: &mut String, n: &mut usize| {
            let t = current.trim();
            if !t.is_empty() {
                out.push(Chunk {
                    id: format!("{}#{}", e.title, n),
                    title: e.title.clone(),
                    text: t.to_string(),
                });
                *n += 1;
            }
            current.clear();
        };
        for sentence in sentences(text) {
            if !current.is_empty() && current.len() + sentence.len() + 1 > MAX_CHUNK_CHARS {
                push(&mut current, &mut n);
            }
            if !current.is_empty() {
                current.push(' ');
            }
            current.push_str(&sentence);
        }
        push(&mut current, &mut n);
    }
    out
}

/// Splits text into sentences at `.`, `!`, `?` followed by whitespace (paragraph breaks too).
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == '\n' && chars.get(i + 1) == Some(&'\n') {
            if !current.trim().is_empty() {
                out.push(current.trim().to_string());
            }
            current.clear();
            continue;
        }
        current.push(if c == '\n' { ' ' } else { c });
        if matches!(c, '.' | '!' | '?') && chars.get(i + 1).is_none_or(|n| n.is_whitespace()) {
            out.push(current.trim().to_string());
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out
}

fn is_e164(n: &str) -> bool {
    let digits = n.strip_prefix('+').unwrap_or("");
    (8..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit())
}

fn parse_hours(value: &str) -> Result<Option<OpenHours>, String> {
    let v = value.trim().to_lowercase();
    if v == "closed" {
        return Ok(None);
    }
    let (a, b) = v
        .split_once('-')
        .ok_or_else(|| format!("{value:?}: write \"08:30-17:30\" or \"closed\""))?;
    let t = |s: &str| {
        NaiveTime::parse_from_str(s.trim(), "%H:%M")
            .map_err(|_| format!("{value:?}: {s:?} is not HH:MM"))
    };
    let (open, close) = (t(a)?, t(b)?);
    if close <= open {
        return Err(format!("{value:?}: closes before it opens"));
    }
    Ok(Some(OpenHours { open, close }))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const EXAMPLE: &str = r#"
[clinic]
id = "bright-smile"
name = "Bright Smile Dental"
timezone = "Europe/London"
numbers = ["+442071234567"]
transfer_number = "+442071234500"
emergency_number = "999"
address = "12 Mill Lane, Oxford"

[hours]
monday = "08:30-17:30"
saturday = "09:00-13:00"
sunday = "closed"
closed_dates = ["2026-12-25"]

[[services]]
name = "Check-up"
aliases = ["checkup", "exam"]
minutes = 30
price = "£55"

[[knowledge]]
title = "Parking"
text = "There is free parking behind the building. The entrance is on Mill Lane."
"#;

    #[test]
    fn the_example_parses_validates_and_round_trips() {
        let file = ClinicFile::from_toml(EXAMPLE).unwrap();
        let clinic = file.clone().validate().unwrap();
        assert_eq!(clinic.tz, chrono_tz::Europe::London);
        let monday = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        assert_eq!(
            clinic.hours_on(monday).unwrap().open,
            NaiveTime::from_hms_opt(8, 30, 0).unwrap()
        );
        // Tuesday is not listed: closed. Christmas is a closed date.
        assert!(clinic.hours_on(monday.succ_opt().unwrap()).is_none());
        assert!(
            clinic
                .hours_on(NaiveDate::from_ymd_opt(2026, 12, 25).unwrap())
                .is_none()
        );
        let again = ClinicFile::from_toml(&file.to_toml()).unwrap();
        assert_eq!(again, file);
        assert_eq!(ClinicFile::from_json(&file.to_json()).unwrap(), file);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let bad = EXAMPLE
            .replace("Europe/London", "Mars/Olympus")
            .replace("08:30-17:30", "17:30-08:30")
            .replace("+442071234500", "0207 123")
            .replace("minutes = 30", "minutes = 0");
        let err = ClinicFile::from_toml(&bad).unwrap().validate().unwrap_err();
        assert_eq!(err.0.len(), 4, "{err}");
        assert!(err.to_string().contains("Mars/Olympus"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let bad = EXAMPLE.replace("emergency_number", "emergency_nmber");
        assert!(ClinicFile::from_toml(&bad).is_err());
    }

    #[test]
    fn the_llm_table_round_trips_refuses_unknown_keys_and_lists_every_problem() {
        let with_llm = format!(
            "{EXAMPLE}\n[llm]\nbase_url = \"http://127.0.0.1:11434/v1\"\nmodel = \"llama3.2\"\n\
             temperature = 0.3\nmax_tokens = 300\n[llm.headers]\nX-Gateway = \"abc\"\n"
        );
        let file = ClinicFile::from_toml(&with_llm).unwrap();
        let llm = file.llm.clone().unwrap();
        assert_eq!(llm.model.as_deref(), Some("llama3.2"));
        assert_eq!(
            llm.headers.get("X-Gateway").map(String::as_str),
            Some("abc")
        );
        file.clone().validate().unwrap();
        assert_eq!(ClinicFile::from_toml(&file.to_toml()).unwrap(), file);
        assert_eq!(ClinicFile::from_json(&file.to_json()).unwrap(), file);
        // A file without the table serialises as before (stored hashes stay the same).
        assert!(
            !ClinicFile::from_toml(EXAMPLE)
                .unwrap()
                .to_json()
                .contains("llm")
        );

        assert!(ClinicFile::from_toml(&with_llm.replace("max_tokens", "max_tokns")).is_err());
        let bad = with_llm
            .replace("http://127.0.0.1:11434/v1", "127.0.0.1:11434")
            .replace("temperature = 0.3", "temperature = 3.5")
            .replace("max_tokens = 300", "max_tokens = 0")
            .replace("X-Gateway", "\"X Gateway\"");
        let err = ClinicFile::from_toml(&bad).unwrap().validate().unwrap_err();
        assert_eq!(err.0.len(), 4, "{err}");
        assert!(err.0.iter().all(|p| p.starts_with("llm")), "{err}");
    }

    #[test]
    fn long_documents_are_chunked_at_sentences() {
        let long = (0..30)
            .map(|i| format!("Sentence number {i} says something useful."))
            .collect::<Vec<_>>()
            .join(" ");
        let c = chunks(&[KnowledgeEntry {
            title: "Doc".into(),
            text: Some(long),
            file: None,
        }]);
        assert!(c.len() > 2);
        assert!(c.iter().all(|c| c.text.len() <= MAX_CHUNK_CHARS));
        assert!(c[0].text.starts_with("Sentence number 0"));
        assert_eq!(c[1].id, "Doc#1");
    }
}
