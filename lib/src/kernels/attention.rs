//! Attention inner routines: one (head, block of query rows) of softmax attention with an online
//! softmax over key blocks, on the active SIMD path, as two small GEMMs per key block through the
//! same micro-kernels as the matrix GEMM:
//!
//! ```text
//! for each block of KEY_BLOCK keys (skipped when no row may see any of them):
//!     S = (scale·Q) · K_blockᵀ                      packed GEMM, k = head_dim
//!     per row: mask, m' = max(m, max S), P = exp(S − m'), l = l·e^(m−m') + ΣP, O ·= e^(m−m')
//!     O += P · V_block                               packed GEMM, k = keys in the block
//! out = O / l   (a row that sees no key gets zeros)
//! ```
//!
//! The caller parallelises over (head, query block) exactly as `nn::attention` does and keeps one
//! [`AttnScratch`] per task (or per thread). For one or two query rows (decode), the per-key
//! vector routines [`super::dot`], [`super::axpy`], [`super::scale`] and [`exp_sub_sum`] are the
//! better fit: packing K and V would cost more than it saves.

use std::ops::Range;

use super::gemm::Kernel;
use super::isa::Isa;
use super::with_isa;
use super::{active_path, Path};

/// Keys per online-softmax step.
pub const KEY_BLOCK: usize = 128;

/// One block of cached keys or values for [`KvElem`]'s kernels: `rows.len() / hd` rows of `hd`,
/// and `ahead`, the bytes the caller reads after this block (a hint: a path may prefetch them while
/// the block passes; it never changes a result).
#[derive(Clone, Copy, Debug)]
pub struct Block<'a, T> {
    /// The rows, `[nb][hd]`.
    pub rows: &'a [T],
    /// Values per row.
    pub hd: usize,
    /// What the caller reads next (may be empty).
    pub ahead: &'a [u8],
}

impl<'a, T> Block<'a, T> {
    /// The block `rows` of rows of `hd`, with `ahead` to prefetch.
    pub fn new(rows: &'a [T], hd: usize, ahead: &'a [u8]) -> Self {
        Block { rows, hd, ahead }
    }
}

/// An element type of cached keys and values: `f32`, or `f16` (half the memory and the bytes a
/// decode step reads; widened to f32 block by block as it is used).
pub trait KvElem: bytemuck::Pod + Send + Sync + 'static {
    /// The value as f32.
    fn to_f32(self) -> f32;
    /// `src` as f32: `src` itself for f32, else widened into `scratch` (grown on demand).
    fn as_f32<'a>(src: &'a [Self], scratch: &'a mut Vec<f32>) -> &'a [f32];
    /// `dst[i] = src[i]` rounded to this type (nearest, ties to even).
    fn store_f32(src: &[f32], dst: &mut [Self]);
    /// The scores step of [`attend_group`] on `path`: `s[r·nb + j] = scale · q_r·k_j` for the
    /// `nb` keys of `kb` (`scratch` may hold widened keys).
    fn group_scores(
        path: Path,
        q: &[f32],
        kb: Block<'_, Self>,
        scale: f32,
        s: &mut [f32],
        scratch: &mut Vec<f32>,
    );
    /// The `P·V` step of [`attend_group`] on `path`: `o[r] += Σ_j p[r·nb + j] · v_j`.
    fn group_pv(path: Path, p: &[f32], vb: Block<'_, Self>, o: &mut [f32], scratch: &mut Vec<f32>);
}

impl KvElem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn as_f32<'a>(src: &'a [f32], _: &'a mut Vec<f32>) -> &'a [f32] {
        src
    }
    #[inline(always)]
    fn store_f32(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src)
    }
    fn group_scores(
        path: Path,
        q: &[f32],
        kb: Block<'_, f32>,
        scale: f32,
        s: &mut [f32],
        _: &mut Vec<f32>,
    ) {
        let Block { rows, hd, ahead } = kb;
        // SAFETY: `path` is only ever an available path.
        with_isa!(path, I => unsafe { I::scores_f32(q, rows, hd, scale, s, ahead) })
    }
    fn group_pv(path: Path, p: &[f32], vb: Block<'_, f32>, o: &mut [f32], _: &mut Vec<f32>) {
        let Block { rows, hd, ahead } = vb;
        // SAFETY: as above.
        with_isa!(path, I => unsafe { I::pv_f32(p, rows, hd, o, ahead) })
    }
}

impl KvElem for half::f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    fn as_f32<'a>(src: &'a [half::f16], scratch: &'a mut Vec<f32>) -> &'a [f32] {
        use half::slice::HalfFloatSliceExt;
        let dst = grow(scratch, src.len());
        // F16C on x86-64 (detected at run time by `half`), fp16 conversions on aarch64.
        src.convert_to_f32_slice(dst);
        dst
    }
    fn store_f32(src: &[f32], dst: &mut [half::f16]) {
        use half::slice::HalfFloatSliceExt;
        dst.convert_from_f32_slice(src)
    }
    /// On x86-64, F16C widens eight keys' values in registers; elsewhere the block is widened
    /// into `scratch` first.
    fn group_scores(
        path: Path,
        q: &[f32],
        kb: Block<'_, half::f16>,
        scale: f32,
        s: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        let Block { rows, hd, ahead } = kb;
        // SAFETY: `path` is only ever an available path.
        with_isa!(path, I => unsafe { I::scores_f16(q, rows, hd, scale, s, scratch, ahead) })
    }
    fn group_pv(
        path: Path,
        p: &[f32],
        vb: Block<'_, half::f16>,
        o: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        let Block { rows, hd, ahead } = vb;
        // SAFETY: as above.
        with_isa!(path, I => unsafe { I::pv_f16(p, rows, hd, o, scratch, ahead) })
    }
}

/// Buffers of one [`attend`] caller, reused across calls (grown on demand, never shrunk).
#[derive(Default, Debug)]
pub struct AttnScratch {
    q: Vec<f32>,
    kt: Vec<f32>,
    vt: Vec<f32>,
    s: Vec<f32>,
    p: Vec<f32>,
    o: Vec<f32>,
    m: Vec<f32>,
    l: Vec<f32>,
}

impl AttnScratch {
    /// Empty buffers; they grow to the largest call and are then reused.
    pub fn new() -> Self {
        Self::default()
    }
}

fn grow(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

/// `s[i] = exp(s[i] − m)` in place, returning `Σ s[i]`, on the active path (a polynomial `expf`
/// within 2 ulp on SIMD paths, `f32::exp` on the scalar path; arguments below −87 give 0).
pub fn exp_sub_sum(s: &mut [f32], m: f32) -> f32 {
    exp_on(active_path(), s, m)
}

/// The scalar meaning of [`exp_sub_sum`] ([`super::scalar::exp_sub_sum`]).
pub fn exp_sub_scalar(s: &mut [f32], m: f32) -> f32 {
    super::scalar::exp_sub_sum(s, m)
}

pub(crate) fn exp_on(path: Path, s: &mut [f32], m: f32) -> f32 {
    // SAFETY: `path` is only ever an available path.
    with_isa!(path, I => unsafe { I::exp_sub_sum(s, m) })
}

/// The operands of one attention call on one head: query rows, keys and values, sizes and the
/// score scale (see [`attend`] and [`attend_group`]).
#[derive(Clone, Copy, Debug)]
pub struct Head<'a, T> {
    /// Query rows: row `i` is `q[i·q_stride ..][..hd]`.
    pub q: &'a [f32],
    /// Values from one query row to the next ([`attend_group`]: `hd`).
    pub q_stride: usize,
    /// Query rows.
    pub nq: usize,
    /// Keys, row-major `[nk][hd]` (one head of a head-major cache: `&k[head·stride·hd..]`).
    pub k: &'a [T],
    /// Values, row-major `[nk][hd]`.
    pub v: &'a [T],
    /// Keys (and values).
    pub nk: usize,
    /// Head dimension.
    pub hd: usize,
    /// Score scale (`1/√hd`).
    pub scale: f32,
}

/// Softmax attention of `h.nq` query rows against keys `0..h.nk` of one head.
///
/// - `row_keys[i]`: the key ranges row `i` may see (sorted, disjoint, inside `0..nk`; empty: none).
/// - `out`: row `i` is written to `out[i·out_stride ..][..hd]`; a row that sees no key gets zeros.
///
/// Scores are `scale · q·k`; the result is `Σ_j softmax_j · v_j` over the visible keys, within
/// float rounding of the plain formula (FMA and a polynomial `exp` on SIMD paths).
pub fn attend<T: KvElem>(
    h: &Head<'_, T>,
    row_keys: &[Vec<Range<usize>>],
    out: &mut [f32],
    out_stride: usize,
    ws: &mut AttnScratch,
) {
    let Head {
        q,
        q_stride,
        nq,
        k,
        v,
        nk,
        hd,
        ..
    } = *h;
    assert!(
        row_keys.len() >= nq,
        "attend: {} key lists for {nq} rows",
        row_keys.len()
    );
    assert!(
        k.len() >= nk * hd && v.len() >= nk * hd,
        "attend: k/v hold fewer than {nk} rows"
    );
    assert!(
        nq == 0 || (q.len() >= (nq - 1) * q_stride + hd && out.len() >= (nq - 1) * out_stride + hd)
    );
    if nq == 0 || hd == 0 {
        return;
    }
    let path = active_path();
    with_isa!(path, I => attend_with::<<I as Isa>::Gemm, T>(path, h, row_keys, out, out_stride, ws))
}

/// [`attend`] with the GEMM micro-kernel `K` of `path`.
fn attend_with<K: Kernel, T: KvElem>(
    path: Path,
    h: &Head<'_, T>,
    row_keys: &[Vec<Range<usize>>],
    out: &mut [f32],
    out_stride: usize,
    ws: &mut AttnScratch,
) {
    let Head {
        q,
        q_stride,
        nq,
        k,
        v,
        nk,
        hd,
        scale,
    } = *h;
    let (mr, nr) = (K::MR, K::NR);
    let nq_pad = nq.next_multiple_of(mr);
    let hd_pad = hd.next_multiple_of(nr);
    let kb_pad = KEY_BLOCK.next_multiple_of(nr);
    let qp = grow(&mut ws.q, nq_pad * hd);
    // Q panels: qp[panel][d][MR], pre-scaled.
    for ip in 0..nq_pad / mr {
        for d in 0..hd {
            for r in 0..mr {
                let i = ip * mr + r;
                qp[(ip * hd + d) * mr + r] = if i < nq {
                    q[i * q_stride + d] * scale
                } else {
                    0.0
                };
            }
        }
    }
    let o = grow(&mut ws.o, nq_pad * hd_pad);
    o.fill(0.0);
    let m = grow(&mut ws.m, nq);
    m.fill(f32::NEG_INFINITY);
    let l = grow(&mut ws.l, nq);
    l.fill(0.0);
    grow(&mut ws.kt, kb_pad * hd);
    grow(&mut ws.vt, kb_pad * hd_pad);
    grow(&mut ws.s, nq_pad * kb_pad);
    grow(&mut ws.p, nq_pad * kb_pad);

    // Keys anybody sees.
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
    let mut j0 = lo;
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
        // K panels: kt[panel][d][NR] (missing keys zero).
        let kt = &mut ws.kt[..nkb_pad * hd];
        for jp in 0..nkb_pad / nr {
            for r in 0..nr {
                let j = jp * nr + r;
                if j < nkb {
                    let src = &k[(blk.start + j) * hd..][..hd];
                    for (d, &x) in src.iter().enumerate() {
                        kt[(jp * hd + d) * nr + r] = x.to_f32();
                    }
                } else {
                    for d in 0..hd {
                        kt[(jp * hd + d) * nr + r] = 0.0;
                    }
                }
            }
        }
        // S = Q·Kᵀ, full tiles into the padded buffer (row stride nkb_pad).
        let s = &mut ws.s[..nq_pad * nkb_pad];
        for jp in 0..nkb_pad / nr {
            for ip in 0..nq_pad / mr {
                // SAFETY: the path's features were checked by the dispatcher; the panels hold hd
                // steps; the tile (rows ip·MR.., columns jp·NR..) lies inside `s`.
                unsafe {
                    K::kernel(
                        hd,
                        ws.q[ip * mr * hd..].as_ptr(),
                        kt[jp * nr * hd..].as_ptr(),
                        s.as_mut_ptr().add(ip * mr * nkb_pad + jp * nr),
                        nkb_pad,
                        false,
                    )
                };
            }
        }
        // Online softmax per row; P panels: p[panel][key][MR].
        let p = &mut ws.p[..nq_pad * nkb_pad];
        p.fill(0.0);
        for i in 0..nq {
            let srow = &mut s[i * nkb_pad..i * nkb_pad + nkb];
            let parts = row_keys[i]
                .iter()
                .map(|r| r.start.max(blk.start)..r.end.min(blk.end))
                .filter(|r| r.start < r.end)
                .map(|r| r.start - blk.start..r.end - blk.start);
            let mut bmax = f32::NEG_INFINITY;
            for r in parts.clone() {
                bmax = srow[r].iter().fold(bmax, |a, &b| a.max(b));
            }
            if bmax == f32::NEG_INFINITY {
                continue;
            }
            let m_new = m[i].max(bmax);
            let corr = (m[i] - m_new).exp();
            let mut sum = 0f32;
            let (ip, r0) = (i / mr, i % mr);
            for r in parts {
                sum += exp_on(path, &mut srow[r.clone()], m_new);
                for j in r {
                    p[(ip * nkb_pad + j) * mr + r0] = srow[j];
                }
            }
            if corr != 1.0 {
                super::scale_on(path, corr, &mut o[i * hd_pad..(i + 1) * hd_pad]);
            }
            l[i] = l[i] * corr + sum;
            m[i] = m_new;
        }
        // V panels: vt[panel][key][NR] (missing keys and dims zero).
        let vt = &mut ws.vt[..nkb_pad * hd_pad];
        for dp in 0..hd_pad / nr {
            for j in 0..nkb_pad {
                let dst = &mut vt[(dp * nkb_pad + j) * nr..][..nr];
                if j < nkb {
                    let d0 = dp * nr;
                    let cnt = nr.min(hd - d0);
                    for (o, x) in dst[..cnt].iter_mut().zip(&v[(blk.start + j) * hd + d0..]) {
                        *o = x.to_f32();
                    }
                    dst[cnt..].fill(0.0);
                } else {
                    dst.fill(0.0);
                }
            }
        }
        // O += P·V.
        for dp in 0..hd_pad / nr {
            for ip in 0..nq_pad / mr {
                // SAFETY: as above; the tile (rows ip·MR.., columns dp·NR..) lies inside `o`.
                unsafe {
                    K::kernel(
                        nkb_pad,
                        p[ip * mr * nkb_pad..].as_ptr(),
                        vt[dp * nr * nkb_pad..].as_ptr(),
                        o.as_mut_ptr().add(ip * mr * hd_pad + dp * nr),
                        hd_pad,
                        true,
                    )
                };
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

/// Keys per online-softmax step of [`attend_group`].
const GROUP_KEY_BLOCK: usize = 256;

/// Softmax attention of `h.nq` query rows that see the same keys, against one K/V head: the
/// decode form of [`attend`], for the query heads that share a kv head (grouped-query attention)
/// or a single row. Each K and V row is read once for all `nq` rows, and there is no packing.
///
/// - `h.q`: `[nq][hd]` (`h.q_stride == hd`: the heads of one token that share a kv head are
///   consecutive).
/// - `keys`: the key ranges the rows see (sorted, disjoint, inside `0..nk`; empty: none).
/// - `out`: `[nq][hd]`; with no visible key, zeros.
///
/// Per block of keys: `s[r][j] = scale · q_r·k_j` (eight-lane dot products), then per row the
/// online softmax (`m' = max(m, max s)`, `p = exp(s − m')`, `l = l·e^(m−m') + Σp`,
/// `o ·= e^(m−m')`), then `o[r] += Σ_j p[r][j] · v_j`; finally `out = o / l`; within float
/// rounding of the plain formula (x86 uses FMA; `exp` is the path's).
pub fn attend_group<T: KvElem>(
    h: &Head<'_, T>,
    keys: &[Range<usize>],
    out: &mut [f32],
    ws: &mut AttnScratch,
) {
    let Head {
        q,
        q_stride,
        nq,
        k,
        v,
        nk,
        hd,
        scale,
    } = *h;
    assert_eq!(q_stride, hd, "attend_group: query rows must be consecutive");
    assert!(
        q.len() >= nq * hd && out.len() >= nq * hd,
        "attend_group: q/out too short"
    );
    assert!(
        k.len() >= nk * hd && v.len() >= nk * hd,
        "attend_group: k/v hold fewer than {nk} rows"
    );
    assert!(
        keys.iter().all(|r| r.start <= r.end && r.end <= nk),
        "attend_group: key range outside 0..{nk}"
    );
    let path = active_path();
    let o = grow(&mut ws.o, nq * hd);
    o.fill(0.0);
    let m = grow(&mut ws.m, nq);
    m.fill(f32::NEG_INFINITY);
    let l = grow(&mut ws.l, nq);
    l.fill(0.0);
    let s = grow(&mut ws.s, nq * GROUP_KEY_BLOCK);
    for r in keys {
        let mut j0 = r.start;
        while j0 < r.end {
            let nb = GROUP_KEY_BLOCK.min(r.end - j0);
            let (kb, vb) = (&k[j0 * hd..(j0 + nb) * hd], &v[j0 * hd..(j0 + nb) * hd]);
            j0 += nb;
            // What comes next, prefetched while this block is worked on: its values during the
            // scores, the next block's keys during P·V.
            let next = GROUP_KEY_BLOCK.min(r.end - j0);
            let next_k: &[u8] = bytemuck::cast_slice(&k[j0 * hd..(j0 + next) * hd]);
            let s = &mut s[..nq * nb];
            T::group_scores(
                path,
                &q[..nq * hd],
                Block::new(kb, hd, bytemuck::cast_slice(vb)),
                scale,
                s,
                &mut ws.kt,
            );
            for (i, srow) in s.chunks_exact_mut(nb).enumerate() {
                let bmax = srow.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let m_new = m[i].max(bmax);
                let corr = (m[i] - m_new).exp();
                l[i] = l[i] * corr + exp_on(path, srow, m_new);
                if corr != 1.0 {
                    super::scale_on(path, corr, &mut o[i * hd..(i + 1) * hd]);
                }
                m[i] = m_new;
            }
            T::group_pv(path, s, Block::new(vb, hd, next_k), o, &mut ws.vt);
        }
    }
    for i in 0..nq {
        let inv = if l[i] > 0.0 { 1.0 / l[i] } else { 0.0 };
        for (d, x) in out[i * hd..(i + 1) * hd].iter_mut().zip(&o[i * hd..]) {
            *d = x * inv;
        }
    }
}
