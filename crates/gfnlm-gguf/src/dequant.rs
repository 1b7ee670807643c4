//! Conversion of ggml storage blocks to f32.
//!
//! Every routine reproduces gguf-py's `quants.py` (and ggml's `dequantize_row_*`)
//! operation by operation in f32, so results are bit-identical to those references.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use rayon::prelude::*;

use crate::error::{GgufError, GgufErrorKind, Result};
use crate::types::{GgmlType, QK_K};

/// Outputs at least this large are dequantised on the rayon pool.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 16;
/// Elements handled by one rayon task.
const CHUNK_ELEMENTS: usize = 1 << 14;

/// Dequantises `src` (whole blocks of `ty`) into `dst`.
///
/// `dst.len()` must be a whole number of blocks and `src.len()` exactly the matching byte
/// count. Large tensors are split across the rayon thread pool.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    if !ty.can_dequantize() {
        return Err(GgufErrorKind::UnsupportedType {
            name: String::from("<buffer>"),
            ty,
        }
        .into());
    }
    let (bs, ts) = (ty.block_size(), ty.type_size());
    if !dst.len().is_multiple_of(bs) {
        return Err(GgufError::size(format!(
            "{} output elements are not a whole number of {ty} blocks of {bs}",
            dst.len()
        )));
    }
    let expected = dst.len() / bs * ts;
    if src.len() != expected {
        return Err(GgufError::size(format!(
            "{ty}: {} elements need {expected} bytes, got {}",
            dst.len(),
            src.len()
        )));
    }
    if dst.len() < PARALLEL_MIN_ELEMENTS {
        dequantize_serial(ty, src, dst);
    } else {
        let blocks_per_chunk = (CHUNK_ELEMENTS / bs).max(1);
        src.par_chunks(blocks_per_chunk * ts)
            .zip(dst.par_chunks_mut(blocks_per_chunk * bs))
            .for_each(|(s, d)| dequantize_serial(ty, s, d));
    }
    Ok(())
}

/// Dequantises into a new vector of `n_elements` values.
pub fn dequantize_to_vec(ty: GgmlType, src: &[u8], n_elements: usize) -> Result<Vec<f32>> {
    let mut out = vec![0.0f32; n_elements];
    dequantize(ty, src, &mut out)?;
    Ok(out)
}

#[inline]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Caller guarantees sizes (checked in [`dequantize`]).
fn dequantize_serial(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    let bs = ty.block_size();
    let blocks = src
        .chunks_exact(ty.type_size())
        .zip(dst.chunks_exact_mut(bs));
    match ty {
        GgmlType::F32 => {
            blocks.for_each(|(s, d)| d[0] = f32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        }
        GgmlType::F16 => f16_slice(src, dst),
        GgmlType::BF16 => {
            blocks.for_each(|(s, d)| d[0] = bf16::from_le_bytes([s[0], s[1]]).to_f32())
        }
        GgmlType::F64 => blocks.for_each(|(s, d)| {
            d[0] = f64::from_le_bytes(s.try_into().expect("8-byte block")) as f32
        }),
        GgmlType::Q4_0 => blocks.for_each(|(s, d)| q4_0(s, d)),
        GgmlType::Q4_1 => blocks.for_each(|(s, d)| q4_1(s, d)),
        GgmlType::Q5_0 => blocks.for_each(|(s, d)| q5_0(s, d)),
        GgmlType::Q5_1 => blocks.for_each(|(s, d)| q5_1(s, d)),
        GgmlType::Q8_0 => blocks.for_each(|(s, d)| q8_0(s, d)),
        GgmlType::Q2_K => blocks.for_each(|(s, d)| q2_k(s, d)),
        GgmlType::Q3_K => blocks.for_each(|(s, d)| q3_k(s, d)),
        GgmlType::Q4_K => blocks.for_each(|(s, d)| q4_k(s, d)),
        GgmlType::Q5_K => blocks.for_each(|(s, d)| q5_k(s, d)),
        GgmlType::Q6_K => blocks.for_each(|(s, d)| q6_k(s, d)),
        GgmlType::Q8_K => blocks.for_each(|(s, d)| q8_k(s, d)),
        other => unreachable!("{other} is not dequantisable (checked by caller)"),
    }
}

/// F16 in runs of 64 through `half`'s slice conversion (F16C instructions where available).
fn f16_slice(src: &[u8], dst: &mut [f32]) {
    const RUN: usize = 64;
    let mut tmp = [f16::ZERO; RUN];
    for (s, d) in src.chunks(2 * RUN).zip(dst.chunks_mut(RUN)) {
        for (t, b) in tmp.iter_mut().zip(s.chunks_exact(2)) {
            *t = f16::from_le_bytes([b[0], b[1]]);
        }
        tmp[..d.len()].convert_to_f32_slice(d);
    }
}

// Block layouts follow ggml-common.h.

fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = d * ((qs[j] & 0x0F) as i32 - 8) as f32;
        y[j + 16] = d * ((qs[j] >> 4) as i32 - 8) as f32;
    }
}

fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = d * (qs[j] & 0x0F) as f32 + m;
        y[j + 16] = d * (qs[j] >> 4) as f32 + m;
    }
}

fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        let h0 = (((qh >> j) & 1) << 4) as u8;
        let h1 = (((qh >> (j + 16)) & 1) << 4) as u8;
        y[j] = d * (((qs[j] & 0x0F) | h0) as i32 - 16) as f32;
        y[j + 16] = d * (((qs[j] >> 4) | h1) as i32 - 16) as f32;
    }
}

fn q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let h0 = (((qh >> j) & 1) << 4) as u8;
        let h1 = (((qh >> (j + 16)) & 1) << 4) as u8;
        y[j] = d * ((qs[j] & 0x0F) | h0) as f32 + m;
        y[j + 16] = d * ((qs[j] >> 4) | h1) as f32 + m;
    }
}

fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (yi, &q) in y.iter_mut().zip(&b[2..34]) {
        *yi = q as i8 as f32 * d;
    }
}

fn q2_k(b: &[u8], y: &mut [f32]) {
    let scales = &b[0..16];
    let qs = &b[16..80];
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    for half in 0..2 {
        for shift in 0..4 {
            let base = half * 128 + shift * 32;
            for sub in [0usize, 16] {
                let sc = scales[(base + sub) / 16];
                let dl = d * (sc & 0x0F) as f32;
                let ml = dmin * (sc >> 4) as f32;
                for l in sub..sub + 16 {
                    let q = (qs[half * 32 + l] >> (2 * shift)) & 3;
                    y[base + l] = dl * q as f32 - ml;
                }
            }
        }
    }
}

/// The 16 six-bit scales of a Q3_K block, offset by -32.
fn q3_k_scales(sc: &[u8]) -> [f32; 16] {
    let mut out = [0.0f32; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let low = if i < 8 { sc[i] & 0x0F } else { sc[i - 8] >> 4 };
        let high = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
        *o = ((low | (high << 4)) as i32 - 32) as f32;
    }
    out
}

fn q3_k(b: &[u8], y: &mut [f32]) {
    let hmask = &b[0..32];
    let qs = &b[32..96];
    let scales = q3_k_scales(&b[96..108]);
    let d = f16_at(b, 108);
    for half in 0..2 {
        for shift in 0..4 {
            let base = half * 128 + shift * 32;
            let hbit = half * 4 + shift;
            for sub in [0usize, 16] {
                let dl = d * scales[(base + sub) / 16];
                for l in sub..sub + 16 {
                    let low = ((qs[half * 32 + l] >> (2 * shift)) & 3) as i32;
                    let minus = if (hmask[l] >> hbit) & 1 == 1 { 0 } else { 4 };
                    y[base + l] = dl * (low - minus) as f32;
                }
            }
        }
    }
}

/// Scales and minimums (6 bits each) of the 8 sub-blocks of a Q4_K/Q5_K block.
fn k_scale_min(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
    for j in 0..4 {
        sc[j] = s[j] & 0x3F;
        mn[j] = s[j + 4] & 0x3F;
        sc[j + 4] = (s[j + 8] & 0x0F) | ((s[j] >> 2) & 0x30);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 2) & 0x30);
    }
    (sc, mn)
}

fn q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (sc, mn) = k_scale_min(&b[4..16]);
    let qs = &b[16..144];
    for s in 0..8 {
        let d1 = d * sc[s] as f32;
        let m1 = dmin * mn[s] as f32;
        let (chunk, shift) = (s / 2, 4 * (s % 2));
        for l in 0..32 {
            let q = (qs[chunk * 32 + l] >> shift) & 0x0F;
            y[s * 32 + l] = d1 * q as f32 - m1;
        }
    }
}

fn q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (sc, mn) = k_scale_min(&b[4..16]);
    let qh = &b[16..48];
    let qs = &b[48..176];
    for s in 0..8 {
        let d1 = d * sc[s] as f32;
        let m1 = dmin * mn[s] as f32;
        let (chunk, shift) = (s / 2, 4 * (s % 2));
        for l in 0..32 {
            let q = ((qs[chunk * 32 + l] >> shift) & 0x0F) | (((qh[l] >> s) & 1) << 4);
            y[s * 32 + l] = d1 * q as f32 - m1;
        }
    }
}

fn q6_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 208);
    let mut dl = [0.0f32; 16];
    for (o, &sc) in dl.iter_mut().zip(&b[192..208]) {
        *o = d * sc as i8 as f32;
    }
    for half in 0..2 {
        let ql = &b[half * 64..half * 64 + 64];
        let qh = &b[128 + half * 32..128 + half * 32 + 32];
        let (y, dl) = (
            &mut y[half * 128..half * 128 + 128],
            &dl[half * 8..half * 8 + 8],
        );
        for l in 0..32 {
            let is = l / 16;
            let h = qh[l];
            let q1 = ((ql[l] & 0x0F) | ((h & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((h >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((h >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((h >> 6) & 3) << 4)) as i32 - 32;
            y[l] = dl[is] * q1 as f32;
            y[l + 32] = dl[is + 2] * q2 as f32;
            y[l + 64] = dl[is + 4] * q3 as f32;
            y[l + 96] = dl[is + 6] * q4 as f32;
        }
    }
}

fn q8_k(b: &[u8], y: &mut [f32]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for (yi, &q) in y.iter_mut().zip(&b[4..4 + QK_K]) {
        *yi = d * q as i8 as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bytes(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q4_1_low_nibbles_then_high_nibbles() {
        let mut b = Vec::new();
        b.extend(f16_bytes(0.5));
        b.extend(f16_bytes(-1.0));
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let mut y = [0.0f32; 32];
        dequantize(GgmlType::Q4_1, &b, &mut y).unwrap();
        for j in 0..16 {
            assert_eq!(y[j], 0.5 * j as f32 - 1.0);
            assert_eq!(y[j + 16], 0.5 * (15 - j) as f32 - 1.0);
        }
    }

    #[test]
    fn q8_0_is_signed() {
        let mut b = f16_bytes(0.25).to_vec();
        b.extend((0..32).map(|j| (j as i8 - 16) as u8));
        let y = dequantize_to_vec(GgmlType::Q8_0, &b, 32).unwrap();
        assert_eq!(y[0], -4.0);
        assert_eq!(y[31], 3.75);
    }

    #[test]
    fn q5_0_uses_high_bit_per_element() {
        let mut b = f16_bytes(1.0).to_vec();
        b.extend(0x8000_0001u32.to_le_bytes()); // high bit for elements 0 and 31
        b.extend([0u8; 16]);
        let y = dequantize_to_vec(GgmlType::Q5_0, &b, 32).unwrap();
        assert_eq!(y[0], 0.0); // 16 - 16
        assert_eq!(y[1], -16.0);
        assert_eq!(y[31], 0.0);
        assert_eq!(y[16], -16.0);
    }

    #[test]
    fn k_scale_min_unpacks_six_bit_fields() {
        // sub-block 5: scale = low nibble of byte 9 | top two bits of byte 1 (<<4)
        let mut s = [0u8; 12];
        s[1] = 0b1100_0000 | 7; // scale[1] = 7, high bits 3 for scale[5]
        s[9] = 0b1010_0101; // scale[5] low = 5, min[5] low = 10
        s[5] = 0b0100_0000 | 9; // min[1] = 9, high bits 1 for min[5]
        let (sc, mn) = k_scale_min(&s);
        assert_eq!(sc[1], 7);
        assert_eq!(mn[1], 9);
        assert_eq!(sc[5], 5 | (3 << 4));
        assert_eq!(mn[5], 10 | (1 << 4));
    }

    #[test]
    fn size_errors_are_reported_not_panics() {
        let mut y = [0.0f32; 32];
        assert!(dequantize(GgmlType::Q4_0, &[0u8; 17], &mut y).is_err());
        assert!(dequantize(GgmlType::Q4_0, &[0u8; 18], &mut y[..31]).is_err());
        assert!(dequantize(GgmlType::IQ2_XXS, &[0u8; 66], &mut [0.0; 256]).is_err());
    }

    #[test]
    fn parallel_path_matches_serial() {
        let n = PARALLEL_MIN_ELEMENTS * 2 + QK_K * 3;
        let src: Vec<u8> = (0..n / QK_K * GgmlType::Q4_K.type_size())
            .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
            .collect();
        let par = dequantize_to_vec(GgmlType::Q4_K, &src, n).unwrap();
        let mut ser = vec![0.0f32; n];
        dequantize_serial(GgmlType::Q4_K, &src, &mut ser);
        assert_eq!(
            par.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            ser.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }
}
