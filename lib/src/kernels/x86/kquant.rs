//! Dedicated in-place decode tiles of Q4_K ([`super::Avx512`]) and Q6_K (both x86 paths)
//! against Q8_K activations: the same integers and f32 steps as the shared lane kernels of
//! `kernels::intdot` (twin: [`crate::quant::lane_vec_dot`], bit for bit), with less work per
//! block and every accumulator of the tile's rows in registers.
//!
//! Q4_K, per (weight row, block): the 12 packed scale bytes decoded once, ahead of the dot
//! products of a chunk of blocks, into `[sc0..sc8, m0..m8]` and the eight i16 pairs
//! `(sc_j, sc_j)` stored in a small table; the minimum term one `vpmaddwd` of the activation
//! block's 16 sums with `[m0, m0, m1, m1, …]`; the levels `q` (0..15) times the activations `x`
//! with `vpmaddubsw` (exact i16 pairs: |2·15·127| < 2¹⁵), then one `vpdpwssd` per 32 values
//! with the sub-block's pair broadcast from the table (a load, no shuffle).
//!
//! Q6_K, per (weight row, block): the six-bit levels `u` (0..63) assembled from `ql`/`qh`,
//! `vpmaddubsw` with the activations (|2·63·127| < 2¹⁵), then `vpmaddwd` + `vpaddd`
//! ([`super::Avx2`]) or `vpdpwssd` ([`super::Avx512`]) with the two scales of each 32 values;
//! `− 32·Σ_j sc_j·bsums_j` from the activation sums.
//!
//! Lane `l` of every i32 accumulator holds the products of the values `p` with
//! `(p % 32) / 4 == l`, the lanes of [`crate::quant::LaneDot::lanes`]. The f32 part is
//! [`crate::quant::lane_vec_dot`]'s: per lane `acc += (d·dx)·(f32)i` (no FMA), the minimum
//! likewise, reduced in [`crate::quant::lanes8`]'s order at the row's end.

use std::arch::x86_64::*;
use std::ptr::addr_of;

use super::super::traverse::{pad, Tile};
use super::super::types::Job;
use crate::quant::q4_k::BlockQ4_K;
use crate::quant::q6_k::BlockQ6_K;
use crate::quant::q8_k::BlockQ8_K;

/// One (row, block)'s decoded scales: the `vpmaddwd` pairs ([`scale_pairs`]) and
/// `[sc0..sc8, m0..m8]` ([`scales_mins`]).
#[derive(Clone, Copy, Default)]
#[repr(C, align(32))]
struct Pre {
    tab: [u32; 8],
    scm: [u8; 16],
}

/// The Q4_K decode tile of [`super::Avx512`].
pub(super) struct Q4kTile {
    w: *const BlockQ4_K,
    nb: usize,
    x: *const u8,
    x_stride: usize,
}

impl Clone for Q4kTile {
    fn clone(&self) -> Self {
        *self
    }
}
impl Copy for Q4kTile {}

impl Q4kTile {
    /// The tile over an in-place Q4_K decode job (activation rows of Q8_K blocks).
    pub fn new(job: &Job<'_>) -> Self {
        Q4kTile {
            w: job.w.as_ptr() as *const BlockQ4_K,
            nb: job.k / 256,
            x: job.x.as_ptr(),
            x_stride: job.x_stride,
        }
    }
}

/// `[sc0..sc8, m0..m8]` of a Q4_K block (ggml's `get_scale_min_k4`, scalar bit operations on
/// the general-purpose registers).
#[inline(always)]
unsafe fn scales_mins(w: *const BlockQ4_K) -> __m128i {
    let (sc, m) = (*w).scales_mins();
    _mm_set_epi64x(i64::from_le_bytes(m), i64::from_le_bytes(sc))
}

/// The f32 `(d, dmin)` of block `w` (exact f16 conversions).
#[inline(always)]
unsafe fn d_dmin(w: *const BlockQ4_K) -> __m128 {
    _mm_cvtph_ps(_mm_cvtsi32_si128((w as *const i32).read_unaligned()))
}

/// Lane `l` = `(bsums[2l] + bsums[2l+1])·m[l]`: the minimum term's lanes, from the 16 activation
/// sums `bs` and `scm`'s minimums.
#[inline(always)]
unsafe fn min_lanes(bs: __m256i, scm: __m128i) -> __m256i {
    _mm256_madd_epi16(bs, _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(scm, scm)))
}

/// The f32 steps of one block for one (row, activation) pair: `acc += (d·dx)·(f32)i`,
/// `accm += (dmin·dx)·(f32)m` lane by lane (products rounded, then the sums; no FMA).
#[inline(always)]
unsafe fn f32_step(
    acc: &mut __m256,
    accm: &mut __m256,
    dd: __m128,
    dx: f32,
    i: __m256i,
    m: __m256i,
) {
    let s = _mm_mul_ps(dd, _mm_set1_ps(dx));
    let d = _mm256_broadcastss_ps(s);
    let dm = _mm256_broadcastss_ps(_mm_movehdup_ps(s));
    *acc = _mm256_add_ps(*acc, _mm256_mul_ps(d, _mm256_cvtepi32_ps(i)));
    *accm = _mm256_add_ps(*accm, _mm256_mul_ps(dm, _mm256_cvtepi32_ps(m)));
}

/// The lanes reduced in [`crate::quant::lanes8`]'s order.
#[inline(always)]
unsafe fn fsum(a: __m256) -> f32 {
    let p = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
    let h = _mm_hadd_ps(p, p);
    _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)))
}

/// The eight sub-block scales `sc[j]` of `scm` as the i32 pairs `(sc[j], sc[j])` of i16 (the
/// `vpmaddwd` operand of sub-block `j`), stored in `tab`: each is then broadcast straight from
/// memory (a load, not a shuffle).
#[inline(always)]
unsafe fn scale_pairs(scm: __m128i, tab: &mut [u32; 8]) {
    let d = _mm256_cvtepu8_epi32(scm);
    let p = _mm256_or_si256(d, _mm256_slli_epi32::<16>(d));
    _mm256_storeu_si256(tab.as_mut_ptr() as *mut __m256i, p);
}

/// `acc + vpmaddwd(a, [*p; 8])` in one `vpdpwssd` with the pair broadcast from memory (inline
/// assembly: LLVM splits the intrinsic, see [`dpwssd`]). Exact under the callers' bounds.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
unsafe fn dpwssd_bcast(acc: __m256i, a: __m256i, p: *const u32) -> __m256i {
    let mut acc = acc;
    // SAFETY: AVX-512 VL/VNNI are enabled (the caller's contract); `p` points at 4 readable
    // bytes.
    std::arch::asm!(
        "vpdpwssd {acc:y}, {a:y}, dword ptr [{p}]{{1to8}}",
        acc = inout(zmm_reg) acc,
        a = in(zmm_reg) a,
        p = in(reg) p,
        options(pure, readonly, nostack, preserves_flags)
    );
    acc
}

/// The level lanes `Σ_j sc_j·Σ q·x` of block `w` against the activation bytes at `xq`, with the
/// scale pairs in `tab` ([`scale_pairs`]): `vpmaddubsw`, then `vpdpwssd` with the pair
/// broadcast from memory.
#[inline(always)]
unsafe fn levels(w: *const BlockQ4_K, tab: &[u32; 8], xq: *const i8) -> __m256i {
    let qs = addr_of!((*w).qs) as *const u8;
    let m4 = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_si256(); 2];
    for g in 0..4 {
        let q = _mm256_loadu_si256(qs.add(32 * g) as *const __m256i);
        let lo = _mm256_and_si256(q, m4);
        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
        let x0 = _mm256_loadu_si256(xq.add(64 * g) as *const __m256i);
        let x1 = _mm256_loadu_si256(xq.add(64 * g + 32) as *const __m256i);
        let (p0, p1) = (_mm256_maddubs_epi16(lo, x0), _mm256_maddubs_epi16(hi, x1));
        let (s0, s1) = (tab.as_ptr().add(2 * g), tab.as_ptr().add(2 * g + 1));
        acc[g % 2] = dpwssd_bcast(dpwssd_bcast(acc[g % 2], p0, s0), p1, s1);
    }
    _mm256_add_epi32(acc[0], acc[1])
}

impl Q4kTile {
    /// `RW × NX` dot products, bit-exact with [`crate::quant::lane_vec_dot`].
    // The block index `c` addresses the decoded scales of every row (inside the row macro).
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn dot<const RW: usize, const NX: usize>(
        self,
        js: [usize; 4],
        i: usize,
    ) -> [[f32; NX]; RW] {
        let w: [*const BlockQ4_K; RW] = std::array::from_fn(|r| self.w.add(js[r] * self.nb));
        let x: [*const BlockQ8_K; NX] =
            std::array::from_fn(|t| self.x.add((i + t) * self.x_stride) as *const BlockQ8_K);
        let mut acc = [[_mm256_setzero_ps(); NX]; RW];
        let mut accm = [[_mm256_setzero_ps(); NX]; RW];
        // Blocks in chunks of `CH`: first every (row, block)'s decoded scales, stored, then the
        // dot products reading them (far enough from the stores for the loads to find them in
        // the cache, not waiting on store forwarding).
        const CH: usize = 8;
        let mut pre = [[Pre::default(); CH]; RW];
        let mut b0 = 0;
        while b0 < self.nb {
            let ch = (self.nb - b0).min(CH);
            for (r, pr) in pre.iter_mut().enumerate() {
                for (c, p) in pr.iter_mut().enumerate().take(ch) {
                    let scm = scales_mins(w[r].add(b0 + c));
                    _mm_storeu_si128(p.scm.as_mut_ptr() as *mut __m128i, scm);
                    scale_pairs(scm, &mut p.tab);
                }
            }
            for c in 0..ch {
                let b = b0 + c;
                let xb = x.map(|p| p.add(b));
                let xq = xb.map(|p| addr_of!((*p).qs) as *const i8);
                let mut bs = [_mm256_setzero_si256(); NX];
                for t in 0..NX {
                    bs[t] = _mm256_loadu_si256(addr_of!((*xb[t]).bsums) as *const __m256i);
                }
                let dx = xb.map(|p| (*p).d);
                // One weight row (a macro, not a closure: closures do not inherit the ISA's
                // target features, so their intrinsics would not inline).
                macro_rules! row {
                    ($r:expr) => {{
                        let wb = w[$r].add(b);
                        let p = &pre[$r][c];
                        let scm = _mm_loadu_si128(p.scm.as_ptr() as *const __m128i);
                        let dd = d_dmin(wb);
                        for t in 0..NX {
                            let lv = levels(wb, &p.tab, xq[t]);
                            let mn = min_lanes(bs[t], scm);
                            f32_step(&mut acc[$r][t], &mut accm[$r][t], dd, dx[t], lv, mn);
                        }
                    }};
                }
                row!(0);
                if RW > 1 {
                    row!(1);
                }
                if RW > 2 {
                    row!(2);
                }
                if RW > 3 {
                    row!(3);
                }
            }
            b0 += ch;
        }
        let mut out = [[0f32; NX]; RW];
        for r in 0..RW {
            for t in 0..NX {
                out[r][t] = fsum(acc[r][t]) - fsum(accm[r][t]);
            }
        }
        out
    }
}

impl Tile for Q4kTile {
    const MAX_NX: usize = 4;
    fn width(nx: usize) -> usize {
        4 / nx
    }
    #[inline(always)]
    unsafe fn tile(self, rw: usize, nx: usize, js: [usize; 4], i: usize) -> [[f32; 4]; 4] {
        match (rw, nx) {
            (4, _) => pad(self.dot::<4, 1>(js, i)),
            (2, _) => pad(self.dot::<2, 2>(js, i)),
            (_, 1) => pad(self.dot::<1, 1>(js, i)),
            (_, 2) => pad(self.dot::<1, 2>(js, i)),
            (_, 3) => pad(self.dot::<1, 3>(js, i)),
            _ => pad(self.dot::<1, 4>(js, i)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Q6_K.

/// The Q6_K decode tile; `VNNI`: the [`super::Avx512`] form (else [`super::Avx2`]).
pub(super) struct Q6kTile<const VNNI: bool> {
    w: *const BlockQ6_K,
    nb: usize,
    x: *const u8,
    x_stride: usize,
}

impl<const VNNI: bool> Clone for Q6kTile<VNNI> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<const VNNI: bool> Copy for Q6kTile<VNNI> {}

impl<const VNNI: bool> Q6kTile<VNNI> {
    /// The tile over an in-place Q6_K decode job (activation rows of Q8_K blocks).
    pub fn new(job: &Job<'_>) -> Self {
        Q6kTile {
            w: job.w.as_ptr() as *const BlockQ6_K,
            nb: job.k / 256,
            x: job.x.as_ptr(),
            x_stride: job.x_stride,
        }
    }
}

/// `acc + vpmaddwd(a, b)`: one `vpdpwssd` (`VNNI`, inline assembly as [`dpwssd_bcast`]) or
/// `vpmaddwd` + `vpaddd`. Exact under the callers' bounds.
#[inline(always)]
unsafe fn madd_add<const VNNI: bool>(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    if VNNI {
        dpwssd_256(acc, a, b)
    } else {
        _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))
    }
}

/// `acc + vpmaddwd(a, b)` in one `vpdpwssd` (see [`dpwssd_bcast`]).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
unsafe fn dpwssd_256(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    let mut acc = acc;
    // SAFETY: AVX-512 VL/VNNI are enabled (the caller's contract); registers only.
    std::arch::asm!(
        "vpdpwssd {acc:y}, {a:y}, {b:y}",
        acc = inout(zmm_reg) acc,
        a = in(zmm_reg) a,
        b = in(zmm_reg) b,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}

/// The sixteen scales of a Q6_K block as eight `vpmaddwd` operands: operand `k` has `sc[2k]` in
/// its low eight words and `sc[2k + 1]` in its high eight (the two groups of 16 values of the
/// 32 bytes it multiplies).
#[inline(always)]
unsafe fn scales6(sc: *const i8) -> [__m256i; 8] {
    let w = _mm256_cvtepi8_epi16(_mm_loadu_si128(sc as *const __m128i));
    let halves = [
        _mm256_permute2x128_si256::<0x00>(w, w),
        _mm256_permute2x128_si256::<0x11>(w, w),
    ];
    let mut v = [_mm256_setzero_si256(); 8];
    for (k, v) in v.iter_mut().enumerate() {
        let j = (2 * k % 8) as i16;
        let lo = _mm_set1_epi16(((2 * j + 1) << 8) | (2 * j));
        let hi = _mm_set1_epi16(((2 * j + 3) << 8) | (2 * j + 2));
        *v = _mm256_shuffle_epi8(halves[k / 4], _mm256_set_m128i(hi, lo));
    }
    v
}

/// Scalar twin: [`crate::quant::LaneDot::lanes`] of [`BlockQ6_K`]: the lanes of
/// `Σ sc[p/16]·u[p]·x[p] − 32·Σ_j sc_j·bsums_j` with the unsigned levels `u` (0..63), for the
/// activation blocks `x` (scales `scv` from [`scales6`]).
#[inline(always)]
unsafe fn lanes6<const VNNI: bool, const NX: usize>(
    w: *const BlockQ6_K,
    scv: &[__m256i; 8],
    xq: [*const i8; NX],
    bs: [__m256i; NX],
) -> [__m256i; NX] {
    let ql = addr_of!((*w).ql) as *const u8;
    let qh = addr_of!((*w).qh) as *const u8;
    let (m4, m30) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x30));
    let mut acc = [[_mm256_setzero_si256(); 2]; NX];
    for h in 0..2 {
        let l0 = _mm256_loadu_si256(ql.add(64 * h) as *const __m256i);
        let l1 = _mm256_loadu_si256(ql.add(64 * h + 32) as *const __m256i);
        let hb = _mm256_loadu_si256(qh.add(32 * h) as *const __m256i);
        let q = [
            _mm256_or_si256(
                _mm256_and_si256(l0, m4),
                _mm256_and_si256(_mm256_slli_epi16::<4>(hb), m30),
            ),
            _mm256_or_si256(
                _mm256_and_si256(l1, m4),
                _mm256_and_si256(_mm256_slli_epi16::<2>(hb), m30),
            ),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(l0), m4),
                _mm256_and_si256(hb, m30),
            ),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(l1), m4),
                _mm256_and_si256(_mm256_srli_epi16::<2>(hb), m30),
            ),
        ];
        for t in 0..NX {
            for (k, &qk) in q.iter().enumerate() {
                let xv = _mm256_loadu_si256(xq[t].add(128 * h + 32 * k) as *const __m256i);
                let p = _mm256_maddubs_epi16(qk, xv);
                acc[t][k % 2] = madd_add::<VNNI>(acc[t][k % 2], p, scv[4 * h + k]);
            }
        }
    }
    let sc = _mm256_cvtepi8_epi16(_mm_loadu_si128(addr_of!((*w).scales) as *const __m128i));
    let mut out = [_mm256_setzero_si256(); NX];
    for t in 0..NX {
        let o = _mm256_madd_epi16(bs[t], sc);
        out[t] = _mm256_sub_epi32(
            _mm256_add_epi32(acc[t][0], acc[t][1]),
            _mm256_slli_epi32::<5>(o),
        );
    }
    out
}

impl<const VNNI: bool> Q6kTile<VNNI> {
    /// `RW × NX` dot products, bit-exact with [`crate::quant::lane_vec_dot`].
    #[inline(always)]
    unsafe fn dot<const RW: usize, const NX: usize>(
        self,
        js: [usize; 4],
        i: usize,
    ) -> [[f32; NX]; RW] {
        let w: [*const BlockQ6_K; RW] = std::array::from_fn(|r| self.w.add(js[r] * self.nb));
        let x: [*const BlockQ8_K; NX] =
            std::array::from_fn(|t| self.x.add((i + t) * self.x_stride) as *const BlockQ8_K);
        let mut acc = [[_mm256_setzero_ps(); NX]; RW];
        for b in 0..self.nb {
            let xb = x.map(|p| p.add(b));
            let xq = xb.map(|p| addr_of!((*p).qs) as *const i8);
            let mut bs = [_mm256_setzero_si256(); NX];
            for t in 0..NX {
                bs[t] = _mm256_loadu_si256(addr_of!((*xb[t]).bsums) as *const __m256i);
            }
            let dx = xb.map(|p| (*p).d);
            // One weight row (a macro: see [`Q4kTile::dot`]).
            macro_rules! row {
                ($r:expr) => {{
                    let wb = w[$r].add(b);
                    let scv = scales6(addr_of!((*wb).scales) as *const i8);
                    let lv = lanes6::<VNNI, NX>(wb, &scv, xq, bs);
                    let dw = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
                        (addr_of!((*wb).d) as *const u16).read_unaligned() as i32,
                    )));
                    for t in 0..NX {
                        let d = _mm256_set1_ps(dw * dx[t]);
                        acc[$r][t] =
                            _mm256_add_ps(acc[$r][t], _mm256_mul_ps(d, _mm256_cvtepi32_ps(lv[t])));
                    }
                }};
            }
            row!(0);
            if RW > 1 {
                row!(1);
            }
            if RW > 2 {
                row!(2);
            }
            if RW > 3 {
                row!(3);
            }
        }
        let mut out = [[0f32; NX]; RW];
        for r in 0..RW {
            for t in 0..NX {
                out[r][t] = fsum(acc[r][t]);
            }
        }
        out
    }
}

impl<const VNNI: bool> Tile for Q6kTile<VNNI> {
    const MAX_NX: usize = 4;
    fn width(nx: usize) -> usize {
        4 / nx
    }
    #[inline(always)]
    unsafe fn tile(self, rw: usize, nx: usize, js: [usize; 4], i: usize) -> [[f32; 4]; 4] {
        match (rw, nx) {
            (4, _) => pad(self.dot::<4, 1>(js, i)),
            (2, _) => pad(self.dot::<2, 2>(js, i)),
            (_, 1) => pad(self.dot::<1, 1>(js, i)),
            (_, 2) => pad(self.dot::<1, 2>(js, i)),
            (_, 3) => pad(self.dot::<1, 3>(js, i)),
            _ => pad(self.dot::<1, 4>(js, i)),
        }
    }
}
