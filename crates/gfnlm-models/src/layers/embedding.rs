//! Token (and GPT-2's learned position) embedding table.

use burn::module::{Module, Param};
use burn::tensor::{DType, Int, Tensor};

use crate::precision::cast_to;

/// Token embedding table `[vocab, hidden]`.
#[derive(Module, Debug)]
pub struct Embedding {
    /// The table, `[vocab, hidden]`.
    pub weight: Param<Tensor<2>>,
}

impl Embedding {
    /// Looks up `tokens` `[batch, seq]` → `[batch, seq, hidden]`, always in f32 (a table stored
    /// in bf16/f16 for mixed precision is cast after the lookup).
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        cast_to(
            burn::tensor::module::embedding(self.weight.val(), tokens),
            DType::F32,
        )
    }
}
