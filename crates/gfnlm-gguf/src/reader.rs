//! Parsing and validating a GGUF file, and access to its tensors.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::dequant::dequantize;
use crate::error::{GgufError, GgufErrorKind, Result};
use crate::metadata::{MetadataArray, MetadataValue, type_id, type_name};
use crate::types::GgmlType;

/// The four magic bytes every GGUF file starts with.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
/// Tensor data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Maximum number of tensor dimensions (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// Deepest nesting of metadata arrays accepted.
const MAX_ARRAY_DEPTH: usize = 4;

/// Where and how one tensor is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    name: String,
    /// ggml order: `dims[0]` is the fastest-varying (innermost) dimension.
    dims: Vec<u64>,
    ty: GgmlType,
    /// Offset relative to the start of the data section.
    offset: u64,
    n_elements: u64,
    n_bytes: u64,
}

impl TensorInfo {
    /// The tensor's name, e.g. `blk.0.attn_q.weight`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Dimensions in ggml order (innermost first), as stored in the file.
    pub fn ggml_dims(&self) -> &[u64] {
        &self.dims
    }

    /// Dimensions in row-major order (outermost first), e.g. `[out, in]` for a linear weight
    /// and `[vocab, hidden]` for `token_embd`, the same order as the HF/PyTorch tensor.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Storage type.
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// Byte offset relative to the start of the data section.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.n_elements
    }

    /// Number of stored bytes.
    pub fn n_bytes(&self) -> u64 {
        self.n_bytes
    }
}

/// A tensor converted to f32, in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct F32Tensor {
    /// Row-major shape (see [`TensorInfo::shape`]).
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values.
    pub data: Vec<f32>,
}

enum Storage {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// An opened, fully validated GGUF file.
///
/// Opening parses the header, metadata and tensor table, and checks that every tensor lies
/// inside the file before anything is allocated; tensor data stays in the memory map until
/// a tensor is asked for.
pub struct GgufFile {
    path: Option<PathBuf>,
    storage: Storage,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, MetadataValue)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and validates the GGUF file at `path`.
    ///
    /// The file must not be modified while the returned value is alive (memory-map rule).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let map = || -> Result<Mmap> {
            let file = File::open(path)?;
            // SAFETY: the map is read-only; callers are told not to modify the file while open.
            Ok(unsafe { Mmap::map(&file)? })
        };
        let storage = map().map_err(|e| e.with_path(Some(path)))?;
        Self::parse(Storage::Mapped(storage), Some(path.to_path_buf()))
    }

    /// Parses a GGUF image held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::parse(Storage::Owned(bytes), None)
    }

    fn parse(storage: Storage, path: Option<PathBuf>) -> Result<Self> {
        let parsed = Header::parse(storage.bytes());
        let header = parsed.map_err(|e| e.with_path(path.as_deref()))?;
        Ok(Self {
            path,
            storage,
            version: header.version,
            alignment: header.alignment,
            data_offset: header.data_offset,
            metadata_index: index(&header.metadata, |(k, _)| k),
            metadata: header.metadata,
            tensor_index: index(&header.tensors, |t| &t.name),
            tensors: header.tensors,
        })
    }

    /// The path this file was opened from (`None` for [`GgufFile::from_bytes`]).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of tensor data in bytes.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute byte offset of the tensor data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// All metadata entries in file order.
    pub fn metadata(&self) -> &[(String, MetadataValue)] {
        &self.metadata
    }

    /// The value for `key`, if present.
    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn err(&self, kind: GgufErrorKind) -> GgufError {
        GgufError::new(kind).with_path(self.path())
    }

    fn require(&self, key: &str) -> Result<&MetadataValue> {
        self.get(key)
            .ok_or_else(|| self.err(GgufErrorKind::MissingKey(key.to_owned())))
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &'static str,
        f: impl FnOnce(&'a MetadataValue) -> Option<T>,
    ) -> Result<T> {
        let v = self.require(key)?;
        f(v).ok_or_else(|| {
            self.err(GgufErrorKind::WrongType {
                key: key.to_owned(),
                expected,
                found: v.type_name(),
            })
        })
    }

    /// A non-negative integer value of any integer type.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.typed(key, "non-negative integer", MetadataValue::as_u64)
    }

    /// Like [`GgufFile::get_u64`], as `usize`.
    pub fn get_usize(&self, key: &str) -> Result<usize> {
        self.typed(key, "integer fitting usize", |v| {
            v.as_u64().and_then(|x| usize::try_from(x).ok())
        })
    }

    /// An integer value of any integer type.
    pub fn get_i64(&self, key: &str) -> Result<i64> {
        self.typed(key, "integer", MetadataValue::as_i64)
    }

    /// A float value (f32 or f64), as f64.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        self.typed(key, "float", MetadataValue::as_f64)
    }

    /// A float value (f32 or f64), as f32.
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        self.get_f64(key).map(|x| x as f32)
    }

    /// A boolean value.
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        self.typed(key, "bool", MetadataValue::as_bool)
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.typed(key, "string", MetadataValue::as_str)
    }

    /// An array value.
    pub fn get_array(&self, key: &str) -> Result<&MetadataArray> {
        self.typed(key, "array", MetadataValue::as_array)
    }

    /// An array of strings (e.g. `tokenizer.ggml.tokens`).
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        self.typed(key, "array of string", |v| {
            v.as_array()?
                .values()
                .iter()
                .map(MetadataValue::as_str)
                .collect()
        })
    }

    /// An array of floats (e.g. `tokenizer.ggml.scores`).
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>> {
        self.typed(key, "array of float", |v| {
            v.as_array()?
                .values()
                .iter()
                .map(|x| x.as_f64().map(|f| f as f32))
                .collect()
        })
    }

    /// An array of integers (e.g. `tokenizer.ggml.token_type`).
    pub fn get_i64_array(&self, key: &str) -> Result<Vec<i64>> {
        self.typed(key, "array of integer", |v| {
            v.as_array()?
                .values()
                .iter()
                .map(MetadataValue::as_i64)
                .collect()
        })
    }

    /// `general.architecture`, e.g. `"llama"` or `"gpt2"`.
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    /// All tensor records in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The record for `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The record for `name`, or an error that lists similarly named tensors.
    pub fn tensor_info(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor(name).ok_or_else(|| {
            let prefix = name.rsplit_once('.').map_or(name, |(p, _)| p);
            let similar = self
                .tensors
                .iter()
                .filter(|t| t.name.starts_with(prefix))
                .take(4)
                .map(|t| t.name.clone())
                .collect();
            self.err(GgufErrorKind::MissingTensor {
                name: name.to_owned(),
                count: self.tensors.len(),
                similar,
            })
        })
    }

    /// The stored bytes of a tensor (validated to lie inside the file at open time).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        let start = (self.data_offset + info.offset) as usize;
        &self.storage.bytes()[start..start + info.n_bytes as usize]
    }

    /// Dequantises the tensor `name` to f32 into `dst` (length = its element count).
    pub fn dequantize_into(&self, name: &str, dst: &mut [f32]) -> Result<()> {
        let info = self.tensor_info(name)?;
        if !info.ty.can_dequantize() {
            return Err(self.err(GgufErrorKind::UnsupportedType {
                name: name.to_owned(),
                ty: info.ty,
            }));
        }
        if dst.len() as u64 != info.n_elements {
            return Err(self.err(GgufErrorKind::SizeMismatch(format!(
                "tensor '{name}' has {} elements, destination has {}",
                info.n_elements,
                dst.len()
            ))));
        }
        dequantize(info.ty, self.tensor_bytes(info), dst).map_err(|e| e.with_path(self.path()))
    }

    /// Dequantises the tensor `name` to a new f32 tensor in row-major order.
    pub fn dequantize(&self, name: &str) -> Result<F32Tensor> {
        let info = self.tensor_info(name)?;
        let n = usize::try_from(info.n_elements).map_err(|_| {
            self.err(GgufErrorKind::SizeMismatch(format!(
                "tensor '{name}' is too large for this platform"
            )))
        })?;
        let mut data = vec![0.0f32; n];
        self.dequantize_into(name, &mut data)?;
        Ok(F32Tensor {
            shape: info.shape(),
            data,
        })
    }
}

fn index<T>(items: &[T], key: impl Fn(&T) -> &String) -> HashMap<String, usize> {
    items
        .iter()
        .enumerate()
        .map(|(i, t)| (key(t).clone(), i))
        .collect()
}

/// Rounds `x` up to a multiple of `align` (a power of two).
pub(crate) fn align_up(x: u64, align: u64) -> Option<u64> {
    Some(x.checked_add(align - 1)? & !(align - 1))
}

struct Header {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, MetadataValue)>,
    tensors: Vec<TensorInfo>,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(GgufErrorKind::Truncated {
                what: what(),
                offset: self.pos as u64,
                needed: n,
                len: self.buf.len() as u64,
            }
            .into());
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        Ok(self
            .take(N as u64, what)?
            .try_into()
            .expect("length checked"))
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.u64(&|| format!("length of {}", what()))?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| GgufError::malformed(format!("{} is not valid UTF-8: {e}", what())))
    }

    /// Smallest encoded size of one value of type `ty` (for bounding counts before allocating).
    fn min_size(ty: u32) -> u64 {
        match ty {
            type_id::U8 | type_id::I8 | type_id::BOOL => 1,
            type_id::U16 | type_id::I16 => 2,
            type_id::U32 | type_id::I32 | type_id::F32 => 4,
            type_id::U64 | type_id::I64 | type_id::F64 | type_id::STRING => 8,
            _ => 12, // array: element type + length
        }
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<MetadataValue> {
        let what = || format!("value of metadata key '{key}'");
        let what = &what;
        Ok(match ty {
            type_id::U8 => MetadataValue::U8(self.array::<1>(what)?[0]),
            type_id::I8 => MetadataValue::I8(self.array::<1>(what)?[0] as i8),
            type_id::U16 => MetadataValue::U16(u16::from_le_bytes(self.array(what)?)),
            type_id::I16 => MetadataValue::I16(i16::from_le_bytes(self.array(what)?)),
            type_id::U32 => MetadataValue::U32(self.u32(what)?),
            type_id::I32 => MetadataValue::I32(i32::from_le_bytes(self.array(what)?)),
            type_id::F32 => MetadataValue::F32(f32::from_le_bytes(self.array(what)?)),
            type_id::U64 => MetadataValue::U64(self.u64(what)?),
            type_id::I64 => MetadataValue::I64(i64::from_le_bytes(self.array(what)?)),
            type_id::F64 => MetadataValue::F64(f64::from_le_bytes(self.array(what)?)),
            type_id::BOOL => match self.array::<1>(what)?[0] {
                0 => MetadataValue::Bool(false),
                1 => MetadataValue::Bool(true),
                b => {
                    return Err(GgufError::malformed(format!(
                        "metadata key '{key}': bool byte {b} is neither 0 nor 1"
                    )));
                }
            },
            type_id::STRING => MetadataValue::String(self.string(what)?),
            type_id::ARRAY => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::malformed(format!(
                        "metadata key '{key}': arrays nested deeper than {MAX_ARRAY_DEPTH}"
                    )));
                }
                let elem_type = self.u32(what)?;
                if type_name(elem_type) == "unknown" {
                    return Err(GgufError::malformed(format!(
                        "metadata key '{key}': unknown array element type {elem_type}"
                    )));
                }
                let len = self.u64(what)?;
                let fits = len
                    .checked_mul(Self::min_size(elem_type))
                    .is_some_and(|n| n <= self.remaining());
                if !fits {
                    return Err(GgufError::malformed(format!(
                        "metadata key '{key}': array of {len} {} elements cannot fit in the {} bytes left",
                        type_name(elem_type),
                        self.remaining()
                    )));
                }
                let mut values = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    values.push(self.value(elem_type, key, depth + 1)?);
                }
                MetadataValue::Array(MetadataArray { elem_type, values })
            }
            other => {
                return Err(GgufError::malformed(format!(
                    "metadata key '{key}' has unknown value type {other}"
                )));
            }
        })
    }
}

impl Header {
    fn parse(buf: &[u8]) -> Result<Self> {
        if buf.len() < 4 || &buf[..4] != GGUF_MAGIC {
            return Err(GgufErrorKind::BadMagic {
                found: buf[..buf.len().min(4)].to_vec(),
            }
            .into());
        }
        let mut c = Cursor { buf, pos: 4 };
        let version = c.u32(&|| "version".into())?;
        if !(2..=3).contains(&version) {
            return Err(GgufErrorKind::UnsupportedVersion(version).into());
        }
        let n_tensors = c.u64(&|| "tensor count".into())?;
        let n_kv = c.u64(&|| "metadata count".into())?;
        // each key-value needs at least 8 (key length) + 4 (type) + 1 bytes; each tensor 8 + 4 + 4 + 8
        let kv_fit = n_kv.checked_mul(13).is_some_and(|n| n <= c.remaining());
        let t_fit = n_tensors
            .checked_mul(24)
            .is_some_and(|n| n <= c.remaining());
        if !kv_fit || !t_fit {
            return Err(GgufError::malformed(format!(
                "header claims {n_kv} metadata entries and {n_tensors} tensors, which cannot fit in a {}-byte file",
                buf.len()
            )));
        }

        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut seen = HashSet::with_capacity(n_kv as usize);
        for i in 0..n_kv {
            let key = c.string(&|| format!("key of metadata entry {i}"))?;
            let ty = c.u32(&|| format!("type of metadata key '{key}'"))?;
            let value = c.value(ty, &key, 0)?;
            if !seen.insert(key.clone()) {
                return Err(GgufError::malformed(format!(
                    "duplicate metadata key '{key}'"
                )));
            }
            metadata.push((key, value));
        }

        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, MetadataValue::U32(a))) if a.is_power_of_two() => u64::from(*a),
            Some((_, v)) => {
                return Err(GgufError::malformed(format!(
                    "general.alignment must be a power-of-two u32, found {v:?}"
                )));
            }
        };

        let mut tensors = Vec::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let name = c.string(&|| format!("name of tensor {i}"))?;
            tensors.push(Self::tensor_info(&mut c, name, alignment)?);
        }
        let data_offset = align_up(c.pos as u64, alignment)
            .ok_or_else(|| GgufError::malformed("data offset overflows"))?;
        Self::check_layout(&tensors, data_offset, buf.len() as u64)?;
        Ok(Self {
            version,
            alignment,
            data_offset,
            metadata,
            tensors,
        })
    }

    fn tensor_info(c: &mut Cursor<'_>, name: String, alignment: u64) -> Result<TensorInfo> {
        let what = || format!("record of tensor '{name}'");
        let n_dims = c.u32(&what)? as usize;
        if n_dims > MAX_DIMS {
            return Err(GgufError::malformed(format!(
                "tensor '{name}' has {n_dims} dimensions (at most {MAX_DIMS})"
            )));
        }
        let dims = (0..n_dims)
            .map(|_| c.u64(&what))
            .collect::<Result<Vec<_>>>()?;
        let n_elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| {
                acc.checked_mul(d).filter(|&n| n <= i64::MAX as u64)
            })
            .ok_or_else(|| {
                GgufError::malformed(format!("tensor '{name}' dimensions {dims:?} overflow"))
            })?;
        let ty_id = c.u32(&what)?;
        let ty = GgmlType::from_id(ty_id).ok_or_else(|| {
            GgufError::malformed(format!(
                "tensor '{name}' has unknown ggml type id {ty_id} (file from a newer llama.cpp?)"
            ))
        })?;
        let row = dims.first().copied().unwrap_or(1);
        let n_bytes = ty
            .bytes_for(n_elements)
            .filter(|_| row.is_multiple_of(ty.block_size() as u64))
            .ok_or_else(|| {
                GgufError::malformed(format!(
                    "tensor '{name}': row length {row} is not a multiple of the {ty} block size {}",
                    ty.block_size()
                ))
            })?;
        let offset = c.u64(&what)?;
        if !offset.is_multiple_of(alignment) {
            return Err(GgufError::malformed(format!(
                "tensor '{name}' offset {offset} is not aligned to {alignment}"
            )));
        }
        Ok(TensorInfo {
            name,
            dims,
            ty,
            offset,
            n_elements,
            n_bytes,
        })
    }

    /// Every tensor must lie inside the file, and no two may overlap or share a name.
    fn check_layout(tensors: &[TensorInfo], data_offset: u64, file_len: u64) -> Result<()> {
        let mut names = HashSet::with_capacity(tensors.len());
        for t in tensors {
            if !names.insert(t.name.as_str()) {
                return Err(GgufError::malformed(format!(
                    "duplicate tensor name '{}'",
                    t.name
                )));
            }
            let end = data_offset
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(t.n_bytes));
            if end.is_none_or(|e| e > file_len) {
                return Err(GgufErrorKind::Truncated {
                    what: format!("data of tensor '{}' ({} {} bytes)", t.name, t.ty, t.n_bytes),
                    offset: data_offset.saturating_add(t.offset),
                    needed: t.n_bytes,
                    len: file_len,
                }
                .into());
            }
        }
        let mut spans: Vec<_> = tensors.iter().filter(|t| t.n_bytes > 0).collect();
        spans.sort_by_key(|t| t.offset);
        for w in spans.windows(2) {
            if w[0].offset + w[0].n_bytes > w[1].offset {
                return Err(GgufError::malformed(format!(
                    "tensors '{}' and '{}' overlap",
                    w[0].name, w[1].name
                )));
            }
        }
        Ok(())
    }
}
