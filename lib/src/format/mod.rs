//! File formats: GGUF (reader and writer), the ggml tensor type table, standard metadata keys.

pub mod dtype;
pub mod gguf;
pub mod keys;
