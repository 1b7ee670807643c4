//! LoRA adapters for gfnlm backbones, the way the GFlowNet fine-tuning paper uses them
//! (r = 64, α = 16 on the attention and MLP projections), with the base model reused as the
//! reward model by switching the adapters off: one copy of the weights.
//!
//! - Adapters live on [`gfnlm_models::Linear`] as [`gfnlm_models::linear::LoraAdapter`]; the
//!   forward pass adds `scale·(x·A)·B` and never materialises `W + scale·A·B`
//!   (see `docs/performance.md`, section LoRA, for the measured comparison with burn's built-in LoRA).
//! - [`apply_lora`] attaches PEFT-initialised adapters to the layers whose Hugging Face names
//!   match [`LoraConfig::target_modules`] and freezes every other parameter.
//! - [`set_adapters_enabled`] / [`with_adapters_disabled`] switch between policy and base;
//!   [`merge`] / [`unmerge`] fold the adapters into the weights and back.
//! - [`save_peft`] / [`load_peft`] read and write PEFT's `adapter_config.json` +
//!   `adapter_model.safetensors`, so adapters move between this crate and Python's `peft`.
//!
//! ```
//! use burn::tensor::Device;
//! use gfnlm_lora::{LoraConfig, apply_lora, set_adapters_enabled};
//! use gfnlm_models::LlamaConfig;
//!
//! let device = Device::flex();
//! let mut model = LlamaConfig {
//!     vocab_size: 32, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1,
//!     num_attention_heads: 2, num_key_value_heads: 1, head_dim: None, rms_norm_eps: 1e-5,
//!     rope_theta: 10_000.0, max_position_embeddings: 64, tie_word_embeddings: true,
//! }
//! .init_random(&device);
//! let report = apply_lora(&mut model, &LoraConfig::new(4, 8.0, &["q_proj", "v_proj"]), &device)?;
//! assert_eq!(report.adapted.len(), 2);
//! assert_eq!(report.trainable_params, 4 * (16 + 16) + 4 * (16 + 8));
//! set_adapters_enabled(&mut model, false); // the base model, e.g. as the reward model
//! # Ok::<(), gfnlm_lora::LoraError>(())
//! ```

pub mod adapt;
pub mod config;
pub mod error;
pub mod peft;

pub use adapt::{
    AdaptableModel, LoraReport, adapters_enabled, apply_lora, apply_lora_seeded, freeze_all, merge,
    merge_and_unload, remove_adapters, require_grad_parameter_count, set_adapters_enabled,
    target_names, total_parameter_count, trainable_parameter_count, unmerge,
    with_adapters_disabled,
};
pub use config::{LLAMA_TARGETS, LoraConfig, TargetMatcher};
pub use error::LoraError;
pub use gfnlm_models::linear::LoraAdapter;
pub use peft::{load_peft, read_peft_config, save_peft};
