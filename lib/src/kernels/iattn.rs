//! Low-precision blocked attention (the vision tower's self-attention): the twin of
//! [`super::attention::attend`] with both small GEMMs in 16-bit integers.
//!
//! ```text
//! once per call:   K per (key, head) and V per (head, channel) → i16 (|q| ≤ QMAX), packed
//! per task:        Q per (row, head) → i16, dq_i·scale
//! for each block of KEY_BLOCK keys (skipped when no row may see any of them):
//!     S_ij = (dot_ij as f32) · (dqs_i · dk_j)       dot = Σ_d q_id·k_jd in i32 (Isa::itile)
//!     per row: mask, m' = max(m, max S), p = exp(S − m')            (the path's exp)
//!              P_ij = ⌊p·PMAX + ½⌋ (i16), l = l·e^(m−m') + Σ_j P_ij, O ·= e^(m−m')
//!     O_ic += (Σ_j P_ij·v_jc as f32) · dv_c          the sum in i32 (Isa::itile)
//! out = O / l   (a row that sees no key gets zeros)
//! ```
//!
//! Quantization is the Q8_0 rule widened: `d = amax/QMAX`, `q = round(x·(1/d))` (half away from
//! zero), with `QMAX = 4095` for Q and K, `VMAX = 2047` for V; P takes `PMAX = 8191`. With head
//! dimension ≤ 128 and `KEY_BLOCK = 128` keys per `P·V` sum, no `i32` sum can overflow
//! (128·4095² and 128·8191·2047 < 2³¹). With peaked attention the absolute step of P dominates
//! the error, hence its extra bits (P 4095 with V 4095: 1.7·10⁻³ on the peaked test; now 1.3).
//!
//! Why 16 bits: on layernormed Gaussian Q/K/V (1608 keys, head dimension 80, scores scaled
//! by 1, 3 and 8; a standalone simulation of 200 query rows against plain f32 attention),
//! 8-bit Q/K scores (Q8_0 rule) give a relative L2 error of the output of 0.9–2.9·10⁻², bf16
//! Q/K 0.24–0.8·10⁻², 8-bit P (`round(255·p)`) with 8-bit V 1.5·10⁻², bf16 P and V 1.7–2.4·10⁻³;
//! these integers 0.6–1.3·10⁻³ (tests/attention_lowp.rs; the budget is ~2·10⁻³ per layer).
//!
//! # Agreement
//! The integer dots are bit-identical on every path (`Isa::itile` against `kernels::scalar::itile`);
//! every float step except `exp` is the same portable Rust on every path (no FMA, fixed order),
//! so paths differ only through the path's `exp` (within 2 ulp), which can move a `P` by one
//! step: outputs agree within a relative L2 of 10⁻⁴ (tested).

use std::ops::Range;

use rayon::prelude::*;

use super::isa::Isa;
use super::with_isa;
use super::Path;

/// Largest quantized magnitude of Q and K (13 bits).
pub const QMAX: f32 = 4095.0;
/// Largest quantized magnitude of V (12 bits).
pub const VMAX: f32 = 2047.0;
/// Quantized weight of probability 1 (`P = ⌊p·PMAX + ½⌋`, 14 bits).
pub const PMAX: f32 = 8191.0;
/// Keys per online-softmax step (and per integer `P·V` sum).
pub const KEY_BLOCK: usize = 128;
/// Largest head dimension (the `i32` bound of the scores).
pub const MAX_HEAD_DIM: usize = 128;

/// Two `i16` in one `i32`, `lo` in the low half (the layout of `Isa::itile`'s operands).
#[inline(always)]
pub fn pair(lo: i16, hi: i16) -> i32 {
    (lo as u16 as u32 | (hi as u16 as u32) << 16) as i32
}

/// The quantization rule: `d = amax/qmax`, `out[i] = round(x[i]·(1/d))` (half away from zero);
/// returns `d` (0 for an all-zero row, whose values become 0).
#[inline(always)]
pub fn quantize_i16(x: &[f32], qmax: f32, out: &mut [i16]) -> f32 {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / qmax;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    for (o, &v) in out.iter_mut().zip(x) {
        *o = round_half_away(v * id) as i16;
    }
    d
}

/// `y.round()` for `|y| < 2²³` (half away from zero; NaN gives 0), in operations that vectorise
/// (`f32::round` is a libm call on the x86-64 baseline): the truncation `t`, then one step away
/// from zero when the exact remainder `y − t` reaches ½.
#[inline(always)]
fn round_half_away(y: f32) -> i32 {
    let t = y as i32;
    let f = y - t as f32;
    t + (f >= 0.5) as i32 - (f <= -0.5) as i32
}

/// The tile shape `(IMR, INR)` of `Isa::itile` on `path`.
pub fn tile_shape(path: Path) -> (usize, usize) {
    with_isa!(path, I => (I::IMR, I::INR))
}

/// Integer GEMM through `path`'s tile (tests, benchmarks): `c[i][j] = Σ_p dot2(a[i][p], b[j][p])`
/// for row-major `a: [m][kp]`, `b: [n][kp]` of packed `i16` pairs ([`pair`]); `m`, `n` any.
///
/// # Panics
/// If `path` is not available on this CPU, or `a`/`b` are short.
pub fn igemm_pairs(path: Path, m: usize, n: usize, kp: usize, a: &[i32], b: &[i32]) -> Vec<i32> {
    assert!(path.is_available(), "igemm_pairs: {path} not available");
    assert!(a.len() >= m * kp && b.len() >= n * kp);
    let (mr, nr) = tile_shape(path);
    let (mp, np) = (m.next_multiple_of(mr), n.next_multiple_of(nr));
    let mut ap = vec![0i32; mp * kp];
    ap[..m * kp].copy_from_slice(&a[..m * kp]);
    // B panels [n / NR][kp][NR].
    let mut bp = vec![0i32; np * kp];
    for j in 0..n {
        for p in 0..kp {
            bp[((j / nr) * kp + p) * nr + j % nr] = b[j * kp + p];
        }
    }
    let mut c = vec![0i32; mp * np];
    for jp in 0..np / nr {
        for ip in 0..mp / mr {
            // SAFETY: `path` is available (asserted); the operands hold the tile (padded above).
            with_isa!(path, I => unsafe {
                I::itile(
                    kp,
                    ap[ip * mr * kp..].as_ptr(),
                    kp,
                    bp[jp * nr * kp..].as_ptr(),
                    c.as_mut_ptr().add(ip * mr * np + jp * nr),
                    np,
                )
            });
        }
    }
    (0..m)
        .flat_map(|i| c[i * np..i * np + n].to_vec())
        .collect()
}

/// `v` (`i32` storage) seen as its `i16` halves, low half first.
fn halves(v: &mut [i32]) -> &mut [i16] {
    // SAFETY: the same bytes; i16 has no invalid values and a smaller alignment.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut i16, v.len() * 2) }
}

/// Keys and values of one attention call, quantized and packed once for `path`'s tile (built by
/// [`LowpKv::new`]; read by [`attend_lowp`]).
#[derive(Debug)]
pub struct LowpKv {
    path: Path,
    heads: usize,
    nk: usize,
    hd: usize,
    /// Keys padded to a multiple of `KEY_BLOCK`.
    nk_pad: usize,
    /// Head dimension padded to a multiple of the tile's columns.
    hd_pad: usize,
    /// Per head, `[nk_pad / INR][hd / 2][INR]` pairs (of two dimensions).
    kt: Vec<i32>,
    /// Per head, `[hd_pad / INR][nk_pad / 2][INR]` pairs (of two keys).
    vt: Vec<i32>,
    /// Per head, `[nk_pad]` key scales (0 for padding).
    dk: Vec<f32>,
    /// Per head, `[hd_pad]` value scales (0 for padding).
    dv: Vec<f32>,
}

impl LowpKv {
    /// Quantize and pack keys `0..nk` of each of `heads` head-major heads (`k`, `v`:
    /// `[heads][stride][hd]`) for `path` (parallel over heads).
    ///
    /// # Panics
    /// If `path` is not available on this CPU, `hd` is odd or above [`MAX_HEAD_DIM`], or `k`/`v`
    /// are shorter than the shape says.
    pub fn new(
        path: Path,
        k: &[f32],
        v: &[f32],
        heads: usize,
        nk: usize,
        stride: usize,
        hd: usize,
    ) -> Self {
        assert!(path.is_available(), "LowpKv: {path} not available");
        assert!(
            hd.is_multiple_of(2) && hd <= MAX_HEAD_DIM,
            "LowpKv: head dim {hd}"
        );
        assert!(nk <= stride && k.len() >= heads * stride * hd && v.len() >= heads * stride * hd);
        let (_, nr) = tile_shape(path);
        let nk_pad = nk.next_multiple_of(KEY_BLOCK).max(KEY_BLOCK);
        let hd_pad = hd.next_multiple_of(nr);
        let hp = hd / 2;
        let mut kv = LowpKv {
            path,
            heads,
            nk,
            hd,
            nk_pad,
            hd_pad,
            kt: vec![0; heads * nk_pad * hp],
            vt: vec![0; heads * hd_pad * nk_pad / 2],
            dk: vec![0.0; heads * nk_pad],
            dv: vec![0.0; heads * hd_pad],
        };
        let per = |h: usize, kt: &mut [i32], vt: &mut [i32], dk: &mut [f32], dv: &mut [f32]| {
            let kh = &k[h * stride * hd..][..nk * hd];
            let vh = &v[h * stride * hd..][..nk * hd];
            let mut row = vec![0i16; hd];
            let kt = halves(kt);
            for (j, kr) in kh.chunks_exact(hd).enumerate() {
                dk[j] = quantize_i16(kr, QMAX, &mut row);
                // Key j, dims (2p, 2p+1) → pair [j / nr][p][j % nr].
                for (d, &x) in row.iter().enumerate() {
                    kt[(((j / nr) * hp + d / 2) * nr + j % nr) * 2 + d % 2] = x;
                }
            }
            let vt = halves(vt);
            let mut col = vec![0f32; nk];
            let mut colq = vec![0i16; nk];
            for c in 0..hd {
                for (x, vr) in col.iter_mut().zip(vh.chunks_exact(hd)) {
                    *x = vr[c];
                }
                dv[c] = quantize_i16(&col, VMAX, &mut colq);
                // Channel c, keys (2p, 2p+1) → pair [c / nr][p][c % nr].
                for (j, &x) in colq.iter().enumerate() {
                    vt[(((c / nr) * (nk_pad / 2) + j / 2) * nr + c % nr) * 2 + j % 2] = x;
                }
            }
        };
        kv.kt
            .par_chunks_mut(nk_pad * hp)
            .zip(kv.vt.par_chunks_mut(hd_pad * nk_pad / 2))
            .zip(kv.dk.par_chunks_mut(nk_pad))
            .zip(kv.dv.par_chunks_mut(hd_pad))
            .enumerate()
            .for_each(|(h, (((kt, vt), dk), dv))| per(h, kt, vt, dk, dv));
        kv
    }

    /// Keys per head.
    pub fn len(&self) -> usize {
        self.nk
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.nk == 0
    }

    /// Heads.
    pub fn heads(&self) -> usize {
        self.heads
    }
}

/// Buffers of one [`attend_lowp`] caller, reused across calls (grown on demand).
#[derive(Default, Debug)]
pub struct LowpScratch {
    q: Vec<i32>,
    dqs: Vec<f32>,
    qrow: Vec<i16>,
    si: Vec<i32>,
    s: Vec<f32>,
    p: Vec<i32>,
    oi: Vec<i32>,
    o: Vec<f32>,
    m: Vec<f32>,
    l: Vec<f32>,
}

impl LowpScratch {
    /// Empty buffers.
    pub fn new() -> Self {
        Self::default()
    }
}

fn grow<T: Copy + Default>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    if v.len() < len {
        v.resize(len, T::default());
    }
    &mut v[..len]
}

/// The largest of `x` (−∞ if empty; no NaN): eight independent lanes, so it vectorises.
#[inline(always)]
fn max_lanes(x: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; 8];
    let mut c = x.chunks_exact(8);
    for c in &mut c {
        for (m, &v) in m.iter_mut().zip(c) {
            *m = if v > *m { v } else { *m };
        }
    }
    let tail = c
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    m.iter().fold(tail, |a, &b| a.max(b))
}

/// Low-precision softmax attention of `nq` query rows (row `i` at `q[i·q_stride..][..hd]`, f32)
/// against kv head `head` of `kv`, on `kv`'s path (module docs).
///
/// - `row_keys[i]`: the key ranges row `i` may see (sorted, disjoint, inside `0..nk`).
/// - `out`: row `i` is written to `out[i·out_stride..][..hd]`; a row that sees no key gets zeros.
#[allow(clippy::too_many_arguments)]
pub fn attend_lowp(
    q: &[f32],
    q_stride: usize,
    nq: usize,
    scale: f32,
    kv: &LowpKv,
    head: usize,
    row_keys: &[Vec<Range<usize>>],
    out: &mut [f32],
    out_stride: usize,
    ws: &mut LowpScratch,
) {
    let hd = kv.hd;
    assert!(head < kv.heads && row_keys.len() >= nq);
    assert!(
        nq == 0 || (q.len() >= (nq - 1) * q_stride + hd && out.len() >= (nq - 1) * out_stride + hd)
    );
    if nq == 0 || hd == 0 {
        return;
    }
    let path = kv.path;
    macro_rules! call {
        ($f:ident, $I:ty) => {
            $f::<$I>(
                q, q_stride, nq, scale, kv, head, row_keys, out, out_stride, ws,
            )
        };
    }
    match path {
        // SAFETY (both): `kv.path` is available (asserted by `LowpKv::new`).
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => unsafe { call!(attend_avx2, super::x86::Avx2) },
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => unsafe { call!(attend_avx512, super::x86::Avx512) },
        _ => with_isa!(path, I => call!(attend_with, I)),
    }
}

/// [`attend_with`] compiled for AVX2 (the element-wise steps vectorise eight lanes wide; Rust
/// never contracts `a·b + c` into an FMA, so the floats equal the portable build's).
///
/// # Safety
/// AVX2 + FMA + F16C are available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn attend_avx2<I: Isa>(
    q: &[f32],
    q_stride: usize,
    nq: usize,
    scale: f32,
    kv: &LowpKv,
    head: usize,
    row_keys: &[Vec<Range<usize>>],
    out: &mut [f32],
    out_stride: usize,
    ws: &mut LowpScratch,
) {
    attend_with::<I>(
        q, q_stride, nq, scale, kv, head, row_keys, out, out_stride, ws,
    )
}

/// [`attend_with`] compiled for the AVX-512 path (as [`attend_avx2`], sixteen lanes).
///
/// # Safety
/// The features of [`Path::Avx512`] are available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn attend_avx512<I: Isa>(
    q: &[f32],
    q_stride: usize,
    nq: usize,
    scale: f32,
    kv: &LowpKv,
    head: usize,
    row_keys: &[Vec<Range<usize>>],
    out: &mut [f32],
    out_stride: usize,
    ws: &mut LowpScratch,
) {
    attend_with::<I>(
        q, q_stride, nq, scale, kv, head, row_keys, out, out_stride, ws,
    )
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn attend_with<I: Isa>(
    q: &[f32],
    q_stride: usize,
    nq: usize,
    scale: f32,
    kv: &LowpKv,
    head: usize,
    row_keys: &[Vec<Range<usize>>],
    out: &mut [f32],
    out_stride: usize,
    ws: &mut LowpScratch,
) {
    let (mr, nr) = (I::IMR, I::INR);
    let LowpKv {
        path,
        nk,
        hd,
        nk_pad,
        hd_pad,
        ..
    } = *kv;
    let hp = hd / 2;
    let kt = &kv.kt[head * nk_pad * hp..][..nk_pad * hp];
    let vt = &kv.vt[head * hd_pad * nk_pad / 2..][..hd_pad * nk_pad / 2];
    let dk = &kv.dk[head * nk_pad..][..nk_pad];
    let dv = &kv.dv[head * hd_pad..][..hd_pad];
    let nq_pad = nq.next_multiple_of(mr);
    const KBP: usize = KEY_BLOCK / 2;

    // Q rows [nq_pad][hp] pairs (padding rows zero), dqs_i = dq_i · scale.
    let qrow = grow(&mut ws.qrow, hd);
    let qi = grow(&mut ws.q, nq_pad * hp);
    let dqs = grow(&mut ws.dqs, nq_pad);
    for i in 0..nq_pad {
        if i < nq {
            dqs[i] = quantize_i16(&q[i * q_stride..][..hd], QMAX, qrow) * scale;
            for (p, x) in qi[i * hp..(i + 1) * hp].iter_mut().enumerate() {
                *x = pair(qrow[2 * p], qrow[2 * p + 1]);
            }
        } else {
            dqs[i] = 0.0;
            qi[i * hp..(i + 1) * hp].fill(0);
        }
    }
    let o = grow(&mut ws.o, nq_pad * hd_pad);
    o.fill(0.0);
    let m = grow(&mut ws.m, nq);
    m.fill(f32::NEG_INFINITY);
    let l = grow(&mut ws.l, nq);
    l.fill(0.0);
    grow(&mut ws.si, nq_pad * KEY_BLOCK);
    grow(&mut ws.s, KEY_BLOCK);
    grow(&mut ws.p, nq_pad * KBP);
    grow(&mut ws.oi, nq_pad * hd_pad);

    let lo = row_keys[..nq]
        .iter()
        .flat_map(|r| r.first())
        .map(|r| r.start)
        .min()
        .unwrap_or(0);
    let hi = row_keys[..nq]
        .iter()
        .flat_map(|r| r.last())
        .map(|r| r.end.min(nk))
        .max()
        .unwrap_or(0);
    // Blocks start at multiples of KEY_BLOCK (the packed V pairs never straddle a block).
    let mut j0 = lo / KEY_BLOCK * KEY_BLOCK;
    while j0 < hi {
        let j1 = (j0 + KEY_BLOCK).min(hi);
        let blk = j0..j1;
        j0 = j1;
        let visible =
            |rs: &Vec<Range<usize>>| rs.iter().any(|r| r.start < blk.end && r.end > blk.start);
        if !row_keys[..nq].iter().any(visible) {
            continue;
        }
        let nkb = blk.len();
        let nkb_pad = nkb.next_multiple_of(nr);
        // S (integers) [nq_pad][nkb_pad]; K panels past `nk` are zero.
        let si = &mut ws.si[..nq_pad * nkb_pad];
        for jp in 0..nkb_pad / nr {
            let kpan = &kt[(blk.start / nr + jp) * hp * nr..][..hp * nr];
            for ip in 0..nq_pad / mr {
                // SAFETY: `path` (hence `I`) is available (asserted by `LowpKv::new`); Q holds
                // `mr` rows of `hp` pairs from row ip·mr, the K panel `hp·nr` pairs, and the
                // tile lies inside `si`.
                unsafe {
                    I::itile(
                        hp,
                        ws.q[ip * mr * hp..].as_ptr(),
                        hp,
                        kpan.as_ptr(),
                        si.as_mut_ptr().add(ip * mr * nkb_pad + jp * nr),
                        nkb_pad,
                    )
                };
            }
        }
        // Online softmax per row; P rows [nq_pad][KBP] pairs of keys (masked keys zero).
        let pq = &mut ws.p[..nq_pad * KBP];
        pq.fill(0);
        let ph = halves(pq);
        let s = &mut ws.s[..KEY_BLOCK];
        for i in 0..nq {
            let parts = row_keys[i]
                .iter()
                .map(|r| r.start.max(blk.start)..r.end.min(blk.end))
                .filter(|r| r.start < r.end)
                .map(|r| r.start - blk.start..r.end - blk.start);
            let srow = &si[i * nkb_pad..];
            let dkb = &dk[blk.start..];
            let mut bmax = f32::NEG_INFINITY;
            for r in parts.clone() {
                let dq = dqs[i];
                for ((s, &x), &d) in s[r.clone()].iter_mut().zip(&srow[r.clone()]).zip(&dkb[r]) {
                    *s = x as f32 * (dq * d);
                }
            }
            for r in parts.clone() {
                bmax = bmax.max(max_lanes(&s[r]));
            }
            if bmax == f32::NEG_INFINITY {
                continue;
            }
            let m_new = m[i].max(bmax);
            let corr = (m[i] - m_new).exp();
            let prow = &mut ph[i * KEY_BLOCK..(i + 1) * KEY_BLOCK];
            let mut sum = 0i32;
            for r in parts {
                // SAFETY: `path` (hence `I`) is available; the scores are ≤ m_new.
                sum += unsafe { I::exp_levels(&mut s[r.clone()], m_new, PMAX, &mut prow[r]) };
            }
            if corr != 1.0 {
                super::scale_on(path, corr, &mut o[i * hd_pad..i * hd_pad + hd]);
            }
            l[i] = l[i] * corr + sum as f32;
            m[i] = m_new;
        }
        // O += (P·V) · dv: the integer tiles, then scaled and added in f32.
        let kp = nkb.div_ceil(2);
        let oi = &mut ws.oi[..nq_pad * hd_pad];
        for dp in 0..hd_pad / nr {
            let vpan = &vt[(dp * nk_pad / 2 + blk.start / 2) * nr..][..kp * nr];
            // A last panel whose second half is padding: the half-width tile.
            let tile = if hd - dp * nr <= nr / 2 {
                I::itile_half
            } else {
                I::itile
            };
            for ip in 0..nq_pad / mr {
                // SAFETY: as above; P holds `mr` rows of `kp ≤ KBP` pairs `KBP` apart, the V
                // panel `kp·nr` pairs, the tile lies inside `oi`.
                unsafe {
                    tile(
                        kp,
                        ws.p[ip * mr * KBP..].as_ptr(),
                        KBP,
                        vpan.as_ptr(),
                        oi.as_mut_ptr().add(ip * mr * hd_pad + dp * nr),
                        hd_pad,
                    )
                };
            }
        }
        for i in 0..nq {
            for ((o, &x), &d) in o[i * hd_pad..i * hd_pad + hd]
                .iter_mut()
                .zip(&oi[i * hd_pad..])
                .zip(dv)
            {
                *o += x as f32 * d;
            }
        }
    }
    for i in 0..nq {
        let inv = if l[i] > 0.0 { 1.0 / l[i] } else { 0.0 };
        let dst = &mut out[i * out_stride..i * out_stride + hd];
        for (d, x) in dst.iter_mut().zip(&o[i * hd_pad..]) {
            *d = x * inv;
        }
    }
}
