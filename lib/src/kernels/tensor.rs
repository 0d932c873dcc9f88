//! Weights as zero-copy views into the memory-mapped GGUF file.
//!
//! A [`Mat`] is a row-major weight matrix `[rows, cols]` (PyTorch `[out, in]`) stored in any
//! computable ggml type. Quantized blocks are consumed in place by the kernels; nothing is expanded
//! to f32 at load. Small tensors (norm weights, biases, gates) are copied to `Vec<f32>` at load.

use std::ops::Range;
use std::sync::Arc;

use half::{bf16, f16};

use super::repack::Repacked;
use super::types::{lookup, TypeKernels};
use crate::format::gguf::MapBytes;
use crate::quant::{BlockQ4_0, BlockQ8_0};
use crate::GgmlType;

/// Bytes of one tensor inside a shared memory map.
#[derive(Clone)]
pub struct Bytes {
    map: Arc<MapBytes>,
    range: Range<usize>,
}

impl Bytes {
    /// `range` must lie inside `map` (the GGUF reader validated every tensor range at open).
    pub fn new(map: Arc<MapBytes>, range: Range<usize>) -> Option<Self> {
        if range.end <= map.len() && range.start <= range.end {
            Some(Bytes { map, range })
        } else {
            None
        }
    }

    /// Bytes owned in memory (tests, synthetic models).
    pub fn owned(v: &[u8]) -> Self {
        Bytes {
            map: Arc::new(MapBytes::owned(v)),
            range: 0..v.len(),
        }
    }

    /// The tensor's bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }

    /// Give the pages lying wholly inside these bytes back to the system (`madvise(DONTNEED)`;
    /// 64 KiB granularity, so neighbouring tensors sharing a page keep theirs). A mapped file's
    /// pages are read again from the file if touched later; anonymous memory (synthetic models)
    /// reads back as zeros, so only call this when nothing reads the bytes any more. Owned bytes
    /// are kept. Returns the bytes released.
    pub(crate) fn release(&self) -> usize {
        const GRAIN: usize = 1 << 16;
        let base = self.map.as_ptr() as usize;
        let start = (base + self.range.start).next_multiple_of(GRAIN) - base;
        let end = ((base + self.range.end) / GRAIN * GRAIN).saturating_sub(base);
        if end <= start {
            return 0;
        }
        // SAFETY: DONTNEED on a read-only private file map only drops clean pages (re-read on
        // access); on the anonymous map the caller guarantees nobody reads this range again.
        let r = unsafe {
            use memmap2::UncheckedAdvice::DontNeed;
            match &*self.map {
                MapBytes::Mmap(m) => m.unchecked_advise_range(DontNeed, start, end - start),
                MapBytes::Anon(m) => m.release_range(start, end - start),
                MapBytes::Owned { .. } => return 0,
            }
        };
        if r.is_ok() {
            end - start
        } else {
            0
        }
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bytes({} bytes)", self.range.len())
    }
}

/// A weight matrix `[rows, cols]`: row `r` is output feature `r`, contiguous over the `cols` inputs.
///
/// ```
/// use mllama::kernels::tensor::Mat;
///
/// let w = Mat::from_f32(2, 3, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
/// assert_eq!((w.rows, w.cols, w.row_bytes()), (2, 3, 12));
/// let mut row = [0f32; 3];
/// w.row_to_f32(1, &mut row);
/// assert_eq!(row, [4.0, 5.0, 6.0]);
/// ```
#[derive(Clone, Debug)]
pub struct Mat {
    /// Storage type (F32, F16, BF16, Q8_0 or Q4_0).
    pub ty: GgmlType,
    /// Rows (output features).
    pub rows: usize,
    /// Values per row (input features).
    pub cols: usize,
    bytes: Bytes,
    /// The type's row of the kernel table (looked up once, here).
    kernels: &'static TypeKernels,
    /// The row-interleaved copy the decode kernels read instead of `bytes` (see
    /// [`Mat::repack`]).
    repacked: Option<Arc<Repacked>>,
}

impl Mat {
    /// A matrix over `bytes`; `None` if the size does not match the type and shape or the type
    /// cannot be computed with (no row in the kernel table, see [`super::lookup`]).
    pub fn new(ty: GgmlType, rows: usize, cols: usize, bytes: Bytes) -> Option<Self> {
        let kernels = lookup(ty).ok()?;
        let row_bytes = ty.row_bytes(cols as u64)? as usize;
        if row_bytes.checked_mul(rows)? != bytes.as_slice().len() {
            return None;
        }
        let m = Mat {
            ty,
            rows,
            cols,
            bytes,
            kernels,
            repacked: None,
        };
        // Typed views need the element alignment; the GGUF data section is 32-byte aligned and the
        // map page-aligned, so this only fails for hand-made byte buffers.
        let align = match ty {
            GgmlType::F32 => 4,
            _ => 2,
        };
        if !(m.bytes.as_slice().as_ptr() as usize).is_multiple_of(align) {
            return None;
        }
        Some(m)
    }

    /// An f32 matrix owned in memory (a copy of `v`, row-major).
    ///
    /// # Panics
    ///
    /// If `v.len() != rows · cols`.
    pub fn from_f32(rows: usize, cols: usize, v: &[f32]) -> Self {
        assert_eq!(v.len(), rows * cols);
        Mat::from_bytes(GgmlType::F32, rows, cols, bytemuck::cast_slice(v))
    }

    /// A matrix of any computable type over an owned copy of `data` (tests, synthetic models).
    ///
    /// # Panics
    ///
    /// If the type cannot be computed with, or `data` is not exactly `rows` rows of `cols` values
    /// of that type.
    pub fn from_bytes(ty: GgmlType, rows: usize, cols: usize, data: &[u8]) -> Self {
        let m = Mat::new(ty, rows, cols, Bytes::owned(data));
        m.unwrap_or_else(|| panic!("{ty} [{rows}, {cols}]: {} bytes do not fit", data.len()))
    }

    /// The weight type's kernels.
    pub fn kernels(&self) -> &'static TypeKernels {
        self.kernels
    }

    /// Build the row-interleaved layout of this matrix ([`super::repack`]: Q4_0, Q4_1 and Q8_0
    /// with at least 8 rows, Q4_K, Q5_K and Q6_K with at least 16) into anonymous memory; the
    /// decode kernels use it from then on and [`Mat::row_to_f32`] reads it. With `release`, the in-place bytes' pages are given back to
    /// the system (a mapped file's pages come back from the file if something reads
    /// [`Mat::data`] later; a synthetic model's anonymous bytes do not). Returns whether the
    /// matrix is repacked.
    pub fn repack(&mut self, release: bool) -> bool {
        if self.repacked.is_none() {
            let r = super::repack::repack(self.ty, self.bytes.as_slice(), self.rows, self.cols);
            self.repacked = r.map(Arc::new);
            if release && self.repacked.is_some() {
                self.bytes.release();
            }
        }
        self.repacked.is_some()
    }

    /// The row-interleaved layout, if [`Mat::repack`] built one.
    pub fn repacked(&self) -> Option<&Repacked> {
        self.repacked.as_deref()
    }

    /// All the matrix's bytes, row after row, in place (for a repacked matrix: the mapped
    /// original, which the kernels do not read; see [`Mat::repack`]).
    pub fn data(&self) -> &[u8] {
        self.bytes.as_slice()
    }

    /// Bytes of one row (`ty.row_bytes(cols)`).
    pub fn row_bytes(&self) -> usize {
        self.data().len() / self.rows.max(1)
    }

    /// Bytes of rows `r.start..r.end`.
    ///
    /// # Panics
    ///
    /// If the range goes past the last row.
    pub fn rows_data(&self, r: Range<usize>) -> &[u8] {
        let rb = self.row_bytes();
        &self.data()[r.start * rb..r.end * rb]
    }

    /// The whole matrix as f32 elements, `rows · cols` of them.
    ///
    /// The `as_*` views require the matching [`Mat::ty`]; this is checked in debug builds only
    /// (a wrong type reinterprets the bytes, or panics if their size does not fit).
    pub fn as_f32(&self) -> &[f32] {
        debug_assert_eq!(self.ty, GgmlType::F32);
        bytemuck::cast_slice(self.data())
    }
    /// The whole matrix as f16 elements (type F16; see [`Mat::as_f32`]).
    pub fn as_f16(&self) -> &[f16] {
        debug_assert_eq!(self.ty, GgmlType::F16);
        bytemuck::cast_slice(self.data())
    }
    /// The whole matrix as bf16 elements (type BF16; see [`Mat::as_f32`]).
    pub fn as_bf16(&self) -> &[bf16] {
        debug_assert_eq!(self.ty, GgmlType::BF16);
        bytemuck::cast_slice(self.data())
    }
    /// The whole matrix as Q8_0 blocks, `cols / 32` per row (type Q8_0; see [`Mat::as_f32`]).
    pub fn as_q8_0(&self) -> &[BlockQ8_0] {
        debug_assert_eq!(self.ty, GgmlType::Q8_0);
        bytemuck::cast_slice(self.data())
    }
    /// The whole matrix as Q4_0 blocks, `cols / 32` per row (type Q4_0; see [`Mat::as_f32`]).
    pub fn as_q4_0(&self) -> &[BlockQ4_0] {
        debug_assert_eq!(self.ty, GgmlType::Q4_0);
        bytemuck::cast_slice(self.data())
    }

    /// Dequantize row `r` into `out` (`cols` values): embedding lookups.
    ///
    /// # Panics
    ///
    /// If `r >= rows` or `out` has fewer than `cols` values.
    pub fn row_to_f32(&self, r: usize, out: &mut [f32]) {
        if let Some(rp) = self.repacked() {
            assert!(r < self.rows, "row {r} of {} rows", self.rows);
            super::repack::row_to_f32(rp, self.rows, self.cols, r, out);
            return;
        }
        let d = self.rows_data(r..r + 1);
        // Sizes are consistent by construction.
        let _ = crate::quant::dequantize(self.ty, d, &mut out[..self.cols]);
    }

    /// Bytes of weights (what a pass over the matrix reads).
    pub fn nbytes(&self) -> usize {
        self.data().len()
    }
}
