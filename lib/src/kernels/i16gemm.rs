//! 16-bit integer GEMM for the vision tower: `y[n, m] = x[n, k] · W[m, k]ᵀ (+ b)` with W and x
//! quantized to 12-bit integers (levels −2047..2047) per block of [`KB`] values along k, exact
//! i32 dot products per block, one f32 rescale per block.
//!
//! Why 12 bits: int8 operands (`kernels::igemm`) move the fixture models' cross-attention states
//! by 1.5–1.8% (relative L2), over issue 14's 1% bound; 12-bit operands keep them near f32 while
//! `vpdpwssd` (AVX-512 VNNI) still does twice the multiply-adds of an f32 FMA per instruction.
//!
//! ```text
//! quantize   per (row, block b):  d = amax/2047, q = round(v/d)            (weights once, x per call)
//! dot        per (i, j, b):       s = Σ_{p<KB} qa[i, bKB+p]·qw[j, bKB+p]   exact in i32 (|s| < 2^29)
//! y[i, j]    = ((0 + (da[i,b₀]·dw[j,b₀])·s₀) + (da·dw)·s₁ …) + bias[j]    each · and + rounded, no FMA
//! ```
//! so every path gives the same bits. Weights are packed once ([`I16Mat::new`]) in panels of
//! [`NR`] rows: per panel and block, `KB/2` steps of `NR` rows × 2 consecutive values (one i32
//! lane of `vpdpwssd` / `vpmaddwd` per row), padded to an even number of panels.
//!
//! Parallel tasks are (block of rows, chunk of x rows); inside a task, for each pair of panels
//! (32 rows) and each tile of `MR` x rows the tile's f32 sums stay in a small buffer across all
//! blocks of k. The micro-kernels: [`tile_scalar`] (the meaning), AVX-512 VNNI (`vpdpwssd`,
//! 6 rows × 32 columns) and AVX2 (`vpmaddwd` + add, 4 × 32).

use rayon::prelude::*;

use super::{active_path, Path, SyncPtr};
use crate::kernels::tensor::Mat;

/// Values per quantization block along k.
pub const KB: usize = 128;
/// Largest level: values are quantized to −LEVELS..=LEVELS (12 bits).
pub const LEVELS: f32 = 2047.0;
/// Rows per weight panel.
pub const NR: usize = 16;
/// Columns of y per micro-kernel call (two panels).
const NC: usize = 2 * NR;
/// Most x rows per micro-kernel call (any path).
const MR_MAX: usize = 6;

/// A weight matrix quantized to 12-bit integers per (row, block of [`KB`] values) and packed in
/// panels of [`NR`] rows.
pub struct I16Mat {
    /// Output rows (m).
    pub rows: usize,
    /// Values per row (k).
    pub cols: usize,
    nb: usize,
    /// `[panel][block][KB/2][NR][2]`.
    q: Vec<i16>,
    /// `[panel][block][NR]`.
    d: Vec<f32>,
}

/// Quantize `x` (at most `KB` values; the rest of `q` is set to 0) to 12-bit levels: returns the
/// scale. Inlined into [`quantize_row`]'s callers, which the SIMD paths compile with their
/// target features (the same IEEE operations, so the same levels, vectorised).
#[inline(always)]
fn quantize_block(x: &[f32], q: &mut [i16]) -> f32 {
    // max |x| over 16 lanes, then across them (max is exact: the order does not matter).
    let mut lanes = [0f32; 16];
    let whole = x.len() / 16 * 16;
    for c in x[..whole].chunks_exact(16) {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = l.max(v.abs());
        }
    }
    let amax = x[whole..]
        .iter()
        .chain(&lanes)
        .fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / LEVELS;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    q.fill(0);
    for (o, &v) in q.iter_mut().zip(x) {
        *o = (v * id).round().clamp(-LEVELS, LEVELS) as i16;
    }
    d
}

/// Quantize one row of `k` values into `q` (`nb·KB` levels) and `d` (`nb` scales).
#[inline(always)]
fn quantize_row(x: &[f32], q: &mut [i16], d: &mut [f32]) {
    for (b, (qb, db)) in q.chunks_mut(KB).zip(d.iter_mut()).enumerate() {
        *db = quantize_block(&x[(b * KB).min(x.len())..((b + 1) * KB).min(x.len())], qb);
    }
}

/// [`quantize_row`] compiled for AVX2 (`round` becomes a vector sequence instead of a call).
///
/// # Safety
/// AVX2 and FMA are available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_row_avx2(x: &[f32], q: &mut [i16], d: &mut [f32]) {
    quantize_row(x, q, d)
}

/// [`quantize_row`] with the best code this CPU runs (the same levels on every path).
fn quantize_row_fast(x: &[f32], q: &mut [i16], d: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: checked just above.
        return unsafe { quantize_row_avx2(x, q, d) };
    }
    quantize_row(x, q, d)
}

impl I16Mat {
    /// Quantize and pack every row of `w` (any weight type, read through its f32 conversion).
    pub fn new(w: &Mat) -> I16Mat {
        let (m, k) = (w.rows, w.cols);
        let nb = k.div_ceil(KB).max(1);
        let panels = m.div_ceil(NC) * 2;
        let panel_len = nb * KB * NR;
        let mut q = vec![0i16; panels * panel_len];
        let mut d = vec![0f32; panels * nb * NR];
        q.par_chunks_mut(panel_len)
            .zip(d.par_chunks_mut(nb * NR))
            .enumerate()
            .for_each(|(p, (qp, dp))| {
                let (mut row, mut lv, mut sc) =
                    (vec![0f32; k], vec![0i16; nb * KB], vec![0f32; nb]);
                for r in 0..NR.min(m.saturating_sub(p * NR)) {
                    w.row_to_f32(p * NR + r, &mut row);
                    quantize_row_fast(&row, &mut lv, &mut sc);
                    for b in 0..nb {
                        dp[b * NR + r] = sc[b];
                        for s in 0..KB / 2 {
                            let o = ((b * KB / 2 + s) * NR + r) * 2;
                            qp[o] = lv[b * KB + 2 * s];
                            qp[o + 1] = lv[b * KB + 2 * s + 1];
                        }
                    }
                }
            });
        I16Mat {
            rows: m,
            cols: k,
            nb,
            q,
            d,
        }
    }

    /// Bytes held.
    pub fn nbytes(&self) -> usize {
        2 * self.q.len() + 4 * self.d.len()
    }

    /// Panel `p`, block `b`: its levels (`KB/2 · NR · 2`) and scales (`NR`).
    fn panel(&self, p: usize, b: usize) -> (*const i16, *const f32) {
        let q = &self.q[(p * self.nb + b) * KB * NR..];
        let d = &self.d[(p * self.nb + b) * NR..];
        (q.as_ptr(), d.as_ptr())
    }
}

/// One micro-kernel call: x rows `a[t]` (block start, `KB` levels each) with scales `da[t]`,
/// against the panels `w0`, `w1` (block start) with scales `d0`, `d1` (`NR` each):
/// `acc[t][j] = acc[t][j] + (da[t]·dw[j])·Σ_p a[t][p]·w[j][p]` for `t < MR`, `j < 32`.
#[derive(Clone, Copy)]
struct Call<const MR: usize> {
    a: [*const i16; MR],
    da: [f32; MR],
    w: [*const i16; 2],
    dw: [*const f32; 2],
}

/// The meaning of every micro-kernel.
///
/// # Safety
/// The pointers hold a whole block (`KB` levels, `NR` scales per panel).
unsafe fn tile_scalar<const MR: usize>(c: Call<MR>, acc: &mut [[f32; NC]; MR]) {
    for (t, row) in acc.iter_mut().enumerate() {
        for (half, (&w, &dw)) in c.w.iter().zip(&c.dw).enumerate() {
            for r in 0..NR {
                let mut s = 0i32;
                for p in 0..KB / 2 {
                    for e in 0..2 {
                        let av = *c.a[t].add(2 * p + e) as i32;
                        s += av * *w.add((p * NR + r) * 2 + e) as i32;
                    }
                }
                let v = &mut row[half * NR + r];
                *v += (c.da[t] * *dw.add(r)) * s as f32;
            }
        }
    }
}

// Register tiles are indexed by (x row, column group) as in the scalar meaning.
#[allow(clippy::needless_range_loop)]
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Call, KB, NC, NR};
    // `vpdpwssd` in inline assembly (LLVM splits the intrinsic into two instructions).
    use crate::kernels::x86::dpwssd;
    use std::arch::x86_64::*;

    /// [`super::tile_scalar`] with AVX-512 VNNI: `vpdpwssd` adds the products of one i32 lane's
    /// two levels (row j, values 2p, 2p+1) with the broadcast pair of x row t.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
    pub(super) unsafe fn tile_avx512<const MR: usize>(c: Call<MR>, acc: &mut [[f32; NC]; MR]) {
        let mut s = [[_mm512_setzero_si512(); 2]; MR];
        for p in 0..KB / 2 {
            let w0 = _mm512_loadu_si512(c.w[0].add(p * NR * 2) as *const _);
            let w1 = _mm512_loadu_si512(c.w[1].add(p * NR * 2) as *const _);
            for t in 0..MR {
                let a = _mm512_set1_epi32((c.a[t].add(2 * p) as *const i32).read_unaligned());
                s[t][0] = dpwssd(s[t][0], a, w0);
                s[t][1] = dpwssd(s[t][1], a, w1);
            }
        }
        let dw = [_mm512_loadu_ps(c.dw[0]), _mm512_loadu_ps(c.dw[1])];
        for t in 0..MR {
            let da = _mm512_set1_ps(c.da[t]);
            for h in 0..2 {
                let scale = _mm512_mul_ps(da, dw[h]);
                let term = _mm512_mul_ps(scale, _mm512_cvtepi32_ps(s[t][h]));
                let o = acc[t].as_mut_ptr().add(h * NR);
                _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), term));
            }
        }
    }

    /// [`super::tile_scalar`] with AVX2: `vpmaddwd` (two products per i32 lane, exact) and an add.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn tile_avx2<const MR: usize>(c: Call<MR>, acc: &mut [[f32; NC]; MR]) {
        let mut s = [[_mm256_setzero_si256(); 4]; MR];
        for p in 0..KB / 2 {
            let w = [
                _mm256_loadu_si256(c.w[0].add(p * NR * 2) as *const _),
                _mm256_loadu_si256(c.w[0].add(p * NR * 2 + 16) as *const _),
                _mm256_loadu_si256(c.w[1].add(p * NR * 2) as *const _),
                _mm256_loadu_si256(c.w[1].add(p * NR * 2 + 16) as *const _),
            ];
            for t in 0..MR {
                let a = _mm256_set1_epi32((c.a[t].add(2 * p) as *const i32).read_unaligned());
                for q in 0..4 {
                    s[t][q] = _mm256_add_epi32(s[t][q], _mm256_madd_epi16(a, w[q]));
                }
            }
        }
        for t in 0..MR {
            let da = _mm256_set1_ps(c.da[t]);
            for q in 0..4 {
                let dw = _mm256_loadu_ps(c.dw[q / 2].add((q % 2) * 8));
                let term = _mm256_mul_ps(_mm256_mul_ps(da, dw), _mm256_cvtepi32_ps(s[t][q]));
                let o = acc[t].as_mut_ptr().add(q * 8);
                _mm256_storeu_ps(o, _mm256_add_ps(_mm256_loadu_ps(o), term));
            }
        }
    }
}

/// x quantized per call: `[n + 1][nb·KB]` levels (the last row zeros, for partial tiles) and
/// `[n + 1][nb]` scales, in buffers kept per calling thread (the vision tower's activations are
/// tens of MB: allocating them per product would cost page faults each time).
struct Acts {
    q: Vec<i16>,
    d: Vec<f32>,
    nb: usize,
}

thread_local! {
    static ACTS: std::cell::RefCell<Acts> = const {
        std::cell::RefCell::new(Acts { q: Vec::new(), d: Vec::new(), nb: 0 })
    };
}

impl Acts {
    fn fill(&mut self, x: &[f32], n: usize, k: usize, nb: usize) {
        self.nb = nb;
        self.q.resize((n + 1) * nb * KB, 0);
        self.d.resize((n + 1) * nb, 0.0);
        self.q[n * nb * KB..].fill(0);
        self.d[n * nb..].fill(0.0);
        self.q[..n * nb * KB]
            .par_chunks_mut(nb * KB)
            .zip(self.d[..n * nb].par_chunks_mut(nb))
            .zip(x.par_chunks(k.max(1)))
            .for_each(|((qr, dr), xr)| quantize_row_fast(xr, qr, dr));
    }

    /// Row `i` (`n`: the zero row), block `b`: levels and scale.
    fn at(&self, i: usize, b: usize) -> (*const i16, f32) {
        (
            self.q[(i * self.nb + b) * KB..].as_ptr(),
            self.d[i * self.nb + b],
        )
    }
}

/// `y[n, rows] = x[n, cols] · Wᵀ (+ bias)` with the numerics of the module docs, on the active
/// path, in parallel.
///
/// # Panics
/// If `x` is not `n × cols` or `y` not `n × rows` values, or `bias` not `rows` long.
pub fn matmul_i16(w: &I16Mat, bias: Option<&[f32]>, x: &[f32], n: usize, y: &mut [f32]) {
    let (m, k) = (w.rows, w.cols);
    assert_eq!(x.len(), n * k, "matmul_i16: x is not {n}×{k}");
    assert_eq!(y.len(), n * m, "matmul_i16: y is not {n}×{m}");
    assert!(
        bias.is_none_or(|b| b.len() == m),
        "matmul_i16: bias is not {m} long"
    );
    if n == 0 || m == 0 {
        return;
    }
    ACTS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut acts) => {
            acts.fill(x, n, k, w.nb);
            run_on(w, bias, &acts, n, y)
        }
        // Re-entered on this thread (a task calling back): fresh buffers.
        Err(_) => {
            let mut acts = Acts {
                q: Vec::new(),
                d: Vec::new(),
                nb: 0,
            };
            acts.fill(x, n, k, w.nb);
            run_on(w, bias, &acts, n, y)
        }
    })
}

/// [`matmul_i16`] on quantized activations, with the active path's micro-kernel.
fn run_on(w: &I16Mat, bias: Option<&[f32]>, acts: &Acts, n: usize, y: &mut [f32]) {
    let path = active_path();
    match path {
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => run::<6>(w, bias, acts, n, y, |c, acc| unsafe {
            // SAFETY: the avx512 path is only active on a CPU that runs it.
            x86::tile_avx512(c, acc)
        }),
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => run::<4>(w, bias, acts, n, y, |c, acc| unsafe {
            // SAFETY: as above, for avx2.
            x86::tile_avx2(c, acc)
        }),
        _ => run::<4>(w, bias, acts, n, y, |c, acc| unsafe {
            // SAFETY: `run` passes whole blocks.
            tile_scalar(c, acc)
        }),
    }
}

/// The traversal (the same for every path): tasks of (32·`pairs` rows, chunk of x rows); in a
/// task, for each pair of panels and each tile of `MR` x rows, every block of k through `tile`.
fn run<const MR: usize>(
    w: &I16Mat,
    bias: Option<&[f32]>,
    acts: &Acts,
    n: usize,
    y: &mut [f32],
    tile: impl Fn(Call<MR>, &mut [[f32; NC]; MR]) + Sync,
) {
    const { assert!(MR <= MR_MAX) };
    let m = w.rows;
    let pairs = m.div_ceil(NC);
    let threads = rayon::current_num_threads().max(1);
    // Row blocks of at most 512 rows, at least two per thread when m allows; x chunks so that
    // there are about four tasks per thread.
    let pairs_per_task = pairs.div_ceil(2 * threads).clamp(1, 16);
    let m_tasks = pairs.div_ceil(pairs_per_task);
    let n_tasks = (4 * threads).div_ceil(m_tasks).clamp(1, n.div_ceil(MR));
    let chunk = n.div_ceil(n_tasks).next_multiple_of(MR);
    let n_tasks = n.div_ceil(chunk);
    let yp = SyncPtr(y.as_mut_ptr());
    let task = |t: usize| {
        let yp = &yp;
        let (jt, it) = (t % m_tasks, t / m_tasks);
        let (pr0, pr1) = (jt * pairs_per_task, ((jt + 1) * pairs_per_task).min(pairs));
        let (i0, i1) = (it * chunk, ((it + 1) * chunk).min(n));
        for pr in pr0..pr1 {
            let mut i = i0;
            while i < i1 {
                let rows: [usize; MR] = std::array::from_fn(|t| if i + t < i1 { i + t } else { n });
                let mut acc = [[0f32; NC]; MR];
                for b in 0..w.nb {
                    let (w0, d0) = w.panel(2 * pr, b);
                    let (w1, d1) = w.panel(2 * pr + 1, b);
                    let a = rows.map(|r| acts.at(r, b));
                    let call = Call {
                        a: a.map(|v| v.0),
                        da: a.map(|v| v.1),
                        w: [w0, w1],
                        dw: [d0, d1],
                    };
                    tile(call, &mut acc);
                }
                for (t, row) in acc.iter().enumerate().take(i1 - i) {
                    for (c, &v) in row.iter().enumerate() {
                        let j = pr * NC + c;
                        if j < m {
                            let v = v + bias.map_or(0.0, |b| b[j]);
                            // SAFETY: (i + t, j) lies in this task's rows × columns, which no
                            // other task writes; y holds n × m values.
                            unsafe { *yp.0.add((i + t) * m + j) = v };
                        }
                    }
                }
                i += MR;
            }
        }
    };
    let tasks = m_tasks * n_tasks;
    if tasks == 1 {
        task(0);
    } else {
        (0..tasks).into_par_iter().for_each(task);
    }
}
