//! Llama from a Hugging Face folder (`LlamaForCausalLM` safetensors).

use std::path::Path;

use burn::tensor::Device;
use serde_json::Value;

use super::build::TensorReader;
use super::error::HfError;
use super::weights::SafetensorsWeights;
use crate::layers::{RmsNorm, RotaryEmbedding};
use crate::llama::{
    LlamaAttention, LlamaConfig, LlamaDecoderLayer, LlamaForCausalLm, LlamaMlp, LlamaModel,
};

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

/// The `(name, shape)` list a Llama config implies, under `prefix` (`"model."` normally).
pub fn llama_expected_tensors(c: &LlamaConfig, prefix: &str) -> Vec<(String, Vec<usize>)> {
    let (d, hd, inter) = (c.hidden_size, c.head_dim(), c.intermediate_size);
    let (h, kvh) = (c.num_attention_heads, c.num_key_value_heads);
    let mut v = vec![(
        format!("{prefix}embed_tokens.weight"),
        vec![c.vocab_size, d],
    )];
    for i in 0..c.num_hidden_layers {
        let l = format!("{prefix}layers.{i}.");
        v.extend([
            (format!("{l}input_layernorm.weight"), vec![d]),
            (format!("{l}post_attention_layernorm.weight"), vec![d]),
            (format!("{l}self_attn.q_proj.weight"), vec![h * hd, d]),
            (format!("{l}self_attn.k_proj.weight"), vec![kvh * hd, d]),
            (format!("{l}self_attn.v_proj.weight"), vec![kvh * hd, d]),
            (format!("{l}self_attn.o_proj.weight"), vec![d, h * hd]),
            (format!("{l}mlp.gate_proj.weight"), vec![inter, d]),
            (format!("{l}mlp.up_proj.weight"), vec![inter, d]),
            (format!("{l}mlp.down_proj.weight"), vec![d, inter]),
        ]);
    }
    v.push((format!("{prefix}norm.weight"), vec![d]));
    if !c.tie_word_embeddings {
        v.push(("lm_head.weight".into(), vec![c.vocab_size, d]));
    }
    v
}

/// Builds the model from checked-out weights.
pub(crate) fn build_llama(
    c: &LlamaConfig,
    weights: &SafetensorsWeights,
    device: &Device,
) -> Result<LlamaForCausalLm, HfError> {
    // Checkpoints saved from the bare `LlamaModel` lack the `model.` prefix.
    let prefix = if !weights.contains("model.embed_tokens.weight")
        && weights.contains("embed_tokens.weight")
    {
        ""
    } else {
        "model."
    };
    super::build::check_layer_count(weights, "num_hidden_layers", c.num_hidden_layers, 9, 2)?;
    weights.check(&llama_expected_tensors(c, prefix), |name| {
        name.ends_with(".rotary_emb.inv_freq")
            || (c.tie_word_embeddings && name == "lm_head.weight")
    })?;
    let r = TensorReader { weights, device };
    let eps = c.rms_norm_eps;
    let (h, kvh, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim());
    let embed_tokens = r.embedding(&format!("{prefix}embed_tokens.weight"))?;
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for i in 0..c.num_hidden_layers {
        let l = format!("{prefix}layers.{i}.");
        layers.push(LlamaDecoderLayer {
            self_attn: LlamaAttention {
                q_proj: r.linear(&format!("{l}self_attn.q_proj"), false)?,
                k_proj: r.linear(&format!("{l}self_attn.k_proj"), false)?,
                v_proj: r.linear(&format!("{l}self_attn.v_proj"), false)?,
                o_proj: r.linear(&format!("{l}self_attn.o_proj"), false)?,
                num_heads: h,
                num_kv_heads: kvh,
                head_dim: hd,
            },
            mlp: LlamaMlp {
                gate_proj: r.linear(&format!("{l}mlp.gate_proj"), false)?,
                up_proj: r.linear(&format!("{l}mlp.up_proj"), false)?,
                down_proj: r.linear(&format!("{l}mlp.down_proj"), false)?,
            },
            input_layernorm: RmsNorm::new(r.vector(&format!("{l}input_layernorm.weight"))?, eps),
            post_attention_layernorm: RmsNorm::new(
                r.vector(&format!("{l}post_attention_layernorm.weight"))?,
                eps,
            ),
        });
    }
    let norm = RmsNorm::new(r.vector(&format!("{prefix}norm.weight"))?, eps);
    let lm_head = if c.tie_word_embeddings {
        None
    } else {
        Some(r.linear("lm_head", false)?)
    };
    Ok(LlamaForCausalLm {
        model: LlamaModel {
            embed_tokens,
            layers,
            norm,
        },
        lm_head,
        rope: RotaryEmbedding::new(hd, c.rope_theta),
        max_positions: c.max_position_embeddings,
    })
}
