//! Tokenizer (owned by the tokenizer work; placeholder).
