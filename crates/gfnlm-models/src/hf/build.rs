//! Turning checked safetensors entries into burn tensors and layers.

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};

use super::error::HfError;
use super::weights::SafetensorsWeights;
use crate::layers::Embedding;
use crate::linear::Linear;

/// Reads tensors from a checkpoint onto a device. Call [`SafetensorsWeights::check`] first:
/// shapes are then known to be right and reads only fail on I/O.
pub(crate) struct TensorReader<'a> {
    pub weights: &'a SafetensorsWeights,
    pub device: &'a Device,
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

impl TensorReader<'_> {
    /// A 1-D tensor.
    pub fn vector(&self, name: &str) -> Result<Tensor<1>, HfError> {
        let (data, shape) = self.weights.read_f32(name)?;
        Ok(Tensor::from_data(
            TensorData::new(data, [shape.iter().product::<usize>()]),
            self.device,
        ))
    }

    /// A 2-D tensor in its stored layout.
    pub fn matrix(&self, name: &str) -> Result<Tensor<2>, HfError> {
        let (data, shape) = self.weights.read_f32(name)?;
        Ok(Tensor::from_data(
            TensorData::new(data, [shape[0], shape[1]]),
            self.device,
        ))
    }

    /// A token embedding `[vocab, hidden]`.
    pub fn embedding(&self, name: &str) -> Result<Embedding, HfError> {
        Ok(Embedding {
            weight: Param::from_tensor(self.matrix(name)?),
        })
    }

    /// A PyTorch `nn.Linear` (`{prefix}.weight` `[out, in]`, transposed to burn's `[in, out]`),
    /// with `{prefix}.bias` when `bias`.
    pub fn linear(&self, prefix: &str, bias: bool) -> Result<Linear, HfError> {
        let (t, shape) = self
            .weights
            .read_f32_transposed(&format!("{prefix}.weight"))?;
        let weight = Tensor::from_data(TensorData::new(t, shape), self.device);
        let bias = if bias {
            Some(self.vector(&format!("{prefix}.bias"))?)
        } else {
            None
        };
        Ok(Linear::new(weight, bias))
    }

    /// A GPT-2 `Conv1D` (`{prefix}.weight` already `[in, out]`, plus `{prefix}.bias`).
    pub fn conv1d(&self, prefix: &str) -> Result<Linear, HfError> {
        let weight = self.matrix(&format!("{prefix}.weight"))?;
        let bias = self.vector(&format!("{prefix}.bias"))?;
        Ok(Linear::new(weight, Some(bias)))
    }
}
