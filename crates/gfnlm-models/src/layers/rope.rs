//! Rotary position embedding (RoPE): the f32 `cos`/`sin` tables ([`RotaryEmbedding`] →
//! [`RotaryTables`]) and both ways of applying them — half-split (`rotate_half`, HF Llama:
//! [`RotaryTables::apply`]) and adjacent pairs over the first `rotary_dim` channels
//! (`rotate_every_two`, HF GPT-J: [`PartialRotary`]).

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
    /// Number of positions the tables cover.
    pub fn len(&self) -> usize {
        self.cos.dims()[2]
    }

    /// True when the tables cover no position.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tables of positions `start..start + len` of these (which start at position 0).
    pub fn positions(&self, start: usize, len: usize) -> RotaryTables {
        let [a, b, _, h] = self.cos.dims();
        let range = [0..a, 0..b, start..start + len, 0..h];
        RotaryTables {
            cos: self.cos.clone().slice(range.clone()),
            sin: self.sin.clone().slice(range),
        }
    }

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

/// GPT-J's rotary embedding: the first `rotary_dim` channels of each head are rotated in
/// adjacent pairs `(2i, 2i+1)` (`rotate_every_two`) with `θᵢ = 10000^(−2i/rotary_dim)`; the
/// rest pass through.
#[derive(Module, Debug)]
pub struct PartialRotary {
    /// Per-head width.
    pub head_dim: usize,
    /// Rotated channels per head.
    pub rotary_dim: usize,
}

impl PartialRotary {
    /// Rotary over the first `rotary_dim` of `head_dim` channels.
    pub fn new(head_dim: usize, rotary_dim: usize) -> Self {
        Self {
            head_dim,
            rotary_dim,
        }
    }

    /// The tables for positions `start..start+len` (same f32 values as HF: inv_freq over
    /// `rotary_dim`, angle = position · inv_freq); `None` when nothing rotates.
    pub fn tables(&self, start: usize, len: usize, device: &Device) -> Option<RotaryTables> {
        (self.rotary_dim > 0)
            .then(|| RotaryEmbedding::new(self.rotary_dim, 10_000.0).tables(start, len, device))
    }

    /// Rotates `x` `[batch, heads, seq, head_dim]` at positions `start..start+seq`.
    pub fn apply(&self, x: Tensor<4>, start: usize) -> Tensor<4> {
        let [_, _, t, _] = x.dims();
        let tables = self.tables(start, t, &x.device());
        self.apply_tables(x, tables.as_ref())
    }

    /// Rotates `x` `[batch, heads, seq, head_dim]` with the tables of its positions
    /// ([`PartialRotary::tables`], built once per forward pass).
    pub fn apply_tables(&self, x: Tensor<4>, tables: Option<&RotaryTables>) -> Tensor<4> {
        let [b, h, t, d] = x.dims();
        let rd = self.rotary_dim;
        let Some(RotaryTables { cos, sin }) = tables.cloned() else {
            return x;
        };
        let cos: Tensor<5> = cos.reshape([1, 1, t, rd / 2, 1]);
        let sin: Tensor<5> = sin.reshape([1, 1, t, rd / 2, 1]);
        let rot: Tensor<5> =
            x.clone()
                .slice([0..b, 0..h, 0..t, 0..rd])
                .reshape([b, h, t, rd / 2, 2]);
        let even = rot.clone().slice([0..b, 0..h, 0..t, 0..rd / 2, 0..1]);
        let odd = rot.slice([0..b, 0..h, 0..t, 0..rd / 2, 1..2]);
        let y_even = even.clone() * cos.clone() - odd.clone() * sin.clone();
        let y_odd = odd * cos + even * sin;
        let rotated: Tensor<4> = Tensor::cat(vec![y_even, y_odd], 4).reshape([b, h, t, rd]);
        if rd == d {
            rotated
        } else {
            let pass = x.slice([0..b, 0..h, 0..t, rd..d]);
            Tensor::cat(vec![rotated, pass], 3)
        }
    }
}
