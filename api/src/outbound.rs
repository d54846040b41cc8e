//! Outbound calls through Twilio's REST API: `POST /2010-04-01/Accounts/{AccountSid}/Calls.json`
//! with HTTP Basic auth (Account SID and auth token), `To`, `From`, `Url` (our voice webhook,
//! which answers with the media stream as for any call) and `StatusCallback` (which updates the
//! call record). The API base URL is configurable so tests run against a local server that
//! speaks Twilio's REST format.
//!
//! An appointment reminder passes `?appointment=ID` on the webhook URL: Twilio signs the full
//! URL, query included, so the voice webhook can trust it, and the call's receptionist opens
//! with the reminder.

use std::time::Duration;

use serde::Deserialize;

/// Twilio's production REST API.
pub const TWILIO_API_BASE: &str = "https://api.twilio.com";

/// How long we wait for Twilio to accept a call request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A call to place.
#[derive(Debug, Clone)]
pub struct CallRequest {
    /// `https://api.twilio.com`, or a test server.
    pub api_base: String,
    pub account_sid: String,
    pub auth_token: String,
    /// The clinic's Twilio number (E.164).
    pub from: String,
    pub to: String,
    /// Our public URL (`VOXANNE_PUBLIC_URL`).
    pub public_url: String,
    /// The appointment a reminder call is about.
    pub appointment: Option<String>,
}

/// Placing the call failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("cannot reach Twilio: {0}")]
    Transport(String),
    /// Twilio refused: its status, error code and message.
    #[error("Twilio refused the call ({status}): {message} (code {code})")]
    Refused {
        status: u16,
        code: i64,
        message: String,
    },
    #[error("unexpected answer from Twilio: {0}")]
    BadResponse(String),
}

#[derive(Debug, Deserialize)]
struct CallResource {
    sid: String,
}

#[derive(Debug, Deserialize)]
struct TwilioError {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

impl CallRequest {
    /// The form Twilio receives.
    pub fn form(&self) -> Vec<(&'static str, String)> {
        let base = self.public_url.trim_end_matches('/');
        let url = match &self.appointment {
            Some(id) => format!(
                "{base}/twilio/voice?{}",
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("appointment", id)
                    .finish()
            ),
            None => format!("{base}/twilio/voice"),
        };
        vec![
            ("To", self.to.clone()),
            ("From", self.from.clone()),
            ("Url", url),
            ("Method", "POST".into()),
            ("StatusCallback", format!("{base}/twilio/status")),
            ("StatusCallbackMethod", "POST".into()),
            ("StatusCallbackEvent", "initiated".into()),
            ("StatusCallbackEvent", "ringing".into()),
            ("StatusCallbackEvent", "answered".into()),
            ("StatusCallbackEvent", "completed".into()),
        ]
    }
}

/// Asks Twilio to place the call; returns its CallSid.
pub async fn place(request: &CallRequest) -> Result<String, OutboundError> {
    let url = format!(
        "{}/2010-04-01/Accounts/{}/Calls.json",
        request.api_base.trim_end_matches('/'),
        request.account_sid
    );
    // Built before any await: the serializer is not `Send`.
    let body = {
        let mut body = form_urlencoded::Serializer::new(String::new());
        for (k, v) in request.form() {
            body.append_pair(k, &v);
        }
        body.finish()
    };
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| OutboundError::Transport(e.to_string()))?;
    let response = client
        .post(&url)
        .basic_auth(&request.account_sid, Some(&request.auth_token))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| OutboundError::Transport(e.to_string()))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| OutboundError::Transport(e.to_string()))?;
    if !status.is_success() {
        let e: TwilioError = serde_json::from_str(&text).unwrap_or(TwilioError {
            code: 0,
            message: text.chars().take(200).collect(),
        });
        return Err(OutboundError::Refused {
            status: status.as_u16(),
            code: e.code,
            message: e.message,
        });
    }
    let call: CallResource =
        serde_json::from_str(&text).map_err(|e| OutboundError::BadResponse(e.to_string()))?;
    Ok(call.sid)
}
