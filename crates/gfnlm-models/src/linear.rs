//! A linear projection `y = x·W (+ b)` with `W` stored as `[in, out]`, and an optional LoRA
//! adapter computed as a low-rank side path `scale·(x·A)·B`.
//!
//! The adapter is never folded into `W` on the forward pass: the dense `W + scale·A·B` would cost
//! `in·out·r` multiply-adds per call (eight times the base product for a batch-8 decode step at
//! r = 64) and a weight-shaped gradient in training. [`Linear::merge_lora`] folds it explicitly
//! when a single dense weight is wanted.

use burn::module::{Module, Param};
use burn::tensor::{DType, Distribution, FloatDType, Tensor};

use crate::precision::{cast_param, cast_to, matmul_in_weight_dtype};

/// A LoRA adapter on one [`Linear`]: `Δy = scale · dropout(x)·A·B`.
///
/// `A` is `[d_in, r]` and `B` is `[r, d_out]` (burn layout; PEFT stores the transposes
/// `lora_A.weight [r, in]` and `lora_B.weight [out, r]`).
#[derive(Module, Debug)]
pub struct LoraAdapter {
    /// Down-projection `A`, `[d_in, r]` (trainable).
    pub lora_a: Param<Tensor<2>>,
    /// Up-projection `B`, `[r, d_out]` (trainable).
    pub lora_b: Param<Tensor<2>>,
    /// Scaling of the low-rank path: `alpha / r` (or `alpha / √r` with rsLoRA).
    pub scale: f64,
    /// Dropout rate on the adapter's input. Applied only when the input lives on an autodiff
    /// device (training); 0 disables it.
    pub dropout: f64,
    /// Whether the adapter contributes to the output (policy) or not (base model).
    pub enabled: bool,
    /// Whether `scale·A·B` has been folded into the base weight (see [`Linear::merge_lora`]).
    pub merged: bool,
}

impl LoraAdapter {
    /// An adapter from `A` `[d_in, r]` and `B` `[r, d_out]`, enabled and unmerged.
    pub fn new(lora_a: Tensor<2>, lora_b: Tensor<2>, scale: f64, dropout: f64) -> Self {
        Self {
            lora_a: Param::from_tensor(lora_a),
            lora_b: Param::from_tensor(lora_b),
            scale,
            dropout,
            enabled: true,
            merged: false,
        }
    }

    /// Rank `r`.
    pub fn rank(&self) -> usize {
        self.lora_a.shape().dims::<2>()[1]
    }

    /// Number of scalars in `A` and `B`.
    pub fn num_params(&self) -> usize {
        self.lora_a.shape().num_elements() + self.lora_b.shape().num_elements()
    }

    /// The dense update `scale·A·B`, `[d_in, d_out]`.
    pub fn delta(&self) -> Tensor<2> {
        self.lora_a
            .val()
            .matmul(self.lora_b.val())
            .mul_scalar(self.scale)
    }

    /// `scale·(dropout(x)·A)·B` for 2-D `x` `[rows, d_in]`.
    fn forward_2d(&self, x: Tensor<2>) -> Tensor<2> {
        let x = if self.dropout > 0.0 && x.is_autodiff() {
            let keep = 1.0 - self.dropout;
            let mask = x.random_like(Distribution::Bernoulli(keep));
            (x * mask).div_scalar(keep)
        } else {
            x
        };
        // Scale the narrow [rows, r] intermediate rather than the [rows, d_out] output.
        x.matmul(self.lora_a.val())
            .mul_scalar(self.scale)
            .matmul(self.lora_b.val())
    }
}

/// Linear projection with weight `[d_in, d_out]` (burn layout; HF's `[out, in]` transposed on load).
#[derive(Module, Debug)]
pub struct Linear {
    /// Weight, `[d_in, d_out]`.
    pub weight: Param<Tensor<2>>,
    /// Optional bias, `[d_out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// Optional LoRA adapter (see [`LoraAdapter`]).
    pub lora: Option<LoraAdapter>,
}

impl Linear {
    /// Builds a projection from an `[d_in, d_out]` weight and optional bias, without adapter.
    pub fn new(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Self {
        Self {
            weight: Param::from_tensor(weight),
            bias: bias.map(Param::from_tensor),
            lora: None,
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
    /// An enabled, unmerged adapter adds `scale·(x·A)·B`. A weight stored in a narrower dtype
    /// (see [`cast_weight`](Self::cast_weight)) is multiplied in that dtype; the output has
    /// `x`'s dtype.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dims = x.dims();
        let rows: usize = dims[..D - 1].iter().product();
        let x2: Tensor<2> = x.reshape([rows, dims[D - 1]]);
        let lora = self.lora.as_ref().filter(|l| l.enabled && !l.merged);
        let mut y = matmul_in_weight_dtype(x2.clone(), self.weight.val());
        if let Some(b) = &self.bias {
            y = y + b.val().unsqueeze::<2>();
        }
        if let Some(l) = lora {
            y = y + l.forward_2d(x2);
        }
        let mut out = dims;
        out[D - 1] = self.d_out();
        y.reshape(out)
    }

    /// Folds an enabled adapter into the weight (`W ← W + scale·A·B`) so the forward pass is one
    /// dense product. The adapter is kept (marked merged) so [`unmerge_lora`](Self::unmerge_lora)
    /// can undo it. Returns whether anything was merged.
    ///
    /// The merged weight is detached from the autograd graph and keeps the base weight's
    /// gradient setting, so a merged model is for inference, not for training the adapter.
    pub fn merge_lora(&mut self) -> bool {
        let Some(l) = self.lora.as_ref().filter(|l| l.enabled && !l.merged) else {
            return false;
        };
        let delta = l.delta().detach();
        self.add_to_weight(delta);
        if let Some(l) = self.lora.as_mut() {
            l.merged = true;
        }
        true
    }

    /// Undoes [`merge_lora`](Self::merge_lora): `W ← W − scale·A·B`. The result equals the
    /// original weight up to float rounding (one add and one subtract per element). Returns
    /// whether anything was unmerged.
    pub fn unmerge_lora(&mut self) -> bool {
        let Some(l) = self.lora.as_ref().filter(|l| l.merged) else {
            return false;
        };
        let delta = l.delta().detach().neg();
        self.add_to_weight(delta);
        if let Some(l) = self.lora.as_mut() {
            l.merged = false;
        }
        true
    }

    /// Stores the (frozen) weight in `dtype`, e.g. bf16 for mixed precision
    /// ([`crate::precision`]). The bias and the adapter stay in their dtype (f32).
    pub fn cast_weight(&mut self, dtype: FloatDType) {
        self.weight = cast_param(self.weight.clone(), dtype);
    }

    /// Switches the adapter on (policy) or off (base model). Turning off a merged adapter
    /// unmerges it first, so "off" always means the base weights. No-op without an adapter.
    pub fn set_lora_enabled(&mut self, enabled: bool) {
        if !enabled {
            self.unmerge_lora();
        }
        if let Some(l) = self.lora.as_mut() {
            l.enabled = enabled;
        }
    }

    /// `W ← W + delta`, summed in f32 and stored back in `W`'s dtype, keeping the weight's id and
    /// gradient setting and detaching the result.
    fn add_to_weight(&mut self, delta: Tensor<2>) {
        self.weight = self.weight.clone().map(|w| {
            let (require_grad, dtype) = (w.is_require_grad(), w.dtype());
            let w = cast_to(cast_to(w, DType::F32) + delta, dtype).detach();
            if require_grad { w.require_grad() } else { w }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData, Tolerance};

    fn t2(v: Vec<f32>, shape: [usize; 2], d: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(v, shape), d)
    }

    fn adapted(d: &Device) -> Linear {
        // W [3, 2], A [3, 1], B [1, 2], scale 2.
        let mut lin = Linear::new(
            t2(vec![1., 2., 3., 4., 5., 6.], [3, 2], d),
            Some(Tensor::from_data(
                TensorData::new(vec![0.5f32, -0.5], [2]),
                d,
            )),
        );
        lin.lora = Some(LoraAdapter::new(
            t2(vec![1., 0., -1.], [3, 1], d),
            t2(vec![0.25, 0.5], [1, 2], d),
            2.0,
            0.0,
        ));
        lin
    }

    #[test]
    fn low_rank_path_matches_hand_computation() {
        let d = Device::flex();
        let lin = adapted(&d);
        let x = Tensor::<3>::from_data(
            TensorData::new(vec![1f32, 1., 1., 2., 0., 1.], [1, 2, 3]),
            &d,
        );
        // Row 1: xW = [9, 12] + b = [9.5, 11.5]; xA = 0 → unchanged.
        // Row 2: xW = [7, 10] + b = [7.5, 9.5]; xA = 1 → + 2·[0.25, 0.5] = [8, 10.5].
        let y = lin.forward(x.clone());
        y.into_data().assert_approx_eq::<f32>(
            &TensorData::new(vec![9.5f32, 11.5, 8.0, 10.5], [1, 2, 2]),
            Tolerance::default(),
        );
        let mut off = adapted(&d);
        off.lora.as_mut().unwrap().enabled = false;
        off.forward(x).into_data().assert_approx_eq::<f32>(
            &TensorData::new(vec![9.5f32, 11.5, 7.5, 9.5], [1, 2, 2]),
            Tolerance::default(),
        );
    }

    #[test]
    fn merge_then_unmerge_round_trips() {
        let d = Device::flex();
        let mut lin = adapted(&d);
        let x = Tensor::<2>::random([4, 3], Distribution::Normal(0.0, 1.0), &d);
        let before_w = lin.weight.val().into_data();
        let unmerged = lin.forward(x.clone()).into_data();
        assert!(lin.merge_lora());
        assert!(!lin.merge_lora(), "merging twice must be a no-op");
        assert!(lin.lora.as_ref().unwrap().merged);
        lin.forward(x.clone())
            .into_data()
            .assert_approx_eq::<f32>(&unmerged, Tolerance::absolute(1e-5));
        assert!(lin.unmerge_lora());
        lin.weight
            .val()
            .into_data()
            .assert_approx_eq::<f32>(&before_w, Tolerance::absolute(1e-6));
        lin.forward(x)
            .into_data()
            .assert_approx_eq::<f32>(&unmerged, Tolerance::absolute(1e-5));
    }

    #[test]
    fn disabling_a_merged_adapter_restores_the_base() {
        let d = Device::flex();
        let mut lin = adapted(&d);
        let x = Tensor::<2>::random([4, 3], Distribution::Normal(0.0, 1.0), &d);
        let mut base = adapted(&d);
        base.lora = None;
        let want = base.forward(x.clone()).into_data();
        lin.merge_lora();
        lin.set_lora_enabled(false);
        assert!(!lin.lora.as_ref().unwrap().merged);
        lin.forward(x)
            .into_data()
            .assert_approx_eq::<f32>(&want, Tolerance::absolute(1e-6));
    }

    #[test]
    fn dropout_applies_only_on_autodiff_devices() {
        let with_rate = |d: &Device| {
            let mut lin = adapted(d);
            lin.lora.as_mut().unwrap().dropout = 0.5;
            lin
        };
        let plain = Device::flex();
        let x = Tensor::<2>::ones([64, 3], &plain);
        let want = adapted(&plain).forward(x.clone()).into_data();
        // Plain device (scoring, sampling): no dropout.
        with_rate(&plain)
            .forward(x.clone())
            .into_data()
            .assert_eq(&want, true);
        // Autodiff device (training): the adapter input is dropped and rescaled by 1/(1-p),
        // so each row's adapter term is 0 or twice the undropped one; the base term is intact.
        let ad = plain.autodiff();
        let lin = with_rate(&ad);
        let base = Linear::new(lin.weight.val(), lin.bias.as_ref().map(|b| b.val()));
        let delta =
            lin.forward(Tensor::<2>::ones([64, 3], &ad)) - base.forward(Tensor::ones([64, 3], &ad));
        let d: Vec<f32> = delta.into_data().convert::<f32>().try_into_vec().unwrap();
        // x = 1 and A = [1, 0, −1]: x'·A = 2·(m₀ − m₂) ∈ {−2, 0, 2} for masks m, times scale 2
        // and B = [0.25, 0.5] gives rows (k, 2k) with k ∈ {−1, 0, 1}; undropped it is (0, 0).
        let mut distinct = std::collections::BTreeSet::new();
        for row in d.chunks(2) {
            let k = row[0];
            assert!(
                [-1.0f32, 0.0, 1.0].iter().any(|a| (a - k).abs() < 1e-5),
                "{row:?}"
            );
            assert!((row[1] - 2.0 * k).abs() < 1e-5, "{row:?}");
            distinct.insert(k.round() as i32);
        }
        assert!(distinct.len() > 1, "dropout never fired: {distinct:?}");
    }

    #[test]
    fn disabled_adapter_is_not_merged() {
        let d = Device::flex();
        let mut lin = adapted(&d);
        lin.lora.as_mut().unwrap().enabled = false;
        assert!(!lin.merge_lora());
        assert!(!lin.unmerge_lora());
    }
}
