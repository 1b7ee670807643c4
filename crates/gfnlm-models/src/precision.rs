//! Mixed precision for frozen weights: the large matrix products run in the weights' storage
//! dtype (bf16 or f16) while everything else — residual stream, norms, RoPE, attention
//! softmax, LoRA adapters, log-softmax and the loss — stays in f32.
//!
//! A projection whose weight is stored in a narrower dtype than its input casts the input down,
//! multiplies, and casts the product back ([`matmul_in_weight_dtype`]); the cast's backward pass
//! casts the gradient, so adapters upstream still train in f32. This is what `torch.autocast`
//! does for `nn.Linear`. On CPUs with AMX or AVX512-BF16, LibTorch (`--device tch`) runs bf16
//! products several times faster than f32 (docs/performance.md); burn's flex backend converts
//! bf16 operands to f32 on every product, so there it only costs time.

use std::fmt;
use std::str::FromStr;

use burn::tensor::{DType, FloatDType, Tensor};

/// Storage dtype of the frozen (non-adapter) weights: embedding, projections, LM head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightPrecision {
    /// Full f32 (the default; bit-compatible with the parity references).
    #[default]
    F32,
    /// bfloat16 weights and matrix products; f32 everywhere else.
    Bf16,
    /// IEEE half weights and matrix products; f32 everywhere else.
    F16,
}

impl WeightPrecision {
    /// The burn dtype of the stored weights.
    pub fn float_dtype(self) -> FloatDType {
        match self {
            WeightPrecision::F32 => FloatDType::F32,
            WeightPrecision::Bf16 => FloatDType::BF16,
            WeightPrecision::F16 => FloatDType::F16,
        }
    }
}

impl fmt::Display for WeightPrecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WeightPrecision::F32 => "f32",
            WeightPrecision::Bf16 => "bf16",
            WeightPrecision::F16 => "f16",
        })
    }
}

impl FromStr for WeightPrecision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(WeightPrecision::F32),
            "bf16" | "bfloat16" => Ok(WeightPrecision::Bf16),
            "f16" | "fp16" | "half" | "float16" => Ok(WeightPrecision::F16),
            other => Err(format!(
                "unknown weight precision '{other}' (expected f32, bf16 or f16)"
            )),
        }
    }
}

/// The device cannot compute in the requested dtype.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "weight precision {precision} is not supported on device {device} (e.g. wgpu has no bf16); use precision = \"f32\", or --device tch for bf16"
)]
pub struct UnsupportedPrecision {
    /// What was asked for.
    pub precision: WeightPrecision,
    /// The device, as burn prints it.
    pub device: String,
}

/// Checks that `device` supports `precision`'s dtype.
pub fn check_supported(
    precision: WeightPrecision,
    device: &burn::tensor::Device,
) -> Result<(), UnsupportedPrecision> {
    if device.supports_dtype(precision.float_dtype()) {
        Ok(())
    } else {
        Err(UnsupportedPrecision {
            precision,
            device: format!("{device:?}"),
        })
    }
}

/// `x · w` computed in `w`'s dtype and returned in `x`'s dtype.
pub fn matmul_in_weight_dtype(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    let x_dtype = x.dtype();
    let w_dtype = w.dtype();
    cast_to(cast_to(x, w_dtype).matmul(w), x_dtype)
}

/// Casts `t` to `dtype` unless it already has it.
pub(crate) fn cast_to<const D: usize>(t: Tensor<D>, dtype: DType) -> Tensor<D> {
    if t.dtype() == dtype {
        t
    } else {
        t.cast(FloatDType::from(dtype))
    }
}

/// Casts a frozen parameter's value, keeping its id and gradient setting.
pub(crate) fn cast_param(
    p: burn::module::Param<Tensor<2>>,
    dtype: FloatDType,
) -> burn::module::Param<Tensor<2>> {
    p.map(|w| {
        let require_grad = w.is_require_grad();
        let w = w.cast(dtype).detach();
        if require_grad { w.require_grad() } else { w }
    })
}
