//! Folding a trained adapter into the base weights (`base_adapter` in the config): the
//! reference's infilling reward is a supervised fine-tune of the LM with its adapters off; here
//! that fine-tune is merged into the weights, so the new LoRA, the policy and the reward all
//! start from it.

use std::path::Path;

use burn::tensor::Device;
use gfnlm_lora::{LoraConfig, LoraError};
use gfnlm_models::CausalLm;

/// Loads the PEFT adapter in `dir` onto `model` and merges it into the weights, leaving no
/// adapter attached (PEFT's `merge_and_unload`). Returns the adapter's config.
pub fn merge_base_adapter(
    model: &mut CausalLm,
    dir: &Path,
    device: &Device,
) -> Result<LoraConfig, LoraError> {
    let cfg = gfnlm_lora::load_peft(model, dir, device)?;
    gfnlm_lora::merge_and_unload(model);
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tensor;
    use gfnlm_models::generate::tokens_tensor;
    use gfnlm_models::hf::load_llama_dir;

    fn host(t: Tensor<3>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_into_vec().unwrap()
    }

    /// The merged model computes what the model with the adapter attached computes, and has no
    /// adapter left (a new LoRA can be attached on top).
    #[test]
    fn merged_base_equals_the_attached_adapter() {
        let device = Device::default();
        let dir = gfnlm_test_support::parity_dir();
        let load = || CausalLm::Llama(load_llama_dir(&dir.join("tiny-llama"), &device).unwrap().0);
        let tokens = tokens_tensor(&[vec![1, 5, 9, 2, 7]], &device);
        let mut attached = load();
        gfnlm_lora::load_peft(&mut attached, &dir.join("tiny-llama-lora"), &device).unwrap();
        let want = host(attached.forward(tokens.clone(), None));
        let plain = host(load().forward(tokens.clone(), None));
        let mut merged = load();
        merge_base_adapter(&mut merged, &dir.join("tiny-llama-lora"), &device).unwrap();
        assert_eq!(gfnlm_lora::trainable_parameter_count(&merged), 0);
        let got = host(merged.forward(tokens, None));
        let diff = want
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let moved = want
            .iter()
            .zip(&plain)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-4, "merged vs attached: {diff}");
        assert!(moved > 1e-3, "the adapter changes the logits ({moved})");
        assert!(merge_base_adapter(&mut merged, &dir.join("missing"), &device).is_err());
    }
}

#[cfg(test)]
mod init_tests {
    use burn::tensor::{Device, Tensor};
    use gfnlm_models::CausalLm;
    use gfnlm_models::generate::tokens_tensor;
    use gfnlm_models::hf::load_llama_dir;
    use gfnlm_tasks::TaskSection;

    use crate::{TrainConfig, TrainError, Trainer};

    fn host(t: Tensor<3>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_into_vec().unwrap()
    }

    /// `init_adapter` starts the trained LoRA from a PEFT adapter (the policy computes what the
    /// adapter computes), keeps the base model adapter-free, and refuses a different rank.
    #[test]
    fn init_adapter_starts_the_policy_from_the_adapter() {
        let dir = gfnlm_test_support::parity_dir();
        let lora = dir.join("tiny-llama-lora");
        let device = Device::default();
        let autodiff = device.clone().autodiff();
        let load =
            |d: &Device| CausalLm::Llama(load_llama_dir(&dir.join("tiny-llama"), d).unwrap().0);
        let build = |r: usize| {
            let mut cfg = TrainConfig {
                init_adapter: Some(lora.to_string_lossy().into()),
                task: TaskSection::named("rng"),
                ..TrainConfig::default()
            };
            cfg.lora.r = r;
            cfg.lora.alpha = 16.0;
            let tok = gfnlm_tokenizer::Tokenizer::from_file(gfnlm_test_support::tokenizer_json())
                .unwrap();
            let data = gfnlm_test_support::datasets_dir();
            let inputs = gfnlm_tasks::TaskInputs {
                tokenizer: &tok,
                data_dir: &data,
            };
            let task = gfnlm_tasks::from_config(&cfg.task, &inputs).unwrap();
            let update = crate::update_from_config(&cfg);
            Trainer::new(cfg, load(&autodiff), task, update, autodiff.clone())
        };
        let trainer = build(8).unwrap();
        let tokens = tokens_tensor(&[vec![1, 5, 9, 2, 7]], &device);
        let mut want = load(&device);
        gfnlm_lora::load_peft(&mut want, &lora, &device).unwrap();
        let want = host(want.forward(tokens.clone(), None));
        let policy = trainer.policy();
        let got = host(policy.forward(tokens.clone(), None));
        let diff = want
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "policy vs adapter: {diff}");
        let base = host(trainer.base_model().forward(tokens.clone(), None));
        let plain = host(load(&device).forward(tokens, None));
        let diff = base
            .iter()
            .zip(&plain)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            diff < 1e-5,
            "the reward's base model has no adapter: {diff}"
        );
        match build(4) {
            Err(TrainError::Config(m)) => {
                assert!(m.contains("init_adapter") && m.contains("r = 8"), "{m}")
            }
            other => panic!(
                "a rank mismatch must be a config error, got {:?}",
                other.err()
            ),
        }
    }
}
