//! File types (`quantize -t`) and the per-tensor type mix of llama.cpp's `llama-quantize`.
//!
//! A [`FileType`] is what llama.cpp calls a `llama_ftype`: a recipe, not a single tensor type.
//! `q4_k_m` stores most matrices as Q4_K but `output.weight` as Q6_K and the value and down
//! projections of some layers as Q6_K. [`tensor_type`] is that rule as a pure function of the
//! file type, the tensor's [`Category`], its [`Position`] among the tensors of its category and
//! its row length; it follows `llama_tensor_get_type` of llama.cpp's `src/llama-quant.cpp` (the
//! tree vendored in llama-cpp-python 0.3.36) without an importance matrix, for the file types
//! listed in [`FileType::ALL`]:
//!
//! | file type | base | `output` | `attn_v` (i-th of n) | `ffn_down` (layer i of n) |
//! |---|---|---|---|---|
//! | q4_k_m | Q4_K | Q6_K | Q6_K if [`use_more_bits`] | Q6_K if [`use_more_bits`] |
//! | q5_k_m | Q5_K | Q6_K | Q6_K if [`use_more_bits`] | Q6_K if [`use_more_bits`] |
//! | q4_k_s | Q4_K | Q6_K | Q5_K if i < 4 | Q5_K if i < n/8 |
//! | q5_k_s, q6_k | Q5_K, Q6_K | Q6_K | base | base |
//! | q4_1, q5_0, q5_1 | itself | Q6_K | base | base |
//! | q8_0, q4_0, f16, bf16, f32 | itself | base | base | base |
//!
//! `output` becomes Q8_0 instead when its rows are not whole blocks of the base type. The token
//! embedding keeps the base type (llama.cpp gives it the output's type only when the file has no
//! `output.weight`; ours always has one). Then every quantized choice whose rows are not whole
//! blocks falls back ([`fallback`]): Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, and to F16 if the
//! rows are not whole 32-blocks either.
//!
//! One deliberate difference: llama.cpp would give `output.weight` Q6_K in a Q4_0 file too; our
//! `q4_0` stays uniform Q4_0 as it always was (the runtime's fastest path, and the existing
//! files). Which tensors are counted (text decoder only) is the model's business: see
//! `models::mllama::mix`.

use crate::GgmlType;

/// A file type (llama.cpp's `llama_ftype`): the recipe `quantize -t` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    /// Everything F32.
    F32,
    /// Matrices F16.
    F16,
    /// Matrices BF16.
    BF16,
    /// Matrices Q8_0.
    Q8_0,
    /// Matrices Q4_0 (uniform; see the module note).
    Q4_0,
    /// Matrices Q4_1, `output` Q6_K.
    Q4_1,
    /// Matrices Q5_0, `output` Q6_K.
    Q5_0,
    /// Matrices Q5_1, `output` Q6_K.
    Q5_1,
    /// Q4_K, with Q5_K on the first `attn_v` and `ffn_down` layers, `output` Q6_K.
    Q4KS,
    /// Q4_K, with Q6_K on about half of `attn_v` and `ffn_down`, `output` Q6_K.
    Q4KM,
    /// Q5_K, `output` Q6_K.
    Q5KS,
    /// Q5_K, with Q6_K on about half of `attn_v` and `ffn_down`, `output` Q6_K.
    Q5KM,
    /// Q6_K everywhere.
    Q6K,
}

/// The tensor categories llama.cpp's rule distinguishes (`tensor_category`), as far as they
/// matter for the file types of [`FileType::ALL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Category {
    /// `token_embd.weight`.
    TokenEmbd,
    /// `output.weight`.
    Output,
    /// A value projection (`attn_v.weight`, also the fused `attn_qkv` / `attn_kv_b`).
    AttnV,
    /// An MLP down projection (a name containing `ffn_down`).
    FfnDown,
    /// Any other matrix (q, k, attention output, gate, up, mllama's `cross_attn_*`, ...).
    Other,
}

/// A tensor's place among the tensors of its category: llama.cpp's counters (`i_attention_wv`
/// of `n_attention_wv`, `i_ffn_down` of `n_ffn_down`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Position {
    /// 0-based index in file order among the tensors of the category.
    pub index: usize,
    /// The total the rule divides by: the number of value projections for [`Category::AttnV`],
    /// the number of decoder layers for [`Category::FfnDown`].
    pub count: usize,
}

impl FileType {
    /// Every file type `quantize -t` accepts, in the order `--help` lists them.
    pub const ALL: [FileType; 13] = [
        FileType::F32,
        FileType::F16,
        FileType::BF16,
        FileType::Q8_0,
        FileType::Q6K,
        FileType::Q5KM,
        FileType::Q5KS,
        FileType::Q5_1,
        FileType::Q5_0,
        FileType::Q4KM,
        FileType::Q4KS,
        FileType::Q4_1,
        FileType::Q4_0,
    ];

    /// The name `-t` takes (`q4_k_m`).
    pub fn name(self) -> &'static str {
        match self {
            FileType::F32 => "f32",
            FileType::F16 => "f16",
            FileType::BF16 => "bf16",
            FileType::Q8_0 => "q8_0",
            FileType::Q4_0 => "q4_0",
            FileType::Q4_1 => "q4_1",
            FileType::Q5_0 => "q5_0",
            FileType::Q5_1 => "q5_1",
            FileType::Q4KS => "q4_k_s",
            FileType::Q4KM => "q4_k_m",
            FileType::Q5KS => "q5_k_s",
            FileType::Q5KM => "q5_k_m",
            FileType::Q6K => "q6_k",
        }
    }

    /// Parse a name of [`FileType::ALL`] (case-insensitive).
    ///
    /// ```
    /// use mllama::quant::mix::FileType;
    /// assert_eq!(FileType::parse("Q4_K_M"), Some(FileType::Q4KM));
    /// assert_eq!(FileType::parse("q4_k"), None);
    /// ```
    pub fn parse(s: &str) -> Option<FileType> {
        let s = s.to_ascii_lowercase();
        FileType::ALL.into_iter().find(|f| f.name() == s)
    }

    /// The names of [`FileType::ALL`], comma-separated (for error messages).
    pub fn names() -> String {
        let v: Vec<&str> = FileType::ALL.iter().map(|f| f.name()).collect();
        v.join(", ")
    }

    /// llama.cpp's `llama_ftype` number, written as `general.file_type`.
    pub fn llama_ftype(self) -> u32 {
        match self {
            FileType::F32 => 0,
            FileType::F16 => 1,
            FileType::Q4_0 => 2,
            FileType::Q4_1 => 3,
            FileType::Q8_0 => 7,
            FileType::Q5_0 => 8,
            FileType::Q5_1 => 9,
            FileType::Q4KS => 14,
            FileType::Q4KM => 15,
            FileType::Q5KS => 16,
            FileType::Q5KM => 17,
            FileType::Q6K => 18,
            FileType::BF16 => 32,
        }
    }

    /// The type most matrices get (llama.cpp's `llama_ftype_get_default_type`).
    pub fn base(self) -> GgmlType {
        match self {
            FileType::F32 => GgmlType::F32,
            FileType::F16 => GgmlType::F16,
            FileType::BF16 => GgmlType::BF16,
            FileType::Q8_0 => GgmlType::Q8_0,
            FileType::Q4_0 => GgmlType::Q4_0,
            FileType::Q4_1 => GgmlType::Q4_1,
            FileType::Q5_0 => GgmlType::Q5_0,
            FileType::Q5_1 => GgmlType::Q5_1,
            FileType::Q4KS | FileType::Q4KM => GgmlType::Q4_K,
            FileType::Q5KS | FileType::Q5KM => GgmlType::Q5_K,
            FileType::Q6K => GgmlType::Q6_K,
        }
    }

    /// Whether matrices are block-quantized.
    pub fn is_quantized(self) -> bool {
        self.base().is_quantized()
    }

    /// Whether llama.cpp's per-tensor mix applies (every quantized type but our uniform Q4_0,
    /// and Q8_0, for which the rule changes nothing).
    fn mixes(self) -> bool {
        self.is_quantized() && !matches!(self, FileType::Q4_0 | FileType::Q8_0)
    }
}

impl std::fmt::Display for FileType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Category {
    /// llama.cpp's category of a GGUF tensor name (`tensor_get_category`: exact names for the
    /// output head and token embedding, then the first matching substring).
    ///
    /// ```
    /// use mllama::quant::mix::Category;
    /// assert_eq!(Category::of_name("blk.3.attn_v.weight"), Category::AttnV);
    /// // mllama's cross-attention value projection is not an `attn_v.weight`.
    /// assert_eq!(Category::of_name("blk.3.cross_attn_v_proj.weight"), Category::Other);
    /// ```
    pub fn of_name(name: &str) -> Category {
        match name {
            "output.weight" => return Category::Output,
            "token_embd.weight" | "per_layer_token_embd.weight" => return Category::TokenEmbd,
            _ => {}
        }
        let v_like = ["attn_qkv.weight", "attn_kv_b.weight", "attn_v.weight"];
        if v_like.iter().any(|s| name.contains(s)) {
            return Category::AttnV;
        }
        // attn_k/attn_q/attn_output/ffn_up/ffn_gate are matched before ffn_down in llama.cpp,
        // but no name holding one of them also holds `ffn_down` and none gets a rule here.
        let other = [
            "attn_k.weight",
            "attn_q.weight",
            "attn_output.weight",
            "ffn_up",
            "ffn_gate",
        ];
        if other.iter().any(|s| name.contains(s)) {
            return Category::Other;
        }
        if name.contains("ffn_down") {
            return Category::FfnDown;
        }
        Category::Other
    }
}

/// llama.cpp's "more bits" layers: the first eighth, the last eighth, and every third layer in
/// between (`i < n/8 || i >= 7n/8 || (i − n/8) % 3 == 2`, integer division).
///
/// ```
/// use mllama::quant::mix::use_more_bits;
/// let layers: Vec<usize> = (0..16).filter(|&i| use_more_bits(i, 16)).collect();
/// assert_eq!(layers, [0, 1, 4, 7, 10, 13, 14, 15]);
/// ```
pub fn use_more_bits(i: usize, n: usize) -> bool {
    let (i, n) = (i as i64, n as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// Values per block of `ty` (1 for float types).
fn block(ty: GgmlType) -> usize {
    ty.block_size()
}

/// llama.cpp's `tensor_type_fallback`: a quantized `ty` whose rows of `row_len` values are not
/// whole blocks becomes Q5_0 (from Q4_K), Q5_1 (Q5_K) or Q8_0 (Q6_K); a 32-block type keeps its
/// type; then F16 if the rows are still not whole blocks. Float types are returned as they are.
///
/// ```
/// use mllama::quant::mix::fallback;
/// use mllama::GgmlType;
/// assert_eq!(fallback(GgmlType::Q4_K, 4096), GgmlType::Q4_K);
/// assert_eq!(fallback(GgmlType::Q4_K, 96), GgmlType::Q5_0);
/// assert_eq!(fallback(GgmlType::Q6_K, 20), GgmlType::F16);
/// ```
pub fn fallback(ty: GgmlType, row_len: usize) -> GgmlType {
    if !ty.is_quantized() || row_len.is_multiple_of(block(ty)) {
        return ty;
    }
    let alt = match ty {
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        other => other,
    };
    if row_len.is_multiple_of(block(alt)) {
        alt
    } else {
        GgmlType::F16
    }
}

/// The storage type of a quantizable text-model matrix under file type `ft` (see the module
/// table): llama.cpp's `llama_tensor_get_type` without an importance matrix, for a file that has
/// an `output.weight`, followed by [`fallback`] on `row_len` (values per row, ggml's `ne[0]`).
///
/// ```
/// use mllama::quant::mix::{tensor_type, Category, FileType, Position};
/// use mllama::GgmlType;
/// let at = |index| Position { index, count: 40 };
/// assert_eq!(tensor_type(FileType::Q4KM, Category::FfnDown, at(0), 14336), GgmlType::Q6_K);
/// assert_eq!(tensor_type(FileType::Q4KM, Category::FfnDown, at(5), 14336), GgmlType::Q4_K);
/// assert_eq!(tensor_type(FileType::Q4KM, Category::Output, at(0), 4096), GgmlType::Q6_K);
/// assert_eq!(tensor_type(FileType::Q4KM, Category::Other, at(0), 96), GgmlType::Q5_0);
/// ```
pub fn tensor_type(ft: FileType, cat: Category, pos: Position, row_len: usize) -> GgmlType {
    let base = ft.base();
    if !ft.mixes() {
        return fallback(base, row_len);
    }
    let more_bits = use_more_bits(pos.index, pos.count);
    let ty = match (cat, ft) {
        (Category::Output, _) if !row_len.is_multiple_of(block(base)) => GgmlType::Q8_0,
        (Category::Output, _) => GgmlType::Q6_K,
        (Category::AttnV | Category::FfnDown, FileType::Q4KM | FileType::Q5KM) if more_bits => {
            GgmlType::Q6_K
        }
        (Category::AttnV, FileType::Q4KS) if pos.index < 4 => GgmlType::Q5_K,
        (Category::FfnDown, FileType::Q4KS) if pos.index < pos.count / 8 => GgmlType::Q5_K,
        _ => base,
    };
    fallback(ty, row_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use GgmlType::*;

    /// llama.cpp's Q4_K_M / Q5_K_M "more bits" layers of a 40-layer model, written out from
    /// the formula by hand: 0..5, 35..40, and 5 + 3k + 2.
    #[test]
    fn more_bits_layers_of_40() {
        let got: Vec<usize> = (0..40).filter(|&i| use_more_bits(i, 40)).collect();
        let want = [
            0, 1, 2, 3, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31, 34, 35, 36, 37, 38, 39,
        ];
        assert_eq!(got, want);
        // 32 value projections (the self-attention layers of the 11B model).
        let got: Vec<usize> = (0..32).filter(|&i| use_more_bits(i, 32)).collect();
        assert_eq!(
            got,
            [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
        );
        // A tiny model: n/8 = 0 and 7n/8 = 2 for n = 3.
        let got: Vec<usize> = (0..3).filter(|&i| use_more_bits(i, 3)).collect();
        assert_eq!(got, [2]);
    }

    #[test]
    fn q4_k_m_table() {
        let p = |index, count| Position { index, count };
        let ft = FileType::Q4KM;
        let cases = [
            (Category::Output, p(0, 0), 4096, Q6_K),
            (Category::Output, p(0, 0), 64, Q8_0),
            (Category::Output, p(0, 0), 20, F16),
            (Category::TokenEmbd, p(0, 0), 4096, Q4_K),
            (Category::TokenEmbd, p(0, 0), 64, Q5_0),
            (Category::AttnV, p(3, 32), 4096, Q6_K),
            (Category::AttnV, p(4, 32), 4096, Q4_K),
            (Category::AttnV, p(6, 32), 4096, Q6_K),
            (Category::AttnV, p(6, 32), 64, Q8_0),
            (Category::FfnDown, p(7, 40), 14336, Q6_K),
            (Category::FfnDown, p(8, 40), 14336, Q4_K),
            (Category::FfnDown, p(8, 40), 96, Q5_0),
            (Category::Other, p(0, 0), 4096, Q4_K),
        ];
        for (cat, pos, row, want) in cases {
            assert_eq!(
                tensor_type(ft, cat, pos, row),
                want,
                "{cat:?} {pos:?} {row}"
            );
        }
    }

    #[test]
    fn small_and_legacy_file_types() {
        let p = |index, count| Position { index, count };
        let t = tensor_type;
        assert_eq!(t(FileType::Q4KS, Category::AttnV, p(3, 32), 4096), Q5_K);
        assert_eq!(t(FileType::Q4KS, Category::AttnV, p(4, 32), 4096), Q4_K);
        assert_eq!(t(FileType::Q4KS, Category::FfnDown, p(4, 40), 4096), Q5_K);
        assert_eq!(t(FileType::Q4KS, Category::FfnDown, p(5, 40), 4096), Q4_K);
        assert_eq!(t(FileType::Q4KS, Category::FfnDown, p(0, 3), 96), Q5_0);
        assert_eq!(t(FileType::Q5KS, Category::FfnDown, p(0, 40), 4096), Q5_K);
        assert_eq!(t(FileType::Q5KS, Category::FfnDown, p(0, 40), 96), Q5_1);
        assert_eq!(t(FileType::Q5KM, Category::FfnDown, p(0, 40), 4096), Q6_K);
        assert_eq!(t(FileType::Q6K, Category::Output, p(0, 0), 64), Q8_0);
        assert_eq!(t(FileType::Q6K, Category::Other, p(0, 0), 64), Q8_0);
        assert_eq!(t(FileType::Q4_1, Category::Output, p(0, 0), 4096), Q6_K);
        assert_eq!(t(FileType::Q4_1, Category::Output, p(0, 0), 64), Q8_0);
        assert_eq!(t(FileType::Q5_0, Category::FfnDown, p(0, 40), 4096), Q5_0);
        assert_eq!(t(FileType::Q5_1, Category::Other, p(0, 0), 20), F16);
        // Uniform types: Q4_0 stays Q4_0 on the output head, Q8_0 likewise (as llama.cpp).
        assert_eq!(t(FileType::Q4_0, Category::Output, p(0, 0), 4096), Q4_0);
        assert_eq!(t(FileType::Q8_0, Category::Output, p(0, 0), 4096), Q8_0);
        assert_eq!(t(FileType::F16, Category::Output, p(0, 0), 20), F16);
    }

    #[test]
    fn names_ids_and_categories() {
        for f in FileType::ALL {
            assert_eq!(FileType::parse(&f.name().to_uppercase()), Some(f));
        }
        let ids: Vec<u32> = FileType::ALL.iter().map(|f| f.llama_ftype()).collect();
        assert_eq!(ids, [0, 1, 32, 7, 18, 17, 16, 9, 8, 15, 14, 3, 2]);
        assert_eq!(
            Category::of_name("blk.0.ffn_down.weight"),
            Category::FfnDown
        );
        assert_eq!(Category::of_name("blk.0.attn_qkv.weight"), Category::AttnV);
        assert_eq!(Category::of_name("blk.0.ffn_up.weight"), Category::Other);
        assert_eq!(Category::of_name("token_embd.weight"), Category::TokenEmbd);
        assert_eq!(Category::of_name("v.output.weight"), Category::Other);
    }
}
