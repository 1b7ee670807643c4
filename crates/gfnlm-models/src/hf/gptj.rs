//! GPT-J from a Hugging Face folder (`GPTJForCausalLM` safetensors).

use std::path::Path;

use burn::tensor::Device;
use serde_json::Value;

use super::build::TensorReader;
use super::error::HfError;
use super::weights::SafetensorsWeights;
use crate::gptj::{GptJAttention, GptJBlock, GptJConfig, GptJForCausalLm, GptJMlp, GptJModel};
use crate::layers::{LayerNorm, PartialRotary};

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

/// The `(name, shape)` list a GPT-J config implies. `nn.Linear` weights are `[out, in]`.
pub fn gptj_expected_tensors(c: &GptJConfig) -> Vec<(String, Vec<usize>)> {
    let (d, inner) = (c.n_embd, c.inner_dim());
    let mut v = vec![("transformer.wte.weight".to_string(), vec![c.vocab_size, d])];
    for i in 0..c.n_layer {
        let l = format!("transformer.h.{i}.");
        v.push((format!("{l}ln_1.weight"), vec![d]));
        v.push((format!("{l}ln_1.bias"), vec![d]));
        for p in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            v.push((format!("{l}attn.{p}.weight"), vec![d, d]));
        }
        v.push((format!("{l}mlp.fc_in.weight"), vec![inner, d]));
        v.push((format!("{l}mlp.fc_in.bias"), vec![inner]));
        v.push((format!("{l}mlp.fc_out.weight"), vec![d, inner]));
        v.push((format!("{l}mlp.fc_out.bias"), vec![d]));
    }
    v.extend([
        ("transformer.ln_f.weight".to_string(), vec![d]),
        ("transformer.ln_f.bias".to_string(), vec![d]),
        ("lm_head.weight".to_string(), vec![c.vocab_size, d]),
        ("lm_head.bias".to_string(), vec![c.vocab_size]),
    ]);
    v
}

/// Builds the model, checking the tensors first.
pub(crate) fn build_gptj(
    c: &GptJConfig,
    weights: &SafetensorsWeights,
    device: &Device,
) -> Result<GptJForCausalLm, HfError> {
    super::build::check_layer_count(weights, "n_layer", c.n_layer, 10, 5)?;
    weights.check(&gptj_expected_tensors(c), |name| {
        name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias")
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
    let wte = r.embedding("transformer.wte.weight")?;
    let mut h = Vec::with_capacity(c.n_layer);
    for i in 0..c.n_layer {
        let l = format!("transformer.h.{i}.");
        h.push(GptJBlock {
            ln_1: ln(format!("{l}ln_1"))?,
            attn: GptJAttention {
                q_proj: r.linear(&format!("{l}attn.q_proj"), false)?,
                k_proj: r.linear(&format!("{l}attn.k_proj"), false)?,
                v_proj: r.linear(&format!("{l}attn.v_proj"), false)?,
                out_proj: r.linear(&format!("{l}attn.out_proj"), false)?,
                num_heads: c.n_head,
                rotary: PartialRotary::new(c.head_dim(), c.rotary_dim()),
            },
            mlp: GptJMlp {
                fc_in: r.linear(&format!("{l}mlp.fc_in"), true)?,
                fc_out: r.linear(&format!("{l}mlp.fc_out"), true)?,
                act: c.activation_function,
            },
        });
    }
    let ln_f = ln("transformer.ln_f".into())?;
    let lm_head = r.linear("lm_head", true)?;
    Ok(GptJForCausalLm {
        transformer: GptJModel { wte, h, ln_f },
        lm_head,
        max_positions: c.n_positions,
    })
}
