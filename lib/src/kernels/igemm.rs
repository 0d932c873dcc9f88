//! The integer GEMM of the compute-bound float matrices (the vision tower and projector):
//! `y[n, m] = x[n, k] · Wᵀ (+ bias)` with both operands quantized per block of [`KB`] values along
//! k to one of two [`Width`]s — [`Int8`] (levels ±127) or [`Int16`] (12-bit levels ±2047) —
//! exact i32 block dot products and one fixed float epilogue, so every path gives the same bits.
//!
//! Why two widths: int8 operands do 4 multiply-adds per 32-bit lane per instruction (`vpdpbusd`,
//! `sdot`) but move the fixture models' cross-attention states by 1.4–1.9% (relative L2), over
//! issue 14's 1% bound; 12-bit operands keep them within 0.12% while `vpdpwssd` / `vpmaddwd`
//! still do 2 per lane, twice an f32 FMA's.
//!
//! # Numerics (the scalar tile is the reference; every path equals it bit for bit)
//! - Weights, per (row j, block b), and activations, per (row i, block b), one rule (ggml's
//!   `quantize_row_q8_0_ref` with an f32 scale and block `kb`): `amax = max |v|`,
//!   `d = amax / LEVELS`, `id = 1/d` (0 if `d = 0`), `q = round(v·id)` (half away from zero),
//!   clamped to `[−LEVELS, LEVELS]`. A last partial block is zero-padded.
//! - `dot[i, j, b] = Σ qa·qw` exactly in i32 (int8: `|dot| ≤ 256·127² < 2²⁴`; 12-bit, block 128:
//!   `≤ 128·2047² < 2²⁹`).
//! - `y[i, j] = ((((0 + t₀) + t₁) + …) + bias[j]` with `t_b = (da[i,b]·dw[j,b]) · (dot as f32)`,
//!   every product and sum rounded on its own (Rust never contracts to FMA).
//!
//! # Layouts (in 32-bit lanes of [`Width::LANE`] values: 4 for int8, 2 for int16)
//! - [`IMat`]: the weights quantized once, in one layout for every path: panels of [`PANEL`] = 16
//!   rows (the row count padded to a multiple of 32, zero rows with scale 0), each panel
//!   `[nb blocks][kb/LANE steps][16 rows][LANE values]` plus its scales `[nb][16]`. One step of a
//!   panel is 64 bytes: one zmm, two ymm or four NEON registers of one lane per row.
//! - Activations, quantized once per call into per-thread buffers: panels of the kernel's `MR`
//!   rows `[nb][kb/LANE][MR][LANE]` (rows past `n` zero), their scales `[nb][MR]` and
//!   `off = −128·Σ qa` per (row, block) (the int8 `vpdpbusd` kernel's correction, see
//!   `x86::igemm`).
//!
//! # Traversal
//! Parallel tasks over (block of W rows × chunk of x rows) as in `gemm`; inside a task, chunks of
//! `MC` x rows whose packed panels fit in L2, then for each `NR`-row weight tile every `MR`-row
//! activation panel: the micro-kernel (`IKernel::tile`) runs over all of k with the `MR × NR`
//! float tile in registers (or L1), and the tile is stored once (plus bias).

use std::cell::RefCell;

use rayon::prelude::*;

use super::tensor::Mat;
use super::SyncPtr;

/// Quantization block along k (values). Every kernel works for 32, 64, 128 and 256
/// ([`IMat::with_block`]). 128: on the AVX-512 path at the vision shapes (`examples/igemm_speed`,
/// `IG_KB=all`) 32 is clearly slower (the per-block epilogue), 64 a little, 128 and 256 about
/// equal; the int8 relative L2 error on Gaussian data grows from 0.77e-2 (32) to 1.02e-2 (256).
pub const KB: usize = 128;
/// Weight rows per packed panel.
pub const PANEL: usize = 16;
/// Packed weight rows are padded to a multiple of this (the widest tile, `NR = 32`).
const ROW_PAD: usize = 32;

/// An integer format of the GEMM: its level type and range.
pub trait Width: Send + Sync + 'static {
    /// One level (`i8`, `i16`).
    type Q: bytemuck::Pod + Default + Send + Sync;
    /// Levels per 32-bit lane of the packed layouts (4 or 2).
    const LANE: usize;
    /// Largest level: values quantize to `−LEVELS..=LEVELS`.
    const LEVELS: f32;
    /// `r` as a level (`|r| ≤ LEVELS`).
    fn level(r: i32) -> Self::Q;
    /// A level as an integer.
    fn value(q: Self::Q) -> i32;
}

/// int8 levels, ±127, four per lane.
pub struct Int8;

/// 12-bit levels, ±2047, stored as `i16`, two per lane.
pub struct Int16;

impl Width for Int8 {
    type Q = i8;
    const LANE: usize = 4;
    const LEVELS: f32 = 127.0;
    #[inline(always)]
    fn level(r: i32) -> i8 {
        r as i8
    }
    #[inline(always)]
    fn value(q: i8) -> i32 {
        q as i32
    }
}

impl Width for Int16 {
    type Q = i16;
    const LANE: usize = 2;
    const LEVELS: f32 = 2047.0;
    #[inline(always)]
    fn level(r: i32) -> i16 {
        r as i16
    }
    #[inline(always)]
    fn value(q: i16) -> i32 {
        q as i32
    }
}

/// A weight matrix quantized for the GEMM: `[rows, cols]`, built once (at model load or first
/// use). The packed layout is the same for every path (see the module docs).
pub struct IMat<W: Width> {
    /// Rows (output features).
    pub rows: usize,
    /// Values per row (input features).
    pub cols: usize,
    /// Quantization block along k.
    kb: usize,
    /// Blocks per row, `cols.div_ceil(kb)`.
    nb: usize,
    /// `qs[((p·nb + b)·kb/LANE + s)·16·LANE + r·LANE + c]` = q of row `16p + r`, column
    /// `b·kb + LANE·s + c`.
    qs: Vec<W::Q>,
    /// `dw[(p·nb + b)·16 + r]`: the scale of row `16p + r`, block `b`.
    dw: Vec<f32>,
}

/// A weight matrix in int8 levels ([`matmul_i8`]).
pub type I8Mat = IMat<Int8>;
/// A weight matrix in 12-bit levels ([`matmul_i16`]).
pub type I16Mat = IMat<Int16>;

impl<W: Width> IMat<W> {
    /// Quantize any [`Mat`] (rows through its type's dequantizer), with block [`KB`]; parallel
    /// over panels. The result does not depend on the path.
    pub fn new(w: &Mat) -> Self {
        Self::with_block(w, KB)
    }

    /// [`IMat::new`] with quantization block `kb` (32, 64, 128 or 256) instead of [`KB`]
    /// (measurements and fidelity studies; 12-bit levels allow at most 128).
    ///
    /// # Panics
    /// If `kb` is not one of those.
    pub fn with_block(w: &Mat, kb: usize) -> Self {
        let most = if W::LEVELS > 127.0 { 128 } else { 256 };
        assert!(
            matches!(kb, 32 | 64 | 128 | 256) && kb <= most,
            "IMat: block {kb} is not 32, 64, 128 or 256 (at most {most} for these levels)"
        );
        let (rows, cols) = (w.rows, w.cols);
        let nb = cols.div_ceil(kb);
        let panels = rows.next_multiple_of(ROW_PAD) / PANEL;
        let mut qs = vec![W::Q::default(); panels * nb * kb * PANEL];
        let mut dw = vec![0f32; panels * nb * PANEL];
        if nb > 0 {
            qs.par_chunks_mut(nb * kb * PANEL)
                .zip(dw.par_chunks_mut(nb * PANEL))
                .enumerate()
                .for_each(|(p, (qp, dp))| {
                    let mut row = vec![0f32; nb * kb];
                    let mut q = [W::Q::default(); 256];
                    for r in 0..PANEL {
                        let j = p * PANEL + r;
                        if j >= rows {
                            break;
                        }
                        w.row_to_f32(j, &mut row[..cols]);
                        for b in 0..nb {
                            let v = &row[b * kb..(b + 1) * kb];
                            let (d, _) = quantize_block::<W>(v, &mut q[..kb]);
                            dp[b * PANEL + r] = d;
                            let blk = &mut qp[b * kb * PANEL..(b + 1) * kb * PANEL];
                            for (s, ql) in q[..kb].chunks_exact(W::LANE).enumerate() {
                                blk[(s * PANEL + r) * W::LANE..][..W::LANE].copy_from_slice(ql);
                            }
                        }
                    }
                });
        }
        IMat {
            rows,
            cols,
            kb,
            nb,
            qs,
            dw,
        }
    }

    /// Bytes held (for `--stats`).
    pub fn nbytes(&self) -> usize {
        std::mem::size_of_val(&self.qs[..]) + 4 * self.dw.len()
    }

    /// The quantization block along k.
    pub fn block(&self) -> usize {
        self.kb
    }
}

/// Quantize one block (`v.len() == q.len()`, zero-padded by the caller) by the module's rule:
/// returns `(d, Σ q)`. Written once; the SIMD paths compile it with their target features
/// (the same IEEE operations, so the same bits).
#[inline(always)]
pub(crate) fn quantize_block<W: Width>(v: &[f32], q: &mut [W::Q]) -> (f32, i32) {
    // max |v| over 16 lanes, then across them (max is exact, so the order does not matter; the
    // lanes let the compiler vectorize). `v.len()` is a multiple of 16.
    let mut lanes = [0f32; 16];
    for c in v.chunks_exact(16) {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l = l.max(x.abs());
        }
    }
    let amax = lanes.iter().fold(0f32, |a, &l| a.max(l));
    let d = amax / W::LEVELS;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut s = 0i32;
    for (o, &x) in q.iter_mut().zip(v) {
        let r = (x * id).round().clamp(-W::LEVELS, W::LEVELS) as i32;
        *o = W::level(r);
        s += r;
    }
    (d, s)
}

/// Quantize activation rows `x` (`rows ≤ mr` rows of `k` values) into one packed panel of `mr`
/// rows: `qa` `[nb][kb/LANE][mr][LANE]`, `da` `[nb][mr]`, `off` `[nb][mr]` (`−128·Σ q`); rows past
/// `rows` are zero. The plain meaning of every [`IKernel::quantize`].
#[inline(always)]
pub(crate) fn quantize_panel<W: Width>(
    x: &[f32],
    k: usize,
    kb: usize,
    mr: usize,
    qa: &mut [W::Q],
    da: &mut [f32],
    off: &mut [i32],
) {
    let rows = x.len() / k.max(1);
    let nb = da.len() / mr;
    let mut v = [0f32; 256];
    let mut q = [W::Q::default(); 256];
    for r in 0..mr {
        for b in 0..nb {
            let (d, s) = if r < rows {
                let src = &x[r * k + b * kb..r * k + ((b + 1) * kb).min(k)];
                if src.len() == kb {
                    quantize_block::<W>(src, &mut q[..kb])
                } else {
                    v[..src.len()].copy_from_slice(src);
                    v[src.len()..kb].fill(0.0);
                    quantize_block::<W>(&v[..kb], &mut q[..kb])
                }
            } else {
                q[..kb].fill(W::Q::default());
                (0.0, 0)
            };
            da[b * mr + r] = d;
            off[b * mr + r] = -128 * s;
            let blk = &mut qa[b * kb * mr..(b + 1) * kb * mr];
            for (st, ql) in q[..kb].chunks_exact(W::LANE).enumerate() {
                blk[(st * mr + r) * W::LANE..][..W::LANE].copy_from_slice(ql);
            }
        }
    }
}

/// What one micro-kernel call reads: an activation panel and `NR / 16` weight panels, all
/// blocks.
pub(crate) struct Tile<W: Width> {
    /// Blocks along k.
    pub nb: usize,
    /// Quantization block (values; a multiple of 32).
    pub kb: usize,
    /// Activation panel `[nb][kb/LANE][MR][LANE]`.
    pub a: *const W::Q,
    /// Activation scales `[nb][MR]`.
    pub da: *const f32,
    /// `−128·Σ qa` per activation row and block, `[nb][MR]` (read by the int8 `vpdpbusd` kernel).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub off: *const i32,
    /// First weight panel `[nb][kb/LANE][16][LANE]`; the next ones `w_panel` levels apart.
    pub w: *const W::Q,
    pub w_panel: usize,
    /// First weight panel's scales `[nb][16]`; the next ones `dw_panel` floats apart.
    pub dw: *const f32,
    pub dw_panel: usize,
}

/// One path's micro-kernel (and activation quantizer) for levels `W`.
pub(crate) trait IKernel<W: Width>: Sync {
    /// Activation rows per tile.
    const MR: usize;
    /// Weight rows per tile (16 or 32: one or two panels).
    const NR: usize;

    /// [`quantize_panel`] with `mr = MR`, compiled for the path.
    ///
    /// # Safety
    /// The path's CPU features are available.
    unsafe fn quantize(
        x: &[f32],
        k: usize,
        kb: usize,
        qa: &mut [W::Q],
        da: &mut [f32],
        off: &mut [i32],
    ) {
        quantize_panel::<W>(x, k, kb, Self::MR, qa, da, off)
    }

    /// `out[i·NR + j] = Σ_b (da[b][i]·dw[j][b]) · dot[i, j, b]` summed in block order from 0
    /// (the module's numerics; no bias) for the full `MR × NR` tile.
    ///
    /// # Safety
    /// The path's CPU features are available; the pointers of `t` cover `nb` blocks of one
    /// activation panel and `NR / 16` weight panels; `out` holds `MR·NR` floats.
    unsafe fn tile(t: &Tile<W>, out: *mut f32);
}

/// The reference micro-kernel (no target features): plain loops, `MR = 4`, `NR = 16`, for both
/// widths.
pub(crate) struct ScalarIKernel;

impl<W: Width> IKernel<W> for ScalarIKernel {
    const MR: usize = 4;
    const NR: usize = 16;
    unsafe fn tile(t: &Tile<W>, out: *mut f32) {
        scalar_tile::<W, 4, 16>(t, out)
    }
}

/// The plain meaning of [`IKernel::tile`] for any `MR`, `NR`.
///
/// # Safety
/// As [`IKernel::tile`].
#[inline(always)]
pub(crate) unsafe fn scalar_tile<W: Width, const MR: usize, const NR: usize>(
    t: &Tile<W>,
    out: *mut f32,
) {
    let (lane, steps) = (W::LANE, t.kb / W::LANE);
    let mut y = [[0f32; NR]; MR];
    for b in 0..t.nb {
        let mut dot = [[0i32; NR]; MR];
        for s in 0..steps {
            let a = t.a.add((b * steps + s) * MR * lane);
            for (jp, dj) in (0..NR).step_by(PANEL).enumerate() {
                let w = t.w.add(jp * t.w_panel + (b * steps + s) * PANEL * lane);
                for (i, di) in dot.iter_mut().enumerate() {
                    for r in 0..PANEL {
                        let mut v = 0i32;
                        for c in 0..lane {
                            v += W::value(*a.add(i * lane + c)) * W::value(*w.add(r * lane + c));
                        }
                        di[dj + r] += v;
                    }
                }
            }
        }
        for (i, (yi, di)) in y.iter_mut().zip(&dot).enumerate() {
            let da = *t.da.add(b * MR + i);
            for (j, (yv, &dv)) in yi.iter_mut().zip(di).enumerate() {
                let dw = *t.dw.add((j / PANEL) * t.dw_panel + b * PANEL + j % PANEL);
                *yv += (da * dw) * dv as f32;
            }
        }
    }
    for (i, yi) in y.iter().enumerate() {
        std::ptr::copy_nonoverlapping(yi.as_ptr(), out.add(i * NR), NR);
    }
}

/// Bytes of packed activations a task's row chunk should stay within (half a Zen 4 L2).
const MC_BYTES: usize = 512 << 10;
/// Largest block of W rows per task.
const NC_MAX: usize = 512;

/// Quantized activations of one calling thread (kept across calls: the vision tower's are tens
/// of MB, and allocating them per product would cost page faults each time).
struct Acts<Q> {
    qa: Vec<Q>,
    da: Vec<f32>,
    off: Vec<i32>,
}

impl<Q> Acts<Q> {
    const fn new() -> Self {
        Acts {
            qa: Vec::new(),
            da: Vec::new(),
            off: Vec::new(),
        }
    }
}

thread_local! {
    static ACTS8: RefCell<Acts<i8>> = const { RefCell::new(Acts::new()) };
    static ACTS16: RefCell<Acts<i16>> = const { RefCell::new(Acts::new()) };
}

/// One product of a shared-input call ([`matmul_i8_shared`], [`matmul_i16_shared`]):
/// `y[n, w.rows] = x · Wᵀ (+ bias)`.
pub struct Product<'a, W: Width> {
    /// The weights.
    pub w: &'a IMat<W>,
    /// An optional bias (`w.rows` values).
    pub bias: Option<&'a [f32]>,
    /// The output, `n × w.rows`.
    pub y: &'a mut [f32],
}

/// `y[n, rows] = x[n, cols] · Wᵀ (+ bias)`, int8 × int8 with the module's numerics, on the active
/// path ([`super::active_path`]), parallel (rayon).
///
/// # Panics
/// If `x`, `y` or `bias` do not have `n·cols`, `n·rows`, `rows` values.
pub fn matmul_i8(w: &I8Mat, bias: Option<&[f32]>, x: &[f32], n: usize, y: &mut [f32]) {
    matmul_i8_shared(x, n, &mut [Product { w, bias, y }]);
}

/// Several int8 products of the same `x` (`n` rows), which is quantized once: each product's
/// result equals [`matmul_i8`]'s bit for bit.
///
/// # Panics
/// As [`matmul_i8`], or if the products' `cols` or quantization blocks differ.
pub fn matmul_i8_shared(x: &[f32], n: usize, products: &mut [Product<'_, Int8>]) {
    if check("matmul_i8", x, n, products) {
        super::igemm_on(super::active_path(), x, n, products);
    }
}

/// [`matmul_i8`] in 12-bit levels ([`I16Mat`]).
///
/// # Panics
/// As [`matmul_i8`].
pub fn matmul_i16(w: &I16Mat, bias: Option<&[f32]>, x: &[f32], n: usize, y: &mut [f32]) {
    matmul_i16_shared(x, n, &mut [Product { w, bias, y }]);
}

/// [`matmul_i8_shared`] in 12-bit levels.
///
/// # Panics
/// As [`matmul_i8_shared`].
pub fn matmul_i16_shared(x: &[f32], n: usize, products: &mut [Product<'_, Int16>]) {
    if check("matmul_i16", x, n, products) {
        super::i16gemm_on(super::active_path(), x, n, products);
    }
}

/// Panic with a message naming the operand unless the shapes agree; whether there is work.
fn check<W: Width>(name: &str, x: &[f32], n: usize, products: &[Product<'_, W>]) -> bool {
    let Some(first) = products.first() else {
        return false;
    };
    let k = first.w.cols;
    for p in products {
        let m = p.w.rows;
        assert!(
            p.w.cols == k && p.w.kb == first.w.kb,
            "{name}: products of one input differ in columns or block"
        );
        assert_eq!(
            x.len(),
            n * k,
            "{name}: x has {} values, expected {n}×{k}",
            x.len()
        );
        assert_eq!(
            p.y.len(),
            n * m,
            "{name}: y has {} values, expected {n}×{m}",
            p.y.len()
        );
        if let Some(b) = p.bias {
            assert_eq!(
                b.len(),
                m,
                "{name}: bias has {} values, expected {m}",
                b.len()
            );
        }
    }
    n > 0
}

/// The GEMMs with micro-kernel `K` (the path's `Isa::IGemm`; dispatched in `kernels`).
pub(super) fn run<K: IKernel<Int8>>(x: &[f32], n: usize, products: &mut [Product<'_, Int8>]) {
    ACTS8.with(|cell| match cell.try_borrow_mut() {
        Ok(mut acts) => run_with::<Int8, K>(x, n, products, &mut acts),
        // Re-entered on this thread: fresh buffers.
        Err(_) => run_with::<Int8, K>(x, n, products, &mut Acts::new()),
    })
}

/// [`run`] in 12-bit levels (`Isa::I16Gemm`).
pub(super) fn run16<K: IKernel<Int16>>(x: &[f32], n: usize, products: &mut [Product<'_, Int16>]) {
    ACTS16.with(|cell| match cell.try_borrow_mut() {
        Ok(mut acts) => run_with::<Int16, K>(x, n, products, &mut acts),
        Err(_) => run_with::<Int16, K>(x, n, products, &mut Acts::new()),
    })
}

/// Quantize `x` once into `acts` (panels of `K::MR` rows), then every product.
fn run_with<W: Width, K: IKernel<W>>(
    x: &[f32],
    n: usize,
    products: &mut [Product<'_, W>],
    acts: &mut Acts<W::Q>,
) {
    let w0 = products[0].w;
    let (k, kb, nb, mr) = (w0.cols, w0.kb, w0.nb, K::MR);
    let apanels = n.div_ceil(mr);
    let (qa_len, d_len) = (apanels * nb * kb * mr, apanels * nb * mr);
    if acts.qa.len() < qa_len {
        acts.qa.resize(qa_len, W::Q::default());
    }
    if acts.da.len() < d_len {
        acts.da.resize(d_len, 0.0);
        acts.off.resize(d_len, 0);
    }
    let qa = &mut acts.qa[..qa_len];
    let (da, off) = (&mut acts.da[..d_len], &mut acts.off[..d_len]);
    if nb > 0 {
        // Activation quantization, parallel over panels (at least ~64 KiB of input per job).
        let min = (16384 / (mr * k)).max(1);
        qa.par_chunks_mut(nb * kb * mr)
            .zip(da.par_chunks_mut(nb * mr))
            .zip(off.par_chunks_mut(nb * mr))
            .enumerate()
            .with_min_len(min)
            .for_each(|(p, ((qp, dp), op))| {
                let rows = &x[p * mr * k..((p + 1) * mr).min(n) * k];
                // SAFETY: `K` is the active path's kernel, which this CPU runs.
                unsafe { K::quantize(rows, k, kb, qp, dp, op) };
            });
    }
    let acts = Packed::<W> {
        qa: &*qa,
        da: &*da,
        off: &*off,
    };
    for p in products.iter_mut() {
        if p.w.rows > 0 {
            product::<W, K>(p.w, p.bias, &acts, n, p.y);
        }
    }
}

/// Quantized activation panels of one call.
struct Packed<'a, W: Width> {
    qa: &'a [W::Q],
    da: &'a [f32],
    off: &'a [i32],
}

/// One product over already quantized activations: parallel tasks (module docs, Traversal).
fn product<W: Width, K: IKernel<W>>(
    w: &IMat<W>,
    bias: Option<&[f32]>,
    acts: &Packed<'_, W>,
    n: usize,
    y: &mut [f32],
) {
    let (m, kb, nb) = (w.rows, w.kb, w.nb);
    let (mr, nr) = (K::MR, K::NR);
    let apanels = n.div_ceil(mr);
    let (qa, da, off) = (acts.qa, acts.da, acts.off);
    let threads = rayon::current_num_threads().max(1);
    let nc = m
        .div_ceil(2 * threads)
        .clamp(nr, NC_MAX)
        .next_multiple_of(nr);
    let m_tasks = m.div_ceil(nc);
    let n_tasks = (4 * threads).div_ceil(m_tasks).clamp(1, apanels);
    let chunk = n.div_ceil(n_tasks).next_multiple_of(mr);
    let n_tasks = n.div_ceil(chunk);
    // x rows per L2-resident chunk inside a task.
    let row_bytes = (nb * kb * std::mem::size_of::<W::Q>()).max(1);
    let mc = (MC_BYTES / row_bytes).max(mr) / mr * mr;
    let yp = SyncPtr(y.as_mut_ptr());
    let task = |t: usize| {
        // The whole `SyncPtr` (a use of its field alone would capture the bare pointer).
        let y0: SyncPtr = yp;
        let (jt, it) = (t % m_tasks, t / m_tasks);
        let (j0, j1) = (jt * nc, ((jt + 1) * nc).min(m));
        let (i0, i1) = (it * chunk, ((it + 1) * chunk).min(n));
        let mut tmp = [0f32; 8 * 32];
        debug_assert!(mr * nr <= tmp.len());
        let mut ic = i0;
        while ic < i1 {
            let ie = (ic + mc).min(i1);
            for j in (j0..j1).step_by(nr) {
                let p = j / PANEL;
                for i in (ic..ie).step_by(mr) {
                    let ap = i / mr;
                    let tile = Tile::<W> {
                        nb,
                        kb,
                        a: qa[ap * nb * kb * mr..].as_ptr(),
                        da: da[ap * nb * mr..].as_ptr(),
                        off: off[ap * nb * mr..].as_ptr(),
                        w: w.qs[p * nb * kb * PANEL..].as_ptr(),
                        w_panel: nb * kb * PANEL,
                        dw: w.dw[p * nb * PANEL..].as_ptr(),
                        dw_panel: nb * PANEL,
                    };
                    // SAFETY: `K` is the active path's kernel; the activation panel `ap` and
                    // the weight panels p..p + NR/16 exist (rows padded to multiples of MR and
                    // 32); `tmp` holds MR·NR floats.
                    unsafe { K::tile(&tile, tmp.as_mut_ptr()) };
                    let cols = nr.min(j1 - j);
                    for r in 0..mr.min(n - i) {
                        // SAFETY: row i + r, columns j..j + cols of y are inside y and belong to
                        // this task's block (no other task writes them).
                        let dst = unsafe {
                            std::slice::from_raw_parts_mut(y0.0.add((i + r) * m + j), cols)
                        };
                        let src = &tmp[r * nr..r * nr + cols];
                        match bias {
                            Some(bv) => {
                                for ((d, &v), &bb) in dst.iter_mut().zip(src).zip(&bv[j..]) {
                                    *d = v + bb;
                                }
                            }
                            None => dst.copy_from_slice(src),
                        }
                    }
                }
            }
            ic = ie;
        }
    };
    let tasks = m_tasks * n_tasks;
    super::team::for_each(tasks, &task);
}
