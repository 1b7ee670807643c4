//! Causal scaled-dot-product attention that means the same on every backend, KV cache included.

use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Tensor, TensorData};

/// Causal attention of `q` `[b, h, t, d]` over `k`, `v` `[b, h, s, d]` with `s ≥ t`: query `i`
/// (absolute position `s − t + i`) sees keys `0..=s − t + i`, i.e. the causal boundary is
/// aligned bottom-right, as a KV cache needs. `scale` defaults to `1/√d`.
///
/// burn's `is_causal` is bottom-right aligned in its generic implementation, but burn-tch 0.22
/// hands it to PyTorch's SDPA, whose `is_causal` is top-left aligned: with a cached prefix
/// (`1 < t < s`) libtorch would hide most of the past. So `is_causal` is used only when `t = s`,
/// no mask is needed when `t = 1`, and otherwise an additive −∞ bias carries the mask (burn-tch
/// then uses the generic path; a bool mask would be read with PyTorch's inverted convention).
pub fn causal_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, scale: Option<f64>) -> Tensor<4> {
    let [b, h, t, _] = q.dims();
    let s = k.dims()[2];
    assert!(s >= t, "causal_attention: {t} queries but only {s} keys");
    let options = |is_causal| AttentionModuleOptions {
        scale,
        softcap: None,
        is_causal,
    };
    if t == s {
        return attention(q, k, v, None, None, options(true));
    }
    if t == 1 {
        return attention(q, k, v, None, None, options(false));
    }
    let offset = s - t;
    let bias: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..s).map(move |j| {
                if j <= i + offset {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    let bias = Tensor::<4>::from_data(TensorData::new(bias, [1, 1, t, s]), &q.device())
        .expand([b, h, t, s]);
    attention(q, k, v, None, Some(bias), options(false))
}
