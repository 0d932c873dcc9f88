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
/// `MLLAMA_PREFETCH` sets) and into L2 [`FAR_TWO_LEVEL`] bytes beyond that. On the Xeon VM, the
/// build before and this one interleaved: forty matrices in turn (`kq_speed`, medians of four
/// rounds) Q4_K 26.4 → 29.3 GB/s and Q6_K 27.4 → 30.8; eleven-billion-shaped Q4_K_M decode,
/// three rounds, paired fraction 0.698 / 0.687 / 0.731 → 0.766 / 0.754 / 0.769. The AVX2
/// kernels, and the ×8 layouts on AVX-512, measured no better with it (within the noise), so
/// they keep one level.
fn prefetch_distance() -> usize {
    setting().dist
}

/// Why the prefetch distance is not the one `MLLAMA_PREFETCH` asks for, or `None`.
pub(crate) fn prefetch_warning() -> Option<&'static str> {
    setting().warning.as_deref()
}

/// The near and far distances of [`Ahead::two_level`] for the chosen distance `dist`: off when
/// prefetching is off, `dist` when the user named it (`explicit`), else [`NEAR_TWO_LEVEL`].
fn near_far(dist: usize, explicit: bool) -> (usize, usize) {
    match (dist, explicit) {
        (0, _) => (0, 0),
        (d, true) => (d, FAR_TWO_LEVEL),
        (_, false) => (NEAR_TWO_LEVEL, FAR_TWO_LEVEL),
    }
}

/// The prefetch setting, chosen once from the vendor and `MLLAMA_PREFETCH`.
struct Setting {
    /// The one-level distance ([`prefetch_distance`]).
    dist: usize,
    /// The near and far distances of [`Ahead::two_level`] ([`near_far`]).
    two: (usize, usize),
    /// Why `dist` is not what `MLLAMA_PREFETCH` asks for.
    warning: Option<String>,
}

/// The setting, chosen on first use.
fn setting() -> &'static Setting {
    static S: std::sync::OnceLock<Setting> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        let id = __cpuid(0); // the vendor string, in EBX, EDX, ECX
        let intel = (id.ebx, id.edx, id.ecx) == (0x756e_6547, 0x4965_6e69, 0x6c65_746e);
        let request = std::env::var("MLLAMA_PREFETCH").ok();
        let (dist, warning) = select(request.as_deref(), intel);
        let named = request
            .as_deref()
            .map(str::trim)
            .is_some_and(|s| !s.is_empty() && !s.eq_ignore_ascii_case("auto"));
        Setting {
            dist,
            two: near_far(dist, named && warning.is_none()),
            warning,
        }
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
        self.each(p as usize, |line| {
            _mm_prefetch::<_MM_HINT_T0>(line as *const i8)
        });
    }

    /// `request` each line to prefetch for a read up to `p` (at most [`MAX_LINES`]).
    #[inline(always)]
    fn each(&mut self, p: usize, mut request: impl FnMut(usize)) {
        let end = p.wrapping_add(self.dist);
        for _ in 0..MAX_LINES {
            let Some(line) = self.line(end) else {
                return;
            };
            request(line);
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
        let (dist, far) = setting().two;
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
        self.each(p as usize, |near, far| {
            _mm_prefetch::<_MM_HINT_T0>(near as *const i8);
            _mm_prefetch::<_MM_HINT_T1>(far as *const i8);
        });
    }

    /// `request` each pair (line into L1, line into L2) to prefetch for a read up to `p`.
    #[inline(always)]
    fn each(&mut self, p: usize, mut request: impl FnMut(usize, usize)) {
        let far = self.far;
        self.near
            .each(p, |line| request(line, line.wrapping_add(far)));
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
        let mut v = Vec::new();
        a.each(p, |l| v.push(l));
        v
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
        // Each line near, and with it the line `far` beyond, once each, in order.
        let (start, (near, far)) = (4096usize, near_far(PREFETCH_INTEL, false));
        let mut a = AheadTwo {
            near: Ahead::with_distance(start, near),
            far,
        };
        let mut got = Vec::new();
        for i in 0..64 {
            a.each(start + 64 * i, |n, f| got.push((n, f)));
        }
        let want: Vec<(usize, usize)> = (0..64)
            .map(|i| start + near + 64 * i)
            .map(|l| (l, l + far))
            .collect();
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
