//! Matrix kernels: `y = x · Wᵀ` for every weight type, parallel over output tiles.
//!
//! Float weights (F32/F16/BF16) multiply f32 activations. Quantized weights (Q8_0/Q4_0) multiply
//! activations quantized to Q8_0 blocks with integer dot products, as ggml does; the activation
//! quantization is the reference rounding of [`crate::quant::BlockQ8_0`].
//!
//! [`scalar`] holds the reference dot products.

pub mod scalar;

use rayon::prelude::*;

use crate::quant::{BlockQ8_0, QuantBlock};
use crate::tensor::Mat;
use crate::GgmlType;

/// Buffers reused across calls so the decode loop does not allocate.
#[derive(Default, Debug)]
pub struct Scratch {
    q8: Vec<BlockQ8_0>,
}

impl Scratch {
    pub fn new() -> Self {
        Self::default()
    }
}

/// A raw pointer to an output buffer that disjoint parallel tasks write into.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr(pub *mut f32);
// SAFETY: only used to hand one output buffer to tasks that write disjoint index sets (each task
// owns a distinct tile of `y`); the buffer outlives the parallel section (rayon joins before the
// borrow ends).
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

/// Activations in the form the weight type wants.
enum Act<'a> {
    F32(&'a [f32]),
    Q8(&'a [BlockQ8_0]),
}

/// Rows of x per tile and rows of W per tile.
const N_TILE: usize = 16;
/// Aim for this many multiply-adds per parallel task.
const TASK_WORK: usize = 1 << 18;

/// `y[n, m] = x[n, k] · W[m, k]ᵀ` with `m = w.rows`, `k = w.cols`.
pub fn matmul(w: &Mat, x: &[f32], n: usize, y: &mut [f32], scratch: &mut Scratch) {
    let (m, k) = (w.rows, w.cols);
    assert_eq!(x.len(), n * k, "matmul: x has {} values, expected {n}×{k}", x.len());
    assert_eq!(y.len(), n * m, "matmul: y has {} values, expected {n}×{m}", y.len());
    if n == 0 || m == 0 {
        return;
    }
    let act = match w.ty {
        GgmlType::Q8_0 | GgmlType::Q4_0 => {
            let nb = k / 32;
            scratch.q8.resize(n * nb, bytemuck::Zeroable::zeroed());
            let q8 = &mut scratch.q8[..n * nb];
            let quant = |(row, out): (&[f32], &mut [BlockQ8_0])| {
                for (b, c) in out.iter_mut().zip(row.chunks_exact(32)) {
                    *b = BlockQ8_0::quantize(c);
                }
            };
            if n * k >= 1 << 16 {
                x.par_chunks(k).zip(q8.par_chunks_mut(nb)).for_each(quant);
            } else {
                x.chunks(k).zip(q8.chunks_mut(nb)).for_each(quant);
            }
            Act::Q8(&scratch.q8[..n * nb])
        }
        _ => Act::F32(x),
    };

    // Tiles: N_TILE rows of x by enough rows of W that a tile is TASK_WORK multiply-adds.
    let n_tile = N_TILE.min(n);
    let m_tile = (TASK_WORK / (k * n_tile)).clamp(1, m);
    let (nt, mt) = (n.div_ceil(n_tile), m.div_ceil(m_tile));
    let yp = SyncPtr(y.as_mut_ptr());
    let job = |t: usize| {
        let (ti, tj) = (t / mt, t % mt);
        let (i0, i1) = (ti * n_tile, ((ti + 1) * n_tile).min(n));
        let (j0, j1) = (tj * m_tile, ((tj + 1) * m_tile).min(m));
        let yp = yp;
        tile(w, &act, k, i0..i1, j0..j1, |i, j, v| {
            // SAFETY: (i, j) lies in this task's tile; tiles are disjoint and inside y (n×m).
            unsafe { *yp.0.add(i * m + j) = v }
        });
    };
    if nt * mt == 1 {
        job(0);
    } else {
        (0..nt * mt).into_par_iter().for_each(job);
    }
}

/// Compute one output tile, calling `store(i, j, y[i, j])`.
fn tile(
    w: &Mat,
    act: &Act<'_>,
    k: usize,
    is: std::ops::Range<usize>,
    js: std::ops::Range<usize>,
    mut store: impl FnMut(usize, usize, f32),
) {
    match (w.ty, act) {
        (GgmlType::F32, Act::F32(x)) => {
            let wv = w.as_f32();
            for j in js {
                let wr = &wv[j * k..(j + 1) * k];
                for i in is.clone() {
                    store(i, j, scalar::dot_f32(wr, &x[i * k..(i + 1) * k]));
                }
            }
        }
        (GgmlType::F16, Act::F32(x)) => {
            let wv = w.as_f16();
            for j in js {
                let wr = &wv[j * k..(j + 1) * k];
                for i in is.clone() {
                    store(i, j, scalar::dot_f16_f32(wr, &x[i * k..(i + 1) * k]));
                }
            }
        }
        (GgmlType::BF16, Act::F32(x)) => {
            let wv = w.as_bf16();
            for j in js {
                let wr = &wv[j * k..(j + 1) * k];
                for i in is.clone() {
                    store(i, j, scalar::dot_bf16_f32(wr, &x[i * k..(i + 1) * k]));
                }
            }
        }
        (GgmlType::Q8_0, Act::Q8(q)) => {
            let nb = k / 32;
            let wv = w.as_q8_0();
            for j in js {
                let wr = &wv[j * nb..(j + 1) * nb];
                for i in is.clone() {
                    store(i, j, scalar::dot_q8_0_q8_0(wr, &q[i * nb..(i + 1) * nb]));
                }
            }
        }
        (GgmlType::Q4_0, Act::Q8(q)) => {
            let nb = k / 32;
            let wv = w.as_q4_0();
            for j in js {
                let wr = &wv[j * nb..(j + 1) * nb];
                for i in is.clone() {
                    store(i, j, scalar::dot_q4_0_q8_0(wr, &q[i * nb..(i + 1) * nb]));
                }
            }
        }
        (ty, _) => unreachable!("matmul: weight type {ty} has no kernel (checked at load)"),
    }
}

/// `y[n, m] = x[n, k] · W[m, k]ᵀ + b[m]`
pub fn matmul_bias(w: &Mat, b: &[f32], x: &[f32], n: usize, y: &mut [f32], scratch: &mut Scratch) {
    matmul(w, x, n, y, scratch);
    for row in y.chunks_exact_mut(w.rows) {
        for (v, bb) in row.iter_mut().zip(b) {
            *v += bb;
        }
    }
}

/// Plain f32 GEMM on row-major buffers: `c[n, m] = a[n, k] · b[m, k]ᵀ` (both operands
/// "row = one dot-product vector"). Used for attention scores; single-threaded (callers
/// parallelise over heads and blocks).
pub fn gemm_nt(a: &[f32], b: &[f32], n: usize, m: usize, k: usize, c: &mut [f32]) {
    for i in 0..n {
        let ar = &a[i * k..(i + 1) * k];
        for j in 0..m {
            c[i * m + j] = scalar::dot_f32(ar, &b[j * k..(j + 1) * k]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rnd(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    fn reference(wf: &[f32], x: &[f32], n: usize, m: usize, k: usize) -> Vec<f32> {
        let mut y = vec![0f32; n * m];
        for i in 0..n {
            for j in 0..m {
                let mut s = 0f64;
                for t in 0..k {
                    s += wf[j * k + t] as f64 * x[i * k + t] as f64;
                }
                y[i * m + j] = s as f32;
            }
        }
        y
    }

    #[test]
    fn matmul_all_types_against_f64_reference() {
        let (n, m, k) = (37, 70, 96);
        let wf = rnd(m * k, 3);
        let x = rnd(n * k, 5);
        let mut sc = Scratch::new();
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0] {
            let mut bytes = vec![0u8; ty.row_bytes(k as u64).unwrap() as usize * m];
            crate::quant::convert_f32(ty, &wf, k, &mut bytes).unwrap();
            let w = Mat::from_bytes(ty, m, k, &bytes);
            // Reference on the dequantized weights.
            let mut wd = vec![0f32; m * k];
            crate::quant::dequantize(ty, &bytes, &mut wd).unwrap();
            let want = reference(&wd, &x, n, m, k);
            let mut y = vec![0f32; n * m];
            matmul(&w, &x, n, &mut y, &mut sc);
            let tol = match ty {
                GgmlType::Q8_0 | GgmlType::Q4_0 => 0.02, // activation quantization
                _ => 1e-5,
            };
            for (a, b) in y.iter().zip(&want) {
                assert!((a - b).abs() <= tol, "{ty}: {a} vs {b}");
            }
            // n = 1 path.
            let mut y1 = vec![0f32; m];
            matmul(&w, &x[..k], 1, &mut y1, &mut sc);
            assert_eq!(&y1[..], &y[..m]);
        }
    }
}
