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
///
/// The AVX-512 ×16 kernels (repacked Q4_K and Q6_K) prefetch on two levels instead
/// ([`Ahead::two_level`]): each line into L1 [`NEAR_TWO_LEVEL`] bytes ahead (or the distance
/// `MLLAMA_PREFETCH` sets) and into L2 [`FAR_TWO_LEVEL`] bytes beyond that. Eleven-billion-shaped
/// Q4_K_M decode, interleaved with the one-level default over three rounds on the Xeon VM:
/// 0.709 / 0.676 / 0.699 → 0.730 / 0.694 / 0.714 of the paired read probe; forty matrices in turn
/// (`kq_speed`), Q4_K 30.4 → 32–33 GB/s and Q6_K 32.2 → 33.5–34 (medians of four rounds). The
/// AVX2 kernels, and the ×8 layouts on AVX-512, measured no better with it (within the noise), so
/// they keep one level.
fn prefetch_distance() -> usize {
    setting().0
}

/// Why the prefetch distance is not the one `MLLAMA_PREFETCH` asks for, or `None`.
pub(crate) fn prefetch_warning() -> Option<&'static str> {
    setting().1.as_deref()
}

/// The near and far distances of [`Ahead::two_level`] for a [`setting`]: off when prefetching
/// is off, the requested distance when `MLLAMA_PREFETCH` names one, else [`NEAR_TWO_LEVEL`].
fn two_level_distances(&(dist, ref warning): &(usize, Option<String>)) -> (usize, usize) {
    let explicit = std::env::var("MLLAMA_PREFETCH").is_ok_and(|v| {
        let v = v.trim();
        !v.is_empty() && !v.eq_ignore_ascii_case("auto")
    }) && warning.is_none();
    near_far(dist, explicit)
}

/// [`two_level_distances`] for the chosen distance `dist`, `explicit` when the user named it.
fn near_far(dist: usize, explicit: bool) -> (usize, usize) {
    match (dist, explicit) {
        (0, _) => (0, 0),
        (d, true) => (d, FAR_TWO_LEVEL),
        (_, false) => (NEAR_TWO_LEVEL, FAR_TWO_LEVEL),
    }
}

/// The distance and the warning of its selection, chosen on first use.
fn setting() -> &'static (usize, Option<String>) {
    static S: std::sync::OnceLock<(usize, Option<String>)> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        let id = __cpuid(0); // the vendor string, in EBX, EDX, ECX
        let intel = (id.ebx, id.edx, id.ecx) == (0x756e_6547, 0x4965_6e69, 0x6c65_746e);
        select(std::env::var("MLLAMA_PREFETCH").ok().as_deref(), intel)
    })
}

/// The distance for a `MLLAMA_PREFETCH` value (`None`, empty or `auto`: the vendor's default),
/// with a warning when it cannot be used (not a number of bytes, or beyond [`MAX_DISTANCE`]).
fn select(request: Option<&str>, intel: bool) -> (usize, Option<String>) {
    let default = if intel { PREFETCH_INTEL } else { 0 };
    match request.map(str::trim) {
        None | Some("") => (default, None),
        Some(s) if s.eq_ignore_ascii_case("auto") => (default, None),
        Some(s) => match s.parse::<usize>() {
            Ok(d) if d <= MAX_DISTANCE => (d, None),
            _ => (
                default,
                Some(format!(
                    "MLLAMA_PREFETCH={s}: expected a distance in bytes from 0 to {MAX_DISTANCE} or auto; using {default}"
                )),
            ),
        },
    }
}

/// The largest distance `MLLAMA_PREFETCH` accepts (bytes).
const MAX_DISTANCE: usize = 1 << 20;

/// The prefetch distance on Intel cores (bytes).
const PREFETCH_INTEL: usize = 4608;

/// The L1 distance of [`Ahead::two_level`] when `MLLAMA_PREFETCH` does not set one (bytes).
const NEAR_TWO_LEVEL: usize = 1024;

/// How far beyond its L1 distance [`Ahead::two_level`] requests each line into L2 (bytes).
const FAR_TWO_LEVEL: usize = 12288;

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
        Self::with_distance(start as usize, prefetch_distance())
    }

    #[inline(always)]
    fn with_distance(start: usize, dist: usize) -> Self {
        let next = if dist == 0 {
            usize::MAX
        } else {
            (start + dist) & !63
        };
        Ahead { next, dist }
    }

    /// The kernel is about to read up to `p`.
    #[inline(always)]
    pub(crate) unsafe fn at(&mut self, p: *const u8) {
        let end = (p as usize).wrapping_add(self.dist);
        for _ in 0..MAX_LINES {
            let Some(line) = self.line(end) else {
                return;
            };
            _mm_prefetch::<_MM_HINT_T0>(line as *const i8);
        }
    }

    /// The next line to request while reading up to `end − dist`, if any.
    #[inline(always)]
    fn line(&mut self, end: usize) -> Option<usize> {
        (self.next <= end).then(|| {
            self.next += 64;
            self.next - 64
        })
    }
}

/// A prefetcher on two levels ([`Ahead::two_level`]): [`Ahead`]'s lines into L1 and, with each,
/// the line `far` bytes further into L2.
pub(crate) struct AheadTwo {
    near: Ahead,
    far: usize,
}

impl Ahead {
    /// A prefetcher on two levels: each line into L1 at the near distance ([`NEAR_TWO_LEVEL`],
    /// or `MLLAMA_PREFETCH`'s) and, with it, the line [`FAR_TWO_LEVEL`] bytes further into L2;
    /// one that does nothing where prefetching is off.
    #[inline(always)]
    pub(crate) fn two_level(start: *const u8) -> AheadTwo {
        static TWO: std::sync::OnceLock<(usize, usize)> = std::sync::OnceLock::new();
        let &(dist, far) = TWO.get_or_init(|| two_level_distances(setting()));
        AheadTwo {
            near: Self::with_distance(start as usize, dist),
            far,
        }
    }
}

impl AheadTwo {
    /// The kernel is about to read up to `p`.
    #[inline(always)]
    pub(crate) unsafe fn at(&mut self, p: *const u8) {
        let end = (p as usize).wrapping_add(self.near.dist);
        for _ in 0..MAX_LINES {
            let Some(line) = self.near.line(end) else {
                return;
            };
            _mm_prefetch::<_MM_HINT_T0>(line as *const i8);
            _mm_prefetch::<_MM_HINT_T1>(line.wrapping_add(self.far) as *const i8);
        }
    }
}

impl crate::kernels::intdot::StreamAhead for Ahead {
    #[inline(always)]
    fn new(start: *const u8) -> Self {
        Ahead::new(start)
    }
    #[inline(always)]
    unsafe fn at(&mut self, p: *const u8) {
        Ahead::at(self, p)
    }
}

/// Lines one [`Ahead::at`] requests at most.
const MAX_LINES: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines [`Ahead::at`] would request for a read up to `p`.
    fn lines(a: &mut Ahead, p: usize) -> Vec<usize> {
        let end = p.wrapping_add(a.dist);
        (0..MAX_LINES).map_while(|_| a.line(end)).collect()
    }

    #[test]
    fn a_stream_requests_every_line_ahead_once_in_order() {
        // 36-byte loads (not a divisor of 64) from an unaligned start.
        let (start, dist) = (1_000_003usize, 4608);
        let mut a = Ahead::with_distance(start, dist);
        let got: Vec<usize> = (0..400)
            .flat_map(|i| lines(&mut a, start + 36 * i))
            .collect();
        let first = (start + dist) & !63;
        let last = (start + 36 * 399 + dist) & !63;
        let want: Vec<usize> = (first..=last).step_by(64).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn going_back_requests_nothing_and_a_jump_at_most_eight_lines() {
        let mut a = Ahead::with_distance(1 << 20, 4096);
        assert_eq!(lines(&mut a, 1 << 20).len(), 1);
        assert!(lines(&mut a, (1 << 20) - 4096).is_empty());
        assert_eq!(lines(&mut a, 2 << 20).len(), MAX_LINES);
        let mut off = Ahead::with_distance(1 << 20, 0);
        assert!(lines(&mut off, 4 << 20).is_empty());
    }

    #[test]
    fn two_levels_request_each_line_near_and_far_unless_prefetching_is_off() {
        assert_eq!(
            near_far(PREFETCH_INTEL, false),
            (NEAR_TWO_LEVEL, FAR_TWO_LEVEL)
        );
        assert_eq!(near_far(2048, true), (2048, FAR_TWO_LEVEL));
        assert_eq!(near_far(0, true), (0, 0));
        assert_eq!(near_far(0, false), (0, 0));
        // The L1 stream is the one-level cursor's at the near distance (the far line rides along).
        let (start, (near, _)) = (4096usize, near_far(PREFETCH_INTEL, false));
        let mut a = Ahead::with_distance(start, near);
        let got: Vec<usize> = (0..64)
            .flat_map(|i| lines(&mut a, start + 64 * i))
            .collect();
        let want: Vec<usize> = (0..64).map(|i| start + near + 64 * i).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn the_setting_takes_bytes_or_auto_and_warns_on_anything_else() {
        assert_eq!(select(None, true), (PREFETCH_INTEL, None));
        assert_eq!(select(None, false), (0, None));
        assert_eq!(select(Some(" auto "), false), (0, None));
        assert_eq!(select(Some("0"), true), (0, None));
        assert_eq!(select(Some("9216"), false), (9216, None));
        for bad in ["4k", "-1", "99999999999"] {
            let (d, w) = select(Some(bad), true);
            assert_eq!(d, PREFETCH_INTEL);
            let w = w.expect("a warning");
            assert!(
                w.starts_with(&format!("MLLAMA_PREFETCH={bad}: expected")),
                "{w}"
            );
        }
    }
}
