//! The repacked-layout decode kernels of both x86 paths ([`super::super::repack`]): eight weight
//! rows per 256-bit register, one i32 / f32 lane per row, so nothing is reduced horizontally.

use std::arch::x86_64::*;

use super::super::intdot::{LaneKernel, LaneTile, Q4KX4_SUB};
use super::super::repack::{
    full_rows, rows_grouped, rows_q4_k, rows_split, BlockQ4_0x8, BlockQ4_Kx4, GroupDot,
    Q4kGroupDot, R, RK,
};
use super::super::types::{plain_act, ActQuant, Decoder, Job};
use super::super::{split_row_bytes, Q8Row};
use super::bytes::Avx2Ops;
use super::quantize_split;
use crate::quant::q4_k::BlockQ4_K;
use crate::quant::q5_k::BlockQ5_K;
use crate::quant::q6_k::BlockQ6_K;
use crate::quant::q8_k::BlockQ8_K;
use crate::GgmlType;

/// The AVX2 group kernel of [`BlockQ4_0x8`].
struct Q4x8;
/// The AVX-512 VNNI group kernel of [`BlockQ4_0x8`] (`vpdpbusd` on 256-bit registers).
struct Q4x8Vnni;

/// The f32 part of both group kernels: `block(b)` gives block `b`'s eight `Σq·x − 8Σx`, then the
/// steps of [`crate::quant::block_lanes`] lane-wise (product of the scales, product with the
/// sum, add; no FMA): eight block-lane accumulators and a tail, reduced in
/// [`crate::quant::lanes8`]'s order.
#[inline(always)]
unsafe fn group_f32(
    w: *const BlockQ4_0x8,
    nb: usize,
    x: Q8Row,
    isum: impl Fn(usize) -> __m256i,
) -> [f32; R] {
    let block = |b: usize| -> __m256 {
        let dw = _mm256_cvtph_ps(_mm_loadu_si128((*w.add(b)).d.as_ptr() as *const __m128i));
        let sc = _mm256_mul_ps(dw, _mm256_set1_ps(*x.d.add(b)));
        _mm256_mul_ps(sc, _mm256_cvtepi32_ps(isum(b)))
    };
    let mut acc = [_mm256_setzero_ps(); 8];
    let full = nb / 8 * 8;
    let mut g = 0;
    while g < full {
        for (l, a) in acc.iter_mut().enumerate() {
            *a = _mm256_add_ps(*a, block(g + l));
        }
        g += 8;
    }
    let mut tail = _mm256_setzero_ps();
    for b in full..nb {
        tail = _mm256_add_ps(tail, block(b));
    }
    let s = _mm256_add_ps(
        _mm256_add_ps(_mm256_add_ps(acc[0], acc[4]), _mm256_add_ps(acc[1], acc[5])),
        _mm256_add_ps(_mm256_add_ps(acc[2], acc[6]), _mm256_add_ps(acc[3], acc[7])),
    );
    let mut out = [0f32; R];
    _mm256_storeu_ps(out.as_mut_ptr(), _mm256_add_ps(s, tail));
    out
}

/// Chunk `c` of block `b`: the 32 nibble bytes (low, high nibbles) and the activation bytes of
/// values `4c..4c+4` and `16+4c..` broadcast to every lane.
#[inline(always)]
unsafe fn chunk(w: *const BlockQ4_0x8, x: Q8Row, b: usize, c: usize) -> [__m256i; 4] {
    let mask = _mm256_set1_epi8(0x0F);
    let v = _mm256_loadu_si256((*w.add(b)).qs.as_ptr().add(32 * c) as *const __m256i);
    let xq = (*x.qs.add(b)).0.as_ptr() as *const u8;
    [
        _mm256_and_si256(v, mask),
        _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask),
        _mm256_set1_epi32((xq.add(4 * c) as *const i32).read_unaligned()),
        _mm256_set1_epi32((xq.add(16 + 4 * c) as *const i32).read_unaligned()),
    ]
}

impl GroupDot for Q4x8Vnni {
    /// As [`Q4x8`], the integer sums with `vpdpbusd` (exact in i32). Twin: the portable
    /// repacked decoder (bit-exact).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
    unsafe fn dot8(w: *const BlockQ4_0x8, nb: usize, x: Q8Row) -> [f32; R] {
        group_f32(w, nb, x, |b| {
            let mut p = _mm256_setzero_si256();
            for c in 0..4 {
                let [lo, hi, xl, xh] = chunk(w, x, b, c);
                p = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(p, lo, xl), hi, xh);
            }
            _mm256_sub_epi32(p, _mm256_set1_epi32(8 * *x.s.add(b)))
        })
    }
}

impl GroupDot for Q4x8 {
    /// Per block: the 32 nibble bytes of chunk `c` (values `4c..4c+4` and `16+4c..` of all eight
    /// rows) meet the four activation bytes of those values broadcast to every lane
    /// (`vpmaddubsw`, unsigned nibbles 0..15); the i16 pairs of four chunks stay below
    /// 4·2·2·15·128 = 30720, and one `vpmaddwd` gives each row's Σq·x in its lane; the −8 offset
    /// comes out with the activation block sum. Then the f32 steps of
    /// [`crate::quant::block_lanes`] lane-wise (product of the scales, product with the sum, add;
    /// no FMA): eight block-lane accumulators and a tail, reduced in [`crate::quant::lanes8`]'s
    /// order. Twin: the portable repacked decoder (bit-exact).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot8(w: *const BlockQ4_0x8, nb: usize, x: Q8Row) -> [f32; R] {
        let ones = _mm256_set1_epi16(1);
        group_f32(w, nb, x, |b| {
            let mut p = _mm256_setzero_si256();
            for c in 0..4 {
                let [lo, hi, xl, xh] = chunk(w, x, b, c);
                p = _mm256_add_epi16(
                    p,
                    _mm256_add_epi16(_mm256_maddubs_epi16(lo, xl), _mm256_maddubs_epi16(hi, xh)),
                );
            }
            _mm256_sub_epi32(
                _mm256_madd_epi16(p, ones),
                _mm256_set1_epi32(8 * *x.s.add(b)),
            )
        })
    }
}

/// The repacked Q4_0 decode on [`super::Avx2`]. Twin: the portable repacked decoder.
///
/// # Safety
/// AVX2/FMA/F16C available; as [`rows_split`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_q4_0(job: &Job<'_>, rows: std::ops::Range<usize>) {
    rows_split::<Q4x8>(job, rows)
}

/// [`rows_q4_0`] on [`super::Avx512`] (VNNI), the same results bit for bit.
///
/// # Safety
/// As [`rows_q4_0`], and AVX-512 F/BW/VL/VNNI/VBMI available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
unsafe fn rows_q4_0_vnni(job: &Job<'_>, rows: std::ops::Range<usize>) {
    rows_split::<Q4x8Vnni>(job, rows)
}

/// The AVX-512 group kernel of [`BlockQ4_Kx4`]: per row and block, the 128 nibble bytes as two
/// 512-bit registers (`and` / shift: four sub-block pairs against contiguous 64-byte activation
/// chunks), `vpmaddubsw` (exact i16 pairs: |2·15·127| < 2¹⁵), then `vpdpwssd` with the pair's
/// scales (one byte shuffle of the row's sixteen scale/minimum bytes per register); the two
/// halves of the i32 accumulator summed give the eight lanes of
/// [`crate::quant::LaneDot::lanes`]. The minimum lanes are one `vpmaddwd` of the activation sums
/// with `[m0, m0, m1, m1, …]`; the four rows' `(d, dmin)` one conversion. The f32 steps are
/// [`Q4kx4Lanes`]' (twin: the portable repacked decoder, bit-exact).
struct Q4kx4Vnni;

/// The `vpshufb` controls turning a row's `[sc0..sc8, m0..m8]` (in every 128-bit lane) into the
/// `vpdpwssd` operand of sub-blocks `2k, 2k + 1`: words of `sc[2k]` in the low 256 bits, of
/// `sc[2k + 1]` in the high (zero-extended bytes).
#[inline(always)]
unsafe fn q4kx4_scale_ctl(k: usize) -> __m512i {
    let word = |j: usize| (0x8000 | j as i32) as i16;
    let lo = _mm256_set1_epi16(word(2 * k));
    let hi = _mm256_set1_epi16(word(2 * k + 1));
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// The `vpshufb` control turning `[sc0..sc8, m0..m8]` (both 128-bit lanes) into
/// `[m0, m0, m1, m1, …, m7, m7]` (zero-extended words).
#[inline(always)]
unsafe fn q4kx4_min_ctl() -> __m256i {
    let b: [u8; 32] = std::array::from_fn(|i| {
        if i % 2 == 1 {
            0x80
        } else {
            (8 + 4 * (i / 16) + (i % 16) / 4) as u8
        }
    });
    _mm256_loadu_si256(b.as_ptr() as *const __m256i)
}

impl Q4kGroupDot for Q4kx4Vnni {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
    unsafe fn dot4(w: *const BlockQ4_Kx4, nb: usize, x: *const BlockQ8_K) -> [f32; RK] {
        let m4 = _mm512_set1_epi8(0x0F);
        let ctl: [__m512i; 4] = std::array::from_fn(|k| q4kx4_scale_ctl(k));
        let mctl = q4kx4_min_ctl();
        let mut acc = [_mm256_setzero_ps(); RK];
        let mut accm = [_mm256_setzero_ps(); RK];
        for b in 0..nb {
            let (wb, xb) = (w.add(b), x.add(b));
            let xq = (*xb).qs.as_ptr();
            let xv: [__m512i; 4] =
                std::array::from_fn(|k| _mm512_loadu_si512(xq.add(64 * k) as *const _));
            let bs = _mm256_loadu_si256((*xb).bsums.as_ptr() as *const __m256i);
            // [d0·dx, dmin0·dx, d1·dx, …]: the products of LaneDot::scales.
            let dm = _mm256_cvtph_ps(_mm_loadu_si128((*wb).dm.as_ptr() as *const __m128i));
            let s = _mm256_mul_ps(dm, _mm256_set1_ps((*xb).d));
            for r in 0..RK {
                let scm = _mm_loadu_si128((*wb).scm[r].as_ptr() as *const __m128i);
                let bc = _mm512_broadcast_i32x4(scm);
                let qs = (*wb).qs[r].as_ptr();
                let q0 = _mm512_loadu_si512(qs as *const _);
                let q1 = _mm512_loadu_si512(qs.add(64) as *const _);
                let lv = [
                    _mm512_and_si512(q0, m4),
                    _mm512_and_si512(_mm512_srli_epi16::<4>(q0), m4),
                    _mm512_and_si512(q1, m4),
                    _mm512_and_si512(_mm512_srli_epi16::<4>(q1), m4),
                ];
                let p = |k: usize| _mm512_maddubs_epi16(lv[k], xv[k]);
                let sc = |k: usize| _mm512_shuffle_epi8(bc, ctl[k]);
                let mut a = _mm512_madd_epi16(p(0), sc(0));
                for k in 1..4 {
                    a = super::dpwssd(a, p(k), sc(k));
                }
                let i =
                    _mm256_add_epi32(_mm512_castsi512_si256(a), _mm512_extracti64x4_epi64::<1>(a));
                let mn =
                    _mm256_madd_epi16(bs, _mm256_shuffle_epi8(_mm256_set_m128i(scm, scm), mctl));
                let d = _mm256_permutevar8x32_ps(s, _mm256_set1_epi32(2 * r as i32));
                let dmin = _mm256_permutevar8x32_ps(s, _mm256_set1_epi32(2 * r as i32 + 1));
                acc[r] = _mm256_add_ps(acc[r], _mm256_mul_ps(d, _mm256_cvtepi32_ps(i)));
                accm[r] = _mm256_add_ps(accm[r], _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(mn)));
            }
        }
        std::array::from_fn(|r| fsum(acc[r]) - fsum(accm[r]))
    }
}

/// The `vpshufb` control turning `[sc0..sc8, m0..m8]` (both 128-bit lanes) into `sc[j]` in every
/// word (zero-extended). (LLVM loads it with a word broadcast, which measured faster than a full
/// 256-bit memory operand: 6.0 against 7.2 ns per 256 weights.)
#[inline(always)]
unsafe fn scale_ctl(j: usize) -> __m256i {
    _mm256_set1_epi16((0x8000 | j) as i16)
}

/// The AVX2 group kernel of [`BlockQ4_Kx4`]: [`Q4kx4Vnni`]'s steps on 256-bit registers (one
/// sub-block of 32 levels per register, `vpmaddwd` + `vpaddd` for `vpdpwssd`), the four rows
/// unrolled so every accumulator stays in a register. Twin: the portable repacked decoder
/// (bit-exact).
struct Q4kx4Avx2;

impl Q4kGroupDot for Q4kx4Avx2 {
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot4(w: *const BlockQ4_Kx4, nb: usize, x: *const BlockQ8_K) -> [f32; RK] {
        let m4 = _mm256_set1_epi8(0x0F);
        let mctl = q4kx4_min_ctl();
        let mut acc = [_mm256_setzero_ps(); RK];
        let mut accm = [_mm256_setzero_ps(); RK];
        for b in 0..nb {
            let (wb, xb) = (w.add(b), x.add(b));
            let xq = (*xb).qs.as_ptr();
            let bs = _mm256_loadu_si256((*xb).bsums.as_ptr() as *const __m256i);
            let dm = _mm256_cvtph_ps(_mm_loadu_si128((*wb).dm.as_ptr() as *const __m128i));
            let s = _mm256_mul_ps(dm, _mm256_set1_ps((*xb).d));
            // One weight row (a macro: every accumulator stays in a register).
            macro_rules! row {
                ($r:expr) => {{
                    let scm = _mm_loadu_si128((*wb).scm[$r].as_ptr() as *const __m128i);
                    let bc = _mm256_set_m128i(scm, scm);
                    let qs = (*wb).qs[$r].as_ptr();
                    let mut a = _mm256_setzero_si256();
                    for (c, &(jl, jh)) in Q4KX4_SUB.iter().enumerate() {
                        let q = _mm256_loadu_si256(qs.add(32 * c) as *const __m256i);
                        let lo = _mm256_and_si256(q, m4);
                        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
                        let xl = _mm256_loadu_si256(xq.add(32 * jl) as *const __m256i);
                        let xh = _mm256_loadu_si256(xq.add(32 * jh) as *const __m256i);
                        let sl = _mm256_shuffle_epi8(bc, scale_ctl(jl));
                        let sh = _mm256_shuffle_epi8(bc, scale_ctl(jh));
                        let pl = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, xl), sl);
                        let ph = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, xh), sh);
                        a = _mm256_add_epi32(a, _mm256_add_epi32(pl, ph));
                    }
                    let mn = _mm256_madd_epi16(bs, _mm256_shuffle_epi8(bc, mctl));
                    let d = _mm256_permutevar8x32_ps(s, _mm256_set1_epi32(2 * $r));
                    let dmin = _mm256_permutevar8x32_ps(s, _mm256_set1_epi32(2 * $r + 1));
                    acc[$r] = _mm256_add_ps(acc[$r], _mm256_mul_ps(d, _mm256_cvtepi32_ps(a)));
                    accm[$r] = _mm256_add_ps(accm[$r], _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(mn)));
                }};
            }
            row!(0);
            row!(1);
            row!(2);
            row!(3);
        }
        std::array::from_fn(|r| fsum(acc[r]) - fsum(accm[r]))
    }
}

/// The lanes reduced in [`crate::quant::lanes8`]'s order.
#[inline(always)]
unsafe fn fsum(a: __m256) -> f32 {
    let p = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
    let h = _mm_hadd_ps(p, p);
    _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)))
}

/// The repacked Q4_K decode on [`super::Avx2`]: the shared group kernel over the AVX2 byte
/// operations, leftover rows in place. Twin: the portable repacked decoder.
///
/// # Safety
/// AVX2/FMA/F16C available; as [`rows_q4_k`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_q4_k_avx2(job: &Job<'_>, rows: std::ops::Range<usize>) {
    rows_q4_k::<Q4kx4Avx2>(job, rows, super::decode_lane::<BlockQ4_K>)
}

/// [`rows_q4_k_avx2`] on [`super::Avx512`] ([`Q4kx4Vnni`]), the same results bit for bit.
///
/// # Safety
/// As [`rows_q4_k_avx2`], and AVX-512 F/BW/VL/VNNI/VBMI available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
unsafe fn rows_q4_k_vnni(job: &Job<'_>, rows: std::ops::Range<usize>) {
    rows_q4_k::<Q4kx4Vnni>(job, rows, super::decode_lane::<BlockQ4_K>)
}

/// The block-interleaved K-quant decode on both x86 paths: the in-place lane tiles stepping
/// over the interleaved blocks. Twin: the portable repacked decoder.
///
/// # Safety
/// AVX2/FMA/F16C available; `job.w` a repacked matrix of type `B`; as [`rows_grouped`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_lane<B: LaneKernel>(job: &Job<'_>, rows: std::ops::Range<usize>) {
    let full = full_rows(B::TYPE, job.out.m);
    rows_grouped(LaneTile::<B, Avx2Ops>::repacked(job), job, full, rows)
}

/// The repacked decode kernels of [`super::Avx2`] (`VNNI = false`) and [`super::Avx512`].
pub(super) fn repacked_decoder<const VNNI: bool>(ty: GgmlType) -> Option<Decoder> {
    fn lane<B: LaneKernel>() -> Option<Decoder> {
        Some(Decoder {
            act: Some(plain_act::<B::VecDot>()),
            rows: rows_lane::<B>,
        })
    }
    match ty {
        GgmlType::Q4_K => Some(Decoder {
            act: Some(plain_act::<BlockQ8_K>()),
            rows: if VNNI { rows_q4_k_vnni } else { rows_q4_k_avx2 },
        }),
        GgmlType::Q5_K => lane::<BlockQ5_K>(),
        GgmlType::Q6_K => lane::<BlockQ6_K>(),
        GgmlType::Q4_0 => Some(Decoder {
            act: Some(ActQuant {
                row_bytes: split_row_bytes,
                quantize: quantize_split::<1>,
            }),
            rows: if VNNI { rows_q4_0_vnni } else { rows_q4_0 },
        }),
        _ => None,
    }
}
