//! Explicit key/value cache for incremental decoding.

use burn::tensor::Tensor;

use crate::layers::RotaryTables;

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
    /// Rotary tables of positions `0..n` (absolute positions: valid whatever the cache holds),
    /// built on first use and rebuilt at twice the length when outgrown, so that a decode
    /// step slices them instead of recomputing its position's sines and cosines.
    rope: Option<RotaryTables>,
}

impl KvCache {
    /// An empty cache for a model with `n_layers` layers.
    pub fn new(n_layers: usize) -> Self {
        Self {
            layers: vec![None; n_layers],
            rope: None,
        }
    }

    /// The rotary tables of positions `start..start + len`, sliced from this cache's tables,
    /// which `build(0, n)` makes (the model's own `tables` function) when they are missing or
    /// shorter than `start + len`.
    pub fn rotary_tables(
        &mut self,
        start: usize,
        len: usize,
        build: impl FnOnce(usize, usize) -> RotaryTables,
    ) -> RotaryTables {
        let need = start + len;
        if self.rope.as_ref().is_none_or(|t| t.len() < need) {
            self.rope = Some(build(0, need.next_power_of_two().max(64)));
        }
        self.rope
            .as_ref()
            .expect("tables were just built")
            .positions(start, len)
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
        Self {
            layers,
            rope: self.rope.clone(),
        }
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
        Self {
            layers,
            rope: self.rope.clone(),
        }
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
        Self {
            layers,
            rope: self.rope.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::RotaryEmbedding;
    use burn::tensor::Device;

    fn host(t: Tensor<4>) -> Vec<f32> {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap()
    }

    #[test]
    fn cached_rotary_tables_equal_fresh_ones_bit_for_bit_and_grow() {
        let device = Device::default();
        let rope = RotaryEmbedding::new(8, 10_000.0);
        let mut cache = KvCache::new(1);
        let mut builds = 0;
        for (start, len) in [(0, 5), (5, 1), (6, 1), (7, 60), (67, 1), (68, 3)] {
            let got = cache.rotary_tables(start, len, |s, n| {
                builds += 1;
                rope.tables(s, n, &device)
            });
            let want = rope.tables(start, len, &device);
            assert_eq!(got.len(), len);
            assert_eq!(
                host(got.cos),
                host(want.cos),
                "cos at {start}..{}",
                start + len
            );
            assert_eq!(
                host(got.sin),
                host(want.sin),
                "sin at {start}..{}",
                start + len
            );
        }
        // 64 positions first, 128 once position 67 was needed: two builds for six passes.
        assert_eq!(builds, 2);
        // Truncated and cloned caches keep the (absolute-position) tables.
        assert_eq!(cache.truncate(0).rope.map(|t| t.len()), Some(128));
    }
}
