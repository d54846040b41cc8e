//! Twilio's HTTP callbacks (voice webhook, status callback) and the token that ties a media
//! stream to the webhook that created it.
//!
//! Twilio signs webhooks, but anyone can open our WebSocket and claim any parameters in its
//! `start` message. So the voice webhook puts a token in the stream's `<Parameter>`s: an HMAC,
//! keyed with the auth token, over the CallSid and the organisation/assistant it chose. The
//! stream is accepted only if the token matches the CallSid Twilio reports in `start`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// The fields of Twilio's voice webhook we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoiceWebhook {
    pub call_sid: String,
    pub account_sid: String,
    pub from: String,
    pub to: String,
    /// `inbound`, `outbound-api`, `outbound-dial`.
    pub direction: String,
    pub call_status: String,
}

/// A call status callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCallback {
    pub call_sid: String,
    pub call_status: String,
    pub from: String,
    pub to: String,
    pub direction: String,
    /// Seconds, present on `completed`.
    pub call_duration: Option<u64>,
}

/// A required form field was missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("missing form field `{0}`")]
pub struct MissingField(pub &'static str);

fn field(params: &[(String, String)], name: &'static str) -> Result<String, MissingField> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty())
        .ok_or(MissingField(name))
}

fn optional(params: &[(String, String)], name: &str) -> String {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// Parses a form body into ordered pairs (what the signature is computed over).
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

impl VoiceWebhook {
    pub fn from_params(params: &[(String, String)]) -> Result<Self, MissingField> {
        Ok(Self {
            call_sid: field(params, "CallSid")?,
            account_sid: optional(params, "AccountSid"),
            from: optional(params, "From"),
            to: optional(params, "To"),
            direction: {
                let d = optional(params, "Direction");
                if d.is_empty() { "inbound".into() } else { d }
            },
            call_status: optional(params, "CallStatus"),
        })
    }
}

impl StatusCallback {
    pub fn from_params(params: &[(String, String)]) -> Result<Self, MissingField> {
        Ok(Self {
            call_sid: field(params, "CallSid")?,
            call_status: field(params, "CallStatus")?,
            from: optional(params, "From"),
            to: optional(params, "To"),
            direction: optional(params, "Direction"),
            call_duration: optional(params, "CallDuration").parse().ok(),
        })
    }
}

/// Signs the binding of a call to an organisation and assistant.
pub fn stream_token(auth_token: &str, call_sid: &str, org: &str, assistant: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("any key");
    for part in ["voxanne-stream", call_sid, org, assistant] {
        mac.update(part.as_bytes());
        mac.update(b"\n");
    }
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// Checks a token from a stream's `start` message, in constant time.
pub fn verify_stream_token(
    auth_token: &str,
    token: &str,
    call_sid: &str,
    org: &str,
    assistant: &str,
) -> bool {
    let expected = stream_token(auth_token, call_sid, org, assistant);
    !auth_token.is_empty() && bool::from(expected.as_bytes().ct_eq(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_voice_webhook() {
        let body = b"CallSid=CA1&AccountSid=AC1&From=%2B15551234567&To=%2B15557654321&Direction=inbound&CallStatus=ringing";
        let params = parse_form(body);
        let hook = VoiceWebhook::from_params(&params).unwrap();
        assert_eq!(hook.from, "+15551234567");
        assert_eq!(hook.to, "+15557654321");
        assert_eq!(hook.call_status, "ringing");
        assert_eq!(
            VoiceWebhook::from_params(&parse_form(b"From=x")),
            Err(MissingField("CallSid"))
        );
    }

    #[test]
    fn parses_a_status_callback() {
        let params = parse_form(b"CallSid=CA1&CallStatus=completed&CallDuration=42");
        let cb = StatusCallback::from_params(&params).unwrap();
        assert_eq!(cb.call_duration, Some(42));
        assert!(StatusCallback::from_params(&parse_form(b"CallSid=CA1")).is_err());
    }

    #[test]
    fn stream_tokens_bind_call_org_and_assistant() {
        let t = stream_token("secret", "CA1", "org", "asst");
        assert!(verify_stream_token("secret", &t, "CA1", "org", "asst"));
        assert!(!verify_stream_token("secret", &t, "CA2", "org", "asst"));
        assert!(!verify_stream_token("secret", &t, "CA1", "other", "asst"));
        assert!(!verify_stream_token("secret", &t, "CA1", "org", "other"));
        assert!(!verify_stream_token("other", &t, "CA1", "org", "asst"));
        assert!(!verify_stream_token(
            "",
            &stream_token("", "CA1", "o", "a"),
            "CA1",
            "o",
            "a"
        ));
    }
}
