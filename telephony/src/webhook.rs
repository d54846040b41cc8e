//! Twilio's HTTP callbacks (voice webhook, status callback) and the token that ties a media
//! stream to the webhook that created it.
//!
//! Twilio signs webhooks, but anyone can open our WebSocket and claim any parameters in its
//! `start` message. So the voice webhook puts a token in the stream's `<Parameter>`s: an HMAC,
//! keyed with the auth token, over the CallSid and the organisation/assistant it chose. The
//! stream is accepted only if the token matches the CallSid Twilio reports in `start`.

use std::fmt;

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

/// How long a stream token is accepted after the voice webhook issued it. Twilio opens the
/// stream as soon as it runs the `<Connect><Stream>` the webhook returned (seconds), and never
/// reopens one, so a token older than this is a replay. It bounds what a captured token is
/// worth: once a call's recording has been deleted by retention (a day at the least) and the
/// server has restarted, nothing else remembers that the call had its stream.
pub const STREAM_TOKEN_MAX_AGE_SECS: i64 = 10 * 60;

/// Signs the binding of a call to an organisation and assistant at `issued` (Unix seconds):
/// `<issued>.<mac>`.
pub fn stream_token(
    auth_token: &str,
    call_sid: &str,
    org: &str,
    assistant: &str,
    issued: i64,
) -> String {
    format!(
        "{issued}.{}",
        stream_mac(auth_token, call_sid, org, assistant, issued)
    )
}

fn stream_mac(auth_token: &str, call_sid: &str, org: &str, assistant: &str, issued: i64) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("any key");
    let issued = issued.to_string();
    for part in ["voxanne-stream", call_sid, org, assistant, &issued] {
        mac.update(part.as_bytes());
        mac.update(b"\n");
    }
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// Why a stream token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamTokenError {
    /// Not signed by us for this call, organisation and assistant (or not a token at all).
    Invalid,
    /// Ours, but issued more than [`STREAM_TOKEN_MAX_AGE_SECS`] before `now` (or in the future).
    Expired,
}

impl fmt::Display for StreamTokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Invalid => "stream token does not match the call",
            Self::Expired => "stream token has expired (a replayed stream)",
        })
    }
}

/// Checks a token from a stream's `start` message at `now` (Unix seconds): the MAC in constant
/// time, then its age.
pub fn verify_stream_token(
    auth_token: &str,
    token: &str,
    call_sid: &str,
    org: &str,
    assistant: &str,
    now: i64,
) -> Result<(), StreamTokenError> {
    let (issued_s, mac) = token.split_once('.').ok_or(StreamTokenError::Invalid)?;
    let issued: i64 = issued_s.parse().map_err(|_| StreamTokenError::Invalid)?;
    let expected = stream_mac(auth_token, call_sid, org, assistant, issued);
    if auth_token.is_empty() || !bool::from(expected.as_bytes().ct_eq(mac.as_bytes())) {
        return Err(StreamTokenError::Invalid);
    }
    // A minute of slack for clocks across a cluster of servers sharing the auth token.
    if now - issued > STREAM_TOKEN_MAX_AGE_SECS || issued - now > 60 {
        return Err(StreamTokenError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_token_binds_the_call_and_expires() {
        let t = stream_token("secret", "CA1", "org", "asst", 1_000_000);
        let check = |token: &str, sid: &str, now: i64| {
            verify_stream_token("secret", token, sid, "org", "asst", now)
        };
        assert_eq!(check(&t, "CA1", 1_000_000), Ok(()));
        assert_eq!(
            check(&t, "CA1", 1_000_000 + STREAM_TOKEN_MAX_AGE_SECS),
            Ok(())
        );
        assert_eq!(
            check(&t, "CA1", 1_000_001 + STREAM_TOKEN_MAX_AGE_SECS),
            Err(StreamTokenError::Expired)
        );
        assert_eq!(
            check(&t, "CA1", 1_000_000 - 61),
            Err(StreamTokenError::Expired)
        );
        assert_eq!(check(&t, "CA2", 1_000_000), Err(StreamTokenError::Invalid));
        // Moving the issue time forward breaks the MAC.
        let moved = t.replacen("1000000.", "1000500.", 1);
        assert_eq!(
            check(&moved, "CA1", 1_000_500),
            Err(StreamTokenError::Invalid)
        );
        for bad in ["", ".", "x.y", "1000000", "1000000."] {
            assert_eq!(
                check(bad, "CA1", 1_000_000),
                Err(StreamTokenError::Invalid),
                "{bad:?}"
            );
        }
        assert_eq!(
            verify_stream_token("", &t, "CA1", "org", "asst", 1_000_000),
            Err(StreamTokenError::Invalid)
        );
    }

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
        let t = stream_token("secret", "CA1", "org", "asst", 7);
        let ok = |key: &str, sid: &str, org: &str, asst: &str| {
            verify_stream_token(key, &t, sid, org, asst, 7).is_ok()
        };
        assert!(ok("secret", "CA1", "org", "asst"));
        assert!(!ok("secret", "CA2", "org", "asst"));
        assert!(!ok("secret", "CA1", "other", "asst"));
        assert!(!ok("secret", "CA1", "org", "other"));
        assert!(!ok("other", "CA1", "org", "asst"));
        let keyless = stream_token("", "CA1", "o", "a", 7);
        assert!(verify_stream_token("", &keyless, "CA1", "o", "a", 7).is_err());
    }
}
