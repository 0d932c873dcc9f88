//! Tokenization of arbitrary bytes with the real Llama 3.2 vocabulary (the demo model's).
#![no_main]

use std::sync::OnceLock;

use mllama::text::tokenizer::Tokenizer;

fn tok() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/demo/mllama-demo-q4_0.gguf");
        let f = mllama::format::gguf::GgufFile::open(p).expect("demo model");
        Tokenizer::from_gguf(&f).expect("tokenizer")
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| mllama::fuzz_entry::tokenize(tok(), data));
