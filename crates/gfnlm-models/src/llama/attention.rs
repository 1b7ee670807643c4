//! Grouped-query self-attention with RoPE and an optional KV cache.

use burn::module::Module;
use burn::tensor::Tensor;

use crate::attention::{CausalMask, causal_attention};
use crate::cache::KvCache;
use crate::layers::RotaryTables;
use crate::linear::Linear;

/// Causal self-attention; `num_heads / num_kv_heads` query heads share each key/value head.
#[derive(Module, Debug)]
pub struct LlamaAttention {
    /// Query projection `[hidden, heads·head_dim]`.
    pub q_proj: Linear,
    /// Key projection `[hidden, kv_heads·head_dim]`.
    pub k_proj: Linear,
    /// Value projection `[hidden, kv_heads·head_dim]`.
    pub v_proj: Linear,
    /// Output projection `[heads·head_dim, hidden]`.
    pub o_proj: Linear,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
}

impl LlamaAttention {
    /// `x` `[batch, seq, hidden]` at the positions `rope` and `mask` were built for.
    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: &RotaryTables,
        mask: &CausalMask,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let (h, kvh, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let q = self
            .q_proj
            .forward(x.clone())
            .reshape([b, t, h, hd])
            .swap_dims(1, 2);
        let k = self
            .k_proj
            .forward(x.clone())
            .reshape([b, t, kvh, hd])
            .swap_dims(1, 2);
        let v = self
            .v_proj
            .forward(x)
            .reshape([b, t, kvh, hd])
            .swap_dims(1, 2);

        let q = rope.apply(q);
        let k = rope.apply(k);

        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, k, v),
            None => (k, v),
        };
        let k = repeat_kv(k, h / kvh);
        let v = repeat_kv(v, h / kvh);

        let out = causal_attention(q, k, v, None, mask);
        let out = out.swap_dims(1, 2).reshape([b, t, h * hd]);
        self.o_proj.forward(out)
    }
}

/// `[b, kv, s, d]` → `[b, kv·n_rep, s, d]`, each kv head repeated `n_rep` times in place.
fn repeat_kv(x: Tensor<4>, n_rep: usize) -> Tensor<4> {
    if n_rep == 1 {
        return x;
    }
    let [b, kv, s, d] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([b, kv, n_rep, s, d])
        .reshape([b, kv * n_rep, s, d])
}
