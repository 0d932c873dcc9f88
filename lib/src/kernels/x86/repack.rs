//! The repacked-layout decode kernels of both x86 paths ([`super::super::repack`]): eight weight
//! rows per 256-bit register (sixteen per 512-bit one for Q4_K, Q5_K and Q6_K on AVX-512), one
//! i32 / f32 lane per row, so nothing is reduced horizontally. Each kernel also takes several
//! activation rows per pass over its weights (prompts): the weights unpacked once for all of
//! them, each row's arithmetic that of one.

use std::arch::x86_64::*;

use super::super::repack::{
    rows_split, rows_x16, BlockQ4_0x8, BlockQ4_1x8, BlockQ4_Kx16, BlockQ5_Kx16, BlockQ6_Kx16,
    BlockQ8_0x8, GroupDot, Kx16Family, X16Dot, X8Block, R, R16,
};
use super::super::types::{plain_act, ActQuant, Decoder, Job};
use super::super::{split_row_bytes, Q8Row};
use super::quantize_split;
use super::Ahead;
use crate::quant::q4_k::BlockQ4_K;
use crate::quant::q5_k::BlockQ5_K;
use crate::quant::q8_k::BlockQ8_K;
use crate::GgmlType;

/// The AVX2 group kernel of a ×8 layout `G` (Q4_0 ×8, Q4_1 ×8).
struct Q4x8<G>(std::marker::PhantomData<G>);
/// The AVX-512 VNNI group kernel of a ×8 layout `G` (`vpdpbusd` on 256-bit registers).
struct Q4x8Vnni<G>(std::marker::PhantomData<G>);

/// A ×8 layout's block values in one register, one f32 lane per row: [`X8Block::value`] with
/// the same roundings.
trait X8Values: X8Block {
    /// Block `b`'s eight values from the rows' `raw` sums (i32 lanes), the activation block's
    /// scale `dx` and sum `sx`.
    ///
    /// # Safety
    /// AVX2/FMA/F16C available; block `b` exists at `w`.
    unsafe fn values(w: *const Self, b: usize, raw: __m256i, dx: f32, sx: i32) -> __m256;
}

/// The eight f16 at `p` as f32.
#[inline(always)]
unsafe fn f16x8(p: *const half::f16) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
}

impl X8Values for BlockQ4_0x8 {
    /// `(d·dx)·(raw − 8·sx)`.
    #[inline(always)]
    unsafe fn values(w: *const Self, b: usize, raw: __m256i, dx: f32, sx: i32) -> __m256 {
        let sc = _mm256_mul_ps(f16x8((*w.add(b)).d.as_ptr()), _mm256_set1_ps(dx));
        let i = _mm256_sub_epi32(raw, _mm256_set1_epi32(8 * sx));
        _mm256_mul_ps(sc, _mm256_cvtepi32_ps(i))
    }
}

impl X8Values for BlockQ4_1x8 {
    /// `(d·dx)·raw + (m·dx)·sx`.
    #[inline(always)]
    unsafe fn values(w: *const Self, b: usize, raw: __m256i, dx: f32, sx: i32) -> __m256 {
        let (blk, dx) = (&*w.add(b), _mm256_set1_ps(dx));
        let sc = _mm256_mul_ps(f16x8(blk.d.as_ptr()), dx);
        let mn = _mm256_mul_ps(f16x8(blk.m.as_ptr()), dx);
        _mm256_add_ps(
            _mm256_mul_ps(sc, _mm256_cvtepi32_ps(raw)),
            _mm256_mul_ps(mn, _mm256_set1_ps(sx as f32)),
        )
    }
}

impl X8Values for BlockQ8_0x8 {
    /// `(d·dx)·raw`.
    #[inline(always)]
    unsafe fn values(w: *const Self, b: usize, raw: __m256i, dx: f32, _sx: i32) -> __m256 {
        let sc = _mm256_mul_ps(f16x8((*w.add(b)).d.as_ptr()), _mm256_set1_ps(dx));
        _mm256_mul_ps(sc, _mm256_cvtepi32_ps(raw))
    }
}

/// The AVX2 group kernel of a layout of signed bytes (Q8_0 ×8).
struct Q8x8<G>(std::marker::PhantomData<G>);
/// The AVX-512 VNNI group kernel of a layout of signed bytes (`vpdpbusd` on 256-bit registers).
struct Q8x8Vnni<G>(std::marker::PhantomData<G>);

/// Chunk `c` (of eight) of Q8_0 ×8 block `b`: values `4c..4c+4` of the eight rows (`ahead` told
/// of the load).
#[inline(always)]
unsafe fn chunk8<G: X8Block>(w: *const G, b: usize, c: usize, ahead: &mut Ahead) -> __m256i {
    let p = (*w.add(b)).qs_ptr().add(32 * c);
    ahead.at(p);
    _mm256_loadu_si256(p as *const __m256i)
}

/// The activation bytes of values `4c..4c+4` of block `b` of `x`, broadcast to every lane.
#[inline(always)]
unsafe fn x_chunk8(x: Q8Row, b: usize, c: usize) -> __m256i {
    let xq = (*x.qs.add(b)).0.as_ptr() as *const u8;
    _mm256_set1_epi32((xq.add(4 * c) as *const i32).read_unaligned())
}

/// [`Q8x8Vnni`] against `NX` activation rows: per chunk the weight bytes offset to unsigned
/// (`w + 128`, one xor for all rows) meet the broadcast activation bytes in `vpdpbusd` (exact in
/// i32: at most 8·4·255·128 per lane), then `−128·Σx` gives each row's `Σw·x`; then
/// [`group_f32`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
unsafe fn q8x8_vnni<G: X8Values, const NX: usize>(
    w: *const G,
    nb: usize,
    x: [Q8Row; NX],
) -> [[f32; R]; NX] {
    let mut ahead = Ahead::new(w as *const u8);
    let bias = _mm256_set1_epi8(-128);
    group_f32(w, nb, x, |b| {
        let mut p = [_mm256_setzero_si256(); NX];
        for c in 0..8 {
            let u = _mm256_xor_si256(chunk8(w, b, c, &mut ahead), bias);
            for (p, &x) in p.iter_mut().zip(&x) {
                *p = _mm256_dpbusd_epi32(*p, u, x_chunk8(x, b, c));
            }
        }
        std::array::from_fn(|t| _mm256_sub_epi32(p[t], _mm256_set1_epi32(128 * *x[t].s.add(b))))
    })
}

/// [`Q8x8`] against `NX` activation rows: per chunk `vpmaddubsw` of `|w|` with the activation
/// bytes carrying `w`'s sign (`|x| ≤ 127` for Q8_0 activations, so the i16 pairs stay within
/// 2·128·127), `vpmaddwd` to i32, summed over the eight chunks; then [`group_f32`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8x8_avx2<G: X8Values, const NX: usize>(
    w: *const G,
    nb: usize,
    x: [Q8Row; NX],
) -> [[f32; R]; NX] {
    let ones = _mm256_set1_epi16(1);
    let mut ahead = Ahead::new(w as *const u8);
    group_f32(w, nb, x, |b| {
        let mut p = [_mm256_setzero_si256(); NX];
        for c in 0..8 {
            let v = chunk8(w, b, c, &mut ahead);
            let a = _mm256_abs_epi8(v);
            for (p, &x) in p.iter_mut().zip(&x) {
                let sx = _mm256_sign_epi8(x_chunk8(x, b, c), v);
                let prod = _mm256_madd_epi16(_mm256_maddubs_epi16(a, sx), ones);
                *p = _mm256_add_epi32(*p, prod);
            }
        }
        p
    })
}

/// The f32 part of every ×8 group kernel, for `NX` activation rows: `raw(b)` gives block `b`'s
/// eight `Σq·x` of each row (unsigned nibbles), [`X8Values::values`] the block values, then the
/// steps of [`crate::quant::block_lanes_f32`] lane-wise: eight block-lane accumulators and a tail
/// per row, reduced in [`crate::quant::lanes8`]'s order.
#[inline(always)]
unsafe fn group_f32<G: X8Values, const NX: usize>(
    w: *const G,
    nb: usize,
    x: [Q8Row; NX],
    mut raw: impl FnMut(usize) -> [__m256i; NX],
) -> [[f32; R]; NX] {
    let mut block = |b: usize| -> [__m256; NX] {
        let is = raw(b);
        std::array::from_fn(|t| G::values(w, b, is[t], *x[t].d.add(b), *x[t].s.add(b)))
    };
    let mut acc = [[_mm256_setzero_ps(); 8]; NX];
    let full = nb / 8 * 8;
    let mut g = 0;
    while g < full {
        for l in 0..8 {
            let v = block(g + l);
            for (a, v) in acc.iter_mut().zip(v) {
                a[l] = _mm256_add_ps(a[l], v);
            }
        }
        g += 8;
    }
    let mut tail = [_mm256_setzero_ps(); NX];
    for b in full..nb {
        for (t, v) in tail.iter_mut().zip(block(b)) {
            *t = _mm256_add_ps(*t, v);
        }
    }
    let mut out = [[0f32; R]; NX];
    for ((o, acc), tail) in out.iter_mut().zip(&acc).zip(tail) {
        let s = _mm256_add_ps(
            _mm256_add_ps(_mm256_add_ps(acc[0], acc[4]), _mm256_add_ps(acc[1], acc[5])),
            _mm256_add_ps(_mm256_add_ps(acc[2], acc[6]), _mm256_add_ps(acc[3], acc[7])),
        );
        _mm256_storeu_ps(o.as_mut_ptr(), _mm256_add_ps(s, tail));
    }
    out
}

/// Chunk `c` of block `b`: the 32 nibble bytes as low and high nibbles (`ahead` told of the load).
#[inline(always)]
unsafe fn chunk<G: X8Block>(w: *const G, b: usize, c: usize, ahead: &mut Ahead) -> [__m256i; 2] {
    let mask = _mm256_set1_epi8(0x0F);
    let p = (*w.add(b)).qs_ptr().add(32 * c);
    ahead.at(p);
    let v = _mm256_loadu_si256(p as *const __m256i);
    [
        _mm256_and_si256(v, mask),
        _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask),
    ]
}

/// The activation bytes of values `4c..4c+4` and `16+4c..` of block `b` of `x`, broadcast to
/// every lane.
#[inline(always)]
unsafe fn x_chunk(x: Q8Row, b: usize, c: usize) -> [__m256i; 2] {
    let xq = (*x.qs.add(b)).0.as_ptr() as *const u8;
    [
        _mm256_set1_epi32((xq.add(4 * c) as *const i32).read_unaligned()),
        _mm256_set1_epi32((xq.add(16 + 4 * c) as *const i32).read_unaligned()),
    ]
}

/// [`Q4x8Vnni`] against `NX` activation rows (each chunk's nibbles unpacked once for all), each
/// row's arithmetic that of one: per block `vpdpbusd` of the nibbles with the broadcast
/// activation bytes (exact in i32), then [`group_f32`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
unsafe fn q4x8_vnni<G: X8Values, const NX: usize>(
    w: *const G,
    nb: usize,
    x: [Q8Row; NX],
) -> [[f32; R]; NX] {
    let mut ahead = Ahead::new(w as *const u8);
    group_f32(w, nb, x, |b| {
        let mut p = [_mm256_setzero_si256(); NX];
        for c in 0..4 {
            let [lo, hi] = chunk(w, b, c, &mut ahead);
            for (p, &x) in p.iter_mut().zip(&x) {
                let [xl, xh] = x_chunk(x, b, c);
                *p = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(*p, lo, xl), hi, xh);
            }
        }
        p
    })
}

/// [`Q4x8`] against `NX` activation rows (each chunk's nibbles unpacked once for all), each
/// row's arithmetic that of one: per block the 32 nibble bytes of chunk `c` (values `4c..4c+4`
/// and `16+4c..` of all eight rows) meet the four activation bytes of those values broadcast to
/// every lane (`vpmaddubsw`, unsigned nibbles 0..15); the i16 pairs of four chunks stay below
/// 4·2·2·15·128 = 30720, and one `vpmaddwd` gives each row's Σq·x in its lane; then
/// [`group_f32`] (where Q4_0's −8 offset comes out with the activation block sum).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4x8_avx2<G: X8Values, const NX: usize>(
    w: *const G,
    nb: usize,
    x: [Q8Row; NX],
) -> [[f32; R]; NX] {
    let ones = _mm256_set1_epi16(1);
    let mut ahead = Ahead::new(w as *const u8);
    group_f32(w, nb, x, |b| {
        let mut p = [_mm256_setzero_si256(); NX];
        for c in 0..4 {
            let [lo, hi] = chunk(w, b, c, &mut ahead);
            for (p, &x) in p.iter_mut().zip(&x) {
                let [xl, xh] = x_chunk(x, b, c);
                *p = _mm256_add_epi16(
                    *p,
                    _mm256_add_epi16(_mm256_maddubs_epi16(lo, xl), _mm256_maddubs_epi16(hi, xh)),
                );
            }
        }
        std::array::from_fn(|t| _mm256_madd_epi16(p[t], ones))
    })
}

/// `v` (the results of `N` activation rows) in the first `N` entries of four, the rest zero: what
/// `dot8n` / `dot16n` return.
#[inline(always)]
fn widen<const N: usize, const W: usize>(v: [[f32; W]; N]) -> [[f32; W]; 4] {
    std::array::from_fn(|t| if t < N { v[t] } else { [0.0; W] })
}

/// The [`GroupDot`] impl of a ×8 kernel `$kernel<G>` whose body is `$inner::<G, NX>`, with
/// `$feat` enabled: `dot8` is one row, `dot8n` up to `$nx` rows (the `$arm` counts below `$nx`
/// by their own instances). Twin: the portable repacked decoder (bit-exact).
macro_rules! group_dot {
    ($kernel:ident, $inner:ident, $feat:literal, $nx:literal, [$($arm:literal),*]) => {
        impl<G: X8Values> GroupDot for $kernel<G> {
            type G = G;
            const NX: usize = $nx;
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn dot8(w: *const G, nb: usize, x: Q8Row) -> [f32; R] {
                $inner::<G, 1>(w, nb, [x])[0]
            }
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn dot8n(w: *const G, nb: usize, x: [Q8Row; 4], nx: usize) -> [[f32; R]; 4] {
                match nx {
                    $($arm => widen($inner::<G, $arm>(w, nb, std::array::from_fn(|t| x[t]))),)*
                    _ => widen($inner::<G, $nx>(w, nb, std::array::from_fn(|t| x[t]))),
                }
            }
        }
    };
}

group_dot!(
    Q4x8Vnni,
    q4x8_vnni,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c",
    4,
    [1, 2, 3]
);
group_dot!(Q4x8, q4x8_avx2, "avx2,fma,f16c", 4, [1, 2, 3]);
group_dot!(
    Q8x8Vnni,
    q8x8_vnni,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c",
    4,
    [1, 2, 3]
);
group_dot!(Q8x8, q8x8_avx2, "avx2,fma,f16c", 4, [1, 2, 3]);

/// The repacked decode of a ×8 layout on [`super::Avx2`] with group kernel `D`. Twin: the
/// portable repacked decoder.
///
/// # Safety
/// AVX2/FMA/F16C available; as [`rows_split`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_x8<D: GroupDot>(job: &Job<'_>, rows: std::ops::Range<usize>) {
    rows_split::<D>(job, rows)
}

/// [`rows_x8`] on [`super::Avx512`] (VNNI kernels `D`), the same results bit for bit.
///
/// # Safety
/// As [`rows_x8`], and AVX-512 F/BW/VL/VNNI/VBMI available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
unsafe fn rows_x8_vnni<D: GroupDot>(job: &Job<'_>, rows: std::ops::Range<usize>) {
    rows_split::<D>(job, rows)
}

/// The decoder of a ×8 layout: group kernel `A` on AVX2, `V` on AVX-512, split activations.
fn x8_decoder<A: GroupDot, V: GroupDot>(vnni: bool) -> Option<Decoder> {
    Some(Decoder {
        act: Some(ActQuant {
            row_bytes: split_row_bytes,
            quantize: quantize_split::<1>,
        }),
        rows: if vnni {
            rows_x8_vnni::<V>
        } else {
            rows_x8::<A>
        },
    })
}

/// The eight sub-block sums `bsums[2j] + bsums[2j + 1]` of an activation block (i16: at most
/// 32·128 in magnitude), pairs `(2p, 2p + 1)` in dword `p`.
///
/// # Safety
/// AVX2 available; `xb` points to a block.
#[inline(always)]
unsafe fn q4kx16_pair_sums(xb: *const BlockQ8_K) -> [i32; 4] {
    let bs = _mm256_loadu_si256((*xb).bsums.as_ptr() as *const __m256i);
    let s = _mm_hadd_epi16(
        _mm256_castsi256_si128(bs),
        _mm256_extracti128_si256::<1>(bs),
    );
    std::mem::transmute::<__m128i, [i32; 4]>(s)
}

/// The four activation bytes of values `i..i + 4` as one i32 (to broadcast).
///
/// # Safety
/// `xq[i..i + 4]` readable.
#[inline(always)]
unsafe fn x4(xq: *const i8, i: usize) -> i32 {
    (xq.add(i) as *const i32).read_unaligned()
}

/// The [`X16Dot`] impl of a ×16 kernel `$kernel` of layout `$g` whose body is
/// `$inner::<NX>(w, nb, x: [_; NX])`, with `$feat` enabled: `dot16` is one row, `dot16n` up to
/// `$nx` rows (the `$arms` counts below `$nx` by their own instances).
macro_rules! x16_dot {
    ($kernel:ident, $g:ty, $inner:ident, $feat:literal, $nx:literal, [$($arm:literal),*]) => {
        impl X16Dot for $kernel {
            type G = $g;
            const NX: usize = $nx;
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn dot16(w: *const $g, nb: usize, x: *const BlockQ8_K) -> [f32; R16] {
                $inner::<1>(w, nb, [x])[0]
            }
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn dot16n(
                w: *const $g,
                nb: usize,
                x: [*const BlockQ8_K; 4],
                nx: usize,
            ) -> [[f32; R16]; 4] {
                match nx {
                    $($arm => widen($inner::<$arm>(w, nb, std::array::from_fn(|t| x[t]))),)*
                    _ => widen($inner::<$nx>(w, nb, std::array::from_fn(|t| x[t]))),
                }
            }
        }
    };
}

/// The AVX-512 VNNI group kernel of [`BlockQ4_Kx16`]: per block and 64-value group `g`, the
/// eight 64-byte chunks `qs[g][c]` (values `4c..4c+4` of sub-blocks `2g` and `2g + 1` of all
/// sixteen rows) meet the four activation bytes of those values broadcast to every lane:
/// `vpdpbusd` of the low nibbles (`and 0x0F`) gives each row's `dot₂g` in its i32 lane, of the
/// high nibbles kept in place (`and 0xF0`: 16·level ≤ 240, still an unsigned byte) `16·dot₂g₊₁`
/// (exact: |32·240·128| < 2³¹), shifted back exactly; each times the row's scale
/// (`vpmovzxbd`, `vpmulld`). The minimum sums are four `vpdpwssd` of the rows' minimum pairs
/// (zero-extended words) with the broadcast pair of sub-block sums. Then one f32 lane per row:
/// `acc += (d·dx)·isum`, `accm += (dmin·dx)·msum` (no FMA). Twin:
/// [`super::super::repack::q4_kx16_dot`] (bit-exact).
struct Q4kx16Vnni;

x16_dot!(
    Q4kx16Vnni,
    BlockQ4_Kx16,
    q4kx16_vnni,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c",
    4,
    [1, 2, 3]
);

/// The Q4_K family's ×16 layouts in [`kx16_vnni`]: the levels of one 64-byte chunk.
trait Kx16Levels512: Kx16Family {
    /// Whether the high levels come out as 16·level (kept in place by a mask, the sums shifted
    /// back exactly) rather than as levels.
    const HI_X16: bool;
    /// The chunk `qs[g][c]` of block `wb` (loaded as `v`) as two registers of unsigned levels:
    /// values `64g + 4c..+4` (sub-block `2g`) and `64g + 32 + 4c..+4` (sub-block `2g + 1`) of
    /// the sixteen rows, one i32 lane per row.
    ///
    /// # Safety
    /// AVX-512 F/BW available.
    unsafe fn levels(wb: &Self, g: usize, c: usize, v: __m512i) -> (__m512i, __m512i);
}

impl Kx16Levels512 for BlockQ4_Kx16 {
    const HI_X16: bool = true;
    /// `and 0x0F`, `and 0xF0`.
    #[inline(always)]
    unsafe fn levels(_: &Self, _: usize, _: usize, v: __m512i) -> (__m512i, __m512i) {
        let lo_m = _mm512_set1_epi8(0x0F);
        (_mm512_and_si512(v, lo_m), _mm512_andnot_si512(lo_m, v))
    }
}

impl Kx16Levels512 for BlockQ5_Kx16 {
    const HI_X16: bool = false;
    /// Each nibble (`and 0x0F`; `vpsrlw 4`, `and 0x0F`) plus 16 where its byte mask `hb[g][c][h]`
    /// has the fifth bit (`vpaddb` under the mask).
    #[inline(always)]
    unsafe fn levels(wb: &Self, g: usize, c: usize, v: __m512i) -> (__m512i, __m512i) {
        let (m4, sixteen) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(16));
        let lo = _mm512_and_si512(v, m4);
        let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), m4);
        let [kl, kh] = wb.hb[g][c];
        (
            _mm512_mask_add_epi8(lo, kl, lo, sixteen),
            _mm512_mask_add_epi8(hi, kh, hi, sixteen),
        )
    }
}

/// [`Q4kx16Vnni`]'s body.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
unsafe fn q4kx16_vnni<const NX: usize>(
    w: *const BlockQ4_Kx16,
    nb: usize,
    x: [*const BlockQ8_K; NX],
) -> [[f32; R16]; NX] {
    kx16_vnni::<BlockQ4_Kx16, NX>(w, nb, x)
}

/// [`Q5kx16Vnni`]'s body.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
unsafe fn q5kx16_vnni<const NX: usize>(
    w: *const BlockQ5_Kx16,
    nb: usize,
    x: [*const BlockQ8_K; NX],
) -> [[f32; R16]; NX] {
    kx16_vnni::<BlockQ5_Kx16, NX>(w, nb, x)
}

/// The AVX-512 VNNI group kernel of a Q4_K-family ×16 layout `B` against `NX` activation rows
/// at once: each chunk's levels ([`Kx16Levels512::levels`]) made once for all of them (the
/// weight-stationary form for prompts), each row's arithmetic that of one.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
unsafe fn kx16_vnni<B: Kx16Levels512, const NX: usize>(
    w: *const B,
    nb: usize,
    x: [*const BlockQ8_K; NX],
) -> [[f32; R16]; NX] {
    let mut acc = [_mm512_setzero_ps(); NX];
    let mut accm = [_mm512_setzero_ps(); NX];
    let mut ahead = Ahead::two_level(w as *const u8);
    for b in 0..nb {
        let wb = &*w.add(b);
        let xb = x.map(|x| &*x.add(b));
        let mut isum = [_mm512_setzero_si512(); NX];
        for g in 0..4 {
            let mut dl = [_mm512_setzero_si512(); NX];
            let mut dh = [_mm512_setzero_si512(); NX];
            for c in 0..8 {
                let p = wb.qs()[g][c].as_ptr() as *const u8;
                ahead.at(p);
                let (lo, hi) = B::levels(wb, g, c, _mm512_loadu_si512(p as *const _));
                for t in 0..NX {
                    let xq = xb[t].qs.as_ptr();
                    let xl = _mm512_set1_epi32(x4(xq, 64 * g + 4 * c));
                    let xh = _mm512_set1_epi32(x4(xq, 64 * g + 32 + 4 * c));
                    dl[t] = _mm512_dpbusd_epi32(dl[t], lo, xl);
                    dh[t] = _mm512_dpbusd_epi32(dh[t], hi, xh);
                }
            }
            let sc = |j: usize| {
                _mm512_cvtepu8_epi32(_mm_loadu_si128(wb.scales().sc[j].as_ptr() as *const __m128i))
            };
            let (s0, s1) = (sc(2 * g), sc(2 * g + 1));
            for t in 0..NX {
                let dh = if B::HI_X16 {
                    _mm512_srai_epi32::<4>(dh[t])
                } else {
                    dh[t]
                };
                let p = _mm512_add_epi32(_mm512_mullo_epi32(dl[t], s0), _mm512_mullo_epi32(dh, s1));
                isum[t] = _mm512_add_epi32(isum[t], p);
            }
            // A compiler barrier (no instruction): the chunk loads stay in address order.
            // Left alone, LLVM issues the four groups' loads last group first, which measured
            // 2× slower from memory (14–19 against 6–7 ns per 256 weights, one thread).
            // SAFETY: an empty instruction sequence; it touches no register, flag or stack.
            std::arch::asm!("", options(nostack, preserves_flags));
        }
        let s = wb.scales();
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(s.d.as_ptr() as *const __m256i));
        let dm = _mm512_cvtph_ps(_mm256_loadu_si256(s.dmin.as_ptr() as *const __m256i));
        let mn =
            s.mn.map(|m| _mm512_cvtepu8_epi16(_mm256_loadu_si256(m.as_ptr() as *const _)));
        for t in 0..NX {
            let ps = q4kx16_pair_sums(xb[t]);
            let mut ms = _mm512_setzero_si512();
            for (p, &bp) in ps.iter().enumerate() {
                ms = _mm512_dpwssd_epi32(ms, mn[p], _mm512_set1_epi32(bp));
            }
            let dx = _mm512_set1_ps(xb[t].d);
            let fi = _mm512_mul_ps(_mm512_mul_ps(d, dx), _mm512_cvtepi32_ps(isum[t]));
            let fm = _mm512_mul_ps(_mm512_mul_ps(dm, dx), _mm512_cvtepi32_ps(ms));
            acc[t] = _mm512_add_ps(acc[t], fi);
            accm[t] = _mm512_add_ps(accm[t], fm);
        }
    }
    let mut out = [[0f32; R16]; NX];
    for t in 0..NX {
        _mm512_storeu_ps(out[t].as_mut_ptr(), _mm512_sub_ps(acc[t], accm[t]));
    }
    out
}

/// The AVX-512 VNNI group kernel of [`BlockQ5_Kx16`]: [`Q4kx16Vnni`]'s arithmetic with five-bit
/// levels (each low or high nibble plus 16 under the chunk's fifth-bit byte mask, so the high
/// levels are not kept in place: the dot products are exact as they are, at most 32·31·128).
/// Twin: [`super::super::repack::q5_kx16_dot`] (bit-exact).
struct Q5kx16Vnni;

x16_dot!(
    Q5kx16Vnni,
    BlockQ5_Kx16,
    q5kx16_vnni,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c",
    4,
    [1, 2, 3]
);

/// The AVX2 group kernel of [`BlockQ4_Kx16`]: the sixteen rows as two halves of eight (32 bytes
/// of each chunk, one i32 / f32 lane per row). Per 64-value group, `vpmaddubsw` of the low and
/// the high levels (0..15) with the broadcast activation bytes, eight chunks summed in i16
/// (each pair at most 2·15·128, eight of them 30720 < 2¹⁵: exact), then `vpmaddwd` with the
/// row's scale in both words of its lane (one `vpshufb` of the sixteen scale bytes) gives
/// `scⱼ·dotⱼ` in i32. Minimums as [`Q4kx16Vnni`] (`vpmaddwd`), f32 steps as [`Q4kx16Vnni`]
/// lane-wise. Twin: [`super::super::repack::q4_kx16_dot`] (bit-exact).
struct Q4kx16Avx2;

/// The `vpshufb` control putting scale byte `8h + 4·(lane) + i` (rows of half `h`) into both
/// words of dword `i` of each 128-bit lane (zero-extended).
#[inline(always)]
unsafe fn q4kx16_scale_ctl(h: usize) -> __m256i {
    let b: [u8; 32] = std::array::from_fn(|i| {
        if i % 2 == 1 {
            0x80
        } else {
            (8 * h + 4 * (i / 16) + (i % 16) / 4) as u8
        }
    });
    _mm256_loadu_si256(b.as_ptr() as *const __m256i)
}

x16_dot!(
    Q4kx16Avx2,
    BlockQ4_Kx16,
    q4kx16_avx2,
    "avx2,fma,f16c",
    2,
    [1]
);

/// The Q4_K family's ×16 layouts in [`kx16_avx2`]: the levels of one half (eight rows) of a
/// 64-byte chunk.
trait Kx16Levels256: Kx16Family {
    /// Whether eight chunks' `vpmaddubsw` pairs may be summed in i16 (levels ≤ 15: 8·2·15·128 <
    /// 2¹⁵); else (five-bit levels) four at a time.
    const EIGHT_IN_I16: bool;
    /// Half `h` (rows `8h..8h + 8`) of chunk `qs[g][c]` of block `wb`, loaded as `v`: the
    /// unsigned levels of values `64g + 4c..+4` and `64g + 32 + 4c..+4`, four bytes per row.
    ///
    /// # Safety
    /// AVX2 available.
    unsafe fn levels(wb: &Self, g: usize, c: usize, h: usize, v: __m256i) -> (__m256i, __m256i);
}

impl Kx16Levels256 for BlockQ4_Kx16 {
    const EIGHT_IN_I16: bool = true;
    /// `and 0x0F`; `vpsrlw 4`, `and 0x0F`.
    #[inline(always)]
    unsafe fn levels(_: &Self, _: usize, _: usize, _: usize, v: __m256i) -> (__m256i, __m256i) {
        let m4 = _mm256_set1_epi8(0x0F);
        let lo = _mm256_and_si256(v, m4);
        (lo, _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4))
    }
}

impl Kx16Levels256 for BlockQ5_Kx16 {
    const EIGHT_IN_I16: bool = false;
    /// Q4_K's nibbles, each plus 16 where bit `i` of the half's 32 mask bits is set: the mask
    /// spread to byte `i` (`vpbroadcastd`, `vpshufb` of byte `i / 8`), its bit `i mod 8`
    /// tested (`and`, `vpcmpeqb`), `and 16`, `or`.
    #[inline(always)]
    unsafe fn levels(wb: &Self, g: usize, c: usize, h: usize, v: __m256i) -> (__m256i, __m256i) {
        let m4 = _mm256_set1_epi8(0x0F);
        let spread = _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3,
            3, 3, 3,
        );
        let bits = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let fifth = |mask: u64| {
            let m = _mm256_set1_epi32((mask >> (32 * h)) as u32 as i32);
            let on = _mm256_and_si256(_mm256_shuffle_epi8(m, spread), bits);
            _mm256_and_si256(_mm256_cmpeq_epi8(on, bits), _mm256_set1_epi8(16))
        };
        let [kl, kh] = wb.hb[g][c];
        let lo = _mm256_and_si256(v, m4);
        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4);
        (
            _mm256_or_si256(lo, fifth(kl)),
            _mm256_or_si256(hi, fifth(kh)),
        )
    }
}

/// [`Q4kx16Avx2`]'s body.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4kx16_avx2<const NX: usize>(
    w: *const BlockQ4_Kx16,
    nb: usize,
    x: [*const BlockQ8_K; NX],
) -> [[f32; R16]; NX] {
    kx16_avx2::<BlockQ4_Kx16, NX>(w, nb, x)
}

/// [`Q5kx16Avx2`]'s body.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5kx16_avx2<const NX: usize>(
    w: *const BlockQ5_Kx16,
    nb: usize,
    x: [*const BlockQ8_K; NX],
) -> [[f32; R16]; NX] {
    kx16_avx2::<BlockQ5_Kx16, NX>(w, nb, x)
}

/// The AVX2 group kernel of a Q4_K-family ×16 layout `B` against `NX` activation rows at once
/// (each chunk's levels made once for all of them), each row's arithmetic that of one.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn kx16_avx2<B: Kx16Levels256, const NX: usize>(
    w: *const B,
    nb: usize,
    x: [*const BlockQ8_K; NX],
) -> [[f32; R16]; NX] {
    let ctl = [q4kx16_scale_ctl(0), q4kx16_scale_ctl(1)];
    let mut acc = [[_mm256_setzero_ps(); 2]; NX];
    let mut accm = [[_mm256_setzero_ps(); 2]; NX];
    let mut ahead = Ahead::new(w as *const u8);
    // Chunks summed in one i16 accumulator.
    let run = if B::EIGHT_IN_I16 { 8 } else { 4 };
    for b in 0..nb {
        let wb = &*w.add(b);
        let xb = x.map(|x| x.add(b));
        for h in 0..2 {
            let mut isum = [_mm256_setzero_si256(); NX];
            for g in 0..4 {
                let mut pl = [[_mm256_setzero_si256(); 2]; NX];
                let mut ph = [[_mm256_setzero_si256(); 2]; NX];
                for c in 0..8 {
                    let p = wb.qs()[g][c][8 * h].as_ptr();
                    ahead.at(p);
                    let v = _mm256_loadu_si256(p as *const __m256i);
                    let (lo, hi) = B::levels(wb, g, c, h, v);
                    for t in 0..NX {
                        let xq = (*xb[t]).qs.as_ptr();
                        let xl = _mm256_set1_epi32(x4(xq, 64 * g + 4 * c));
                        let xh = _mm256_set1_epi32(x4(xq, 64 * g + 32 + 4 * c));
                        let i = c / run;
                        pl[t][i] = _mm256_add_epi16(pl[t][i], _mm256_maddubs_epi16(lo, xl));
                        ph[t][i] = _mm256_add_epi16(ph[t][i], _mm256_maddubs_epi16(hi, xh));
                    }
                }
                let sc = |j: usize| {
                    let s = _mm_loadu_si128(wb.scales().sc[j].as_ptr() as *const __m128i);
                    _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(s), ctl[h])
                };
                let (s0, s1) = (sc(2 * g), sc(2 * g + 1));
                for t in 0..NX {
                    let mut p = _mm256_add_epi32(
                        _mm256_madd_epi16(pl[t][0], s0),
                        _mm256_madd_epi16(ph[t][0], s1),
                    );
                    if !B::EIGHT_IN_I16 {
                        p = _mm256_add_epi32(
                            p,
                            _mm256_add_epi32(
                                _mm256_madd_epi16(pl[t][1], s0),
                                _mm256_madd_epi16(ph[t][1], s1),
                            ),
                        );
                    }
                    isum[t] = _mm256_add_epi32(isum[t], p);
                }
            }
            let s = wb.scales();
            let d = _mm256_cvtph_ps(_mm_loadu_si128(s.d.as_ptr().add(8 * h) as *const __m128i));
            let dm = _mm256_cvtph_ps(_mm_loadu_si128(s.dmin.as_ptr().add(8 * h) as *const __m128i));
            for t in 0..NX {
                let ps = q4kx16_pair_sums(xb[t]);
                let mut ms = _mm256_setzero_si256();
                for (p, &bp) in ps.iter().enumerate() {
                    let mn = _mm_loadu_si128(s.mn[p][8 * h].as_ptr() as *const __m128i);
                    let mw = _mm256_cvtepu8_epi16(mn);
                    ms = _mm256_add_epi32(ms, _mm256_madd_epi16(mw, _mm256_set1_epi32(bp)));
                }
                let dx = _mm256_set1_ps((*xb[t]).d);
                let fi = _mm256_mul_ps(_mm256_mul_ps(d, dx), _mm256_cvtepi32_ps(isum[t]));
                let fm = _mm256_mul_ps(_mm256_mul_ps(dm, dx), _mm256_cvtepi32_ps(ms));
                acc[t][h] = _mm256_add_ps(acc[t][h], fi);
                accm[t][h] = _mm256_add_ps(accm[t][h], fm);
            }
        }
    }
    let mut out = [[0f32; R16]; NX];
    for t in 0..NX {
        for h in 0..2 {
            let v = _mm256_sub_ps(acc[t][h], accm[t][h]);
            _mm256_storeu_ps(out[t].as_mut_ptr().add(8 * h), v);
        }
    }
    out
}

/// The AVX2 group kernel of [`BlockQ5_Kx16`]: [`Q4kx16Avx2`]'s arithmetic with five-bit levels
/// ([`Kx16Levels256::levels`]), the `vpmaddubsw` pairs (at most 2·31·128) summed in i16 four
/// chunks at a time (exact: 31744 < 2¹⁵). Twin: [`super::super::repack::q5_kx16_dot`]
/// (bit-exact).
struct Q5kx16Avx2;

x16_dot!(
    Q5kx16Avx2,
    BlockQ5_Kx16,
    q5kx16_avx2,
    "avx2,fma,f16c",
    2,
    [1]
);

/// The repacked Q4_K decode on [`super::Avx2`] ([`Q4kx16Avx2`]), leftover rows in place.
/// Twin: the portable repacked decoder.
///
/// # Safety
/// AVX2/FMA/F16C available; as [`rows_x16`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_q4_k_avx2(job: &Job<'_>, rows: std::ops::Range<usize>) {
    rows_x16::<Q4kx16Avx2>(job, rows, super::decode_lane::<BlockQ4_K>)
}

/// [`rows_q4_k_avx2`] on [`super::Avx512`] ([`Q4kx16Vnni`]), the same results bit for bit.
///
/// # Safety
/// As [`rows_q4_k_avx2`], and AVX-512 F/BW/VL/VNNI/VBMI available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
unsafe fn rows_q4_k_vnni(job: &Job<'_>, rows: std::ops::Range<usize>) {
    rows_x16::<Q4kx16Vnni>(job, rows, super::decode_lane::<BlockQ4_K>)
}

/// The repacked Q5_K decode on [`super::Avx2`] ([`Q5kx16Avx2`]), leftover rows in place.
/// Twin: the portable repacked decoder.
///
/// # Safety
/// AVX2/FMA/F16C available; as [`rows_x16`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_q5_k_avx2(job: &Job<'_>, rows: std::ops::Range<usize>) {
    rows_x16::<Q5kx16Avx2>(job, rows, super::decode_lane::<BlockQ5_K>)
}

/// [`rows_q5_k_avx2`] on [`super::Avx512`] ([`Q5kx16Vnni`]), the same results bit for bit.
///
/// # Safety
/// As [`rows_q5_k_avx2`], and AVX-512 F/BW/VL/VNNI/VBMI available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
unsafe fn rows_q5_k_vnni(job: &Job<'_>, rows: std::ops::Range<usize>) {
    rows_x16::<Q5kx16Vnni>(job, rows, super::decode_lane::<BlockQ5_K>)
}

/// The six-bit levels (0..63, one byte each) of the chunk `q[n][c]` of a [`BlockQ6_Kx16`]
/// (`a`, `b`: its two `ql` parts, `h`: its `qh` part, any width): element `s` holds the levels
/// of values `128n + 32s + 4c..+4`. The 16-bit shifts move bits across bytes only where the
/// masks drop them.
macro_rules! q6_levels {
    ($a:expr, $b:expr, $h:expr, $and:ident, $or:ident, $sll:ident, $srl:ident, $m4:expr, $m30:expr) => {{
        let (a, b, h) = ($a, $b, $h);
        [
            $or($and(a, $m4), $and($sll::<4>(h), $m30)),
            $or($and(b, $m4), $and($sll::<2>(h), $m30)),
            $or($and($srl::<4>(a), $m4), $and(h, $m30)),
            $or($and($srl::<4>(b), $m4), $and($srl::<2>(h), $m30)),
        ]
    }};
}

/// The AVX-512 VNNI group kernel of [`BlockQ6_Kx16`]: per block, half `n` and quarter `t` of the
/// 32 values of each of its four 32-value runs, the four chunks `q[n][4t..4t + 4]` give the
/// levels of all sixteen rows ([`q6_levels`]); `vpdpbusd` with the four activation bytes of
/// those values broadcast to every lane sums each row's `dotⱼ` of sub-block `j = 8n + 2s + t`
/// in its i32 lane (at most 16·63·128); `(dotⱼ − 32·bsumsⱼ)·scⱼ` (`vpmulld`, exact: |Σ| <
/// 16·128·(16·63·128 + 32·2048) < 2³¹) summed over the sixteen sub-blocks; then one f32 lane per
/// row: `acc += (d·dx)·isum` (no FMA). Twin: [`super::super::repack::q6_kx16_dot`]
/// (bit-exact).
struct Q6kx16Vnni;

x16_dot!(
    Q6kx16Vnni,
    BlockQ6_Kx16,
    q6kx16_vnni,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c",
    3,
    [1, 2]
);

/// [`Q6kx16Vnni`] against `NX` activation rows at once (levels assembled once for all of them),
/// each row's arithmetic that of one.
#[allow(clippy::needless_range_loop)] // dot[row][s] and acc[row][h]: one index, two arrays
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
unsafe fn q6kx16_vnni<const NX: usize>(
    w: *const BlockQ6_Kx16,
    nb: usize,
    x: [*const BlockQ8_K; NX],
) -> [[f32; R16]; NX] {
    let (m4, m30) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x30));
    let mut acc = [_mm512_setzero_ps(); NX];
    let mut ahead = Ahead::two_level(w as *const u8);
    for b in 0..nb {
        let wb = &*w.add(b);
        let xb = x.map(|x| &*x.add(b));
        let mut isum = [_mm512_setzero_si512(); NX];
        for n in 0..2 {
            for t in 0..2 {
                let mut dot = [[_mm512_setzero_si512(); 4]; NX];
                for c in 4 * t..4 * t + 4 {
                    let mut ld = |s: usize| {
                        let p = wb.q[n][c][s].as_ptr();
                        ahead.at(p as *const u8);
                        _mm512_loadu_si512(p as *const _)
                    };
                    let v = q6_levels!(
                        ld(0),
                        ld(1),
                        ld(2),
                        _mm512_and_si512,
                        _mm512_or_si512,
                        _mm512_slli_epi16,
                        _mm512_srli_epi16,
                        m4,
                        m30
                    );
                    for (dot, xb) in dot.iter_mut().zip(&xb) {
                        let xq = xb.qs.as_ptr();
                        for (s, d) in dot.iter_mut().enumerate() {
                            let xs = _mm512_set1_epi32(x4(xq, 128 * n + 32 * s + 4 * c));
                            *d = _mm512_dpbusd_epi32(*d, v[s], xs);
                        }
                    }
                }
                for s in 0..4 {
                    let j = 8 * n + 2 * s + t;
                    let sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(wb.sc[j].as_ptr() as *const _));
                    for r in 0..NX {
                        let off = _mm512_set1_epi32(32 * xb[r].bsums[j] as i32);
                        let p = _mm512_mullo_epi32(_mm512_sub_epi32(dot[r][s], off), sc);
                        isum[r] = _mm512_add_epi32(isum[r], p);
                    }
                }
                // A compiler barrier, as in [`Q4kx16Vnni`]: the chunk loads in address order.
                // SAFETY: an empty instruction sequence; it touches no register, flag or stack.
                std::arch::asm!("", options(nostack, preserves_flags));
            }
        }
        let d = _mm512_loadu_ps(wb.d.as_ptr());
        for r in 0..NX {
            let dx = _mm512_set1_ps(xb[r].d);
            let f = _mm512_mul_ps(_mm512_mul_ps(d, dx), _mm512_cvtepi32_ps(isum[r]));
            acc[r] = _mm512_add_ps(acc[r], f);
        }
    }
    let mut out = [[0f32; R16]; NX];
    for r in 0..NX {
        _mm512_storeu_ps(out[r].as_mut_ptr(), acc[r]);
    }
    out
}

/// The AVX2 group kernel of [`BlockQ6_Kx16`]: the sixteen rows as two halves of eight (32 bytes
/// of each chunk, one i32 / f32 lane per row). As [`Q6kx16Vnni`], with `vpmaddubsw` of the
/// levels and the broadcast activation bytes (each pair at most 2·63·128 = 16128, two chunks
/// summed in i16 exactly) and `vpmaddwd` with ones for each row's `dotⱼ` in i32. Twin:
/// [`super::super::repack::q6_kx16_dot`] (bit-exact).
struct Q6kx16Avx2;

x16_dot!(
    Q6kx16Avx2,
    BlockQ6_Kx16,
    q6kx16_avx2,
    "avx2,fma,f16c",
    2,
    [1]
);

/// [`Q6kx16Avx2`] against `NX` activation rows at once (levels assembled once for all of
/// them), each row's arithmetic that of one.
#[allow(clippy::needless_range_loop)] // dot[row][s] and acc[row][h]: one index, two arrays
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6kx16_avx2<const NX: usize>(
    w: *const BlockQ6_Kx16,
    nb: usize,
    x: [*const BlockQ8_K; NX],
) -> [[f32; R16]; NX] {
    let (m4, m30) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x30));
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); 2]; NX];
    let mut ahead = Ahead::new(w as *const u8);
    for b in 0..nb {
        let wb = &*w.add(b);
        let xb = x.map(|x| &*x.add(b));
        for h in 0..2 {
            let mut isum = [_mm256_setzero_si256(); NX];
            for n in 0..2 {
                for t in 0..2 {
                    let mut dot = [[_mm256_setzero_si256(); 4]; NX];
                    for c2 in 0..2 {
                        let mut p = [[_mm256_setzero_si256(); 4]; NX];
                        for c in 4 * t + 2 * c2..4 * t + 2 * c2 + 2 {
                            let mut ld = |s: usize| {
                                let p = wb.q[n][c][s][8 * h].as_ptr();
                                ahead.at(p);
                                _mm256_loadu_si256(p as *const __m256i)
                            };
                            let v = q6_levels!(
                                ld(0),
                                ld(1),
                                ld(2),
                                _mm256_and_si256,
                                _mm256_or_si256,
                                _mm256_slli_epi16,
                                _mm256_srli_epi16,
                                m4,
                                m30
                            );
                            for (p, xb) in p.iter_mut().zip(&xb) {
                                let xq = xb.qs.as_ptr();
                                for (s, p) in p.iter_mut().enumerate() {
                                    let xs = _mm256_set1_epi32(x4(xq, 128 * n + 32 * s + 4 * c));
                                    *p = _mm256_add_epi16(*p, _mm256_maddubs_epi16(v[s], xs));
                                }
                            }
                        }
                        for (dot, p) in dot.iter_mut().zip(&p) {
                            for (d, &p) in dot.iter_mut().zip(p) {
                                *d = _mm256_add_epi32(*d, _mm256_madd_epi16(p, ones));
                            }
                        }
                    }
                    for s in 0..4 {
                        let j = 8 * n + 2 * s + t;
                        let sc = _mm256_cvtepi8_epi32(_mm_loadl_epi64(
                            wb.sc[j][8 * h..].as_ptr() as *const __m128i
                        ));
                        for r in 0..NX {
                            let off = _mm256_set1_epi32(32 * xb[r].bsums[j] as i32);
                            let p = _mm256_mullo_epi32(_mm256_sub_epi32(dot[r][s], off), sc);
                            isum[r] = _mm256_add_epi32(isum[r], p);
                        }
                    }
                }
            }
            let d = _mm256_loadu_ps(wb.d[8 * h..].as_ptr());
            for r in 0..NX {
                let dx = _mm256_set1_ps(xb[r].d);
                let f = _mm256_mul_ps(_mm256_mul_ps(d, dx), _mm256_cvtepi32_ps(isum[r]));
                acc[r][h] = _mm256_add_ps(acc[r][h], f);
            }
        }
    }
    let mut out = [[0f32; R16]; NX];
    for r in 0..NX {
        for h in 0..2 {
            _mm256_storeu_ps(out[r].as_mut_ptr().add(8 * h), acc[r][h]);
        }
    }
    out
}

/// The repacked Q6_K decode on [`super::Avx2`] ([`Q6kx16Avx2`]), leftover rows in place.
/// Twin: the portable repacked decoder.
///
/// # Safety
/// AVX2/FMA/F16C available; as [`rows_x16`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_q6_k_avx2(job: &Job<'_>, rows: std::ops::Range<usize>) {
    rows_x16::<Q6kx16Avx2>(job, rows, super::decode_q6k)
}

/// [`rows_q6_k_avx2`] on [`super::Avx512`] ([`Q6kx16Vnni`]), the same results bit for bit.
///
/// # Safety
/// As [`rows_q6_k_avx2`], and AVX-512 F/BW/VL/VNNI/VBMI available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
unsafe fn rows_q6_k_vnni(job: &Job<'_>, rows: std::ops::Range<usize>) {
    rows_x16::<Q6kx16Vnni>(job, rows, super::decode_q6k_512)
}

/// The repacked decode kernels of [`super::Avx2`] (`VNNI = false`) and [`super::Avx512`].
pub(super) fn repacked_decoder<const VNNI: bool>(ty: GgmlType) -> Option<Decoder> {
    match ty {
        GgmlType::Q4_K => Some(Decoder {
            act: Some(plain_act::<BlockQ8_K>()),
            rows: if VNNI { rows_q4_k_vnni } else { rows_q4_k_avx2 },
        }),
        GgmlType::Q5_K => Some(Decoder {
            act: Some(plain_act::<BlockQ8_K>()),
            rows: if VNNI { rows_q5_k_vnni } else { rows_q5_k_avx2 },
        }),
        GgmlType::Q6_K => Some(Decoder {
            act: Some(plain_act::<BlockQ8_K>()),
            rows: if VNNI { rows_q6_k_vnni } else { rows_q6_k_avx2 },
        }),
        GgmlType::Q4_0 => x8_decoder::<Q4x8<BlockQ4_0x8>, Q4x8Vnni<BlockQ4_0x8>>(VNNI),
        GgmlType::Q4_1 => x8_decoder::<Q4x8<BlockQ4_1x8>, Q4x8Vnni<BlockQ4_1x8>>(VNNI),
        GgmlType::Q8_0 => x8_decoder::<Q8x8<BlockQ8_0x8>, Q8x8Vnni<BlockQ8_0x8>>(VNNI),
        _ => None,
    }
}
