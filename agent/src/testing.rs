//! Honest test doubles for the engine traits: scripted text in, scripted text out, a tone as
//! speech. They exist so the call spine can be tested, benchmarked and demonstrated without
//! model weights; they are never the product's default engines (the server only uses them
//! when configured with `VOXANNE_ENGINES=test`, and says so at start).

use std::f32::consts::TAU;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt};

use crate::engine::{
    Action, Brain, BrainEvent, BrainRequest, CallerInput, EngineError, SpeechToText, TextToSpeech,
};

/// Speech-to-text double: returns its scripted lines in order (round robin), whatever the
/// audio was. Empty audio gives empty text, as a real engine would.
#[derive(Debug)]
pub struct ScriptedStt {
    lines: Vec<String>,
    next: AtomicUsize,
}

impl ScriptedStt {
    pub fn new<S: Into<String>>(lines: impl IntoIterator<Item = S>) -> Self {
        Self {
            lines: lines.into_iter().map(Into::into).collect(),
            next: AtomicUsize::new(0),
        }
    }
}

impl SpeechToText for ScriptedStt {
    fn name(&self) -> &str {
        "scripted-stt"
    }

    fn transcribe(
        &self,
        audio: Vec<i16>,
        _sample_rate: u32,
    ) -> BoxFuture<'static, Result<String, EngineError>> {
        let text = if audio.is_empty() || self.lines.is_empty() {
            String::new()
        } else {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % self.lines.len();
            self.lines[i].clone()
        };
        Box::pin(async move { Ok(text) })
    }
}

/// Brain double: acknowledges what it heard, and says goodbye and hangs up when the caller says
/// "bye". Deterministic, instant.
#[derive(Debug, Default)]
pub struct EchoBrain {
    /// Requests seen, newest last, so tests can check what history the core sent.
    pub seen: Mutex<Vec<BrainRequest>>,
}

impl Brain for EchoBrain {
    fn name(&self) -> &str {
        "echo-brain"
    }

    fn respond(
        &self,
        request: BrainRequest,
    ) -> BoxStream<'static, Result<BrainEvent, EngineError>> {
        let events: Vec<Result<BrainEvent, EngineError>> = match &request.input {
            CallerInput::Speech(text) if text.to_lowercase().contains("bye") => vec![
                Ok(BrainEvent::Text("Thank you for calling.".into())),
                Ok(BrainEvent::Text("Goodbye!".into())),
                Ok(BrainEvent::Action(Action::Hangup)),
            ],
            CallerInput::Speech(text) => vec![
                Ok(BrainEvent::Text(format!(
                    "You said: {}.",
                    text.trim_end_matches(['.', '!', '?'])
                ))),
                Ok(BrainEvent::Text(
                    "Is there anything else I can help with?".into(),
                )),
            ],
            CallerInput::Dtmf(d) => vec![Ok(BrainEvent::Text(format!("You pressed {d}.")))],
            CallerInput::Unheard => vec![Ok(BrainEvent::Text(
                "I'm sorry, I can't hear you well.".into(),
            ))],
        };
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(request);
        }
        stream::iter(events).boxed()
    }
}

/// Text-to-speech double: a tone whose length follows the text (55 ms a character, a typical
/// speaking rate of ~15 characters a second), streamed in 100 ms chunks.
#[derive(Debug, Clone)]
pub struct ToneTts {
    sample_rate: u32,
    frequency_hz: f32,
}

impl ToneTts {
    /// Milliseconds of tone per character of text.
    pub const MS_PER_CHAR: u32 = 55;

    pub fn new(sample_rate: u32, frequency_hz: f32) -> Self {
        Self {
            sample_rate,
            frequency_hz,
        }
    }

    /// Samples of audio this engine makes for `text`.
    pub fn samples_for(&self, text: &str) -> usize {
        let ms = (text.chars().count() as u32 * Self::MS_PER_CHAR).clamp(200, 8_000);
        (u64::from(ms) * u64::from(self.sample_rate) / 1000) as usize
    }
}

impl Default for ToneTts {
    fn default() -> Self {
        Self::new(16_000, 440.0)
    }
}

impl TextToSpeech for ToneTts {
    fn name(&self) -> &str {
        "tone-tts"
    }

    fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    fn synthesize(&self, text: String) -> BoxStream<'static, Result<Vec<i16>, EngineError>> {
        if text.trim().is_empty() {
            return stream::iter([Err(EngineError::BadInput("empty text".into()))]).boxed();
        }
        let total = self.samples_for(&text);
        let rate = self.sample_rate as f32;
        let step = TAU * self.frequency_hz / rate;
        let chunk = (self.sample_rate / 10) as usize;
        // Chunks are made as they are asked for, like a streaming engine: the first chunk costs
        // 100 ms of tone, not the whole utterance.
        stream::iter((0..total).step_by(chunk))
            .map(move |start| {
                let end = (start + chunk).min(total);
                Ok((start..end)
                    .map(|n| ((n as f32 * step).sin() * 8_000.0) as i16)
                    .collect())
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn scripted_stt_returns_lines_in_order_and_nothing_for_silence() {
        let stt = ScriptedStt::new(["one", "two"]);
        assert_eq!(stt.transcribe(vec![1; 10], 16_000).await.unwrap(), "one");
        assert_eq!(stt.transcribe(vec![1; 10], 16_000).await.unwrap(), "two");
        assert_eq!(stt.transcribe(vec![1; 10], 16_000).await.unwrap(), "one");
        assert_eq!(stt.transcribe(vec![], 16_000).await.unwrap(), "");
    }

    #[tokio::test]
    async fn tone_tts_length_follows_the_text() {
        let tts = ToneTts::default();
        let audio: Vec<i16> = tts
            .synthesize("Hello there, how are you?".into())
            .map(|c| c.unwrap())
            .concat()
            .await;
        assert_eq!(audio.len(), tts.samples_for("Hello there, how are you?"));
        assert_eq!(audio.len(), 25 * 55 * 16);
        assert!(audio.iter().any(|&s| s > 7_000));
    }

    #[tokio::test]
    async fn echo_brain_hangs_up_on_bye() {
        let brain = EchoBrain::default();
        let events: Vec<_> = brain
            .respond(BrainRequest {
                history: vec![],
                input: CallerInput::Speech("ok bye".into()),
            })
            .collect()
            .await;
        assert_eq!(events.last(), Some(&Ok(BrainEvent::Action(Action::Hangup))));
    }
}
