//! File formats: GGUF (reader and writer), the ggml tensor type table, standard metadata keys,
//! Ollama's model store (manifests and blobs).

pub mod dtype;
pub mod gguf;
pub mod keys;
pub mod ollama_store;
