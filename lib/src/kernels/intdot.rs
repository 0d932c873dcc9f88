//! Integer decode kernels of the [`LaneDot`] block types — Q4_K, Q5_K, Q6_K against Q8_K; Q4_1,
//! Q5_0, Q5_1 against Q8_0 — written once for every SIMD path.
//!
//! An ISA supplies only [`ByteOps`]: a few operations on 32 byte lanes and an exact
//! "levels × activations, times sub-block scales" accumulator whose i32 lane `l` holds bytes
//! `4l..4l+4`. Each type's unpacking of its bits into levels ([`LaneKernel::lanes_simd`]) is
//! written here once, next to its scalar meaning ([`LaneDot::lanes`] in the type's `quant/`
//! file). The f32 part — [`LaneTile`]: per (weight row, activation row) two f32 lane accumulators
//! kept in registers across the row, reduced once at its end — is the arithmetic of
//! [`crate::quant::lane_vec_dot`] in its order, so every path agrees with it bit for bit.

use std::marker::PhantomData;
use std::ptr::addr_of;

use super::traverse::Dots;
use super::types::Job;
use crate::quant::q4_1::BlockQ4_1;
use crate::quant::q4_k::BlockQ4_K;
use crate::quant::q5_0::BlockQ5_0;
use crate::quant::q5_1::BlockQ5_1;
use crate::quant::q5_k::BlockQ5_K;
use crate::quant::q6_k::BlockQ6_K;
use crate::quant::q8_k::BlockQ8_K;
use crate::quant::{BlockQ8_0, LaneDot};

/// One ISA's operations on 32 byte lanes (`V`) and an exact i32 accumulator (`Acc`). Every method
/// is `unsafe` (the CPU must run the ISA) and meant to inline into its ISA's entry point.
pub(crate) trait ByteOps {
    /// The prefetcher of a weight stream (x86: requests the lines ahead; ARM: [`NoAhead`]).
    type Ahead: StreamAhead;
    /// 32 bytes.
    type V: Copy;
    /// Integer accumulator of eight i32 lanes; lane `l` holds the products of bytes `4l..4l+4`
    /// (the lanes of [`crate::quant::LaneDot`]).
    type Acc: Copy;
    /// 32 bytes at `p` (any alignment).
    unsafe fn load(p: *const u8) -> Self::V;
    /// `[p[i] & 15 for i < 16] ++ [p[i] >> 4 for i < 16]`.
    unsafe fn nibbles16(p: *const u8) -> Self::V;
    /// Byte `i` = `set` if bit `i` of `bits` is set, else 0.
    unsafe fn bits32(bits: u32, set: u8) -> Self::V;
    /// Byte `i` = `set` if `a[i] & m != 0`, else 0.
    unsafe fn test(a: Self::V, m: u8, set: u8) -> Self::V;
    /// `a[i] & m`.
    unsafe fn and(a: Self::V, m: u8) -> Self::V;
    /// `a[i] | b[i]`.
    unsafe fn or(a: Self::V, b: Self::V) -> Self::V;
    /// `a[i] >> N` (logical, per byte).
    unsafe fn shr<const N: i32>(a: Self::V) -> Self::V;
    /// `a[i] << N` (per byte).
    unsafe fn shl<const N: i32>(a: Self::V) -> Self::V;
    /// `v` in every byte.
    unsafe fn splat(v: u8) -> Self::V;
    /// An accumulator of 0.
    unsafe fn zero() -> Self::Acc;
    /// Sub-block scales for [`ByteOps::dot`]: `lo` for bytes `0..16`, `hi` for `16..32`.
    type Sc: Copy;
    /// The scales `(lo, hi)`.
    unsafe fn scale(lo: i16, hi: i16) -> Self::Sc;
    /// `[scale(sc[c], sc[c]) for c < 8]` (Q4_K/Q5_K: one scale per 32 values).
    #[inline(always)]
    unsafe fn scales8(sc: [u8; 8]) -> [Self::Sc; 8] {
        std::array::from_fn(|c| Self::scale(sc[c] as i16, sc[c] as i16))
    }
    /// `[scale(sc[2k], sc[2k + 1]) for k < 8]` over 16 scales at `sc` (Q6_K: one per 16 values).
    #[inline(always)]
    unsafe fn scales16(sc: *const i8) -> [Self::Sc; 8] {
        std::array::from_fn(|k| Self::scale(*sc.add(2 * k) as i16, *sc.add(2 * k + 1) as i16))
    }
    /// `acc + lo·Σ_{i<16} q[i]·x[i] + hi·Σ_{16≤i<32} q[i]·x[i]` (lane by lane), exactly, for
    /// levels `0 ≤ q[i] ≤ 63`, activations `|x[i]| ≤ 127` and `|lo|, |hi| ≤ 127`.
    unsafe fn dot(acc: Self::Acc, q: Self::V, x: *const i8, s: Self::Sc) -> Self::Acc;
    /// Lane `l` = `(bsums[2l] + bsums[2l+1])·m[l]` over 16 sums (the Q4_K/Q5_K minimum term).
    unsafe fn mins_lanes(bsums: *const i16, m: [u8; 8]) -> Self::Acc;
    /// `acc − 32·o` with lane `l` of `o` = `bsums[2l]·sc[2l] + bsums[2l+1]·sc[2l+1]` (the Q6_K
    /// offset term).
    unsafe fn sub_offset_lanes(acc: Self::Acc, bsums: *const i16, sc: *const i8) -> Self::Acc;
    /// Eight f32 lanes.
    type F: Copy;
    /// Eight f32 zeros.
    unsafe fn fzero() -> Self::F;
    /// `acc[l] + s·(f32)i[l]` per lane, rounded after the product and after the sum (no FMA).
    unsafe fn fadd_scaled(acc: Self::F, i: Self::Acc, s: f32) -> Self::F;
    /// The lanes reduced in [`crate::quant::lanes8`]'s order.
    unsafe fn fsum(a: Self::F) -> f32;
    /// The two f16 values of `bits` (low half first) as f32, exactly.
    #[inline(always)]
    unsafe fn f16_pair(bits: u32) -> (f32, f32) {
        let f = |b: u32| crate::quant::f16_as_f32(half::f16::from_bits(b as u16));
        (f(bits), f(bits >> 16))
    }
}

/// The quantized bytes of activation block `x`.
macro_rules! qs {
    ($x:expr) => {
        addr_of!((*$x).qs) as *const i8
    };
}

/// The 16 sums of 16 activations of a Q8_K block.
macro_rules! bsums {
    ($x:expr) => {
        addr_of!((*$x).bsums) as *const i16
    };
}

/// The activation block of a [`LaneKernel`] type (Q8_K, Q8_0): its scale as the scalar
/// reference's [`LaneDot::scales`] reads it. (Its quantized bytes are its field `qs`.)
pub(crate) trait LaneAct {
    /// The scale `d` of the block at `x` as f32, exactly (Q8_K: its f32 `d`; Q8_0: its f16 `d`
    /// converted).
    ///
    /// # Safety
    /// The CPU runs `S`'s ISA; the block exists.
    unsafe fn scale<S: ByteOps>(x: *const Self) -> f32;
}

impl LaneAct for BlockQ8_K {
    #[inline(always)]
    unsafe fn scale<S: ByteOps>(x: *const Self) -> f32 {
        (*x).d
    }
}

impl LaneAct for BlockQ8_0 {
    #[inline(always)]
    unsafe fn scale<S: ByteOps>(x: *const Self) -> f32 {
        S::f16_pair((*x).d.to_bits() as u32).0
    }
}

/// A [`LaneDot`] block type's integer lanes with [`ByteOps`], for `NX` activation blocks at once
/// (the weight block is unpacked once).
pub(crate) trait LaneKernel: LaneDot<VecDot: LaneAct> {
    /// Byte offset of the f16 `d` in the block (the f16 minimum follows it when
    /// [`LaneDot::HAS_MIN`]).
    const D_AT: usize;
    /// The `(scale, minimum)` lane accumulators of [`LaneDot::lanes`] (the minimum one is unused
    /// without [`LaneDot::HAS_MIN`]).
    ///
    /// # Safety
    /// The CPU runs `S`'s ISA; the blocks exist.
    unsafe fn lanes_simd<S: ByteOps, const NX: usize>(
        w: *const Self,
        x: [*const Self::VecDot; NX],
    ) -> [(S::Acc, S::Acc); NX];
}

/// Scalar twin: [`LaneDot::lanes`] of [`BlockQ4_K`] (and of [`BlockQ5_K`] with `qh`).
#[inline(always)]
unsafe fn k4_lanes<S: ByteOps, const NX: usize>(
    qs: *const u8,
    qh: Option<*const u8>,
    (sc, m): ([u8; 8], [u8; 8]),
    x: [*const BlockQ8_K; NX],
) -> [(S::Acc, S::Acc); NX] {
    let qh = qh.map(|p| S::load(p));
    let scv = S::scales8(sc);
    let mut acc = [S::zero(); NX];
    for g in 0..4 {
        let q = S::load(qs.add(32 * g));
        let (mut lo, mut hi) = (S::and(q, 0x0F), S::shr::<4>(q));
        if let Some(h) = qh {
            lo = S::or(lo, S::test(h, 1 << (2 * g), 0x10));
            hi = S::or(hi, S::test(h, 2 << (2 * g), 0x10));
        }
        let (s0, s1) = (scv[2 * g], scv[2 * g + 1]);
        for (a, &xt) in acc.iter_mut().zip(&x) {
            *a = S::dot(*a, lo, qs!(xt).add(64 * g), s0);
            *a = S::dot(*a, hi, qs!(xt).add(64 * g + 32), s1);
        }
    }
    std::array::from_fn(|t| (acc[t], S::mins_lanes(bsums!(x[t]), m)))
}

impl LaneKernel for BlockQ4_K {
    const D_AT: usize = 0;
    #[inline(always)]
    unsafe fn lanes_simd<S: ByteOps, const NX: usize>(
        w: *const Self,
        x: [*const BlockQ8_K; NX],
    ) -> [(S::Acc, S::Acc); NX] {
        k4_lanes::<S, NX>(addr_of!((*w).qs).cast(), None, (*w).scales_mins(), x)
    }
}

impl LaneKernel for BlockQ5_K {
    const D_AT: usize = 0;
    #[inline(always)]
    unsafe fn lanes_simd<S: ByteOps, const NX: usize>(
        w: *const Self,
        x: [*const BlockQ8_K; NX],
    ) -> [(S::Acc, S::Acc); NX] {
        let qh = addr_of!((*w).qh).cast::<u8>();
        k4_lanes::<S, NX>(addr_of!((*w).qs).cast(), Some(qh), (*w).scales_mins(), x)
    }
}

/// Scalar twin: [`LaneDot::lanes`] of [`BlockQ6_K`]: unsigned levels `u` (0..63) with their
/// sub-block-of-16 scales, minus `32·Σ_j sc_j·bsums_j`.
impl LaneKernel for BlockQ6_K {
    const D_AT: usize = std::mem::offset_of!(BlockQ6_K, d);
    #[inline(always)]
    unsafe fn lanes_simd<S: ByteOps, const NX: usize>(
        w: *const Self,
        x: [*const BlockQ8_K; NX],
    ) -> [(S::Acc, S::Acc); NX] {
        let sc = &(*w).scales;
        let scv = S::scales16(sc.as_ptr());
        let mut acc = [S::zero(); NX];
        for h in 0..2 {
            let ql = addr_of!((*w).ql).cast::<u8>().add(64 * h);
            let (ql0, ql1) = (S::load(ql), S::load(ql.add(32)));
            let qh = S::load(addr_of!((*w).qh).cast::<u8>().add(32 * h));
            let q = [
                S::or(S::and(ql0, 0x0F), S::and(S::shl::<4>(qh), 0x30)),
                S::or(S::and(ql1, 0x0F), S::and(S::shl::<2>(qh), 0x30)),
                S::or(S::shr::<4>(ql0), S::and(qh, 0x30)),
                S::or(S::shr::<4>(ql1), S::and(S::shr::<2>(qh), 0x30)),
            ];
            for (k, &qk) in q.iter().enumerate() {
                let s = scv[4 * h + k];
                for (a, &xt) in acc.iter_mut().zip(&x) {
                    *a = S::dot(*a, qk, qs!(xt).add(128 * h + 32 * k), s);
                }
            }
        }
        std::array::from_fn(|t| {
            let off = S::sub_offset_lanes(acc[t], bsums!(x[t]), sc.as_ptr());
            (off, S::zero())
        })
    }
}

/// A cursor that keeps a weight stream's cache lines requested ahead of a kernel's reads.
pub(crate) trait StreamAhead {
    /// A cursor for a stream starting at `start`.
    fn new(start: *const u8) -> Self;
    /// The kernel is about to read up to `p`.
    ///
    /// # Safety
    /// The CPU runs the ISA of the cursor's kernel.
    unsafe fn at(&mut self, p: *const u8);
}

/// No prefetching.
#[allow(dead_code)] // not on every architecture
pub(crate) struct NoAhead;

impl StreamAhead for NoAhead {
    #[inline(always)]
    fn new(_: *const u8) -> Self {
        NoAhead
    }
    #[inline(always)]
    unsafe fn at(&mut self, _: *const u8) {}
}

/// The decode tile of a [`LaneKernel`] type on the ISA of `S`: per (row, activation) pair two
/// f32 lane accumulators kept in registers across the row, reduced once at its end.
pub(crate) struct LaneTile<B, S> {
    w: *const B,
    nb: usize,
    x: *const u8,
    x_stride: usize,
    isa: PhantomData<S>,
}

impl<B, S> Clone for LaneTile<B, S> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B, S> Copy for LaneTile<B, S> {}

impl<B: LaneDot, S> LaneTile<B, S> {
    /// The tile over a decode job with weight blocks `B` and activation rows of `B::VecDot`
    /// blocks.
    pub fn new(job: &Job<'_>) -> Self {
        LaneTile {
            w: job.w.as_ptr() as *const B,
            nb: job.k / B::BLOCK,
            x: job.x.as_ptr(),
            x_stride: job.x_stride,
            isa: PhantomData,
        }
    }
}

impl<B: LaneKernel, S: ByteOps> Dots for LaneTile<B, S> {
    /// `RW × NX` dot products, bit-exact with [`crate::quant::lane_vec_dot`] (all `RW` rows
    /// stored alike: in one group, or all in place).
    #[inline(always)]
    unsafe fn dots<const RW: usize, const NX: usize>(
        self,
        js: [usize; 4],
        i: usize,
    ) -> [[f32; NX]; RW]
    where
        B: LaneKernel,
        S: ByteOps,
    {
        let w: [*const B; RW] = std::array::from_fn(|r| self.w.add(js[r] * self.nb));
        let x: [*const B::VecDot; NX] =
            std::array::from_fn(|t| self.x.add((i + t) * self.x_stride) as *const B::VecDot);
        let mut acc = [[S::fzero(); NX]; RW];
        let mut accm = [[S::fzero(); NX]; RW];
        // One prefetch stream per row.
        let mut ahead: [S::Ahead; RW] = std::array::from_fn(|r| S::Ahead::new(w[r] as *const u8));
        for b in 0..self.nb {
            let xb = x.map(|p| p.add(b));
            let xd: [f32; NX] = std::array::from_fn(|t| <B::VecDot as LaneAct>::scale::<S>(xb[t]));
            for r in 0..RW {
                let wb = w[r].add(b);
                ahead[r].at(wb.add(1) as *const u8);
                let lanes = B::lanes_simd::<S, NX>(wb, xb);
                // LaneDot::scales: the f16 scales as f32 (exact), times each activation scale.
                let at = (wb as *const u8).add(B::D_AT);
                let bits = if B::HAS_MIN {
                    (at as *const u32).read_unaligned()
                } else {
                    (at as *const u16).read_unaligned() as u32
                };
                let (dw, dmw) = S::f16_pair(bits);
                for t in 0..NX {
                    let (d, dm) = (dw * xd[t], dmw * xd[t]);
                    acc[r][t] = S::fadd_scaled(acc[r][t], lanes[t].0, d);
                    if B::HAS_MIN {
                        accm[r][t] = S::fadd_scaled(accm[r][t], lanes[t].1, dm);
                    }
                }
            }
        }
        std::array::from_fn(|r| {
            std::array::from_fn(|t| {
                if B::HAS_MIN {
                    S::fsum(acc[r][t]) - S::fsum(accm[r][t])
                } else {
                    S::fsum(acc[r][t])
                }
            })
        })
    }
}

/// The 32 levels (0..15 or 0..31) of a Q4_1/Q5_0/Q5_1 block in value order: nibbles, and the
/// fifth bits of `qh`.
#[inline(always)]
unsafe fn levels32<S: ByteOps>(qs: *const u8, qh: Option<*const [u8; 4]>) -> S::V {
    let v = S::nibbles16(qs);
    match qh {
        Some(h) => S::or(v, S::bits32(u32::from_le_bytes(*h), 0x10)),
        None => v,
    }
}

/// Scalar twin: [`LaneDot::lanes`] of [`BlockQ4_1`] and [`BlockQ5_1`] (levels `q`): the lanes of
/// `Σ q·x` and of `−Σ x`.
#[inline(always)]
unsafe fn min_lanes32<S: ByteOps, const NX: usize>(
    q: S::V,
    x: [*const BlockQ8_0; NX],
) -> [(S::Acc, S::Acc); NX] {
    std::array::from_fn(|t| {
        let (xq, z) = (qs!(x[t]), S::zero());
        let i = S::dot(z, q, xq, S::scale(1, 1));
        (i, S::dot(z, S::splat(1), xq, S::scale(-1, -1)))
    })
}

impl LaneKernel for BlockQ4_1 {
    const D_AT: usize = std::mem::offset_of!(BlockQ4_1, d);
    #[inline(always)]
    unsafe fn lanes_simd<S: ByteOps, const NX: usize>(
        w: *const Self,
        x: [*const BlockQ8_0; NX],
    ) -> [(S::Acc, S::Acc); NX] {
        min_lanes32::<S, NX>(levels32::<S>(addr_of!((*w).qs).cast(), None), x)
    }
}

impl LaneKernel for BlockQ5_1 {
    const D_AT: usize = std::mem::offset_of!(BlockQ5_1, d);
    #[inline(always)]
    unsafe fn lanes_simd<S: ByteOps, const NX: usize>(
        w: *const Self,
        x: [*const BlockQ8_0; NX],
    ) -> [(S::Acc, S::Acc); NX] {
        let q = levels32::<S>(addr_of!((*w).qs).cast(), Some(addr_of!((*w).qh)));
        min_lanes32::<S, NX>(q, x)
    }
}

/// Scalar twin: [`LaneDot::lanes`] of [`BlockQ5_0`]: `Σ q·x − 16·Σ x` with unsigned levels.
impl LaneKernel for BlockQ5_0 {
    const D_AT: usize = std::mem::offset_of!(BlockQ5_0, d);
    #[inline(always)]
    unsafe fn lanes_simd<S: ByteOps, const NX: usize>(
        w: *const Self,
        x: [*const BlockQ8_0; NX],
    ) -> [(S::Acc, S::Acc); NX] {
        let q = levels32::<S>(addr_of!((*w).qs).cast(), Some(addr_of!((*w).qh)));
        std::array::from_fn(|t| {
            let xq = qs!(x[t]);
            let i = S::dot(S::zero(), q, xq, S::scale(1, 1));
            (S::dot(i, S::splat(1), xq, S::scale(-16, -16)), S::zero())
        })
    }
}
