//! Tiny configurations shared by the weight-source tests (random init, recorded layouts).

use gfnlm_models::LlamaConfig;
use gfnlm_models::gpt2::Gpt2Config;
use gfnlm_models::gptj::GptJConfig;

/// A Llama with 2 heads over 8 channels, 23 tokens.
pub fn llama(tied: bool, layers: usize) -> LlamaConfig {
    LlamaConfig {
        vocab_size: 23,
        hidden_size: 8,
        intermediate_size: 12,
        num_hidden_layers: layers,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        head_dim: None,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 32,
        tie_word_embeddings: tied,
    }
}

/// A GPT-2 with 2 heads over 8 channels, 11 tokens.
pub fn gpt2(layers: usize) -> Gpt2Config {
    serde_json::from_value(serde_json::json!({
        "vocab_size": 11, "n_positions": 16, "n_embd": 8, "n_layer": layers, "n_head": 2
    }))
    .unwrap()
}

/// A GPT-J with rotary_dim 2, otherwise like [`gpt2`].
pub fn gptj(layers: usize) -> GptJConfig {
    serde_json::from_value(serde_json::json!({
        "vocab_size": 11, "n_positions": 16, "n_embd": 8, "n_layer": layers, "n_head": 2,
        "rotary_dim": 2
    }))
    .unwrap()
}
