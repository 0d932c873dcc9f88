//! The per-type kernel table (in the spirit of ggml's `type_traits_cpu` and candle's `GgmlType`):
//! one [`TypeKernels`] row per weight type the kernels multiply with, holding its storage traits
//! (block size in values and bytes, the activation type it dots against, dequantize — which is
//! also the GEMM's plain pack — from [`crate::quant::TYPES`]), the regime crossover, and its
//! portable decode kernel. An ISA adds faster decode kernels for the types it knows
//! (`Isa::decoder`); a type it does not know runs the portable kernel, which is
//! correct on every path.
//!
//! Adding a weight type: one file in `quant/` (block struct + [`QuantBlock`] impl), one row in
//! `quant::TYPES`, one row in [`TYPES`] here (`quant_row::<B>(..)`); SIMD kernels are optional.
//! A type without a row is rejected when a [`super::tensor::Mat`] is built ([`lookup`] returns
//! [`UnsupportedType`]), so no kernel ever sees it.

use std::ops::Range;

use half::{bf16, f16};

use super::{scalar, with_bias, Out};
use crate::quant::q4_1::BlockQ4_1;
use crate::quant::q4_k::BlockQ4_K;
use crate::quant::q5_0::BlockQ5_0;
use crate::quant::q5_1::BlockQ5_1;
use crate::quant::q5_k::BlockQ5_K;
use crate::quant::q6_k::BlockQ6_K;
use crate::quant::{self, BlockQ4_0, BlockQ8_0, QuantBlock, TypeTraits};
use crate::GgmlType;

/// Alignment (bytes) of every quantized activation row in [`super::Scratch`].
pub(crate) const ACT_ALIGN: usize = 64;

/// How a decode kernel wants its activation rows: quantized into per-row byte regions of the
/// scratch buffer (each `row_bytes(k)` bytes, a multiple of [`ACT_ALIGN`], 64-byte aligned).
#[derive(Clone, Copy)]
pub(crate) struct ActQuant {
    /// Bytes of one quantized row of `k` values (a multiple of [`ACT_ALIGN`]).
    pub row_bytes: fn(k: usize) -> usize,
    /// Quantize the row `x` (`k` values) into `out` (`row_bytes(k)` bytes, 64-byte aligned).
    ///
    /// # Safety
    /// The CPU runs the decoder's path.
    pub quantize: unsafe fn(x: &[f32], out: &mut [u8]),
}

/// One decode call's operands, as the per-row kernels see them.
pub(crate) struct Job<'a> {
    /// The weight matrix's bytes (`m` rows of `w_row_bytes`).
    pub w: &'a [u8],
    /// Values per row.
    pub k: usize,
    /// Activation rows: f32 values (stride `4k`), or quantized rows (stride from [`ActQuant`]).
    pub x: &'a [u8],
    /// Bytes from one activation row to the next.
    pub x_stride: usize,
    /// Activation rows.
    pub n: usize,
    /// `y[n, m]`.
    pub out: Out,
    /// Optional bias `[m]`.
    pub bias: Option<&'a [f32]>,
}

/// A decode kernel of one weight type on one path: activations prepared by `act` (`None`: f32
/// activations as they are), then `rows` computes `y[i, j] (+ bias[j])` for every activation row
/// `i` and the weight rows `j` it is given.
#[derive(Clone, Copy)]
pub(crate) struct Decoder {
    /// Activation preparation (`None`: f32 rows).
    pub act: Option<ActQuant>,
    /// Weight rows `rows` against all activation rows.
    ///
    /// # Safety
    /// The CPU runs the decoder's path; the caller owns columns `rows` of `job.out`; `job.x`
    /// was prepared by `act`.
    pub rows: unsafe fn(job: &Job<'_>, rows: Range<usize>),
}

/// One row of the kernel table: everything the kernels need to know about a weight type.
pub struct TypeKernels {
    /// Storage traits: block size in values and bytes, activation type, conversions.
    pub traits: &'static TypeTraits,
    /// `(scalar path, other paths)`: from this many activation rows on, `matmul` uses the packed
    /// GEMM (`usize::MAX`: never); see [`super::gemm_min_rows`].
    pub gemm_min_rows: (usize, usize),
    /// The portable decode kernel (the meaning of every SIMD one).
    pub(crate) scalar: Decoder,
}

impl std::fmt::Debug for TypeKernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypeKernels")
            .field("ty", &self.traits.ty)
            .field("gemm_min_rows", &self.gemm_min_rows)
            .finish()
    }
}

impl TypeKernels {
    /// The weight type.
    pub fn ty(&self) -> GgmlType {
        self.traits.ty
    }
}

/// A weight type without a row in [`TYPES`]: no kernel can multiply with it. Displays as
/// "`Q4_K`, which this runtime cannot compute with (supported: F32, …)", to follow "tensor NAME
/// is stored as" (the model loader's message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnsupportedType(pub GgmlType);

impl std::fmt::Display for UnsupportedType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, which this runtime cannot compute with (supported:",
            self.0
        )?;
        for (i, t) in TYPES.iter().enumerate() {
            write!(f, "{}{}", if i == 0 { " " } else { ", " }, t.ty())?;
        }
        f.write_str(")")
    }
}

impl std::error::Error for UnsupportedType {}

/// The kernel table row of `ty`.
///
/// # Errors
/// [`UnsupportedType`] if no kernel multiplies with `ty`.
pub fn lookup(ty: GgmlType) -> Result<&'static TypeKernels, UnsupportedType> {
    TYPES
        .iter()
        .find(|t| t.ty() == ty)
        .ok_or(UnsupportedType(ty))
}

/// The F32 row (`gemm_nt` multiplies plain f32 buffers with its kernels).
pub(crate) fn f32_kernels() -> &'static TypeKernels {
    &TYPES[0]
}

fn traits(ty: GgmlType) -> &'static TypeTraits {
    match quant::traits(ty) {
        Some(t) => t,
        None => unreachable!("every kernel type is in quant::TYPES (tested)"),
    }
}

/// Every weight type with kernels.
pub static TYPES: std::sync::LazyLock<[TypeKernels; 11]> = std::sync::LazyLock::new(|| {
    // Crossovers measured on AVX2 with `cargo bench --bench kernels -- summary crossover`
    // (4096×4096 and 14336×4096, three runs): the integer Q4_0 kernel beat the f32 GEMM at every
    // n up to 512, Q8_0 up to n ≈ 64, the float decode kernels up to n ≈ 48. The Q4_K/Q5_K/Q6_K
    // lane kernels beat it at every n up to 512 on avx512 and avx2 (4096×4096: 1.4–1.7× at
    // n = 256–512). The 32-value lane kernels (Q4_1, Q5_0, Q5_1) pay an f32 scale step per 32
    // values and lose from n ≈ 24 (Q4_1), 48 (Q5_1), 64 (Q5_0) on avx512. On the scalar path the portable GEMM overtakes the plain dot products at once.
    [
        float_row::<f32>(GgmlType::F32),
        float_row::<f16>(GgmlType::F16),
        float_row::<bf16>(GgmlType::BF16),
        quant_row::<BlockQ8_0>((4, 64)),
        quant_row::<BlockQ4_0>((4, usize::MAX)),
        quant_row::<BlockQ4_1>((4, 24)),
        quant_row::<BlockQ5_0>((4, 64)),
        quant_row::<BlockQ5_1>((4, 48)),
        quant_row::<BlockQ4_K>((4, usize::MAX)),
        quant_row::<BlockQ5_K>((4, usize::MAX)),
        quant_row::<BlockQ6_K>((4, usize::MAX)),
    ]
});

// ---------------------------------------------------------------------------------------------
// Portable decode kernels.

/// A float weight element the portable decode kernel reads.
pub(crate) trait FloatElem: bytemuck::Pod {
    /// `Σ w[i]·x[i]`: [`scalar::dot_f32`], [`scalar::dot_f16_f32`] or [`scalar::dot_bf16_f32`].
    fn dot(w: &[Self], x: &[f32]) -> f32;
}

impl FloatElem for f32 {
    fn dot(w: &[f32], x: &[f32]) -> f32 {
        scalar::dot_f32(w, x)
    }
}

impl FloatElem for f16 {
    fn dot(w: &[f16], x: &[f32]) -> f32 {
        scalar::dot_f16_f32(w, x)
    }
}

impl FloatElem for bf16 {
    fn dot(w: &[bf16], x: &[f32]) -> f32 {
        scalar::dot_bf16_f32(w, x)
    }
}

fn float_row<T: FloatElem>(ty: GgmlType) -> TypeKernels {
    TypeKernels {
        traits: traits(ty),
        gemm_min_rows: (4, 48),
        scalar: Decoder {
            act: None,
            rows: float_rows::<T>,
        },
    }
}

/// The kernel row of a block type: activations quantized to `B::VecDot` blocks, dotted with
/// [`QuantBlock::vec_dot`].
fn quant_row<B: QuantBlock>(gemm_min_rows: (usize, usize)) -> TypeKernels {
    TypeKernels {
        traits: traits(B::TYPE),
        gemm_min_rows,
        scalar: Decoder {
            act: Some(plain_act::<B::VecDot>()),
            rows: quant_rows::<B>,
        },
    }
}

/// Activation rows quantized to plain `A` blocks with the type's reference quantizer (the
/// portable decoders' and the shared integer kernels' layout).
pub(crate) fn plain_act<A: QuantBlock>() -> ActQuant {
    ActQuant {
        row_bytes: block_row_bytes::<A>,
        quantize: quantize_blocks::<A>,
    }
}

fn block_row_bytes<A: QuantBlock>(k: usize) -> usize {
    (k / A::BLOCK * A::BYTES).next_multiple_of(ACT_ALIGN)
}

/// Quantize a row into `A` blocks ([`QuantBlock::quantize`]).
unsafe fn quantize_blocks<A: QuantBlock>(x: &[f32], out: &mut [u8]) {
    let nb = x.len() / A::BLOCK;
    let blocks: &mut [A] = bytemuck::cast_slice_mut(&mut out[..nb * A::BYTES]);
    quant::quantize_row(x, blocks);
}

/// Twin of every SIMD float decode kernel.
unsafe fn float_rows<T: FloatElem>(job: &Job<'_>, rows: Range<usize>) {
    let k = job.k;
    let w: &[T] = bytemuck::cast_slice(job.w);
    let x: &[f32] = bytemuck::cast_slice(job.x);
    for j in rows {
        for i in 0..job.n {
            let v = T::dot(&w[j * k..(j + 1) * k], &x[i * k..(i + 1) * k]);
            job.out.put(i, j, with_bias(v, job.bias, j));
        }
    }
}

/// Twin of every SIMD integer decode kernel (bit-exact).
unsafe fn quant_rows<B: QuantBlock>(job: &Job<'_>, rows: Range<usize>) {
    let nb = job.k / B::BLOCK;
    let w: &[B] = bytemuck::cast_slice(job.w);
    for j in rows {
        for i in 0..job.n {
            let xr = &job.x[i * job.x_stride..][..nb * <B::VecDot as QuantBlock>::BYTES];
            let v = B::vec_dot(&w[j * nb..(j + 1) * nb], bytemuck::cast_slice(xr));
            job.out.put(i, j, with_bias(v, job.bias, j));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_agrees_with_quant_and_format() {
        for t in TYPES.iter() {
            let ty = t.ty();
            assert!(std::ptr::eq(lookup(ty).unwrap(), t));
            assert_eq!(t.traits.block_values, ty.block_size(), "{ty}");
            assert_eq!(t.traits.block_bytes, ty.type_size(), "{ty}");
            assert!(ty.is_supported_for_compute(), "{ty}");
        }
        for q in quant::TYPES.iter() {
            assert!(lookup(q.ty).is_ok(), "{}", q.ty);
        }
        for id in 0..64 {
            if let Some(ty) = GgmlType::from_id(id) {
                assert_eq!(lookup(ty).is_ok(), ty.is_supported_for_compute(), "{ty}");
            }
        }
        let e = lookup(GgmlType::Q2_K).unwrap_err();
        assert_eq!(e, UnsupportedType(GgmlType::Q2_K));
        assert_eq!(
            e.to_string(),
            "Q2_K, which this runtime cannot compute with (supported: F32, F16, BF16, Q8_0, Q4_0, \
             Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)"
        );
    }
}
