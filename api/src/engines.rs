//! Engine selection: which speech-to-text, brain and text-to-speech answer calls.

use std::sync::Arc;

use tokio::sync::Semaphore;

use agent::testing::{EchoBrain, ScriptedStt, ToneTts};
use media::vad::EarshotVad;
use telephony::call::CallEngines;

use crate::config::{Config, EngineChoice};

/// What the scripted speech-to-text "hears", in order, when `VOXANNE_ENGINES=test`: a short
/// booking conversation that ends with the caller saying goodbye.
pub const DEMO_LINES: [&str; 3] = [
    "Hi, I would like to book a cleaning.",
    "Tuesday morning would be great.",
    "That's all, thank you, bye.",
];

/// Engines could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EngineSetupError {
    #[error("embedded engines: {0}")]
    Embedded(#[from] agent::engine::EngineError),
}

/// Builds the configured engines, loaded once and shared by every call.
pub fn build(config: &Config) -> Result<CallEngines, EngineSetupError> {
    match config.engines {
        EngineChoice::Embedded => {
            let loaded = engines::embedded::load(&config.embedded_options())?;
            Ok(CallEngines {
                stt: Arc::new(loaded.stt),
                // Every call gets its own receptionist session at setup (`server`); the shared
                // brain answers nothing.
                brain: Arc::new(NoSharedBrain),
                tts: loaded.tts,
                tts_fallback: loaded.tts_fallback,
                stt_permits: Arc::new(Semaphore::new(config.stt_concurrency)),
                vad: loaded.vad,
            })
        }
        EngineChoice::Test => {
            let lines: Vec<&str> = match &config.test_transcripts {
                Some(lines) => lines.iter().map(String::as_str).collect(),
                None => DEMO_LINES.to_vec(),
            };
            Ok(test_engines(&lines, config.stt_concurrency))
        }
    }
}

/// The shared brain of the embedded engines: calls are answered by their own receptionist
/// session, so this only answers if a call somehow has none, with an error (the core then
/// apologises) rather than an echo.
#[derive(Debug)]
pub struct NoSharedBrain;

impl agent::engine::Brain for NoSharedBrain {
    fn name(&self) -> &str {
        "receptionist"
    }

    fn respond(
        &self,
        _request: agent::engine::BrainRequest,
    ) -> futures_util::stream::BoxStream<
        'static,
        Result<agent::engine::BrainEvent, agent::engine::EngineError>,
    > {
        Box::pin(futures_util::stream::iter([Err(
            agent::engine::EngineError::Unavailable("no brain session for this call".into()),
        )]))
    }
}

/// The test-double engines: scripted STT (these lines, in order), the echo brain, a 440 Hz
/// tone as speech (a 660 Hz tone as the fallback voice, as Festival stands behind Piper); with
/// the real earshot VAD.
pub fn test_engines(lines: &[&str], stt_concurrency: usize) -> CallEngines {
    CallEngines {
        stt: Arc::new(ScriptedStt::new(lines.iter().copied())),
        brain: Arc::new(EchoBrain::default()),
        tts: Arc::new(ToneTts::new(16_000, 440.0)),
        tts_fallback: Some(Arc::new(ToneTts::new(16_000, 660.0))),
        stt_permits: Arc::new(Semaphore::new(stt_concurrency)),
        vad: Arc::new(|| Box::new(EarshotVad::new())),
    }
}
