//! Streaming GGUF writer.
//!
//! All metadata and tensor infos are declared first, so every tensor's offset is known before a
//! byte is written. Tensor data are then produced one tensor at a time by a callback that writes
//! into a [`TensorSink`]; the writer checks that each tensor got exactly its declared size and pads
//! to the alignment. The whole model is never held in memory.
//!
//! [`GgufWriter::write_file`] writes to a temporary file in the target directory and renames it
//! over the target only after everything was written and synced: a failed or interrupted run leaves
//! nothing at the output path (a killed process may leave a hidden `.NAME.*.partial` file beside
//! it, never a truncated file under the real name).

use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::{Array, TensorInfo, Value, DEFAULT_ALIGNMENT, MAGIC, MAX_DIMS};
use crate::error::{Error, GgufError};
use crate::GgmlType;

/// Builds a GGUF file (version 3): declare keys and tensors, then stream tensor data.
///
/// ```
/// use std::io::Write;
/// use mllama::format::gguf::{GgufFile, GgufWriter, Value};
/// use mllama::GgmlType;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Declare: metadata in order, then tensors with PyTorch-order shapes.
/// let mut w = GgufWriter::new("demo");
/// w.add("general.name", Value::String("tiny".into()))?;
/// w.add_tensor("weight", &[2, 32], GgmlType::Q8_0)?; // [rows, cols]
/// w.add_tensor("bias", &[2], GgmlType::F32)?;
///
/// // Stream: each tensor's bytes, converted from f32 as they are produced.
/// let weight: Vec<f32> = (0..64).map(|i| i as f32 / 64.0).collect();
/// let bias = [0.5f32, -0.5];
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("tiny.gguf");
/// let size = w.write_file::<mllama::Error>(&path, |_, info, sink| {
///     let values: &[f32] = if info.name == "weight" { &weight } else { &bias };
///     let mut bytes = vec![0u8; info.size as usize];
///     mllama::quant::convert_f32(info.ty, values, info.dims[0] as usize, &mut bytes)?;
///     sink.write_all(&bytes).map_err(|e| mllama::Error::io(&path, e))?;
///     Ok(())
/// })?;
/// assert_eq!(size, w.file_size());
///
/// let f = GgufFile::open(&path)?;
/// assert_eq!(f.tensor("bias").unwrap().to_f32_vec()?, bias);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    keys: HashSet<String>,
    tensors: Vec<TensorInfo>,
    /// `alias[i]`: tensor i shares the data of an earlier tensor (no bytes of its own).
    alias: Vec<bool>,
    names: HashSet<String>,
    alignment: u64,
    next_offset: u64,
}

impl GgufWriter {
    /// A writer whose first key is `general.architecture = arch`.
    pub fn new(arch: &str) -> Self {
        let mut w = GgufWriter {
            metadata: Vec::new(),
            keys: HashSet::new(),
            tensors: Vec::new(),
            alias: Vec::new(),
            names: HashSet::new(),
            alignment: DEFAULT_ALIGNMENT,
            next_offset: 0,
        };
        // Cannot fail on an empty writer.
        let _ = w.add("general.architecture", Value::String(arch.to_owned()));
        w
    }

    /// A writer with no keys at all (tests; files of other architectures).
    pub fn empty() -> Self {
        let mut w = Self::new("");
        w.metadata.clear();
        w.keys.clear();
        w
    }

    /// Add a metadata key; keys are written in insertion order. Returns the writer for chaining.
    ///
    /// # Errors
    ///
    /// [`GgufError::DuplicateKey`] for a key already added; [`GgufError::BadAlignment`] if
    /// `general.alignment` is not a `U32` power of two; [`GgufError::Writer`] if
    /// `general.alignment` comes after a tensor was declared.
    pub fn add(&mut self, key: &str, value: Value) -> Result<&mut Self, GgufError> {
        if !self.keys.insert(key.to_owned()) {
            return Err(GgufError::DuplicateKey(key.to_owned()));
        }
        if key == "general.alignment" {
            match value {
                Value::U32(a) if a != 0 && a.is_power_of_two() => {
                    if !self.tensors.is_empty() {
                        return Err(GgufError::Writer(
                            "general.alignment must be set before tensors are added".into(),
                        ));
                    }
                    self.alignment = a as u64
                }
                ref other => return Err(GgufError::BadAlignment(format!("{other:?}"))),
            }
        }
        self.metadata.push((key.to_owned(), value));
        Ok(self)
    }

    /// The metadata declared so far, in order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The tensors declared so far, in order, with their offsets and sizes.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Declare a tensor. `shape` is outermost-first (PyTorch order, `[rows, cols]`); it is stored
    /// reversed, as ggml expects. Returns the tensor's index.
    ///
    /// # Errors
    ///
    /// [`GgufError::BadDimCount`] for 0 or more than 4 dimensions, [`GgufError::BadDims`] for a
    /// zero or overflowing size, [`GgufError::BadRowLength`] if the row length (last dimension)
    /// is not a multiple of the type's block size, [`GgufError::DuplicateTensor`] for a name
    /// already declared.
    pub fn add_tensor(
        &mut self,
        name: &str,
        shape: &[usize],
        ty: GgmlType,
    ) -> Result<usize, GgufError> {
        if shape.is_empty() || shape.len() > MAX_DIMS {
            return Err(GgufError::BadDimCount {
                name: name.to_owned(),
                n_dims: shape.len() as u32,
            });
        }
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let n: Option<u64> = dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .filter(|&n| n > 0);
        let Some(n) = n else {
            return Err(GgufError::BadDims {
                name: name.to_owned(),
                dims,
            });
        };
        let size = ty
            .tensor_bytes(dims[0], n)
            .filter(|_| dims[0].is_multiple_of(ty.block_size() as u64))
            .ok_or_else(|| GgufError::BadRowLength {
                name: name.to_owned(),
                row_len: dims[0],
                ty,
                block: ty.block_size(),
            })?;
        if !self.names.insert(name.to_owned()) {
            return Err(GgufError::DuplicateTensor(name.to_owned()));
        }
        let offset = self.next_offset;
        self.next_offset = align(offset + size, self.alignment);
        self.tensors.push(TensorInfo {
            name: name.to_owned(),
            dims,
            ty,
            offset,
            size,
        });
        self.alias.push(false);
        Ok(self.tensors.len() - 1)
    }

    /// Declare a tensor that shares the data of tensor `target` (same shape and type, no bytes of
    /// its own). GGUF allows overlapping tensor data; synthetic benchmark models use this to give
    /// a 90B-shaped model distinct tensors for every layer without 50 GB of distinct weights.
    ///
    /// # Errors
    ///
    /// [`GgufError::Writer`] if there is no tensor `target`; [`GgufError::DuplicateTensor`] for
    /// a name already declared.
    pub fn add_tensor_alias(&mut self, name: &str, target: usize) -> Result<usize, GgufError> {
        let t = self
            .tensors
            .get(target)
            .ok_or_else(|| GgufError::Writer(format!("alias {name}: no tensor {target}")))?
            .clone();
        if !self.names.insert(name.to_owned()) {
            return Err(GgufError::DuplicateTensor(name.to_owned()));
        }
        self.tensors.push(TensorInfo {
            name: name.to_owned(),
            ..t
        });
        self.alias.push(true);
        Ok(self.tensors.len() - 1)
    }

    /// Size in bytes of the file this writer will produce (header, padding and tensor data).
    pub fn file_size(&self) -> u64 {
        align(self.header_size(), self.alignment) + self.next_offset
    }

    fn header_size(&self) -> u64 {
        let mut n = 4 + 4 + 8 + 8;
        for (k, v) in &self.metadata {
            n += 8 + k.len() as u64 + 4 + value_size(v);
        }
        for t in &self.tensors {
            n += 8 + t.name.len() as u64 + 4 + 8 * t.dims.len() as u64 + 4 + 8;
        }
        n
    }

    /// Write the file to `out`. `produce(i, info, sink)` must write exactly `info.size` bytes of
    /// tensor `i` into `sink`; tensors are requested in declaration order (aliases are skipped).
    /// Returns the number of bytes written.
    ///
    /// # Errors
    ///
    /// Any error of `produce` or of `out`; [`GgufError::Writer`] if a tensor got a different
    /// number of bytes than declared (writing more fails inside the sink).
    pub fn write<W: Write, E: From<GgufError> + From<std::io::Error>>(
        &self,
        out: W,
        mut produce: impl FnMut(usize, &TensorInfo, &mut TensorSink<'_>) -> Result<(), E>,
    ) -> Result<u64, E> {
        let mut w = BufWriter::with_capacity(1 << 20, out);
        w.write_all(&MAGIC)?;
        w.write_all(&3u32.to_le_bytes())?;
        w.write_all(&(self.tensors.len() as u64).to_le_bytes())?;
        w.write_all(&(self.metadata.len() as u64).to_le_bytes())?;
        for (k, v) in &self.metadata {
            write_str(&mut w, k)?;
            w.write_all(&(v.value_type() as u32).to_le_bytes())?;
            write_value(&mut w, v)?;
        }
        for t in &self.tensors {
            write_str(&mut w, &t.name)?;
            w.write_all(&(t.dims.len() as u32).to_le_bytes())?;
            for d in &t.dims {
                w.write_all(&d.to_le_bytes())?;
            }
            w.write_all(&t.ty.id().to_le_bytes())?;
            w.write_all(&t.offset.to_le_bytes())?;
        }
        let header = self.header_size();
        let mut pos = header;
        pad_to(&mut w, &mut pos, align(header, self.alignment))?;
        let data_start = pos;
        for (i, t) in self.tensors.iter().enumerate() {
            if self.alias[i] {
                continue;
            }
            debug_assert_eq!(pos - data_start, t.offset);
            let mut sink = TensorSink {
                inner: &mut w,
                written: 0,
                expected: t.size,
            };
            produce(i, t, &mut sink)?;
            if sink.written != t.size {
                return Err(GgufError::Writer(format!(
                    "tensor {:?}: {} bytes written, {} expected",
                    t.name, sink.written, t.size
                ))
                .into());
            }
            pos += t.size;
            pad_to(
                &mut w,
                &mut pos,
                data_start + align(t.offset + t.size, self.alignment),
            )?;
        }
        w.flush()?;
        Ok(pos)
    }

    /// Write to `path` atomically: a temporary file in the same directory is written, flushed,
    /// synced and then renamed to `path`. On any error nothing is left at `path` (an existing file
    /// there is untouched). `produce` works as for [`GgufWriter::write`]. Returns the file size.
    ///
    /// # Errors
    ///
    /// Any error of `produce`; [`Error::Io`] (naming `path`) if the temporary file cannot be
    /// created, written, synced or renamed; the [`GgufError`]s of [`GgufWriter::write`].
    pub fn write_file<E: From<GgufError> + From<Error>>(
        &self,
        path: &Path,
        mut produce: impl FnMut(usize, &TensorInfo, &mut TensorSink<'_>) -> Result<(), E>,
    ) -> Result<u64, E> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let fname = path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out.gguf".into());
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{fname}."))
            .suffix(".partial")
            .tempfile_in(dir)
            .map_err(|e| E::from(Error::io(path, e)))?;
        let file = tmp
            .as_file()
            .try_clone()
            .map_err(|e| E::from(Error::io(path, e)))?;
        let n = self
            .write::<_, WriteErr<E>>(file, |i, t, s| produce(i, t, s).map_err(WriteErr::Inner))
            .map_err(|e| match e {
                WriteErr::Inner(e) => e,
                WriteErr::Gguf(g) => E::from(g),
                WriteErr::Io(io) => E::from(Error::io(path, io)),
            })?;
        // tempfile creates files readable by the owner only; a model file is ordinary data.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = tmp
                .as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644));
        }
        tmp.as_file()
            .sync_all()
            .map_err(|e| E::from(Error::io(path, e)))?;
        tmp.persist(path)
            .map_err(|e| E::from(Error::io(path, e.error)))?;
        Ok(n)
    }
}

enum WriteErr<E> {
    Inner(E),
    Gguf(GgufError),
    Io(std::io::Error),
}
impl<E> From<GgufError> for WriteErr<E> {
    fn from(e: GgufError) -> Self {
        WriteErr::Gguf(e)
    }
}
impl<E> From<std::io::Error> for WriteErr<E> {
    fn from(e: std::io::Error) -> Self {
        WriteErr::Io(e)
    }
}

/// Where a tensor's bytes go (an [`std::io::Write`]). Counts what is written so the writer can
/// check the size; writing past the declared size is an I/O error.
pub struct TensorSink<'a> {
    inner: &'a mut dyn Write,
    written: u64,
    expected: u64,
}

impl TensorSink<'_> {
    /// Bytes still expected for this tensor.
    pub fn remaining(&self) -> u64 {
        self.expected.saturating_sub(self.written)
    }
}

impl Write for TensorSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written + buf.len() as u64 > self.expected {
            return Err(std::io::Error::other(format!(
                "tensor data larger than its declared {} bytes",
                self.expected
            )));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn align(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

fn pad_to(w: &mut impl Write, pos: &mut u64, target: u64) -> std::io::Result<()> {
    const ZEROS: [u8; 64] = [0; 64];
    while *pos < target {
        let n = ((target - *pos) as usize).min(ZEROS.len());
        w.write_all(&ZEROS[..n])?;
        *pos += n as u64;
    }
    Ok(())
}

fn write_str(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn value_size(v: &Value) -> u64 {
    match v {
        Value::U8(_) | Value::I8(_) | Value::Bool(_) => 1,
        Value::U16(_) | Value::I16(_) => 2,
        Value::U32(_) | Value::I32(_) | Value::F32(_) => 4,
        Value::U64(_) | Value::I64(_) | Value::F64(_) => 8,
        Value::String(s) => 8 + s.len() as u64,
        Value::Array(a) => array_size(a),
    }
}

fn array_size(a: &Array) -> u64 {
    let n = a.len() as u64;
    4 + 8
        + match a {
            Array::U8(_) | Array::I8(_) | Array::Bool(_) => n,
            Array::U16(_) | Array::I16(_) => 2 * n,
            Array::U32(_) | Array::I32(_) | Array::F32(_) => 4 * n,
            Array::U64(_) | Array::I64(_) | Array::F64(_) => 8 * n,
            Array::String(v) => v.iter().map(|s| 8 + s.len() as u64).sum(),
            Array::Array(v) => v.iter().map(array_size).sum(),
        }
}

fn write_value(w: &mut impl Write, v: &Value) -> std::io::Result<()> {
    match v {
        Value::U8(x) => w.write_all(&[*x]),
        Value::I8(x) => w.write_all(&[*x as u8]),
        Value::U16(x) => w.write_all(&x.to_le_bytes()),
        Value::I16(x) => w.write_all(&x.to_le_bytes()),
        Value::U32(x) => w.write_all(&x.to_le_bytes()),
        Value::I32(x) => w.write_all(&x.to_le_bytes()),
        Value::F32(x) => w.write_all(&x.to_le_bytes()),
        Value::Bool(x) => w.write_all(&[*x as u8]),
        Value::String(s) => write_str(w, s),
        Value::Array(a) => write_array(w, a),
        Value::U64(x) => w.write_all(&x.to_le_bytes()),
        Value::I64(x) => w.write_all(&x.to_le_bytes()),
        Value::F64(x) => w.write_all(&x.to_le_bytes()),
    }
}

fn write_array(w: &mut impl Write, a: &Array) -> std::io::Result<()> {
    w.write_all(&(a.elem_type() as u32).to_le_bytes())?;
    w.write_all(&(a.len() as u64).to_le_bytes())?;
    macro_rules! each {
        ($v:expr) => {
            for x in $v {
                w.write_all(&x.to_le_bytes())?;
            }
        };
    }
    match a {
        Array::U8(v) => w.write_all(v)?,
        Array::I8(v) => each!(v),
        Array::Bool(v) => {
            for &x in v {
                w.write_all(&[x as u8])?;
            }
        }
        Array::U16(v) => each!(v),
        Array::I16(v) => each!(v),
        Array::U32(v) => each!(v),
        Array::I32(v) => each!(v),
        Array::F32(v) => each!(v),
        Array::U64(v) => each!(v),
        Array::I64(v) => each!(v),
        Array::F64(v) => each!(v),
        Array::String(v) => {
            for s in v {
                write_str(w, s)?;
            }
        }
        Array::Array(v) => {
            for x in v {
                write_array(w, x)?;
            }
        }
    }
    Ok(())
}
