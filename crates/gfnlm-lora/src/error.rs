//! Errors of the LoRA crate.

use std::path::PathBuf;

/// Why a LoRA configuration or adapter could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    /// The configuration is invalid (rank 0, negative dropout, no targets, bad regex, …).
    #[error("invalid LoRA config: {0}")]
    Config(String),
    /// The PEFT config asks for options this crate does not implement; each entry names one.
    #[error("unsupported PEFT options (refused rather than ignored): {}", .0.join("; "))]
    Unsupported(Vec<String>),
    /// The adapter does not fit the model; every mismatch found is listed.
    #[error("adapter does not match the model ({} problem(s)):\n  - {}", .0.len(), .0.join("\n  - "))]
    Mismatch(Vec<String>),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `adapter_config.json` is not valid JSON.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// `adapter_model.safetensors` is malformed.
    #[error("{path}: invalid safetensors file: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}
