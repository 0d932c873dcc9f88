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
//! The dot-product kernels that consume these blocks live in [`crate::kernels`].

use half::{bf16, f16};
use rayon::prelude::*;

use crate::error::Error;
use crate::GgmlType;

mod kq_common;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q8_1;
pub mod q8_k;

/// A quantized block type: `BLOCK` values of one row stored in `size_of::<Self>()` bytes.
pub trait QuantBlock: bytemuck::Pod + Send + Sync {
    /// The ggml type this block stores.
    const TYPE: GgmlType;
    /// Values per block.
    const BLOCK: usize;
    /// Quantize `x` (exactly `BLOCK` values) with the reference rounding.
    fn quantize(x: &[f32]) -> Self;
    /// Write the block's `BLOCK` values to `out`.
    fn dequantize(&self, out: &mut [f32]);
}

/// Q8_0 block: 32 signed bytes and one f16 scale.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// Scale: value `i` is `d · qs[i]`.
    pub d: f16,
    /// Quantized values.
    pub qs: [i8; 32],
}

/// Q4_0 block: 32 four-bit values (offset by 8) and one f16 scale. Byte `j` holds value `j` in
/// its low nibble and value `j + 16` in its high nibble.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ4_0 {
    /// Scale: a nibble `q` stands for `d · (q − 8)`.
    pub d: f16,
    /// Packed nibbles: values `j` (low) and `j + 16` (high) in byte `j`.
    pub qs: [u8; 16],
}

impl QuantBlock for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const BLOCK: usize = 32;

    fn quantize(x: &[f32]) -> Self {
        debug_assert_eq!(x.len(), 32);
        let amax = x.iter().fold(0f32, |m, &v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; 32];
        for (q, &v) in qs.iter_mut().zip(x) {
            *q = round_half_away(v * id) as i8;
        }
        BlockQ8_0 {
            d: f16::from_f32(d),
            qs,
        }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }
}

impl QuantBlock for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const BLOCK: usize = 32;

    fn quantize(x: &[f32]) -> Self {
        debug_assert_eq!(x.len(), 32);
        // The value of largest magnitude, keeping its sign; the first one wins on ties.
        let mut amax = 0f32;
        let mut max = 0f32;
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; 16];
        for j in 0..16 {
            let q0 = ((x[j] * id + 8.5) as u8).min(15);
            let q1 = ((x[j + 16] * id + 8.5) as u8).min(15);
            qs[j] = q0 | (q1 << 4);
        }
        BlockQ4_0 {
            d: f16::from_f32(d),
            qs,
        }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for j in 0..16 {
            out[j] = ((self.qs[j] & 0x0F) as i32 - 8) as f32 * d;
            out[j + 16] = ((self.qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }
}

/// Round half away from zero, like C's `roundf`, for |v| ≤ 2³¹ (callers have |v| ≤ 127.5).
/// `f32::round` gives the same result but is a libm call on baseline x86-64.
#[inline(always)]
pub fn round_half_away(v: f32) -> i32 {
    let t = v as i32; // truncates toward zero
    let frac = v - t as f32; // exact: t and v share sign and |v − t| < 1
    if frac >= 0.5 {
        t + 1
    } else if frac <= -0.5 {
        t - 1
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

/// Types [`convert_f32`] can produce: F32, F16, BF16, Q8_0 and Q4_0.
pub fn can_store(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_0 | GgmlType::Q4_0
    )
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

/// Serial conversion of whole rows; `out` is exactly the right size.
fn convert_rows(ty: GgmlType, src: &[f32], out: &mut [u8]) {
    match ty {
        GgmlType::F32 => out.copy_from_slice(bytemuck::cast_slice(src)),
        GgmlType::F16 => {
            for (o, &x) in out.chunks_exact_mut(2).zip(src) {
                o.copy_from_slice(&f16::from_f32(x).to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for (o, &x) in out.chunks_exact_mut(2).zip(src) {
                o.copy_from_slice(&bf16::from_f32(x).to_le_bytes());
            }
        }
        GgmlType::Q8_0 => quantize_bytes::<BlockQ8_0>(src, out),
        GgmlType::Q4_0 => quantize_bytes::<BlockQ4_0>(src, out),
        _ => unreachable!("checked by can_store"),
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
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_0 | GgmlType::Q4_0 => {
            if n < PAR_MIN_VALUES {
                f((data, out));
            } else {
                data.par_chunks(bytes_per_task)
                    .zip(out.par_chunks_mut(per_task))
                    .for_each(f);
            }
            Ok(())
        }
        _ => Err(Error::Unsupported {
            what: ty.to_string(),
            why: format!("dequantizing {ty} is not supported"),
        }),
    }
}

fn dequantize_chunk(ty: GgmlType, data: &[u8], out: &mut [f32]) {
    match ty {
        GgmlType::F32 => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        GgmlType::Q8_0 => dequantize_bytes::<BlockQ8_0>(data, out),
        GgmlType::Q4_0 => dequantize_bytes::<BlockQ4_0>(data, out),
        _ => {}
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
