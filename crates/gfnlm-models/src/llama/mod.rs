//! The Llama-family causal LM (SmolLM2, Llama 2/3, TinyLlama, …).
//!
//! The module tree mirrors Hugging Face's checkpoint names: `model.embed_tokens`,
//! `model.layers.N.{self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj, input_layernorm,
//! post_attention_layernorm}`, `model.norm`, `lm_head` (absent when tied to the embedding).
//!
//! The attention and SwiGLU MLP blocks live here; the embedding, [`RmsNorm`] and the
//! half-split RoPE come from [`crate::layers`]. [`LlamaConfig::build`] is the one constructor:
//! random init, [`crate::hf`] (safetensors) and [`crate::load`] (GGUF) are weight sources
//! handed to it.

mod attention;
mod mlp;

pub use attention::LlamaAttention;
pub use mlp::LlamaMlp;

use burn::module::Module;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::attention::CausalMask;
use crate::cache::KvCache;
use crate::head::{last_position, tied_logits};
use crate::layers::{Embedding, RmsNorm, RotaryEmbedding, RotaryTables};
use crate::linear::Linear;
use crate::precision::{UnsupportedPrecision, WeightPrecision, cast_param, check_supported};
use crate::weights::{Linears, RandomWeights, WeightSource, linears};

/// Hyper-parameters of a Llama-family model (field names follow HF's `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (grouped-query attention when < query heads).
    pub num_key_value_heads: usize,
    /// Per-head width; `hidden_size / num_attention_heads` when absent.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base θ.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// Longest context the model was trained for.
    pub max_position_embeddings: usize,
    /// Whether the LM head reuses the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
}

fn default_rope_theta() -> f64 {
    10_000.0
}

impl LlamaConfig {
    /// Per-head width (0 when `num_attention_heads` is 0, which [`Self::validate`] refuses).
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or_else(|| {
            self.hidden_size
                .checked_div(self.num_attention_heads)
                .unwrap_or(0)
        })
    }

    /// Checks internal consistency and bounds (see [`crate::limits`]) before any arithmetic
    /// on the sizes; the message names the offending fields.
    pub fn validate(&self) -> Result<(), String> {
        use crate::limits::*;
        let mut problems = Vec::new();
        check_sizes(
            &[
                ("vocab_size", self.vocab_size, MAX_VOCAB),
                ("hidden_size", self.hidden_size, MAX_WIDTH),
                ("intermediate_size", self.intermediate_size, MAX_WIDTH),
                ("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS),
                ("num_attention_heads", self.num_attention_heads, MAX_HEADS),
                ("num_key_value_heads", self.num_key_value_heads, MAX_HEADS),
                (
                    "max_position_embeddings",
                    self.max_position_embeddings,
                    MAX_POSITIONS,
                ),
            ],
            &mut problems,
        );
        if let Some(hd) = self.head_dim {
            check_sizes(&[("head_dim", hd, MAX_WIDTH)], &mut problems);
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        if self.num_key_value_heads > 0
            && !self
                .num_attention_heads
                .is_multiple_of(self.num_key_value_heads)
        {
            problems.push(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if self.head_dim.is_none()
            && self.num_attention_heads > 0
            && !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            problems.push(format!(
                "hidden_size ({}) is not a multiple of num_attention_heads ({})",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            problems.push(format!(
                "head_dim ({}) must be even for RoPE",
                self.head_dim()
            ));
        }
        if !(self.rms_norm_eps > 0.0
            && self.rope_theta > 0.0
            && self.rms_norm_eps.is_finite()
            && self.rope_theta.is_finite())
        {
            problems.push("rms_norm_eps and rope_theta must be finite and positive".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

impl LlamaConfig {
    /// A model with random weights (N(0, 0.1²) matrices, norms near 1): for tests and benches.
    /// Seed burn's generator on `device` for a reproducible model.
    pub fn init_random(&self, device: &burn::tensor::Device) -> LlamaForCausalLm {
        let Ok(model) = self.build(&mut RandomWeights::new(device));
        model
    }

    /// Tensors of one decoder layer, and of the model outside its layers when the LM head is
    /// tied (the fewest a checkpoint can hold besides its layers).
    pub const TENSORS_PER_LAYER: usize = 9;
    /// See [`Self::TENSORS_PER_LAYER`].
    pub const FIXED_TENSORS: usize = 2;

    /// The model's one constructor: every tensor asked of `source` by its Hugging Face name
    /// (`model.layers.N.self_attn.q_proj.weight`, …) with the shape this config implies.
    /// Random init, safetensors folders and GGUF files all go through here.
    ///
    /// The order — the layers (q, k, v, o, gate, up, down, the two norms), then the
    /// embedding, the final norm and an untied head — is the order [`Self::init_random`] draws
    /// its numbers in.
    pub fn build<S: WeightSource>(&self, s: &mut S) -> Result<LlamaForCausalLm, S::Error> {
        let (d, hd, h, kvh) = (
            self.hidden_size,
            self.head_dim(),
            self.num_attention_heads,
            self.num_key_value_heads,
        );
        let (inter, eps) = (self.intermediate_size, self.rms_norm_eps);
        let mut layers = Vec::with_capacity(self.num_hidden_layers);
        for i in 0..self.num_hidden_layers {
            let l = format!("model.layers.{i}");
            layers.push(LlamaDecoderLayer {
                self_attn: LlamaAttention {
                    q_proj: s.linear(&format!("{l}.self_attn.q_proj"), d, h * hd, false)?,
                    k_proj: s.linear(&format!("{l}.self_attn.k_proj"), d, kvh * hd, false)?,
                    v_proj: s.linear(&format!("{l}.self_attn.v_proj"), d, kvh * hd, false)?,
                    o_proj: s.linear(&format!("{l}.self_attn.o_proj"), h * hd, d, false)?,
                    num_heads: h,
                    num_kv_heads: kvh,
                    head_dim: hd,
                },
                mlp: LlamaMlp {
                    gate_proj: s.linear(&format!("{l}.mlp.gate_proj"), d, inter, false)?,
                    up_proj: s.linear(&format!("{l}.mlp.up_proj"), d, inter, false)?,
                    down_proj: s.linear(&format!("{l}.mlp.down_proj"), inter, d, false)?,
                },
                input_layernorm: s.rms_norm(&format!("{l}.input_layernorm"), d, eps)?,
                post_attention_layernorm: s.rms_norm(
                    &format!("{l}.post_attention_layernorm"),
                    d,
                    eps,
                )?,
            });
        }
        let embed_tokens = s.embedding("model.embed_tokens", self.vocab_size, d)?;
        let norm = s.rms_norm("model.norm", d, eps)?;
        let lm_head = if self.tie_word_embeddings {
            None
        } else {
            Some(s.linear("lm_head", d, self.vocab_size, false)?)
        };
        Ok(LlamaForCausalLm {
            model: LlamaModel {
                embed_tokens,
                layers,
                norm,
            },
            lm_head,
            rope: RotaryEmbedding::new(hd, self.rope_theta),
            max_positions: self.max_position_embeddings,
        })
    }
}

/// One pre-norm decoder block: attention then SwiGLU MLP, each with a residual.
#[derive(Module, Debug)]
pub struct LlamaDecoderLayer {
    /// Self-attention.
    pub self_attn: LlamaAttention,
    /// Feed-forward block.
    pub mlp: LlamaMlp,
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm,
}

impl LlamaDecoderLayer {
    /// Applies the block to `x` `[batch, seq, hidden]` at the positions `rope` and `mask`
    /// were built for.
    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: &RotaryTables,
        mask: &CausalMask,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor<3> {
        let h = self
            .self_attn
            .forward(self.input_layernorm.forward(x.clone()), rope, mask, cache);
        let x = x + h;
        let h = self
            .mlp
            .forward(self.post_attention_layernorm.forward(x.clone()));
        x + h
    }
}

/// The transformer body (`model.*` in HF checkpoints).
#[derive(Module, Debug)]
pub struct LlamaModel {
    /// Token embedding.
    pub embed_tokens: Embedding,
    /// Decoder layers.
    pub layers: Vec<LlamaDecoderLayer>,
    /// Final norm.
    pub norm: RmsNorm,
}

linears!(LlamaDecoderLayer { self_attn, mlp });
linears!(LlamaAttention {
    q_proj,
    k_proj,
    v_proj,
    o_proj
});
linears!(LlamaMlp {
    gate_proj,
    up_proj,
    down_proj
});
linears!(LlamaModel { layers });
linears!(LlamaForCausalLm { model, lm_head });

/// Llama with its LM head: tokens in, next-token logits out.
#[derive(Module, Debug)]
pub struct LlamaForCausalLm {
    /// The transformer body.
    pub model: LlamaModel,
    /// Untied output projection `[hidden, vocab]`; `None` when tied to the embedding.
    pub lm_head: Option<Linear>,
    /// RoPE tables (not parameters).
    pub rope: RotaryEmbedding,
    /// Context length (`max_position_embeddings`).
    pub max_positions: usize,
}

impl LlamaForCausalLm {
    /// Number of decoder layers.
    pub fn num_layers(&self) -> usize {
        self.model.layers.len()
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.model.embed_tokens.weight.shape().dims::<2>()[0]
    }

    /// Context length (`max_position_embeddings`): RoPE runs past it, but the model was not
    /// trained there and the CLI refuses longer sequences.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// Stores the frozen weights — embedding (and tied head), the seven projections of every
    /// layer, an untied LM head — in `precision`; norms and LoRA adapters stay f32. See
    /// [`crate::precision`]: with bf16 on LibTorch the products run several times faster.
    /// Fails, changing nothing, when the weights' device has no such dtype.
    pub fn set_weight_precision(
        &mut self,
        precision: WeightPrecision,
    ) -> Result<(), UnsupportedPrecision> {
        check_supported(precision, &self.model.embed_tokens.weight.val().device())?;
        let dtype = precision.float_dtype();
        let embed = &mut self.model.embed_tokens.weight;
        *embed = cast_param(embed.clone(), dtype);
        self.for_each_linear_mut(&mut |_, lin| lin.cast_weight(dtype));
        Ok(())
    }

    /// Calls `f(hf_name, linear)` for every projection, named as in HF/PEFT
    /// (`model.layers.N.self_attn.{q,k,v,o}_proj`, `model.layers.N.mlp.{gate,up,down}_proj`,
    /// an untied `lm_head`), walked from the module tree.
    pub fn for_each_linear(&self, f: &mut dyn FnMut(&str, &Linear)) {
        self.visit_linears("", f)
    }

    /// Mutable [`Self::for_each_linear`], same names and order.
    pub fn for_each_linear_mut(&mut self, f: &mut dyn FnMut(&str, &mut Linear)) {
        self.visit_linears_mut("", f)
    }

    /// A fresh, empty KV cache for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.num_layers())
    }

    /// Final hidden states `[batch, seq, hidden]` for `tokens` `[batch, seq]`.
    ///
    /// With a cache, `tokens` continue the cached sequence (positions start at `cache.len()`)
    /// and their keys/values are appended. Rows are right-padded: causal masking keeps the
    /// real tokens of every row independent of the padding after them.
    pub fn forward_hidden(
        &self,
        tokens: Tensor<2, Int>,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let start = cache.as_ref().map(|c| c.len()).unwrap_or(0);
        let [_, t] = tokens.dims();
        // The causal mask once per pass, shared by every layer; RoPE tables once per cache
        // (sliced for this pass), or once per pass without one.
        let device = tokens.device();
        let tables = match cache.as_deref_mut() {
            Some(c) => c.rotary_tables(start, t, |s, n| self.rope.tables(s, n, &device)),
            None => self.rope.tables(start, t, &device),
        };
        let mask = CausalMask::new(t, start + t, &tokens.device());
        let mut x = self.model.embed_tokens.forward(tokens);
        for (i, layer) in self.model.layers.iter().enumerate() {
            let c = cache.as_deref_mut().map(|c| (c, i));
            x = layer.forward(x, &tables, &mask, c);
        }
        self.model.norm.forward(x)
    }

    /// Projects hidden states to vocabulary logits.
    pub fn logits<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => tied_logits(self.model.embed_tokens.weight.val(), hidden),
        }
    }

    /// Logits `[batch, seq, vocab]` at every position.
    pub fn forward(&self, tokens: Tensor<2, Int>, cache: Option<&mut KvCache>) -> Tensor<3> {
        let h = self.forward_hidden(tokens, cache);
        self.logits(h)
    }

    /// Logits `[batch, vocab]` at the last position only (prefill and decode steps).
    pub fn forward_last(&self, tokens: Tensor<2, Int>, cache: Option<&mut KvCache>) -> Tensor<2> {
        self.logits(last_position(self.forward_hidden(tokens, cache)))
    }
}
