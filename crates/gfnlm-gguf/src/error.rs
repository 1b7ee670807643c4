//! Error type shared by the reader, writer and (de)quantisers.

use std::path::PathBuf;

use crate::types::GgmlType;

/// What went wrong, independent of which file it happened in.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufErrorKind {
    /// Reading or mapping the file failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The file does not start with the `GGUF` magic.
    #[error(
        "not a GGUF file (first bytes {found:02x?}, expected \"GGUF\"); \
         convert the model with llama.cpp's convert_hf_to_gguf.py or pass a .gguf file"
    )]
    BadMagic {
        /// The first (up to) four bytes of the file.
        found: Vec<u8>,
    },
    /// The format version is not 2 or 3.
    #[error("unsupported GGUF version {0}: only little-endian versions 2 and 3 are read; {hint}", hint = version_hint(.0))]
    UnsupportedVersion(u32),
    /// The file ends before a field that the header says is there.
    #[error(
        "file truncated: needed {needed} bytes for {what} at offset {offset}, but the file has {len} bytes \
         (re-download the model; the copy is incomplete)"
    )]
    Truncated {
        /// What was being read.
        what: String,
        /// Byte offset where the read started.
        offset: u64,
        /// How many bytes were needed.
        needed: u64,
        /// Total file length.
        len: u64,
    },
    /// A header field is inconsistent (counts, sizes, alignment, UTF-8 ...).
    #[error("malformed header: {0}")]
    Malformed(String),
    /// A metadata key that the caller requires is absent.
    #[error("missing metadata key '{0}' (is this a model of the expected architecture?)")]
    MissingKey(String),
    /// A metadata key has a value of another type than requested.
    #[error("metadata key '{key}' has type {found}, expected {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// The type requested by the caller.
        expected: &'static str,
        /// The type found in the file.
        found: &'static str,
    },
    /// A tensor that the caller requires is absent.
    #[error("tensor '{name}' not found ({count} tensors present{hint})", hint = similar_hint(.similar))]
    MissingTensor {
        /// The requested name.
        name: String,
        /// How many tensors the file has.
        count: usize,
        /// Up to a few present names that share a prefix with the requested one.
        similar: Vec<String>,
    },
    /// The tensor's storage type cannot be converted to f32 by this crate.
    #[error(
        "tensor '{name}' has type {ty}, which gfnlm-gguf cannot dequantise; re-quantise the model to one of \
         F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K (e.g. llama-quantize --allow-requantize in.gguf out.gguf Q8_0)"
    )]
    UnsupportedType {
        /// The tensor's name.
        name: String,
        /// Its storage type.
        ty: GgmlType,
    },
    /// [`crate::quantize`] was asked for a format it does not produce.
    #[error("cannot quantise to {0}: only F32, F16, BF16, Q8_0, Q4_0 and Q4_1 are produced")]
    UnsupportedQuantizeTarget(GgmlType),
    /// A buffer has the wrong length for the requested conversion.
    #[error("size mismatch: {0}")]
    SizeMismatch(String),
}

fn version_hint(v: &u32) -> &'static str {
    match *v {
        1 => "GGUF v1 is obsolete, re-convert the model with a current llama.cpp",
        v if v.swap_bytes() <= 3 => "this looks like a big-endian GGUF, which is not supported",
        _ => "the file may be corrupt or from a newer format",
    }
}

fn path_prefix(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!("GGUF {}: ", p.display()))
        .unwrap_or_default()
}

fn similar_hint(similar: &[String]) -> String {
    if similar.is_empty() {
        String::new()
    } else {
        format!("; similar: {}", similar.join(", "))
    }
}

/// An error from this crate, with the file it concerns when there is one.
#[derive(Debug, thiserror::Error)]
#[error("{}{kind}", path_prefix(.path))]
pub struct GgufError {
    /// The file the error concerns, if it came from a file.
    pub path: Option<PathBuf>,
    /// What went wrong.
    pub kind: GgufErrorKind,
}

impl GgufError {
    pub(crate) fn new(kind: GgufErrorKind) -> Self {
        Self { path: None, kind }
    }

    pub(crate) fn malformed(msg: impl Into<String>) -> Self {
        Self::new(GgufErrorKind::Malformed(msg.into()))
    }

    pub(crate) fn size(msg: impl Into<String>) -> Self {
        Self::new(GgufErrorKind::SizeMismatch(msg.into()))
    }

    pub(crate) fn with_path(mut self, path: Option<&std::path::Path>) -> Self {
        if self.path.is_none() {
            self.path = path.map(|p| p.to_path_buf());
        }
        self
    }
}

impl From<GgufErrorKind> for GgufError {
    fn from(kind: GgufErrorKind) -> Self {
        Self::new(kind)
    }
}

impl From<std::io::Error> for GgufError {
    fn from(e: std::io::Error) -> Self {
        Self::new(GgufErrorKind::Io(e))
    }
}

/// Result alias for this crate.
pub type Result<T, E = GgufError> = std::result::Result<T, E>;
