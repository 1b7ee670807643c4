//! Causal language-model backbones for gfnlm, written as burn modules.
//!
//! The model code is device-generic: tensors carry a run-time [`burn::tensor::Device`] and no
//! backend is named here.
//!
//! # Module layout
//!
//! Dependencies point one way, from building blocks up to decoding:
//!
//! 1. **Layers** — [`linear`] (projection + LoRA side path), [`layers`] (embedding, LayerNorm,
//!    RMSNorm, rotary embedding, activations), [`attention`] (causal SDPA), [`cache`] (KV
//!    cache), [`precision`] (mixed-precision helpers), [`weights`] (the [`WeightSource`]
//!    trait, random init, the tensor recorder and the [`Linears`] module-tree walk).
//! 2. **Architectures** — [`llama`], [`gpt2`], [`gptj`]: each a module tree named after the
//!    Hugging Face checkpoint, built from the layers above and from nothing of one another,
//!    with one constructor (`build` over a [`WeightSource`]) that random init, safetensors
//!    and GGUF loading all go through.
//! 3. **[`CausalLm`]** ([`causal_lm`]) — one enum over the architectures, with its
//!    [`CausalLmConfig`], the [`Architecture`] tag and the [`LanguageModel`] trait.
//! 4. **Decoding** — [`generate`] (sampling, teacher-forced scoring) and [`decode`] (the one
//!    constrained decode loop and the matching policy terms), written against
//!    [`LanguageModel`]; [`search`] (the evaluation baselines: greedy, beam, diverse beam,
//!    nucleus, ancestral, tempered, with Hugging Face parity).
//!
//! Loading sits beside this stack and depends on it, never the other way: [`load`] reads
//! llama.cpp GGUF files, [`hf`] reads Hugging Face folders (config, safetensors, tokenizer
//! vocabulary check) and defines [`CausalLm::load`], which dispatches between the two; each is
//! a [`WeightSource`] handed to the architecture's constructor. No model module imports from
//! [`load`] or [`hf`]. [`device`] parses `--device` strings;
//! [`limits`] bounds every size read from a file or a command line.

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
pub mod layers;
pub mod limits;
pub mod linear;
pub mod llama;
pub mod load;
pub mod precision;
pub mod search;
pub mod weights;

pub use cache::KvCache;
pub use causal_lm::{Architecture, CausalLm, CausalLmConfig, LanguageModel};
pub use decode::{
    Behaviour, Constraint, PolicyTerms, Tool, Trajectory, policy_terms, sample_trajectories,
};
pub use device::{compiled_backends, parse_device};
pub use limits::{ContextError, check_context};
pub use linear::Linear;
pub use llama::{LlamaConfig, LlamaForCausalLm};
pub use load::{LoadError, llama_config_from_gguf, load_llama_from_gguf, load_llama_gguf};
pub use precision::{UnsupportedPrecision, WeightPrecision};
pub use weights::{Linears, RandomWeights, TensorRecorder, WeightSource};
