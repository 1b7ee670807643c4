//! A plain linear projection `y = x·W (+ b)` with `W` stored as `[in, out]`.

use burn::module::{Module, Param};
use burn::tensor::Tensor;

/// Linear projection with weight `[d_in, d_out]` (burn layout; HF's `[out, in]` transposed on load).
#[derive(Module, Debug)]
pub struct Linear {
    /// Weight, `[d_in, d_out]`.
    pub weight: Param<Tensor<2>>,
    /// Optional bias, `[d_out]`.
    pub bias: Option<Param<Tensor<1>>>,
}

impl Linear {
    /// Builds a projection from an `[d_in, d_out]` weight and optional bias.
    pub fn new(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Self {
        Self {
            weight: Param::from_tensor(weight),
            bias: bias.map(Param::from_tensor),
        }
    }

    /// Input width.
    pub fn d_in(&self) -> usize {
        self.weight.shape().dims::<2>()[0]
    }

    /// Output width.
    pub fn d_out(&self) -> usize {
        self.weight.shape().dims::<2>()[1]
    }

    /// Applies the projection to the last dimension of `x`.
    ///
    /// Leading dimensions are flattened so the product is one `[rows, d_in] × [d_in, d_out]`
    /// matrix multiply (a batched product of `[1, d_in]` rows re-reads the weight per row).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dims = x.dims();
        let rows: usize = dims[..D - 1].iter().product();
        let x2: Tensor<2> = x.reshape([rows, dims[D - 1]]);
        let mut y = x2.matmul(self.weight.val());
        if let Some(b) = &self.bias {
            y = y + b.val().unsqueeze::<2>();
        }
        let mut out = dims;
        out[D - 1] = self.d_out();
        y.reshape(out)
    }
}
