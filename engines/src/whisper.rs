//! Speech-to-text with Whisper through whisper.cpp (`whisper-rs`).
//!
//! Whisper does not stream: the core endpoints each caller turn with the VAD and hands over the
//! whole segment. Each decode runs on one thread (ggml's spinning thread pool makes two threads
//! per decode far slower under load on a small box) with the encoder's context window cut to
//! the segment's length plus a margin, instead of Whisper's fixed 30 s — about 7× less work
//! for a 3 s turn. Decoder states are created at load time and pooled; the call task's
//! semaphore (`CallEngines::stt_permits`) bounds how many run at once, so calls queue instead
//! of oversubscribing the cores.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};
use std::time::Instant;

use agent::engine::{EngineError, SpeechToText};
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters};

use media::ENGINE_RATE;

/// Encoder frames per second of audio (mel hop 10 ms, conv stride 2).
const AUDIO_CTX_PER_SECOND: usize = 50;
/// whisper.cpp refuses input shorter than one second; shorter turns are padded with silence.
const MIN_SAMPLES: usize = ENGINE_RATE as usize * 11 / 10;
/// Above this no-speech probability an empty-looking segment is treated as silence (Whisper
/// otherwise "hears" stock phrases like "Thank you." in noise).
const NO_SPEECH_THRESHOLD: f32 = 0.6;

/// How decodes are run.
#[derive(Debug, Clone)]
pub struct WhisperOptions {
    /// Spoken language (ISO 639-1), or `None` to detect it (multilingual models only).
    pub language: Option<String>,
    /// Cut the encoder's window to the segment (fast) instead of Whisper's full 30 s.
    pub cut_window: bool,
    /// Encoder frames (20 ms each) kept beyond the segment when the window is cut.
    pub window_margin: usize,
    /// Decoder states to create up front: the number of decodes that can run at once.
    pub decoders: usize,
}

impl Default for WhisperOptions {
    fn default() -> Self {
        WhisperOptions {
            language: Some("en".into()),
            cut_window: true,
            // +128 frames (2.56 s): half the word errors of +64 on phone-channel turns
            // (3.9% vs 7.3% in benches/engines.rs) for ~100 ms more decode.
            window_margin: 128,
            decoders: 1,
        }
    }
}

/// One transcription with its cost, for benches and logs.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    pub text: String,
    /// Seconds of audio decoded (before padding).
    pub audio_seconds: f64,
    /// Wall-clock seconds the decode took on its thread.
    pub decode_seconds: f64,
}

/// Whisper speech-to-text, loaded once and shared by every call.
#[derive(Clone)]
pub struct WhisperStt {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: WhisperContext,
    pool: Mutex<Vec<whisper_rs::WhisperState>>,
    options: WhisperOptions,
    name: String,
    path: PathBuf,
}

impl std::fmt::Debug for WhisperStt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhisperStt")
            .field("model", &self.inner.path)
            .field("options", &self.inner.options)
            .finish()
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Failed(format!("whisper {what}: {e}"))
}

impl WhisperStt {
    /// Loads a whisper.cpp ggml model and creates `options.decoders` decoder states.
    pub fn load(path: &Path, options: WhisperOptions) -> Result<WhisperStt, EngineError> {
        static HOOKS: Once = Once::new();
        // whisper.cpp logs to stderr by default; route it through `tracing`.
        HOOKS.call_once(whisper_rs::install_logging_hooks);
        if !path.is_file() {
            return Err(EngineError::Unavailable(format!(
                "Whisper model {} not found",
                path.display()
            )));
        }
        let path_str = path
            .to_str()
            .ok_or_else(|| EngineError::BadInput(format!("path {path:?} is not UTF-8")))?;
        let started = Instant::now();
        let ctx = WhisperContext::new_with_params(path_str, WhisperContextParameters::default())
            .map_err(|e| {
                EngineError::Unavailable(format!(
                    "cannot load Whisper model {}: {e}",
                    path.display()
                ))
            })?;
        let decoders = options.decoders.max(1);
        let mut pool = Vec::with_capacity(decoders);
        for _ in 0..decoders {
            pool.push(ctx.create_state().map_err(|e| failed("state", e))?);
        }
        let name = format!(
            "whisper-{}",
            path.file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("model")
                .trim_start_matches("ggml-")
        );
        tracing::info!(
            model = %path.display(),
            decoders,
            load_ms = started.elapsed().as_millis() as u64,
            "whisper loaded"
        );
        Ok(WhisperStt {
            inner: Arc::new(Inner {
                ctx,
                pool: Mutex::new(pool),
                options,
                name,
                path: path.to_path_buf(),
            }),
        })
    }

    /// Transcribes 16 kHz mono audio on the calling thread.
    pub fn transcribe_blocking(&self, audio: &[i16]) -> Result<Transcript, EngineError> {
        let inner = &self.inner;
        let audio_seconds = audio.len() as f64 / ENGINE_RATE as f64;
        // The endpointed turn ends with the endpointer's hang-over silence; a cut window full of
        // silence is where Whisper starts repeating itself.
        let audio = trim_silence(audio);
        let mut samples: Vec<f32> = audio.iter().map(|&s| s as f32 / 32768.0).collect();
        if samples.len() < MIN_SAMPLES {
            samples.resize(MIN_SAMPLES, 0.0);
        }
        let started = Instant::now();

        let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        params.set_n_threads(1);
        params.set_language(inner.options.language.as_deref());
        params.set_detect_language(inner.options.language.is_none());
        params.set_no_context(true);
        params.set_single_segment(true);
        params.set_no_timestamps(true);
        params.set_suppress_blank(true);
        params.set_suppress_nst(true);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_special(false);
        params.set_print_timestamps(false);
        // No temperature fallback: with the window cut, a segment whisper.cpp judges
        // low-confidence would otherwise be re-decoded at five temperatures (a 4 s turn took 16 s
        // of CPU that way). One greedy pass, and a token budget proportional to the audio
        // (fast speech is ~4 words, ~6 tokens a second), bound the cost of every turn.
        params.set_temperature(0.0);
        params.set_temperature_inc(0.0);
        params.set_max_tokens(max_tokens(samples.len() as f64 / ENGINE_RATE as f64));
        if inner.options.cut_window {
            let frames = samples
                .len()
                .div_ceil(ENGINE_RATE as usize / AUDIO_CTX_PER_SECOND)
                + inner.options.window_margin;
            let full = inner.ctx.n_audio_ctx().max(1) as usize;
            params.set_audio_ctx(frames.min(full) as i32);
        }
        // No abort callback: whisper-rs 0.16's `set_abort_callback_safe` hands whisper.cpp a
        // pointer to a boxed trait object but reads it back as the bare closure, so the flag
        // is read from the wrong address and decodes abort at random ("failed to encode").
        // A cancelled turn's decode runs to its end instead; the token budget and silence trim
        // keep that under a second or so.

        let state = inner
            .pool
            .lock()
            .map_err(|_| failed("pool", "poisoned"))?
            .pop();
        let mut state = match state {
            Some(s) => s,
            None => {
                // More concurrent decodes than states: the permit count and the pool size
                // disagree. Work anyway, but say so.
                tracing::warn!("whisper decoder pool empty; creating a state on demand");
                inner.ctx.create_state().map_err(|e| failed("state", e))?
            }
        };
        let result = state.full(params, &samples);
        let text = result.map_err(|e| failed("decode", e)).map(|()| {
            let mut text = String::new();
            let mut silent = true;
            for segment in state.as_iter() {
                if segment.no_speech_probability() < NO_SPEECH_THRESHOLD {
                    silent = false;
                }
                if let Ok(s) = segment.to_str_lossy() {
                    text.push_str(&s);
                }
            }
            let text = collapse_repeats(&clean(&text));
            if silent && is_stock_phrase(&text) {
                String::new()
            } else {
                text
            }
        });
        if let Ok(mut pool) = inner.pool.lock() {
            pool.push(state);
        }
        let text = text?;
        Ok(Transcript {
            text,
            audio_seconds,
            decode_seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// Cuts leading and trailing silence (20 ms frames more than 40 dB below the loudest frame,
/// or below -55 dBFS), keeping 200 ms around the speech.
fn trim_silence(audio: &[i16]) -> &[i16] {
    const FRAME: usize = ENGINE_RATE as usize / 50;
    const KEEP: usize = 10;
    let energy: Vec<f64> = audio
        .chunks(FRAME)
        .map(|f| f.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / f.len().max(1) as f64)
        .collect();
    let peak = energy.iter().copied().fold(0.0, f64::max);
    // -55 dBFS in mean square of i16 samples.
    let floor = (32768.0f64 * 10f64.powf(-55.0 / 20.0)).powi(2);
    let threshold = (peak * 1e-4).max(floor);
    let voiced = |e: &f64| *e > threshold;
    let (Some(first), Some(last)) = (
        energy.iter().position(voiced),
        energy.iter().rposition(voiced),
    ) else {
        return audio;
    };
    let start = first.saturating_sub(KEEP) * FRAME;
    let end = ((last + 1 + KEEP) * FRAME).min(audio.len());
    &audio[start..end]
}

/// Whisper with a cut window sometimes loops ("Tuesday morning would be great. Tuesday
/// morning would be great. …"). When the words are one phrase repeated, keep it once.
fn collapse_repeats(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let norm: Vec<String> = words
        .iter()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .collect();
    for period in 1..=words.len() / 2 {
        // Two full repetitions at least, the rest (if any) a prefix of the phrase.
        if (period..norm.len()).all(|i| norm[i] == norm[i - period]) {
            if period == 1 && words.len() < 4 {
                break; // "no no" is speech, not a loop
            }
            return words[..period].join(" ");
        }
    }
    text.to_string()
}

/// Tokens allowed for a segment of this length.
fn max_tokens(audio_seconds: f64) -> i32 {
    (16.0 + audio_seconds * 8.0).min(220.0) as i32
}

/// Trims whitespace and drops non-speech annotations Whisper emits: `[BLANK_AUDIO]`,
/// `(music)`, `*coughs*`.
fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut depth = 0usize;
    let mut in_star = false;
    for c in text.chars() {
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' => depth = depth.saturating_sub(1),
            '*' => in_star = !in_star,
            _ if depth == 0 && !in_star => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What Whisper says when it hears nothing: trusted only if the model thinks there was speech.
fn is_stock_phrase(text: &str) -> bool {
    let t = text
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase();
    t.is_empty()
        || matches!(
            t.as_str(),
            "thank you" | "thanks for watching" | "you" | "bye" | "thank you for watching"
        )
}

impl SpeechToText for WhisperStt {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn transcribe(
        &self,
        audio: Vec<i16>,
        sample_rate: u32,
    ) -> BoxFuture<'static, Result<String, EngineError>> {
        let this = self.clone();
        async move {
            let audio = if sample_rate == ENGINE_RATE {
                audio
            } else {
                resample(&audio, sample_rate)?
            };
            let task = tokio::task::spawn_blocking(move || this.transcribe_blocking(&audio));
            match task.await {
                Ok(r) => r.map(|t| t.text),
                Err(e) => Err(failed("task", e)),
            }
        }
        .boxed()
    }
}

fn resample(audio: &[i16], from: u32) -> Result<Vec<i16>, EngineError> {
    media::resample::resample(audio, from, ENGINE_RATE)
        .map_err(|e| EngineError::BadInput(format!("cannot resample from {from} Hz: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_and_extra_spaces_are_removed() {
        assert_eq!(clean(" [BLANK_AUDIO] "), "");
        assert_eq!(
            clean(" Hello, (coughs) I'd like  an appointment."),
            "Hello, I'd like an appointment."
        );
        assert_eq!(clean("*laughs* Yes."), "Yes.");
    }

    #[test]
    fn repeated_phrases_collapse_and_real_repeats_stay() {
        assert_eq!(
            collapse_repeats("Tuesday is great. Tuesday is great. Tuesday is great. Tuesday is"),
            "Tuesday is great."
        );
        assert_eq!(collapse_repeats("No, no."), "No, no.");
        assert_eq!(collapse_repeats("Yes yes yes yes yes"), "Yes");
        assert_eq!(
            collapse_repeats("I said Tuesday, Tuesday morning."),
            "I said Tuesday, Tuesday morning."
        );
    }

    #[test]
    fn silence_is_trimmed_around_speech_but_not_inside() {
        let mut audio = vec![0i16; 16_000];
        audio.extend(media::testsignal::voice(ENGINE_RATE, 1_000, 1));
        audio.extend(vec![0i16; 8_000]);
        audio.extend(media::testsignal::voice(ENGINE_RATE, 500, 2));
        audio.extend(vec![0i16; 32_000]);
        let trimmed = trim_silence(&audio);
        // 200 ms kept either side of 2 s of content (two voices and the gap between them).
        let expected = 1_000 + 500 + 500 + 400;
        let ms = trimmed.len() * 1000 / ENGINE_RATE as usize;
        assert!(
            ms.abs_diff(expected) <= 60,
            "{ms} ms kept, expected ~{expected}"
        );
        assert_eq!(trim_silence(&[0i16; 1000]).len(), 1000);
    }

    #[test]
    fn stock_phrases_are_recognised() {
        assert!(is_stock_phrase("Thank you."));
        assert!(is_stock_phrase(""));
        assert!(!is_stock_phrase("Thank you, see you Tuesday."));
    }

    #[test]
    fn missing_model_is_unavailable_with_its_path() {
        let err = WhisperStt::load(Path::new("/nonexistent/ggml-base.bin"), Default::default())
            .unwrap_err();
        assert!(
            matches!(&err, EngineError::Unavailable(m) if m.contains("/nonexistent/ggml-base.bin")),
            "{err}"
        );
    }
}
