//! Q8_K: super-blocks of 256 signed bytes with an **f32** scale and sixteen i16 sums of 16
//! (292 bytes, ggml's `block_q8_K`). Not a storage type: the activation format ggml dots every
//! K-quant against; `bsums` lets the Q4_K/Q5_K minimum term be one small integer product.
//!
//! ```text
//! { d: f32, qs: [i8; 256], bsums: [i16; 16] }   x[j] = d·qs[j];  bsums[k] = Σ qs[16k..16k+16]
//! ```

use super::kq_common::{dequantize_bytes, nearest_int};
use super::QuantBlock;
use crate::error::Error;
use crate::GgmlType;

/// Values per super-block.
pub const BLOCK_VALUES: usize = 256;
/// Bytes per super-block.
pub const BLOCK_BYTES: usize = 292;

/// One Q8_K super-block (ggml `block_q8_K`).
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ8_K {
    /// Scale (f32, unlike every storage type).
    pub d: f32,
    /// Quantized values (−127..127 from the quantizer).
    pub qs: [i8; 256],
    /// `bsums[k] = Σ qs[16k..16k+16]`.
    pub bsums: [i16; 16],
}

const _: () = assert!(std::mem::size_of::<BlockQ8_K>() == BLOCK_BYTES);

impl QuantBlock for BlockQ8_K {
    const TYPE: GgmlType = GgmlType::Q8_K;
    const BLOCK: usize = BLOCK_VALUES;
    type VecDot = BlockQ8_K;

    /// Activation blocks dotted with each other (used by tests and as a table completeness
    /// requirement): per block `(d_w·d_x, Σ qw·qx)` in the eight-block-lane order.
    fn vec_dot(w: &[Self], x: &[Self]) -> f32 {
        super::block_lanes(w.len(), |b| {
            let isum = w[b]
                .qs
                .iter()
                .zip(&x[b].qs)
                .map(|(&a, &c)| a as i32 * c as i32)
                .sum();
            (w[b].d * x[b].d, isum)
        })
    }

    /// ggml's `quantize_row_q8_K_ref` for one super-block: `max` = the value of largest
    /// magnitude (first on ties), `iscale = −127/max`, `qs = min(127, nearest_int(iscale·x))`
    /// (ties to even), `d = 1/iscale`. An all-zero block is all zero bytes (ggml leaves its
    /// `bsums` unwritten; zero is what they sum to).
    fn quantize(x: &[f32]) -> Self {
        let x = &x[..BLOCK_VALUES];
        let mut max = 0f32;
        let mut amax = 0f32;
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        let mut b = BlockQ8_K {
            d: 0.0,
            qs: [0; 256],
            bsums: [0; 16],
        };
        if amax == 0.0 {
            return b;
        }
        let iscale = -127.0 / max;
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (s, c) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            *s = c.iter().map(|&q| q as i32).sum::<i32>() as i16;
        }
        b.d = 1.0 / iscale;
        b
    }

    /// ggml's `dequantize_row_q8_K`: `d·qs`.
    fn dequantize(&self, out: &mut [f32]) {
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = self.d * q as f32;
        }
    }
}

/// ggml's `quantize_row_q8_K_ref` (= its CPU `from_float` for Q8_K): whole super-blocks of `x`
/// into `out` (the shorter decides).
pub fn quantize_row_ref(x: &[f32], out: &mut [BlockQ8_K]) {
    for (b, c) in out.iter_mut().zip(x.chunks_exact(BLOCK_VALUES)) {
        *b = BlockQ8_K::quantize(c);
    }
}

/// ggml's `dequantize_row_q8_K`, bit for bit, for `min(blocks, out.len()/256)` blocks.
pub fn dequantize_row(blocks: &[BlockQ8_K], out: &mut [f32]) {
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(BLOCK_VALUES)) {
        b.dequantize(o);
    }
}

/// Dequantize Q8_K blocks stored at any alignment in `data`.
///
/// # Errors
///
/// [`Error::Invalid`] unless `out.len()` is a multiple of 256 and `data` holds exactly its
/// blocks.
pub fn dequantize_bytes_to(data: &[u8], out: &mut [f32]) -> Result<(), Error> {
    dequantize_bytes::<BlockQ8_K>("Q8_K", BLOCK_VALUES, data, out, |b, o| b.dequantize(o))
}
