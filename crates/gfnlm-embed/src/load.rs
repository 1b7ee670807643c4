//! Building a [`BertModel`] from a Hugging Face folder: `config.json` and `model.safetensors`
//! (read through [`gfnlm_models::hf::SafetensorsWeights`], memory-mapped, f32/f16/bf16).
//! The tensor list the config implies is checked in one pass before anything is decoded.

use std::path::Path;

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use gfnlm_models::Linear;
use gfnlm_models::hf::{HfError, SafetensorsWeights};
use gfnlm_models::layers::{Embedding, LayerNorm};

use crate::bert::{
    BertAttention, BertEmbeddings, BertEncoder, BertIntermediate, BertLayer, BertModel,
    BertResidualOutput, BertSelfAttention,
};
use crate::config::BertConfig;
use crate::error::EmbedError;

/// Reads and validates `dir/config.json`.
pub fn read_config(dir: &Path) -> Result<BertConfig, EmbedError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| EmbedError::Io {
        path: path.clone(),
        source,
    })?;
    let config: BertConfig = serde_json::from_str(&text).map_err(|source| EmbedError::Json {
        path: path.clone(),
        source,
    })?;
    config
        .validate()
        .map_err(|message| EmbedError::Config { path, message })?;
    Ok(config)
}

/// The `(name, shape)` list a config implies (PyTorch layout: `nn.Linear` weights `[out, in]`).
pub fn bert_expected_tensors(c: &BertConfig) -> Vec<(String, Vec<usize>)> {
    let (d, ff) = (c.hidden_size, c.intermediate_size);
    let mut v = vec![
        (
            "embeddings.word_embeddings.weight".into(),
            vec![c.vocab_size, d],
        ),
        (
            "embeddings.position_embeddings.weight".into(),
            vec![c.max_position_embeddings, d],
        ),
        (
            "embeddings.token_type_embeddings.weight".into(),
            vec![c.type_vocab_size, d],
        ),
        ("embeddings.LayerNorm.weight".into(), vec![d]),
        ("embeddings.LayerNorm.bias".into(), vec![d]),
    ];
    for i in 0..c.num_hidden_layers {
        let l = format!("encoder.layer.{i}.");
        for (name, out, inp) in [
            ("attention.self.query", d, d),
            ("attention.self.key", d, d),
            ("attention.self.value", d, d),
            ("attention.output.dense", d, d),
            ("intermediate.dense", ff, d),
            ("output.dense", d, ff),
        ] {
            v.push((format!("{l}{name}.weight"), vec![out, inp]));
            v.push((format!("{l}{name}.bias"), vec![out]));
        }
        for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
            v.push((format!("{l}{norm}.weight"), vec![d]));
            v.push((format!("{l}{norm}.bias"), vec![d]));
        }
    }
    v
}

/// Stored tensors the encoder does not use: the `position_ids` buffer and the pooler (a
/// `[CLS]` projection sentence-transformers ignores).
fn ignored(name: &str) -> bool {
    name == "embeddings.position_ids" || name.starts_with("pooler.")
}

/// Loads `dir/model.safetensors` (or a sharded checkpoint) into a [`BertModel`] on `device`.
///
/// The checkpoint's names may carry a `bert.` prefix (as `BertForMaskedLM` saves them).
pub fn load_bert(
    dir: &Path,
    config: &BertConfig,
    device: &Device,
) -> Result<BertModel, EmbedError> {
    let weights = SafetensorsWeights::open(dir)?;
    let prefix = if weights.contains("bert.embeddings.word_embeddings.weight") {
        "bert."
    } else {
        ""
    };
    let expected: Vec<(String, Vec<usize>)> = bert_expected_tensors(config)
        .into_iter()
        .map(|(n, s)| (format!("{prefix}{n}"), s))
        .collect();
    weights.check(&expected, |n| {
        ignored(n.strip_prefix(prefix).unwrap_or(n))
            || (!prefix.is_empty() && !n.starts_with(prefix))
    })?;
    let r = Reader {
        weights: &weights,
        device,
        prefix,
        eps: config.layer_norm_eps,
    };
    let embeddings = BertEmbeddings {
        word_embeddings: r.embedding("embeddings.word_embeddings")?,
        position_embeddings: r.embedding("embeddings.position_embeddings")?,
        token_type_embeddings: r.embedding("embeddings.token_type_embeddings")?,
        layer_norm: r.layer_norm("embeddings.LayerNorm")?,
    };
    let mut layer = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let l = format!("encoder.layer.{i}.");
        layer.push(BertLayer {
            attention: BertAttention {
                self_attention: BertSelfAttention {
                    query: r.linear(&format!("{l}attention.self.query"))?,
                    key: r.linear(&format!("{l}attention.self.key"))?,
                    value: r.linear(&format!("{l}attention.self.value"))?,
                    num_heads: config.num_attention_heads,
                },
                output: BertResidualOutput {
                    dense: r.linear(&format!("{l}attention.output.dense"))?,
                    layer_norm: r.layer_norm(&format!("{l}attention.output.LayerNorm"))?,
                },
            },
            intermediate: BertIntermediate {
                dense: r.linear(&format!("{l}intermediate.dense"))?,
            },
            output: BertResidualOutput {
                dense: r.linear(&format!("{l}output.dense"))?,
                layer_norm: r.layer_norm(&format!("{l}output.LayerNorm"))?,
            },
        });
    }
    Ok(BertModel {
        embeddings,
        encoder: BertEncoder { layer },
    })
}

/// Reads checked tensors onto a device.
struct Reader<'a> {
    weights: &'a SafetensorsWeights,
    device: &'a Device,
    prefix: &'a str,
    eps: f64,
}

impl Reader<'_> {
    fn vector(&self, name: &str) -> Result<Tensor<1>, HfError> {
        let (data, shape) = self.weights.read_f32(&format!("{}{name}", self.prefix))?;
        Ok(Tensor::from_data(
            TensorData::new(data, [shape.iter().product::<usize>()]),
            self.device,
        ))
    }

    fn embedding(&self, prefix: &str) -> Result<Embedding, HfError> {
        let (data, shape) = self
            .weights
            .read_f32(&format!("{}{prefix}.weight", self.prefix))?;
        Ok(Embedding {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(data, [shape[0], shape[1]]),
                self.device,
            )),
        })
    }

    /// `nn.Linear` (`[out, in]` stored, transposed to burn's `[in, out]`) with its bias.
    fn linear(&self, prefix: &str) -> Result<Linear, HfError> {
        let (t, shape) = self
            .weights
            .read_f32_transposed(&format!("{}{prefix}.weight", self.prefix))?;
        let weight = Tensor::from_data(TensorData::new(t, shape), self.device);
        Ok(Linear::new(
            weight,
            Some(self.vector(&format!("{prefix}.bias"))?),
        ))
    }

    fn layer_norm(&self, prefix: &str) -> Result<LayerNorm, HfError> {
        Ok(LayerNorm::new(
            self.vector(&format!("{prefix}.weight"))?,
            self.vector(&format!("{prefix}.bias"))?,
            self.eps,
        ))
    }
}
