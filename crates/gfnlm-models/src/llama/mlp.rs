//! SwiGLU feed-forward block.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;

use crate::linear::Linear;

/// `down(silu(gate(x)) · up(x))`.
#[derive(Module, Debug)]
pub struct LlamaMlp {
    /// Gate projection `[hidden, inter]`.
    pub gate_proj: Linear,
    /// Up projection `[hidden, inter]`.
    pub up_proj: Linear,
    /// Down projection `[inter, hidden]`.
    pub down_proj: Linear,
}

impl LlamaMlp {
    /// Applies the block to `[batch, seq, hidden]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = silu(self.gate_proj.forward(x.clone()));
        self.down_proj.forward(gate * self.up_proj.forward(x))
    }
}
