//! The GPT-2/GPT-J linear walkers name and shape every layer the way PEFT does: each
//! `lora_A`/`lora_B` pair in the `tiny-gpt2-lora` and `tiny-gptj-lora` adapters finds a layer
//! of the walker with the adapter's input and output widths.

use std::collections::BTreeMap;

use gfnlm_models::hf::{SafetensorsWeights, load_gpt2_dir, load_gptj_dir};
use gfnlm_test_support::parity_dir;

/// `module name → (in, out)` from a PEFT adapter's `lora_A [r, in]` / `lora_B [out, r]`.
fn adapter_targets(adapter: &str) -> BTreeMap<String, (usize, usize)> {
    let weights = SafetensorsWeights::open_file(
        &parity_dir().join(adapter).join("adapter_model.safetensors"),
    )
    .unwrap();
    let mut targets: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (name, entry) in weights.tensors() {
        let name = name.strip_prefix("base_model.model.").unwrap();
        if let Some(module) = name.strip_suffix(".lora_A.weight") {
            targets.entry(module.into()).or_default().0 = entry.shape[1];
        } else if let Some(module) = name.strip_suffix(".lora_B.weight") {
            targets.entry(module.into()).or_default().1 = entry.shape[0];
        } else {
            panic!("unexpected adapter tensor {name}");
        }
    }
    targets
}

fn check(walked: BTreeMap<String, (usize, usize)>, adapter: &str) {
    let targets = adapter_targets(adapter);
    assert!(!targets.is_empty());
    for (module, dims) in &targets {
        assert_eq!(walked.get(module), Some(dims), "{adapter}: {module}");
    }
}

#[test]
fn gpt2_walker_matches_peft_target_modules() {
    let device = gfnlm_models::parse_device("flex").unwrap();
    let (mut model, _) = load_gpt2_dir(&parity_dir().join("tiny-gpt2"), &device).unwrap();
    let mut walked = BTreeMap::new();
    model.for_each_linear(&mut |n, l| {
        walked.insert(n.to_string(), (l.d_in(), l.d_out()));
    });
    assert_eq!(walked.len(), 8);
    check(walked.clone(), "tiny-gpt2-lora");
    let mut order = Vec::new();
    model.for_each_linear_mut(&mut |n, _| order.push(n.to_string()));
    assert_eq!(order.len(), walked.len());
    assert!(order.iter().all(|n| walked.contains_key(n)));
}

#[test]
fn gptj_walker_matches_peft_target_modules() {
    let device = gfnlm_models::parse_device("flex").unwrap();
    let (mut model, _) = load_gptj_dir(&parity_dir().join("tiny-gptj"), &device).unwrap();
    let mut walked = BTreeMap::new();
    model.for_each_linear(&mut |n, l| {
        walked.insert(n.to_string(), (l.d_in(), l.d_out()));
    });
    assert_eq!(walked.len(), 13);
    assert_eq!(walked["lm_head"], (16, 49152));
    check(walked.clone(), "tiny-gptj-lora");
    let mut order = Vec::new();
    model.for_each_linear_mut(&mut |n, _| order.push(n.to_string()));
    assert_eq!(order.len(), walked.len());
}
