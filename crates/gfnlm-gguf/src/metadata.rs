//! GGUF metadata values.

/// Type ids of GGUF metadata values (`gguf_type` upstream).
pub(crate) mod type_id {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// One metadata value. Arrays hold values of a single element type.
#[derive(Clone, Debug, PartialEq)]
pub enum MetadataValue {
    /// `uint8`
    U8(u8),
    /// `int8`
    I8(i8),
    /// `uint16`
    U16(u16),
    /// `int16`
    I16(i16),
    /// `uint32`
    U32(u32),
    /// `int32`
    I32(i32),
    /// `float32`
    F32(f32),
    /// `bool`
    Bool(bool),
    /// UTF-8 string.
    String(String),
    /// Homogeneous array (element type in `elem_type`, one of the type ids).
    Array(MetadataArray),
    /// `uint64`
    U64(u64),
    /// `int64`
    I64(i64),
    /// `float64`
    F64(f64),
}

/// A homogeneous metadata array.
#[derive(Clone, Debug, PartialEq)]
pub struct MetadataArray {
    /// GGUF type id of every element (kept so empty arrays round-trip).
    pub(crate) elem_type: u32,
    pub(crate) values: Vec<MetadataValue>,
}

impl MetadataArray {
    /// An array of elements whose type is taken from the first element.
    /// Returns `None` when `values` is empty or mixes types.
    pub fn new(values: Vec<MetadataValue>) -> Option<Self> {
        let elem_type = values.first()?.type_id();
        values
            .iter()
            .all(|v| v.type_id() == elem_type)
            .then_some(Self { elem_type, values })
    }

    /// An empty array of strings (the common case for empty lists).
    pub fn empty_strings() -> Self {
        Self {
            elem_type: type_id::STRING,
            values: Vec::new(),
        }
    }

    /// The elements.
    pub fn values(&self) -> &[MetadataValue] {
        &self.values
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Name of the element type, e.g. `"string"`.
    pub fn elem_type_name(&self) -> &'static str {
        type_name(self.elem_type)
    }
}

pub(crate) fn type_name(id: u32) -> &'static str {
    match id {
        type_id::U8 => "u8",
        type_id::I8 => "i8",
        type_id::U16 => "u16",
        type_id::I16 => "i16",
        type_id::U32 => "u32",
        type_id::I32 => "i32",
        type_id::F32 => "f32",
        type_id::BOOL => "bool",
        type_id::STRING => "string",
        type_id::ARRAY => "array",
        type_id::U64 => "u64",
        type_id::I64 => "i64",
        type_id::F64 => "f64",
        _ => "unknown",
    }
}

impl MetadataValue {
    /// GGUF type id of this value.
    pub(crate) fn type_id(&self) -> u32 {
        match self {
            Self::U8(_) => type_id::U8,
            Self::I8(_) => type_id::I8,
            Self::U16(_) => type_id::U16,
            Self::I16(_) => type_id::I16,
            Self::U32(_) => type_id::U32,
            Self::I32(_) => type_id::I32,
            Self::F32(_) => type_id::F32,
            Self::Bool(_) => type_id::BOOL,
            Self::String(_) => type_id::STRING,
            Self::Array(_) => type_id::ARRAY,
            Self::U64(_) => type_id::U64,
            Self::I64(_) => type_id::I64,
            Self::F64(_) => type_id::F64,
        }
    }

    /// Name of the value's type, e.g. `"u32"` or `"array"`.
    pub fn type_name(&self) -> &'static str {
        type_name(self.type_id())
    }

    /// Any integer that is non-negative, widened to u64 (GGUF writers differ on u32 vs i32 vs u64).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer, widened to i64 (`None` for u64 values above `i64::MAX`).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Self::I8(v) => Some(v.into()),
            Self::I16(v) => Some(v.into()),
            Self::I32(v) => Some(v.into()),
            Self::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// A float (f32 or f64) widened to f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            _ => None,
        }
    }

    /// The boolean, if this is a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The string, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The array, if this is an array.
    pub fn as_array(&self) -> Option<&MetadataArray> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
}

impl From<&str> for MetadataValue {
    fn from(s: &str) -> Self {
        Self::String(s.to_owned())
    }
}

impl From<String> for MetadataValue {
    fn from(s: String) -> Self {
        Self::String(s)
    }
}

macro_rules! from_scalar {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for MetadataValue {
            fn from(x: $t) -> Self { Self::$v(x) }
        }
    )*};
}
from_scalar!(u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, f32 => F32,
    bool => Bool, u64 => U64, i64 => I64, f64 => F64, MetadataArray => Array);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_widening_rejects_negative_and_overflow() {
        assert_eq!(MetadataValue::I32(-1).as_u64(), None);
        assert_eq!(MetadataValue::I32(7).as_u64(), Some(7));
        assert_eq!(MetadataValue::U64(u64::MAX).as_i64(), None);
        assert_eq!(MetadataValue::U8(3).as_i64(), Some(3));
        assert_eq!(MetadataValue::F32(1.5).as_u64(), None);
        assert_eq!(MetadataValue::F32(1.5).as_f64(), Some(1.5));
    }

    #[test]
    fn arrays_must_be_homogeneous() {
        assert!(MetadataArray::new(vec![1u32.into(), 2u32.into()]).is_some());
        assert!(MetadataArray::new(vec![1u32.into(), 2i32.into()]).is_none());
        assert!(MetadataArray::new(vec![]).is_none());
        assert_eq!(MetadataArray::empty_strings().elem_type_name(), "string");
    }
}
