//! Typed wrapper over Hugging Face [`tokenizers`] for gfnlm.
//!
//! A [`Tokenizer`] is built either from a `tokenizer.json` file ([`Tokenizer::from_file`]) or
//! rebuilt from the tokenizer metadata of a GGUF file ([`Tokenizer::from_gguf`], byte-level BPE
//! only). Encoding never adds a BOS token unless it is asked for, and decoding keeps special
//! tokens.
//!
//! ```no_run
//! use gfnlm_tokenizer::Tokenizer;
//! let gguf = gfnlm_gguf::GgufFile::open("SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! let tok = Tokenizer::from_gguf(&gguf)?;
//! let ids = tok.encode("The capital of France is", false)?; // [504, 3575, 282, 4649, 314]
//! assert_eq!(tok.decode(&ids)?, "The capital of France is");
//! assert_eq!((tok.bos_id(), tok.eos_id()), (Some(1), Some(2)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};

use tokenizers::AddedToken;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

mod gguf;

pub use gguf::keys;

/// Errors raised while building or using a [`Tokenizer`].
///
/// Every construction error names the file it came from and, where relevant, the metadata key.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A `tokenizer.json` file could not be parsed by `tokenizers`.
    #[error("cannot load tokenizer from {path}: {source} (is it a Hugging Face tokenizer.json?)")]
    Load {
        /// The `tokenizer.json` file.
        path: PathBuf,
        /// The error reported by `tokenizers`.
        #[source]
        source: tokenizers::Error,
    },
    /// A `tokenizer_config.json` next to a `tokenizer.json` is malformed or names unknown tokens.
    #[error("invalid tokenizer config {path}: {message}")]
    Config {
        /// The `tokenizer_config.json` file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A required GGUF metadata key is absent.
    #[error(
        "{path}: missing GGUF metadata key `{key}`; the file has no usable tokenizer \
         (use a GGUF converted with its tokenizer, or load a tokenizer.json instead)"
    )]
    MissingKey {
        /// The GGUF file (or other source) that lacks the key.
        path: PathBuf,
        /// The missing key.
        key: String,
    },
    /// A GGUF metadata value has the wrong type or an invalid content.
    #[error("{path}: invalid GGUF metadata `{key}`: {message}")]
    InvalidMetadata {
        /// The GGUF file (or other source) with the bad value.
        path: PathBuf,
        /// The offending key.
        key: String,
        /// What is wrong with the value.
        message: String,
    },
    /// The GGUF tokenizer model is not byte-level BPE.
    #[error(
        "{path}: unsupported tokenizer model `{model}` in `tokenizer.ggml.model`; only \"gpt2\" \
         (byte-level BPE) can be rebuilt from GGUF, load a tokenizer.json instead"
    )]
    UnsupportedModel {
        /// The GGUF file (or other source).
        path: PathBuf,
        /// The model name found.
        model: String,
    },
    /// The GGUF pre-tokenizer is not one whose splitting is reproduced here.
    #[error(
        "{path}: unsupported pre-tokenizer `{pre}` in `tokenizer.ggml.pre`; supported: {supported} \
         (load a tokenizer.json instead)"
    )]
    UnsupportedPreTokenizer {
        /// The GGUF file (or other source).
        path: PathBuf,
        /// The pre-tokenizer name found.
        pre: String,
        /// Comma-separated list of supported names.
        supported: String,
    },
    /// `tokenizers` rejected the rebuilt model (e.g. a merge refers to an unknown token).
    #[error("{path}: cannot build the BPE tokenizer: {source}")]
    Build {
        /// The GGUF file (or other source).
        path: PathBuf,
        /// The error reported by `tokenizers`.
        #[source]
        source: tokenizers::Error,
    },
    /// `encode(.., add_bos = true)` was called on a tokenizer without a BOS token.
    #[error(
        "a BOS token was requested but the tokenizer from {path} has none \
         (call encode with add_bos = false)"
    )]
    NoBos {
        /// Where the tokenizer was loaded from.
        path: PathBuf,
    },
    /// Encoding failed.
    #[error("cannot encode text: {0}")]
    Encode(#[source] tokenizers::Error),
    /// Decoding failed.
    #[error("cannot decode ids: {0}")]
    Decode(#[source] tokenizers::Error),
}

/// GGUF token types (`tokenizer.ggml.token_type`, llama.cpp convention).
pub mod token_type {
    /// A normal vocabulary token.
    pub const NORMAL: i32 = 1;
    /// The unknown token.
    pub const UNKNOWN: i32 = 2;
    /// A control (special) token, e.g. `<|im_end|>`.
    pub const CONTROL: i32 = 3;
    /// A user-defined added token, stored as raw text.
    pub const USER_DEFINED: i32 = 4;
    /// An unused token.
    pub const UNUSED: i32 = 5;
    /// A byte token `<0xNN>`.
    pub const BYTE: i32 = 6;
}

/// Pre-tokenizer names (`tokenizer.ggml.pre`) whose splitting is the GPT-2 byte-level regex, as
/// rebuilt by Hugging Face's GGUF converter. llama.cpp additionally isolates digits for some of
/// them, which gives the same tokens when the vocabulary has no multi-digit tokens.
pub const SUPPORTED_PRE_TOKENIZERS: &[&str] = &[
    "default",
    "gpt2",
    "gpt-2",
    "smollm",
    "starcoder",
    "refact",
    "codeshell",
];

/// The raw pieces of a byte-level BPE tokenizer, as stored in GGUF metadata.
#[derive(Debug, Clone, Default)]
pub struct BpeParts {
    /// Tokenizer model name; only `"gpt2"` (byte-level BPE) is supported.
    pub model: String,
    /// Pre-tokenizer name; `None` means `"default"`. See [`SUPPORTED_PRE_TOKENIZERS`].
    pub pre: Option<String>,
    /// Token strings, indexed by id (byte-level encoded, e.g. `Ġthe`).
    pub tokens: Vec<String>,
    /// Merges as `"left right"` strings, highest priority first.
    pub merges: Vec<String>,
    /// Token types (see [`token_type`]), one per token, or empty for all normal.
    pub token_types: Vec<i32>,
    /// BOS token id, if any.
    pub bos: Option<u32>,
    /// EOS token id, if any.
    pub eos: Option<u32>,
    /// Whether a space is prepended to the input before splitting.
    pub add_prefix_space: bool,
}

/// A tokenizer with known BOS/EOS ids. Encoding adds no special tokens unless asked.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    source: PathBuf,
}

/// Candidate BOS token strings, in order of preference, used when no config names one.
const BOS_CANDIDATES: &[&str] = &["<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>"];
/// Candidate EOS token strings, in order of preference, used when no config names one.
const EOS_CANDIDATES: &[&str] = &["</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>"];

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json`.
    ///
    /// BOS/EOS ids come from `bos_token`/`eos_token` of a `tokenizer_config.json` in the same
    /// folder if it exists; otherwise they are guessed from the added special tokens (`<s>`,
    /// `</s>`, `<|begin_of_text|>`, …), or left `None`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // `tokenizers` panics (`expect("Helper")` in its decoder deserialiser) on a syntax
        // error inside `"decoder"`: a file that is not JSON is refused here first.
        serde_json::from_str::<serde_json::Value>(&text).map_err(|e| TokenizerError::Load {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        let inner: tokenizers::Tokenizer = text.parse().map_err(|source| TokenizerError::Load {
            path: path.to_path_buf(),
            source,
        })?;
        let config = path.with_file_name("tokenizer_config.json");
        let (bos, eos) = if config.is_file() {
            (
                config_token(&inner, &config, "bos_token")?,
                config_token(&inner, &config, "eos_token")?,
            )
        } else {
            (
                guess_special(&inner, BOS_CANDIDATES),
                guess_special(&inner, EOS_CANDIDATES),
            )
        };
        Ok(Self {
            inner,
            bos,
            eos,
            source: path.to_path_buf(),
        })
    }

    /// Rebuilds a byte-level BPE tokenizer from raw parts; `source` names where they came from
    /// (used in error messages).
    ///
    /// Control tokens (type 3) become special added tokens and user-defined tokens (type 4)
    /// non-special added tokens, both matched on the raw text.
    pub fn from_parts(parts: BpeParts, source: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = source.as_ref().to_path_buf();
        let invalid = |key: &str, message: String| TokenizerError::InvalidMetadata {
            path: path.clone(),
            key: key.to_string(),
            message,
        };
        if parts.model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel {
                path,
                model: parts.model,
            });
        }
        let pre = parts.pre.as_deref().unwrap_or("default");
        if !SUPPORTED_PRE_TOKENIZERS.contains(&pre) {
            return Err(TokenizerError::UnsupportedPreTokenizer {
                path,
                pre: pre.to_string(),
                supported: SUPPORTED_PRE_TOKENIZERS.join(", "),
            });
        }
        let n = parts.tokens.len();
        if n == 0 {
            return Err(invalid(keys::TOKENS, "the token list is empty".into()));
        }
        if !parts.token_types.is_empty() && parts.token_types.len() != n {
            return Err(invalid(
                keys::TOKEN_TYPE,
                format!("{} token types for {n} tokens", parts.token_types.len()),
            ));
        }
        for (key, id) in [(keys::BOS_ID, parts.bos), (keys::EOS_ID, parts.eos)] {
            if let Some(id) = id.filter(|&id| id as usize >= n) {
                return Err(invalid(
                    key,
                    format!("id {id} is out of range for {n} tokens"),
                ));
            }
        }

        // Later duplicates win, as in Hugging Face's GGUF converter.
        let vocab: Vocab = parts
            .tokens
            .iter()
            .enumerate()
            .map(|(id, tok)| (tok.clone(), id as u32))
            .collect();
        let merges = parts
            .merges
            .iter()
            .enumerate()
            .map(|(i, merge)| {
                // Split at the first space after the first character (llama.cpp convention).
                let at = merge
                    .char_indices()
                    .skip(1)
                    .find(|&(_, c)| c == ' ')
                    .map(|(at, _)| at)
                    .ok_or_else(|| {
                        invalid(
                            keys::MERGES,
                            format!("merge #{i} {merge:?} is not of the form \"left right\""),
                        )
                    })?;
                Ok((merge[..at].to_string(), merge[at + 1..].to_string()))
            })
            .collect::<Result<Vec<_>, TokenizerError>>()?;

        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| TokenizerError::Build {
                path: path.clone(),
                source: e,
            })?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(ByteLevel::new(parts.add_prefix_space, true, true)));
        inner.with_decoder(Some(ByteLevelDecoder::default()));

        let added: Vec<AddedToken> = parts
            .token_types
            .iter()
            .zip(&parts.tokens)
            .filter_map(|(&ty, tok)| match ty {
                token_type::CONTROL => Some(AddedToken::from(tok.as_str(), true).normalized(false)),
                token_type::USER_DEFINED => {
                    Some(AddedToken::from(tok.as_str(), false).normalized(false))
                }
                _ => None,
            })
            .collect();
        // Added tokens already in the model vocab keep their ids.
        inner
            .add_tokens(added)
            .map_err(|source| TokenizerError::Build {
                path: path.clone(),
                source,
            })?;

        Ok(Self {
            inner,
            bos: parts.bos,
            eos: parts.eos,
            source: path,
        })
    }

    /// Encodes `text` to token ids; prepends the BOS id only if `add_bos` is true.
    ///
    /// Special tokens written in the text (e.g. `<|im_end|>`) encode to their single ids.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(TokenizerError::Encode)?;
        let ids = encoding.get_ids();
        if !add_bos {
            return Ok(ids.to_vec());
        }
        let bos = self.bos.ok_or_else(|| TokenizerError::NoBos {
            path: self.source.clone(),
        })?;
        let mut out = Vec::with_capacity(ids.len() + 1);
        out.push(bos);
        out.extend_from_slice(ids);
        Ok(out)
    }

    /// Decodes ids to text, keeping special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, false)
            .map_err(TokenizerError::Decode)
    }

    /// The token string of `id` (byte-level form, e.g. `Ġthe`), if it exists.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of the token string `token` (byte-level form), if it exists.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The BOS token id, if known.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// The EOS token id, if known.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// The file this tokenizer was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// Reads `field` (`"<s>"` or `{"content": "<s>", ...}`) from a `tokenizer_config.json` and maps it
/// to an id; a missing or null field gives `None`.
fn config_token(
    inner: &tokenizers::Tokenizer,
    config: &Path,
    field: &str,
) -> Result<Option<u32>, TokenizerError> {
    let err = |message: String| TokenizerError::Config {
        path: config.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(config).map_err(|source| TokenizerError::Io {
        path: config.to_path_buf(),
        source,
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| err(format!("not valid JSON: {e}")))?;
    let content = match json.get(field) {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::String(s)) => s.as_str(),
        Some(v) => v.get("content").and_then(|c| c.as_str()).ok_or_else(|| {
            err(format!(
                "`{field}` is neither a string nor {{\"content\": ..}}"
            ))
        })?,
    };
    inner
        .token_to_id(content)
        .map(Some)
        .ok_or_else(|| err(format!("`{field}` = {content:?} is not in the vocabulary")))
}

/// The first candidate that is an added special token of `inner`.
fn guess_special(inner: &tokenizers::Tokenizer, candidates: &[&str]) -> Option<u32> {
    let added = inner.get_added_tokens_decoder();
    candidates.iter().find_map(|c| {
        added
            .iter()
            .find(|(_, t)| t.special && t.content == *c)
            .map(|(&id, _)| id)
    })
}

#[cfg(test)]
mod tests;
