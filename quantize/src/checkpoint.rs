//! Memory-mapped safetensors checkpoints: one `model.safetensors`, or shards listed in
//! `model.safetensors.index.json`.
//!
//! Headers are parsed and validated (offsets contiguous, sizes matching shapes, file length
//! matching the header) when the checkpoint is opened, before any output is written. Tensor data are
//! read straight from the maps, a slice of rows at a time, and the pages read are dropped from the
//! process's resident set afterwards ([`Checkpoint::release`]), so memory use does not grow with
//! the size of the model.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::error::{ConvertError, Result};

/// Source element types we read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SrcType {
    /// bfloat16.
    BF16,
    /// IEEE half precision.
    F16,
    /// 32-bit float.
    F32,
}

impl SrcType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            SrcType::BF16 | SrcType::F16 => 2,
            SrcType::F32 => 4,
        }
    }
}

/// A tensor inside one shard.
#[derive(Clone, Debug)]
pub struct SrcTensor {
    /// Canonical name ([`canonical_name`]), e.g. `language_model.model.embed_tokens.weight`.
    pub name: String,
    /// Element type.
    pub ty: SrcType,
    /// Shape, outermost first (PyTorch order).
    pub shape: Vec<usize>,
    /// Index of the shard file holding it.
    pub shard: usize,
    /// Absolute byte range inside the shard file: `start..end`.
    pub start: usize,
    /// End of the byte range (exclusive).
    pub end: usize,
}

impl SrcTensor {
    /// Number of elements (product of the shape).
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

struct Shard {
    path: PathBuf,
    map: Mmap,
}

/// The tensors of an HF checkpoint over memory-mapped safetensors shards, validated at open.
///
/// ```
/// use mllama_quantize::checkpoint::Checkpoint;
/// use mllama_quantize::synthetic::{write_checkpoint, SynthDims};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// write_checkpoint(dir.path(), &SynthDims::tiny(), 1)?; // two shards + index
/// let ckpt = Checkpoint::open(dir.path())?;
/// let t = ckpt.get("multi_modal_projector.bias").unwrap();
/// assert_eq!(t.shape, [64]);
/// let mut row = vec![0f32; 64];
/// ckpt.read_rows_f32(t, 64, 0, &mut row);
/// # Ok(())
/// # }
/// ```
pub struct Checkpoint {
    shards: Vec<Shard>,
    tensors: BTreeMap<String, SrcTensor>,
}

/// HF transformers ≥ 4.52 / 5 may save with `model.language_model.*` style names; map them to
/// the release names (`language_model.model.*`, `vision_model.*`, ...).
pub fn canonical_name(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("model.language_model.") {
        format!("language_model.model.{rest}")
    } else if let Some(rest) = name.strip_prefix("model.vision_model.") {
        format!("vision_model.{rest}")
    } else if let Some(rest) = name.strip_prefix("model.multi_modal_projector.") {
        format!("multi_modal_projector.{rest}")
    } else if let Some(rest) = name.strip_prefix("lm_head.") {
        format!("language_model.lm_head.{rest}")
    } else {
        name.to_owned()
    }
}

impl Checkpoint {
    /// Open the safetensors files of an HF model directory: `model.safetensors.index.json` and
    /// the shards it lists, or a single `model.safetensors`.
    ///
    /// # Errors
    ///
    /// [`ConvertError::File`] naming the file: no weights, a malformed index, a missing shard, a
    /// truncated or corrupt safetensors file. [`ConvertError::Tensor`] for a tensor of an
    /// unsupported dtype or one found in more than one shard.
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index.exists() {
            let j = crate::config::read_json(&index)?;
            let map = j
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| {
                    ConvertError::file(&index, "weight_map: missing or not an object")
                })?;
            let mut names: Vec<String> = Vec::new();
            for (tensor, file) in map {
                let file = file.as_str().ok_or_else(|| {
                    ConvertError::file(
                        &index,
                        format!("weight_map[{tensor:?}]: expected a file name"),
                    )
                })?;
                if file.contains('/') || file.contains('\\') || file == ".." {
                    return Err(ConvertError::file(
                        &index,
                        format!(
                            "weight_map[{tensor:?}]: file name {file:?} must not contain a path"
                        ),
                    ));
                }
                if !names.iter().any(|n| n == file) {
                    names.push(file.to_owned());
                }
            }
            names.sort();
            names.into_iter().map(|n| dir.join(n)).collect()
        } else if single.exists() {
            vec![single]
        } else {
            return Err(ConvertError::file(
                dir,
                "no weights: neither model.safetensors nor model.safetensors.index.json exists",
            ));
        };

        let mut shards = Vec::with_capacity(files.len());
        let mut tensors = BTreeMap::new();
        for (si, path) in files.into_iter().enumerate() {
            let file = File::open(&path).map_err(|e| {
                let msg = if e.kind() == std::io::ErrorKind::NotFound {
                    "file not found (listed in model.safetensors.index.json)".to_string()
                } else {
                    format!("cannot open: {e}")
                };
                ConvertError::file(&path, msg)
            })?;
            let len = file
                .metadata()
                .map_err(|e| ConvertError::file(&path, format!("cannot stat: {e}")))?
                .len();
            if len < 8 {
                return Err(ConvertError::file(
                    &path,
                    format!("not a safetensors file: {len} bytes"),
                ));
            }
            // SAFETY: read-only private map; the checkpoint is not modified while we convert it
            // (the same assumption every mmap-based reader makes).
            let map = unsafe { Mmap::map(&file) }
                .map_err(|e| ConvertError::file(&path, format!("cannot map: {e}")))?;
            let (header_len, meta) = SafeTensors::read_metadata(&map)
                .map_err(|e| ConvertError::file(&path, describe_safetensors_error(&e, &map)))?;
            let data_start = 8 + header_len;
            for (name, info) in meta.tensors() {
                let ty = match info.dtype {
                    Dtype::BF16 => SrcType::BF16,
                    Dtype::F16 => SrcType::F16,
                    Dtype::F32 => SrcType::F32,
                    other => {
                        return Err(ConvertError::tensor(
                            &path,
                            &name,
                            format!("unsupported dtype {other:?} (supported: BF16, F16, F32)"),
                        ))
                    }
                };
                let canon = canonical_name(&name);
                let t = SrcTensor {
                    name: canon.clone(),
                    ty,
                    shape: info.shape.clone(),
                    shard: si,
                    start: data_start + info.data_offsets.0,
                    end: data_start + info.data_offsets.1,
                };
                if tensors.insert(canon.clone(), t).is_some() {
                    return Err(ConvertError::tensor(
                        &path,
                        &canon,
                        "appears in more than one shard",
                    ));
                }
            }
            #[cfg(unix)]
            {
                let _ = map.advise(memmap2::Advice::Sequential);
            }
            shards.push(Shard { path, map });
        }
        Ok(Checkpoint { shards, tensors })
    }

    /// The tensor with canonical name `name`, if present.
    pub fn get(&self, name: &str) -> Option<&SrcTensor> {
        self.tensors.get(name)
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The shard file holding `t`.
    pub fn shard_path(&self, t: &SrcTensor) -> &Path {
        &self.shards[t.shard].path
    }

    /// Total bytes of tensor data over all shards.
    pub fn total_bytes(&self) -> u64 {
        self.tensors
            .values()
            .map(|t| (t.end - t.start) as u64)
            .sum()
    }

    /// Raw bytes of rows `[row0, row0 + n)` of a tensor seen as `[rows, row_len]`.
    ///
    /// # Panics
    ///
    /// If the rows lie outside the shard's map.
    pub fn row_bytes(&self, t: &SrcTensor, row_len: usize, row0: usize, n: usize) -> &[u8] {
        let rb = row_len * t.ty.size();
        let s = t.start + row0 * rb;
        &self.shards[t.shard].map[s..s + n * rb]
    }

    /// Convert rows `row0..row0 + n` to f32 into `out` (`n = out.len() / row_len`).
    ///
    /// # Panics
    ///
    /// As for [`Checkpoint::row_bytes`].
    pub fn read_rows_f32(&self, t: &SrcTensor, row_len: usize, row0: usize, out: &mut [f32]) {
        let n = out.len() / row_len;
        let bytes = self.row_bytes(t, row_len, row0, n);
        to_f32(t.ty, bytes, out);
    }

    /// Drop the pages of a tensor's byte range `[start, end)` from our resident set once they are
    /// converted. They stay in the page cache; this only keeps RSS flat on large checkpoints.
    pub fn release(&self, t: &SrcTensor, start: usize, end: usize) {
        #[cfg(unix)]
        {
            let map = &self.shards[t.shard].map;
            let page = 4096;
            let s = (t.start + start).div_ceil(page) * page;
            let e = ((t.start + end) / page * page).min(map.len());
            if e > s {
                // SAFETY: the map is a read-only private file mapping that we never write to, so
                // MADV_DONTNEED only discards clean page-table entries; later reads fault the
                // pages back in from the file with identical contents. No reference into the
                // released range is held across this call (callers finished with these rows).
                let _ = unsafe {
                    map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, s, e - s)
                };
            }
        }
        #[cfg(not(unix))]
        let _ = (t, start, end);
    }

    /// Names of tensors in the checkpoint that were not used, for a warning.
    pub fn unused<'a>(&'a self, used: &'a HashMap<String, ()>) -> impl Iterator<Item = &'a str> {
        self.tensors
            .keys()
            .filter(|k| !used.contains_key(*k))
            .map(String::as_str)
    }
}

/// Element conversion to f32 from unaligned little-endian bytes (as many values as both `bytes`
/// and `out` hold).
pub fn to_f32(ty: SrcType, bytes: &[u8], out: &mut [f32]) {
    match ty {
        SrcType::BF16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        SrcType::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        SrcType::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
    }
}

fn describe_safetensors_error(e: &safetensors::SafeTensorError, map: &[u8]) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::MetadataIncompleteBuffer => {
            let n = u64::from_le_bytes(map[..8].try_into().unwrap_or([0; 8]));
            format!(
                "truncated or corrupt: the header describes a different data size than the {} bytes after the {n}-byte header",
                (map.len() as u64).saturating_sub(8 + n)
            )
        }
        E::InvalidHeaderLength | E::HeaderTooLarge | E::HeaderTooSmall => {
            format!("truncated or not a safetensors file ({e})")
        }
        E::InvalidHeaderDeserialization(_) | E::InvalidHeader(_) => {
            format!("corrupt safetensors header ({e})")
        }
        other => format!("invalid safetensors file ({other})"),
    }
}
