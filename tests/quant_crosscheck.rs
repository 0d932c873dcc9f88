//! Our Q8_0/Q4_0 quantization against PyPI `gguf.quants` (ggml's reference rounding), from
//! vectors written by `scripts/gguf_crosscheck.py`: random rows at several scales, adversarial
//! rounding and tie cases, tiny and huge values, rows of the fixture model, and random block bytes.

use mllama::quant::{convert_f32_serial, dequantize};
use mllama::GgmlType;
use safetensors::SafeTensors;

fn load() -> Vec<u8> {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gguf_crosscheck/quant_vectors.safetensors"
    );
    std::fs::read(p).expect("tests/fixtures/gguf_crosscheck/quant_vectors.safetensors")
}

fn f32s(st: &SafeTensors, name: &str) -> (Vec<f32>, Vec<usize>) {
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    let v = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (v, t.shape().to_vec())
}

fn bytes(st: &SafeTensors, name: &str) -> Vec<u8> {
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::U8);
    t.data().to_vec()
}

#[test]
fn quantize_is_byte_identical_to_gguf_py() {
    let raw = load();
    let st = SafeTensors::deserialize(&raw).unwrap();
    let (x, shape) = f32s(&st, "input");
    let row = shape[1];
    assert!(shape[0] >= 20);
    for (name, ty) in [("q8_0", GgmlType::Q8_0), ("q4_0", GgmlType::Q4_0)] {
        let want = bytes(&st, name);
        let mut ours = vec![0u8; want.len()];
        convert_f32_serial(ty, &x, row, &mut ours).unwrap();
        let bs = ty.type_size();
        let diff: Vec<usize> = (0..want.len() / bs)
            .filter(|&b| want[b * bs..(b + 1) * bs] != ours[b * bs..(b + 1) * bs])
            .collect();
        assert!(
            diff.is_empty(),
            "{name}: {} of {} blocks differ, first {:?}",
            diff.len(),
            want.len() / bs,
            &diff[..diff.len().min(5)]
        );
    }
}

#[test]
fn dequantize_equals_gguf_py() {
    let raw = load();
    let st = SafeTensors::deserialize(&raw).unwrap();
    for (name, ty) in [("q8_0", GgmlType::Q8_0), ("q4_0", GgmlType::Q4_0)] {
        for src in [name.to_string(), format!("{name}_random_bytes")] {
            let q = bytes(&st, &src);
            let (want, _) = f32s(&st, &format!("{src}_dequant"));
            let mut ours = vec![0f32; want.len()];
            dequantize(ty, &q, &mut ours).unwrap();
            for (i, (a, b)) in ours.iter().zip(&want).enumerate() {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "{src}[{i}]: ours {a} gguf-py {b}"
                );
            }
        }
    }
}

#[test]
fn block_struct_sizes_match_the_type_table() {
    // The type table (`format::dtype`, the bottom layer) and the block structs (`quant`) agree.
    use mllama::quant::{BlockQ4_0, BlockQ8_0};
    use mllama::GgmlType;
    assert_eq!(std::mem::size_of::<BlockQ8_0>(), GgmlType::Q8_0.type_size());
    assert_eq!(std::mem::size_of::<BlockQ4_0>(), GgmlType::Q4_0.type_size());
}
