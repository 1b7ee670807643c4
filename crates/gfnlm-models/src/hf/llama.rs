//! Llama from a Hugging Face folder (`LlamaForCausalLM` safetensors).

use std::path::Path;

use burn::tensor::Device;
use serde_json::Value;

use super::build::{SafetensorsSource, check_layer_count, expected_tensors};
use super::error::HfError;
use super::weights::SafetensorsWeights;
use crate::llama::{LlamaConfig, LlamaForCausalLm};

/// Parses a Llama `config.json` (already read as JSON) into a [`LlamaConfig`].
///
/// Accepts both the transformers-4 top-level `rope_theta` and the transformers-5
/// `rope_parameters.rope_theta`; rejects what the model code does not implement (RoPE scaling,
/// attention/MLP biases, activations other than SiLU).
pub fn llama_config_from_json(path: &Path, mut json: Value) -> Result<LlamaConfig, HfError> {
    let config_err = |message: String| HfError::Config {
        path: path.to_path_buf(),
        message,
    };
    let obj = json
        .as_object_mut()
        .ok_or_else(|| config_err("config.json is not a JSON object".into()))?;
    let params = obj.get("rope_parameters").cloned().unwrap_or(Value::Null);
    if obj.get("rope_theta").is_none_or(Value::is_null)
        && let Some(theta) = params.get("rope_theta")
    {
        obj.insert("rope_theta".into(), theta.clone());
    }
    for key in ["rope_parameters", "rope_scaling"] {
        let Some(scaling) = obj.get(key).filter(|v| !v.is_null()) else {
            continue;
        };
        let kind = scaling
            .get("rope_type")
            .or_else(|| scaling.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        if kind != "default" {
            return Err(config_err(format!(
                "{key} asks for RoPE scaling '{kind}'; gfnlm implements only the default RoPE"
            )));
        }
    }
    for key in ["attention_bias", "mlp_bias"] {
        if obj.get(key).and_then(Value::as_bool) == Some(true) {
            return Err(config_err(format!(
                "{key} = true is not supported (gfnlm's Llama has no biases)"
            )));
        }
    }
    if let Some(act) = obj.get("hidden_act").and_then(Value::as_str)
        && act != "silu"
    {
        return Err(config_err(format!(
            "hidden_act '{act}' is not supported (Llama uses 'silu')"
        )));
    }
    let config: LlamaConfig = serde_json::from_value(json).map_err(|source| HfError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    config.validate().map_err(config_err)?;
    Ok(config)
}

/// The `(name, stored shape)` list a Llama config implies, under `prefix` (`"model."`
/// normally), in the order [`LlamaConfig::build`] asks for them: derived from that one
/// constructor, with placeholders on `device` (nothing is read or drawn).
pub fn llama_expected_tensors(
    c: &LlamaConfig,
    prefix: &str,
    device: &Device,
) -> Vec<(String, Vec<usize>)> {
    expected_tensors(device, "model.", prefix, |r| c.build(r))
}

/// Builds the model from a checkpoint, checking every tensor first.
pub(crate) fn build_llama(
    c: &LlamaConfig,
    weights: &SafetensorsWeights,
    device: &Device,
) -> Result<LlamaForCausalLm, HfError> {
    // Checkpoints saved from the bare `LlamaModel` lack the `model.` prefix.
    let bare =
        !weights.contains("model.embed_tokens.weight") && weights.contains("embed_tokens.weight");
    check_layer_count(
        weights,
        "num_hidden_layers",
        c.num_hidden_layers,
        LlamaConfig::TENSORS_PER_LAYER,
        LlamaConfig::FIXED_TENSORS,
    )?;
    let prefix = if bare { "" } else { "model." };
    weights.check(&llama_expected_tensors(c, prefix, device), |name| {
        name.ends_with(".rotary_emb.inv_freq")
            || (c.tie_word_embeddings && name == "lm_head.weight")
    })?;
    c.build(&mut SafetensorsSource {
        weights,
        device,
        strip: bare.then_some("model."),
    })
}
