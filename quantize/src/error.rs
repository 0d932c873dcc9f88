//! Converter errors: each names the file (or tensor) at fault and the problem, on one line.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },
    #[error("{}: tensor {tensor:?}: {msg}", path.display())]
    Tensor {
        path: PathBuf,
        tensor: String,
        msg: String,
    },
    #[error("{0}")]
    Other(String),
    #[error(transparent)]
    Mllama(#[from] mllama::Error),
    #[error("output: {0}")]
    Gguf(#[from] mllama::GgufError),
}

impl ConvertError {
    pub fn file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        ConvertError::File {
            path: path.into(),
            msg: msg.into(),
        }
    }

    pub fn tensor(path: impl Into<PathBuf>, tensor: &str, msg: impl Into<String>) -> Self {
        ConvertError::Tensor {
            path: path.into(),
            tensor: tensor.to_owned(),
            msg: msg.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, ConvertError>;
