//! Rebuilding a [`Tokenizer`](crate::Tokenizer) from GGUF metadata.

/// GGUF metadata keys read by [`Tokenizer::from_gguf`](crate::Tokenizer) (llama.cpp convention).
pub mod keys {
    /// Tokenizer model name (`"gpt2"` = byte-level BPE).
    pub const MODEL: &str = "tokenizer.ggml.model";
    /// Pre-tokenizer name (e.g. `"smollm"`, `"default"`).
    pub const PRE: &str = "tokenizer.ggml.pre";
    /// Token strings, indexed by id.
    pub const TOKENS: &str = "tokenizer.ggml.tokens";
    /// BPE merges, `"left right"`.
    pub const MERGES: &str = "tokenizer.ggml.merges";
    /// Token types (i32 per token).
    pub const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
    /// BOS token id.
    pub const BOS_ID: &str = "tokenizer.ggml.bos_token_id";
    /// EOS token id.
    pub const EOS_ID: &str = "tokenizer.ggml.eos_token_id";
    /// Whether a space is prepended to the input.
    pub const ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
}

use std::path::{Path, PathBuf};

use gfnlm_gguf::{GgufFile, MetadataValue};

use crate::{BpeParts, Tokenizer, TokenizerError};

/// Typed access to GGUF metadata with errors that name the file and key.
struct Meta<'a> {
    gguf: &'a GgufFile,
    path: PathBuf,
}

impl<'a> Meta<'a> {
    fn invalid(&self, key: &str, message: String) -> TokenizerError {
        TokenizerError::InvalidMetadata {
            path: self.path.clone(),
            key: key.to_string(),
            message,
        }
    }

    fn required(&self, key: &str) -> Result<&'a MetadataValue, TokenizerError> {
        self.gguf
            .get(key)
            .ok_or_else(|| TokenizerError::MissingKey {
                path: self.path.clone(),
                key: key.to_string(),
            })
    }

    fn string(&self, key: &str) -> Result<Option<&'a str>, TokenizerError> {
        self.gguf
            .get(key)
            .map(|v| {
                v.as_str().ok_or_else(|| {
                    self.invalid(key, format!("expected a string, found {}", v.type_name()))
                })
            })
            .transpose()
    }

    fn array(&self, key: &str) -> Result<Option<&'a [MetadataValue]>, TokenizerError> {
        self.gguf
            .get(key)
            .map(|v| {
                v.as_array().map(|a| a.values()).ok_or_else(|| {
                    self.invalid(key, format!("expected an array, found {}", v.type_name()))
                })
            })
            .transpose()
    }

    fn strings(&self, key: &str) -> Result<Option<Vec<String>>, TokenizerError> {
        let Some(values) = self.array(key)? else {
            return Ok(None);
        };
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    self.invalid(
                        key,
                        format!("element {i} is a {}, expected a string", v.type_name()),
                    )
                })
            })
            .collect::<Result<_, _>>()
            .map(Some)
    }

    fn ints(&self, key: &str) -> Result<Option<Vec<i32>>, TokenizerError> {
        let Some(values) = self.array(key)? else {
            return Ok(None);
        };
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_i64()
                    .and_then(|x| i32::try_from(x).ok())
                    .ok_or_else(|| self.invalid(key, format!("element {i} ({v:?}) is not an i32")))
            })
            .collect::<Result<_, _>>()
            .map(Some)
    }

    fn id(&self, key: &str) -> Result<Option<u32>, TokenizerError> {
        self.gguf
            .get(key)
            .map(|v| {
                v.as_u64()
                    .and_then(|x| u32::try_from(x).ok())
                    .ok_or_else(|| self.invalid(key, format!("{v:?} is not a token id")))
            })
            .transpose()
    }

    fn flag(&self, key: &str) -> Result<Option<bool>, TokenizerError> {
        self.gguf
            .get(key)
            .map(|v| {
                v.as_bool().ok_or_else(|| {
                    self.invalid(key, format!("expected a bool, found {}", v.type_name()))
                })
            })
            .transpose()
    }
}

impl Tokenizer {
    /// Rebuilds the tokenizer from the `tokenizer.ggml.*` metadata of a GGUF file.
    ///
    /// Only byte-level BPE (`tokenizer.ggml.model = "gpt2"`) is supported; `tokens` and `merges`
    /// are required, `token_type`, `pre`, `bos_token_id`, `eos_token_id` and `add_space_prefix`
    /// are optional. The result matches Hugging Face's GGUF conversion: a ByteLevel
    /// pre-tokenizer and decoder, BPE without unknown token or byte fallback, control tokens as
    /// special added tokens, and no BOS post-processor.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, TokenizerError> {
        let path = gguf
            .path()
            .map_or_else(|| PathBuf::from("<in-memory GGUF>"), Path::to_path_buf);
        let meta = Meta { gguf, path };
        let model = meta.required(keys::MODEL)?;
        let model = model.as_str().ok_or_else(|| {
            meta.invalid(
                keys::MODEL,
                format!("expected a string, found {}", model.type_name()),
            )
        })?;
        if model != "gpt2" {
            // Report the model before complaining about keys it may not need.
            return Err(TokenizerError::UnsupportedModel {
                path: meta.path,
                model: model.to_string(),
            });
        }
        meta.required(keys::TOKENS)?;
        meta.required(keys::MERGES)?;
        let parts = BpeParts {
            model: model.to_string(),
            pre: meta.string(keys::PRE)?.map(str::to_owned),
            tokens: meta.strings(keys::TOKENS)?.unwrap_or_default(),
            merges: meta.strings(keys::MERGES)?.unwrap_or_default(),
            token_types: meta.ints(keys::TOKEN_TYPE)?.unwrap_or_default(),
            bos: meta.id(keys::BOS_ID)?,
            eos: meta.id(keys::EOS_ID)?,
            add_prefix_space: meta.flag(keys::ADD_SPACE_PREFIX)?.unwrap_or(false),
        };
        Tokenizer::from_parts(parts, &meta.path)
    }
}
