//! Packing weight rows into the f32 panels the GEMM micro-kernels read: the plain conversion
//! every path shares (the scalar path's whole pack, the SIMD paths' column tail, and any type a
//! path has no packing kernel for), through the type's dequantizer in [`crate::quant::TYPES`].

use crate::quant::TypeTraits;

/// Weight rows `j0..j0 + nr` (`nr ≤ NR`), columns `p0..p0 + kc`, of a matrix of type `t` stored
/// in `data` (`row_bytes` per row): what one `gemm::Kernel::pack_b` call packs.
#[derive(Clone, Copy)]
pub(crate) struct Panel<'a> {
    pub t: &'static TypeTraits,
    pub data: &'a [u8],
    pub row_bytes: usize,
    pub j0: usize,
    pub nr: usize,
    pub p0: usize,
    pub kc: usize,
}

/// Most values per block of any type (the K-quants' super-blocks).
const MAX_BLOCK: usize = 256;

/// Columns `p_from..panel.kc` of the packed panel (see `gemm::Kernel::pack_b`; `nr_pad` rows
/// wide) with plain conversions; the scalar path's whole pack and the SIMD paths' column tail.
pub(super) fn pack_b_tail(panel: Panel<'_>, p_from: usize, nr_pad: usize, out: &mut [f32]) {
    let Panel {
        t,
        data,
        row_bytes,
        j0,
        nr,
        p0,
        kc: p_to,
    } = panel;
    let (bv, bb) = (t.block_values, t.block_bytes);
    debug_assert!(bv <= MAX_BLOCK);
    // Whole blocks per conversion call.
    let per = MAX_BLOCK / bv;
    let mut vals = [0f32; MAX_BLOCK];
    for r in 0..nr_pad {
        if r >= nr {
            for p in p_from..p_to {
                out[p * nr_pad + r] = 0.0;
            }
            continue;
        }
        let row = &data[(j0 + r) * row_bytes..(j0 + r + 1) * row_bytes];
        let (c0, c1) = (p0 + p_from, p0 + p_to);
        // The blocks covering columns c0..c1, converted `per` at a time.
        let (mut b, b1) = (c0 / bv, c1.div_ceil(bv));
        while b < b1 {
            let e = (b + per).min(b1);
            (t.to_f32)(&row[b * bb..e * bb], &mut vals[..(e - b) * bv]);
            for c in (b * bv).max(c0)..(e * bv).min(c1) {
                out[(c - p0) * nr_pad + r] = vals[c - b * bv];
            }
            b = e;
        }
    }
}
