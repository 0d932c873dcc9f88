//! Cache-blocked packed GEMM for the compute-bound regime (prefill, vision tower):
//! `y[n, m] = x[n, k] · W[m, k]ᵀ` with W of any weight type converted to f32 while packing.
//!
//! BLIS-style loops inside each parallel task (a block of W rows × a chunk of x rows):
//!
//! ```text
//! for p0 in k by KC:                  pack W[j-block, p0..p0+KC] → B panels (NR rows interleaved)
//!     for i0 in the x chunk by MC:     pack x[i0..i0+MC, p0..p0+KC] → A panels (MR rows interleaved)
//!         for each NR panel of B:       (stays in L1)
//!             for each MR panel of A:   (streams from L2)
//!                 micro-kernel: y[MR × NR] (+)= A_panel · B_panel
//! ```
//!
//! Each weight element is converted once per x chunk (most shapes have one or two chunks), and the
//! packed panels live in per-thread buffers that persist across calls.

use std::ops::Range;

pub(crate) use super::pack::Panel;

use std::cell::RefCell;

use super::{Out, SyncPtr};
use crate::kernels::tensor::Mat;

/// Depth of one packed panel (a multiple of 32, so quantized blocks never straddle panels).
pub(super) const KC: usize = 256;
/// x rows per packed A block (a multiple of every path's MR).
pub(super) const MC: usize = 96;
/// Largest block of W rows per task (a multiple of every path's NR).
pub(super) const NC_MAX: usize = 512;

/// One path's packing and micro-kernel.
pub(crate) trait Kernel: Sync {
    const MR: usize;
    const NR: usize;
    /// `out[p·NR + r] = W[j0 + r, p0 + p]` as f32 for `r < nr` (zeros for `nr ≤ r < NR`),
    /// `p < kc` (the fields of `panel`).
    ///
    /// # Safety
    /// The path's CPU features are available; rows and columns exist; `out.len() ≥ kc·NR`.
    unsafe fn pack_b(panel: Panel<'_>, out: &mut [f32]);
    /// `c[i·ldc + j] (+)= Σ_p a[p·MR + i] · b[p·NR + j]` for the full `MR × NR` tile.
    ///
    /// # Safety
    /// The path's CPU features are available; `a`, `b` hold `kc` steps; `c` covers the tile.
    unsafe fn kernel(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, acc: bool);
}

/// Portable kernel (no target features): plain loops LLVM vectorises with the baseline ISA.
pub(crate) struct ScalarKernel;

impl Kernel for ScalarKernel {
    const MR: usize = 4;
    const NR: usize = 8;
    unsafe fn pack_b(panel: Panel<'_>, out: &mut [f32]) {
        super::pack::pack_b_tail(panel, 0, Self::NR, out);
    }
    unsafe fn kernel(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, acc: bool) {
        let a = std::slice::from_raw_parts(a, kc * 4);
        let b = std::slice::from_raw_parts(b, kc * 8);
        let t = scalar_kernel::<4, 8>(kc, a, b);
        for (i, row) in t.iter().enumerate() {
            let cr = std::slice::from_raw_parts_mut(c.add(i * ldc), 8);
            for (o, v) in cr.iter_mut().zip(row) {
                *o = if acc { *o + v } else { *v };
            }
        }
    }
}

/// The plain meaning of every micro-kernel: `t[i][j] = Σ_p a[p·MR + i]·b[p·NR + j]`.
#[inline(always)]
pub(super) fn scalar_kernel<const MR: usize, const NR: usize>(
    kc: usize,
    a: &[f32],
    b: &[f32],
) -> [[f32; NR]; MR] {
    let mut t = [[0f32; NR]; MR];
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)).take(kc) {
        for (ti, &av) in t.iter_mut().zip(ap) {
            for (tv, &bv) in ti.iter_mut().zip(bp) {
                *tv += av * bv;
            }
        }
    }
    t
}

/// `out[p·mr_pad + i] = x[(rows.start + i)·k + cols.start + p]` for `i < rows.len()` (zeros up
/// to `mr_pad`), `p < cols.len()`.
fn pack_a(
    x: &[f32],
    k: usize,
    rows: Range<usize>,
    cols: Range<usize>,
    mr_pad: usize,
    out: &mut [f32],
) {
    let (mr, kc) = (rows.len(), cols.len());
    for i in 0..mr_pad {
        if i < mr {
            let src = &x[(rows.start + i) * k + cols.start..][..kc];
            for (p, &v) in src.iter().enumerate() {
                out[p * mr_pad + i] = v;
            }
        } else {
            for p in 0..kc {
                out[p * mr_pad + i] = 0.0;
            }
        }
    }
}

thread_local! {
    /// Packed A block and B panel of this thread (kept across calls).
    static PACK: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// `y = x · Wᵀ` through the packed GEMM with micro-kernel `K` (the path's `Isa::Gemm`).
pub(super) fn gemm_with<K: Kernel>(w: &Mat, x: &[f32], n: usize, y: &mut [f32]) {
    let m = w.rows;
    let threads = rayon::current_num_threads().max(1);
    // Blocks of W rows: at most NC_MAX, and at least two per thread when m allows.
    let nc = m
        .div_ceil(2 * threads)
        .clamp(K::NR, NC_MAX)
        .next_multiple_of(K::NR);
    let m_tasks = m.div_ceil(nc);
    // Chunks of x rows: enough tasks to balance (4 per thread), in whole MC blocks.
    let n_tasks = (4 * threads).div_ceil(m_tasks).clamp(1, n.div_ceil(MC));
    let chunk = n.div_ceil(n_tasks).next_multiple_of(K::MR);
    let n_tasks = n.div_ceil(chunk);
    let yp = SyncPtr(y.as_mut_ptr());
    let task = |t: usize| {
        let out = Out { p: yp, m };
        let (jt, it) = (t % m_tasks, t / m_tasks);
        let (j0, j1) = (jt * nc, ((jt + 1) * nc).min(m));
        let (i0, i1) = (it * chunk, ((it + 1) * chunk).min(n));
        PACK.with(|cell| match cell.try_borrow_mut() {
            Ok(mut bufs) => {
                let (a, b) = &mut *bufs;
                block::<K>(w, x, out, i0..i1, j0..j1, a, b)
            }
            // Re-entered on this thread (cannot happen with leaf-only tasks): use fresh buffers.
            Err(_) => block::<K>(w, x, out, i0..i1, j0..j1, &mut Vec::new(), &mut Vec::new()),
        });
    };
    let tasks = m_tasks * n_tasks;
    super::team::for_each(tasks, &task);
}

/// One task: `y[is, js]` over all of k.
fn block<K: Kernel>(
    w: &Mat,
    x: &[f32],
    out: Out,
    is: std::ops::Range<usize>,
    js: std::ops::Range<usize>,
    abuf: &mut Vec<f32>,
    bbuf: &mut Vec<f32>,
) {
    let (m, k) = (w.rows, w.cols);
    let (mr, nr) = (K::MR, K::NR);
    let kc_max = KC.min(k);
    let npanels = js.len().div_ceil(nr);
    let a_len = MC.div_ceil(mr) * mr * kc_max;
    let b_len = npanels * nr * kc_max;
    if abuf.len() < a_len {
        abuf.resize(a_len, 0.0);
    }
    if bbuf.len() < b_len {
        bbuf.resize(b_len, 0.0);
    }
    let data = w.data();
    let row_bytes = w.row_bytes();
    let mut tmp = [0f32; 16 * 16];
    debug_assert!(mr * nr <= tmp.len());
    let mut p0 = 0;
    while p0 < k {
        let kc = KC.min(k - p0);
        for jp in 0..npanels {
            let j = js.start + jp * nr;
            let cnt = nr.min(js.end - j);
            // SAFETY: this path's features were checked by the dispatcher; rows j..j+cnt and
            // columns p0..p0+kc exist; the panel slot holds kc·nr values.
            unsafe {
                let panel = Panel {
                    t: w.kernels().traits,
                    data,
                    row_bytes,
                    j0: j,
                    nr: cnt,
                    p0,
                    kc,
                };
                K::pack_b(panel, &mut bbuf[jp * nr * kc..(jp + 1) * nr * kc])
            };
        }
        let mut ic = is.start;
        while ic < is.end {
            let mc = MC.min(is.end - ic);
            let apanels = mc.div_ceil(mr);
            for ap in 0..apanels {
                let cnt = mr.min(mc - ap * mr);
                let i0 = ic + ap * mr;
                pack_a(
                    x,
                    k,
                    i0..i0 + cnt,
                    p0..p0 + kc,
                    mr,
                    &mut abuf[ap * mr * kc..(ap + 1) * mr * kc],
                );
            }
            for jp in 0..npanels {
                let j = js.start + jp * nr;
                let ncols = nr.min(js.end - j);
                let bp = bbuf[jp * nr * kc..].as_ptr();
                for ap in 0..apanels {
                    let i = ic + ap * mr;
                    let nrows = mr.min(is.end - i);
                    let a = abuf[ap * mr * kc..].as_ptr();
                    // SAFETY: features checked by the dispatcher; a and b hold kc steps of packed
                    // values; full tiles write rows i..i+MR, columns j..j+NR of y, inside this
                    // task's (disjoint) block; partial tiles go through `tmp`.
                    unsafe {
                        if nrows == mr && ncols == nr {
                            K::kernel(kc, a, bp, out.p.0.add(i * m + j), m, p0 > 0);
                        } else {
                            K::kernel(kc, a, bp, tmp.as_mut_ptr(), nr, false);
                            for r in 0..nrows {
                                for c in 0..ncols {
                                    let v = tmp[r * nr + c];
                                    let dst = out.p.0.add((i + r) * m + j + c);
                                    *dst = if p0 > 0 { *dst + v } else { v };
                                }
                            }
                        }
                    }
                }
            }
            ic += mc;
        }
        p0 += kc;
    }
}
