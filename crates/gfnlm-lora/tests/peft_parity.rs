//! Parity with Python's `peft` on the `tiny-{llama,gpt2,gptj}-lora` parity fixtures (override the
//! folder with `GFNLM_PARITY_DIR`): adapted log-probs within 1e-4 of `expected.json` /
//! `expected-gptj.json`, adapters off equal to the base model exactly, merged equal to unmerged
//! within 1e-5, and a save that reproduces the PEFT file's keys, shapes and values.

use burn::tensor::{Device, Tensor};
use gfnlm_lora::*;
use gfnlm_models::generate::position_logprobs;
use gfnlm_models::{LanguageModel, LlamaForCausalLm};
use gfnlm_test_support::parity_dir;
use serde_json::Value;

fn expected() -> Value {
    read_expected("expected.json")
}

fn read_expected(file: &str) -> Value {
    let p = parity_dir().join(file);
    let text = std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}; set GFNLM_PARITY_DIR", p.display()));
    serde_json::from_str(&text).unwrap()
}

fn base_model(device: &Device) -> LlamaForCausalLm {
    gfnlm_models::hf::load_llama_dir(&parity_dir().join("tiny-llama"), device)
        .unwrap()
        .0
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

fn host(t: Tensor<2>) -> Vec<Vec<f32>> {
    let [r, c] = t.dims();
    let v = t
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap();
    (0..r).map(|i| v[i * c..(i + 1) * c].to_vec()).collect()
}

/// Compares every recorded log-prob of `variant` with the model; returns the largest error.
fn check_variant<M: LanguageModel>(model: &M, exp: &Value, variant: &str, device: &Device) -> f64 {
    let fixed = ids(&exp["meta"]["fixed_token_ids"]);
    let mut worst = 0f64;
    for (p, want) in exp["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(exp["variants"][variant].as_array().unwrap())
    {
        let toks = ids(&p["token_ids"]);
        let lp = host(position_logprobs(model, &toks, device));
        let mut err = |a: f32, b: f64, what: &str| {
            let e = (a as f64 - b).abs();
            assert!(e < 1e-4, "{variant} {what}: {a} vs {b}");
            worst = worst.max(e);
        };
        for (row, want_row) in lp
            .iter()
            .zip(want["fixed_ids_logprobs_all_positions"].as_array().unwrap())
        {
            for (&id, w) in fixed.iter().zip(floats(want_row)) {
                err(row[id as usize], w, "fixed-id log-prob");
            }
        }
        let last = lp.last().unwrap();
        for (id, w) in ids(&want["top20_ids"])
            .into_iter()
            .zip(floats(&want["top20_logprobs"]))
        {
            err(last[id as usize], w, "top-20 log-prob");
        }
        let lse = want["last_logsumexp"].as_f64().unwrap();
        for (&id, w) in fixed.iter().zip(floats(&want["last_logits_fixed_ids"])) {
            err(
                (last[id as usize] as f64 + lse) as f32,
                w,
                "last logit (via logsumexp)",
            );
        }
        let seq: f64 = (1..toks.len())
            .map(|t| lp[t - 1][toks[t] as usize] as f64)
            .sum();
        let want_seq = want["seq_logprob_sum"].as_f64().unwrap();
        assert!(
            (seq - want_seq).abs() < 1e-4 * toks.len() as f64,
            "{variant} seq_logprob_sum {seq} vs {want_seq}"
        );
    }
    worst
}

fn all_logprobs<M: LanguageModel>(model: &M, exp: &Value, device: &Device) -> Vec<Tensor<2>> {
    exp["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| position_logprobs(model, &ids(&p["token_ids"]), device))
        .collect()
}

#[test]
fn tiny_llama_lora_matches_peft() {
    let device = Device::flex();
    let exp = expected();
    let base = base_model(&device);
    let base_lp = all_logprobs(&base, &exp, &device);

    let mut model = base.clone();
    let cfg = load_peft(&mut model, &parity_dir().join("tiny-llama-lora"), &device).unwrap();
    assert_eq!((cfg.r, cfg.scaling()), (8, 2.0));
    println!(
        "trainable params: {} || all params: {}",
        trainable_parameter_count(&model),
        total_parameter_count(&model)
    );
    // r·(in + out) per layer, hidden 16, kv width 8, intermediate 32:
    // 2 layers × 8·[(16+16)·2 (q, o) + (16+8)·2 (k, v) + (16+32)·3 (gate, up, down)]
    assert_eq!(
        trainable_parameter_count(&model),
        2 * 8 * (32 * 2 + 24 * 2 + 48 * 3)
    );

    let worst = check_variant(&model, &exp, "tiny-llama+lora", &device);
    println!("tiny-llama+lora: max |Δ| vs peft = {worst:.2e}");

    // Adapters off: bit-identical to the base model, and to peft's disable_adapter().
    set_adapters_enabled(&mut model, false);
    for (a, b) in all_logprobs(&model, &exp, &device)
        .into_iter()
        .zip(&base_lp)
    {
        a.into_data().assert_eq(&b.clone().into_data(), true);
    }
    check_variant(&model, &exp, "tiny-llama+lora(disabled)", &device);
    set_adapters_enabled(&mut model, true);

    // Merged vs unmerged, all positions, full vocab.
    let unmerged = all_logprobs(&model, &exp, &device);
    assert_eq!(merge(&mut model), 14);
    let merged = all_logprobs(&model, &exp, &device);
    let mut max = 0f32;
    for (a, b) in merged.into_iter().zip(unmerged) {
        max = max.max((a - b).abs().max().into_scalar::<f32>());
    }
    println!("merged vs unmerged: max |Δ| = {max:.2e}");
    assert!(max < 1e-5, "merged vs unmerged differ by {max}");
    check_variant(&model, &exp, "tiny-llama+lora", &device);
}

/// The three PEFT checks for one architecture: adapted, disabled (= base, bit-exact), merged.
fn check_architecture<M: AdaptableModel + LanguageModel>(
    base: M,
    exp: &Value,
    name: &str,
    adapted_layers: usize,
    device: &Device,
) {
    let base_lp = all_logprobs(&base, exp, device);
    let mut model = base.clone();
    let cfg = load_peft(
        &mut model,
        &parity_dir().join(format!("{name}-lora")),
        device,
    )
    .unwrap();
    assert_eq!((cfg.r, cfg.scaling()), (8, 2.0));
    let worst = check_variant(&model, exp, &format!("{name}+lora"), device);
    println!("{name}+lora: max |Δ| vs peft = {worst:.2e}");
    set_adapters_enabled(&mut model, false);
    for (a, b) in all_logprobs(&model, exp, device).into_iter().zip(&base_lp) {
        a.into_data().assert_eq(&b.clone().into_data(), true);
    }
    check_variant(&model, exp, &format!("{name}+lora(disabled)"), device);
    set_adapters_enabled(&mut model, true);
    let unmerged = all_logprobs(&model, exp, device);
    assert_eq!(merge(&mut model), adapted_layers);
    let mut max = 0f32;
    for (a, b) in all_logprobs(&model, exp, device).into_iter().zip(unmerged) {
        max = max.max((a - b).abs().max().into_scalar::<f32>());
    }
    println!("{name}: merged vs unmerged max |Δ| = {max:.2e}");
    assert!(max < 1e-5, "{name}: merged vs unmerged differ by {max}");
}

#[test]
fn tiny_gpt2_lora_matches_peft() {
    // fan_in_fan_out: true (Conv1D); c_proj matches both attn.c_proj and mlp.c_proj.
    let device = Device::flex();
    let (base, _) =
        gfnlm_models::hf::load_gpt2_dir(&parity_dir().join("tiny-gpt2"), &device).unwrap();
    check_architecture(base, &expected(), "tiny-gpt2", 8, &device);
}

#[test]
fn tiny_gptj_lora_matches_peft() {
    let device = Device::flex();
    let (base, _) =
        gfnlm_models::hf::load_gptj_dir(&parity_dir().join("tiny-gptj"), &device).unwrap();
    check_architecture(
        base,
        &read_expected("expected-gptj.json"),
        "tiny-gptj",
        12,
        &device,
    );
}

#[test]
fn saved_adapter_reproduces_the_peft_file() {
    let device = Device::flex();
    let src = parity_dir().join("tiny-llama-lora");
    let mut model = base_model(&device);
    let cfg = load_peft(&mut model, &src, &device).unwrap();
    let out = std::env::temp_dir().join(format!("gfnlm-lora-parity-{}", std::process::id()));
    save_peft(&model, &cfg, &out).unwrap();

    let a = std::fs::read(src.join("adapter_model.safetensors")).unwrap();
    let b = std::fs::read(out.join("adapter_model.safetensors")).unwrap();
    let (a, b) = (
        safetensors::SafeTensors::deserialize(&a).unwrap(),
        safetensors::SafeTensors::deserialize(&b).unwrap(),
    );
    let (mut na, mut nb) = (a.names(), b.names());
    na.sort();
    nb.sort();
    assert_eq!(na, nb);
    for n in na {
        let (ta, tb) = (a.tensor(n).unwrap(), b.tensor(n).unwrap());
        assert_eq!(ta.shape(), tb.shape(), "{n}");
        assert_eq!(ta.dtype(), tb.dtype(), "{n}");
        assert_eq!(ta.data(), tb.data(), "{n}: values differ");
    }
    // The written config is PEFT's, with the same adapter-relevant fields.
    let orig: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("adapter_config.json")).unwrap())
            .unwrap();
    let ours: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap())
            .unwrap();
    for k in [
        "r",
        "lora_alpha",
        "lora_dropout",
        "peft_type",
        "bias",
        "use_rslora",
        "use_dora",
        "fan_in_fan_out",
        "task_type",
        "base_model_name_or_path",
        "target_modules",
    ] {
        assert_eq!(ours[k], orig[k], "{k}");
    }
    std::fs::remove_dir_all(&out).unwrap();
}
