//! Conversion of f32 values to ggml storage (the reference quantisers of gguf-py / ggml).
//!
//! Only the simple, widely used formats are offered: F32, F16, BF16, Q8_0, Q4_0 and Q4_1.
//! Their output is bit-identical to gguf-py's `quants.quantize`.

use half::f16;

use crate::error::{GgufError, GgufErrorKind, Result};
use crate::types::GgmlType;

/// Types [`quantize`] can produce.
pub const QUANTIZE_TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
];

/// Encodes `values` as `ty`. `values.len()` must be a whole number of blocks.
pub fn quantize(ty: GgmlType, values: &[f32]) -> Result<Vec<u8>> {
    let bs = ty.block_size();
    if !values.len().is_multiple_of(bs) {
        return Err(GgufError::size(format!(
            "{} values are not a whole number of {ty} blocks of {bs}",
            values.len()
        )));
    }
    let mut out = Vec::with_capacity(values.len() / bs * ty.type_size());
    match ty {
        GgmlType::F32 => values.iter().for_each(|v| out.extend(v.to_le_bytes())),
        GgmlType::F16 => values
            .iter()
            .for_each(|&v| out.extend(f16::from_f32(v).to_le_bytes())),
        GgmlType::BF16 => values.iter().for_each(|&v| out.extend(to_bf16(v))),
        GgmlType::Q8_0 => values.chunks_exact(32).for_each(|b| q8_0(b, &mut out)),
        GgmlType::Q4_0 => values.chunks_exact(32).for_each(|b| q4_0(b, &mut out)),
        GgmlType::Q4_1 => values.chunks_exact(32).for_each(|b| q4_1(b, &mut out)),
        _ => return Err(GgufErrorKind::UnsupportedQuantizeTarget(ty).into()),
    }
    Ok(out)
}

/// ggml's `ggml_compute_fp32_to_bf16`: NaNs become quiet, otherwise round to nearest even.
fn to_bf16(v: f32) -> [u8; 2] {
    let bits = v.to_bits();
    let h = if bits & 0x7fff_ffff > 0x7f80_0000 {
        ((bits >> 16) | 64) as u16
    } else {
        ((bits as u64 + (0x7fff + ((bits >> 16) & 1) as u64)) >> 16) as u16
    };
    h.to_le_bytes()
}

fn q8_0(x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    out.extend(f16::from_f32(d).to_le_bytes());
    out.extend(x.iter().map(|&v| (v * id).round() as i8 as u8));
}

/// Pack 32 four-bit codes: element j in the low nibble of byte j, element j+16 in its high nibble.
fn pack_nibbles(q: &[u8; 32], out: &mut Vec<u8>) {
    out.extend((0..16).map(|j| q[j] | (q[j + 16] << 4)));
}

fn q4_0(x: &[f32], out: &mut Vec<u8>) {
    // the value with the largest magnitude, first one on ties (numpy argmax)
    let max = x
        .iter()
        .fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
    let d = max / -8.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    let mut q = [0u8; 32];
    for (qi, &v) in q.iter_mut().zip(x) {
        *qi = ((v * id + 8.5).trunc() as u8).min(15);
    }
    out.extend(f16::from_f32(d).to_le_bytes());
    pack_nibbles(&q, out);
}

fn q4_1(x: &[f32], out: &mut Vec<u8>) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let min = x.iter().copied().fold(f32::INFINITY, f32::min);
    let d = (max - min) / 15.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    let mut q = [0u8; 32];
    for (qi, &v) in q.iter_mut().zip(x) {
        *qi = (((v - min) * id + 0.5).trunc() as u8).min(15);
    }
    out.extend(f16::from_f32(d).to_le_bytes());
    out.extend(f16::from_f32(min).to_le_bytes());
    pack_nibbles(&q, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dequant::dequantize_to_vec;
    use half::bf16;

    #[test]
    fn bf16_rounds_to_nearest_even_and_keeps_nan() {
        assert_eq!(to_bf16(1.0), bf16::from_f32(1.0).to_le_bytes());
        // 1 + 2^-8 is exactly half-way between two bf16 values: ties to even (1.0)
        assert_eq!(
            to_bf16(1.0 + 1.0 / 256.0),
            bf16::from_f32(1.0).to_le_bytes()
        );
        let nan = u16::from_le_bytes(to_bf16(f32::NAN));
        assert!(bf16::from_bits(nan).is_nan());
    }

    #[test]
    fn q4_0_extremes_map_to_code_zero_and_scale_sign_follows_max() {
        let mut x = [0.0f32; 32];
        x[3] = -2.0;
        x[7] = 1.0;
        let b = quantize(GgmlType::Q4_0, &x).unwrap();
        let y = dequantize_to_vec(GgmlType::Q4_0, &b, 32).unwrap();
        assert_eq!(y[3], -2.0); // max magnitude is exact: code 0 -> d * -8
        assert_eq!(y[0], 0.0);
        assert!((y[7] - 1.0).abs() <= 0.25 / 2.0 + 1e-6);
    }

    #[test]
    fn rejects_partial_blocks_and_unsupported_targets() {
        assert!(quantize(GgmlType::Q8_0, &[0.0; 31]).is_err());
        let e = quantize(GgmlType::Q4_K, &[0.0; 256]).unwrap_err();
        assert!(e.to_string().contains("cannot quantise to Q4_K"), "{e}");
    }
}
