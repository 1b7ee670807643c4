//! Where a model's weights come from: one [`WeightSource`] trait, so that each architecture
//! writes its layout once.
//!
//! Every architecture has a single constructor (`LlamaConfig::build`, `Gpt2Config::build`,
//! `GptJConfig::build`) that asks a source for each tensor by its Hugging Face checkpoint name
//! (`model.layers.0.self_attn.q_proj.weight`, …) and the shape the config implies. The sources:
//!
//! - [`RandomWeights`] (here): N(0, 0.1²) matrices and biases, N(1, 0.1²) norm gains, drawn
//!   from burn's generator in the order the constructor asks (`init_random`, tests, benches);
//! - [`TensorRecorder`] (here): builds nothing real, records every `(name, stored shape)` and
//!   every projection's name, which is how the Hugging Face loader derives the tensor list it
//!   checks a checkpoint against, and how tests check the walkers against the layout;
//! - safetensors folders (`crate::hf`) and llama.cpp GGUF files (`crate::load`), on the
//!   loading side: they map the names to their files, check shapes and finiteness and decode.
//!
//! The model modules depend on this trait only, never on a loader.

use std::convert::Infallible;

use burn::tensor::{Device, Distribution, Tensor, TensorData};

use crate::layers::{Embedding, LayerNorm, RmsNorm};
use crate::linear::Linear;

/// What a tensor is, for sources that make weights up ([`RandomWeights`]): loaders ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A weight matrix or embedding table: N(0, 0.1²).
    Weight,
    /// A norm's gain: N(1, 0.1²).
    Gain,
    /// A bias or a LayerNorm shift: N(0, 0.1²).
    Bias,
}

/// How a checkpoint stores a 2-D tensor relative to burn's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// As burn holds it (embedding tables, GPT-2 `Conv1D` weights `[in, out]`).
    AsIs,
    /// Transposed: a PyTorch `nn.Linear` weight (and llama.cpp's) is `[out, in]`, burn's
    /// [`Linear`] is `[in, out]`.
    Transposed,
}

impl Stored {
    /// The stored shape of a tensor that burn holds as `shape`.
    pub fn shape(self, [rows, cols]: [usize; 2]) -> [usize; 2] {
        match self {
            Stored::AsIs => [rows, cols],
            Stored::Transposed => [cols, rows],
        }
    }
}

/// A provider of named weights. Names are Hugging Face checkpoint tensor names; shapes are
/// what the model config implies, in burn's layout.
///
/// Implement [`vector`](Self::vector) and [`matrix`](Self::matrix); the layer helpers
/// ([`linear`](Self::linear), [`conv1d`](Self::conv1d), [`embedding`](Self::embedding),
/// [`rms_norm`](Self::rms_norm), [`layer_norm`](Self::layer_norm)) are built on them and ask for
/// `{module}.weight` before `{module}.bias`.
pub trait WeightSource {
    /// Why a tensor could not be provided.
    type Error;

    /// The 1-D tensor `name` of `len` elements.
    fn vector(&mut self, name: &str, len: usize, role: Role) -> Result<Tensor<1>, Self::Error>;

    /// The 2-D tensor `name`, returned as `shape` (burn's layout); the checkpoint holds it as
    /// `stored.shape(shape)`.
    fn matrix(
        &mut self,
        name: &str,
        shape: [usize; 2],
        stored: Stored,
    ) -> Result<Tensor<2>, Self::Error>;

    /// Called with the module name of every projection built by [`linear`](Self::linear) or
    /// [`conv1d`](Self::conv1d), before its tensors are asked for. No-op by default.
    fn on_linear(&mut self, _module: &str) {}

    /// A PyTorch `nn.Linear` `module` (`{module}.weight` stored `[out, in]`, optional
    /// `{module}.bias` `[out]`) as a burn `[d_in, d_out]` projection.
    fn linear(
        &mut self,
        module: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> Result<Linear, Self::Error> {
        self.on_linear(module);
        let weight = self.matrix(
            &format!("{module}.weight"),
            [d_in, d_out],
            Stored::Transposed,
        )?;
        let bias = if bias {
            Some(self.vector(&format!("{module}.bias"), d_out, Role::Bias)?)
        } else {
            None
        };
        Ok(Linear::new(weight, bias))
    }

    /// A GPT-2 `Conv1D` `module` (`{module}.weight` already `[in, out]`, `{module}.bias`).
    fn conv1d(&mut self, module: &str, d_in: usize, d_out: usize) -> Result<Linear, Self::Error> {
        self.on_linear(module);
        let weight = self.matrix(&format!("{module}.weight"), [d_in, d_out], Stored::AsIs)?;
        let bias = self.vector(&format!("{module}.bias"), d_out, Role::Bias)?;
        Ok(Linear::new(weight, Some(bias)))
    }

    /// An embedding table `{module}.weight` `[rows, cols]`.
    fn embedding(
        &mut self,
        module: &str,
        rows: usize,
        cols: usize,
    ) -> Result<Embedding, Self::Error> {
        Ok(Embedding {
            weight: burn::module::Param::from_tensor(self.matrix(
                &format!("{module}.weight"),
                [rows, cols],
                Stored::AsIs,
            )?),
        })
    }

    /// An RMSNorm `{module}.weight` `[len]`.
    fn rms_norm(&mut self, module: &str, len: usize, eps: f64) -> Result<RmsNorm, Self::Error> {
        Ok(RmsNorm::new(
            self.vector(&format!("{module}.weight"), len, Role::Gain)?,
            eps,
        ))
    }

    /// A LayerNorm `{module}.weight`, `{module}.bias`, both `[len]`.
    fn layer_norm(&mut self, module: &str, len: usize, eps: f64) -> Result<LayerNorm, Self::Error> {
        let weight = self.vector(&format!("{module}.weight"), len, Role::Gain)?;
        let bias = self.vector(&format!("{module}.bias"), len, Role::Bias)?;
        Ok(LayerNorm::new(weight, bias, eps))
    }
}

/// Random weights from burn's generator on `device` (seed it with `device.seed(…)` for
/// reproducible models): matrices and biases N(0, 0.1²), norm gains N(1, 0.1²), each drawn in
/// burn's layout in the order the constructor asks.
pub struct RandomWeights<'a> {
    device: &'a Device,
}

impl<'a> RandomWeights<'a> {
    /// A source drawing on `device`.
    pub fn new(device: &'a Device) -> Self {
        Self { device }
    }
}

impl WeightSource for RandomWeights<'_> {
    type Error = Infallible;

    fn vector(&mut self, _name: &str, len: usize, role: Role) -> Result<Tensor<1>, Infallible> {
        let mean = if role == Role::Gain { 1.0 } else { 0.0 };
        Ok(Tensor::random(
            [len],
            Distribution::Normal(mean, 0.1),
            self.device,
        ))
    }

    fn matrix(
        &mut self,
        _name: &str,
        shape: [usize; 2],
        _stored: Stored,
    ) -> Result<Tensor<2>, Infallible> {
        Ok(Tensor::random(
            shape,
            Distribution::Normal(0.0, 0.1),
            self.device,
        ))
    }
}

/// Records what a constructor asks for without reading or drawing anything: every tensor's
/// name and stored shape, in order, and every projection's module name. The model it builds
/// holds one-element placeholders (shared, allocated once) and is meant to be dropped.
pub struct TensorRecorder {
    vector: Tensor<1>,
    matrix: Tensor<2>,
    /// `(name, stored shape)` of every tensor asked for, in order.
    pub tensors: Vec<(String, Vec<usize>)>,
    /// Module names of the projections ([`WeightSource::linear`], [`WeightSource::conv1d`]).
    pub linears: Vec<String>,
}

impl TensorRecorder {
    /// A recorder whose placeholders live on `device`.
    pub fn new(device: &Device) -> Self {
        Self {
            vector: Tensor::from_data(TensorData::new(vec![0f32], [1]), device),
            matrix: Tensor::from_data(TensorData::new(vec![0f32], [1, 1]), device),
            tensors: Vec::new(),
            linears: Vec::new(),
        }
    }

    /// Runs `build` against a fresh recorder on `device` and returns the recorder.
    pub fn record<M>(
        device: &Device,
        build: impl FnOnce(&mut Self) -> Result<M, Infallible>,
    ) -> Self {
        let mut r = Self::new(device);
        let Ok(_) = build(&mut r);
        r
    }
}

impl WeightSource for TensorRecorder {
    type Error = Infallible;

    fn vector(&mut self, name: &str, len: usize, _role: Role) -> Result<Tensor<1>, Infallible> {
        self.tensors.push((name.to_string(), vec![len]));
        Ok(self.vector.clone())
    }

    fn matrix(
        &mut self,
        name: &str,
        shape: [usize; 2],
        stored: Stored,
    ) -> Result<Tensor<2>, Infallible> {
        self.tensors
            .push((name.to_string(), stored.shape(shape).to_vec()));
        Ok(self.matrix.clone())
    }

    fn on_linear(&mut self, module: &str) {
        self.linears.push(module.to_string());
    }
}

/// The module tree's projections, walked by their Hugging Face names: the LoRA crate and the
/// precision switch visit a model through this, never through a list of their own.
///
/// Implemented for [`Linear`] (visits itself), `Vec<T>` (children named by index), `Option<T>`
/// (the child, if present, under the same name) and, with the crate's `linears!` macro, for
/// each module struct from the list of its fields that hold projections.
pub trait Linears {
    /// Calls `f(name, linear)` for every projection under `path`, in field order.
    fn visit_linears(&self, path: &str, f: &mut dyn FnMut(&str, &Linear));
    /// Mutable [`visit_linears`](Self::visit_linears), same names and order.
    fn visit_linears_mut(&mut self, path: &str, f: &mut dyn FnMut(&str, &mut Linear));
}

/// `path.child`, or `child` at the root.
pub(crate) fn join(path: &str, child: &str) -> String {
    if path.is_empty() {
        child.to_string()
    } else {
        format!("{path}.{child}")
    }
}

impl Linears for Linear {
    fn visit_linears(&self, path: &str, f: &mut dyn FnMut(&str, &Linear)) {
        f(path, self)
    }
    fn visit_linears_mut(&mut self, path: &str, f: &mut dyn FnMut(&str, &mut Linear)) {
        f(path, self)
    }
}

impl<T: Linears> Linears for Vec<T> {
    fn visit_linears(&self, path: &str, f: &mut dyn FnMut(&str, &Linear)) {
        for (i, child) in self.iter().enumerate() {
            child.visit_linears(&join(path, &i.to_string()), f);
        }
    }
    fn visit_linears_mut(&mut self, path: &str, f: &mut dyn FnMut(&str, &mut Linear)) {
        for (i, child) in self.iter_mut().enumerate() {
            child.visit_linears_mut(&join(path, &i.to_string()), f);
        }
    }
}

impl<T: Linears> Linears for Option<T> {
    fn visit_linears(&self, path: &str, f: &mut dyn FnMut(&str, &Linear)) {
        if let Some(child) = self {
            child.visit_linears(path, f);
        }
    }
    fn visit_linears_mut(&mut self, path: &str, f: &mut dyn FnMut(&str, &mut Linear)) {
        if let Some(child) = self {
            child.visit_linears_mut(path, f);
        }
    }
}

/// `linears!(Type { field, … })`: implements [`Linears`] for a module struct by visiting the
/// listed fields (those holding projections), each under its field name — which is the
/// checkpoint's module name, since every module tree mirrors the Hugging Face names.
macro_rules! linears {
    ($t:ty { $($field:ident),* $(,)? }) => {
        impl $crate::weights::Linears for $t {
            fn visit_linears(
                &self,
                path: &str,
                f: &mut dyn FnMut(&str, &$crate::linear::Linear),
            ) {
                $(
                    $crate::weights::Linears::visit_linears(
                        &self.$field,
                        &$crate::weights::join(path, stringify!($field)),
                        f,
                    );
                )*
            }
            fn visit_linears_mut(
                &mut self,
                path: &str,
                f: &mut dyn FnMut(&str, &mut $crate::linear::Linear),
            ) {
                $(
                    $crate::weights::Linears::visit_linears_mut(
                        &mut self.$field,
                        &$crate::weights::join(path, stringify!($field)),
                        f,
                    );
                )*
            }
        }
    };
}
pub(crate) use linears;
