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

    /// The tables for positions `start..start+len`, computed like HF (`inv_freq` in f32,
    /// angle = position · inv_freq in f32). Built once per forward pass and shared by all layers.
    pub fn tables(&self, start: usize, len: usize, device: &Device) -> RotaryTables {
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
        RotaryTables {
            cos: Tensor::from_data(TensorData::new(cos, [1, 1, len, half]), device),
            sin: Tensor::from_data(TensorData::new(sin, [1, 1, len, half]), device),
        }
    }
}

/// RoPE `cos`/`sin` tables `[1, 1, len, head_dim/2]` for a block of positions.
#[derive(Debug, Clone)]
pub struct RotaryTables {
    /// cos(position · inv_freq).
    pub cos: Tensor<4>,
    /// sin(position · inv_freq).
    pub sin: Tensor<4>,
}

impl RotaryTables {
    /// Rotates `x` `[batch, heads, seq, head_dim]`.
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let (cos, sin) = (self.cos.clone(), self.sin.clone());
        let [b, h, t, d] = x.dims();
        let half = d / 2;
        let x1 = x.clone().slice([0..b, 0..h, 0..t, 0..half]);
        let x2 = x.slice([0..b, 0..h, 0..t, half..d]);
        let r1 = x1.clone() * cos.clone() - x2.clone() * sin.clone();
        let r2 = x2 * cos + x1 * sin;
        Tensor::cat(vec![r1, r2], 3)
    }
}
