//! Matrix kernels: `y[n, m] = x[n, k] · W[m, k]ᵀ` for every weight type (F32, F16, BF16, Q8_0,
//! Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K), with a SIMD path chosen once at start-up.
//!
//! # Two regimes
//! - **Decode** (few activation rows, memory-bound): each weight row is streamed once and dotted
//!   with every activation row. Float weights multiply f32 activations (FMA); quantized weights
//!   multiply activations quantized to their type's activation blocks (Q8_0 for the 32-value
//!   types; Q8_K for the K-quants) with integer dot products, as ggml does (which uses Q8_1 for
//!   Q4_1/Q5_1; the activation quantization is exactly that type's
//!   [`QuantBlock::quantize`](crate::quant::QuantBlock::quantize)).
//!   Parallel over blocks of weight rows.
//! - **GEMM** (many rows, compute-bound): a cache-blocked packed GEMM (module `gemm`) that converts
//!   weights of any type to f32 while packing and multiplies f32 activations (unquantized) with a
//!   register-blocked FMA micro-kernel.
//!
//! [`matmul`] picks the regime by the number of rows ([`gemm_min_rows`], chosen by measurement);
//! [`matmul_with`] forces one.
//!
//! # Paths and dispatch
//! [`Path`]: `scalar` (portable reference, no target features), `avx2` (x86-64 with AVX2 + FMA +
//! F16C), `avx512` (`avx2` plus AVX-512 F/BW/VL/VNNI/VBMI: `vpdpbusd` quantized decode kernels,
//! everything else shared with `avx2`), `neon` (aarch64) and `dotprod` (aarch64 NEON + `sdot`). The
//! process-wide path is chosen on first use: the best available one, or the one named by the
//! environment variable `MLLAMA_SIMD=scalar|avx2|avx512|neon|dotprod|auto` (an unavailable or
//! unknown name falls back to the best available path with a warning that [`path_warning`]
//! returns; the library prints nothing). [`simd_name`] reports it; [`with_path`] runs a closure
//! with another path on the current thread (tests, benchmarks). The path is read once per call on
//! the calling thread and passed to the workers.
//!
//! Each path is one type implementing the `isa::Isa` trait (`isa::Scalar`; `x86::Avx2`,
//! `x86::Avx512`; `arm::Neon`, `arm::Dotprod`), whose default methods are the portable kernels;
//! `with_isa!` (defined here) is the one `match` from a run-time path to its type.
//!
//! # The per-type table
//! [`types::TYPES`] has one [`TypeKernels`] row per weight type (block size in values and bytes,
//! the activation type it dots against, dequantize/pack, the regime crossover, the portable
//! decode kernel); an ISA adds decode kernels for the types it accelerates (`Isa::decoder`).
//! [`lookup`] is the only way in: a [`tensor::Mat`] of a type without a row cannot be built
//! ([`UnsupportedType`], reported by the model loader with the tensor's name), so no kernel ever
//! guesses. The decode traversal (`decode`: activation quantization into [`Scratch`], parallel
//! tasks over weight rows, the per-row kernel) is written once for every type and path, and so is
//! the tile traversal inside a task (`traverse`: which weight and activation rows go through a
//! register tile together); an ISA supplies only its tile kernels. The integer kernels of the
//! [`crate::quant::LaneDot`] types (K-quants, Q4_1, Q5_0, Q5_1) are written once (`intdot`) over
//! an ISA's byte operations (`intdot::ByteOps`: AVX2 for both x86 paths, NEON, `sdot`); x86
//! replaces Q6_K's by a dedicated tile (`x86::kquant`), the same arithmetic with less work per
//! block.
//!
//! # Where to add…
//! - **A weight type** (e.g. a K-quant): its block in a new `quant/<type>.rs` (struct,
//!   [`crate::quant::QuantBlock`] impl with its activation type `VecDot` — e.g. a 256-value Q8_K
//!   block — and scalar `vec_dot`, `const` size assertions), one row in [`crate::quant::TYPES`]
//!   and one in [`types::TYPES`]. That gives every path a correct (portable) decode kernel and
//!   GEMM packing. A [`crate::quant::LaneDot`] type gets SIMD kernels on every path from its
//!   unpacking in `intdot` and one line in each ISA's `decoder` table.
//! - **A SIMD path**: a [`Path`] variant with its detection, a type implementing `isa::Isa` in
//!   `x86/` or `arm/` (override what it accelerates; each override names its scalar twin), its
//!   tile kernels (`traverse::FloatDot`, `QuantDot`) and byte operations (`intdot::ByteOps`), one
//!   arm in `with_isa!`.
//!
//! Note that for quantized weights the two regimes differ numerically (decode quantizes the
//! activations, GEMM does not), so a row's result can change slightly when the batch crosses the
//! threshold; within one regime, a row's result does not depend on the other rows.
//!
//! # Agreement
//! [`scalar`] is the meaning of every kernel. Integer kernels agree **bit for bit** on every path;
//! float kernels (and the GEMM) agree within a relative tolerance (see [`scalar`]'s module docs).
//!
//! # Repacked layouts
//! [`repack`]: a [`tensor::Mat`] may carry a row-interleaved copy of its weights (built at load by
//! [`tensor::Mat::repack`]); the decode then runs the layout's kernel (`Isa::repacked_decoder`,
//! else its portable one), with tasks of whole row groups, and such a matrix always takes the
//! decode regime. Results equal the in-place kernels' bit for bit.
//!
//! # Also here
//! - [`quantize_row_q8_0`], [`dot`], [`axpy`], [`scale`]: vector helpers on the active path.
//! - [`attention`]: blocked attention for one (head, query block) through the GEMM micro-kernels.
//! - [`iattn`]: its low-precision twin (16-bit integer scores and `P·V`) for the vision tower.
//! - [`igemm`]: the integer GEMM of the vision tower in int8 or 12-bit levels (weights quantized
//!   once into an [`igemm::IMat`], activations per call; exact i32 block dots, one float
//!   epilogue, so every path gives the same bits; 12-bit is what `--vision-precision auto` picks
//!   on x86-64).
//! - [`probe`]: FMA-peak and memory-bandwidth probes for reporting kernel figures as ratios.
//! - [`team`]: the parallel sections of the kernels (helpers that spin between sections instead
//!   of sleeping; rayon when the team is busy or the pool has more threads than cores).
//!
//! Allocation: a call with a warm [`Scratch`] allocates nothing itself (the GEMM's packing buffers
//! are per-thread and persist; a team's threads start on its first section); where a section
//! falls back to rayon, its global job queue may allocate one block per 63 calls made from
//! outside its pool.

pub mod anon;
pub mod attention;
mod gemm;
pub mod iattn;
pub mod igemm;
pub(crate) mod intdot;
pub(crate) mod isa;
mod pack;
pub mod probe;
pub mod repack;
pub mod scalar;
pub mod team;
pub mod tensor;
mod traverse;
pub mod types;

#[cfg(target_arch = "aarch64")]
mod arm;
#[cfg(target_arch = "x86_64")]
mod x86;

use isa::Isa;
pub use types::{lookup, TypeKernels, UnsupportedType};

/// `with_isa!(path, I => expr)`: evaluate `expr` with the type `I` standing for `path`'s [`Isa`].
/// The one `match` from run-time path to ISA.
macro_rules! with_isa {
    ($path:expr, $I:ident => $body:expr) => {{
        #[allow(unused_imports)]
        use $crate::kernels::Path as P;
        match $path {
            #[cfg(target_arch = "x86_64")]
            P::Avx2 => {
                type $I = $crate::kernels::x86::Avx2;
                $body
            }
            #[cfg(target_arch = "x86_64")]
            P::Avx512 => {
                type $I = $crate::kernels::x86::Avx512;
                $body
            }
            #[cfg(target_arch = "aarch64")]
            P::Neon => {
                type $I = $crate::kernels::arm::Neon;
                $body
            }
            #[cfg(target_arch = "aarch64")]
            P::Dotprod => {
                type $I = $crate::kernels::arm::Dotprod;
                $body
            }
            // The scalar path, and paths of another architecture (never active: not available).
            #[allow(unreachable_patterns)]
            _ => {
                type $I = $crate::kernels::isa::Scalar;
                $body
            }
        }
    }};
}
pub(crate) use with_isa;

/// The decode kernel of weight type `t` on `path`: the ISA's own for the type, else the type's
/// portable one (correct on every path).
pub(crate) fn decoder(t: &TypeKernels, path: Path) -> types::Decoder {
    let ty = t.ty();
    with_isa!(path, I => I::decoder(ty)).unwrap_or(t.scalar)
}

/// The decode kernel of a matrix of type `ty` in its repacked layout ([`repack`]) on `path`: the
/// ISA's own, else the portable one; `None` if the type has no repacked layout.
pub(crate) fn repacked_decoder(ty: GgmlType, path: Path) -> Option<types::Decoder> {
    with_isa!(path, I => I::repacked_decoder(ty)).or_else(|| repack::scalar_decoder(ty))
}

/// Whether models repack matrices of type `ty` for `path` ([`crate::Model::repack`]): the type's
/// layout was measured to decode faster there ([`repack::pays`]) and `path` has its own kernel
/// for it (else the portable one would run, slower than the in-place kernel).
pub fn repack_pays(ty: GgmlType, path: Path) -> bool {
    repack::pays(ty, path) && with_isa!(path, I => I::repacked_decoder(ty).is_some())
}

use std::cell::Cell;
use std::sync::OnceLock;

use crate::kernels::tensor::Mat;
use crate::quant::BlockQ8_0;
use crate::GgmlType;
use std::ops::Range;
use types::{ActQuant, Decoder, Job, ACT_ALIGN};

// ---------------------------------------------------------------------------------------------
// Dispatch.

/// A kernel implementation family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Path {
    /// Portable Rust, no target features: the reference.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX2 + FMA + F16C + AVX-512 F/BW/VL/VNNI/VBMI: the quantized (Q8_0/Q4_0) decode
    /// kernels use `vpdpbusd` on 512-bit registers (Q4_0 nibbles gathered four blocks at a time
    /// with the VBMI byte permute); every other kernel is the [`Path::Avx2`] one. Results are
    /// bit-identical to [`Path::Avx2`]. CPUs with VNNI but no VBMI (Cascade Lake) get `avx2`.
    Avx512,
    /// aarch64 NEON (`vmull_s8`/`vpadalq_s16` integer dots).
    Neon,
    /// aarch64 NEON with the `dotprod` extension (`sdot` integer dots).
    Dotprod,
}

impl Path {
    /// Every path, best first within an architecture.
    pub const ALL: [Path; 5] = [
        Path::Dotprod,
        Path::Neon,
        Path::Avx512,
        Path::Avx2,
        Path::Scalar,
    ];

    /// The name `MLLAMA_SIMD` uses.
    pub fn name(self) -> &'static str {
        match self {
            Path::Scalar => "scalar",
            Path::Avx2 => "avx2",
            Path::Avx512 => "avx512",
            Path::Neon => "neon",
            Path::Dotprod => "dotprod",
        }
    }

    /// Parse a name (case-insensitive).
    pub fn parse(s: &str) -> Option<Path> {
        Path::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s.trim()))
    }

    /// Whether this CPU can run the path (run-time detection).
    pub fn is_available(self) -> bool {
        match self {
            Path::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => {
                Path::Avx2.is_available()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
                    && std::arch::is_x86_feature_detected!("avx512vbmi")
            }
            #[cfg(target_arch = "aarch64")]
            Path::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(target_arch = "aarch64")]
            Path::Dotprod => {
                std::arch::is_aarch64_feature_detected!("neon")
                    && std::arch::is_aarch64_feature_detected!("dotprod")
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The best path this CPU can run.
    pub fn best() -> Path {
        Path::ALL
            .into_iter()
            .find(|p| p.is_available())
            .unwrap_or(Path::Scalar)
    }

    /// Every path this CPU can run, best first.
    pub fn available() -> Vec<Path> {
        Path::ALL.into_iter().filter(|p| p.is_available()).collect()
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The path for a `MLLAMA_SIMD` value (`None`, empty or `auto`: the best one), with a warning
/// when the request cannot be honoured (unknown name, or a path this CPU lacks).
pub fn select_path(request: Option<&str>) -> (Path, Option<String>) {
    let best = Path::best();
    match request.map(str::trim) {
        None | Some("") => (best, None),
        Some(s) if s.eq_ignore_ascii_case("auto") => (best, None),
        Some(s) => match Path::parse(s) {
            Some(p) if p.is_available() => (p, None),
            Some(p) => (
                best,
                Some(format!("MLLAMA_SIMD={s}: this CPU cannot run the {p} path; using {best}")),
            ),
            None => (
                best,
                Some(format!(
                    "MLLAMA_SIMD={s}: unknown path (expected scalar, avx2, avx512, neon, dotprod or auto); using {best}"
                )),
            ),
        },
    }
}

static GLOBAL: OnceLock<(Path, Option<String>)> = OnceLock::new();

thread_local! {
    static OVERRIDE: Cell<Option<Path>> = const { Cell::new(None) };
}

/// The process-wide path and the warning of its selection, chosen on first use.
fn global() -> &'static (Path, Option<String>) {
    GLOBAL.get_or_init(|| select_path(std::env::var("MLLAMA_SIMD").ok().as_deref()))
}

fn global_path() -> Path {
    global().0
}

/// Why the process-wide path is not the one `MLLAMA_SIMD` asks for (an unknown name, or a path
/// this CPU cannot run), or `None`. Chooses the path if no kernel has run yet. The library does
/// not print it; a front end shows it (the `mllama` binary prints `warning: ...` at start-up).
pub fn path_warning() -> Option<&'static str> {
    global().1.as_deref()
}

/// Why the x86 decode kernels' prefetch distance is not the one `MLLAMA_PREFETCH` asks for (not
/// a number of bytes, or too far), or `None` (always on other architectures, which ignore it).
/// Like [`path_warning`], for a front end to show.
pub fn prefetch_warning() -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        x86::prefetch_warning()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// The path kernels called on this thread use now.
pub fn active_path() -> Path {
    OVERRIDE.with(|o| o.get()).unwrap_or_else(global_path)
}

/// Name of the active path (`scalar`, `avx2`, `avx512`, `neon` or `dotprod`).
pub fn simd_name() -> &'static str {
    active_path().name()
}

/// Run `f` with `path` as this thread's path (kernels it calls pass it on to their workers).
///
/// # Panics
/// If this CPU cannot run `path`.
pub fn with_path<R>(path: Path, f: impl FnOnce() -> R) -> R {
    assert!(
        path.is_available(),
        "kernels::with_path: this CPU cannot run the {path} path"
    );
    struct Restore(Option<Path>);
    impl Drop for Restore {
        fn drop(&mut self) {
            OVERRIDE.with(|o| o.set(self.0));
        }
    }
    let _restore = Restore(OVERRIDE.with(|o| o.replace(Some(path))));
    f()
}

// ---------------------------------------------------------------------------------------------
// Buffers.

/// 32 quantized activation bytes, aligned for one 256-bit load.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(32))]
pub(crate) struct Qs(pub [i8; 32]);

// SAFETY: 32 bytes of `i8`, size 32 = alignment, so no padding; any bit pattern is valid.
unsafe impl bytemuck::Zeroable for Qs {}
unsafe impl bytemuck::Pod for Qs {}

/// 64 bytes aligned to 64: the unit of the activation scratch.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; ACT_ALIGN]);

// SAFETY: 64 bytes, size = alignment, no padding; any bit pattern is valid.
unsafe impl bytemuck::Zeroable for Line {}
unsafe impl bytemuck::Pod for Line {}

/// Buffers reused across calls so the decode loop does not allocate.
#[derive(Default)]
pub struct Scratch {
    /// Quantized activation rows, each in the layout its decode kernel reads (64-byte aligned).
    act: Vec<Line>,
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Scratch({} activation bytes)",
            self.act.len() * ACT_ALIGN
        )
    }
}

impl Scratch {
    /// Empty buffers; they grow to the largest call and are then reused.
    pub fn new() -> Self {
        Self::default()
    }

    /// `bytes` bytes of the activation buffer (64-byte aligned), grown on demand.
    fn act(&mut self, bytes: usize) -> &mut [u8] {
        let lines = bytes.div_ceil(ACT_ALIGN);
        if self.act.len() < lines {
            self.act.resize(lines, Line([0; ACT_ALIGN]));
        }
        &mut bytemuck::cast_slice_mut(&mut self.act[..lines])[..bytes]
    }
}

/// The SIMD paths' Q8_0 activation row ("split layout"): `[qs: nb × 32 bytes][d: nb × f32]
/// [s: nb × i32]`, padded to a multiple of 64 bytes: the quantized bytes of each block (aligned
/// for 256-bit loads), its scale (the f16 value as f32) and Σ qs.
pub(crate) fn split_row_bytes(k: usize) -> usize {
    (k / 32 * 40).next_multiple_of(ACT_ALIGN)
}

/// The three parts of a split-layout row (`row` 32-byte aligned, `split_row_bytes(32·nb)` long).
#[allow(dead_code)] // not on every architecture
pub(crate) fn split_row_mut(row: &mut [u8], nb: usize) -> (&mut [Qs], &mut [f32], &mut [i32]) {
    let (qs, rest) = row.split_at_mut(nb * 32);
    let (d, rest) = rest.split_at_mut(nb * 4);
    (
        bytemuck::cast_slice_mut(qs),
        bytemuck::cast_slice_mut(d),
        bytemuck::cast_slice_mut(&mut rest[..nb * 4]),
    )
}

/// Split-layout activation rows as the SIMD kernels read them.
#[derive(Clone, Copy)]
#[allow(dead_code)] // not on every architecture
pub(crate) struct SplitActs {
    base: *const u8,
    stride: usize,
    nb: usize,
}

#[allow(dead_code)] // not on every architecture
impl SplitActs {
    /// Rows of `nb` blocks, `stride` bytes apart, in `x`.
    pub fn new(x: &[u8], stride: usize, nb: usize) -> Self {
        debug_assert!(stride >= split_row_bytes(nb * 32));
        SplitActs {
            base: x.as_ptr(),
            stride,
            nb,
        }
    }

    /// Row `i`'s bytes, scales and sums.
    ///
    /// # Safety
    /// Row `i` exists.
    #[inline(always)]
    pub unsafe fn row(self, i: usize) -> Q8Row {
        let p = self.base.add(i * self.stride);
        Q8Row {
            qs: p as *const Qs,
            d: p.add(self.nb * 32) as *const f32,
            s: p.add(self.nb * 36) as *const i32,
        }
    }

    /// Rows `i0..i0 + NX`.
    ///
    /// # Safety
    /// The rows exist.
    #[inline(always)]
    pub unsafe fn rows<const NX: usize>(self, i0: usize) -> [Q8Row; NX] {
        std::array::from_fn(|t| self.row(i0 + t))
    }
}

/// One split-layout activation row as the SIMD kernels read it: `nb` blocks of 32 bytes, their
/// f32 scales and their sums `Σ qs`.
#[derive(Clone, Copy)]
#[allow(dead_code)] // not on every architecture
pub(crate) struct Q8Row {
    pub qs: *const Qs,
    pub d: *const f32,
    pub s: *const i32,
}

/// A raw pointer to an output buffer that disjoint parallel tasks write into.
#[derive(Clone, Copy)]
pub struct SyncPtr(pub *mut f32);
// SAFETY: only used to hand one output buffer to tasks that write disjoint index sets (each task
// owns a distinct tile of `y`); the buffer outlives the parallel section (`team::for_each`
// returns only when every task has finished).
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

/// Row-major `[n, m]` output written by disjoint tasks.
#[derive(Clone, Copy)]
pub(crate) struct Out {
    pub p: SyncPtr,
    pub m: usize,
}

impl Out {
    /// # Safety
    /// `(i, j)` lies inside the buffer and belongs to the calling task.
    #[inline(always)]
    pub unsafe fn put(self, i: usize, j: usize, v: f32) {
        *self.p.0.add(i * self.m + j) = v;
    }
}

#[inline(always)]
pub(crate) fn with_bias(v: f32, bias: Option<&[f32]>, j: usize) -> f32 {
    match bias {
        Some(b) => v + b[j],
        None => v,
    }
}

// ---------------------------------------------------------------------------------------------
// Matrix multiplication.

/// Which kernel family computes a [`matmul_with`] call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Regime {
    /// Decode below [`gemm_min_rows`] rows, GEMM from there.
    Auto,
    /// Streaming dot products (quantized weights: Q8_0-quantized activations, integer dots).
    Decode,
    /// Packed f32 GEMM (activations stay f32 for every weight type).
    Gemm,
}

/// From this many activation rows on, [`matmul`] uses the packed GEMM for weights of type `ty` on
/// `path` (`usize::MAX`: never; also for a type without kernels). The values are the kernel
/// table's ([`TypeKernels::gemm_min_rows`]); the NEON paths use the AVX2 measurements (not
/// measured on hardware).
pub fn gemm_min_rows(path: Path, ty: GgmlType) -> usize {
    match lookup(ty) {
        Ok(t) if path == Path::Scalar => t.gemm_min_rows.0,
        Ok(t) => t.gemm_min_rows.1,
        Err(_) => usize::MAX,
    }
}

/// `y[n, m] = x[n, k] · W[m, k]ᵀ` with `m = w.rows`, `k = w.cols`.
pub fn matmul(w: &Mat, x: &[f32], n: usize, y: &mut [f32], scratch: &mut Scratch) {
    matmul_with(w, None, x, n, y, scratch, Regime::Auto);
}

/// `ys[i] [n, mᵢ] = x[n, k] · Wᵢᵀ` for up to four matrices that read the same input (Q, K and V;
/// gate and up): the same results as [`matmul`] on each, bit for bit, and where every one takes
/// the decode kernels (few rows, or repacked), the tasks of all of them run in one parallel
/// section (one fork and join, and the input quantized once per activation format).
///
/// # Panics
///
/// If `ws` and `ys` differ in length or hold more than four matrices, the matrices differ in
/// width, or a buffer's size does not match (as [`matmul`]).
pub fn matmul_many(ws: &[&Mat], x: &[f32], n: usize, ys: &mut [&mut [f32]], scratch: &mut Scratch) {
    assert!(
        ws.len() == ys.len() && ws.len() <= MAX_TARGETS,
        "matmul_many: {} matrices, {} outputs (at most {MAX_TARGETS})",
        ws.len(),
        ys.len()
    );
    let Some(k) = ws.first().map(|w| w.cols) else {
        return;
    };
    assert!(
        ws.iter().all(|w| w.cols == k),
        "matmul_many: matrices of different widths"
    );
    let path = active_path();
    let decode_all = n > 0
        && k > 0
        && x.len() == n * k
        && ws.iter().zip(ys.iter()).all(|(w, y)| {
            w.rows > 0
                && y.len() == n * w.rows
                && (w.repacked().is_some() || n < gemm_min_rows(path, w.ty))
        });
    if !decode_all {
        for (w, y) in ws.iter().zip(ys.iter_mut()) {
            matmul(w, x, n, y, scratch);
        }
        return;
    }
    let mut targets: [Option<Target<'_>>; MAX_TARGETS] = [None, None, None, None];
    for ((t, &w), y) in targets.iter_mut().zip(ws).zip(ys.iter_mut()) {
        *t = Some(Target { w, bias: None, y });
    }
    decode_many(path, &mut targets, x, n, scratch);
}

/// `y[n, m] = x[n, k] · W[m, k]ᵀ + b[m]`
pub fn matmul_bias(w: &Mat, b: &[f32], x: &[f32], n: usize, y: &mut [f32], scratch: &mut Scratch) {
    matmul_with(w, Some(b), x, n, y, scratch, Regime::Auto);
}

/// [`matmul`] / [`matmul_bias`] with the regime chosen by the caller.
pub fn matmul_with(
    w: &Mat,
    bias: Option<&[f32]>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut Scratch,
    regime: Regime,
) {
    let (m, k) = (w.rows, w.cols);
    assert_eq!(
        x.len(),
        n * k,
        "matmul: x has {} values, expected {n}×{k}",
        x.len()
    );
    assert_eq!(
        y.len(),
        n * m,
        "matmul: y has {} values, expected {n}×{m}",
        y.len()
    );
    if let Some(b) = bias {
        assert_eq!(
            b.len(),
            m,
            "matmul: bias has {} values, expected {m}",
            b.len()
        );
    }
    if n == 0 || m == 0 {
        return;
    }
    if k == 0 {
        for row in y.chunks_exact_mut(m) {
            for (j, v) in row.iter_mut().enumerate() {
                *v = with_bias(0.0, bias, j);
            }
        }
        return;
    }
    let path = active_path();
    // A repacked matrix is only read by the decode kernels (its in-place bytes may be released).
    let gemm = match regime {
        _ if w.repacked().is_some() => false,
        Regime::Auto => n >= gemm_min_rows(path, w.ty),
        Regime::Decode => false,
        Regime::Gemm => true,
    };
    if gemm {
        with_isa!(path, I => gemm::gemm_with::<<I as Isa>::Gemm>(w, x, n, y));
        if let Some(b) = bias {
            for row in y.chunks_exact_mut(m) {
                for (v, bb) in row.iter_mut().zip(b) {
                    *v += bb;
                }
            }
        }
    } else {
        decode(path, w, bias, x, n, y, scratch);
    }
}

/// [`igemm::matmul_i8`] on `path`: its ISA's int8 micro-kernel.
pub(crate) fn igemm_on(
    path: Path,
    x: &[f32],
    n: usize,
    products: &mut [igemm::Product<'_, igemm::Int8>],
) {
    with_isa!(path, I => igemm::run::<<I as Isa>::IGemm>(x, n, products))
}

/// [`igemm::matmul_i16`] on `path`: its ISA's 12-bit micro-kernel.
pub(crate) fn i16gemm_on(
    path: Path,
    x: &[f32],
    n: usize,
    products: &mut [igemm::Product<'_, igemm::Int16>],
) {
    with_isa!(path, I => igemm::run16::<<I as Isa>::I16Gemm>(x, n, products))
}

/// Weight bytes (times activation rows) a decode task should at least cover.
const DECODE_TASK_BYTES: usize = 1 << 18;

/// One matrix of a [`decode_many`] call: weights, optional bias `[m]`, output `[n, m]`.
struct Target<'a> {
    w: &'a Mat,
    bias: Option<&'a [f32]>,
    y: &'a mut [f32],
}

/// The decode traversal of one matrix ([`decode_many`]).
fn decode(
    path: Path,
    w: &Mat,
    bias: Option<&[f32]>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    sc: &mut Scratch,
) {
    decode_many(path, &mut [Some(Target { w, bias, y })], x, n, sc)
}

/// The decode traversal, the same for every type and path: each matrix's kernel on `path` from
/// the kernel table (its repacked layout's, if it has one), the activation rows quantized into
/// `sc` once per activation format the kernels dot against, then parallel tasks over blocks of
/// weight rows (a multiple of four rows, or of the layout's group), each computing its columns of
/// its matrix's `y` for every activation row — the tasks of all matrices in one parallel section
/// (matrices that read the same input, such as Q, K and V: one fork and join instead of three).
fn decode_many(
    path: Path,
    targets: &mut [Option<Target<'_>>],
    x: &[f32],
    n: usize,
    sc: &mut Scratch,
) {
    assert!(
        targets.len() <= MAX_TARGETS,
        "decode_many: too many matrices"
    );
    let Some(k) = targets.iter().flatten().next().map(|t| t.w.cols) else {
        return;
    };
    // Fixed-size tables (no allocation in the decode loop). A repacked matrix: its layout's
    // kernel, tasks of whole groups of rows.
    let kernels: [Option<(Decoder, &[u8], usize)>; MAX_TARGETS] = std::array::from_fn(|i| {
        let w = targets.get(i)?.as_ref()?.w;
        Some(
            match w
                .repacked()
                .and_then(|r| repacked_decoder(w.ty, path).map(|d| (d, r.data())))
            {
                Some((d, data)) => (d, data, repack::group_rows(w.ty).unwrap_or(4)),
                None => (decoder(w.kernels(), path), w.data(), 4),
            },
        )
    });
    // Each distinct activation format once: its offset in the scratch buffer and row stride.
    let key = |aq: &ActQuant| (aq.quantize as usize, aq.row_bytes as usize);
    let mut formats: [Option<(ActQuant, usize, usize)>; MAX_TARGETS] = [None; MAX_TARGETS];
    let mut total = 0;
    for aq in kernels.iter().flatten().filter_map(|(d, ..)| d.act) {
        let seen = formats.iter().flatten().any(|(f, ..)| key(f) == key(&aq));
        if let (false, Some(slot)) = (seen, formats.iter_mut().find(|f| f.is_none())) {
            let stride = (aq.row_bytes)(k);
            *slot = Some((aq, total, stride));
            total += n * stride;
        }
    }
    let buf = sc.act(total);
    for &(aq, at, stride) in formats.iter().flatten() {
        let out = &mut buf[at..at + n * stride];
        for (row, out) in x.chunks_exact(k).zip(out.chunks_exact_mut(stride)) {
            // SAFETY: the decoder is `path`'s, which this CPU runs; `out` is 64-byte aligned
            // (`at` and `stride` are multiples of 64) and `row_bytes(k)` long.
            unsafe { (aq.quantize)(row, out) };
        }
    }
    let buf = &*buf;
    let threads = rayon::current_num_threads().max(1);
    let mut plans: [Option<Plan<'_>>; MAX_TARGETS] = [None, None, None, None];
    for ((plan, t), &(kern, wdata, row_align)) in plans
        .iter_mut()
        .zip(targets.iter_mut().flatten())
        .zip(kernels.iter().flatten())
    {
        let m = t.w.rows;
        let (xb, x_stride): (&[u8], usize) = match kern.act {
            None => (bytemuck::cast_slice(x), 4 * k),
            Some(aq) => {
                let &(_, at, stride) = formats
                    .iter()
                    .flatten()
                    .find(|(f, ..)| key(f) == key(&aq))
                    .expect("every activation format was quantized above");
                (&buf[at..at + n * stride], stride)
            }
        };
        let work = t.w.nbytes().saturating_mul(n.div_ceil(4));
        let tasks = (work / DECODE_TASK_BYTES)
            .clamp(1, 8 * threads)
            .min(m.div_ceil(4));
        let rows_per = m.div_ceil(tasks).next_multiple_of(row_align);
        let job = Job {
            w: wdata,
            k,
            x: xb,
            x_stride,
            n,
            out: Out {
                p: SyncPtr(t.y.as_mut_ptr()),
                m,
            },
            bias: t.bias,
        };
        *plan = Some(Plan {
            job,
            rows: kern.rows,
            rows_per,
            tasks: m.div_ceil(rows_per),
        });
    }
    // Task `t` of the section: matrix `i` with `ends[i - 1] <= t < ends[i]`.
    let mut ends = [0usize; MAX_TARGETS];
    let mut sum = 0;
    for (e, p) in ends.iter_mut().zip(&plans) {
        sum += p.as_ref().map_or(0, |p| p.tasks);
        *e = sum;
    }
    let task = |t: usize| {
        let i = ends.iter().position(|&e| t < e).unwrap_or(0);
        let Some(Plan {
            job,
            rows: rows_fn,
            rows_per,
            ..
        }) = &plans[i]
        else {
            return;
        };
        let t = t - if i == 0 { 0 } else { ends[i - 1] };
        let rows = t * rows_per..((t + 1) * rows_per).min(job.out.m);
        // SAFETY: the decoder is `path`'s; tasks own disjoint row ranges of their matrix, hence
        // disjoint columns of its y; `out` covers the n × m buffer `y`, which outlives the
        // parallel section; the activations were prepared by the decoder's `act`.
        unsafe { rows_fn(job, rows) };
    };
    team::for_each(sum, &task);
}

/// One matrix's part of a [`decode_many`] section.
struct Plan<'a> {
    /// What the kernel reads and writes.
    job: Job<'a>,
    /// The kernel over a range of rows.
    rows: unsafe fn(&Job<'_>, Range<usize>),
    /// Rows per task (a multiple of the layout's group).
    rows_per: usize,
    /// Tasks of this matrix.
    tasks: usize,
}

/// Matrices one [`decode_many`] call takes at most.
const MAX_TARGETS: usize = 4;

/// Plain f32 GEMM on row-major buffers: `c[n, m] = a[n, k] · b[m, k]ᵀ` (both operands
/// "row = one dot-product vector"). Single-threaded (callers parallelise over heads and blocks);
/// SIMD on the active path.
pub fn gemm_nt(a: &[f32], b: &[f32], n: usize, m: usize, k: usize, c: &mut [f32]) {
    assert!(
        a.len() >= n * k && b.len() >= m * k && c.len() >= n * m,
        "gemm_nt: buffers too small"
    );
    if n == 0 || m == 0 {
        return;
    }
    // The f32 decode kernel of the active path, with `b` as the weight rows.
    let kern = decoder(types::f32_kernels(), active_path());
    let job = Job {
        w: bytemuck::cast_slice(&b[..m * k]),
        k,
        x: bytemuck::cast_slice(&a[..n * k]),
        x_stride: 4 * k,
        n,
        out: Out {
            p: SyncPtr(c.as_mut_ptr()),
            m,
        },
        bias: None,
    };
    // SAFETY: the active path's decoder; f32 activations (`act` is `None` for F32); `out`
    // covers c (n × m, checked above).
    unsafe { (kern.rows)(&job, 0..m) }
}

// ---------------------------------------------------------------------------------------------
// Vector helpers on the active path.

/// Quantize a row to Q8_0 blocks, bit-identical to [`BlockQ8_0::quantize`](crate::quant::QuantBlock::quantize) (finite inputs).
pub fn quantize_row_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    assert_eq!(
        x.len(),
        out.len() * 32,
        "quantize_row_q8_0: {} values for {} blocks",
        x.len(),
        out.len()
    );
    // SAFETY: the active path is always one this CPU runs.
    with_isa!(active_path(), I => unsafe { I::quantize_row_q8_0(x, out) })
}

/// `Σ a[i]·b[i]` over the common length.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_on(active_path(), a, b)
}

/// `y[i] += a·x[i]` over the common length.
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    axpy_on(active_path(), a, x, y)
}

/// `y[i] *= a`.
pub fn scale(a: f32, y: &mut [f32]) {
    scale_on(active_path(), a, y)
}

// SAFETY (the three helpers): `path` is only ever an available path (`select_path`,
// `with_path` and `active_path` hand out no other).
#[inline]
pub(crate) fn dot_on(path: Path, a: &[f32], b: &[f32]) -> f32 {
    with_isa!(path, I => unsafe { I::dot(a, b) })
}

#[inline]
pub(crate) fn axpy_on(path: Path, a: f32, x: &[f32], y: &mut [f32]) {
    with_isa!(path, I => unsafe { I::axpy(a, x, y) })
}

#[inline]
pub(crate) fn scale_on(path: Path, a: f32, y: &mut [f32]) {
    with_isa!(path, I => unsafe { I::scale(a, y) })
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

    /// `Isa::exp_levels` on every path equals that path's `exp_sub_sum` followed by the scalar
    /// levels, bit for bit (lengths with and without vector tails, arguments down to −100).
    #[test]
    fn exp_levels_equal_exp_then_levels_on_every_path() {
        for path in Path::available() {
            for n in [0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 128] {
                let s: Vec<f32> = rnd(n, n as u64 + 1).iter().map(|v| v * 200.0).collect();
                let m = s.iter().fold(-100f32, |a, &b| a.max(b));
                let (mut s1, mut s2) = (s.clone(), s);
                let (mut p1, mut p2) = (vec![0i16; n], vec![0i16; n]);
                // SAFETY: `path` is available on this CPU.
                let (a, b) = with_isa!(path, I => unsafe {
                    let a = I::exp_levels(&mut s1, m, iattn::PMAX, &mut p1);
                    I::exp_sub_sum(&mut s2, m);
                    (a, scalar::levels(&s2, iattn::PMAX, &mut p2))
                });
                assert_eq!((a, &p1), (b, &p2), "{path} n = {n}");
            }
        }
    }

    /// `Isa::itile_half` gives `Isa::itile`'s first `INR / 2` columns on every path.
    #[test]
    fn itile_half_equals_the_first_half_of_itile() {
        for path in Path::available() {
            let (mr, nr) = iattn::tile_shape(path);
            let kp = 37;
            let pairs = |n: usize, seed: u64| -> Vec<i32> {
                rnd(2 * n, seed)
                    .chunks_exact(2)
                    .map(|v| iattn::pair((v[0] * 8000.0) as i16, (v[1] * 8000.0) as i16))
                    .collect()
            };
            let (a, b) = (pairs(mr * kp, 1), pairs(kp * nr, 2));
            let (mut full, mut half) = (vec![0i32; mr * nr], vec![7i32; mr * nr]);
            // SAFETY: `path` is available; the operands hold one tile.
            with_isa!(path, I => unsafe {
                I::itile(kp, a.as_ptr(), kp, b.as_ptr(), full.as_mut_ptr(), nr);
                I::itile_half(kp, a.as_ptr(), kp, b.as_ptr(), half.as_mut_ptr(), nr);
            });
            for i in 0..mr {
                assert_eq!(
                    full[i * nr..][..nr / 2],
                    half[i * nr..][..nr / 2],
                    "{path} row {i}"
                );
            }
        }
    }

    #[test]
    fn matmul_all_types_against_f64_reference() {
        // k = 512: two K-quant super-blocks (and 16 blocks of 32, two full groups of eight).
        let (n, m, k) = (37, 70, 512);
        let wf = rnd(m * k, 3);
        let x = rnd(n * k, 5);
        let mut sc = Scratch::new();
        for path in Path::available() {
            for t in types::TYPES.iter() {
                let ty = t.ty();
                let mut bytes = vec![0u8; ty.row_bytes(k as u64).unwrap() as usize * m];
                crate::quant::convert_f32(ty, &wf, k, &mut bytes).unwrap();
                let w = Mat::from_bytes(ty, m, k, &bytes);
                // Reference on the dequantized weights.
                let mut wd = vec![0f32; m * k];
                crate::quant::dequantize(ty, &bytes, &mut wd).unwrap();
                let want = reference(&wd, &x, n, m, k);
                for regime in [Regime::Decode, Regime::Gemm] {
                    let mut y = vec![0f32; n * m];
                    with_path(path, || {
                        matmul_with(&w, None, &x, n, &mut y, &mut sc, regime)
                    });
                    // Decode of a quantized type quantizes the activations (8-bit).
                    let tol = match (ty.is_quantized(), regime) {
                        (true, Regime::Decode) => 0.05,
                        _ => 1e-4,
                    };
                    for (a, b) in y.iter().zip(&want) {
                        assert!((a - b).abs() <= tol, "{path} {ty} {regime:?}: {a} vs {b}");
                    }
                    // Decode rows do not depend on how many rows go together.
                    if regime == Regime::Decode {
                        let mut y1 = vec![0f32; m];
                        with_path(path, || {
                            matmul_with(&w, None, &x[..k], 1, &mut y1, &mut sc, regime)
                        });
                        assert_eq!(&y1[..], &y[..m], "{path} {ty}");
                    }
                }
            }
        }
    }

    #[test]
    fn with_isa_picks_the_path_s_isa() {
        for p in Path::available() {
            assert_eq!(with_isa!(p, I => I::PATH), p);
        }
    }

    #[test]
    fn select_path_parses_and_falls_back() {
        assert_eq!(select_path(None), (Path::best(), None));
        assert_eq!(select_path(Some("auto")), (Path::best(), None));
        assert_eq!(select_path(Some("Scalar")), (Path::Scalar, None));
        let (p, w) = select_path(Some("bogus"));
        assert_eq!(p, Path::best());
        assert!(w.unwrap().contains("unknown"));
        for p in Path::ALL {
            let (got, w) = select_path(Some(p.name()));
            if p.is_available() {
                assert_eq!((got, w), (p, None));
            } else {
                assert_eq!(got, Path::best());
                assert!(w.unwrap().contains("cannot run"));
            }
        }
    }
}
