//! The integer GEMM micro-kernels of the x86 paths ([`crate::kernels::igemm`]): int8
//! [`Avx512IKernel`] (`vpdpbusd`, 8 × 32 tile) and [`Avx2IKernel`] (`vpmaddubsw` with the sign
//! trick, 4 × 16 tile); 12-bit [`Avx512I16Kernel`] (`vpdpwssd`, 6 × 32) and [`Avx2I16Kernel`]
//! (`vpmaddwd`, 4 × 16). All give the integer dots of [`crate::kernels::igemm::scalar_tile`]
//! exactly and its float epilogue operation for operation, so the same bits.

use std::arch::x86_64::*;

use super::dpwssd;
use crate::kernels::igemm::{quantize_panel, IKernel, Int16, Int8, Tile, Width, PANEL};

/// The AVX-512 VNNI int8 micro-kernel of [`super::Avx512`].
pub(crate) struct Avx512IKernel;

/// The AVX2 int8 micro-kernel of [`super::Avx2`].
pub(crate) struct Avx2IKernel;

impl IKernel<Int8> for Avx512IKernel {
    const MR: usize = 8;
    const NR: usize = 32;
    unsafe fn quantize(
        x: &[f32],
        k: usize,
        kb: usize,
        qa: &mut [i8],
        da: &mut [f32],
        off: &mut [i32],
    ) {
        quantize_512(x, k, kb, qa, da, off)
    }
    unsafe fn tile(t: &Tile<Int8>, out: *mut f32) {
        tile_8x32(t, out)
    }
}

impl IKernel<Int8> for Avx2IKernel {
    const MR: usize = 4;
    const NR: usize = 16;
    unsafe fn quantize(
        x: &[f32],
        k: usize,
        kb: usize,
        qa: &mut [i8],
        da: &mut [f32],
        off: &mut [i32],
    ) {
        quantize_avx2(x, k, kb, qa, da, off)
    }
    unsafe fn tile(t: &Tile<Int8>, out: *mut f32) {
        tile_4x16(t, out)
    }
}

/// [`quantize_panel`] (int8, `MR = 8`) compiled with AVX-512 (the same IEEE operations).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
unsafe fn quantize_512(
    x: &[f32],
    k: usize,
    kb: usize,
    qa: &mut [i8],
    da: &mut [f32],
    off: &mut [i32],
) {
    quantize_panel::<Int8>(x, k, kb, 8, qa, da, off)
}

/// [`quantize_panel`] (int8, `MR = 4`) compiled with AVX2 (the same IEEE operations).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_avx2(
    x: &[f32],
    k: usize,
    kb: usize,
    qa: &mut [i8],
    da: &mut [f32],
    off: &mut [i32],
) {
    quantize_panel::<Int8>(x, k, kb, 4, qa, da, off)
}

/// What differs between the int8 and the 12-bit AVX-512 tiles: how one step of a weight panel
/// is prepared, where a block's sums start, and the exact lane dot.
trait ZmmDot: Width {
    /// The weight register as the dot instruction takes it.
    unsafe fn prep(w: __m512i) -> __m512i;
    /// A block's starting sums for an activation row (its `off` entry).
    unsafe fn start(off: i32) -> __m512i;
    /// `acc + Σ_lane w·a`, exactly.
    unsafe fn dot(acc: __m512i, w: __m512i, a: __m512i) -> __m512i;
}

/// int8: the weights flipped to `qw + 128` (unsigned) for `vpdpbusd`, which sums
/// `(qw + 128)·qa` exactly in i32 (no saturation); starting each block at `off = −128·Σ qa`
/// leaves `Σ qw·qa`.
impl ZmmDot for Int8 {
    #[inline(always)]
    unsafe fn prep(w: __m512i) -> __m512i {
        _mm512_xor_si512(w, _mm512_set1_epi8(-128))
    }
    #[inline(always)]
    unsafe fn start(off: i32) -> __m512i {
        _mm512_set1_epi32(off)
    }
    #[inline(always)]
    unsafe fn dot(acc: __m512i, w: __m512i, a: __m512i) -> __m512i {
        _mm512_dpbusd_epi32(acc, w, a)
    }
}

/// 12-bit: `vpdpwssd` adds `lo·lo + hi·hi` of each lane's pair to the row's i32 sum.
impl ZmmDot for Int16 {
    #[inline(always)]
    unsafe fn prep(w: __m512i) -> __m512i {
        w
    }
    #[inline(always)]
    unsafe fn start(_: i32) -> __m512i {
        _mm512_setzero_si512()
    }
    #[inline(always)]
    unsafe fn dot(acc: __m512i, w: __m512i, a: __m512i) -> __m512i {
        dpwssd(acc, a, w)
    }
}

/// The AVX-512 tile of either width, `MR × 32`: per step (one lane of k values per row), the two
/// weight panels' 64 bytes against each activation row's lane broadcast, through
/// [`ZmmDot::dot`]; then per block `y += (da·dw) · f32(dot)`, as the scalar epilogue. Inlined
/// into the target-feature entry points below.
#[inline(always)]
unsafe fn tile_zmm<W: ZmmDot, const MR: usize>(t: &Tile<W>, out: *mut f32) {
    let steps = t.kb / W::LANE;
    let mut y = [[_mm512_setzero_ps(); 2]; MR];
    for b in 0..t.nb {
        let mut acc = [[_mm512_setzero_si512(); 2]; MR];
        for (i, ai) in acc.iter_mut().enumerate() {
            let o = W::start(*t.off.add(b * MR + i));
            *ai = [o, o];
        }
        let mut ap = t.a.add(b * steps * MR * W::LANE) as *const i32;
        let mut w0 = t.w.add(b * steps * PANEL * W::LANE);
        let mut w1 = w0.add(t.w_panel);
        for _ in 0..steps {
            let u0 = W::prep(_mm512_loadu_si512(w0 as *const __m512i));
            let u1 = W::prep(_mm512_loadu_si512(w1 as *const __m512i));
            for (i, ai) in acc.iter_mut().enumerate() {
                let a = _mm512_set1_epi32(ap.add(i).read_unaligned());
                ai[0] = W::dot(ai[0], u0, a);
                ai[1] = W::dot(ai[1], u1, a);
            }
            ap = ap.add(MR);
            w0 = w0.add(PANEL * W::LANE);
            w1 = w1.add(PANEL * W::LANE);
        }
        let dw0 = _mm512_loadu_ps(t.dw.add(b * PANEL));
        let dw1 = _mm512_loadu_ps(t.dw.add(t.dw_panel + b * PANEL));
        for (i, (yi, ai)) in y.iter_mut().zip(&acc).enumerate() {
            let da = _mm512_set1_ps(*t.da.add(b * MR + i));
            let t0 = _mm512_mul_ps(_mm512_mul_ps(da, dw0), _mm512_cvtepi32_ps(ai[0]));
            let t1 = _mm512_mul_ps(_mm512_mul_ps(da, dw1), _mm512_cvtepi32_ps(ai[1]));
            yi[0] = _mm512_add_ps(yi[0], t0);
            yi[1] = _mm512_add_ps(yi[1], t1);
        }
    }
    for (i, yi) in y.iter().enumerate() {
        _mm512_storeu_ps(out.add(i * 32), yi[0]);
        _mm512_storeu_ps(out.add(i * 32 + 16), yi[1]);
    }
}

/// Twin: [`crate::kernels::igemm::scalar_tile::<Int8, 8, 32>`] ([`tile_zmm`], `vpdpbusd`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
unsafe fn tile_8x32(t: &Tile<Int8>, out: *mut f32) {
    tile_zmm::<Int8, 8>(t, out)
}

/// What differs between the int8 and the 12-bit AVX2 tiles: a weight register prepared once per
/// step, and the exact lane dot against a broadcast activation lane.
trait YmmDot: Width {
    /// A prepared weight register.
    type W: Copy;
    /// Prepare one step's weights.
    unsafe fn prep(w: __m256i) -> Self::W;
    /// `acc + Σ_lane w·a`, exactly.
    unsafe fn dot(acc: __m256i, w: Self::W, a: __m256i) -> __m256i;
}

/// int8, the sign trick: `vpmaddubsw(|qw|, sign(qa, qw))` sums pairs of `qw·qa` in i16 without
/// saturation (`|qa|, |qw| ≤ 127`, so a pair is at most 2·127² < 2¹⁵), `vpmaddwd` with ones
/// widens the pairs to the row's i32 lane.
impl YmmDot for Int8 {
    type W = (__m256i, __m256i);
    #[inline(always)]
    unsafe fn prep(w: __m256i) -> Self::W {
        (_mm256_abs_epi8(w), w)
    }
    #[inline(always)]
    unsafe fn dot(acc: __m256i, (abs, w): Self::W, a: __m256i) -> __m256i {
        let p = _mm256_maddubs_epi16(abs, _mm256_sign_epi8(a, w));
        _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
    }
}

/// 12-bit: `vpmaddwd` gives `lo·lo + hi·hi` per lane exactly (|levels| ≤ 2047, no saturation),
/// an add keeps the i32 sum.
impl YmmDot for Int16 {
    type W = __m256i;
    #[inline(always)]
    unsafe fn prep(w: __m256i) -> __m256i {
        w
    }
    #[inline(always)]
    unsafe fn dot(acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
        _mm256_add_epi32(acc, _mm256_madd_epi16(a, w))
    }
}

/// The AVX2 tile of either width, `MR × 16`: per step, the panel's 64 bytes (two ymm of eight
/// rows × one lane) against each activation row's lane broadcast, through [`YmmDot::dot`]; then
/// per block `y += (da·dw) · f32(dot)`. Inlined into the target-feature entry points.
#[inline(always)]
unsafe fn tile_ymm<W: YmmDot, const MR: usize>(t: &Tile<W>, out: *mut f32) {
    let steps = t.kb / W::LANE;
    let mut y = [[_mm256_setzero_ps(); 2]; MR];
    for b in 0..t.nb {
        let mut acc = [[_mm256_setzero_si256(); 2]; MR];
        let mut ap = t.a.add(b * steps * MR * W::LANE) as *const i32;
        let mut wp = t.w.add(b * steps * PANEL * W::LANE) as *const u8;
        for _ in 0..steps {
            let w0 = W::prep(_mm256_loadu_si256(wp as *const __m256i));
            let w1 = W::prep(_mm256_loadu_si256(wp.add(32) as *const __m256i));
            for (i, ai) in acc.iter_mut().enumerate() {
                let a = _mm256_set1_epi32(ap.add(i).read_unaligned());
                ai[0] = W::dot(ai[0], w0, a);
                ai[1] = W::dot(ai[1], w1, a);
            }
            ap = ap.add(MR);
            wp = wp.add(64);
        }
        let dw0 = _mm256_loadu_ps(t.dw.add(b * PANEL));
        let dw1 = _mm256_loadu_ps(t.dw.add(b * PANEL + 8));
        for (i, (yi, ai)) in y.iter_mut().zip(&acc).enumerate() {
            let da = _mm256_set1_ps(*t.da.add(b * MR + i));
            let t0 = _mm256_mul_ps(_mm256_mul_ps(da, dw0), _mm256_cvtepi32_ps(ai[0]));
            let t1 = _mm256_mul_ps(_mm256_mul_ps(da, dw1), _mm256_cvtepi32_ps(ai[1]));
            yi[0] = _mm256_add_ps(yi[0], t0);
            yi[1] = _mm256_add_ps(yi[1], t1);
        }
    }
    for (i, yi) in y.iter().enumerate() {
        _mm256_storeu_ps(out.add(i * 16), yi[0]);
        _mm256_storeu_ps(out.add(i * 16 + 8), yi[1]);
    }
}

/// Twin: [`crate::kernels::igemm::scalar_tile::<Int8, 4, 16>`] ([`tile_ymm`], the sign trick).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_4x16(t: &Tile<Int8>, out: *mut f32) {
    tile_ymm::<Int8, 4>(t, out)
}

/// The AVX-512 VNNI 12-bit micro-kernel of [`super::Avx512`].
pub(crate) struct Avx512I16Kernel;

/// The AVX2 12-bit micro-kernel of [`super::Avx2`].
pub(crate) struct Avx2I16Kernel;

impl IKernel<Int16> for Avx512I16Kernel {
    const MR: usize = 6;
    const NR: usize = 32;
    unsafe fn quantize(
        x: &[f32],
        k: usize,
        kb: usize,
        qa: &mut [i16],
        da: &mut [f32],
        off: &mut [i32],
    ) {
        quantize16_512(x, k, kb, qa, da, off)
    }
    unsafe fn tile(t: &Tile<Int16>, out: *mut f32) {
        tile16_6x32(t, out)
    }
}

impl IKernel<Int16> for Avx2I16Kernel {
    const MR: usize = 4;
    const NR: usize = 16;
    unsafe fn quantize(
        x: &[f32],
        k: usize,
        kb: usize,
        qa: &mut [i16],
        da: &mut [f32],
        off: &mut [i32],
    ) {
        quantize16_avx2(x, k, kb, qa, da, off)
    }
    unsafe fn tile(t: &Tile<Int16>, out: *mut f32) {
        tile16_4x16(t, out)
    }
}

/// [`quantize_panel`] (12-bit, `MR = 6`) compiled with AVX-512 (the same IEEE operations).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
unsafe fn quantize16_512(
    x: &[f32],
    k: usize,
    kb: usize,
    qa: &mut [i16],
    da: &mut [f32],
    off: &mut [i32],
) {
    quantize_panel::<Int16>(x, k, kb, 6, qa, da, off)
}

/// [`quantize_panel`] (12-bit, `MR = 4`) compiled with AVX2 (the same IEEE operations).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize16_avx2(
    x: &[f32],
    k: usize,
    kb: usize,
    qa: &mut [i16],
    da: &mut [f32],
    off: &mut [i32],
) {
    quantize_panel::<Int16>(x, k, kb, 4, qa, da, off)
}

/// Twin: [`crate::kernels::igemm::scalar_tile::<Int16, 6, 32>`] ([`tile_zmm`], `vpdpwssd`;
/// 24 accumulators and 3 operands fit the 32 zmm registers).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
unsafe fn tile16_6x32(t: &Tile<Int16>, out: *mut f32) {
    tile_zmm::<Int16, 6>(t, out)
}

/// Twin: [`crate::kernels::igemm::scalar_tile::<Int16, 4, 16>`] ([`tile_ymm`], `vpmaddwd`).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile16_4x16(t: &Tile<Int16>, out: *mut f32) {
    tile_ymm::<Int16, 4>(t, out)
}
