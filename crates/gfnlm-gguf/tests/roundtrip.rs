//! Property tests: random files survive writer -> reader unchanged, and quantise ->
//! dequantise stays within each format's error bound.

use gfnlm_gguf::{GgmlType, GgufFile, GgufWriter, MetadataValue, dequantize_to_vec, quantize};
use proptest::prelude::*;

fn metadata_value() -> impl Strategy<Value = MetadataValue> {
    prop_oneof![
        any::<u8>().prop_map(MetadataValue::U8),
        any::<i16>().prop_map(MetadataValue::I16),
        any::<u32>().prop_map(MetadataValue::U32),
        any::<i64>().prop_map(MetadataValue::I64),
        any::<bool>().prop_map(MetadataValue::Bool),
        (-1e30f32..1e30).prop_map(MetadataValue::F32),
        any::<f64>()
            .prop_filter("nan != nan", |x| !x.is_nan())
            .prop_map(MetadataValue::F64),
        ".{0,12}".prop_map(MetadataValue::String),
        prop::collection::vec(".{0,6}", 1..5).prop_map(|v| {
            let vals = v.into_iter().map(MetadataValue::String).collect();
            MetadataValue::Array(gfnlm_gguf::MetadataArray::new(vals).unwrap())
        }),
    ]
}

const TYPES: [GgmlType; 5] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn writer_reader_round_trip(
        meta in prop::collection::vec(metadata_value(), 0..6),
        tensors in prop::collection::vec((0usize..5, 1usize..4, 1usize..3), 0..5),
        align_pow in 3u32..8,
        seed in any::<u32>(),
    ) {
        let mut w = GgufWriter::new().with_alignment(1 << align_pow).unwrap();
        for (i, v) in meta.iter().enumerate() {
            w.add_metadata(&format!("k.{i}"), v.clone()).unwrap();
        }
        let mut expect = Vec::new();
        for (i, &(ti, rows, blocks)) in tensors.iter().enumerate() {
            let ty = TYPES[ti];
            let shape = [rows, blocks * 32];
            let n = rows * blocks * 32;
            let x: Vec<f32> = (0..n)
                .map(|j| ((j as u32).wrapping_mul(2654435761) ^ seed) as f32 / u32::MAX as f32 - 0.5)
                .collect();
            let bytes = quantize(ty, &x).unwrap();
            w.add_tensor(&format!("t{i}"), &shape, ty, bytes.clone()).unwrap();
            expect.push((shape, ty, bytes));
        }
        let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
        prop_assert_eq!(f.alignment(), 1u64 << align_pow);
        for (i, v) in meta.iter().enumerate() {
            prop_assert_eq!(f.get(&format!("k.{i}")), Some(v));
        }
        prop_assert_eq!(f.tensors().len(), expect.len());
        for (i, (shape, ty, bytes)) in expect.iter().enumerate() {
            let info = f.tensor_info(&format!("t{i}")).unwrap();
            prop_assert_eq!(&info.shape()[..], &shape[..]);
            prop_assert_eq!(info.ty(), *ty);
            prop_assert_eq!(info.offset() % (1u64 << align_pow), 0);
            prop_assert_eq!(f.tensor_bytes(info), &bytes[..]);
        }
    }

    #[test]
    fn quantisation_error_is_bounded(
        x in prop::collection::vec(-100.0f32..100.0, 64),
        scale in prop_oneof![Just(1e-3f32), Just(1.0f32), Just(30.0f32)],
    ) {
        let x: Vec<f32> = x.iter().map(|v| v * scale).collect();
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1] {
            let y = dequantize_to_vec(ty, &quantize(ty, &x).unwrap(), x.len()).unwrap();
            for (blk_x, blk_y) in x.chunks(32).zip(y.chunks(32)) {
                let amax = blk_x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let (lo, hi) = blk_x.iter().fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
                for (&a, &b) in blk_x.iter().zip(blk_y) {
                    let bound = match ty {
                        GgmlType::F32 => 0.0,
                        GgmlType::F16 => a.abs() * 2f32.powi(-11) + 2f32.powi(-25), // f16 subnormal spacing 2^-24
                        GgmlType::BF16 => a.abs() * 2f32.powi(-8),
                        // half a step, plus the f16 rounding of the scale applied to <= 127 steps
                        GgmlType::Q8_0 => amax / 127.0 * (0.5 + 127.0 * 2f32.powi(-11)) * 1.001,
                        // codes -8..7: values near -max clip to 7 steps, so a whole step of error there
                        GgmlType::Q4_0 => amax / 8.0 * (1.0 + 8.0 * 2f32.powi(-11)) * 1.001,
                        _ => {
                            let d = (hi - lo) / 15.0;
                            d * (0.5 + 15.0 * 2f32.powi(-11)) + lo.abs() * 2f32.powi(-11) + 1e-6 * amax
                        }
                    };
                    prop_assert!((a - b).abs() <= bound + f32::MIN_POSITIVE, "{ty}: {a} -> {b} (bound {bound})");
                }
            }
        }
    }
}

#[test]
fn q8_k_is_scale_times_code() {
    // block_q8_K: f32 d, 256 int8 codes, 16 int16 block sums (unused when dequantising)
    let mut b = 0.5f32.to_le_bytes().to_vec();
    b.extend((0..256i32).map(|i| (i - 128) as i8 as u8));
    b.extend([0u8; 32]);
    let y = dequantize_to_vec(GgmlType::Q8_K, &b, 256).unwrap();
    assert_eq!(y[0], -64.0);
    assert_eq!(y[255], 63.5);
}
