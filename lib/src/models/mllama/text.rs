//! The text decoder: Llama 3.1 self-attention layers with gated cross-attention layers at
//! `cross_layers`, plus its two caches.
//!
//! Notation: n = tokens in this call, H = hidden (4096), nh = heads (32), nkv = kv heads (8),
//! hd = head dim (128), F = MLP width (14336), V = vocab (128256), N = cached vision keys.
//!
//! ```text
//! self layer:   h = x + Wo·attn(rope(Wq·rms(x)), rope(Wk·rms(x)) ⧺ cache, Wv·rms(x) ⧺ cache)   causal, GQA
//!               out = h + Wd·(silu(Wg·rms(h)) ⊙ Wu·rms(h))
//! cross layer:  q = q_norm(Wq·rms(x))                          (no RoPE)
//!               h = x + tanh(g_attn)·Wo·attn(q, K, V, mask)    K = k_norm(Wk·X), V = Wv·X cached per image
//!               out = h + tanh(g_mlp)·row_mask·MLP(rms(h))     row_mask = 0 for rows that see no image
//! ```
//! Cross layers are skipped (identity) while no image is attached. A text-only model (a plain
//! `llama` file) is this decoder without cross layers: Llama 3.x.

use std::ops::Range;

use half::f16;

use crate::kernels::tensor::Mat;
use crate::kernels::{matmul, matmul_many, Scratch};
use crate::models::mllama::config::RopeScaling;
use crate::models::mllama::tensors;
use crate::models::mllama::{gate, At, Loader, ModelConfig, TextConfig};
use crate::nn::{self, Heads, KeysValues, Mask, RopePairs};
use crate::Error;

/// A self-attention decoder layer: RMSNorm, GQA attention with RoPE over the [`KvCache`],
/// SwiGLU MLP. Weights stay in the memory map.
pub struct SelfLayer {
    attn_norm: Vec<f32>,
    q: Mat, // [nh·hd, H]
    k: Mat, // [nkv·hd, H]
    v: Mat, // [nkv·hd, H]
    o: Mat, // [H, nh·hd]
    mlp: Mlp,
    /// Index of this layer's slot in the [`KvCache`].
    slot: usize,
}

/// A gated cross-attention decoder layer: queries from the text (q_norm, no RoPE) attend to the
/// image keys in the [`CrossCache`]; attention and MLP branches are scaled by tanh gates.
pub struct CrossLayer {
    attn_norm: Vec<f32>,
    q: Mat,           // [nh·hd, H]
    k: Mat,           // [nkv·hd, H]
    v: Mat,           // [nkv·hd, H]
    o: Mat,           // [H, nh·hd]
    q_norm: Vec<f32>, // [hd]
    k_norm: Vec<f32>, // [hd]
    attn_gate: f32,   // tanh(g)
    mlp_gate: f32,    // tanh(g)
    mlp: Mlp,
    /// Index of this layer's slot in the [`CrossCache`].
    slot: usize,
}

struct Mlp {
    norm: Vec<f32>,
    gate: Mat, // [F, H]
    up: Mat,   // [F, H]
    down: Mat, // [H, F]
}

/// One decoder layer, in file order.
pub enum Layer {
    /// A self-attention layer.
    SelfAttn(SelfLayer),
    /// A cross-attention layer (at one of [`TextConfig::cross_layers`]).
    Cross(CrossLayer),
}

/// The text decoder: token embeddings, the layer stack, the final norm and the output head.
/// Run it through a [`Sequence`](crate::engine::sequence::Sequence), which owns the caches.
pub struct TextModel {
    /// Dimensions (a copy of [`ModelConfig::text`]).
    pub cfg: TextConfig,
    embed: Mat, // [embedding_rows, H]
    layers: Vec<Layer>,
    norm: Vec<f32>,
    output: Mat, // [V, H]; the embedding table itself when the file ties them
    tied: bool,
    /// RoPE inverse frequencies (llama3-scaled), `hd / 2` values.
    pub inv_freq: Vec<f32>,
    pairs: RopePairs,
    n_self: usize,
    n_cross: usize,
}

/// RoPE inverse frequencies, computed in f32 the way HF does (`_compute_llama3_parameters`):
/// scaled by the config's [`RopeScaling`] keys, else divided by the file's `rope_freqs.weight`
/// (llama.cpp's and Ollama's way of storing llama3 scaling), else unscaled.
pub(crate) fn rope_inv_freq(l: &Loader<'_>, c: &TextConfig) -> Result<Vec<f32>, Error> {
    let hd = c.head_dim;
    let base: Vec<f32> = (0..hd / 2)
        .map(|i| 1.0 / c.rope_theta.powf((2 * i) as f32 / hd as f32))
        .collect();
    if let RopeScaling::Linear { factor } = c.rope_scaling {
        return Ok(base.iter().map(|f| f / factor).collect());
    }
    if let RopeScaling::Llama3 {
        factor,
        low,
        high,
        orig,
    } = c.rope_scaling
    {
        let (low_wavelen, high_wavelen) = (orig / low, orig / high);
        let two_pi = (2.0 * std::f64::consts::PI) as f32;
        return Ok(base
            .iter()
            .map(|&f| {
                let wavelen = two_pi / f;
                let scaled = if wavelen > low_wavelen { f / factor } else { f };
                let smooth = (orig / wavelen - low) / (high - low);
                let smoothed = (1.0 - smooth) * scaled / factor + smooth * scaled;
                let medium = wavelen >= high_wavelen && wavelen <= low_wavelen;
                if medium {
                    smoothed
                } else {
                    scaled
                }
            })
            .collect());
    }
    let model = l.at(None);
    if model.has(&tensors::ROPE_FREQS) {
        // llama.cpp / Ollama: per-frequency divisors.
        let factors = model.vec(&tensors::ROPE_FREQS)?;
        return Ok(base.iter().zip(&factors).map(|(f, d)| f / d).collect());
    }
    Ok(base)
}

/// The output head: `output.weight`, or, when the file has none (tied embeddings, as in SmolLM2
/// and Llama 3.2 1B/3B), the token embedding table itself: the same memory-mapped rows, no copy.
/// Returns the head and whether it is tied.
fn output_head(l: &Loader<'_>, embed: &Mat, c: &TextConfig) -> Result<(Mat, bool), Error> {
    let m = l.at(None);
    if m.has(&tensors::OUTPUT) {
        return Ok((m.mat(&tensors::OUTPUT)?, false));
    }
    if c.embedding_rows != c.vocab_size {
        return Err(l.err(format!(
            "missing tensor {} (the {}-row embedding table cannot stand in for a {}-token output)",
            tensors::OUTPUT.name(None),
            c.embedding_rows,
            c.vocab_size
        )));
    }
    Ok((embed.clone(), true))
}

impl TextModel {
    pub(crate) fn load(l: &Loader<'_>, mc: &ModelConfig) -> Result<Self, Error> {
        use crate::models::mllama::tensors::{self as t, Block};
        let c = &mc.text;
        let hd = c.head_dim;
        let conv = &mc.conventions;
        let mlp = |b: &At<'_, '_>| -> Result<Mlp, Error> {
            Ok(Mlp {
                norm: b.vec(&t::FFN_NORM)?,
                gate: b.mat(&t::FFN_GATE)?,
                up: b.mat(&t::FFN_UP)?,
                down: b.mat(&t::FFN_DOWN)?,
            })
        };
        let (mut n_self, mut n_cross) = (0, 0);
        let mut layers = Vec::with_capacity(c.n_layers);
        for i in 0..c.n_layers {
            let b = l.at(Some(Block::text(i)));
            if c.cross_layers.contains(&i) {
                let mut q_norm = b.vec(&t::CROSS_Q_NORM)?;
                let mut k_norm = b.vec(&t::CROSS_K_NORM)?;
                if conv.cross_qk_permuted {
                    // q/k rows were permuted per head (adjacent ← half); permute the norm weights
                    // the same way so that q·k is unchanged.
                    let perm = |w: &[f32]| -> Vec<f32> {
                        (0..hd).map(|r| w[(r % 2) * (hd / 2) + r / 2]).collect()
                    };
                    q_norm = perm(&q_norm);
                    k_norm = perm(&k_norm);
                }
                layers.push(Layer::Cross(CrossLayer {
                    attn_norm: b.vec(&t::ATTN_NORM)?,
                    q: b.mat(&t::CROSS_Q)?,
                    k: b.mat(&t::CROSS_K)?,
                    v: b.mat(&t::CROSS_V)?,
                    o: b.mat(&t::CROSS_O)?,
                    q_norm,
                    k_norm,
                    attn_gate: gate(b.scalar(&t::CROSS_ATTN_GATE)?, conv.cross_gates_tanh),
                    mlp_gate: gate(b.scalar(&t::CROSS_MLP_GATE)?, conv.cross_gates_tanh),
                    mlp: mlp(&b)?,
                    slot: n_cross,
                }));
                n_cross += 1;
            } else {
                layers.push(Layer::SelfAttn(SelfLayer {
                    attn_norm: b.vec(&t::ATTN_NORM)?,
                    q: b.mat(&t::ATTN_Q)?,
                    k: b.mat(&t::ATTN_K)?,
                    v: b.mat(&t::ATTN_V)?,
                    o: b.mat(&t::ATTN_OUTPUT)?,
                    mlp: mlp(&b)?,
                    slot: n_self,
                }));
                n_self += 1;
            }
        }
        let m = l.at(None);
        let embed = m.mat(&t::TOKEN_EMBD)?;
        if let Some(image) = c.image_token.filter(|&i| i as usize >= c.embedding_rows) {
            return Err(l.err(format!(
                "image token id {image} has no row in the {}-row embedding table",
                c.embedding_rows
            )));
        }
        let (output, tied) = output_head(l, &embed, c)?;
        Ok(TextModel {
            cfg: c.clone(),
            embed,
            layers,
            norm: m.vec(&t::OUTPUT_NORM)?,
            output,
            tied,
            inv_freq: rope_inv_freq(l, c)?,
            pairs: conv.self_qk,
            n_self,
            n_cross,
        })
    }

    /// Repack every decoder matrix that has a row-interleaved layout with a kernel on the active
    /// path ([`crate::kernels::repack`], [`crate::kernels::repack_pays`]), one matrix at a time (rows in parallel), giving back each
    /// in-place original's pages when `release`. Matrices stored at the same bytes (synthetic
    /// models share layers) share one copy; a tied output head repacks the embedding table, which
    /// then reads its rows from the copy. Returns `(matrices, bytes)` repacked.
    pub fn repack(&mut self, release: bool) -> (usize, usize) {
        use std::collections::HashMap;
        let mut done: HashMap<(usize, usize), Mat> = HashMap::new();
        let mut mats: Vec<&mut Mat> = vec![&mut self.output];
        for layer in &mut self.layers {
            match layer {
                Layer::SelfAttn(l) => mats.extend([
                    &mut l.q,
                    &mut l.k,
                    &mut l.v,
                    &mut l.o,
                    &mut l.mlp.gate,
                    &mut l.mlp.up,
                    &mut l.mlp.down,
                ]),
                // Cross K/V only ever project an image's thousands of vision states
                // (`cross_kv`), never a decode step: they keep the in-place layout, which the
                // many-row kernels read.
                Layer::Cross(l) => mats.extend([
                    &mut l.q,
                    &mut l.o,
                    &mut l.mlp.gate,
                    &mut l.mlp.up,
                    &mut l.mlp.down,
                ]),
            }
        }
        let (mut count, mut bytes) = (0, 0);
        let path = crate::kernels::active_path();
        for w in mats {
            if !crate::kernels::repack_pays(w.ty, path) {
                continue;
            }
            let key = (w.data().as_ptr() as usize, w.nbytes());
            if let Some(same) = done.get(&key) {
                *w = same.clone();
            } else if w.repack(release) {
                count += 1;
                bytes += w.nbytes();
                done.insert(key, w.clone());
            }
        }
        if self.tied && self.output.repacked().is_some() {
            self.embed = self.output.clone();
        }
        (count, bytes)
    }

    /// Whether the output head is the token embedding table (the file has no `output.weight`).
    pub fn tied_embeddings(&self) -> bool {
        self.tied
    }

    /// Number of cross-attention layers (entries of [`TextModel::cross_kv`]'s result).
    pub fn n_cross_layers(&self) -> usize {
        self.n_cross
    }

    /// Number of self-attention layers (layers of the [`KvCache`]).
    pub fn n_self_layers(&self) -> usize {
        self.n_self
    }

    /// Whether the text matrices are quantized (judged by the cross layers' query projections,
    /// else the output head): the [`CrossCache`] then stores f16.
    pub fn quantized(&self) -> bool {
        let cross_q = self.layers.iter().find_map(|l| match l {
            Layer::Cross(c) => Some(c.q.ty),
            Layer::SelfAttn(_) => None,
        });
        cross_q.unwrap_or(self.output.ty).is_quantized()
    }

    /// Weight bytes a decode step reads (all layers' matrices and the output head; cross-layer
    /// K/V projections are not used per token).
    pub fn bytes_per_token(&self) -> usize {
        let mut b = self.output.nbytes();
        for l in &self.layers {
            let m = match l {
                Layer::SelfAttn(s) => {
                    b += s.q.nbytes() + s.k.nbytes() + s.v.nbytes() + s.o.nbytes();
                    &s.mlp
                }
                Layer::Cross(c) => {
                    b += c.q.nbytes() + c.o.nbytes();
                    &c.mlp
                }
            };
            b += m.gate.nbytes() + m.up.nbytes() + m.down.nbytes();
        }
        b
    }

    /// Token embeddings of `tokens` into `out`, `[n, H]` with `n = tokens.len()` (rows are
    /// written for as many tokens as `out` has room for).
    ///
    /// # Errors
    ///
    /// [`Error::BadArgument`] for an id at or above `embedding_rows`.
    pub fn embed(&self, tokens: &[u32], out: &mut [f32]) -> Result<(), Error> {
        let h = self.cfg.hidden;
        for (t, row) in tokens.iter().zip(out.chunks_exact_mut(h)) {
            if *t as usize >= self.cfg.embedding_rows {
                return Err(Error::bad_argument(
                    "token id",
                    format!(
                        "token id {t} is outside the {}-row embedding table",
                        self.cfg.embedding_rows
                    ),
                ));
            }
            self.embed.row_to_f32(*t as usize, row);
        }
        Ok(())
    }

    /// Per-layer cross-attention K (k_norm applied) and V of one image's states `[n, H]` (the
    /// projector output, [`VisionOutput::states`](super::vision::VisionOutput::states)): one
    /// `(K, V)` per cross layer in layer order, each head-major `[nkv][n][hd]`.
    pub fn cross_kv(&self, states: &[f32], n: usize) -> Vec<(Vec<f32>, Vec<f32>)> {
        let (hd, nkv) = (self.cfg.head_dim, self.cfg.n_kv_heads);
        let mut sc = Scratch::new();
        let mut tmp = vec![0f32; n * nkv * hd];
        let mut out = Vec::with_capacity(self.n_cross);
        for layer in &self.layers {
            if let Layer::Cross(c) = layer {
                let mut k = vec![0f32; n * nkv * hd];
                let mut v = vec![0f32; n * nkv * hd];
                matmul(&c.k, states, n, &mut tmp, &mut sc);
                nn::rms_norm_inplace(&mut tmp, &c.k_norm, self.cfg.rms_eps);
                nn::to_head_major(&tmp, n, nkv, hd, n, 0, &mut k);
                matmul(&c.v, states, n, &mut tmp, &mut sc);
                nn::to_head_major(&tmp, n, nkv, hd, n, 0, &mut v);
                out.push((k, v));
            }
        }
        out
    }

    /// Run the decoder over `x` = embeddings of n tokens at positions `kv.len ..`, in place
    /// (`x` is `[n, H]`; afterwards it holds the hidden states before the final norm). Appends the
    /// tokens' keys and values to `kv`. `cross` is `None` while no image is attached (cross layers
    /// are skipped). `rows[i]` are the vision keys token i may see (empty: none) and
    /// `row_mask[i]` whether it sees any image.
    ///
    /// # Errors
    ///
    /// [`Error::ContextFull`] if `kv.len + n` exceeds the cache's context.
    pub fn forward(
        &self,
        x: &mut [f32],
        n: usize,
        kv: &mut KvCache,
        cross: Option<CrossInput<'_>>,
        ws: &mut Workspace,
    ) -> Result<(), Error> {
        let pos0 = kv.len;
        if pos0 + n > kv.ctx {
            return Err(Error::ContextFull {
                needed: pos0 + n,
                context: kv.ctx,
                setting: "the ctx of KvCache::new",
            });
        }
        ws.ensure(n, &self.cfg);
        for layer in &self.layers {
            match layer {
                Layer::SelfAttn(l) => {
                    self.self_attention(l, x, n, kv, ws); // x [n, H] += attention
                    self.mlp(&l.mlp, x, n, None, 1.0, ws); // x [n, H] += MLP
                }
                Layer::Cross(l) => {
                    let Some((cc, rows, row_mask)) = cross else {
                        continue; // no image: the layer is the identity
                    };
                    self.cross_attention(l, x, n, cc, rows, ws); // x += tanh(g)·attention
                    self.mlp(&l.mlp, x, n, Some(row_mask), l.mlp_gate, ws); // rows seeing an image
                }
            }
        }
        kv.len = pos0 + n;
        Ok(())
    }

    /// `x += Wo·attn(rope(Wq·rms(x)), K, V)` causal over the cache, after appending this call's
    /// `rope(Wk·rms(x))`, `Wv·rms(x)` at positions `kv.len ..` (`kv.len` itself is not advanced).
    fn self_attention(
        &self,
        l: &SelfLayer,
        x: &mut [f32],
        n: usize,
        kv: &mut KvCache,
        ws: &mut Workspace,
    ) {
        let c = &self.cfg;
        let (h, hd, nh, nkv) = (c.hidden, c.head_dim, c.n_heads, c.n_kv_heads);
        let pos0 = kv.len;
        let xn = &mut ws.xn[..n * h]; // [n, H]
        let q = &mut ws.q[..n * nh * hd]; // [n, nh·hd]
        let k = &mut ws.k[..n * nkv * hd]; // [n, nkv·hd]
        let v = &mut ws.v[..n * nkv * hd]; // [n, nkv·hd]
        let att = &mut ws.att[..n * nh * hd]; // [n, nh·hd]
        nn::rms_norm(x, &l.attn_norm, c.rms_eps, xn);
        matmul_many(&[&l.q, &l.k, &l.v], xn, n, &mut [q, k, v], &mut ws.sc);
        for i in 0..n {
            let qi = &mut q[i * nh * hd..][..nh * hd]; // [nh·hd]
            nn::rope(qi, hd, pos0 + i, &self.inv_freq, self.pairs);
            let ki = &mut k[i * nkv * hd..][..nkv * hd]; // [nkv·hd]
            nn::rope(ki, hd, pos0 + i, &self.inv_freq, self.pairs);
        }
        kv.put(l.slot, k, v, n, (nkv, hd), pos0);
        let mask = Mask::Causal { offset: pos0 };
        kv.attention(l.slot, pos0 + n, Heads::new(nh, nkv, hd), mask, q, att);
        matmul(&l.o, att, n, xn, &mut ws.sc); // [n, H]
        nn::add(x, xn);
    }

    /// `x += tanh(g_attn)·Wo·attn(q_norm(Wq·rms(x)), K, V)` over the cached image keys, row i
    /// seeing the keys `rows[i]` (no RoPE).
    fn cross_attention(
        &self,
        l: &CrossLayer,
        x: &mut [f32],
        n: usize,
        cc: &CrossCache,
        rows: &[Vec<Range<usize>>],
        ws: &mut Workspace,
    ) {
        let c = &self.cfg;
        let (h, hd, nh) = (c.hidden, c.head_dim, c.n_heads);
        let xn = &mut ws.xn[..n * h]; // [n, H]
        let q = &mut ws.q[..n * nh * hd]; // [n, nh·hd]
        let att = &mut ws.att[..n * nh * hd]; // [n, nh·hd]
        nn::rms_norm(x, &l.attn_norm, c.rms_eps, xn);
        matmul(&l.q, xn, n, q, &mut ws.sc);
        nn::rms_norm_inplace(q, &l.q_norm, c.rms_eps); // per head: q_norm has hd weights
        let heads = Heads::new(nh, c.n_kv_heads, hd);
        cc.attention(l.slot, heads, Mask::Rows(rows), q, att);
        matmul(&l.o, att, n, xn, &mut ws.sc); // [n, H]
        nn::add_scaled(x, l.attn_gate, xn);
    }

    /// `x += g · row_mask ⊙ down(silu(gate(rms(x))) ⊙ up(rms(x)))`; without a row mask (self
    /// layers) a plain `x += down(…)`.
    fn mlp(
        &self,
        m: &Mlp,
        x: &mut [f32],
        n: usize,
        row_mask: Option<&[bool]>,
        g: f32,
        ws: &mut Workspace,
    ) {
        let c = &self.cfg;
        let (h, f) = (c.hidden, c.ffn);
        let xn = &mut ws.xn[..n * h]; // [n, H]
        let (gt, up) = (&mut ws.g[..n * f], &mut ws.u[..n * f]); // [n, F] each
        nn::rms_norm(x, &m.norm, c.rms_eps, xn);
        matmul_many(&[&m.gate, &m.up], xn, n, &mut [gt, up], &mut ws.sc);
        nn::silu_mul_inplace(gt, up);
        matmul(&m.down, gt, n, xn, &mut ws.sc); // [n, H]
        for (i, (xr, yr)) in x.chunks_exact_mut(h).zip(xn.chunks_exact(h)).enumerate() {
            match row_mask {
                None => nn::add(xr, yr),
                Some(rm) if rm[i] => nn::add_scaled(xr, g, yr),
                Some(_) => {} // a row that sees no image: the MLP branch is masked to zero
            }
        }
    }

    /// Final norm and output head for `n` rows of `x` (`[n, H]`): logits `[n, V]` into the first
    /// `n · V` values of `out`.
    pub fn logits(&self, x: &[f32], n: usize, out: &mut [f32], ws: &mut Workspace) {
        let h = self.cfg.hidden;
        ws.ensure(n, &self.cfg);
        nn::rms_norm(
            &x[..n * h],
            &self.norm,
            self.cfg.rms_eps,
            &mut ws.xn[..n * h],
        );
        matmul(
            &self.output,
            &ws.xn[..n * h],
            n,
            &mut out[..n * self.cfg.vocab_size],
            &mut ws.sc,
        );
    }

    /// The final hidden state after the norm (`[n, H]`), for tests against HF's `text.norm`.
    pub fn final_norm(&self, x: &[f32], out: &mut [f32]) {
        nn::rms_norm(x, &self.norm, self.cfg.rms_eps, out);
    }
}

/// What cross layers need for one call: the cached vision K/V, the keys each row may see, and
/// whether each row sees any image.
pub type CrossInput<'a> = (&'a CrossCache, &'a [Vec<Range<usize>>], &'a [bool]);

/// Self-attention K/V for every self layer: head-major `[layer][nkv][ctx][hd]`, f32.
pub struct KvCache {
    store: KvStore,
    per_layer: usize,
    /// Capacity in tokens.
    pub ctx: usize,
    /// Tokens stored.
    pub len: usize,
}

/// The self-attention cache's storage, all layers: `[layer][nkv][ctx][hd]` for K and for V.
enum KvStore {
    F32(Vec<f32>, Vec<f32>),
    F16(Vec<f16>, Vec<f16>),
}

impl KvCache {
    /// An empty cache for `ctx` tokens, allocated (zeroed) now: [`KvCache::bytes_for`] bytes,
    /// storing f16 when `half` (see [`crate::models::mllama::CachePrecision`]), else f32.
    pub fn new(model: &TextModel, ctx: usize, half: bool) -> Self {
        let c = &model.cfg;
        let per_layer = c.n_kv_heads * ctx * c.head_dim;
        let n = model.n_self * per_layer;
        KvCache {
            store: if half {
                KvStore::F16(vec![f16::ZERO; n], vec![f16::ZERO; n])
            } else {
                KvStore::F32(vec![0.0; n], vec![0.0; n])
            },
            per_layer,
            ctx,
            len: 0,
        }
    }

    /// Bytes a cache of `ctx` tokens takes for this model, in f16 when `half`, else f32.
    pub fn bytes_for(model: &TextModel, ctx: usize, half: bool) -> usize {
        let c = &model.cfg;
        let elem = if half { 2 } else { 4 };
        2 * model.n_self * c.n_kv_heads * ctx * c.head_dim * elem
    }

    /// Whether values are stored as f16.
    pub fn is_half(&self) -> bool {
        matches!(self.store, KvStore::F16(..))
    }

    /// Store `n` tokens' K and V (token-major `[n][nkv·hd]`) of self layer `i` at `pos0..`.
    fn put(
        &mut self,
        i: usize,
        k: &[f32],
        v: &[f32],
        n: usize,
        (nkv, hd): (usize, usize),
        pos0: usize,
    ) {
        let r = i * self.per_layer..(i + 1) * self.per_layer;
        let ctx = self.ctx;
        match &mut self.store {
            KvStore::F32(kc, vc) => {
                nn::to_head_major(k, n, nkv, hd, ctx, pos0, &mut kc[r.clone()]);
                nn::to_head_major(v, n, nkv, hd, ctx, pos0, &mut vc[r]);
            }
            KvStore::F16(kc, vc) => {
                nn::to_head_major(k, n, nkv, hd, ctx, pos0, &mut kc[r.clone()]);
                nn::to_head_major(v, n, nkv, hd, ctx, pos0, &mut vc[r]);
            }
        }
    }

    /// Attention of `q` `[n, nh·hd]` over self layer `i`'s first `nk` keys into `out`
    /// `[n, nh·hd]` (see [`nn::attention`]).
    fn attention(
        &self,
        i: usize,
        nk: usize,
        heads: Heads,
        mask: Mask<'_>,
        q: &[f32],
        out: &mut [f32],
    ) {
        let r = i * self.per_layer..(i + 1) * self.per_layer;
        let ctx = self.ctx;
        match &self.store {
            KvStore::F32(kc, vc) => {
                let kv = KeysValues::new(&kc[r.clone()], &vc[r], nk, ctx);
                nn::attention(q, kv, heads, mask, out)
            }
            KvStore::F16(kc, vc) => {
                let kv = KeysValues::new(&kc[r.clone()], &vc[r], nk, ctx);
                nn::attention(q, kv, heads, mask, out)
            }
        }
    }

    /// Forget everything after the first `len` tokens.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

/// Where an image's keys sit in the [`CrossCache`].
#[derive(Clone, Debug)]
pub struct ImageKeys {
    /// First key of this image.
    pub offset: usize,
    /// Tile slots stored (all slots until trimmed, then the real tiles only).
    pub tiles_stored: usize,
    /// Real tiles (the ones text may attend to).
    pub tiles_real: usize,
    /// Keys per tile (vision tokens per tile).
    pub tokens_per_tile: usize,
}

impl ImageKeys {
    /// The keys text rows that see this image attend to (real tiles only).
    pub fn visible(&self) -> Range<usize> {
        self.offset..self.offset + self.tiles_real * self.tokens_per_tile
    }
}

/// One cross layer's cached K and V: f16 when the cache stores half precision (and the values fit),
/// else f32.
enum LayerKv {
    F32(Vec<f32>, Vec<f32>),
    F16(Vec<f16>, Vec<f16>),
}

/// Largest magnitude stored as f16 (f16's largest finite value is 65504); a layer whose K or V
/// exceeds it is kept in f32.
const F16_LIMIT: f32 = 65000.0;

/// Whether a cross layer's K or V `x` is stored as f16 in a half-precision [`CrossCache`]: every
/// value within ±65000 (no overflow, no NaN). A value that fits still fits after rounding to f16.
pub fn fits_f16(x: &[f32]) -> bool {
    x.iter().all(|v| v.abs() <= F16_LIMIT)
}

/// Cross-attention K/V of every attached image for every cross layer, head-major
/// `[layer][nkv][n_keys][hd]`, images concatenated along the key axis in order.
///
/// By default ([`crate::models::mllama::CachePrecision::Auto`]) quantized text weights get f16 values:
/// half the memory, and half the bytes each decode step reads from it (the 8 cross layers of 11B
/// read 420 MB of f32 per token for a 4-tile image). The rounding (relative 2⁻¹¹) is far below
/// the weights' quantization error. F32, F16 and BF16 models keep f32, so they stay within float
/// rounding of the reference.
pub struct CrossCache {
    layers: Vec<LayerKv>,
    half: bool,
    /// Where each attached image's keys sit, in attachment order.
    pub images: Vec<ImageKeys>,
    /// Keys stored per layer and kv head (all images together).
    pub n_keys: usize,
    nkv: usize,
    hd: usize,
}

impl CrossCache {
    /// An empty cache for `model`'s cross layers; half precision when its text matrices are
    /// quantized ([`TextModel::quantized`]).
    pub fn new(model: &TextModel) -> Self {
        Self::with_precision(model, model.quantized())
    }

    /// An empty cache storing f16 (`half`) or f32 values.
    pub fn with_precision(model: &TextModel, half: bool) -> Self {
        CrossCache {
            layers: (0..model.n_cross)
                .map(|_| {
                    if half {
                        LayerKv::F16(Vec::new(), Vec::new())
                    } else {
                        LayerKv::F32(Vec::new(), Vec::new())
                    }
                })
                .collect(),
            half,
            images: Vec::new(),
            n_keys: 0,
            nkv: model.cfg.n_kv_heads,
            hd: model.cfg.head_dim,
        }
    }

    /// Whether new values are stored as f16.
    pub fn is_half(&self) -> bool {
        self.half
    }

    /// Attention of `q` `[n, nh·hd]` over cross layer `i`'s keys (all images) into `out`
    /// `[n, nh·hd]` (see [`nn::attention`]).
    fn attention(&self, i: usize, heads: Heads, mask: Mask<'_>, q: &[f32], out: &mut [f32]) {
        debug_assert_eq!((heads.n_kv_heads, heads.hd), (self.nkv, self.hd));
        let nk = self.n_keys;
        match &self.layers[i] {
            LayerKv::F32(k, v) => nn::attention(q, KeysValues::new(k, v, nk, nk), heads, mask, out),
            LayerKv::F16(k, v) => nn::attention(q, KeysValues::new(k, v, nk, nk), heads, mask, out),
        }
    }

    /// Append one image's K/V (from [`TextModel::cross_kv`]) of `tiles · tokens_per_tile` keys,
    /// of which the first `tiles_real` tiles are real (the rest padding slots).
    pub fn push(
        &mut self,
        kv: Vec<(Vec<f32>, Vec<f32>)>,
        tiles: usize,
        tiles_real: usize,
        tokens_per_tile: usize,
    ) {
        let add = tiles * tokens_per_tile;
        let (nkv, hd, old) = (self.nkv, self.hd, self.n_keys);
        let new = old + add;
        for (layer, (nk, nv)) in self.layers.iter_mut().zip(kv) {
            if let LayerKv::F16(k, v) = layer {
                if fits_f16(&nk) && fits_f16(&nv) {
                    *k = concat_keys(k, old, &to_f16(&nk), add, nkv, hd);
                    *v = concat_keys(v, old, &to_f16(&nv), add, nkv, hd);
                    continue;
                }
                // Out of f16 range (or NaN): this layer goes to f32 for good.
                *layer = LayerKv::F32(to_f32(k), to_f32(v));
            }
            if let LayerKv::F32(k, v) = layer {
                *k = concat_keys(k, old, &nk, add, nkv, hd);
                *v = concat_keys(v, old, &nv, add, nkv, hd);
            }
        }
        self.images.push(ImageKeys {
            offset: old,
            tiles_stored: tiles,
            tiles_real,
            tokens_per_tile,
        });
        self.n_keys = new;
    }

    /// Drop the keys of padding tile slots. Exact for every row that sees at least one image
    /// (padding tiles are always masked for those rows).
    pub fn trim_padding_tiles(&mut self) {
        if self
            .images
            .iter()
            .all(|im| im.tiles_stored == im.tiles_real)
        {
            return;
        }
        let keep: Vec<Range<usize>> = self
            .images
            .iter()
            .map(|im| im.offset..im.offset + im.tiles_real * im.tokens_per_tile)
            .collect();
        let new_n: usize = keep.iter().map(|r| r.len()).sum();
        if new_n == self.n_keys {
            return;
        }
        let (nkv, hd, old_n) = (self.nkv, self.hd, self.n_keys);
        fn pick<T: Copy>(
            src: &[T],
            keep: &[Range<usize>],
            nkv: usize,
            old_n: usize,
            hd: usize,
        ) -> Vec<T> {
            let new_n: usize = keep.iter().map(|r| r.len()).sum();
            let mut out = Vec::with_capacity(nkv * new_n * hd);
            for h in 0..nkv {
                for r in keep {
                    out.extend_from_slice(
                        &src[(h * old_n + r.start) * hd..(h * old_n + r.end) * hd],
                    );
                }
            }
            out
        }
        for layer in &mut self.layers {
            match layer {
                LayerKv::F32(k, v) => {
                    *k = pick(k, &keep, nkv, old_n, hd);
                    *v = pick(v, &keep, nkv, old_n, hd);
                }
                LayerKv::F16(k, v) => {
                    *k = pick(k, &keep, nkv, old_n, hd);
                    *v = pick(v, &keep, nkv, old_n, hd);
                }
            }
        }
        let mut off = 0;
        for im in &mut self.images {
            im.offset = off;
            im.tiles_stored = im.tiles_real;
            off += im.tiles_real * im.tokens_per_tile;
        }
        self.n_keys = new_n;
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| match l {
                LayerKv::F32(k, v) => 4 * (k.len() + v.len()),
                LayerKv::F16(k, v) => 2 * (k.len() + v.len()),
            })
            .sum()
    }
}

fn to_f16(x: &[f32]) -> Vec<f16> {
    use half::slice::HalfFloatSliceExt;
    let mut out = vec![f16::ZERO; x.len()];
    out.convert_from_f32_slice(x);
    out
}

fn to_f32(x: &[f16]) -> Vec<f32> {
    use half::slice::HalfFloatSliceExt;
    x.to_f32_vec()
}

/// `[nkv][a][hd] ⧺ [nkv][b][hd]` along the key axis.
fn concat_keys<T: Copy>(old: &[T], a: usize, new: &[T], b: usize, nkv: usize, hd: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(nkv * (a + b) * hd);
    for h in 0..nkv {
        out.extend_from_slice(&old[h * a * hd..(h + 1) * a * hd]);
        out.extend_from_slice(&new[h * b * hd..(h + 1) * b * hd]);
    }
    out
}

/// Activation buffers for `n` rows, grown on demand and reused (no allocation once sized).
#[derive(Default)]
pub struct Workspace {
    rows: usize,
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    g: Vec<f32>,
    u: Vec<f32>,
    sc: Scratch,
}

impl Workspace {
    /// Empty buffers (sized on first use).
    pub fn new() -> Self {
        Self::default()
    }

    fn ensure(&mut self, n: usize, c: &TextConfig) {
        if n <= self.rows {
            return;
        }
        let (h, qd, kd, f) = (
            c.hidden,
            c.n_heads * c.head_dim,
            c.n_kv_heads * c.head_dim,
            c.ffn,
        );
        self.xn.resize(n * h, 0.0);
        self.q.resize(n * qd, 0.0);
        self.k.resize(n * kd, 0.0);
        self.v.resize(n * kd, 0.0);
        self.att.resize(n * qd, 0.0);
        self.g.resize(n * f, 0.0);
        self.u.resize(n * f, 0.0);
        self.rows = n;
    }
}
