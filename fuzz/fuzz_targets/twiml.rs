//! TwiML: what we write parses back to the same values, and parsing junk never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use telephony::twiml;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = twiml::parse_connect_stream(&text);
    // Values without control characters (which escaping drops) round-trip exactly.
    let value: String = text.chars().filter(|c| !c.is_control()).collect();
    let xml = twiml::connect_stream("wss://example.com/twilio/media", None, &[("v", &value)]);
    let (_, params) = twiml::parse_connect_stream(&xml).expect("our own TwiML parses");
    assert_eq!(params, vec![("v".to_string(), value)]);
});
