//! The decode tile traversal, written once for every ISA and weight type: how a task's weight
//! rows and the activation rows are cut into tiles of `rw` weight rows × `nx` activation rows.
//! An ISA supplies only the tile ([`Tile`]: `rw × nx` dot products in registers); this module
//! decides which rows go together and writes `y[i, j] (+ bias[j])`.
//!
//! ```text
//! rows (one task's weight rows)  ── blocks of 32 rows when n > MAX_NX (kept in L1/L2 while every
//!                                   activation group passes), else one block
//!   block ── activation rows in groups of nx = min(n − i, MAX_NX)
//!     group ── `rw = width(nx)` weight rows side by side, from `rw` equal contiguous parts of
//!              the block (each part one long sequential stream), then the leftover rows 1 × nx
//! ```
//!
//! `traverse` is `#[inline(always)]` and has no target features: it is compiled into the calling
//! ISA entry point (which has them), so the tile kernels inline into loops of their own ISA.

use std::ops::Range;

use std::marker::PhantomData;

use super::types::Job;
use super::{with_bias, Out, Q8Row, SplitActs};

/// One ISA's kernel for one weight type: dot products of a few weight rows with a few
/// activation rows at once.
pub(crate) trait Tile: Copy {
    /// Most activation rows in one tile (1..=4).
    const MAX_NX: usize;

    /// Weight rows side by side when `nx` activation rows go together (1..=4).
    fn width(nx: usize) -> usize;

    /// `v[r][t] = W[js[r]] · x[i + t]` for `r < rw`, `t < nx`, where `rw` is [`Tile::width`]`(nx)`
    /// or 1; other entries are unspecified.
    ///
    /// # Safety
    /// The CPU runs the tile's ISA; the rows exist.
    unsafe fn tile(self, rw: usize, nx: usize, js: [usize; 4], i: usize) -> [[f32; 4]; 4];
}

/// The kernel of a 4-wide integer tile (`width(nx) = 4 / nx`): `v[r][t] = W[js[r]] · x[i + t]`
/// for `r < RW`, `t < NX`.
pub(crate) trait Dots: Copy {
    /// The `RW × NX` dot products.
    ///
    /// # Safety
    /// As [`Tile::tile`].
    unsafe fn dots<const RW: usize, const NX: usize>(
        self,
        js: [usize; 4],
        i: usize,
    ) -> [[f32; NX]; RW];
}

/// Every 4-wide integer tile: 4 rows × 1, 2 × 2, or one row against 1–4 activation rows,
/// through [`Dots::dots`].
impl<T: Dots> Tile for T {
    const MAX_NX: usize = 4;
    fn width(nx: usize) -> usize {
        4 / nx
    }
    #[inline(always)]
    unsafe fn tile(self, rw: usize, nx: usize, js: [usize; 4], i: usize) -> [[f32; 4]; 4] {
        match (rw, nx) {
            (4, _) => pad(self.dots::<4, 1>(js, i)),
            (2, _) => pad(self.dots::<2, 2>(js, i)),
            (_, 1) => pad(self.dots::<1, 1>(js, i)),
            (_, 2) => pad(self.dots::<1, 2>(js, i)),
            (_, 3) => pad(self.dots::<1, 3>(js, i)),
            _ => pad(self.dots::<1, 4>(js, i)),
        }
    }
}

/// `y[i, j] (+ bias[j])` for every activation row `i < n` and weight row `j ∈ rows`, tile by tile.
///
/// # Safety
/// As [`Tile::tile`]; the caller owns columns `rows` of `out` (`n × m`).
#[inline(always)]
pub(crate) unsafe fn traverse<T: Tile>(
    t: T,
    n: usize,
    rows: Range<usize>,
    out: Out,
    bias: Option<&[f32]>,
) {
    let rb = if n > T::MAX_NX { 32 } else { rows.len().max(1) };
    let mut jb = rows.start;
    while jb < rows.end {
        let blk = jb..(jb + rb).min(rows.end);
        jb = blk.end;
        let mut i = 0;
        while i < n {
            let nx = (n - i).min(T::MAX_NX);
            let rw = T::width(nx);
            let part = blk.len() / rw;
            let put = |js: [usize; 4], rw: usize, v: [[f32; 4]; 4]| {
                for (&j, row) in js.iter().zip(&v).take(rw) {
                    for (dt, val) in row.iter().enumerate().take(nx) {
                        out.put(i + dt, j, with_bias(*val, bias, j));
                    }
                }
            };
            for p in 0..part {
                let js = std::array::from_fn(|r| blk.start + r.min(rw - 1) * part + p);
                put(js, rw, t.tile(rw, nx, js, i));
            }
            for j in blk.start + rw * part..blk.end {
                put([j; 4], 1, t.tile(1, nx, [j; 4], i));
            }
            i += nx;
        }
    }
}

/// An `RW × NX` tile result in the `4 × 4` shape [`Tile::tile`] returns.
#[inline(always)]
pub(crate) fn pad<const RW: usize, const NX: usize>(v: [[f32; NX]; RW]) -> [[f32; 4]; 4] {
    let mut o = [[0f32; 4]; 4];
    for (orow, vrow) in o.iter_mut().zip(&v) {
        orow[..NX].copy_from_slice(vrow);
    }
    o
}

// ---------------------------------------------------------------------------------------------
// The two tiles every SIMD path uses; an ISA supplies their register kernels.

/// An ISA's float tile kernel: `R × NX` dot products of weight rows `w[r]` (elements `T`) with
/// f32 activation rows `x[t]`, `k` values each.
pub(crate) trait FloatDot<T> {
    /// # Safety
    /// The CPU runs the ISA; `k` values readable at every pointer.
    unsafe fn dot<const R: usize, const NX: usize>(
        w: [*const T; R],
        x: [*const f32; NX],
        k: usize,
    ) -> [[f32; NX]; R];
}

/// The float decode tile: four weight rows (or one) against up to two activation rows (eight
/// accumulators: more would spill).
pub(crate) struct FloatTile<T, D> {
    w: *const T,
    k: usize,
    x: *const f32,
    isa: PhantomData<D>,
}

impl<T, D> Clone for FloatTile<T, D> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T, D> Copy for FloatTile<T, D> {}

impl<T, D> FloatTile<T, D> {
    /// The tile over a decode job with weight elements `T` and f32 activations.
    pub fn new(job: &Job<'_>) -> Self {
        FloatTile {
            w: job.w.as_ptr() as *const T,
            k: job.k,
            x: job.x.as_ptr() as *const f32,
            isa: PhantomData,
        }
    }
}

impl<T, D: FloatDot<T>> Tile for FloatTile<T, D> {
    const MAX_NX: usize = 2;
    fn width(_: usize) -> usize {
        4
    }
    #[inline(always)]
    unsafe fn tile(self, rw: usize, nx: usize, js: [usize; 4], i: usize) -> [[f32; 4]; 4] {
        let k = self.k;
        macro_rules! go {
            ($rw:literal, $nx:literal) => {{
                let ws: [*const T; $rw] = std::array::from_fn(|r| self.w.add(js[r] * k));
                let xs: [*const f32; $nx] = std::array::from_fn(|t| self.x.add((i + t) * k));
                pad(D::dot::<$rw, $nx>(ws, xs, k))
            }};
        }
        match (rw, nx) {
            (4, 1) => go!(4, 1),
            (4, _) => go!(4, 2),
            (_, 1) => go!(1, 1),
            _ => go!(1, 2),
        }
    }
}

/// An ISA's integer tile kernel for 32-value weight blocks `B`: `RW × NX` dot products of weight
/// rows `w[r]` (`nb` blocks) with split-layout activation rows, bit-exact with the type's
/// [`crate::quant::QuantBlock::vec_dot`].
pub(crate) trait QuantDot<B> {
    /// # Safety
    /// The CPU runs the ISA; `nb` blocks at every pointer.
    unsafe fn dot<const RW: usize, const NX: usize>(
        w: [*const B; RW],
        nb: usize,
        x: [Q8Row; NX],
    ) -> [[f32; NX]; RW];
}

/// The integer decode tile: up to four activation rows and `4 / nx` weight rows at a time.
pub(crate) struct QuantTile<B, D> {
    w: *const B,
    nb: usize,
    act: SplitActs,
    isa: PhantomData<D>,
}

impl<B, D> Clone for QuantTile<B, D> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B, D> Copy for QuantTile<B, D> {}

impl<B, D> QuantTile<B, D> {
    /// The tile over a decode job with 32-value weight blocks `B` and split-layout activations.
    pub fn new(job: &Job<'_>) -> Self {
        let nb = job.k / 32;
        QuantTile {
            w: job.w.as_ptr() as *const B,
            nb,
            act: SplitActs::new(job.x, job.x_stride, nb),
            isa: PhantomData,
        }
    }
}

impl<B, D: QuantDot<B>> Dots for QuantTile<B, D> {
    #[inline(always)]
    unsafe fn dots<const RW: usize, const NX: usize>(
        self,
        js: [usize; 4],
        i: usize,
    ) -> [[f32; NX]; RW] {
        let ws: [*const B; RW] = std::array::from_fn(|r| self.w.add(js[r] * self.nb));
        D::dot::<RW, NX>(ws, self.nb, self.act.rows::<NX>(i))
    }
}
