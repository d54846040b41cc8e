//! The permissive fallback voice: Festival with the CMU SLT HTS voice (Debian `festival`,
//! `festvox-us-slt-hts`), for machines where Piper cannot run. One `text2wave` process per
//! sentence (text on stdin, raw 16 kHz 16-bit PCM on stdout); ~0.3 s start-up each.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use agent::engine::{EngineError, TextToSpeech};
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;

const RATE: u32 = 16_000;
const VOICE: &str = "(voice_cmu_us_slt_arctic_hts)";

/// Festival text-to-speech.
#[derive(Debug, Clone)]
pub struct FestivalTts {
    text2wave: PathBuf,
}

impl FestivalTts {
    /// Finds `text2wave` and checks the voice by synthesising a word.
    pub fn load() -> Result<FestivalTts, EngineError> {
        let text2wave = crate::espeak::find_on_path("text2wave").ok_or_else(|| {
            EngineError::Unavailable(
                "Festival not found: install it with `apt-get install festival festvox-us-slt-hts`"
                    .into(),
            )
        })?;
        let tts = FestivalTts { text2wave };
        let probe = tts.synthesize_blocking("Hello.")?;
        if probe.is_empty() {
            return Err(EngineError::Unavailable(
                "Festival produced no audio: is festvox-us-slt-hts installed?".into(),
            ));
        }
        Ok(tts)
    }

    /// Synthesises one sentence on the calling thread.
    pub fn synthesize_blocking(&self, text: &str) -> Result<Vec<i16>, EngineError> {
        let mut child = Command::new(&self.text2wave)
            .args(["-eval", VOICE, "-otype", "raw", "-F", "16000", "-o", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| EngineError::Unavailable(format!("cannot run text2wave: {e}")))?;
        let line: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(line.as_bytes())
                .map_err(|e| EngineError::Failed(format!("text2wave stdin: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| EngineError::Failed(format!("text2wave: {e}")))?;
        if !out.status.success() {
            return Err(EngineError::Failed(format!(
                "text2wave exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        // An error inside Festival's Scheme still exits 0 but prints to stderr.
        if out.stdout.is_empty() && !out.stderr.is_empty() {
            return Err(EngineError::Failed(format!(
                "text2wave: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(out
            .stdout
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect())
    }
}

impl TextToSpeech for FestivalTts {
    fn name(&self) -> &str {
        "festival-slt"
    }

    fn sample_rate(&self) -> u32 {
        RATE
    }

    fn synthesize(&self, text: String) -> BoxStream<'static, Result<Vec<i16>, EngineError>> {
        let this = self.clone();
        futures_util::stream::once(async move {
            match tokio::task::spawn_blocking(move || this.synthesize_blocking(&text)).await {
                Ok(r) => r,
                Err(e) => Err(EngineError::Failed(format!("festival task: {e}"))),
            }
        })
        .boxed()
    }
}
