//! Hardware probes, so kernel throughput can be reported as a fraction of what the machine can do:
//! the FMA peak (independent FMA chains on every thread) and the memory read bandwidth (a large
//! buffer summed with SIMD on every thread). Used by `benches/kernels.rs`; meant for a CLI `bench`
//! command too.

use std::time::Instant;

use rayon::prelude::*;

use super::isa::Isa;
use super::with_isa;
use super::Path;

/// Floating-point operations one call of the path's FMA loop does per iteration.
fn fma_flops_per_iter(path: Path) -> f64 {
    with_isa!(path, I => I::FMA_FLOPS_PER_ITER)
}

fn fma_loop(path: Path, iters: u64) -> f32 {
    // SAFETY: `path` must be available (checked by the callers).
    with_isa!(path, I => unsafe { I::fma_chains(iters) })
}

/// Peak multiply-add throughput of `path` in GFLOP/s over all rayon threads (each runs
/// independent FMA chains for about `seconds`). On the scalar path it is plain f32 mul + add.
///
/// # Panics
/// If this CPU cannot run `path`.
pub fn fma_peak_gflops(path: Path, seconds: f64) -> f64 {
    assert!(path.is_available(), "fma_peak_gflops: {path} not available");
    // Calibrate on one thread.
    let mut iters = 1u64 << 16;
    loop {
        let t = Instant::now();
        std::hint::black_box(fma_loop(path, iters));
        let dt = t.elapsed().as_secs_f64();
        if dt > 0.02 || iters > 1 << 40 {
            iters = ((iters as f64) * seconds / dt).max(1.0) as u64;
            break;
        }
        iters *= 4;
    }
    let threads = rayon::current_num_threads().max(1);
    let t = Instant::now();
    let s: f32 = (0..threads)
        .into_par_iter()
        .map(|_| fma_loop(path, iters))
        .sum();
    let dt = t.elapsed().as_secs_f64();
    std::hint::black_box(s);
    iters as f64 * fma_flops_per_iter(path) * threads as f64 / dt / 1e9
}

/// A buffer for [`read_bandwidth_gbs`]: `bytes` of f32 (rounded down to whole values), touched so
/// its pages exist, in the same kind of memory as repacked weights ([`super::anon`]: huge pages
/// advised), so the probe is not slowed by small pages the weights do not have.
///
/// # Errors
/// The memory cannot be mapped.
pub fn probe_buffer(bytes: usize) -> std::io::Result<ProbeBuf> {
    let n = bytes / 4;
    let map = super::anon::huge_zeroed(n * 4)?;
    let mut buf = ProbeBuf { map, n };
    buf.par_chunks_mut(1 << 16)
        .enumerate()
        .for_each(|(i, c)| c.fill(i as f32 * 1e-9));
    Ok(buf)
}

/// The read probe's buffer ([`probe_buffer`]), used as a `[f32]`.
pub struct ProbeBuf {
    map: super::anon::HugeBuf,
    n: usize,
}

impl std::ops::Deref for ProbeBuf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        bytemuck::cast_slice(&self.map[..self.n * 4])
    }
}

impl std::ops::DerefMut for ProbeBuf {
    fn deref_mut(&mut self) -> &mut [f32] {
        bytemuck::cast_slice_mut(&mut self.map[..self.n * 4])
    }
}

fn sum(path: Path, x: &[f32], streams: usize) -> f32 {
    // SAFETY: `path` must be available (checked by the callers).
    with_isa!(path, I => unsafe { I::sum_streams(x, streams) })
}

/// One pass summing `buf` on every rayon thread (contiguous slices, each read as four side-by-side
/// streams, which sustains more bandwidth than one): GB/s read.
pub fn read_pass_gbs(path: Path, buf: &[f32]) -> f64 {
    read_pass_streams_gbs(path, buf, 4)
}

/// [`read_pass_gbs`] with `streams` (1 or 4) concurrent read streams per thread.
pub fn read_pass_streams_gbs(path: Path, buf: &[f32], streams: usize) -> f64 {
    assert!(path.is_available(), "read_pass_gbs: {path} not available");
    let threads = rayon::current_num_threads().max(1);
    let chunk = buf.len().div_ceil(threads * 8).max(1);
    let t = Instant::now();
    let s: f32 = buf.par_chunks(chunk).map(|c| sum(path, c, streams)).sum();
    let dt = t.elapsed().as_secs_f64();
    std::hint::black_box(s);
    (buf.len() * 4) as f64 / dt / 1e9
}

/// Memory read bandwidth in GB/s: the best of `reps` rounds of passes over a fresh `bytes`-sized
/// buffer (use a few hundred MB, far beyond the last-level cache) with 1, 2, 4 and 8 read streams
/// per thread.
///
/// # Errors
/// The buffer cannot be mapped.
pub fn read_bandwidth_gbs(path: Path, bytes: usize, reps: usize) -> std::io::Result<f64> {
    let buf = probe_buffer(bytes)?;
    Ok(best_read_gbs(path, &buf, reps))
}

/// [`read_bandwidth_gbs`] over an existing buffer.
pub fn best_read_gbs(path: Path, buf: &[f32], reps: usize) -> f64 {
    let mut best = 0f64;
    for _ in 0..reps.max(1) {
        for streams in [1, 2, 4, 8] {
            best = best.max(read_pass_streams_gbs(path, buf, streams));
        }
    }
    best
}
