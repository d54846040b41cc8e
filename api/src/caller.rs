//! A simulated Twilio call: what Twilio does when a caller dials one of our numbers.
//!
//! It posts the signed voice webhook, reads our TwiML, opens the Media Streams WebSocket and
//! speaks Twilio's protocol on it: `connected`, `start` (with the TwiML's parameters), caller
//! audio as 20 ms μ-law frames at real time, DTMF, and `stop` when the caller hangs up. It plays
//! the agent's audio as a phone would — 20 ms per 20 ms from a buffer — echoes each mark when
//! the audio before it has played, and empties the buffer on `clear` (echoing the dropped
//! marks at once), as Twilio does. Every message we send it is parsed strictly.
//!
//! Used by `voxanne simulate`, the load generator and the end-to-end tests.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::{Instant, MissedTickBehavior, interval};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use media::{PHONE_FRAME, mulaw};
use telephony::protocol::{self, MediaFormat, Outbound, Start};
use telephony::{signature, twiml};

/// How the simulated call is placed.
#[derive(Debug, Clone)]
pub struct CallerConfig {
    /// Where the server listens, e.g. `http://127.0.0.1:8080`.
    pub server: String,
    /// The server's configured public URL (what Twilio would have requested, and signed).
    pub public_url: String,
    pub auth_token: String,
    pub from: String,
    pub to: String,
    /// `inbound`, or `outbound-api` for a call we placed through the REST API (then `from` is
    /// the clinic's number and `to` the callee).
    pub direction: String,
    /// The voice webhook as Twilio was told it (path and query), e.g. `/twilio/voice` or, for a
    /// reminder, `/twilio/voice?appointment=…`.
    pub webhook: String,
    /// Twilio's CallSid for this call (`CA` + 32 hex digits).
    pub call_sid: String,
    /// After the last line, hang up once the agent has been quiet this long.
    pub hang_up_after: Duration,
    /// Hang up regardless after this long.
    pub max_duration: Duration,
    /// How long the caller waits for an answer that does not come before going on (see
    /// [`LineStart::AfterAgent`]). Tests whose every line is answered set it long, so a slow
    /// recogniser on a loaded machine delays the call rather than changing its course.
    pub no_answer: Duration,
    /// Messages sent right after `start`, before any audio: for testing how the server copes
    /// with what Twilio would never send.
    pub inject: Vec<Message>,
}

impl CallerConfig {
    /// A local call to `server`, whose public URL is the same address.
    pub fn local(server: &str, auth_token: &str) -> Self {
        Self {
            server: server.trim_end_matches('/').to_string(),
            public_url: server.trim_end_matches('/').to_string(),
            auth_token: auth_token.to_string(),
            from: "+15550100001".into(),
            to: "+15550100002".into(),
            direction: "inbound".into(),
            webhook: "/twilio/voice".into(),
            call_sid: new_sid("CA"),
            hang_up_after: Duration::from_secs(3),
            max_duration: Duration::from_secs(120),
            no_answer: NO_ANSWER,
            inject: Vec::new(),
        }
    }
}

/// A Twilio-style SID: two letters and 32 hex digits.
pub fn new_sid(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// When a line of the caller's script starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineStart {
    /// Once the agent has answered (the greeting, or a reply to the caller's last line) and
    /// been quiet this long (a polite caller); if no answer comes, `no_answer` later anyway.
    AfterAgent { pause: Duration },
    /// Once the agent has been speaking this long (a caller who interrupts).
    Interrupt { after: Duration },
}

/// One step of the caller's script.
#[derive(Debug, Clone)]
pub enum Line {
    /// Say this (8 kHz PCM).
    Speak { audio: Vec<i16>, start: LineStart },
    /// Press a key.
    Press { digit: char, start: LineStart },
    /// Stay on the line, silent, until the test sends `true` (or the call's `max_duration`
    /// ends it): a call that is certainly still in progress while the test looks at it.
    HoldUntil(tokio::sync::watch::Receiver<bool>),
}

impl Line {
    /// When the line starts; `None` for a hold (it starts as soon as it is reached).
    fn start(&self) -> Option<LineStart> {
        match self {
            Line::Speak { start, .. } | Line::Press { start, .. } => Some(*start),
            Line::HoldUntil(_) => None,
        }
    }
}

/// What happened on the call, from the caller's side.
#[derive(Debug, Clone, Default)]
pub struct CallReport {
    pub call_sid: String,
    pub stream_sid: String,
    /// The organisation the server chose (from the TwiML's parameters).
    pub org: Option<String>,
    /// What the caller heard (8 kHz), one sample per sample of the call's timeline.
    pub heard: Vec<i16>,
    /// What the caller said (8 kHz), on the same timeline.
    pub said: Vec<i16>,
    pub frames_received: u64,
    pub marks_echoed: u64,
    /// When each `clear` arrived, in media time (the timeline of `heard` and `said`, which on a
    /// loaded machine runs behind the wall clock), so it can index `heard`.
    pub clears: Vec<Duration>,
    /// When each spoken line's last frame was sent.
    pub line_ends: Vec<Duration>,
    /// For each spoken line, when the first agent audio arrived after it (call time).
    pub first_audio_after_line: Vec<Option<Duration>>,
    /// Messages from the server that were not valid Twilio messages.
    pub protocol_errors: u64,
    /// The server closed the stream (the agent hung up), rather than the caller.
    pub ended_by_server: bool,
}

/// A simulated call failed before or while connecting.
#[derive(Debug, thiserror::Error)]
pub enum CallerError {
    #[error("webhook request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("webhook answered {status}: {body}")]
    Webhook { status: u16, body: String },
    #[error("webhook answer is not <Connect><Stream> TwiML: {0}")]
    Twiml(String),
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
}

/// How long a caller waits for an answer that does not come before going on, by default.
const NO_ANSWER: Duration = Duration::from_secs(6);

#[derive(Debug)]
enum Playout {
    Frame([u8; PHONE_FRAME]),
    Mark(String),
}

/// Places one call and runs `script` to the end.
pub async fn place_call(config: &CallerConfig, script: &[Line]) -> Result<CallReport, CallerError> {
    // 1. The voice webhook, signed as Twilio signs it.
    let params: Vec<(String, String)> = [
        ("AccountSid", "AC00000000000000000000000000000000"),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", config.call_sid.as_str()),
        ("CallStatus", "ringing"),
        ("Direction", config.direction.as_str()),
        ("From", config.from.as_str()),
        ("To", config.to.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let url = format!("{}{}", config.public_url, config.webhook);
    let sig = signature::compute(&config.auth_token, &url, &params);
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish();
    engines::models::install_tls_provider();
    let response = reqwest::Client::new()
        .post(format!("{}{}", config.server, config.webhook))
        .header("X-Twilio-Signature", sig)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    if status != 200 {
        return Err(CallerError::Webhook { status, body: text });
    }
    let (stream_url, parameters) =
        twiml::parse_connect_stream(&text).ok_or_else(|| CallerError::Twiml(text.clone()))?;
    // 2. The WebSocket: the stream URL's path on the server's real address.
    let path = stream_url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
        .unwrap_or_else(|| "/twilio/media".into());
    let ws_base = config
        .server
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1);
    // Twilio signs the stream's opening request over the stream URL, with no parameters.
    let mut request = format!("{ws_base}{path}").into_client_request()?;
    let stream_signature = signature::compute(&config.auth_token, &stream_url, &[]);
    request.headers_mut().insert(
        "X-Twilio-Signature",
        stream_signature
            .parse()
            .expect("base64 is a valid header value"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    let stream_sid = new_sid("MZ");
    let start = Start {
        account_sid: "AC00000000000000000000000000000000".into(),
        stream_sid: stream_sid.clone(),
        call_sid: config.call_sid.clone(),
        tracks: vec!["inbound".into()],
        media_format: MediaFormat {
            encoding: "audio/x-mulaw".into(),
            sample_rate: 8_000,
            channels: 1,
        },
        custom_parameters: parameters.into_iter().collect(),
    };
    let mut seq = 1u64;
    ws.send(Message::Text(protocol::twilio::connected().into()))
        .await?;
    ws.send(Message::Text(protocol::twilio::start(seq, &start).into()))
        .await?;
    for message in &config.inject {
        ws.send(message.clone()).await?;
    }

    let mut report = CallReport {
        org: start.custom_parameters.get("org").cloned(),
        call_sid: config.call_sid.clone(),
        stream_sid: stream_sid.clone(),
        ..CallReport::default()
    };
    let mut playout: VecDeque<Playout> = VecDeque::new();
    let mut ticker = interval(Duration::from_millis(20));
    // Real time, like the phone network: a late tick is caught up, not skipped.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let began = Instant::now();
    let mut frame_no: u64 = 0;
    let mut line_idx = 0usize;
    let mut speaking: Option<(usize, usize)> = None; // (line, position)
    let mut agent_quiet_since: Option<Duration> = Some(Duration::ZERO);
    let mut agent_speaking_since: Option<Duration> = None;
    // The agent has played audio since the caller's last line (it answered). False at first:
    // a polite caller waits for the greeting (up to `no_answer`) before its first line, however
    // long the agent's voice takes to start; otherwise a greeting later than the first line's
    // pause (a slow TTS on a loaded machine) is talked over and cut off by a barge-in.
    let mut answered = false;
    let mut ulaw = [mulaw::SILENCE; PHONE_FRAME];
    let mut pending_marks: Vec<String> = Vec::new();

    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let t = Duration::from_millis(frame_no * 20);
                // Echo marks whose audio has finished playing (queued behind nothing).
                while let Some(Playout::Mark(_)) = playout.front() {
                    if let Some(Playout::Mark(name)) = playout.pop_front() {
                        pending_marks.push(name);
                    }
                }
                // Start the next line when its moment comes.
                if speaking.is_none() && line_idx < script.len() {
                    let due = match script[line_idx].start() {
                        Some(LineStart::AfterAgent { pause }) => agent_quiet_since.is_some_and(|s| {
                            // Wait for the answer; give up waiting after `no_answer`.
                            (answered && t >= s + pause) || t >= s + pause + config.no_answer
                        }),
                        Some(LineStart::Interrupt { after }) => {
                            agent_speaking_since.is_some_and(|s| t >= s + after)
                        }
                        None => true,
                    };
                    if due {
                        match &script[line_idx] {
                            Line::Speak { .. } => speaking = Some((line_idx, 0)),
                            Line::Press { digit, .. } => {
                                seq += 1;
                                ws.send(Message::Text(
                                    protocol::twilio::dtmf(seq, &stream_sid, *digit).into(),
                                ))
                                .await?;
                                line_idx += 1;
                            }
                            Line::HoldUntil(release) => {
                                // Released (or its sender gone): on to the next line.
                                if *release.borrow() || release.has_changed().is_err() {
                                    line_idx += 1;
                                }
                            }
                        }
                    }
                }
                // The caller's next 20 ms.
                let mut pcm = [0i16; PHONE_FRAME];
                if let Some((line, pos)) = speaking
                    && let Line::Speak { audio, .. } = &script[line]
                {
                    let end = (pos + PHONE_FRAME).min(audio.len());
                    pcm[..end - pos].copy_from_slice(&audio[pos..end]);
                    if end >= audio.len() {
                        speaking = None;
                        line_idx = line + 1;
                        // Give the agent its turn: quiet time counts from the line's end.
                        if agent_quiet_since.is_some() {
                            agent_quiet_since = Some(t);
                        }
                        answered = false;
                        report.line_ends.push(t + Duration::from_millis(20));
                        report.first_audio_after_line.push(None);
                    } else {
                        speaking = Some((line, end));
                    }
                }
                for (u, &s) in ulaw.iter_mut().zip(pcm.iter()) {
                    *u = mulaw::encode(s);
                }
                report.said.extend(ulaw.iter().map(|&u| mulaw::decode(u)));
                seq += 1;
                frame_no += 1;
                ws.send(Message::Text(
                    protocol::twilio::media(seq, &stream_sid, frame_no, t.as_millis() as u64, &ulaw).into(),
                ))
                .await?;
                // The phone plays 20 ms of the agent.
                match playout.pop_front() {
                    Some(Playout::Frame(f)) => {
                        report.heard.extend(f.iter().map(|&u| mulaw::decode(u)));
                        agent_quiet_since = None;
                        agent_speaking_since.get_or_insert(t);
                        if speaking.is_none() {
                            answered = true;
                        }
                    }
                    other => {
                        if let Some(Playout::Mark(name)) = other {
                            pending_marks.push(name);
                        }
                        report.heard.extend([0i16; PHONE_FRAME]);
                        if playout.is_empty() {
                            agent_quiet_since.get_or_insert(t);
                            agent_speaking_since = None;
                        }
                    }
                }
                for name in pending_marks.drain(..) {
                    seq += 1;
                    report.marks_echoed += 1;
                    ws.send(Message::Text(protocol::twilio::mark(seq, &stream_sid, &name).into()))
                        .await?;
                }
                // Hang up when the script is done and the agent has had its say.
                let done = line_idx >= script.len() && speaking.is_none();
                let quiet_long = agent_quiet_since.is_some_and(|s| {
                    (answered && t >= s + config.hang_up_after)
                        || t >= s + config.hang_up_after + config.no_answer
                });
                if (done && quiet_long) || t >= config.max_duration {
                    seq += 1;
                    let stop = protocol::twilio::stop(seq, &stream_sid, &start.account_sid, &config.call_sid);
                    let _ = ws.send(Message::Text(stop.into())).await;
                    let _ = ws.close(None).await;
                    break;
                }
            }
            msg = ws.next() => {
                let now = began.elapsed();
                match msg {
                    Some(Ok(Message::Text(text))) => match protocol::parse_outbound(&text) {
                        Ok(Outbound::Media { stream_sid: sid, payload }) => {
                            if sid != stream_sid {
                                report.protocol_errors += 1;
                                continue;
                            }
                            if let Some(slot) = report.first_audio_after_line.last_mut()
                                && slot.is_none()
                                && speaking.is_none()
                            {
                                *slot = Some(now);
                            }
                            for chunk in payload.chunks(PHONE_FRAME) {
                                let mut f = [mulaw::SILENCE; PHONE_FRAME];
                                f[..chunk.len()].copy_from_slice(chunk);
                                playout.push_back(Playout::Frame(f));
                                report.frames_received += 1;
                            }
                        }
                        Ok(Outbound::Mark { stream_sid: sid, name }) => {
                            if sid != stream_sid {
                                report.protocol_errors += 1;
                            }
                            playout.push_back(Playout::Mark(name));
                        }
                        Ok(Outbound::Clear { stream_sid: sid }) => {
                            if sid != stream_sid {
                                report.protocol_errors += 1;
                            }
                            report.clears.push(Duration::from_millis(frame_no * 20));
                            // Twilio drops the buffered audio and echoes its marks at once.
                            for item in playout.drain(..) {
                                if let Playout::Mark(name) = item {
                                    seq += 1;
                                    report.marks_echoed += 1;
                                    ws.send(Message::Text(
                                        protocol::twilio::mark(seq, &stream_sid, &name).into(),
                                    ))
                                    .await?;
                                }
                            }
                        }
                        Err(_) => report.protocol_errors += 1,
                    },
                    Some(Ok(Message::Close(_))) | None => {
                        report.ended_by_server = true;
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                }
            }
        }
    }
    Ok(report)
}
