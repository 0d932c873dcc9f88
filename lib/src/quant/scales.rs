//! The f16 scale fields of each block type, and a cheap scan that finds a non-finite one.
//!
//! A block whose f16 scale (`d`, or the minimum `m` / `dmin`) is infinite or NaN turns every value
//! of the block into inf/NaN, and one such block in a weight matrix turns the model's answers
//! into NaN (which sampling would silently map to some token). The model loader therefore scans
//! the scale fields of every quantized matrix once ([`first_non_finite`]): it reads two bytes per
//! field per block in place (no copy), in parallel over large tensors. The other fields of every
//! type are integers whose whole range is valid (Q6_K's 8-bit sub-scales, the packed 6-bit
//! sub-scales of Q4_K/Q5_K), so these f16 fields are the only "absurd scale" a block can hold.

use std::mem::offset_of;

use rayon::prelude::*;

use super::{q4_1, q4_k, q5_0, q5_1, q5_k, q6_k, q8_1, BlockQ4_0, BlockQ8_0};
use crate::GgmlType;

/// The f16 scale fields of a block type: `(byte offset in the block, field name)`. Empty for the
/// float types and for Q8_K (activation-only, f32 scale); `None` for a type this crate does not
/// store.
pub fn fields(ty: GgmlType) -> Option<&'static [(usize, &'static str)]> {
    const Q8_0: [(usize, &str); 1] = [(offset_of!(BlockQ8_0, d), "d")];
    const Q4_0: [(usize, &str); 1] = [(offset_of!(BlockQ4_0, d), "d")];
    const Q4_1: [(usize, &str); 2] = [
        (offset_of!(q4_1::BlockQ4_1, d), "d"),
        (offset_of!(q4_1::BlockQ4_1, m), "m"),
    ];
    const Q5_0: [(usize, &str); 1] = [(offset_of!(q5_0::BlockQ5_0, d), "d")];
    const Q5_1: [(usize, &str); 2] = [
        (offset_of!(q5_1::BlockQ5_1, d), "d"),
        (offset_of!(q5_1::BlockQ5_1, m), "m"),
    ];
    const Q8_1: [(usize, &str); 2] = [
        (offset_of!(q8_1::BlockQ8_1, d), "d"),
        (offset_of!(q8_1::BlockQ8_1, s), "s"),
    ];
    const Q4_K: [(usize, &str); 2] = [
        (offset_of!(q4_k::BlockQ4_K, d), "d"),
        (offset_of!(q4_k::BlockQ4_K, dmin), "dmin"),
    ];
    const Q5_K: [(usize, &str); 2] = [
        (offset_of!(q5_k::BlockQ5_K, d), "d"),
        (offset_of!(q5_k::BlockQ5_K, dmin), "dmin"),
    ];
    const Q6_K: [(usize, &str); 1] = [(offset_of!(q6_k::BlockQ6_K, d), "d")];
    Some(match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_K => &[],
        GgmlType::Q8_0 => &Q8_0,
        GgmlType::Q4_0 => &Q4_0,
        GgmlType::Q4_1 => &Q4_1,
        GgmlType::Q5_0 => &Q5_0,
        GgmlType::Q5_1 => &Q5_1,
        GgmlType::Q8_1 => &Q8_1,
        GgmlType::Q4_K => &Q4_K,
        GgmlType::Q5_K => &Q5_K,
        GgmlType::Q6_K => &Q6_K,
        _ => return None,
    })
}

/// A non-finite scale found by [`first_non_finite`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BadScale {
    /// Index of the block in the tensor (row-major: `row · blocks_per_row + block_in_row`).
    pub block: u64,
    /// The field (`d`, `m`, `dmin`, `s`).
    pub field: &'static str,
    /// Its value (infinite or NaN).
    pub value: f32,
}

/// Blocks per parallel task of the scan.
const TASK_BLOCKS: usize = 1 << 14;

/// The first block (lowest index) of `data` (whole blocks of `ty`) with an infinite or NaN f16
/// scale field, or `None` if every scale is finite or `ty` has no f16 scale field. Reads only the
/// scale bytes, in place; parallel (rayon) over tasks of 16384 blocks.
///
/// ```
/// use half::f16;
/// use mllama::quant::scales::first_non_finite;
/// use mllama::GgmlType;
///
/// // Two Q8_0 blocks (34 bytes each): the second one's scale is +inf.
/// let mut data = vec![0u8; 68];
/// data[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
/// data[34..36].copy_from_slice(&f16::INFINITY.to_le_bytes());
/// let bad = first_non_finite(GgmlType::Q8_0, &data).unwrap();
/// assert_eq!((bad.block, bad.field, bad.value), (1, "d", f32::INFINITY));
/// ```
pub fn first_non_finite(ty: GgmlType, data: &[u8]) -> Option<BadScale> {
    let fields = fields(ty).unwrap_or(&[]);
    if fields.is_empty() {
        return None;
    }
    let bytes = ty.type_size();
    let scan = |(task, chunk): (usize, &[u8])| {
        scan_serial(fields, bytes, chunk).map(|(b, f, v)| BadScale {
            block: (task * TASK_BLOCKS + b) as u64,
            field: f,
            value: v,
        })
    };
    if data.len() <= TASK_BLOCKS * bytes {
        return scan((0, data));
    }
    data.par_chunks(TASK_BLOCKS * bytes)
        .enumerate()
        .find_map_first(scan)
}

/// [`first_non_finite`] over `data` on the calling thread: `(block, field, value)`.
fn scan_serial(
    fields: &'static [(usize, &'static str)],
    bytes: usize,
    data: &[u8],
) -> Option<(usize, &'static str, f32)> {
    // An f16 is inf or NaN iff its five exponent bits are all ones.
    let bad =
        |blk: &[u8], off: usize| u16::from_le_bytes([blk[off], blk[off + 1]]) & 0x7c00 == 0x7c00;
    // Blocks have one or two scale fields; a fixed-size loop per case keeps the scan at memory
    // speed.
    let b = match *fields {
        [(o0, _)] => data.chunks_exact(bytes).position(|blk| bad(blk, o0)),
        [(o0, _), (o1, _)] => data
            .chunks_exact(bytes)
            .position(|blk| bad(blk, o0) | bad(blk, o1)),
        _ => data
            .chunks_exact(bytes)
            .position(|blk| fields.iter().any(|&(off, _)| bad(blk, off))),
    }?;
    let blk = &data[b * bytes..(b + 1) * bytes];
    let &(off, name) = fields.iter().find(|&&(off, _)| bad(blk, off))?;
    let value = half::f16::from_le_bytes([blk[off], blk[off + 1]]).to_f32();
    Some((b, name, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    /// Every stored block type names its scale fields; each field is an f16 inside the block.
    #[test]
    fn every_block_type_has_its_scale_fields() {
        for t in super::super::TYPES.iter() {
            let f = fields(t.ty).unwrap();
            assert_eq!(f.is_empty(), !t.ty.is_quantized(), "{}", t.ty);
            assert!(f.iter().all(|&(off, _)| off + 2 <= t.block_bytes));
        }
    }

    /// The first bad block is found across parallel tasks, for each field of each type.
    #[test]
    fn finds_the_first_bad_block_of_every_field() {
        for t in super::super::TYPES.iter().filter(|t| t.ty.is_quantized()) {
            let n = 3 * TASK_BLOCKS + 5;
            let mut data = vec![0u8; n * t.block_bytes];
            assert_eq!(first_non_finite(t.ty, &data), None);
            for &(off, name) in fields(t.ty).unwrap() {
                for (blk, v) in [
                    (2 * TASK_BLOCKS + 3, f16::NAN),
                    (TASK_BLOCKS + 1, f16::NEG_INFINITY),
                ] {
                    let at = blk * t.block_bytes + off;
                    data[at..at + 2].copy_from_slice(&v.to_le_bytes());
                }
                let bad = first_non_finite(t.ty, &data).unwrap();
                assert_eq!((bad.block, bad.field), ((TASK_BLOCKS + 1) as u64, name));
                assert_eq!(bad.value, f32::NEG_INFINITY);
                data.fill(0);
            }
        }
    }
}
