//! Engine traits: speech-to-text, the brain (one LLM-style turn, tools included) and
//! text-to-speech.
//!
//! Engines are loaded once per process and shared by every call (`Arc<dyn …>`), so every method
//! takes `&self` and returns a `'static` future or stream that owns its inputs: the call task
//! can cancel a turn by dropping it.

use std::fmt;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

/// An engine failed. The message is for logs and the call's event record, never for callers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The engine is not reachable or not loaded (provider down, model missing).
    #[error("engine unavailable: {0}")]
    Unavailable(String),
    /// The engine was given something it cannot work with.
    #[error("bad input: {0}")]
    BadInput(String),
    /// The engine failed while working.
    #[error("engine failed: {0}")]
    Failed(String),
}

/// Who said a line of the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Caller,
    Agent,
}

impl Role {
    /// Stable lowercase name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Caller => "caller",
            Role::Agent => "agent",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of the conversation as the brain sees it. For the agent this is what the caller
/// actually heard, not what was generated (see the barge-in invariant in the core).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: Role,
    pub text: String,
}

/// What the caller did that the brain must answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerInput {
    /// A transcribed spoken turn.
    Speech(String),
    /// A key pressed on the phone's keypad (`0-9`, `*`, `#`, `A-D`).
    Dtmf(char),
    /// The caller spoke, but speech-to-text failed on their last few turns in a row (the core
    /// has already asked them to repeat; see `ConversationConfig::max_unheard_prompts`). A brain
    /// should offer another way through, such as a person or a message; one that does not care
    /// can treat it as empty speech.
    Unheard,
}

/// Everything one brain turn needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrainRequest {
    /// The conversation so far, oldest first, ending before `input`.
    pub history: Vec<Message>,
    /// What the caller just said or pressed.
    pub input: CallerInput,
}

/// What the call should do once the agent's reply has been spoken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// End the call (after the reply has been heard).
    Hangup,
    /// Hand the caller to a human at this number (after the reply has been heard).
    Transfer { to: String },
}

/// One event of a streamed brain turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrainEvent {
    /// Text to speak, in order. Engines should yield whole sentences (or clauses) so speech can
    /// start before the reply is complete.
    Text(String),
    /// What to do after speaking. At most one, normally last.
    Action(Action),
    /// Something to record as a call event: `kind` is a stable name staff filter on
    /// (`tool_call`, `escalation`, …), `detail` a JSON object as text.
    Note { kind: &'static str, detail: String },
}

/// Speech-to-text over one endpointed caller turn.
pub trait SpeechToText: Send + Sync + fmt::Debug {
    /// Short name for logs and metrics.
    fn name(&self) -> &str;
    /// Transcribes `audio` (mono PCM at `sample_rate`). Empty text means "nothing intelligible".
    fn transcribe(
        &self,
        audio: Vec<i16>,
        sample_rate: u32,
    ) -> BoxFuture<'static, Result<String, EngineError>>;
}

/// The agent's brain: one reply to the caller's input.
pub trait Brain: Send + Sync + fmt::Debug {
    fn name(&self) -> &str;
    fn respond(&self, request: BrainRequest)
    -> BoxStream<'static, Result<BrainEvent, EngineError>>;
}

/// Text-to-speech, streamed in chunks of mono PCM at [`TextToSpeech::sample_rate`].
pub trait TextToSpeech: Send + Sync + fmt::Debug {
    fn name(&self) -> &str;
    fn sample_rate(&self) -> u32;
    fn synthesize(&self, text: String) -> BoxStream<'static, Result<Vec<i16>, EngineError>>;
}

/// Splits streamed text into sentences so TTS can start on the first one. Returns the complete
/// sentences found in `buffer` and leaves the unfinished tail in it.
pub fn drain_sentences(buffer: &mut String) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let bytes = buffer.as_bytes();
        let mut cut = None;
        for (i, &b) in bytes.iter().enumerate() {
            if matches!(b, b'.' | b'!' | b'?' | b'\n') {
                // A sentence ends at the punctuation when whitespace (or nothing yet) follows;
                // "3.30" or "e.g." inside a word is not a sentence end.
                match bytes.get(i + 1) {
                    Some(n) if n.is_ascii_whitespace() => {
                        cut = Some(i + 1);
                        break;
                    }
                    _ => {}
                }
            }
        }
        let Some(cut) = cut else { break };
        let sentence = buffer[..cut].trim().to_string();
        buffer.drain(..cut);
        if !sentence.is_empty() {
            out.push(sentence);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_are_split_at_terminal_punctuation_followed_by_space() {
        let mut buf = String::from("Hello there. We open at 8.30 tomorrow! Is that ok? And");
        let s = drain_sentences(&mut buf);
        assert_eq!(
            s,
            vec!["Hello there.", "We open at 8.30 tomorrow!", "Is that ok?"]
        );
        assert_eq!(buf, " And");
    }

    #[test]
    fn unfinished_sentence_stays_in_the_buffer() {
        let mut buf = String::from("We open at 8.");
        assert!(drain_sentences(&mut buf).is_empty());
        buf.push_str("30 am. ");
        assert_eq!(drain_sentences(&mut buf), vec!["We open at 8.30 am."]);
    }
}
