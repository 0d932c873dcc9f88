//! The library API for applications: load a model, open a [`Session`], add images, add user
//! messages, and generate an answer as an iterator of text pieces, with cancellation.
//!
//! ```no_run
//! use mllama::{Model, Session, SessionOptions, SamplingParams};
//!
//! # fn main() -> Result<(), mllama::Error> {
//! let model = Model::load("llama-3.2-11b-vision-q4_0.gguf")?;
//! let mut chat = Session::new(&model, SessionOptions::default())?;
//! chat.add_image("photo.jpg")?;
//! chat.push_user("What is in this picture?")?;
//! for piece in chat.generate(&SamplingParams::default(), 256, None)? {
//!     print!("{}", piece?.text);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The library never prints; errors are [`crate::Error`] values.
//!
//! ## Caching
//!
//! Each image is decoded, preprocessed and run through the vision tower once; its
//! cross-attention K/V (for every cross layer) are kept in the model's [`ImageCache`], keyed by a
//! SHA-256 of the image bytes and the vision-tap convention, so the same picture costs no vision
//! work again in any session of the process. A session keeps the self-attention KV cache of the
//! conversation and only processes what a new turn adds.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::chat::{user_message, ChatTemplate, Message, Part, Role};
use crate::model::{Model, Semantics, TapConvention};
use crate::preprocess::{self, ImageLimits};
use crate::sampling::{Sampler, SamplingParams};
use crate::session::Sequence;
use crate::tokenizer::TokenStream;
use crate::Error;

/// Default bound of the image cache: 2 GiB of cross-attention K/V (about 5 images of the 11B
/// model, 40 of the demo model).
pub const DEFAULT_IMAGE_CACHE_BYTES: usize = 2 << 30;

/// One image after the vision tower: its cross-attention K/V for every cross layer, head-major
/// `[n_kv_heads][tile_slots · tokens_per_tile][head_dim]`, all tile slots kept.
pub struct EncodedImage {
    /// Per cross layer: (K with k_norm applied, V).
    pub kv: Vec<(Vec<f32>, Vec<f32>)>,
    /// Real tiles of the image.
    pub n_tiles: usize,
    /// Tile slots the K/V cover (the model's `max_tiles`).
    pub tile_slots: usize,
    /// Vision tokens per tile.
    pub tokens_per_tile: usize,
    /// Seconds spent in the vision tower + projector.
    pub vision_s: f64,
    /// Seconds spent computing the cross-attention K/V.
    pub cross_kv_s: f64,
}

impl EncodedImage {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.kv.iter().map(|(k, v)| 4 * (k.len() + v.len())).sum()
    }
}

struct CacheEntry {
    key: [u8; 32],
    image: Arc<EncodedImage>,
    last_used: u64,
}

/// Encoded images kept across turns and sessions, bounded in bytes; the least recently used
/// entry is dropped when a new one would exceed the bound (an entry a session still holds stays
/// alive in that session). A single image larger than the bound is used but not kept.
pub struct ImageCache {
    max_bytes: Mutex<usize>,
    entries: Mutex<(Vec<CacheEntry>, u64)>,
}

impl ImageCache {
    /// An empty cache holding at most `max_bytes` of K/V.
    pub fn new(max_bytes: usize) -> Self {
        ImageCache {
            max_bytes: Mutex::new(max_bytes),
            entries: Mutex::new((Vec::new(), 0)),
        }
    }

    /// Change the bound (evicting as needed).
    pub fn set_max_bytes(&self, max_bytes: usize) {
        *self.max_bytes.lock().unwrap_or_else(|e| e.into_inner()) = max_bytes;
        let mut g = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        Self::evict(&mut g.0, max_bytes, 0);
    }

    /// Entries and bytes held.
    pub fn usage(&self) -> (usize, usize) {
        let g = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        (g.0.len(), g.0.iter().map(|e| e.image.bytes()).sum())
    }

    fn evict(entries: &mut Vec<CacheEntry>, max: usize, incoming: usize) {
        loop {
            let used: usize = entries.iter().map(|e| e.image.bytes()).sum();
            if used + incoming <= max || entries.is_empty() {
                return;
            }
            let (i, _) = entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .unwrap_or((0, &entries[0]));
            entries.remove(i);
        }
    }

    /// The cache key of image bytes under a tap convention.
    pub fn key(bytes: &[u8], taps: TapConvention) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update([taps as u8]);
        h.update(bytes);
        h.finalize().into()
    }

    fn get(&self, key: &[u8; 32]) -> Option<Arc<EncodedImage>> {
        let mut g = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        g.1 += 1;
        let tick = g.1;
        let e = g.0.iter_mut().find(|e| &e.key == key)?;
        e.last_used = tick;
        Some(Arc::clone(&e.image))
    }

    fn insert(&self, key: [u8; 32], image: Arc<EncodedImage>) {
        let max = *self.max_bytes.lock().unwrap_or_else(|e| e.into_inner());
        let mut g = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if image.bytes() > max {
            return;
        }
        Self::evict(&mut g.0, max, image.bytes());
        g.1 += 1;
        let tick = g.1;
        g.0.push(CacheEntry {
            key,
            image,
            last_used: tick,
        });
    }

    /// The encoded image for these bytes: from the cache, or decoded, preprocessed and run through
    /// the vision tower now. `name` labels errors (a file name). Returns whether it was cached.
    pub fn get_or_encode(
        &self,
        model: &Model,
        bytes: &[u8],
        name: &str,
        taps: TapConvention,
        limits: &ImageLimits,
    ) -> Result<(Arc<EncodedImage>, bool), Error> {
        let key = Self::key(bytes, taps);
        if let Some(im) = self.get(&key) {
            return Ok((im, true));
        }
        let img = preprocess::decode_image(bytes, limits).map_err(|e| match e {
            Error::Invalid(m) => Error::Invalid(format!("{name}: {m}")),
            other => other,
        })?;
        let pre = preprocess::preprocess(&img, &model.cfg.preprocess)?;
        let im = Arc::new(model.encode_image(&pre, taps));
        self.insert(key, Arc::clone(&im));
        Ok((im, false))
    }
}

/// How a session runs.
#[derive(Clone, Debug, Default)]
pub struct SessionOptions {
    /// Context window in tokens (`None`: the model's, capped at [`DEFAULT_CTX_CAP`]).
    pub ctx: Option<usize>,
    pub semantics: Semantics,
    pub image_limits: ImageLimits,
    /// Render the chat template with this `date_string` instead of today's date.
    pub date_string: Option<String>,
}

/// Default upper bound of the context window: a self-attention KV cache of 4096 tokens is 1 GiB
/// for the 11B model (f32 keys and values).
pub const DEFAULT_CTX_CAP: usize = 4096;

/// Timings of the last [`Session::generate`] and of images added.
#[derive(Clone, Debug, Default)]
pub struct SessionStats {
    /// Vision tower + projector seconds of each image encoded (not cached) by this session.
    pub vision_s: Vec<f64>,
    /// Images found in the cache.
    pub cache_hits: usize,
    /// Prompt tokens processed by the last generation (not reused from the KV cache).
    pub prefill_tokens: usize,
    pub prefill_s: f64,
    /// Tokens generated and the seconds they took (sampling and decoding).
    pub decode_tokens: usize,
    pub decode_s: f64,
    /// Tokens of the conversation in the KV cache.
    pub context_tokens: usize,
}

/// One generated token and the text it completes (possibly empty: a multi-byte character split
/// across tokens comes out whole with the token that completes it).
#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    /// The token id, or [`Piece::FLUSH`] for the bytes a cut-off character left at the end.
    pub id: u32,
    pub text: String,
}

impl Piece {
    /// The id of the final piece that flushes held-back bytes (not a token).
    pub const FLUSH: u32 = u32::MAX;
}

/// A conversation (or a raw prompt) with its caches.
pub struct Session<'m> {
    model: &'m Model,
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
    seq: Sequence<'m>,
    /// Images attached to `seq`, in order (pointer identity).
    seq_images: Vec<Arc<EncodedImage>>,
    stats: SessionStats,
}

impl<'m> Session<'m> {
    /// A new conversation with `model`.
    pub fn new(model: &'m Model, opts: SessionOptions) -> Result<Self, Error> {
        let tok = model.tokenizer()?;
        let ctx = opts
            .ctx
            .unwrap_or(model.text.cfg.context_length.min(DEFAULT_CTX_CAP))
            .max(1);
        if ctx > model.text.cfg.context_length {
            return Err(Error::Invalid(format!(
                "--ctx {ctx}: the model supports at most {} tokens",
                model.text.cfg.context_length
            )));
        }
        let template = match tok.chat_template() {
            Some(src) => {
                let bos = tok
                    .bos_id()
                    .and_then(|b| tok.token_str(b))
                    .unwrap_or("")
                    .to_string();
                let mut t = ChatTemplate::new(src, &bos)?;
                t.date_string = opts.date_string.clone();
                Some(t)
            }
            None => None,
        };
        let seq = Sequence::new(model, ctx, opts.semantics);
        Ok(Session {
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

    /// The context window in tokens.
    pub fn context_size(&self) -> usize {
        self.ctx
    }

    /// Timings of the last generation and of images added.
    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    /// The conversation so far.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// Add an image file; it goes with the next user message. The image is decoded and encoded
    /// now (or taken from the cache), so a bad file fails here.
    pub fn add_image(&mut self, path: impl AsRef<Path>) -> Result<(), Error> {
        let path = path.as_ref();
        let bytes = read_image_file(path, &self.opts.image_limits)?;
        self.add_image_bytes(&bytes, &path.display().to_string())
    }

    /// Add an image from memory (`name` labels errors).
    pub fn add_image_bytes(&mut self, bytes: &[u8], name: &str) -> Result<(), Error> {
        let (im, hit) = self.model.image_cache.get_or_encode(
            self.model,
            bytes,
            name,
            self.opts.semantics.taps,
            &self.opts.image_limits,
        )?;
        if hit {
            self.stats.cache_hits += 1;
        } else {
            self.stats.vision_s.push(im.vision_s);
        }
        self.pending.push(im);
        Ok(())
    }

    /// Add a user message. Images added since the last message go where the text has
    /// `<|image|>` markers, the rest before the text.
    pub fn push_user(&mut self, text: &str) -> Result<(), Error> {
        if self.raw.is_some() {
            return Err(Error::Invalid(
                "this session holds a raw prompt; chat messages cannot be added".into(),
            ));
        }
        let marker = self.image_marker();
        let m = user_message(text, self.pending.len(), &marker)?;
        self.messages.push(m);
        self.images.append(&mut self.pending);
        Ok(())
    }

    /// Add a system message (only before the first user message).
    pub fn push_system(&mut self, text: &str) -> Result<(), Error> {
        if !self.messages.is_empty() {
            return Err(Error::Invalid("a system message must come first".into()));
        }
        self.messages.push(Message::text(Role::System, text));
        Ok(())
    }

    /// Use `text` as the whole prompt, without the chat template (tokenized like HF's processor
    /// with special tokens: BOS added, leading `<|image|>` moved before it). Images added so far
    /// attach to the `<|image|>` tokens in order.
    pub fn set_raw_prompt(&mut self, text: &str) -> Result<(), Error> {
        if !self.messages.is_empty() {
            return Err(Error::Invalid(
                "this session holds chat messages; use push_user".into(),
            ));
        }
        self.raw = Some(text.to_string());
        self.images.append(&mut self.pending);
        Ok(())
    }

    /// Forget the conversation (cached images stay in the model's cache).
    pub fn reset(&mut self) {
        self.messages.clear();
        self.images.clear();
        self.pending.clear();
        self.raw = None;
        self.seq = Sequence::new(self.model, self.ctx, self.opts.semantics);
        self.seq_images.clear();
    }

    fn image_marker(&self) -> String {
        self.model
            .tokenizer()
            .ok()
            .and_then(|t| t.token_str(self.model.text.cfg.image_token))
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
                    Error::Invalid(
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
                return Err(Error::Invalid(format!(
                    "prompt too long: {} tokens do not fit in the context of {} tokens (raise --ctx)",
                    ids.len(),
                    self.ctx
                )));
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

    /// Generate the assistant's answer: at most `max_tokens` tokens, stopping at an end-of-turn
    /// token. Pieces come as soon as each token is chosen; `cancel` (checked before every token)
    /// stops early. The answer becomes part of the conversation when the iterator is dropped.
    pub fn generate<'s>(
        &'s mut self,
        params: &SamplingParams,
        max_tokens: usize,
        cancel: Option<&'s AtomicBool>,
    ) -> Result<Generation<'s, 'm>, Error> {
        let sampler = Sampler::new(params.clone())?;
        if !self.pending.is_empty() {
            return Err(Error::Invalid(format!(
                "{} image(s) were added after the last user message; add a message for them",
                self.pending.len()
            )));
        }
        if self.raw.is_none() && self.messages.last().map(|m| m.role) != Some(Role::User) {
            return Err(Error::Invalid(
                "nothing to answer: add a user message first".into(),
            ));
        }
        let model: &'m Model = self.model;
        let tok = model.tokenizer()?;
        let ids = self.fit_context(max_tokens)?;
        let image_token = self.model.text.cfg.image_token;
        let n_img_tokens = ids.iter().filter(|&&t| t == image_token).count();
        if n_img_tokens != self.images.len() {
            return Err(Error::Invalid(format!(
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
        Ok(Generation {
            stream: tok.stream(true),
            session: self,
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
                .position(|&t| t == self.model.text.cfg.image_token);
            if !self.opts.semantics.meta_cross_attn && first_image.is_some_and(|p| keep <= p) {
                keep = 0;
            }
        }
        if keep == 0 {
            self.seq = Sequence::new(self.model, self.ctx, self.opts.semantics);
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
        return Err(Error::Invalid(format!(
            "{}: is a directory, not an image",
            path.display()
        )));
    }
    if meta.len() > limits.max_bytes {
        return Err(Error::Invalid(format!(
            "{}: {} bytes, more than the {}-byte limit for images",
            path.display(),
            meta.len(),
            limits.max_bytes
        )));
    }
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// The answer being generated: an iterator of [`Piece`]s.
pub struct Generation<'s, 'm> {
    session: &'s mut Session<'m>,
    sampler: Sampler,
    stream: TokenStream<'m>,
    logits: Vec<f32>,
    pending_feed: Option<u32>,
    produced: usize,
    max: usize,
    cancel: Option<&'s AtomicBool>,
    done: bool,
    text: String,
    started: Instant,
}

impl Generation<'_, '_> {
    /// The text generated so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn step(&mut self) -> Result<Option<Piece>, Error> {
        if let Some(t) = self.pending_feed.take() {
            let l = self.session.seq.feed(&[t], false)?;
            self.logits.clear();
            self.logits.extend_from_slice(l);
        }
        if self.produced >= self.max || self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Ok(None);
        }
        let tok = self.session.model.tokenizer()?;
        let id = self.sampler.sample(&self.logits, self.session.seq.tokens());
        let stop = tok.is_eos(id) || self.session.model.cfg.generation.eos_ids.contains(&id);
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
        let s = &mut *self.session;
        s.stats.decode_tokens = self.produced;
        s.stats.decode_s = self.started.elapsed().as_secs_f64();
        s.stats.context_tokens = s.seq.len();
        match &mut s.raw {
            Some(raw) => raw.push_str(&self.text),
            None => s.messages.push(Message {
                role: Role::Assistant,
                content: vec![Part::Text {
                    text: self.text.clone(),
                }],
            }),
        }
    }
}

impl Iterator for Generation<'_, '_> {
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

impl Drop for Generation<'_, '_> {
    fn drop(&mut self) {
        self.finish();
    }
}
