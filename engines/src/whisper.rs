//! Speech-to-text with Whisper through whisper.cpp (`whisper-rs`).
//!
//! Whisper does not stream: the core endpoints each caller turn with the VAD and hands over the
//! whole segment. Each decode runs on one thread (ggml's spinning thread pool makes two threads
//! per decode far slower under load on a small box) with the encoder's context window cut to
//! the segment's length plus a margin, instead of Whisper's fixed 30 s — about 7× less work
//! for a 3 s turn. Decoder states are created at load time and pooled; the call task's
//! semaphore (`CallEngines::stt_permits`) bounds how many run at once, so calls queue instead
//! of oversubscribing the cores. Dropping the future aborts the decode at the next check.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Instant;

use agent::engine::{EngineError, SpeechToText};
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters};

use media::ENGINE_RATE;
use media::resample::Resampler;

/// Encoder frames per second of audio (mel hop 10 ms, conv stride 2).
const AUDIO_CTX_PER_SECOND: usize = 50;
/// Frames of context kept beyond the segment when the window is cut (ENGINES.md: +64).
const AUDIO_CTX_MARGIN: usize = 64;
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
    /// Decoder states to create up front: the number of decodes that can run at once.
    pub decoders: usize,
}

impl Default for WhisperOptions {
    fn default() -> Self {
        WhisperOptions {
            language: Some("en".into()),
            cut_window: true,
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

    /// Transcribes 16 kHz mono audio on the calling thread. `abort` stops the decode early.
    pub fn transcribe_blocking(
        &self,
        audio: &[i16],
        abort: Option<Arc<AtomicBool>>,
    ) -> Result<Transcript, EngineError> {
        let inner = &self.inner;
        let audio_seconds = audio.len() as f64 / ENGINE_RATE as f64;
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
        if inner.options.cut_window {
            let frames = samples
                .len()
                .div_ceil(ENGINE_RATE as usize / AUDIO_CTX_PER_SECOND)
                + AUDIO_CTX_MARGIN;
            let full = inner.ctx.n_audio_ctx().max(1) as usize;
            params.set_audio_ctx(frames.min(full) as i32);
        }
        if let Some(flag) = abort {
            params.set_abort_callback_safe(move || flag.load(Ordering::Relaxed));
        }

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
            let text = clean(&text);
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

/// Cancels the decode when the transcription future is dropped (barge-in, hang-up).
struct AbortOnDrop(Arc<AtomicBool>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
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
        let abort = Arc::new(AtomicBool::new(false));
        let guard = AbortOnDrop(abort.clone());
        async move {
            let _guard = guard;
            let audio = if sample_rate == ENGINE_RATE {
                audio
            } else {
                resample(&audio, sample_rate)?
            };
            let task =
                tokio::task::spawn_blocking(move || this.transcribe_blocking(&audio, Some(abort)));
            match task.await {
                Ok(r) => r.map(|t| t.text),
                Err(e) => Err(failed("task", e)),
            }
        }
        .boxed()
    }
}

fn resample(audio: &[i16], from: u32) -> Result<Vec<i16>, EngineError> {
    let mut r = Resampler::new(from, ENGINE_RATE)
        .map_err(|e| EngineError::BadInput(format!("cannot resample from {from} Hz: {e}")))?;
    let mut out = Vec::with_capacity(audio.len() * ENGINE_RATE as usize / from.max(1) as usize);
    r.process(audio, &mut out);
    r.flush(&mut out);
    Ok(out)
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
