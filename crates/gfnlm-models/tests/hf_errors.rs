//! Hugging Face folder loading on small synthetic checkpoints: sharded and half-precision
//! files, and the errors for bad input (missing or misshapen tensors, unknown architectures,
//! shards that disagree with their index, a tokenizer larger than the embedding).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use gfnlm_models::generate::tokens_tensor;
use gfnlm_models::hf::{
    HfError, gpt2_expected_tensors, gptj_expected_tensors, llama_expected_tensors, load_dir,
    load_gpt2_dir, read_config,
};
use gfnlm_models::{CausalLmConfig, LlamaConfig};
use safetensors::Dtype;
use safetensors::tensor::{TensorView, serialize_to_file};
use serde_json::json;

fn device() -> Device {
    gfnlm_models::parse_device("flex").unwrap()
}

/// A fresh, empty scratch folder for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gfnlm-hf-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn gpt2_config() -> serde_json::Value {
    json!({
        "model_type": "gpt2", "vocab_size": 11, "n_positions": 16, "n_embd": 8,
        "n_layer": 2, "n_head": 2, "n_inner": null, "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5, "tie_word_embeddings": true
    })
}

fn write_config(dir: &Path, config: &serde_json::Value) {
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

/// Deterministic pseudo-random values in about [-0.5, 0.5].
fn values(seed: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = ((i + 1) * 2654435761 + seed * 40503) % 1000;
            x as f32 / 1000.0 - 0.5
        })
        .collect()
}

type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

fn tensors_for(expected: &[(String, Vec<usize>)]) -> Tensors {
    expected
        .iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n = shape.iter().product();
            (name.clone(), (shape.clone(), values(i, n)))
        })
        .collect()
}

fn encode(data: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F32 => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::F16 => data
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect(),
        Dtype::BF16 => data
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect(),
        other => panic!("test helper does not encode {other:?}"),
    }
}

fn write_safetensors(path: &Path, tensors: &Tensors, dtype: Dtype) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, (s, d))| (n.clone(), s.clone(), encode(d, dtype)))
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, b)| (n.clone(), TensorView::new(dtype, s.clone(), b).unwrap()))
        .collect();
    serialize_to_file(views, None, path).unwrap();
}

/// Writes `tensors` as shards of at most `per_shard` tensors plus the index.
fn write_sharded(dir: &Path, tensors: &Tensors, per_shard: usize) -> BTreeMap<String, String> {
    let names: Vec<&String> = tensors.keys().collect();
    let chunks: Vec<&[&String]> = names.chunks(per_shard).collect();
    let mut weight_map = BTreeMap::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, chunks.len());
        let part: Tensors = chunk
            .iter()
            .map(|n| ((*n).clone(), tensors[*n].clone()))
            .collect();
        write_safetensors(&dir.join(&file), &part, Dtype::F32);
        for n in *chunk {
            weight_map.insert((*n).clone(), file.clone());
        }
    }
    write_index(dir, &weight_map);
    weight_map
}

fn write_index(dir: &Path, weight_map: &BTreeMap<String, String>) {
    let index = json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

fn gpt2_tensors() -> Tensors {
    let CausalLmConfig::Gpt2(c) = config_of(&gpt2_config()) else {
        unreachable!()
    };
    tensors_for(&gpt2_expected_tensors(&c, "transformer.", &device()))
}

fn config_of(config: &serde_json::Value) -> CausalLmConfig {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = scratch(&format!("config-of-{n}"));
    write_config(&dir, config);
    read_config(&dir).unwrap()
}

fn logits(dir: &Path) -> Vec<f32> {
    let device = device();
    let (model, _) = load_dir(dir, &device).unwrap();
    model
        .forward(tokens_tensor(&[vec![1, 5, 3, 10, 0]], &device), None)
        .into_data()
        .convert::<f32>()
        .try_into_vec()
        .unwrap()
}

#[test]
fn sharded_checkpoint_equals_single_file() {
    let tensors = gpt2_tensors();
    let single = scratch("single");
    write_config(&single, &gpt2_config());
    write_safetensors(&single.join("model.safetensors"), &tensors, Dtype::F32);
    let sharded = scratch("sharded");
    write_config(&sharded, &gpt2_config());
    write_sharded(&sharded, &tensors, 7);
    let (a, b) = (logits(&single), logits(&sharded));
    assert_eq!(a.len(), 5 * 11);
    assert_eq!(a, b);
}

#[test]
fn f16_and_bf16_are_widened_exactly() {
    // Values already rounded to each format load to the same f32 model as the f32 file.
    for dtype in [Dtype::F16, Dtype::BF16] {
        let rounded: Tensors = gpt2_tensors()
            .into_iter()
            .map(|(n, (s, d))| {
                let d = d
                    .iter()
                    .map(|&x| match dtype {
                        Dtype::F16 => half::f16::from_f32(x).to_f32(),
                        _ => half::bf16::from_f32(x).to_f32(),
                    })
                    .collect();
                (n, (s, d))
            })
            .collect();
        let wide = scratch(&format!("wide-{dtype:?}"));
        write_config(&wide, &gpt2_config());
        write_safetensors(&wide.join("model.safetensors"), &rounded, Dtype::F32);
        let narrow = scratch(&format!("narrow-{dtype:?}"));
        write_config(&narrow, &gpt2_config());
        write_safetensors(&narrow.join("model.safetensors"), &rounded, dtype);
        assert_eq!(logits(&wide), logits(&narrow), "{dtype:?}");
    }
}

#[test]
fn missing_misshapen_and_unexpected_tensors_are_all_named() {
    let mut tensors = gpt2_tensors();
    tensors.remove("transformer.h.1.mlp.c_fc.bias");
    tensors.remove("transformer.ln_f.weight");
    tensors
        .get_mut("transformer.h.0.attn.c_attn.weight")
        .unwrap()
        .0 = vec![24, 8];
    tensors.insert(
        "transformer.h.0.attn.c_attn.lora".into(),
        (vec![2], vec![0.0; 2]),
    );
    // Buffers HF ignores are ignored here too.
    tensors.insert(
        "transformer.h.0.attn.masked_bias".into(),
        (vec![1], vec![0.0]),
    );
    let dir = scratch("bad-tensors");
    write_config(&dir, &gpt2_config());
    write_safetensors(&dir.join("model.safetensors"), &tensors, Dtype::F32);
    let err = load_gpt2_dir(&dir, &device()).unwrap_err();
    let message = err.to_string();
    let HfError::Tensors {
        missing,
        mismatched,
        unexpected,
        ..
    } = err
    else {
        panic!("expected a tensor report, got: {message}");
    };
    assert_eq!(
        missing,
        ["transformer.h.1.mlp.c_fc.bias", "transformer.ln_f.weight"]
    );
    assert_eq!(
        mismatched,
        [(
            "transformer.h.0.attn.c_attn.weight".to_string(),
            vec![8, 24],
            vec![24, 8]
        )]
    );
    assert_eq!(unexpected, ["transformer.h.0.attn.c_attn.lora"]);
    for name in [
        "transformer.ln_f.weight",
        "transformer.h.1.mlp.c_fc.bias",
        "transformer.h.0.attn.c_attn.weight",
        "transformer.h.0.attn.c_attn.lora",
        "config.json",
    ] {
        assert!(message.contains(name), "message lacks {name}: {message}");
    }
}

#[test]
fn unknown_architecture_names_its_model_type() {
    let dir = scratch("unknown-arch");
    write_config(&dir, &json!({ "model_type": "mistral", "vocab_size": 11 }));
    let err = load_dir(&dir, &device()).unwrap_err();
    assert!(
        matches!(&err, HfError::UnknownArchitecture { model_type, .. } if model_type == "mistral"),
        "{err}"
    );
    assert!(err.to_string().contains("'mistral'"), "{err}");
}

#[test]
fn shards_that_disagree_with_their_index_are_rejected() {
    let tensors = gpt2_tensors();
    // The index assigns a tensor to the wrong shard.
    let dir = scratch("bad-index");
    write_config(&dir, &gpt2_config());
    let mut map = write_sharded(&dir, &tensors, 10);
    let moved = "transformer.wte.weight".to_string();
    let wrong = map.values().find(|f| **f != map[&moved]).unwrap().clone();
    map.insert(moved.clone(), wrong.clone());
    write_index(&dir, &map);
    let err = load_dir(&dir, &device()).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, HfError::ShardIndex { .. }), "{message}");
    assert!(
        message.contains(&moved) && message.contains(&wrong),
        "{message}"
    );

    // The index names a shard that is not there.
    let dir = scratch("missing-shard");
    write_config(&dir, &gpt2_config());
    let mut map = write_sharded(&dir, &tensors, 10);
    map.insert(moved.clone(), "model-00009-of-00009.safetensors".into());
    write_index(&dir, &map);
    let err = load_dir(&dir, &device()).unwrap_err();
    assert!(
        err.to_string().contains("model-00009-of-00009.safetensors"),
        "{err}"
    );
}

#[test]
fn folder_without_weights_says_what_it_looked_for() {
    let dir = scratch("no-weights");
    write_config(&dir, &gpt2_config());
    let err = load_dir(&dir, &device()).unwrap_err();
    assert!(matches!(err, HfError::NoWeights { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

#[test]
fn tokenizer_larger_than_the_embedding_is_rejected() {
    let dir = scratch("big-tokenizer");
    write_config(&dir, &gpt2_config());
    write_safetensors(&dir.join("model.safetensors"), &gpt2_tensors(), Dtype::F32);
    let vocab: serde_json::Map<String, serde_json::Value> =
        (0..9).map(|i| (format!("t{i}"), json!(i))).collect();
    let tokenizer = |added: u32| {
        json!({ "model": { "type": "BPE", "vocab": vocab, "merges": [] },
                "added_tokens": [{ "id": added, "content": "<|end|>", "special": true }] })
    };
    // 9 vocabulary entries plus an added token at id 10: 11 ids, as many as embedding rows.
    std::fs::write(dir.join("tokenizer.json"), tokenizer(10).to_string()).unwrap();
    load_dir(&dir, &device()).unwrap();
    // An added token at id 12 needs 13 rows.
    std::fs::write(dir.join("tokenizer.json"), tokenizer(12).to_string()).unwrap();
    let err = load_dir(&dir, &device()).unwrap_err();
    assert!(
        matches!(
            err,
            HfError::TokenizerVocab {
                tokenizer_vocab: 13,
                embedding_rows: 11,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}

#[test]
fn llama_configs_with_unsupported_options_are_rejected() {
    let base = json!({
        "model_type": "llama", "vocab_size": 11, "hidden_size": 8, "intermediate_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
        "rms_norm_eps": 1e-5, "max_position_embeddings": 32, "tie_word_embeddings": false,
        "rope_parameters": { "rope_theta": 500000.0, "rope_type": "default" }
    });
    // transformers-5 style `rope_parameters` alone sets θ.
    let CausalLmConfig::Llama(c) = config_of(&base) else {
        panic!("not llama")
    };
    assert_eq!(c.rope_theta, 500_000.0);
    for (key, value, needle) in [
        (
            "rope_scaling",
            json!({ "rope_type": "llama3", "factor": 8.0 }),
            "llama3",
        ),
        ("attention_bias", json!(true), "attention_bias"),
        ("hidden_act", json!("gelu"), "gelu"),
        ("num_key_value_heads", json!(3), "num_key_value_heads"),
    ] {
        let mut config = base.clone();
        config[key] = value;
        let dir = scratch(&format!("llama-{key}"));
        write_config(&dir, &config);
        let err = read_config(&dir).unwrap_err();
        assert!(matches!(err, HfError::Config { .. }), "{key}: {err}");
        assert!(err.to_string().contains(needle), "{key}: {err}");
    }
}

#[test]
fn untied_llama_and_gptj_load_from_synthetic_folders() {
    let llama = LlamaConfig {
        vocab_size: 11,
        hidden_size: 8,
        intermediate_size: 16,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        head_dim: None,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 32,
        tie_word_embeddings: false,
    };
    let dir = scratch("untied-llama");
    let mut config = serde_json::to_value(&llama).unwrap();
    config["model_type"] = json!("llama");
    write_config(&dir, &config);
    write_safetensors(
        &dir.join("model.safetensors"),
        &tensors_for(&llama_expected_tensors(&llama, "model.", &device())),
        Dtype::F32,
    );
    let (model, _) = load_dir(&dir, &device()).unwrap();
    let gfnlm_models::CausalLm::Llama(m) = &model else {
        panic!("not llama")
    };
    assert!(m.lm_head.is_some());
    assert_eq!(logits(&dir).len(), 5 * 11);

    let gptj = json!({
        "model_type": "gptj", "vocab_size": 11, "n_positions": 16, "n_embd": 8, "n_layer": 1,
        "n_head": 2, "rotary_dim": 2
    });
    let CausalLmConfig::GptJ(c) = config_of(&gptj) else {
        panic!("not gptj")
    };
    let dir = scratch("gptj");
    write_config(&dir, &gptj);
    let mut tensors = tensors_for(&gptj_expected_tensors(&c, &device()));
    // Real GPT-J checkpoints carry the causal-mask buffers; they are ignored.
    tensors.insert("transformer.h.0.attn.bias".into(), (vec![1], vec![1.0]));
    write_safetensors(&dir.join("model.safetensors"), &tensors, Dtype::F32);
    assert!(logits(&dir).iter().all(|x| x.is_finite()));
}

#[test]
fn zero_heads_and_absurd_sizes_are_config_errors_not_panics() {
    let llama = json!({
        "model_type": "llama", "vocab_size": 11, "hidden_size": 8, "intermediate_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
        "rms_norm_eps": 1e-5, "max_position_embeddings": 32
    });
    let gptj = json!({
        "model_type": "gptj", "vocab_size": 11, "n_positions": 16, "n_embd": 8, "n_layer": 1,
        "n_head": 2
    });
    for (base, key, value, needle) in [
        (
            &llama,
            "num_attention_heads",
            json!(0),
            "num_attention_heads must be > 0",
        ),
        (
            &llama,
            "num_key_value_heads",
            json!(0),
            "num_key_value_heads must be > 0",
        ),
        (
            &llama,
            "hidden_size",
            json!(1u64 << 40),
            "hidden_size = 1099511627776",
        ),
        (&llama, "head_dim", json!(u64::MAX), "head_dim"),
        (
            &llama,
            "num_hidden_layers",
            json!(u64::MAX),
            "num_hidden_layers",
        ),
        (&llama, "vocab_size", json!(0), "vocab_size must be > 0"),
        (&gpt2_config(), "n_head", json!(0), "n_head must be > 0"),
        (&gpt2_config(), "n_embd", json!(u64::MAX), "n_embd"),
        (
            &gpt2_config(),
            "n_positions",
            json!(0),
            "n_positions must be > 0",
        ),
        (&gptj, "n_head", json!(0), "n_head must be > 0"),
        (&gptj, "n_positions", json!(0), "n_positions must be > 0"),
        (
            &gptj,
            "n_layer",
            json!(1_000_000_000),
            "n_layer = 1000000000",
        ),
    ] {
        let mut config = base.clone();
        config[key] = value;
        let dir = scratch(&format!("sizes-{key}-{needle}").replace(' ', "_"));
        write_config(&dir, &config);
        let err = read_config(&dir).unwrap_err();
        assert!(matches!(err, HfError::Config { .. }), "{key}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains(needle) && msg.contains("config.json"),
            "{key}: {msg}"
        );
    }
}

#[test]
fn layer_counts_beyond_the_file_are_refused_with_a_short_message() {
    // 60,000 layers pass the absolute limit; the file holds the tensors of 2.
    let dir = scratch("many-layers");
    let mut config = gpt2_config();
    config["n_layer"] = json!(60_000);
    write_config(&dir, &config);
    write_safetensors(&dir.join("model.safetensors"), &gpt2_tensors(), Dtype::F32);
    let err = load_dir(&dir, &device()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, HfError::Config { .. }), "{msg}");
    assert!(
        msg.contains("n_layer = 60000") && msg.contains("holds only 28"),
        "{msg}"
    );
    assert!(msg.len() < 1000, "{} bytes", msg.len());
}

#[test]
fn tensor_reports_list_at_most_ten_names_of_each_kind() {
    let dir = scratch("junk-tensors");
    write_config(&dir, &gpt2_config());
    let junk: Tensors = (0..40)
        .map(|i| (format!("junk.{i}"), (vec![1], vec![0.0])))
        .collect();
    write_safetensors(&dir.join("model.safetensors"), &junk, Dtype::F32);
    let msg = load_dir(&dir, &device()).unwrap_err().to_string();
    assert!(msg.contains("… and 18 more"), "{msg}"); // 28 missing
    assert!(msg.contains("… and 30 more"), "{msg}"); // 40 unexpected
    assert!(msg.len() < 2000, "{} bytes", msg.len());
}

#[test]
fn non_finite_base_weights_are_refused_naming_the_tensor() {
    // GPT-2 Conv1D weights (read as stored) and a Llama nn.Linear (read transposed), f32 and
    // f16.
    let dir = scratch("nan-gpt2");
    write_config(&dir, &gpt2_config());
    let mut tensors = gpt2_tensors();
    tensors
        .get_mut("transformer.h.1.mlp.c_fc.weight")
        .unwrap()
        .1[5] = f32::NAN;
    write_safetensors(&dir.join("model.safetensors"), &tensors, Dtype::F32);
    let err = load_dir(&dir, &device()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, HfError::NonFinite { index: 5, .. }), "{msg}");
    assert!(
        msg.contains("transformer.h.1.mlp.c_fc.weight") && msg.contains("model.safetensors"),
        "{msg}"
    );

    let llama = LlamaConfig {
        vocab_size: 11,
        hidden_size: 8,
        intermediate_size: 16,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        head_dim: None,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 32,
        tie_word_embeddings: true,
    };
    let dir = scratch("inf-llama");
    let mut config = serde_json::to_value(&llama).unwrap();
    config["model_type"] = json!("llama");
    write_config(&dir, &config);
    let mut tensors = tensors_for(&llama_expected_tensors(&llama, "model.", &device()));
    tensors
        .get_mut("model.layers.0.self_attn.k_proj.weight")
        .unwrap()
        .1[3] = f32::INFINITY;
    write_safetensors(&dir.join("model.safetensors"), &tensors, Dtype::F16);
    let msg = load_dir(&dir, &device()).unwrap_err().to_string();
    assert!(
        msg.contains("model.layers.0.self_attn.k_proj.weight") && msg.contains("inf"),
        "{msg}"
    );
}

#[test]
fn every_model_reports_its_context_length() {
    let dir = scratch("context-gpt2");
    write_config(&dir, &gpt2_config());
    write_safetensors(&dir.join("model.safetensors"), &gpt2_tensors(), Dtype::F32);
    let (model, config) = load_dir(&dir, &device()).unwrap();
    assert_eq!((model.max_positions(), config.max_positions()), (16, 16));
    assert!(model.check_context(10, 6, "--max-tokens").is_ok());
    let e = model
        .check_context(10, 7, "--max-tokens")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("17 positions") && e.contains("at most 16") && e.contains("--max-tokens"),
        "{e}"
    );
    let llama = LlamaConfig {
        vocab_size: 11,
        hidden_size: 8,
        intermediate_size: 16,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        head_dim: None,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 32,
        tie_word_embeddings: true,
    };
    let m: gfnlm_models::CausalLm = llama.init_random(&device()).into();
    assert_eq!(m.max_positions(), 32);
}
