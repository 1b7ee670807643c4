//! Llama-family conventions of llama.cpp GGUF files: hyper-parameter keys, tensor names,
//! and the Q/K row permutation that llama.cpp applies for its interleaved RoPE.

use crate::error::{GgufError, Result};
use crate::reader::{F32Tensor, GgufFile};

/// Hyper-parameters of a llama-architecture GGUF (`llama.*` keys).
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaHParams {
    /// `general.architecture` (the prefix of the other keys).
    pub architecture: String,
    /// Token vocabulary size (length of `tokenizer.ggml.tokens`, else `token_embd` rows).
    pub vocab_size: usize,
    /// `{arch}.embedding_length`.
    pub hidden_size: usize,
    /// `{arch}.feed_forward_length`.
    pub intermediate_size: usize,
    /// `{arch}.block_count`.
    pub num_layers: usize,
    /// `{arch}.attention.head_count`.
    pub num_heads: usize,
    /// `{arch}.attention.head_count_kv` (defaults to `num_heads`).
    pub num_kv_heads: usize,
    /// `{arch}.attention.key_length`, else `hidden_size / num_heads`.
    pub head_dim: usize,
    /// `{arch}.context_length`.
    pub context_length: usize,
    /// `{arch}.rope.freq_base` (default 10000).
    pub rope_theta: f32,
    /// `{arch}.attention.layer_norm_rms_epsilon`.
    pub rms_norm_eps: f32,
    /// Whether the file lacks `output.weight`, so the LM head is the embedding matrix.
    pub tie_word_embeddings: bool,
}

impl LlamaHParams {
    /// Reads the hyper-parameters; missing required keys are reported with the file name.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let arch = file.architecture()?.to_owned();
        let key = |k: &str| format!("{arch}.{k}");
        let num_heads = file.get_usize(&key("attention.head_count"))?;
        let hidden_size = file.get_usize(&key("embedding_length"))?;
        let opt_usize = |k: &str| {
            file.get(&key(k))
                .map(|_| file.get_usize(&key(k)))
                .transpose()
        };
        let vocab_size = match file.get("tokenizer.ggml.tokens") {
            Some(_) => file.get_array("tokenizer.ggml.tokens")?.len(),
            None => file.tensor_info("token_embd.weight")?.shape()[0],
        };
        if num_heads == 0 || !hidden_size.is_multiple_of(num_heads) {
            return Err(GgufError::malformed(format!(
                "{arch}.embedding_length {hidden_size} is not divisible by head_count {num_heads}"
            ))
            .with_path(file.path()));
        }
        Ok(Self {
            vocab_size,
            hidden_size,
            intermediate_size: file.get_usize(&key("feed_forward_length"))?,
            num_layers: file.get_usize(&key("block_count"))?,
            num_heads,
            num_kv_heads: opt_usize("attention.head_count_kv")?.unwrap_or(num_heads),
            head_dim: opt_usize("attention.key_length")?.unwrap_or(hidden_size / num_heads),
            context_length: file.get_usize(&key("context_length"))?,
            rope_theta: match file.get(&key("rope.freq_base")) {
                Some(_) => file.get_f32(&key("rope.freq_base"))?,
                None => 10_000.0,
            },
            rms_norm_eps: file.get_f32(&key("attention.layer_norm_rms_epsilon"))?,
            tie_word_embeddings: file.tensor("output.weight").is_none(),
            architecture: arch,
        })
    }
}

/// Tensors outside the blocks: `(llama.cpp name, Hugging Face name)`.
const FIXED_NAMES: [(&str, &str); 3] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// Modules of a block: `(llama.cpp name, Hugging Face name under model.layers.N)`.
const BLOCK_MODULES: [(&str, &str); 9] = [
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
];

/// The Hugging Face (transformers `LlamaForCausalLM`) name of a llama.cpp tensor name,
/// e.g. `blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`.
pub fn hf_name(gguf_name: &str) -> Option<String> {
    if let Some((_, hf)) = FIXED_NAMES.iter().find(|(g, _)| *g == gguf_name) {
        return Some((*hf).to_owned());
    }
    let rest = gguf_name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    layer.parse::<usize>().ok()?;
    let (module, suffix) = rest.split_once('.')?;
    let (_, hf) = BLOCK_MODULES.iter().find(|(g, _)| *g == module)?;
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// The llama.cpp name of a Hugging Face Llama tensor name (the inverse of [`hf_name`]),
/// e.g. `model.layers.3.self_attn.q_proj.weight` -> `blk.3.attn_q.weight`.
pub fn gguf_name(hf_name: &str) -> Option<String> {
    if let Some((g, _)) = FIXED_NAMES.iter().find(|(_, hf)| *hf == hf_name) {
        return Some((*g).to_owned());
    }
    let rest = hf_name.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    layer.parse::<usize>().ok()?;
    let (module, suffix) = rest.rsplit_once('.')?;
    let (g, _) = BLOCK_MODULES.iter().find(|(_, hf)| *hf == module)?;
    Some(format!("blk.{layer}.{g}.{suffix}"))
}

/// Dequantises `gguf_name` in the Hugging Face layout: `attn_q`/`attn_k` weights are
/// un-permuted (see [`unpermute_qk_rows`]) so that HF's half-split `rotate_half` RoPE applies.
pub fn load_hf_layout(file: &GgufFile, hp: &LlamaHParams, gguf_name: &str) -> Result<F32Tensor> {
    let mut t = file.dequantize(gguf_name)?;
    let heads = if gguf_name.ends_with("attn_q.weight") {
        Some(hp.num_heads)
    } else if gguf_name.ends_with("attn_k.weight") {
        Some(hp.num_kv_heads)
    } else {
        None
    };
    if let Some(n_head) = heads {
        let (rows, cols) = matrix_dims(&t, gguf_name)?;
        t.data =
            unpermute_qk_rows(&t.data, rows, cols, n_head).map_err(|e| e.with_path(file.path()))?;
    }
    Ok(t)
}

fn matrix_dims(t: &F32Tensor, name: &str) -> Result<(usize, usize)> {
    match t.shape[..] {
        [rows, cols] => Ok((rows, cols)),
        _ => Err(GgufError::malformed(format!(
            "tensor '{name}' has shape {:?}, expected a matrix",
            t.shape
        ))),
    }
}

fn check_qk(len: usize, rows: usize, cols: usize, n_head: usize) -> Result<usize> {
    if n_head == 0 || !rows.is_multiple_of(2 * n_head) || rows.checked_mul(cols) != Some(len) {
        return Err(GgufError::size(format!(
            "Q/K permutation: {len} values as {rows}x{cols} with {n_head} heads \
             (rows must be a multiple of 2*heads)"
        )));
    }
    Ok(rows / n_head / 2)
}

/// Moves rows within each head between the HF order (`j·half + d`) and the GGUF order (`2d + j`).
fn reorder_heads<T: Copy>(
    data: &[T],
    rows: usize,
    cols: usize,
    n_head: usize,
    to_gguf: bool,
) -> Result<Vec<T>> {
    let half = check_qk(data.len(), rows, cols, n_head)?;
    let mut out = Vec::with_capacity(data.len());
    for h in 0..n_head {
        let head = h * 2 * half;
        for r in 0..2 * half {
            // output row r of this head is read from row `src` of the input
            let src = if to_gguf {
                (r % 2) * half + r / 2
            } else {
                2 * (r % half) + r / half
            };
            out.extend_from_slice(&data[(head + src) * cols..(head + src + 1) * cols]);
        }
    }
    Ok(out)
}

/// Undoes llama.cpp's Q/K permutation: within each head of `2·half` rows, GGUF row `2d + j`
/// becomes HF row `j·half + d`. `data` is a row-major `rows × cols` matrix, `n_head` the
/// number of heads it holds (query heads for `attn_q`, KV heads for `attn_k`).
pub fn unpermute_qk_rows<T: Copy>(
    data: &[T],
    rows: usize,
    cols: usize,
    n_head: usize,
) -> Result<Vec<T>> {
    reorder_heads(data, rows, cols, n_head, false)
}

/// Applies llama.cpp's Q/K permutation (HF layout to GGUF layout), the inverse of
/// [`unpermute_qk_rows`]: HF row `j·half + d` becomes GGUF row `2d + j`.
pub fn permute_qk_rows<T: Copy>(
    data: &[T],
    rows: usize,
    cols: usize,
    n_head: usize,
) -> Result<Vec<T>> {
    reorder_heads(data, rows, cols, n_head, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_matches_the_documented_index_map() {
        // 2 heads of 6 rows (half = 3), 2 columns; value = 10*row + col
        let (rows, cols, n_head, half) = (12, 2, 2, 3);
        let gguf: Vec<usize> = (0..rows * cols)
            .map(|i| 10 * (i / cols) + i % cols)
            .collect();
        let hf = unpermute_qk_rows(&gguf, rows, cols, n_head).unwrap();
        for h in 0..n_head {
            for d in 0..half {
                for j in 0..2 {
                    let g = h * 2 * half + 2 * d + j;
                    let f = h * 2 * half + j * half + d;
                    assert_eq!(
                        hf[f * cols..f * cols + cols],
                        gguf[g * cols..g * cols + cols]
                    );
                }
            }
        }
        assert_eq!(permute_qk_rows(&hf, rows, cols, n_head).unwrap(), gguf);
        assert!(unpermute_qk_rows(&gguf, rows, cols, 4).is_err());
        assert!(unpermute_qk_rows(&gguf[1..], rows, cols, n_head).is_err());
    }

    #[test]
    fn hf_names() {
        assert_eq!(
            hf_name("blk.12.attn_k.weight").as_deref(),
            Some("model.layers.12.self_attn.k_proj.weight")
        );
        assert_eq!(
            hf_name("blk.0.ffn_norm.weight").as_deref(),
            Some("model.layers.0.post_attention_layernorm.weight")
        );
        assert_eq!(
            hf_name("token_embd.weight").as_deref(),
            Some("model.embed_tokens.weight")
        );
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }

    #[test]
    fn gguf_names_invert_hf_names() {
        for g in [
            "token_embd.weight",
            "output_norm.weight",
            "output.weight",
            "blk.0.attn_q.weight",
            "blk.12.attn_k.weight",
            "blk.3.attn_v.weight",
            "blk.3.attn_output.weight",
            "blk.7.ffn_gate.weight",
            "blk.7.ffn_up.weight",
            "blk.7.ffn_down.weight",
            "blk.1.attn_norm.weight",
            "blk.1.ffn_norm.weight",
        ] {
            let hf = hf_name(g).unwrap();
            assert_eq!(gguf_name(&hf).as_deref(), Some(g), "{hf}");
        }
        assert_eq!(gguf_name("model.layers.x.mlp.up_proj.weight"), None);
        assert_eq!(
            gguf_name("model.layers.0.self_attn.rotary_emb.inv_freq"),
            None
        );
    }
}
