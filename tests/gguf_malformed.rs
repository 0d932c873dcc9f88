//! Malformed GGUF files: truncations, random byte flips, huge counts and dimensions. The reader
//! must return an error (never panic, never allocate by an unchecked count), and whatever it does
//! accept must be safe to use (views, dequantization, `info`).

use std::io::Write;

use mllama::format::gguf::{Array, GgufFile, GgufWriter, Value};
use mllama::{GgmlType, GgufError};

/// A file shaped like a small mllama GGUF: many keys (tokenizer arrays, a nested array), tensors
/// of every storable type.
fn realistic() -> Vec<u8> {
    let mut w = GgufWriter::new("mllama");
    w.add("general.name", Value::String("malformed-test".into()))
        .unwrap();
    w.add("mllama.block_count", Value::U32(2)).unwrap();
    w.add(
        "mllama.attention.cross_attention_layers",
        Value::Array(Array::I32(vec![1])),
    )
    .unwrap();
    w.add(
        "mllama.vision.image_mean",
        Value::Array(Array::F32(vec![0.48, 0.45, 0.40])),
    )
    .unwrap();
    w.add(
        "test.nested",
        Value::Array(Array::Array(vec![
            Array::I32(vec![1, 2]),
            Array::String(vec!["x".into()]),
        ])),
    )
    .unwrap();
    let tokens: Vec<String> = (0..300).map(|i| format!("tok{i}")).collect();
    w.add("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)))
        .unwrap();
    w.add(
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(vec![1; 300])),
    )
    .unwrap();
    w.add(
        "tokenizer.ggml.merges",
        Value::Array(Array::String(vec!["t o".into(), "to k".into()])),
    )
    .unwrap();
    w.add("tokenizer.ggml.bos_token_id", Value::U32(1)).unwrap();
    w.add(
        "tokenizer.chat_template",
        Value::String("{{ bos_token }}".into()),
    )
    .unwrap();
    let specs: [(&str, &[usize], GgmlType); 6] = [
        ("token_embd.weight", &[8, 64], GgmlType::Q4_0),
        ("blk.0.attn_q.weight", &[64, 64], GgmlType::Q8_0),
        ("blk.0.attn_norm.weight", &[64], GgmlType::F32),
        ("v.patch_embd.weight", &[4, 3, 14, 14], GgmlType::F16),
        ("mm.0.weight", &[64, 32], GgmlType::BF16),
        ("output.weight", &[8, 64], GgmlType::Q8_0),
    ];
    for (name, shape, ty) in specs {
        w.add_tensor(name, shape, ty).unwrap();
    }
    let mut out = Vec::new();
    w.write::<_, GgufError>(&mut out, |i, t, sink| {
        // Valid f16 scales in every block: fill with a small repeating pattern.
        let bytes: Vec<u8> = (0..t.size)
            .map(|k| {
                if k % 2 == 1 {
                    0x3c
                } else {
                    (k as u8) ^ (i as u8)
                }
            })
            .collect();
        sink.write_all(&bytes)?;
        Ok(())
    })
    .unwrap();
    out
}

/// Use everything the reader hands out, as a model loader and `mllama info` would.
fn exercise(f: &GgufFile) {
    let _ = mllama::models::info::summary(f, true);
    for t in f.tensors() {
        let v = f.view(t);
        assert_eq!(v.data.len() as u64, t.size);
        if t.n_elements() <= 1 << 20 {
            let _ = v.to_f32_vec();
        }
    }
    for (_, v) in f.metadata() {
        let _ = mllama::models::info::format_value(v);
    }
}

fn parse(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
    GgufFile::from_bytes(bytes)
}

#[test]
fn the_realistic_file_is_valid() {
    let f = parse(realistic()).unwrap();
    assert_eq!(f.tensors().len(), 6);
    exercise(&f);
}

#[test]
fn truncated_anywhere_is_an_error() {
    let b = realistic();
    let f = parse(b.clone()).unwrap();
    let end = f
        .tensors()
        .iter()
        .map(|t| f.data_start() + t.offset + t.size)
        .max()
        .unwrap() as usize;
    // Every offset of the header, and 200 spread over the data.
    let header = f.data_start() as usize;
    let mut cuts: Vec<usize> = (0..header).collect();
    cuts.extend((0..200).map(|k| header + k * (end - header) / 200));
    let mut n = 0;
    for cut in cuts {
        let r = parse(b[..cut].to_vec());
        assert!(
            r.is_err(),
            "file truncated at {cut} of {end} bytes was accepted"
        );
        let msg = r.unwrap_err().to_string();
        assert!(!msg.is_empty());
        n += 1;
    }
    assert!(n > 1000);
}

/// xorshift64
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_byte_flips_never_panic() {
    let b = realistic();
    let f = parse(b.clone()).unwrap();
    let header = f.data_start() as usize;
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..20_000 {
        let mut m = b.clone();
        let flips = 1 + rng.next() % 4;
        for _ in 0..flips {
            // Mostly in the header, where the structure is.
            let pos = if rng.next().is_multiple_of(8) {
                rng.next() as usize % m.len()
            } else {
                rng.next() as usize % header
            };
            m[pos] = match rng.next() % 4 {
                0 => 0xff,
                1 => 0,
                2 => m[pos] ^ (1 << (rng.next() % 8)),
                _ => rng.next() as u8,
            };
        }
        match parse(m) {
            Ok(f) => {
                exercise(&f);
                accepted += 1;
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                refused += 1;
            }
        }
    }
    assert!(refused > 1000, "only {refused} refused");
    assert!(accepted > 100, "only {accepted} accepted");
}

/// Offset of the 8-byte length/count that follows `needle` in `b`.
fn after(b: &[u8], needle: &[u8]) -> usize {
    b.windows(needle.len()).position(|w| w == needle).unwrap() + needle.len()
}

#[test]
fn huge_counts_lengths_and_dimensions() {
    let b = realistic();
    let huge = [u64::MAX, 1 << 63, 1 << 40, (b.len() as u64) * 2];
    for h in huge {
        // Tensor count, key/value count.
        for off in [8usize, 16] {
            let mut m = b.clone();
            m[off..off + 8].copy_from_slice(&h.to_le_bytes());
            let e = parse(m).unwrap_err();
            assert!(
                matches!(
                    e,
                    GgufError::CountTooLarge { .. } | GgufError::Truncated { .. }
                ),
                "{e}"
            );
        }
        // Length of the first key string.
        let mut m = b.clone();
        m[24..32].copy_from_slice(&h.to_le_bytes());
        assert!(matches!(parse(m).unwrap_err(), GgufError::Truncated { .. }));
        // Element count of the token array (type STRING = 8 follows the ARRAY type 9).
        let p = after(&b, b"tokenizer.ggml.tokens\x09\x00\x00\x00\x08\x00\x00\x00");
        let mut m = b.clone();
        m[p..p + 8].copy_from_slice(&h.to_le_bytes());
        assert!(matches!(
            parse(m).unwrap_err(),
            GgufError::CountTooLarge { .. }
        ));
        // Length of the first token string.
        let mut m = b.clone();
        m[p + 8..p + 16].copy_from_slice(&h.to_le_bytes());
        assert!(matches!(parse(m).unwrap_err(), GgufError::Truncated { .. }));
        // Count of the nested array's inner array.
        let p = after(&b, b"test.nested\x09\x00\x00\x00\x09\x00\x00\x00");
        let mut m = b.clone();
        m[p + 12..p + 20].copy_from_slice(&h.to_le_bytes());
        assert!(parse(m).is_err());
        // Each dimension of a tensor: too big for the file, or overflowing the element count.
        let p = after(&b, b"blk.0.attn_q.weight\x02\x00\x00\x00");
        for d in 0..2 {
            let mut m = b.clone();
            m[p + 8 * d..p + 8 * d + 8].copy_from_slice(&h.to_le_bytes());
            let e = parse(m).unwrap_err();
            assert!(
                matches!(
                    e,
                    GgufError::BadDims { .. }
                        | GgufError::OutOfRange { .. }
                        | GgufError::BadRowLength { .. }
                ),
                "{e}"
            );
        }
    }
    // A dimension count of 5 and of 0.
    let p = after(&b, b"mm.0.weight");
    for n in [0u32, 5, u32::MAX] {
        let mut m = b.clone();
        m[p..p + 4].copy_from_slice(&n.to_le_bytes());
        assert!(matches!(
            parse(m).unwrap_err(),
            GgufError::BadDimCount { .. }
        ));
    }
    // An unknown tensor type and an unknown metadata value type.
    let mut m = b.clone();
    let ty_pos = p + 4 + 16; // after n_dims and two dims
    m[ty_pos..ty_pos + 4].copy_from_slice(&99u32.to_le_bytes());
    assert!(matches!(
        parse(m).unwrap_err(),
        GgufError::UnknownTensorType { id: 99, .. }
    ));
    let p = after(&b, b"general.name");
    let mut m = b.clone();
    m[p..p + 4].copy_from_slice(&13u32.to_le_bytes());
    assert!(matches!(
        parse(m).unwrap_err(),
        GgufError::UnknownValueType { id: 13, .. }
    ));
}

#[test]
fn cli_info_reports_errors_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.gguf");
    std::fs::write(&good, realistic()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mllama"))
        .args([
            "info".as_ref(),
            good.as_os_str(),
            "--keys".as_ref(),
            "--tensors".as_ref(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("architecture:  mllama"), "{text}");
    assert!(text.contains("vocabulary 300 tokens"), "{text}");
    assert!(text.contains("Q4_0"), "{text}");

    let mut bad = realistic();
    bad.truncate(bad.len() / 2);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (bad, "lies outside the file"),
        (b"PK\x03\x04 this is a zip".to_vec(), "not a GGUF file"),
        (vec![], "file is truncated"),
    ];
    for (i, (bytes, needle)) in cases.into_iter().enumerate() {
        let p = dir.path().join(format!("bad{i}.gguf"));
        std::fs::write(&p, bytes).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mllama"))
            .args(["info".as_ref(), p.as_os_str()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(needle) && err.contains(&format!("bad{i}.gguf")),
            "{err}"
        );
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mllama"))
        .args(["info", "/no/such/file.gguf"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("/no/such/file.gguf") && err.contains("No such file"),
        "{err}"
    );
}
