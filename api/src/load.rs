//! `voxanne load`: many simulated Twilio callers at once against a running server, to measure
//! what the server adds per turn and what a call costs in CPU.
//!
//! Each caller says a synthetic line, waits for the agent's reply to finish, pauses, and says
//! the next, for the whole run. Run it against a server started with `VOXANNE_ENGINES=test`
//! (instant engines), so what is measured is the server itself: the media path, turn-taking
//! and the hops between tasks.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;

use media::{PHONE_RATE, testsignal};

use crate::caller::{CallReport, CallerConfig, Line, LineStart, place_call};

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub server: String,
    pub public_url: String,
    pub auth_token: String,
    pub calls: usize,
    pub duration: Duration,
    /// Delay between call starts, so calls do not all speak in the same 20 ms.
    pub ramp: Duration,
    /// The server's process id, to measure its CPU time (Linux /proc).
    pub server_pid: Option<u32>,
    /// What callers say (8 kHz speech, cycled through), for a server with real engines; empty:
    /// synthetic formant "speech" (for the test engines).
    pub spoken: Vec<Vec<i16>>,
}

/// Lines spoken callers say in a load test (no goodbyes: calls last the whole run).
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

fn script(duration: Duration, seed: u64, spoken: &[Vec<i16>]) -> Vec<Line> {
    // Enough lines to keep talking for the whole run (each exchange takes several seconds).
    let n = (duration.as_secs() / 3).max(1);
    (0..n)
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

/// Reads the `voxanne_reply_latency_seconds` quantiles from `/metrics`.
async fn reply_latency(server: &str) -> anyhow::Result<Vec<(String, f64)>> {
    let text = reqwest::get(format!("{server}/metrics"))
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

/// Runs the load and prints a report.
pub async fn run(opts: LoadOptions) -> anyhow::Result<()> {
    engines::models::install_tls_provider();
    let cpu_before = opts.server_pid.and_then(process_cpu_seconds);
    let own_cpu_before = process_cpu_seconds(std::process::id());
    let began = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..opts.calls {
        let mut config = CallerConfig::local(&opts.server, &opts.auth_token);
        config.public_url = opts.public_url.clone();
        config.max_duration = opts.duration;
        config.from = format!("+1555{:07}", i);
        let lines = script(opts.duration, i as u64 + 1, &opts.spoken);
        let delay = opts.ramp * i as u32;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            place_call(&config, &lines).await
        }));
    }
    let mut reports: Vec<CallReport> = Vec::new();
    let mut failed = 0;
    for t in tasks {
        match t.await.context("caller task panicked")? {
            Ok(r) => reports.push(r),
            Err(e) => {
                failed += 1;
                eprintln!("call failed: {e}");
            }
        }
    }
    let wall = began.elapsed().as_secs_f64();
    let cpu = match (cpu_before, opts.server_pid.and_then(process_cpu_seconds)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let mut v2v = Histogram::<u64>::new_with_bounds(1, 600_000, 3)?;
    let mut lines = 0;
    let mut answered = 0;
    let mut protocol_errors = 0;
    let mut audio_s = 0.0;
    for r in &reports {
        protocol_errors += r.protocol_errors;
        audio_s += r.said.len() as f64 / f64::from(PHONE_RATE);
        for (end, first) in r.line_ends.iter().zip(&r.first_audio_after_line) {
            lines += 1;
            if let Some(first) = first {
                answered += 1;
                v2v.record(first.saturating_sub(*end).as_millis().max(1) as u64)?;
            }
        }
    }
    println!(
        "calls: {} ok, {failed} failed; {lines} caller turns, {answered} answered",
        reports.len()
    );
    println!("protocol errors seen by callers: {protocol_errors}");
    println!(
        "caller-side voice-to-voice (incl. endpointing silence) ms: p50 {} p90 {} p99 {} max {}",
        v2v.value_at_quantile(0.5),
        v2v.value_at_quantile(0.9),
        v2v.value_at_quantile(0.99),
        v2v.max()
    );
    match reply_latency(&opts.server).await {
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
    if let (Some(a), Some(b)) = (own_cpu_before, process_cpu_seconds(std::process::id())) {
        println!(
            "load generator CPU (same machine): {:.2} s = {:.1}% of one core",
            b - a,
            (b - a) / wall * 100.0
        );
    }
    if let Some(cpu) = cpu {
        let concurrent = audio_s / wall;
        println!(
            "server CPU: {cpu:.2} s over {wall:.1} s wall = {:.1}% of one core for {concurrent:.1} concurrent calls \
             => {:.2}% of one core per call ({:.1} ms CPU per second of call)",
            cpu / wall * 100.0,
            cpu / wall * 100.0 / concurrent.max(1e-9),
            cpu / audio_s.max(1e-9) * 1000.0
        );
    }
    Ok(())
}
