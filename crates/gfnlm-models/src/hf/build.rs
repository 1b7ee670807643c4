//! The safetensors [`WeightSource`]: checked checkpoint entries as burn tensors, and the tensor
//! list a config implies, derived from the architecture's one constructor.

use std::convert::Infallible;

use burn::tensor::{Device, Tensor, TensorData};

use super::error::HfError;
use super::weights::SafetensorsWeights;
use crate::weights::{Role, Stored, TensorRecorder, WeightSource};

/// Reads tensors from a checkpoint onto a device, by Hugging Face name.
///
/// The constructors ask for canonical names (`model.…`, `transformer.…`); a checkpoint saved
/// from the bare body stores them without that prefix, and `strip` names the prefix to drop.
/// Call [`SafetensorsWeights::check`] first (with [`expected_tensors`]) so that every problem
/// is reported at once; a read still refuses a missing or misshapen tensor on its own.
pub(crate) struct SafetensorsSource<'a> {
    pub weights: &'a SafetensorsWeights,
    pub device: &'a Device,
    pub strip: Option<&'static str>,
}

impl SafetensorsSource<'_> {
    fn stored_name<'n>(&self, name: &'n str) -> &'n str {
        self.strip
            .and_then(|p| name.strip_prefix(p))
            .unwrap_or(name)
    }

    fn check_shape(&self, name: &str, shape: &[usize]) -> Result<(), HfError> {
        match self.weights.get(name) {
            Some(e) if e.shape != shape => Err(HfError::Tensors {
                dir: self.weights.dir().to_path_buf(),
                missing: Vec::new(),
                mismatched: vec![(name.to_string(), shape.to_vec(), e.shape.clone())],
                unexpected: Vec::new(),
                unsupported_dtype: Vec::new(),
            }),
            // A missing tensor is reported by the read itself.
            _ => Ok(()),
        }
    }
}

impl WeightSource for SafetensorsSource<'_> {
    type Error = HfError;

    fn vector(&mut self, name: &str, len: usize, _role: Role) -> Result<Tensor<1>, HfError> {
        let name = self.stored_name(name);
        self.check_shape(name, &[len])?;
        let (data, _) = self.weights.read_f32(name)?;
        Ok(Tensor::from_data(TensorData::new(data, [len]), self.device))
    }

    fn matrix(
        &mut self,
        name: &str,
        shape: [usize; 2],
        stored: Stored,
    ) -> Result<Tensor<2>, HfError> {
        let name = self.stored_name(name);
        self.check_shape(name, &stored.shape(shape))?;
        let data = match stored {
            Stored::AsIs => self.weights.read_f32(name)?.0,
            Stored::Transposed => self.weights.read_f32_transposed(name)?.0,
        };
        Ok(Tensor::from_data(TensorData::new(data, shape), self.device))
    }
}

/// The `(name, stored shape)` list that `build` asks for, with the canonical prefix
/// `canonical` (`"model."`, `"transformer."`) replaced by `prefix`. Nothing is read or
/// allocated but one-element placeholders on `device`.
pub(crate) fn expected_tensors<M>(
    device: &Device,
    canonical: &str,
    prefix: &str,
    build: impl FnOnce(&mut TensorRecorder) -> Result<M, Infallible>,
) -> Vec<(String, Vec<usize>)> {
    TensorRecorder::record(device, build)
        .tensors
        .into_iter()
        .map(|(name, shape)| match name.strip_prefix(canonical) {
            Some(rest) => (format!("{prefix}{rest}"), shape),
            None => (name, shape),
        })
        .collect()
}

/// Refuses a layer count the checkpoint cannot hold (`per_layer` tensors a layer plus
/// `fixed` others) before the per-layer tensor list is built: a corrupt `n_layer` of 10⁹
/// would otherwise allocate gigabytes of names.
pub(crate) fn check_layer_count(
    weights: &SafetensorsWeights,
    key: &str,
    layers: usize,
    per_layer: usize,
    fixed: usize,
) -> Result<(), HfError> {
    crate::limits::check_layer_count(key, layers, per_layer, fixed, weights.tensors().count())
        .map_err(|message| HfError::Config {
            path: weights.dir().join(super::CONFIG_FILE),
            message,
        })
}
