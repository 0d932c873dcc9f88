//! The vision tower and projector: one image (up to `max_tiles` tiles) → cross-attention states.
//!
//! Notation: T = tile slots (4), G = patches per tile side (40), P = G² + 1 tokens per tile (1601),
//! P8 = P padded to a multiple of 8 (1608), D = vision hidden (1280), K = number of taps (5),
//! H = text hidden (4096), R = aspect-ratio table rows (9).
//!
//! ```text
//! pixels [T, 3, S, S]
//!  → patch conv as GEMM           [T, G², D]      (tile slots past the image are all-zero input → zero output)
//!  → + tanh(g_pre)·pre_tile[ar]   per tile slot   (before the class token)
//!  → prepend class token          [T, P, D]
//!  → + (1−tanh(g))·pos + tanh(g)·tile_pos[ar]
//!  → layernorm_pre, pad to P8     X [T·P8, D]     (pad rows are zeros)
//!  → 32 local layers              (mask: pad⊗pad; taps recorded)
//!  → layernorm_post, + tanh(g_post)·post_tile[ar]
//!  → 8 gated global layers
//!  → un-pad, concat [out ‖ taps interleaved per channel]   [T, P, D·(1+K)]
//!  → projector (+ bias)           [T·P, H]
//! ```

use std::sync::OnceLock;

use crate::kernels::igemm::{
    matmul_i16, matmul_i16_shared, matmul_i8, matmul_i8_shared, I16Mat, I8Mat, Product,
};
use crate::kernels::tensor::Mat;
use crate::kernels::{matmul_with, Regime, Scratch};
use crate::models::mllama::{
    gate, Loader, ModelConfig, TapConvention, VisionConfig, VisionPrecision,
};
use crate::nn::{self, Heads, KeysValues, Mask};
use crate::Error;

/// A matrix of the tower or projector: its weights in the memory map, and their integer copy
/// ([`I8Mat`], [`I16Mat`]) once a pass in that precision needs it.
pub struct Linear {
    w: Mat,
    int8: OnceLock<I8Mat>,
    int16: OnceLock<I16Mat>,
}

impl Linear {
    fn new(w: Mat) -> Self {
        Linear {
            w,
            int8: OnceLock::new(),
            int16: OnceLock::new(),
        }
    }

    /// The int8 copy, built on first use.
    fn int8(&self) -> &I8Mat {
        self.int8.get_or_init(|| I8Mat::new(&self.w))
    }

    /// The int16 copy, built on first use.
    fn int16(&self) -> &I16Mat {
        self.int16.get_or_init(|| I16Mat::new(&self.w))
    }

    /// Build the copy `prec` reads (if any), returning its bytes.
    fn prepare(&self, prec: VisionPrecision) -> usize {
        match prec {
            VisionPrecision::Int8 => self.int8().nbytes(),
            VisionPrecision::Int16 => self.int16().nbytes(),
            _ => 0,
        }
    }

    /// Bytes of the copies built so far.
    fn prepared_bytes(&self) -> usize {
        self.int8.get().map_or(0, I8Mat::nbytes) + self.int16.get().map_or(0, I16Mat::nbytes)
    }

    /// `y[n, m] = x[n, k] · Wᵀ (+ b)` in `prec` (resolved: not `Auto`).
    fn forward(
        &self,
        prec: VisionPrecision,
        b: Option<&[f32]>,
        x: &[f32],
        n: usize,
        y: &mut [f32],
        sc: &mut Scratch,
    ) {
        match prec {
            VisionPrecision::Int16 => matmul_i16(self.int16(), b, x, n, y),
            VisionPrecision::Int8 => matmul_i8(self.int8(), b, x, n, y),
            _ => matmul_with(&self.w, b, x, n, y, sc, Regime::Auto),
        }
    }
}

/// `ys[i] = x[n, k] · Wᵢᵀ` for three matrices of one input (a layer's q, k and v), in `prec`:
/// the integer precisions quantize `x` once for the three (results as [`Linear::forward`]'s).
fn forward3(
    ls: [&Linear; 3],
    prec: VisionPrecision,
    x: &[f32],
    n: usize,
    ys: [&mut [f32]; 3],
    sc: &mut Scratch,
) {
    let pairs = ls.into_iter().zip(ys);
    match prec {
        VisionPrecision::Int16 => {
            let ps = pairs.map(|(l, y)| Product {
                w: l.int16(),
                bias: None,
                y,
            });
            matmul_i16_shared(x, n, &mut ps.collect::<Vec<_>>());
        }
        VisionPrecision::Int8 => {
            let ps = pairs.map(|(l, y)| Product {
                w: l.int8(),
                bias: None,
                y,
            });
            matmul_i8_shared(x, n, &mut ps.collect::<Vec<_>>());
        }
        _ => {
            for (l, y) in pairs {
                l.forward(prec, None, x, n, y, sc);
            }
        }
    }
}

/// One encoder layer (local layers have no gates).
pub struct EncoderLayer {
    ln1_w: Vec<f32>,
    ln1_b: Vec<f32>,
    q: Linear, // [D, D]
    k: Linear, // [D, D]
    v: Linear, // [D, D]
    o: Linear, // [D, D]
    ln2_w: Vec<f32>,
    ln2_b: Vec<f32>,
    fc1: Linear, // [F, D]
    fc1_b: Vec<f32>,
    fc2: Linear, // [D, F]
    fc2_b: Vec<f32>,
    /// tanh(gate_attn), tanh(gate_ffn) for global layers.
    gates: Option<(f32, f32)>,
}

/// The vision tower (patch embedding, 32 local and 8 gated global encoder layers for the 11B
/// model) and the multi-modal projector to the text hidden size. Weights stay in the memory map.
pub struct VisionModel {
    /// Dimensions (a copy of [`ModelConfig::vision`]).
    pub cfg: VisionConfig,
    text_hidden: usize,
    patch: Linear,       // [D, 3·p·p], unfold order (c, ky, kx)
    class_emb: Vec<f32>, // [D]
    pos_emb: Mat,        // [P, D]
    pos_gate: f32,       // 1 − tanh(g)
    tile_pos: Mat,       // [R, T·P·D]
    tile_pos_gate: f32,  // tanh(g)
    pre_tile: Mat,       // [R, T·D]
    pre_gate: f32,
    post_tile: Mat, // [R, T·D]
    post_gate: f32,
    pre_ln: (Vec<f32>, Vec<f32>),
    post_ln: (Vec<f32>, Vec<f32>),
    local: Vec<EncoderLayer>,
    global: Vec<EncoderLayer>,
    proj: Linear, // [H, D·(1+K)]
    proj_b: Vec<f32>,
    /// The precision asked for ([`VisionModel::set_precision`]).
    precision: VisionPrecision,
    /// Whether the file's text matrices are quantized (what `Auto` decides on).
    quantized_file: bool,
}

/// What the tower produces for one image.
pub struct VisionOutput {
    /// Projector output, the cross-attention key/value source: `[T·P, H]`, tile-major.
    pub states: Vec<f32>,
    /// Vision features before the projector: `[T, P, D·(1+K)]`.
    pub features: Vec<f32>,
}

impl VisionModel {
    pub(crate) fn load(l: &Loader<'_>, mc: &ModelConfig) -> Result<Self, Error> {
        use crate::models::mllama::tensors::{self as t, Block, Stack};
        let (Some(c), Some(pre)) = (&mc.vision, &mc.preprocess) else {
            return Err(l.err("the file has no vision configuration"));
        };
        let tanh_stored = mc.conventions.vision_gates_tanh;
        let global_tanh = mc.conventions.global_gates_tanh;
        let r = l.dims.aspect_ratio_rows;
        if r < pre.supported_aspect_ratios.len() + 1 {
            return Err(l.err(format!(
                "aspect-ratio tables have {r} rows, fewer than the {} supported ratios + 1",
                pre.supported_aspect_ratios.len()
            )));
        }
        let layer = |stack: Stack, index: usize| -> Result<EncoderLayer, Error> {
            let b = l.at(Some(Block { stack, index }));
            let gated = stack == Stack::VisionGlobal;
            Ok(EncoderLayer {
                ln1_w: b.vec(&t::V_ATTN_NORM_W)?,
                ln1_b: b.vec(&t::V_ATTN_NORM_B)?,
                q: Linear::new(b.mat(&t::V_ATTN_Q)?),
                k: Linear::new(b.mat(&t::V_ATTN_K)?),
                v: Linear::new(b.mat(&t::V_ATTN_V)?),
                o: Linear::new(b.mat(&t::V_ATTN_OUTPUT)?),
                ln2_w: b.vec(&t::V_FFN_NORM_W)?,
                ln2_b: b.vec(&t::V_FFN_NORM_B)?,
                fc1: Linear::new(b.mat(&t::V_FFN_UP_W)?),
                fc1_b: b.vec(&t::V_FFN_UP_B)?,
                fc2: Linear::new(b.mat(&t::V_FFN_DOWN_W)?),
                fc2_b: b.vec(&t::V_FFN_DOWN_B)?,
                gates: if gated {
                    Some((
                        gate(b.scalar(&t::V_ATTN_GATE)?, global_tanh),
                        gate(b.scalar(&t::V_MLP_GATE)?, global_tanh),
                    ))
                } else {
                    None
                },
            })
        };
        let local = (0..c.n_local)
            .map(|i| layer(Stack::VisionLocal, i))
            .collect::<Result<Vec<_>, _>>()?;
        let global = (0..c.n_global)
            .map(|i| layer(Stack::VisionGlobal, i))
            .collect::<Result<Vec<_>, _>>()?;
        let m = l.at(None);
        // The position gate: HF uses (1 − tanh g) for the position table and tanh g for the tile
        // table; Ollama files store exactly those two numbers in two tensors.
        let g_pos = m.scalar(&t::V_POS_GATE)?;
        let (pos_gate, tile_pos_gate) = if tanh_stored {
            (g_pos, m.scalar(&t::V_TILE_POS_GATE)?)
        } else {
            (1.0 - g_pos.tanh(), g_pos.tanh())
        };
        Ok(VisionModel {
            cfg: c.clone(),
            text_hidden: mc.text.hidden,
            patch: Linear::new(m.mat(&t::V_PATCH_EMBD)?),
            class_emb: m.vec(&t::V_CLASS_EMBD)?,
            pos_emb: m.mat(&t::V_POS_EMBD)?,
            pos_gate,
            tile_pos: m.mat(&t::V_TILE_POS_EMBD)?,
            tile_pos_gate,
            pre_tile: m.mat(&t::V_PRE_TILE_EMBD)?,
            pre_gate: gate(m.scalar(&t::V_PRE_TILE_GATE)?, tanh_stored),
            post_tile: m.mat(&t::V_POST_TILE_EMBD)?,
            post_gate: gate(m.scalar(&t::V_POST_TILE_GATE)?, tanh_stored),
            pre_ln: (m.vec(&t::V_PRE_LN_W)?, m.vec(&t::V_PRE_LN_B)?),
            post_ln: (m.vec(&t::V_POST_LN_W)?, m.vec(&t::V_POST_LN_B)?),
            local,
            global,
            proj: Linear::new(m.mat(&t::MM_W)?),
            proj_b: m.vec(&t::MM_B)?,
            precision: VisionPrecision::Auto,
            quantized_file: false, // set by the model once its text side is loaded
        })
    }

    /// Bytes of vision + projector weights.
    pub fn weight_bytes(&self) -> usize {
        let layers: usize = self
            .local
            .iter()
            .chain(&self.global)
            .map(|l| {
                [&l.q, &l.k, &l.v, &l.o, &l.fc1, &l.fc2]
                    .iter()
                    .map(|m| m.w.nbytes())
                    .sum::<usize>()
            })
            .sum();
        layers + self.patch.w.nbytes() + self.proj.w.nbytes()
    }

    /// Every matrix of the tower and projector.
    fn linears(&self) -> impl Iterator<Item = &Linear> {
        let layers = self.local.iter().chain(&self.global);
        layers
            .flat_map(|l| [&l.q, &l.k, &l.v, &l.o, &l.fc1, &l.fc2])
            .chain([&self.patch, &self.proj])
    }

    /// Ask for a precision ([`VisionPrecision::Auto`] by default); `quantized_file` says whether
    /// the model's text matrices are quantized (what `Auto` decides on).
    pub(crate) fn set_precision(&mut self, p: VisionPrecision, quantized_file: bool) {
        self.precision = p;
        self.quantized_file = quantized_file;
    }

    /// The precision a forward pass on the calling thread's kernel path runs in:
    /// [`VisionPrecision::F32`] or [`VisionPrecision::Int8`] ([`VisionPrecision::resolve`]).
    pub fn precision(&self) -> VisionPrecision {
        self.precision
            .resolve(self.quantized_file, crate::kernels::active_path())
    }

    /// Build what the resolved precision needs before the first image (int8: every matrix
    /// quantized into memory, once). Returns `(bytes, seconds)` of the work done now (`(0, 0)`:
    /// nothing to do). [`VisionModel::forward`] calls it itself; call it to time it apart.
    pub fn prepare(&self) -> (usize, f64) {
        let (prec, before) = (self.precision(), self.prepared_bytes());
        let t = std::time::Instant::now();
        let bytes: usize = self.linears().map(|l| l.prepare(prec)).sum();
        match bytes > before {
            true => (bytes, t.elapsed().as_secs_f64()),
            false => (0, 0.0),
        }
    }

    /// Bytes of the in-memory copies the precisions used so far made (integer weights).
    pub fn prepared_bytes(&self) -> usize {
        self.linears().map(Linear::prepared_bytes).sum()
    }

    /// Run the tower on one preprocessed image.
    ///
    /// `pixels`: `[T, 3, S, S]` normalized tiles (slots past `n_tiles` all zeros), i.e.
    /// [`Preprocessed::pixel_values`](crate::models::mllama::preprocess::Preprocessed::pixel_values);
    /// `ar_id`: 1-based aspect-ratio id; `n_tiles`: real tiles; `taps`: which side of each tapped
    /// layer is a feature.
    ///
    /// # Panics
    ///
    /// If `pixels.len() != T · 3 · S · S`, or `ar_id` is beyond the aspect-ratio tables.
    pub fn forward(
        &self,
        pixels: &[f32],
        ar_id: usize,
        n_tiles: usize,
        taps: TapConvention,
    ) -> VisionOutput {
        let c = &self.cfg;
        assert_eq!(
            pixels.len(),
            c.max_tiles * c.channels * c.image_size * c.image_size
        );
        let n = c.max_tiles * c.padded_tokens_per_tile();
        let prec = self.precision();
        self.prepare();
        let mut sc = Scratch::new();
        let emb = self.patch_embedding(pixels, n_tiles, prec, &mut sc); // [n_tiles·G², D]
        let h = self.tile_and_position_embedding(emb, ar_id, n_tiles); // [T, P, D]
        let mut x = self.pre_norm_padded(h); // [T·P8, D]
        let pad = PadMask::new(c, n_tiles);
        let mut ws = Workspace::new(n, c.hidden, c.ffn, prec);
        // K tapped states, each [T·P8, D]:
        let tap_states = self.local_encoder(&mut x, pad.mask(), taps, &mut ws, &mut sc);
        let mut x = self.post_norm_tile_embedding(x, ar_id); // [T·P8, D]
        for layer in &self.global {
            layer.forward(c, &mut x, pad.mask(), &mut ws, &mut sc);
        }
        drop(ws);
        let features = self.unpad_with_taps(&x, &tap_states); // [T, P, D·(1+K)]
        let states = self.project(&features, prec, &mut sc); // [T·P, H]
        VisionOutput { states, features }
    }

    /// Step 1: the patch convolution as one GEMM over the real tiles' unfolded patches
    /// `[n_tiles·G², 3·p·p]` (unfold order (c, ky, kx)): embeddings `[n_tiles·G², D]`.
    fn patch_embedding(
        &self,
        pixels: &[f32],
        n_tiles: usize,
        prec: VisionPrecision,
        sc: &mut Scratch,
    ) -> Vec<f32> {
        let c = &self.cfg;
        let (s, ps, g) = (c.image_size, c.patch_size, c.grid());
        let kk = c.channels * ps * ps;
        let np = n_tiles * g * g;
        let mut patches = vec![0f32; np * kk]; // [n_tiles·G², 3·p·p]
        for t in 0..n_tiles {
            let tile = &pixels[t * c.channels * s * s..(t + 1) * c.channels * s * s]; // [3, S, S]
            for gy in 0..g {
                for gx in 0..g {
                    let row = &mut patches[((t * g + gy) * g + gx) * kk..][..kk];
                    for ch in 0..c.channels {
                        for ky in 0..ps {
                            let src = &tile[ch * s * s + (gy * ps + ky) * s + gx * ps..][..ps];
                            row[(ch * ps + ky) * ps..][..ps].copy_from_slice(src);
                        }
                    }
                }
            }
        }
        let mut emb = vec![0f32; np * c.hidden]; // [n_tiles·G², D]
        self.patch.forward(prec, None, &patches, np, &mut emb, sc);
        emb
    }

    /// Steps 2–4, per tile slot t and token i: the class token (i = 0) or the patch embedding
    /// plus the gated pre-tile embedding, then the gated position embeddings:
    /// `h = (h + (1−tanh g)·pos[i]) + tanh g·tile_pos[ar][t, i]`. Returns h `[T, P, D]`.
    fn tile_and_position_embedding(
        &self,
        emb: Vec<f32>, // [n_tiles·G², D]
        ar_id: usize,
        n_tiles: usize,
    ) -> Vec<f32> {
        let c = &self.cfg;
        let (t_slots, g, d, p) = (c.max_tiles, c.grid(), c.hidden, c.tokens_per_tile());
        let pre = table_row(&self.pre_tile, ar_id, t_slots * d); // [T, D]
        let tile_pos = table_row(&self.tile_pos, ar_id, t_slots * p * d); // [T, P, D]
        let mut pos = vec![0f32; p * d]; // [P, D]
        for i in 0..p {
            self.pos_emb.row_to_f32(i, &mut pos[i * d..(i + 1) * d]);
        }
        let mut h = vec![0f32; t_slots * p * d]; // [T, P, D]
        for t in 0..t_slots {
            let pre_t = &pre[t * d..(t + 1) * d]; // [D]
            for i in 0..p {
                let hr = &mut h[(t * p + i) * d..][..d];
                if i == 0 {
                    hr.copy_from_slice(&self.class_emb);
                } else if t < n_tiles {
                    let e = &emb[((t * g * g) + i - 1) * d..][..d];
                    for ((o, &x), &b) in hr.iter_mut().zip(e).zip(pre_t) {
                        *o = x + b * self.pre_gate;
                    }
                } else {
                    // An empty tile slot: its (zero) patch embedding plus the pre-tile embedding.
                    for (o, &b) in hr.iter_mut().zip(pre_t) {
                        *o = 0.0 + b * self.pre_gate;
                    }
                }
                let pr = &pos[i * d..(i + 1) * d];
                let tr = &tile_pos[(t * p + i) * d..][..d];
                for ((o, &a), &b) in hr.iter_mut().zip(pr).zip(tr) {
                    *o = (*o + self.pos_gate * a) + self.tile_pos_gate * b;
                }
            }
        }
        h
    }

    /// Steps 5–6: layernorm_pre per tile, each tile padded to P8 tokens with zero rows:
    /// h `[T, P, D]` → x `[T·P8, D]`.
    fn pre_norm_padded(&self, h: Vec<f32>) -> Vec<f32> {
        let c = &self.cfg;
        let (d, p, p8) = (c.hidden, c.tokens_per_tile(), c.padded_tokens_per_tile());
        let mut x = vec![0f32; c.max_tiles * p8 * d]; // [T·P8, D]
        for t in 0..c.max_tiles {
            let (src, dst) = (t * p * d..(t + 1) * p * d, t * p8 * d..(t * p8 + p) * d);
            nn::layer_norm(&h[src], &self.pre_ln.0, &self.pre_ln.1, c.eps, &mut x[dst]);
        }
        x
    }

    /// Step 8: the local encoder layers on x `[T·P8, D]` in place, returning the tapped states
    /// (each `[T·P8, D]`, the layer's input or output as `taps` says) in the order of
    /// `intermediate_layers_indices` (which need not be sorted).
    fn local_encoder(
        &self,
        x: &mut [f32],
        mask: Mask<'_>,
        taps: TapConvention,
        ws: &mut Workspace,
        sc: &mut Scratch,
    ) -> Vec<Vec<f32>> {
        let c = &self.cfg;
        let mut in_layer_order: Vec<Vec<f32>> = Vec::with_capacity(c.taps.len());
        for (li, layer) in self.local.iter().enumerate() {
            let tapped = c.taps.iter().filter(|&&k| k == li).count();
            if taps == TapConvention::LayerInput {
                in_layer_order.extend(std::iter::repeat_n(&*x, tapped).map(<[f32]>::to_vec));
            }
            layer.forward(c, x, mask, ws, sc);
            if taps == TapConvention::LayerOutput {
                in_layer_order.extend(std::iter::repeat_n(&*x, tapped).map(<[f32]>::to_vec));
            }
        }
        let mut order: Vec<usize> = (0..c.taps.len()).collect();
        order.sort_by_key(|&i| c.taps[i]);
        let mut by_index: Vec<Vec<f32>> = vec![Vec::new(); c.taps.len()];
        for (slot, state) in order.into_iter().zip(in_layer_order) {
            by_index[slot] = state;
        }
        by_index
    }

    /// Steps 9–10: layernorm_post, then the gated post-tile embedding of each row's tile slot
    /// added to every position (pad rows too): x `[T·P8, D]` → `[T·P8, D]`.
    fn post_norm_tile_embedding(&self, x: Vec<f32>, ar_id: usize) -> Vec<f32> {
        let c = &self.cfg;
        let (d, p8) = (c.hidden, c.padded_tokens_per_tile());
        let mut y = vec![0f32; x.len()]; // [T·P8, D]
        nn::layer_norm(&x, &self.post_ln.0, &self.post_ln.1, c.eps, &mut y);
        drop(x);
        let post = table_row(&self.post_tile, ar_id, c.max_tiles * d); // [T, D]
        for (i, row) in y.chunks_exact_mut(d).enumerate() {
            let e = &post[(i / p8) * d..(i / p8 + 1) * d];
            for (o, &b) in row.iter_mut().zip(e) {
                *o += b * self.post_gate;
            }
        }
        y
    }

    /// Steps 12–13: drop the pad rows and concatenate the final state with the taps interleaved
    /// per channel (`[out ‖ taps]`, tap k of channel ch at `D + ch·K + k`): `[T, P, D·(1+K)]`.
    fn unpad_with_taps(&self, x: &[f32], taps: &[Vec<f32>]) -> Vec<f32> {
        let c = &self.cfg;
        let (d, p, p8) = (c.hidden, c.tokens_per_tile(), c.padded_tokens_per_tile());
        let (kt, od) = (taps.len(), c.output_dim);
        let mut features = vec![0f32; c.max_tiles * p * od]; // [T, P, D·(1+K)]
        for t in 0..c.max_tiles {
            for i in 0..p {
                let src = (t * p8 + i) * d;
                let dst = &mut features[(t * p + i) * od..][..od];
                dst[..d].copy_from_slice(&x[src..src + d]);
                for ch in 0..d {
                    for (k, tap) in taps.iter().enumerate() {
                        dst[d + ch * kt + k] = tap[src + ch];
                    }
                }
            }
        }
        features
    }

    /// Step 14: the projector, features `[T·P, D·(1+K)]` → states `[T·P, H]`.
    fn project(&self, features: &[f32], prec: VisionPrecision, sc: &mut Scratch) -> Vec<f32> {
        let rows = self.cfg.max_tiles * self.cfg.tokens_per_tile();
        let mut states = vec![0f32; rows * self.text_hidden]; // [T·P, H]
        let b = Some(&self.proj_b[..]);
        self.proj.forward(prec, b, features, rows, &mut states, sc);
        states
    }

    /// Run local encoder layer `i` alone on `x` `[T·P8, D]` with the mask of an image of
    /// `n_tiles` tiles (benchmarks of one vision layer at real shapes).
    ///
    /// # Panics
    ///
    /// If `i` is not a local layer or `x.len() != T · P8 · D`.
    pub fn run_local_layer(&self, i: usize, x: &mut [f32], n_tiles: usize) {
        let c = &self.cfg;
        let n = c.max_tiles * c.padded_tokens_per_tile();
        assert_eq!(x.len(), n * c.hidden);
        let pad = PadMask::new(c, n_tiles);
        let mut ws = Workspace::new(n, c.hidden, c.ffn, self.precision());
        self.prepare();
        let mut sc = Scratch::new();
        self.local[i].forward(c, x, pad.mask(), &mut ws, &mut sc);
    }
}

/// Row `ar_id` of an aspect-ratio table as `len` f32 values.
fn table_row(table: &Mat, ar_id: usize, len: usize) -> Vec<f32> {
    let mut row = vec![0f32; len];
    table.row_to_f32(ar_id, &mut row);
    row
}

impl EncoderLayer {
    /// One pre-LN encoder layer, in place on `x` `[N, D]` (N = T·P8):
    /// `x += g_attn·Wo·attn(LN1(x))`, then `x += g_ffn·fc2(gelu(fc1(LN2(x))))`, where the gates
    /// are tanh(gate) for global layers and 1 (a plain add) for local ones.
    fn forward(
        &self,
        c: &VisionConfig,
        x: &mut [f32],
        mask: Mask<'_>,
        ws: &mut Workspace,
        sc: &mut Scratch,
    ) {
        let (n, p) = (ws.n, ws.prec);
        let hd = c.hidden / c.n_heads;
        let heads = Heads::new(c.n_heads, c.n_heads, hd);
        // Attention.
        nn::layer_norm(x, &self.ln1_w, &self.ln1_b, c.eps, &mut ws.a); // [N, D]
        let vt = &mut ws.f[..n * c.hidden]; // [N, D] (the MLP's buffer, free here)
        let qkv = [&self.q, &self.k, &self.v];
        forward3(qkv, p, &ws.a, n, [&mut ws.q, &mut ws.b, vt], sc); // 3 × [N, D]
        nn::to_head_major(&ws.b, n, c.n_heads, hd, n, 0, &mut ws.k); // [heads, N, hd]
        nn::to_head_major(&ws.f[..n * c.hidden], n, c.n_heads, hd, n, 0, &mut ws.v); // [heads, N, hd]
        let kv = KeysValues::new(&ws.k, &ws.v, n, n);
        nn::attention_lowp(&ws.q, kv, heads, mask, &mut ws.a, p.attention()); // [N, D]
        self.o.forward(p, None, &ws.a, n, &mut ws.b, sc); // [N, D]
        residual(x, self.gates.map(|(ga, _)| ga), &ws.b);
        // MLP.
        nn::layer_norm(x, &self.ln2_w, &self.ln2_b, c.eps, &mut ws.a); // [N, D]
        self.fc1
            .forward(p, Some(&self.fc1_b), &ws.a, n, &mut ws.f, sc); // [N, F]
        nn::gelu_inplace(&mut ws.f);
        self.fc2
            .forward(p, Some(&self.fc2_b), &ws.f, n, &mut ws.b, sc); // [N, D]
        residual(x, self.gates.map(|(_, gf)| gf), &ws.b);
    }
}

/// `x += g·y` for a gated (global) layer, `x += y` for a local one.
fn residual(x: &mut [f32], gate: Option<f32>, y: &[f32]) {
    match gate {
        Some(g) => nn::add_scaled(x, g, y),
        None => nn::add(x, y),
    }
}

/// Step 7, the pad⊗pad mask of an image of `n_tiles` tiles over `[T·P8]` rows: pad rows
/// (padding tokens and empty tile slots) see only the real keys (the real tiles' P tokens).
struct PadMask {
    pad: Vec<bool>,                    // [T·P8]
    real: Vec<std::ops::Range<usize>>, // one per real tile
}

impl PadMask {
    fn new(c: &VisionConfig, n_tiles: usize) -> Self {
        let (p, p8) = (c.tokens_per_tile(), c.padded_tokens_per_tile());
        let n = c.max_tiles * p8;
        PadMask {
            pad: (0..n).map(|i| i / p8 >= n_tiles || i % p8 >= p).collect(),
            real: (0..n_tiles).map(|t| t * p8..t * p8 + p).collect(),
        }
    }

    fn mask(&self) -> Mask<'_> {
        Mask::Vision {
            pad_query: &self.pad,
            real_keys: &self.real,
        }
    }
}

/// Activation buffers reused by every layer of one forward pass.
struct Workspace {
    n: usize,
    prec: VisionPrecision,
    a: Vec<f32>, // [N, D] normed input / attention output
    b: Vec<f32>, // [N, D] projections
    q: Vec<f32>, // [N, D]
    k: Vec<f32>, // [heads, N, hd]
    v: Vec<f32>, // [heads, N, hd]
    f: Vec<f32>, // [N, F]
}

impl Workspace {
    fn new(n: usize, d: usize, f: usize, prec: VisionPrecision) -> Self {
        Workspace {
            n,
            prec,
            a: vec![0.0; n * d],
            b: vec![0.0; n * d],
            q: vec![0.0; n * d],
            k: vec![0.0; n * d],
            v: vec![0.0; n * d],
            f: vec![0.0; n * f],
        }
    }
}
