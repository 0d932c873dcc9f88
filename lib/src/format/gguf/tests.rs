use super::*;
use crate::format::gguf::writer::GgufWriter;

/// A small file with every value type, a nested array and three tensors.
pub(crate) fn sample_file() -> Vec<u8> {
    let mut w = GgufWriter::new("test");
    w.add("u8", Value::U8(200)).unwrap();
    w.add("i8", Value::I8(-5)).unwrap();
    w.add("u16", Value::U16(60000)).unwrap();
    w.add("i16", Value::I16(-30000)).unwrap();
    w.add("u32", Value::U32(4_000_000_000)).unwrap();
    w.add("i32", Value::I32(-2_000_000_000)).unwrap();
    w.add("f32", Value::F32(1.5)).unwrap();
    w.add("bool", Value::Bool(true)).unwrap();
    w.add("string", Value::String("héllo".into())).unwrap();
    w.add("u64", Value::U64(u64::MAX)).unwrap();
    w.add("i64", Value::I64(i64::MIN)).unwrap();
    w.add("f64", Value::F64(-2.25)).unwrap();
    w.add(
        "arr.str",
        Value::Array(Array::String(vec!["a".into(), "".into(), "ccc".into()])),
    )
    .unwrap();
    w.add("arr.i32", Value::Array(Array::I32(vec![1, -2, 3])))
        .unwrap();
    w.add("arr.bool", Value::Array(Array::Bool(vec![true, false])))
        .unwrap();
    w.add(
        "arr.nested",
        Value::Array(Array::Array(vec![
            Array::I32(vec![1, 1]),
            Array::I32(vec![1, 2]),
            Array::Array(vec![Array::F64(vec![0.5])]),
        ])),
    )
    .unwrap();
    w.add("arr.empty", Value::Array(Array::U8(vec![]))).unwrap();
    w.add_tensor("a", &[2, 3], GgmlType::F32).unwrap();
    w.add_tensor("b", &[1, 64], GgmlType::Q8_0).unwrap();
    w.add_tensor("c", &[5], GgmlType::BF16).unwrap();
    let mut out = Vec::new();
    w.write::<_, GgufError>(&mut out, |i, t, sink| {
        let bytes: Vec<u8> = (0..t.size)
            .map(|k| (k as u8).wrapping_mul(7).wrapping_add(i as u8))
            .collect();
        let bytes = if t.name == "a" {
            bytemuck::cast_slice(&[0f32, 1., 2., 3., 4., 5.]).to_vec()
        } else {
            bytes
        };
        sink.write_all(&bytes)?;
        Ok(())
    })
    .unwrap();
    out
}

use std::io::Write;

#[test]
fn roundtrip_all_value_types() {
    let bytes = sample_file();
    let f = GgufFile::from_bytes(bytes.clone()).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.metadata()[0].0, "general.architecture");
    assert_eq!(f.get("u8"), Some(&Value::U8(200)));
    assert_eq!(f.get("i8"), Some(&Value::I8(-5)));
    assert_eq!(f.get("u16"), Some(&Value::U16(60000)));
    assert_eq!(f.get("i16"), Some(&Value::I16(-30000)));
    assert_eq!(f.get("u32"), Some(&Value::U32(4_000_000_000)));
    assert_eq!(f.get("i32"), Some(&Value::I32(-2_000_000_000)));
    assert_eq!(f.get("f32"), Some(&Value::F32(1.5)));
    assert_eq!(f.get("bool"), Some(&Value::Bool(true)));
    assert_eq!(f.get("string").and_then(Value::as_str), Some("héllo"));
    assert_eq!(f.get("u64"), Some(&Value::U64(u64::MAX)));
    assert_eq!(f.get("i64"), Some(&Value::I64(i64::MIN)));
    assert_eq!(f.get("f64"), Some(&Value::F64(-2.25)));
    assert_eq!(
        f.get("arr.str")
            .and_then(Value::as_array)
            .and_then(Array::as_strings),
        Some(&["a".to_string(), "".to_string(), "ccc".to_string()][..])
    );
    assert_eq!(
        f.get("arr.nested"),
        Some(&Value::Array(Array::Array(vec![
            Array::I32(vec![1, 1]),
            Array::I32(vec![1, 2]),
            Array::Array(vec![Array::F64(vec![0.5])]),
        ])))
    );
    assert_eq!(
        f.get("arr.empty").and_then(Value::as_array).map(Array::len),
        Some(0)
    );
    assert_eq!(f.tensors().len(), 3);
    let a = f.tensor("a").unwrap();
    assert_eq!(a.info.shape(), vec![2, 3]);
    assert_eq!(a.info.dims, vec![3, 2]);
    assert_eq!(a.as_f32().unwrap(), &[0., 1., 2., 3., 4., 5.]);
    assert!(a.as_f16().is_err());
    let b = f.tensor("b").unwrap();
    assert_eq!(b.info.size, 68);
    assert_eq!(b.as_blocks::<crate::quant::BlockQ8_0>().unwrap().len(), 2);
    assert_eq!(f.tensor("c").unwrap().as_bf16().unwrap().len(), 5);
    for t in f.tensors() {
        assert_eq!(t.offset % 32, 0);
        assert_eq!((f.data_start() + t.offset) % 32, 0);
    }
    // The writer's size prediction is exact.
    assert_eq!(bytes.len() as u64, f.file_len());
}

#[test]
fn writer_predicts_file_size_and_pads() {
    let mut w = GgufWriter::new("x");
    w.add("general.alignment", Value::U32(64)).unwrap();
    w.add_tensor("t", &[3], GgmlType::F32).unwrap();
    w.add_tensor("u", &[7], GgmlType::F16).unwrap();
    let mut out = Vec::new();
    let n = w
        .write::<_, GgufError>(&mut out, |_, t, s| {
            s.write_all(&vec![1u8; t.size as usize])?;
            Ok(())
        })
        .unwrap();
    assert_eq!(n, out.len() as u64);
    assert_eq!(w.file_size(), out.len() as u64);
    let f = GgufFile::from_bytes(out).unwrap();
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.tensor_info("u").unwrap().offset, 64);
    assert_eq!(f.data_start() % 64, 0);
}

#[test]
fn writer_refuses_wrong_sizes_and_duplicates() {
    let mut w = GgufWriter::new("x");
    assert!(w.add("general.architecture", Value::U8(1)).is_err());
    assert!(w.add_tensor("q", &[4, 33], GgmlType::Q8_0).is_err());
    assert!(w.add_tensor("z", &[0, 4], GgmlType::F32).is_err());
    assert!(w
        .add_tensor("big", &[1, 2, 3, 4, 5], GgmlType::F32)
        .is_err());
    w.add_tensor("t", &[4], GgmlType::F32).unwrap();
    assert!(w.add_tensor("t", &[4], GgmlType::F32).is_err());
    let r = w.write::<_, GgufError>(Vec::new(), |_, _, s| {
        s.write_all(&[0u8; 8])?;
        Ok(())
    });
    assert!(matches!(r, Err(GgufError::Writer(_))), "{r:?}");
    let r = w.write::<_, GgufError>(Vec::new(), |_, _, s| {
        s.write_all(&[0u8; 20])?;
        Ok(())
    });
    assert!(r.is_err());
}

#[test]
fn reads_version_2() {
    let mut bytes = sample_file();
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(f.version, 2);
}

fn err(bytes: Vec<u8>) -> GgufError {
    GgufFile::from_bytes(bytes).expect_err("must fail")
}

#[test]
fn bad_magic_version_endianness() {
    let mut b = sample_file();
    b[0] = b'X';
    assert!(matches!(err(b), GgufError::BadMagic(_)));
    let mut b = sample_file();
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(matches!(err(b), GgufError::UnsupportedVersion(1)));
    let mut b = sample_file();
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert!(matches!(err(b), GgufError::BigEndian));
    assert!(matches!(err(vec![]), GgufError::Truncated { .. }));
}

#[test]
fn huge_counts_are_refused_before_allocating() {
    let mut b = sample_file();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes()); // tensor count
    assert!(matches!(err(b), GgufError::CountTooLarge { .. }));
    let mut b = sample_file();
    b[16..24].copy_from_slice(&(1u64 << 60).to_le_bytes()); // kv count
    assert!(matches!(err(b), GgufError::CountTooLarge { .. }));
    // First key's length.
    let mut b = sample_file();
    b[24..32].copy_from_slice(&(1u64 << 62).to_le_bytes());
    assert!(matches!(err(b), GgufError::Truncated { .. }));
}

#[test]
fn every_truncation_is_an_error() {
    let b = sample_file();
    let f = GgufFile::from_bytes(b.clone()).unwrap();
    let data_end = f
        .tensors()
        .iter()
        .map(|t| f.data_start() + t.offset + t.size)
        .max()
        .unwrap();
    for cut in 0..data_end as usize {
        let r = GgufFile::from_bytes(b[..cut].to_vec());
        assert!(r.is_err(), "truncated at {cut} parsed");
    }
}

#[test]
fn tensor_out_of_range_and_misaligned() {
    let b = sample_file();
    let f = GgufFile::from_bytes(b.clone()).unwrap();
    // Patch tensor "c"'s offset (the last tensor info's last 8 bytes): find it by searching for
    // the name followed by its fields.
    let needle = b"\x01\x00\x00\x00\x00\x00\x00\x00c";
    let pos = b.windows(needle.len()).position(|w| w == needle).unwrap() + needle.len();
    // name "c" | n_dims u32 | dim u64 | type u32 | offset u64
    let off_pos = pos + 4 + 8 + 4;
    let orig = u64::from_le_bytes(b[off_pos..off_pos + 8].try_into().unwrap());
    assert_eq!(orig, f.tensor_info("c").unwrap().offset);
    let mut m = b.clone();
    m[off_pos..off_pos + 8].copy_from_slice(&(orig + 1).to_le_bytes());
    assert!(matches!(err(m), GgufError::Misaligned { .. }));
    let mut m = b.clone();
    m[off_pos..off_pos + 8].copy_from_slice(&(orig + 4096).to_le_bytes());
    assert!(matches!(err(m), GgufError::OutOfRange { .. }));
    let mut m = b.clone();
    m[off_pos..off_pos + 8].copy_from_slice(&(u64::MAX - 31).to_le_bytes());
    assert!(matches!(err(m), GgufError::OutOfRange { .. }));
    // Unknown type id.
    let mut m = b.clone();
    m[off_pos - 4..off_pos].copy_from_slice(&4u32.to_le_bytes());
    assert!(matches!(err(m), GgufError::UnknownTensorType { id: 4, .. }));
    // Dimension overflow and zero dims.
    let mut m = b.clone();
    m[pos + 4..pos + 12].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(err(m), GgufError::BadDims { .. }));
    let mut m = b.clone();
    m[pos + 4..pos + 12].copy_from_slice(&0u64.to_le_bytes());
    assert!(matches!(err(m), GgufError::BadDims { .. }));
    // Too many dimensions.
    let mut m = b.clone();
    m[pos..pos + 4].copy_from_slice(&9u32.to_le_bytes());
    assert!(matches!(err(m), GgufError::BadDimCount { n_dims: 9, .. }));
}

#[test]
fn row_length_must_fit_blocks() {
    let b = sample_file();
    // Tensor "b" is Q8_0 with dims [64, 1]; make the row length 63.
    let needle = b"\x01\x00\x00\x00\x00\x00\x00\x00b";
    let pos = b.windows(needle.len()).position(|w| w == needle).unwrap() + needle.len();
    let mut m = b.clone();
    m[pos + 4..pos + 12].copy_from_slice(&63u64.to_le_bytes());
    assert!(matches!(err(m), GgufError::BadRowLength { .. }));
}

#[test]
fn bad_alignment_and_duplicates() {
    let mut w = GgufWriter::new("x");
    w.add("general.alignment", Value::U32(64)).unwrap();
    let mut out = Vec::new();
    w.write::<_, GgufError>(&mut out, |_, _, _| Ok(())).unwrap();
    // The alignment value follows its key and its type id.
    let key = b"general.alignment\x04\x00\x00\x00";
    let p = out.windows(key.len()).position(|w| w == key).unwrap() + key.len();
    let mut m = out.clone();
    m[p..p + 4].copy_from_slice(&48u32.to_le_bytes());
    assert!(matches!(err(m), GgufError::BadAlignment(_)));
    let mut m = out.clone();
    m[p..p + 4].copy_from_slice(&0u32.to_le_bytes());
    assert!(matches!(err(m), GgufError::BadAlignment(_)));

    // Two keys with the same name, written by hand.
    let mut d = Vec::new();
    d.extend_from_slice(b"GGUF");
    d.extend_from_slice(&3u32.to_le_bytes());
    d.extend_from_slice(&0u64.to_le_bytes());
    d.extend_from_slice(&2u64.to_le_bytes());
    for _ in 0..2 {
        d.extend_from_slice(&1u64.to_le_bytes());
        d.extend_from_slice(b"k");
        d.extend_from_slice(&0u32.to_le_bytes());
        d.push(7);
    }
    assert!(matches!(err(d), GgufError::DuplicateKey(_)));
}

#[test]
fn deep_nesting_and_bad_utf8() {
    let mut d = Vec::new();
    d.extend_from_slice(b"GGUF");
    d.extend_from_slice(&3u32.to_le_bytes());
    d.extend_from_slice(&0u64.to_le_bytes());
    d.extend_from_slice(&1u64.to_le_bytes());
    d.extend_from_slice(&1u64.to_le_bytes());
    d.extend_from_slice(b"k");
    d.extend_from_slice(&9u32.to_le_bytes());
    for _ in 0..20 {
        d.extend_from_slice(&9u32.to_le_bytes());
        d.extend_from_slice(&1u64.to_le_bytes());
    }
    d.extend_from_slice(&[0; 64]);
    assert!(matches!(err(d), GgufError::TooDeep { .. }));

    let mut d = Vec::new();
    d.extend_from_slice(b"GGUF");
    d.extend_from_slice(&3u32.to_le_bytes());
    d.extend_from_slice(&0u64.to_le_bytes());
    d.extend_from_slice(&1u64.to_le_bytes());
    d.extend_from_slice(&2u64.to_le_bytes());
    d.extend_from_slice(&[0xff, 0xfe]);
    d.extend_from_slice(&0u32.to_le_bytes());
    d.push(1);
    assert!(matches!(err(d), GgufError::BadUtf8 { .. }));
}
