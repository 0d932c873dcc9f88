//! mllama: a CPU runtime for Llama 3.2 Vision (HF `MllamaForConditionalGeneration`, GGUF
//! architecture `mllama`) from quantized GGUF files.
//!
//! Load a model with [`Model::load`], open a [`Session`], add images and messages, and stream the
//! answer ([`engine::session`] has the details):
//!
//! ```
//! use mllama::{Model, SamplingParams, Session, SessionOptions};
//!
//! # fn main() -> Result<(), mllama::Error> {
//! # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
//! // The tiny random-weight demo model shipped in the repository (paths relative to its root).
//! let model = Model::load("models/demo/mllama-demo-q4_0.gguf")?;
//! let mut chat = Session::new(model, SessionOptions::default())?;
//! chat.add_image("models/demo/example.jpg")?;
//! chat.push_user("What is in this picture?")?;
//! for piece in chat.generate(&SamplingParams::default(), 16, None)? {
//!     print!("{}", piece?.text);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Module map, lowest layer first (a module uses only those above it in this list;
//! `tests/module_graph.rs` checks that the graph has no cycle):
//! - [`format::dtype`]: the ggml tensor type table ([`GgmlType`]): ids, names, block and byte
//!   sizes. It uses nothing else.
//! - [`error`]: the error types ([`Error`], [`GgufError`], [`Limit`]).
//! - [`quant`]: quantized block formats, one file per type, with their reference (de)quantizers
//!   and scalar dot products; file types and llama.cpp's per-tensor K-quant mix
//!   ([`quant::mix`]).
//! - [`format`](mod@format): the GGUF container: reader (memory-mapped, validating, typed views) and
//!   streaming writer; standard metadata keys.
//! - [`kernels`]: matrix kernels (`y = x·Wᵀ` for every weight type) over zero-copy weight
//!   matrices ([`kernels::tensor`]), scalar references beside the SIMD paths, attention kernels,
//!   bandwidth probes.
//! - [`nn`]: network building blocks: norms, activations, RoPE, the attention driver.
//! - [`image`]: image files to RGB pixels (decoders, limits, Pillow's bilinear resize).
//! - [`text`]: the tokenizer, chat messages and templates, sampling.
//! - [`models`]: model architectures ([`models::mllama`]: tensor table, config, vision tower,
//!   text decoder, image preprocessing, encoded-image cache in memory and on disk, synthetic
//!   models) and a summary of
//!   any GGUF file ([`models::info`]).
//! - [`engine`]: running a model: [`engine::sequence`] (a token sequence with its caches) and
//!   [`engine::session`] (the application API: [`Session`], [`Generation`]).
//!
//! The library never prints and never panics on bad input; every failure is an [`Error`] whose
//! message names the file or value at fault, and whose variant says what a caller can do:
//! [`Error::ContextFull`] / [`Error::KvMemory`] (the context or its memory budget is too small),
//! [`Error::LimitExceeded`] (an input above a [`Limit`], with value, maximum and the setting that
//! raises it), [`Error::BadArgument`] and [`Error::Conversation`] (the caller's values or order of
//! calls), [`Error::BadImage`], [`Error::Template`], and for files [`Error::Io`],
//! [`Error::Gguf`], [`Error::Model`], [`Error::Unsupported`]. Warnings are returned, not printed
//! ([`kernels::path_warning`]).

#![warn(missing_docs)]

#[cfg(target_endian = "big")]
compile_error!("mllama reads little-endian GGUF data in place and needs a little-endian target");

pub mod engine;
pub mod error;
pub mod format;
#[doc(hidden)]
pub mod fuzz_entry;
pub mod image;
pub mod kernels;
pub mod models;
pub mod nn;
pub mod quant;
pub mod text;

pub use engine::session::{Generation, ImageStats, Piece, Session, SessionOptions, SessionStats};
pub use error::{Error, GgufError, Limit, OllamaError, Result};
pub use format::dtype::GgmlType;
pub use models::mllama::disk_cache::{CacheWarning, DiskCache};
pub use models::mllama::image_cache::{EncodedImage, ImageCache, ImageSource};
pub use models::mllama::{CachePrecision, Model, Semantics, TapConvention, VisionPrecision};
pub use text::sampling::SamplingParams;
