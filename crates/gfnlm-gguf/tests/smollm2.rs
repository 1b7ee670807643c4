//! Parity with the real SmolLM2-135M-Instruct Q4_1 GGUF: hyper-parameters, tensor types and
//! the dequantised-weight fingerprints recorded by transformers in the parity fixtures'
//! `smollm2.json`.
//!
//! The model comes from the fetch step (`gfnlm_fetch::ensure_default_model`, i.e. `$GFNLM_MODEL`
//! or the cache, fetched on first use); the parity folder is `$GFNLM_PARITY_DIR` (default
//! `crates/gfnlm-test-support/fixtures`). Either missing is a failure, never a skip.

use std::collections::BTreeMap;

use gfnlm_gguf::{GgmlType, GgufFile, llama};

fn inputs() -> (GgufFile, serde_json::Value) {
    let model = gfnlm_fetch::ensure_default_model()
        .unwrap_or_else(|e| panic!("the default model is needed: {e}"));
    let j = gfnlm_test_support::parity_dir().join("smollm2.json");
    let text = std::fs::read_to_string(&j).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; set GFNLM_PARITY_DIR to the parity folder",
            j.display()
        )
    });
    (
        GgufFile::open(model).unwrap(),
        serde_json::from_str(&text).unwrap(),
    )
}

#[test]
fn hyper_parameters_and_tensor_types_match_transformers() {
    let (file, json) = inputs();
    let cfg = &json["meta"]["config"];
    let hp = llama::LlamaHParams::from_gguf(&file).unwrap();
    assert_eq!(hp.architecture, "llama");
    assert_eq!(hp.vocab_size as u64, cfg["vocab_size"].as_u64().unwrap());
    assert_eq!(hp.hidden_size as u64, cfg["hidden_size"].as_u64().unwrap());
    assert_eq!(
        hp.intermediate_size as u64,
        cfg["intermediate_size"].as_u64().unwrap()
    );
    assert_eq!(
        hp.num_layers as u64,
        cfg["num_hidden_layers"].as_u64().unwrap()
    );
    assert_eq!(
        hp.num_heads as u64,
        cfg["num_attention_heads"].as_u64().unwrap()
    );
    assert_eq!(
        hp.num_kv_heads as u64,
        cfg["num_key_value_heads"].as_u64().unwrap()
    );
    assert_eq!(hp.head_dim as u64, cfg["head_dim"].as_u64().unwrap());
    assert_eq!(
        hp.context_length as u64,
        cfg["max_position_embeddings"].as_u64().unwrap()
    );
    let theta = cfg["rope_parameters"]["rope_theta"].as_f64().unwrap();
    assert_eq!(f64::from(hp.rope_theta), theta);
    assert_eq!(
        f64::from(hp.rms_norm_eps),
        cfg["rms_norm_eps"].as_f64().unwrap()
    );
    assert_eq!(
        hp.tie_word_embeddings,
        cfg["tie_word_embeddings"].as_bool().unwrap()
    );

    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for t in file.tensors() {
        *counts.entry(t.ty().to_string()).or_default() += 1;
    }
    let want: BTreeMap<String, u64> = json["meta"]["gguf_tensor_types"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(counts, want);
    assert_eq!(
        file.tensor("token_embd.weight").unwrap().ty(),
        GgmlType::Q8_0
    );
    assert_eq!(
        file.get_str_array("tokenizer.ggml.tokens").unwrap()[2],
        "<|im_end|>"
    );
}

#[test]
fn dequantised_weights_match_transformers_fingerprints() {
    let (file, json) = inputs();
    let hp = llama::LlamaHParams::from_gguf(&file).unwrap();
    let fps = json["meta"]["dequantised_weight_fingerprints"]
        .as_object()
        .unwrap();
    assert!(fps.len() >= 7);
    for (hf, fp) in fps {
        let gguf_name = file
            .tensors()
            .iter()
            .map(|t| t.name())
            .find(|n| llama::hf_name(n).as_deref() == Some(hf.as_str()))
            .unwrap_or_else(|| panic!("no GGUF tensor maps to {hf}"));
        let t = llama::load_hf_layout(&file, &hp, gguf_name).unwrap();
        let shape: Vec<usize> = fp["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.shape, shape, "{hf}");
        let first: Vec<f32> = fp["row0_first8"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        // exact: the weights are reproducible bit for bit. (Row 0 and the sums are the same in
        // the GGUF and HF row orders, so these fingerprints cannot check the Q/K
        // un-permutation; the unit tests in src/llama.rs do.)
        assert_eq!(t.data[..first.len()], first[..], "{hf} row 0");
        let sum: f64 = t.data.iter().map(|&x| f64::from(x)).sum();
        let abs: f64 = t.data.iter().map(|&x| f64::from(x).abs()).sum();
        let (want_sum, want_abs) = (
            fp["sum_f64"].as_f64().unwrap(),
            fp["abs_sum_f64"].as_f64().unwrap(),
        );
        // f64 sums of the same f32 values differ only by summation order
        assert!(
            (sum - want_sum).abs() <= 1e-9 * want_abs,
            "{hf}: sum {sum} vs {want_sum}"
        );
        assert!(
            (abs - want_abs).abs() <= 1e-9 * want_abs,
            "{hf}: abs sum {abs} vs {want_abs}"
        );
    }
}
