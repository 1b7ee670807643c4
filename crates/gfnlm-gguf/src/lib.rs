//! GGUF files for gfnlm: a validating reader over a memory map, f32 dequantisation of the
//! common ggml formats, a writer, and the llama.cpp conventions needed to load Llama-family
//! weights in the Hugging Face layout.
//!
//! ```no_run
//! use gfnlm_gguf::{GgufFile, llama};
//! let file = GgufFile::open("SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! let hp = llama::LlamaHParams::from_gguf(&file)?;
//! let q = llama::load_hf_layout(&file, &hp, "blk.0.attn_q.weight")?; // [576, 576], HF row order
//! let vocab = file.get_str_array("tokenizer.ggml.tokens")?;
//! # Ok::<(), gfnlm_gguf::GgufError>(())
//! ```
//!
//! Dequantisation is bit-identical to gguf-py (transformers' GGUF loader) for F32, F16,
//! BF16, F64, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and Q8_K.
//! The i-quants and ternary formats are recognised (sizes are validated) but not decoded.
//! This crate does not depend on burn: it hands out `Vec<f32>` that callers turn into tensors.

#![warn(missing_docs)]

mod dequant;
mod error;
pub mod llama;
mod metadata;
mod quant;
mod reader;
mod types;
mod writer;

pub use dequant::{dequantize, dequantize_to_vec};
pub use error::{GgufError, GgufErrorKind, Result};
pub use metadata::{MetadataArray, MetadataValue};
pub use quant::{QUANTIZE_TYPES, quantize};
pub use reader::{DEFAULT_ALIGNMENT, F32Tensor, GGUF_MAGIC, GgufFile, MAX_DIMS, TensorInfo};
pub use types::{GgmlType, QK_K};
pub use writer::GgufWriter;
