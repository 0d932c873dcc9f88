//! Converter from HuggingFace `MllamaForConditionalGeneration` safetensors checkpoints to a single
//! `mllama` GGUF file (text decoder, vision encoder, projector, tokenizer, preprocessing and
//! generation parameters). See [`run`] (the library form of the `quantize` binary).
//!
//! ```
//! use mllama_quantize::synthetic::{write_checkpoint, SynthDims};
//! use mllama_quantize::{run, Options};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A tiny random-weight checkpoint stands in for e.g. Llama-3.2-11B-Vision-Instruct.
//! let dir = tempfile::tempdir()?;
//! let input = dir.path().join("checkpoint");
//! write_checkpoint(&input, &SynthDims::tiny(), 42)?;
//!
//! let opts = Options {
//!     input,
//!     output: dir.path().join("model-q8_0.gguf"),
//!     ty: mllama::quant::mix::FileType::Q8_0,
//!     quantize_vision: false,
//!     progress: false,
//! };
//! let summary = run(&opts)?;
//! println!("{} tensors, {} bytes", summary.tensors, summary.bytes_out);
//!
//! // The result loads in the runtime.
//! let model = mllama::Model::load(&opts.output)?;
//! assert_eq!(model.cfg.text.hidden, 64);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod convert;
pub mod error;
#[doc(hidden)]
pub mod fuzz_entry;
pub mod help;
pub mod plan;
pub mod synthetic;
pub mod tokenizer;

pub use convert::{run, Options, Summary};
pub use error::{ConvertError, Result};
