//! mllama: a CPU runtime for Llama 3.2 Vision (HF `MllamaForConditionalGeneration`, GGUF
//! architecture `mllama`) from quantized GGUF files.
//!
//! Module map:
//! - [`gguf`]: GGUF reader (memory-mapped, validating) and streaming writer.
//! - [`dtype`]: the ggml tensor type table (block sizes and byte sizes).
//! - [`quant`]: quantized block formats, f32 ⇄ block conversions (scalar reference).
//! - [`info`]: a human-readable summary of any GGUF file (`mllama info`).
//! - [`tensor`]: zero-copy weight matrices over the memory map.
//! - [`kernels`]: matrix kernels (`y = x·Wᵀ` for every weight type), scalar references.
//! - [`ops`]: norms, activations, RoPE, tiled online-softmax attention.
//! - [`model`]: the vision tower, projector and text decoder, loaded from GGUF.
//! - [`session`]: a token sequence with its KV cache and cached cross-attention K/V.
//! - [`preprocess`]: image decoding and the Mllama image processor.
//! - [`tokenizer`]: the Llama 3 tokenizer built from GGUF metadata.

#[cfg(target_endian = "big")]
compile_error!("mllama reads little-endian GGUF data in place and needs a little-endian target");

pub mod api;
pub mod bench;
pub mod chat;
pub mod dtype;
pub mod error;
pub mod eval;
pub mod gguf;
pub mod info;
pub mod kernels;
pub mod keys;
pub mod model;
pub mod ops;
pub mod preprocess;
pub mod quant;
pub mod sampling;
pub mod session;
pub mod synthetic;
pub mod tensor;
pub mod tokenizer;

pub use api::{EncodedImage, Generation, ImageCache, Piece, Session, SessionOptions, SessionStats};
pub use dtype::GgmlType;
pub use error::{Error, GgufError, Result};
pub use model::{Model, Semantics, TapConvention};
pub use sampling::SamplingParams;
