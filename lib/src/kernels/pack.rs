//! Packing weight rows into the f32 panels the GEMM micro-kernels read: the plain conversion
//! every path shares (the scalar path's whole pack, the SIMD paths' column tail).

use crate::quant::{BlockQ4_0, BlockQ8_0};
use crate::GgmlType;

/// Columns `p_from..p_to` of the packed panel (see `gemm::Kernel::pack_b`) with plain conversions;
/// the scalar path's whole pack and the SIMD paths' column tail.
#[allow(clippy::too_many_arguments)]
pub(super) fn pack_b_tail(
    ty: GgmlType,
    data: &[u8],
    row_bytes: usize,
    j0: usize,
    nr: usize,
    p0: usize,
    p_from: usize,
    p_to: usize,
    nr_pad: usize,
    out: &mut [f32],
) {
    for r in 0..nr_pad {
        if r >= nr {
            for p in p_from..p_to {
                out[p * nr_pad + r] = 0.0;
            }
            continue;
        }
        let row = &data[(j0 + r) * row_bytes..(j0 + r + 1) * row_bytes];
        let cols = (p0 + p_from)..(p0 + p_to);
        let mut put = |c: usize, v: f32| out[(c - p0) * nr_pad + r] = v;
        match ty {
            GgmlType::F32 => {
                for c in cols {
                    put(
                        c,
                        f32::from_le_bytes(row[4 * c..4 * c + 4].try_into().unwrap()),
                    );
                }
            }
            GgmlType::F16 => {
                for c in cols {
                    put(
                        c,
                        half::f16::from_le_bytes([row[2 * c], row[2 * c + 1]]).to_f32(),
                    );
                }
            }
            GgmlType::BF16 => {
                for c in cols {
                    put(
                        c,
                        half::bf16::from_le_bytes([row[2 * c], row[2 * c + 1]]).to_f32(),
                    );
                }
            }
            GgmlType::Q8_0 => {
                let blocks: &[BlockQ8_0] = bytemuck::cast_slice(row);
                for c in cols {
                    let b = &blocks[c / 32];
                    put(c, b.qs[c % 32] as f32 * b.d.to_f32());
                }
            }
            GgmlType::Q4_0 => {
                let blocks: &[BlockQ4_0] = bytemuck::cast_slice(row);
                for c in cols {
                    let b = &blocks[c / 32];
                    let i = c % 32;
                    let q = if i < 16 {
                        b.qs[i] & 0x0F
                    } else {
                        b.qs[i - 16] >> 4
                    };
                    put(c, (q as i32 - 8) as f32 * b.d.to_f32());
                }
            }
            ty => unreachable!("gemm: weight type {ty} has no kernel"),
        }
    }
}
