//! Rotary position embedding, half-split (`rotate_half`) form as in HF Llama.

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};

/// RoPE with base θ over `head_dim` channels; angles computed for the positions asked.
#[derive(Module, Debug)]
pub struct RotaryEmbedding {
    /// Per-head width.
    pub head_dim: usize,
    /// RoPE base θ.
    pub theta: f64,
}

impl RotaryEmbedding {
    /// RoPE for `head_dim` channels with base `theta`.
    pub fn new(head_dim: usize, theta: f64) -> Self {
        Self { head_dim, theta }
    }

    /// `(cos, sin)` tables `[1, 1, len, head_dim/2]` for positions `start..start+len`, computed
    /// like HF: `inv_freq` in f32, angle = position · inv_freq in f32.
    pub fn tables(&self, start: usize, len: usize, device: &Device) -> (Tensor<4>, Tensor<4>) {
        let half = self.head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| {
                let exponent = (2 * i) as f32 / self.head_dim as f32;
                1.0 / (self.theta as f32).powf(exponent)
            })
            .collect();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for p in start..start + len {
            for f in &inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        (
            Tensor::from_data(TensorData::new(cos, [1, 1, len, half]), device),
            Tensor::from_data(TensorData::new(sin, [1, 1, len, half]), device),
        )
    }

    /// Rotates `x` `[batch, heads, seq, head_dim]` by the given tables.
    pub fn apply(x: Tensor<4>, cos: Tensor<4>, sin: Tensor<4>) -> Tensor<4> {
        let [b, h, t, d] = x.dims();
        let half = d / 2;
        let x1 = x.clone().slice([0..b, 0..h, 0..t, 0..half]);
        let x2 = x.slice([0..b, 0..h, 0..t, half..d]);
        let r1 = x1.clone() * cos.clone() - x2.clone() * sin.clone();
        let r2 = x2 * cos + x1 * sin;
        Tensor::cat(vec![r1, r2], 3)
    }
}
