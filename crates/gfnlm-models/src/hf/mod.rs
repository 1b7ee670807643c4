//! Loading Hugging Face model folders: `config.json`, `model.safetensors` (or sharded
//! `model-0000N-of-0000M.safetensors` with `model.safetensors.index.json`) and `tokenizer.json`.
//!
//! The architecture is read from `config.json` (`model_type`, else `architectures`), the
//! hyper-parameters are deserialised with serde, the tensor list the config implies (recorded
//! from the architecture's one constructor, see [`crate::weights`]) is checked against the
//! files in one pass (every missing, misshapen or unexpected tensor is named), and only then
//! does that constructor run on the files, decoding one tensor at a time from memory-mapped
//! files. f32, f16 and
//! bf16 tensors are widened to f32; PyTorch `nn.Linear` weights (`[out, in]`) are transposed to
//! burn's `[in, out]`.
//!
//! [`CausalLm::load`] (a GGUF file or a Hugging Face folder) is defined here, on the loading
//! side, so that [`crate::causal_lm`] does not depend on loading. [`Architecture`] lives in
//! [`crate::causal_lm`] and is re-exported here.

mod build;
mod error;
mod gpt2;
mod gptj;
mod llama;
pub mod weights;

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde_json::Value;

pub use error::HfError;
pub use gpt2::{gpt2_config_from_json, gpt2_expected_tensors};
pub use gptj::{gptj_config_from_json, gptj_expected_tensors};
pub use llama::{llama_config_from_json, llama_expected_tensors};
pub use weights::SafetensorsWeights;

pub use crate::causal_lm::Architecture;
use crate::causal_lm::{CausalLm, CausalLmConfig};
use crate::gpt2::{Gpt2Config, Gpt2LmHeadModel};
use crate::gptj::{GptJConfig, GptJForCausalLm};
use crate::llama::{LlamaConfig, LlamaForCausalLm};

/// File name of the model config in a Hugging Face folder.
pub const CONFIG_FILE: &str = "config.json";
/// File name of the tokenizer in a Hugging Face folder.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Reads `dir/config.json` as JSON.
pub fn read_config_json(dir: &Path) -> Result<(PathBuf, Value), HfError> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| HfError::Io {
        path: path.clone(),
        source,
    })?;
    let json = serde_json::from_str(&text).map_err(|source| HfError::Json {
        path: path.clone(),
        source,
    })?;
    Ok((path, json))
}

/// The architecture named by a parsed `config.json`: `model_type`, else the first
/// `architectures` entry.
pub fn detect_architecture(path: &Path, json: &Value) -> Result<Architecture, HfError> {
    let name = json
        .get("model_type")
        .and_then(Value::as_str)
        .or_else(|| {
            json.get("architectures")
                .and_then(|a| a.get(0))
                .and_then(Value::as_str)
        })
        .unwrap_or("<none: config.json has neither model_type nor architectures>");
    Architecture::from_name(name).ok_or_else(|| HfError::UnknownArchitecture {
        path: path.to_path_buf(),
        model_type: name.to_string(),
    })
}

fn expect_architecture(path: &Path, json: &Value, want: Architecture) -> Result<(), HfError> {
    let found = detect_architecture(path, json)?;
    if found == want {
        Ok(())
    } else {
        Err(HfError::Config {
            path: path.to_path_buf(),
            message: format!("expected a {want:?} checkpoint, found {found:?}"),
        })
    }
}

/// Loads a Llama-family model from a Hugging Face folder onto `device`.
///
/// Tied checkpoints (`tie_word_embeddings: true`) get `lm_head: None`; a stored
/// `lm_head.weight` is then ignored, as transformers does. When the folder has a
/// `tokenizer.json`, its vocabulary is checked against the embedding.
pub fn load_llama_dir(
    dir: &Path,
    device: &Device,
) -> Result<(LlamaForCausalLm, LlamaConfig), HfError> {
    let (path, json) = read_config_json(dir)?;
    expect_architecture(&path, &json, Architecture::Llama)?;
    let config = llama_config_from_json(&path, json)?;
    check_tokenizer_vocab(dir, config.vocab_size)?;
    let weights = SafetensorsWeights::open(dir)?;
    let model = llama::build_llama(&config, &weights, device)?;
    Ok((model, config))
}

/// Loads a GPT-2 model from a Hugging Face folder onto `device`.
pub fn load_gpt2_dir(
    dir: &Path,
    device: &Device,
) -> Result<(Gpt2LmHeadModel, Gpt2Config), HfError> {
    let (path, json) = read_config_json(dir)?;
    expect_architecture(&path, &json, Architecture::Gpt2)?;
    let config = gpt2_config_from_json(&path, json)?;
    check_tokenizer_vocab(dir, config.vocab_size)?;
    let weights = SafetensorsWeights::open(dir)?;
    let model = gpt2::build_gpt2(&config, &weights, device)?;
    Ok((model, config))
}

/// Loads a GPT-J model from a Hugging Face folder onto `device`.
pub fn load_gptj_dir(
    dir: &Path,
    device: &Device,
) -> Result<(GptJForCausalLm, GptJConfig), HfError> {
    let (path, json) = read_config_json(dir)?;
    expect_architecture(&path, &json, Architecture::GptJ)?;
    let config = gptj_config_from_json(&path, json)?;
    check_tokenizer_vocab(dir, config.vocab_size)?;
    let weights = SafetensorsWeights::open(dir)?;
    let model = gptj::build_gptj(&config, &weights, device)?;
    Ok((model, config))
}

impl CausalLm {
    /// Loads a model from a GGUF file (Llama) or a Hugging Face folder (architecture from its
    /// `config.json`).
    ///
    /// Defined here, on the loading side, so that [`crate::causal_lm`] never depends on
    /// loading.
    pub fn load(path: &Path, device: &Device) -> Result<(Self, CausalLmConfig), HfError> {
        if path.is_dir() {
            load_dir(path, device)
        } else {
            let (m, c) = crate::load::load_llama_gguf(path, device)?;
            Ok((Self::Llama(m), CausalLmConfig::Llama(c)))
        }
    }
}

/// Reads the config of a Hugging Face folder, whatever its architecture.
pub fn read_config(dir: &Path) -> Result<CausalLmConfig, HfError> {
    let (path, json) = read_config_json(dir)?;
    Ok(match detect_architecture(&path, &json)? {
        Architecture::Llama => CausalLmConfig::Llama(llama_config_from_json(&path, json)?),
        Architecture::Gpt2 => CausalLmConfig::Gpt2(gpt2_config_from_json(&path, json)?),
        Architecture::GptJ => CausalLmConfig::GptJ(gptj_config_from_json(&path, json)?),
    })
}

/// Loads any implemented architecture from a Hugging Face folder, as named by its
/// `config.json`.
pub fn load_dir(dir: &Path, device: &Device) -> Result<(CausalLm, CausalLmConfig), HfError> {
    let config = read_config(dir)?;
    check_tokenizer_vocab(dir, config.vocab_size())?;
    let weights = SafetensorsWeights::open(dir)?;
    let model = match &config {
        CausalLmConfig::Llama(c) => CausalLm::Llama(llama::build_llama(c, &weights, device)?),
        CausalLmConfig::Gpt2(c) => CausalLm::Gpt2(gpt2::build_gpt2(c, &weights, device)?),
        CausalLmConfig::GptJ(c) => CausalLm::GptJ(gptj::build_gptj(c, &weights, device)?),
    };
    Ok((model, config))
}

/// Number of token ids (largest id + 1) a `tokenizer.json` defines: its model vocabulary
/// (BPE/WordPiece map or Unigram list) and its added tokens.
///
/// Streams the file through serde without building the token strings.
pub fn tokenizer_vocab_size(path: &Path) -> Result<usize, HfError> {
    let text = std::fs::read_to_string(path).map_err(|source| HfError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let ids: TokenizerIds = serde_json::from_str(&text).map_err(|source| HfError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    let added = ids
        .added_tokens
        .iter()
        .map(|t| t.id.saturating_add(1))
        .max()
        .unwrap_or(0);
    Ok(ids.model.vocab.0.max(added))
}

#[derive(serde::Deserialize)]
struct TokenizerIds {
    #[serde(default)]
    model: TokenizerModelIds,
    #[serde(default)]
    added_tokens: Vec<AddedTokenId>,
}

#[derive(serde::Deserialize, Default)]
struct TokenizerModelIds {
    #[serde(default)]
    vocab: VocabSize,
}

#[derive(serde::Deserialize)]
struct AddedTokenId {
    id: usize,
}

/// Largest id + 1 of a `{token: id}` map, or the length of a Unigram `[[token, score], …]`.
#[derive(Default)]
struct VocabSize(usize);

impl<'de> serde::Deserialize<'de> for VocabSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = VocabSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a token → id map or a list of tokens")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<VocabSize, A::Error> {
                let mut size = 0usize;
                while let Some((_, id)) = m.next_entry::<serde::de::IgnoredAny, usize>()? {
                    size = size.max(id.saturating_add(1));
                }
                Ok(VocabSize(size))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> Result<VocabSize, A::Error> {
                let mut size = 0usize;
                while s.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    size += 1;
                }
                Ok(VocabSize(size))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Checks `dir/tokenizer.json` (when present) against an embedding of `embedding_rows` rows.
///
/// A tokenizer may define fewer ids than the embedding has rows (GPT-J pads 50257 to 50400)
/// but never more: such ids would index past the table.
pub fn check_tokenizer_vocab(dir: &Path, embedding_rows: usize) -> Result<(), HfError> {
    let path = dir.join(TOKENIZER_FILE);
    if !path.is_file() {
        return Ok(());
    }
    let tokenizer_vocab = tokenizer_vocab_size(&path)?;
    if tokenizer_vocab > embedding_rows {
        return Err(HfError::TokenizerVocab {
            path,
            tokenizer_vocab,
            embedding_rows,
        });
    }
    Ok(())
}
