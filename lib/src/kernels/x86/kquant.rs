//! A dedicated in-place decode tile of Q6_K (both x86 paths) against Q8_K activations: the same
//! integers and f32 steps as the shared lane kernel of `kernels::intdot` (twin:
//! [`crate::quant::lane_vec_dot`], bit for bit), with less work per block and every accumulator
//! of the tile's rows in registers.
//!
//! (A Q4_K tile of the same kind — scales decoded once per block into a table, `vpdpwssd` with
//! the pair broadcast from it — measured 1.1× the lane kernel per core, cache-resident, but
//! slower in the 11B decode on two threads, 3.5 against 4.2 tokens/s interleaved, so Q4_K keeps
//! the shared lane kernel.)
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

use super::super::traverse::Dots;
use super::super::types::Job;
use super::Ahead;
use crate::quant::q6_k::BlockQ6_K;
use crate::quant::q8_k::BlockQ8_K;

/// The lanes reduced in [`crate::quant::lanes8`]'s order.
#[inline(always)]
unsafe fn fsum(a: __m256) -> f32 {
    let p = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
    let h = _mm_hadd_ps(p, p);
    _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)))
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

/// `acc + vpmaddwd(a, b)`: one `vpdpwssd` (`VNNI`, in inline assembly: LLVM splits the intrinsic, see [`super::dpwssd`]) or
/// `vpmaddwd` + `vpaddd`. Exact under the callers' bounds.
#[inline(always)]
unsafe fn madd_add<const VNNI: bool>(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    if VNNI {
        dpwssd_256(acc, a, b)
    } else {
        _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))
    }
}

/// `acc + vpmaddwd(a, b)` in one `vpdpwssd` (inline assembly, see [`super::dpwssd`]).
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

impl<const VNNI: bool> Dots for Q6kTile<VNNI> {
    /// `RW × NX` dot products, bit-exact with [`crate::quant::lane_vec_dot`].
    #[inline(always)]
    unsafe fn dots<const RW: usize, const NX: usize>(
        self,
        js: [usize; 4],
        i: usize,
    ) -> [[f32; NX]; RW] {
        let w: [*const BlockQ6_K; RW] = std::array::from_fn(|r| self.w.add(js[r] * self.nb));
        let x: [*const BlockQ8_K; NX] =
            std::array::from_fn(|t| self.x.add((i + t) * self.x_stride) as *const BlockQ8_K);
        let mut acc = [[_mm256_setzero_ps(); NX]; RW];
        let mut ahead: [Ahead; RW] = std::array::from_fn(|r| Ahead::new(w[r] as *const u8));
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
                    ahead[$r].at(wb.add(1) as *const u8);
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
