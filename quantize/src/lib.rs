//! Converter from HuggingFace `MllamaForConditionalGeneration` safetensors checkpoints to a single
//! `mllama` GGUF file (text decoder, vision encoder, projector, tokenizer, preprocessing and
//! generation parameters). See `convert::run`.

pub mod checkpoint;
pub mod config;
pub mod convert;
pub mod error;
pub mod plan;
pub mod synthetic;
pub mod tokenizer;

pub use convert::{run, Options, Summary};
pub use error::{ConvertError, Result};
