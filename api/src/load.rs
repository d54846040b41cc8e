//! `voxanne load`: many simulated Twilio callers at once against a running server, to measure
//! what the server adds per turn and what a call costs in CPU, and, run for long, whether it
//! holds up (the soak): no errors, no lost records, memory flat.
//!
//! Each of `calls` callers says a synthetic line, waits for the agent's reply to finish, pauses,
//! and says the next. By default a call lasts the whole run; with a call length
//! ([`LoadOptions::call_length`]) each call says as many lines as fill a length drawn for it,
//! its caller hangs up once the agent has answered the last, and dials again at once, until the
//! run is over, so a long run places many calls, not a few long ones: setup and teardown (the webhook, the stream registry, the per-call tasks, the
//! recording's move and checksum, the records) run a thousand times, which is where a leak per
//! call shows, while each call is still long enough (minutes) for growth within a call to show
//! too. After each call the generator does what Twilio does once a stream ends: it requests the
//! `<Connect action>` URL and posts the `completed` status callback.
//!
//! Run it against a server started with `VOXANNE_ENGINES=test` (instant engines), so what is
//! measured is the server itself: the media path, turn-taking and the hops between tasks. With
//! `--server-pid` it samples the server's memory (VmRSS), threads, open files and CPU through
//! the run; with a store to verify against ([`LoadOptions::verify`]) it checks, once the server
//! is idle, that every call it completed has its records: the call row with its end and status,
//! every turn and event (sequence numbers without gaps), and the recording, whose checksum,
//! length and caller channel match what was sent.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;

use media::{PHONE_RATE, testsignal};
use storage::{CallSid, LocalRecordingStore, OrgId, RecordingStore as _, Store};
use telephony::signature;

use crate::caller::{CallReport, CallerConfig, CallerError, Line, LineStart, new_sid, place_call};

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub server: String,
    pub public_url: String,
    pub auth_token: String,
    /// Concurrent callers.
    pub calls: usize,
    /// How long the run places calls (after the ramp).
    pub duration: Duration,
    /// How long each call lasts, drawn per call; a caller whose call ends dials again. `None`:
    /// each caller's one call lasts the whole run.
    pub call_length: Option<CallLength>,
    /// Delay between call starts, so calls do not all speak in the same 20 ms.
    pub ramp: Duration,
    /// The number called (which clinic answers); `None`: the simulator's default number, which
    /// the default organisation answers.
    pub to: Option<String>,
    /// The server's process id, to sample its CPU time, memory, threads and open files (Linux
    /// /proc).
    pub server_pid: Option<u32>,
    /// How often the server's process is sampled (and a progress line printed).
    pub sample_every: Duration,
    /// What callers say (8 kHz speech, cycled through), for a server with real engines; empty:
    /// synthetic formant "speech" (for the test engines).
    pub spoken: Vec<Vec<i16>>,
    /// Where the server keeps its records, to check every completed call's after the run.
    pub verify: Option<VerifyTarget>,
}

/// The server's store and recordings, read back after the run.
#[derive(Debug, Clone)]
pub struct VerifyTarget {
    pub store: Store,
    pub recordings: LocalRecordingStore,
}

impl VerifyTarget {
    /// The store of a server whose data directory is `data_dir` (its SQLite database unless
    /// `database_url` names another; its recordings in any case).
    pub async fn open(data_dir: &Path, database_url: Option<&str>) -> anyhow::Result<Self> {
        let store = Store::open(database_url, data_dir)
            .await
            .with_context(|| format!("cannot open the store of {}", data_dir.display()))?;
        Ok(Self {
            store,
            recordings: LocalRecordingStore::in_data_dir(data_dir),
        })
    }
}

/// The range each call's length is drawn from (uniformly, whole seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLength {
    pub min: Duration,
    pub max: Duration,
}

impl std::str::FromStr for CallLength {
    type Err = String;

    /// `90` (every call 90 s) or `60-180`.
    fn from_str(s: &str) -> Result<Self, String> {
        let secs = |v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| format!("expected seconds, got {v:?}"))
        };
        let (min, max) = match s.split_once('-') {
            Some((a, b)) => (secs(a)?, secs(b)?),
            None => (secs(s)?, secs(s)?),
        };
        // Below 5 s a call is over before the greeting has played: nothing to check.
        if min < 5 || max < min {
            return Err(format!(
                "expected MIN-MAX seconds with 5 <= MIN <= MAX, got {s:?}"
            ));
        }
        Ok(Self {
            min: Duration::from_secs(min),
            max: Duration::from_secs(max),
        })
    }
}

/// Lines spoken callers say in a load test (no goodbyes: calls last until the caller hangs up).
pub const SPOKEN_LINES: [&str; 4] = [
    "Hi, I would like to book a cleaning appointment.",
    "Do you have anything next Tuesday morning?",
    "Could you move it to Friday afternoon instead?",
    "What time do you open on Saturday?",
];

/// CPU seconds (user + system) a process has used so far, from /proc/PID/stat.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // Linux reports in clock ticks of USER_HZ, which is 100 on every mainstream architecture.
    Some((utime + stime) / 100.0)
}

/// What a process holds at one moment, from /proc/PID/{status,fd,stat}.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessSample {
    /// Resident memory (VmRSS), KiB.
    pub rss_kib: u64,
    pub threads: u64,
    /// Open file descriptors (sockets, database, recordings).
    pub fds: u64,
    pub cpu_s: f64,
}

/// Samples process `pid`; `None` if it is gone (or this is not Linux).
pub fn process_sample(pid: u32) -> Option<ProcessSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    Some(ProcessSample {
        rss_kib: field("VmRSS:")?,
        threads: field("Threads:").unwrap_or(0),
        fds,
        cpu_s: process_cpu_seconds(pid)?,
    })
}

/// One progress sample of the run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Since the first call was placed.
    pub at: Duration,
    pub server: Option<ProcessSample>,
    /// The load generator itself (it runs on the same machine).
    pub generator: Option<ProcessSample>,
    /// `voxanne_active_calls` from `/metrics`.
    pub active_calls: Option<u64>,
    /// Calls the generator has finished so far.
    pub calls_done: u64,
}

/// Why a call the generator placed failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// The voice webhook failed (HTTP error or a status other than 200).
    Webhook,
    /// The server declined the call: a busy message instead of `<Connect><Stream>`, or a stream
    /// closed before the greeting.
    Refused,
    /// The media WebSocket failed.
    WebSocket,
    /// The `<Connect action>` request or the status callback after the stream failed.
    Callback,
}

/// A call the generator placed.
#[derive(Debug, Clone)]
pub struct PlacedCall {
    pub call_sid: String,
    pub from: String,
    /// How long the caller meant to stay on.
    pub planned: Duration,
    /// When it would have hung up regardless ([`CallerConfig::max_duration`]).
    pub cap: Duration,
    pub outcome: Result<CallFacts, (Failure, String)>,
}

/// What the caller saw of a call that ran, kept small (the audio itself is dropped).
#[derive(Debug, Clone, Default)]
pub struct CallFacts {
    /// The organisation the server answered for.
    pub org: Option<String>,
    /// Caller samples sent (8 kHz): the call's media length.
    pub said_samples: u64,
    /// FNV-1a of what the caller sent, per [`BLOCK`] samples (the last block partial), to
    /// compare with the recording's caller channel.
    pub said_blocks: Vec<u64>,
    /// Lines the caller finished, and those the agent answered.
    pub lines: usize,
    pub answered: usize,
    /// Voice-to-voice per answered line, caller side (incl. endpointing silence), ms.
    pub v2v_ms: Vec<u64>,
    pub frames_received: u64,
    pub protocol_errors: u64,
    pub ended_by_server: bool,
}

/// Samples per hash block of the caller channel: one second.
const BLOCK: usize = PHONE_RATE as usize;

fn fnv1a(samples: &[i16]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for s in samples {
        for b in s.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

impl CallFacts {
    fn from_report(r: &CallReport) -> Self {
        let mut v2v_ms = Vec::new();
        for (end, first) in r.line_ends.iter().zip(&r.first_audio_after_line) {
            if let Some(first) = first {
                v2v_ms.push(first.saturating_sub(*end).as_millis().max(1) as u64);
            }
        }
        Self {
            org: r.org.clone(),
            said_samples: r.said.len() as u64,
            said_blocks: r.said.chunks(BLOCK).map(fnv1a).collect(),
            lines: r.line_ends.len(),
            answered: v2v_ms.len(),
            v2v_ms,
            frames_received: r.frames_received,
            protocol_errors: r.protocol_errors,
            ended_by_server: r.ended_by_server,
        }
    }
}

/// What the server's `/health` said once the run was over.
#[derive(Debug, Clone, Default)]
pub struct ServerIdle {
    /// Whether calls in progress and queued writes both reached 0 before the deadline.
    pub idle: bool,
    pub active_calls: u64,
    pub queued: u64,
    pub written: u64,
    pub retried: u64,
    pub spilled: u64,
    pub dropped: u64,
    pub db_up: bool,
}

/// The records of the completed calls, read back.
#[derive(Debug, Clone, Default)]
pub struct Verification {
    /// Completed calls checked.
    pub checked: usize,
    /// Of those, calls whose every record is there and matches.
    pub complete: usize,
    /// Calls with something missing (a record lost): CallSid and what.
    pub lost: Vec<(String, String)>,
    /// Calls whose records are there but disagree with what the caller did.
    pub mismatched: Vec<(String, String)>,
    pub end_reasons: BTreeMap<String, usize>,
    /// Event kinds over all calls ([`ERROR_EVENTS`] are failures).
    pub event_kinds: BTreeMap<String, usize>,
    /// Calls in which the caller spoke over the agent ([`TALK_OVER_EVENTS`]): the generator's
    /// callers wait for quiet, so these mean gaps in the agent's playout (an overloaded server).
    pub talked_over: usize,
    pub turns: usize,
    pub recording_bytes: u64,
    /// Calls the store holds for the organisations called (more than placed: calls from
    /// elsewhere, or a stray row; fewer: rows lost).
    pub store_calls: i64,
}

impl Verification {
    /// Failures the calls recorded as events ([`ERROR_EVENTS`]).
    pub fn error_events(&self) -> usize {
        ERROR_EVENTS
            .iter()
            .map(|k| self.event_kinds.get(*k).copied().unwrap_or(0))
            .sum()
    }
}

/// Everything the run found.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub wall: Duration,
    pub calls: Vec<PlacedCall>,
    /// Before the first call, then every `sample_every`, then once the server was idle again.
    pub samples: Vec<Sample>,
    pub idle: ServerIdle,
    pub verification: Option<Verification>,
}

impl LoadReport {
    pub fn placed(&self) -> usize {
        self.calls.len()
    }

    pub fn completed(&self) -> usize {
        self.calls.iter().filter(|c| c.outcome.is_ok()).count()
    }

    pub fn failures(&self) -> BTreeMap<Failure, usize> {
        let mut m = BTreeMap::new();
        for c in &self.calls {
            if let Err((f, _)) = &c.outcome {
                *m.entry(*f).or_default() += 1;
            }
        }
        m
    }

    /// Messages from the server that were not valid Twilio, over all calls.
    pub fn protocol_errors(&self) -> u64 {
        self.facts().map(|f| f.protocol_errors).sum()
    }

    fn facts(&self) -> impl Iterator<Item = &CallFacts> {
        self.calls.iter().filter_map(|c| c.outcome.as_ref().ok())
    }

    /// Failed calls, protocol errors, engine errors recorded in calls, writes the queue lost.
    pub fn errors(&self) -> u64 {
        let v = self.verification.as_ref();
        (self.placed() - self.completed()) as u64
            + self.protocol_errors()
            + v.map_or(0, |v| v.error_events() as u64)
            + self.idle.dropped
    }

    /// Calls with a missing or mismatched record.
    pub fn bad_records(&self) -> usize {
        self.verification
            .as_ref()
            .map_or(0, |v| v.lost.len() + v.mismatched.len())
    }

    /// Zero errors, every record there, the server idle afterwards.
    pub fn passed(&self) -> bool {
        self.errors() == 0
            && self.bad_records() == 0
            && self.idle.idle
            && self
                .verification
                .as_ref()
                .is_none_or(|v| v.checked == self.completed())
    }
}

fn script(lines: u64, seed: u64, spoken: &[Vec<i16>]) -> Vec<Line> {
    (0..lines.max(1))
        .map(|i| Line::Speak {
            audio: if spoken.is_empty() {
                testsignal::voice(PHONE_RATE, 1_200, seed * 1000 + i)
            } else {
                spoken[((seed + i) % spoken.len() as u64) as usize].clone()
            },
            start: LineStart::AfterAgent {
                pause: Duration::from_millis(300),
            },
        })
        .collect()
}

/// How long one line of a call takes, the agent's answer included, learnt from the calls done
/// so far: how many lines a call of a given length says.
#[derive(Debug, Default)]
struct ExchangeClock {
    call_ms: AtomicU64,
    lines: AtomicU64,
}

impl ExchangeClock {
    /// Before enough calls have ended: a 1.2 s line, 0.7 s of endpointing silence, a reply of a
    /// sentence or two and the caller's pause come to about 8 s (measured with the receptionist
    /// on the test engines).
    const FIRST_GUESS: Duration = Duration::from_secs(8);

    fn record(&self, facts: &CallFacts) {
        self.call_ms.fetch_add(
            facts.said_samples * 1000 / u64::from(PHONE_RATE),
            Ordering::Relaxed,
        );
        self.lines.fetch_add(facts.lines as u64, Ordering::Relaxed);
    }

    fn per_line(&self) -> Duration {
        let lines = self.lines.load(Ordering::Relaxed);
        if lines < 50 {
            return Self::FIRST_GUESS;
        }
        Duration::from_millis(self.call_ms.load(Ordering::Relaxed) / lines)
    }

    /// Lines for a call of about `length`, hanging up `hang_up_after` after the last answer.
    fn lines_for(&self, length: Duration, hang_up_after: Duration) -> u64 {
        let per_line = self.per_line().as_secs_f64().max(1.0);
        (length.saturating_sub(hang_up_after).as_secs_f64() / per_line)
            .round()
            .max(1.0) as u64
    }
}

/// A deterministic spread of call lengths (splitmix64 of the caller and its call number).
fn draw_length(range: CallLength, caller: usize, n: u64) -> Duration {
    let mut z = ((caller as u64) << 32 | n).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let (min, max) = (range.min.as_secs(), range.max.as_secs());
    Duration::from_secs(min + z % (max - min + 1))
}

/// Reads the `voxanne_reply_latency_seconds` quantiles from `/metrics`.
async fn reply_latency(http: &reqwest::Client, server: &str) -> anyhow::Result<Vec<(String, f64)>> {
    let text = http
        .get(format!("{server}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("voxanne_reply_latency_seconds"))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect())
}

/// One gauge or counter from `/metrics`.
async fn metric(http: &reqwest::Client, server: &str, name: &str) -> Option<u64> {
    let text = http
        .get(format!("{server}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Posts a form to the server as Twilio does: signed over our public URL and the parameters.
async fn post_signed(
    http: &reqwest::Client,
    opts: &LoadOptions,
    path: &str,
    params: &[(&str, &str)],
) -> Result<String, String> {
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let url = format!("{}{path}", opts.public_url);
    let sig = signature::compute(&opts.auth_token, &url, &params);
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish();
    let response = http
        .post(format!("{}{path}", opts.server))
        .header("X-Twilio-Signature", sig)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .map_err(|e| format!("{path}: {e}"))?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| format!("{path}: {e}"))?;
    if status != 200 {
        return Err(format!("{path} answered {status}: {text}"));
    }
    Ok(text)
}

/// What Twilio does once a call's stream has ended: it asks the `<Connect action>` URL what to do
/// next, and, the call over, posts the `completed` status callback.
async fn after_stream(
    http: &reqwest::Client,
    opts: &LoadOptions,
    config: &CallerConfig,
    seconds: u64,
) -> Result<(), String> {
    let base = [
        ("AccountSid", "AC00000000000000000000000000000000"),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", config.call_sid.as_str()),
        ("Direction", config.direction.as_str()),
        ("From", config.from.as_str()),
        ("To", config.to.as_str()),
    ];
    let mut action = base.to_vec();
    action.push(("CallStatus", "in-progress"));
    let twiml = post_signed(http, opts, "/twilio/connect-action", &action).await?;
    if !twiml.contains("<Hangup/>") && !twiml.contains("<Dial>") {
        return Err(format!("connect action answered {twiml:?}"));
    }
    let duration = seconds.to_string();
    let mut status = base.to_vec();
    status.push(("CallStatus", "completed"));
    status.push(("CallDuration", duration.as_str()));
    post_signed(http, opts, "/twilio/status", &status).await?;
    Ok(())
}

/// One caller: places calls one after another until `deadline`.
///
/// With a call length, the caller says as many lines as fill the length drawn for the call,
/// then hangs up once the agent has answered the last and been quiet for a moment, as callers
/// do. It does not hang up at a fixed time: the simulator (`caller::place_call`) drops the
/// socket right after its `stop` without finishing the close handshake, so hanging up while
/// the agent is talking (its audio unread) makes the kernel reset the connection, and the
/// `stop`, still held back by Nagle, is lost with it: the server then records a
/// `socket_error` end for a call the caller hung up (6 % of calls when tried).
async fn caller_loop(
    opts: Arc<LoadOptions>,
    http: reqwest::Client,
    index: usize,
    deadline: Instant,
    done: Arc<AtomicU64>,
    clock: Arc<ExchangeClock>,
) -> Vec<PlacedCall> {
    tokio::time::sleep(opts.ramp * index as u32).await;
    let mut placed = Vec::new();
    for n in 0u64.. {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut config = CallerConfig::local(&opts.server, &opts.auth_token);
        let (length, lines) = match opts.call_length {
            // Every caller's first call is placed; later ones only if they fit in the run.
            Some(range) if n > 0 && remaining < range.min => break,
            Some(range) => {
                let length = draw_length(range, index, n).min(remaining).max(range.min);
                // A safety net only: a call whose agent never finishes still ends.
                config.max_duration = length * 2 + Duration::from_secs(30);
                (length, clock.lines_for(length, config.hang_up_after))
            }
            None if n > 0 => break,
            None => {
                config.max_duration = remaining;
                // Enough lines to keep talking for the whole run (each takes several seconds).
                (remaining, (remaining.as_secs() / 3).max(1))
            }
        };
        config.public_url = opts.public_url.clone();
        config.call_sid = new_sid("CA");
        // One number per caller: from its second call on, a returning caller.
        config.from = format!("+1555{index:07}");
        if let Some(to) = &opts.to {
            config.to = to.clone();
        }
        let seed = (index as u64 + 1) * 10_000 + n;
        let script = script(lines, seed, &opts.spoken);
        let outcome = match place_call(&config, &script).await {
            Ok(report) => {
                let facts = CallFacts::from_report(&report);
                drop(report);
                if facts.ended_by_server && facts.frames_received == 0 {
                    Err((
                        Failure::Refused,
                        "the stream was closed before the greeting".to_string(),
                    ))
                } else {
                    clock.record(&facts);
                    let seconds = facts.said_samples / u64::from(PHONE_RATE);
                    match after_stream(&http, &opts, &config, seconds).await {
                        Ok(()) => Ok(facts),
                        Err(e) => Err((Failure::Callback, e)),
                    }
                }
            }
            Err(e) => {
                let kind = match &e {
                    CallerError::Http(_) | CallerError::Webhook { .. } => Failure::Webhook,
                    // The busy message is TwiML without a stream.
                    CallerError::Twiml(_) => Failure::Refused,
                    CallerError::WebSocket(_) => Failure::WebSocket,
                };
                Err((kind, e.to_string()))
            }
        };
        if let Err((kind, why)) = &outcome {
            eprintln!("call {} failed ({kind:?}): {why}", config.call_sid);
        }
        done.fetch_add(1, Ordering::Relaxed);
        placed.push(PlacedCall {
            call_sid: config.call_sid,
            from: config.from,
            planned: length,
            cap: config.max_duration,
            outcome,
        });
    }
    placed
}

async fn sample(
    http: &reqwest::Client,
    opts: &LoadOptions,
    began: Instant,
    done: &AtomicU64,
) -> Sample {
    Sample {
        at: began.elapsed(),
        server: opts.server_pid.and_then(process_sample),
        generator: process_sample(std::process::id()),
        active_calls: metric(http, &opts.server, "voxanne_active_calls").await,
        calls_done: done.load(Ordering::Relaxed),
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn print_sample(s: &Sample, previous: Option<&Sample>) {
    let mut line = format!("[{:>6.0} s]", s.at.as_secs_f64());
    if let Some(p) = s.server {
        line.push_str(&format!(
            " server RSS {:.1} MiB, {} threads, {} fds",
            mib(p.rss_kib),
            p.threads,
            p.fds
        ));
        if let Some(q) = previous.and_then(|q| q.server.map(|ps| (ps, q.at))) {
            let dt = (s.at - q.1).as_secs_f64().max(1e-9);
            line.push_str(&format!(", CPU {:.0}%", (p.cpu_s - q.0.cpu_s) / dt * 100.0));
        }
        line.push(';');
    }
    if let Some(a) = s.active_calls {
        line.push_str(&format!(" active calls {a};"));
    }
    line.push_str(&format!(" calls done {}", s.calls_done));
    if let Some(g) = s.generator {
        line.push_str(&format!("; generator RSS {:.1} MiB", mib(g.rss_kib)));
    }
    println!("{line}");
}

/// Waits (up to `timeout`) until the server has no call in progress and no write queued.
async fn wait_idle(http: &reqwest::Client, server: &str, timeout: Duration) -> ServerIdle {
    let until = Instant::now() + timeout;
    let mut last = ServerIdle::default();
    loop {
        let health: Option<serde_json::Value> = async {
            http.get(format!("{server}/health"))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
        }
        .await;
        if let Some(h) = health {
            let q = &h["database"]["queue"];
            let n = |v: &serde_json::Value| v.as_u64().unwrap_or(u64::MAX);
            last = ServerIdle {
                idle: false,
                active_calls: n(&h["calls"]["active"]),
                queued: n(&q["queued"]),
                written: n(&q["written"]),
                retried: n(&q["retried"]),
                spilled: n(&q["spilled"]),
                dropped: n(&q["dropped"]),
                db_up: q["writer_db_up"].as_bool().unwrap_or(false),
            };
            if last.active_calls == 0 && last.queued == 0 {
                last.idle = true;
                return last;
            }
        }
        if Instant::now() >= until {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A record check that failed: something missing, or something there but wrong.
enum Bad {
    Lost(String),
    Mismatch(String),
}

/// What one call's records hold, once they check out.
struct Checked {
    end_reason: String,
    talked_over: bool,
    event_kinds: Vec<String>,
    turns: usize,
    recording_bytes: u64,
}

fn contiguous(seqs: impl Iterator<Item = i32>) -> bool {
    seqs.enumerate().all(|(i, s)| s == i as i32)
}

/// Events that record a failure: an engine's (`error`: speech-to-text or brain; `tts_fallback`:
/// the voice failed), or a receptionist tool's (the store, within its 5 s bound).
pub const ERROR_EVENTS: [&str; 3] = ["error", "tts_fallback", "tool_error"];

/// Events that say the caller spoke while the agent was talking (see [`check_call`]).
pub const TALK_OVER_EVENTS: [&str; 3] = ["barge_in", "reply_abandoned", "backchannel"];

/// Longest the recording may run past the caller's last sample: the agent audio already sent
/// ahead of the caller clock (`PLAYOUT_LEAD`, 60 ms) is written after it at the end, plus a
/// frame; 200 ms leaves room for a late wake-up's burst.
const RECORDING_TAIL_MAX_MS: i64 = 200;

/// Longest the caller may have gone on after the server ended a call (the goodbye's close on
/// its way over a loaded loopback): what it sent then is not in the server's media time.
const SERVER_END_SLACK_MS: i64 = 5_000;

async fn check_call(
    target: &VerifyTarget,
    call: &PlacedCall,
    facts: &CallFacts,
) -> Result<Checked, Bad> {
    let db = |e: storage::StoreError| Bad::Lost(format!("store error: {e}"));
    let org = facts
        .org
        .as_deref()
        .and_then(|o| o.parse().ok())
        .map(OrgId)
        .ok_or_else(|| Bad::Mismatch("the TwiML named no organisation".into()))?;
    let sid = CallSid(call.call_sid.clone());
    let store = &target.store;
    let row = store
        .get_call(org, &sid)
        .await
        .map_err(db)?
        .ok_or_else(|| Bad::Lost("no call row".into()))?;
    let (Some(_), Some(reason), Some(duration_ms)) =
        (row.ended_at, row.end_reason.clone(), row.duration_ms)
    else {
        return Err(Bad::Lost(format!("the call row has no end: {row:?}")));
    };
    if row.from.is_empty() {
        return Err(Bad::Lost("the call row has no start (CallStarted)".into()));
    }
    // Mismatches are collected, so one call's report says everything that is wrong with it.
    let mut wrong: Vec<String> = Vec::new();
    if row.from != call.from {
        wrong.push(format!(
            "from {:?}, the caller was {:?}",
            row.from, call.from
        ));
    }
    if row.status != "completed" {
        return Err(Bad::Lost(format!(
            "status {:?}: the completed callback is not in",
            row.status
        )));
    }
    let expected: &[&str] = if facts.ended_by_server {
        &["agent_hung_up", "transfer"]
    } else {
        &["caller_hung_up"]
    };
    if !expected.contains(&reason.as_str()) {
        wrong.push(format!(
            "ended {reason:?}; the caller saw {}",
            if facts.ended_by_server {
                "the server close the stream"
            } else {
                "itself hang up"
            }
        ));
    }
    let said_ms = (facts.said_samples * 1000 / u64::from(PHONE_RATE)) as i64;
    let duration_ok = if facts.ended_by_server {
        duration_ms <= said_ms && said_ms - duration_ms <= SERVER_END_SLACK_MS
    } else {
        // Every frame the caller sent arrived before its `stop`.
        duration_ms == said_ms
    };
    if !duration_ok {
        wrong.push(format!(
            "duration {duration_ms} ms; the caller sent {said_ms} ms"
        ));
    }

    let turns = store.list_turns(org, &sid).await.map_err(db)?;
    if !contiguous(turns.iter().map(|t| t.seq)) {
        let seqs: Vec<i32> = turns.iter().map(|t| t.seq).collect();
        return Err(Bad::Lost(format!("turn seqs have gaps: {seqs:?}")));
    }
    match turns.first() {
        Some(t) if t.role == "agent" && !t.text.trim().is_empty() => {}
        _ => return Err(Bad::Lost("no greeting turn".into())),
    }
    if let Some(t) = turns
        .iter()
        .find(|t| t.role == "caller" && t.text.trim().is_empty())
    {
        wrong.push(format!("caller turn {} is empty", t.seq));
    }

    let events = store.list_events(org, &sid).await.map_err(db)?;
    if events.is_empty() || !contiguous(events.iter().map(|e| e.seq)) {
        let seqs: Vec<i32> = events.iter().map(|e| e.seq).collect();
        return Err(Bad::Lost(format!("event seqs have gaps: {seqs:?}")));
    }
    // The call's last event is its end (`stop` when the caller hung up, `hangup` when the agent
    // did): the events written before it, and the turns (submitted in order with them, through
    // the same queue), are complete at the tail too, not only without gaps.
    match events.last().map(|e| e.kind.as_str()) {
        Some("stop" | "hangup") => {}
        other => {
            return Err(Bad::Lost(format!(
                "the last event is {other:?}, not the call's end"
            )));
        }
    }
    let caller_turns = turns.iter().filter(|t| t.role == "caller").count();
    let agent_turns = turns.len() - caller_turns;
    // Each answered line was a caller turn, and its answer an agent turn after the greeting;
    // unless the caller talked over the agent (it waits for 300 ms of quiet, so only a server
    // too slow to keep its playout going makes it do that), when turns merge and replies are
    // abandoned by design.
    let talked_over = events
        .iter()
        .any(|e| TALK_OVER_EVENTS.contains(&e.kind.as_str()));
    if !talked_over && (caller_turns < facts.answered || agent_turns < facts.answered + 1) {
        return Err(Bad::Lost(format!(
            "{caller_turns} caller and {agent_turns} agent turns; the caller said {} lines, {} answered",
            facts.lines, facts.answered
        )));
    }

    let rec = store
        .get_recording(org, &sid)
        .await
        .map_err(db)?
        .ok_or_else(|| Bad::Lost("no recording row".into()))?;
    if (rec.channels, rec.sample_rate) != (2, PHONE_RATE as i32) {
        wrong.push(format!(
            "recording row says {} channels at {} Hz",
            rec.channels, rec.sample_rate
        ));
    }
    let path = target
        .recordings
        .local_path(&rec.location)
        .ok_or_else(|| Bad::Mismatch(format!("recording location {:?}", rec.location)))?;
    let blocks = facts.said_blocks.clone();
    let said_samples = facts.said_samples;
    let caller_samples = (duration_ms as u64 * u64::from(PHONE_RATE) / 1000) as usize;
    let recorded_ms = rec.duration_ms;
    let sha256 = rec.sha256.clone();
    // Reading and hashing a few MB: off the async threads.
    let checked = tokio::task::spawn_blocking(move || -> Result<u64, Bad> {
        let data = std::fs::read(&path)
            .map_err(|e| Bad::Lost(format!("recording file {}: {e}", path.display())))?;
        if storage::sha256_hex(&data) != sha256 {
            return Err(Bad::Mismatch(
                "recording checksum differs from its row".into(),
            ));
        }
        let mut wav = hound::WavReader::new(Cursor::new(&data))
            .map_err(|e| Bad::Mismatch(format!("recording is not a WAV: {e}")))?;
        let spec = wav.spec();
        if (spec.channels, spec.sample_rate, spec.bits_per_sample) != (2, PHONE_RATE, 16) {
            return Err(Bad::Mismatch(format!("recording format {spec:?}")));
        }
        let frames = u64::from(wav.duration());
        // The header's length is the file's: no truncated or trailing data.
        let header = data.len() as u64 - frames * 4;
        if !(44..=128).contains(&header) {
            return Err(Bad::Mismatch(format!(
                "recording of {} bytes holds {frames} frames",
                data.len()
            )));
        }
        let ms = (frames * 1000 / u64::from(PHONE_RATE)) as i64;
        if ms != recorded_ms {
            return Err(Bad::Mismatch(format!(
                "recording lasts {ms} ms, its row says {recorded_ms} ms"
            )));
        }
        let tail = ms - duration_ms;
        if !(0..=RECORDING_TAIL_MAX_MS).contains(&tail) {
            return Err(Bad::Mismatch(format!(
                "recording lasts {ms} ms, the call {duration_ms} ms"
            )));
        }
        // The caller channel is what the caller sent, sample for sample.
        let left: Vec<i16> = wav
            .samples::<i16>()
            .step_by(2)
            .take(caller_samples)
            .collect::<Result<_, _>>()
            .map_err(|e| Bad::Mismatch(format!("recording unreadable: {e}")))?;
        for (i, chunk) in left.chunks(BLOCK).enumerate() {
            // The last, partial block is comparable only if the server took all the caller sent.
            let whole = chunk.len() == BLOCK || caller_samples as u64 == said_samples;
            if whole && blocks.get(i) != Some(&fnv1a(chunk)) {
                return Err(Bad::Mismatch(format!(
                    "caller channel differs from what was sent in second {i}"
                )));
            }
        }
        Ok(data.len() as u64)
    })
    .await
    .map_err(|e| Bad::Mismatch(format!("recording check panicked: {e}")))?;
    let bytes = match checked {
        Ok(bytes) => bytes,
        Err(Bad::Mismatch(why)) => {
            wrong.push(why);
            0
        }
        Err(lost) => return Err(lost),
    };
    if !wrong.is_empty() {
        return Err(Bad::Mismatch(wrong.join("; ")));
    }
    Ok(Checked {
        end_reason: reason,
        talked_over,
        event_kinds: events.into_iter().map(|e| e.kind).collect(),
        turns: turns.len(),
        recording_bytes: bytes,
    })
}

/// Checks every completed call's records, re-checking the ones that fail until `timeout` (the
/// last recordings are moved and their rows written just after the calls end).
pub async fn verify(
    target: &VerifyTarget,
    calls: &[PlacedCall],
    timeout: Duration,
) -> Verification {
    let until = Instant::now() + timeout;
    let completed: Vec<(&PlacedCall, &CallFacts)> = calls
        .iter()
        .filter_map(|c| c.outcome.as_ref().ok().map(|f| (c, f)))
        .collect();
    let mut v = Verification {
        checked: completed.len(),
        ..Verification::default()
    };
    let mut pending = completed;
    loop {
        let mut failed = Vec::new();
        for (call, facts) in pending {
            match check_call(target, call, facts).await {
                Ok(c) => {
                    v.complete += 1;
                    v.turns += c.turns;
                    v.recording_bytes += c.recording_bytes;
                    v.talked_over += usize::from(c.talked_over);
                    *v.end_reasons.entry(c.end_reason).or_default() += 1;
                    for k in c.event_kinds {
                        *v.event_kinds.entry(k).or_default() += 1;
                    }
                }
                Err(bad) => failed.push((call, facts, bad)),
            }
        }
        if failed.is_empty() || Instant::now() >= until {
            for (call, _, bad) in failed {
                match bad {
                    Bad::Lost(why) => v.lost.push((call.call_sid.clone(), why)),
                    Bad::Mismatch(why) => v.mismatched.push((call.call_sid.clone(), why)),
                }
            }
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        pending = failed.into_iter().map(|(c, f, _)| (c, f)).collect();
    }
    let mut orgs: Vec<OrgId> = calls
        .iter()
        .filter_map(|c| c.outcome.as_ref().ok()?.org.as_deref()?.parse().ok())
        .map(OrgId)
        .collect();
    orgs.sort_by_key(|o| o.0);
    orgs.dedup();
    for org in orgs {
        v.store_calls += target
            .store
            .count_calls(org, None)
            .await
            .unwrap_or(-1_000_000);
    }
    v
}

/// Runs the load, prints a report, and returns it.
pub async fn run(opts: LoadOptions) -> anyhow::Result<LoadReport> {
    engines::models::install_tls_provider();
    let opts = Arc::new(opts);
    let http = reqwest::Client::new();
    let done = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let mut samples = vec![sample(&http, &opts, began, &done).await];
    print_sample(&samples[0], None);
    let deadline = began + opts.ramp * opts.calls.saturating_sub(1) as u32 + opts.duration;
    let clock = Arc::new(ExchangeClock::default());
    let mut callers = tokio::task::JoinSet::new();
    for i in 0..opts.calls {
        callers.spawn(caller_loop(
            opts.clone(),
            http.clone(),
            i,
            deadline,
            done.clone(),
            clock.clone(),
        ));
    }
    let mut calls: Vec<PlacedCall> = Vec::new();
    let mut ticker = tokio::time::interval(opts.sample_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            joined = callers.join_next() => match joined {
                Some(placed) => calls.extend(placed.context("caller task panicked")?),
                None => break,
            },
            _ = ticker.tick() => {
                let s = sample(&http, &opts, began, &done).await;
                print_sample(&s, samples.last());
                samples.push(s);
            }
        }
    }
    let wall = began.elapsed();
    let loaded = sample(&http, &opts, began, &done).await;
    print_sample(&loaded, samples.last());
    samples.push(loaded);
    let idle = wait_idle(&http, &opts.server, Duration::from_secs(60)).await;
    let after = sample(&http, &opts, began, &done).await;
    print_sample(&after, samples.last());
    samples.push(after);
    let verification = match &opts.verify {
        Some(target) => Some(verify(target, &calls, Duration::from_secs(30)).await),
        None => None,
    };
    calls.sort_by(|a, b| a.call_sid.cmp(&b.call_sid));
    let report = LoadReport {
        wall,
        calls,
        samples,
        idle,
        verification,
    };
    print_report(&report, &opts, &http).await?;
    Ok(report)
}

async fn print_report(
    r: &LoadReport,
    opts: &LoadOptions,
    http: &reqwest::Client,
) -> anyhow::Result<()> {
    let wall = r.wall.as_secs_f64();
    let mut v2v = Histogram::<u64>::new_with_bounds(1, 600_000, 3)?;
    let (mut lines, mut answered, mut audio_s, mut by_server) = (0, 0, 0.0, 0);
    for f in r.facts() {
        lines += f.lines;
        answered += f.answered;
        audio_s += f.said_samples as f64 / f64::from(PHONE_RATE);
        by_server += usize::from(f.ended_by_server);
        for &ms in &f.v2v_ms {
            v2v.record(ms)?;
        }
    }
    println!();
    println!("== load report ==");
    let failures = r.failures();
    println!(
        "calls: {} placed, {} completed ({by_server} ended by the server), {} failed {failures:?}; {lines} caller turns, {answered} answered",
        r.placed(),
        r.completed(),
        r.placed() - r.completed(),
    );
    if let Some(f) = opts.call_length {
        let mut lengths: Vec<u64> = r
            .facts()
            .map(|f| f.said_samples / u64::from(PHONE_RATE))
            .collect();
        lengths.sort_unstable();
        let at = |q: f64| {
            lengths
                .get(((lengths.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(0)
        };
        let capped = r
            .calls
            .iter()
            .filter(|c| {
                c.outcome.as_ref().is_ok_and(|f| {
                    f.said_samples * 1000 / u64::from(PHONE_RATE) >= c.cap.as_millis() as u64
                })
            })
            .count();
        println!(
            "{} concurrent callers, calls of {}-{} s planned; lasted min {} s, p50 {} s, max {} s ({capped} cut off at their cap); {:.0} s of calls in all",
            opts.calls,
            f.min.as_secs(),
            f.max.as_secs(),
            at(0.0),
            at(0.5),
            at(1.0),
            audio_s
        );
    }
    println!("protocol errors seen by callers: {}", r.protocol_errors());
    if !v2v.is_empty() {
        println!(
            "caller-side voice-to-voice (incl. endpointing silence) ms: p50 {} p90 {} p99 {} max {}",
            v2v.value_at_quantile(0.5),
            v2v.value_at_quantile(0.9),
            v2v.value_at_quantile(0.99),
            v2v.max()
        );
    }
    match reply_latency(http, &opts.server).await {
        Ok(q) => {
            println!(
                "server-added latency per turn (endpoint decision -> first reply frame sent), from /metrics:"
            );
            for (k, v) in q {
                if k.ends_with("_count") {
                    println!("  {k} = {v}");
                } else {
                    println!("  {k} = {:.3} ms", v * 1000.0);
                }
            }
        }
        Err(e) => println!("(cannot read /metrics: {e})"),
    }
    let i = &r.idle;
    println!(
        "server after the run: {} (active calls {}, writes queued {}); writes: {} written, {} retried, {} spilled, {} dropped; database {}",
        if i.idle { "idle" } else { "NOT IDLE" },
        i.active_calls,
        i.queued,
        i.written,
        i.retried,
        i.spilled,
        i.dropped,
        if i.db_up { "up" } else { "DOWN" },
    );
    if let Some(v) = &r.verification {
        println!(
            "records: {} of {} completed calls complete; {} lost, {} mismatched; {} turns, {:.1} MiB of recordings; store holds {} calls for the organisations called",
            v.complete,
            v.checked,
            v.lost.len(),
            v.mismatched.len(),
            v.turns,
            v.recording_bytes as f64 / (1024.0 * 1024.0),
            v.store_calls,
        );
        println!("end reasons: {:?}", v.end_reasons);
        println!(
            "event kinds: {:?}; {} calls with the caller talking over the agent (playout gaps)",
            v.event_kinds, v.talked_over
        );
        for (sid, why) in v.lost.iter().take(20) {
            println!("  LOST {sid}: {why}");
        }
        for (sid, why) in v.mismatched.iter().take(20) {
            println!("  MISMATCH {sid}: {why}");
        }
    }

    // Memory and CPU, from the samples: before the first call, while loaded, once idle again.
    let n = r.samples.len();
    let first = r.samples.first();
    let (loaded_end, after) = (r.samples.get(n.saturating_sub(2)), r.samples.last());
    if let (Some(s0), Some(s1), Some(s2)) = (
        first.and_then(|s| s.server),
        loaded_end.and_then(|s| s.server),
        after.and_then(|s| s.server),
    ) {
        let series: Vec<String> = r
            .samples
            .iter()
            .filter_map(|s| {
                Some(format!(
                    "{:.0}s:{:.1}",
                    s.at.as_secs_f64(),
                    mib(s.server?.rss_kib)
                ))
            })
            .collect();
        println!("server RSS MiB series: {}", series.join(" "));
        // Flat means: once every caller has been through a whole call (the per-call structures
        // and the allocator's pools have reached their working size), it stops growing while
        // the load goes on. Compared between samples at full load (nine callers in ten on a
        // call), so the ramp-down at the end of the run does not hide growth.
        let warm_after =
            opts.call_length.map_or(Duration::ZERO, |l| l.max) + opts.ramp * opts.calls as u32;
        let full: Vec<(Duration, ProcessSample)> = r.samples[..n.saturating_sub(2)]
            .iter()
            .filter(|s| {
                s.active_calls
                    .is_some_and(|a| a * 10 >= opts.calls as u64 * 9)
            })
            .filter_map(|s| Some((s.at, s.server?)))
            .collect();
        let warm = full.iter().find(|(at, _)| *at >= warm_after);
        println!(
            "server RSS: {:.1} MiB idle at start, {:.1} MiB at the end of the load, {:.1} MiB idle after; threads {} -> {} -> {}, fds {} -> {} -> {}",
            mib(s0.rss_kib),
            mib(s1.rss_kib),
            mib(s2.rss_kib),
            s0.threads,
            s1.threads,
            s2.threads,
            s0.fds,
            s1.fds,
            s2.fds,
        );
        if let (Some((at, w)), Some((end_at, e))) = (warm, full.last())
            && end_at > at
        {
            println!(
                "server RSS growth under load from {:.0} s (warm) to {:.0} s: {:+.1} MiB ({:+.1}%)",
                at.as_secs_f64(),
                end_at.as_secs_f64(),
                mib(e.rss_kib) - mib(w.rss_kib),
                (e.rss_kib as f64 / w.rss_kib.max(1) as f64 - 1.0) * 100.0
            );
        }
        let cpu = s1.cpu_s - s0.cpu_s;
        let concurrent = audio_s / wall;
        println!(
            "server CPU: {cpu:.2} s over {wall:.1} s wall = {:.1}% of one core for {concurrent:.1} concurrent calls \
             => {:.2}% of one core per call ({:.1} ms CPU per second of call)",
            cpu / wall * 100.0,
            cpu / wall * 100.0 / concurrent.max(1e-9),
            cpu / audio_s.max(1e-9) * 1000.0
        );
    }
    if let (Some(a), Some(b)) = (
        first.and_then(|s| s.generator),
        loaded_end.and_then(|s| s.generator),
    ) {
        println!(
            "load generator (same machine): CPU {:.2} s = {:.1}% of one core; RSS {:.1} MiB at the end",
            b.cpu_s - a.cpu_s,
            (b.cpu_s - a.cpu_s) / wall * 100.0,
            mib(b.rss_kib)
        );
    }
    println!(
        "result: {} ({} errors, {} calls with bad records)",
        if r.passed() { "PASS" } else { "FAIL" },
        r.errors(),
        r.bad_records()
    );
    Ok(())
}
