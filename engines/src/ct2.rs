//! Reader for CTranslate2 `model.bin` files (the format faster-whisper ships Whisper in).
//!
//! Layout, all little-endian: `u32` version (≥ 5), spec name, `u32` revision, `u32` variable
//! count, then per variable: name, `u8` rank, `rank × u32` dims, `u8` dtype, `u32` byte count,
//! raw data; then `u32` alias count and `(alias, target)` name pairs. Names are a `u16` byte
//! length followed by the bytes (CTranslate2 writes a trailing NUL, which is stripped here).

use std::collections::HashMap;

/// Element type of a stored variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    I8,
    I16,
    I32,
    F16,
}

impl DType {
    fn from_code(code: u8) -> Option<DType> {
        Some(match code {
            0 => DType::F32,
            1 => DType::I8,
            2 => DType::I16,
            3 => DType::I32,
            4 => DType::F16,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::I8 => 1,
            DType::I16 | DType::F16 => 2,
            DType::F32 | DType::I32 => 4,
        }
    }
}

/// One variable: its shape (outermost first, as stored) and raw little-endian data.
#[derive(Debug, Clone)]
pub struct Variable {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl Variable {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True for a variable with no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of an integer scalar (CTranslate2 stores spec attributes such as `num_heads`
    /// this way).
    pub fn scalar_int(&self) -> Option<i64> {
        if self.len() != 1 {
            return None;
        }
        let d = &self.data;
        Some(match self.dtype {
            DType::I8 => d[0] as i8 as i64,
            DType::I16 => i16::from_le_bytes([d[0], d[1]]) as i64,
            DType::I32 => i32::from_le_bytes([d[0], d[1], d[2], d[3]]) as i64,
            DType::F32 | DType::F16 => return None,
        })
    }
}

/// A parsed model: variables by name, aliases resolved on lookup.
#[derive(Debug, Default)]
pub struct Model {
    pub version: u32,
    pub spec: String,
    pub revision: u32,
    pub variables: HashMap<String, Variable>,
    pub aliases: HashMap<String, String>,
}

/// Why a `model.bin` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Ct2Error {
    #[error("truncated CTranslate2 model: needed {needed} bytes at offset {offset}")]
    Truncated { offset: usize, needed: usize },
    #[error("unsupported CTranslate2 model version {0} (need 5 or later)")]
    Version(u32),
    #[error("variable {name}: unknown dtype code {code}")]
    DType { name: String, code: u8 },
    #[error("variable {name}: {bytes} bytes do not hold {elements} elements of {dtype:?}")]
    Size {
        name: String,
        bytes: usize,
        elements: usize,
        dtype: DType,
    },
    #[error("name is not UTF-8 at offset {0}")]
    Name(usize),
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Ct2Error> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(Ct2Error::Truncated {
                offset: self.pos,
                needed: n,
            });
        };
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, Ct2Error> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Ct2Error> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, Ct2Error> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn name(&mut self) -> Result<String, Ct2Error> {
        let at = self.pos;
        let len = self.u16()? as usize;
        let raw = self.take(len)?;
        let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
        String::from_utf8(raw.to_vec()).map_err(|_| Ct2Error::Name(at))
    }
}

impl Model {
    /// Parses a whole `model.bin` held in memory.
    pub fn parse(buf: &[u8]) -> Result<Model, Ct2Error> {
        let mut c = Cursor { buf, pos: 0 };
        let version = c.u32()?;
        if version < 5 {
            return Err(Ct2Error::Version(version));
        }
        let spec = c.name()?;
        let revision = c.u32()?;
        let count = c.u32()? as usize;
        let mut variables = HashMap::with_capacity(count);
        for _ in 0..count {
            let name = c.name()?;
            let rank = c.u8()? as usize;
            let mut shape = Vec::with_capacity(rank);
            for _ in 0..rank {
                shape.push(c.u32()? as usize);
            }
            let code = c.u8()?;
            let dtype = DType::from_code(code).ok_or_else(|| Ct2Error::DType {
                name: name.clone(),
                code,
            })?;
            let bytes = c.u32()? as usize;
            let elements: usize = shape.iter().product();
            if elements * dtype.size() != bytes {
                return Err(Ct2Error::Size {
                    name,
                    bytes,
                    elements,
                    dtype,
                });
            }
            let data = c.take(bytes)?.to_vec();
            variables.insert(name, Variable { dtype, shape, data });
        }
        let mut aliases = HashMap::new();
        // Alias table is optional in the oldest supported version.
        if c.pos < buf.len() {
            let n = c.u32()? as usize;
            for _ in 0..n {
                let alias = c.name()?;
                let target = c.name()?;
                aliases.insert(alias, target);
            }
        }
        Ok(Model {
            version,
            spec,
            revision,
            variables,
            aliases,
        })
    }

    /// A variable by name, following one alias if needed.
    pub fn get(&self, name: &str) -> Option<&Variable> {
        self.variables.get(name).or_else(|| {
            self.aliases
                .get(name)
                .and_then(|target| self.variables.get(target))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    fn sample() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&6u32.to_le_bytes());
        name(&mut b, "WhisperSpec");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes());
        // a 2x2 f32 matrix
        name(&mut b, "encoder/w");
        b.push(2);
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes());
        b.push(0);
        b.extend_from_slice(&16u32.to_le_bytes());
        for v in [1.0f32, 2.0, 3.0, 4.0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        // an i16 scalar
        name(&mut b, "encoder/num_heads");
        b.push(0);
        b.push(2);
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&8i16.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        name(&mut b, "decoder/w");
        name(&mut b, "encoder/w");
        b
    }

    #[test]
    fn parses_variables_scalars_and_aliases() {
        let m = Model::parse(&sample()).unwrap();
        assert_eq!(m.version, 6);
        assert_eq!(m.spec, "WhisperSpec");
        assert_eq!(m.revision, 3);
        let w = m.get("encoder/w").unwrap();
        assert_eq!(w.shape, vec![2, 2]);
        assert_eq!(w.dtype, DType::F32);
        assert_eq!(m.get("encoder/num_heads").unwrap().scalar_int(), Some(8));
        assert_eq!(m.get("decoder/w").unwrap().data, w.data);
        assert!(m.get("missing").is_none());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let full = sample();
        // The alias table (count + one pair of 12-byte names) is optional: a file cut exactly
        // before it is a valid model without aliases; every other cut is an error.
        let without_aliases = full.len() - 4 - 2 * 12;
        for cut in 0..full.len() {
            let r = Model::parse(&full[..cut]);
            assert_eq!(r.is_ok(), cut == without_aliases, "cut at {cut}");
        }
    }

    #[test]
    fn rejects_old_versions_and_bad_sizes() {
        let mut b = sample();
        b[0] = 4;
        assert!(matches!(Model::parse(&b), Err(Ct2Error::Version(4))));
        let mut b = sample();
        // byte count of the first variable: after header (4 + 2+12 + 4 + 4), name (2+10),
        // rank (1), dims (8), dtype (1).
        let at = 4 + 14 + 4 + 4 + 12 + 1 + 8 + 1;
        b[at] = 15;
        assert!(matches!(Model::parse(&b), Err(Ct2Error::Size { .. })));
    }
}
