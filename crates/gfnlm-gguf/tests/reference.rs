//! Checks against files written by gguf-py (tests/fixtures/make_reference.py): metadata of
//! every type, bit-exact dequantisation of every supported format, bit-exact quantisers,
//! writer round trips and rejection of corrupt files.

use std::path::PathBuf;

use gfnlm_gguf::{
    GgmlType, GgufErrorKind, GgufFile, GgufWriter, MetadataArray, MetadataValue, quantize,
};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn reads_every_metadata_type_written_by_gguf_py() {
    let f = GgufFile::open(fixture("reference.gguf")).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.data_offset() % 64, 0);
    assert_eq!(f.architecture().unwrap(), "llama");
    assert_eq!(f.get("test.u8"), Some(&MetadataValue::U8(250)));
    assert_eq!(f.get("test.i8"), Some(&MetadataValue::I8(-7)));
    assert_eq!(f.get("test.u16"), Some(&MetadataValue::U16(65000)));
    assert_eq!(f.get("test.i16"), Some(&MetadataValue::I16(-30000)));
    assert_eq!(f.get_u64("test.u32").unwrap(), 4_000_000_000);
    assert_eq!(f.get_i64("test.i32").unwrap(), -2_000_000_000);
    assert_eq!(f.get("test.f32"), Some(&MetadataValue::F32(1e-5)));
    assert_eq!(f.get_f64("test.f32").unwrap(), 9.999_999_747_378_752e-6);
    assert!(f.get_bool("test.bool").unwrap());
    assert_eq!(f.get_str("test.string").unwrap(), "héllo ✓ wörld");
    assert_eq!(f.get_u64("test.u64").unwrap(), (1u64 << 63) + 5);
    assert_eq!(f.get_i64("test.i64").unwrap(), -(1i64 << 62));
    assert_eq!(f.get_f64("test.f64").unwrap(), std::f64::consts::PI);
    assert_eq!(
        f.get_str_array("test.strings").unwrap(),
        ["a", "Ġb", "<|im_end|>", "日本"]
    );
    assert_eq!(f.get_i64_array("test.i32s").unwrap(), [1, -2, 3]);
    assert_eq!(f.get_f32_array("test.f32s").unwrap(), [0.5, -1.25]);
    let nested = f.get_array("test.nested").unwrap();
    assert_eq!(nested.len(), 2);
    assert_eq!(
        nested.values()[1].as_array().unwrap().values(),
        [MetadataValue::I32(3)]
    );
}

#[test]
fn typed_getters_name_the_key_and_file() {
    let path = fixture("reference.gguf");
    let f = GgufFile::open(&path).unwrap();
    let e = f.get_u64("llama.block_count").unwrap_err();
    assert!(matches!(e.kind, GgufErrorKind::MissingKey(_)));
    let msg = e.to_string();
    assert!(
        msg.contains("llama.block_count") && msg.contains("reference.gguf"),
        "{msg}"
    );
    let e = f.get_str("test.u8").unwrap_err().to_string();
    assert!(
        e.contains("test.u8") && e.contains("u8") && e.contains("string"),
        "{e}"
    );
    assert!(f.get_u64("test.i8").is_err(), "negative values are not u64");
    let e = f.dequantize("deq.Q4_K.bias").unwrap_err().to_string();
    assert!(
        e.contains("deq.Q4_K.bias") && e.contains("similar: deq.Q4_K"),
        "{e}"
    );
}

#[test]
fn dequantisation_is_bit_identical_to_gguf_py() {
    let reference = GgufFile::open(fixture("reference.gguf")).unwrap();
    let expected = GgufFile::open(fixture("expected.gguf")).unwrap();
    let mut checked = Vec::new();
    for info in expected
        .tensors()
        .iter()
        .filter(|t| t.name().starts_with("deq."))
    {
        let want = expected.dequantize(info.name()).unwrap();
        let got = reference.dequantize(info.name()).unwrap();
        assert_eq!(got.shape, [2, 512], "{}", info.name());
        assert_eq!(got.shape, want.shape);
        assert_eq!(bits(&got.data), bits(&want.data), "{}", info.name());
        assert!(got.data.iter().any(|&x| x != 0.0), "{}", info.name());
        checked.push(reference.tensor(info.name()).unwrap().ty());
    }
    let must = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::F64,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ];
    assert_eq!(checked, must);
}

#[test]
fn quantisers_are_bit_identical_to_gguf_py() {
    let reference = GgufFile::open(fixture("reference.gguf")).unwrap();
    let expected = GgufFile::open(fixture("expected.gguf")).unwrap();
    let input = expected.dequantize("quant_input").unwrap().data;
    let mut n = 0;
    for info in reference
        .tensors()
        .iter()
        .filter(|t| t.name().starts_with("quant."))
    {
        assert_eq!(info.shape(), [4, 256]);
        let ours = quantize(info.ty(), &input).unwrap();
        assert_eq!(ours, reference.tensor_bytes(info), "{}", info.name());
        n += 1;
    }
    assert_eq!(n, 5);
}

#[test]
fn writer_round_trips_a_gguf_py_file() {
    let src = GgufFile::open(fixture("reference.gguf")).unwrap();
    let mut w = GgufWriter::new().with_alignment(64).unwrap();
    for (k, v) in src
        .metadata()
        .iter()
        .filter(|(k, _)| k != "general.alignment")
    {
        w.add_metadata(k, v.clone()).unwrap();
    }
    for t in src.tensors() {
        w.add_tensor(t.name(), &t.shape(), t.ty(), src.tensor_bytes(t).to_vec())
            .unwrap();
    }
    let dir = std::env::temp_dir().join(format!("gfnlm-gguf-rt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("copy.gguf");
    w.write_file(&path).unwrap();
    let copy = GgufFile::open(&path).unwrap();
    assert_eq!(copy.alignment(), 64);
    let sorted = |f: &GgufFile| {
        let mut m = f.metadata().to_vec();
        m.sort_by(|a, b| a.0.cmp(&b.0));
        m
    };
    assert_eq!(sorted(&copy), sorted(&src));
    assert_eq!(copy.tensors().len(), src.tensors().len());
    for (a, b) in copy.tensors().iter().zip(src.tensors()) {
        assert_eq!(
            (a.name(), a.ggml_dims(), a.ty()),
            (b.name(), b.ggml_dims(), b.ty())
        );
        assert_eq!(copy.tensor_bytes(a), src.tensor_bytes(b));
    }
    // gguf-py lays tensors out the same way, so the data sections are identical
    assert_eq!(
        copy.tensors()
            .iter()
            .map(|t| t.offset())
            .collect::<Vec<_>>(),
        src.tensors().iter().map(|t| t.offset()).collect::<Vec<_>>()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn writer_rejects_inconsistent_input() {
    let mut w = GgufWriter::new();
    w.add_metadata("a", 1u32).unwrap();
    assert!(w.add_metadata("a", 2u32).is_err());
    assert!(w.add_metadata("general.alignment", 64u32).is_err());
    assert!(
        w.add_tensor("t", &[2, 31], GgmlType::Q8_0, vec![0; 68])
            .is_err()
    );
    assert!(
        w.add_tensor("t", &[2, 32], GgmlType::Q8_0, vec![0; 67])
            .is_err()
    );
    assert!(
        w.add_tensor("t", &[1, 1, 1, 1, 1], GgmlType::F32, vec![0; 4])
            .is_err()
    );
    w.add_tensor("t", &[2, 32], GgmlType::Q8_0, vec![0; 68])
        .unwrap();
    assert!(w.add_tensor("t", &[1], GgmlType::F32, vec![0; 4]).is_err());
    assert!(w.add_f32("u", &[3], &[1.0, 2.0], GgmlType::F32).is_err());
    assert!(GgufWriter::new().with_alignment(48).is_err());
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    assert_eq!(f.tensor("t").unwrap().shape(), [2, 32]);
    assert_eq!(f.dequantize("t").unwrap().data, vec![0.0; 64]);
    let empty = MetadataArray::empty_strings();
    let mut w = GgufWriter::new();
    w.add_metadata("e", empty).unwrap();
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    assert_eq!(f.get_str_array("e").unwrap(), Vec::<&str>::new());
}

/// A small valid file to corrupt: one metadata string, one Q8_0 tensor.
fn small_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", "llama").unwrap();
    let x: Vec<f32> = (0..64).map(|i| i as f32 / 7.0).collect();
    w.add_f32("w", &[2, 32], &x, GgmlType::Q8_0).unwrap();
    w.to_bytes()
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let full = small_file();
    let f = GgufFile::from_bytes(full.clone()).unwrap();
    let t = &f.tensors()[0];
    let end = (f.data_offset() + t.offset() + t.n_bytes()) as usize;
    assert!(end < full.len(), "the writer pads after the last tensor");
    for cut in 0..end {
        let r = GgufFile::from_bytes(full[..cut].to_vec());
        assert!(r.is_err(), "cut at {cut} accepted");
    }
    // only the trailing padding is missing: still a complete file
    assert!(GgufFile::from_bytes(full[..end].to_vec()).is_ok());
}

#[test]
fn corrupt_headers_are_rejected_with_a_reason() {
    let full = small_file();
    let with = |at: usize, bytes: &[u8]| {
        let mut b = full.clone();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        GgufFile::from_bytes(b).unwrap_err()
    };
    let e = with(0, b"GGML");
    assert!(matches!(e.kind, GgufErrorKind::BadMagic { .. }), "{e}");
    let e = with(4, &1u32.to_le_bytes()).to_string();
    assert!(e.contains("version 1") && e.contains("re-convert"), "{e}");
    let e = with(4, &3u32.to_be_bytes()).to_string();
    assert!(e.contains("big-endian"), "{e}");
    // absurd counts are refused before anything is allocated
    let e = with(8, &u64::MAX.to_le_bytes()).to_string();
    assert!(e.contains("cannot fit"), "{e}");
    let e = with(16, &(1u64 << 40).to_le_bytes()).to_string();
    assert!(e.contains("cannot fit"), "{e}");

    // locate the tensor record: after the metadata, name "w" (len 1)
    let rec = full
        .windows(9)
        .position(|w| w == [1, 0, 0, 0, 0, 0, 0, 0, b'w'])
        .unwrap()
        + 9;
    let (ndims, dim0, dim1, ty, off) = (rec, rec + 4, rec + 12, rec + 20, rec + 24);
    let e = with(ndims, &5u32.to_le_bytes()).to_string();
    assert!(e.contains("dimensions"), "{e}");
    let e = with(dim0, &33u64.to_le_bytes()).to_string();
    assert!(e.contains("block size"), "{e}");
    let e = with(dim1, &(1u64 << 40).to_le_bytes()).to_string();
    assert!(e.contains("truncated"), "{e}");
    let e = with(dim1, &u64::MAX.to_le_bytes()).to_string();
    assert!(e.contains("overflow"), "{e}");
    let e = with(ty, &99u32.to_le_bytes()).to_string();
    assert!(e.contains("unknown ggml type id 99"), "{e}");
    let e = with(off, &3u64.to_le_bytes()).to_string();
    assert!(e.contains("not aligned"), "{e}");
    let e = with(off, &64u64.to_le_bytes()).to_string();
    assert!(e.contains("truncated"), "{e}");
}

#[test]
fn overlapping_and_duplicate_tensors_are_rejected() {
    // two tensors whose second offset is rewritten to 0: overlap
    let mut w = GgufWriter::new();
    w.add_f32("a", &[32], &[1.0; 32], GgmlType::F32).unwrap();
    w.add_f32("b", &[32], &[2.0; 32], GgmlType::F32).unwrap();
    let mut bytes = w.to_bytes();
    let rec_b = bytes
        .windows(9)
        .position(|w| w == [1, 0, 0, 0, 0, 0, 0, 0, b'b'])
        .unwrap()
        + 9;
    let off = rec_b + 4 + 8 + 4;
    assert_eq!(bytes[off..off + 8], 128u64.to_le_bytes());
    bytes[off..off + 8].copy_from_slice(&0u64.to_le_bytes());
    let e = GgufFile::from_bytes(bytes.clone()).unwrap_err().to_string();
    assert!(e.contains("overlap"), "{e}");
    bytes[rec_b - 1] = b'a';
    let e = GgufFile::from_bytes(bytes).unwrap_err().to_string();
    assert!(e.contains("duplicate tensor name 'a'"), "{e}");
}

#[test]
fn open_errors_name_the_path() {
    let missing = fixture("no-such-model.gguf");
    let e = GgufFile::open(&missing).unwrap_err();
    assert!(matches!(e.kind, GgufErrorKind::Io(_)));
    assert!(e.to_string().contains("no-such-model.gguf"), "{e}");
    let e = GgufFile::open(fixture("make_reference.py"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("make_reference.py") && e.contains("not a GGUF file"),
        "{e}"
    );
}

#[test]
fn unsupported_formats_are_recognised_but_refused() {
    let mut w = GgufWriter::new();
    w.add_tensor("iq", &[256], GgmlType::IQ2_XXS, vec![0; 66])
        .unwrap();
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    assert_eq!(f.tensor("iq").unwrap().n_bytes(), 66);
    let e = f.dequantize("iq").unwrap_err();
    assert!(matches!(e.kind, GgufErrorKind::UnsupportedType { .. }));
    assert!(e.to_string().contains("IQ2_XXS") && e.to_string().contains("llama-quantize"));
}
