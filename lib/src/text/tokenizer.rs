//! The Llama 3 tokenizer (byte-level BPE), built from GGUF metadata or from an HF `tokenizer.json`.
//! GGUFs of plain Llama text models may name other byte-level BPE pre-tokenizers (SmolLM2's
//! `smollm`, `gpt-2`, ...): [`pretokenize`](crate::text::pretokenize) has the ones we reproduce,
//! with llama.cpp's token ids.
//!
//! The tokenizer reproduces HF `tokenizer.json` of Llama 3.2: a BPE model over the byte-level alphabet
//! (no unknown token, no byte fallback, `ignore_merges` as stored), no normalizer, the pre-tokenizer
//! `Sequence[Split(Llama-3 regex, Isolated), ByteLevel(add_prefix_space=false, use_regex=false)]` and
//! the `ByteLevel` decoder. Special tokens written in the text (`<|image|>`, `<|eot_id|>`, ...) are
//! recognised and map to their ids. The post-processor (BOS) and the `MllamaProcessor` rewriting of
//! raw prompts are done here explicitly, see [`Tokenizer::encode`].
//!
//! Decoding maps every token back to its bytes and turns the byte string into text like HF does
//! (invalid UTF-8 becomes U+FFFD); [`TokenStream`] does the same incrementally for streaming output.

use std::borrow::Cow;
use std::path::Path;

use serde_json::Value as Json;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::format::gguf::{GgufFile, Value};
use crate::format::keys;
use crate::text::pretokenize::PreTokenizer;
use crate::Error;

/// The Llama 3 pre-tokenizer split regex (as written in HF `tokenizer.json`).
pub const LLAMA3_REGEX: &str = crate::text::pretokenize::LLAMA3;

/// Texts of tokens that end generation wherever a vocabulary has them (llama.cpp's list of
/// end-of-generation tokens found by text): `<|im_end|>` and `<|endoftext|>` for ChatML models
/// such as SmolLM2, `<|eot_id|>` / `<|eom_id|>` / `<|end_of_text|>` for Llama 3.
const EOG_TEXTS: [&str; 10] = [
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];

/// GGUF key of the BPE `ignore_merges` flag (written by our converter from `model.ignore_merges`).
pub const TOK_IGNORE_MERGES: &str = "tokenizer.ggml.ignore_merges";

/// What kind of token an id is (the ggml token types that matter for text).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// An ordinary BPE token.
    Normal,
    /// A special token (HF added token with `special: true`, ggml type CONTROL): recognised in
    /// text, skipped by `decode(.., skip_special = true)`.
    Control,
    /// A non-special added token (ggml type USER_DEFINED): recognised in text, always decoded.
    UserDefined,
    /// An id without a token (`[PADn]` filler, ggml type UNUSED): never produced, decodes to nothing.
    Unused,
}

/// A Llama 3 byte-level BPE tokenizer plus the special token ids of the model.
///
/// Building from GGUF metadata takes ~0.1-0.2 s for the real 128k-token vocabulary (release build).
/// A loaded [`Model`](crate::Model) holds one ([`Model::tokenizer`](crate::Model::tokenizer)).
///
/// ```
/// # fn main() -> Result<(), mllama::Error> {
/// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
/// let model = mllama::Model::load("models/demo/mllama-demo-q4_0.gguf")?;
/// let tok = model.tokenizer()?;
/// assert_eq!(tok.vocab_size(), 128257);
/// assert_eq!(tok.id_of("<|eot_id|>"), tok.eot_id());
/// assert!(tok.is_eos(tok.eot_id().unwrap()));
/// # Ok(())
/// # }
/// ```
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    tokens: Vec<String>,
    kinds: Vec<TokenKind>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eom: Option<u32>,
    pad: Option<u32>,
    image: Option<u32>,
    stop_ids: Vec<u32>,
    add_bos_token: bool,
    chat_template: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.tokens.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("eot", &self.eot)
            .field("eom", &self.eom)
            .field("pad", &self.pad)
            .field("image", &self.image)
            .field("stop_ids", &self.stop_ids)
            .field("add_bos_token", &self.add_bos_token)
            .finish_non_exhaustive()
    }
}

/// Special ids and flags gathered from the source before the tokenizer is assembled.
#[derive(Default)]
struct Specials {
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eom: Option<u32>,
    pad: Option<u32>,
    image: Option<u32>,
    /// The generation config's end-of-sequence ids, if the source has them.
    gen_eos: Option<Vec<u32>>,
    add_bos_token: bool,
    chat_template: Option<String>,
}

impl Tokenizer {
    /// Build the tokenizer from the standard GGUF `tokenizer.*` keys (`tokenizer.ggml.model` must
    /// be `"gpt2"`, i.e. byte-level BPE, with a pre-tokenizer of
    /// [`PreTokenizer::from_name`]: Llama 3's, SmolLM's, GPT-2's or llama.cpp's default).
    ///
    /// Reads `tokenizer.ggml.tokens`, `.token_type`, `.merges`, `.ignore_merges` (when absent:
    /// `true` for Llama 3, as llama.cpp and tiktoken behave, else `false`), the bos / eos / eot /
    /// eom / padding ids, `.add_bos_token` (when absent: `true` for Llama 3 when there is a BOS
    /// id, else `false`, as llama.cpp),
    /// `tokenizer.chat_template`, `mllama.image_token_index` and `mllama.generation.eos_token_ids`.
    /// Missing eot / eom / image ids are looked up by name (`<|eot_id|>`, `<|eom_id|>`,
    /// `<|image|>`), as in files made by other converters.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] for another tokenizer model or pre-tokenizer;
    /// [`Error::LimitExceeded`] ([`Limit::Vocabulary`](crate::Limit::Vocabulary)) for more tokens
    /// or merges than `MLLAMA_MAX_VOCAB` allows; [`Error::Model`] naming the key for a missing,
    /// mistyped or inconsistent key.
    pub fn from_gguf(f: &GgufFile) -> Result<Self, Error> {
        let arch = f
            .get(keys::GENERAL_ARCHITECTURE)
            .and_then(Value::as_str)
            .unwrap_or_default();
        // 1. Kind: byte-level BPE with a pre-tokenizer we reproduce.
        let pre = gguf_check_kind(f, arch)?;
        // 2. Sizes first: building the BPE tables costs ~100 bytes per token and per merge, so an
        //    absurd vocabulary is refused before anything is built from it.
        gguf_check_sizes(f)?;
        // 3. Tokens, their kinds and the merges.
        let tokens = string_array(f, keys::TOK_TOKENS)?
            .ok_or_else(|| gguf_err(f, format!("no tokenizer: {} is missing", keys::TOK_TOKENS)))?;
        let n = tokens.len();
        if n == 0 || n > u32::MAX as usize {
            return Err(gguf_err(f, format!("{} has {n} entries", keys::TOK_TOKENS)));
        }
        let kinds = gguf_token_kinds(f, n)?;
        let merges = string_array(f, keys::TOK_MERGES)?
            .ok_or_else(|| gguf_err(f, format!("{} is missing", keys::TOK_MERGES)))?;
        let ignore_merges = match f.get(TOK_IGNORE_MERGES) {
            None => pre.ignore_merges(),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| gguf_err(f, format!("{TOK_IGNORE_MERGES} is not a bool")))?,
        };
        // 4. Special ids, flags and the chat template.
        let specials = gguf_specials(f, arch, n, pre)?;
        // 5. The BPE model, then the tokenizer around it (pre-tokenizer, decoder, added tokens).
        let bpe = gguf_bpe(f, tokens, &kinds, merges, ignore_merges)?;
        let inner = gguf_wrap_bpe(f, bpe, tokens, &kinds, pre)?;
        Self::assemble(inner, tokens.to_vec(), kinds, specials)
            .map_err(|m| gguf_err(f, format!("tokenizer: {m}")))
    }

    /// Load an HF `tokenizer.json` (byte-level BPE with a `ByteLevel` decoder, as in Llama 3).
    ///
    /// BOS handling is taken from its post-processor (a `TemplateProcessing` whose single-sequence
    /// template is `[BOS, A]` or `[A]`). If `tokenizer_config.json` / `generation_config.json` sit
    /// next to the file, their `bos_token`, `eos_token`, `pad_token`, `chat_template` (or
    /// `chat_template.json`) and `eos_token_id` are used too. Eot / eom / image ids are found by
    /// name (`<|eot_id|>`, `<|eom_id|>`, `<|image|>`).
    pub fn from_json_file(path: &Path) -> Result<Self, Error> {
        let err = |msg: String| Error::Model {
            path: path.to_path_buf(),
            msg,
        };
        let (inner, template_bos) = parse_hf_json(path)?;
        let (tokens, kinds) = vocab_table(&inner);
        let dir = path.parent().unwrap_or(Path::new("."));
        let specials = sibling_specials(dir, &inner, template_bos, tokens.len())?;
        Self::assemble(inner, tokens, kinds, specials).map_err(err)
    }

    fn assemble(
        inner: tokenizers::Tokenizer,
        tokens: Vec<String>,
        kinds: Vec<TokenKind>,
        mut s: Specials,
    ) -> Result<Self, String> {
        let n = tokens.len();
        // Llama 3 names for ids the source does not give explicitly.
        let by_name = |name: &str| inner.token_to_id(name);
        s.eot = s.eot.or_else(|| by_name("<|eot_id|>"));
        s.eom = s.eom.or_else(|| by_name("<|eom_id|>"));
        s.image = s.image.or_else(|| by_name("<|image|>"));
        let gen_eos = s
            .gen_eos
            .take()
            .unwrap_or_else(|| by_name("<|end_of_text|>").into_iter().collect());
        for (what, id) in [
            ("bos", s.bos),
            ("eos", s.eos),
            ("eot", s.eot),
            ("eom", s.eom),
            ("padding", s.pad),
            ("image", s.image),
        ] {
            if let Some(i) = id {
                if i as usize >= n {
                    return Err(format!(
                        "{what} token id {i} is outside the vocabulary ({n} tokens)"
                    ));
                }
                if kinds[i as usize] == TokenKind::Unused {
                    return Err(format!("{what} token id {i} has no token"));
                }
            }
        }
        let mut stop_ids: Vec<u32> = [s.eos, s.eot, s.eom]
            .into_iter()
            .flatten()
            .chain(gen_eos)
            .chain(EOG_TEXTS.iter().filter_map(|t| by_name(t)))
            .collect();
        stop_ids.sort_unstable();
        stop_ids.dedup();
        Ok(Tokenizer {
            inner,
            tokens,
            kinds,
            bos: s.bos,
            eos: s.eos,
            eot: s.eot,
            eom: s.eom,
            pad: s.pad,
            image: s.image,
            stop_ids,
            add_bos_token: s.add_bos_token,
            chat_template: s.chat_template,
        })
    }

    /// Token ids of `text`. Special tokens written in the text (`<|image|>`, `<|eot_id|>`,
    /// `<|begin_of_text|>`, ...) are recognised and give their ids.
    ///
    /// `add_bos = true` gives the ids HF's `MllamaProcessor(text=text)` gives (i.e. with
    /// `add_special_tokens=True`): unless the BOS token string already occurs somewhere in the
    /// text, the processor rewrites the prompt to `<|image|>` × k + `<|begin_of_text|>` + rest,
    /// where k is the number of `<|image|>` strings at the very start of the text; then the
    /// tokenizer's post-processor prepends BOS. So `"<|image|>Hi"` → `[BOS, IMG, BOS, "Hi"]`,
    /// `"Hi"` → `[BOS, BOS, "Hi"]` (sic: HF gives two BOS for raw text prompts through the
    /// processor) and `"<|begin_of_text|>Hi"` → `[BOS, BOS, "Hi"]`. A tokenizer without an
    /// image token (a plain Llama text model) has no processor: `add_bos = true` is then
    /// [`encode_tokenizer`](Tokenizer::encode_tokenizer)`(text, true)`, as llama.cpp's
    /// `llama_tokenize(add_special = true)` (BOS only if `tokenizer.ggml.add_bos_token` says so).
    ///
    /// `add_bos = false` gives HF's `tokenizer(text, add_special_tokens=False)`: nothing is added
    /// or moved. Use it for chat-template output, which already starts with `<|begin_of_text|>`
    /// (this is what `MllamaProcessor.apply_chat_template(tokenize=True)` does).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] if the underlying BPE model fails on the text (not expected for valid
    /// UTF-8 input).
    ///
    /// ```
    /// # fn main() -> Result<(), mllama::Error> {
    /// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
    /// let model = mllama::Model::load("models/demo/mllama-demo-q4_0.gguf")?;
    /// let tok = model.tokenizer()?;
    /// let (bos, img) = (tok.bos_id().unwrap(), tok.image_id().unwrap());
    ///
    /// assert_eq!(tok.encode("Hello, world!", false)?, [9906, 11, 1917, 0]);
    /// // Special tokens written in the text are recognised.
    /// assert_eq!(tok.encode("<|image|>Hi", false)?, [img, 13347]);
    /// // HF's processor rules: image tokens first, then BOS (here twice, as HF does).
    /// assert_eq!(tok.encode("<|image|>Hi", true)?, [bos, img, bos, 13347]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, Error> {
        if !add_bos {
            return self.encode_plain(text);
        }
        if self.image.is_none() {
            // Not a vision tokenizer: no processor rewrite, BOS only if the tokenizer adds it.
            return self.encode_tokenizer(text, true);
        }
        let rewritten = self.processor_text(text);
        self.encode_tokenizer(&rewritten, true)
    }

    /// Token ids like HF's `tokenizer(text, add_special_tokens=...)` called directly, without
    /// the `MllamaProcessor` prompt rewrite: with `add_special_tokens` BOS is prepended once (if
    /// the tokenizer adds BOS at all).
    pub fn encode_tokenizer(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<Vec<u32>, Error> {
        let mut ids = Vec::new();
        if add_special_tokens && self.add_bos_token {
            ids.extend(self.bos);
        }
        ids.extend(self.encode_plain(text)?);
        Ok(ids)
    }

    /// The text `MllamaProcessor` hands to its tokenizer for a raw prompt
    /// (`processing_mllama.build_string_from_input`): unchanged if the BOS string occurs anywhere
    /// in it, else leading `<|image|>` strings, then `<|begin_of_text|>`, then the rest.
    pub fn processor_text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let Some(bos) = self.bos.map(|b| self.tokens[b as usize].as_str()) else {
            return Cow::Borrowed(text);
        };
        if text.contains(bos) {
            return Cow::Borrowed(text);
        }
        let image = self
            .image
            .map(|i| self.tokens[i as usize].as_str())
            .filter(|s| !s.is_empty());
        let mut rest = text;
        let mut n_images = 0;
        if let Some(img) = image {
            while let Some(r) = rest.strip_prefix(img) {
                rest = r;
                n_images += 1;
            }
        }
        let mut s = String::with_capacity(text.len() + bos.len());
        for _ in 0..n_images {
            s.push_str(image.unwrap_or_default());
        }
        s.push_str(bos);
        s.push_str(rest);
        Cow::Owned(s)
    }

    fn encode_plain(&self, text: &str) -> Result<Vec<u32>, Error> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| Error::Invalid(format!("cannot tokenize the text: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, like HF `decode(ids, skip_special_tokens=skip_special,
    /// clean_up_tokenization_spaces=False)` (transformers 5 never cleans up spaces for BPE
    /// tokenizers). With `skip_special` the special (CONTROL) tokens are left out; unused ids
    /// decode to nothing. Byte sequences that are not valid UTF-8 become U+FFFD. Errors on an id
    /// outside the vocabulary.
    ///
    /// # Errors
    ///
    /// [`Error::BadArgument`] naming the first id at or above [`vocab_size`](Tokenizer::vocab_size).
    ///
    /// ```
    /// # fn main() -> Result<(), mllama::Error> {
    /// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
    /// let model = mllama::Model::load("models/demo/mllama-demo-q4_0.gguf")?;
    /// let tok = model.tokenizer()?;
    /// let ids = tok.encode("<|begin_of_text|>Hello, world!", false)?;
    /// assert_eq!(tok.decode(&ids, false)?, "<|begin_of_text|>Hello, world!");
    /// assert_eq!(tok.decode(&ids, true)?, "Hello, world!"); // special tokens skipped
    /// let err = tok.decode(&[u32::MAX], false).unwrap_err();
    /// assert!(matches!(err, mllama::Error::BadArgument { name: "token id", .. }));
    /// # Ok(())
    /// # }
    /// ```
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, Error> {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            self.push_token_bytes(id, skip_special, &mut bytes)?;
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The bytes token `id` stands for (empty for unused ids). Errors on an id outside the
    /// vocabulary.
    pub fn token_bytes(&self, id: u32) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.push_token_bytes(id, false, &mut out)?;
        Ok(out)
    }

    fn push_token_bytes(
        &self,
        id: u32,
        skip_special: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let Some(kind) = self.kinds.get(id as usize) else {
            return Err(Error::bad_argument(
                "token id",
                format!(
                    "token id {id} is outside the vocabulary ({} tokens)",
                    self.tokens.len()
                ),
            ));
        };
        match kind {
            TokenKind::Unused => {}
            TokenKind::Control if skip_special => {}
            _ => byte_level_decode(&self.tokens[id as usize], out),
        }
        Ok(())
    }

    /// An incremental detokenizer for streaming output that skips special tokens if
    /// `skip_special`. See [`TokenStream`].
    ///
    /// ```
    /// # fn main() -> Result<(), mllama::Error> {
    /// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
    /// let model = mllama::Model::load("models/demo/mllama-demo-q4_0.gguf")?;
    /// let tok = model.tokenizer()?;
    /// let ids = tok.encode("Crème brûlée 🍮", false)?;
    ///
    /// let mut stream = tok.stream(true);
    /// let mut text = String::new();
    /// for &id in &ids {
    ///     // Each piece is valid UTF-8; a character split across tokens waits for its last byte.
    ///     text.push_str(&stream.push(id)?);
    /// }
    /// text.push_str(&stream.finish());
    /// assert_eq!(text, tok.decode(&ids, true)?);
    /// assert_eq!(text, "Crème brûlée 🍮");
    /// # Ok(())
    /// # }
    /// ```
    pub fn stream(&self, skip_special: bool) -> TokenStream<'_> {
        TokenStream {
            tok: self,
            skip_special,
            pending: Vec::new(),
        }
    }

    /// The raw token string of `id` (byte-level encoded, e.g. `"Ġthe"`; `"[PADn]"` for unused
    /// ids), or `None` if `id` is outside the vocabulary.
    pub fn token_str(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The kind of token `id` is, or `None` if `id` is outside the vocabulary.
    pub fn token_kind(&self, id: u32) -> Option<TokenKind> {
        self.kinds.get(id as usize).copied()
    }

    /// The id of the raw token string `token` (byte-level encoded: `"Ġthe"`, `"<|eot_id|>"`).
    pub fn id_of(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Number of token ids (the highest id + 1; 128257 for Llama 3.2 Vision).
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// `<|begin_of_text|>`.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// The tokenizer's `eos_token` (`<|eot_id|>` in the Llama 3.2 Vision Instruct config).
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// `<|eot_id|>` (end of turn).
    pub fn eot_id(&self) -> Option<u32> {
        self.eot
    }

    /// `<|eom_id|>` (end of message, tool calls).
    pub fn eom_id(&self) -> Option<u32> {
        self.eom
    }

    /// The padding token (`<|finetune_right_pad_id|>`).
    pub fn pad_id(&self) -> Option<u32> {
        self.pad
    }

    /// `<|image|>`.
    pub fn image_id(&self) -> Option<u32> {
        self.image
    }

    /// Every id that ends generation, sorted: eos, eot, eom and the generation config's
    /// `eos_token_id` list (`[128001, 128008, 128009]` for Llama 3.2 Vision; without a generation
    /// config, `<|end_of_text|>` stands in for the list).
    pub fn eos_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// Whether `id` ends generation (is in [`Tokenizer::eos_ids`]).
    pub fn is_eos(&self, id: u32) -> bool {
        self.stop_ids.binary_search(&id).is_ok()
    }

    /// Whether `add_special_tokens=True` prepends BOS (the tokenizer's post-processor).
    pub fn adds_bos(&self) -> bool {
        self.add_bos_token
    }

    /// The chat template (Jinja source), if the model has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
}

/// Incremental detokenizer: feed generated ids one at a time with [`TokenStream::push`] and get
/// back the text they complete. A token may end inside a multi-byte UTF-8 character; those bytes
/// are held back until the character is complete, so the output is never broken UTF-8. The
/// concatenation of every `push` result and [`TokenStream::finish`] equals
/// [`Tokenizer::decode`] of all the ids (same `skip_special`).
pub struct TokenStream<'a> {
    tok: &'a Tokenizer,
    skip_special: bool,
    pending: Vec<u8>,
}

impl TokenStream<'_> {
    /// Add token `id`; returns the newly completed text (possibly empty). Errors on an id outside
    /// the vocabulary (the stream is unchanged then).
    pub fn push(&mut self, id: u32) -> Result<String, Error> {
        self.tok
            .push_token_bytes(id, self.skip_special, &mut self.pending)?;
        let mut out = String::new();
        let mut start = 0;
        while start < self.pending.len() {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    if let Ok(s) = std::str::from_utf8(&self.pending[start..start + valid]) {
                        out.push_str(s);
                    }
                    match e.error_len() {
                        // Invalid bytes that no continuation can repair: one U+FFFD per
                        // maximal invalid subsequence, like `String::from_utf8_lossy`.
                        Some(len) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            start += valid + len;
                        }
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            start += valid;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        Ok(out)
    }

    /// Bytes of an incomplete character held back so far.
    pub fn pending_bytes(&self) -> &[u8] {
        &self.pending
    }

    /// End of the stream: returns U+FFFD if an incomplete character is still pending (as
    /// `decode` does), else an empty string. The stream can be reused afterwards.
    pub fn finish(&mut self) -> String {
        if self.pending.is_empty() {
            String::new()
        } else {
            self.pending.clear();
            char::REPLACEMENT_CHARACTER.to_string()
        }
    }
}

/// The byte a GPT-2 byte-level alphabet character stands for. Printable bytes (`!`..`~`,
/// `¡`..`¬`, `®`..`ÿ`) are their own character; the other 68 bytes (0..=32, 127..=160, 173) map
/// in order to U+0100..U+0143.
fn byte_of_char(c: char) -> Option<u8> {
    let c = c as u32;
    match c {
        0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff => Some(c as u8),
        0x100..=0x120 => Some((c - 0x100) as u8),
        0x121..=0x142 => Some((c - 0x121 + 0x7f) as u8),
        0x143 => Some(0xad),
        _ => None,
    }
}

/// The `ByteLevel` decoder for one token: every character mapped back to its byte, or, if the
/// token has a character outside the byte-level alphabet (e.g. an added token with a space), the
/// token's own UTF-8 bytes.
fn byte_level_decode(token: &str, out: &mut Vec<u8>) {
    let start = out.len();
    for c in token.chars() {
        match byte_of_char(c) {
            Some(b) => out.push(b),
            None => {
                out.truncate(start);
                out.extend_from_slice(token.as_bytes());
                return;
            }
        }
    }
}

/// A GGUF string array, `None` if the key is absent.
/// Most tokens a vocabulary may have (Llama 3: 128,256), and most merges (Llama 3: 280,147).
pub const MAX_VOCAB: usize = 1 << 20;
/// Most BPE merges a tokenizer may have.
pub const MAX_MERGES: usize = 4 << 20;

/// The vocabulary limits: [`MAX_VOCAB`] tokens and [`MAX_MERGES`] merges, or `MLLAMA_MAX_VOCAB`
/// tokens (and four times as many merges) when that environment variable is set.
fn vocab_limits() -> (usize, usize) {
    match std::env::var("MLLAMA_MAX_VOCAB")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        Some(v) => (v, v.saturating_mul(4)),
        None => (MAX_VOCAB, MAX_MERGES),
    }
}

fn string_array<'a>(f: &'a GgufFile, key: &str) -> Result<Option<&'a [String]>, Error> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_array()
            .and_then(|a| a.as_strings())
            .map(Some)
            .ok_or_else(|| Error::Model {
                path: f.path().to_path_buf(),
                msg: format!("{key} is not a string array"),
            }),
    }
}

// ---------------------------------------------------------------------------------------------
// The steps of `Tokenizer::from_gguf`.

/// An [`Error::Model`] naming the GGUF file.
fn gguf_err(f: &GgufFile, msg: String) -> Error {
    Error::Model {
        path: f.path().to_path_buf(),
        msg,
    }
}

/// Step 1: only byte-level BPE (`"gpt2"`) with a pre-tokenizer of [`PreTokenizer::from_name`]
/// is supported ([`Error::Unsupported`] for another one). An absent pre-tokenizer is Llama 3's in
/// an `mllama` file, llama.cpp's default otherwise.
fn gguf_check_kind(f: &GgufFile, arch: &str) -> Result<PreTokenizer, Error> {
    let model = f.get(keys::TOK_MODEL).ok_or_else(|| {
        gguf_err(
            f,
            format!("no tokenizer: metadata key {} is missing", keys::TOK_MODEL),
        )
    })?;
    let model = model
        .as_str()
        .ok_or_else(|| gguf_err(f, format!("{} is not a string", keys::TOK_MODEL)))?;
    let unsupported = |what: &str, msg: String| Error::Unsupported {
        what: what.to_string(),
        why: format!("{}: {msg}", f.path().display()),
    };
    if model != "gpt2" {
        return Err(unsupported(
            model,
            format!(
                "{} = {model:?}: only byte-level BPE (\"gpt2\", Llama 3) tokenizers are supported",
                keys::TOK_MODEL
            ),
        ));
    }
    let name = match f.get(keys::TOK_PRE) {
        None => None,
        Some(v) => Some(
            v.as_str()
                .ok_or_else(|| gguf_err(f, format!("{} is not a string", keys::TOK_PRE)))?,
        ),
    };
    PreTokenizer::from_name(name, arch == "mllama").ok_or_else(|| {
        let p = name.unwrap_or_default();
        unsupported(
            p,
            format!(
                "{} = {p:?}: not a supported pre-tokenizer (supported: {})",
                keys::TOK_PRE,
                PreTokenizer::NAMES
            ),
        )
    })
}

/// Step 2: the token and merge counts against [`vocab_limits`] ([`Error::LimitExceeded`]).
fn gguf_check_sizes(f: &GgufFile) -> Result<(), Error> {
    let (max_vocab, max_merges) = vocab_limits();
    for (key, max) in [
        (keys::TOK_TOKENS, max_vocab),
        (keys::TOK_MERGES, max_merges),
    ] {
        if let Some(len) = f.get(key).and_then(|v| v.as_array()).map(|a| a.len()) {
            if len > max {
                return Err(Error::LimitExceeded {
                    input: f.path().display().to_string(),
                    limit: crate::Limit::Vocabulary,
                    value: len as u64,
                    max: max as u64,
                    msg: format!(
                        "tokenizer vocabulary too large: {key} has {len} entries, above the limit \
                         of {max} (set {} to raise it)",
                        crate::Limit::Vocabulary.setting()
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Step 3: the kind of each of the `n` tokens, from `tokenizer.ggml.token_type`.
fn gguf_token_kinds(f: &GgufFile, n: usize) -> Result<Vec<TokenKind>, Error> {
    let types = f
        .get(keys::TOK_TOKEN_TYPE)
        .ok_or_else(|| gguf_err(f, format!("{} is missing", keys::TOK_TOKEN_TYPE)))?
        .as_array()
        .and_then(|a| a.to_i64_vec())
        .ok_or_else(|| {
            gguf_err(
                f,
                format!("{} is not an integer array", keys::TOK_TOKEN_TYPE),
            )
        })?;
    if types.len() != n {
        return Err(gguf_err(
            f,
            format!(
                "{} has {} entries but {} has {n}",
                keys::TOK_TOKEN_TYPE,
                types.len(),
                keys::TOK_TOKENS
            ),
        ));
    }
    let invalid = |id: usize, t: i64| {
        let key = keys::TOK_TOKEN_TYPE;
        gguf_err(
            f,
            format!("{key}[{id}] = {t} is not a valid ggml token type"),
        )
    };
    let checked = |(id, &t): (usize, &i64)| token_kind(t).ok_or_else(|| invalid(id, t));
    types.iter().enumerate().map(checked).collect()
}

/// The kind of a ggml token type id (`None` for an id ggml does not define).
fn token_kind(t: i64) -> Option<TokenKind> {
    match t as i32 {
        _ if t != t as i32 as i64 => None,
        keys::token_type::NORMAL | keys::token_type::UNKNOWN | keys::token_type::BYTE => {
            Some(TokenKind::Normal)
        }
        keys::token_type::CONTROL => Some(TokenKind::Control),
        keys::token_type::USER_DEFINED => Some(TokenKind::UserDefined),
        keys::token_type::UNUSED => Some(TokenKind::Unused),
        _ => None,
    }
}

/// The token id stored under `key` (`None` when absent), checked against the `n` tokens.
fn gguf_token_id(f: &GgufFile, key: &str, n: usize) -> Result<Option<u32>, Error> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(i) if (i as usize) < n => Ok(Some(i as u32)),
            _ => Err(gguf_err(
                f,
                format!("{key} = {v:?} is not a token id (vocabulary has {n} tokens)"),
            )),
        },
    }
}

/// The generation config's end-of-sequence ids under `key` (`None` when absent).
fn gguf_gen_eos(f: &GgufFile, key: &str, n: usize) -> Result<Option<Vec<u32>>, Error> {
    let Some(v) = f.get(key) else {
        return Ok(None);
    };
    let ids = v
        .as_array()
        .and_then(|a| a.to_i64_vec())
        .ok_or_else(|| gguf_err(f, format!("{key} is not an integer array")))?;
    let check = |i: i64| {
        if i < 0 || i as usize >= n {
            let msg = format!("{key} contains {i}, not a token id (vocabulary has {n} tokens)");
            return Err(gguf_err(f, msg));
        }
        Ok(i as u32)
    };
    ids.into_iter()
        .map(check)
        .collect::<Result<_, _>>()
        .map(Some)
}

/// Step 4: special ids, the BOS / EOS flags and the chat template.
fn gguf_specials(f: &GgufFile, arch: &str, n: usize, pre: PreTokenizer) -> Result<Specials, Error> {
    let id = |key: &str| gguf_token_id(f, key, n);
    let bos = id(keys::TOK_BOS)?;
    let add_bos_token = match f.get(keys::TOK_ADD_BOS) {
        None => pre.adds_bos_by_default() && bos.is_some(),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| gguf_err(f, format!("{} is not a bool", keys::TOK_ADD_BOS)))?,
    };
    let (add_bos, add_eos, bos_key) = (keys::TOK_ADD_BOS, keys::TOK_ADD_EOS, keys::TOK_BOS);
    if add_bos_token && bos.is_none() {
        let msg = format!("{add_bos} is true but {bos_key} is missing");
        return Err(gguf_err(f, msg));
    }
    if f.get(add_eos).and_then(Value::as_bool) == Some(true) {
        let msg =
            format!("{add_eos} = true is not supported (Llama 3 tokenizers never append EOS)");
        return Err(gguf_err(f, msg));
    }
    let chat_template =
        match f.get(keys::TOK_CHAT_TEMPLATE) {
            None => None,
            Some(v) => Some(v.as_str().map(str::to_owned).ok_or_else(|| {
                gguf_err(f, format!("{} is not a string", keys::TOK_CHAT_TEMPLATE))
            })?),
        };
    Ok(Specials {
        bos,
        eos: id(keys::TOK_EOS)?,
        eot: id(keys::TOK_EOT)?,
        eom: id(keys::TOK_EOM)?,
        pad: id(keys::TOK_PAD)?,
        image: id(&keys::image_token_index(arch))?,
        gen_eos: gguf_gen_eos(f, &keys::generation_eos_ids(arch), n)?,
        add_bos_token,
        chat_template,
    })
}

/// The BPE vocabulary: every token that has one (special tokens included, so that the added
/// vocabulary finds their ids in the model instead of assigning new ones).
fn gguf_bpe_vocab(f: &GgufFile, tokens: &[String], kinds: &[TokenKind]) -> Result<Vocab, Error> {
    let mut vocab = Vocab::default();
    vocab.reserve(tokens.len());
    for (i, (t, k)) in tokens.iter().zip(kinds).enumerate() {
        if *k == TokenKind::Unused {
            continue;
        }
        if let Some(prev) = vocab.insert(t.clone(), i as u32) {
            let key = keys::TOK_TOKENS;
            let msg = format!("{key}: token {t:?} appears twice (ids {prev} and {i})");
            return Err(gguf_err(f, msg));
        }
    }
    Ok(vocab)
}

/// The BPE merges as (left, right) pairs, in rank order.
fn gguf_bpe_pairs(f: &GgufFile, merges: &[String]) -> Result<Vec<(String, String)>, Error> {
    let pair = |(rank, m): (usize, &String)| match m.split_once(' ') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => {
            Ok((a.to_owned(), b.to_owned()))
        }
        _ => Err(gguf_err(
            f,
            format!("{}[{rank}] = {m:?} is not \"left right\"", keys::TOK_MERGES),
        )),
    };
    merges.iter().enumerate().map(pair).collect()
}

/// Step 5: the BPE model. The vocabulary and the merges are independent: they are built on two
/// threads (about a third of the build time; the rest is the BPE builder itself).
fn gguf_bpe(
    f: &GgufFile,
    tokens: &[String],
    kinds: &[TokenKind],
    merges: &[String],
    ignore_merges: bool,
) -> Result<BPE, Error> {
    let (vocab, pairs) = rayon::join(
        || gguf_bpe_vocab(f, tokens, kinds),
        || gguf_bpe_pairs(f, merges),
    );
    BPE::builder()
        .vocab_and_merges(vocab?, pairs?)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(|e| gguf_err(f, format!("cannot build the BPE model: {e}")))
}

/// Step 6: the tokenizer around `bpe`: the pre-tokenizer's splits (each isolating its matches),
/// byte-level decoder, and the control (special) and user-defined tokens as added tokens.
fn gguf_wrap_bpe(
    f: &GgufFile,
    bpe: BPE,
    tokens: &[String],
    kinds: &[TokenKind],
    pre: PreTokenizer,
) -> Result<tokenizers::Tokenizer, Error> {
    let mut inner = tokenizers::Tokenizer::new(bpe);
    let mut steps = Vec::new();
    for re in pre.regexes() {
        let split = Split::new(
            SplitPattern::Regex((*re).into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| gguf_err(f, format!("cannot compile the {pre:?} pre-tokenizer: {e}")))?;
        steps.push(split.into());
    }
    steps.push(ByteLevel::new(false, true, false).into());
    inner.with_pre_tokenizer(Some(Sequence::new(steps)));
    inner.with_decoder(Some(ByteLevel::default()));
    let added = |kind: TokenKind, special: bool| {
        let of_kind = tokens.iter().zip(kinds).filter(move |(_, k)| **k == kind);
        of_kind
            .map(|(t, _)| AddedToken::from(t.clone(), special))
            .collect::<Vec<_>>()
    };
    inner
        .add_special_tokens(added(TokenKind::Control, true))
        .map_err(|e| gguf_err(f, format!("cannot register the special tokens: {e}")))?;
    inner
        .add_tokens(added(TokenKind::UserDefined, false))
        .map_err(|e| gguf_err(f, format!("cannot register the user-defined tokens: {e}")))?;
    Ok(inner)
}

/// The BOS id the post-processor of an HF `tokenizer.json` prepends (None if it adds nothing).
/// Only `ByteLevel` (offsets only) and `TemplateProcessing` with single template `[A]` or
/// `[SpecialToken, A]` are supported: anything else would change ids in ways we do not reproduce.
fn template_bos(pp: &Json) -> Result<Option<u32>, String> {
    if pp.is_null() {
        return Ok(None);
    }
    match pp.get("type").and_then(Json::as_str) {
        Some("ByteLevel") => Ok(None),
        Some("Sequence") => {
            let mut bos = None;
            for p in pp
                .get("processors")
                .and_then(Json::as_array)
                .ok_or("Sequence without processors")?
            {
                if let Some(b) = template_bos(p)? {
                    if bos.replace(b).is_some() {
                        return Err("more than one TemplateProcessing".into());
                    }
                }
            }
            Ok(bos)
        }
        Some("TemplateProcessing") => {
            let single = pp
                .get("single")
                .and_then(Json::as_array)
                .ok_or("TemplateProcessing without a single template")?;
            let is_seq = |p: &Json| p.get("Sequence").is_some();
            match single.as_slice() {
                [a] if is_seq(a) => Ok(None),
                [s, a] if is_seq(a) => {
                    let name = s
                        .pointer("/SpecialToken/id")
                        .and_then(Json::as_str)
                        .ok_or("single template [X, A] where X is not a SpecialToken")?;
                    let ids = pp
                        .pointer(&format!("/special_tokens/{}", json_pointer_escape(name)))
                        .and_then(|t| t.get("ids"))
                        .and_then(Json::as_array)
                        .ok_or_else(|| format!("special token {name:?} is not defined"))?;
                    match ids.as_slice() {
                        [id] => id
                            .as_u64()
                            .filter(|&i| i <= u32::MAX as u64)
                            .map(|i| Some(i as u32))
                            .ok_or_else(|| format!("special token {name:?} has a bad id {id}")),
                        _ => Err(format!("special token {name:?} must have exactly one id")),
                    }
                }
                _ => Err("only single templates [A] and [BOS, A] are supported".into()),
            }
        }
        other => Err(format!("unsupported post-processor type {other:?}")),
    }
}

fn json_pointer_escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Read and check an HF `tokenizer.json` (byte-level BPE, `ByteLevel` decoder): the tokenizer
/// without its post-processor, and the BOS id its `TemplateProcessing` adds (if any).
fn parse_hf_json(path: &Path) -> Result<(tokenizers::Tokenizer, Option<u32>), Error> {
    let err = |msg: String| Error::Model {
        path: path.to_path_buf(),
        msg,
    };
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let j: Json = serde_json::from_str(&text).map_err(|e| err(format!("not valid JSON: {e}")))?;
    let mtype = j.pointer("/model/type").and_then(Json::as_str);
    if mtype != Some("BPE") {
        return Err(err(format!(
            "model.type {mtype:?}: only byte-level BPE tokenizers (Llama 3) are supported"
        )));
    }
    let dtype = j.pointer("/decoder/type").and_then(Json::as_str);
    if dtype != Some("ByteLevel") {
        return Err(err(format!(
            "decoder.type {dtype:?}: only the ByteLevel decoder is supported"
        )));
    }
    let template_bos = match j.get("post_processor") {
        None => None,
        Some(pp) => template_bos(pp).map_err(|m| err(format!("post_processor: {m}")))?,
    };
    let mut inner = text
        .parse::<tokenizers::Tokenizer>()
        .map_err(|e| err(format!("cannot load the tokenizer: {e}")))?;
    // The post-processor's only effect on ids (BOS) is applied by `encode`.
    inner.with_post_processor(None::<tokenizers::PostProcessorWrapper>);
    Ok((inner, template_bos))
}

/// Every id's token text (`[PADi]` for ids without one) and kind (added special tokens are
/// control tokens, other added tokens user-defined).
fn vocab_table(inner: &tokenizers::Tokenizer) -> (Vec<String>, Vec<TokenKind>) {
    let vocab = inner.get_vocab(true);
    let n = vocab.values().map(|&i| i as usize + 1).max().unwrap_or(0);
    let mut tokens: Vec<Option<String>> = vec![None; n];
    for (t, i) in vocab {
        tokens[i as usize] = Some(t);
    }
    let added = inner.get_added_tokens_decoder();
    let mut kinds = Vec::with_capacity(n);
    let tokens = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let kind = match (&t, added.get(&(i as u32))) {
                (None, _) => TokenKind::Unused,
                (Some(_), Some(a)) if a.special => TokenKind::Control,
                (Some(_), Some(_)) => TokenKind::UserDefined,
                (Some(_), None) => TokenKind::Normal,
            };
            kinds.push(kind);
            t.unwrap_or_else(|| format!("[PAD{i}]"))
        })
        .collect();
    (tokens, kinds)
}

/// The special ids and chat template from the files beside `tokenizer.json` in `dir`
/// (`tokenizer_config.json`, `generation_config.json`, `chat_template.json`) and the names of
/// Llama 3's special tokens; `n` ids in all.
fn sibling_specials(
    dir: &Path,
    inner: &tokenizers::Tokenizer,
    template_bos: Option<u32>,
    n: usize,
) -> Result<Specials, Error> {
    let lookup = |s: &str| inner.token_to_id(s);
    let cfg = read_sibling_json(&dir.join("tokenizer_config.json"))?;
    let gen = read_sibling_json(&dir.join("generation_config.json"))?;
    let cfg_token = |key: &str| -> Option<u32> {
        let v = cfg.as_ref()?.get(key)?;
        let s = match v {
            Json::String(s) => s.as_str(),
            Json::Object(o) => o.get("content")?.as_str()?,
            _ => return None,
        };
        lookup(s)
    };
    let (bos, add_bos_token) = match template_bos {
        Some(b) => (Some(b), true),
        None => (
            cfg_token("bos_token").or_else(|| lookup("<|begin_of_text|>")),
            false,
        ),
    };
    let mut gen_eos: Option<Vec<u32>> = match gen.as_ref().and_then(|g| g.get("eos_token_id")) {
        Some(Json::Number(x)) => Some(x.as_u64().map(|v| v as u32).into_iter().collect()),
        Some(Json::Array(a)) => Some(
            a.iter()
                .filter_map(Json::as_u64)
                .map(|v| v as u32)
                .collect(),
        ),
        _ => None,
    };
    if let Some(list) = gen_eos.as_mut() {
        list.retain(|&i| (i as usize) < n);
    }
    let chat_template = match cfg.as_ref().and_then(|c| c.get("chat_template")) {
        Some(Json::String(s)) => Some(s.clone()),
        _ => read_sibling_json(&dir.join("chat_template.json"))?
            .and_then(|c| c.get("chat_template")?.as_str().map(str::to_owned)),
    };
    Ok(Specials {
        bos,
        eos: cfg_token("eos_token"),
        eot: lookup("<|eot_id|>"),
        eom: lookup("<|eom_id|>"),
        pad: cfg_token("pad_token"),
        image: lookup("<|image|>"),
        gen_eos,
        add_bos_token,
        chat_template,
    })
}

fn read_sibling_json(path: &Path) -> Result<Option<Json>, Error> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::Model {
            path: path.to_path_buf(),
            msg: format!("not valid JSON: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The GPT-2 `bytes_to_unicode` table, built the way it is defined.
    fn gpt2_table() -> HashMap<char, u8> {
        let mut printable: Vec<u32> = (0x21..=0x7e)
            .chain(0xa1..=0xac)
            .chain(0xae..=0xff)
            .collect();
        let mut chars = printable.clone();
        let mut n = 0;
        for b in 0..256u32 {
            if !printable.contains(&b) {
                printable.push(b);
                chars.push(256 + n);
                n += 1;
            }
        }
        printable
            .into_iter()
            .zip(chars)
            .map(|(b, c)| (char::from_u32(c).unwrap(), b as u8))
            .collect()
    }

    #[test]
    fn byte_level_alphabet_matches_gpt2() {
        let table = gpt2_table();
        assert_eq!(table.len(), 256);
        for (c, b) in &table {
            assert_eq!(byte_of_char(*c), Some(*b), "{c:?}");
        }
        for c in (0..0x200).filter_map(char::from_u32) {
            assert_eq!(byte_of_char(c), table.get(&c).copied(), "{c:?}");
        }
    }

    #[test]
    fn byte_level_decode_falls_back_to_utf8() {
        let mut out = Vec::new();
        byte_level_decode("ĠhelloĊ", &mut out);
        assert_eq!(out, b" hello\n");
        out.clear();
        byte_level_decode("a b", &mut out); // raw space is not in the alphabet
        assert_eq!(out, b"a b");
    }

    #[test]
    fn template_bos_forms() {
        let j: Json = serde_json::json!({"type": "Sequence", "processors": [
            {"type": "ByteLevel"},
            {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
             {"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {"<s>": {"ids": [7]}}}]});
        assert_eq!(template_bos(&j), Ok(Some(7)));
        let j: Json = serde_json::json!({"type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {}});
        assert_eq!(template_bos(&j), Ok(None));
        let j: Json = serde_json::json!({"type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>"}}],
            "special_tokens": {}});
        assert!(template_bos(&j).is_err());
        assert!(template_bos(&serde_json::json!({"type": "BertProcessing"})).is_err());
        assert_eq!(template_bos(&Json::Null), Ok(None));
    }
}
