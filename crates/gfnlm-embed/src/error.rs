//! Errors of loading and running the sentence encoder.

use std::path::PathBuf;

use gfnlm_models::hf::HfError;

/// Why the sentence encoder could not be loaded or run.
///
/// Every loading variant names the file involved and the fix.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// A file of the encoder folder could not be read.
    #[error(
        "{path}: {source}; run `cargo xtask fetch-model minilm` to fetch all-MiniLM-L6-v2, \
         or pass a BERT folder (config.json, model.safetensors, tokenizer.json)"
    )]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A JSON file of the folder is malformed or misses a required field.
    #[error(
        "{path}: invalid JSON: {source}; delete the encoder folder and run \
         `cargo xtask fetch-model minilm`"
    )]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        source: serde_json::Error,
    },
    /// `config.json` describes a model this encoder does not implement.
    #[error("{path}: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The safetensors checkpoint is missing, corrupt, or does not match `config.json`.
    #[error(
        "{source}; delete the encoder folder and run `cargo xtask fetch-model minilm` \
         (the fetch checks every file's SHA-256)"
    )]
    Weights {
        /// The loader's error, naming the file.
        #[from]
        source: HfError,
    },
    /// `tokenizer.json` could not be loaded or configured.
    #[error(
        "{path}: cannot load the tokenizer: {message}; delete the encoder folder and run \
         `cargo xtask fetch-model minilm`"
    )]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// The tokenizers crate's message.
        message: String,
    },
    /// A text could not be tokenised.
    #[error("tokenising the input failed: {message}")]
    Tokenize {
        /// The tokenizers crate's message.
        message: String,
    },
}
