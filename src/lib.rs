//! mllama: a CPU runtime for Llama 3.2 Vision (HF `MllamaForConditionalGeneration`, GGUF
//! architecture `mllama`) from quantized GGUF files.
//!
//! Load a model with [`Model::load`], open a [`Session`], add images and messages, and stream the
//! answer ([`api`] has the details):
//!
//! ```
//! use mllama::{Model, SamplingParams, Session, SessionOptions};
//!
//! # fn main() -> Result<(), mllama::Error> {
//! // The tiny random-weight demo model shipped in the repository (paths relative to its root).
//! let model = Model::load("models/demo/mllama-demo-q4_0.gguf")?;
//! let mut chat = Session::new(&model, SessionOptions::default())?;
//! chat.add_image("models/demo/example.jpg")?;
//! chat.push_user("What is in this picture?")?;
//! for piece in chat.generate(&SamplingParams::default(), 16, None)? {
//!     print!("{}", piece?.text);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Module map:
//! - [`api`]: the application API: [`Session`], [`Generation`], [`ImageCache`].
//! - [`chat`]: chat messages and the model's Jinja chat template.
//! - [`sampling`]: greedy decoding and seeded sampling ([`SamplingParams`]).
//! - [`gguf`]: GGUF reader (memory-mapped, validating) and streaming writer.
//! - [`dtype`]: the ggml tensor type table (block sizes and byte sizes).
//! - [`quant`]: quantized block formats, f32 ⇄ block conversions (scalar reference).
//! - [`keys`]: GGUF metadata keys and tensor names of the `mllama` architecture.
//! - [`info`]: a human-readable summary of any GGUF file (`mllama info`).
//! - [`tensor`]: zero-copy weight matrices over the memory map.
//! - [`kernels`]: matrix kernels (`y = x·Wᵀ` for every weight type), scalar references.
//! - [`ops`]: norms, activations, RoPE, tiled online-softmax attention.
//! - [`model`]: the vision tower, projector and text decoder, loaded from GGUF.
//! - [`session`]: a token sequence with its KV cache and cached cross-attention K/V.
//! - [`preprocess`]: image decoding and the Mllama image processor.
//! - [`tokenizer`]: the Llama 3 tokenizer built from GGUF metadata.
//! - [`eval`], [`bench`](mod@bench): `mllama eval` (reference outputs) and `mllama bench`
//!   (throughput).
//! - [`synthetic`]: random-weight models at real shapes, built in memory (benchmarks).
//! - [`error`]: the error types ([`Error`], [`GgufError`]).
//!
//! The library never prints and never panics on bad input; every failure is an [`Error`] whose
//! message names the file or value at fault.

#![warn(missing_docs)]

#[cfg(target_endian = "big")]
compile_error!("mllama reads little-endian GGUF data in place and needs a little-endian target");

pub mod api;
pub mod bench;
pub mod chat;
pub mod dtype;
pub mod error;
pub mod eval;
#[doc(hidden)]
pub mod fuzz_entry;
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
pub use model::{CachePrecision, Model, Semantics, TapConvention};
pub use sampling::SamplingParams;
