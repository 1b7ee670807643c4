//! ggml tensor storage types: ids, block sizes and byte sizes.

use std::fmt;

/// Number of elements in a K-quant super-block.
pub const QK_K: usize = 256;

macro_rules! ggml_types {
    ($( $(#[$doc:meta])* $name:ident = $id:literal, $block:expr, $bytes:expr, $deq:literal; )*) => {
        /// A ggml tensor storage type, as stored in a GGUF tensor-info record.
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum GgmlType {
            $( $(#[$doc])* $name = $id, )*
        }

        impl GgmlType {
            /// Every type this crate knows the layout of.
            pub const ALL: &'static [GgmlType] = &[$(GgmlType::$name),*];

            /// The type for a numeric id, or `None` for ids this crate does not know.
            pub fn from_id(id: u32) -> Option<Self> {
                match id {
                    $( $id => Some(GgmlType::$name), )*
                    _ => None,
                }
            }

            /// The upstream name, e.g. `"Q4_K"`.
            pub fn name(self) -> &'static str {
                match self { $( GgmlType::$name => stringify!($name), )* }
            }

            /// Elements per block (1 for plain scalar types).
            pub fn block_size(self) -> usize {
                match self { $( GgmlType::$name => $block, )* }
            }

            /// Bytes per block.
            pub fn type_size(self) -> usize {
                match self { $( GgmlType::$name => $bytes, )* }
            }

            /// Whether [`crate::dequantize`] can convert this type to f32.
            pub fn can_dequantize(self) -> bool {
                match self { $( GgmlType::$name => $deq, )* }
            }
        }
    };
}

ggml_types! {
    /// 32-bit float.
    F32 = 0, 1, 4, true;
    /// IEEE half float.
    F16 = 1, 1, 2, true;
    /// 4-bit, 32 per block, scale only.
    Q4_0 = 2, 32, 18, true;
    /// 4-bit, 32 per block, scale and minimum.
    Q4_1 = 3, 32, 20, true;
    /// 5-bit, 32 per block, scale only.
    Q5_0 = 6, 32, 22, true;
    /// 5-bit, 32 per block, scale and minimum.
    Q5_1 = 7, 32, 24, true;
    /// 8-bit, 32 per block, scale only.
    Q8_0 = 8, 32, 34, true;
    /// 8-bit with block sum (activations only; never stored in model files).
    Q8_1 = 9, 32, 36, false;
    /// 2-bit K-quant.
    Q2_K = 10, QK_K, 84, true;
    /// 3-bit K-quant.
    Q3_K = 11, QK_K, 110, true;
    /// 4-bit K-quant.
    Q4_K = 12, QK_K, 144, true;
    /// 5-bit K-quant.
    Q5_K = 13, QK_K, 176, true;
    /// 6-bit K-quant.
    Q6_K = 14, QK_K, 210, true;
    /// 8-bit K-quant (f32 scale).
    Q8_K = 15, QK_K, 292, true;
    /// i-quant, 2.06 bpw.
    IQ2_XXS = 16, QK_K, 66, false;
    /// i-quant, 2.31 bpw.
    IQ2_XS = 17, QK_K, 74, false;
    /// i-quant, 3.06 bpw.
    IQ3_XXS = 18, QK_K, 98, false;
    /// i-quant, 1.56 bpw.
    IQ1_S = 19, QK_K, 50, false;
    /// i-quant, 4.5 bpw non-linear.
    IQ4_NL = 20, 32, 18, false;
    /// i-quant, 3.44 bpw.
    IQ3_S = 21, QK_K, 110, false;
    /// i-quant, 2.5 bpw.
    IQ2_S = 22, QK_K, 82, false;
    /// i-quant, 4.25 bpw.
    IQ4_XS = 23, QK_K, 136, false;
    /// 8-bit integer.
    I8 = 24, 1, 1, false;
    /// 16-bit integer.
    I16 = 25, 1, 2, false;
    /// 32-bit integer.
    I32 = 26, 1, 4, false;
    /// 64-bit integer.
    I64 = 27, 1, 8, false;
    /// 64-bit float.
    F64 = 28, 1, 8, true;
    /// i-quant, 1.75 bpw.
    IQ1_M = 29, QK_K, 56, false;
    /// bfloat16.
    BF16 = 30, 1, 2, true;
    /// ternary, 1.69 bpw.
    TQ1_0 = 34, QK_K, 54, false;
    /// ternary, 2.06 bpw.
    TQ2_0 = 35, QK_K, 66, false;
    /// microscaling FP4.
    MXFP4 = 39, 32, 17, false;
}

impl GgmlType {
    /// The numeric id stored in GGUF.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// Bytes needed for `n_elements` values, or `None` if `n_elements` is not a whole
    /// number of blocks (or the size overflows).
    pub fn bytes_for(self, n_elements: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if !n_elements.is_multiple_of(bs) {
            return None;
        }
        (n_elements / bs).checked_mul(self.type_size() as u64)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sizes_match_upstream_structs() {
        for &t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
        }
        assert_eq!(GgmlType::from_id(4), None); // removed Q4_2
        // sizeof(block_q*) in ggml-common.h
        assert_eq!(GgmlType::Q4_K.type_size(), 2 + 2 + 12 + QK_K / 2);
        assert_eq!(
            GgmlType::Q6_K.type_size(),
            QK_K / 2 + QK_K / 4 + QK_K / 16 + 2
        );
        assert_eq!(GgmlType::Q3_K.type_size(), QK_K / 8 + QK_K / 4 + 12 + 2);
        assert_eq!(GgmlType::Q2_K.type_size(), QK_K / 16 + QK_K / 4 + 2 + 2);
        assert_eq!(GgmlType::Q5_K.type_size(), 2 + 2 + 12 + QK_K / 8 + QK_K / 2);
        assert_eq!(GgmlType::Q8_K.type_size(), 4 + QK_K + QK_K / 8);
    }

    #[test]
    fn bytes_for_requires_whole_blocks() {
        assert_eq!(GgmlType::Q4_1.bytes_for(64), Some(40));
        assert_eq!(GgmlType::Q4_1.bytes_for(48), None);
        assert_eq!(GgmlType::F16.bytes_for(3), Some(6));
        assert_eq!(GgmlType::F32.bytes_for(u64::MAX), None);
    }
}
