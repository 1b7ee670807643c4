//! Memory-mapped safetensors checkpoints, single-file or sharded.
//!
//! Each file is memory-mapped and only its header is parsed up front. A tensor is decoded to
//! f32 when asked for, and the pages it occupied are then released (`madvise(DONTNEED)` on
//! Unix), so loading holds at most the finished model plus one tensor's decoded copy, never
//! two copies of the whole checkpoint.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use super::error::HfError;

/// File name of a single-file checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// File name of the shard index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

struct Shard {
    path: PathBuf,
    mmap: Mmap,
    /// Byte offset of the data section (after the 8-byte length and the JSON header).
    data_start: usize,
}

/// Where one tensor lives.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    /// Index of the shard holding it.
    shard: usize,
    /// Stored element type.
    pub dtype: Dtype,
    /// Stored shape.
    pub shape: Vec<usize>,
    /// Byte range within the shard's data section.
    offsets: (usize, usize),
}

/// The tensors of a Hugging Face checkpoint folder, by name.
pub struct SafetensorsWeights {
    dir: PathBuf,
    shards: Vec<Shard>,
    tensors: BTreeMap<String, TensorEntry>,
}

#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

impl SafetensorsWeights {
    /// Opens `dir/model.safetensors`, or else the shards listed in
    /// `dir/model.safetensors.index.json`, checking that every shard holds exactly the tensors
    /// the index assigns to it.
    pub fn open(dir: &Path) -> Result<Self, HfError> {
        let single = dir.join(SINGLE_FILE);
        let index_path = dir.join(INDEX_FILE);
        let mut weights = Self {
            dir: dir.to_path_buf(),
            shards: Vec::new(),
            tensors: BTreeMap::new(),
        };
        if single.is_file() {
            weights.add_shard(&single, None)?;
            return Ok(weights);
        }
        if !index_path.is_file() {
            return Err(HfError::NoWeights {
                dir: dir.to_path_buf(),
            });
        }
        let text = std::fs::read_to_string(&index_path).map_err(|source| HfError::Io {
            path: index_path.clone(),
            source,
        })?;
        let index: ShardIndex = serde_json::from_str(&text).map_err(|source| HfError::Json {
            path: index_path.clone(),
            source,
        })?;
        let mut by_shard: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (tensor, shard) in &index.weight_map {
            by_shard.entry(shard).or_default().insert(tensor);
        }
        for (shard, listed) in &by_shard {
            if !dir.join(shard).is_file() {
                return Err(HfError::ShardIndex {
                    path: index_path,
                    message: format!(
                        "shard '{shard}' (holding e.g. '{}') is not in {}",
                        listed.first().copied().unwrap_or_default(),
                        dir.display()
                    ),
                });
            }
        }
        for (shard, listed) in &by_shard {
            weights.add_shard(&dir.join(shard), Some((&index_path, listed)))?;
        }
        Ok(weights)
    }

    /// Opens one safetensors file on its own (e.g. a PEFT `adapter_model.safetensors`).
    pub fn open_file(path: &Path) -> Result<Self, HfError> {
        let mut weights = Self {
            dir: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            shards: Vec::new(),
            tensors: BTreeMap::new(),
        };
        weights.add_shard(path, None)?;
        Ok(weights)
    }

    /// Maps one file and records its tensors. With an index, the file must hold exactly the
    /// tensors `listed` for it.
    fn add_shard(
        &mut self,
        path: &Path,
        index: Option<(&Path, &BTreeSet<&str>)>,
    ) -> Result<(), HfError> {
        let file = File::open(path).map_err(|source| HfError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: the map is read-only; like every safetensors reader we assume the file is
        // not truncated or rewritten while the model loads.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|source| HfError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let (header_len, metadata) =
            SafeTensors::read_metadata(&mmap).map_err(|e| HfError::Safetensors {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let shard = self.shards.len();
        let found: BTreeMap<String, &safetensors::tensor::TensorInfo> =
            metadata.tensors().into_iter().collect();
        if let Some((index_path, listed)) = index {
            let absent: Vec<&str> = listed
                .iter()
                .copied()
                .filter(|n| !found.contains_key(*n))
                .collect();
            let extra: Vec<&str> = found
                .keys()
                .map(String::as_str)
                .filter(|n| !listed.contains(n))
                .collect();
            if !absent.is_empty() || !extra.is_empty() {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                let mut message = String::new();
                if !absent.is_empty() {
                    message += &format!(
                        "index puts {} in {name}, which lacks them",
                        absent.join(", ")
                    );
                }
                if !extra.is_empty() {
                    if !message.is_empty() {
                        message += "; ";
                    }
                    message += &format!(
                        "{name} holds {} that the index does not assign to it",
                        extra.join(", ")
                    );
                }
                return Err(HfError::ShardIndex {
                    path: index_path.to_path_buf(),
                    message,
                });
            }
        }
        for (name, info) in found {
            if let Some(prev) = self.tensors.get(&name) {
                return Err(HfError::ShardIndex {
                    path: path.to_path_buf(),
                    message: format!(
                        "tensor '{name}' is stored twice (also in {})",
                        self.shards[prev.shard].path.display()
                    ),
                });
            }
            self.tensors.insert(
                name,
                TensorEntry {
                    shard,
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    offsets: info.data_offsets,
                },
            );
        }
        self.shards.push(Shard {
            path: path.to_path_buf(),
            mmap,
            data_start: 8 + header_len,
        });
        Ok(())
    }

    /// The model folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The files opened (one, or every shard).
    pub fn files(&self) -> Vec<&Path> {
        self.shards.iter().map(|s| s.path.as_path()).collect()
    }

    /// Every tensor name with its dtype and shape.
    pub fn tensors(&self) -> impl Iterator<Item = (&str, &TensorEntry)> {
        self.tensors.iter().map(|(n, e)| (n.as_str(), e))
    }

    /// Dtype and shape of `name`, if stored.
    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.get(name)
    }

    /// True when the checkpoint stores `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Checks the stored tensors against the `(name, shape)` list a config implies.
    ///
    /// Every problem is reported at once: missing names, wrong shapes, unsupported dtypes, and
    /// stored tensors that are neither expected nor accepted by `ignore` (buffers such as
    /// GPT-2's `attn.bias` causal mask, or a tied `lm_head.weight`).
    pub fn check(
        &self,
        expected: &[(String, Vec<usize>)],
        ignore: impl Fn(&str) -> bool,
    ) -> Result<(), HfError> {
        let mut missing = Vec::new();
        let mut mismatched = Vec::new();
        let mut unsupported_dtype = Vec::new();
        let wanted: BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
        for (name, shape) in expected {
            match self.tensors.get(name) {
                None => missing.push(name.clone()),
                Some(e) => {
                    if &e.shape != shape {
                        mismatched.push((name.clone(), shape.clone(), e.shape.clone()));
                    }
                    if !matches!(e.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
                        unsupported_dtype.push((name.clone(), format!("{:?}", e.dtype)));
                    }
                }
            }
        }
        let unexpected: Vec<String> = self
            .tensors
            .keys()
            .filter(|n| !wanted.contains(n.as_str()) && !ignore(n))
            .cloned()
            .collect();
        if missing.is_empty()
            && mismatched.is_empty()
            && unexpected.is_empty()
            && unsupported_dtype.is_empty()
        {
            return Ok(());
        }
        Err(HfError::Tensors {
            dir: self.dir.clone(),
            missing,
            mismatched,
            unexpected,
            unsupported_dtype,
        })
    }

    /// The entry of `name` and its bytes in the mapping (offset into the shard, bytes).
    fn locate(&self, name: &str) -> Result<(&TensorEntry, &Shard, usize, usize), HfError> {
        let entry = self.tensors.get(name).ok_or_else(|| HfError::Tensors {
            dir: self.dir.clone(),
            missing: vec![name.to_string()],
            mismatched: Vec::new(),
            unexpected: Vec::new(),
            unsupported_dtype: Vec::new(),
        })?;
        let width = match entry.dtype {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            other => {
                return Err(HfError::Tensors {
                    dir: self.dir.clone(),
                    missing: Vec::new(),
                    mismatched: Vec::new(),
                    unexpected: Vec::new(),
                    unsupported_dtype: vec![(name.to_string(), format!("{other:?}"))],
                });
            }
        };
        let shard = &self.shards[entry.shard];
        Ok((entry, shard, shard.data_start + entry.offsets.0, width))
    }

    /// Refuses NaN/Inf in a decoded chunk that starts at flat index `offset` of `name`.
    fn check_finite(
        &self,
        name: &str,
        shard: &Shard,
        chunk: &[f32],
        offset: usize,
    ) -> Result<(), HfError> {
        match crate::limits::first_non_finite(chunk) {
            None => Ok(()),
            Some((i, value)) => Err(HfError::NonFinite {
                path: shard.path.clone(),
                tensor: name.to_string(),
                index: offset + i,
                value,
            }),
        }
    }

    /// Decodes `name` to f32 (row-major, stored shape), releasing its mapped pages as it goes;
    /// a NaN or infinite value is an error naming the tensor.
    pub fn read_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>), HfError> {
        let (entry, shard, begin, width) = self.locate(name)?;
        let n: usize = entry.shape.iter().product();
        let mut out = vec![0.0f32; n];
        for (i, chunk) in out.chunks_mut(CHUNK_ELEMENTS).enumerate() {
            let at = begin + i * CHUNK_ELEMENTS * width;
            let len = chunk.len() * width;
            decode(&shard.mmap[at..at + len], entry.dtype, chunk);
            release(&shard.mmap, at, len);
            self.check_finite(name, shard, chunk, i * CHUNK_ELEMENTS)?;
        }
        Ok((out, entry.shape.clone()))
    }

    /// Decodes the 2-D tensor `name` (`[rows, cols]`) straight into its transpose
    /// (`[cols, rows]`, row-major), releasing its mapped pages as it goes: one f32 copy. A NaN
    /// or infinite value is an error naming the tensor.
    pub fn read_f32_transposed(&self, name: &str) -> Result<(Vec<f32>, [usize; 2]), HfError> {
        let (entry, shard, begin, width) = self.locate(name)?;
        let [rows, cols] = entry.shape[..] else {
            return Err(HfError::Tensors {
                dir: self.dir.clone(),
                missing: Vec::new(),
                mismatched: vec![(name.to_string(), vec![0, 0], entry.shape.clone())],
                unexpected: Vec::new(),
                unsupported_dtype: Vec::new(),
            });
        };
        let mut out = vec![0.0f32; rows * cols];
        let block = (CHUNK_ELEMENTS / cols.max(1)).clamp(1, rows.max(1));
        let mut buf = vec![0.0f32; block * cols];
        for r0 in (0..rows).step_by(block) {
            let nr = block.min(rows - r0);
            let at = begin + r0 * cols * width;
            let len = nr * cols * width;
            let buf = &mut buf[..nr * cols];
            decode(&shard.mmap[at..at + len], entry.dtype, buf);
            release(&shard.mmap, at, len);
            self.check_finite(name, shard, buf, r0 * cols)?;
            for c in 0..cols {
                let dst = &mut out[c * rows + r0..c * rows + r0 + nr];
                for (r, d) in dst.iter_mut().enumerate() {
                    *d = buf[r * cols + c];
                }
            }
        }
        Ok((out, [cols, rows]))
    }
}

/// Elements decoded between two page releases (4 MiB of f32).
const CHUNK_ELEMENTS: usize = 1 << 20;

/// Little-endian f32/f16/bf16 bytes → f32 (`out.len()` elements).
fn decode(bytes: &[u8], dtype: Dtype, out: &mut [f32]) {
    match dtype {
        Dtype::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Dtype::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        Dtype::BF16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        other => unreachable!("dtype {other:?} is rejected before decoding"),
    }
}

/// Drops the resident pages of a read-only file mapping; they are re-read from the file if
/// touched again, so this only lowers the loader's peak RSS.
#[cfg(unix)]
fn release(mmap: &Mmap, offset: usize, len: usize) {
    if len == 0 {
        return;
    }
    // SAFETY: the mapping is private and read-only, so DONTNEED never discards data: a later
    // access faults the same bytes back in from the file.
    let _ = unsafe { mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len) };
}

#[cfg(not(unix))]
fn release(_mmap: &Mmap, _offset: usize, _len: usize) {}
