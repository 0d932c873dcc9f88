//! The GGUF parser (header, metadata, tensor table) and everything built on it.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mllama::fuzz_entry::gguf(data));
