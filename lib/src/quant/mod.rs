//! Quantized block formats and conversions between f32 and every storable type.
//!
//! Block layouts are ggml's, byte for byte, so files interoperate with ggml tooling:
//!
//! ```text
//! Q8_0: 32 values → { d: f16, qs: [i8; 32] }              34 bytes   x[i] = d · qs[i]
//! Q4_0: 32 values → { d: f16, qs: [u8; 16] }              18 bytes   x[i]    = d · ((qs[i] & 0xF) − 8)
//!                                                                    x[i+16] = d · ((qs[i] >> 4) − 8)
//! ```
//!
//! Quantization is ggml's reference rounding (`quantize_row_*_ref`), which is also what PyPI
//! `gguf.quants` does; our output is byte-identical to it (tested against files it produced):
//! - Q8_0: `d = max|x| / 127`, `qs = round_half_away(x / d)` computed as `x · (1/d)` in f32.
//! - Q4_0: `m` = the value of largest magnitude (first one on ties), `d = m / −8`,
//!   `qs = min(15, trunc(x · (1/d) + 8.5))`.
//!
//! Both compute `1/d` from the f32 `d` and then store `d` rounded to f16 (round to nearest even).
//!
//! One file per block type ([`BlockQ8_0`] in `q8_0.rs`, [`BlockQ4_0`] in `q4_0.rs`) holds its
//! layout, its [`QuantBlock`] impl (quantize, dequantize, the activation type it dots against and
//! the scalar reference dot) and `const` assertions of its sizes; [`TYPES`] is the per-type table
//! (block size, bytes, activation type, conversions) the rest of the crate looks types up in. The
//! SIMD dot-product kernels that consume these blocks live in [`crate::kernels`].

use half::{bf16, f16};
use rayon::prelude::*;

use crate::error::Error;
use crate::GgmlType;

mod kq_common;
pub mod mix;
mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
mod q8_0;
pub mod q8_1;
pub mod q8_k;
pub mod scales;

pub use q4_0::BlockQ4_0;
pub use q8_0::BlockQ8_0;

/// A quantized block type: `BLOCK` values of one row stored in `BYTES` bytes, in the spirit of
/// candle's `GgmlType` trait. One file per type (`q4_0.rs`, `q8_0.rs`) holds the struct, this
/// impl and `const` assertions of its sizes; [`TYPES`] lists it.
pub trait QuantBlock: bytemuck::Pod + Send + Sync {
    /// The ggml type this block stores.
    const TYPE: GgmlType;
    /// Values per block.
    const BLOCK: usize;
    /// Bytes per block (ggml's `type_size`).
    const BYTES: usize = std::mem::size_of::<Self>();
    /// The block type activations are quantized to for the integer dot product with this type
    /// (ggml's `vec_dot_type`): Q8_0 for Q8_0, Q4_0, Q5_0 and (unlike ggml's Q8_1) Q4_1, Q5_1;
    /// Q8_K for the K-quants.
    type VecDot: QuantBlock;
    /// Quantize `x` (exactly `BLOCK` values) with the reference rounding.
    fn quantize(x: &[f32]) -> Self;
    /// Write the block's `BLOCK` values to `out`.
    fn dequantize(&self, out: &mut [f32]);
    /// The scalar reference dot product of a weight row with an activation row of the same
    /// length (ggml's `vec_dot`); the meaning every SIMD kernel of the type reproduces.
    fn vec_dot(w: &[Self], x: &[Self::VecDot]) -> f32;
}

/// A block type whose dot product with its activation type splits into eight exact integer
/// *lanes* per block, the lane of value `p` being `(p mod 32) / 4` (bytes `4l..4l+4` of each
/// 32-byte chunk: what one `vpmaddwd`/`sdot` lane holds), and two f32 scales: [`lane_vec_dot`].
/// The K-quants (Q4_K, Q5_K, Q6_K: super-blocks of 256 against [`Q8_K`](q8_k)) and the legacy
/// Q4_1, Q5_0, Q5_1 (blocks of 32 against [`BlockQ8_0`]) are such types. Summing lanes across
/// blocks in f32 (and reducing them once per row) is what lets the SIMD kernels keep everything
/// in registers; they compute the integers their own way and share the f32 arithmetic, so they
/// agree with [`QuantBlock::vec_dot`] bit for bit.
pub trait LaneDot: QuantBlock {
    /// Whether the type has a minimum term (Q4_K, Q5_K, Q4_1, Q5_1: yes; Q6_K, Q5_0: no).
    const HAS_MIN: bool;
    /// The exact integer lanes `(scale term, minimum term)` of one block pair.
    fn lanes(&self, x: &Self::VecDot) -> ([i32; 8], [i32; 8]);
    /// The f32 scales `(d_w·d_x, dmin_w·d_x)` of the two terms (f16 scales as f32, one rounding;
    /// the second unused without [`LaneDot::HAS_MIN`]).
    fn scales(&self, x: &Self::VecDot) -> (f32, f32);
}

/// The scalar reference dot of every [`LaneDot`] type over `min(w.len(), x.len())` blocks: lane
/// `l` accumulates `d·(f32)lanes[l]` block by block (two roundings, no FMA), the minimum lanes
/// likewise with `dmin`; the result is `lanes8(acc) − lanes8(acc_min)` (just `lanes8(acc)` for
/// a type without minimum).
#[inline(always)]
pub fn lane_vec_dot<B: LaneDot>(w: &[B], x: &[B::VecDot]) -> f32 {
    lane_vec_dot_iter::<B>(w.iter(), x)
}

/// [`lane_vec_dot`] over weight blocks given one by one, by reference or by value (a row stored
/// in a repacked layout, [`crate::kernels::repack`]): the same arithmetic.
#[inline(always)]
pub fn lane_vec_dot_iter<B: LaneDot>(
    w: impl Iterator<Item = impl std::borrow::Borrow<B>>,
    x: impl IntoIterator<Item = impl std::borrow::Borrow<B::VecDot>>,
) -> f32 {
    let (mut acc, mut accm) = ([0f32; 8], [0f32; 8]);
    for (wb, xb) in w.zip(x) {
        let wb: &B = wb.borrow();
        let xb: &B::VecDot = xb.borrow();
        let (i, m) = wb.lanes(xb);
        let (d, dm) = wb.scales(xb);
        for l in 0..8 {
            acc[l] += d * i[l] as f32;
            if B::HAS_MIN {
                accm[l] += dm * m[l] as f32;
            }
        }
    }
    if B::HAS_MIN {
        lanes8(&acc) - lanes8(&accm)
    } else {
        lanes8(&acc)
    }
}

/// The lane of value `p` of a block in [`LaneDot::lanes`].
#[inline(always)]
pub const fn lane_of(p: usize) -> usize {
    (p % 32) / 4
}

/// `h` as f32, exactly (as `f16::to_f32`), without the run-time CPU detection of `half`'s
/// conversion: the integer decode kernels convert two or three scales per block.
#[inline(always)]
pub fn f16_as_f32(h: f16) -> f32 {
    let h = h.to_bits() as u32;
    let sign = (h & 0x8000) << 16;
    let (exp, mant) = ((h >> 10) & 0x1f, h & 0x3ff);
    let bits = match exp {
        0 => {
            // Zero or subnormal: mant · 2⁻²⁴ is exact in f32.
            let v = mant as f32 * (1.0 / 16_777_216.0);
            return f32::from_bits(sign | v.to_bits());
        }
        31 => sign | 0x7f80_0000 | (mant << 13),
        _ => sign | ((exp + 112) << 23) | (mant << 13),
    };
    f32::from_bits(bits)
}

/// The fixed reduction of eight lanes: `((a0+a4)+(a1+a5)) + ((a2+a6)+(a3+a7))`.
#[inline]
pub fn lanes8(a: &[f32; 8]) -> f32 {
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

/// The "eight block lanes" f32 accumulation of per-block `(scale_b, isum_b)` for `nb` blocks,
/// the order every integer dot kernel shares bit for bit: block `b = 8g + l` of the first
/// `8·⌊nb/8⌋` blocks adds `scale·isum` (two roundings, then the add; no FMA) to lane `l`; the
/// lanes are reduced by [`lanes8`]; the remaining blocks are summed left to right into a separate
/// `tail`, and the result is `lanes + tail`.
#[inline(always)]
pub fn block_lanes(nb: usize, block: impl Fn(usize) -> (f32, i32)) -> f32 {
    block_lanes_f32(nb, |b| {
        let (s, i) = block(b);
        s * i as f32
    })
}

/// [`block_lanes`]' accumulation of per-block f32 values `value(b)` (for a block value that is
/// not one product, as a repacked Q4_1 row's `(d·dx)·isum + (m·dx)·Σx`).
#[inline(always)]
pub fn block_lanes_f32(nb: usize, value: impl Fn(usize) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let full = nb / 8 * 8;
    for g in (0..full).step_by(8) {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += value(g + l);
        }
    }
    let mut tail = 0f32;
    for b in full..nb {
        tail += value(b);
    }
    lanes8(&acc) + tail
}

// ---------------------------------------------------------------------------------------------
// The per-type table.

/// One row of the per-type table (ggml's `type_traits`): how a storable type's bytes convert to
/// and from f32. Float types have blocks of one value.
#[derive(Debug)]
pub struct TypeTraits {
    /// The type.
    pub ty: GgmlType,
    /// Values per block.
    pub block_values: usize,
    /// Bytes per block.
    pub block_bytes: usize,
    /// The type activations are quantized to for an integer dot product (`None`: the decode
    /// kernels multiply f32 activations).
    pub vec_dot_type: Option<GgmlType>,
    /// Whole blocks (any alignment) to f32: `out.len() / block_values` blocks from `data`.
    pub to_f32: fn(data: &[u8], out: &mut [f32]),
    /// f32 to whole blocks: `src.len() / block_values` blocks into `out`.
    pub from_f32: fn(src: &[f32], out: &mut [u8]),
}

/// The table row of a block type.
pub const fn block_traits<B: QuantBlock>() -> TypeTraits {
    TypeTraits {
        ty: B::TYPE,
        block_values: B::BLOCK,
        block_bytes: B::BYTES,
        vec_dot_type: Some(<B::VecDot as QuantBlock>::TYPE),
        to_f32: dequantize_bytes::<B>,
        from_f32: quantize_bytes::<B>,
    }
}

/// Every type this crate stores and reads: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K,
/// Q5_K, Q6_K (not the activation-only Q8_1 and Q8_K). A new block type is one
/// file with a [`QuantBlock`] impl plus one row here (and its kernels' row in
/// `kernels::types`).
pub static TYPES: [TypeTraits; 11] = [
    TypeTraits {
        ty: GgmlType::F32,
        block_values: 1,
        block_bytes: 4,
        vec_dot_type: None,
        to_f32: f32_to_f32,
        from_f32: f32_from_f32,
    },
    TypeTraits {
        ty: GgmlType::F16,
        block_values: 1,
        block_bytes: 2,
        vec_dot_type: None,
        to_f32: f16_to_f32,
        from_f32: f16_from_f32,
    },
    TypeTraits {
        ty: GgmlType::BF16,
        block_values: 1,
        block_bytes: 2,
        vec_dot_type: None,
        to_f32: bf16_to_f32,
        from_f32: bf16_from_f32,
    },
    block_traits::<BlockQ8_0>(),
    block_traits::<BlockQ4_0>(),
    block_traits::<q4_1::BlockQ4_1>(),
    block_traits::<q5_0::BlockQ5_0>(),
    block_traits::<q5_1::BlockQ5_1>(),
    block_traits::<q4_k::BlockQ4_K>(),
    block_traits::<q5_k::BlockQ5_K>(),
    block_traits::<q6_k::BlockQ6_K>(),
];

/// The table row of `ty`, or `None` if this crate cannot store or read it.
pub fn traits(ty: GgmlType) -> Option<&'static TypeTraits> {
    TYPES.iter().find(|t| t.ty == ty)
}

fn f32_to_f32(data: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(data.chunks_exact(4)) {
        *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

fn f32_from_f32(src: &[f32], out: &mut [u8]) {
    for (o, &x) in out.chunks_exact_mut(4).zip(src) {
        o.copy_from_slice(&x.to_le_bytes());
    }
}

fn f16_to_f32(data: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
        *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
    }
}

fn f16_from_f32(src: &[f32], out: &mut [u8]) {
    for (o, &x) in out.chunks_exact_mut(2).zip(src) {
        o.copy_from_slice(&f16::from_f32(x).to_le_bytes());
    }
}

fn bf16_to_f32(data: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
        *o = bf16::from_le_bytes([b[0], b[1]]).to_f32();
    }
}

fn bf16_from_f32(src: &[f32], out: &mut [u8]) {
    for (o, &x) in out.chunks_exact_mut(2).zip(src) {
        o.copy_from_slice(&bf16::from_f32(x).to_le_bytes());
    }
}

/// Round half away from zero, like C's `roundf`, for |v| ≤ 2³¹ (callers have |v| ≤ 127.5);
/// for any other input (±inf, NaN, huge: non-finite activations) exactly `v.round() as i32`
/// (saturating, NaN → 0), never an overflow. `f32::round` gives the same result but is a libm
/// call on baseline x86-64.
#[inline(always)]
pub fn round_half_away(v: f32) -> i32 {
    let t = v as i32; // truncates toward zero, saturating
    let frac = v - t as f32; // exact: t and v share sign and |v − t| < 1 (inf past i32's range)
    if frac >= 0.5 {
        t.saturating_add(1)
    } else if frac <= -0.5 {
        t.saturating_sub(1)
    } else {
        t
    }
}

/// Quantize one row (`x.len() == out.len() * B::BLOCK`; checked in debug builds only, extra
/// values or blocks are left alone).
pub fn quantize_row<B: QuantBlock>(x: &[f32], out: &mut [B]) {
    debug_assert_eq!(x.len(), out.len() * B::BLOCK);
    for (b, chunk) in out.iter_mut().zip(x.chunks_exact(B::BLOCK)) {
        *b = B::quantize(chunk);
    }
}

/// Dequantize one row (`out.len() == blocks.len() * B::BLOCK`; checked in debug builds only).
pub fn dequantize_row<B: QuantBlock>(blocks: &[B], out: &mut [f32]) {
    debug_assert_eq!(out.len(), blocks.len() * B::BLOCK);
    for (b, chunk) in blocks.iter().zip(out.chunks_exact_mut(B::BLOCK)) {
        b.dequantize(chunk);
    }
}

/// Types [`convert_f32`] can produce: those of [`TYPES`].
pub fn can_store(ty: GgmlType) -> bool {
    traits(ty).is_some()
}

/// Below this many values a conversion runs on the calling thread.
const PAR_MIN_VALUES: usize = 1 << 16;

fn check_convert(ty: GgmlType, src: &[f32], row_len: usize, out: &[u8]) -> Result<usize, Error> {
    let row_bytes = ty
        .row_bytes(row_len as u64)
        .filter(|_| row_len > 0 && src.len().is_multiple_of(row_len))
        .ok_or_else(|| {
            Error::bad_argument(
                "row_len",
                format!(
                    "cannot store rows of {row_len} values as {ty} (block size {})",
                    ty.block_size()
                ),
            )
        })? as usize;
    let rows = src.len() / row_len;
    if out.len() != rows * row_bytes {
        return Err(Error::bad_argument(
            "out",
            format!(
                "output buffer holds {} bytes, {} needed",
                out.len(),
                rows * row_bytes
            ),
        ));
    }
    if !can_store(ty) {
        return Err(Error::Unsupported {
            what: ty.to_string(),
            why: format!("quantizing to {ty} is not supported"),
        });
    }
    Ok(row_bytes)
}

/// Convert f32 values (rows of `row_len`) to `ty`, writing `ty.row_bytes(row_len) * rows` bytes
/// into `out`. Parallel over groups of rows (rayon) once there are 65536 values or more.
///
/// Output is ggml's byte layout, little-endian; Q8_0 and Q4_0 blocks are byte-identical to
/// ggml's reference quantization. F16 and BF16 round to nearest even.
///
/// # Errors
///
/// [`Error::BadArgument`] if `row_len` is 0, not a multiple of the type's block size (32 for Q8_0
/// and Q4_0), or does not divide `src.len()`, or if `out` is not exactly the right size;
/// [`Error::Unsupported`] if `ty` is not one [`can_store`] accepts.
///
/// ```
/// use mllama::quant::{convert_f32, dequantize};
/// use mllama::GgmlType;
///
/// # fn main() -> Result<(), mllama::Error> {
/// // Two rows of 32 values → two Q8_0 blocks of 34 bytes.
/// let x: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0) / 8.0).collect();
/// let ty = GgmlType::Q8_0;
/// let mut q = vec![0u8; 2 * ty.row_bytes(32).unwrap() as usize];
/// convert_f32(ty, &x, 32, &mut q)?;
/// assert_eq!(q.len(), 68);
///
/// let mut back = vec![0f32; 64];
/// dequantize(ty, &q, &mut back)?;
/// let max_err = x.iter().zip(&back).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
/// assert!(max_err < 0.02); // about half a step of the scale, 4 / 127 / 2
///
/// // Q4_0 rows must be whole blocks.
/// assert!(convert_f32(GgmlType::Q4_0, &x[..48], 48, &mut [0u8; 36]).is_err());
/// # Ok(())
/// # }
/// ```
pub fn convert_f32(ty: GgmlType, src: &[f32], row_len: usize, out: &mut [u8]) -> Result<(), Error> {
    let row_bytes = check_convert(ty, src, row_len, out)?;
    // Rows per parallel task: enough values that the task outweighs rayon's overhead.
    let rows_per_task = (PAR_MIN_VALUES / row_len).max(1);
    let job = |(src, out): (&[f32], &mut [u8])| convert_rows(ty, src, out);
    if src.len() < PAR_MIN_VALUES {
        job((src, out));
    } else {
        src.par_chunks(rows_per_task * row_len)
            .zip(out.par_chunks_mut(rows_per_task * row_bytes))
            .for_each(job);
    }
    Ok(())
}

/// [`convert_f32`] on the calling thread (for callers that parallelise themselves). Same output
/// and errors.
pub fn convert_f32_serial(
    ty: GgmlType,
    src: &[f32],
    row_len: usize,
    out: &mut [u8],
) -> Result<(), Error> {
    check_convert(ty, src, row_len, out)?;
    convert_rows(ty, src, out);
    Ok(())
}

/// Serial conversion of whole rows; `out` is exactly the right size and `ty` in [`TYPES`].
fn convert_rows(ty: GgmlType, src: &[f32], out: &mut [u8]) {
    if let Some(t) = traits(ty) {
        (t.from_f32)(src, out);
    }
}

/// Quantize into a byte buffer whose alignment is unknown (block structs need 2-byte alignment).
fn quantize_bytes<B: QuantBlock>(src: &[f32], out: &mut [u8]) {
    let size = std::mem::size_of::<B>();
    for (o, chunk) in out.chunks_exact_mut(size).zip(src.chunks_exact(B::BLOCK)) {
        o.copy_from_slice(bytemuck::bytes_of(&B::quantize(chunk)));
    }
}

/// Convert (dequantize) `data` of type `ty` to f32. `out.len()` values are produced; `data` must
/// hold exactly that many values (in ggml's byte layout, at any alignment). Parallel (rayon) once
/// there are 65536 values or more.
///
/// # Errors
///
/// [`Error::BadArgument`] if `out.len()` is not a whole number of blocks or `data` is not exactly
/// `ty.row_bytes(out.len())` bytes; [`Error::Unsupported`] if `ty` is not F32, F16, BF16, Q8_0
/// or Q4_0.
///
/// ```
/// use half::f16;
/// use mllama::quant::dequantize;
/// use mllama::GgmlType;
///
/// # fn main() -> Result<(), mllama::Error> {
/// // One Q4_0 block: scale 0.5, nibbles 0..15 (low) and 15..0 (high).
/// let mut block = f16::from_f32(0.5).to_le_bytes().to_vec();
/// block.extend((0u8..16).map(|j| j | ((15 - j) << 4)));
/// let mut out = [0f32; 32];
/// dequantize(GgmlType::Q4_0, &block, &mut out)?;
/// assert_eq!((out[0], out[15], out[16]), (-4.0, 3.5, 3.5)); // 0.5 · (q − 8)
///
/// // F16 values are plain little-endian halves.
/// let data: Vec<u8> =
///     [1.5f32, -2.0].iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect();
/// let mut out = [0f32; 2];
/// dequantize(GgmlType::F16, &data, &mut out)?;
/// assert_eq!(out, [1.5, -2.0]);
/// # Ok(())
/// # }
/// ```
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<(), Error> {
    let n = out.len();
    let expected = ty.row_bytes(n as u64).ok_or_else(|| {
        Error::bad_argument(
            "out",
            format!("{n} values are not a whole number of {ty} blocks"),
        )
    })? as usize;
    if data.len() != expected {
        return Err(Error::bad_argument(
            "data",
            format!(
                "{ty}: {} bytes given for {n} values ({expected} needed)",
                data.len()
            ),
        ));
    }
    let f = |(d, o): (&[u8], &mut [f32])| dequantize_chunk(ty, d, o);
    let per_task = PAR_MIN_VALUES.div_ceil(ty.block_size()) * ty.block_size();
    let bytes_per_task = per_task / ty.block_size() * ty.type_size();
    if traits(ty).is_none() {
        return Err(Error::Unsupported {
            what: ty.to_string(),
            why: format!("dequantizing {ty} is not supported"),
        });
    }
    if n < PAR_MIN_VALUES {
        f((data, out));
    } else {
        data.par_chunks(bytes_per_task)
            .zip(out.par_chunks_mut(per_task))
            .for_each(f);
    }
    Ok(())
}

fn dequantize_chunk(ty: GgmlType, data: &[u8], out: &mut [f32]) {
    if let Some(t) = traits(ty) {
        (t.to_f32)(data, out);
    }
}

fn dequantize_bytes<B: QuantBlock>(data: &[u8], out: &mut [f32]) {
    let size = std::mem::size_of::<B>();
    for (b, o) in data.chunks_exact(size).zip(out.chunks_exact_mut(B::BLOCK)) {
        // Unaligned read: `data` may sit at any byte offset.
        let block: B = bytemuck::pod_read_unaligned(b);
        block.dequantize(o);
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_kquant;
