//! Model architectures read from GGUF files.
//!
//! - [`mllama`]: Llama 3.2 Vision (`general.architecture = mllama`).
//! - [`info`]: a human-readable summary of any GGUF file (`mllama info`).

pub mod info;
pub mod mllama;
