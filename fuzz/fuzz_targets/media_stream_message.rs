//! Anything a peer can send on the Media Streams socket: parsing never panics, and a media
//! payload that decodes is within the size limit.
#![no_main]
use libfuzzer_sys::fuzz_target;
use telephony::protocol::{self, Inbound, MAX_PAYLOAD_BYTES};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(Inbound::Media(m)) = protocol::parse(text) {
        let mut out = Vec::new();
        if protocol::decode_payload(&m.payload, &mut out).is_ok() {
            assert!(out.len() <= MAX_PAYLOAD_BYTES);
        }
    }
    let _ = protocol::parse_outbound(text);
});
