//! Attaching adapters to a model's linear layers, switching them, merging, counting.

use std::fmt;

use burn::module::{Module, Param};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use gfnlm_models::gpt2::Gpt2LmHeadModel;
use gfnlm_models::gptj::GptJForCausalLm;
use gfnlm_models::linear::LoraAdapter;
use gfnlm_models::{CausalLm, Linear, Linears, LlamaForCausalLm};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::LoraConfig;
use crate::error::LoraError;

/// A model whose linear layers can carry LoRA adapters, addressed by their Hugging Face module
/// names (`model.layers.0.self_attn.q_proj`, `transformer.h.0.attn.c_attn`, …).
///
/// The implementations are the models' module-tree walk ([`gfnlm_models::Linears`], the same
/// walk as their own `for_each_linear{,_mut}`): a new architecture gets it from the
/// `linears!` declarations of its module structs, and every function of this crate then works
/// on it.
pub trait AdaptableModel: Module {
    /// Calls `f(hf_name, linear)` for every linear layer, in a fixed order.
    fn for_each_linear(&self, f: &mut dyn FnMut(&str, &Linear));
    /// Calls `f(hf_name, linear)` for every linear layer, mutably, in the same order.
    fn for_each_linear_mut(&mut self, f: &mut dyn FnMut(&str, &mut Linear));
    /// Whether `hf_name` is the output head (skipped by `target_modules = "all-linear"`).
    fn is_output_layer(&self, hf_name: &str) -> bool {
        hf_name == "lm_head"
    }
}

// Every walker comes from the model's module tree (`gfnlm_models::weights::Linears`), the
// same tree the architecture's one constructor builds; nothing here lists layers.
macro_rules! adaptable {
    ($($t:ty),*) => {$(
        impl AdaptableModel for $t {
            fn for_each_linear(&self, f: &mut dyn FnMut(&str, &Linear)) {
                Linears::visit_linears(self, "", f)
            }
            fn for_each_linear_mut(&mut self, f: &mut dyn FnMut(&str, &mut Linear)) {
                Linears::visit_linears_mut(self, "", f)
            }
        }
    )*};
}

adaptable!(LlamaForCausalLm, Gpt2LmHeadModel, GptJForCausalLm, CausalLm);

/// What [`apply_lora`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoraReport {
    /// HF names of the adapted layers, in model order.
    pub adapted: Vec<String>,
    /// Scalars in the adapters (the only trainable parameters).
    pub trainable_params: usize,
    /// All scalars of the model, adapters included (PEFT's "all params").
    pub total_params: usize,
}

impl fmt::Display for LoraReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "LoRA on {} layers: trainable params: {} || all params: {} || trainable%: {:.4}",
            self.adapted.len(),
            self.trainable_params,
            self.total_params,
            100.0 * self.trainable_params as f64 / self.total_params.max(1) as f64
        )
    }
}

/// Names of the linear layers `cfg` selects, in model order; an error when none match.
pub fn target_names<M: AdaptableModel>(
    model: &M,
    cfg: &LoraConfig,
) -> Result<Vec<String>, LoraError> {
    let matcher = cfg.matcher()?;
    let mut all = Vec::new();
    let mut hit = Vec::new();
    model.for_each_linear(&mut |name, _| {
        all.push(name.to_string());
        if matcher.matches(name, model.is_output_layer(name)) {
            hit.push(name.to_string());
        }
    });
    if hit.is_empty() {
        let mut leaves: Vec<&str> = all
            .iter()
            .map(|n| n.rsplit('.').next().unwrap_or(n))
            .collect();
        leaves.sort();
        leaves.dedup();
        return Err(LoraError::Config(format!(
            "target_modules {} match no linear layer of this model; its linear layers are \
             named {}",
            match &cfg.target_regex {
                Some(re) => format!("regex '{re}'"),
                None => format!("{:?}", cfg.target_modules),
            },
            leaves.join(", ")
        )));
    }
    Ok(hit)
}

/// Attaches fresh adapters to the layers `cfg` selects and freezes everything else.
///
/// Initialisation follows PEFT: `A` is Kaiming-uniform (bound `1/√d_in`), `B = 0`, so the
/// adapted model starts equal to the base model. Every non-adapter parameter (weights,
/// embeddings, norms) is set to `require_grad = false`: it gets no gradient and, since burn's
/// optimizers only keep state for parameters with gradients, no optimizer state. Existing
/// adapters are replaced (unmerged first).
///
/// Random numbers come from burn's generator on `device`; see [`apply_lora_seeded`] for a
/// reproducible initialisation.
pub fn apply_lora<M: AdaptableModel>(
    model: &mut M,
    cfg: &LoraConfig,
    device: &Device,
) -> Result<LoraReport, LoraError> {
    attach(model, cfg, device, |[d_in, r], bound| {
        Tensor::<2>::random([d_in, r], Distribution::Uniform(-bound, bound), device)
    })
}

/// [`apply_lora`] with `A` drawn from a seeded generator, so the same seed gives the same
/// adapters on every device.
pub fn apply_lora_seeded<M: AdaptableModel>(
    model: &mut M,
    cfg: &LoraConfig,
    seed: u64,
    device: &Device,
) -> Result<LoraReport, LoraError> {
    let mut rng = StdRng::seed_from_u64(seed);
    attach(model, cfg, device, |[d_in, r], bound| {
        let v: Vec<f32> = (0..d_in * r)
            .map(|_| rng.random_range(-bound..bound) as f32)
            .collect();
        Tensor::from_data(TensorData::new(v, [d_in, r]), device)
    })
}

fn attach<M: AdaptableModel>(
    model: &mut M,
    cfg: &LoraConfig,
    device: &Device,
    mut init_a: impl FnMut([usize; 2], f64) -> Tensor<2>,
) -> Result<LoraReport, LoraError> {
    let targets = target_names(model, cfg)?;
    // r ≤ min(in, out) of every adapted layer, checked before anything is allocated (a rank
    // above the layer's width adds nothing a full-rank update would not, at r·(in+out) cost).
    let mut too_wide = Vec::new();
    model.for_each_linear(&mut |name, lin| {
        let width = lin.d_in().min(lin.d_out());
        if cfg.r > width && targets.iter().any(|t| t == name) {
            too_wide.push(format!("{name} (min(in, out) = {width})"));
        }
    });
    if !too_wide.is_empty() {
        let n = too_wide.len();
        too_wide.truncate(3);
        return Err(LoraError::Config(format!(
            "r = {} exceeds the width of {n} targeted layer(s): {}{}; r must be ≤ min(in, out) \
             of every adapted layer",
            cfg.r,
            too_wide.join(", "),
            if n > 3 { ", …" } else { "" }
        )));
    }
    freeze_all(model);
    let (scale, dropout, r) = (cfg.scaling(), cfg.dropout, cfg.r);
    let mut adapted = Vec::new();
    model.for_each_linear_mut(&mut |name, lin| {
        if !targets.iter().any(|t| t == name) {
            return;
        }
        lin.unmerge_lora();
        let (d_in, d_out) = (lin.d_in(), lin.d_out());
        // PEFT: kaiming_uniform_(a=√5) on [r, in] → U(-1/√in, 1/√in).
        let a = init_a([d_in, r], 1.0 / (d_in as f64).sqrt());
        let b = Tensor::<2>::zeros([r, d_out], device);
        lin.lora = Some(LoraAdapter::new(a, b, scale, dropout));
        adapted.push(name.to_string());
    });
    Ok(LoraReport {
        adapted,
        trainable_params: trainable_parameter_count(&*model),
        total_params: total_parameter_count(&*model),
    })
}

/// Sets `require_grad = false` on every parameter of `model`, then back to `true` on the
/// adapters' `A` and `B`: only adapters train.
pub fn freeze_all<M: AdaptableModel>(model: &mut M) {
    *model = model.clone().no_grad();
    model.for_each_linear_mut(&mut |_, lin| {
        if let Some(l) = lin.lora.as_mut() {
            l.lora_a = l.lora_a.clone().set_require_grad(true);
            l.lora_b = l.lora_b.clone().set_require_grad(true);
        }
    });
}

/// Switches every adapter on (policy) or off (base model, e.g. as the reward model). The
/// weights are shared: nothing is copied. Turning off merged adapters unmerges them first.
pub fn set_adapters_enabled<M: AdaptableModel>(model: &mut M, enabled: bool) {
    model.for_each_linear_mut(&mut |_, lin| lin.set_lora_enabled(enabled));
}

/// `Some(true)` if every adapter is on, `Some(false)` if every one is off, `None` when the
/// model has no adapters or they disagree.
pub fn adapters_enabled<M: AdaptableModel>(model: &M) -> Option<bool> {
    let mut state = None;
    let mut mixed = false;
    model.for_each_linear(&mut |_, lin| {
        if let Some(l) = &lin.lora {
            match state {
                None => state = Some(l.enabled),
                Some(s) if s != l.enabled => mixed = true,
                _ => {}
            }
        }
    });
    if mixed { None } else { state }
}

/// Runs `f` on the base model (adapters off), then restores each adapter's previous switch.
pub fn with_adapters_disabled<M: AdaptableModel, T>(model: &mut M, f: impl FnOnce(&M) -> T) -> T {
    let mut was = Vec::new();
    model.for_each_linear_mut(&mut |_, lin| {
        was.push(lin.lora.as_ref().map(|l| l.enabled));
        lin.set_lora_enabled(false);
    });
    let out = f(&*model);
    let mut it = was.into_iter();
    model.for_each_linear_mut(&mut |_, lin| {
        if let Some(Some(on)) = it.next() {
            lin.set_lora_enabled(on);
        }
    });
    out
}

/// Folds every enabled adapter into its weight (`W ← W + s·A·B`) for dense inference; returns
/// how many were merged. Adapters are kept so [`unmerge`] can undo it.
pub fn merge<M: AdaptableModel>(model: &mut M) -> usize {
    let mut n = 0;
    model.for_each_linear_mut(&mut |_, lin| n += lin.merge_lora() as usize);
    n
}

/// Undoes [`merge`] (`W ← W − s·A·B`, exact up to f32 rounding); returns how many were unmerged.
pub fn unmerge<M: AdaptableModel>(model: &mut M) -> usize {
    let mut n = 0;
    model.for_each_linear_mut(&mut |_, lin| n += lin.unmerge_lora() as usize);
    n
}

/// Merges enabled adapters and removes all adapters (PEFT's `merge_and_unload`).
pub fn merge_and_unload<M: AdaptableModel>(model: &mut M) {
    merge(model);
    model.for_each_linear_mut(&mut |_, lin| lin.lora = None);
}

/// Removes all adapters without merging (the base model again); merged ones are unmerged.
pub fn remove_adapters<M: AdaptableModel>(model: &mut M) {
    model.for_each_linear_mut(&mut |_, lin| {
        lin.unmerge_lora();
        lin.lora = None;
    });
}

/// Scalars in all adapters: the trainable parameters after [`apply_lora`] / `load_peft`.
pub fn trainable_parameter_count<M: AdaptableModel>(model: &M) -> usize {
    let mut n = 0;
    model.for_each_linear(&mut |_, lin| {
        n += lin.lora.as_ref().map_or(0, LoraAdapter::num_params);
    });
    n
}

/// Scalars in the whole model, adapters included.
pub fn total_parameter_count<M: AdaptableModel>(model: &M) -> usize {
    model.num_params()
}

/// Scalars whose tensors currently require a gradient, counted from the tensors themselves.
///
/// Meaningful on an autodiff device (elsewhere no tensor tracks gradients and this is 0): a
/// check that [`trainable_parameter_count`] is what the optimizer will actually see.
pub fn require_grad_parameter_count<M: Module>(model: &M) -> usize {
    struct Count(usize);
    impl burn::module::ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if param.is_require_grad() {
                self.0 += param.shape().num_elements();
            }
        }
    }
    let mut c = Count(0);
    model.visit(&mut c);
    c.0
}
