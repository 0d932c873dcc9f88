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
//! Each row's result is computed exactly as [`QuantBlock::vec_dot`] does (exact integer block
//! sums, then the "eight block lanes" f32 order of [`crate::quant::block_lanes`]), so every
//! path's repacked kernel agrees bit for bit with the in-place kernels; only the memory layout
//! differs. The portable decoder here ([`scalar_decoder`]) is the meaning of the SIMD ones.

use std::ops::Range;

use half::f16;
use rayon::prelude::*;

use super::types::{plain_act, Decoder, Job};
use super::{with_bias, Q8Row};
use crate::quant::{block_lanes, f16_as_f32, BlockQ4_0, BlockQ8_0, QuantBlock};
use crate::GgmlType;

/// Rows per interleaved group.
pub const R: usize = 8;

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

/// A weight matrix in a repacked layout: full groups of [`R`] rows, then the leftover rows in
/// the type's plain layout, in one buffer of anonymous memory.
pub struct Repacked {
    /// The weight type (its layout: [`BlockQ4_0x8`] for Q4_0).
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
    /// The repacked bytes (the same number as the in-place matrix's).
    pub fn data(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.buf)[..self.len]
    }
}

/// Whether matrices of type `ty` have a repacked layout.
pub fn supports(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_0)
}

/// Repack `m` rows of `k` values of type `ty` stored in place in `data` (rows in parallel), or
/// `None` if the type has no repacked layout or the matrix has fewer than [`R`] rows.
pub fn repack(ty: GgmlType, data: &[u8], m: usize, k: usize) -> Option<Repacked> {
    if !supports(ty) || m < R || k % 32 != 0 || data.len() != m * (k / 32) * 18 {
        return None;
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

/// Row `j`'s blocks in the plain layout, from a repacked matrix of `m` rows of `nb` blocks:
/// `f(b, block)` for every block `b` in order.
pub(crate) fn for_each_block(
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

/// The portable decode kernel of a repacked matrix of type `ty` (plain Q8_0 activations).
pub(crate) fn scalar_decoder(ty: GgmlType) -> Option<Decoder> {
    match ty {
        GgmlType::Q4_0 => Some(Decoder {
            act: Some(plain_act::<BlockQ8_0>()),
            rows: scalar_rows,
        }),
        _ => None,
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
