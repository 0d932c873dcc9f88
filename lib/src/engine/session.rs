//! The library API for applications: load a model, open a [`Session`], add images, add user
//! messages, and generate an answer as an iterator of text pieces, with cancellation.
//!
//! ```
//! use mllama::{Model, SamplingParams, Session, SessionOptions};
//!
//! # fn main() -> Result<(), mllama::Error> {
//! # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
//! // The tiny demo model shipped in the repository (a toy trained on pictures of coloured shapes).
//! let model = Model::load("models/demo/mllama-demo-q4_0.gguf")?;
//! // The session takes the model (or an `Arc<Model>` to share it; see Threads below).
//! let mut chat = Session::new(model, SessionOptions::default())?;
//! chat.add_image("models/demo/example.jpg")?;
//! chat.push_user("What is in this picture?")?;
//! for piece in chat.generate(&SamplingParams::default(), 8, None)? {
//!     print!("{}", piece?.text);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The library never prints; errors are [`crate::Error`] values. Paths in the examples are relative
//! to the repository root, where the demo model lives.
//!
//! ## Caching
//!
//! Each image is decoded, preprocessed and run through the vision tower once; its
//! cross-attention K/V (for every cross layer) are kept in the model's [`ImageCache`](crate::ImageCache), keyed by a
//! SHA-256 of the image bytes and the vision-tap convention, so the same picture costs no vision
//! work again in any session of the process. A session keeps the self-attention KV cache of the
//! conversation and only processes what a new turn adds.
//!
//! ## Threads and ownership
//!
//! A session owns its model through an [`Arc<Model>`](Arc): pass the [`Model`] itself for a
//! single conversation, or wrap it once in an `Arc` and give every session a clone. A [`Model`] is
//! `Send + Sync` and a [`Session`] is `Send` and `'static`, so a server can keep sessions in a
//! map, hand them to worker threads, and run many conversations on one copy of the weights (and
//! one image cache). Matrix products and attention run on rayon's global thread pool.
//!
//! ```
//! use std::sync::Arc;
//! use mllama::{Model, SamplingParams, Session, SessionOptions};
//!
//! # fn main() -> Result<(), mllama::Error> {
//! # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
//! let model = Arc::new(Model::load("models/demo/mllama-demo-q4_0.gguf")?);
//! let mut chat = Session::new(Arc::clone(&model), SessionOptions::default())?;
//! chat.push_user("Hello!")?;
//! // The session moves to another thread and answers there.
//! let worker = std::thread::spawn(move || -> Result<String, mllama::Error> {
//!     chat.generate(&SamplingParams::default(), 4, None)?.map(|p| p.map(|p| p.text)).collect()
//! });
//! let answer = worker.join().expect("worker thread")?;
//! # let _ = answer;
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::engine::sequence::Sequence;
use crate::image::ImageLimits;
use crate::models::mllama::disk_cache::{
    model_identity, CacheWarning, DiskCache, EntrySettings, DEFAULT_DISK_CACHE_BYTES,
};
use crate::models::mllama::image_cache::{DiskSide, EncodeStats, EncodedImage, ImageSource};
use crate::models::mllama::{Model, Semantics};
use crate::text::chat::{user_message, ChatTemplate, Message, Part, Role};
use crate::text::sampling::{Sampler, SamplingParams};
use crate::text::tokenizer::TokenStream;
use crate::Error;

/// How a session runs. The default is the model's context capped at [`DEFAULT_CTX_CAP`] tokens,
/// HF transformers numerics, default image limits and today's date for the chat template.
///
/// ```
/// use mllama::image::ImageLimits;
/// use mllama::{Semantics, SessionOptions, TapConvention};
///
/// let opts = SessionOptions {
///     ctx: Some(2048),
///     // HF transformers 5.x's vision taps (layer output) instead of the default layer input.
///     semantics: Semantics {
///         taps: TapConvention::LayerOutput,
///         ..Semantics::default()
///     },
///     image_limits: ImageLimits { max_bytes: 8 << 20, ..ImageLimits::default() },
///     // Reproducible prompts: the Llama 3.2 Vision template writes the date into the system
///     // header of conversations without images.
///     date_string: Some("26 Jul 2024".into()),
///     // Refuse a context whose KV cache needs more than 1 GiB.
///     max_memory: Some(1 << 30),
///     // Keep each image's cross-attention K/V on disk for later sessions and runs, in the
///     // platform's cache directory (~/.cache/mllama), using at most 1 GiB there.
///     cache_dir: mllama::models::mllama::disk_cache::default_dir(),
///     disk_cache_bytes: Some(1 << 30),
/// };
/// # let _ = opts;
/// ```
#[derive(Clone, Debug, Default)]
pub struct SessionOptions {
    /// Context window in tokens, prompt and answers together (`None`: the model's
    /// `context_length`, capped at [`DEFAULT_CTX_CAP`]). The self-attention KV cache for this many
    /// tokens is allocated when the session is created; [`Session::new`] refuses a value above the
    /// model's `context_length`. A value of 0 is treated as 1.
    pub ctx: Option<usize>,
    /// Which reference numerics to follow (HF transformers by default, or Meta's).
    pub semantics: Semantics,
    /// Size limits checked before an image is read and decoded.
    pub image_limits: ImageLimits,
    /// Render the chat template with this `date_string` (e.g. `"26 Jul 2024"`) instead of
    /// today's date.
    pub date_string: Option<String>,
    /// Most bytes the session's self-attention KV cache may take. [`Session::new`] refuses a
    /// context whose cache exceeds this, or exceeds the memory the system reports available
    /// (`MemAvailable` on Linux), whichever is smaller, before allocating it. `None`: only the
    /// system's figure.
    pub max_memory: Option<u64>,
    /// The vision cache directory: each image's cross-attention K/V is stored there and read
    /// back by later sessions and processes ([`DiskCache`]; `mllama` passes
    /// [`default_dir`](crate::models::mllama::disk_cache::default_dir) unless told otherwise).
    /// `None` (the default): no disk cache.
    pub cache_dir: Option<PathBuf>,
    /// Most bytes the cache directory may hold (`None`: [`DEFAULT_DISK_CACHE_BYTES`]); least
    /// recently used entries are deleted beyond it.
    pub disk_cache_bytes: Option<u64>,
}

/// Memory the system reports available, in bytes (`MemAvailable` of `/proc/meminfo`), if known.
pub fn available_memory() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb.saturating_mul(1024))
}

/// Refuse a context whose self-attention KV cache would not fit the budget: the smaller of
/// `max_memory` and the memory the system reports available.
fn check_kv_memory(
    model: &Model,
    ctx: usize,
    half: bool,
    max_memory: Option<u64>,
) -> Result<(), Error> {
    let need = crate::models::mllama::text::KvCache::bytes_for(&model.text, ctx, half) as u64;
    let avail = available_memory();
    let (budget, what) = match (max_memory, avail) {
        (Some(m), Some(a)) if a < m => (a, "the memory available"),
        (Some(m), _) => (
            m,
            "the memory budget (--max-memory-mb, SessionOptions::max_memory)",
        ),
        (None, Some(a)) => (a, "the memory available"),
        (None, None) => return Ok(()),
    };
    if need > budget {
        let fit = (budget as f64 / need as f64 * ctx as f64) as usize;
        return Err(Error::KvMemory {
            ctx,
            needed: need,
            budget,
            budget_name: what,
            max_ctx: fit.max(1),
        });
    }
    Ok(())
}

/// Default upper bound of the context window in tokens, used when [`SessionOptions::ctx`] is
/// `None`: a self-attention KV cache of 4096 tokens is 1 GiB for the 11B model (f32 keys and
/// values).
pub const DEFAULT_CTX_CAP: usize = 4096;

/// Timings of the last [`Session::generate`] and of images added, from [`Session::stats`].
///
/// The generation figures are final once the [`Generation`] is exhausted or dropped.
#[derive(Clone, Debug, Default)]
pub struct SessionStats {
    /// Timings of each image encoded (not cached) by this session, in the order the images were
    /// added: vision tower + projector, and cross-attention K/V.
    pub encoded: Vec<EncodeStats>,
    /// Images found in the cache, in memory or on disk (no vision work).
    pub cache_hits: usize,
    /// Every image added, in order: where it came from and what it cost.
    pub images: Vec<ImageStats>,
    /// Prompt tokens processed by the last generation (not reused from the KV cache).
    pub prefill_tokens: usize,
    /// Seconds the last prefill took (the `prefill_tokens` run through the decoder).
    pub prefill_s: f64,
    /// Tokens generated by the last generation.
    pub decode_tokens: usize,
    /// Seconds from the end of the prefill to the end of the generation: sampling and decoding
    /// the `decode_tokens`, plus whatever the caller did between pieces.
    pub decode_s: f64,
    /// Tokens of the conversation in the KV cache.
    pub context_tokens: usize,
}

/// One image added to a session ([`SessionStats::images`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImageStats {
    /// Encoded now ([`ImageSource::Miss`]), or from the memory or disk cache.
    pub source: ImageSource,
    /// Seconds in the vision tower + projector (0 unless encoded now).
    pub vision_s: f64,
    /// Seconds computing the cross-attention K/V (0 unless encoded now).
    pub cross_kv_s: f64,
    /// Seconds reading the disk entry (a disk hit) or writing it (a miss with a disk cache).
    pub disk_s: f64,
    /// Seconds preparing the vision weights for the tower's precision before this image (int8:
    /// quantized into memory once per model), not part of `vision_s`.
    pub prepare_s: f64,
}

/// One generated token and the text it completes (possibly empty: a multi-byte character split
/// across tokens comes out whole with the token that completes it). Items of a [`Generation`].
///
/// Concatenating the `text` of every piece gives the whole answer ([`Generation::text`]).
///
/// ```
/// use mllama::{Model, Piece, SamplingParams, Session, SessionOptions};
///
/// # fn main() -> Result<(), mllama::Error> {
/// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
/// let model = Model::load("models/demo/mllama-demo-q4_0.gguf")?;
/// let mut chat = Session::new(model, SessionOptions::default())?;
/// chat.push_user("Hello!")?;
/// let mut ids = Vec::new();
/// for piece in chat.generate(&SamplingParams::default(), 4, None)? {
///     let piece: Piece = piece?;
///     if piece.id != Piece::FLUSH {
///         ids.push(piece.id);
///     }
/// }
/// assert!(ids.len() <= 4);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    /// The token id, or [`Piece::FLUSH`] for the bytes a cut-off character left at the end.
    pub id: u32,
    /// The text this token completes: valid UTF-8, possibly empty. Special (control) tokens give
    /// no text.
    pub text: String,
}

impl Piece {
    /// The id of the final piece that flushes held-back bytes (not a token). Such a piece comes
    /// only when the answer ends inside a multi-byte character; its text is U+FFFD.
    pub const FLUSH: u32 = u32::MAX;
}

/// A conversation (or a raw prompt) with its caches.
///
/// Two ways to build the prompt:
/// - **chat**: [`push_system`](Session::push_system) (optional, first),
///   [`add_image`](Session::add_image) and [`push_user`](Session::push_user), then
///   [`generate`](Session::generate); the model's chat template renders the conversation and each
///   answer becomes an assistant message. Repeat for more turns.
/// - **raw**: [`set_raw_prompt`](Session::set_raw_prompt) with the exact prompt text (special
///   tokens written out), then [`generate`](Session::generate); the answer is appended to the
///   prompt.
///
/// Each turn reuses the KV cache of the tokens that did not change, so usually only the new
/// message is processed. (Under the default HF semantics, text before the first image attends to
/// every image, so a turn that adds an image processes the whole prompt again; the images
/// themselves come from the cache.) When the conversation outgrows the context window, the oldest
/// user/assistant exchanges are dropped (a system message and the last message are kept). A
/// session owns an [`Arc`] of its [`Model`] and is `Send`: create one per conversation, keep as
/// many as needed, and move them between threads (one thread at a time uses a session).
///
/// ```
/// use mllama::{Model, SamplingParams, Session, SessionOptions};
///
/// # fn main() -> Result<(), mllama::Error> {
/// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
/// let model = Model::load("models/demo/mllama-demo-q4_0.gguf")?;
/// let mut chat = Session::new(model, SessionOptions::default())?;
/// let greedy = SamplingParams::default();
///
/// chat.push_system("You are a terse assistant.")?;
/// chat.push_user("Name a colour.")?;
/// let first: String = chat
///     .generate(&greedy, 8, None)?
///     .map(|p| p.map(|p| p.text))
///     .collect::<Result<_, _>>()?;
///
/// // The answer is now part of the conversation; the next turn only processes the new message.
/// chat.push_user("Another one.")?;
/// for piece in chat.generate(&greedy, 8, None)? {
///     print!("{}", piece?.text);
/// }
/// assert_eq!(chat.messages().len(), 5); // system, user, assistant, user, assistant
/// assert!(chat.stats().context_tokens <= chat.context_size());
/// # let _ = first;
/// # Ok(())
/// # }
/// ```
pub struct Session {
    model: Arc<Model>,
    opts: SessionOptions,
    ctx: usize,
    template: Option<ChatTemplate>,
    messages: Vec<Message>,
    /// Images of `messages` in order of appearance.
    images: Vec<Arc<EncodedImage>>,
    /// Images added but not yet placed in a message.
    pending: Vec<Arc<EncodedImage>>,
    /// Raw mode: the prompt text (no chat template).
    raw: Option<String>,
    seq: Sequence<Arc<Model>>,
    /// Images attached to `seq`, in order (pointer identity).
    seq_images: Vec<Arc<EncodedImage>>,
    stats: SessionStats,
    /// The vision cache directory, and the model's identity once an image needed it.
    disk: Option<(DiskCache, Option<[u8; 32]>)>,
    /// Disk cache problems not yet taken by the caller.
    warnings: Vec<CacheWarning>,
}

// A server keeps sessions in maps and moves them between threads.
const _: fn() = || {
    fn send<T: Send + 'static>() {}
    send::<Session>();
};

impl Session {
    /// A new, empty conversation with `model`: a [`Model`] (this session then owns it) or an
    /// `Arc<Model>` shared with other sessions.
    ///
    /// The self-attention KV cache for the whole context window is allocated now:
    /// 2 · self-attention layers · `n_kv_heads` · ctx · `head_dim` · 4 bytes (1 GiB for the 11B
    /// model at 4096 tokens).
    ///
    /// # Errors
    ///
    /// - [`Error::Model`] if the model file has no tokenizer.
    /// - [`Error::BadArgument`] if `opts.ctx` exceeds the model's `context_length`.
    /// - [`Error::KvMemory`] if the KV cache of `opts.ctx` tokens does not fit the memory budget.
    /// - [`Error::Template`] if the model's chat template does not compile.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use mllama::{Model, Session, SessionOptions};
    ///
    /// # fn main() -> Result<(), mllama::Error> {
    /// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
    /// let model = Arc::new(Model::load("models/demo/mllama-demo-q4_0.gguf")?);
    /// let opts = SessionOptions { ctx: Some(512), ..Default::default() };
    /// let chat = Session::new(Arc::clone(&model), opts)?;
    /// assert_eq!(chat.context_size(), 512);
    /// assert!(Arc::ptr_eq(chat.model(), &model));
    ///
    /// // More than the model supports is refused.
    /// let too_long = SessionOptions { ctx: Some(1 << 30), ..Default::default() };
    /// let err = Session::new(model, too_long).err().unwrap();
    /// assert!(matches!(err, mllama::Error::BadArgument { name: "ctx", .. }));
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(model: impl Into<Arc<Model>>, opts: SessionOptions) -> Result<Self, Error> {
        let model: Arc<Model> = model.into();
        let tok = model.tokenizer()?;
        let ctx = opts
            .ctx
            .unwrap_or(model.text.cfg.context_length.min(DEFAULT_CTX_CAP))
            .max(1);
        if ctx > model.text.cfg.context_length {
            return Err(Error::bad_argument(
                "ctx",
                format!(
                    "--ctx {ctx}: the model supports at most {} tokens",
                    model.text.cfg.context_length
                ),
            ));
        }
        let half = opts.semantics.cache.half(&model.text);
        check_kv_memory(&model, ctx, half, opts.max_memory)?;
        let template = match model.chat_template() {
            Some(src) => {
                let bos = tok
                    .bos_id()
                    .and_then(|b| tok.token_str(b))
                    .unwrap_or("")
                    .to_string();
                let mut t = ChatTemplate::new(src, &bos)?;
                t.date_string = opts.date_string.clone();
                // Text-only templates (ChatML, Llama 3.1) read `content` as a string.
                t.string_content = model.vision.is_none();
                Some(t)
            }
            None => None,
        };
        let seq = Sequence::new(Arc::clone(&model), ctx, opts.semantics);
        let disk = opts.cache_dir.as_ref().map(|dir| {
            let max = opts.disk_cache_bytes.unwrap_or(DEFAULT_DISK_CACHE_BYTES);
            (DiskCache::new(dir, max), None)
        });
        Ok(Session {
            disk,
            warnings: Vec::new(),
            model,
            opts,
            ctx,
            template,
            messages: Vec::new(),
            images: Vec::new(),
            pending: Vec::new(),
            raw: None,
            seq,
            seq_images: Vec::new(),
            stats: SessionStats::default(),
        })
    }

    /// The model this session runs (shared with every session made from the same `Arc`).
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// The context window in tokens (prompt and answers together).
    ///
    /// ```
    /// # use mllama::{Model, Session, SessionOptions};
    /// use mllama::engine::session::DEFAULT_CTX_CAP;
    /// # fn main() -> Result<(), mllama::Error> {
    /// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
    /// let model = Model::load("models/demo/mllama-demo-q4_0.gguf")?;
    /// let chat = Session::new(model, SessionOptions::default())?;
    /// // The demo model supports 131072 tokens; the default caps the window.
    /// assert_eq!(chat.context_size(), DEFAULT_CTX_CAP);
    /// # Ok(())
    /// # }
    /// ```
    pub fn context_size(&self) -> usize {
        self.ctx
    }

    /// Timings of the last generation and of images added.
    ///
    /// ```
    /// # use mllama::{Model, SamplingParams, Session, SessionOptions};
    /// # fn main() -> Result<(), mllama::Error> {
    /// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
    /// let model = Model::load("models/demo/mllama-demo-q4_0.gguf")?;
    /// let mut chat = Session::new(model, SessionOptions::default())?;
    /// chat.push_user("Hi")?;
    /// let n = chat.generate(&SamplingParams::default(), 4, None)?.count();
    /// let s = chat.stats();
    /// assert!(s.prefill_tokens > 0 && s.decode_tokens <= 4 && n >= s.decode_tokens);
    /// println!("{:.1} tokens/s", s.decode_tokens as f64 / s.decode_s.max(1e-9));
    /// # Ok(())
    /// # }
    /// ```
    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    /// The conversation so far, in order (empty in raw-prompt mode). Messages dropped to fit the
    /// context window are no longer listed.
    ///
    /// ```
    /// # use mllama::{Model, Session, SessionOptions};
    /// use mllama::text::chat::{Part, Role};
    /// # fn main() -> Result<(), mllama::Error> {
    /// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
    /// let model = Model::load("models/demo/mllama-demo-q4_0.gguf")?;
    /// let mut chat = Session::new(model, SessionOptions::default())?;
    /// chat.push_user("Hi")?;
    /// assert_eq!(chat.messages()[0].role, Role::User);
    /// assert_eq!(chat.messages()[0].content, vec![Part::Text { text: "Hi".into() }]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// Add an image file (PNG, JPEG, WebP, GIF or BMP); it goes with the next user message (or
    /// the raw prompt). The image is decoded, preprocessed and run through the vision tower now
    /// (or taken from the model's [`ImageCache`](crate::ImageCache)), so a bad file fails here.
    ///
    /// The Llama 3.2 Vision chat template refuses a system message in a conversation with images
    /// (the error comes from [`generate`](Session::generate)).
    ///
    /// # Errors
    ///
    /// - [`Error::TextOnlyModel`] if the model is text-only (a plain Llama file): checked first.
    /// - [`Error::Io`] if the file cannot be read (missing, no permission).
    ///   A directory too.
    /// - [`Error::LimitExceeded`] if the file is larger than
    ///   [`ImageLimits::max_bytes`](crate::image::ImageLimits::max_bytes) or the image is above
    ///   another of [`SessionOptions::image_limits`]; [`Error::BadImage`] if it is not a decodable
    ///   image. The message names the file.
    ///
    /// ```
    /// # use mllama::{Model, SamplingParams, Session, SessionOptions};
    /// # fn main() -> Result<(), mllama::Error> {
    /// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
    /// let model = Model::load("models/demo/mllama-demo-q4_0.gguf")?;
    /// let mut chat = Session::new(model, SessionOptions::default())?;
    /// chat.add_image("models/demo/example.jpg")?;
    /// chat.push_user("Describe this picture.")?;
    /// let answer = chat.generate(&SamplingParams::default(), 4, None)?;
    /// drop(answer);
    ///
    /// // The same file in a later turn (or another session) comes from the cache.
    /// chat.add_image("models/demo/example.jpg")?;
    /// chat.push_user("And this one?")?;
    /// assert_eq!(chat.stats().cache_hits, 1);
    ///
    /// assert!(matches!(chat.add_image("no/such/file.png"), Err(mllama::Error::Io { .. })));
    /// # Ok(())
    /// # }
    /// ```
    pub fn add_image(&mut self, path: impl AsRef<Path>) -> Result<(), Error> {
        self.model.vision_tower()?;
        let path = path.as_ref();
        let bytes = read_image_file(path, &self.opts.image_limits)?;
        self.add_image_bytes(&bytes, &path.display().to_string())
    }

    /// Add an image held in memory (the bytes of an image file), like
    /// [`add_image`](Session::add_image). `name` labels errors (e.g. a file name or URL).
    ///
    /// # Errors
    ///
    /// [`Error::BadImage`] if the bytes are not a decodable image, [`Error::LimitExceeded`] if it
    /// is above the limits of [`SessionOptions::image_limits`]; the message starts with `name`.
    /// (`max_bytes` is not checked here: the bytes are already in memory.)
    /// [`Error::TextOnlyModel`] if the model is text-only.
    ///
    /// ```
    /// # use mllama::{Model, Session, SessionOptions};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
    /// let model = Model::load("models/demo/mllama-demo-q4_0.gguf")?;
    /// let mut chat = Session::new(model, SessionOptions::default())?;
    /// let bytes = std::fs::read("models/demo/example.jpg")?;
    /// chat.add_image_bytes(&bytes, "example.jpg")?;
    /// chat.push_user("What is in this picture?")?;
    ///
    /// let err = chat.add_image_bytes(b"not an image", "upload.bin").unwrap_err();
    /// assert!(matches!(&err, mllama::Error::BadImage { format: None, .. }));
    /// assert!(err.to_string().starts_with("upload.bin"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn add_image_bytes(&mut self, bytes: &[u8], name: &str) -> Result<(), Error> {
        self.model.vision_tower()?;
        let settings = EntrySettings {
            taps: self.opts.semantics.taps,
            half: self.opts.semantics.cache.half(&self.model.text),
            kernels: crate::kernels::simd_name(),
            vision: self.model.vision_precision(),
        };
        let disk = match &mut self.disk {
            Some((cache, identity)) => {
                let id = identity.get_or_insert_with(|| model_identity(self.model.gguf()));
                Some(DiskSide {
                    cache,
                    identity: id,
                })
            }
            None => None,
        };
        let found = self.model.image_cache.lookup(
            &self.model,
            bytes,
            name,
            settings,
            &self.opts.image_limits,
            disk,
        )?;
        self.warnings.extend(found.warnings);
        match found.source {
            ImageSource::Miss => self.stats.encoded.push(found.encode),
            ImageSource::Memory | ImageSource::Disk => self.stats.cache_hits += 1,
        }
        self.stats.images.push(ImageStats {
            source: found.source,
            vision_s: found.encode.vision_s,
            cross_kv_s: found.encode.cross_kv_s,
            disk_s: found.disk_s,
            prepare_s: found.encode.prepare_s,
        });
        self.pending.push(found.image);
        Ok(())
    }

    /// Take the disk cache problems met since the last call (a corrupt entry that was recomputed,
    /// a cache directory that cannot be written: at most one of those per session, after which
    /// the session writes no more entries). The work went on without the cache; the library
    /// never prints them.
    ///
    /// ```
    /// # use mllama::{Model, Session, SessionOptions};
    /// # fn main() -> Result<(), mllama::Error> {
    /// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
    /// let model = Model::load("models/demo/mllama-demo-q4_0.gguf")?;
    /// // A "directory" that is a file: nothing can be written under it.
    /// let opts = SessionOptions { cache_dir: Some("README.md/cache".into()), ..Default::default() };
    /// let mut chat = Session::new(model, opts)?;
    /// chat.add_image("models/demo/example.jpg")?; // encoded anyway
    /// let warnings = chat.take_warnings();
    /// assert_eq!(warnings.len(), 1);
    /// assert!(warnings[0].to_string().contains("not writable"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn take_warnings(&mut self) -> Vec<CacheWarning> {
        std::mem::take(&mut self.warnings)
    }

    /// Add a user message. Images added since the last message go where the text has
    /// `<|image|>` markers (in order), the rest before the text (see
    /// [`user_message`]).
    ///
    /// # Errors
    ///
    /// [`Error::Conversation`] if the session holds a raw prompt, or the text has more
    /// `<|image|>` markers than images were added.
    ///
    /// ```
    /// # use mllama::{Model, Session, SessionOptions};
    /// use mllama::text::chat::Role;
    /// # fn main() -> Result<(), mllama::Error> {
    /// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
    /// let model = Model::load("models/demo/mllama-demo-q4_0.gguf")?;
    /// let mut chat = Session::new(model, SessionOptions::default())?;
    /// chat.push_user("Name three birds.")?;
    /// assert_eq!(chat.messages()[0].role, Role::User);
    ///
    /// // A marker needs an image added before the message.
    /// let err = chat.push_user("What is in <|image|>?").unwrap_err();
    /// assert!(matches!(err, mllama::Error::Conversation(_)));
    /// # Ok(())
    /// # }
    /// ```
    pub fn push_user(&mut self, text: &str) -> Result<(), Error> {
        if self.raw.is_some() {
            return Err(Error::Conversation(
                "this session holds a raw prompt; chat messages cannot be added".into(),
            ));
        }
        let marker = self.image_marker();
        let m = user_message(text, self.pending.len(), &marker)?;
        self.messages.push(m);
        self.images.append(&mut self.pending);
        Ok(())
    }

    /// Add a system message (only as the first message). The Llama 3.2 Vision chat template
    /// refuses system messages in conversations with images (the error comes from
    /// [`generate`](Session::generate)).
    ///
    /// # Errors
    ///
    /// [`Error::Conversation`] if the conversation already has messages.
    ///
    /// ```
    /// # use mllama::{Model, Session, SessionOptions};
    /// # fn main() -> Result<(), mllama::Error> {
    /// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
    /// let model = Model::load("models/demo/mllama-demo-q4_0.gguf")?;
    /// let mut chat = Session::new(model, SessionOptions::default())?;
    /// chat.push_system("Answer in French.")?;
    /// chat.push_user("Hello!")?;
    /// assert!(matches!(chat.push_system("Too late."), Err(mllama::Error::Conversation(_))));
    /// # Ok(())
    /// # }
    /// ```
    pub fn push_system(&mut self, text: &str) -> Result<(), Error> {
        if !self.messages.is_empty() {
            return Err(Error::Conversation(
                "a system message must come first".into(),
            ));
        }
        self.messages.push(Message::text(Role::System, text));
        Ok(())
    }

    /// Use `text` as the whole prompt, without the chat template (tokenized like HF's processor
    /// with special tokens: BOS added, leading `<|image|>` moved before it; see
    /// [`Tokenizer::encode`](crate::text::tokenizer::Tokenizer::encode)). Images added so far attach to
    /// the `<|image|>` tokens in order; their count must match when generating. Generated text is
    /// appended to the prompt, so calling [`generate`](Session::generate) again continues it.
    ///
    /// # Errors
    ///
    /// [`Error::Conversation`] if the session holds chat messages.
    ///
    /// ```
    /// # use mllama::{Model, SamplingParams, Session, SessionOptions};
    /// # fn main() -> Result<(), mllama::Error> {
    /// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
    /// let model = Model::load("models/demo/mllama-demo-q4_0.gguf")?;
    /// let mut s = Session::new(model, SessionOptions::default())?;
    /// // With images, add them first and write one `<|image|>` per image in the prompt.
    /// s.set_raw_prompt("Once upon a time")?;
    /// let text = {
    ///     let mut g = s.generate(&SamplingParams::default(), 6, None)?;
    ///     for piece in g.by_ref() {
    ///         piece?;
    ///     }
    ///     g.text().to_string()
    /// };
    /// # let _ = text;
    /// // A raw session takes no chat messages.
    /// assert!(matches!(s.push_user("Hi"), Err(mllama::Error::Conversation(_))));
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_raw_prompt(&mut self, text: &str) -> Result<(), Error> {
        if !self.messages.is_empty() {
            return Err(Error::Conversation(
                "this session holds chat messages; use push_user".into(),
            ));
        }
        self.raw = Some(text.to_string());
        self.images.append(&mut self.pending);
        Ok(())
    }

    /// Add an assistant message to the conversation (chat mode): an earlier answer, when a
    /// conversation is replayed from its history (as chat clients resend it every turn).
    ///
    /// # Errors
    ///
    /// [`Error::Conversation`] if the session holds a raw prompt or images are waiting for a user
    /// message.
    pub fn push_assistant(&mut self, text: &str) -> Result<(), Error> {
        if self.raw.is_some() {
            return Err(Error::Conversation(
                "this session holds a raw prompt; chat messages cannot be added".into(),
            ));
        }
        if !self.pending.is_empty() {
            return Err(Error::Conversation(format!(
                "{} image(s) were added before an assistant message; images go with user messages",
                self.pending.len()
            )));
        }
        self.messages.push(Message::text(Role::Assistant, text));
        Ok(())
    }

    /// Forget the conversation, raw prompt and pending images but keep the KV cache: the next
    /// [`generate`](Session::generate) processes only the tokens after the longest prefix its
    /// prompt shares with what the cache holds (with the same images). A server uses this to
    /// replay a conversation that a client resends whole.
    ///
    /// ```
    /// # use mllama::{Model, SamplingParams, Session, SessionOptions};
    /// # fn main() -> Result<(), mllama::Error> {
    /// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
    /// let model = Model::load("models/demo/mllama-demo-q4_0.gguf")?;
    /// let mut chat = Session::new(model, SessionOptions::default())?;
    /// chat.push_user("Hi")?;
    /// let answer = chat.generate(&SamplingParams::default(), 4, None)?.collect::<Result<Vec<_>, _>>()?;
    /// let answer: String = answer.into_iter().map(|p| p.text).collect();
    /// // The client sends the whole conversation again with a new question.
    /// chat.rewind();
    /// chat.push_user("Hi")?;
    /// chat.push_assistant(&answer)?;
    /// chat.push_user("And then?")?;
    /// let n = chat.generate(&SamplingParams::default(), 4, None)?.count();
    /// # let _ = n;
    /// assert!(chat.stats().prefill_tokens < chat.stats().context_tokens);
    /// # Ok(())
    /// # }
    /// ```
    pub fn rewind(&mut self) {
        self.messages.clear();
        self.images.clear();
        self.pending.clear();
        self.raw = None;
    }

    /// Forget the conversation, raw prompt, pending images and KV cache, keeping the options
    /// (encoded images stay in the model's [`ImageCache`](crate::ImageCache)). [`stats`](Session::stats) keep their
    /// values until the next generation.
    ///
    /// ```
    /// # use mllama::{Model, Session, SessionOptions};
    /// # fn main() -> Result<(), mllama::Error> {
    /// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
    /// let model = Model::load("models/demo/mllama-demo-q4_0.gguf")?;
    /// let mut chat = Session::new(model, SessionOptions::default())?;
    /// chat.push_user("Hi")?;
    /// chat.reset();
    /// assert!(chat.messages().is_empty());
    /// chat.set_raw_prompt("Once upon a time")?; // allowed again after a reset
    /// # Ok(())
    /// # }
    /// ```
    pub fn reset(&mut self) {
        self.messages.clear();
        self.images.clear();
        self.pending.clear();
        self.raw = None;
        self.seq = Sequence::new(Arc::clone(&self.model), self.ctx, self.opts.semantics);
        self.seq_images.clear();
    }

    fn image_marker(&self) -> String {
        self.model
            .tokenizer()
            .ok()
            .zip(self.model.text.cfg.image_token)
            .and_then(|(t, image)| t.token_str(image))
            .unwrap_or("<|image|>")
            .to_string()
    }

    /// Token ids of the prompt to continue from.
    fn prompt_tokens(&self) -> Result<Vec<u32>, Error> {
        let tok = self.model.tokenizer()?;
        match &self.raw {
            Some(text) => tok.encode(text, true),
            None => {
                let t = self.template.as_ref().ok_or_else(|| {
                    Error::Template(
                        "the model has no chat template: use a raw prompt (--raw)".into(),
                    )
                })?;
                let text = t.render(&self.messages, true)?;
                tok.encode(&text, false)
            }
        }
    }

    /// Drop the oldest turns until `need` more tokens fit (chat mode). Returns the prompt.
    fn fit_context(&mut self, max_new: usize) -> Result<Vec<u32>, Error> {
        loop {
            let ids = self.prompt_tokens()?;
            if ids.len() + max_new.min(1) <= self.ctx {
                return Ok(ids);
            }
            // Oldest user/assistant exchange out (keep a system message and the last message).
            let first = usize::from(self.messages.first().map(|m| m.role) == Some(Role::System));
            if self.raw.is_some() || self.messages.len() <= first + 1 {
                return Err(Error::ContextFull {
                    needed: ids.len(),
                    context: self.ctx,
                    setting: "--ctx, SessionOptions::ctx",
                });
            }
            let removed = self.messages.remove(first);
            let n = removed.n_images();
            self.images.drain(..n);
            if self.messages.get(first).map(|m| m.role) == Some(Role::Assistant) {
                let r = self.messages.remove(first);
                self.images.drain(..r.n_images());
            }
        }
    }

    /// Generate the assistant's answer (chat mode) or the continuation of the raw prompt: at most
    /// `max_tokens` tokens (and no more than the context window has room for), stopping at an
    /// end-of-turn token ([`Tokenizer::eos_ids`](crate::text::tokenizer::Tokenizer::eos_ids) or the
    /// model's generation `eos_ids`; the stop token itself is not returned).
    ///
    /// The prompt is processed (prefill) before this returns; each call to
    /// [`Generation::next`](Iterator::next) then samples one token with `params` and runs one
    /// decode step, so pieces come as soon as each token is chosen. `cancel` is checked before
    /// every token: set it (from another thread or a Ctrl-C handler) to stop early. The answer so
    /// far becomes part of the conversation when the [`Generation`] is exhausted or dropped.
    ///
    /// # Errors
    ///
    /// - [`Error::BadArgument`] if `params` are out of range ([`SamplingParams::validate`]).
    /// - [`Error::Conversation`] if images were added after the last user message, there is no
    ///   user message to answer (chat mode), or the number of `<|image|>` tokens differs from the
    ///   number of images.
    /// - [`Error::Template`] if the model has no chat template (chat mode; use
    ///   [`set_raw_prompt`](Session::set_raw_prompt)) or the template fails to render.
    /// - [`Error::ContextFull`] if the prompt does not fit in the context window even after
    ///   dropping old turns.
    /// - [`Error::Model`] if the model has no tokenizer.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use mllama::{Model, SamplingParams, Session, SessionOptions};
    ///
    /// # fn main() -> Result<(), mllama::Error> {
    /// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
    /// let model = Model::load("models/demo/mllama-demo-q4_0.gguf")?;
    /// let mut chat = Session::new(model, SessionOptions::default())?;
    /// chat.push_user("Write a long story.")?;
    ///
    /// // Seeded sampling: the same seed gives the same text.
    /// let params =
    ///     SamplingParams { temperature: 0.7, top_p: 0.9, seed: Some(42), ..Default::default() };
    /// let stop = AtomicBool::new(false);
    /// let mut answer = String::new();
    /// for piece in chat.generate(&params, 100, Some(&stop))? {
    ///     answer.push_str(&piece?.text);
    ///     if answer.len() > 10 {
    ///         stop.store(true, Ordering::Relaxed); // e.g. from a Ctrl-C handler
    ///     }
    /// }
    /// assert!(chat.stats().decode_tokens < 100);
    /// # Ok(())
    /// # }
    /// ```
    pub fn generate<'s>(
        &'s mut self,
        params: &SamplingParams,
        max_tokens: usize,
        cancel: Option<&'s AtomicBool>,
    ) -> Result<Generation<'s>, Error> {
        let sampler = Sampler::new(params.clone())?;
        if !self.pending.is_empty() {
            return Err(Error::Conversation(format!(
                "{} image(s) were added after the last user message; add a message for them",
                self.pending.len()
            )));
        }
        if self.raw.is_none() && self.messages.last().map(|m| m.role) != Some(Role::User) {
            return Err(Error::Conversation(
                "nothing to answer: add a user message first".into(),
            ));
        }
        self.model.tokenizer()?;
        let ids = self.fit_context(max_tokens)?;
        let image_token = self.model.text.cfg.image_token;
        let n_img_tokens = ids.iter().filter(|&&t| Some(t) == image_token).count();
        if n_img_tokens != self.images.len() {
            return Err(Error::Conversation(format!(
                "the prompt has {n_img_tokens} <|image|> tokens but {} images were given",
                self.images.len()
            )));
        }
        let t0 = Instant::now();
        let reused = self.sync_sequence(&ids);
        let new = &ids[reused..];
        let logits = self.seq.feed(new, false)?.to_vec();
        self.stats.prefill_tokens = new.len();
        self.stats.prefill_s = t0.elapsed().as_secs_f64();
        self.stats.decode_tokens = 0;
        self.stats.decode_s = 0.0;
        self.stats.context_tokens = self.seq.len();
        let room = self.ctx - self.seq.len();
        // The generation borrows the model shared and the conversation's state mutably.
        let Session {
            model,
            seq,
            stats,
            messages,
            raw,
            ..
        } = self;
        let model: &'s Model = model;
        Ok(Generation {
            stream: model.tokenizer()?.stream(true),
            model,
            seq,
            stats,
            messages,
            raw,
            sampler,
            logits,
            pending_feed: None,
            produced: 0,
            max: max_tokens.min(room),
            cancel,
            done: false,
            text: String::new(),
            started: Instant::now(),
        })
    }

    /// Make the sequence's cache a prefix of `ids` with the right images attached; returns how
    /// many tokens of `ids` are already processed (at most `ids.len() − 1`, so that the last
    /// token is fed and gives logits).
    fn sync_sequence(&mut self, ids: &[u32]) -> usize {
        let same = |a: &[Arc<EncodedImage>], b: &[Arc<EncodedImage>]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y))
        };
        let images_prefix = self.seq_images.len() <= self.images.len()
            && same(&self.seq_images, &self.images[..self.seq_images.len()]);
        // Under HF's semantics, text before the first image attends to every image: a new image
        // changes those rows, so the whole prompt is processed again (images stay cached).
        let reusable = if self.opts.semantics.meta_cross_attn {
            images_prefix
        } else {
            same(&self.seq_images, &self.images)
        };
        let mut keep = 0;
        if reusable {
            let cached = self.seq.tokens();
            keep = cached.iter().zip(ids).take_while(|(a, b)| a == b).count();
            keep = keep.min(ids.len().saturating_sub(1));
            // Under HF's semantics, rows before the first image read the padding tiles' keys,
            // which the sequence dropped after its first prefill: recompute them from scratch.
            let first_image = ids
                .iter()
                .position(|&t| Some(t) == self.model.text.cfg.image_token);
            if !self.opts.semantics.meta_cross_attn && first_image.is_some_and(|p| keep <= p) {
                keep = 0;
            }
        }
        if keep == 0 {
            self.seq = Sequence::new(Arc::clone(&self.model), self.ctx, self.opts.semantics);
            self.seq_images.clear();
        } else {
            self.seq.truncate(keep);
        }
        for im in &self.images[self.seq_images.len()..] {
            self.seq.attach_encoded(im);
        }
        self.seq_images = self.images.clone();
        keep
    }
}

/// Read an image file with the size limit checked first (a clear error for a missing file).
fn read_image_file(path: &Path, limits: &ImageLimits) -> Result<Vec<u8>, Error> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::io(path, crate::image::is_a_directory()));
    }
    crate::image::check_file_size(meta.len(), limits, &path.display().to_string())?;
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// The answer being generated: an iterator of `Result<`[`Piece`]`, `[`Error`]`>`, one item per
/// token, made by [`Session::generate`]. It borrows the session mutably (so it stays on the
/// session's thread; the session itself can move once the generation is done).
///
/// Iteration ends at an end-of-turn token, after `max_tokens`, when the cancel flag is set, or
/// after the first error (which is returned as the last item). When the answer ends inside a
/// multi-byte character, a last piece with id [`Piece::FLUSH`] carries the held-back bytes as
/// U+FFFD. When the generation is exhausted or dropped, its text is added to the conversation and
/// [`Session::stats`] are updated; dropping it early keeps the answer so far.
pub struct Generation<'s> {
    model: &'s Model,
    seq: &'s mut Sequence<Arc<Model>>,
    stats: &'s mut SessionStats,
    messages: &'s mut Vec<Message>,
    raw: &'s mut Option<String>,
    sampler: Sampler,
    stream: TokenStream<'s>,
    logits: Vec<f32>,
    pending_feed: Option<u32>,
    produced: usize,
    max: usize,
    cancel: Option<&'s AtomicBool>,
    done: bool,
    text: String,
    started: Instant,
}

impl Generation<'_> {
    /// The text generated so far: the concatenation of every piece returned.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The session's timings so far: the prefill figures (`prefill_tokens`, `prefill_s`) and
    /// `context_tokens` (the prompt's length) are final when the generation starts; the decode
    /// figures when it ends.
    pub fn stats(&self) -> &SessionStats {
        self.stats
    }

    fn step(&mut self) -> Result<Option<Piece>, Error> {
        if let Some(t) = self.pending_feed.take() {
            let l = self.seq.feed(&[t], false)?;
            self.logits.clear();
            self.logits.extend_from_slice(l);
        }
        if self.produced >= self.max || self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Ok(None);
        }
        let tok = self.model.tokenizer()?;
        let id = self.sampler.sample(&self.logits, self.seq.tokens());
        let stop = tok.is_eos(id) || self.model.cfg.generation.eos_ids.contains(&id);
        if stop {
            return Ok(None);
        }
        self.produced += 1;
        self.pending_feed = Some(id);
        let text = self.stream.push(id)?;
        self.text.push_str(&text);
        Ok(Some(Piece { id, text }))
    }

    fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let rest = self.stream.finish();
        self.text.push_str(&rest);
        self.stats.decode_tokens = self.produced;
        self.stats.decode_s = self.started.elapsed().as_secs_f64();
        self.stats.context_tokens = self.seq.len();
        match &mut *self.raw {
            Some(raw) => raw.push_str(&self.text),
            None => self.messages.push(Message {
                role: Role::Assistant,
                content: vec![Part::Text {
                    text: self.text.clone(),
                }],
            }),
        }
    }
}

impl Iterator for Generation<'_> {
    type Item = Result<Piece, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(p)) => Some(Ok(p)),
            Ok(None) => {
                // The last characters held back by the detokenizer, if any.
                let before = self.text.len();
                self.finish();
                let tail = self.text[before..].to_string();
                (!tail.is_empty()).then_some(Ok(Piece {
                    id: Piece::FLUSH,
                    text: tail,
                }))
            }
            Err(e) => {
                self.finish();
                Some(Err(e))
            }
        }
    }
}

impl Drop for Generation<'_> {
    fn drop(&mut self) {
        self.finish();
    }
}
