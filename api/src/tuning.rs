//! Per-assistant turn-taking settings: an assistant's `settings` JSON may tune the conversation
//! core's thresholds. Unknown keys and bad values are reported (the call uses the default for
//! that setting) rather than silently ignored.

use std::time::Duration;

use agent::conversation::ConversationConfig;

/// The settings an assistant may tune, with the range each accepts.
pub const SETTINGS: &[(&str, &str)] = &[
    (
        "end_silence_ms",
        "silence that ends the caller's turn, 200..=3000",
    ),
    (
        "min_speech_ms",
        "speech needed before a turn starts, 20..=500",
    ),
    (
        "speech_threshold",
        "VAD probability counted as speech, 0.05..=0.95",
    ),
    (
        "barge_in_min_ms",
        "caller speech that interrupts the agent, 100..=3000",
    ),
    (
        "silence_timeout_s",
        "caller silence before \"are you still there?\", 3..=120",
    ),
    ("max_silence_prompts", "prompts before goodbye, 0..=10"),
    (
        "early_transcribe_ms",
        "caller silence before a speculative transcription, 0 (off)..=3000",
    ),
    ("max_call_s", "longest call, 30..=7200"),
    ("silence_prompt", "text"),
    ("goodbye", "text"),
    ("apology", "text"),
];

/// Applies `settings` to `config`; returns one message per ignored key or value.
pub fn apply(settings: &serde_json::Value, config: &mut ConversationConfig) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(map) = settings.as_object() else {
        if !settings.is_null() {
            problems.push("assistant settings are not a JSON object".to_string());
        }
        return problems;
    };
    for (key, value) in map {
        let number = |lo: f64, hi: f64| value.as_f64().filter(|v| (lo..=hi).contains(v));
        let text = || value.as_str().map(str::trim).filter(|t| !t.is_empty());
        let ok = match key.as_str() {
            "end_silence_ms" => number(200.0, 3000.0)
                .map(|v| config.endpoint.end_silence_ms = v as u32)
                .is_some(),
            "min_speech_ms" => number(20.0, 500.0)
                .map(|v| config.endpoint.min_speech_ms = v as u32)
                .is_some(),
            "speech_threshold" => number(0.05, 0.95)
                .map(|v| config.endpoint.speech_threshold = v as f32)
                .is_some(),
            "barge_in_min_ms" => number(100.0, 3000.0)
                .map(|v| config.barge_in_min_ms = v as u32)
                .is_some(),
            "silence_timeout_s" => number(3.0, 120.0)
                .map(|v| config.silence_timeout = Duration::from_secs_f64(v))
                .is_some(),
            "early_transcribe_ms" => number(0.0, 3000.0)
                .map(|v| config.early_transcribe_ms = (v >= 1.0).then_some(v as u32))
                .is_some(),
            "max_silence_prompts" => number(0.0, 10.0)
                .map(|v| config.max_silence_prompts = v as u32)
                .is_some(),
            "max_call_s" => number(30.0, 7200.0)
                .map(|v| config.max_call = Duration::from_secs_f64(v))
                .is_some(),
            "silence_prompt" => text().map(|t| config.silence_prompt = t.into()).is_some(),
            "goodbye" => text().map(|t| config.goodbye = t.into()).is_some(),
            "apology" => text().map(|t| config.apology = t.into()).is_some(),
            // Settings that belong to other parts (engines, voice) are not ours to judge.
            _ if !SETTINGS.iter().any(|(k, _)| k == key) => true,
            _ => unreachable!("every listed setting is matched above"),
        };
        if !ok {
            let range = SETTINGS
                .iter()
                .find(|(k, _)| k == key)
                .map_or("", |(_, r)| r);
            problems.push(format!(
                "setting `{key}` = {value} ignored: expected {range}"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn valid_settings_tune_the_core() {
        let mut c = ConversationConfig::default();
        let problems = apply(
            &json!({"end_silence_ms": 900, "barge_in_min_ms": 250, "silence_timeout_s": 12,
                    "goodbye": "Bye now.", "speech_threshold": 0.6, "voice": "joe"}),
            &mut c,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(c.endpoint.end_silence_ms, 900);
        assert_eq!(c.barge_in_min_ms, 250);
        assert_eq!(c.silence_timeout, Duration::from_secs(12));
        assert_eq!(c.goodbye, "Bye now.");
        assert!((c.endpoint.speech_threshold - 0.6).abs() < 1e-6);
    }

    #[test]
    fn bad_values_are_reported_and_the_default_kept() {
        let mut c = ConversationConfig::default();
        let problems = apply(
            &json!({"end_silence_ms": 50, "barge_in_min_ms": "fast", "goodbye": "  "}),
            &mut c,
        );
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("barge_in_min_ms") || problems[0].contains("end_silence_ms"));
        assert_eq!(c, ConversationConfig::default());
        assert_eq!(apply(&json!([1, 2]), &mut c).len(), 1);
        assert!(apply(&serde_json::Value::Null, &mut c).is_empty());
    }
}
