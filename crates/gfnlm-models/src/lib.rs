//! Causal language-model backbones for gfnlm, written as burn modules.
//!
//! The model code is device-generic: tensors carry a run-time [`burn::tensor::Device`] and no
//! backend is named here. Weight loading ([`load`]) is kept apart from the math ([`llama`]).

pub mod attention;
pub mod cache;
pub mod causal_lm;
pub mod decode;
pub mod device;
pub mod generate;
pub mod gpt2;
pub mod gptj;
mod head;
pub mod hf;
pub mod linear;
pub mod llama;
pub mod load;
pub mod precision;

pub use cache::KvCache;
pub use causal_lm::{CausalLm, CausalLmConfig, LanguageModel};
pub use decode::{
    Behaviour, Constraint, PolicyTerms, Tool, Trajectory, policy_terms, sample_trajectories,
};
pub use device::{compiled_backends, parse_device};
pub use linear::Linear;
pub use llama::{LlamaConfig, LlamaForCausalLm};
pub use load::{LoadError, llama_config_from_gguf, load_llama_from_gguf, load_llama_gguf};
pub use precision::{UnsupportedPrecision, WeightPrecision};
