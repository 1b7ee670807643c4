//! Sentence embeddings with all-MiniLM-L6-v2 (a 6-layer BERT) in burn, and the semantic
//! diversity of a set of texts.
//!
//! [`SentenceEncoder::load`] reads a Hugging Face folder (`config.json`, `model.safetensors`,
//! `tokenizer.json`, optionally `sentence_bert_config.json`); `gfnlm_fetch::ensure_minilm()`
//! provides one. [`SentenceEncoder::embed`] reproduces sentence-transformers for this model:
//! tokenise (truncating to `max_seq_length` = 256 tokens, padding per batch), run the encoder
//! with the padding attention mask, mean-pool the last hidden state over the mask, and
//! L2-normalise. [`semantic_diversity`] is 1 − the mean pairwise cosine similarity;
//! [`bert_score`] matches [`SentenceEncoder::token_embeddings`] as BERTScore does.
//!
//! Layout: [`config`] (serde `config.json`), [`bert`] (the module tree and the math, no I/O),
//! [`load`] (safetensors → modules), [`error`]. Library code takes a `&Device` and never
//! names a backend.

pub mod bert;
pub mod config;
pub mod error;
pub mod load;

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use tokenizers::{TruncationDirection, TruncationParams, TruncationStrategy};

pub use bert::BertModel;
pub use config::BertConfig;
pub use error::EmbedError;

/// Texts encoded per forward pass.
pub const BATCH_SIZE: usize = 32;
/// Token limit (special tokens included) when the folder has no `sentence_bert_config.json`;
/// all-MiniLM-L6-v2's `max_seq_length`.
pub const DEFAULT_MAX_SEQ_LENGTH: usize = 256;

/// A BERT sentence encoder with its tokenizer: text → mean-pooled, L2-normalised embedding.
pub struct SentenceEncoder {
    name: String,
    model: BertModel,
    config: BertConfig,
    tokenizer: tokenizers::Tokenizer,
    max_seq_length: usize,
    device: Device,
}

impl std::fmt::Debug for SentenceEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceEncoder")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("max_seq_length", &self.max_seq_length)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct SentenceBertConfig {
    max_seq_length: usize,
}

impl SentenceEncoder {
    /// Loads the encoder folder `dir` onto `device`. The encoder's [`name`](Self::name) is the
    /// folder's name (`all-MiniLM-L6-v2` for the folder `gfnlm_fetch::ensure_minilm` returns).
    ///
    /// A missing or corrupt file gives an [`EmbedError`] naming it and the fix.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, EmbedError> {
        if !dir.is_dir() {
            return Err(EmbedError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "encoder folder not found",
                ),
            });
        }
        let config = load::read_config(dir)?;
        let max_seq_length = read_max_seq_length(dir)?.min(config.max_position_embeddings);
        let model = load::load_bert(dir, &config, device)?;
        let tokenizer = load_tokenizer(&dir.join("tokenizer.json"), max_seq_length)?;
        let name = std::fs::canonicalize(dir)
            .unwrap_or_else(|_| dir.to_path_buf())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "sentence-encoder".into());
        Ok(Self {
            name,
            model,
            config,
            tokenizer,
            max_seq_length,
            device: device.clone(),
        })
    }

    /// The encoder's name (its folder's name, e.g. `all-MiniLM-L6-v2`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The BERT configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Embedding width (384 for all-MiniLM-L6-v2).
    pub fn dim(&self) -> usize {
        self.config.hidden_size
    }

    /// Token limit per text, special tokens included (longer texts are truncated).
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// Token ids of `text` as the encoder sees it (`[CLS] … [SEP]`, truncated).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| EmbedError::Tokenize {
                message: e.to_string(),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Mean-pooled, L2-normalised embeddings of `texts`, in order (`dim()` floats each).
    ///
    /// Texts are batched internally ([`BATCH_SIZE`] per pass, grouped by length so that little
    /// padding is computed); padding never changes a text's embedding beyond float rounding.
    pub fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let ids: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| self.tokenize(t))
            .collect::<Result<_, _>>()?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let mut out = vec![Vec::new(); ids.len()];
        for chunk in order.chunks(BATCH_SIZE) {
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            for (&i, e) in chunk.iter().zip(self.embed_ids(&batch)) {
                out[i] = e;
            }
        }
        Ok(out)
    }

    /// Per-token, L2-normalised last-layer states of each text, `[CLS]` and `[SEP]` left out:
    /// the token embeddings BERTScore matches ([`bert_score`]). A text with no word piece
    /// gives an empty list.
    pub fn token_embeddings(&self, texts: &[String]) -> Result<Vec<Vec<Vec<f32>>>, EmbedError> {
        let ids: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| self.tokenize(t))
            .collect::<Result<_, _>>()?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let mut out = vec![Vec::new(); ids.len()];
        for chunk in order.chunks(BATCH_SIZE) {
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            let (hidden, t) = self.hidden_states(&batch);
            let d = self.config.hidden_size;
            for (row, &i) in chunk.iter().enumerate() {
                let n = ids[i].len();
                // Positions 1..n-1: the word pieces between [CLS] and [SEP].
                out[i] = (1..n.saturating_sub(1))
                    .map(|j| {
                        let at = (row * t + j) * d;
                        let v = &hidden[at..at + d];
                        let norm = v
                            .iter()
                            .map(|&x| (x as f64) * (x as f64))
                            .sum::<f64>()
                            .sqrt();
                        v.iter()
                            .map(|&x| (x as f64 / norm.max(1e-12)) as f32)
                            .collect()
                    })
                    .collect();
            }
        }
        Ok(out)
    }

    /// Last hidden states of one padded batch, flattened `[b, t, d]`, and `t`.
    fn hidden_states(&self, batch: &[&[u32]]) -> (Vec<f32>, usize) {
        let (ids, mask, t) = self.padded(batch);
        let hidden = self.model.forward(ids, mask);
        let flat = hidden
            .into_data()
            .convert::<f32>()
            .try_into_vec()
            .expect("f32 data");
        (flat, t)
    }

    /// Right-padded ids and the attention mask of a batch, and the padded length.
    fn padded(&self, batch: &[&[u32]]) -> (Tensor<2, Int>, Tensor<2>, usize) {
        let b = batch.len();
        let t = batch.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
        let pad = self.config.pad_token_id as i64;
        let mut flat = Vec::with_capacity(b * t);
        let mut mask = Vec::with_capacity(b * t);
        for s in batch {
            for j in 0..t {
                match s.get(j) {
                    Some(&id) => {
                        flat.push(id as i64);
                        mask.push(1.0f32);
                    }
                    None => {
                        flat.push(pad);
                        mask.push(0.0);
                    }
                }
            }
        }
        let ids = Tensor::<2, Int>::from_data(TensorData::new(flat, [b, t]), &self.device);
        let mask = Tensor::<2>::from_data(TensorData::new(mask, [b, t]), &self.device);
        (ids, mask, t)
    }

    /// Embeds one padded batch of token-id sequences.
    fn embed_ids(&self, batch: &[&[u32]]) -> Vec<Vec<f32>> {
        let (ids, mask, _) = self.padded(batch);
        let hidden = self.model.forward(ids, mask.clone());
        let pooled = bert::mean_pool_normalize(hidden, mask);
        let d = self.config.hidden_size;
        let flat: Vec<f32> = pooled
            .into_data()
            .convert::<f32>()
            .try_into_vec()
            .expect("f32 data");
        flat.chunks(d).map(<[f32]>::to_vec).collect()
    }
}

/// `max_seq_length` from `dir/sentence_bert_config.json`, else [`DEFAULT_MAX_SEQ_LENGTH`].
fn read_max_seq_length(dir: &Path) -> Result<usize, EmbedError> {
    let path = dir.join("sentence_bert_config.json");
    if !path.is_file() {
        return Ok(DEFAULT_MAX_SEQ_LENGTH);
    }
    let text = std::fs::read_to_string(&path).map_err(|source| EmbedError::Io {
        path: path.clone(),
        source,
    })?;
    let c: SentenceBertConfig =
        serde_json::from_str(&text).map_err(|source| EmbedError::Json { path, source })?;
    Ok(c.max_seq_length)
}

/// `tokenizer.json` with truncation to `max_len` tokens and no padding (batches are padded
/// by [`SentenceEncoder::embed`]). The file's own truncation/padding (128, fixed, for
/// all-MiniLM-L6-v2) is replaced, as sentence-transformers does.
fn load_tokenizer(path: &PathBuf, max_len: usize) -> Result<tokenizers::Tokenizer, EmbedError> {
    let err = |message: String| EmbedError::Tokenizer {
        path: path.clone(),
        message,
    };
    if !path.is_file() {
        return Err(EmbedError::Io {
            path: path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "tokenizer.json not found"),
        });
    }
    let mut tok = tokenizers::Tokenizer::from_file(path).map_err(|e| err(e.to_string()))?;
    tok.with_padding(None);
    tok.with_truncation(Some(TruncationParams {
        max_length: max_len,
        strategy: TruncationStrategy::LongestFirst,
        stride: 0,
        direction: TruncationDirection::Right,
    }))
    .map_err(|e| err(e.to_string()))?;
    Ok(tok)
}

/// Cosine similarity of two vectors (accumulated in f64); 0 when either is zero.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

/// BERTScore `(precision, recall, F1)` of a candidate against a reference from their
/// normalised token embeddings ([`SentenceEncoder::token_embeddings`]): greedy matching of each
/// token to its most similar token on the other side, averaged with uniform weights (Zhang et
/// al. 2020, without idf weighting or baseline rescaling). All three are 0 when either side
/// has no token.
pub fn bert_score(candidate: &[Vec<f32>], reference: &[Vec<f32>]) -> (f64, f64, f64) {
    if candidate.is_empty() || reference.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let dot = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| x as f64 * y as f64)
            .sum::<f64>()
    };
    let best = |from: &[Vec<f32>], to: &[Vec<f32>]| {
        from.iter()
            .map(|a| {
                to.iter()
                    .map(|b| dot(a, b))
                    .fold(f64::NEG_INFINITY, f64::max)
            })
            .sum::<f64>()
            / from.len() as f64
    };
    let p = best(candidate, reference);
    let r = best(reference, candidate);
    let f = if p + r > 0.0 {
        2.0 * p * r / (p + r)
    } else {
        0.0
    };
    (p, r, f)
}

/// 1 − mean pairwise cosine similarity of (already normalised) embeddings, over all
/// `n·(n−1)/2` unordered pairs; 0 for fewer than 2.
///
/// The dot product is used as the cosine (the embeddings of [`SentenceEncoder::embed`] are
/// unit vectors). The mean is computed in O(n·d) as `(‖Σeᵢ‖² − Σ‖eᵢ‖²) / (n(n−1))`.
pub fn semantic_diversity(embeddings: &[Vec<f32>]) -> f64 {
    let n = embeddings.len();
    if n < 2 {
        return 0.0;
    }
    let d = embeddings.iter().map(Vec::len).max().unwrap_or(0);
    let mut sum = vec![0.0f64; d];
    let mut self_dots = 0.0f64;
    for e in embeddings {
        for (s, &x) in sum.iter_mut().zip(e) {
            *s += x as f64;
            self_dots += (x as f64) * (x as f64);
        }
    }
    let total: f64 = sum.iter().map(|s| s * s).sum();
    let mean_cos = (total - self_dots) / (n as f64 * (n as f64 - 1.0));
    1.0 - mean_cos
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(d: usize, i: usize) -> Vec<f32> {
        let mut v = vec![0.0; d];
        v[i] = 1.0;
        v
    }

    #[test]
    fn bert_score_matches_greedy_matching_by_hand() {
        // Candidate {e0, e1} vs reference {e0}: P = (1 + 0)/2, R = 1, F = 2PR/(P+R) = 2/3.
        let (p, r, f) = bert_score(&[unit(3, 0), unit(3, 1)], &[unit(3, 0)]);
        assert!((p - 0.5).abs() < 1e-12 && (r - 1.0).abs() < 1e-12);
        assert!((f - 2.0 / 3.0).abs() < 1e-12, "{f}");
        // Swapping the sides swaps P and R and keeps F.
        let (p2, r2, f2) = bert_score(&[unit(3, 0)], &[unit(3, 0), unit(3, 1)]);
        assert_eq!((p2, r2), (r, p));
        assert!((f2 - f).abs() < 1e-12);
        // A 45° vector matches e0 with cosine 1/√2.
        let h = std::f32::consts::FRAC_1_SQRT_2;
        let (p, _, _) = bert_score(&[vec![h, h, 0.0]], &[unit(3, 0), unit(3, 2)]);
        assert!((p - 0.5f64.sqrt()).abs() < 1e-6, "{p}");
        assert_eq!(bert_score(&[], &[unit(3, 0)]), (0.0, 0.0, 0.0));
    }

    #[test]
    fn diversity_of_identical_vectors_is_zero() {
        let v = vec![0.6f32, 0.8, 0.0];
        let d = semantic_diversity(&[v.clone(), v.clone(), v]);
        // 0.6² + 0.8² is 1 only up to f32 rounding of 0.6 and 0.8.
        assert!(d.abs() < 1e-6, "{d}");
        assert_eq!(semantic_diversity(&[unit(4, 2), unit(4, 2)]), 0.0);
    }

    #[test]
    fn diversity_of_orthogonal_unit_vectors_is_one() {
        let e: Vec<Vec<f32>> = (0..5).map(|i| unit(8, i)).collect();
        let d = semantic_diversity(&e);
        assert!((d - 1.0).abs() < 1e-12, "{d}");
    }

    #[test]
    fn diversity_matches_the_pairwise_definition() {
        let raw = [
            [1.0f32, 2.0, -0.5],
            [0.3, -1.0, 2.0],
            [-1.0, 0.1, 0.4],
            [0.0, 1.0, 1.0],
        ];
        let e: Vec<Vec<f32>> = raw
            .iter()
            .map(|v| {
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter().map(|x| x / n).collect()
            })
            .collect();
        let mut s = 0.0;
        let mut pairs = 0;
        for i in 0..e.len() {
            for j in i + 1..e.len() {
                s += cosine(&e[i], &e[j]);
                pairs += 1;
            }
        }
        let want = 1.0 - s / pairs as f64;
        assert!((semantic_diversity(&e) - want).abs() < 1e-6);
    }

    #[test]
    fn fewer_than_two_is_zero_diversity() {
        assert_eq!(semantic_diversity(&[]), 0.0);
        assert_eq!(semantic_diversity(&[vec![1.0, 0.0]]), 0.0);
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("gfnlm-embed-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn write_tiny_config(dir: &Path) {
        let c = r#"{"model_type": "bert", "vocab_size": 10, "hidden_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
            "hidden_act": "gelu", "max_position_embeddings": 16, "type_vocab_size": 2,
            "layer_norm_eps": 1e-12}"#;
        std::fs::write(dir.join("config.json"), c).unwrap();
    }

    #[test]
    fn corrupt_safetensors_is_named_with_the_fix() {
        let d = scratch("corrupt");
        write_tiny_config(&d);
        std::fs::write(
            d.join("model.safetensors"),
            b"\x10\0\0\0\0\0\0\0not json at all!",
        )
        .unwrap();
        let err = SentenceEncoder::load(&d, &Device::default()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, EmbedError::Weights { .. }), "{msg}");
        assert!(
            msg.contains("model.safetensors") && msg.contains("cargo xtask fetch-model minilm"),
            "{msg}"
        );
    }

    #[test]
    fn missing_folder_and_missing_weights_name_the_fix() {
        let d = scratch("missing");
        let err = SentenceEncoder::load(&d.join("nope"), &Device::default()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("nope") && msg.contains("fetch-model minilm"),
            "{msg}"
        );
        let err = SentenceEncoder::load(&d, &Device::default()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("config.json") && msg.contains("fetch-model minilm"),
            "{msg}"
        );
        write_tiny_config(&d);
        let err = SentenceEncoder::load(&d, &Device::default()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("no weights found") && msg.contains("fetch-model minilm"),
            "{msg}"
        );
    }

    #[test]
    fn unsupported_activation_is_refused_by_file() {
        let d = scratch("act");
        std::fs::write(
            d.join("config.json"),
            r#"{"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
                "num_attention_heads": 2, "intermediate_size": 16, "hidden_act": "relu",
                "max_position_embeddings": 16}"#,
        )
        .unwrap();
        let msg = SentenceEncoder::load(&d, &Device::default())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("config.json") && msg.contains("relu"), "{msg}");
    }

    #[test]
    fn cosine_basics() {
        assert!((cosine(&[1.0, 0.0], &[2.0, 0.0]) - 1.0).abs() < 1e-12);
        assert!(cosine(&[1.0, 0.0], &[0.0, 3.0]).abs() < 1e-12);
        assert!((cosine(&[1.0, 1.0], &[-1.0, -1.0]) + 1.0).abs() < 1e-12);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }
}
