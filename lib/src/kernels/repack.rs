//! Row-interleaved ("repacked") weight layouts for the decode kernels, built once at load into
//! anonymous memory (in the spirit of ggml's CPU repack, `block_q4_0x8`; our own layout).
//!
//! # Q4_0 ×8
//! Every group of [`R`] = 8 consecutive weight rows is stored block by block: block `b` of the
//! group ([`BlockQ4_0x8`], 144 bytes) holds the eight rows' f16 scales, then their nibble bytes
//! interleaved four bytes at a time:
//!
//! ```text
//! { d: [f16; 8],               d[r]             = row r's block b scale
//!   qs: [u8; 128] }            qs[32c + 4r + e] = row r's block b qs[4c + e]   (c, e < 4)
//! ```
//!
//! so one sequential stream feeds eight output rows, 32 bytes of nibbles hold the same four
//! values of every row (one i32 lane per row after a 4-byte dot product) and the eight scales are
//! one 128-bit load. The `m mod 8` rows past the last full group follow in the plain Q4_0 layout.
//!
//! # Q4_K ×4
//! Every group of [`RK`] = 4 consecutive Q4_K rows is stored block by block ([`BlockQ4_Kx4`],
//! 4 × 148 bytes: 4 more per row and block than in place) with the per-block decoding done at
//! load: the four rows' f16 `(d, dmin)` pairs together (one 128-bit load, one conversion), each
//! row's eight 6-bit scales and eight minimums one per byte, and its nibbles in an order where one
//! `and` / one shift give whole sub-blocks of 32 levels, 64 values apart:
//!
//! ```text
//! { dm: [f16; 8],              dm[2r], dm[2r + 1]  = row r's d, dmin
//!   scm: [[u8; 16]; 4],        scm[r][j], scm[r][8 + j] = row r's sc[j], m[j]   (j < 8)
//!   qs: [[u8; 128]; 4] }       qs[r][64h + i] = row r's level 128h + i (low nibble)
//!                                              | level 128h + 64 + i << 4     (h < 2, i < 64)
//! ```
//!
//! so 32 bytes at `qs[r][32c]` hold sub-blocks `[0, 1, 4, 5][c]` (low nibbles) and
//! `[2, 3, 6, 7][c]` (high), and 64 bytes at `qs[r][64h]` sub-blocks `4h, 4h + 1` and
//! `4h + 2, 4h + 3`, each against contiguous activation bytes. The `m mod 4` rows past the last
//! full group follow in the plain layout.
//!
//! # Q5_K, Q6_K ×4
//! Q5_K and Q6_K rows go in groups of [`RK`] = 4, block by block: block `b` of the group is
//! the four rows' blocks `b`, unchanged, one after the other, so the four-row decode tile
//! reads one sequential stream instead of four. Their kernels are the in-place lane kernels
//! (`intdot::LaneTile`) stepping over the interleaved blocks.
//!
//! Each row's result is computed exactly as [`QuantBlock::vec_dot`] does (exact integer block
//! sums, then the "eight block lanes" f32 order of [`crate::quant::block_lanes`]), so every
//! path's repacked kernel agrees bit for bit with the in-place kernels; only the memory layout
//! differs. The portable decoder here ([`scalar_decoder`]) is the meaning of the SIMD ones.

use std::ops::Range;

use half::f16;
use rayon::prelude::*;

use super::traverse::Tile;
use super::types::{plain_act, Decoder, Job};
use super::{with_bias, Out, Q8Row, SyncPtr};
use crate::quant::q4_k::BlockQ4_K;
use crate::quant::q5_k::BlockQ5_K;
use crate::quant::q6_k::BlockQ6_K;
use crate::quant::q8_k::BlockQ8_K;
use crate::quant::{
    block_lanes, f16_as_f32, lane_vec_dot, lane_vec_dot_iter, BlockQ4_0, BlockQ8_0, LaneDot,
    QuantBlock,
};
use crate::GgmlType;

/// Rows per interleaved group of the Q4_0 layout.
pub const R: usize = 8;
/// Rows per group of the block-interleaved K-quant layout.
pub const RK: usize = 4;

/// Block `b` of a group of eight Q4_0 rows (see the module docs).
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ4_0x8 {
    /// The eight rows' scales.
    pub d: [f16; 8],
    /// Nibble bytes: `qs[32c + 4r + e]` = row `r`'s `qs[4c + e]`.
    pub qs: [u8; 128],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_0x8>() == 8 * 18);

/// Block `b` of a group of four Q4_K rows (see the module docs).
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ4_Kx4 {
    /// Row `r`'s `d` and `dmin` at `2r`, `2r + 1`.
    pub dm: [f16; 8],
    /// Row `r`'s eight sub-block scales (`scm[r][..8]`) and minimums (`scm[r][8..]`).
    pub scm: [[u8; 16]; RK],
    /// Row `r`'s levels: `qs[r][64h + i]` = level `128h + i` | level `128h + 64 + i` << 4.
    pub qs: [[u8; 128]; RK],
}

/// Bytes of one row's block in the Q4_K ×4 layout.
pub const Q4_KX4_ROW_BLOCK: usize = 148;

const _: () = assert!(std::mem::size_of::<BlockQ4_Kx4>() == RK * Q4_KX4_ROW_BLOCK);

impl BlockQ4_Kx4 {
    /// Put `s` in as row `r` (the load-time decoding of the module docs).
    pub fn set_row(&mut self, r: usize, s: &BlockQ4_K) {
        self.dm[2 * r] = s.d;
        self.dm[2 * r + 1] = s.dmin;
        let (sc, m) = s.scales_mins();
        self.scm[r][..8].copy_from_slice(&sc);
        self.scm[r][8..].copy_from_slice(&m);
        let q = s.levels();
        for h in 0..2 {
            for i in 0..64 {
                self.qs[r][64 * h + i] = q[128 * h + i] | (q[128 * h + 64 + i] << 4);
            }
        }
    }

    /// Row `r`'s block in the plain layout (the exact inverse of [`BlockQ4_Kx4::set_row`]).
    pub fn row(&self, r: usize) -> BlockQ4_K {
        let mut q = [0u8; 256];
        for h in 0..2 {
            for i in 0..64 {
                let v = self.qs[r][64 * h + i];
                q[128 * h + i] = v & 0x0F;
                q[128 * h + 64 + i] = v >> 4;
            }
        }
        let mut qs = [0u8; 128];
        for g in 0..4 {
            for l in 0..32 {
                qs[32 * g + l] = q[64 * g + l] | (q[64 * g + 32 + l] << 4);
            }
        }
        let (sc, m) = self.scm[r].split_at(8);
        // `get_scale_min_k4`'s packing, inverted (every bit of the 12 bytes is a bit of a 6-bit
        // scale or minimum).
        let mut scales = [0u8; 12];
        for j in 0..4 {
            scales[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            scales[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
            scales[j + 8] = (sc[j + 4] & 0x0F) | ((m[j + 4] & 0x0F) << 4);
        }
        BlockQ4_K {
            d: self.dm[2 * r],
            dmin: self.dm[2 * r + 1],
            scales,
            qs,
        }
    }
}

/// A weight matrix in a repacked layout: full groups of rows, then the leftover rows in
/// the type's plain layout, in one buffer of anonymous memory.
pub struct Repacked {
    /// The weight type (its layout: [`BlockQ4_0x8`] for Q4_0, blocks of [`RK`] rows for the
    /// K-quants).
    pub ty: GgmlType,
    /// The bytes (u64 words: 8-byte alignment for every block type).
    buf: Vec<u64>,
    len: usize,
}

impl std::fmt::Debug for Repacked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Repacked({}, {} bytes)", self.ty, self.len)
    }
}

impl Repacked {
    /// The repacked bytes (the same number as the in-place matrix's, except Q4_K ×4: 148 bytes
    /// per row and block of the full groups instead of 144).
    pub fn data(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.buf)[..self.len]
    }
}

/// The types models repack at load ([`super::repack_pays`]). Q4_0 ×8 computes 1.3× (avx512)
/// to 1.7× (avx2) faster per core than in place (`examples/kq_speed.rs`, cache-resident). Q4_K
/// ×4 computes faster per core too (5.3 against 7.2–7.5 ns per 256 weights on avx512, 6.0–6.2
/// against 7.3–7.5 on avx2, cache-resident), but the whole 11B Q4_K_M decode was slower with it
/// in all four quiet interleaved pairs (avx512 3.53 / 3.03 against 4.75 / 3.39 tokens/s in
/// place, avx2 3.79 / 2.86 against 4.14 / 3.12): one sequential stream per thread instead of the
/// in-place tile's four, so it is not repacked by default. The block-interleaved Q5_K/Q6_K
/// compute exactly as in place and measured no faster either cache-resident or memory-bound
/// (`KQ_ROWS=32768 KQ_THREADS=2`, within the noise). [`super::tensor::Mat::repack`] still
/// builds all of them (tested bit for bit on every path).
pub const PAYS: [GgmlType; 1] = [GgmlType::Q4_0];

/// Whether matrices of type `ty` have a repacked layout.
pub fn supports(ty: GgmlType) -> bool {
    group_rows(ty).is_some()
}

/// Rows per group of type `ty`'s repacked layout (`None`: it has none).
pub fn group_rows(ty: GgmlType) -> Option<usize> {
    match ty {
        GgmlType::Q4_0 => Some(R),
        GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => Some(RK),
        _ => None,
    }
}

/// Rows of an `m`-row matrix of type `ty` that lie in whole groups (the rest stay in place).
pub(crate) fn full_rows(ty: GgmlType, m: usize) -> usize {
    let g = group_rows(ty).unwrap_or(1);
    m / g * g
}

/// Repack `m` rows of `k` values of type `ty` stored in place in `data` (groups in parallel), or
/// `None` if the type has no repacked layout or the matrix has fewer rows than one group.
pub fn repack(ty: GgmlType, data: &[u8], m: usize, k: usize) -> Option<Repacked> {
    let g = group_rows(ty)?;
    let rb = ty.row_bytes(k as u64)? as usize;
    if m < g || !k.is_multiple_of(ty.block_size()) || data.len() != m * rb {
        return None;
    }
    if ty == GgmlType::Q4_K {
        return Some(repack_q4_k(data, m, k));
    }
    if ty != GgmlType::Q4_0 {
        return Some(repack_blocks(ty, data, m, k, g));
    }
    let nb = k / 32;
    let mut buf = vec![0u64; data.len().div_ceil(8)];
    let out: &mut [u8] = &mut bytemuck::cast_slice_mut(&mut buf)[..data.len()];
    let src: &[BlockQ4_0] = bytemuck::cast_slice(data);
    let full = m / R * R;
    let (groups, tail) = out.split_at_mut(full * nb * 18);
    let groups: &mut [BlockQ4_0x8] = bytemuck::cast_slice_mut(groups);
    groups.par_chunks_mut(nb).enumerate().for_each(|(g, dst)| {
        for (b, o) in dst.iter_mut().enumerate() {
            for r in 0..R {
                let s = &src[(g * R + r) * nb + b];
                o.d[r] = s.d;
                for c in 0..4 {
                    o.qs[32 * c + 4 * r..][..4].copy_from_slice(&s.qs[4 * c..4 * c + 4]);
                }
            }
        }
    });
    tail.copy_from_slice(&data[full * nb * 18..]);
    Some(Repacked {
        ty,
        buf,
        len: data.len(),
    })
}

/// The Q4_K ×4 layout of `m` rows of `k` values stored in place in `data`.
fn repack_q4_k(data: &[u8], m: usize, k: usize) -> Repacked {
    let nb = k / 256;
    let full = m / RK * RK;
    let len = full * nb * Q4_KX4_ROW_BLOCK + (m - full) * nb * 144;
    let mut buf = vec![0u64; len.div_ceil(8)];
    let out: &mut [u8] = &mut bytemuck::cast_slice_mut(&mut buf)[..len];
    let src: &[BlockQ4_K] = bytemuck::cast_slice(data);
    let (groups, tail) = out.split_at_mut(full * nb * Q4_KX4_ROW_BLOCK);
    let groups: &mut [BlockQ4_Kx4] = bytemuck::cast_slice_mut(groups);
    groups.par_chunks_mut(nb).enumerate().for_each(|(g, dst)| {
        for (b, o) in dst.iter_mut().enumerate() {
            for r in 0..RK {
                o.set_row(r, &src[(g * RK + r) * nb + b]);
            }
        }
    });
    tail.copy_from_slice(&data[full * nb * 144..]);
    Repacked {
        ty: GgmlType::Q4_K,
        buf,
        len,
    }
}

/// The in-place tail of a repacked Q4_K matrix (`m` rows of `nb` blocks): its bytes start at
/// `q4_k_tail_at(m, nb)`.
pub(crate) fn q4_k_tail_at(m: usize, nb: usize) -> usize {
    m / RK * RK * nb * Q4_KX4_ROW_BLOCK
}

/// The block-interleaved layout: block `b` of row `g·RK + r` at block index `(g·nb + b)·RK + r`.
fn repack_blocks(ty: GgmlType, data: &[u8], m: usize, k: usize, g: usize) -> Repacked {
    let (bb, nb) = (ty.type_size(), k / ty.block_size());
    let mut buf = vec![0u64; data.len().div_ceil(8)];
    let out: &mut [u8] = &mut bytemuck::cast_slice_mut(&mut buf)[..data.len()];
    let full = m / g * g;
    let (groups, tail) = out.split_at_mut(full * nb * bb);
    groups
        .par_chunks_mut(g * nb * bb)
        .enumerate()
        .for_each(|(gi, dst)| {
            for r in 0..g {
                let src = &data[(gi * g + r) * nb * bb..][..nb * bb];
                for (b, blk) in src.chunks_exact(bb).enumerate() {
                    dst[(b * g + r) * bb..][..bb].copy_from_slice(blk);
                }
            }
        });
    tail.copy_from_slice(&data[full * nb * bb..]);
    Repacked {
        ty,
        buf,
        len: data.len(),
    }
}

/// Row `j` of a repacked matrix of `m` rows of `k` values, dequantized into `out[..k]`.
pub(crate) fn row_to_f32(rp: &Repacked, m: usize, k: usize, j: usize, out: &mut [f32]) {
    let ty = rp.ty;
    let (bv, bb, nb) = (ty.block_size(), ty.type_size(), k / ty.block_size());
    if ty == GgmlType::Q4_0 {
        for_each_block(rp, m, nb, j, |b, blk| {
            blk.dequantize(&mut out[b * 32..(b + 1) * 32])
        });
        return;
    }
    let full = full_rows(ty, m);
    if ty == GgmlType::Q4_K {
        let (groups, tail) = rp.data().split_at(q4_k_tail_at(m, nb));
        for b in 0..nb {
            let blk = if j < full {
                let groups: &[BlockQ4_Kx4] = bytemuck::cast_slice(groups);
                groups[j / RK * nb + b].row(j % RK)
            } else {
                bytemuck::cast_slice::<u8, BlockQ4_K>(tail)[(j - full) * nb + b]
            };
            blk.dequantize(&mut out[b * bv..(b + 1) * bv]);
        }
        return;
    }
    let Some(t) = crate::quant::traits(ty) else {
        return;
    };
    for b in 0..nb {
        let at = if j < full {
            (j / RK * RK * nb + b * RK + j % RK) * bb
        } else {
            (j * nb + b) * bb
        };
        (t.to_f32)(&rp.data()[at..at + bb], &mut out[b * bv..(b + 1) * bv]);
    }
}

/// Row `j`'s blocks in the plain layout, from a repacked Q4_0 matrix of `m` rows of `nb`
/// blocks: `f(b, block)` for every block `b` in order.
fn for_each_block(
    rp: &Repacked,
    m: usize,
    nb: usize,
    j: usize,
    mut f: impl FnMut(usize, &BlockQ4_0),
) {
    let full = m / R * R;
    let (groups, tail) = rp.data().split_at(full * nb * 18);
    if j < full {
        let groups: &[BlockQ4_0x8] = bytemuck::cast_slice(groups);
        let r = j % R;
        for (b, g) in groups[j / R * nb..][..nb].iter().enumerate() {
            f(b, &unpack(g, r));
        }
    } else {
        let tail: &[BlockQ4_0] = bytemuck::cast_slice(tail);
        for (b, blk) in tail[(j - full) * nb..][..nb].iter().enumerate() {
            f(b, blk);
        }
    }
}

/// Row `r`'s block out of an interleaved block.
#[inline(always)]
pub(crate) fn unpack(g: &BlockQ4_0x8, r: usize) -> BlockQ4_0 {
    let mut qs = [0u8; 16];
    for c in 0..4 {
        qs[4 * c..4 * c + 4].copy_from_slice(&g.qs[32 * c + 4 * r..][..4]);
    }
    BlockQ4_0 { d: g.d[r], qs }
}

// ---------------------------------------------------------------------------------------------
// The decode traversal over a repacked matrix, shared by every path.

/// One path's kernel for a group of eight rows: `y[r] = W[row r] · x` for the group's `nb`
/// interleaved blocks at `w`, against one split-layout activation row.
pub(crate) trait GroupDot {
    /// # Safety
    /// The CPU runs the kernel's ISA; `nb` blocks at `w`; the activation row holds `nb` blocks.
    unsafe fn dot8(w: *const BlockQ4_0x8, nb: usize, x: Q8Row) -> [f32; R];
}

/// The repacked Q4_0 decode of weight rows `rows` (whole groups, then leftover rows) against
/// split-layout activation rows ([`super::SplitActs`]), with `D`'s group kernel. Leftover rows
/// go through [`plain_row_split`].
///
/// # Safety
/// As [`Decoder::rows`]: `job.w` is a [`Repacked`] Q4_0 matrix of `job.out.m` rows; `rows`
/// starts at a multiple of [`R`] or past the last full group.
#[inline(always)]
pub(crate) unsafe fn rows_split<D: GroupDot>(job: &Job<'_>, rows: Range<usize>) {
    let (m, nb) = (job.out.m, job.k / 32);
    let full = m / R * R;
    let acts = super::SplitActs::new(job.x, job.x_stride, nb);
    let groups = job.w.as_ptr() as *const BlockQ4_0x8;
    let mut j = rows.start;
    while j + R <= rows.end.min(full) {
        let w = groups.add(j / R * nb);
        for i in 0..job.n {
            let v = D::dot8(w, nb, acts.row(i));
            for (r, &v) in v.iter().enumerate() {
                job.out.put(i, j + r, with_bias(v, job.bias, j + r));
            }
        }
        j += R;
    }
    let tail = job.w.as_ptr().add(full * nb * 18) as *const BlockQ4_0;
    for j in j.max(full)..rows.end {
        let w = tail.add((j - full) * nb);
        for i in 0..job.n {
            let v = plain_row_split(w, nb, acts.row(i));
            job.out.put(i, j, with_bias(v, job.bias, j));
        }
    }
}

/// One plain Q4_0 row against a split-layout activation row, bit-exact with
/// [`QuantBlock::vec_dot`] (the leftover rows of a repacked matrix on the SIMD paths).
///
/// # Safety
/// `nb` blocks at `w`, `nb` blocks in `x`.
#[inline(always)]
pub(crate) unsafe fn plain_row_split(w: *const BlockQ4_0, nb: usize, x: Q8Row) -> f32 {
    block_lanes(nb, |b| {
        let (a, xq) = (&*w.add(b), &(*x.qs.add(b)).0);
        let mut isum = 0i32;
        for k in 0..16 {
            isum +=
                (a.qs[k] & 0x0F) as i32 * xq[k] as i32 + (a.qs[k] >> 4) as i32 * xq[k + 16] as i32;
        }
        (f16_as_f32(a.d) * *x.d.add(b), isum - 8 * *x.s.add(b))
    })
}

// ---------------------------------------------------------------------------------------------
// The portable decoder: the meaning of every SIMD one.

/// The portable decode kernel of a repacked matrix of type `ty` (activations: plain blocks of
/// the type's activation type).
pub(crate) fn scalar_decoder(ty: GgmlType) -> Option<Decoder> {
    fn lane<B: LaneDot>() -> Option<Decoder> {
        Some(Decoder {
            act: Some(plain_act::<B::VecDot>()),
            rows: scalar_rows_lane::<B>,
        })
    }
    match ty {
        GgmlType::Q4_0 => Some(Decoder {
            act: Some(plain_act::<BlockQ8_0>()),
            rows: scalar_rows,
        }),
        GgmlType::Q4_K => Some(Decoder {
            act: Some(plain_act::<BlockQ8_K>()),
            rows: scalar_rows_q4_k,
        }),
        GgmlType::Q5_K => lane::<BlockQ5_K>(),
        GgmlType::Q6_K => lane::<BlockQ6_K>(),
        _ => None,
    }
}

/// One path's kernel for a group of four Q4_K ×4 rows: `y[r] = W[row r] · x` for the group's
/// `nb` blocks at `w` against one Q8_K activation row, bit-exact with
/// [`crate::quant::lane_vec_dot`].
pub(crate) trait Q4kGroupDot {
    /// # Safety
    /// The CPU runs the kernel's ISA; `nb` blocks at `w` and at `x`.
    unsafe fn dot4(w: *const BlockQ4_Kx4, nb: usize, x: *const BlockQ8_K) -> [f32; RK];
}

/// The repacked Q4_K decode of weight rows `rows`: whole groups with `D`'s kernel against every
/// activation row (plain Q8_K rows) in turn, the leftover rows (stored in place after the groups)
/// with `tail`, the path's in-place Q4_K decoder.
///
/// # Safety
/// As [`Decoder::rows`]: `job.w` is a [`Repacked`] Q4_K matrix of `job.out.m` rows; `rows`
/// starts at a multiple of [`RK`] or past the last full group; `tail` runs on this CPU.
#[inline(always)]
pub(crate) unsafe fn rows_q4_k<D: Q4kGroupDot>(
    job: &Job<'_>,
    rows: Range<usize>,
    tail: unsafe fn(&Job<'_>, Range<usize>),
) {
    let (m, nb) = (job.out.m, job.k / 256);
    let full = m / RK * RK;
    let groups = job.w.as_ptr() as *const BlockQ4_Kx4;
    let mut j = rows.start;
    while j + RK <= rows.end.min(full) {
        let w = groups.add(j / RK * nb);
        for i in 0..job.n {
            let x = job.x.as_ptr().add(i * job.x_stride) as *const BlockQ8_K;
            for (r, &v) in D::dot4(w, nb, x).iter().enumerate() {
                job.out.put(i, j + r, with_bias(v, job.bias, j + r));
            }
        }
        j += RK;
    }
    let j = j.max(full);
    if j < rows.end {
        // The leftover rows as an in-place matrix of their own, writing columns `full..` of y.
        let tail_job = Job {
            w: &job.w[q4_k_tail_at(m, nb)..],
            k: job.k,
            x: job.x,
            x_stride: job.x_stride,
            n: job.n,
            out: Out {
                p: SyncPtr(job.out.p.0.add(full)),
                m,
            },
            bias: job.bias.map(|b| &b[full..]),
        };
        tail(&tail_job, j - full..rows.end - full);
    }
}

/// Twin of every repacked Q4_K kernel: each row's blocks, read back from the groups
/// ([`BlockQ4_Kx4::row`]), through [`crate::quant::lane_vec_dot_iter`].
unsafe fn scalar_rows_q4_k(job: &Job<'_>, rows: Range<usize>) {
    let (m, nb) = (job.out.m, job.k / 256);
    let full = full_rows(GgmlType::Q4_K, m);
    let (groups, tail) = job.w.split_at(q4_k_tail_at(m, nb));
    let groups: &[BlockQ4_Kx4] = bytemuck::cast_slice(groups);
    let tail: &[BlockQ4_K] = bytemuck::cast_slice(tail);
    let xb = nb * <BlockQ8_K as QuantBlock>::BYTES;
    for j in rows {
        for i in 0..job.n {
            let x: &[BlockQ8_K] = bytemuck::cast_slice(&job.x[i * job.x_stride..][..xb]);
            let v = if j < full {
                let g = &groups[j / RK * nb..][..nb];
                lane_vec_dot_iter::<BlockQ4_K>(g.iter().map(|b| b.row(j % RK)), x)
            } else {
                lane_vec_dot(&tail[(j - full) * nb..][..nb], x)
            };
            job.out.put(i, j, with_bias(v, job.bias, j));
        }
    }
}

/// Twin of every repacked K-quant kernel: each row's blocks, read from the interleaved groups,
/// through [`crate::quant::lane_vec_dot_iter`] (the in-place reference's arithmetic).
unsafe fn scalar_rows_lane<B: LaneDot>(job: &Job<'_>, rows: Range<usize>) {
    let nb = job.k / B::BLOCK;
    let full = full_rows(B::TYPE, job.out.m);
    let w: &[B] = bytemuck::cast_slice(job.w);
    let xb = nb * <B::VecDot as QuantBlock>::BYTES;
    for j in rows {
        let (first, step) = if j < full {
            (j / RK * RK * nb + j % RK, RK)
        } else {
            (j * nb, 1)
        };
        for i in 0..job.n {
            let x: &[B::VecDot] = bytemuck::cast_slice(&job.x[i * job.x_stride..][..xb]);
            let v = lane_vec_dot_iter::<B>((0..nb).map(|b| &w[first + b * step]), x);
            job.out.put(i, j, with_bias(v, job.bias, j));
        }
    }
}

/// The decode of weight rows `rows` of a block-interleaved matrix with a tile whose rows
/// [`Tile::tile`] finds in that layout (`intdot::LaneTile::repacked`): each group's four rows
/// side by side (one stream), every activation row, then the leftover rows one by one.
///
/// # Safety
/// As [`Tile::tile`]; the caller owns columns `rows` of `job.out`; `rows` starts at a multiple
/// of [`RK`] or past the last full group.
#[inline(always)]
pub(crate) unsafe fn rows_grouped<T: Tile>(t: T, job: &Job<'_>, full: usize, rows: Range<usize>) {
    let (n, out, bias) = (job.n, job.out, job.bias);
    let put = |i: usize, nx: usize, js: [usize; 4], rw: usize, v: [[f32; 4]; 4]| {
        for (&j, row) in js.iter().zip(&v).take(rw) {
            for (dt, val) in row.iter().enumerate().take(nx) {
                out.put(i + dt, j, with_bias(*val, bias, j));
            }
        }
    };
    let mut j = rows.start;
    while j + RK <= rows.end.min(full) {
        let mut i = 0;
        while i < n {
            let nx = (n - i).min(T::MAX_NX);
            let rw = T::width(nx).min(RK);
            for r0 in (0..RK).step_by(rw) {
                let js = std::array::from_fn(|r| j + r0 + r.min(rw - 1));
                put(i, nx, js, rw, t.tile(rw, nx, js, i));
            }
            i += nx;
        }
        j += RK;
    }
    for j in j.max(full)..rows.end {
        let mut i = 0;
        while i < n {
            let nx = (n - i).min(T::MAX_NX);
            put(i, nx, [j; 4], 1, t.tile(1, nx, [j; 4], i));
            i += nx;
        }
    }
}

/// Twin of every repacked Q4_0 kernel: each row's blocks in the order and arithmetic of
/// [`BlockQ4_0::vec_dot`], read from the interleaved groups.
unsafe fn scalar_rows(job: &Job<'_>, rows: Range<usize>) {
    let (m, nb) = (job.out.m, job.k / 32);
    let full = m / R * R;
    let (groups, tail) = job.w.split_at(full * nb * 18);
    let groups: &[BlockQ4_0x8] = bytemuck::cast_slice(groups);
    let tail: &[BlockQ4_0] = bytemuck::cast_slice(tail);
    for j in rows {
        for i in 0..job.n {
            let xr: &[BlockQ8_0] = bytemuck::cast_slice(&job.x[i * job.x_stride..][..nb * 34]);
            let v = if j < full {
                let (g, r) = (&groups[j / R * nb..][..nb], j % R);
                block_lanes(nb, |b| {
                    let (a, c) = (&g[b], &xr[b]);
                    let mut isum = 0i32;
                    for cc in 0..4 {
                        for e in 0..4 {
                            let q = a.qs[32 * cc + 4 * r + e];
                            let k = 4 * cc + e;
                            isum += ((q & 0x0F) as i32 - 8) * c.qs[k] as i32
                                + ((q >> 4) as i32 - 8) * c.qs[k + 16] as i32;
                        }
                    }
                    (a.d[r].to_f32() * c.d.to_f32(), isum)
                })
            } else {
                BlockQ4_0::vec_dot(&tail[(j - full) * nb..][..nb], xr)
            };
            job.out.put(i, j, with_bias(v, job.bias, j));
        }
    }
}
