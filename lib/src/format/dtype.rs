//! The ggml tensor type table.
//!
//! Every tensor in a GGUF file has a ggml type id. A type stores its values in *blocks*: `block_size`
//! consecutive values of a row packed into `type_size` bytes. Plain types (F32, F16, BF16, I8, ...)
//! are blocks of one value. A row of `n` values therefore takes `n / block_size * type_size` bytes,
//! and `n` must be a multiple of `block_size`.
//!
//! The table lists every type id ggml has assigned (removed ids 4, 5 and 31..33, 36..38 are unknown),
//! so that `mllama info` can describe any GGUF file. Which types we can *compute* with is a separate
//! question answered by [`GgmlType::is_supported_for_compute`].

use std::fmt;

/// A ggml tensor type id, as stored in a GGUF tensor info (`ty as u32` is the id). The runtime
/// computes with F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K
/// ([`GgmlType::is_supported_for_compute`]); the
/// others are known so that any file can be described.
///
/// ```
/// use mllama::GgmlType;
///
/// let t = GgmlType::from_name("q4_0").unwrap();
/// assert_eq!((t.id(), t.name(), t.block_size(), t.type_size()), (2, "Q4_0", 32, 18));
/// assert_eq!(t.row_bytes(4096), Some(4096 / 32 * 18));
/// assert!(t.is_quantized() && t.is_supported_for_compute());
/// assert!(GgmlType::Q4_K.is_supported_for_compute());
/// assert!(!GgmlType::Q2_K.is_supported_for_compute());
/// ```
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GgmlType {
    /// 32-bit float (computable).
    F32 = 0,
    /// IEEE 754 half-precision float (computable).
    F16 = 1,
    /// 4-bit blocks of 32 values with an f16 scale, 18 bytes (computable).
    Q4_0 = 2,
    /// 4-bit blocks of 32 values with an f16 scale and minimum.
    Q4_1 = 3,
    /// 5-bit blocks of 32 values with an f16 scale.
    Q5_0 = 6,
    /// 5-bit blocks of 32 values with an f16 scale and minimum.
    Q5_1 = 7,
    /// 8-bit blocks of 32 values with an f16 scale, 34 bytes (computable).
    Q8_0 = 8,
    /// 8-bit blocks of 32 values with an f16 scale and sum (ggml activations).
    Q8_1 = 9,
    /// 2-bit k-quant, super-blocks of 256 values.
    Q2_K = 10,
    /// 3-bit k-quant, super-blocks of 256 values.
    Q3_K = 11,
    /// 4-bit k-quant, super-blocks of 256 values.
    Q4_K = 12,
    /// 5-bit k-quant, super-blocks of 256 values.
    Q5_K = 13,
    /// 6-bit k-quant, super-blocks of 256 values.
    Q6_K = 14,
    /// 8-bit k-quant, super-blocks of 256 values (ggml activations).
    Q8_K = 15,
    /// 2.06-bit i-quant, super-blocks of 256 values.
    IQ2_XXS = 16,
    /// 2.31-bit i-quant, super-blocks of 256 values.
    IQ2_XS = 17,
    /// 3.06-bit i-quant, super-blocks of 256 values.
    IQ3_XXS = 18,
    /// 1.56-bit i-quant, super-blocks of 256 values.
    IQ1_S = 19,
    /// 4-bit non-linear i-quant, blocks of 32 values.
    IQ4_NL = 20,
    /// 3.44-bit i-quant, super-blocks of 256 values.
    IQ3_S = 21,
    /// 2.56-bit i-quant, super-blocks of 256 values.
    IQ2_S = 22,
    /// 4.25-bit non-linear i-quant, super-blocks of 256 values.
    IQ4_XS = 23,
    /// 8-bit signed integer.
    I8 = 24,
    /// 16-bit signed integer.
    I16 = 25,
    /// 32-bit signed integer.
    I32 = 26,
    /// 64-bit signed integer.
    I64 = 27,
    /// 64-bit float.
    F64 = 28,
    /// 1.75-bit i-quant, super-blocks of 256 values.
    IQ1_M = 29,
    /// bfloat16 (the upper half of an f32; computable).
    BF16 = 30,
    /// Ternary quant (1.69 bits), super-blocks of 256 values.
    TQ1_0 = 34,
    /// Ternary quant (2.06 bits), super-blocks of 256 values.
    TQ2_0 = 35,
    /// OCP microscaling FP4, blocks of 32 values with a shared exponent.
    MXFP4 = 39,
    /// NVIDIA FP4, blocks of 64 values.
    NVFP4 = 40,
    /// 1-bit blocks of 128 values.
    Q1_0 = 41,
}

/// (type, name, values per block, bytes per block). Sizes follow ggml's `block_*` structs.
const TABLE: &[(GgmlType, &str, usize, usize)] = &[
    (GgmlType::F32, "F32", 1, 4),
    (GgmlType::F16, "F16", 1, 2),
    (GgmlType::Q4_0, "Q4_0", 32, 18),   // f16 d; u8 qs[16]
    (GgmlType::Q4_1, "Q4_1", 32, 20),   // f16 d, m; u8 qs[16]
    (GgmlType::Q5_0, "Q5_0", 32, 22),   // f16 d; u8 qh[4]; u8 qs[16]
    (GgmlType::Q5_1, "Q5_1", 32, 24),   // f16 d, m; u8 qh[4]; u8 qs[16]
    (GgmlType::Q8_0, "Q8_0", 32, 34),   // f16 d; i8 qs[32]
    (GgmlType::Q8_1, "Q8_1", 32, 36),   // f16 d, s; i8 qs[32]
    (GgmlType::Q2_K, "Q2_K", 256, 84),  // u8 scales[16]; u8 qs[64]; f16 d, dmin
    (GgmlType::Q3_K, "Q3_K", 256, 110), // u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d
    (GgmlType::Q4_K, "Q4_K", 256, 144), // f16 d, dmin; u8 scales[12]; u8 qs[128]
    (GgmlType::Q5_K, "Q5_K", 256, 176), // f16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]
    (GgmlType::Q6_K, "Q6_K", 256, 210), // u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d
    (GgmlType::Q8_K, "Q8_K", 256, 292), // f32 d; i8 qs[256]; i16 bsums[16]
    (GgmlType::IQ2_XXS, "IQ2_XXS", 256, 66),
    (GgmlType::IQ2_XS, "IQ2_XS", 256, 74),
    (GgmlType::IQ3_XXS, "IQ3_XXS", 256, 98),
    (GgmlType::IQ1_S, "IQ1_S", 256, 50),
    (GgmlType::IQ4_NL, "IQ4_NL", 32, 18),
    (GgmlType::IQ3_S, "IQ3_S", 256, 110),
    (GgmlType::IQ2_S, "IQ2_S", 256, 82),
    (GgmlType::IQ4_XS, "IQ4_XS", 256, 136),
    (GgmlType::I8, "I8", 1, 1),
    (GgmlType::I16, "I16", 1, 2),
    (GgmlType::I32, "I32", 1, 4),
    (GgmlType::I64, "I64", 1, 8),
    (GgmlType::F64, "F64", 1, 8),
    (GgmlType::IQ1_M, "IQ1_M", 256, 56),
    (GgmlType::BF16, "BF16", 1, 2),
    (GgmlType::TQ1_0, "TQ1_0", 256, 54),
    (GgmlType::TQ2_0, "TQ2_0", 256, 66),
    (GgmlType::MXFP4, "MXFP4", 32, 17),
    (GgmlType::NVFP4, "NVFP4", 64, 36),
    (GgmlType::Q1_0, "Q1_0", 128, 18),
];

impl GgmlType {
    /// Every known type, in id order.
    pub fn all() -> impl Iterator<Item = GgmlType> {
        TABLE.iter().map(|e| e.0)
    }

    /// The type with this id, or `None` for ids ggml never assigned or has removed.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        TABLE.iter().find(|e| e.0 as u32 == id).map(|e| e.0)
    }

    /// Parse a name such as `q8_0` or `BF16` (case-insensitive).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        TABLE
            .iter()
            .find(|e| e.1.eq_ignore_ascii_case(name))
            .map(|e| e.0)
    }

    fn entry(self) -> &'static (GgmlType, &'static str, usize, usize) {
        // Every enum variant has exactly one table row (checked by a unit test).
        TABLE.iter().find(|e| e.0 == self).unwrap_or(&TABLE[0])
    }

    /// The numeric type id stored in GGUF files.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The ggml name, e.g. `"Q8_0"` (also what `Display` prints).
    pub fn name(self) -> &'static str {
        self.entry().1
    }

    /// Values per block.
    pub fn block_size(self) -> usize {
        self.entry().2
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.entry().3
    }

    /// True for block-quantized types (block size > 1).
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes taken by a row of `n` values, or `None` when `n` is not a multiple of the block size
    /// or the size overflows.
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if !n.is_multiple_of(bs) {
            return None;
        }
        (n / bs).checked_mul(self.type_size() as u64)
    }

    /// Bytes taken by a tensor of `n_elements` values laid out in rows of `row_len` (`None` as
    /// for [`GgmlType::row_bytes`]; 0 when `row_len` is 0).
    pub fn tensor_bytes(self, row_len: u64, n_elements: u64) -> Option<u64> {
        if row_len == 0 {
            return Some(0);
        }
        let rows = n_elements / row_len;
        self.row_bytes(row_len)?.checked_mul(rows)
    }

    /// Types whose weights the runtime can multiply with (dequantize or dot-product kernels exist).
    pub fn is_supported_for_compute(self) -> bool {
        matches!(
            self,
            GgmlType::F32
                | GgmlType::F16
                | GgmlType::BF16
                | GgmlType::Q8_0
                | GgmlType::Q4_0
                | GgmlType::Q4_1
                | GgmlType::Q5_0
                | GgmlType::Q5_1
                | GgmlType::Q4_K
                | GgmlType::Q5_K
                | GgmlType::Q6_K
        )
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        for (i, e) in TABLE.iter().enumerate() {
            assert_eq!(GgmlType::from_id(e.0 as u32), Some(e.0));
            assert_eq!(GgmlType::from_name(e.1), Some(e.0));
            assert!(TABLE[..i].iter().all(|p| p.0 != e.0), "duplicate {:?}", e.0);
        }
        assert_eq!(GgmlType::from_id(4), None);
        assert_eq!(GgmlType::from_id(31), None);
        assert_eq!(GgmlType::from_id(1000), None);
    }

    #[test]
    fn row_bytes() {
        assert_eq!(GgmlType::Q8_0.row_bytes(64), Some(68));
        assert_eq!(GgmlType::Q4_0.row_bytes(64), Some(36));
        assert_eq!(GgmlType::Q4_K.row_bytes(4096), Some(16 * 144));
        assert_eq!(GgmlType::Q8_0.row_bytes(33), None);
        assert_eq!(GgmlType::BF16.row_bytes(3), Some(6));
        assert_eq!(GgmlType::F32.row_bytes(u64::MAX), None);
    }
}
