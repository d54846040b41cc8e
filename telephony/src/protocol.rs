//! Twilio Media Streams messages, as Twilio sends and accepts them.
//!
//! Inbound (Twilio → us): `connected`, `start`, `media`, `dtmf`, `mark`, `stop`. Unknown events
//! and unknown fields are tolerated (Twilio adds fields over time). Outbound (us → Twilio):
//! `media`, `mark`, `clear`, each carrying the `streamSid`.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// Largest text message we parse. Twilio's messages are well under 1 KiB (a 20 ms media frame
/// is ~400 bytes of JSON; a `start` with custom parameters a few KiB); 64 KiB leaves room for
/// generous parameters and rejects garbage cheaply.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Largest decoded media payload we accept: one second of 8 kHz μ-law. Twilio sends 160 bytes
/// (20 ms); anything much larger is not Twilio.
pub const MAX_PAYLOAD_BYTES: usize = 8_000;

/// Why an inbound message was rejected. The call goes on; the message is counted and dropped.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("message of {0} bytes exceeds {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    #[error("malformed JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("`{event}` message lacks `{field}`")]
    Missing {
        event: &'static str,
        field: &'static str,
    },
    #[error("media payload is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("media payload of {0} bytes exceeds {MAX_PAYLOAD_BYTES}")]
    PayloadTooLarge(usize),
}

/// `start.mediaFormat`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFormat {
    pub encoding: String,
    pub sample_rate: u32,
    pub channels: u32,
}

impl MediaFormat {
    /// The only format Twilio Media Streams uses: 8 kHz mono μ-law.
    pub fn is_phone_mulaw(&self) -> bool {
        self.encoding == "audio/x-mulaw" && self.sample_rate == 8_000 && self.channels == 1
    }
}

/// The `start` message's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Start {
    #[serde(default)]
    pub account_sid: String,
    pub stream_sid: String,
    pub call_sid: String,
    #[serde(default)]
    pub tracks: Vec<String>,
    pub media_format: MediaFormat,
    #[serde(default)]
    pub custom_parameters: BTreeMap<String, String>,
}

/// One media frame from Twilio; `payload` is still base64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub track: String,
    /// Twilio's chunk counter, from 1.
    pub chunk: u64,
    /// Milliseconds since the stream started.
    pub timestamp_ms: u64,
    pub payload: String,
}

/// An inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Connected {
        protocol: String,
        version: String,
    },
    Start(Start),
    Media(Media),
    Dtmf {
        digit: String,
    },
    Mark {
        name: String,
    },
    Stop {
        call_sid: Option<String>,
    },
    /// An event we do not know; tolerated.
    Unknown {
        event: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMessage {
    event: String,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    start: Option<Start>,
    #[serde(default)]
    media: Option<RawMedia>,
    #[serde(default)]
    dtmf: Option<RawDtmf>,
    #[serde(default)]
    mark: Option<RawMark>,
    #[serde(default)]
    stop: Option<RawStop>,
}

#[derive(Deserialize)]
struct RawMedia {
    #[serde(default)]
    track: Option<String>,
    #[serde(default)]
    chunk: Option<StringOrNumber>,
    #[serde(default)]
    timestamp: Option<StringOrNumber>,
    payload: Option<String>,
}

#[derive(Deserialize)]
struct RawDtmf {
    digit: Option<String>,
}

#[derive(Deserialize)]
struct RawMark {
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStop {
    #[serde(default)]
    call_sid: Option<String>,
}

/// Twilio sends numbers as strings ("chunk": "2"); accept either.
#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrNumber {
    S(String),
    N(u64),
}

impl StringOrNumber {
    fn value(&self) -> Option<u64> {
        match self {
            StringOrNumber::S(s) => s.parse().ok(),
            StringOrNumber::N(n) => Some(*n),
        }
    }
}

/// Parses one inbound text message.
pub fn parse(text: &str) -> Result<Inbound, ProtocolError> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(ProtocolError::TooLarge(text.len()));
    }
    let raw: RawMessage = serde_json::from_str(text)?;
    Ok(match raw.event.as_str() {
        "connected" => Inbound::Connected {
            protocol: raw.protocol.unwrap_or_default(),
            version: raw.version.unwrap_or_default(),
        },
        "start" => Inbound::Start(raw.start.ok_or(ProtocolError::Missing {
            event: "start",
            field: "start",
        })?),
        "media" => {
            let m = raw.media.ok_or(ProtocolError::Missing {
                event: "media",
                field: "media",
            })?;
            Inbound::Media(Media {
                track: m.track.unwrap_or_else(|| "inbound".into()),
                chunk: m.chunk.and_then(|c| c.value()).unwrap_or(0),
                timestamp_ms: m.timestamp.and_then(|t| t.value()).unwrap_or(0),
                payload: m.payload.ok_or(ProtocolError::Missing {
                    event: "media",
                    field: "payload",
                })?,
            })
        }
        "dtmf" => Inbound::Dtmf {
            digit: raw
                .dtmf
                .and_then(|d| d.digit)
                .ok_or(ProtocolError::Missing {
                    event: "dtmf",
                    field: "digit",
                })?,
        },
        "mark" => Inbound::Mark {
            name: raw
                .mark
                .and_then(|m| m.name)
                .ok_or(ProtocolError::Missing {
                    event: "mark",
                    field: "name",
                })?,
        },
        "stop" => Inbound::Stop {
            call_sid: raw.stop.and_then(|s| s.call_sid),
        },
        _ => Inbound::Unknown { event: raw.event },
    })
}

/// Decodes a media payload into `out` (cleared first, capacity reused).
pub fn decode_payload(payload: &str, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    // base64 expands 3 bytes to 4 characters: reject oversized payloads before decoding.
    let decoded_len = payload.len() / 4 * 3;
    if decoded_len > MAX_PAYLOAD_BYTES + 3 {
        return Err(ProtocolError::PayloadTooLarge(decoded_len));
    }
    out.clear();
    STANDARD.decode_vec(payload, out)?;
    if out.len() > MAX_PAYLOAD_BYTES {
        return Err(ProtocolError::PayloadTooLarge(out.len()));
    }
    Ok(())
}

/// The constant start of every outbound `media` message of a stream; build it once per call.
pub fn media_prefix(stream_sid: &str) -> String {
    let mut out = String::from(r#"{"event":"media","streamSid":"#);
    push_json_string(&mut out, stream_sid);
    out.push_str(r#","media":{"payload":""#);
    out
}

/// Writes an outbound `media` message for `ulaw` into `out` (cleared first, capacity reused).
pub fn write_media(stream_sid: &str, ulaw: &[u8], out: &mut String) {
    write_media_with_prefix(&media_prefix(stream_sid), ulaw, out);
}

/// [`write_media`] with the stream's [`media_prefix`] already built.
pub fn write_media_with_prefix(prefix: &str, ulaw: &[u8], out: &mut String) {
    out.clear();
    out.push_str(prefix);
    STANDARD.encode_string(ulaw, out);
    out.push_str(r#""}}"#);
}

/// An outbound `mark` message.
pub fn mark(stream_sid: &str, name: &str) -> String {
    serde_json::json!({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})
        .to_string()
}

/// An outbound `clear` message.
pub fn clear(stream_sid: &str) -> String {
    serde_json::json!({"event": "clear", "streamSid": stream_sid}).to_string()
}

fn push_json_string(out: &mut String, s: &str) {
    // serde_json escapes exactly as JSON requires; stream SIDs are plain ASCII in practice.
    out.push_str(&serde_json::Value::from(s).to_string());
}

/// Messages Twilio sends, for the simulator and tests: the exact shapes of Twilio's docs.
pub mod twilio {
    use super::*;
    use serde_json::json;

    pub fn connected() -> String {
        json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}).to_string()
    }

    pub fn start(seq: u64, start: &Start) -> String {
        json!({"event": "start", "sequenceNumber": seq.to_string(), "start": start,
               "streamSid": start.stream_sid})
        .to_string()
    }

    pub fn media(seq: u64, stream_sid: &str, chunk: u64, timestamp_ms: u64, ulaw: &[u8]) -> String {
        json!({"event": "media", "sequenceNumber": seq.to_string(),
               "media": {"track": "inbound", "chunk": chunk.to_string(),
                         "timestamp": timestamp_ms.to_string(), "payload": STANDARD.encode(ulaw)},
               "streamSid": stream_sid})
        .to_string()
    }

    pub fn dtmf(seq: u64, stream_sid: &str, digit: char) -> String {
        json!({"event": "dtmf", "streamSid": stream_sid, "sequenceNumber": seq.to_string(),
               "dtmf": {"track": "inbound_track", "digit": digit.to_string()}})
        .to_string()
    }

    pub fn mark(seq: u64, stream_sid: &str, name: &str) -> String {
        json!({"event": "mark", "sequenceNumber": seq.to_string(), "streamSid": stream_sid,
               "mark": {"name": name}})
        .to_string()
    }

    pub fn stop(seq: u64, stream_sid: &str, account_sid: &str, call_sid: &str) -> String {
        json!({"event": "stop", "sequenceNumber": seq.to_string(), "streamSid": stream_sid,
               "stop": {"accountSid": account_sid, "callSid": call_sid}})
        .to_string()
    }
}

/// What we send to Twilio, parsed back (for the simulator and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    Media {
        stream_sid: String,
        payload: Vec<u8>,
    },
    Mark {
        stream_sid: String,
        name: String,
    },
    Clear {
        stream_sid: String,
    },
}

/// Parses one of our outbound messages, strictly: this is how the simulator checks that we
/// speak Twilio's protocol.
pub fn parse_outbound(text: &str) -> Result<Outbound, ProtocolError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Raw {
        event: String,
        stream_sid: String,
        #[serde(default)]
        media: Option<RawOutMedia>,
        #[serde(default)]
        mark: Option<RawOutMark>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawOutMedia {
        payload: String,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawOutMark {
        name: String,
    }
    let raw: Raw = serde_json::from_str(text)?;
    match raw.event.as_str() {
        "media" => {
            let m = raw.media.ok_or(ProtocolError::Missing {
                event: "media",
                field: "media",
            })?;
            let mut payload = Vec::new();
            decode_payload(&m.payload, &mut payload)?;
            Ok(Outbound::Media {
                stream_sid: raw.stream_sid,
                payload,
            })
        }
        "mark" => Ok(Outbound::Mark {
            stream_sid: raw.stream_sid,
            name: raw
                .mark
                .ok_or(ProtocolError::Missing {
                    event: "mark",
                    field: "mark",
                })?
                .name,
        }),
        "clear" => Ok(Outbound::Clear {
            stream_sid: raw.stream_sid,
        }),
        _ => Err(ProtocolError::Missing {
            event: "outbound",
            field: "event",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Shapes as in Twilio's Media Streams documentation.
    const START: &str = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC123","streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0","callSid":"CA123","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{"org":"o1","token":"t"}},"streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0"}"#;

    #[test]
    fn parses_every_twilio_event() {
        assert_eq!(
            parse(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#).unwrap(),
            Inbound::Connected {
                protocol: "Call".into(),
                version: "1.0.0".into()
            }
        );
        let Inbound::Start(s) = parse(START).unwrap() else {
            panic!()
        };
        assert_eq!(s.call_sid, "CA123");
        assert!(s.media_format.is_phone_mulaw());
        assert_eq!(s.custom_parameters["org"], "o1");
        let media = r#"{"event":"media","sequenceNumber":"3","media":{"track":"inbound","chunk":"1","timestamp":"5","payload":"/////w=="},"streamSid":"MZ1"}"#;
        let Inbound::Media(m) = parse(media).unwrap() else {
            panic!()
        };
        assert_eq!(
            (m.chunk, m.timestamp_ms, m.track.as_str()),
            (1, 5, "inbound")
        );
        let mut buf = Vec::new();
        decode_payload(&m.payload, &mut buf).unwrap();
        assert_eq!(buf, vec![0xFF; 4]);
        assert_eq!(
            parse(r#"{"event":"dtmf","streamSid":"MZ1","sequenceNumber":"5","dtmf":{"track":"inbound_track","digit":"1"}}"#).unwrap(),
            Inbound::Dtmf { digit: "1".into() }
        );
        assert_eq!(
            parse(
                r#"{"event":"mark","sequenceNumber":"4","streamSid":"MZ1","mark":{"name":"seg-0"}}"#
            )
            .unwrap(),
            Inbound::Mark {
                name: "seg-0".into()
            }
        );
        assert_eq!(
            parse(r#"{"event":"stop","sequenceNumber":"5","streamSid":"MZ1","stop":{"accountSid":"AC1","callSid":"CA1"}}"#).unwrap(),
            Inbound::Stop { call_sid: Some("CA1".into()) }
        );
    }

    #[test]
    fn tolerates_unknown_events_and_fields() {
        assert_eq!(
            parse(r#"{"event":"hologram","x":1}"#).unwrap(),
            Inbound::Unknown {
                event: "hologram".into()
            }
        );
        let media = r#"{"event":"media","new":{"a":1},"media":{"payload":"AA==","extra":true}}"#;
        assert!(matches!(parse(media).unwrap(), Inbound::Media(_)));
    }

    #[test]
    fn rejects_malformed_messages_clearly() {
        assert!(matches!(parse("{not json"), Err(ProtocolError::Json(_))));
        assert!(matches!(
            parse(r#"{"no_event":1}"#),
            Err(ProtocolError::Json(_))
        ));
        assert!(matches!(
            parse(r#"{"event":"media"}"#),
            Err(ProtocolError::Missing { .. })
        ));
        assert!(matches!(
            parse(r#"{"event":"start","start":{"streamSid":"x"}}"#),
            Err(ProtocolError::Json(_))
        ));
        let big = format!(
            r#"{{"event":"media","pad":"{}"}}"#,
            "x".repeat(MAX_MESSAGE_BYTES)
        );
        assert!(matches!(parse(&big), Err(ProtocolError::TooLarge(_))));
        let mut buf = Vec::new();
        assert!(matches!(
            decode_payload("not*base64", &mut buf),
            Err(ProtocolError::Base64(_))
        ));
        let huge = STANDARD.encode(vec![0u8; MAX_PAYLOAD_BYTES + 100]);
        assert!(matches!(
            decode_payload(&huge, &mut buf),
            Err(ProtocolError::PayloadTooLarge(_))
        ));
    }

    #[test]
    fn outbound_messages_have_twilios_shape() {
        let mut out = String::new();
        write_media("MZ1", &[0xFF, 0x7F], &mut out);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"event":"media","streamSid":"MZ1","media":{"payload":"/38="}})
        );
        let v: serde_json::Value = serde_json::from_str(&mark("MZ1", "seg-2")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"event":"mark","streamSid":"MZ1","mark":{"name":"seg-2"}})
        );
        let v: serde_json::Value = serde_json::from_str(&clear("MZ1")).unwrap();
        assert_eq!(v, serde_json::json!({"event":"clear","streamSid":"MZ1"}));
    }

    #[test]
    fn simulator_messages_parse_as_twilios() {
        let Inbound::Start(s) = parse(START).unwrap() else {
            panic!()
        };
        assert_eq!(parse(&twilio::start(1, &s)).unwrap(), Inbound::Start(s));
        assert!(matches!(
            parse(&twilio::dtmf(2, "MZ1", '#')).unwrap(),
            Inbound::Dtmf { digit } if digit == "#"
        ));
        assert!(matches!(
            parse(&twilio::stop(3, "MZ1", "AC1", "CA1")).unwrap(),
            Inbound::Stop { call_sid: Some(c) } if c == "CA1"
        ));
    }

    proptest! {
        #[test]
        fn media_round_trips(payload in proptest::collection::vec(any::<u8>(), 0..400),
                             chunk in 1u64..1_000_000, ts in 0u64..10_000_000) {
            let text = twilio::media(7, "MZ9", chunk, ts, &payload);
            let Inbound::Media(m) = parse(&text).unwrap() else { panic!() };
            prop_assert_eq!(m.chunk, chunk);
            prop_assert_eq!(m.timestamp_ms, ts);
            let mut buf = Vec::new();
            decode_payload(&m.payload, &mut buf).unwrap();
            prop_assert_eq!(&buf, &payload);
            let mut out = String::new();
            write_media("MZ9", &payload, &mut out);
            prop_assert_eq!(parse_outbound(&out).unwrap(),
                Outbound::Media { stream_sid: "MZ9".into(), payload: payload.clone() });
        }

        #[test]
        fn arbitrary_text_never_panics(s in ".{0,200}") {
            let _ = parse(&s);
        }
    }
}
