//! The pre-tokenizers of byte-level BPE GGUFs, by llama.cpp's `tokenizer.ggml.pre` name: the
//! regular expressions that cut text into words before BPE, applied in order (each one splits
//! the pieces the previous one left; matches and the text between them both stay pieces), as
//! llama.cpp's `llm_tokenizer_bpe` does. Its flags (`ignore_merges`, BOS by default) follow
//! llama.cpp's vocabulary loader.
//!
//! ```
//! use mllama::text::pretokenize::PreTokenizer;
//!
//! let p = PreTokenizer::from_name(Some("smollm"), false).unwrap();
//! assert_eq!(p, PreTokenizer::Smollm);
//! assert_eq!(p.regexes().len(), 2); // digits one by one, then GPT-2's split
//! assert!(!p.ignore_merges() && !p.adds_bos_by_default());
//! assert!(PreTokenizer::from_name(Some("qwen2"), false).is_none());
//! ```

/// GPT-2's split as llama.cpp writes it (no trailing `\s+`: whitespace it leaves unmatched stays
/// a piece of its own anyway).
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// The Llama 3 split (as written in HF `tokenizer.json`; llama.cpp spells the case-insensitive
/// contractions out, which matches the same text).
pub const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A pre-tokenizer this runtime reproduces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreTokenizer {
    /// Llama 3 (`llama-bpe`, `llama3`, `llama-v3`): Llama 3.x, Llama 3.2 Vision.
    Llama3,
    /// `smollm` (and llama.cpp's same-regex `starcoder`, `refact`): every digit alone, then
    /// GPT-2's split. SmolLM / SmolLM2.
    Smollm,
    /// GPT-2's split (`gpt-2`, also spelled `gpt2`; `mpt`, `olmo`).
    Gpt2,
    /// llama.cpp's `default` (also what it uses when the key is absent from a non-Llama-3 file):
    /// punctuation runs, GPT-2's split, digit runs, then three-digit groups.
    Default,
}

impl PreTokenizer {
    /// The pre-tokenizer of `tokenizer.ggml.pre = name`; `None` for a name we do not reproduce.
    /// An absent key means Llama 3 in a `mllama` file (`llama3_if_absent`, what our converter
    /// and Ollama's files imply) and llama.cpp's `default` otherwise.
    pub fn from_name(name: Option<&str>, llama3_if_absent: bool) -> Option<PreTokenizer> {
        Some(match name {
            None if llama3_if_absent => PreTokenizer::Llama3,
            None | Some("default") => PreTokenizer::Default,
            Some("llama-bpe" | "llama3" | "llama-v3") => PreTokenizer::Llama3,
            Some("smollm" | "starcoder" | "refact") => PreTokenizer::Smollm,
            Some("gpt-2" | "gpt2" | "mpt" | "olmo") => PreTokenizer::Gpt2,
            Some(_) => return None,
        })
    }

    /// The names [`from_name`](PreTokenizer::from_name) accepts, for messages.
    pub const NAMES: &'static str =
        "llama-bpe, llama3, llama-v3, smollm, starcoder, refact, gpt-2, gpt2, mpt, olmo, default";

    /// The split regexes, applied in order.
    pub fn regexes(self) -> &'static [&'static str] {
        match self {
            PreTokenizer::Llama3 => &[LLAMA3],
            PreTokenizer::Smollm => &[r"\p{N}", GPT2],
            PreTokenizer::Gpt2 => &[GPT2],
            PreTokenizer::Default => {
                &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"]
            }
        }
    }

    /// Whether a word found whole in the vocabulary is taken as one token without merging
    /// (llama.cpp: Llama 3 only), when the file does not say (`tokenizer.ggml.ignore_merges`).
    pub fn ignore_merges(self) -> bool {
        self == PreTokenizer::Llama3
    }

    /// Whether encoding with special tokens prepends BOS when `tokenizer.ggml.add_bos_token` is
    /// absent (llama.cpp: Llama 3 only).
    pub fn adds_bos_by_default(self) -> bool {
        self == PreTokenizer::Llama3
    }
}
