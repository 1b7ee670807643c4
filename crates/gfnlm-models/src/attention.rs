//! Causal scaled-dot-product attention that means the same on every backend, KV cache included.

use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Tensor, TensorData};

/// The causal mask of one forward pass: `queries` new positions over `keys` positions
/// (`keys − queries` of them cached), built once per pass and shared by every layer.
///
/// burn's `is_causal` is bottom-right aligned in its generic implementation, but burn-tch 0.22
/// hands it to PyTorch's SDPA, whose `is_causal` is top-left aligned: with a cached prefix
/// (`1 < t < s`) libtorch would hide most of the past. So `is_causal` is used only when `t = s`,
/// no mask is needed when `t = 1`, and otherwise an additive −∞ bias carries the mask (burn-tch
/// then uses the generic path; a bool mask would be read with PyTorch's inverted convention).
#[derive(Debug, Clone)]
pub struct CausalMask {
    queries: usize,
    keys: usize,
    /// `[1, 1, t, s]` additive bias, only when `1 < t < s`.
    bias: Option<Tensor<4>>,
}

impl CausalMask {
    /// The mask of `queries` new positions after `keys − queries` cached ones.
    pub fn new(queries: usize, keys: usize, device: &Device) -> Self {
        assert!(
            keys >= queries,
            "CausalMask: {queries} queries but only {keys} keys"
        );
        let bias = (queries > 1 && queries < keys).then(|| {
            let offset = keys - queries;
            let bias: Vec<f32> = (0..queries)
                .flat_map(|i| {
                    (0..keys).map(move |j| {
                        if j <= i + offset {
                            0.0
                        } else {
                            f32::NEG_INFINITY
                        }
                    })
                })
                .collect();
            Tensor::<4>::from_data(TensorData::new(bias, [1, 1, queries, keys]), device)
        });
        Self {
            queries,
            keys,
            bias,
        }
    }
}

/// Causal attention of `q` `[b, h, t, d]` over `k`, `v` `[b, h, s, d]` with `s ≥ t`: query `i`
/// (absolute position `s − t + i`) sees keys `0..=s − t + i`, i.e. the causal boundary is
/// aligned bottom-right, as a KV cache needs. `scale` defaults to `1/√d`. `mask` is the pass's
/// [`CausalMask`] for these `t` and `s`.
pub fn causal_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    scale: Option<f64>,
    mask: &CausalMask,
) -> Tensor<4> {
    let [b, h, t, _] = q.dims();
    let s = k.dims()[2];
    assert!(
        (mask.queries, mask.keys) == (t, s),
        "causal_attention: a mask for {}×{} used for {t}×{s}",
        mask.queries,
        mask.keys
    );
    let options = |is_causal| AttentionModuleOptions {
        scale,
        softcap: None,
        is_causal,
    };
    match &mask.bias {
        _ if t == s => attention(q, k, v, None, None, options(true)),
        None => attention(q, k, v, None, None, options(false)),
        Some(bias) => {
            let bias = bias.clone().expand([b, h, t, s]);
            attention(q, k, v, None, Some(bias), options(false))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// The last `t` queries over all `s` keys (a cached prefix) equal the last `t` rows of the
    /// full causal attention; one query needs no mask.
    #[test]
    fn a_cached_prefix_sees_what_the_full_pass_sees() {
        let device = Device::default();
        let (b, h, s, d) = (2, 3, 7, 8);
        let rand = || Tensor::<4>::random([b, h, s, d], Distribution::Normal(0.0, 1.0), &device);
        let (q, k, v) = (rand(), rand(), rand());
        let full = causal_attention(
            q.clone(),
            k.clone(),
            v.clone(),
            None,
            &CausalMask::new(s, s, &device),
        );
        for t in [1, 3, 6] {
            let part = causal_attention(
                q.clone().slice([0..b, 0..h, s - t..s, 0..d]),
                k.clone(),
                v.clone(),
                None,
                &CausalMask::new(t, s, &device),
            );
            let want = full.clone().slice([0..b, 0..h, s - t..s, 0..d]);
            let diff: f32 = (part - want).abs().max().into_scalar();
            assert!(diff < 1e-5, "t = {t}: {diff}");
        }
    }

    #[test]
    #[should_panic(expected = "a mask for 2×5 used for 3×5")]
    fn a_mask_of_other_sizes_is_refused() {
        let device = Device::default();
        let x = Tensor::<4>::zeros([1, 1, 5, 4], &device);
        let q = x.clone().slice([0..1, 0..1, 0..3, 0..4]);
        causal_attention(q, x.clone(), x, None, &CausalMask::new(2, 5, &device));
    }
}
