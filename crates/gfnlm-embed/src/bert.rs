//! BERT's encoder as burn modules: the module tree mirrors the Hugging Face checkpoint names
//! (`embeddings.word_embeddings`, `encoder.layer.N.attention.self.query`, …; a `LayerNorm` of
//! the checkpoint is a `layer_norm` field here and `self` is `self_attention`). No loading code
//! lives here; see [`crate::load`].

use burn::module::Module;
use burn::tensor::activation::gelu;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Int, Tensor};
use gfnlm_models::Linear;
use gfnlm_models::layers::{Embedding, LayerNorm};

/// Additive attention bias of a padded key: large enough that `exp` underflows to 0 in f32,
/// finite so that no backend meets `−∞ − −∞`.
const MASKED: f32 = -1.0e9;

/// `embeddings.*`: token + learned position + token-type embeddings, then LayerNorm.
#[derive(Module, Debug)]
pub struct BertEmbeddings {
    /// `word_embeddings`, `[vocab, hidden]`.
    pub word_embeddings: Embedding,
    /// `position_embeddings`, `[max_positions, hidden]`.
    pub position_embeddings: Embedding,
    /// `token_type_embeddings`, `[type_vocab, hidden]`.
    pub token_type_embeddings: Embedding,
    /// `LayerNorm`.
    pub layer_norm: LayerNorm,
}

impl BertEmbeddings {
    /// `ids` `[b, t]` (all token type 0, positions `0..t`) → `[b, t, hidden]`.
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let [b, t] = ids.dims();
        let device = ids.device();
        let positions = Tensor::<1, Int>::arange(0..t as i64, &device).reshape([1, t]);
        let types = Tensor::<2, Int>::zeros([b, t], &device);
        let x = self.word_embeddings.forward(ids)
            + self.position_embeddings.forward(positions)
            + self.token_type_embeddings.forward(types);
        self.layer_norm.forward(x)
    }
}

/// `attention.self`: the query/key/value projections.
#[derive(Module, Debug)]
pub struct BertSelfAttention {
    /// `query`.
    pub query: Linear,
    /// `key`.
    pub key: Linear,
    /// `value`.
    pub value: Linear,
    /// Attention heads.
    pub num_heads: usize,
}

impl BertSelfAttention {
    /// Bidirectional attention of `x` `[b, t, d]` with an additive key bias `[b, 1, 1, t]`.
    pub fn forward(&self, x: Tensor<3>, bias: Tensor<4>) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let h = self.num_heads;
        let split = |y: Tensor<3>| y.reshape([b, t, h, d / h]).swap_dims(1, 2);
        let q = split(self.query.forward(x.clone()));
        let k = split(self.key.forward(x.clone()));
        let v = split(self.value.forward(x));
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: false,
        };
        let ctx = attention(q, k, v, None, Some(bias.expand([b, h, t, t])), options);
        ctx.swap_dims(1, 2).reshape([b, t, d])
    }
}

/// `attention.output` (and the layer's `output`): projection, residual, LayerNorm.
#[derive(Module, Debug)]
pub struct BertResidualOutput {
    /// `dense`.
    pub dense: Linear,
    /// `LayerNorm`.
    pub layer_norm: LayerNorm,
}

impl BertResidualOutput {
    /// `LayerNorm(dense(x) + residual)`.
    pub fn forward(&self, x: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        self.layer_norm.forward(self.dense.forward(x) + residual)
    }
}

/// `attention`: self-attention then its output block.
#[derive(Module, Debug)]
pub struct BertAttention {
    /// `self`.
    pub self_attention: BertSelfAttention,
    /// `output`.
    pub output: BertResidualOutput,
}

/// `intermediate`: the feed-forward up-projection with GELU (erf form).
#[derive(Module, Debug)]
pub struct BertIntermediate {
    /// `dense`.
    pub dense: Linear,
}

/// `encoder.layer.N`.
#[derive(Module, Debug)]
pub struct BertLayer {
    /// `attention`.
    pub attention: BertAttention,
    /// `intermediate`.
    pub intermediate: BertIntermediate,
    /// `output`.
    pub output: BertResidualOutput,
}

impl BertLayer {
    /// One post-norm encoder layer.
    pub fn forward(&self, x: Tensor<3>, bias: Tensor<4>) -> Tensor<3> {
        let a = self.attention.self_attention.forward(x.clone(), bias);
        let x = self.attention.output.forward(a, x);
        let hidden = gelu(self.intermediate.dense.forward(x.clone()));
        self.output.forward(hidden, x)
    }
}

/// `encoder`.
#[derive(Module, Debug)]
pub struct BertEncoder {
    /// `layer.N`.
    pub layer: Vec<BertLayer>,
}

/// `BertModel` without its pooler (sentence-transformers mean-pools the last hidden state).
#[derive(Module, Debug)]
pub struct BertModel {
    /// `embeddings`.
    pub embeddings: BertEmbeddings,
    /// `encoder`.
    pub encoder: BertEncoder,
}

impl BertModel {
    /// Last hidden state `[b, t, hidden]` of `ids` `[b, t]` with `mask` `[b, t]` (1 = token,
    /// 0 = padding; padded keys get no attention).
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<3> {
        let [b, t] = ids.dims();
        let bias = (mask.neg().add_scalar(1.0))
            .mul_scalar(MASKED)
            .reshape([b, 1, 1, t]);
        let mut x = self.embeddings.forward(ids);
        for layer in &self.encoder.layer {
            x = layer.forward(x, bias.clone());
        }
        x
    }
}

/// Mean of `hidden` `[b, t, d]` over the positions where `mask` `[b, t]` is 1, then L2
/// normalisation (`x / max(‖x‖, 1e-12)`), as sentence-transformers' `Pooling(mean)` +
/// `Normalize` do: `[b, d]`.
pub fn mean_pool_normalize(hidden: Tensor<3>, mask: Tensor<2>) -> Tensor<2> {
    let [b, t, d] = hidden.dims();
    let m: Tensor<3> = mask.reshape([b, t, 1]);
    let summed: Tensor<2> = (hidden * m.clone()).sum_dim(1).reshape([b, d]);
    let count: Tensor<2> = m.sum_dim(1).reshape([b, 1]).clamp_min(1e-9);
    let mean = summed / count;
    let norm = mean.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
    mean / norm
}

#[cfg(test)]
mod tests {
    use burn::module::Param;
    use burn::tensor::{Device, Distribution, TensorData};

    use super::*;

    fn rand<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
        Tensor::random(shape, Distribution::Normal(0.0, 0.5), device)
    }

    fn linear(i: usize, o: usize, device: &Device) -> Linear {
        Linear::new(rand([i, o], device), Some(rand([o], device)))
    }

    fn norm(d: usize, device: &Device) -> LayerNorm {
        LayerNorm::new(rand([d], device).add_scalar(1.0), rand([d], device), 1e-12)
    }

    fn embedding(n: usize, d: usize, device: &Device) -> Embedding {
        Embedding {
            weight: Param::from_tensor(rand([n, d], device)),
        }
    }

    /// A random 2-layer BERT: vocab 20, hidden 8, 2 heads, 16 positions.
    fn tiny(device: &Device) -> BertModel {
        let (d, ff) = (8, 16);
        let layer = (0..2)
            .map(|_| BertLayer {
                attention: BertAttention {
                    self_attention: BertSelfAttention {
                        query: linear(d, d, device),
                        key: linear(d, d, device),
                        value: linear(d, d, device),
                        num_heads: 2,
                    },
                    output: BertResidualOutput {
                        dense: linear(d, d, device),
                        layer_norm: norm(d, device),
                    },
                },
                intermediate: BertIntermediate {
                    dense: linear(d, ff, device),
                },
                output: BertResidualOutput {
                    dense: linear(ff, d, device),
                    layer_norm: norm(d, device),
                },
            })
            .collect();
        BertModel {
            embeddings: BertEmbeddings {
                word_embeddings: embedding(20, d, device),
                position_embeddings: embedding(16, d, device),
                token_type_embeddings: embedding(2, d, device),
                layer_norm: norm(d, device),
            },
            encoder: BertEncoder { layer },
        }
    }

    fn pooled(model: &BertModel, rows: &[&[i64]], device: &Device) -> Vec<Vec<f32>> {
        let t = rows.iter().map(|r| r.len()).max().unwrap();
        let mut ids = Vec::new();
        let mut mask = Vec::new();
        for r in rows {
            for j in 0..t {
                ids.push(r.get(j).copied().unwrap_or(0));
                mask.push(if j < r.len() { 1.0f32 } else { 0.0 });
            }
        }
        let b = rows.len();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, t]), device);
        let mask = Tensor::<2>::from_data(TensorData::new(mask, [b, t]), device);
        let out = mean_pool_normalize(model.forward(ids, mask.clone()), mask);
        let flat: Vec<f32> = out.into_data().convert::<f32>().try_into_vec().unwrap();
        flat.chunks(8).map(<[f32]>::to_vec).collect()
    }

    #[test]
    fn padding_does_not_change_an_embedding() {
        let device = Device::default();
        let model = tiny(&device);
        let short: &[i64] = &[1, 5, 7, 2];
        let long: &[i64] = &[1, 3, 4, 9, 11, 13, 6, 8, 2];
        let alone = pooled(&model, &[short], &device);
        let batched = pooled(&model, &[long, short, short], &device);
        for got in &batched[1..] {
            for (a, b) in alone[0].iter().zip(got) {
                assert!((a - b).abs() < 1e-5, "{:?} vs {:?}", alone[0], got);
            }
        }
        let long_alone = pooled(&model, &[long], &device);
        for (a, b) in long_alone[0].iter().zip(&batched[0]) {
            assert!((a - b).abs() < 1e-5);
        }
        let n: f32 = alone[0].iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-5, "not unit: {n}");
    }
}
