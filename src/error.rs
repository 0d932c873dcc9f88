//! Error types. Every error a user can cause is a variant here with a message that names the file
//! or value at fault; the library never panics on bad input.

use std::path::PathBuf;

/// Errors found while parsing or validating a GGUF file. Offsets are byte offsets into the file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("not a GGUF file (starts with {0:02x?}, expected \"GGUF\")")]
    BadMagic([u8; 4]),
    #[error("big-endian GGUF files are not supported")]
    BigEndian,
    #[error("unsupported GGUF version {0} (supported: 2 and 3)")]
    UnsupportedVersion(u32),
    #[error(
        "file is truncated: {what} at offset {offset} needs {need} bytes but only {have} remain"
    )]
    Truncated {
        what: String,
        offset: u64,
        need: u64,
        have: u64,
    },
    #[error("{what} at offset {offset}: count {count} cannot fit in the {have} bytes that remain")]
    CountTooLarge {
        what: String,
        offset: u64,
        count: u64,
        have: u64,
    },
    #[error("{what} at offset {offset} is not valid UTF-8")]
    BadUtf8 { what: String, offset: u64 },
    #[error("metadata key {key:?}: unknown value type id {id}")]
    UnknownValueType { key: String, id: u32 },
    #[error("metadata key {key:?}: arrays nested deeper than {max} levels")]
    TooDeep { key: String, max: usize },
    #[error("duplicate metadata key {0:?}")]
    DuplicateKey(String),
    #[error("general.alignment must be a u32 power of two, found {0}")]
    BadAlignment(String),
    #[error("tensor {name:?}: unknown ggml type id {id}")]
    UnknownTensorType { name: String, id: u32 },
    #[error("tensor {name:?}: {n_dims} dimensions (GGUF allows 1 to 4)")]
    BadDimCount { name: String, n_dims: u32 },
    #[error("tensor {name:?}: dimensions {dims:?} are zero or their product overflows")]
    BadDims { name: String, dims: Vec<u64> },
    #[error(
        "tensor {name:?}: row length {row_len} is not a multiple of the {ty} block size {block}"
    )]
    BadRowLength {
        name: String,
        row_len: u64,
        ty: crate::GgmlType,
        block: usize,
    },
    #[error("tensor {name:?}: data offset {offset} is not a multiple of the alignment {align}")]
    Misaligned {
        name: String,
        offset: u64,
        align: u64,
    },
    #[error("tensor {name:?}: data [{start}, {end}) lies outside the file ({file_len} bytes)")]
    OutOfRange {
        name: String,
        start: u64,
        end: u64,
        file_len: u64,
    },
    #[error("duplicate tensor name {0:?}")]
    DuplicateTensor(String),
    #[error("tensor {name:?}: stored as {actual}, cannot be viewed as {wanted}")]
    WrongType {
        name: String,
        actual: crate::GgmlType,
        wanted: &'static str,
    },
    #[error("tensor {name:?}: data is not aligned in memory for a {wanted} view")]
    UnalignedView { name: String, wanted: &'static str },
    #[error("writer: {0}")]
    Writer(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// The library's error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Gguf {
        path: PathBuf,
        #[source]
        source: GgufError,
    },
    /// A GGUF parsed fine but does not describe a model we can run (missing key or tensor, wrong
    /// architecture, wrong shape, unsupported type).
    #[error("{}: {msg}", path.display())]
    Model { path: PathBuf, msg: String },
    /// Invalid argument or input value (message names it).
    #[error("{0}")]
    Invalid(String),
    /// An error while building a GGUF file in memory.
    #[error("GGUF: {0}")]
    GgufWrite(#[from] GgufError),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
