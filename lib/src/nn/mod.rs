//! Element-wise and row-wise operations: norms, activations, RoPE, attention.
//!
//! Everything here works on row-major f32 buffers; `dim` is the row length. Numerics follow HF
//! transformers in f32 (RMSNorm and LayerNorm statistics in f32, exact erf GELU, RoPE angles
//! `pos · inv_freq` rounded to f32 before cos/sin).

use std::ops::Range;

use rayon::prelude::*;

use std::cell::RefCell;

use crate::kernels::attention::{attend, attend_group, AttnScratch, Head, KvElem};
use crate::kernels::iattn::{attend_lowp, LowpKv, LowpScratch};
use crate::kernels::{self, axpy, dot as dot_f32};

/// `y = w ⊙ x / sqrt(mean(x²) + eps)` per row.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
    let dim = w.len();
    for (xr, yr) in x.chunks_exact(dim).zip(y.chunks_exact_mut(dim)) {
        let ss = dot_f32(xr, xr);
        let r = 1.0 / (ss / dim as f32 + eps).sqrt();
        for ((o, &v), &g) in yr.iter_mut().zip(xr).zip(w) {
            *o = g * (v * r);
        }
    }
}

/// In-place [`rms_norm`].
pub fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    let dim = w.len();
    for xr in x.chunks_exact_mut(dim) {
        let ss = dot_f32(xr, xr);
        let r = 1.0 / (ss / dim as f32 + eps).sqrt();
        for (v, &g) in xr.iter_mut().zip(w) {
            *v = g * (*v * r);
        }
    }
}

/// `y = (x − mean) / sqrt(var + eps) ⊙ w + b` per row (biased variance, as `nn.LayerNorm`).
pub fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32, y: &mut [f32]) {
    let dim = w.len();
    let f = |(xr, yr): (&[f32], &mut [f32])| {
        let mean = xr.iter().sum::<f32>() / dim as f32;
        let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / dim as f32;
        let r = 1.0 / (var + eps).sqrt();
        for (((o, &v), &g), &bb) in yr.iter_mut().zip(xr).zip(w).zip(b) {
            *o = (v - mean) * r * g + bb;
        }
    };
    if x.len() >= 1 << 16 {
        x.par_chunks(dim).zip(y.par_chunks_mut(dim)).for_each(f);
    } else {
        x.chunks_exact(dim).zip(y.chunks_exact_mut(dim)).for_each(f);
    }
}

/// Exact GELU: `0.5·x·(1 + erf(x/√2))`, with `erf` to within 5·10⁻⁷ ([`erf_fast`]).
pub fn gelu_inplace(x: &mut [f32]) {
    // The caller's path, read here: rayon's workers do not inherit a `with_path` override.
    let path = kernels::active_path();
    let f = |c: &mut [f32]| gelu_chunk(path, c);
    if x.len() >= 1 << 16 {
        x.par_chunks_mut(1 << 14).for_each(f);
    } else {
        f(x);
    }
}

fn gelu_chunk(path: kernels::Path, x: &mut [f32]) {
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the AVX2 path is only active when AVX2 and FMA were detected.
        kernels::Path::Avx2 | kernels::Path::Avx512 => unsafe { gelu_avx2(x) },
        _ => gelu_portable(x),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_avx2(x: &mut [f32]) {
    // The same code as `gelu_portable`; compiled for AVX2 it vectorises 8-wide.
    gelu_portable(x)
}

#[inline(always)]
fn gelu_portable(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = 0.5 * *v * (1.0 + erf_fast(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// erf(x) to within 5·10⁻⁷ absolute (Abramowitz & Stegun 7.1.26 with a polynomial exp), written
/// without branches or libm calls so that loops over it vectorise. `libm::erff` is the exact
/// reference (tested).
#[inline(always)]
pub fn erf_fast(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_72,
        1.421_413_8,
        -1.453_152,
        1.061_405_4,
    ];
    let a = x.abs().min(4.0); // erf(4) rounds to 1 in f32
    let t = 1.0 / (1.0 + P * a);
    let poly = ((((A[4] * t + A[3]) * t + A[2]) * t + A[1]) * t + A[0]) * t;
    let y = 1.0 - poly * exp_neg(a * a);
    y.copysign(x)
}

/// e^(−z) for z in [0, 16], polynomial after range reduction (relative error ~2·10⁻⁷).
#[inline(always)]
fn exp_neg(z: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let w = -z;
    // n = round(w·log2 e) by the 1.5·2²³ trick (|w·log2 e| < 24 here).
    let magic = 12_582_912.0f32;
    let n = (w * LOG2E + magic) - magic;
    let r = (w - n * LN2_HI) - n * LN2_LO;
    // e^r on |r| ≤ ln2/2, degree-6 Taylor/minimax.
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67
                    + r * (0.041_666_668 + r * (0.008_333_34 + r * 0.001_388_89)))));
    let bits = ((n as i32 + 127) as u32) << 23;
    p * f32::from_bits(bits)
}

/// `silu(a) ⊙ b` into `a` (SwiGLU).
pub fn silu_mul_inplace(a: &mut [f32], b: &[f32]) {
    for (x, &y) in a.iter_mut().zip(b) {
        *x = *x / (1.0 + (-*x).exp()) * y;
    }
}

/// `y += a · x`
pub fn add_scaled(y: &mut [f32], a: f32, x: &[f32]) {
    axpy(a, x, y);
}

/// `y += x`
pub fn add(y: &mut [f32], x: &[f32]) {
    for (a, b) in y.iter_mut().zip(x) {
        *a += b;
    }
}

/// Which pairs of a head's dimensions rotate together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopePairs {
    /// (2i, 2i+1): ggml "normal" RoPE, q/k rows permuted from HF by the converter.
    Adjacent,
    /// (i, i + d/2): HF rotate-half on unpermuted rows.
    Half,
}

/// Rotary position embedding for one token's heads (`x` = `n_heads · head_dim` values).
/// `inv_freq` has `head_dim / 2` entries; the angle of pair `i` is `f32(pos) · inv_freq[i]`.
pub fn rope(x: &mut [f32], head_dim: usize, pos: usize, inv_freq: &[f32], pairs: RopePairs) {
    let half = head_dim / 2;
    for head in x.chunks_exact_mut(head_dim) {
        for (i, &f) in inv_freq.iter().enumerate().take(half) {
            let angle = pos as f32 * f;
            let (s, c) = (angle as f64).sin_cos();
            let (s, c) = (s as f32, c as f32);
            let (a, b) = match pairs {
                RopePairs::Adjacent => (2 * i, 2 * i + 1),
                RopePairs::Half => (i, i + half),
            };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * c - x1 * s;
            head[b] = x1 * c + x0 * s;
        }
    }
}

/// Which keys each query row of an attention call may see.
#[derive(Clone, Copy, Debug)]
pub enum Mask<'a> {
    /// Every key.
    None,
    /// Query row `i` sits at position `offset + i` and sees keys `0..=offset + i`.
    Causal {
        /// Position of query row 0 (tokens already in the cache).
        offset: usize,
    },
    /// Per query row, the allowed key ranges (sorted, disjoint). An empty list means no key.
    Rows(&'a [Vec<Range<usize>>]),
    /// Vision pad⊗pad mask: a query row with `pad_query[i]` sees only `real_keys`; others see all.
    Vision {
        /// Per query row: whether it is a padding row.
        pad_query: &'a [bool],
        /// The key ranges of real (non-padding) tokens.
        real_keys: &'a [Range<usize>],
    },
}

impl Mask<'_> {
    fn ranges(&self, i: usize, nk: usize, out: &mut Vec<Range<usize>>) {
        out.clear();
        match *self {
            Mask::None => out.push(0..nk),
            Mask::Causal { offset } => out.push(0..(offset + i + 1).min(nk)),
            Mask::Rows(rows) => out.extend(rows[i].iter().map(|r| r.start.min(nk)..r.end.min(nk))),
            Mask::Vision {
                pad_query,
                real_keys,
            } => {
                if pad_query[i] {
                    out.extend(real_keys.iter().cloned())
                } else {
                    out.push(0..nk)
                }
            }
        }
    }
}

/// The attention output buffer, shared by tasks that write disjoint (head, row) blocks.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes only the (row block, head) cells it owns; the buffer outlives the
// parallel section (rayon joins before `attention` returns).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}
impl OutPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Most query rows per attention task.
const Q_BLOCK: usize = 96;
/// Below this many query rows (decode), the grouped kernel ([`attend_group`]) beats the blocked
/// one.
const BLOCK_MIN_ROWS: usize = 4;

/// Per-thread buffers of the attention tasks: grown once, then reused (no allocation per call).
#[derive(Default)]
struct AttnLocal {
    ws: AttnScratch,
    tmp: Vec<f32>,
    rows: Vec<Vec<Range<usize>>>,
    ranges: Vec<Range<usize>>,
}

thread_local! {
    static ATTN_LOCAL: RefCell<AttnLocal> = RefCell::new(AttnLocal::default());
}

/// The heads of one attention call: `n_heads` query heads of `hd` values, of which each group of
/// `n_heads / n_kv_heads` reads one kv head (GQA), and the score scale (1/√hd).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Heads {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (divides `n_heads`).
    pub n_kv_heads: usize,
    /// Values per head.
    pub hd: usize,
    /// Multiplier of every score `q·k`.
    pub scale: f32,
}

impl Heads {
    /// Heads with the usual scale `1/√hd`.
    pub fn new(n_heads: usize, n_kv_heads: usize, hd: usize) -> Self {
        Heads {
            n_heads,
            n_kv_heads,
            hd,
            scale: 1.0 / (hd as f32).sqrt(),
        }
    }
}

/// The keys and values one attention call reads: head-major `[n_kv_heads][stride][hd]`, f32 or
/// f16 ([`KvElem`]), of which keys `0..len` of each head are used.
#[derive(Clone, Copy, Debug)]
pub struct KeysValues<'a, T> {
    /// Keys, `[n_kv_heads][stride][hd]`.
    pub k: &'a [T],
    /// Values, same layout as `k`.
    pub v: &'a [T],
    /// Keys used per head.
    pub len: usize,
    /// Rows per head in `k` and `v` (≥ `len`; a cache's capacity).
    pub stride: usize,
}

impl<'a, T> KeysValues<'a, T> {
    /// The first `len` of `stride` rows per head of `k` and `v`.
    pub fn new(k: &'a [T], v: &'a [T], len: usize, stride: usize) -> Self {
        KeysValues { k, v, len, stride }
    }
}

/// Multi-head attention with an online softmax over key blocks (never a full score matrix).
///
/// - `q`: `[nq, n_heads · hd]` token-major (nq = `q.len() / (n_heads · hd)`).
/// - `kv`: head-major keys and values ([`KeysValues`]).
/// - `out`: `[nq, n_heads · hd]`.
///
/// Head `h` reads kv head `h / (n_heads / n_kv_heads)` (GQA). A row with no visible key gets zeros.
/// With 4+ query rows, tasks are (head, block of at most 96 rows, blocks of equal size) through
/// the blocked kernel ([`crate::kernels::attention::attend`]: scores and P·V as small GEMMs).
/// With fewer rows (decode), tasks are (kv head, row) through [`attend_group`], the query heads
/// that share a kv head together.
///
/// # Panics
///
/// If `q` is not whole rows, `out.len() != q.len()`, or `kv` is shorter than its shape says.
pub fn attention<T: KvElem>(
    q: &[f32],
    kv: KeysValues<'_, T>,
    heads: Heads,
    mask: Mask<'_>,
    out: &mut [f32],
) {
    let Heads {
        n_heads,
        n_kv_heads,
        hd,
        scale,
    } = heads;
    let KeysValues {
        k,
        v,
        len: nk,
        stride: k_stride,
    } = kv;
    let qd = n_heads * hd;
    let nq = q.len() / qd;
    assert_eq!(q.len(), nq * qd);
    assert_eq!(out.len(), nq * qd);
    assert!(nk <= k_stride && k.len() >= n_kv_heads * k_stride * hd && v.len() == k.len());
    let rep = n_heads / n_kv_heads;
    // Row blocks of equal size (at most Q_BLOCK), so a prefill's last block is not a sliver.
    let nqb = nq.div_ceil(Q_BLOCK);
    let per_block = nq.div_ceil(nqb.max(1));
    let op = OutPtr(out.as_mut_ptr());
    if nq < BLOCK_MIN_ROWS {
        // Decode: the `rep` query heads that share a kv head attend together
        // ([`attend_group`]), so each K/V row is read once per kv head rather than once per query
        // head (the cross-attention K/V of an image are tens of MB per layer). Tasks are
        // (kv head, query row).
        let task = |t: usize| {
            let out_ptr = op.get();
            let (kvh, i) = (t / nq, t % nq);
            let base = kvh * k_stride * hd;
            let (kh, vh) = (&k[base..base + nk * hd], &v[base..base + nk * hd]);
            // Row i's heads kvh·rep .. (kvh+1)·rep: `rep` consecutive hd-long runs of q and out.
            let off = i * qd + kvh * rep * hd;
            let n = rep * hd;
            ATTN_LOCAL.with(|cell| {
                let mut guard = cell.borrow_mut();
                let loc = &mut *guard;
                mask.ranges(i, nk, &mut loc.ranges);
                if loc.tmp.len() < n {
                    loc.tmp.resize(n, 0.0);
                }
                let head = Head {
                    q: &q[off..off + n],
                    q_stride: hd,
                    nq: rep,
                    k: kh,
                    v: vh,
                    nk,
                    hd,
                    scale,
                };
                attend_group(&head, &loc.ranges, &mut loc.tmp[..n], &mut loc.ws);
                for (d, val) in loc.tmp[..n].iter().enumerate() {
                    // SAFETY: row i's heads of kv head kvh are written by this task only (tasks
                    // own (kv head, row) pairs); the index is inside `out` (nq × n_heads·hd).
                    unsafe { *out_ptr.add(off + d) = *val };
                }
            });
        };
        let n_tasks = n_kv_heads * nq;
        if nq * nk * hd * rep < 1 << 14 {
            (0..n_tasks).for_each(task);
        } else {
            kernels::team::for_each(n_tasks, &task);
        }
        return;
    }
    let task = |t: usize| {
        let out_ptr = op.get(); // a method call captures the whole Send/Sync wrapper
        let (h, qb) = (t / nqb, t % nqb);
        let kvh = h / rep;
        let kh = &k[kvh * k_stride * hd..kvh * k_stride * hd + nk * hd];
        let vh = &v[kvh * k_stride * hd..kvh * k_stride * hd + nk * hd];
        let (i0, i1) = (qb * per_block, ((qb + 1) * per_block).min(nq));
        let nr = i1 - i0;
        ATTN_LOCAL.with(|cell| {
            let mut guard = cell.borrow_mut();
            let loc = &mut *guard;
            // The rows' key ranges, then one `attend` call.
            let rows: &[Vec<Range<usize>>] = match mask {
                Mask::Rows(rows) => &rows[i0..i1],
                _ => {
                    if loc.rows.len() < nr {
                        loc.rows.resize_with(nr, Vec::new);
                    }
                    for (r, i) in loc.rows.iter_mut().zip(i0..i1) {
                        mask.ranges(i, nk, r);
                    }
                    &loc.rows[..nr]
                }
            };
            if loc.tmp.len() < nr * hd {
                loc.tmp.resize(nr * hd, 0.0);
            }
            let head = Head {
                q: &q[i0 * qd + h * hd..],
                q_stride: qd,
                nq: nr,
                k: kh,
                v: vh,
                nk,
                hd,
                scale,
            };
            attend(&head, rows, &mut loc.tmp[..nr * hd], hd, &mut loc.ws);
            for (r, i) in (i0..i1).enumerate() {
                for d in 0..hd {
                    // SAFETY: row i, head h is written by this task only (tasks own
                    // (head, row block) pairs); the index is inside `out` (nq × n_heads·hd).
                    unsafe { *out_ptr.add(i * qd + h * hd + d) = loc.tmp[r * hd + d] };
                }
            }
        });
    };
    let n_tasks = n_heads * nqb;
    if nq * nk * hd < 1 << 14 {
        (0..n_tasks).for_each(task);
    } else {
        kernels::team::for_each(n_tasks, &task);
    }
}

/// The arithmetic of [`attention_lowp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum AttnPrecision {
    /// f32 throughout: [`attention`] itself.
    #[default]
    F32,
    /// Scores and `P·V` as integers in 16-bit lanes (13-bit Q per (row, head) and K per
    /// (key, head), 12-bit V per (head, channel), 14-bit P; [`crate::kernels::iattn`]): about
    /// 10⁻³ relative L2 from f32 on layernormed inputs.
    Int16,
}

/// Per-thread buffers of the low-precision attention tasks.
#[derive(Default)]
struct LowpLocal {
    ws: LowpScratch,
    tmp: Vec<f32>,
    rows: Vec<Vec<Range<usize>>>,
}

thread_local! {
    static LOWP_LOCAL: RefCell<LowpLocal> = RefCell::new(LowpLocal::default());
}

/// [`attention`] for f32 keys and values in the precision `prec`: same shapes, mask semantics
/// (a row with no visible key gets zeros) and tasks (head, block of at most 96 rows), on the
/// active path. [`AttnPrecision::Int16`] quantizes and packs K and V once per call
/// ([`LowpKv`], parallel over kv heads), then runs [`attend_lowp`] per task, for any number of
/// query rows (the vision tower's prefill; decode keeps [`attention`]).
///
/// A head dimension the integer tiles cannot take (odd, or above
/// [`crate::kernels::iattn::MAX_HEAD_DIM`], e.g. from an unusual file) runs in f32.
///
/// # Panics
///
/// As [`attention`].
pub fn attention_lowp(
    q: &[f32],
    kv: KeysValues<'_, f32>,
    heads: Heads,
    mask: Mask<'_>,
    out: &mut [f32],
    prec: AttnPrecision,
) {
    let hd_ok = heads.hd.is_multiple_of(2) && heads.hd <= crate::kernels::iattn::MAX_HEAD_DIM;
    if prec == AttnPrecision::F32 || !hd_ok {
        return attention(q, kv, heads, mask, out);
    }
    let Heads {
        n_heads,
        n_kv_heads,
        hd,
        scale,
    } = heads;
    let KeysValues {
        k,
        v,
        len: nk,
        stride,
    } = kv;
    let qd = n_heads * hd;
    let nq = q.len() / qd;
    assert_eq!(q.len(), nq * qd);
    assert_eq!(out.len(), nq * qd);
    assert!(nk <= stride && k.len() >= n_kv_heads * stride * hd && v.len() == k.len());
    let rep = n_heads / n_kv_heads;
    let lkv = LowpKv::new(kernels::active_path(), k, v, n_kv_heads, nk, stride, hd);
    let nqb = nq.div_ceil(Q_BLOCK);
    let per_block = nq.div_ceil(nqb.max(1));
    let op = OutPtr(out.as_mut_ptr());
    let task = |t: usize| {
        let out_ptr = op.get();
        let (h, qb) = (t / nqb, t % nqb);
        let (i0, i1) = (qb * per_block, ((qb + 1) * per_block).min(nq));
        let nr = i1 - i0;
        LOWP_LOCAL.with(|cell| {
            let mut guard = cell.borrow_mut();
            let loc = &mut *guard;
            let rows: &[Vec<Range<usize>>] = match mask {
                Mask::Rows(rows) => &rows[i0..i1],
                _ => {
                    if loc.rows.len() < nr {
                        loc.rows.resize_with(nr, Vec::new);
                    }
                    for (r, i) in loc.rows.iter_mut().zip(i0..i1) {
                        mask.ranges(i, nk, r);
                    }
                    &loc.rows[..nr]
                }
            };
            if loc.tmp.len() < nr * hd {
                loc.tmp.resize(nr * hd, 0.0);
            }
            attend_lowp(
                &q[i0 * qd + h * hd..],
                qd,
                nr,
                scale,
                &lkv,
                h / rep,
                rows,
                &mut loc.tmp[..nr * hd],
                hd,
                &mut loc.ws,
            );
            for (r, i) in (i0..i1).enumerate() {
                for d in 0..hd {
                    // SAFETY: row i, head h is written by this task only (tasks own
                    // (head, row block) pairs); the index is inside `out` (nq × n_heads·hd).
                    unsafe { *out_ptr.add(i * qd + h * hd + d) = loc.tmp[r * hd + d] };
                }
            }
        });
    };
    let n_tasks = n_heads * nqb;
    if nq * nk * hd < 1 << 14 {
        (0..n_tasks).for_each(task);
    } else {
        kernels::team::for_each(n_tasks, &task);
    }
}

/// Reorder token-major `[n, heads·hd]` into head-major `[heads][stride][hd]` rows `row0..row0+n`.
pub fn to_head_major<T: KvElem>(
    x: &[f32],
    n: usize,
    heads: usize,
    hd: usize,
    stride: usize,
    row0: usize,
    out: &mut [T],
) {
    for t in 0..n {
        for h in 0..heads {
            let src = &x[t * heads * hd + h * hd..t * heads * hd + (h + 1) * hd];
            let dst = (h * stride + row0 + t) * hd;
            T::store_f32(src, &mut out[dst..dst + hd]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rnd(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// Plain softmax attention for one head and query row over the allowed keys.
    fn naive(qi: &[f32], k: &[f32], v: &[f32], hd: usize, keys: &[usize], scale: f32) -> Vec<f32> {
        let s: Vec<f64> = keys
            .iter()
            .map(|&j| {
                (0..hd)
                    .map(|d| qi[d] as f64 * k[j * hd + d] as f64)
                    .sum::<f64>()
                    * scale as f64
            })
            .collect();
        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
        let z: f64 = e.iter().sum();
        let mut o = vec![0f64; hd];
        for (p, &j) in e.iter().zip(keys) {
            for d in 0..hd {
                o[d] += p / z * v[j * hd + d] as f64;
            }
        }
        o.into_iter().map(|x| x as f32).collect()
    }

    #[test]
    fn attention_matches_naive_softmax_for_every_mask() {
        // (query rows, heads, kv heads): prefill-sized blocks (70: one block; 97: two equal ones),
        // and decode (fewer than BLOCK_MIN_ROWS rows) with grouped queries (rep 4), MQA and MHA.
        for (nq, nh, nkv) in [
            (70, 4, 2),
            (97, 4, 2),
            (1, 8, 2),
            (3, 8, 2),
            (2, 8, 1),
            (1, 4, 4),
            (3, 2, 2),
        ] {
            attention_case(nq, nh, nkv, false);
            attention_case(nq, nh, nkv, true);
        }
    }

    /// With `half`, K and V are stored as f16 (as the cross-attention cache of quantized models)
    /// and the naive reference uses the rounded values.
    fn attention_case(nq: usize, nh: usize, nkv: usize, half: bool) {
        let (nk, hd) = (600, 16);
        let q = rnd(nq * nh * hd, 1);
        let round = |x: Vec<f32>| -> (Vec<f32>, Vec<half::f16>) {
            let h: Vec<half::f16> = x.iter().map(|&v| half::f16::from_f32(v)).collect();
            (h.iter().map(|v| v.to_f32()).collect(), h)
        };
        let (k, k16) = round(rnd(nkv * nk * hd, 2));
        let (v, v16) = round(rnd(nkv * nk * hd, 3));
        let heads = Heads::new(nh, nkv, hd);
        let scale = heads.scale;
        let rows: Vec<Vec<Range<usize>>> =
            (0..nq).map(|i| vec![i..i + 100, 300..(310 + i)]).collect();
        let pad: Vec<bool> = (0..nq).map(|i| i % 3 == 0).collect();
        let real = vec![0..250, 400..500];
        let masks = [
            Mask::None,
            Mask::Causal { offset: 500 },
            Mask::Rows(&rows),
            Mask::Vision {
                pad_query: &pad,
                real_keys: &real,
            },
        ];
        for mask in masks {
            let mut out = vec![f32::NAN; nq * nh * hd];
            if half {
                let kv = KeysValues::new(&k16[..], &v16[..], nk, nk);
                attention(&q, kv, heads, mask, &mut out);
            } else {
                attention(&q, KeysValues::new(&k, &v, nk, nk), heads, mask, &mut out);
            }
            let mut ranges = Vec::new();
            for i in 0..nq {
                mask.ranges(i, nk, &mut ranges);
                let keys: Vec<usize> = ranges.iter().flat_map(|r| r.clone()).collect();
                for h in 0..nh {
                    let kvh = h / (nh / nkv);
                    let want = naive(
                        &q[i * nh * hd + h * hd..][..hd],
                        &k[kvh * nk * hd..],
                        &v[kvh * nk * hd..],
                        hd,
                        &keys,
                        scale,
                    );
                    let got = &out[i * nh * hd + h * hd..][..hd];
                    for (a, b) in got.iter().zip(&want) {
                        assert!(
                            (a - b).abs() < 2e-6,
                            "f16 {half} nq={nq} nh={nh} nkv={nkv} {mask:?} row {i} head {h}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn erf_fast_is_close_to_libm() {
        let mut worst = 0f32;
        let mut x = -6.0f32;
        while x <= 6.0 {
            let d = (erf_fast(x) - libm::erff(x)).abs();
            assert!(!d.is_nan(), "erf_fast({x}) is NaN");
            worst = worst.max(d);
            x += 1e-3;
        }
        assert!(worst < 5e-7, "erf_fast max error {worst}");
        let mut g = vec![-3.0f32, -0.5, 0.0, 1e-4, 0.7, 2.0, 9.0];
        let want: Vec<f32> = g
            .iter()
            .map(|&v| 0.5 * v * (1.0 + libm::erff(v * std::f32::consts::FRAC_1_SQRT_2)))
            .collect();
        gelu_inplace(&mut g);
        for (a, b) in g.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-6, "{a} {b}");
        }
    }

    #[test]
    fn rope_pairs_agree_after_permutation() {
        let hd = 16;
        let inv: Vec<f32> = (0..hd / 2)
            .map(|i| 500000f32.powf(-((2 * i) as f32) / hd as f32))
            .collect();
        let x = rnd(hd, 9);
        // Adjacent layout of the same vector: position 2i ← i, 2i+1 ← i + hd/2.
        let mut adj = vec![0f32; hd];
        for i in 0..hd / 2 {
            adj[2 * i] = x[i];
            adj[2 * i + 1] = x[i + hd / 2];
        }
        let mut a = x.clone();
        rope(&mut a, hd, 37, &inv, RopePairs::Half);
        rope(&mut adj, hd, 37, &inv, RopePairs::Adjacent);
        for i in 0..hd / 2 {
            assert_eq!(adj[2 * i], a[i]);
            assert_eq!(adj[2 * i + 1], a[i + hd / 2]);
        }
    }
}
