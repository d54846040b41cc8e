//! The embedded offline engines, measured: speech-to-text accuracy (WER) and cost on
//! phone-channel speech, text-to-speech time to first audio and real-time factor, VAD cost per
//! frame.
//!
//! `cargo bench -p benches --bench engines` (models from `voxanne models fetch --all`, found in
//! `VOXANNE_MODELS_DIR`, default `~/.cache/voxanne/models`). Not a test: it prints figures.
//! `BENCH_FULL_WINDOW=1` adds Whisper's full 30 s window (slow); `BENCH_STT_ONLY=<text>` keeps
//! the speech-to-text configurations whose label contains it.
//!
//! Phone channel: the TTS voice's audio → 8 kHz → G.711 μ-law → back → 16 kHz, padded like an
//! endpointed turn (300 ms before, 700 ms of end-of-turn silence after). Caller voices: Piper
//! joe (male, neural) and Festival SLT (female, HTS), both "clear speech"; espeak-ng (formant,
//! robotic) is reported apart as a stress case. WER on synthetic speech ranks engines and
//! settings; it does not promise a figure for real callers.

use std::path::{Path, PathBuf};
use std::time::Instant;

use agent::engine::TextToSpeech;
use engines::festival::FestivalTts;
use engines::models::ModelId;
use engines::piper::PiperTts;
use engines::silero::SileroModel;
use engines::wer::errors;
use engines::whisper::{WhisperOptions, WhisperStt};
use media::vad::{EarshotVad, VoiceDetector};
use media::{ENGINE_FRAME, ENGINE_RATE, PHONE_RATE, mulaw};

/// What callers say to a clinic.
const CALLER_LINES: [&str; 24] = [
    "Hi, I would like to book a cleaning appointment.",
    "Do you have anything available next Tuesday morning?",
    "My name is Sarah Johnson.",
    "I need to cancel my appointment for tomorrow.",
    "Can I speak to someone at the front desk?",
    "What time do you open on Saturday?",
    "I have a bad toothache on the left side.",
    "Is the clinic open during the holidays?",
    "Could you move my appointment to Friday afternoon?",
    "Do you accept my insurance?",
    "I am a new patient and I would like a checkup.",
    "How much does a filling cost?",
    "My daughter needs a dental exam before school starts.",
    "Yes, three o'clock works for me.",
    "No, that is all, thank you very much.",
    "Where are you located and is there parking?",
    "I think I chipped my front tooth yesterday.",
    "Can you send me a reminder by text message?",
    "I would prefer an appointment after work, around five.",
    "Do you do teeth whitening?",
    "My phone number is five five five, one two three four.",
    "I was told to call back about my test results.",
    "Is Doctor Patel working on Monday?",
    "Please book me in for a consultation.",
];

/// What the agent says (for TTS timing).
const AGENT_LINES: [&str; 6] = [
    "Hello, thank you for calling Bright Smile Dental. How can I help you today?",
    "Sure, I can help you book a cleaning.",
    "We have an opening on Tuesday at nine thirty in the morning, would that work for you?",
    "Great, you are all set.",
    "Our office is open from eight in the morning until five in the afternoon, Monday to Friday.",
    "I am going to transfer you to a member of our team who can answer that.",
];

fn models_dir() -> PathBuf {
    std::env::var_os("VOXANNE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/voxanne/models")
        })
}

fn resample(audio: &[i16], from: u32, to: u32) -> Vec<i16> {
    media::resample::resample(audio, from, to).expect("resampler")
}

/// Voice audio at `rate` → the phone channel → a 16 kHz endpointed turn.
fn phone_turn(audio: &[i16], rate: u32) -> Vec<i16> {
    let phone: Vec<i16> = resample(audio, rate, PHONE_RATE)
        .into_iter()
        .map(|s| mulaw::decode(mulaw::encode(s)))
        .collect();
    let mut turn = vec![0i16; ENGINE_RATE as usize * 3 / 10];
    turn.extend(resample(&phone, PHONE_RATE, ENGINE_RATE));
    turn.extend(vec![0i16; ENGINE_RATE as usize * 7 / 10]);
    turn
}

fn espeak(text: &str) -> Option<Vec<i16>> {
    let dir = tempfile::tempdir().ok()?;
    let wav = dir.path().join("e.wav");
    let ok = std::process::Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "160", "-w"])
        .arg(&wav)
        .arg("--")
        .arg(text)
        .status()
        .ok()?
        .success();
    if !ok {
        return None;
    }
    let mut r = hound::WavReader::open(&wav).ok()?;
    let rate = r.spec().sample_rate;
    let s: Vec<i16> = r.samples::<i16>().collect::<Result<_, _>>().ok()?;
    Some(resample(&s, rate, ENGINE_RATE))
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

struct Corpus {
    name: &'static str,
    turns: Vec<(String, Vec<i16>)>,
}

fn stt_report(label: &str, stt: &WhisperStt, corpora: &[Corpus]) {
    let mut all_err = 0;
    let mut all_words = 0;
    for corpus in corpora {
        let (mut err, mut words) = (0, 0);
        let mut decode = Vec::new();
        let mut rtf = Vec::new();
        let mut speech_s = 0.0;
        let mut cpu_s = 0.0;
        for (text, audio) in &corpus.turns {
            let t = stt.transcribe_blocking(audio).expect("decode");
            let (e, n) = errors(text, &t.text);
            err += e;
            words += n;
            decode.push(t.decode_seconds * 1000.0);
            rtf.push(t.decode_seconds / t.audio_seconds);
            speech_s += t.audio_seconds;
            cpu_s += t.decode_seconds;
            if e > 0 && std::env::var_os("VERBOSE").is_some() {
                println!("    {text:?} -> {:?}", t.text);
            }
        }
        if corpus.name != "espeak-ng" {
            all_err += err;
            all_words += words;
        }
        println!(
            "  {label:<24} {:<10} {:3} turns WER {:5.1}%  decode ms p50 {:4.0} p90 {:4.0}  RTF {:.3} (turns incl. 1 s padding)",
            corpus.name,
            corpus.turns.len(),
            100.0 * err as f64 / words.max(1) as f64,
            percentile(&mut decode, 0.5),
            percentile(&mut decode, 0.9),
            cpu_s / speech_s,
        );
    }
    println!(
        "  {label:<24} {:<10}           WER {:5.1}%  (clear speech: Piper + Festival voices)",
        "ALL CLEAR",
        100.0 * all_err as f64 / all_words.max(1) as f64
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let models = models_dir();
    if !ModelId::WhisperBase.path(&models).is_file() || !ModelId::PiperJoe.path(&models).is_file() {
        eprintln!(
            "models missing in {}: run `cargo run -p api -- models fetch --all` (VOXANNE_MODELS_DIR selects the directory)",
            models.display()
        );
        std::process::exit(2);
    }
    let piper = PiperTts::load(&ModelId::PiperJoe.path(&models), &models, 1).expect("piper");
    let festival = FestivalTts::load().ok();
    if festival.is_none() {
        println!("(Festival not installed: its voice is left out; scripts/deps.sh installs it)");
    }

    // ---- TTS ----
    println!("\n== text-to-speech (one thread) ==");
    let mut ttfa = Vec::new();
    let mut synth = 0.0;
    let mut spoken = 0.0;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    for _round in 0..3 {
        for line in AGENT_LINES {
            use futures_util::StreamExt as _;
            let started = Instant::now();
            let (first, total, samples) = rt.block_on(async {
                let mut stream = piper.synthesize(line.to_string());
                let mut first = None;
                let mut samples = 0;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.expect("synthesis");
                    first.get_or_insert(started.elapsed().as_secs_f64());
                    samples += chunk.len();
                }
                (
                    first.unwrap_or_default(),
                    started.elapsed().as_secs_f64(),
                    samples,
                )
            });
            ttfa.push(first * 1000.0);
            synth += total;
            spoken += samples as f64 / f64::from(piper.sample_rate());
        }
    }
    println!(
        "  piper joe-medium: time to first audio ms p50 {:.0} p90 {:.0} max {:.0}; RTF {:.3} ({:.1} s of speech)",
        percentile(&mut ttfa, 0.5),
        percentile(&mut ttfa, 0.9),
        percentile(&mut ttfa, 1.0),
        synth / spoken,
        spoken / 3.0
    );
    if let Some(f) = &festival {
        let mut ttfa = Vec::new();
        let (mut synth, mut spoken) = (0.0, 0.0);
        for line in AGENT_LINES {
            let started = Instant::now();
            let audio = f.synthesize_blocking(line).expect("festival");
            let t = started.elapsed().as_secs_f64();
            ttfa.push(t * 1000.0);
            synth += t;
            spoken += audio.len() as f64 / f64::from(f.sample_rate());
        }
        println!(
            "  festival slt-hts:  time to first audio ms p50 {:.0} p90 {:.0} (whole sentence; no streaming); RTF {:.3}",
            percentile(&mut ttfa, 0.5),
            percentile(&mut ttfa, 0.9),
            synth / spoken
        );
    }

    // ---- VAD ----
    println!("\n== voice activity detection, per 20 ms frame (one thread) ==");
    let voice = media::testsignal::voice(ENGINE_RATE, 4_000, 7);
    let frames: Vec<&[i16]> = voice.chunks_exact(ENGINE_FRAME).collect();
    let time_vad = |name: &str, vad: &mut dyn VoiceDetector| {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let started = Instant::now();
            for _ in 0..20 {
                vad.reset();
                for f in &frames {
                    std::hint::black_box(vad.speech_probability(f));
                }
            }
            let per = started.elapsed().as_secs_f64() / (20 * frames.len()) as f64;
            best = best.min(per);
        }
        println!(
            "  {name:<8} {:6.1} µs/frame = {:.4} CPU-s per second of audio",
            best * 1e6,
            best * 50.0
        );
    };
    time_vad("earshot", &mut EarshotVad::new());
    let silero_path = ModelId::SileroVad.path(&models);
    if silero_path.is_file() {
        let model = SileroModel::load(&silero_path, &models).expect("silero");
        time_vad("silero", &mut model.detector());
    }

    // ---- STT ----
    println!("\n== speech-to-text on phone-channel turns (one thread per decode) ==");
    let mut corpora = Vec::new();
    // Piper samples its prosody (noise scales), so each line is synthesised twice.
    let joe: Vec<(String, Vec<i16>)> = CALLER_LINES
        .iter()
        .chain(CALLER_LINES.iter())
        .map(|l| {
            let audio: Vec<i16> = piper
                .synthesize_blocking(l)
                .expect("piper")
                .into_iter()
                .flat_map(|c| c.audio)
                .collect();
            (l.to_string(), phone_turn(&audio, piper.sample_rate()))
        })
        .collect();
    corpora.push(Corpus {
        name: "piper-joe",
        turns: joe,
    });
    if let Some(f) = &festival {
        let slt = CALLER_LINES
            .iter()
            .map(|l| {
                let audio = f.synthesize_blocking(l).expect("festival");
                (l.to_string(), phone_turn(&audio, f.sample_rate()))
            })
            .collect();
        corpora.push(Corpus {
            name: "festival",
            turns: slt,
        });
    }
    let robotic: Vec<(String, Vec<i16>)> = CALLER_LINES
        .iter()
        .filter_map(|l| espeak(l).map(|a| (l.to_string(), phone_turn(&a, ENGINE_RATE))))
        .collect();
    if !robotic.is_empty() {
        corpora.push(Corpus {
            name: "espeak-ng",
            turns: robotic,
        });
    }
    let base = ModelId::WhisperBase.path(&models);
    let tiny = ModelId::WhisperTinyEn.path(&models);
    let configs: Vec<(&str, &Path, bool, usize)> = vec![
        ("base, cut window +64", &base, true, 64),
        ("base, cut window +128", &base, true, 128),
        ("base, cut window +256", &base, true, 256),
        ("base, full 30 s window", &base, false, 0),
        ("tiny.en, cut window +64", &tiny, true, 64),
    ];
    for (label, path, cut, margin) in configs {
        if !path.is_file() {
            println!("  {label}: model not fetched (voxanne models fetch --all)");
            continue;
        }
        if let Ok(only) = std::env::var("BENCH_STT_ONLY")
            && !label.contains(only.as_str())
        {
            continue;
        }
        if !cut && std::env::var_os("BENCH_FULL_WINDOW").is_none() {
            println!("  {label}: skipped (~6 s a turn; set BENCH_FULL_WINDOW=1)");
            continue;
        }
        let stt = WhisperStt::load(
            path,
            WhisperOptions {
                cut_window: cut,
                window_margin: margin,
                ..WhisperOptions::default()
            },
        )
        .expect("whisper");
        stt_report(label, &stt, &corpora);
    }
    println!(
        "\nlatency after end of speech = endpointing silence (700 ms by default) + decode time above;"
    );
    println!("reply audio starts after that + the brain + TTS time to first audio.");
}
