//! Normalisation layers: [`RmsNorm`] (Llama) and [`LayerNorm`] (GPT-2, GPT-J).

use burn::module::{Module, Param};
use burn::tensor::Tensor;

/// `x · rsqrt(mean(x²) + eps) · weight`.
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// Per-channel gain.
    pub weight: Param<Tensor<1>>,
    /// Added to the mean square for stability.
    pub eps: f64,
}

impl RmsNorm {
    /// A norm with the given gain and epsilon.
    pub fn new(weight: Tensor<1>, eps: f64) -> Self {
        Self {
            weight: Param::from_tensor(weight),
            eps,
        }
    }

    /// Normalises the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let ms = x.clone().square().mean_dim(D - 1);
        let inv = ms.add_scalar(self.eps).sqrt().recip();
        x * inv * self.weight.val().unsqueeze()
    }
}

/// LayerNorm over the last dimension: `(x − mean) / √(var + eps) · weight + bias` (biased var).
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// Per-channel gain.
    pub weight: Param<Tensor<1>>,
    /// Per-channel shift.
    pub bias: Param<Tensor<1>>,
    /// Added to the variance.
    pub eps: f64,
}

impl LayerNorm {
    /// A norm with the given gain, shift and epsilon.
    pub fn new(weight: Tensor<1>, bias: Tensor<1>, eps: f64) -> Self {
        Self {
            weight: Param::from_tensor(weight),
            bias: Param::from_tensor(bias),
            eps,
        }
    }

    /// Normalises the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let mean = x.clone().mean_dim(D - 1);
        let centered = x - mean;
        let var = centered.clone().square().mean_dim(D - 1);
        let normed = centered * var.add_scalar(self.eps).sqrt().recip();
        normed * self.weight.val().unsqueeze() + self.bias.val().unsqueeze()
    }
}
