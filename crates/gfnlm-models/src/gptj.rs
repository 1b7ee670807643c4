//! GPT-J (`GPTJForCausalLM`): parallel attention + MLP on one shared LayerNorm, partial
//! interleaved rotary positions, untied LM head with a bias.
//!
//! The module tree mirrors Hugging Face's checkpoint names: `transformer.wte`,
//! `transformer.h.N.{ln_1, attn.{q,k,v,out}_proj, mlp.{fc_in, fc_out}}`, `transformer.ln_f`,
//! `lm_head`.
//!
//! The embedding, [`LayerNorm`], [`Activation`] and the interleaved partial rotary
//! ([`PartialRotary`]) come from [`crate::layers`]; loading from a Hugging Face folder is in
//! [`crate::hf`].

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::attention::{CausalMask, causal_attention};
use crate::cache::KvCache;
use crate::head::last_position;
use crate::layers::{Activation, Embedding, LayerNorm, PartialRotary, RotaryTables};
use crate::linear::Linear;
use crate::weights::{Linears, RandomWeights, WeightSource, linears};

/// Hyper-parameters of a GPT-J model (field names follow HF's `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GptJConfig {
    /// Vocabulary size (rows of `wte` and of the LM head).
    pub vocab_size: usize,
    /// Longest context the model was trained for (rotary has no hard limit).
    pub n_positions: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Number of blocks.
    pub n_layer: usize,
    /// Number of attention heads.
    pub n_head: usize,
    /// Leading channels of each head that are rotated; all of them when absent.
    #[serde(default)]
    pub rotary_dim: Option<usize>,
    /// MLP width; `4·n_embd` when absent.
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// MLP activation.
    #[serde(default)]
    pub activation_function: Activation,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// Whether the LM head reuses `wte` (GPT-J checkpoints do not).
    #[serde(default)]
    pub tie_word_embeddings: bool,
}

fn default_eps() -> f64 {
    1e-5
}

impl GptJConfig {
    /// Per-head width (0 when `n_head` is 0, which [`Self::validate`] refuses).
    pub fn head_dim(&self) -> usize {
        self.n_embd.checked_div(self.n_head).unwrap_or(0)
    }

    /// Rotated channels per head.
    pub fn rotary_dim(&self) -> usize {
        self.rotary_dim.unwrap_or_else(|| self.head_dim())
    }

    /// MLP width.
    pub fn inner_dim(&self) -> usize {
        self.n_inner
            .unwrap_or_else(|| self.n_embd.saturating_mul(4))
    }

    /// Checks internal consistency and bounds (see [`crate::limits`]) before any arithmetic
    /// on the sizes; the message names the offending fields.
    pub fn validate(&self) -> Result<(), String> {
        use crate::limits::*;
        let mut problems = Vec::new();
        check_sizes(
            &[
                ("vocab_size", self.vocab_size, MAX_VOCAB),
                ("n_positions", self.n_positions, MAX_POSITIONS),
                ("n_embd", self.n_embd, MAX_WIDTH),
                ("n_layer", self.n_layer, MAX_LAYERS),
                ("n_head", self.n_head, MAX_HEADS),
                ("n_inner (or 4·n_embd)", self.inner_dim(), MAX_WIDTH),
            ],
            &mut problems,
        );
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        if self.n_head > 0 && !self.n_embd.is_multiple_of(self.n_head) {
            problems.push(format!(
                "n_embd ({}) is not a multiple of n_head ({})",
                self.n_embd, self.n_head
            ));
        } else if self.n_head > 0 {
            let rd = self.rotary_dim();
            if rd > self.head_dim() || !rd.is_multiple_of(2) {
                problems.push(format!(
                    "rotary_dim ({rd}) must be even and at most the head width ({})",
                    self.head_dim()
                ));
            }
        }
        if self.tie_word_embeddings {
            problems.push("tie_word_embeddings = true is not supported for GPT-J".into());
        }
        if !(self.layer_norm_epsilon > 0.0 && self.layer_norm_epsilon.is_finite()) {
            problems.push("layer_norm_epsilon must be finite and positive".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// A model with random weights (N(0, 0.1²) matrices and biases, norms near 1): for tests.
    /// Seed burn's generator on `device` for a reproducible model.
    pub fn init_random(&self, device: &Device) -> GptJForCausalLm {
        let Ok(model) = self.build(&mut RandomWeights::new(device));
        model
    }

    /// Tensors of one block.
    pub const TENSORS_PER_LAYER: usize = 10;
    /// Tensors outside the blocks (`wte`, `ln_f` weight and bias, `lm_head` weight and bias).
    pub const FIXED_TENSORS: usize = 5;

    /// The model's one constructor: every tensor asked of `source` by its Hugging Face name
    /// (`transformer.h.N.attn.q_proj.weight`, …) with the shape this config implies.
    ///
    /// The order — the blocks (`ln_1`, q, k, v, out, `fc_in`, `fc_out`; weight before bias),
    /// then `wte`, `ln_f` and `lm_head` — is the order [`Self::init_random`] draws its numbers
    /// in.
    pub fn build<S: WeightSource>(&self, s: &mut S) -> Result<GptJForCausalLm, S::Error> {
        let (d, inner, eps) = (self.n_embd, self.inner_dim(), self.layer_norm_epsilon);
        let mut h = Vec::with_capacity(self.n_layer);
        for i in 0..self.n_layer {
            let l = format!("transformer.h.{i}");
            h.push(GptJBlock {
                ln_1: s.layer_norm(&format!("{l}.ln_1"), d, eps)?,
                attn: GptJAttention {
                    q_proj: s.linear(&format!("{l}.attn.q_proj"), d, d, false)?,
                    k_proj: s.linear(&format!("{l}.attn.k_proj"), d, d, false)?,
                    v_proj: s.linear(&format!("{l}.attn.v_proj"), d, d, false)?,
                    out_proj: s.linear(&format!("{l}.attn.out_proj"), d, d, false)?,
                    num_heads: self.n_head,
                    rotary: PartialRotary::new(self.head_dim(), self.rotary_dim()),
                },
                mlp: GptJMlp {
                    fc_in: s.linear(&format!("{l}.mlp.fc_in"), d, inner, true)?,
                    fc_out: s.linear(&format!("{l}.mlp.fc_out"), inner, d, true)?,
                    act: self.activation_function,
                },
            });
        }
        let wte = s.embedding("transformer.wte", self.vocab_size, d)?;
        let ln_f = s.layer_norm("transformer.ln_f", d, eps)?;
        let lm_head = s.linear("lm_head", d, self.vocab_size, true)?;
        Ok(GptJForCausalLm {
            transformer: GptJModel { wte, h, ln_f },
            lm_head,
            max_positions: self.n_positions,
        })
    }
}

/// Causal self-attention with partial rotary on q and k; no biases.
#[derive(Module, Debug)]
pub struct GptJAttention {
    /// Query projection `[n_embd, n_embd]`.
    pub q_proj: Linear,
    /// Key projection `[n_embd, n_embd]`.
    pub k_proj: Linear,
    /// Value projection `[n_embd, n_embd]`.
    pub v_proj: Linear,
    /// Output projection `[n_embd, n_embd]`.
    pub out_proj: Linear,
    /// Number of heads.
    pub num_heads: usize,
    /// Rotary positions.
    pub rotary: PartialRotary,
}

impl GptJAttention {
    /// `x` `[batch, seq, n_embd]` at the positions `rope` (this layer's
    /// [`PartialRotary::tables`]) and `mask` were built for.
    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: Option<&RotaryTables>,
        mask: &CausalMask,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let h = self.num_heads;
        let hd = d / h;
        let heads = |y: Tensor<3>| y.reshape([b, t, h, hd]).swap_dims(1, 2);
        let q = self
            .rotary
            .apply_tables(heads(self.q_proj.forward(x.clone())), rope);
        let k = self
            .rotary
            .apply_tables(heads(self.k_proj.forward(x.clone())), rope);
        let v = heads(self.v_proj.forward(x));
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, k, v),
            None => (k, v),
        };
        let out = causal_attention(q, k, v, None, mask);
        self.out_proj
            .forward(out.swap_dims(1, 2).reshape([b, t, d]))
    }
}

/// Feed-forward block `fc_out(act(fc_in(x)))`.
#[derive(Module, Debug)]
pub struct GptJMlp {
    /// Up projection `[n_embd, n_inner]` with bias.
    pub fc_in: Linear,
    /// Down projection `[n_inner, n_embd]` with bias.
    pub fc_out: Linear,
    /// Activation between them.
    #[module(skip)]
    pub act: Activation,
}

impl GptJMlp {
    /// Applies the block to `[batch, seq, n_embd]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.fc_out.forward(self.act.forward(self.fc_in.forward(x)))
    }
}

/// One parallel block: `h = ln_1(x)`, then `x + attn(h) + mlp(h)`.
#[derive(Module, Debug)]
pub struct GptJBlock {
    /// The block's only norm, shared by attention and MLP.
    pub ln_1: LayerNorm,
    /// Self-attention.
    pub attn: GptJAttention,
    /// Feed-forward block.
    pub mlp: GptJMlp,
}

impl GptJBlock {
    /// Applies the block to `[batch, seq, n_embd]` at the positions `rope` and `mask` were
    /// built for.
    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: Option<&RotaryTables>,
        mask: &CausalMask,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor<3> {
        let h = self.ln_1.forward(x.clone());
        let attn = self.attn.forward(h.clone(), rope, mask, cache);
        attn + self.mlp.forward(h) + x
    }
}

/// The transformer body (`transformer.*` in HF checkpoints).
#[derive(Module, Debug)]
pub struct GptJModel {
    /// Token embedding `[vocab, n_embd]`.
    pub wte: Embedding,
    /// Blocks.
    pub h: Vec<GptJBlock>,
    /// Final norm.
    pub ln_f: LayerNorm,
}

/// GPT-J with its untied, biased LM head.
#[derive(Module, Debug)]
pub struct GptJForCausalLm {
    /// The transformer body.
    pub transformer: GptJModel,
    /// Output projection `[n_embd, vocab]` with bias.
    pub lm_head: Linear,
    /// Context length (`n_positions`).
    pub max_positions: usize,
}

impl GptJForCausalLm {
    /// Number of blocks.
    pub fn num_layers(&self) -> usize {
        self.transformer.h.len()
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.transformer.wte.weight.shape().dims::<2>()[0]
    }

    /// Context length (`n_positions`): rotary runs past it, but the model was not trained
    /// there and the CLI refuses longer sequences.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// A fresh, empty KV cache for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.num_layers())
    }

    /// Final hidden states `[batch, seq, n_embd]`; positions start at `cache.len()`.
    pub fn forward_hidden(
        &self,
        tokens: Tensor<2, Int>,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let start = cache.as_ref().map(|c| c.len()).unwrap_or(0);
        let [_, t] = tokens.dims();
        let device = tokens.device();
        // The causal mask once per pass (every layer rotates alike); rotary tables once per
        // cache (sliced for this pass), or once per pass without one.
        let rotary = self.transformer.h.first().map(|b| &b.attn.rotary);
        let rope = match (rotary, cache.as_deref_mut()) {
            (Some(r), Some(c)) if r.rotary_dim > 0 => Some(c.rotary_tables(start, t, |s, n| {
                r.tables(s, n, &device).expect("rotary_dim > 0")
            })),
            (Some(r), _) => r.tables(start, t, &device),
            (None, _) => None,
        };
        let mask = CausalMask::new(t, start + t, &device);
        let mut x = self.transformer.wte.forward(tokens);
        for (i, block) in self.transformer.h.iter().enumerate() {
            let c = cache.as_deref_mut().map(|c| (c, i));
            x = block.forward(x, rope.as_ref(), &mask, c);
        }
        self.transformer.ln_f.forward(x)
    }

    /// Projects hidden states to vocabulary logits (`h · W + b`).
    pub fn logits<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        self.lm_head.forward(hidden)
    }

    /// Logits `[batch, seq, vocab]` at every position.
    pub fn forward(&self, tokens: Tensor<2, Int>, cache: Option<&mut KvCache>) -> Tensor<3> {
        self.logits(self.forward_hidden(tokens, cache))
    }

    /// Logits `[batch, vocab]` at the last position only.
    pub fn forward_last(&self, tokens: Tensor<2, Int>, cache: Option<&mut KvCache>) -> Tensor<2> {
        self.logits(last_position(self.forward_hidden(tokens, cache)))
    }
}

linears!(GptJAttention {
    q_proj,
    k_proj,
    v_proj,
    out_proj
});
linears!(GptJMlp { fc_in, fc_out });
linears!(GptJBlock { attn, mlp });
linears!(GptJModel { h });
linears!(GptJForCausalLm {
    transformer,
    lm_head
});

impl GptJForCausalLm {
    /// Calls `f(hf_name, linear)` for every linear layer, named as in HF/PEFT
    /// (`transformer.h.N.attn.{q,k,v,out}_proj`, `transformer.h.N.mlp.{fc_in,fc_out}`,
    /// `lm_head`), walked from the module tree. A LoRA delta on q/k lands before rotary, as in
    /// PEFT.
    pub fn for_each_linear(&self, f: &mut dyn FnMut(&str, &Linear)) {
        self.visit_linears("", f)
    }

    /// Mutable [`Self::for_each_linear`], same names and order.
    pub fn for_each_linear_mut(&mut self, f: &mut dyn FnMut(&str, &mut Linear)) {
        self.visit_linears_mut("", f)
    }
}
