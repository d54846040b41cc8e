//! G.711 μ-law, the codec of the telephone leg (Twilio Media Streams send and expect 8 kHz μ-law).
//!
//! Bit-exact to the ITU-T G.191 reference implementation (`g711.c`, `ulaw_compress` /
//! `ulaw_expand`) on all 65536 inputs and all 256 codes:
//! - the encoder is the classic "bias 0x84, clip 32635" encoder, except that a negative sample is
//!   replaced by its one's complement (`!s`, i.e. `-s - 1`) rather than its negation. That is what
//!   G.191 does; negating instead differs from G.191 by one quantisation step on 127 inputs.
//! - the decoder is the standard expansion, shared by every common implementation (G.191, sox,
//!   ffmpeg, Python's `audioop`); it is a 256-entry table computed at compile time.
//!
//! The slice APIs write into a caller-owned `Vec` that is cleared first, so a buffer reused from
//! frame to frame never reallocates once it has grown to the frame size.

/// The μ-law code of digital silence (linear 0): what to send when there is nothing to say.
pub const SILENCE: u8 = 0xFF;

/// Added to the magnitude before segment search, so that every segment boundary falls on a power
/// of two (G.711: 33 × 4 = 132, the linear value of the first segment's end in 14-bit units × 4).
const BIAS: i32 = 0x84;

/// Largest magnitude that still encodes without overflowing the top segment once [`BIAS`] is
/// added: 32635 + 132 = 32767 = `i16::MAX`. Larger magnitudes clip to the top code.
const CLIP: i32 = 32_635;

/// Decoded value of every code, computed at compile time by [`expand`].
static DECODE_TABLE: [i16; 256] = {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = expand(code as u8);
        code += 1;
    }
    table
};

/// μ-law expansion of one code (ITU-T G.711 table 2a), used to build [`DECODE_TABLE`].
const fn expand(code: u8) -> i16 {
    let u = !code;
    let exponent = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Encodes one 16-bit linear sample to its μ-law code (G.191-exact).
#[inline]
pub fn encode(sample: i16) -> u8 {
    let s = i32::from(sample);
    // Sign bit set for negative samples; the final inversion clears it (0x00..=0x7F are negative).
    let (sign, magnitude) = if s < 0 { (0x80, !s) } else { (0x00, s) };
    let biased = magnitude.min(CLIP) + BIAS;
    // `biased` is in 132..=32767, so its top set bit is bit 7..=14: that is the segment, 0..=7.
    let exponent = (31 - (biased as u32).leading_zeros() - 7) as i32;
    let mantissa = (biased >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// Decodes one μ-law code to 16-bit linear.
#[inline]
pub fn decode(code: u8) -> i16 {
    DECODE_TABLE[usize::from(code)]
}

/// Decodes `codes` into `out`, which is cleared first (its capacity is reused).
pub fn decode_into(codes: &[u8], out: &mut Vec<i16>) {
    out.clear();
    out.extend(codes.iter().map(|&c| decode(c)));
}

/// Encodes `samples` into `out`, which is cleared first (its capacity is reused).
pub fn encode_into(samples: &[i16], out: &mut Vec<u8>) {
    out.clear();
    out.extend(samples.iter().map(|&s| encode(s)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::PathBuf;

    /// Quantisation step of the segment `code` belongs to: 8 in segment 0, doubling per segment.
    fn step(code: u8) -> i32 {
        let exponent = i32::from((!code >> 4) & 0x07);
        8 << exponent
    }

    /// The G.191 reference vectors, or `None` (after saying so) when `../shared` is absent.
    fn reference_vectors() -> Option<(Vec<i16>, Vec<u8>, Vec<i16>)> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/g711");
        if !dir.is_dir() {
            println!(
                "skipped: G.191 reference vectors not found at {}",
                dir.display()
            );
            return None;
        }
        let words = |name: &str| -> Vec<u16> {
            let bytes = std::fs::read(dir.join(name)).expect("read reference vector");
            assert_eq!(
                bytes.len(),
                65536 * 2,
                "{name} must hold 65536 16-bit words"
            );
            bytes
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect()
        };
        let src = words("sweep.src").into_iter().map(|w| w as i16).collect();
        let codes = words("sweep-r.u")
            .into_iter()
            .map(|w| u8::try_from(w).expect("code in the low byte"))
            .collect();
        let decoded = words("sweep-r.u-u").into_iter().map(|w| w as i16).collect();
        Some((src, codes, decoded))
    }

    #[test]
    fn matches_g191_reference_vectors() {
        let Some((src, codes, decoded)) = reference_vectors() else {
            return;
        };
        // The sweep really is every input, in order.
        assert!(src.iter().copied().eq(i16::MIN..=i16::MAX));
        let mismatched_encodes: Vec<_> = src
            .iter()
            .zip(&codes)
            .filter(|&(&s, &c)| encode(s) != c)
            .map(|(&s, &c)| (s, c, encode(s)))
            .collect();
        assert!(
            mismatched_encodes.is_empty(),
            "{} encoder mismatches, first: {:?}",
            mismatched_encodes.len(),
            mismatched_encodes.first()
        );
        for (&c, &d) in codes.iter().zip(&decoded) {
            assert_eq!(decode(c), d, "decode({c:#04x})");
        }

        // The slice APIs agree with the per-sample ones.
        let mut encoded = Vec::new();
        encode_into(&src, &mut encoded);
        assert_eq!(encoded, codes);
        let mut linear = Vec::new();
        decode_into(&codes, &mut linear);
        assert_eq!(linear, decoded);
    }

    #[test]
    fn silence_is_zero_and_zero_is_silence() {
        assert_eq!(encode(0), SILENCE);
        assert_eq!(decode(SILENCE), 0);
    }

    #[test]
    fn every_code_survives_re_encoding() {
        for code in 0..=u8::MAX {
            let linear = decode(code);
            assert_eq!(decode(encode(linear)), linear, "code {code:#04x}");
            // Only the two zeros (0x7F, 0xFF) share a value; every other code re-encodes to itself.
            if linear != 0 {
                assert_eq!(encode(linear), code);
            }
        }
    }

    #[test]
    fn known_codes() {
        // Values from G.711 table 2a.
        assert_eq!(decode(0x80), 32124);
        assert_eq!(decode(0x00), -32124);
        assert_eq!(decode(0x7F), 0);
        assert_eq!(decode(0xFE), 8);
        assert_eq!(encode(i16::MAX), 0x80);
        assert_eq!(encode(i16::MIN), 0x00);
        // One's complement of -1 is 0, so -1 encodes like 0 but with the negative sign bit.
        assert_eq!(encode(-1), 0x7F);
    }

    #[test]
    fn slice_apis_clear_and_reuse_the_buffer() {
        let mut codes = vec![1u8; 1000];
        let capacity = codes.capacity();
        encode_into(&[0, 0, 0], &mut codes);
        assert_eq!(codes, [SILENCE; 3]);
        assert_eq!(codes.capacity(), capacity);

        let mut linear = vec![7i16; 1000];
        let capacity = linear.capacity();
        decode_into(&[SILENCE, 0x80], &mut linear);
        assert_eq!(linear, [0, 32124]);
        assert_eq!(linear.capacity(), capacity);
    }

    #[test]
    fn quantisation_error_is_within_half_a_step_exhaustively() {
        for s in i16::MIN..=i16::MAX {
            let code = encode(s);
            let err = (i32::from(decode(code)) - i32::from(s)).abs();
            if i32::from(s).abs() <= CLIP {
                assert!(err <= step(code) / 2, "s={s} code={code:#04x} err={err}");
            } else {
                // Clipped: the top code of either sign decodes to ±32124.
                assert_eq!(decode(code).unsigned_abs(), 32124, "s={s}");
            }
        }
    }

    proptest! {
        #[test]
        fn decode_encode_is_idempotent_on_codes(code in any::<u8>()) {
            let linear = decode(code);
            prop_assert_eq!(decode(encode(linear)), linear);
        }

        #[test]
        fn encode_is_monotonic(a in any::<i16>(), b in any::<i16>()) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            // Codes are not ordered numerically (sign bit, inversion), their decoded values are.
            prop_assert!(decode(encode(lo)) <= decode(encode(hi)));
        }

        #[test]
        fn round_trip_error_is_within_the_step(s in any::<i16>()) {
            let code = encode(s);
            let err = (i32::from(decode(code)) - i32::from(s)).abs();
            prop_assert!(err <= step(code), "s={} err={}", s, err);
        }
    }
}
