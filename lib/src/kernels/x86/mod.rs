//! AVX2 + FMA + F16C kernels for x86-64 ([`Avx2`], [`super::Path::Avx2`]), and the AVX-512 VNNI
//! quantized decode kernels of [`Avx512`] ([`super::Path::Avx512`]) (`QBlock::sums8_512`, `decode_q_512`, compiled
//! with `avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi` as well; every other kernel of that path is the
//! AVX2 one).
//!
//! Every function here is `unsafe` and compiled with `#[target_feature(enable = "avx2,fma,f16c")]`;
//! the dispatcher only calls them after `is_x86_feature_detected!` confirmed all three. Each names
//! its scalar twin in [`super::scalar`] (or describes the plain meaning when the twin is a loop in
//! the portable driver).

use std::arch::x86_64::*;

use half::{bf16, f16};

use super::gemm::{Kernel, Panel};
use super::isa::Isa;
/// The two drivers of a grouped decode attention over the calling module's row kernels
/// `scores_rows::<T, R>` and `pv_rows::<T, R>` (rows four at a time; `pv` in runs of
/// [`PV_KEYS`] keys), compiled with the features `$feat`: this module's AVX2 forms and
/// [`attn512`]'s.
macro_rules! group_drivers {
    ($feat:literal) => {
        /// [`super::attention::attend_group`]'s scores: `s[r·nb + j] = scale · q_r·k_j` for keys
        /// stored as `T` (f32, f16 or bf16, widened in registers), rows four at a time through
        /// `scores_rows`, `ahead` (the bytes the caller reads next) prefetched with the first
        /// rows ([`prefetch_rows`]). Twin: the plain loops in `attention::group_scores_body`
        /// (within float rounding: FMA here).
        ///
        /// # Safety
        /// The features it is compiled with available; `q` holds whole rows of `hd`, `s` `nq × nb`.
        #[target_feature(enable = $feat)]
        pub(super) unsafe fn group_scores<T: Wf>(
            q: &[f32],
            kb: &[T],
            hd: usize,
            scale: f32,
            s: &mut [f32],
            ahead: &[u8],
        ) {
            let nq = q.len() / hd;
            let mut r0 = 0;
            while r0 < nq {
                // `ahead` once, with the first rows.
                let pf = if r0 == 0 { ahead } else { &[] };
                match nq - r0 {
                    1 => scores_rows::<T, 1>(q, r0, kb, hd, scale, s, pf),
                    2 => scores_rows::<T, 2>(q, r0, kb, hd, scale, s, pf),
                    3 => scores_rows::<T, 3>(q, r0, kb, hd, scale, s, pf),
                    _ => scores_rows::<T, 4>(q, r0, kb, hd, scale, s, pf),
                }
                r0 += (nq - r0).min(4);
            }
        }

        /// [`super::attention::attend_group`]'s `P·V`: `o[r] += Σ_j p[r·nb + j] · v_j` for values
        /// stored as `T`, each output value adding its keys' terms in key order (as
        /// `o += p_j·v_j` key by key would); keys in runs of [`PV_KEYS`], rows four at a time
        /// through `pv_rows`, the prefetches with the first rows. Twin:
        /// `attention::group_pv_body`.
        ///
        /// # Safety
        /// The features it is compiled with available; `o` holds whole rows of `hd`, `p` `rows × nb`.
        #[target_feature(enable = $feat)]
        pub(super) unsafe fn group_pv<T: Wf>(
            p: &[f32],
            vb: &[T],
            hd: usize,
            o: &mut [f32],
            ahead: &[u8],
        ) {
            let nb = vb.len() / hd;
            let nq = o.len() / hd;
            assert!(p.len() >= nq * nb);
            let mut j0 = 0;
            while j0 < nb {
                let j1 = (j0 + PV_KEYS).min(nb);
                let mut r0 = 0;
                while r0 < nq {
                    // The prefetches once, with the first rows.
                    let pf = (r0 == 0).then_some(ahead);
                    match nq - r0 {
                        1 => pv_rows::<T, 1>(p, r0, vb, hd, j0..j1, o, pf),
                        2 => pv_rows::<T, 2>(p, r0, vb, hd, j0..j1, o, pf),
                        3 => pv_rows::<T, 3>(p, r0, vb, hd, j0..j1, o, pf),
                        _ => pv_rows::<T, 4>(p, r0, vb, hd, j0..j1, o, pf),
                    }
                    r0 += (nq - r0).min(4);
                }
                j0 = j1;
            }
        }
    };
}

mod attn512;
mod bytes;
mod iattn;
pub(crate) use iattn::dpwssd;
mod igemm;
mod kquant;
mod prefetch;
mod repack;

use bytes::Avx2Ops;
pub(crate) use prefetch::prefetch_warning;
use prefetch::Ahead;

use super::intdot::{LaneKernel, LaneTile};
use super::traverse::{traverse, FloatDot, FloatTile, QuantDot, QuantTile};
use super::types::{plain_act, ActQuant, Decoder, Job};
use super::{split_row_bytes, split_row_mut, Path, Q8Row, Qs};
use crate::quant::q4_1::BlockQ4_1;
use crate::quant::q4_k::BlockQ4_K;
use crate::quant::q5_0::BlockQ5_0;
use crate::quant::q5_1::BlockQ5_1;
use crate::quant::q5_k::BlockQ5_K;
use crate::quant::{BlockQ4_0, BlockQ8_0};
use crate::GgmlType;

// ---------------------------------------------------------------------------------------------
// Small helpers.

/// Sum of the 8 lanes in the fixed order of [`super::scalar::lanes8`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn lanes8(v: __m256) -> f32 {
    // t = [a0+a4, a1+a5, a2+a6, a3+a7]
    let t = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    // u = [t0+t1, _, t2+t3, _]
    let u = _mm_add_ps(t, _mm_movehdup_ps(t));
    _mm_cvtss_f32(_mm_add_ss(u, _mm_movehl_ps(u, u)))
}

/// Horizontal sum of eight i32 lanes (exact, any order).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn hsum_i32(v: __m256i) -> i32 {
    let t = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let t = _mm_add_epi32(t, _mm_shuffle_epi32::<0b01_00_11_10>(t));
    let t = _mm_add_epi32(t, _mm_shuffle_epi32::<0b10_11_00_01>(t));
    _mm_cvtsi128_si32(t)
}

#[inline]
fn f16_at(p: *const u8) -> i16 {
    // SAFETY: callers pass a pointer to the 2-byte scale at the start of a block.
    unsafe { std::ptr::read_unaligned(p as *const i16) }
}

// ---------------------------------------------------------------------------------------------
// Q8_0 activation quantizer.

/// One block of 32 values: (f16 bits of d, quantized bytes, Σ qs). Twin: [`BlockQ8_0::quantize`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quant_block(p: *const f32) -> (u16, __m256i, i32) {
    let v = [
        _mm256_loadu_ps(p),
        _mm256_loadu_ps(p.add(8)),
        _mm256_loadu_ps(p.add(16)),
        _mm256_loadu_ps(p.add(24)),
    ];
    let sign = _mm256_set1_ps(-0.0);
    let a = _mm256_max_ps(
        _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
        _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])),
    );
    let m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_movehdup_ps(m));
    let amax = _mm_cvtss_f32(m);
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let idv = _mm256_set1_ps(id);
    let half = _mm256_set1_ps(0.5);
    let mhalf = _mm256_set1_ps(-0.5);
    let mut q = [_mm256_setzero_si256(); 4];
    for (qi, vi) in q.iter_mut().zip(v) {
        // round half away from zero, exactly as `quant::round_half_away`.
        let t = _mm256_mul_ps(vi, idv);
        let tr = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(t);
        let frac = _mm256_sub_ps(t, tr);
        let up = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GE_OQ>(frac, half));
        let dn = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(frac, mhalf));
        let ti = _mm256_cvttps_epi32(tr);
        *qi = _mm256_add_epi32(_mm256_sub_epi32(ti, up), dn);
    }
    let p01 = _mm256_packs_epi32(q[0], q[1]);
    let p23 = _mm256_packs_epi32(q[2], q[3]);
    let b = _mm256_packs_epi16(p01, p23);
    // Σ of the stored (saturated) bytes: the same as the lanes' sum for finite input, and no
    // overflow for non-finite input (|Σ| ≤ 32·128).
    let pairs = _mm256_maddubs_epi16(_mm256_set1_epi8(1), b);
    let sum = hsum_i32(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
    let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    let dh = _mm_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT }>(_mm_set_ss(d));
    (_mm_extract_epi16::<0>(dh) as u16, b, sum)
}

/// Twin: [`super::scalar::quantize_row_q8_0`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn quantize_row_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    debug_assert_eq!(x.len(), out.len() * 32);
    for (i, o) in out.iter_mut().enumerate() {
        let (d, q, _) = quant_block(x.as_ptr().add(i * 32));
        o.d = f16::from_bits(d);
        _mm256_storeu_si256(o.qs.as_mut_ptr() as *mut __m256i, q);
    }
}

/// Quantize one row into the split layout of the SIMD paths: bytes, f32 scale (the f16 value),
/// and Σ qs per block. Inside every full group of eight blocks the bytes may be interleaved the
/// way [`BlockQ4_0`] nibbles unpack (`interleave`, see `sums8` and `sums8_512` for Q4_0):
/// - `2` (AVX2 Q4_0): each pair of blocks `(2p, 2p+1)` is stored as `[x₂ₚ[0..16] x₂ₚ₊₁[0..16]]
///   [x₂ₚ[16..32] x₂ₚ₊₁[16..32]]`;
/// - `4` (AVX-512 Q4_0): each quad `(4p..4p+4)` is stored as the four first halves
///   `x₄ₚ₊ⱼ[0..16]`, j = 0..3, then the four second halves `x₄ₚ₊ⱼ[16..32]`;
/// - `1`: plain order.
///
/// Blocks past the last full group keep the plain order. Twin: [`super::scalar::quantize_row_q8_0`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn quantize_row_split(
    x: &[f32],
    qs: &mut [Qs],
    d: &mut [f32],
    s: &mut [i32],
    interleave: usize,
) {
    let nb = qs.len();
    let full = if interleave > 1 { nb / 8 * 8 } else { 0 };
    let step = interleave.max(1);
    let qp = qs.as_mut_ptr() as *mut __m256i;
    let mut b = 0;
    while b < full {
        let mut q = [_mm256_setzero_si256(); 4];
        for (j, qj) in q.iter_mut().enumerate().take(step) {
            let (dh, v, sum) = quant_block(x.as_ptr().add((b + j) * 32));
            *qj = v;
            d[b + j] = f16::from_bits(dh).to_f32();
            s[b + j] = sum;
        }
        if step == 2 {
            _mm256_store_si256(qp.add(b), _mm256_permute2x128_si256::<0x20>(q[0], q[1]));
            _mm256_store_si256(qp.add(b + 1), _mm256_permute2x128_si256::<0x31>(q[0], q[1]));
        } else {
            _mm256_store_si256(qp.add(b), _mm256_permute2x128_si256::<0x20>(q[0], q[1]));
            _mm256_store_si256(qp.add(b + 1), _mm256_permute2x128_si256::<0x20>(q[2], q[3]));
            _mm256_store_si256(qp.add(b + 2), _mm256_permute2x128_si256::<0x31>(q[0], q[1]));
            _mm256_store_si256(qp.add(b + 3), _mm256_permute2x128_si256::<0x31>(q[2], q[3]));
        }
        b += step;
    }
    while b < nb {
        let (dh, q, sum) = quant_block(x.as_ptr().add(b * 32));
        _mm256_store_si256(qp.add(b), q);
        d[b] = f16::from_bits(dh).to_f32();
        s[b] = sum;
        b += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// Quantized decode kernels: one weight row against up to four activation rows.

/// Scales of 8 consecutive blocks (`stride` bytes apart) as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scales8(p: *const u8, stride: usize) -> __m256 {
    let v = _mm_set_epi16(
        f16_at(p.add(7 * stride)),
        f16_at(p.add(6 * stride)),
        f16_at(p.add(5 * stride)),
        f16_at(p.add(4 * stride)),
        f16_at(p.add(3 * stride)),
        f16_at(p.add(2 * stride)),
        f16_at(p.add(stride)),
        f16_at(p),
    );
    _mm256_cvtph_ps(v)
}

/// The 32 nibbles of a Q4_0 block as bytes 0..15 in value order (value j at byte j).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_bytes(b: *const BlockQ4_0) -> __m256i {
    let q = _mm_loadu_si128((b as *const u8).add(2) as *const __m128i);
    let both = _mm256_set_m128i(_mm_srli_epi16::<4>(q), q);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// Per-block integer dot of unsigned weight bytes `w` with signed activation bytes at `x`:
/// eight i32 partial sums (lane l = bytes 4l..4l+3).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_u8_i8(w: __m256i, x: *const Qs) -> __m256i {
    let y = _mm256_load_si256(x as *const __m256i);
    _mm256_madd_epi16(_mm256_maddubs_epi16(w, y), _mm256_set1_epi16(1))
}

/// Per-block integer dot of signed bytes (sign trick: |w| · sign(w)·x).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_i8_i8(w_abs: __m256i, w: __m256i, x: *const Qs) -> __m256i {
    let y = _mm256_load_si256(x as *const __m256i);
    let sy = _mm256_sign_epi8(y, w);
    _mm256_madd_epi16(_mm256_maddubs_epi16(w_abs, sy), _mm256_set1_epi16(1))
}

/// Two half-reductions `[hadd(hadd(p0,p1),hadd(p2,p3)), same for p4..p7]` → block sums `[s0..s7]`.
/// (After the hadds, the low 128 bits hold the low-half sums of four blocks and the high 128
/// bits their high-half sums.)
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_sums(q: &[__m256i; 2]) -> __m256i {
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(q[0], q[1]),
        _mm256_permute2x128_si256::<0x31>(q[0], q[1]),
    )
}

/// Transpose-and-add of four vectors of sixteen i32 partial sums: 128-bit lane `l` of the result
/// is `[Σ d[0]ₗ, Σ d[1]ₗ, Σ d[2]ₗ, Σ d[3]ₗ]`, where `Σ d[p]ₗ` is the sum of the four i32 in lane
/// `l` of `d[p]` (exact, wrapping i32 adds of values far below overflow).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
unsafe fn lane_sums4(d: &[__m512i; 4]) -> __m512i {
    // Per lane: [a0+a2, b0+b2, a1+a3, b1+b3] for (a, b) = (d0, d1), likewise (d2, d3) …
    let e01 = _mm512_add_epi32(
        _mm512_unpacklo_epi32(d[0], d[1]),
        _mm512_unpackhi_epi32(d[0], d[1]),
    );
    let e23 = _mm512_add_epi32(
        _mm512_unpacklo_epi32(d[2], d[3]),
        _mm512_unpackhi_epi32(d[2], d[3]),
    );
    // … then [Σa, Σb, Σc, Σd].
    _mm512_add_epi32(
        _mm512_unpacklo_epi64(e01, e23),
        _mm512_unpackhi_epi64(e01, e23),
    )
}

/// Byte-permute indices that gather the nibble bytes of Q4_0 blocks 0..3 of a group from its bytes
/// 0..128 (two registers) and those of blocks 4..7 from its bytes 64..192: output byte `16j + i` is
/// byte `2 + 18j + i` of the block quad.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
unsafe fn q4_quad_idx() -> (__m512i, __m512i) {
    const fn table(base: usize) -> [u8; 64] {
        let mut t = [0u8; 64];
        let mut k = 0;
        while k < 64 {
            t[k] = (base + 18 * (k / 16) + k % 16) as u8;
            k += 1;
        }
        t
    }
    static I03: [u8; 64] = table(2);
    static I47: [u8; 64] = table(2 + 72 - 64);
    (
        _mm512_loadu_si512(I03.as_ptr() as *const __m512i),
        _mm512_loadu_si512(I47.as_ptr() as *const __m512i),
    )
}

/// A word-permute index: words 0..8 from `w`, the rest 0.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
unsafe fn word_idx(w: &[u16; 8]) -> __m512i {
    _mm512_zextsi128_si512(_mm_loadu_si128(w.as_ptr() as *const __m128i))
}

/// A quantized weight block type the integer decode kernels read.
trait QBlock: Copy {
    /// For each activation row: the exact integer dots `[s0..s7]` of blocks `g..g+8` of this
    /// weight row with the activation blocks `g..g+8`.
    unsafe fn sums8<const NX: usize>(w: *const Self, g: usize, x: &[Q8Row; NX]) -> [__m256i; NX];
    /// [`QBlock::sums8`] with AVX-512 VNNI (`vpdpbusd`); the same integers. Callers must have
    /// AVX-512 F/BW/VL/VNNI/VBMI besides AVX2.
    unsafe fn sums8_512<const NX: usize>(
        w: *const Self,
        g: usize,
        x: &[Q8Row; NX],
    ) -> [__m256i; NX];
    /// The f16 scales of blocks `g..g+8` as f32 (AVX2: eight scalar loads).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scales8(w: *const Self, g: usize) -> __m256 {
        scales8(w.add(g) as *const u8, std::mem::size_of::<Self>())
    }
    /// [`QBlock::scales8`] with AVX-512 BW word permutes over the group's bytes.
    unsafe fn scales8_512(w: *const Self, g: usize) -> __m256;
    /// The exact integer dot of block `b` (past the full groups: plain layout).
    unsafe fn isum(w: *const Self, b: usize, x: &Q8Row) -> i32;
    fn scale(&self) -> f32;
}

impl QBlock for BlockQ4_0 {
    /// Two blocks per 256-bit register: `[qs_b | qs_b+1]`, low nibbles (values 0..15 of both
    /// blocks) and high nibbles (values 16..31) against the pair-interleaved activations (see
    /// [`quantize_row_split`]). The nibbles are used unsigned (0..15) and the −8 offset is taken
    /// out with the activation block sums: Σ(q−8)·y = Σq·y − 8·Σy. The i16 partial sums stay
    /// below 8·15·127 = 15240 in magnitude, so no saturation.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn sums8<const NX: usize>(w: *const Self, g: usize, x: &[Q8Row; NX]) -> [__m256i; NX] {
        let mask = _mm256_set1_epi8(0x0F);
        let mut m = [[_mm256_setzero_si256(); 4]; NX];
        for p in 0..4 {
            let b = g + 2 * p;
            let q0 = _mm_loadu_si128((w.add(b) as *const u8).add(2) as *const __m128i);
            let q1 = _mm_loadu_si128((w.add(b + 1) as *const u8).add(2) as *const __m128i);
            let v = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(q0), q1);
            let lo = _mm256_and_si256(v, mask);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask);
            for (mt, xt) in m.iter_mut().zip(x) {
                let ya = _mm256_load_si256(xt.qs.add(b) as *const __m256i);
                let yb = _mm256_load_si256(xt.qs.add(b + 1) as *const __m256i);
                mt[p] =
                    _mm256_add_epi16(_mm256_maddubs_epi16(lo, ya), _mm256_maddubs_epi16(hi, yb));
            }
        }
        let ones = _mm256_set1_epi16(1);
        let mut out = [_mm256_setzero_si256(); NX];
        for ((o, mt), xt) in out.iter_mut().zip(&m).zip(x) {
            // [b0 ×4, b2 ×4 | b1 ×4, b3 ×4] and [b4, b6 | b5, b7] as i16, then i32 pairs.
            let i0 = _mm256_madd_epi16(_mm256_hadd_epi16(mt[0], mt[1]), ones);
            let i1 = _mm256_madd_epi16(_mm256_hadd_epi16(mt[2], mt[3]), ones);
            // [b0, b2, b4, b6 | b1, b3, b5, b7] → [b0 .. b7]
            let t = _mm256_hadd_epi32(i0, i1);
            let sums = _mm256_permutevar8x32_epi32(t, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            let ys = _mm256_loadu_si256(xt.s.add(g) as *const __m256i);
            *o = _mm256_sub_epi32(sums, _mm256_slli_epi32::<3>(ys));
        }
        out
    }
    /// Four blocks per 512-bit register: the group's 144 bytes are read with three loads and the
    /// 16 nibble bytes of blocks 0..3 and 4..7 gathered with one two-source byte permute each
    /// (AVX-512 VBMI), giving `[qs₀ qs₁ qs₂ qs₃]` and `[qs₄ .. qs₇]`; low nibbles (values 0..15)
    /// and high nibbles (16..31) meet the quad-interleaved activations (see [`quantize_row_split`])
    /// in `vpdpbusd`, so 128-bit lane j of the i32 result holds block j's four partial sums.
    /// Unsigned nibbles; the −8 offset comes out with the block sums as in [`QBlock::sums8`].
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
    unsafe fn sums8_512<const NX: usize>(
        w: *const Self,
        g: usize,
        x: &[Q8Row; NX],
    ) -> [__m256i; NX] {
        let p = w.add(g) as *const u8;
        let z0 = _mm512_loadu_si512(p as *const __m512i);
        let z1 = _mm512_loadu_si512(p.add(64) as *const __m512i);
        // Only bytes 128..144 belong to the group: a 16-byte load, so nothing past it is read.
        let z2 = _mm512_zextsi128_si512(_mm_loadu_si128(p.add(128) as *const __m128i));
        let (i03, i47) = q4_quad_idx();
        let q03 = _mm512_permutex2var_epi8(z0, i03, z1);
        let q47 = _mm512_permutex2var_epi8(z1, i47, z2);
        let mask = _mm512_set1_epi8(0x0F);
        let lo03 = _mm512_and_si512(q03, mask);
        let hi03 = _mm512_and_si512(_mm512_srli_epi16::<4>(q03), mask);
        let lo47 = _mm512_and_si512(q47, mask);
        let hi47 = _mm512_and_si512(_mm512_srli_epi16::<4>(q47), mask);
        let zero = _mm512_setzero_si512();
        // [b0 b1 b2 b3 b4 b5 b6 b7] from lanes (j, 0) = b_j and (j, 1) = b_j+4 after the adds.
        let idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0);
        let mut out = [_mm256_setzero_si256(); NX];
        for (o, xt) in out.iter_mut().zip(x) {
            let y = xt.qs.add(g) as *const __m512i;
            let d03 = _mm512_dpbusd_epi32(
                _mm512_dpbusd_epi32(zero, lo03, _mm512_loadu_si512(y)),
                hi03,
                _mm512_loadu_si512(y.add(1)),
            );
            let d47 = _mm512_dpbusd_epi32(
                _mm512_dpbusd_epi32(zero, lo47, _mm512_loadu_si512(y.add(2))),
                hi47,
                _mm512_loadu_si512(y.add(3)),
            );
            // Per lane j: [a0+a2, b0+b2, a1+a3, b1+b3] (a: block j, b: block j+4), then
            // [a, b, a, b].
            let u = _mm512_add_epi32(
                _mm512_unpacklo_epi32(d03, d47),
                _mm512_unpackhi_epi32(d03, d47),
            );
            let v = _mm512_add_epi32(u, _mm512_shuffle_epi32::<0b01_00_11_10>(u));
            let sums = _mm512_castsi512_si256(_mm512_permutexvar_epi32(idx, v));
            let ys = _mm256_loadu_si256(xt.s.add(g) as *const __m256i);
            *o = _mm256_sub_epi32(sums, _mm256_slli_epi32::<3>(ys));
        }
        out
    }
    /// The eight scales sit at words `9·l` of the group's first 128 bytes: one two-source word
    /// permute.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
    unsafe fn scales8_512(w: *const Self, g: usize) -> __m256 {
        let p = w.add(g) as *const __m512i;
        let idx = word_idx(&[0, 9, 18, 27, 36, 45, 54, 63]);
        let v = _mm512_permutex2var_epi16(_mm512_loadu_si512(p), idx, _mm512_loadu_si512(p.add(1)));
        _mm256_cvtph_ps(_mm512_castsi512_si128(v))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn isum(w: *const Self, b: usize, x: &Q8Row) -> i32 {
        hsum_i32(dot_u8_i8(q4_bytes(w.add(b)), x.qs.add(b))) - 8 * *x.s.add(b)
    }
    #[inline(always)]
    fn scale(&self) -> f32 {
        self.d.to_f32()
    }
}

impl QBlock for BlockQ8_0 {
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn sums8<const NX: usize>(w: *const Self, g: usize, x: &[Q8Row; NX]) -> [__m256i; NX] {
        let mut q = [[_mm256_setzero_si256(); 2]; NX];
        for (half, b) in [g, g + 4].into_iter().enumerate() {
            let wv = [
                q8_bytes(w.add(b)),
                q8_bytes(w.add(b + 1)),
                q8_bytes(w.add(b + 2)),
                q8_bytes(w.add(b + 3)),
            ];
            let wa = [
                _mm256_sign_epi8(wv[0], wv[0]),
                _mm256_sign_epi8(wv[1], wv[1]),
                _mm256_sign_epi8(wv[2], wv[2]),
                _mm256_sign_epi8(wv[3], wv[3]),
            ];
            for (qt, xt) in q.iter_mut().zip(x) {
                let h0 = _mm256_hadd_epi32(
                    dot_i8_i8(wa[0], wv[0], xt.qs.add(b)),
                    dot_i8_i8(wa[1], wv[1], xt.qs.add(b + 1)),
                );
                let h1 = _mm256_hadd_epi32(
                    dot_i8_i8(wa[2], wv[2], xt.qs.add(b + 2)),
                    dot_i8_i8(wa[3], wv[3], xt.qs.add(b + 3)),
                );
                qt[half] = _mm256_hadd_epi32(h0, h1);
            }
        }
        q.map(|qt| block_sums(&qt))
    }
    /// One pair of blocks per 512-bit register, `[q(b) | q(b+1)]` against the plain activation
    /// bytes `Qs[b..b+2]`, with `vpdpbusd` on `w + 128` as unsigned bytes (exact in i32, no i16
    /// saturation); the `+128` is taken out with the activation block sums:
    /// Σ(w+128)·y − 128·Σy. Lanes (128 bits) 0, 1 of the i32 dot vector belong to block `b`,
    /// lanes 2, 3 to block `b+1`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
    unsafe fn sums8_512<const NX: usize>(
        w: *const Self,
        g: usize,
        x: &[Q8Row; NX],
    ) -> [__m256i; NX] {
        let zero = _mm512_setzero_si512();
        let mut d = [[zero; 4]; NX];
        for p in 0..4 {
            let b = g + 2 * p;
            let v = _mm512_inserti64x4::<1>(
                _mm512_castsi256_si512(q8_bytes(w.add(b))),
                q8_bytes(w.add(b + 1)),
            );
            // w + 128 as unsigned bytes; the +128 comes out with the block sums.
            let u = _mm512_xor_si512(v, _mm512_set1_epi8(-128));
            for (dt, xt) in d.iter_mut().zip(x) {
                let y = _mm512_loadu_si512(xt.qs.add(b) as *const __m512i);
                dt[p] = _mm512_dpbusd_epi32(zero, u, y);
            }
        }
        // After `lane_sums4`: lanes [b0 b2 b4 b6 | same | b1 b3 b5 b7 | same] (two halves each);
        // add neighbouring lanes, then gather lanes 0 and 2 in block order.
        let idx = _mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 0, 0, 0, 0, 0, 0, 0, 0);
        let mut out = [_mm256_setzero_si256(); NX];
        for ((o, dt), xt) in out.iter_mut().zip(&d).zip(x) {
            let f = lane_sums4(dt);
            let t = _mm512_add_epi32(f, _mm512_shuffle_i64x2::<0b10_11_00_01>(f, f));
            let sums = _mm512_castsi512_si256(_mm512_permutexvar_epi32(idx, t));
            let ys = _mm256_loadu_si256(xt.s.add(g) as *const __m256i);
            *o = _mm256_sub_epi32(sums, _mm256_slli_epi32::<7>(ys));
        }
        out
    }
    /// The eight scales sit at words `17·l` of the group's first 256 bytes: blocks 0..3 in bytes
    /// 0..128 and blocks 4..7 in bytes 128..256, one two-source word permute each, then a blend.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
    unsafe fn scales8_512(w: *const Self, g: usize) -> __m256 {
        let p = w.add(g) as *const __m512i;
        let idx = word_idx(&[0, 17, 34, 51, 4, 21, 38, 55]);
        let a = _mm512_permutex2var_epi16(_mm512_loadu_si512(p), idx, _mm512_loadu_si512(p.add(1)));
        let b = _mm512_permutex2var_epi16(
            _mm512_loadu_si512(p.add(2)),
            idx,
            _mm512_loadu_si512(p.add(3)),
        );
        _mm256_cvtph_ps(_mm512_castsi512_si128(_mm512_mask_blend_epi16(0xF0, a, b)))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn isum(w: *const Self, b: usize, x: &Q8Row) -> i32 {
        let v = q8_bytes(w.add(b));
        hsum_i32(dot_i8_i8(_mm256_sign_epi8(v, v), v, x.qs.add(b)))
    }
    #[inline(always)]
    fn scale(&self) -> f32 {
        self.d.to_f32()
    }
}

/// The 32 signed bytes of a Q8_0 block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_bytes(b: *const BlockQ8_0) -> __m256i {
    _mm256_loadu_si256((b as *const u8).add(2) as *const __m256i)
}

/// The quantized tile kernel (`dot_q`), instantiated once per instruction set so that the
/// per-group integer sums (`QBlock::$sums`) inline into loops compiled with the same target
/// features (`$feat`). The instances differ only in how the eight block sums of a group are
/// computed; the f32 part (scales, "eight block lanes" accumulation, tail) is the same code, hence
/// bit-identical results.
macro_rules! quant_tile {
    ($feat:literal, $sums:ident, $scales:ident, $dot_q:ident) => {
        /// `RW × NX` dot products of quantized weight rows `w[r]` (`nb` blocks each) with activation
        /// rows `x[t]`. Twins: [`super::scalar::dot_q4_0_q8_0`], [`super::scalar::dot_q8_0_q8_0`]
        /// (bit-exact: exact integer block sums, then the "eight block lanes" f32 order, no FMA). Several
        /// weight rows go side by side so the memory system sees several streams.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn $dot_q<B: QBlock, const RW: usize, const NX: usize>(
            w: [*const B; RW],
            nb: usize,
            x: [Q8Row; NX],
        ) -> [[f32; NX]; RW] {
            let mut acc = [[_mm256_setzero_ps(); NX]; RW];
            let mut ahead = w.map(|w| Ahead::new(w as *const u8));
            let full = nb / 8 * 8;
            let mut g = 0;
            while g < full {
                for ((wr, ar), ahead) in w.iter().zip(acc.iter_mut()).zip(&mut ahead) {
                    ahead.at(wr.add(g + 8) as *const u8);
                    let sums8 = B::$sums::<NX>(*wr, g, &x);
                    let dw = B::$scales(*wr, g);
                    for (t, &sums) in sums8.iter().enumerate() {
                        let sc = _mm256_mul_ps(dw, _mm256_loadu_ps(x[t].d.add(g)));
                        ar[t] = _mm256_add_ps(ar[t], _mm256_mul_ps(sc, _mm256_cvtepi32_ps(sums)));
                    }
                }
                g += 8;
            }
            let mut out = [[0f32; NX]; RW];
            for r in 0..RW {
                for t in 0..NX {
                    let mut tail = 0f32;
                    for b in full..nb {
                        let sc = (*w[r].add(b)).scale() * *x[t].d.add(b);
                        tail += sc * B::isum(w[r], b, &x[t]) as f32;
                    }
                    out[r][t] = lanes8(acc[r][t]) + tail;
                }
            }
            out
        }
    };
}

quant_tile!("avx2,fma,f16c", sums8, scales8, dot_q);
quant_tile!(
    "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c",
    sums8_512,
    scales8_512,
    dot_q_512
);

/// The AVX2 tile kernels (float and integer).
struct Avx2Dot;
/// The AVX-512 integer tile kernels (VNNI group sums).
struct Avx512Dot;

impl<B: QBlock> QuantDot<B> for Avx2Dot {
    #[inline(always)]
    unsafe fn dot<const RW: usize, const NX: usize>(
        w: [*const B; RW],
        nb: usize,
        x: [Q8Row; NX],
    ) -> [[f32; NX]; RW] {
        dot_q::<B, RW, NX>(w, nb, x)
    }
}

impl<B: QBlock> QuantDot<B> for Avx512Dot {
    #[inline(always)]
    unsafe fn dot<const RW: usize, const NX: usize>(
        w: [*const B; RW],
        nb: usize,
        x: [Q8Row; NX],
    ) -> [[f32; NX]; RW] {
        dot_q_512::<B, RW, NX>(w, nb, x)
    }
}

impl<T: Wf> FloatDot<T> for Avx2Dot {
    #[inline(always)]
    unsafe fn dot<const R: usize, const NX: usize>(
        w: [*const T; R],
        x: [*const f32; NX],
        k: usize,
    ) -> [[f32; NX]; R] {
        dot_float::<T, R, NX>(w, x, k)
    }
}

/// Quantize one activation row into its split-layout region (see [`super::SplitActs`]), the bytes of
/// each full group of eight blocks interleaved `IL` ways for Q4_0 (see [`quantize_row_split`]).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_split<const IL: usize>(x: &[f32], out: &mut [u8]) {
    let (qs, d, s) = split_row_mut(out, x.len() / 32);
    quantize_row_split(x, qs, d, s, IL)
}

/// The integer decode kernel of weight blocks `B` on [`Avx2`]: [`traverse`] over [`QuantTile`]s.
/// Twin: the portable decoder of `kernels::types` ([`crate::quant::QuantBlock::vec_dot`]),
/// bit-exact.
///
/// # Safety
/// AVX2/FMA/F16C available; `job.w` holds `m·nb` blocks `B`; `job.x` was quantized by the
/// matching [`quantize_split`]; `out` covers `n × m`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode_quant<B: QBlock>(job: &Job<'_>, rows: std::ops::Range<usize>) {
    traverse(
        QuantTile::<B, Avx2Dot>::new(job),
        job.n,
        rows,
        job.out,
        job.bias,
    )
}

/// [`decode_quant`] on [`Avx512`]: the group sums with VNNI, the same results bit for bit.
///
/// # Safety
/// As [`decode_quant`], and AVX-512 F/BW/VL/VNNI/VBMI available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
unsafe fn decode_quant_512<B: QBlock>(job: &Job<'_>, rows: std::ops::Range<usize>) {
    traverse(
        QuantTile::<B, Avx512Dot>::new(job),
        job.n,
        rows,
        job.out,
        job.bias,
    )
}

/// The decode kernel of a [`LaneKernel`] type (Q4_K, Q5_K, Q6_K, Q4_1, Q5_0, Q5_1) on both x86
/// paths: [`traverse`] over [`LaneTile`]s with the AVX2 byte operations. Twin:
/// [`crate::quant::lane_vec_dot`], bit-exact.
///
/// # Safety
/// AVX2/FMA/F16C available; `job.w` holds `m·nb` blocks `B`; `job.x` rows of `B::VecDot` blocks
/// (the type's plain activation quantizer); `out` covers `n × m`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn decode_lane<B: LaneKernel>(job: &Job<'_>, rows: std::ops::Range<usize>) {
    traverse(
        LaneTile::<B, Avx2Ops>::new(job),
        job.n,
        rows,
        job.out,
        job.bias,
    )
}

/// The in-place Q6_K decode on [`Avx2`]: [`traverse`] over [`kquant::Q6kTile`]s. Twin:
/// [`crate::quant::lane_vec_dot`], bit-exact.
///
/// # Safety
/// As [`decode_lane`] with `B` = Q6_K.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn decode_q6k(job: &Job<'_>, rows: std::ops::Range<usize>) {
    let t = kquant::Q6kTile::<false>::new(job);
    traverse(t, job.n, rows, job.out, job.bias)
}

/// [`decode_q6k`] on [`Avx512`] (`vpdpwssd`), the same results bit for bit.
///
/// # Safety
/// As [`decode_q6k`], and AVX-512 F/BW/VL/VNNI/VBMI available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
pub(super) unsafe fn decode_q6k_512(job: &Job<'_>, rows: std::ops::Range<usize>) {
    let t = kquant::Q6kTile::<true>::new(job);
    traverse(t, job.n, rows, job.out, job.bias)
}

/// The float decode kernel of weight elements `T`: [`traverse`] over [`FloatTile`]s. Twin: the
/// portable float decoder of `kernels::types` (within tolerance: FMA).
///
/// # Safety
/// AVX2/FMA/F16C available; `job.w` holds `m × k` elements `T`, `job.x` `n` f32 rows.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode_float<T: Wf>(job: &Job<'_>, rows: std::ops::Range<usize>) {
    traverse(
        FloatTile::<T, Avx2Dot>::new(job),
        job.n,
        rows,
        job.out,
        job.bias,
    )
}

/// The decode kernels of [`Avx2`] (`VNNI = false`) and [`Avx512`] (`VNNI = true`).
fn decoder<const VNNI: bool>(ty: GgmlType) -> Option<Decoder> {
    // Q4_0 activation bytes are interleaved to match how the nibbles unpack.
    let split = |quantize: unsafe fn(&[f32], &mut [u8])| {
        Some(ActQuant {
            row_bytes: split_row_bytes,
            quantize,
        })
    };
    let q4_split: unsafe fn(&[f32], &mut [u8]) = if VNNI {
        quantize_split::<4>
    } else {
        quantize_split::<2>
    };
    fn quant<B: QBlock, const VNNI: bool>() -> unsafe fn(&Job<'_>, std::ops::Range<usize>) {
        if VNNI {
            decode_quant_512::<B>
        } else {
            decode_quant::<B>
        }
    }
    let float = |rows| Some(Decoder { act: None, rows });
    fn lane<B: LaneKernel>() -> Option<Decoder> {
        Some(Decoder {
            act: Some(plain_act::<B::VecDot>()),
            rows: decode_lane::<B>,
        })
    }
    match ty {
        GgmlType::Q4_0 => Some(Decoder {
            act: split(q4_split),
            rows: quant::<BlockQ4_0, VNNI>(),
        }),
        GgmlType::Q8_0 => Some(Decoder {
            act: split(quantize_split::<1>),
            rows: quant::<BlockQ8_0, VNNI>(),
        }),
        GgmlType::F32 => float(decode_float::<f32>),
        GgmlType::F16 => float(decode_float::<f16>),
        GgmlType::BF16 => float(decode_float::<bf16>),
        GgmlType::Q4_K => lane::<BlockQ4_K>(),
        GgmlType::Q5_K => lane::<BlockQ5_K>(),
        GgmlType::Q6_K => Some(Decoder {
            act: Some(plain_act::<crate::quant::q8_k::BlockQ8_K>()),
            rows: if VNNI { decode_q6k_512 } else { decode_q6k },
        }),
        GgmlType::Q4_1 => lane::<BlockQ4_1>(),
        GgmlType::Q5_0 => lane::<BlockQ5_0>(),
        GgmlType::Q5_1 => lane::<BlockQ5_1>(),
        // No x86 kernel: the type's portable decoder runs.
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Float decode kernels: `R` weight rows against `NX` activation rows.

/// A float weight element: eight of them widened to f32.
pub(super) trait Wf: Copy {
    /// # Safety
    /// AVX2/F16C available and 8 elements readable at `p`.
    unsafe fn load8(p: *const Self) -> __m256;
    /// # Safety
    /// AVX-512F/F16C available and 16 elements readable at `p`.
    unsafe fn load16(p: *const Self) -> __m512;
    fn get(self) -> f32;
}

impl Wf for f32 {
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn load16(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    fn get(self) -> f32 {
        self
    }
}

impl Wf for f16 {
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(p: *const f16) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn load16(p: *const f16) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
    }
    #[inline(always)]
    fn get(self) -> f32 {
        self.to_f32()
    }
}

impl Wf for bf16 {
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(p: *const bf16) -> __m256 {
        let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h))
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn load16(p: *const bf16) -> __m512 {
        let h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i));
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(h))
    }
    #[inline(always)]
    fn get(self) -> f32 {
        self.to_f32()
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_ps(v: __m256) -> f32 {
    lanes8(v)
}

/// `R × NX` dot products of weight rows `w[r]` with activation rows `x[t]` (length `k`).
/// Twins: [`super::scalar::dot_f32`], [`super::scalar::dot_f16_f32`],
/// [`super::scalar::dot_bf16_f32`] (FMA, so within tolerance, not bit-exact).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_float<T: Wf, const R: usize, const NX: usize>(
    w: [*const T; R],
    x: [*const f32; NX],
    k: usize,
) -> [[f32; NX]; R] {
    let mut acc = [[_mm256_setzero_ps(); NX]; R];
    let k8 = k / 8 * 8;
    let mut p = 0;
    while p < k8 {
        let mut xv = [_mm256_setzero_ps(); NX];
        for t in 0..NX {
            xv[t] = _mm256_loadu_ps(x[t].add(p));
        }
        for r in 0..R {
            let wv = T::load8(w[r].add(p));
            for t in 0..NX {
                acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
            }
        }
        p += 8;
    }
    let mut out = [[0f32; NX]; R];
    for r in 0..R {
        for t in 0..NX {
            let mut tail = 0f32;
            for q in k8..k {
                tail += (*w[r].add(q)).get() * *x[t].add(q);
            }
            out[r][t] = hsum_ps(acc[r][t]) + tail;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Packed GEMM: micro-kernel and weight packing.

/// Micro-kernel rows (activations) and columns (weight rows).
pub(super) const MR: usize = 6;
pub(super) const NR: usize = 16;

/// `c[MR × NR] (+)= a_panel · b_panel` over `kc` steps: `a` holds `MR` values per step
/// (activation rows), `b` holds `NR` values per step (weight rows); `c` has row stride `ldc`.
/// The plain meaning is the loop in `gemm::scalar_kernel`; FMA, so within tolerance.
///
/// # Safety
/// AVX2/FMA available; `a` has `kc·MR`, `b` has `kc·NR` values; `c` covers the tile.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn kernel_6x16(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    acc: bool,
) {
    let mut c0 = [_mm256_setzero_ps(); MR];
    let mut c1 = [_mm256_setzero_ps(); MR];
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        let b0 = _mm256_loadu_ps(b);
        let b1 = _mm256_loadu_ps(b.add(8));
        for i in 0..MR {
            let ai = _mm256_broadcast_ss(&*a.add(i));
            c0[i] = _mm256_fmadd_ps(ai, b0, c0[i]);
            c1[i] = _mm256_fmadd_ps(ai, b1, c1[i]);
        }
        a = a.add(MR);
        b = b.add(NR);
    }
    for i in 0..MR {
        let p = c.add(i * ldc);
        if acc {
            c0[i] = _mm256_add_ps(c0[i], _mm256_loadu_ps(p));
            c1[i] = _mm256_add_ps(c1[i], _mm256_loadu_ps(p.add(8)));
        }
        _mm256_storeu_ps(p, c0[i]);
        _mm256_storeu_ps(p.add(8), c1[i]);
    }
}

/// Transpose 8 vectors of 8 values (row r = `v[r]`) in place.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn transpose8(v: &mut [__m256; 8]) {
    let t0 = _mm256_unpacklo_ps(v[0], v[1]);
    let t1 = _mm256_unpackhi_ps(v[0], v[1]);
    let t2 = _mm256_unpacklo_ps(v[2], v[3]);
    let t3 = _mm256_unpackhi_ps(v[2], v[3]);
    let t4 = _mm256_unpacklo_ps(v[4], v[5]);
    let t5 = _mm256_unpackhi_ps(v[4], v[5]);
    let t6 = _mm256_unpacklo_ps(v[6], v[7]);
    let t7 = _mm256_unpackhi_ps(v[6], v[7]);
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    v[0] = _mm256_permute2f128_ps::<0x20>(s0, s4);
    v[1] = _mm256_permute2f128_ps::<0x20>(s1, s5);
    v[2] = _mm256_permute2f128_ps::<0x20>(s2, s6);
    v[3] = _mm256_permute2f128_ps::<0x20>(s3, s7);
    v[4] = _mm256_permute2f128_ps::<0x31>(s0, s4);
    v[5] = _mm256_permute2f128_ps::<0x31>(s1, s5);
    v[6] = _mm256_permute2f128_ps::<0x31>(s2, s6);
    v[7] = _mm256_permute2f128_ps::<0x31>(s3, s7);
}

/// Broadcast f16 scale at `p` as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scale_at(p: *const u8) -> __m256 {
    _mm256_cvtph_ps(_mm_set1_epi16(f16_at(p)))
}

/// Dequantize blocks of 32 weights: `out[0..32]` = the exact values of block `b` of `row`.
trait Deq32 {
    const BYTES: usize;
    unsafe fn deq32(blk: *const u8, out: *mut f32);
}

struct DeqQ8;
struct DeqQ4;

impl Deq32 for DeqQ8 {
    const BYTES: usize = 34;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn deq32(blk: *const u8, out: *mut f32) {
        let d = scale_at(blk);
        for c in 0..4 {
            let q = _mm_loadl_epi64(blk.add(2 + 8 * c) as *const __m128i);
            _mm256_storeu_ps(
                out.add(8 * c),
                _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d),
            );
        }
    }
}

impl Deq32 for DeqQ4 {
    const BYTES: usize = 18;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn deq32(blk: *const u8, out: *mut f32) {
        let d = scale_at(blk);
        let eight = _mm256_set1_epi32(8);
        let mask = _mm256_set1_epi32(0x0F);
        for c in 0..2 {
            let q = _mm256_cvtepu8_epi32(_mm_loadl_epi64(blk.add(2 + 8 * c) as *const __m128i));
            let lo = _mm256_sub_epi32(_mm256_and_si256(q, mask), eight);
            let hi = _mm256_sub_epi32(_mm256_srli_epi32::<4>(q), eight);
            _mm256_storeu_ps(out.add(8 * c), _mm256_mul_ps(_mm256_cvtepi32_ps(lo), d));
            _mm256_storeu_ps(
                out.add(16 + 8 * c),
                _mm256_mul_ps(_mm256_cvtepi32_ps(hi), d),
            );
        }
    }
}

/// Pack (see [`pack_b`]) a quantized type: 8 rows × one block into a small buffer, then four
/// 8×8 transposes.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack_b_quant<D: Deq32>(panel: Panel<'_>, o: *mut f32) {
    let Panel {
        row_bytes,
        j0,
        nr,
        p0,
        kc,
        ..
    } = panel;
    let data = panel.data.as_ptr();
    let mut tmp = [0f32; 8 * 32];
    let t = tmp.as_mut_ptr();
    for half in 0..NR / 8 {
        let r0 = half * 8;
        let rows = nr.saturating_sub(r0).min(8);
        let mut p = 0;
        while p < kc {
            let b = (p0 + p) / 32;
            for r in 0..8 {
                if r < rows {
                    D::deq32(
                        data.add((j0 + r0 + r) * row_bytes + b * D::BYTES),
                        t.add(32 * r),
                    );
                } else {
                    for c in 0..4 {
                        _mm256_storeu_ps(t.add(32 * r + 8 * c), _mm256_setzero_ps());
                    }
                }
            }
            for c in 0..4 {
                let mut v = [_mm256_setzero_ps(); 8];
                for (r, vr) in v.iter_mut().enumerate() {
                    *vr = _mm256_loadu_ps(t.add(32 * r + 8 * c));
                }
                transpose8(&mut v);
                for (q, vq) in v.iter().enumerate() {
                    _mm256_storeu_ps(o.add((p + 8 * c + q) * NR + r0), *vq);
                }
            }
            p += 32;
        }
    }
}

/// Pack (see [`pack_b`]) a float type: 8 rows × 8 columns at a time through one 8×8 transpose.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack_b_float<T: Wf>(panel: Panel<'_>, o: *mut f32) {
    let Panel {
        row_bytes,
        j0,
        nr,
        p0,
        kc: kc8,
        ..
    } = panel;
    let data = panel.data.as_ptr();
    for half in 0..NR / 8 {
        let r0 = half * 8;
        let rows = nr.saturating_sub(r0).min(8);
        let mut p = 0;
        while p < kc8 {
            let mut v = [_mm256_setzero_ps(); 8];
            for (r, vr) in v.iter_mut().enumerate().take(rows) {
                *vr = T::load8((data.add((j0 + r0 + r) * row_bytes) as *const T).add(p0 + p));
            }
            transpose8(&mut v);
            for (q, vq) in v.iter().enumerate() {
                _mm256_storeu_ps(o.add((p + q) * NR + r0), *vq);
            }
            p += 8;
        }
    }
}

/// Pack weight rows `j0..j0+nr` (`nr ≤ NR`, missing rows as zeros), columns `p0..p0+kc`, as
/// `out[p·NR + r] = W[j0 + r, p0 + p]` converted to f32 (exact conversion, the same values as
/// `quant::dequantize`; for quantized types `p0` and `kc` are multiples of 32). The plain meaning
/// is `pack::pack_b_tail`.
///
/// # Safety
/// AVX2/F16C available; the rows and columns exist; `out` has `kc·NR` values.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn pack_b(panel: Panel<'_>, out: &mut [f32]) {
    use crate::GgmlType as T;
    let kc = panel.kc;
    assert!(out.len() >= kc * NR);
    let o = out.as_mut_ptr();
    let kc8 = kc / 8 * 8;
    let p8 = Panel { kc: kc8, ..panel };
    // Columns packed here; the rest (a float tail, or a type without an x86 pack) goes through
    // the portable pack.
    let done = match panel.t.ty {
        T::Q4_0 => {
            pack_b_quant::<DeqQ4>(panel, o);
            kc
        }
        T::Q8_0 => {
            pack_b_quant::<DeqQ8>(panel, o);
            kc
        }
        T::F16 => {
            pack_b_float::<f16>(p8, o);
            kc8
        }
        T::BF16 => {
            pack_b_float::<bf16>(p8, o);
            kc8
        }
        T::F32 => {
            pack_b_float::<f32>(p8, o);
            kc8
        }
        _ => 0,
    };
    if done < kc {
        super::pack::pack_b_tail(panel, done, NR, out);
    }
}

// ---------------------------------------------------------------------------------------------
// Vector f32 helpers for attention and norms.

/// Σ a[i]·b[i]. Twin: [`super::scalar::dot_f32`] (FMA, within tolerance).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (u, a) in acc.iter_mut().enumerate() {
            *a = _mm256_fmadd_ps(
                _mm256_loadu_ps(ap.add(i + 8 * u)),
                _mm256_loadu_ps(bp.add(i + 8 * u)),
                *a,
            );
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(
            _mm256_loadu_ps(ap.add(i)),
            _mm256_loadu_ps(bp.add(i)),
            acc[0],
        );
        i += 8;
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut tail = 0f32;
    while i < n {
        tail += *ap.add(i) * *bp.add(i);
        i += 1;
    }
    lanes8(s) + tail
}

/// y[i] += a·x[i]. Twin: [`super::scalar::axpy`] (FMA, within tolerance).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
    let av = _mm256_set1_ps(a);
    let mut i = 0;
    while i + 8 <= n {
        let v = _mm256_fmadd_ps(av, _mm256_loadu_ps(xp.add(i)), _mm256_loadu_ps(yp.add(i)));
        _mm256_storeu_ps(yp.add(i), v);
        i += 8;
    }
    while i < n {
        *yp.add(i) += a * *xp.add(i);
        i += 1;
    }
}

/// y[i] *= a. Twin: [`super::scalar::scale`] (bit-exact).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn scale(a: f32, y: &mut [f32]) {
    let n = y.len();
    let yp = y.as_mut_ptr();
    let av = _mm256_set1_ps(a);
    let mut i = 0;
    while i + 8 <= n {
        _mm256_storeu_ps(yp.add(i), _mm256_mul_ps(av, _mm256_loadu_ps(yp.add(i))));
        i += 8;
    }
    while i < n {
        *yp.add(i) *= a;
        i += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// Probes.

/// `iters` rounds of 12 independent FMA chains of 8 lanes (2 FLOP each): the FMA peak probe.
/// Returns a value derived from the accumulators so the work cannot be optimised away.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn fma_chains(iters: u64) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 12];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = _mm256_set1_ps(i as f32 * 0.001);
    }
    let m = _mm256_set1_ps(0.999_999);
    let c = _mm256_set1_ps(1e-7);
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, m, c);
        }
    }
    let mut s = _mm256_setzero_ps();
    for a in acc {
        s = _mm256_add_ps(s, a);
    }
    lanes8(s)
}

/// Sum of `S` equal parts of a buffer read side by side (`S` sequential streams, 64 bytes each per
/// step): the read-bandwidth probe.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn sum_streams<const S: usize>(x: &[f32]) -> f32 {
    let q = x.len() / S / 16 * 16;
    let p = x.as_ptr();
    let mut acc = [[_mm256_setzero_ps(); 2]; S];
    let mut i = 0;
    while i < q {
        for (s, a) in acc.iter_mut().enumerate() {
            let b = p.add(s * q + i);
            a[0] = _mm256_add_ps(a[0], _mm256_loadu_ps(b));
            a[1] = _mm256_add_ps(a[1], _mm256_loadu_ps(b.add(8)));
        }
        i += 16;
    }
    let mut s = _mm256_setzero_ps();
    for a in acc {
        s = _mm256_add_ps(s, _mm256_add_ps(a[0], a[1]));
    }
    lanes8(s) + x[S * q..].iter().sum::<f32>()
}

/// Keys ahead of the one in use whose rows [`group_scores`] and [`group_pv`] prefetch into L1
/// (within the block they were given).
const ROWS_AHEAD: usize = 4;

/// Prefetch hints for the rows of keys `j..j + n` of a block of `nb` keys (`row` bytes each at
/// `x`): the rows [`ROWS_AHEAD`] keys further into L1, and key `j..j + n`'s share of `ahead`
/// (the bytes the caller reads next, spread evenly over the block's keys) into L2. Hints only.
///
/// # Safety
/// SSE available (always on x86-64).
#[inline(always)]
unsafe fn prefetch_rows(x: *const u8, row: usize, nb: usize, j: usize, n: usize, ahead: &[u8]) {
    let line = |p: *const u8| _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
    if j + ROWS_AHEAD + n <= nb {
        let mut o = (j + ROWS_AHEAD) * row;
        while o < (j + ROWS_AHEAD + n) * row {
            line(x.wrapping_add(o));
            o += 64;
        }
    }
    if !ahead.is_empty() {
        let share = ahead.len().div_ceil(nb);
        let (a, b) = (
            (j * share).min(ahead.len()),
            ((j + n) * share).min(ahead.len()),
        );
        let mut o = a;
        while o < b {
            _mm_prefetch::<_MM_HINT_T1>(ahead.as_ptr().add(o) as *const i8);
            o += 64;
        }
    }
}

// `group_scores` and `group_pv` over this module's `scores_rows` and `pv_rows`.
group_drivers!("avx2,fma,f16c");

/// The lane sums of eight vectors at once, `out[i] = lanes8(x[i])` bit for bit (the same
/// additions in the same order: lower half plus upper half, then pairs, then the two pair sums),
/// with eight 128-bit permutes and three horizontal adds instead of eight separate reductions.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn lanes8x8(x: [__m256; 8]) -> __m256 {
    // y[i] = [x[i].lo + x[i].hi | x[i+4].lo + x[i+4].hi].
    let y: [__m256; 4] = std::array::from_fn(|i| {
        _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(x[i], x[i + 4]),
            _mm256_permute2f128_ps::<0x31>(x[i], x[i + 4]),
        )
    });
    // Pairs, then pair sums: lanes [x0, x1, x2, x3 | x4, x5, x6, x7].
    let z0 = _mm256_hadd_ps(y[0], y[1]);
    let z1 = _mm256_hadd_ps(y[2], y[3]);
    _mm256_hadd_ps(z0, z1)
}

/// Rows `r0..r0 + R` of [`group_scores`]: eight-lane FMA chains (two keys at a time: eight
/// independent chains), the eight chains' lanes summed together by [`lanes8x8`] in [`lanes8`]'s
/// order, then the tail past the last full eight; the rows [`ROWS_AHEAD`] keys ahead prefetched
/// as the keys pass.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scores_rows<T: Wf, const R: usize>(
    q: &[f32],
    r0: usize,
    kb: &[T],
    hd: usize,
    scale: f32,
    s: &mut [f32],
    ahead: &[u8],
) {
    let nb = kb.len() / hd;
    let full = hd / 8 * 8;
    assert!(q.len() >= (r0 + R) * hd && s.len() >= (r0 + R) * nb);
    // Row r, key j's part past the last full eight (none when hd is a multiple of 8).
    let tail = |r: usize, j: usize| {
        let (qr, kj) = (&q[(r0 + r) * hd..][..hd], &kb[j * hd..][..hd]);
        let mut t = 0f32;
        for d in full..hd {
            t += qr[d] * kj[d].get();
        }
        t
    };
    let row = hd * std::mem::size_of::<T>();
    // Two keys at a time: 2·R independent FMA chains hide the FMA latency.
    let mut j = 0;
    while j < nb {
        let keys = (nb - j).min(2);
        prefetch_rows(kb.as_ptr() as *const u8, row, nb, j, keys, ahead);
        let k0 = kb.as_ptr().add(j * hd);
        let k1 = if keys == 2 { k0.add(hd) } else { k0 };
        let mut x = [_mm256_setzero_ps(); 8];
        for c in (0..full).step_by(8) {
            let (x0, x1) = (T::load8(k0.add(c)), T::load8(k1.add(c)));
            for r in 0..R {
                let q8 = _mm256_loadu_ps(q.as_ptr().add((r0 + r) * hd + c));
                x[r] = _mm256_fmadd_ps(q8, x0, x[r]);
                x[4 + r] = _mm256_fmadd_ps(q8, x1, x[4 + r]);
            }
        }
        // Lane 4t + r: row r, key j + t.
        let mut v = [0f32; 8];
        _mm256_storeu_ps(v.as_mut_ptr(), lanes8x8(x));
        for r in 0..R {
            for t in 0..keys {
                let sum = if full < hd {
                    v[4 * t + r] + tail(r, j + t)
                } else {
                    v[4 * t + r]
                };
                s[(r0 + r) * nb + j + t] = sum * scale;
            }
        }
        j += keys;
    }
}

/// Keys per register-blocked run of [`group_pv`] (32 keys of 128 f32 values: 16 KB, in L1).
const PV_KEYS: usize = 32;

/// Rows `r0..r0 + R` and keys `keys` of [`group_pv`]: per block of columns (sixteen, then eight,
/// then one by one) the rows' sums stay in registers while the keys pass; with `pf`, the first
/// pass over the keys issues their prefetches ([`prefetch_rows`], `pf` as its `ahead`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pv_rows<T: Wf, const R: usize>(
    p: &[f32],
    r0: usize,
    vb: &[T],
    hd: usize,
    keys: std::ops::Range<usize>,
    o: &mut [f32],
    pf: Option<&[u8]>,
) {
    let nb = vb.len() / hd;
    let (full16, full8) = (hd / 16 * 16, hd / 8 * 8);
    let row = hd * std::mem::size_of::<T>();
    assert!(o.len() >= (r0 + R) * hd && p.len() >= (r0 + R) * nb && keys.end <= nb);
    let (pp, vp, op) = (p.as_ptr(), vb.as_ptr(), o.as_mut_ptr());
    let orow = |r: usize, c: usize| op.add((r0 + r) * hd + c);
    let pj = |r: usize, j: usize| _mm256_broadcast_ss(&*pp.add((r0 + r) * nb + j));
    for c in (0..full16).step_by(16) {
        let mut a: [[__m256; 2]; R] =
            std::array::from_fn(|r| [_mm256_loadu_ps(orow(r, c)), _mm256_loadu_ps(orow(r, c + 8))]);
        for j in keys.clone() {
            if let (0, Some(ahead)) = (c, pf) {
                prefetch_rows(vp as *const u8, row, nb, j, 1, ahead);
            }
            let v = vp.add(j * hd + c);
            let (v0, v1) = (T::load8(v), T::load8(v.add(8)));
            for (r, ar) in a.iter_mut().enumerate() {
                let w = pj(r, j);
                ar[0] = _mm256_fmadd_ps(w, v0, ar[0]);
                ar[1] = _mm256_fmadd_ps(w, v1, ar[1]);
            }
        }
        for (r, ar) in a.iter().enumerate() {
            _mm256_storeu_ps(orow(r, c), ar[0]);
            _mm256_storeu_ps(orow(r, c + 8), ar[1]);
        }
    }
    if full16 < full8 {
        let c = full16;
        let mut a: [__m256; R] = std::array::from_fn(|r| _mm256_loadu_ps(orow(r, c)));
        for j in keys.clone() {
            let v0 = T::load8(vp.add(j * hd + c));
            for (r, ar) in a.iter_mut().enumerate() {
                *ar = _mm256_fmadd_ps(pj(r, j), v0, *ar);
            }
        }
        for (r, ar) in a.iter().enumerate() {
            _mm256_storeu_ps(orow(r, c), *ar);
        }
    }
    for r in 0..R {
        for j in keys.clone() {
            let w = *pp.add((r0 + r) * nb + j);
            for d in full8..hd {
                *orow(r, d) += w * (*vp.add(j * hd + d)).get();
            }
        }
    }
}

/// `s[i] = exp(s[i] − m)` in place; returns Σ s[i]. A Cephes-style `expf` (range reduction by
/// ln 2 in two parts, degree-6 polynomial), within 2 ulp for arguments ≥ −87 and exactly 0 below
/// (softmax arguments are ≤ 0). Twin: the loop with `f32::exp` in `attention::exp_sub_scalar`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn exp_sub_sum(s: &mut [f32], m: f32) -> f32 {
    let n = s.len();
    let p = s.as_mut_ptr();
    let mv = _mm256_set1_ps(m);
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), mv));
        _mm256_storeu_ps(p.add(i), e);
        acc = _mm256_add_ps(acc, e);
        i += 8;
    }
    let mut tail = 0f32;
    while i < n {
        let e = (*p.add(i) - m).exp();
        *p.add(i) = e;
        tail += e;
        i += 1;
    }
    lanes8(acc) + tail
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exp8(x: __m256) -> __m256 {
    let lo = _mm256_set1_ps(-87.0);
    let under = _mm256_cmp_ps::<_CMP_LT_OQ>(x, lo);
    let x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.0));
    let fx = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut y = _mm256_set1_ps(1.987_569_1e-4);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.398_2e-3));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.333_452e-3));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.166_579_6e-2));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.666_666_5e-1));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(0.5));
    y = _mm256_fmadd_ps(
        y,
        _mm256_mul_ps(r, r),
        _mm256_add_ps(r, _mm256_set1_ps(1.0)),
    );
    let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(fx),
        _mm256_set1_epi32(127),
    ));
    _mm256_andnot_ps(under, _mm256_mul_ps(y, _mm256_castsi256_ps(e)))
}

/// [`super::isa::Isa::exp_levels`] with AVX2: [`exp8`] on each whole group of eight (the lanes
/// of [`exp_sub_sum`]), `f32::exp` on the rest, then the levels; one pass.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exp_levels_avx2(s: &mut [f32], m: f32, pmax: f32, p: &mut [i16]) -> i32 {
    let n = s.len().min(p.len());
    let (sp, pp) = (s.as_ptr(), p.as_mut_ptr());
    let (mv, pm, half) = (_mm256_set1_ps(m), _mm256_set1_ps(pmax), _mm256_set1_ps(0.5));
    let mut acc = _mm256_setzero_si256();
    let mut i = 0;
    while i + 8 <= n {
        let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(sp.add(i)), mv));
        // Truncation of e·pmax + ½ ≥ 0 (the scalar `as i32`).
        let v = _mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(e, pm), half));
        acc = _mm256_add_epi32(acc, v);
        let v16 = _mm256_packs_epi32(v, v); // lanes 0..4 and 8..12 hold the eight levels
        let lo = _mm256_castsi256_si128(v16);
        let hi = _mm256_extracti128_si256::<1>(v16);
        _mm_storeu_si128(pp.add(i) as *mut __m128i, _mm_unpacklo_epi64(lo, hi));
        i += 8;
    }
    let mut lanes = [0i32; 8];
    _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, acc);
    let mut sum: i32 = lanes.iter().sum();
    for j in i..n {
        let e = (s[j] - m).exp();
        let v = (e * pmax + 0.5) as i32;
        p[j] = v as i16;
        sum += v;
    }
    sum
}

/// [`exp8`] on sixteen lanes: the same operations lane for lane, so the same bits.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn exp16(x: __m512) -> __m512 {
    let lo = _mm512_set1_ps(-87.0);
    let under = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, lo);
    let x = _mm512_min_ps(_mm512_max_ps(x, lo), _mm512_set1_ps(88.0));
    let fx = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.121_944_4e-4), r);
    let mut y = _mm512_set1_ps(1.987_569_1e-4);
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.398_2e-3));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(8.333_452e-3));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(4.166_579_6e-2));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.666_666_5e-1));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(0.5));
    y = _mm512_fmadd_ps(
        y,
        _mm512_mul_ps(r, r),
        _mm512_add_ps(r, _mm512_set1_ps(1.0)),
    );
    let e = _mm512_slli_epi32::<23>(_mm512_add_epi32(
        _mm512_cvtps_epi32(fx),
        _mm512_set1_epi32(127),
    ));
    _mm512_maskz_mov_ps(!under, _mm512_mul_ps(y, _mm512_castsi512_ps(e)))
}

/// [`super::isa::Isa::exp_levels`] with AVX-512: [`exp16`] on whole groups of sixteen, then
/// [`exp_levels_avx2`] on the rest (every element gets the exp it gets in [`exp_sub_sum`]: the
/// vector one in whole groups of eight, `f32::exp` after them).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn exp_levels_512(s: &mut [f32], m: f32, pmax: f32, p: &mut [i16]) -> i32 {
    let n = s.len().min(p.len());
    let (sp, pp) = (s.as_ptr(), p.as_mut_ptr());
    let (mv, pm, half) = (_mm512_set1_ps(m), _mm512_set1_ps(pmax), _mm512_set1_ps(0.5));
    let mut acc = _mm512_setzero_si512();
    let mut i = 0;
    while i + 16 <= n {
        let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(sp.add(i)), mv));
        let v = _mm512_cvttps_epi32(_mm512_add_ps(_mm512_mul_ps(e, pm), half));
        acc = _mm512_add_epi32(acc, v);
        _mm256_storeu_si256(pp.add(i) as *mut __m256i, _mm512_cvtepi32_epi16(v));
        i += 16;
    }
    _mm512_reduce_add_epi32(acc) + exp_levels_avx2(&mut s[i..n], m, pmax, &mut p[i..n])
}

// ---------------------------------------------------------------------------------------------
// The two x86 instruction sets.

/// [`Path::Avx2`]: AVX2 + FMA + F16C.
pub(crate) struct Avx2;

/// [`Path::Avx512`]: [`Avx2`] with the AVX-512 VNNI quantized decode kernels.
pub(crate) struct Avx512;

/// The grouped decode attention methods of an x86 [`Isa`], from module `$m`'s `group_scores`
/// and `group_pv` (this module's AVX2 forms, or [`attn512`]'s).
macro_rules! group_attention {
    ($($m:ident)::*) => {
        unsafe fn scores_f32(
            q: &[f32],
            kb: &[f32],
            hd: usize,
            scale: f32,
            s: &mut [f32],
            ahead: &[u8],
        ) {
            $($m)::*::group_scores(q, kb, hd, scale, s, ahead)
        }
        /// F16C widens the keys' values in registers (no scratch).
        unsafe fn scores_f16(
            q: &[f32],
            kb: &[f16],
            hd: usize,
            scale: f32,
            s: &mut [f32],
            _: &mut Vec<f32>,
            ahead: &[u8],
        ) {
            $($m)::*::group_scores(q, kb, hd, scale, s, ahead)
        }
        unsafe fn pv_f32(p: &[f32], vb: &[f32], hd: usize, o: &mut [f32], ahead: &[u8]) {
            $($m)::*::group_pv(p, vb, hd, o, ahead)
        }
        unsafe fn pv_f16(
            p: &[f32],
            vb: &[f16],
            hd: usize,
            o: &mut [f32],
            _: &mut Vec<f32>,
            ahead: &[u8],
        ) {
            $($m)::*::group_pv(p, vb, hd, o, ahead)
        }
    };
}

/// The [`Isa`] methods both x86 paths share (the AVX2 kernels).
macro_rules! avx2_isa {
    () => {
        type Gemm = Avx2Kernel;
        const FMA_FLOPS_PER_ITER: f64 = 192.0; // 12 chains × 8 lanes × 2
        unsafe fn quantize_row_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
            quantize_row_q8_0(x, out)
        }
        unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
            dot(a, b)
        }
        unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
            axpy(a, x, y)
        }
        unsafe fn scale(a: f32, y: &mut [f32]) {
            scale(a, y)
        }
        unsafe fn exp_sub_sum(s: &mut [f32], m: f32) -> f32 {
            exp_sub_sum(s, m)
        }
        unsafe fn fma_chains(iters: u64) -> f32 {
            fma_chains(iters)
        }
        unsafe fn sum_streams(x: &[f32], streams: usize) -> f32 {
            match streams {
                1 => sum_streams::<1>(x),
                2 => sum_streams::<2>(x),
                4 => sum_streams::<4>(x),
                _ => sum_streams::<8>(x),
            }
        }
    };
}

impl Isa for Avx2 {
    const PATH: Path = Path::Avx2;
    type IGemm = igemm::Avx2IKernel;
    type I16Gemm = igemm::Avx2I16Kernel;
    avx2_isa!();
    group_attention!(self);
    const IMR: usize = 4;
    const INR: usize = 16;
    /// [`exp_levels_avx2`].
    unsafe fn exp_levels(s: &mut [f32], m: f32, pmax: f32, p: &mut [i16]) -> i32 {
        exp_levels_avx2(s, m, pmax, p)
    }
    /// `vpmaddwd` ([`iattn::itile_4x16`]).
    unsafe fn itile(kp: usize, a: *const i32, lda: usize, b: *const i32, c: *mut i32, ldc: usize) {
        iattn::itile_4x16(kp, a, lda, b, c, ldc)
    }
    fn decoder(ty: GgmlType) -> Option<Decoder> {
        decoder::<false>(ty)
    }
    fn repacked_decoder(ty: GgmlType) -> Option<Decoder> {
        repack::repacked_decoder::<false>(ty)
    }
}

impl Isa for Avx512 {
    const PATH: Path = Path::Avx512;
    type IGemm = igemm::Avx512IKernel;
    type I16Gemm = igemm::Avx512I16Kernel;
    avx2_isa!();
    group_attention!(attn512);
    const IMR: usize = 8;
    const INR: usize = 32;
    /// [`exp_levels_512`].
    unsafe fn exp_levels(s: &mut [f32], m: f32, pmax: f32, p: &mut [i16]) -> i32 {
        exp_levels_512(s, m, pmax, p)
    }
    /// `vpdpwssd` ([`iattn::itile_8x32`]).
    unsafe fn itile(kp: usize, a: *const i32, lda: usize, b: *const i32, c: *mut i32, ldc: usize) {
        iattn::itile_8x32(kp, a, lda, b, c, ldc)
    }
    /// `vpdpwssd` on one zmm of columns ([`iattn::itile_8x16`]).
    unsafe fn itile_half(
        kp: usize,
        a: *const i32,
        lda: usize,
        b: *const i32,
        c: *mut i32,
        ldc: usize,
    ) {
        iattn::itile_8x16(kp, a, lda, b, c, ldc)
    }
    fn decoder(ty: GgmlType) -> Option<Decoder> {
        decoder::<true>(ty)
    }
    fn repacked_decoder(ty: GgmlType) -> Option<Decoder> {
        repack::repacked_decoder::<true>(ty)
    }
}

/// The packed GEMM's AVX2 micro-kernel and packing (both x86 paths).
pub(crate) struct Avx2Kernel;

impl Kernel for Avx2Kernel {
    const MR: usize = MR;
    const NR: usize = NR;
    unsafe fn pack_b(panel: Panel<'_>, out: &mut [f32]) {
        pack_b(panel, out)
    }
    unsafe fn kernel(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, acc: bool) {
        kernel_6x16(kc, a, b, c, ldc, acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`lanes8x8`] sums each of its eight vectors exactly as [`lanes8`] does, bit for bit.
    #[test]
    fn lanes8x8_is_lanes8_eight_times() {
        let ok = std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c");
        if !ok {
            return;
        }
        let mut s = 7u32;
        let mut next = || {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            ((s >> 8) as f32 / (1 << 24) as f32 - 0.5) * 10f32.powi((s % 7) as i32 - 3)
        };
        for _ in 0..200 {
            let v: [[f32; 8]; 8] = std::array::from_fn(|_| std::array::from_fn(|_| next()));
            // SAFETY: AVX2, FMA and F16C checked above.
            unsafe {
                let x = v.map(|r| _mm256_loadu_ps(r.as_ptr()));
                let mut got = [0f32; 8];
                _mm256_storeu_ps(got.as_mut_ptr(), lanes8x8(x));
                for (i, xi) in x.iter().enumerate() {
                    assert_eq!(got[i].to_bits(), lanes8(*xi).to_bits(), "vector {i}");
                }
            }
        }
    }
}
