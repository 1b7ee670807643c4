//! GPT-J from a Hugging Face folder (`GPTJForCausalLM` safetensors).

use std::path::Path;

use burn::tensor::Device;
use serde_json::Value;

use super::build::{SafetensorsSource, check_layer_count, expected_tensors};
use super::error::HfError;
use super::weights::SafetensorsWeights;
use crate::gptj::{GptJConfig, GptJForCausalLm};

/// Parses a GPT-J `config.json` (already read as JSON) into a [`GptJConfig`].
pub fn gptj_config_from_json(path: &Path, json: Value) -> Result<GptJConfig, HfError> {
    let config: GptJConfig = serde_json::from_value(json).map_err(|source| HfError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    config.validate().map_err(|message| HfError::Config {
        path: path.to_path_buf(),
        message,
    })?;
    Ok(config)
}

/// The `(name, stored shape)` list a GPT-J config implies, in the order
/// [`GptJConfig::build`] asks for them: derived from that one constructor, with placeholders
/// on `device`. `nn.Linear` weights are `[out, in]`.
pub fn gptj_expected_tensors(c: &GptJConfig, device: &Device) -> Vec<(String, Vec<usize>)> {
    expected_tensors(device, "", "", |r| c.build(r))
}

/// Builds the model, checking the tensors first.
pub(crate) fn build_gptj(
    c: &GptJConfig,
    weights: &SafetensorsWeights,
    device: &Device,
) -> Result<GptJForCausalLm, HfError> {
    check_layer_count(
        weights,
        "n_layer",
        c.n_layer,
        GptJConfig::TENSORS_PER_LAYER,
        GptJConfig::FIXED_TENSORS,
    )?;
    weights.check(&gptj_expected_tensors(c, device), |name| {
        name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias")
    })?;
    c.build(&mut SafetensorsSource {
        weights,
        device,
        strip: None,
    })
}
