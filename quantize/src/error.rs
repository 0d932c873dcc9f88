//! Converter errors: each names the file (or tensor) at fault and the problem, on one line.

use std::path::PathBuf;

/// A conversion error. `Display` is one line naming the file (and tensor) at fault, e.g.
/// `ckpt/config.json: text_config.hidden_size: missing`.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// A problem with an input or output file.
    #[error("{}: {msg}", path.display())]
    File {
        /// The file (or directory).
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A problem with one checkpoint tensor (missing, wrong shape or dtype, bad data).
    #[error("{}: tensor {tensor:?}: {msg}", path.display())]
    Tensor {
        /// The safetensors file holding it.
        path: PathBuf,
        /// The checkpoint tensor name.
        tensor: String,
        /// What is wrong.
        msg: String,
    },
    /// Anything else (internal errors, write errors of a tensor).
    #[error("{0}")]
    Other(String),
    /// An error from the runtime library (e.g. writing the output file).
    #[error(transparent)]
    Mllama(#[from] mllama::Error),
    /// An error building the output GGUF.
    #[error("output: {0}")]
    Gguf(#[from] mllama::GgufError),
}

impl ConvertError {
    /// A [`ConvertError::File`].
    pub fn file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        ConvertError::File {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// A [`ConvertError::Tensor`].
    pub fn tensor(path: impl Into<PathBuf>, tensor: &str, msg: impl Into<String>) -> Self {
        ConvertError::Tensor {
            path: path.into(),
            tensor: tensor.to_owned(),
            msg: msg.into(),
        }
    }
}

/// `Result` with [`ConvertError`].
pub type Result<T> = std::result::Result<T, ConvertError>;
