//! LoRA on a tiny random Llama: training contract, policy/base switch, merge, PEFT round trip,
//! and the errors for adapters that do not fit.

use std::path::PathBuf;

use burn::module::{Module, Param};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData, Tolerance};
use gfnlm_lora::*;
use gfnlm_models::{LlamaConfig, LlamaForCausalLm};
use serde_json::Value;

fn tiny_config(hidden: usize) -> LlamaConfig {
    LlamaConfig {
        vocab_size: 50,
        hidden_size: hidden,
        intermediate_size: 2 * hidden,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: None,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 64,
        tie_word_embeddings: false,
    }
}

fn tokens(device: &Device) -> Tensor<2, Int> {
    let ids: Vec<i64> = vec![1, 7, 3, 9, 22, 4, 0, 49, 5, 5, 12, 30];
    Tensor::from_data(TensorData::new(ids, [2, 6]), device)
}

/// Gives every adapter a random `B` so that it changes the output.
fn randomize_b(model: &mut LlamaForCausalLm, device: &Device) {
    model.for_each_linear_mut(&mut |_, lin| {
        if let Some(l) = lin.lora.as_mut() {
            let shape = l.lora_b.shape().dims::<2>();
            l.lora_b = Param::from_tensor(Tensor::random(
                shape,
                Distribution::Normal(0.0, 0.3),
                device,
            ));
        }
    });
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gfnlm-lora-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn max_abs_diff(a: Tensor<3>, b: Tensor<3>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

#[test]
fn only_adapters_get_gradients_and_optimizer_state() {
    let device = Device::flex().autodiff();
    let mut model = tiny_config(16).init_random(&device);
    let total_before = model.num_params();
    let cfg = LoraConfig::new(4, 8.0, &LLAMA_TARGETS);
    let report = apply_lora_seeded(&mut model, &cfg, 7, &device).unwrap();
    println!("{report}");
    assert_eq!(report.adapted.len(), 14);
    assert!(!report.adapted.iter().any(|n| n == "lm_head"));
    // Per layer: q 4·(16+16), k 4·(16+8), v 4·(16+8), o 4·(16+16), gate/up 4·(16+32), down 4·(32+16).
    let per_layer = 4 * (32 + 24 + 24 + 32 + 48 * 3);
    assert_eq!(report.trainable_params, 2 * per_layer);
    assert_eq!(report.total_params, total_before + 2 * per_layer);
    // The tensors agree with the bookkeeping: exactly the adapters require gradients.
    assert_eq!(
        require_grad_parameter_count(&model),
        report.trainable_params
    );
    randomize_b(&mut model, &device);
    freeze_all(&mut model);
    assert_eq!(
        require_grad_parameter_count(&model),
        report.trainable_params
    );

    let logits = model.forward(tokens(&device), None);
    let loss = burn::tensor::activation::log_softmax(logits, 2)
        .slice([0..2, 0..6, 3..4])
        .mean()
        .neg();
    let grads = loss.backward();

    let mut adapters = 0;
    model.for_each_linear(&mut |name, lin| {
        assert!(
            lin.weight.val().grad(&grads).is_none(),
            "{name}: base weight got a gradient"
        );
        if let Some(l) = &lin.lora {
            adapters += 1;
            for (f, p) in [("A", &l.lora_a), ("B", &l.lora_b)] {
                let g = p
                    .val()
                    .grad(&grads)
                    .unwrap_or_else(|| panic!("{name}.{f}: no grad"));
                let norm = g.abs().sum().into_scalar::<f32>();
                assert!(norm > 0.0, "{name}.{f}: zero gradient");
            }
        }
    });
    assert_eq!(adapters, 14);
    assert!(model.model.embed_tokens.weight.val().grad(&grads).is_none());
    assert!(model.model.norm.weight.val().grad(&grads).is_none());

    let before = model.clone();
    let mut optim = AdamWConfig::new().init();
    let gp = GradientsParams::from_grads(grads, &model);
    let after = optim.step(1e-2, model, gp);
    // AdamW keeps two moments per parameter it saw a gradient for: the 28 adapter factors.
    assert_eq!(optim.to_record().len(), 2 * 2 * 14);

    let mut base_unchanged = Vec::new();
    before.for_each_linear(&mut |_, lin| base_unchanged.push(lin.weight.val().into_data()));
    let mut i = 0;
    after.for_each_linear(&mut |name, lin| {
        lin.weight
            .val()
            .into_data()
            .assert_eq(&base_unchanged[i], true);
        i += 1;
        if let Some(l) = &lin.lora {
            let _ = name;
            assert!(l.lora_a.val().is_require_grad());
        }
    });
    after
        .model
        .embed_tokens
        .weight
        .val()
        .into_data()
        .assert_eq(&before.model.embed_tokens.weight.val().into_data(), true);
    // The adapters moved.
    let mut moved = 0;
    let mut b_before = Vec::new();
    before.for_each_linear(&mut |_, lin| {
        if let Some(l) = &lin.lora {
            b_before.push((l.lora_a.val().inner(), l.lora_b.val().inner()));
        }
    });
    let mut j = 0;
    after.for_each_linear(&mut |_, lin| {
        if let Some(l) = &lin.lora {
            let (a0, b0) = &b_before[j];
            j += 1;
            let da = (l.lora_a.val().inner() - a0.clone())
                .abs()
                .max()
                .into_scalar::<f32>();
            let db = (l.lora_b.val().inner() - b0.clone())
                .abs()
                .max()
                .into_scalar::<f32>();
            moved += (da > 1e-4 && db > 1e-4) as usize;
        }
    });
    assert_eq!(moved, 14);
}

#[test]
fn fresh_adapters_start_at_the_base_model_and_switch_off_exactly() {
    let device = Device::flex();
    // The paper's r = 64 needs every adapted layer at least 64 wide (k/v: hidden / 2).
    let mut model = tiny_config(128).init_random(&device);
    let base = model.forward(tokens(&device), None);
    apply_lora(&mut model, &LoraConfig::paper_llama(), &device).unwrap();
    // B = 0: the adapted model equals the base.
    let fresh = model.forward(tokens(&device), None);
    assert!(max_abs_diff(fresh, base.clone()) < 1e-5);
    // A is PEFT's kaiming-uniform: |A| ≤ 1/√d_in.
    model.for_each_linear(&mut |name, lin| {
        if let Some(l) = &lin.lora {
            let max = l.lora_a.val().abs().max().into_scalar::<f32>();
            let bound = 1.0 / (lin.d_in() as f32).sqrt();
            assert!(max <= bound && max > 0.5 * bound, "{name}: max |A| = {max}");
            assert_eq!(l.scale, 16.0 / 64.0);
        }
    });

    randomize_b(&mut model, &device);
    let policy = model.forward(tokens(&device), None);
    assert!(max_abs_diff(policy.clone(), base.clone()) > 1e-2);
    assert_eq!(adapters_enabled(&model), Some(true));

    set_adapters_enabled(&mut model, false);
    assert_eq!(adapters_enabled(&model), Some(false));
    let off = model.forward(tokens(&device), None);
    off.into_data().assert_eq(&base.clone().into_data(), true);
    set_adapters_enabled(&mut model, true);
    let on_again = model.forward(tokens(&device), None);
    on_again
        .into_data()
        .assert_eq(&policy.clone().into_data(), true);

    let reward = with_adapters_disabled(&mut model, |m| m.forward(tokens(&device), None));
    reward.into_data().assert_eq(&base.into_data(), true);
    assert_eq!(adapters_enabled(&model), Some(true));
}

#[test]
fn merged_equals_unmerged() {
    let device = Device::flex();
    let mut model = tiny_config(128).init_random(&device);
    apply_lora_seeded(&mut model, &LoraConfig::paper_llama(), 3, &device).unwrap();
    randomize_b(&mut model, &device);
    let unmerged = model.forward(tokens(&device), None);
    let mut w0 = Vec::new();
    model.for_each_linear(&mut |_, l| w0.push(l.weight.val()));

    assert_eq!(merge(&mut model), 14);
    let merged = model.forward(tokens(&device), None);
    assert!(max_abs_diff(merged, unmerged.clone()) < 1e-5);
    assert_eq!(merge(&mut model), 0, "already merged");

    assert_eq!(unmerge(&mut model), 14);
    let mut i = 0;
    model.for_each_linear(&mut |_, l| {
        l.weight
            .val()
            .into_data()
            .assert_approx_eq::<f32>(&w0[i].clone().into_data(), Tolerance::absolute(1e-6));
        i += 1;
    });
    let again = model.forward(tokens(&device), None);
    assert!(max_abs_diff(again, unmerged) < 1e-5);

    merge_and_unload(&mut model);
    assert_eq!(trainable_parameter_count(&model), 0);
}

#[test]
fn peft_save_load_round_trip() {
    let device = Device::flex();
    let base = tiny_config(16).init_random(&device);
    let mut model = base.clone();
    let mut cfg = LoraConfig::new(4, 16.0, &["q_proj", "v_proj", "down_proj"]);
    cfg.use_rslora = true;
    apply_lora_seeded(&mut model, &cfg, 1, &device).unwrap();
    randomize_b(&mut model, &device);
    let want = model.forward(tokens(&device), None);

    let dir = tmp_dir("roundtrip");
    save_peft(&model, &cfg, &dir).unwrap();
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(json["r"], 4);
    assert_eq!(json["peft_type"], "LORA");
    let bytes = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.names().len(), 2 * 3 * 2);
    let a = st
        .tensor("base_model.model.model.layers.1.mlp.down_proj.lora_A.weight")
        .unwrap();
    assert_eq!(a.shape(), [4, 32]);
    let b = st
        .tensor("base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight")
        .unwrap();
    assert_eq!(b.shape(), [8, 4]);

    let mut loaded = base.clone();
    let got_cfg = load_peft(&mut loaded, &dir, &device).unwrap();
    assert_eq!(got_cfg, cfg);
    let got = loaded.forward(tokens(&device), None);
    got.into_data().assert_eq(&want.into_data(), true);
    assert_eq!(
        trainable_parameter_count(&loaded),
        trainable_parameter_count(&model)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mismatched_adapters_list_every_problem() {
    let device = Device::flex();
    let mut small = tiny_config(16).init_random(&device);
    let cfg = LoraConfig::new(4, 8.0, &["q_proj", "v_proj"]);
    apply_lora(&mut small, &cfg, &device).unwrap();
    let dir = tmp_dir("mismatch");
    save_peft(&small, &cfg, &dir).unwrap();

    // Wrong widths: every q/v tensor of both layers is reported.
    let mut wide = tiny_config(32).init_random(&device);
    let err = load_peft(&mut wide, &dir, &device).unwrap_err();
    let LoraError::Mismatch(problems) = &err else {
        panic!("expected a mismatch, got {err}")
    };
    assert_eq!(problems.len(), 8, "{err}");
    assert!(
        err.to_string()
            .contains("self_attn.q_proj.lora_A.weight: shape [4, 16]")
    );
    assert!(
        wide.model.layers[0].self_attn.q_proj.lora.is_none(),
        "nothing attached on error"
    );

    // Rank in the config disagrees with the tensors.
    let cfg_path = dir.join("adapter_config.json");
    let original = std::fs::read_to_string(&cfg_path).unwrap();
    let mut v: Value = serde_json::from_str(&original).unwrap();
    v["r"] = 8.into();
    std::fs::write(&cfg_path, v.to_string()).unwrap();
    let mut m = tiny_config(16).init_random(&device);
    let msg = load_peft(&mut m, &dir, &device).unwrap_err().to_string();
    assert!(
        msg.contains("8 problem(s)") && msg.contains("r = 8"),
        "{msg}"
    );

    // Targets: v_proj dropped from the config → its tensors are unexpected.
    v["r"] = 4.into();
    v["target_modules"] = serde_json::json!(["q_proj", "k_proj"]);
    std::fs::write(&cfg_path, v.to_string()).unwrap();
    let msg = load_peft(&mut m, &dir, &device).unwrap_err().to_string();
    assert!(
        msg.contains(
            "missing tensor base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"
        ),
        "{msg}"
    );
    assert!(
        msg.contains(
            "unexpected tensor base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"
        ),
        "{msg}"
    );

    // Targets that match nothing name the model's layers.
    v["target_modules"] = serde_json::json!(["c_attn"]);
    std::fs::write(&cfg_path, v.to_string()).unwrap();
    let msg = load_peft(&mut m, &dir, &device).unwrap_err().to_string();
    assert!(
        msg.contains("match no linear layer") && msg.contains("gate_proj"),
        "{msg}"
    );

    // DoRA is refused by name.
    v["target_modules"] = serde_json::json!(["q_proj", "v_proj"]);
    v["use_dora"] = true.into();
    std::fs::write(&cfg_path, v.to_string()).unwrap();
    let err = load_peft(&mut m, &dir, &device).unwrap_err();
    assert!(matches!(err, LoraError::Unsupported(_)) && err.to_string().contains("use_dora"));

    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn save_refuses_adapters_the_config_does_not_describe() {
    let device = Device::flex();
    let mut model = tiny_config(16).init_random(&device);
    apply_lora(&mut model, &LoraConfig::new(2, 4.0, &["q_proj"]), &device).unwrap();
    let err = save_peft(
        &model,
        &LoraConfig::new(2, 4.0, &["k_proj"]),
        &tmp_dir("refuse"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("k_proj: targeted by the config but has no adapter"),
        "{err}"
    );
    assert!(err.contains("q_proj: has an adapter"), "{err}");
}

#[test]
fn rank_above_a_layer_width_is_refused_before_allocating() {
    let device = Device::flex();
    let mut model = tiny_config(16).init_random(&device);
    // k/v projections are 16 → 8 wide: r = 9 is too large for them, r = 8 fits.
    let err = apply_lora(&mut model, &LoraConfig::new(9, 8.0, &["k_proj"]), &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("r = 9") && err.contains("k_proj") && err.contains("min(in, out) = 8"),
        "{err}"
    );
    assert!(model.model.layers[0].self_attn.k_proj.lora.is_none());
    // An absurd rank fails the same way, at once (no r × width allocation).
    let err = apply_lora(
        &mut model,
        &LoraConfig::new(1 << 40, 8.0, &["q_proj"]),
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("exceeds the width"), "{err}");
    apply_lora(&mut model, &LoraConfig::new(8, 8.0, &["k_proj"]), &device).unwrap();
}

#[test]
fn non_finite_adapter_weights_are_refused_naming_the_tensor() {
    let device = Device::flex();
    let mut model = tiny_config(16).init_random(&device);
    let cfg = LoraConfig::new(4, 8.0, &["q_proj"]);
    apply_lora(&mut model, &cfg, &device).unwrap();
    model.model.layers[1]
        .self_attn
        .q_proj
        .lora
        .as_mut()
        .unwrap()
        .lora_b = Param::from_tensor(Tensor::<2>::zeros([4, 16], &device).add_scalar(f32::NAN));
    let dir = tmp_dir("nan-adapter");
    save_peft(&model, &cfg, &dir).unwrap();
    let mut fresh = tiny_config(16).init_random(&device);
    let err = load_peft(&mut fresh, &dir, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.layers.1.self_attn.q_proj.lora_B.weight") && err.contains("non-finite"),
        "{err}"
    );
    assert!(fresh.model.layers[1].self_attn.q_proj.lora.is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}
