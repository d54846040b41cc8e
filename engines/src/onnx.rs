//! The ONNX Runtime shared library, loaded once per process for Piper and Silero.
//!
//! `ort` is built with `load-dynamic`: nothing is downloaded at build time, and the library
//! (`libonnxruntime.so` 1.21 or later; built against API 21 because `api-22` makes ort ask 1.22 to pick a device automatically, which aborts) is found at run time — `ORT_DYLIB_PATH` if set,
//! otherwise `<models>/onnxruntime/libonnxruntime.so` as `voxanne models fetch` installs it.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use agent::engine::EngineError;

use crate::models::{FETCH_COMMAND, ModelId};

static ENVIRONMENT: OnceLock<ort::environment::Environment> = OnceLock::new();
static INIT: Mutex<Option<Result<PathBuf, String>>> = Mutex::new(None);

/// Where the ONNX Runtime library is looked for.
pub fn library_path(models_dir: &Path) -> PathBuf {
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => ModelId::OnnxRuntime.path(models_dir),
    }
}

/// Loads ONNX Runtime once; later calls return the first outcome.
pub fn init(models_dir: &Path) -> Result<PathBuf, EngineError> {
    let mut state = INIT
        .lock()
        .map_err(|_| EngineError::Failed("onnx init poisoned".into()))?;
    if let Some(done) = state.as_ref() {
        return done.clone().map_err(EngineError::Unavailable);
    }
    let path = library_path(models_dir);
    let outcome = load(&path).map(|()| path);
    *state = Some(outcome.clone());
    outcome.map_err(EngineError::Unavailable)
}

fn load(path: &Path) -> Result<(), String> {
    if !path.is_file() {
        return Err(format!(
            "ONNX Runtime library {} not found; run `{FETCH_COMMAND}` (or set ORT_DYLIB_PATH to {})",
            path.display(),
            ModelId::OnnxRuntime.elsewhere()
        ));
    }
    let builder = ort::init_from(path).map_err(|e| format!("ONNX Runtime: {e}"))?;
    let env = builder
        .with_name("voxanne")
        .with_telemetry(false)
        .build()
        .map_err(|e| format!("ONNX Runtime environment: {e}"))?;
    let _ = ENVIRONMENT.set(env);
    tracing::info!(library = %path.display(), "onnx runtime loaded");
    Ok(())
}

/// A session on one intra-op thread (sessions run in parallel across calls, not within one).
pub fn session(model: &Path) -> Result<ort::session::Session, EngineError> {
    let fail = |e: ort::Error| {
        EngineError::Unavailable(format!("cannot load ONNX model {}: {e}", model.display()))
    };
    let env = ENVIRONMENT.get().ok_or_else(|| {
        EngineError::Unavailable("ONNX Runtime is not loaded (onnx::init first)".into())
    })?;
    ort::session::Session::builder(env)
        .map_err(fail)?
        .with_intra_threads(1)
        .map_err(|e| fail(e.into()))?
        .with_inter_threads(1)
        .map_err(|e| fail(e.into()))?
        .commit_from_file(model)
        .map_err(fail)
}
