//! Our reader and dequantization of the new block types against gguf-py: the fixture
//! `tests/fixtures/gguf_py_kquant/read.gguf` was written by gguf-py's own GGUFWriter
//! (`scripts/gguf_py_kquant_read.py`), with Q4_1/Q5_0/Q5_1 blocks from `gguf.quants.quantize`,
//! Q4_K/Q5_K/Q6_K blocks from ggml's reference quantizer, random blocks with extreme finite
//! scales, and beside each tensor `<name>.expected` = `gguf.quants.dequantize` of its bytes.
//! Every value we produce must have the same f32 bits.

use mllama::format::gguf::GgufFile;
use mllama::GgmlType;

#[test]
fn dequantization_equals_gguf_py_bit_for_bit() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gguf_py_kquant/read.gguf"
    );
    let f = GgufFile::open(path).unwrap();
    let mut per_type: Vec<(GgmlType, usize, usize)> = Vec::new();
    for t in f.tensors().iter().filter(|t| t.ty.is_quantized()) {
        let want = f.tensor(&format!("{}.expected", t.name)).unwrap();
        let want = want.as_f32().unwrap();
        assert_eq!(want.len() as u64, t.n_elements(), "{}", t.name);
        let view = f.view(t);
        view.check_scales().unwrap();
        let ours = view.to_f32_vec().unwrap();
        let same = ours
            .iter()
            .zip(want)
            .filter(|(a, b)| a.to_bits() == b.to_bits())
            .count();
        let first_bad = ours
            .iter()
            .zip(want)
            .position(|(a, b)| a.to_bits() != b.to_bits());
        assert_eq!(
            same,
            want.len(),
            "{}: first difference at {first_bad:?}",
            t.name
        );
        match per_type.iter_mut().find(|p| p.0 == t.ty) {
            Some(p) => (p.1, p.2) = (p.1 + 1, p.2 + same),
            None => per_type.push((t.ty, 1, same)),
        }
    }
    for (ty, tensors, values) in &per_type {
        eprintln!("{ty}: {tensors} tensors, {values} values bit-identical to gguf-py");
    }
    let types: Vec<GgmlType> = per_type.iter().map(|p| p.0).collect();
    use GgmlType as T;
    assert_eq!(
        types,
        [T::Q4_1, T::Q5_0, T::Q5_1, T::Q4_K, T::Q5_K, T::Q6_K]
    );
    assert!(per_type.iter().all(|p| p.1 == 2 && p.2 >= 7168));
}
