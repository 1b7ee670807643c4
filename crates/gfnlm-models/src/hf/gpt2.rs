//! GPT-2 from a Hugging Face folder (`GPT2LMHeadModel` safetensors).

use std::path::Path;

use burn::tensor::Device;
use serde_json::Value;

use super::build::TensorReader;
use super::error::HfError;
use super::weights::SafetensorsWeights;
use crate::gpt2::{Gpt2Attention, Gpt2Block, Gpt2Config, Gpt2LmHeadModel, Gpt2Mlp, Gpt2Model};
use crate::layers::LayerNorm;

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

/// The `(name, shape)` list a GPT-2 config implies, under `prefix` (`"transformer."`
/// normally). `Conv1D` weights are `[in, out]`.
pub fn gpt2_expected_tensors(c: &Gpt2Config, prefix: &str) -> Vec<(String, Vec<usize>)> {
    let (d, inner) = (c.n_embd, c.inner_dim());
    let mut v = vec![
        (format!("{prefix}wte.weight"), vec![c.vocab_size, d]),
        (format!("{prefix}wpe.weight"), vec![c.n_positions, d]),
    ];
    for i in 0..c.n_layer {
        let l = format!("{prefix}h.{i}.");
        for norm in ["ln_1", "ln_2"] {
            v.push((format!("{l}{norm}.weight"), vec![d]));
            v.push((format!("{l}{norm}.bias"), vec![d]));
        }
        for (name, inp, out) in [
            ("attn.c_attn", d, 3 * d),
            ("attn.c_proj", d, d),
            ("mlp.c_fc", d, inner),
            ("mlp.c_proj", inner, d),
        ] {
            v.push((format!("{l}{name}.weight"), vec![inp, out]));
            v.push((format!("{l}{name}.bias"), vec![out]));
        }
    }
    v.push((format!("{prefix}ln_f.weight"), vec![d]));
    v.push((format!("{prefix}ln_f.bias"), vec![d]));
    v
}

/// Builds the model, checking the tensors first.
pub(crate) fn build_gpt2(
    c: &Gpt2Config,
    weights: &SafetensorsWeights,
    device: &Device,
) -> Result<Gpt2LmHeadModel, HfError> {
    // The original OpenAI conversions (`gpt2`, `gpt2-xl`, …) were saved from the bare
    // `GPT2Model` and lack the `transformer.` prefix.
    let prefix = if !weights.contains("transformer.wte.weight") && weights.contains("wte.weight") {
        ""
    } else {
        "transformer."
    };
    super::build::check_layer_count(weights, "n_layer", c.n_layer, 12, 4)?;
    weights.check(&gpt2_expected_tensors(c, prefix), |name| {
        name.ends_with(".attn.bias")
            || name.ends_with(".attn.masked_bias")
            || name == "lm_head.weight"
    })?;
    let r = TensorReader { weights, device };
    let eps = c.layer_norm_epsilon;
    let ln = |name: String| -> Result<LayerNorm, HfError> {
        Ok(LayerNorm::new(
            r.vector(&format!("{name}.weight"))?,
            r.vector(&format!("{name}.bias"))?,
            eps,
        ))
    };
    let wte = r.embedding(&format!("{prefix}wte.weight"))?;
    let wpe = r.embedding(&format!("{prefix}wpe.weight"))?;
    let mut h = Vec::with_capacity(c.n_layer);
    for i in 0..c.n_layer {
        let l = format!("{prefix}h.{i}.");
        h.push(Gpt2Block {
            ln_1: ln(format!("{l}ln_1"))?,
            attn: Gpt2Attention {
                c_attn: r.conv1d(&format!("{l}attn.c_attn"))?,
                c_proj: r.conv1d(&format!("{l}attn.c_proj"))?,
                num_heads: c.n_head,
                scale: c.attention_scale(i),
            },
            ln_2: ln(format!("{l}ln_2"))?,
            mlp: Gpt2Mlp {
                c_fc: r.conv1d(&format!("{l}mlp.c_fc"))?,
                c_proj: r.conv1d(&format!("{l}mlp.c_proj"))?,
                act: c.activation_function,
            },
        });
    }
    let ln_f = ln(format!("{prefix}ln_f"))?;
    Ok(Gpt2LmHeadModel {
        transformer: Gpt2Model { wte, wpe, h, ln_f },
    })
}
