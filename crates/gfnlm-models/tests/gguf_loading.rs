//! Loading Llama GGUF files built with `gfnlm_gguf::GgufWriter`: a valid tiny model runs, and
//! files that disagree with their metadata give errors naming the file, tensor and shapes.

use std::path::PathBuf;

use gfnlm_gguf::{GgmlType, GgufWriter, MetadataValue};
use gfnlm_models::generate::tokens_tensor;
use gfnlm_models::{LoadError, load_llama_gguf};

const D: usize = 32;
const V: usize = 40;

fn writer(arch: &str, k_rows: usize, skip: Option<&str>) -> GgufWriter {
    writer_blocks(arch, k_rows, skip, 1)
}

/// [`writer`] with `llama.block_count = blocks` (the tensors are still those of one block).
fn writer_blocks(arch: &str, k_rows: usize, skip: Option<&str>, blocks: u32) -> GgufWriter {
    let mut w = GgufWriter::new();
    let meta: Vec<(&str, MetadataValue)> = vec![
        ("general.architecture", MetadataValue::String(arch.into())),
        ("llama.embedding_length", MetadataValue::U32(D as u32)),
        ("llama.feed_forward_length", MetadataValue::U32(48)),
        ("llama.block_count", MetadataValue::U32(blocks)),
        ("llama.attention.head_count", MetadataValue::U32(4)),
        ("llama.attention.head_count_kv", MetadataValue::U32(2)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            MetadataValue::F32(1e-5),
        ),
        ("llama.rope.freq_base", MetadataValue::F32(10_000.0)),
        ("llama.context_length", MetadataValue::U32(64)),
    ];
    for (k, v) in meta {
        w.add_metadata(k, v).unwrap();
    }
    let mut seed = 1u32;
    let mut rand = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 8) as f32 / (1u32 << 24) as f32 * 0.2 - 0.1
            })
            .collect()
    };
    let tensors: Vec<(&str, Vec<usize>)> = vec![
        ("token_embd.weight", vec![V, D]),
        ("blk.0.attn_norm.weight", vec![D]),
        ("blk.0.attn_q.weight", vec![D, D]),
        ("blk.0.attn_k.weight", vec![k_rows, D]),
        ("blk.0.attn_v.weight", vec![16, D]),
        ("blk.0.attn_output.weight", vec![D, D]),
        ("blk.0.ffn_norm.weight", vec![D]),
        ("blk.0.ffn_gate.weight", vec![48, D]),
        ("blk.0.ffn_up.weight", vec![48, D]),
        ("blk.0.ffn_down.weight", vec![D, 48]),
        ("output_norm.weight", vec![D]),
    ];
    for (name, shape) in tensors {
        if Some(name) == skip {
            continue;
        }
        let n = shape.iter().product();
        w.add_f32(name, &shape, &rand(n), GgmlType::F32).unwrap();
    }
    w
}

fn write(name: &str, w: &GgufWriter) -> PathBuf {
    let p = std::env::temp_dir().join(format!("gfnlm-{}-{name}.gguf", std::process::id()));
    w.write_file(&p).unwrap();
    p
}

#[test]
fn a_valid_tiny_llama_gguf_loads_and_runs() {
    let device = gfnlm_models::parse_device("flex").unwrap();
    let p = write("valid", &writer("llama", 16, None));
    let (model, cfg) = load_llama_gguf(&p, &device).unwrap();
    assert_eq!(
        (cfg.vocab_size, cfg.hidden_size, cfg.num_key_value_heads),
        (V, D, 2)
    );
    assert!(cfg.tie_word_embeddings && model.lm_head.is_none());
    let logits = model.forward(tokens_tensor(&[vec![1, 2, 3]], &device), None);
    assert_eq!(logits.dims(), [1, 3, V]);
    let _ = std::fs::remove_file(p);
}

#[test]
fn a_tensor_shape_that_disagrees_with_the_metadata_is_named() {
    let device = gfnlm_models::parse_device("flex").unwrap();
    let p = write("shape", &writer("llama", 32, None));
    let err = load_llama_gguf(&p, &device).unwrap_err();
    assert!(matches!(err, LoadError::Shape { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&p.display().to_string()), "{msg}");
    assert!(
        msg.contains("blk.0.attn_k.weight") && msg.contains("[32, 32]") && msg.contains("[16, 32]"),
        "{msg}"
    );
    let _ = std::fs::remove_file(p);
}

#[test]
fn another_architecture_and_a_missing_tensor_are_named() {
    let device = gfnlm_models::parse_device("flex").unwrap();
    let p = write("arch", &writer("falcon", 16, None));
    let msg = load_llama_gguf(&p, &device).unwrap_err().to_string();
    assert!(
        msg.contains("falcon") && msg.contains(&p.display().to_string()),
        "{msg}"
    );
    let p2 = write("missing", &writer("llama", 16, Some("blk.0.ffn_up.weight")));
    let msg = load_llama_gguf(&p2, &device).unwrap_err().to_string();
    assert!(msg.contains("blk.0.ffn_up.weight"), "{msg}");
    let _ = std::fs::remove_file(p);
    let _ = std::fs::remove_file(p2);
}

#[test]
fn absurd_block_counts_are_refused_before_any_allocation() {
    let device = gfnlm_models::parse_device("flex").unwrap();
    for (blocks, needle) in [
        (4_000_000_000u32, "llama.block_count = 4000000000 is above"),
        (1000, "llama.block_count = 1000 needs at least 9002 tensors"),
        (0, "llama.block_count must be > 0"),
    ] {
        let w = writer_blocks("llama", 16, None, blocks);
        let p = write(&format!("blocks-{blocks}"), &w);
        let err = load_llama_gguf(&p, &device).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LoadError::Config { .. }), "{msg}");
        assert!(msg.contains(needle) && msg.contains(".gguf"), "{msg}");
        std::fs::remove_file(&p).unwrap();
    }
}

#[test]
fn non_finite_weights_are_refused_naming_the_tensor() {
    let device = gfnlm_models::parse_device("flex").unwrap();
    let mut w = writer("llama", 16, Some("blk.0.ffn_up.weight"));
    let mut data = vec![0.01f32; 48 * D];
    data[7] = f32::NAN;
    w.add_f32("blk.0.ffn_up.weight", &[48, D], &data, GgmlType::F32)
        .unwrap();
    let p = write("nan", &w);
    let err = load_llama_gguf(&p, &device).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, LoadError::NonFinite { index: 7, .. }) && msg.contains("blk.0.ffn_up.weight"),
        "{msg}"
    );
    std::fs::remove_file(&p).unwrap();
}
