//! GGUF files: a validating reader over a memory map, and a streaming writer ([`writer`]).
//!
//! We do not use the `gguf-rs` crate: version 0.1.8 mis-sizes BF16 tensors, cannot read nested
//! arrays, keeps only 3 elements of tokenizer arrays, and its "mmap" reader copies the whole file
//! into RAM. This module is small and checks every count against the file before trusting it.
//!
//! ## Layout (little-endian; GGUF v2 and v3 use 64-bit counts)
//!
//! ```text
//! magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
//! n_kv × { string key | u32 value_type | value }
//! n_tensors × { string name | u32 n_dims | u64 dims[n_dims] | u32 ggml_type | u64 offset }
//! padding to general.alignment (default 32)
//! tensor data; each tensor at data_start + offset, offset a multiple of the alignment
//! ```
//! A string is `u64 len | len bytes of UTF-8`. An array is `u32 elem_type | u64 count | elems`.
//! `dims[0]` is the innermost (contiguous) dimension: a PyTorch `[out, in]` matrix has
//! `dims = [in, out]`.
//!
//! ## Safety of the reader
//!
//! Every length, count and offset is checked against the bytes that remain before it is used,
//! and no allocation is sized by a count before that check (each element of a count needs at least
//! one byte). Dimension products use checked arithmetic. Tensor views are only handed out for
//! ranges that were validated at open time.

pub mod writer;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use half::{bf16, f16};
use memmap2::Mmap;

use crate::error::{Error, GgufError};
use crate::GgmlType;

pub use writer::{GgufWriter, TensorSink};

/// `"GGUF"` as stored at the start of the file.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Alignment used when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Deepest array nesting we accept (arrays of arrays of ...).
pub const MAX_ARRAY_DEPTH: usize = 8;
/// ggml tensors have at most 4 dimensions.
pub const MAX_DIMS: usize = 4;

/// Metadata value type ids, as stored in the file (`value as u32` is the id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ValueType {
    /// `u8`.
    U8 = 0,
    /// `i8`.
    I8 = 1,
    /// `u16` (little-endian).
    U16 = 2,
    /// `i16` (little-endian).
    I16 = 3,
    /// `u32` (little-endian).
    U32 = 4,
    /// `i32` (little-endian).
    I32 = 5,
    /// `f32` (little-endian).
    F32 = 6,
    /// `bool`, one byte (0 = false).
    Bool = 7,
    /// A string: `u64` length and UTF-8 bytes.
    String = 8,
    /// An array: `u32` element type, `u64` count, elements.
    Array = 9,
    /// `u64` (little-endian).
    U64 = 10,
    /// `i64` (little-endian).
    I64 = 11,
    /// `f64` (little-endian).
    F64 = 12,
}

impl ValueType {
    /// The type with this id, or `None` for an unknown id.
    pub fn from_id(id: u32) -> Option<Self> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The fewest bytes one value of this type can take in a file (a string is at least its
    /// 8-byte length, an array at least its 4-byte type and 8-byte count).
    fn min_encoded_size(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

/// A metadata value. The `as_*` accessors convert between compatible types.
///
/// ```
/// use mllama::format::gguf::Value;
///
/// assert_eq!(Value::U32(40).as_u64(), Some(40));
/// assert_eq!(Value::I32(-1).as_u64(), None);
/// assert_eq!(Value::F32(0.5).as_f64(), Some(0.5));
/// assert_eq!(Value::String("mllama".into()).as_str(), Some("mllama"));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `u8`.
    U8(u8),
    /// `i8`.
    I8(i8),
    /// `u16`.
    U16(u16),
    /// `i16`.
    I16(i16),
    /// `u32`.
    U32(u32),
    /// `i32`.
    I32(i32),
    /// `f32`.
    F32(f32),
    /// A boolean.
    Bool(bool),
    /// A UTF-8 string.
    String(String),
    /// An array.
    Array(Array),
    /// `u64`.
    U64(u64),
    /// `i64`.
    I64(i64),
    /// `f64`.
    F64(f64),
}

/// A metadata array: homogeneous, stored typed (a 128k-entry token list is one `Vec<String>`).
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    /// `u8` elements.
    U8(Vec<u8>),
    /// `i8` elements.
    I8(Vec<i8>),
    /// `u16` elements.
    U16(Vec<u16>),
    /// `i16` elements.
    I16(Vec<i16>),
    /// `u32` elements.
    U32(Vec<u32>),
    /// `i32` elements (e.g. `tokenizer.ggml.token_type`).
    I32(Vec<i32>),
    /// `f32` elements.
    F32(Vec<f32>),
    /// Boolean elements.
    Bool(Vec<bool>),
    /// String elements (e.g. `tokenizer.ggml.tokens`).
    String(Vec<String>),
    /// Nested arrays.
    Array(Vec<Array>),
    /// `u64` elements.
    U64(Vec<u64>),
    /// `i64` elements.
    I64(Vec<i64>),
    /// `f64` elements.
    F64(Vec<f64>),
}

impl Value {
    /// The value's type id.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// Any integer type (or bool) as i64, if it fits.
    pub fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            Value::U8(v) => v as i64,
            Value::I8(v) => v as i64,
            Value::U16(v) => v as i64,
            Value::I16(v) => v as i64,
            Value::U32(v) => v as i64,
            Value::I32(v) => v as i64,
            Value::U64(v) => i64::try_from(v).ok()?,
            Value::I64(v) => v,
            Value::Bool(v) => v as i64,
            _ => return None,
        })
    }

    /// Any integer type as u64, if non-negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U64(v) => Some(v),
            _ => u64::try_from(self.as_i64()?).ok(),
        }
    }

    /// Any numeric type as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The boolean, if this is a [`Value::Bool`].
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The string, if this is a [`Value::String`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The array, if this is a [`Value::Array`].
    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

impl Array {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
            Array::Array(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F64(v) => v.len(),
        }
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn elem_type(&self) -> ValueType {
        match self {
            Array::U8(_) => ValueType::U8,
            Array::I8(_) => ValueType::I8,
            Array::U16(_) => ValueType::U16,
            Array::I16(_) => ValueType::I16,
            Array::U32(_) => ValueType::U32,
            Array::I32(_) => ValueType::I32,
            Array::F32(_) => ValueType::F32,
            Array::Bool(_) => ValueType::Bool,
            Array::String(_) => ValueType::String,
            Array::Array(_) => ValueType::Array,
            Array::U64(_) => ValueType::U64,
            Array::I64(_) => ValueType::I64,
            Array::F64(_) => ValueType::F64,
        }
    }

    /// Integer elements as i64 (None for non-integer arrays or values that do not fit).
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        Some(match self {
            Array::U8(v) => v.iter().map(|&x| x as i64).collect(),
            Array::I8(v) => v.iter().map(|&x| x as i64).collect(),
            Array::U16(v) => v.iter().map(|&x| x as i64).collect(),
            Array::I16(v) => v.iter().map(|&x| x as i64).collect(),
            Array::U32(v) => v.iter().map(|&x| x as i64).collect(),
            Array::I32(v) => v.iter().map(|&x| x as i64).collect(),
            Array::U64(v) => v
                .iter()
                .map(|&x| i64::try_from(x).ok())
                .collect::<Option<_>>()?,
            Array::I64(v) => v.clone(),
            _ => return None,
        })
    }

    /// Numeric elements (integer or float) as f64; `None` for other arrays.
    pub fn to_f64_vec(&self) -> Option<Vec<f64>> {
        match self {
            Array::F32(v) => Some(v.iter().map(|&x| x as f64).collect()),
            Array::F64(v) => Some(v.clone()),
            _ => self
                .to_i64_vec()
                .map(|v| v.into_iter().map(|x| x as f64).collect()),
        }
    }

    /// The strings, if this is an [`Array::String`].
    pub fn as_strings(&self) -> Option<&[String]> {
        match self {
            Array::String(v) => Some(v),
            _ => None,
        }
    }
}

/// One tensor's entry in the tensor table.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// ggml order: `dims[0]` is the innermost (row) length. 1 to 4 dimensions.
    pub dims: Vec<u64>,
    /// Storage type.
    pub ty: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Size of the data in bytes (validated against the type's block layout).
    pub size: u64,
}

impl TensorInfo {
    /// Number of values (product of the dimensions).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Shape outermost-first, as PyTorch writes it (`[rows, cols]` for a matrix).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Length of one row (the innermost dimension).
    pub fn row_len(&self) -> usize {
        self.dims.first().copied().unwrap_or(1) as usize
    }

    /// Number of rows (the product of all but the innermost dimension).
    pub fn n_rows(&self) -> usize {
        self.dims.iter().skip(1).product::<u64>() as usize
    }
}

/// A GGUF file opened over a read-only memory map: metadata and tensor table parsed and validated
/// at open, tensor data read in place on demand.
///
/// ```
/// use mllama::format::gguf::GgufFile;
///
/// # fn main() -> Result<(), mllama::Error> {
/// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
/// let f = GgufFile::open("models/demo/mllama-demo-q4_0.gguf")?;
/// assert_eq!(f.get("general.architecture").and_then(|v| v.as_str()), Some("mllama"));
/// let t = f.tensor_info("blk.0.attn_q.weight").unwrap();
/// assert_eq!((t.ty, t.shape()), (mllama::GgmlType::Q4_0, vec![32, 32]));
/// let norm = f.tensor("output_norm.weight").unwrap().to_f32_vec()?;
/// assert_eq!(norm.len(), 32);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    map: Arc<MapBytes>,
    /// GGUF format version (2 or 3).
    pub version: u32,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    /// Absolute offset of the data section.
    data_start: u64,
    alignment: u64,
}

/// The bytes of an opened file: a memory map, or an owned buffer (for parsing in memory).
#[derive(Debug)]
pub enum MapBytes {
    /// A read-only memory map of a file.
    Mmap(Mmap),
    /// Anonymous memory (synthetic models built in memory).
    Anon(crate::kernels::anon::HugeBuf),
    /// Owned bytes, kept in a `u64` buffer so that typed views get 8-byte alignment like a map.
    Owned {
        /// The bytes, in 8-byte words.
        buf: Vec<u64>,
        /// Number of bytes used (at most `buf.len() · 8`).
        len: usize,
    },
}

impl MapBytes {
    /// Owned bytes already in an aligned buffer (`len` of the `buf.len() · 8` bytes are used).
    ///
    /// # Panics
    ///
    /// If `len > buf.len() · 8`.
    pub fn from_words(buf: Vec<u64>, len: usize) -> Self {
        assert!(len <= buf.len() * 8);
        MapBytes::Owned { buf, len }
    }

    /// Owned, 8-byte aligned copy of `bytes`.
    pub fn owned(bytes: &[u8]) -> Self {
        let mut buf = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut buf)[..bytes.len()].copy_from_slice(bytes);
        MapBytes::Owned {
            buf,
            len: bytes.len(),
        }
    }
}

impl std::ops::Deref for MapBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            MapBytes::Mmap(m) => m,
            MapBytes::Anon(m) => m,
            MapBytes::Owned { buf, len } => &bytemuck::cast_slice::<u64, u8>(buf)[..*len],
        }
    }
}

impl GgufFile {
    /// Memory-map and parse a GGUF file (version 2 or 3, little-endian). Only the header is read;
    /// tensor data stay on disk until touched. The file must not be truncated or rewritten while
    /// it is open.
    ///
    /// Every count, length, offset and tensor size is checked against the file, so a malformed or
    /// hostile file gives an error, never a panic or a huge allocation.
    ///
    /// # Errors
    ///
    /// - [`Error::Io`] if the file cannot be opened or mapped, or is a directory.
    /// - [`Error::Gguf`] with the [`GgufError`] describing what is wrong: bad magic, unsupported
    ///   version, truncation, duplicate key or tensor, unknown type, bad dimensions, misaligned or
    ///   out-of-range tensor data.
    ///
    /// ```
    /// use mllama::format::gguf::GgufFile;
    ///
    /// # fn main() -> Result<(), mllama::Error> {
    /// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
    /// let f = GgufFile::open("models/demo/mllama-demo-q4_0.gguf")?;
    /// println!("GGUF v{}, {} keys, {} tensors", f.version, f.metadata().len(), f.tensors().len());
    /// for t in f.tensors().iter().take(3) {
    ///     println!("{} {} {:?}", t.name, t.ty, t.shape());
    /// }
    ///
    /// // Not a GGUF file: a clear error naming the file.
    /// let err = GgufFile::open("models/demo/example.jpg").unwrap_err();
    /// assert!(err.to_string().contains("not a GGUF file"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, Error> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            return Err(Error::io(
                path,
                std::io::Error::other("is a directory, expected a .gguf file"),
            ));
        }
        let map = if meta.len() == 0 {
            MapBytes::owned(&[])
        } else {
            // SAFETY: the map is read-only and private to this process. Like every mmap-based
            // reader we rely on the file not being truncated or rewritten while it is open; the
            // runtime never writes to model files (documented in the README).
            MapBytes::Mmap(unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?)
        };
        Self::parse(path.to_path_buf(), map)
    }

    /// Parse a GGUF image held in memory under a display name (synthetic models).
    ///
    /// # Errors
    ///
    /// [`Error::Gguf`] as for [`GgufFile::open`], with `name` as the path.
    pub fn from_map(name: &str, map: MapBytes) -> Result<GgufFile, Error> {
        Self::parse(PathBuf::from(name), map)
    }

    /// Parse a GGUF image held in memory (used by tests and fuzzing). The bytes are copied into an
    /// aligned buffer.
    ///
    /// # Errors
    ///
    /// The [`GgufError`] describing what is wrong, as for [`GgufFile::open`].
    ///
    /// ```
    /// use mllama::format::gguf::{GgufFile, GgufWriter, Value};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut w = GgufWriter::new("demo");
    /// w.add("demo.answer", Value::U32(42))?;
    /// let mut bytes = Vec::new();
    /// w.write::<_, mllama::GgufError>(&mut bytes, |_, _, _| Ok(()))?;
    ///
    /// let f = GgufFile::from_bytes(bytes)?;
    /// assert_eq!(f.get("demo.answer"), Some(&Value::U32(42)));
    /// assert!(GgufFile::from_bytes(b"GGML".to_vec()).is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        let path = PathBuf::from("<memory>");
        Self::parse(path, MapBytes::owned(&bytes)).map_err(|e| match e {
            Error::Gguf { source, .. } => source,
            other => GgufError::Writer(other.to_string()),
        })
    }

    fn parse(path: PathBuf, map: MapBytes) -> Result<GgufFile, Error> {
        let parsed = parse_header(&map).map_err(|source| Error::Gguf {
            path: path.clone(),
            source,
        })?;
        Ok(GgufFile {
            path,
            map: Arc::new(map),
            version: parsed.version,
            metadata: parsed.metadata,
            key_index: parsed.key_index,
            tensors: parsed.tensors,
            tensor_index: parsed.tensor_index,
            data_start: parsed.data_start,
            alignment: parsed.alignment,
        })
    }

    /// The path the file was opened from (a display name for in-memory files).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Total file size in bytes.
    pub fn file_len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Alignment of tensor data in bytes (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute offset of the tensor data section.
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// Metadata in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The value of metadata key `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The table entry of tensor `name`, if present.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The whole mapped file (shared; weights borrow from it for the model's lifetime).
    pub fn bytes(&self) -> &Arc<MapBytes> {
        &self.map
    }

    /// A zero-copy view of a tensor's data, or `None` if there is no tensor `name`.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        let info = self.tensor_info(name)?;
        Some(self.view(info))
    }

    /// View of a tensor from this file's table.
    ///
    /// # Panics
    ///
    /// If `info` is not from this file's table and its range lies outside the file.
    pub fn view<'a>(&'a self, info: &'a TensorInfo) -> TensorView<'a> {
        let start = (self.data_start + info.offset) as usize;
        // In range: checked in `parse_header` for every tensor in the table.
        let data = &self.map[start..start + info.size as usize];
        TensorView { info, data }
    }

    /// Absolute byte range of a tensor's data within the file.
    pub fn tensor_range(&self, info: &TensorInfo) -> std::ops::Range<usize> {
        let start = (self.data_start + info.offset) as usize;
        start..start + info.size as usize
    }
}

/// A tensor's info and its bytes inside the memory map.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    /// The tensor's table entry.
    pub info: &'a TensorInfo,
    /// Its data: exactly `info.size` bytes, in the layout of `info.ty`.
    pub data: &'a [u8],
}

impl<'a> TensorView<'a> {
    fn typed<T: bytemuck::Pod>(
        &self,
        ty: GgmlType,
        wanted: &'static str,
    ) -> Result<&'a [T], GgufError> {
        if self.info.ty != ty {
            return Err(GgufError::WrongType {
                name: self.info.name.clone(),
                actual: self.info.ty,
                wanted,
            });
        }
        bytemuck::try_cast_slice(self.data).map_err(|_| GgufError::UnalignedView {
            name: self.info.name.clone(),
            wanted,
        })
    }

    /// The data as `f32` values, without copying.
    ///
    /// # Errors
    ///
    /// [`GgufError::WrongType`] if the tensor is not F32; [`GgufError::UnalignedView`] if the
    /// data are not 4-byte aligned in memory.
    pub fn as_f32(&self) -> Result<&'a [f32], GgufError> {
        self.typed(GgmlType::F32, "F32")
    }

    /// The data as `f16` values, without copying (errors as for [`TensorView::as_f32`]).
    pub fn as_f16(&self) -> Result<&'a [f16], GgufError> {
        self.typed(GgmlType::F16, "F16")
    }

    /// The data as `bf16` values, without copying (errors as for [`TensorView::as_f32`]).
    pub fn as_bf16(&self) -> Result<&'a [bf16], GgufError> {
        self.typed(GgmlType::BF16, "BF16")
    }

    /// The data as quantized blocks of type `B` (e.g. [`BlockQ8_0`](crate::quant::BlockQ8_0)),
    /// without copying (errors as for [`TensorView::as_f32`]).
    pub fn as_blocks<B: crate::quant::QuantBlock>(&self) -> Result<&'a [B], GgufError> {
        self.typed(B::TYPE, B::TYPE.name())
    }

    /// Check that every f16 scale field of every block is finite (no inf/NaN), reading only
    /// those fields in place ([`crate::quant::scales::first_non_finite`]); float tensors pass.
    ///
    /// # Errors
    ///
    /// [`GgufError::NonFiniteScale`] naming the tensor, row, block and field of the first bad
    /// scale.
    pub fn check_scales(&self) -> Result<(), GgufError> {
        let Some(bad) = crate::quant::scales::first_non_finite(self.info.ty, self.data) else {
            return Ok(());
        };
        let per_row = (self.info.row_len() / self.info.ty.block_size()).max(1) as u64;
        Err(GgufError::NonFiniteScale {
            name: self.info.name.clone(),
            ty: self.info.ty,
            row: bad.block / per_row,
            block: bad.block % per_row,
            field: bad.field,
            value: bad.value,
        })
    }

    /// Dequantize (or convert) the whole tensor to f32. Allocates; meant for small tensors
    /// (norms, gates, embeddings looked up once) and for tests.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] for a type [`dequantize`](crate::quant::dequantize) does not support
    /// (those of [`quant::TYPES`](crate::quant::TYPES) are).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>, Error> {
        let n = self.info.n_elements() as usize;
        let mut out = vec![0f32; n];
        crate::quant::dequantize(self.info.ty, self.data, &mut out)?;
        Ok(out)
    }
}

struct Parsed {
    version: u32,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    data_start: u64,
    alignment: u64,
}

/// A bounds-checked little-endian cursor over the file bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.pos as u64,
                need: n,
                have: self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn arr<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }

    /// Check that `count` elements of at least `min_size` bytes each can fit in the rest of the
    /// file, before anything is allocated for them.
    fn check_count(
        &self,
        count: u64,
        min_size: u64,
        what: &dyn Fn() -> String,
    ) -> Result<(), GgufError> {
        match count.checked_mul(min_size) {
            Some(n) if n <= self.remaining() => Ok(()),
            _ => Err(GgufError::CountTooLarge {
                what: what(),
                offset: self.pos as u64,
                count,
                have: self.remaining(),
            }),
        }
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, GgufError> {
        let start = self.pos as u64;
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(GgufError::BadUtf8 {
                what: what(),
                offset: start,
            }),
        }
    }
}

fn parse_header(buf: &[u8]) -> Result<Parsed, GgufError> {
    let mut c = Cursor { buf, pos: 0 };
    let magic: [u8; 4] = c.arr(&|| "magic".into())?;
    if magic != MAGIC {
        return Err(GgufError::BadMagic(magic));
    }
    let version = c.u32(&|| "version".into())?;
    if version != 2 && version != 3 {
        // A big-endian file stores the version byte-swapped (e.g. 3 reads as 0x03000000).
        if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
            return Err(GgufError::BigEndian);
        }
        return Err(GgufError::UnsupportedVersion(version));
    }
    let n_tensors = c.u64(&|| "tensor count".into())?;
    let n_kv = c.u64(&|| "metadata count".into())?;

    // Each key/value pair takes at least 8 (key length) + 4 (type) + 1 bytes.
    c.check_count(n_kv, 13, &|| "metadata key/value count".into())?;
    let mut metadata = Vec::with_capacity(n_kv as usize);
    let mut key_index = HashMap::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let key = c.string(&|| format!("key of metadata entry {i}"))?;
        let ty_id = c.u32(&|| format!("value type of metadata key {key:?}"))?;
        let ty = ValueType::from_id(ty_id).ok_or_else(|| GgufError::UnknownValueType {
            key: key.clone(),
            id: ty_id,
        })?;
        let value = read_value(&mut c, ty, &key, 0)?;
        if key_index.insert(key.clone(), metadata.len()).is_some() {
            return Err(GgufError::DuplicateKey(key));
        }
        metadata.push((key, value));
    }

    let alignment = match key_index.get("general.alignment").map(|&i| &metadata[i].1) {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) if *a != 0 && a.is_power_of_two() => *a as u64,
        Some(other) => return Err(GgufError::BadAlignment(format!("{other:?}"))),
    };

    // Each tensor info takes at least 8 (name length) + 4 (n_dims) + 8 (one dim) + 4 (type) + 8.
    c.check_count(n_tensors, 32, &|| "tensor count".into())?;
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut tensor_index = HashMap::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let name = c.string(&|| format!("name of tensor {i}"))?;
        let n_dims = c.u32(&|| format!("dimension count of tensor {name:?}"))?;
        if n_dims == 0 || n_dims as usize > MAX_DIMS {
            return Err(GgufError::BadDimCount { name, n_dims });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(c.u64(&|| format!("dimension {d} of tensor {name:?}"))?);
        }
        let ty_id = c.u32(&|| format!("type of tensor {name:?}"))?;
        let ty = GgmlType::from_id(ty_id).ok_or_else(|| GgufError::UnknownTensorType {
            name: name.clone(),
            id: ty_id,
        })?;
        let offset = c.u64(&|| format!("data offset of tensor {name:?}"))?;
        let n_elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n > 0 && n <= i64::MAX as u64);
        let Some(n_elements) = n_elements else {
            return Err(GgufError::BadDims { name, dims });
        };
        let row_len = dims[0];
        let size = ty
            .tensor_bytes(row_len, n_elements)
            .filter(|_| row_len % ty.block_size() as u64 == 0)
            .ok_or_else(|| GgufError::BadRowLength {
                name: name.clone(),
                row_len,
                ty,
                block: ty.block_size(),
            })?;
        if offset % alignment != 0 {
            return Err(GgufError::Misaligned {
                name,
                offset,
                align: alignment,
            });
        }
        if tensor_index.insert(name.clone(), tensors.len()).is_some() {
            return Err(GgufError::DuplicateTensor(name));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ty,
            offset,
            size,
        });
    }

    let header_end = c.pos as u64;
    let data_start = header_end.div_ceil(alignment) * alignment;
    let file_len = buf.len() as u64;
    for t in &tensors {
        let start = data_start.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.size));
        match (start, end) {
            (Some(_), Some(end)) if end <= file_len => {}
            _ => {
                return Err(GgufError::OutOfRange {
                    name: t.name.clone(),
                    start: data_start.saturating_add(t.offset),
                    end: data_start.saturating_add(t.offset).saturating_add(t.size),
                    file_len,
                })
            }
        }
    }

    Ok(Parsed {
        version,
        metadata,
        key_index,
        tensors,
        tensor_index,
        data_start,
        alignment,
    })
}

fn read_value(
    c: &mut Cursor<'_>,
    ty: ValueType,
    key: &str,
    depth: usize,
) -> Result<Value, GgufError> {
    let what = || format!("value of metadata key {key:?}");
    Ok(match ty {
        ValueType::U8 => Value::U8(c.arr::<1>(&what)?[0]),
        ValueType::I8 => Value::I8(c.arr::<1>(&what)?[0] as i8),
        ValueType::U16 => Value::U16(u16::from_le_bytes(c.arr(&what)?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(c.arr(&what)?)),
        ValueType::U32 => Value::U32(u32::from_le_bytes(c.arr(&what)?)),
        ValueType::I32 => Value::I32(i32::from_le_bytes(c.arr(&what)?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(c.arr(&what)?)),
        ValueType::U64 => Value::U64(u64::from_le_bytes(c.arr(&what)?)),
        ValueType::I64 => Value::I64(i64::from_le_bytes(c.arr(&what)?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(c.arr(&what)?)),
        ValueType::Bool => Value::Bool(c.arr::<1>(&what)?[0] != 0),
        ValueType::String => Value::String(c.string(&what)?),
        ValueType::Array => Value::Array(read_array(c, key, depth)?),
    })
}

fn read_array(c: &mut Cursor<'_>, key: &str, depth: usize) -> Result<Array, GgufError> {
    if depth >= MAX_ARRAY_DEPTH {
        return Err(GgufError::TooDeep {
            key: key.to_owned(),
            max: MAX_ARRAY_DEPTH,
        });
    }
    let what = || format!("array of metadata key {key:?}");
    let ty_id = c.u32(&what)?;
    let ty = ValueType::from_id(ty_id).ok_or_else(|| GgufError::UnknownValueType {
        key: key.to_owned(),
        id: ty_id,
    })?;
    let n = c.u64(&what)?;
    c.check_count(n, ty.min_encoded_size(), &what)?;
    let n = n as usize;

    macro_rules! fixed {
        ($variant:ident, $t:ty) => {{
            const W: usize = std::mem::size_of::<$t>();
            let bytes = c.take((n * W) as u64, &what)?;
            Array::$variant(
                bytes
                    .chunks_exact(W)
                    .map(|b| <$t>::from_le_bytes(b.try_into().unwrap_or([0; W])))
                    .collect(),
            )
        }};
    }
    Ok(match ty {
        ValueType::U8 => Array::U8(c.take(n as u64, &what)?.to_vec()),
        ValueType::I8 => Array::I8(c.take(n as u64, &what)?.iter().map(|&b| b as i8).collect()),
        ValueType::Bool => Array::Bool(c.take(n as u64, &what)?.iter().map(|&b| b != 0).collect()),
        ValueType::U16 => fixed!(U16, u16),
        ValueType::I16 => fixed!(I16, i16),
        ValueType::U32 => fixed!(U32, u32),
        ValueType::I32 => fixed!(I32, i32),
        ValueType::F32 => fixed!(F32, f32),
        ValueType::U64 => fixed!(U64, u64),
        ValueType::I64 => fixed!(I64, i64),
        ValueType::F64 => fixed!(F64, f64),
        ValueType::String => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(c.string(&what)?);
            }
            Array::String(v)
        }
        ValueType::Array => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(read_array(c, key, depth + 1)?);
            }
            Array::Array(v)
        }
    })
}

#[cfg(test)]
mod tests;
