//! Building blocks shared by the architectures, each defined once: the token embedding, the
//! norms, rotary position embedding and the MLP activations.
//!
//! Field names are part of the checkpoint format (HF loading and the LoRA walkers address
//! parameters by path), so a layer's fields keep the Hugging Face names (`weight`, `bias`).

mod activation;
mod embedding;
mod norm;
mod rope;

pub use activation::{Activation, gelu_new};
pub use embedding::Embedding;
pub use norm::{LayerNorm, RmsNorm};
pub use rope::{PartialRotary, RotaryEmbedding, RotaryTables};
