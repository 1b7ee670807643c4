//! Root-mean-square layer norm.

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
