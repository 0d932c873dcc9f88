//! The quantized block structs have ggml's layout, checked at compile time: a block that changed
//! size or values per block cannot build, whatever the kernels' tests happen to compare. The
//! numbers are ggml's (`ggml-common.h`: `block_q8_0` = f16 scale + 32 × i8, `block_q4_0` = f16
//! scale + 16 bytes of nibbles), not ours. The run-time test ties them to the type table.
//!
//! (These live in a test so that moving `quant/` to one file per type does not have to carry
//! them; a new block type adds its two lines here.)

use std::mem::{align_of, size_of};

use mllama::quant::{BlockQ4_0, BlockQ8_0, QuantBlock};
use mllama::GgmlType;

const _: () = {
    assert!(size_of::<BlockQ8_0>() == 2 + 32);
    assert!(<BlockQ8_0 as QuantBlock>::BLOCK == 32);
    assert!(size_of::<BlockQ4_0>() == 2 + 32 / 2);
    assert!(<BlockQ4_0 as QuantBlock>::BLOCK == 32);
    // Rows of blocks are read in place from the memory map at any 2-byte offset.
    assert!(align_of::<BlockQ8_0>() == 2 && align_of::<BlockQ4_0>() == 2);
};

fn check<B: QuantBlock>() {
    let t = B::TYPE;
    assert_eq!(size_of::<B>(), t.type_size(), "{t:?} bytes per block");
    assert_eq!(B::BLOCK, t.block_size(), "{t:?} values per block");
    assert!(t.is_quantized(), "{t:?}");
}

#[test]
fn block_structs_match_the_type_table() {
    check::<BlockQ8_0>();
    check::<BlockQ4_0>();
    assert_eq!(<BlockQ8_0 as QuantBlock>::TYPE, GgmlType::Q8_0);
    assert_eq!(<BlockQ4_0 as QuantBlock>::TYPE, GgmlType::Q4_0);
}
