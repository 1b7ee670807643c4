//! GPT-2 from a Hugging Face folder (`GPT2LMHeadModel` safetensors).

use std::path::Path;

use burn::tensor::Device;
use serde_json::Value;

use super::build::{SafetensorsSource, check_layer_count, expected_tensors};
use super::error::HfError;
use super::weights::SafetensorsWeights;
use crate::gpt2::{Gpt2Config, Gpt2LmHeadModel};

/// Parses a GPT-2 `config.json` (already read as JSON) into a [`Gpt2Config`].
pub fn gpt2_config_from_json(path: &Path, json: Value) -> Result<Gpt2Config, HfError> {
    let config: Gpt2Config = serde_json::from_value(json).map_err(|source| HfError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    config.validate().map_err(|message| HfError::Config {
        path: path.to_path_buf(),
        message,
    })?;
    Ok(config)
}

/// The `(name, stored shape)` list a GPT-2 config implies, under `prefix`
/// (`"transformer."` normally), in the order [`Gpt2Config::build`] asks for them: derived from
/// that one constructor, with placeholders on `device`. `Conv1D` weights are `[in, out]`.
pub fn gpt2_expected_tensors(
    c: &Gpt2Config,
    prefix: &str,
    device: &Device,
) -> Vec<(String, Vec<usize>)> {
    expected_tensors(device, "transformer.", prefix, |r| c.build(r))
}

/// Builds the model, checking the tensors first.
pub(crate) fn build_gpt2(
    c: &Gpt2Config,
    weights: &SafetensorsWeights,
    device: &Device,
) -> Result<Gpt2LmHeadModel, HfError> {
    // The original OpenAI conversions (`gpt2`, `gpt2-xl`, …) were saved from the bare
    // `GPT2Model` and lack the `transformer.` prefix.
    let bare = !weights.contains("transformer.wte.weight") && weights.contains("wte.weight");
    check_layer_count(
        weights,
        "n_layer",
        c.n_layer,
        Gpt2Config::TENSORS_PER_LAYER,
        Gpt2Config::FIXED_TENSORS,
    )?;
    let prefix = if bare { "" } else { "transformer." };
    weights.check(&gpt2_expected_tensors(c, prefix, device), |name| {
        name.ends_with(".attn.bias")
            || name.ends_with(".attn.masked_bias")
            || name == "lm_head.weight"
    })?;
    c.build(&mut SafetensorsSource {
        weights,
        device,
        strip: bare.then_some("transformer."),
    })
}
