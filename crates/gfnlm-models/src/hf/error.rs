//! Errors of the Hugging Face folder loader.

use std::fmt::Write as _;
use std::path::PathBuf;

/// Why a Hugging Face model folder could not be turned into a model.
///
/// Every variant names the file involved and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A JSON file (config, shard index, tokenizer) is malformed or misses a required field.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        source: serde_json::Error,
    },
    /// The folder has neither `model.safetensors` nor a shard index.
    #[error(
        "{dir}: no weights found; expected `model.safetensors` or \
         `model.safetensors.index.json` with its shards (convert `pytorch_model.bin` \
         checkpoints to safetensors first)"
    )]
    NoWeights {
        /// The model folder.
        dir: PathBuf,
    },
    /// A safetensors file is corrupt or truncated.
    #[error("{path}: not a valid safetensors file: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The shard index and the shards disagree.
    #[error("{path}: shards disagree with the index: {message}")]
    ShardIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong (tensor and shard names).
        message: String,
    },
    /// `config.json` describes a model family gfnlm does not implement.
    #[error(
        "{path}: unknown architecture: model_type '{model_type}' \
         (gfnlm runs 'llama', 'gpt2' and 'gptj')"
    )]
    UnknownArchitecture {
        /// The config file.
        path: PathBuf,
        /// `model_type` as found (or the `architectures` entry when `model_type` is absent).
        model_type: String,
    },
    /// The hyper-parameters are inconsistent or use an unsupported option.
    #[error("{path}: invalid or unsupported model config: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The checkpoint's tensors do not match what the config implies.
    #[error(
        "{}",
        tensor_report(dir, missing, mismatched, unexpected, unsupported_dtype)
    )]
    Tensors {
        /// The model folder.
        dir: PathBuf,
        /// Tensors the config requires but no file holds.
        missing: Vec<String>,
        /// `(name, expected shape, shape found)`.
        mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
        /// Tensors in the files that the model has no place for.
        unexpected: Vec<String>,
        /// `(name, dtype)` of tensors stored in a dtype other than f32/f16/bf16.
        unsupported_dtype: Vec<(String, String)>,
    },
    /// The tokenizer knows ids that the embedding has no row for.
    #[error(
        "{path}: the tokenizer has {tokenizer_vocab} ids but the model's embedding has only \
         {embedding_rows} rows; use the tokenizer.json that belongs to this checkpoint"
    )]
    TokenizerVocab {
        /// The tokenizer file.
        path: PathBuf,
        /// Largest token id + 1 in the tokenizer.
        tokenizer_vocab: usize,
        /// Rows of the token embedding.
        embedding_rows: usize,
    },
    /// A stored weight is NaN or infinite.
    #[error(
        "{path}: tensor '{tensor}' holds a non-finite value ({value} at flat index {index}); \
         the checkpoint is corrupt"
    )]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Flat (row-major, stored layout) index of the first bad value.
        index: usize,
        /// The value.
        value: f32,
    },
    /// A GGUF file failed to load (see [`crate::load::LoadError`]).
    #[error(transparent)]
    Gguf(#[from] crate::load::LoadError),
}

fn tensor_report(
    dir: &std::path::Path,
    missing: &[String],
    mismatched: &[(String, Vec<usize>, Vec<usize>)],
    unexpected: &[String],
    unsupported_dtype: &[(String, String)],
) -> String {
    let mut s = format!(
        "{}: the checkpoint's tensors do not match its config.json",
        dir.display()
    );
    // At most LIST names per kind, then a count: the report stays short for any file.
    const LIST: usize = 10;
    use crate::limits::bounded_list;
    if !missing.is_empty() {
        let _ = write!(s, "\n  missing: {}", bounded_list(missing, LIST));
    }
    for (name, expected, actual) in mismatched.iter().take(LIST) {
        let _ = write!(
            s,
            "\n  shape mismatch: {name} is {actual:?}, config implies {expected:?}"
        );
    }
    if mismatched.len() > LIST {
        let _ = write!(
            s,
            "\n  … and {} more shape mismatches",
            mismatched.len() - LIST
        );
    }
    if !unexpected.is_empty() {
        let _ = write!(s, "\n  unexpected: {}", bounded_list(unexpected, LIST));
    }
    for (name, dtype) in unsupported_dtype.iter().take(LIST) {
        let _ = write!(
            s,
            "\n  unsupported dtype: {name} is {dtype} (gfnlm reads F32, F16 and BF16)"
        );
    }
    if unsupported_dtype.len() > LIST {
        let _ = write!(
            s,
            "\n  … and {} more tensors of unsupported dtypes",
            unsupported_dtype.len() - LIST
        );
    }
    s.push_str("\n  (is config.json from the same checkpoint as the weights?)");
    s
}
