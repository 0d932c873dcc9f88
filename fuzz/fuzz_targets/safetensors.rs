//! `quantize`'s checkpoint reader: safetensors headers and `model.safetensors.index.json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
    if let Ok(dir) = tempfile::Builder::new().prefix("fz").tempdir_in(base) {
        mllama_quantize::fuzz_entry::checkpoint(dir.path(), data);
    }
});
