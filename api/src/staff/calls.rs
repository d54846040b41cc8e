//! `/api/v1/calls`: the call search, a call's detail (transcript as heard, events, latency,
//! outcome and summary) and its recording (both channels or mixed to mono, with HTTP Range).

use std::io::SeekFrom;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::{Value, json};
use storage::{
    Appointment, CallFilter, CallListItem, CallSid, CallbackRequest, OUTCOMES, OrgId,
    RecordingRecord,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tracing::warn;

use super::ApiError;
use super::auth::Auth;
use super::events::StaffEvent;
use crate::server::AppState;

/// Call event kinds the live stream carries as they happen.
pub const LIVE_EVENT_KINDS: [&str; 6] = [
    "tool_call",
    "escalation",
    "transfer",
    "tts_fallback",
    "brain_error",
    "llm_fallback",
];

/// How long a signed recording URL works (long enough to listen to a long call and seek).
const RECORDING_URL_TTL_SECS: i64 = 3600;
const RECORDING_URL_PURPOSE: &str = "voxanne recording url v1";

/// What a call came to, from its events as they happen: the outcome `call.ended` reports when
/// the database has not caught up within a few seconds. Same order as [`OUTCOMES`].
#[derive(Clone, Debug, Default)]
pub struct CallFacts {
    caller_spoke: bool,
    booked: bool,
    transferred: bool,
    message: bool,
    escalated: bool,
}

impl CallFacts {
    pub fn turn(&mut self, role: &str) {
        if role == "caller" {
            self.caller_spoke = true;
        }
    }

    pub fn event(&mut self, kind: &str, detail: &str) {
        match kind {
            "transfer" => self.transferred = true,
            "escalation" => self.escalated = true,
            "tool_call" => {
                let v: Value = serde_json::from_str(detail).unwrap_or(Value::Null);
                let failed = v["result"].get("error").is_some() || v["result"]["ok"] == false;
                match v["name"].as_str() {
                    Some("book" | "reschedule") if !failed => self.booked = true,
                    Some("take_message") if !failed => self.message = true,
                    _ => {}
                }
            }
            _ => {}
        }
    }

    pub fn outcome(&self) -> &'static str {
        if self.booked {
            "booked"
        } else if self.transferred {
            "transferred"
        } else if self.message {
            "message"
        } else if self.escalated {
            "escalated"
        } else if self.caller_spoke {
            "answered"
        } else {
            "abandoned"
        }
    }
}

/// Publishes `call.ended` once the call's writes have landed (outcome and summary from the
/// database, so they agree with the call page), or after 5 s from what the call saw.
pub fn publish_call_ended(
    state: AppState,
    org: OrgId,
    sid: CallSid,
    end_reason: String,
    duration_ms: i64,
    facts: CallFacts,
) {
    // Tracked: shutdown waits for it before the webhook enqueuer stops taking events.
    let publishers = state.publishers().clone();
    publishers.spawn(async move {
        let from_db = async {
            state.queue().flush(Duration::from_secs(5)).await.ok()?;
            let outcome = state.store().call_outcome(org, &sid).await.ok()??;
            let summary = summary_from_store(&state, org, &sid, &outcome).await.ok()?;
            Some((outcome, summary))
        };
        let (outcome, summary) = match tokio::time::timeout(Duration::from_secs(8), from_db).await {
            Ok(Some(found)) => found,
            _ => {
                let o = facts.outcome().to_string();
                let s = describe(&o, &[], &[], None, None);
                (o, s)
            }
        };
        state.events().publish(
            org,
            StaffEvent::CallEnded {
                sid: sid.0,
                end_reason,
                duration_ms,
                outcome,
                summary,
            },
        );
    });
}

/// One line for staff: what the call came to.
fn describe(
    outcome: &str,
    appointments: &[Appointment],
    messages: &[CallbackRequest],
    first_caller_line: Option<&str>,
    tz: Option<Tz>,
) -> String {
    let when = |t: DateTime<Utc>| match tz {
        Some(tz) => t.with_timezone(&tz).format("%a %-d %b %H:%M").to_string(),
        None => t.format("%a %-d %b %H:%M UTC").to_string(),
    };
    let mut parts = Vec::new();
    for a in appointments.iter().filter(|a| a.is_booked()) {
        let verb = if a.rescheduled_from.is_some() {
            "Moved"
        } else {
            "Booked"
        };
        let who = if a.patient_name.is_empty() {
            String::new()
        } else {
            format!(" for {}", a.patient_name)
        };
        parts.push(format!("{verb} {}{who}, {}.", a.service, when(a.starts_at)));
    }
    for a in appointments
        .iter()
        .filter(|a| !a.is_booked() && a.rescheduled_from.is_none())
    {
        if !appointments
            .iter()
            .any(|b| b.rescheduled_from == Some(a.id))
        {
            parts.push(format!("Cancelled {}, {}.", a.service, when(a.starts_at)));
        }
    }
    for m in messages {
        let urgent = if m.urgent {
            "Urgent message"
        } else {
            "Message"
        };
        parts.push(format!(
            "{urgent} from {}: {}.",
            m.name,
            m.reason.trim_end_matches('.')
        ));
    }
    if parts.is_empty() {
        let said = first_caller_line
            .map(|l| {
                let l: String = l.chars().take(80).collect();
                format!(" Caller: \u{201c}{l}\u{201d}")
            })
            .unwrap_or_default();
        let head = match outcome {
            "transferred" => "Transferred to staff.",
            "escalated" => "Escalated to staff.",
            "message" => "Message taken.",
            "answered" => "Answered.",
            "in_progress" => "In progress.",
            "booked" => "Booked.",
            _ => "The caller said nothing.",
        };
        return format!("{head}{said}");
    }
    if outcome == "transferred" {
        parts.push("Transferred to staff.".into());
    }
    parts.join(" ")
}

async fn summary_from_store(
    state: &AppState,
    org: OrgId,
    sid: &CallSid,
    outcome: &str,
) -> Result<String, ApiError> {
    let store = state.store();
    let (appointments, messages, turns) = tokio::try_join!(
        store.appointments_of_call(org, sid),
        store.callbacks_of_call(org, sid),
        store.list_turns(org, sid),
    )?;
    let first = turns
        .iter()
        .find(|t| t.role == "caller")
        .map(|t| t.text.as_str());
    let tz = state.clinic_for(org).await.clinic.tz;
    Ok(describe(outcome, &appointments, &messages, first, Some(tz)))
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    from: Option<String>,
    to: Option<String>,
    status: Option<String>,
    direction: Option<String>,
    outcome: Option<String>,
    caller: Option<String>,
    q: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

pub(crate) fn time_param(name: &str, v: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        return Ok(Some(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc()));
    }
    Err(ApiError::invalid(format!(
        "{name} must be an RFC 3339 time (2026-12-02T09:00:00Z) or a date (2026-12-02)"
    )))
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

fn encode_cursor(item: &CallListItem) -> String {
    URL_SAFE_NO_PAD.encode(format!(
        "{}|{}",
        item.call
            .started_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        item.call.sid
    ))
}

fn decode_cursor(c: &str) -> Result<(DateTime<Utc>, CallSid), ApiError> {
    let bad = || ApiError::invalid("cursor is not one this API gave");
    let text =
        String::from_utf8(URL_SAFE_NO_PAD.decode(c).map_err(|_| bad())?).map_err(|_| bad())?;
    let (t, sid) = text.split_once('|').ok_or_else(bad)?;
    let t = DateTime::parse_from_rfc3339(t).map_err(|_| bad())?;
    Ok((t.with_timezone(&Utc), CallSid(sid.to_string())))
}

/// JSON of a call in a list.
pub fn call_json(item: &CallListItem) -> Value {
    let c = &item.call;
    json!({
        "sid": c.sid,
        "from": c.from,
        "to": c.to,
        "direction": c.direction,
        "status": c.status,
        "outcome": item.outcome,
        "started_at": c.started_at,
        "ended_at": c.ended_at,
        "duration_ms": c.duration_ms,
        "end_reason": c.end_reason,
    })
}

/// `GET /api/v1/calls`.
pub async fn list(
    auth: Auth,
    State(state): State<AppState>,
    Query(p): Query<ListParams>,
) -> Result<Json<Value>, ApiError> {
    let outcome = nonempty(&p.outcome);
    if let Some(o) = &outcome
        && !OUTCOMES.contains(&o.as_str())
    {
        return Err(ApiError::invalid(format!(
            "outcome must be one of {}",
            OUTCOMES.join(", ")
        )));
    }
    let direction = nonempty(&p.direction);
    if let Some(d) = &direction
        && d != "inbound"
        && d != "outbound"
    {
        return Err(ApiError::invalid("direction must be inbound or outbound"));
    }
    let limit = p.limit.unwrap_or(50);
    if !(1..=storage::MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit must be 1–{}",
            storage::MAX_PAGE
        )));
    }
    let text = nonempty(&p.q);
    if text.as_ref().is_some_and(|t| t.chars().count() > 200) {
        return Err(ApiError::invalid("q is at most 200 characters"));
    }
    let filter = CallFilter {
        from: time_param("from", p.from.as_deref())?,
        to: time_param("to", p.to.as_deref())?,
        status: nonempty(&p.status),
        direction,
        outcome,
        caller: nonempty(&p.caller).map(|c| {
            c.chars()
                .filter(|c| c.is_ascii_digit() || *c == '+')
                .collect()
        }),
        text,
        after: nonempty(&p.cursor).map(|c| decode_cursor(&c)).transpose()?,
        limit,
    };
    let items = state.store().search_calls(auth.org, &filter).await?;
    let next = (items.len() == limit as usize)
        .then(|| items.last().map(encode_cursor))
        .flatten();
    Ok(Json(json!({
        "items": items.iter().map(call_json).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

pub fn appointment_json(a: &Appointment) -> Value {
    json!({
        "id": a.id,
        "call_sid": a.call,
        "phone": a.phone,
        "name": a.patient_name,
        "service": a.service,
        "starts_at": a.starts_at,
        "ends_at": a.ends_at,
        "status": a.status,
        "rescheduled_from": a.rescheduled_from,
        "created_at": a.created_at,
    })
}

pub fn message_json(m: &CallbackRequest) -> Value {
    json!({
        "id": m.id,
        "call_sid": m.call,
        "name": m.name,
        "phone": m.phone,
        "reason": m.reason,
        "urgent": m.urgent,
        "status": m.status,
        "created_at": m.created_at,
        "updated_at": m.updated_at,
    })
}

fn recording_url(state: &AppState, org: OrgId, sid: &str, mix: &str) -> String {
    let exp = Utc::now().timestamp() + RECORDING_URL_TTL_SECS;
    let data = format!("{org}/{sid}/{mix}/{exp}", org = org.0);
    let sig = URL_SAFE_NO_PAD.encode(state.keys().sign(RECORDING_URL_PURPOSE, data.as_bytes()));
    format!(
        "/api/v1/calls/{sid}/recording?mix={mix}&org={org}&exp={exp}&sig={sig}",
        org = org.0
    )
}

/// `GET /api/v1/calls/{sid}`.
pub async fn detail(
    auth: Auth,
    State(state): State<AppState>,
    Path(sid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let sid = CallSid(sid);
    let store = state.store();
    let call = store
        .get_call(auth.org, &sid)
        .await?
        .ok_or_else(|| ApiError::not_found("call"))?;
    let outcome = store
        .call_outcome(auth.org, &sid)
        .await?
        .ok_or_else(|| ApiError::not_found("call"))?;
    let (turns, events, recording, appointments, messages) = tokio::try_join!(
        store.list_turns(auth.org, &sid),
        store.list_events(auth.org, &sid),
        store.get_recording(auth.org, &sid),
        store.appointments_of_call(auth.org, &sid),
        store.callbacks_of_call(auth.org, &sid),
    )?;
    let first = turns
        .iter()
        .find(|t| t.role == "caller")
        .map(|t| t.text.as_str());
    let tz = state.clinic_for(auth.org).await.clinic.tz;
    let summary = describe(&outcome, &appointments, &messages, first, Some(tz));
    let mut c = call_json(&CallListItem { call, outcome });
    c["summary"] = json!(summary);
    Ok(Json(json!({
        "call": c,
        "turns": turns.iter().map(|t| json!({
            "seq": t.seq,
            "role": t.role,
            "text": t.text,
            "heard_text": t.heard_text,
            "interrupted": t.interrupted,
            "start_ms": t.start_ms,
            "end_ms": t.end_ms,
            "latency": t.latency,
        })).collect::<Vec<_>>(),
        "events": events.iter().map(|e| json!({
            "seq": e.seq,
            "at_ms": e.at_ms,
            "kind": e.kind,
            "detail": e.detail.get("detail").cloned().map(|d| match d {
                Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
                other => other,
            }).unwrap_or_else(|| e.detail.clone()),
        })).collect::<Vec<_>>(),
        "recording": recording.map(|r| json!({
            "duration_ms": r.duration_ms,
            "channels": r.channels,
            "sample_rate": r.sample_rate,
            "sha256": r.sha256,
            "url": recording_url(&state, auth.org, &sid.0, "both"),
            "mono_url": recording_url(&state, auth.org, &sid.0, "mono"),
        })),
        "appointments": appointments.iter().map(appointment_json).collect::<Vec<_>>(),
        "messages": messages.iter().map(message_json).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize)]
pub struct RecordingParams {
    mix: Option<String>,
    org: Option<String>,
    exp: Option<i64>,
    sig: Option<String>,
}

/// A byte range of a `len`-byte body: `Ok(None)` = the whole body (no or an ignored Range),
/// `Err(())` = unsatisfiable (416).
// The only failure is "unsatisfiable" (answered 416), so it carries nothing.
#[allow(clippy::result_unit_err)]
pub fn parse_range(header: Option<&str>, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(h) = header else { return Ok(None) };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Ok(None); // another unit: ignored, as RFC 9110 allows
    };
    if spec.contains(',') {
        return Ok(None); // several ranges: the whole body (RFC 9110 lets a server ignore Range)
    }
    let (a, b) = spec.trim().split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 || len == 0 {
            return Err(());
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            let e: u64 = b.parse().map_err(|_| ())?;
            if e < start {
                return Err(());
            }
            e.min(len.saturating_sub(1))
        };
        if start >= len {
            return Err(());
        }
        (start, end)
    };
    Ok(Some(range))
}

/// Who may read a recording: a signed URL from the call page, or normal credentials.
async fn recording_org(
    state: &AppState,
    headers: &HeaderMap,
    sid: &str,
    p: &RecordingParams,
    mix: &str,
) -> Result<OrgId, ApiError> {
    if let (Some(org), Some(exp), Some(sig)) = (&p.org, p.exp, &p.sig) {
        let data = format!("{org}/{sid}/{mix}/{exp}");
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| ApiError::unauthorized("invalid recording link"))?;
        if !state
            .keys()
            .verify(RECORDING_URL_PURPOSE, data.as_bytes(), &sig)
        {
            return Err(ApiError::unauthorized("invalid recording link"));
        }
        if exp <= Utc::now().timestamp() {
            return Err(ApiError::unauthorized(
                "recording link expired; open the call again",
            ));
        }
        return org
            .parse()
            .map(OrgId)
            .map_err(|_| ApiError::unauthorized("invalid recording link"));
    }
    let credential = super::auth::bearer(headers)
        .ok_or_else(|| ApiError::unauthorized("sign in, or use the call's recording link"))?;
    Ok(super::auth::authenticate(state, credential).await?.org)
}

/// The stored stereo WAV mixed to one channel (a WAV of its own).
fn mix_to_mono(stereo: &[u8]) -> Result<Vec<u8>, ApiError> {
    let mut reader = hound::WavReader::new(std::io::Cursor::new(stereo))
        .map_err(|e| ApiError::internal(format!("recording is not a WAV: {e}")))?;
    let spec = reader.spec();
    let channels = spec.channels.max(1) as usize;
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .collect::<Result<_, _>>()
        .map_err(|e| ApiError::internal(format!("recording unreadable: {e}")))?;
    let mut out = std::io::Cursor::new(Vec::with_capacity(samples.len() / channels * 2 + 44));
    {
        let mut w = hound::WavWriter::new(
            &mut out,
            hound::WavSpec {
                channels: 1,
                ..spec
            },
        )
        .map_err(ApiError::internal)?;
        for frame in samples.chunks(channels) {
            let sum: i32 = frame.iter().map(|&s| i32::from(s)).sum();
            // Sum, clipped: the two sides rarely talk at once, so halving would only make the
            // recording quieter.
            w.write_sample(sum.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16)
                .map_err(ApiError::internal)?;
        }
        w.finalize().map_err(ApiError::internal)?;
    }
    Ok(out.into_inner())
}

async fn read_all(state: &AppState, r: &RecordingRecord) -> Result<Vec<u8>, ApiError> {
    let mut reader = state
        .recordings()
        .open(&r.location)
        .await
        .map_err(ApiError::internal)?;
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .await
        .map_err(ApiError::internal)?;
    Ok(bytes)
}

/// `GET /api/v1/calls/{sid}/recording?mix=both|mono`: `audio/wav`, with `Range` support.
pub async fn recording(
    State(state): State<AppState>,
    Path(sid): Path<String>,
    Query(p): Query<RecordingParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mix = p.mix.clone().unwrap_or_else(|| "both".into());
    if mix != "both" && mix != "mono" {
        return Err(ApiError::invalid("mix must be both or mono"));
    }
    let org = recording_org(&state, &headers, &sid, &p, &mix).await?;
    let sid = CallSid(sid);
    let rec = state
        .store()
        .get_recording(org, &sid)
        .await?
        .ok_or_else(|| ApiError::not_found("recording"))?;
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    // Stereo from a local file: only the asked-for bytes are read.
    let local = (mix == "both")
        .then(|| state.recordings().local_path(&rec.location))
        .flatten();
    let (len, body_for) = if let Some(path) = &local {
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(ApiError::internal)?;
        (meta.len(), None)
    } else {
        let mut bytes = read_all(&state, &rec).await?;
        if mix == "mono" {
            bytes = tokio::task::spawn_blocking(move || mix_to_mono(&bytes))
                .await
                .map_err(ApiError::internal)??;
        }
        (bytes.len() as u64, Some(bytes))
    };
    let range = match parse_range(range_header, len) {
        Ok(r) => r,
        Err(()) => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [
                    (header::CONTENT_RANGE, format!("bytes */{len}")),
                    (header::ACCEPT_RANGES, "bytes".to_string()),
                ],
            )
                .into_response());
        }
    };
    let (start, end) = range.unwrap_or((0, len.saturating_sub(1)));
    let body: Vec<u8> = match (body_for, &local) {
        (Some(bytes), _) if len == 0 => bytes,
        (Some(bytes), _) => bytes[start as usize..=end as usize].to_vec(),
        (None, Some(path)) => {
            let mut f = tokio::fs::File::open(path)
                .await
                .map_err(ApiError::internal)?;
            f.seek(SeekFrom::Start(start))
                .await
                .map_err(ApiError::internal)?;
            let mut buf = vec![0u8; (end + 1 - start) as usize];
            f.read_exact(&mut buf).await.map_err(ApiError::internal)?;
            buf
        }
        (None, None) => unreachable!("a recording is either local or read whole"),
    };
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    let name = format!(
        "inline; filename=\"{}{}.wav\"",
        sid.0,
        if mix == "mono" { "-mono" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&name) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if range.is_some() {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    if local.is_none() && mix == "both" {
        warn!(call_sid = %sid, "recording read whole: not a local file");
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_first_middle_last_suffix_open_and_unsatisfiable() {
        assert_eq!(parse_range(None, 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-0"), 100), Ok(Some((0, 0))));
        assert_eq!(parse_range(Some("bytes=10-19"), 100), Ok(Some((10, 19))));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Ok(Some((90, 99))));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Ok(Some((90, 99))));
        assert_eq!(parse_range(Some("bytes=-500"), 100), Ok(Some((0, 99))));
        assert_eq!(parse_range(Some("bytes=50-500"), 100), Ok(Some((50, 99))));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Err(()));
        assert_eq!(parse_range(Some("bytes=20-10"), 100), Err(()));
        assert_eq!(parse_range(Some("bytes=-0"), 100), Err(()));
        assert_eq!(parse_range(Some("bytes=x-1"), 100), Err(()));
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Ok(None));
        assert_eq!(parse_range(Some("items=0-1"), 100), Ok(None));
    }

    #[test]
    fn facts_give_the_outcome_in_the_documented_order() {
        let mut f = CallFacts::default();
        assert_eq!(f.outcome(), "abandoned");
        f.turn("caller");
        assert_eq!(f.outcome(), "answered");
        f.event("escalation", "{}");
        assert_eq!(f.outcome(), "escalated");
        f.event(
            "tool_call",
            r#"{"name":"take_message","arguments":{},"result":{"error":"db"}}"#,
        );
        assert_eq!(
            f.outcome(),
            "escalated",
            "a failed tool call changes nothing"
        );
        f.event(
            "tool_call",
            r#"{"name":"take_message","arguments":{},"result":{}}"#,
        );
        assert_eq!(f.outcome(), "message");
        f.event("transfer", "{}");
        assert_eq!(f.outcome(), "transferred");
        f.event("tool_call", r#"{"name":"book","arguments":{},"result":{}}"#);
        assert_eq!(f.outcome(), "booked");
    }

    #[test]
    fn mono_mix_sums_both_channels_into_one() {
        let mut stereo = std::io::Cursor::new(Vec::new());
        {
            let mut w = hound::WavWriter::new(
                &mut stereo,
                hound::WavSpec {
                    channels: 2,
                    sample_rate: 8000,
                    bits_per_sample: 16,
                    sample_format: hound::SampleFormat::Int,
                },
            )
            .unwrap();
            for (l, r) in [(100i16, 0i16), (0, -50), (30000, 30000)] {
                w.write_sample(l).unwrap();
                w.write_sample(r).unwrap();
            }
            w.finalize().unwrap();
        }
        let mono = mix_to_mono(&stereo.into_inner()).unwrap();
        let r = hound::WavReader::new(std::io::Cursor::new(mono)).unwrap();
        assert_eq!(r.spec().channels, 1);
        let s: Vec<i16> = r.into_samples().map(Result::unwrap).collect();
        assert_eq!(s, vec![100, -50, i16::MAX]);
    }
}
