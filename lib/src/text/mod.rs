//! Text in and out: the Llama 3 tokenizer built from GGUF metadata, chat messages and the
//! model's Jinja chat template, greedy decoding and seeded sampling.

pub mod chat;
pub mod pretokenize;
pub mod sampling;
pub mod tokenizer;
