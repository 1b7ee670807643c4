//! GPT-2 (`GPT2LMHeadModel`): learned absolute positions, pre-LayerNorm blocks, fused QKV.
//!
//! The module tree mirrors Hugging Face's checkpoint names: `transformer.wte`,
//! `transformer.wpe`, `transformer.h.N.{ln_1, attn.{c_attn, c_proj}, ln_2, mlp.{c_fc, c_proj}}`,
//! `transformer.ln_f`; the LM head is tied to `wte`. GPT-2's `Conv1D` weights are stored
//! `[in, out]` already, which is burn's [`Linear`] layout.
//!
//! The embedding, [`LayerNorm`] and [`Activation`] come from [`crate::layers`]; loading from a
//! Hugging Face folder is in [`crate::hf`].

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::attention::{CausalMask, causal_attention};
use crate::cache::KvCache;
use crate::head::{last_position, tied_logits};
use crate::layers::{Activation, Embedding, LayerNorm};
use crate::linear::Linear;
use crate::weights::{Linears, RandomWeights, WeightSource, linears};

/// Hyper-parameters of a GPT-2 model (field names follow HF's `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpt2Config {
    /// Vocabulary size (rows of `wte`).
    pub vocab_size: usize,
    /// Number of learned positions (rows of `wpe`); the longest sequence the model can read.
    pub n_positions: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Number of blocks.
    pub n_layer: usize,
    /// Number of attention heads.
    pub n_head: usize,
    /// MLP width; `4·n_embd` when absent.
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// MLP activation.
    #[serde(default)]
    pub activation_function: Activation,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// Scale attention scores by `1/√head_dim`.
    #[serde(default = "yes")]
    pub scale_attn_weights: bool,
    /// Further divide the scores of block `i` by `i + 1`.
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    /// Whether the LM head reuses `wte` (GPT-2 checkpoints always do).
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
}

fn default_eps() -> f64 {
    1e-5
}

fn yes() -> bool {
    true
}

impl Gpt2Config {
    /// MLP width.
    pub fn inner_dim(&self) -> usize {
        self.n_inner
            .unwrap_or_else(|| self.n_embd.saturating_mul(4))
    }

    /// Per-head width (0 when `n_head` is 0, which [`Self::validate`] refuses).
    pub fn head_dim(&self) -> usize {
        self.n_embd.checked_div(self.n_head).unwrap_or(0)
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
        }
        if !self.tie_word_embeddings {
            problems.push("tie_word_embeddings = false is not supported for GPT-2".into());
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
    pub fn init_random(&self, device: &Device) -> Gpt2LmHeadModel {
        let Ok(model) = self.build(&mut RandomWeights::new(device));
        model
    }

    /// Tensors of one block.
    pub const TENSORS_PER_LAYER: usize = 12;
    /// Tensors outside the blocks (`wte`, `wpe`, `ln_f` weight and bias).
    pub const FIXED_TENSORS: usize = 4;

    /// The model's one constructor: every tensor asked of `source` by its Hugging Face name
    /// (`transformer.h.N.attn.c_attn.weight`, …) with the shape this config implies.
    ///
    /// The order — the blocks (`ln_1`, `c_attn`, `c_proj`, `ln_2`, `c_fc`, `c_proj`; weight
    /// before bias), then `wte`, `wpe` and `ln_f` — is the order [`Self::init_random`] draws
    /// its numbers in.
    pub fn build<S: WeightSource>(&self, s: &mut S) -> Result<Gpt2LmHeadModel, S::Error> {
        let (d, inner, eps) = (self.n_embd, self.inner_dim(), self.layer_norm_epsilon);
        let mut h = Vec::with_capacity(self.n_layer);
        for i in 0..self.n_layer {
            let l = format!("transformer.h.{i}");
            h.push(Gpt2Block {
                ln_1: s.layer_norm(&format!("{l}.ln_1"), d, eps)?,
                attn: Gpt2Attention {
                    c_attn: s.conv1d(&format!("{l}.attn.c_attn"), d, 3 * d)?,
                    c_proj: s.conv1d(&format!("{l}.attn.c_proj"), d, d)?,
                    num_heads: self.n_head,
                    scale: self.attention_scale(i),
                },
                ln_2: s.layer_norm(&format!("{l}.ln_2"), d, eps)?,
                mlp: Gpt2Mlp {
                    c_fc: s.conv1d(&format!("{l}.mlp.c_fc"), d, inner)?,
                    c_proj: s.conv1d(&format!("{l}.mlp.c_proj"), inner, d)?,
                    act: self.activation_function,
                },
            });
        }
        let wte = s.embedding("transformer.wte", self.vocab_size, d)?;
        let wpe = s.embedding("transformer.wpe", self.n_positions, d)?;
        let ln_f = s.layer_norm("transformer.ln_f", d, eps)?;
        Ok(Gpt2LmHeadModel {
            transformer: Gpt2Model { wte, wpe, h, ln_f },
        })
    }

    /// Score scale of block `layer`.
    pub fn attention_scale(&self, layer: usize) -> f64 {
        let mut s = if self.scale_attn_weights {
            1.0 / (self.head_dim() as f64).sqrt()
        } else {
            1.0
        };
        if self.scale_attn_by_inverse_layer_idx {
            s /= (layer + 1) as f64;
        }
        s
    }
}

/// Causal self-attention with a fused QKV projection.
#[derive(Module, Debug)]
pub struct Gpt2Attention {
    /// Fused projection `[n_embd, 3·n_embd]`: q, k, v in consecutive column blocks.
    pub c_attn: Linear,
    /// Output projection `[n_embd, n_embd]`.
    pub c_proj: Linear,
    /// Number of heads.
    pub num_heads: usize,
    /// Score scale (`1/√head_dim`, possibly divided by the layer index).
    pub scale: f64,
}

impl Gpt2Attention {
    /// `x` `[batch, seq, n_embd]`; with a cache, keys/values are appended to layer `layer`.
    pub fn forward(
        &self,
        x: Tensor<3>,
        mask: &CausalMask,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let h = self.num_heads;
        let hd = d / h;
        let qkv = self.c_attn.forward(x);
        let split = |i: usize| {
            qkv.clone()
                .slice([0..b, 0..t, i * d..(i + 1) * d])
                .reshape([b, t, h, hd])
                .swap_dims(1, 2)
        };
        let (q, k, v) = (split(0), split(1), split(2));
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, k, v),
            None => (k, v),
        };
        let out = causal_attention(q, k, v, Some(self.scale), mask);
        self.c_proj.forward(out.swap_dims(1, 2).reshape([b, t, d]))
    }
}

/// Feed-forward block `c_proj(act(c_fc(x)))`.
#[derive(Module, Debug)]
pub struct Gpt2Mlp {
    /// Up projection `[n_embd, n_inner]`.
    pub c_fc: Linear,
    /// Down projection `[n_inner, n_embd]`.
    pub c_proj: Linear,
    /// Activation between them.
    #[module(skip)]
    pub act: Activation,
}

impl Gpt2Mlp {
    /// Applies the block to `[batch, seq, n_embd]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.c_proj.forward(self.act.forward(self.c_fc.forward(x)))
    }
}

/// One pre-LayerNorm block: `x + attn(ln_1 x)`, then `x + mlp(ln_2 x)`.
#[derive(Module, Debug)]
pub struct Gpt2Block {
    /// Norm before attention.
    pub ln_1: LayerNorm,
    /// Self-attention.
    pub attn: Gpt2Attention,
    /// Norm before the MLP.
    pub ln_2: LayerNorm,
    /// Feed-forward block.
    pub mlp: Gpt2Mlp,
}

impl Gpt2Block {
    /// Applies the block to `[batch, seq, n_embd]` under the pass's causal `mask`.
    pub fn forward(
        &self,
        x: Tensor<3>,
        mask: &CausalMask,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor<3> {
        let x = x.clone() + self.attn.forward(self.ln_1.forward(x), mask, cache);
        x.clone() + self.mlp.forward(self.ln_2.forward(x))
    }
}

/// The transformer body (`transformer.*` in HF checkpoints).
#[derive(Module, Debug)]
pub struct Gpt2Model {
    /// Token embedding `[vocab, n_embd]`.
    pub wte: Embedding,
    /// Position embedding `[n_positions, n_embd]`.
    pub wpe: Embedding,
    /// Blocks.
    pub h: Vec<Gpt2Block>,
    /// Final norm.
    pub ln_f: LayerNorm,
}

/// GPT-2 with its (tied) LM head: tokens in, next-token logits out.
#[derive(Module, Debug)]
pub struct Gpt2LmHeadModel {
    /// The transformer body.
    pub transformer: Gpt2Model,
}

impl Gpt2LmHeadModel {
    /// Number of blocks.
    pub fn num_layers(&self) -> usize {
        self.transformer.h.len()
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.transformer.wte.weight.shape().dims::<2>()[0]
    }

    /// Longest sequence (prompt plus continuation) the position table covers.
    pub fn max_positions(&self) -> usize {
        self.transformer.wpe.weight.shape().dims::<2>()[0]
    }

    /// A fresh, empty KV cache for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.num_layers())
    }

    /// Final hidden states `[batch, seq, n_embd]` for `tokens` `[batch, seq]`; positions start
    /// at `cache.len()`.
    ///
    /// # Panics
    /// If the sequence runs past the `n_positions` learned positions: check with
    /// [`crate::check_context`] first (the CLI, the trainer and the evaluations do).
    pub fn forward_hidden(
        &self,
        tokens: Tensor<2, Int>,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let [b, t] = tokens.dims();
        let start = cache.as_ref().map(|c| c.len()).unwrap_or(0);
        assert!(
            start + t <= self.max_positions(),
            "GPT-2 reads at most n_positions = {} tokens, asked for positions {start}..{}",
            self.max_positions(),
            start + t
        );
        let device = tokens.device();
        let positions = Tensor::<1, Int>::arange(start as i64..(start + t) as i64, &device)
            .reshape([1, t])
            .expand([b, t]);
        let mask = CausalMask::new(t, start + t, &device);
        let mut x = self.transformer.wte.forward(tokens) + self.transformer.wpe.forward(positions);
        for (i, block) in self.transformer.h.iter().enumerate() {
            let c = cache.as_deref_mut().map(|c| (c, i));
            x = block.forward(x, &mask, c);
        }
        self.transformer.ln_f.forward(x)
    }

    /// Projects hidden states to vocabulary logits with the tied head `h · wteᵀ`.
    pub fn logits<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        tied_logits(self.transformer.wte.weight.val(), hidden)
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

linears!(Gpt2Attention { c_attn, c_proj });
linears!(Gpt2Mlp { c_fc, c_proj });
linears!(Gpt2Block { attn, mlp });
linears!(Gpt2Model { h });
linears!(Gpt2LmHeadModel { transformer });

impl Gpt2LmHeadModel {
    /// Calls `f(hf_name, linear)` for every projection, named as in HF/PEFT
    /// (`transformer.h.N.attn.c_attn`, `….attn.c_proj`, `….mlp.c_fc`, `….mlp.c_proj`), walked
    /// from the module tree.
    ///
    /// These are `Conv1D` layers (PEFT `fan_in_fan_out: true`); burn's [`Linear`] already
    /// stores them `[in, out]`, so a LoRA delta is added the same way as for any linear.
    pub fn for_each_linear(&self, f: &mut dyn FnMut(&str, &Linear)) {
        self.visit_linears("", f)
    }

    /// Mutable [`Self::for_each_linear`], same names and order.
    pub fn for_each_linear_mut(&mut self, f: &mut dyn FnMut(&str, &mut Linear)) {
        self.visit_linears_mut("", f)
    }
}
