//! Image decoding and the Mllama image processor.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mllama::fuzz_entry::image(data));
