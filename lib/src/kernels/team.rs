//! The kernels' parallel sections: a team of helper threads that spin between sections.
//!
//! Decode runs ~5 parallel sections per layer (a few hundred per token) with a few microseconds
//! to tens of microseconds of single-threaded work (norms, RoPE, activation quantization)
//! between them. rayon's idle workers yield for ~20–30 µs and then sleep, and waking a sleeping
//! thread in a VM took ~100 µs on the dev box (`examples/forkjoin`): a token paid that at most of
//! its sections. A team's helpers instead spin (`pause`) for [`spin_time`] after each section
//! (1 ms by default; `MLLAMA_SPIN_US` sets it, 0 sleeps at once as rayon does), then park.
//!
//! [`for_each`]`(n, task)` runs `task(0..n)` on the calling thread and the team sized to
//! `rayon::current_num_threads()` (so `--threads` and `ThreadPool::install` size it as they size
//! rayon's pool): tasks are claimed one at a time from a shared counter, the caller works too,
//! and returns when every task has finished. A pool larger than the cores the process may use
//! keeps rayon (spinning helpers would starve the caller's single-threaded work). One section at a time runs on a team; a call while
//! the team is busy (another thread's section, or a task that itself calls `for_each`) runs on
//! rayon instead. Helpers run each section under the caller's [`super::active_path`].
//!
//! Protocol (all on `Team`'s atomics): the caller stores the section (`next = 0`, then the
//! job pointer), bumps `generation` and wakes parked helpers. A helper that sees a new generation
//! raises `active`, then loads the job pointer; the caller, after claiming past the last task,
//! clears the pointer and waits for `active == 0`. With both sides sequentially consistent either
//! the caller sees the helper active (and waits for it) or the helper sees no job (and claims
//! nothing), so no helper touches a section after its caller returned.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use super::Path;

/// Default [`spin_time`]: longer than the gaps between a token's sections, short enough that a
/// helper idles on a core only briefly after the last one.
const SPIN_DEFAULT: Duration = Duration::from_millis(1);

/// The longest `MLLAMA_SPIN_US` accepted (one second).
const SPIN_MAX_US: u64 = 1_000_000;

/// How long a helper spins waiting for the next section before it parks: `MLLAMA_SPIN_US`
/// microseconds (0 to 1 000 000), else 1 ms.
pub fn spin_time() -> Duration {
    spin_setting().0
}

/// A warning for an unusable `MLLAMA_SPIN_US` (the default is used), for front ends to print.
pub fn spin_warning() -> Option<&'static str> {
    spin_setting().1.as_deref()
}

fn spin_setting() -> &'static (Duration, Option<String>) {
    static SETTING: OnceLock<(Duration, Option<String>)> = OnceLock::new();
    SETTING.get_or_init(|| parse_spin(std::env::var("MLLAMA_SPIN_US").ok().as_deref()))
}

fn parse_spin(v: Option<&str>) -> (Duration, Option<String>) {
    match v.map(str::trim) {
        None | Some("") | Some("auto") => (SPIN_DEFAULT, None),
        Some(s) => match s.parse::<u64>() {
            Ok(us) if us <= SPIN_MAX_US => (Duration::from_micros(us), None),
            _ => (
                SPIN_DEFAULT,
                Some(format!(
                    "MLLAMA_SPIN_US={s}: expected microseconds from 0 to {SPIN_MAX_US} or auto; \
                     using {}",
                    SPIN_DEFAULT.as_micros()
                )),
            ),
        },
    }
}

/// Run `task(i)` for every `i` in `0..n` in parallel (see the module documentation); returns when
/// all have finished. A panicking task's panic is resumed on the caller.
pub fn for_each(n: usize, task: &(dyn Fn(usize) + Sync)) {
    let threads = rayon::current_num_threads();
    if n <= 1 || threads <= 1 {
        (0..n).for_each(task);
        return;
    }
    // More threads than cores: spinning helpers would take the cores the caller's own
    // single-threaded work needs, so such pools keep rayon's sleeping workers.
    let team = if threads <= cores() {
        team(threads)
    } else {
        None
    };
    match team {
        Some(t) if t.try_enter() => {
            let _leave = Leave(t);
            t.run(n, task);
        }
        _ => {
            let path = super::active_path();
            (0..n)
                .into_par_iter()
                .for_each(|i| super::with_path(path, || task(i)));
        }
    }
}

/// Cores this process may run on (`std::thread::available_parallelism`, once).
fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The team of `threads` threads (the caller and `threads - 1` helpers), started on first use;
/// `None` if its threads cannot be started.
fn team(threads: usize) -> Option<&'static Team> {
    thread_local! {
        static LAST: std::cell::Cell<Option<(usize, &'static Team)>> =
            const { std::cell::Cell::new(None) };
    }
    if let Some((n, t)) = LAST.with(|c| c.get()) {
        if n == threads {
            return Some(t);
        }
    }
    static TEAMS: Mutex<Vec<(usize, Option<&'static Team>)>> = Mutex::new(Vec::new());
    let mut teams = TEAMS.lock().unwrap_or_else(|e| e.into_inner());
    let t = match teams.iter().find(|(n, _)| *n == threads) {
        Some(&(_, t)) => t,
        None => {
            let t = Team::start(threads - 1);
            teams.push((threads, t));
            t
        }
    };
    if let Some(t) = t {
        LAST.with(|c| c.set(Some((threads, t))));
    }
    t
}

/// One section: its tasks and the caller's kernel path.
struct Job<'a> {
    task: &'a (dyn Fn(usize) + Sync),
    n: usize,
    path: Path,
}

/// Shared state of one team (leaked: teams live as long as the process).
struct Team {
    /// Set while a caller runs a section on this team.
    busy: AtomicBool,
    /// Bumped once per section.
    generation: AtomicU64,
    /// The current section (a `Job` on the caller's stack), null between sections.
    job: AtomicPtr<Job<'static>>,
    /// Next task index to claim.
    next: AtomicUsize,
    /// Helpers inside the current section.
    active: AtomicUsize,
    /// Helpers parked (waiting on `wake`).
    parked: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    /// The first panic of a helper's task in this section.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

/// Ends the caller's use of the team (also when a task's panic unwinds through `run`).
struct Leave(&'static Team);

impl Drop for Leave {
    fn drop(&mut self) {
        self.0.busy.store(false, Release);
    }
}

impl Team {
    /// A team with `helpers` threads, or `None` if they cannot be started.
    fn start(helpers: usize) -> Option<&'static Team> {
        let team: &'static Team = Box::leak(Box::new(Team {
            busy: AtomicBool::new(true), // until every helper runs
            generation: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            next: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            panic: Mutex::new(None),
        }));
        for i in 0..helpers {
            let spawned = std::thread::Builder::new()
                .name(format!("mllama-team-{i}"))
                .spawn(move || team.helper());
            if spawned.is_err() {
                // Helpers already started park for good on a team nobody uses.
                return None;
            }
        }
        team.busy.store(false, Release);
        Some(team)
    }

    fn try_enter(&self) -> bool {
        self.busy
            .compare_exchange(false, true, Acquire, Relaxed)
            .is_ok()
    }

    /// Run one section as its caller (the team is entered).
    fn run(&self, n: usize, task: &(dyn Fn(usize) + Sync)) {
        let job = Job {
            task,
            n,
            path: super::active_path(),
        };
        self.next.store(0, Relaxed);
        // The pointer is cleared below, before `job` goes out of scope, and no helper uses it
        // after that (module documentation).
        self.job
            .store(&job as *const Job<'_> as *mut Job<'static>, SeqCst);
        self.generation.fetch_add(1, SeqCst);
        if self.parked.load(SeqCst) > 0 {
            let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| self.claim(&job)));
        self.job.store(std::ptr::null_mut(), SeqCst);
        let mut spins = 0u32;
        while self.active.load(SeqCst) != 0 {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(4096) {
                std::thread::yield_now(); // a helper was descheduled mid-task
            } else {
                std::hint::spin_loop();
            }
        }
        if let Err(p) = mine {
            resume_unwind(p);
        }
        let helper_panic = self.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(p) = helper_panic {
            resume_unwind(p);
        }
    }

    /// Claim and run tasks of `job` until none are left.
    fn claim(&self, job: &Job<'_>) {
        loop {
            let i = self.next.fetch_add(1, Relaxed);
            if i >= job.n {
                return;
            }
            (job.task)(i);
        }
    }

    /// A helper thread's life: wait for a section (spinning, then parked), take part, repeat.
    fn helper(&self) {
        let mut seen = self.generation.load(Acquire);
        loop {
            seen = self.wait_for_section(seen);
            self.active.fetch_add(1, SeqCst);
            let job = self.job.load(SeqCst);
            // SAFETY: a non-null pointer loaded after raising `active` stays valid until
            // `active` is lowered again (the caller waits for it before its `Job` ends).
            if let Some(job) = unsafe { job.as_ref() } {
                let r = catch_unwind(AssertUnwindSafe(|| {
                    super::with_path(job.path, || self.claim(job))
                }));
                if let Err(p) = r {
                    let mut slot = self.panic.lock().unwrap_or_else(|e| e.into_inner());
                    slot.get_or_insert(p);
                    // The rest of the section's tasks go to the caller and other helpers.
                }
            }
            self.active.fetch_sub(1, SeqCst);
        }
    }

    /// Spin until the generation differs from `seen`, parking after [`spin_time`]; returns the
    /// new generation.
    fn wait_for_section(&self, seen: u64) -> u64 {
        let spin = spin_time();
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let g = self.generation.load(Acquire);
            if g != seen {
                return g;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(256) && start.elapsed() >= spin {
                break;
            }
            std::hint::spin_loop();
        }
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.parked.fetch_add(1, SeqCst);
        loop {
            let g = self.generation.load(SeqCst);
            if g != seen {
                self.parked.fetch_sub(1, SeqCst);
                return g;
            }
            guard = self.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn pool(n: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    }

    #[test]
    fn every_task_runs_once_over_many_sections() {
        pool(2).install(|| {
            for n in [0, 1, 2, 7, 64, 1000] {
                for _ in 0..50 {
                    let hits: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
                    for_each(n, &|i| {
                        hits[i].fetch_add(1, Relaxed);
                    });
                    assert!(hits.iter().all(|h| h.load(Relaxed) == 1), "n = {n}");
                }
            }
        });
    }

    #[test]
    fn sections_after_a_parking_gap_still_complete() {
        // With a spin time far below the gap, helpers park between sections and are woken.
        pool(2).install(|| {
            for _ in 0..20 {
                std::thread::sleep(spin_time() + Duration::from_millis(2));
                let sum = AtomicUsize::new(0);
                for_each(16, &|i| {
                    sum.fetch_add(i, Relaxed);
                });
                assert_eq!(sum.load(Relaxed), 120);
            }
        });
    }

    #[test]
    fn nested_and_concurrent_sections_fall_back_to_rayon() {
        pool(2).install(|| {
            let total = AtomicUsize::new(0);
            for_each(8, &|_| {
                for_each(4, &|_| {
                    total.fetch_add(1, Relaxed);
                });
            });
            assert_eq!(total.load(Relaxed), 32);
        });
        // Two callers at once on the same team size.
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    pool(2).install(|| {
                        for _ in 0..200 {
                            for_each(10, &|_| {
                                total.fetch_add(1, Relaxed);
                            });
                        }
                    })
                });
            }
        });
        assert_eq!(total.load(Relaxed), 4000);
    }

    #[test]
    fn a_task_panic_reaches_the_caller_and_the_team_goes_on() {
        pool(2).install(|| {
            let r = catch_unwind(|| {
                for_each(64, &|i| {
                    if i == 40 {
                        panic!("task 40");
                    }
                    std::thread::sleep(Duration::from_micros(50));
                })
            });
            assert!(r.is_err());
            let sum = AtomicUsize::new(0);
            for_each(16, &|i| {
                sum.fetch_add(i, Relaxed);
            });
            assert_eq!(sum.load(Relaxed), 120);
        });
    }

    #[test]
    fn helpers_run_under_the_callers_path() {
        pool(2).install(|| {
            let scalar_seen = AtomicUsize::new(0);
            super::super::with_path(Path::Scalar, || {
                for_each(64, &|_| {
                    if super::super::active_path() == Path::Scalar {
                        scalar_seen.fetch_add(1, Relaxed);
                    }
                    std::thread::sleep(Duration::from_micros(20));
                })
            });
            assert_eq!(scalar_seen.load(Relaxed), 64);
        });
    }

    #[test]
    fn spin_setting_parses() {
        assert_eq!(parse_spin(None), (SPIN_DEFAULT, None));
        assert_eq!(parse_spin(Some("auto")).0, SPIN_DEFAULT);
        assert_eq!(parse_spin(Some("0")), (Duration::ZERO, None));
        assert_eq!(parse_spin(Some(" 250 ")).0, Duration::from_micros(250));
        for bad in ["1ms", "-3", "1000001"] {
            let (d, w) = parse_spin(Some(bad));
            assert_eq!(d, SPIN_DEFAULT);
            assert!(w.unwrap().contains("MLLAMA_SPIN_US"), "{bad}");
        }
    }
}
