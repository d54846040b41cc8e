//! Converts Whisper weights from CTranslate2 (faster-whisper) format to the ggml file
//! whisper.cpp loads, in Rust, so no Python or numpy is needed on the machine.
//!
//! The ggml file is: magic `ggml`, eleven `i32` hyper-parameters, the mel filter bank
//! (`n_mels × n_fft` f32), the byte-level BPE vocabulary (length-prefixed byte strings in rank
//! order), then the tensors, each `n_dims, name length, type`, dims innermost first, name,
//! data. Tensor names are OpenAI's (`encoder.blocks.0.attn.query.weight`); whisper.cpp finds
//! them by name, so order does not matter. Matrices stay f16, vectors, conv biases and the
//! positional embeddings are f32 — the types whisper.cpp allocates and checks on load.
//!
//! CTranslate2 fuses the attention projections (self-attention Q|K|V, cross-attention K|V,
//! concatenated along the output dimension); they are split here. The key projection has no
//! bias in Whisper (CTranslate2 stores zeros there), so no key bias is written.

use std::collections::HashMap;
use std::io::{self, Read, Write};

use crate::ct2::{DType, Model, Variable};

const GGML_MAGIC: u32 = 0x6767_6d6c;
const GGML_F32: i32 = 0;
const GGML_F16: i32 = 1;

/// Why a conversion failed.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Ct2(#[from] crate::ct2::Ct2Error),
    #[error("not a Whisper model: spec is {0:?}")]
    NotWhisper(String),
    #[error("model is missing variable {0}")]
    Missing(String),
    #[error("variable {name} has shape {shape:?}, expected {expected}")]
    Shape {
        name: String,
        shape: Vec<usize>,
        expected: String,
    },
    #[error("variable {name} is {dtype:?}; only f16/f32 weights can be converted")]
    DType { name: String, dtype: DType },
    #[error("mel filter file: {0}")]
    Mel(String),
    #[error("tokenizer vocabulary: {0}")]
    Vocab(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Whisper's hyper-parameters, read from the weights' shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HParams {
    pub n_vocab: usize,
    pub n_audio_ctx: usize,
    pub n_audio_state: usize,
    pub n_audio_head: usize,
    pub n_audio_layer: usize,
    pub n_text_ctx: usize,
    pub n_text_state: usize,
    pub n_text_head: usize,
    pub n_text_layer: usize,
    pub n_mels: usize,
}

impl HParams {
    /// True for the multilingual vocabulary (51865 tokens and up); English-only models have
    /// 51864.
    pub fn multilingual(&self) -> bool {
        self.n_vocab >= 51865
    }
}

/// The mel filter bank: `n_mels` rows of `n_fft` weights.
#[derive(Debug, Clone)]
pub struct MelFilters {
    pub n_mels: usize,
    pub n_fft: usize,
    pub data: Vec<f32>,
}

fn var<'a>(model: &'a Model, name: &str) -> Result<&'a Variable, ConvertError> {
    model
        .get(name)
        .ok_or_else(|| ConvertError::Missing(name.to_string()))
}

fn count_layers(model: &Model, prefix: &str) -> usize {
    (0..)
        .take_while(|i| {
            model
                .variables
                .contains_key(&format!("{prefix}/layer_{i}/ffn/linear_0/weight"))
        })
        .count()
}

/// Heads per attention layer: CTranslate2 stores it as a scalar; when absent, Whisper's sizes
/// fix it by depth (tiny 6, base 8, small 12, medium 16, large 20).
fn heads(model: &Model, prefix: &str, layers: usize) -> Result<usize, ConvertError> {
    if let Some(v) = model.get(&format!("{prefix}/num_heads"))
        && let Some(n) = v.scalar_int()
    {
        return Ok(n as usize);
    }
    Ok(match layers {
        4 => 6,
        6 => 8,
        12 => 12,
        24 => 16,
        32 => 20,
        _ => return Err(ConvertError::Missing(format!("{prefix}/num_heads"))),
    })
}

/// Reads the hyper-parameters from the model's shapes.
pub fn hparams(model: &Model) -> Result<HParams, ConvertError> {
    if !model.spec.contains("Whisper") {
        return Err(ConvertError::NotWhisper(model.spec.clone()));
    }
    let emb = var(model, "decoder/embeddings/weight")?;
    let enc_pos = var(model, "encoder/position_encodings/encodings")?;
    let dec_pos = var(model, "decoder/position_encodings/encodings")?;
    let conv1 = var(model, "encoder/conv1/weight")?;
    let shape2 = |name: &str, v: &Variable| -> Result<(usize, usize), ConvertError> {
        match v.shape[..] {
            [a, b] => Ok((a, b)),
            _ => Err(ConvertError::Shape {
                name: name.into(),
                shape: v.shape.clone(),
                expected: "2 dimensions".into(),
            }),
        }
    };
    let (n_vocab, n_text_state) = shape2("decoder/embeddings/weight", emb)?;
    let (n_audio_ctx, n_audio_state) = shape2("encoder/position_encodings/encodings", enc_pos)?;
    let (n_text_ctx, _) = shape2("decoder/position_encodings/encodings", dec_pos)?;
    let n_mels = match conv1.shape[..] {
        [_, mels, 3] => mels,
        _ => {
            return Err(ConvertError::Shape {
                name: "encoder/conv1/weight".into(),
                shape: conv1.shape.clone(),
                expected: "[state, mels, 3]".into(),
            });
        }
    };
    let n_audio_layer = count_layers(model, "encoder");
    let n_text_layer = count_layers(model, "decoder");
    Ok(HParams {
        n_vocab,
        n_audio_ctx,
        n_audio_state,
        n_audio_head: heads(model, "encoder", n_audio_layer)?,
        n_audio_layer,
        n_text_ctx,
        n_text_state,
        n_text_head: heads(model, "decoder", n_text_layer)?,
        n_text_layer,
        n_mels,
    })
}

/// Reads `mel_<n>.npy` (little-endian f32, C order, 2-D) out of Whisper's `mel_filters.npz`.
pub fn mel_filters_from_npz(npz: &[u8], n_mels: usize) -> Result<MelFilters, ConvertError> {
    let mut archive = zip::ZipArchive::new(io::Cursor::new(npz))
        .map_err(|e| ConvertError::Mel(format!("not a zip archive: {e}")))?;
    let entry = format!("mel_{n_mels}.npy");
    let mut file = archive
        .by_name(&entry)
        .map_err(|e| ConvertError::Mel(format!("{entry}: {e}")))?;
    let mut npy = Vec::new();
    file.read_to_end(&mut npy)?;
    let (shape, data) = parse_npy_f32(&npy).map_err(ConvertError::Mel)?;
    match shape[..] {
        [rows, cols] if rows == n_mels => Ok(MelFilters {
            n_mels: rows,
            n_fft: cols,
            data,
        }),
        _ => Err(ConvertError::Mel(format!(
            "{entry} has shape {shape:?}, expected [{n_mels}, n_fft]"
        ))),
    }
}

/// A minimal `.npy` reader for little-endian f32 arrays in C order.
fn parse_npy_f32(npy: &[u8]) -> Result<(Vec<usize>, Vec<f32>), String> {
    if npy.len() < 10 || &npy[..6] != b"\x93NUMPY" {
        return Err("not an .npy file".into());
    }
    let (header_len, start) = match npy[6] {
        1 => (u16::from_le_bytes([npy[8], npy[9]]) as usize, 10),
        2 | 3 if npy.len() >= 12 => (
            u32::from_le_bytes([npy[8], npy[9], npy[10], npy[11]]) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = npy
        .get(start..start + header_len)
        .ok_or("truncated .npy header")?;
    let header = std::str::from_utf8(header).map_err(|_| "header is not text")?;
    if !header.contains("'descr': '<f4'") {
        return Err(format!("only little-endian f32 is supported: {header}"));
    }
    if header.contains("'fortran_order': True") {
        return Err("Fortran-order arrays are not supported".into());
    }
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or("no shape in header")?;
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| format!("bad dimension {s:?}")))
        .collect::<Result<_, _>>()?;
    let body = &npy[start + header_len..];
    let n: usize = shape.iter().product();
    if body.len() != n * 4 {
        return Err(format!(
            "{} data bytes for shape {shape:?} ({n} f32)",
            body.len()
        ));
    }
    let data = body
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((shape, data))
}

/// Reads a tiktoken vocabulary (`<base64 token> <rank>` per line) into tokens in rank order.
pub fn tiktoken_vocab(text: &str) -> Result<Vec<Vec<u8>>, ConvertError> {
    use base64::Engine as _;
    let mut ranked: Vec<(usize, Vec<u8>)> = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let mut parts = line.split_whitespace();
        let (Some(tok), Some(rank), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ConvertError::Vocab(format!("line {}: {line:?}", i + 1)));
        };
        // multilingual.tiktoken has one token written as a bare "=": the empty byte string
        // (Python's lenient base64 decoder reads it that way).
        let bytes = if tok.trim_end_matches('=').is_empty() {
            Vec::new()
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(tok)
                .map_err(|e| ConvertError::Vocab(format!("line {}: {e}", i + 1)))?
        };
        let rank: usize = rank
            .parse()
            .map_err(|_| ConvertError::Vocab(format!("line {}: bad rank {rank:?}", i + 1)))?;
        ranked.push((rank, bytes));
    }
    ranked.sort_by_key(|(r, _)| *r);
    for (expected, (rank, _)) in ranked.iter().enumerate() {
        if *rank != expected {
            return Err(ConvertError::Vocab(format!(
                "ranks are not 0..n: found {rank} where {expected} was expected"
            )));
        }
    }
    Ok(ranked.into_iter().map(|(_, b)| b).collect())
}

/// f16 bits to f32, exact (subnormals, infinities and NaN included).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: value = frac × 2^-24.
            let v = frac as f32 * f32::from_bits(0x3380_0000);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, _) => sign | 0x7f80_0000 | (frac << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

/// A tensor to write: its ggml name, shape (outermost first) and element bytes.
struct Tensor {
    name: String,
    shape: Vec<usize>,
    ggml_type: i32,
    data: Vec<u8>,
}

/// Converts `v` (or the row range `rows` of it, for a fused projection) to a tensor of the
/// given ggml type.
fn tensor(
    name: String,
    source: &str,
    v: &Variable,
    rows: Option<(usize, usize)>,
    shape: Option<Vec<usize>>,
    ggml_type: i32,
) -> Result<Tensor, ConvertError> {
    let elem = v.dtype.size();
    let (data, mut out_shape) = match rows {
        None => (&v.data[..], v.shape.clone()),
        Some((start, count)) => {
            let row_len: usize = v.shape[1..].iter().product();
            let total_rows = v.shape[0];
            if start + count > total_rows {
                return Err(ConvertError::Shape {
                    name: source.into(),
                    shape: v.shape.clone(),
                    expected: format!("at least {} rows", start + count),
                });
            }
            let mut s = v.shape.clone();
            s[0] = count;
            (
                &v.data[start * row_len * elem..(start + count) * row_len * elem],
                s,
            )
        }
    };
    if let Some(shape) = shape {
        out_shape = shape;
    }
    let data = match (v.dtype, ggml_type) {
        (DType::F16, GGML_F16) | (DType::F32, GGML_F32) => data.to_vec(),
        (DType::F16, GGML_F32) => data
            .chunks_exact(2)
            .flat_map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])).to_le_bytes())
            .collect(),
        (DType::F32, GGML_F16) => {
            // whisper.cpp accepts f32 matrices only from an all-f32 file; keep f32 and let
            // the caller pick the file type. Not reached for the fp16 models fetched here.
            return Err(ConvertError::DType {
                name: source.into(),
                dtype: v.dtype,
            });
        }
        (dtype, _) => {
            return Err(ConvertError::DType {
                name: source.into(),
                dtype,
            });
        }
    };
    Ok(Tensor {
        name,
        shape: out_shape,
        ggml_type,
        data,
    })
}

/// All tensors of the ggml file, in OpenAI's names, from the CTranslate2 variables.
fn tensors(model: &Model, hp: &HParams) -> Result<Vec<Tensor>, ConvertError> {
    // Matrices keep the model's own precision; whisper.cpp wants one type for them.
    let matrix_type = match var(model, "decoder/embeddings/weight")?.dtype {
        DType::F16 => GGML_F16,
        _ => GGML_F32,
    };
    let mut out = Vec::new();
    let mut add = |name: &str,
                   source: &str,
                   rows: Option<(usize, usize)>,
                   shape: Option<Vec<usize>>,
                   matrix: bool|
     -> Result<(), ConvertError> {
        let v = var(model, source)?;
        let t = if matrix { matrix_type } else { GGML_F32 };
        out.push(tensor(name.to_string(), source, v, rows, shape, t)?);
        Ok(())
    };

    let d = hp.n_audio_state;
    add(
        "encoder.conv1.weight",
        "encoder/conv1/weight",
        None,
        None,
        true,
    )?;
    add(
        "encoder.conv1.bias",
        "encoder/conv1/bias",
        None,
        Some(vec![d, 1]),
        false,
    )?;
    add(
        "encoder.conv2.weight",
        "encoder/conv2/weight",
        None,
        None,
        true,
    )?;
    add(
        "encoder.conv2.bias",
        "encoder/conv2/bias",
        None,
        Some(vec![d, 1]),
        false,
    )?;
    add(
        "encoder.positional_embedding",
        "encoder/position_encodings/encodings",
        None,
        None,
        false,
    )?;
    add(
        "encoder.ln_post.weight",
        "encoder/layer_norm/gamma",
        None,
        None,
        false,
    )?;
    add(
        "encoder.ln_post.bias",
        "encoder/layer_norm/beta",
        None,
        None,
        false,
    )?;

    let dt = hp.n_text_state;
    add(
        "decoder.token_embedding.weight",
        "decoder/embeddings/weight",
        None,
        None,
        true,
    )?;
    add(
        "decoder.positional_embedding",
        "decoder/position_encodings/encodings",
        None,
        None,
        false,
    )?;
    add(
        "decoder.ln.weight",
        "decoder/layer_norm/gamma",
        None,
        None,
        false,
    )?;
    add(
        "decoder.ln.bias",
        "decoder/layer_norm/beta",
        None,
        None,
        false,
    )?;

    for (side, layers, width) in [
        ("encoder", hp.n_audio_layer, d),
        ("decoder", hp.n_text_layer, dt),
    ] {
        for i in 0..layers {
            let src = |rest: &str| format!("{side}/layer_{i}/{rest}");
            let dst = |rest: &str| format!("{side}.blocks.{i}.{rest}");
            // Self-attention: fused Q|K|V.
            add(
                &dst("attn_ln.weight"),
                &src("self_attention/layer_norm/gamma"),
                None,
                None,
                false,
            )?;
            add(
                &dst("attn_ln.bias"),
                &src("self_attention/layer_norm/beta"),
                None,
                None,
                false,
            )?;
            let qkv_w = src("self_attention/linear_0/weight");
            let qkv_b = src("self_attention/linear_0/bias");
            add(
                &dst("attn.query.weight"),
                &qkv_w,
                Some((0, width)),
                None,
                true,
            )?;
            add(
                &dst("attn.query.bias"),
                &qkv_b,
                Some((0, width)),
                None,
                false,
            )?;
            add(
                &dst("attn.key.weight"),
                &qkv_w,
                Some((width, width)),
                None,
                true,
            )?;
            add(
                &dst("attn.value.weight"),
                &qkv_w,
                Some((2 * width, width)),
                None,
                true,
            )?;
            add(
                &dst("attn.value.bias"),
                &qkv_b,
                Some((2 * width, width)),
                None,
                false,
            )?;
            add(
                &dst("attn.out.weight"),
                &src("self_attention/linear_1/weight"),
                None,
                None,
                true,
            )?;
            add(
                &dst("attn.out.bias"),
                &src("self_attention/linear_1/bias"),
                None,
                None,
                false,
            )?;
            if side == "decoder" {
                // Cross-attention: Q, then fused K|V, then out.
                add(
                    &dst("cross_attn_ln.weight"),
                    &src("attention/layer_norm/gamma"),
                    None,
                    None,
                    false,
                )?;
                add(
                    &dst("cross_attn_ln.bias"),
                    &src("attention/layer_norm/beta"),
                    None,
                    None,
                    false,
                )?;
                add(
                    &dst("cross_attn.query.weight"),
                    &src("attention/linear_0/weight"),
                    None,
                    None,
                    true,
                )?;
                add(
                    &dst("cross_attn.query.bias"),
                    &src("attention/linear_0/bias"),
                    None,
                    None,
                    false,
                )?;
                let kv_w = src("attention/linear_1/weight");
                let kv_b = src("attention/linear_1/bias");
                add(
                    &dst("cross_attn.key.weight"),
                    &kv_w,
                    Some((0, width)),
                    None,
                    true,
                )?;
                add(
                    &dst("cross_attn.value.weight"),
                    &kv_w,
                    Some((width, width)),
                    None,
                    true,
                )?;
                add(
                    &dst("cross_attn.value.bias"),
                    &kv_b,
                    Some((width, width)),
                    None,
                    false,
                )?;
                add(
                    &dst("cross_attn.out.weight"),
                    &src("attention/linear_2/weight"),
                    None,
                    None,
                    true,
                )?;
                add(
                    &dst("cross_attn.out.bias"),
                    &src("attention/linear_2/bias"),
                    None,
                    None,
                    false,
                )?;
            }
            add(
                &dst("mlp_ln.weight"),
                &src("ffn/layer_norm/gamma"),
                None,
                None,
                false,
            )?;
            add(
                &dst("mlp_ln.bias"),
                &src("ffn/layer_norm/beta"),
                None,
                None,
                false,
            )?;
            add(
                &dst("mlp.0.weight"),
                &src("ffn/linear_0/weight"),
                None,
                None,
                true,
            )?;
            add(
                &dst("mlp.0.bias"),
                &src("ffn/linear_0/bias"),
                None,
                None,
                false,
            )?;
            add(
                &dst("mlp.2.weight"),
                &src("ffn/linear_1/weight"),
                None,
                None,
                true,
            )?;
            add(
                &dst("mlp.2.bias"),
                &src("ffn/linear_1/bias"),
                None,
                None,
                false,
            )?;
        }
    }
    Ok(out)
}

/// Writes the whisper.cpp ggml model for a CTranslate2 Whisper `model`.
pub fn write_ggml(
    model: &Model,
    mel: &MelFilters,
    vocab: &[Vec<u8>],
    out: &mut impl Write,
) -> Result<HParams, ConvertError> {
    let hp = hparams(model)?;
    if mel.n_mels != hp.n_mels {
        return Err(ConvertError::Mel(format!(
            "filters have {} mels, model wants {}",
            mel.n_mels, hp.n_mels
        )));
    }
    if vocab.len() > hp.n_vocab {
        return Err(ConvertError::Vocab(format!(
            "{} tokens, more than the model's {}",
            vocab.len(),
            hp.n_vocab
        )));
    }
    let tensors = tensors(model, &hp)?;
    let matrix_type = tensors
        .iter()
        .find(|t| t.name == "decoder.token_embedding.weight")
        .map_or(GGML_F16, |t| t.ggml_type);

    let i32le = |out: &mut dyn Write, v: usize| out.write_all(&(v as i32).to_le_bytes());
    out.write_all(&GGML_MAGIC.to_le_bytes())?;
    for v in [
        hp.n_vocab,
        hp.n_audio_ctx,
        hp.n_audio_state,
        hp.n_audio_head,
        hp.n_audio_layer,
        hp.n_text_ctx,
        hp.n_text_state,
        hp.n_text_head,
        hp.n_text_layer,
        hp.n_mels,
    ] {
        i32le(out, v)?;
    }
    out.write_all(&matrix_type.to_le_bytes())?;
    i32le(out, mel.n_mels)?;
    i32le(out, mel.n_fft)?;
    for v in &mel.data {
        out.write_all(&v.to_le_bytes())?;
    }
    i32le(out, vocab.len())?;
    for token in vocab {
        i32le(out, token.len())?;
        out.write_all(token)?;
    }
    for t in &tensors {
        out.write_all(&(t.shape.len() as i32).to_le_bytes())?;
        out.write_all(&(t.name.len() as i32).to_le_bytes())?;
        out.write_all(&t.ggml_type.to_le_bytes())?;
        for &dim in t.shape.iter().rev() {
            i32le(out, dim)?;
        }
        out.write_all(t.name.as_bytes())?;
        out.write_all(&t.data)?;
    }
    Ok(hp)
}

/// Tensor names and shapes the converter writes, for tests and diagnostics.
pub fn tensor_shapes(model: &Model) -> Result<HashMap<String, Vec<usize>>, ConvertError> {
    let hp = hparams(model)?;
    Ok(tensors(model, &hp)?
        .into_iter()
        .map(|t| (t.name, t.shape))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny fake Whisper in CTranslate2's layout: width 4, 1 + 1 layers, 3 mels, vocab 5.
    fn tiny_model() -> Model {
        let d = 4;
        let mut m = Model {
            version: 6,
            spec: "WhisperSpec".into(),
            revision: 3,
            ..Model::default()
        };
        // Each matrix row r holds f16 values whose bits encode (tag, r): easy to trace.
        let mut counter = 0u16;
        let mut put = |m: &mut Model, name: &str, shape: Vec<usize>| {
            let n: usize = shape.iter().product();
            let mut data = Vec::with_capacity(n * 2);
            for _ in 0..n {
                counter += 1;
                data.extend_from_slice(&(0x3c00u16 + counter).to_le_bytes());
            }
            m.variables.insert(
                name.into(),
                Variable {
                    dtype: DType::F16,
                    shape,
                    data,
                },
            );
        };
        put(&mut m, "encoder/conv1/weight", vec![d, 3, 3]);
        put(&mut m, "encoder/conv1/bias", vec![d]);
        put(&mut m, "encoder/conv2/weight", vec![d, d, 3]);
        put(&mut m, "encoder/conv2/bias", vec![d]);
        put(&mut m, "encoder/position_encodings/encodings", vec![6, d]);
        put(&mut m, "encoder/layer_norm/gamma", vec![d]);
        put(&mut m, "encoder/layer_norm/beta", vec![d]);
        put(&mut m, "decoder/embeddings/weight", vec![5, d]);
        put(&mut m, "decoder/position_encodings/encodings", vec![7, d]);
        put(&mut m, "decoder/layer_norm/gamma", vec![d]);
        put(&mut m, "decoder/layer_norm/beta", vec![d]);
        for side in ["encoder", "decoder"] {
            let l = format!("{side}/layer_0");
            for ln in ["self_attention/layer_norm", "ffn/layer_norm"] {
                put(&mut m, &format!("{l}/{ln}/gamma"), vec![d]);
                put(&mut m, &format!("{l}/{ln}/beta"), vec![d]);
            }
            put(
                &mut m,
                &format!("{l}/self_attention/linear_0/weight"),
                vec![3 * d, d],
            );
            put(
                &mut m,
                &format!("{l}/self_attention/linear_0/bias"),
                vec![3 * d],
            );
            put(
                &mut m,
                &format!("{l}/self_attention/linear_1/weight"),
                vec![d, d],
            );
            put(
                &mut m,
                &format!("{l}/self_attention/linear_1/bias"),
                vec![d],
            );
            put(&mut m, &format!("{l}/ffn/linear_0/weight"), vec![2 * d, d]);
            put(&mut m, &format!("{l}/ffn/linear_0/bias"), vec![2 * d]);
            put(&mut m, &format!("{l}/ffn/linear_1/weight"), vec![d, 2 * d]);
            put(&mut m, &format!("{l}/ffn/linear_1/bias"), vec![d]);
        }
        let l = "decoder/layer_0/attention";
        put(&mut m, &format!("{l}/layer_norm/gamma"), vec![d]);
        put(&mut m, &format!("{l}/layer_norm/beta"), vec![d]);
        put(&mut m, &format!("{l}/linear_0/weight"), vec![d, d]);
        put(&mut m, &format!("{l}/linear_0/bias"), vec![d]);
        put(&mut m, &format!("{l}/linear_1/weight"), vec![2 * d, d]);
        put(&mut m, &format!("{l}/linear_1/bias"), vec![2 * d]);
        put(&mut m, &format!("{l}/linear_2/weight"), vec![d, d]);
        put(&mut m, &format!("{l}/linear_2/bias"), vec![d]);
        for side in ["encoder", "decoder"] {
            m.variables.insert(
                format!("{side}/num_heads"),
                Variable {
                    dtype: DType::I16,
                    shape: vec![],
                    data: 2i16.to_le_bytes().to_vec(),
                },
            );
        }
        m
    }

    fn read_i32(b: &[u8], at: &mut usize) -> i32 {
        let v = i32::from_le_bytes(b[*at..*at + 4].try_into().unwrap());
        *at += 4;
        v
    }

    #[test]
    fn converts_a_ct2_whisper_to_the_ggml_layout_whisper_cpp_reads() {
        let model = tiny_model();
        let mel = MelFilters {
            n_mels: 3,
            n_fft: 2,
            data: vec![0.5; 6],
        };
        let vocab = vec![b"a".to_vec(), b"bc".to_vec(), Vec::new()];
        let mut out = Vec::new();
        let hp = write_ggml(&model, &mel, &vocab, &mut out).unwrap();
        assert_eq!(
            (
                hp.n_vocab,
                hp.n_audio_ctx,
                hp.n_audio_state,
                hp.n_audio_head
            ),
            (5, 6, 4, 2)
        );
        assert_eq!(
            (hp.n_text_ctx, hp.n_text_head, hp.n_text_layer, hp.n_mels),
            (7, 2, 1, 3)
        );

        // Header: magic, 10 hyper-parameters, ftype, mel filters, vocab.
        let mut at = 0;
        assert_eq!(read_i32(&out, &mut at) as u32, GGML_MAGIC);
        let header: Vec<i32> = (0..11).map(|_| read_i32(&out, &mut at)).collect();
        assert_eq!(header, vec![5, 6, 4, 2, 1, 7, 4, 2, 1, 3, 1]);
        assert_eq!((read_i32(&out, &mut at), read_i32(&out, &mut at)), (3, 2));
        at += 6 * 4;
        assert_eq!(read_i32(&out, &mut at), 3);
        for token in &vocab {
            assert_eq!(read_i32(&out, &mut at) as usize, token.len());
            assert_eq!(&out[at..at + token.len()], &token[..]);
            at += token.len();
        }

        // Tensors: read them all back.
        let mut tensors = HashMap::new();
        while at < out.len() {
            let n_dims = read_i32(&out, &mut at) as usize;
            let name_len = read_i32(&out, &mut at) as usize;
            let ty = read_i32(&out, &mut at);
            let dims: Vec<usize> = (0..n_dims)
                .map(|_| read_i32(&out, &mut at) as usize)
                .collect();
            let name = String::from_utf8(out[at..at + name_len].to_vec()).unwrap();
            at += name_len;
            let n: usize = dims.iter().product();
            let size = if ty == GGML_F16 { 2 } else { 4 };
            tensors.insert(name, (dims, ty, out[at..at + n * size].to_vec()));
            at += n * size;
        }
        assert_eq!(at, out.len(), "no trailing bytes");
        // 7 encoder globals + 4 decoder globals + 15 per encoder layer + 24 per decoder layer.
        assert_eq!(tensors.len(), 7 + 4 + 15 + 24);
        assert!(!tensors.contains_key("encoder.blocks.0.attn.key.bias"));
        assert!(!tensors.contains_key("decoder.blocks.0.cross_attn.key.bias"));

        // Dims are written innermost first; matrices stay f16, vectors become f32.
        let (dims, ty, _) = &tensors["encoder.conv1.weight"];
        assert_eq!((dims.clone(), *ty), (vec![3, 3, 4], GGML_F16));
        let (dims, ty, _) = &tensors["encoder.conv1.bias"];
        assert_eq!((dims.clone(), *ty), (vec![1, 4], GGML_F32));
        let (dims, ty, _) = &tensors["decoder.positional_embedding"];
        assert_eq!((dims.clone(), *ty), (vec![4, 7], GGML_F32));

        // The fused Q|K|V matrix is split by rows: K is rows 4..8, V rows 8..12.
        let fused = &model.variables["encoder/layer_0/self_attention/linear_0/weight"].data;
        let row_bytes = 4 * 2;
        let (_, _, k) = &tensors["encoder.blocks.0.attn.key.weight"];
        assert_eq!(&k[..], &fused[4 * row_bytes..8 * row_bytes]);
        let (_, _, v) = &tensors["encoder.blocks.0.attn.value.weight"];
        assert_eq!(&v[..], &fused[8 * row_bytes..12 * row_bytes]);
        // …and the value bias (f16 → f32) is the third part of the fused bias.
        let fused_bias = &model.variables["encoder/layer_0/self_attention/linear_0/bias"].data;
        let (_, _, vb) = &tensors["encoder.blocks.0.attn.value.bias"];
        let expected: Vec<u8> = fused_bias[8 * 2..12 * 2]
            .chunks_exact(2)
            .flat_map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])).to_le_bytes())
            .collect();
        assert_eq!(vb, &expected);
        // Cross-attention K|V: K the first half, V the second.
        let kv = &model.variables["decoder/layer_0/attention/linear_1/weight"].data;
        let (_, _, ck) = &tensors["decoder.blocks.0.cross_attn.key.weight"];
        assert_eq!(&ck[..], &kv[..4 * row_bytes]);
        let (_, _, cv) = &tensors["decoder.blocks.0.cross_attn.value.weight"];
        assert_eq!(&cv[..], &kv[4 * row_bytes..]);
    }

    #[test]
    fn a_missing_variable_is_named() {
        let mut model = tiny_model();
        model
            .variables
            .remove("decoder/layer_0/attention/linear_2/bias");
        let mel = MelFilters {
            n_mels: 3,
            n_fft: 2,
            data: vec![0.0; 6],
        };
        let err = write_ggml(&model, &mel, &[], &mut Vec::new()).unwrap_err();
        assert!(
            err.to_string()
                .contains("decoder/layer_0/attention/linear_2/bias"),
            "{err}"
        );
    }

    #[test]
    fn f16_conversion_is_exact() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
    }

    #[test]
    fn npy_reader_reads_shape_and_data_and_rejects_the_rest() {
        let npy_with = |descr: &str| {
            let header =
                format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (2, 3), }}");
            let mut npy = b"\x93NUMPY\x01\x00".to_vec();
            npy.extend_from_slice(&(header.len() as u16).to_le_bytes());
            npy.extend_from_slice(header.as_bytes());
            for v in 0..6 {
                npy.extend_from_slice(&(v as f32).to_le_bytes());
            }
            npy
        };
        let npy = npy_with("<f4");
        let (shape, data) = parse_npy_f32(&npy).unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(data, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert!(parse_npy_f32(&npy[..npy.len() - 1]).is_err());
        assert!(parse_npy_f32(b"not numpy at all").is_err());
        let err = parse_npy_f32(&npy_with(">f4")).unwrap_err();
        assert!(err.contains("little-endian f32"), "{err}");
    }

    #[test]
    fn tiktoken_vocab_is_rank_ordered_and_validated() {
        // "IQ==" is "!", "Ig==" is "\"".
        let v = tiktoken_vocab("Ig== 1\nIQ== 0\n= 2\n\n").unwrap();
        assert_eq!(v, vec![b"!".to_vec(), b"\"".to_vec(), Vec::new()]);
        assert!(tiktoken_vocab("IQ== 0\nIg== 2\n").is_err());
        assert!(tiktoken_vocab("IQ== zero\n").is_err());
        assert!(tiktoken_vocab("@@@ 0\n").is_err());
    }
}
