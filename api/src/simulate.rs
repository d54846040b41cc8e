//! `voxanne simulate`: a caller with no phone and no Twilio account. Places a call to a running
//! server over the real Media Streams protocol, saves what the caller heard to a WAV, and
//! prints the call's transcript from the call record.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};

use media::resample::resample;
use media::{PHONE_RATE, testsignal};
use storage::{CallSid, OrgId, Store};

use crate::caller::{CallReport, CallerConfig, Line, LineStart, place_call};

/// Options of `voxanne simulate`.
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    pub server: String,
    pub public_url: String,
    pub auth_token: String,
    /// WAV files the caller says, in order.
    pub wavs: Vec<PathBuf>,
    /// Lines the caller says with `voice`, after the WAVs. With neither: the built-in
    /// synthetic caller.
    pub say: Vec<String>,
    pub voice: Option<engines::piper::PiperTts>,
    /// The caller interrupts the agent with every line after the first, this long into the
    /// agent's speech.
    pub interrupt_after: Option<Duration>,
    /// Where to save what the caller heard (mono 8 kHz) and the whole call (stereo).
    pub out: PathBuf,
    /// The number called (Twilio's `To`): which clinic answers. Default: the simulator's own
    /// test number, answered by the default organisation.
    pub to: Option<String>,
    /// The caller's number (`From`): a returning caller is recognised by it.
    pub from: Option<String>,
    /// For the transcript: the server's database.
    pub database_url: Option<String>,
    pub data_dir: PathBuf,
}

/// What the simulated caller says by default: a short booking call that ends in goodbye.
pub const DEFAULT_LINES: [&str; 5] = [
    "Hi, I'd like to book a cleaning for Thursday morning, please.",
    "The first one, please.",
    "My name is Sam Taylor.",
    "Yes, please.",
    "No, that's all, thank you. Bye.",
];

/// Speaks `text` with the Piper voice, as 8 kHz PCM.
pub fn speak_8k(voice: &engines::piper::PiperTts, text: &str) -> anyhow::Result<Vec<i16>> {
    use agent::engine::TextToSpeech as _;
    let chunks = voice
        .synthesize_blocking(text)
        .with_context(|| format!("cannot synthesise {text:?}"))?;
    let audio: Vec<i16> = chunks.into_iter().flat_map(|c| c.audio).collect();
    Ok(resample(&audio, voice.sample_rate(), PHONE_RATE)?)
}

/// Reads a WAV (any rate, first channel) as 8 kHz PCM.
pub fn read_wav_8k(path: &Path) -> anyhow::Result<Vec<i16>> {
    let mut reader =
        hound::WavReader::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels.max(1));
    let samples: Vec<i16> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, 16) => reader
            .samples::<i16>()
            .step_by(channels)
            .collect::<Result<_, _>>()?,
        (hound::SampleFormat::Int, bits) if bits <= 32 => reader
            .samples::<i32>()
            .step_by(channels)
            .map(|s| s.map(|v| (v >> (bits - 16).min(31)) as i16))
            .collect::<Result<_, _>>()?,
        (hound::SampleFormat::Float, 32) => reader
            .samples::<f32>()
            .step_by(channels)
            .map(|s| s.map(|v| (v.clamp(-1.0, 1.0) * 32767.0) as i16))
            .collect::<Result<_, _>>()?,
        (format, bits) => bail!(
            "{}: unsupported WAV format {format:?} {bits}-bit",
            path.display()
        ),
    };
    if spec.sample_rate == PHONE_RATE {
        return Ok(samples);
    }
    resample(&samples, spec.sample_rate, PHONE_RATE).with_context(|| {
        format!(
            "{}: cannot resample from {} Hz",
            path.display(),
            spec.sample_rate
        )
    })
}

/// The built-in caller: three synthetic utterances; the last interrupts the agent.
pub fn demo_script() -> Vec<Line> {
    let pause = LineStart::AfterAgent {
        pause: Duration::from_millis(600),
    };
    vec![
        Line::Speak {
            audio: testsignal::voice(PHONE_RATE, 1_400, 1),
            start: pause,
        },
        Line::Speak {
            audio: testsignal::voice(PHONE_RATE, 1_000, 2),
            start: LineStart::Interrupt {
                after: Duration::from_millis(1_200),
            },
        },
        Line::Speak {
            audio: testsignal::voice(PHONE_RATE, 900, 3),
            start: pause,
        },
    ]
}

pub fn write_wav(path: &Path, channels: &[&[i16]]) -> anyhow::Result<()> {
    let spec = hound::WavSpec {
        channels: channels.len() as u16,
        sample_rate: PHONE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let len = channels.iter().map(|c| c.len()).max().unwrap_or(0);
    for i in 0..len {
        for c in channels {
            w.write_sample(c.get(i).copied().unwrap_or(0))?;
        }
    }
    w.finalize()?;
    Ok(())
}

/// Runs `voxanne simulate`.
pub async fn run(opts: SimulateOptions) -> anyhow::Result<CallReport> {
    let script = if opts.wavs.is_empty() && opts.say.is_empty() {
        demo_script()
    } else {
        let mut audio = Vec::new();
        for wav in &opts.wavs {
            audio.push(read_wav_8k(wav)?);
        }
        if !opts.say.is_empty() {
            let voice = opts
                .voice
                .clone()
                .context("spoken lines need the Piper voice")?;
            let say = opts.say.clone();
            let spoken = tokio::task::spawn_blocking(move || {
                say.iter()
                    .map(|line| speak_8k(&voice, line))
                    .collect::<anyhow::Result<Vec<_>>>()
            })
            .await??;
            for (line, a) in opts.say.iter().zip(&spoken) {
                println!(
                    "caller will say: {line:?} ({:.1} s)",
                    a.len() as f64 / f64::from(PHONE_RATE)
                );
            }
            audio.extend(spoken);
        }
        let mut lines = Vec::new();
        for (i, audio) in audio.into_iter().enumerate() {
            let start = match (i, opts.interrupt_after) {
                (i, Some(after)) if i > 0 => LineStart::Interrupt { after },
                _ => LineStart::AfterAgent {
                    pause: Duration::from_millis(600),
                },
            };
            lines.push(Line::Speak { audio, start });
        }
        lines
    };
    let mut config = CallerConfig::local(&opts.server, &opts.auth_token);
    config.public_url = opts.public_url.trim_end_matches('/').to_string();
    if let Some(to) = &opts.to {
        config.to = to.clone();
    }
    if let Some(from) = &opts.from {
        config.from = from.clone();
    }
    println!(
        "calling {} as {} (CallSid {})",
        opts.server, config.from, config.call_sid
    );
    let report = place_call(&config, &script)
        .await
        .context("the simulated call failed")?;
    if let Some(dir) = opts.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    write_wav(&opts.out, &[&report.heard])?;
    let stereo = opts.out.with_extension("call.wav");
    write_wav(&stereo, &[&report.said, &report.heard])?;
    let secs = report.said.len() as f64 / f64::from(PHONE_RATE);
    println!(
        "call over after {secs:.1} s ({}): {} agent frames heard, {} marks echoed, {} clear(s) (barge-in)",
        if report.ended_by_server {
            "the agent hung up"
        } else {
            "the caller hung up"
        },
        report.frames_received,
        report.marks_echoed,
        report.clears.len()
    );
    for (i, (end, first)) in report
        .line_ends
        .iter()
        .zip(&report.first_audio_after_line)
        .enumerate()
    {
        if let Some(first) = first {
            println!(
                "  line {}: agent audio {} ms after the caller stopped",
                i + 1,
                first.saturating_sub(*end).as_millis()
            );
        }
    }
    println!("what the caller heard: {}", opts.out.display());
    println!(
        "both sides (left caller, right agent): {}",
        stereo.display()
    );
    if report.protocol_errors > 0 {
        println!(
            "WARNING: {} messages from the server were not valid Twilio messages",
            report.protocol_errors
        );
    }
    print_transcript(&opts, &report).await;
    Ok(report)
}

async fn print_transcript(opts: &SimulateOptions, report: &CallReport) {
    let Some(org) = report.org.as_ref().and_then(|o| o.parse().ok()).map(OrgId) else {
        return;
    };
    let store = match Store::open(opts.database_url.as_deref(), &opts.data_dir).await {
        Ok(s) => s,
        Err(e) => {
            println!("(no transcript: cannot open the server's database: {e})");
            return;
        }
    };
    let sid = CallSid(report.call_sid.clone());
    // The server writes through a queue: wait briefly for the call's end to land.
    for _ in 0..50 {
        if let Ok(Some(call)) = store.get_call(org, &sid).await
            && call.ended_at.is_some()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    match store.list_turns(org, &sid).await {
        Ok(turns) => {
            println!("\ntranscript (from the call record):");
            for t in turns {
                let mut line = format!(
                    "  [{:>6.1}s] {:<6} {}",
                    t.start_ms as f64 / 1000.0,
                    t.role,
                    t.text
                );
                if t.interrupted {
                    line.push_str(&format!(
                        "\n           (interrupted; the caller heard: \"{}\")",
                        t.heard_text.unwrap_or_default()
                    ));
                }
                println!("{line}");
            }
        }
        Err(e) => println!("(no transcript: {e})"),
    }
    let far = chrono::Duration::days(400);
    let now = chrono::Utc::now();
    if let Ok(appointments) = store.list_appointments(org, now - far, now + far).await {
        for a in appointments
            .iter()
            .filter(|a| a.call.as_ref() == Some(&sid))
        {
            println!(
                "\nbooked on this call: {} at {} UTC for {} ({}), {}",
                a.service,
                a.starts_at.format("%a %d %b %Y %H:%M"),
                a.patient_name,
                a.phone.as_deref().unwrap_or("no number"),
                a.status
            );
        }
    }
}
