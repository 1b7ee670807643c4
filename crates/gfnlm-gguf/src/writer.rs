//! Writing GGUF v3 files (for exporting weights and for building test models).

use std::io::Write;
use std::path::Path;

use crate::error::{GgufError, Result};
use crate::metadata::MetadataValue;
use crate::quant::quantize;
use crate::reader::{DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS, align_up};
use crate::types::GgmlType;

struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    data: Vec<u8>,
}

/// Builds a GGUF v3 file: metadata first, then tensors, then [`GgufWriter::write_file`].
#[derive(Default)]
pub struct GgufWriter {
    alignment: Option<u32>,
    metadata: Vec<(String, MetadataValue)>,
    tensors: Vec<PendingTensor>,
}

impl GgufWriter {
    /// An empty file with the default 32-byte alignment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `alignment` (a power of two) and records it as `general.alignment`.
    pub fn with_alignment(mut self, alignment: u32) -> Result<Self> {
        if !alignment.is_power_of_two() {
            return Err(GgufError::malformed(format!(
                "alignment {alignment} is not a power of two"
            )));
        }
        self.alignment = Some(alignment);
        Ok(self)
    }

    fn alignment(&self) -> u64 {
        self.alignment.map_or(DEFAULT_ALIGNMENT, u64::from)
    }

    /// Adds a metadata entry. Keys must be unique; `general.alignment` is set by
    /// [`GgufWriter::with_alignment`] instead.
    pub fn add_metadata(
        &mut self,
        key: &str,
        value: impl Into<MetadataValue>,
    ) -> Result<&mut Self> {
        if key == "general.alignment" {
            return Err(GgufError::malformed(
                "set general.alignment with GgufWriter::with_alignment",
            ));
        }
        if self.metadata.iter().any(|(k, _)| k == key) {
            return Err(GgufError::malformed(format!(
                "duplicate metadata key '{key}'"
            )));
        }
        self.metadata.push((key.to_owned(), value.into()));
        Ok(self)
    }

    /// Adds a tensor whose `data` is already encoded as `ty`. `shape` is row-major
    /// (outermost first, e.g. `[out, in]`); its last entry must be a whole number of blocks.
    pub fn add_tensor(
        &mut self,
        name: &str,
        shape: &[usize],
        ty: GgmlType,
        data: Vec<u8>,
    ) -> Result<&mut Self> {
        if shape.len() > MAX_DIMS {
            return Err(GgufError::malformed(format!(
                "tensor '{name}' has {} dimensions (at most {MAX_DIMS})",
                shape.len()
            )));
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(GgufError::malformed(format!(
                "duplicate tensor name '{name}'"
            )));
        }
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let row = dims.first().copied().unwrap_or(1);
        let n: u64 = dims.iter().product();
        let expected = ty
            .bytes_for(n)
            .filter(|_| row.is_multiple_of(ty.block_size() as u64));
        if expected != Some(data.len() as u64) {
            return Err(GgufError::size(format!(
                "tensor '{name}' {shape:?} as {ty} needs {} bytes (rows must be whole blocks of {}), got {}",
                expected.map_or("an impossible number of".to_owned(), |e| e.to_string()),
                ty.block_size(),
                data.len()
            )));
        }
        self.tensors.push(PendingTensor {
            name: name.to_owned(),
            dims,
            ty,
            data,
        });
        Ok(self)
    }

    /// Encodes f32 `values` (row-major `shape`) as `ty` with [`quantize`] and adds them.
    pub fn add_f32(
        &mut self,
        name: &str,
        shape: &[usize],
        values: &[f32],
        ty: GgmlType,
    ) -> Result<&mut Self> {
        if shape.iter().product::<usize>() != values.len() {
            return Err(GgufError::size(format!(
                "tensor '{name}': shape {shape:?} does not match {} values",
                values.len()
            )));
        }
        let data = quantize(ty, values)?;
        self.add_tensor(name, shape, ty, data)
    }

    /// Serialises the whole file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let align = self.alignment();
        let mut out = Vec::new();
        out.extend(GGUF_MAGIC);
        out.extend(3u32.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        let n_kv = self.metadata.len() + usize::from(self.alignment.is_some());
        out.extend((n_kv as u64).to_le_bytes());
        if let Some(a) = self.alignment {
            write_kv(&mut out, "general.alignment", &MetadataValue::U32(a));
        }
        for (k, v) in &self.metadata {
            write_kv(&mut out, k, v);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            write_str(&mut out, &t.name);
            out.extend((t.dims.len() as u32).to_le_bytes());
            t.dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
            out.extend(t.ty.id().to_le_bytes());
            out.extend(offset.to_le_bytes());
            offset = align_up(offset + t.data.len() as u64, align).expect("size fits u64");
        }
        pad_to(&mut out, align);
        for t in &self.tensors {
            out.extend(&t.data);
            pad_to(&mut out, align);
        }
        out
    }

    /// Writes the file to `path` atomically (a temporary file in the same folder, then rename).
    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let tmp = path.with_extension("gguf.tmp");
        let result = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&self.to_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        result.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            GgufError::from(e).with_path(Some(path))
        })
    }
}

fn pad_to(out: &mut Vec<u8>, align: u64) {
    let target = align_up(out.len() as u64, align).expect("size fits u64") as usize;
    out.resize(target, 0);
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn write_kv(out: &mut Vec<u8>, key: &str, v: &MetadataValue) {
    write_str(out, key);
    out.extend(v.type_id().to_le_bytes());
    write_value(out, v);
}

fn write_value(out: &mut Vec<u8>, v: &MetadataValue) {
    match v {
        MetadataValue::U8(x) => out.push(*x),
        MetadataValue::I8(x) => out.push(*x as u8),
        MetadataValue::U16(x) => out.extend(x.to_le_bytes()),
        MetadataValue::I16(x) => out.extend(x.to_le_bytes()),
        MetadataValue::U32(x) => out.extend(x.to_le_bytes()),
        MetadataValue::I32(x) => out.extend(x.to_le_bytes()),
        MetadataValue::F32(x) => out.extend(x.to_le_bytes()),
        MetadataValue::U64(x) => out.extend(x.to_le_bytes()),
        MetadataValue::I64(x) => out.extend(x.to_le_bytes()),
        MetadataValue::F64(x) => out.extend(x.to_le_bytes()),
        MetadataValue::Bool(x) => out.push(u8::from(*x)),
        MetadataValue::String(s) => write_str(out, s),
        MetadataValue::Array(a) => {
            out.extend(a.elem_type.to_le_bytes());
            out.extend((a.values.len() as u64).to_le_bytes());
            a.values.iter().for_each(|x| write_value(out, x));
        }
    }
}
