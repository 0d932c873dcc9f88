//! A token sequence being processed: its self-attention KV cache, the cross-attention K/V of its
//! images, and which vision keys each text position may see.
//!
//! Images attach in the order of the `<|image|>` tokens. The vision tower runs once per image
//! ([`Sequence::attach_image`]); its projected states are turned into per-layer cross K/V right
//! away and then dropped. Every later [`Sequence::feed`] (prefill chunk or one decode token) runs
//! only the text stack against the two caches.
//!
//! This is the low-level interface (token ids in, logits out) that `mllama eval` and the
//! benchmarks use; applications normally use [`Session`](crate::Session), which adds the chat
//! template, sampling and detokenization.
//!
//! ```
//! use mllama::engine::sequence::Sequence;
//! use mllama::text::sampling::argmax;
//! use mllama::{Model, Semantics};
//!
//! # fn main() -> Result<(), mllama::Error> {
//! # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
//! let model = Model::load("models/demo/mllama-demo-q4_0.gguf")?;
//! let tok = model.tokenizer()?;
//! let mut seq = Sequence::new(&model, 64, Semantics::default());
//! let prompt = tok.encode("The capital of France is", true)?;
//! // Prefill: logits of every prompt position, [n, V].
//! let v = model.cfg.text.vocab_size;
//! let logits = seq.feed(&prompt, true)?;
//! assert_eq!(logits.len(), prompt.len() * v);
//! // Greedy decoding, one token at a time: logits of the last row only, [V].
//! let mut next = argmax(&logits[(prompt.len() - 1) * v..]) as u32;
//! for _ in 0..3 {
//!     next = argmax(seq.feed(&[next], false)?) as u32;
//! }
//! assert_eq!(seq.len(), prompt.len() + 3);
//! # Ok(())
//! # }
//! ```

use std::ops::{Deref, Range};
use std::sync::Arc;

use crate::models::mllama::text::{CrossCache, KvCache, Workspace};
use crate::models::mllama::vision::VisionOutput;
use crate::models::mllama::{Model, Semantics};
use crate::Error;

/// For each image, the half-open range of token positions that attend to it, following HF's
/// processor (`get_cross_attention_token_mask`): image i is seen from its own `<|image|>` token up
/// to the next image token; the last image until the end; a run of consecutive image tokens is
/// seen from each token to the end of whatever follows the run.
///
/// ```
/// use mllama::engine::sequence::image_ranges;
///
/// const IMG: u32 = 9;
/// assert_eq!(image_ranges(&[1, IMG, 3, IMG, 4, 5], IMG), vec![1..3, 3..6]);
/// assert_eq!(image_ranges(&[1, IMG, IMG, 4, 5], IMG), vec![1..5, 2..5]);
/// ```
pub fn image_ranges(tokens: &[u32], image_token: u32) -> Vec<Range<usize>> {
    let locs: Vec<usize> = tokens
        .iter()
        .enumerate()
        .filter(|(_, &t)| t == image_token)
        .map(|(i, _)| i)
        .collect();
    let len = tokens.len();
    if locs.is_empty() {
        return Vec::new();
    }
    let mut r: Vec<Range<usize>> = locs
        .windows(2)
        .map(|w| w[0]..w[1])
        .chain(std::iter::once(locs[locs.len() - 1]..len))
        .collect();
    let mut last_end = len;
    for m in r.iter_mut().rev() {
        if m.start + 1 == m.end {
            m.end = last_end;
        }
        last_end = m.end;
    }
    r
}

/// One sequence of tokens with its caches: the self-attention [`KvCache`] (allocated for the
/// whole context at creation) and the [`CrossCache`] of attached images.
///
/// `M` is how the sequence holds its [`Model`]: any pointer to one, e.g. `&Model` (a sequence
/// that lives inside the model's scope, as in the benchmarks) or `Arc<Model>` (the default: an
/// owned, `Send` sequence, as inside a [`Session`](crate::Session)).
pub struct Sequence<M: Deref<Target = Model> = Arc<Model>> {
    model: M,
    sem: Semantics,
    tokens: Vec<u32>,
    kv: KvCache,
    cross: CrossCache,
    ws: Workspace,
    x: Vec<f32>,
    logits: Vec<f32>,
    rows: Vec<Vec<Range<usize>>>,
    row_mask: Vec<bool>,
    /// [`image_ranges`] of `tokens`, kept up to date without rescanning on decode steps.
    ranges: Vec<Range<usize>>,
}

impl<M: Deref<Target = Model>> Sequence<M> {
    /// An empty sequence with room for `ctx` tokens, run with the numerics of `sem`. Allocates
    /// the KV cache now ([`KvCache::bytes_for`] bytes).
    pub fn new(model: M, ctx: usize, sem: Semantics) -> Self {
        let half = sem.cache.half(&model.text);
        Sequence {
            kv: KvCache::new(&model.text, ctx, half),
            cross: CrossCache::with_precision(&model.text, half),
            model,
            sem,
            tokens: Vec::with_capacity(ctx),
            ws: Workspace::new(),
            x: Vec::new(),
            logits: Vec::new(),
            rows: Vec::new(),
            row_mask: Vec::new(),
            ranges: Vec::new(),
        }
    }

    /// The tokens processed so far, in order.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Number of tokens processed (positions in the KV cache).
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether no token has been processed yet.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Number of images attached.
    pub fn n_images(&self) -> usize {
        self.cross.images.len()
    }

    /// The cross-attention K/V of the attached images (e.g. for its size in bytes).
    pub fn cross_cache(&self) -> &CrossCache {
        &self.cross
    }

    /// Attach the next image: compute and cache its cross-attention K/V for every cross layer.
    /// `out` is the vision tower's output for the image and `n_tiles` its number of real tiles.
    /// Attach images before feeding the `<|image|>` tokens that refer to them.
    ///
    /// # Panics
    ///
    /// If the model is text-only (it has no vision tower that could have made `out`).
    pub fn attach_image(&mut self, out: &VisionOutput, n_tiles: usize) {
        let vc = (self.model.cfg.vision.as_ref()).expect("attach_image needs a vision model");
        let (t, p) = (vc.max_tiles, vc.tokens_per_tile());
        let kv = self.model.text.cross_kv(&out.states, t * p);
        self.push_kv(kv, t, n_tiles, p);
    }

    /// Attach the next image from its already computed K/V (an image cache entry).
    pub fn attach_encoded(&mut self, im: &crate::models::mllama::image_cache::EncodedImage) {
        self.push_kv(im.kv.clone(), im.tile_slots, im.n_tiles, im.tokens_per_tile);
    }

    fn push_kv(&mut self, kv: Vec<(Vec<f32>, Vec<f32>)>, slots: usize, n_tiles: usize, p: usize) {
        self.cross.push(kv, slots, n_tiles, p);
        if self.sem.meta_cross_attn {
            // Rows without an image use no keys under Meta's semantics: padding tiles are never
            // read, so drop them at once.
            self.cross.trim_padding_tiles();
        }
    }

    /// Forget every token after the first `len` (their self-attention K/V). Attached images stay.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.tokens.len() {
            return;
        }
        self.tokens.truncate(len);
        self.kv.truncate(len);
        self.ranges = match self.model.text.cfg.image_token {
            Some(image) => image_ranges(&self.tokens, image),
            None => Vec::new(),
        };
    }

    /// The model this sequence runs.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The semantics this sequence runs with.
    pub fn semantics(&self) -> Semantics {
        self.sem
    }

    /// Room in tokens (the `ctx` given to [`Sequence::new`]).
    pub fn capacity(&self) -> usize {
        self.kv.ctx
    }

    /// Process `tokens` (a prompt chunk or one generated token). Returns the logits of every new
    /// row (`all_logits`, `[n, V]`) or of the last row only (`[V]`); the slice is valid until the
    /// next call.
    ///
    /// # Errors
    ///
    /// Checked before anything changes: [`Error::BadArgument`] if `tokens` is empty,
    /// [`Error::ContextFull`] if the sequence would exceed its capacity,
    /// [`Error::Conversation`] if it would hold more `<|image|>` tokens than images are attached.
    /// [`Error::BadArgument`] if an id is outside the embedding table, [`Error::Model`] if the
    /// logits are not finite (weights whose finite values overflow f32: a corrupt or untrained
    /// file); then the sequence must be discarded or [truncated](Sequence::truncate) to its
    /// previous length.
    pub fn feed(&mut self, tokens: &[u32], all_logits: bool) -> Result<&[f32], Error> {
        let model = &*self.model;
        let c = &model.text.cfg;
        let n = tokens.len();
        if n == 0 {
            return Err(Error::bad_argument(
                "tokens",
                "nothing to process: no tokens",
            ));
        }
        if self.kv.len + n > self.kv.ctx {
            return Err(Error::ContextFull {
                needed: self.kv.len + n,
                context: self.kv.ctx,
                setting: "the ctx of Sequence::new",
            });
        }
        let pos0 = self.tokens.len();
        if let Some(image) = c.image_token.filter(|i| tokens.contains(i)) {
            let mut all = self.tokens.clone();
            all.extend_from_slice(tokens);
            let ranges = image_ranges(&all, image);
            if ranges.len() > self.cross.images.len() {
                return Err(Error::Conversation(format!(
                    "the text has {} <|image|> tokens but only {} images were given",
                    ranges.len(),
                    self.cross.images.len()
                )));
            }
            self.ranges = ranges;
        } else {
            // No new image token: ranges that ran to the end still do.
            for r in &mut self.ranges {
                if r.end == pos0 {
                    r.end = pos0 + n;
                }
            }
        }
        self.tokens.extend_from_slice(tokens);
        let ranges = &self.ranges;

        // Which vision keys each new row sees.
        let has_images = !self.cross.images.is_empty();
        self.rows.resize_with(n, Vec::new);
        self.row_mask.resize(n, false);
        for i in 0..n {
            let pos = pos0 + i;
            let row = &mut self.rows[i];
            row.clear();
            for (m, r) in ranges.iter().enumerate() {
                if r.contains(&pos) {
                    row.push(self.cross.images[m].visible());
                }
            }
            self.row_mask[i] = !row.is_empty();
            if row.is_empty() && !self.sem.meta_cross_attn {
                // HF: a row that sees no image attends, unmasked, to every stored vision key.
                row.push(0..self.cross.n_keys);
            }
        }

        let h = c.hidden;
        self.x.resize(n * h, 0.0);
        model.text.embed(tokens, &mut self.x)?;
        let cross = has_images.then_some((&self.cross, &self.rows[..n], &self.row_mask[..n]));
        model
            .text
            .forward(&mut self.x, n, &mut self.kv, cross, &mut self.ws)?;

        // Once an image token is in the sequence no later row can be without an image, so the
        // padding tiles' keys will never be read again.
        if has_images && !self.ranges.is_empty() {
            self.cross.trim_padding_tiles();
        }

        let v = c.vocab_size;
        let (rows_out, src) = if all_logits { (n, 0) } else { (1, (n - 1) * h) };
        self.logits.resize(rows_out * v, 0.0);
        model.text.logits(
            &self.x[src..src + rows_out * h],
            rows_out,
            &mut self.logits,
            &mut self.ws,
        );
        let out = &self.logits[..rows_out * v];
        if let Some(i) = out.iter().position(|x| !x.is_finite()) {
            let pos = pos0 + if all_logits { i / v } else { n - 1 };
            return Err(non_finite_logits(model, pos, out[i]));
        }
        Ok(out)
    }

    /// The hidden states (before the final norm) of the last fed chunk `[n, H]` (diagnostics).
    pub fn last_hidden(&self) -> &[f32] {
        &self.x
    }
}

/// The error for a NaN or infinite logit at position `pos`: the model's weights (finite, or the
/// loader would have refused them) overflow f32. Sampling would otherwise answer a fixed token.
fn non_finite_logits(model: &Model, pos: usize, value: f32) -> Error {
    Error::Model {
        path: model.gguf().path().to_path_buf(),
        msg: format!(
            "the logits at position {pos} are not finite ({value}): the weights' values overflow \
             f32 (a corrupt or untrained file)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ranges_follow_hf_processor() {
        const I: u32 = 9;
        // One image: from its token to the end.
        assert_eq!(image_ranges(&[1, 2, I, 3, 4], I), vec![2..5]);
        // Two images apart: first until the second.
        assert_eq!(image_ranges(&[1, I, 3, I, 4, 5], I), vec![1..3, 3..6]);
        // Consecutive images: each from its token to the end.
        assert_eq!(image_ranges(&[1, I, I, 4, 5], I), vec![1..5, 2..5]);
        // A consecutive pair followed by a later image.
        assert_eq!(image_ranges(&[I, I, 2, I, 3], I), vec![0..3, 1..3, 3..5]);
        assert!(image_ranges(&[1, 2], I).is_empty());
    }
}
