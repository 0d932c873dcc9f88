//! Int8 GEMM for the vision tower: `y[n, m] = x[n, k] · W[m, k]ᵀ (+ b)` with W and x both
//! quantized to int8 per block of [`KB`] values along k (scale `d = amax / 127`, ggml's Q8_0
//! rounding rule with an f32 scale), integer dot products per block, one f32 rescale per block.
//!
//! Scalar reference only (the SIMD micro-kernels come with the packed layout).

use rayon::prelude::*;

use crate::kernels::tensor::Mat;

/// Values per quantization block along k.
pub const KB: usize = 128;

/// A weight matrix quantized to int8 per (row, block of [`KB`] values), rows zero-padded to a
/// whole number of blocks.
pub struct I8Mat {
    /// Output rows (m).
    pub rows: usize,
    /// Values per row (k).
    pub cols: usize,
    q: Vec<i8>,  // [rows, nb·KB]
    d: Vec<f32>, // [rows, nb]
}

/// Quantize `x` (at most `KB` values; the rest of `q` stays 0) to int8: returns the scale.
fn quantize_block(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (o, &v) in q.iter_mut().zip(x) {
        *o = (v * id).round() as i8;
    }
    d
}

/// Quantize rows of `k` values (`x.len() / k` rows) into `q` `[rows, nb·KB]`, `d` `[rows, nb]`.
fn quantize_rows(x: &[f32], k: usize, q: &mut [i8], d: &mut [f32]) {
    let nb = k.div_ceil(KB);
    q.par_chunks_mut(nb * KB)
        .zip(d.par_chunks_mut(nb))
        .zip(x.par_chunks(k))
        .for_each(|((qr, dr), xr)| {
            for (b, (qb, db)) in qr.chunks_mut(KB).zip(dr.iter_mut()).enumerate() {
                *db = quantize_block(&xr[b * KB..((b + 1) * KB).min(k)], qb);
            }
        });
}

impl I8Mat {
    /// Quantize every row of `w` (any weight type, read through its f32 conversion).
    pub fn new(w: &Mat) -> I8Mat {
        let (m, k) = (w.rows, w.cols);
        let nb = k.div_ceil(KB);
        let mut q = vec![0i8; m * nb * KB];
        let mut d = vec![0f32; m * nb];
        q.par_chunks_mut(nb * KB)
            .zip(d.par_chunks_mut(nb))
            .enumerate()
            .for_each_init(
                || vec![0f32; k],
                |row, (j, (qr, dr))| {
                    w.row_to_f32(j, row);
                    quantize_rows(row, k, qr, dr);
                },
            );
        I8Mat {
            rows: m,
            cols: k,
            q,
            d,
        }
    }

    /// Bytes held.
    pub fn nbytes(&self) -> usize {
        self.q.len() + 4 * self.d.len()
    }
}

/// `y[n, rows] = x[n, cols] · Wᵀ (+ bias)`: `y[i, j] = (Σ_b (da[i,b]·dw[j,b])·dot_b) + bias[j]`,
/// summed in block order from 0, each product and sum rounded (no fused multiply-add).
///
/// # Panics
/// If `x` is not `n × cols` or `y` not `n × rows` values.
pub fn matmul_i8(w: &I8Mat, bias: Option<&[f32]>, x: &[f32], n: usize, y: &mut [f32]) {
    let (m, k) = (w.rows, w.cols);
    assert_eq!(x.len(), n * k, "matmul_i8: x is not {n}×{k}");
    assert_eq!(y.len(), n * m, "matmul_i8: y is not {n}×{m}");
    let nb = k.div_ceil(KB);
    let mut qa = vec![0i8; n * nb * KB];
    let mut da = vec![0f32; n * nb];
    quantize_rows(x, k, &mut qa, &mut da);
    y.par_chunks_mut(m).enumerate().for_each(|(i, yr)| {
        let (qi, di) = (
            &qa[i * nb * KB..(i + 1) * nb * KB],
            &da[i * nb..(i + 1) * nb],
        );
        for (j, out) in yr.iter_mut().enumerate() {
            let (qj, dj) = (
                &w.q[j * nb * KB..(j + 1) * nb * KB],
                &w.d[j * nb..(j + 1) * nb],
            );
            let mut acc = 0f32;
            for b in 0..nb {
                let dot: i32 = qi[b * KB..(b + 1) * KB]
                    .iter()
                    .zip(&qj[b * KB..(b + 1) * KB])
                    .map(|(&a, &c)| a as i32 * c as i32)
                    .sum();
                acc += (di[b] * dj[b]) * dot as f32;
            }
            *out = acc + bias.map_or(0.0, |bb| bb[j]);
        }
    });
}
