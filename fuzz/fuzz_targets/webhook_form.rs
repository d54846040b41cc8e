//! Webhook bodies: form parsing, field extraction and signature validation never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use telephony::{signature, webhook};

fuzz_target!(|data: &[u8]| {
    let params = webhook::parse_form(data);
    let _ = webhook::VoiceWebhook::from_params(&params);
    let _ = webhook::StatusCallback::from_params(&params);
    let sig = params.first().map(|(_, v)| v.as_str()).unwrap_or("");
    let url = String::from_utf8_lossy(data);
    let _ = signature::validate("token", sig, &url, &params);
});
