//! Standard GGUF metadata keys that are not tied to one architecture: `general.*`, the
//! tokenizer's, and the architecture-prefixed keys every model file may carry.

/// The architecture name (`"mllama"`, `"llama"`); architecture keys are prefixed with it.
pub const GENERAL_ARCHITECTURE: &str = "general.architecture";

/// `<arch>.generation.eos_token_ids`: the ids that end generation (from the checkpoint's
/// generation config).
pub fn generation_eos_ids(arch: &str) -> String {
    format!("{arch}.generation.eos_token_ids")
}

/// `<arch>.image_token_index`: the id of the image token, for vision models.
pub fn image_token_index(arch: &str) -> String {
    format!("{arch}.image_token_index")
}

// ---- tokenizer (standard GGUF keys) -------------------------------------------------------
/// Tokenizer model: `"gpt2"` (byte-level BPE) for Llama 3.
pub const TOK_MODEL: &str = "tokenizer.ggml.model";
/// Pre-tokenizer name (`"llama-bpe"`).
pub const TOK_PRE: &str = "tokenizer.ggml.pre";
/// Token strings by id (string array).
pub const TOK_TOKENS: &str = "tokenizer.ggml.tokens";
/// ggml token type of each id (i32 array, see [`token_type`]).
pub const TOK_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
/// BPE merges as `"left right"` strings.
pub const TOK_MERGES: &str = "tokenizer.ggml.merges";
/// Id of the beginning-of-text token.
pub const TOK_BOS: &str = "tokenizer.ggml.bos_token_id";
/// Id of the end-of-sequence token.
pub const TOK_EOS: &str = "tokenizer.ggml.eos_token_id";
/// Id of the end-of-turn token (`<|eot_id|>`).
pub const TOK_EOT: &str = "tokenizer.ggml.eot_token_id";
/// Id of the end-of-message token (`<|eom_id|>`).
pub const TOK_EOM: &str = "tokenizer.ggml.eom_token_id";
/// Id of the padding token.
pub const TOK_PAD: &str = "tokenizer.ggml.padding_token_id";
/// Whether encoding with special tokens prepends BOS.
pub const TOK_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
/// Whether encoding with special tokens appends EOS.
pub const TOK_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
/// The Jinja chat template.
pub const TOK_CHAT_TEMPLATE: &str = "tokenizer.chat_template";

/// ggml token types (`tokenizer.ggml.token_type`).
pub mod token_type {
    /// An ordinary token.
    pub const NORMAL: i32 = 1;
    /// The unknown token.
    pub const UNKNOWN: i32 = 2;
    /// A special (control) token, e.g. `<|eot_id|>`.
    pub const CONTROL: i32 = 3;
    /// A non-special added token.
    pub const USER_DEFINED: i32 = 4;
    /// An id without a token (`[PADn]` filler).
    pub const UNUSED: i32 = 5;
    /// A byte-fallback token (not used by Llama 3).
    pub const BYTE: i32 = 6;
}
