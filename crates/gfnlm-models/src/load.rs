//! Weight loading from GGUF files, kept apart from the model math (Hugging Face folders are
//! read by [`crate::hf`], which also defines [`crate::CausalLm::load`]). Loading depends on the
//! model modules, never the other way.
//!
//! [`load_llama_gguf`] reads a llama.cpp GGUF file: hyper-parameters from its metadata, weights
//! dequantised to f32, llama.cpp's Q/K row permutation undone so the HF `rotate_half` RoPE
//! applies, and `[out, in]` matrices transposed to burn's `[in, out]`.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use gfnlm_gguf::llama::{self, LlamaHParams};
use gfnlm_gguf::{GgufError, GgufFile};

use crate::llama::{LlamaConfig, LlamaForCausalLm};
use crate::weights::{Role, Stored, WeightSource};

/// Why a checkpoint could not be turned into a model.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The GGUF container itself is unreadable (see the inner message).
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// The file describes a model this loader does not handle.
    #[error("{path}: unsupported architecture '{arch}' (gfnlm loads 'llama' GGUF files)")]
    Architecture {
        /// The checkpoint.
        path: PathBuf,
        /// `general.architecture` as found.
        arch: String,
    },
    /// The hyper-parameters are inconsistent.
    #[error("{path}: invalid model config: {message}")]
    Config {
        /// The checkpoint.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A stored weight is NaN or infinite.
    #[error(
        "{path}: tensor '{tensor}' holds a non-finite value ({value} at flat index {index}); \
         the checkpoint is corrupt"
    )]
    NonFinite {
        /// The checkpoint.
        path: PathBuf,
        /// Tensor name in the file.
        tensor: String,
        /// Flat index (after dequantisation) of the first bad value.
        index: usize,
        /// The value.
        value: f32,
    },
    /// A tensor's shape disagrees with the hyper-parameters.
    #[error(
        "{path}: tensor '{tensor}' has shape {actual:?}, but the metadata implies {expected:?}"
    )]
    Shape {
        /// The checkpoint.
        path: PathBuf,
        /// Tensor name in the file.
        tensor: String,
        /// Shape implied by the config.
        expected: Vec<usize>,
        /// Shape found.
        actual: Vec<usize>,
    },
}

/// Reads the Llama hyper-parameters from a GGUF file's metadata.
pub fn llama_config_from_gguf(gguf: &GgufFile) -> Result<LlamaConfig, LoadError> {
    let path = || gguf.path().map(Path::to_path_buf).unwrap_or_default();
    let arch = gguf.architecture()?;
    if arch != "llama" {
        return Err(LoadError::Architecture {
            path: path(),
            arch: arch.to_string(),
        });
    }
    let hp = LlamaHParams::from_gguf(gguf)?;
    // Bounds under the file's own key names first (LlamaConfig::validate names HF keys).
    {
        use crate::limits::*;
        let mut problems = Vec::new();
        let k = |s: &str| format!("{arch}.{s}");
        check_sizes(
            &[
                (k("block_count").as_str(), hp.num_layers, MAX_LAYERS),
                (k("embedding_length").as_str(), hp.hidden_size, MAX_WIDTH),
                (
                    k("feed_forward_length").as_str(),
                    hp.intermediate_size,
                    MAX_WIDTH,
                ),
                (k("attention.head_count").as_str(), hp.num_heads, MAX_HEADS),
                (
                    k("attention.head_count_kv").as_str(),
                    hp.num_kv_heads,
                    MAX_HEADS,
                ),
                (k("attention.key_length").as_str(), hp.head_dim, MAX_WIDTH),
                (
                    k("context_length").as_str(),
                    hp.context_length,
                    MAX_POSITIONS,
                ),
                ("vocabulary size", hp.vocab_size, MAX_VOCAB),
            ],
            &mut problems,
        );
        if !problems.is_empty() {
            return Err(LoadError::Config {
                path: path(),
                message: problems.join("; "),
            });
        }
    }
    let config = LlamaConfig {
        vocab_size: hp.vocab_size,
        hidden_size: hp.hidden_size,
        intermediate_size: hp.intermediate_size,
        num_hidden_layers: hp.num_layers,
        num_attention_heads: hp.num_heads,
        num_key_value_heads: hp.num_kv_heads,
        head_dim: Some(hp.head_dim),
        rms_norm_eps: hp.rms_norm_eps as f64,
        rope_theta: hp.rope_theta as f64,
        max_position_embeddings: hp.context_length,
        tie_word_embeddings: hp.tie_word_embeddings,
    };
    config.validate().map_err(|message| LoadError::Config {
        path: path(),
        message,
    })?;
    // The tensors of every layer plus the embedding and the final norm, before any
    // per-layer work.
    crate::limits::check_layer_count(
        &format!("{arch}.block_count"),
        config.num_hidden_layers,
        LlamaConfig::TENSORS_PER_LAYER,
        LlamaConfig::FIXED_TENSORS,
        gguf.tensors().len(),
    )
    .map_err(|message| LoadError::Config {
        path: path(),
        message,
    })?;
    Ok(config)
}

/// Opens a GGUF file and builds the Llama model on `device`.
pub fn load_llama_gguf(
    path: impl AsRef<Path>,
    device: &Device,
) -> Result<(LlamaForCausalLm, LlamaConfig), LoadError> {
    let gguf = GgufFile::open(path.as_ref())?;
    load_llama_from_gguf(&gguf, device)
}

/// Builds the Llama model on `device` from an opened GGUF file, through the one constructor
/// [`LlamaConfig::build`] with the file as its [`WeightSource`].
pub fn load_llama_from_gguf(
    gguf: &GgufFile,
    device: &Device,
) -> Result<(LlamaForCausalLm, LlamaConfig), LoadError> {
    let config = llama_config_from_gguf(gguf)?;
    let hp = LlamaHParams::from_gguf(gguf)?;
    let model = config.build(&mut GgufSource {
        gguf,
        hp: &hp,
        device,
    })?;
    Ok((model, config))
}

/// A GGUF file as a [`WeightSource`]: Hugging Face names are mapped to llama.cpp's
/// (`model.layers.N.self_attn.q_proj.weight` → `blk.N.attn_q.weight`, see
/// [`llama::gguf_name`]); each tensor is checked against the shape the config implies,
/// dequantised to f32, its Q/K rows un-permuted to the HF order, checked for NaN/Inf and
/// transposed to burn's layout where the model wants it so.
struct GgufSource<'a> {
    gguf: &'a GgufFile,
    hp: &'a LlamaHParams,
    device: &'a Device,
}

impl GgufSource<'_> {
    fn path(&self) -> PathBuf {
        self.gguf.path().map(Path::to_path_buf).unwrap_or_default()
    }

    /// The llama.cpp name of `hf_name`.
    fn name(&self, hf_name: &str) -> Result<String, LoadError> {
        llama::gguf_name(hf_name).ok_or_else(|| LoadError::Config {
            path: self.path(),
            message: format!("tensor '{hf_name}' has no llama.cpp name"),
        })
    }

    /// Dequantised tensor, checked against the expected row-major shape.
    /// (Q/K rows are un-permuted to the HF order on the way.)
    fn read(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>, LoadError> {
        let actual = self.gguf.tensor_info(name)?.shape();
        if actual != expected {
            return Err(LoadError::Shape {
                path: self.path(),
                tensor: name.to_string(),
                expected: expected.to_vec(),
                actual,
            });
        }
        let data = llama::load_hf_layout(self.gguf, self.hp, name)?.data;
        if let Some((index, value)) = crate::limits::first_non_finite(&data) {
            return Err(LoadError::NonFinite {
                path: self.path(),
                tensor: name.to_string(),
                index,
                value,
            });
        }
        Ok(data)
    }
}

impl WeightSource for GgufSource<'_> {
    type Error = LoadError;

    fn vector(&mut self, name: &str, len: usize, _role: Role) -> Result<Tensor<1>, LoadError> {
        let data = self.read(&self.name(name)?, &[len])?;
        Ok(Tensor::from_data(TensorData::new(data, [len]), self.device))
    }

    fn matrix(
        &mut self,
        name: &str,
        shape: [usize; 2],
        stored: Stored,
    ) -> Result<Tensor<2>, LoadError> {
        let [rows, cols] = stored.shape(shape);
        let data = self.read(&self.name(name)?, &[rows, cols])?;
        let data = match stored {
            Stored::AsIs => data,
            Stored::Transposed => transpose(&data, rows, cols),
        };
        Ok(Tensor::from_data(TensorData::new(data, shape), self.device))
    }
}

/// Row-major `[rows, cols]` → `[cols, rows]`.
fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = w[r * cols + c];
        }
    }
    out
}
