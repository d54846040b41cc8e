//! Choosing and loading the embedded engines from configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use agent::engine::{EngineError, TextToSpeech};
use media::vad::{EarshotVad, VoiceDetector};

use crate::festival::FestivalTts;
use crate::models::{FETCH_COMMAND, ModelId};
use crate::piper::PiperTts;
use crate::silero::SileroModel;
use crate::whisper::{WhisperOptions, WhisperStt};

/// Which voice speaks for the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtsChoice {
    /// Piper (default): natural, ~0.15 CPU-seconds per second of speech.
    Piper,
    /// Festival with the CMU SLT HTS voice: permissive fallback where Piper cannot run.
    Festival,
}

/// Which voice activity detector listens to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadChoice {
    /// earshot (default): pure Rust, ~20 µs a frame, best on clean lines.
    Earshot,
    /// Silero v5: fewer false alarms on noisy lines (10 dB SNR and worse).
    Silero,
}

/// What to load.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    pub models_dir: PathBuf,
    /// `base` (default), `tiny.en`, or the path of any whisper.cpp ggml model.
    pub stt_model: String,
    pub tts: TtsChoice,
    /// A Piper `.onnx` voice; default the fetched `en_US-joe-medium`.
    pub piper_voice: Option<PathBuf>,
    pub vad: VadChoice,
    /// Whisper decoders that can run at once (match the STT permit count).
    pub stt_decoders: usize,
    /// Piper model instances that can run at once.
    pub tts_sessions: usize,
}

/// The loaded engines, shared by all calls.
pub struct Embedded {
    pub stt: WhisperStt,
    pub tts: Arc<dyn TextToSpeech>,
    /// Festival behind Piper, when Festival is installed: it speaks a sentence Piper fails on
    /// and the rest of that call. `None` behind Festival itself, or without Festival.
    pub tts_fallback: Option<Arc<dyn TextToSpeech>>,
    pub vad: Arc<dyn Fn() -> Box<dyn VoiceDetector> + Send + Sync>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("stt", &self.stt)
            .field("tts", &self.tts.name())
            .finish()
    }
}

impl EmbeddedOptions {
    /// The Whisper model file `stt_model` names.
    pub fn whisper_path(&self) -> PathBuf {
        match self.stt_model.as_str() {
            "base" => ModelId::WhisperBase.path(&self.models_dir),
            "tiny.en" => ModelId::WhisperTinyEn.path(&self.models_dir),
            other => PathBuf::from(other),
        }
    }

    pub fn piper_path(&self) -> PathBuf {
        self.piper_voice
            .clone()
            .unwrap_or_else(|| ModelId::PiperJoe.path(&self.models_dir))
    }

    /// Every file these options need that is not there, with the model that provides it.
    pub fn missing(&self) -> Vec<(PathBuf, Option<ModelId>)> {
        let mut need: Vec<(PathBuf, Option<ModelId>)> = Vec::new();
        let known = |id: ModelId, p: &Path| (p == id.path(&self.models_dir)).then_some(id);
        let whisper = self.whisper_path();
        let whisper_id = known(ModelId::WhisperBase, &whisper)
            .or_else(|| known(ModelId::WhisperTinyEn, &whisper));
        need.push((whisper, whisper_id));
        let onnx = self.tts == TtsChoice::Piper || self.vad == VadChoice::Silero;
        if self.tts == TtsChoice::Piper {
            let voice = self.piper_path();
            let id = known(ModelId::PiperJoe, &voice);
            need.push((PathBuf::from(format!("{}.json", voice.display())), id));
            need.push((voice, id));
        }
        if self.vad == VadChoice::Silero {
            need.push((
                ModelId::SileroVad.path(&self.models_dir),
                Some(ModelId::SileroVad),
            ));
        }
        if onnx {
            let lib = crate::onnx::library_path(&self.models_dir);
            let id = known(ModelId::OnnxRuntime, &lib);
            need.push((lib, id));
        }
        need.retain(|(p, _)| !p.is_file());
        need.sort();
        need.dedup();
        need
    }
}

/// Loads the engines. Any missing model gives one error listing all of them and naming the
/// command that fetches them.
pub fn load(options: &EmbeddedOptions) -> Result<Embedded, EngineError> {
    let missing = options.missing();
    if !missing.is_empty() {
        let list: Vec<String> = missing
            .iter()
            .map(|(p, id)| match id {
                Some(id) => format!("{} ({id})", p.display()),
                None => p.display().to_string(),
            })
            .collect();
        return Err(EngineError::Unavailable(format!(
            "model files missing: {}; run `{FETCH_COMMAND}` to get the defaults into {} \
             (`voxanne models list` says what each one is and where else to get it)",
            list.join(", "),
            options.models_dir.display()
        )));
    }
    let stt = WhisperStt::load(
        &options.whisper_path(),
        WhisperOptions {
            decoders: options.stt_decoders,
            ..WhisperOptions::default()
        },
    )?;
    let tts: Arc<dyn TextToSpeech> = match options.tts {
        TtsChoice::Piper => Arc::new(PiperTts::load(
            &options.piper_path(),
            &options.models_dir,
            options.tts_sessions,
        )?),
        TtsChoice::Festival => Arc::new(FestivalTts::load()?),
    };
    let tts_fallback: Option<Arc<dyn TextToSpeech>> = match options.tts {
        TtsChoice::Festival => None,
        TtsChoice::Piper => match FestivalTts::load() {
            Ok(f) => Some(Arc::new(f)),
            Err(e) => {
                tracing::warn!(error = %e, "no fallback voice: a sentence Piper fails on is not spoken");
                None
            }
        },
    };
    let vad: Arc<dyn Fn() -> Box<dyn VoiceDetector> + Send + Sync> = match options.vad {
        VadChoice::Earshot => Arc::new(|| Box::new(EarshotVad::new())),
        VadChoice::Silero => {
            let model = SileroModel::load(
                &ModelId::SileroVad.path(&options.models_dir),
                &options.models_dir,
            )?;
            Arc::new(move || Box::new(model.detector()))
        }
    };
    Ok(Embedded {
        stt,
        tts,
        tts_fallback,
        vad,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &Path) -> EmbeddedOptions {
        EmbeddedOptions {
            models_dir: dir.to_path_buf(),
            stt_model: "base".into(),
            tts: TtsChoice::Piper,
            piper_voice: None,
            vad: VadChoice::Silero,
            stt_decoders: 1,
            tts_sessions: 1,
        }
    }

    #[test]
    fn every_missing_model_is_listed_in_one_error_naming_the_fetch_command() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path());
        let missing = opts.missing();
        let ids: Vec<Option<ModelId>> = missing.iter().map(|(_, id)| *id).collect();
        for id in [
            ModelId::WhisperBase,
            ModelId::PiperJoe,
            ModelId::SileroVad,
            ModelId::OnnxRuntime,
        ] {
            assert!(ids.contains(&Some(id)), "{id} not reported: {missing:?}");
        }
        let err = load(&opts).unwrap_err().to_string();
        assert!(err.contains(FETCH_COMMAND), "{err}");
        assert!(
            err.contains("ggml-base.bin") && err.contains("silero_vad.onnx"),
            "{err}"
        );
    }

    #[test]
    fn a_user_model_path_is_used_as_is_and_reported_without_a_model_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(dir.path());
        opts.stt_model = "/models/ggml-small.en.bin".into();
        opts.tts = TtsChoice::Festival;
        opts.vad = VadChoice::Earshot;
        assert_eq!(
            opts.missing(),
            vec![(PathBuf::from("/models/ggml-small.en.bin"), None)]
        );
    }
}
