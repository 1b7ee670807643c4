//! Explicit key/value cache for incremental decoding.

use burn::tensor::Tensor;

/// Keys and values of one attention layer, `[batch, n_kv_heads, seq, head_dim]` each.
#[derive(Debug, Clone)]
pub struct LayerCache {
    /// Cached keys (after RoPE).
    pub keys: Tensor<4>,
    /// Cached values.
    pub values: Tensor<4>,
}

/// The KV cache of a whole model: one [`LayerCache`] per layer, all with the same length.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<LayerCache>>,
}

impl KvCache {
    /// An empty cache for a model with `n_layers` layers.
    pub fn new(n_layers: usize) -> Self {
        Self {
            layers: vec![None; n_layers],
        }
    }

    /// Number of cached positions (0 when empty).
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map(|l| l.keys.dims()[2])
            .unwrap_or(0)
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Batch size of the cached rows (None when empty).
    pub fn batch_size(&self) -> Option<usize> {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map(|l| l.keys.dims()[0])
    }

    /// Appends new keys/values for `layer` and returns the full keys and values.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        keys: Tensor<4>,
        values: Tensor<4>,
    ) -> (Tensor<4>, Tensor<4>) {
        let slot = &mut self.layers[layer];
        let (k, v) = match slot.take() {
            Some(prev) => (
                Tensor::cat(vec![prev.keys, keys], 2),
                Tensor::cat(vec![prev.values, values], 2),
            ),
            None => (keys, values),
        };
        *slot = Some(LayerCache {
            keys: k.clone(),
            values: v.clone(),
        });
        (k, v)
    }

    /// Repeats a batch-1 cache (e.g. a shared prompt prefix) to `batch` rows.
    ///
    /// # Panics
    /// If the cache holds more than one row.
    pub fn expand_batch(&self, batch: usize) -> Self {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                l.as_ref().map(|l| {
                    let [b, h, s, d] = l.keys.dims();
                    assert_eq!(b, 1, "expand_batch needs a batch-1 cache, got {b} rows");
                    LayerCache {
                        keys: l.keys.clone().expand([batch, h, s, d]),
                        values: l.values.clone().expand([batch, h, s, d]),
                    }
                })
            })
            .collect();
        Self { layers }
    }

    /// The first `len` positions of every layer (a shorter prefix of the cached sequence).
    ///
    /// # Panics
    /// If `len` exceeds the cached length.
    pub fn truncate(&self, len: usize) -> Self {
        assert!(
            len <= self.len(),
            "KvCache::truncate: {len} > {} cached positions",
            self.len()
        );
        let layers = self
            .layers
            .iter()
            .map(|l| {
                l.as_ref().map(|l| {
                    let [b, h, _, d] = l.keys.dims();
                    LayerCache {
                        keys: l.keys.clone().slice([0..b, 0..h, 0..len, 0..d]),
                        values: l.values.clone().slice([0..b, 0..h, 0..len, 0..d]),
                    }
                })
            })
            .collect();
        Self { layers }
    }

    /// Keeps only the rows in `rows` (e.g. the sequences that are still being decoded).
    pub fn select_rows(&self, rows: burn::tensor::Tensor<1, burn::tensor::Int>) -> Self {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                l.as_ref().map(|l| LayerCache {
                    keys: l.keys.clone().select(0, rows.clone()),
                    values: l.values.clone().select(0, rows.clone()),
                })
            })
            .collect();
        Self { layers }
    }
}
