//! One interface over the implemented architectures, for the sampler and the trainer:
//! [`CausalLm`] (an enum over the concrete models), its [`CausalLmConfig`], the
//! [`Architecture`] tag and the [`LanguageModel`] trait that decoding and scoring are written
//! against.
//!
//! This module depends on the architectures only, never on loading: reading checkpoints
//! ([`CausalLm::load`], GGUF in [`crate::load`], Hugging Face folders in [`crate::hf`]) lives on
//! the loading side, which depends on this module.

use burn::module::Module;
use burn::tensor::{Int, Tensor};

use crate::cache::KvCache;
use crate::gpt2::{Gpt2Config, Gpt2LmHeadModel};
use crate::gptj::{GptJConfig, GptJForCausalLm};
use crate::linear::Linear;
use crate::llama::{LlamaConfig, LlamaForCausalLm};
use crate::precision::{UnsupportedPrecision, WeightPrecision};
use crate::weights::Linears;

/// The model families gfnlm implements, as named by `config.json`'s `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `llama` (`LlamaForCausalLM`: SmolLM2, Llama 2/3, TinyLlama, …).
    Llama,
    /// `gpt2` (`GPT2LMHeadModel`).
    Gpt2,
    /// `gptj` (`GPTJForCausalLM`).
    GptJ,
}

impl Architecture {
    /// Maps a `model_type` or `architectures` entry to a family.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "llama" | "LlamaForCausalLM" => Some(Self::Llama),
            "gpt2" | "GPT2LMHeadModel" => Some(Self::Gpt2),
            "gptj" | "GPTJForCausalLM" => Some(Self::GptJ),
            _ => None,
        }
    }
}

/// A causal LM of any implemented family: tokens `[batch, seq]` in, logits out.
///
/// All variants share [`KvCache`] (keys/values `[batch, heads, seq, head_dim]`; new tokens sit
/// at positions `cache.len()..`), right-padding semantics and the logits layout.
#[derive(Module, Debug)]
pub enum CausalLm {
    /// Llama family (SmolLM2, Llama 2/3, …).
    Llama(LlamaForCausalLm),
    /// GPT-2.
    Gpt2(Gpt2LmHeadModel),
    /// GPT-J.
    GptJ(GptJForCausalLm),
}

/// The hyper-parameters of a [`CausalLm`], per family.
#[derive(Debug, Clone, PartialEq)]
pub enum CausalLmConfig {
    /// Llama family.
    Llama(LlamaConfig),
    /// GPT-2.
    Gpt2(Gpt2Config),
    /// GPT-J.
    GptJ(GptJConfig),
}

impl CausalLmConfig {
    /// The family.
    pub fn architecture(&self) -> Architecture {
        match self {
            Self::Llama(_) => Architecture::Llama,
            Self::Gpt2(_) => Architecture::Gpt2,
            Self::GptJ(_) => Architecture::GptJ,
        }
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Llama(c) => c.vocab_size,
            Self::Gpt2(c) => c.vocab_size,
            Self::GptJ(c) => c.vocab_size,
        }
    }

    /// Longest context the model was trained for.
    pub fn max_positions(&self) -> usize {
        match self {
            Self::Llama(c) => c.max_position_embeddings,
            Self::Gpt2(c) => c.n_positions,
            Self::GptJ(c) => c.n_positions,
        }
    }
}

/// What sampling and scoring need from a model, whatever its architecture: implemented by
/// [`CausalLm`] and by each concrete model.
pub trait LanguageModel {
    /// Logits `[batch, seq, vocab]` at every position; with a cache, `tokens` continue the
    /// cached sequence and their keys/values are appended.
    fn forward(&self, tokens: Tensor<2, Int>, cache: Option<&mut KvCache>) -> Tensor<3>;
    /// Logits `[batch, vocab]` at the last position only.
    fn forward_last(&self, tokens: Tensor<2, Int>, cache: Option<&mut KvCache>) -> Tensor<2>;
    /// A fresh, empty KV cache.
    fn new_cache(&self) -> KvCache;
    /// Vocabulary size (width of the logits).
    fn vocab_size(&self) -> usize;
    /// Context length: the most positions (prompt plus continuation) one sequence may use.
    /// GPT-2 panics past it (it has no position embedding there); Llama and GPT-J would run
    /// but were not trained for it. Check with [`crate::check_context`] before decoding.
    fn max_positions(&self) -> usize;
}

macro_rules! language_model {
    ($($t:ty),*) => {$(
        impl LanguageModel for $t {
            fn forward(&self, tokens: Tensor<2, Int>, cache: Option<&mut KvCache>) -> Tensor<3> {
                <$t>::forward(self, tokens, cache)
            }
            fn forward_last(
                &self,
                tokens: Tensor<2, Int>,
                cache: Option<&mut KvCache>,
            ) -> Tensor<2> {
                <$t>::forward_last(self, tokens, cache)
            }
            fn new_cache(&self) -> KvCache {
                <$t>::new_cache(self)
            }
            fn vocab_size(&self) -> usize {
                <$t>::vocab_size(self)
            }
            fn max_positions(&self) -> usize {
                <$t>::max_positions(self)
            }
        }
    )*};
}

language_model!(CausalLm, LlamaForCausalLm, Gpt2LmHeadModel, GptJForCausalLm);

/// Every projection of the model, named as in its Hugging Face checkpoint and walked from its
/// module tree (the LoRA crate's `AdaptableModel` for `CausalLm` is this walk).
impl Linears for CausalLm {
    fn visit_linears(&self, path: &str, f: &mut dyn FnMut(&str, &Linear)) {
        match self {
            Self::Llama(m) => m.visit_linears(path, f),
            Self::Gpt2(m) => m.visit_linears(path, f),
            Self::GptJ(m) => m.visit_linears(path, f),
        }
    }

    fn visit_linears_mut(&mut self, path: &str, f: &mut dyn FnMut(&str, &mut Linear)) {
        match self {
            Self::Llama(m) => m.visit_linears_mut(path, f),
            Self::Gpt2(m) => m.visit_linears_mut(path, f),
            Self::GptJ(m) => m.visit_linears_mut(path, f),
        }
    }
}

impl From<LlamaForCausalLm> for CausalLm {
    fn from(m: LlamaForCausalLm) -> Self {
        Self::Llama(m)
    }
}

impl From<Gpt2LmHeadModel> for CausalLm {
    fn from(m: Gpt2LmHeadModel) -> Self {
        Self::Gpt2(m)
    }
}

impl From<GptJForCausalLm> for CausalLm {
    fn from(m: GptJForCausalLm) -> Self {
        Self::GptJ(m)
    }
}

impl CausalLm {
    /// The family.
    pub fn architecture(&self) -> Architecture {
        match self {
            Self::Llama(_) => Architecture::Llama,
            Self::Gpt2(_) => Architecture::Gpt2,
            Self::GptJ(_) => Architecture::GptJ,
        }
    }

    /// Number of layers (entries of the KV cache).
    pub fn num_layers(&self) -> usize {
        match self {
            Self::Llama(m) => m.num_layers(),
            Self::Gpt2(m) => m.num_layers(),
            Self::GptJ(m) => m.num_layers(),
        }
    }

    /// Vocabulary size (width of the logits).
    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Llama(m) => m.vocab_size(),
            Self::Gpt2(m) => m.vocab_size(),
            Self::GptJ(m) => m.vocab_size(),
        }
    }

    /// Context length (`max_position_embeddings` / `n_positions`): the most positions one
    /// sequence may use.
    pub fn max_positions(&self) -> usize {
        match self {
            Self::Llama(m) => m.max_positions(),
            Self::Gpt2(m) => m.max_positions(),
            Self::GptJ(m) => m.max_positions(),
        }
    }

    /// Checks that `prompt_len` tokens plus `new_tokens` more fit the context; `what` names
    /// the flag or key that sets `new_tokens` in the error.
    pub fn check_context(
        &self,
        prompt_len: usize,
        new_tokens: usize,
        what: &str,
    ) -> Result<(), crate::ContextError> {
        crate::check_context(prompt_len, new_tokens, self.max_positions(), what)
    }

    /// A fresh, empty KV cache for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.num_layers())
    }

    /// Stores the frozen weights in `precision` (see [`crate::precision`]). Llama supports
    /// every precision; GPT-2 and GPT-J keep f32 and refuse anything else.
    pub fn set_weight_precision(
        &mut self,
        precision: WeightPrecision,
    ) -> Result<(), UnsupportedPrecision> {
        match self {
            Self::Llama(m) => m.set_weight_precision(precision),
            _ if precision == WeightPrecision::F32 => Ok(()),
            other => Err(UnsupportedPrecision {
                precision,
                device: format!(
                    "any ({:?} keeps f32 weights; reduced precision is implemented for Llama)",
                    other.architecture()
                ),
            }),
        }
    }

    /// Final hidden states `[batch, seq, hidden]` (after the last norm).
    pub fn forward_hidden(&self, tokens: Tensor<2, Int>, cache: Option<&mut KvCache>) -> Tensor<3> {
        match self {
            Self::Llama(m) => m.forward_hidden(tokens, cache),
            Self::Gpt2(m) => m.forward_hidden(tokens, cache),
            Self::GptJ(m) => m.forward_hidden(tokens, cache),
        }
    }

    /// Projects hidden states to vocabulary logits.
    pub fn logits<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        match self {
            Self::Llama(m) => m.logits(hidden),
            Self::Gpt2(m) => m.logits(hidden),
            Self::GptJ(m) => m.logits(hidden),
        }
    }

    /// Logits `[batch, seq, vocab]` at every position. With a cache, `tokens` continue the
    /// cached sequence and their keys/values are appended.
    pub fn forward(&self, tokens: Tensor<2, Int>, cache: Option<&mut KvCache>) -> Tensor<3> {
        match self {
            Self::Llama(m) => m.forward(tokens, cache),
            Self::Gpt2(m) => m.forward(tokens, cache),
            Self::GptJ(m) => m.forward(tokens, cache),
        }
    }

    /// Logits `[batch, vocab]` at the last position only (prefill and decode steps).
    pub fn forward_last(&self, tokens: Tensor<2, Int>, cache: Option<&mut KvCache>) -> Tensor<2> {
        match self {
            Self::Llama(m) => m.forward_last(tokens, cache),
            Self::Gpt2(m) => m.forward_last(tokens, cache),
            Self::GptJ(m) => m.forward_last(tokens, cache),
        }
    }
}
