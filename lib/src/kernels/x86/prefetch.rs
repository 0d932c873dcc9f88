//! Software prefetching for the x86 decode kernels: how far ahead, and a cursor that requests
//! the lines ahead of a kernel's reads a few at a time.

use std::arch::x86_64::*;

/// How many bytes ahead of the data in use the decode kernels prefetch their weights (0: not at
/// all), chosen once. On the Intel Xeon (AMX) this was measured on, a decode mat-vec, which
/// alternates reading with computing, reads far below the memory's pace without it: two threads
/// over forty 14336 × 4096 matrices in turn (`kq_speed`, `KQ_MATS=40`) read 21 → 27–28 GB/s
/// (Q4_K repacked), 16 → 27 (Q6_K repacked), 24 → 28 (Q8_0 in place) of a ~34 GB/s probe, with
/// distances of 3–14 KiB and L1 or L2 hints all alike. On AMD Zen 4 (an earlier session)
/// prefetching the repacked Q4_K blocks one to sixteen blocks ahead made it slower, so it is off
/// on other vendors until measured there. `MLLAMA_PREFETCH=<bytes>` overrides the choice (0
/// turns it off).
fn prefetch_distance() -> usize {
    static D: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *D.get_or_init(|| {
        if let Some(d) = std::env::var("MLLAMA_PREFETCH")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            return d;
        }
        let id = __cpuid(0); // the vendor string, in EBX, EDX, ECX
        let intel = (id.ebx, id.edx, id.ecx) == (0x756e_6547, 0x4965_6e69, 0x6c65_746e);
        if intel {
            PREFETCH_INTEL
        } else {
            0
        }
    })
}

/// The prefetch distance on Intel cores (bytes).
const PREFETCH_INTEL: usize = 4608;

/// A software prefetcher for a kernel streaming through weights: [`Ahead::at`], called beside
/// the loads with the address read up to, keeps the cache lines up to [`prefetch_distance`]
/// bytes ahead of it requested. Starting `dist` ahead, each call requests about the lines its
/// kernel has read since the last one (at most eight), so the requests spread over the loads
/// (a whole block's lines requested at once at its start measured hardly better than none, against
/// +30% spread out). Addresses that go back
/// (another pass over the same rows, for a prompt) request nothing. Prefetching never faults,
/// so lines past the end are fine.
pub(crate) struct Ahead {
    next: usize,
    dist: usize,
}

impl Ahead {
    /// A prefetcher for a stream starting at `start` (with the distance 0, one that does nothing).
    #[inline(always)]
    pub(crate) fn new(start: *const u8) -> Self {
        let dist = prefetch_distance();
        let next = if dist == 0 {
            usize::MAX
        } else {
            (start as usize + dist) & !63
        };
        Ahead { next, dist }
    }

    /// The kernel is about to read up to `p`.
    #[inline(always)]
    pub(crate) unsafe fn at(&mut self, p: *const u8) {
        let end = (p as usize).wrapping_add(self.dist);
        for _ in 0..8 {
            if self.next > end {
                return;
            }
            _mm_prefetch::<_MM_HINT_T0>(self.next as *const i8);
            self.next += 64;
        }
    }
}
