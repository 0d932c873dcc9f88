//! Bad K-quant (and legacy Q4_1/Q5_0/Q5_1) tensors: a row length that is not a whole number of
//! blocks, data cut inside a (super-)block, and non-finite f16 scales. Each is a typed error whose
//! one-line message names the tensor; nothing panics. Q8_0/Q4_0 follow the same policy.

#[path = "common/kq_model.rs"]
mod kq_model;

use std::io::Write;

use half::f16;
use mllama::format::gguf::{GgufFile, GgufWriter};
use mllama::{Error, GgmlType, GgufError, Model};

/// The types added for issue 12.
const NEW_TYPES: [GgmlType; 6] = [
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// Every block type the runtime computes with.
const BLOCK_TYPES: [GgmlType; 8] = [
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

const NAME: &str = "blk.0.attn_q.weight";

/// A GGUF holding one `[2, 2·block]` tensor of `ty` named [`NAME`], with zero bytes.
fn one_tensor(ty: GgmlType) -> Vec<u8> {
    let mut w = GgufWriter::new("mllama");
    w.add_tensor(NAME, &[2, 2 * ty.block_size()], ty).unwrap();
    let mut out = Vec::new();
    w.write::<_, GgufError>(&mut out, |_, t, sink| {
        sink.write_all(&vec![0u8; t.size as usize])?;
        Ok(())
    })
    .unwrap();
    out
}

/// Byte position of the first dimension (the row length) of [`NAME`] in the tensor table.
fn row_len_pos(file: &[u8]) -> usize {
    let name = NAME.as_bytes();
    let at = file.windows(name.len()).position(|w| w == name).unwrap();
    at + name.len() + 4 // after the name, a u32 dimension count
}

fn assert_one_line(e: &dyn std::fmt::Display, needle: &str) -> String {
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "{msg}");
    assert!(msg.contains(needle), "{msg:?} does not name {needle:?}");
    msg
}

#[test]
fn row_length_not_a_whole_number_of_blocks_is_refused() {
    for ty in NEW_TYPES {
        let block = ty.block_size();
        // K-types: 288 is a multiple of 32 but not of 256; legacy: 48 is not a multiple of 32.
        let bad_len = if block == 256 { 288u64 } else { 48 };
        let mut b = one_tensor(ty);
        let pos = row_len_pos(&b);
        assert_eq!(b[pos..pos + 8], (2 * block as u64).to_le_bytes());
        b[pos..pos + 8].copy_from_slice(&bad_len.to_le_bytes());
        let e = GgufFile::from_bytes(b).unwrap_err();
        match &e {
            GgufError::BadRowLength {
                name,
                row_len,
                ty: t,
                block: bs,
            } => assert_eq!(
                (name.as_str(), *row_len, *t, *bs),
                (NAME, bad_len, ty, block)
            ),
            other => panic!("{ty}: unexpected {other:?}"),
        }
        let msg = assert_one_line(&e, NAME);
        assert!(msg.contains(&format!("block size {block}")), "{msg}");
    }
}

#[test]
fn data_cut_inside_a_block_is_refused() {
    for ty in NEW_TYPES {
        let full = one_tensor(ty);
        let f = GgufFile::from_bytes(full.clone()).unwrap();
        let end = (f.data_start() + f.tensors()[0].offset + f.tensors()[0].size) as usize;
        // Cut half a block, then one byte, off the tensor's data (the writer pads the file after
        // it): the last (super-)block is incomplete.
        for cut in [ty.type_size() / 2, 1] {
            let b = full[..end - cut].to_vec();
            let e = GgufFile::from_bytes(b).unwrap_err();
            match &e {
                GgufError::OutOfRange {
                    name,
                    end,
                    file_len,
                    ..
                } => {
                    assert_eq!(name, NAME);
                    assert_eq!(end - file_len, cut as u64, "{ty}");
                }
                other => panic!("{ty}: unexpected {other:?}"),
            }
            assert_one_line(&e, NAME);
        }
    }
}

#[test]
fn a_truncated_k_quant_model_file_names_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    for ty in [GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K] {
        let b = kq_model::gguf_bytes(&kq_model::spec256(), ty, 1);
        let f = GgufFile::from_bytes(b.clone()).unwrap();
        // The tensor whose data end last, then cut inside its last block.
        let last = f
            .tensors()
            .iter()
            .max_by_key(|t| t.offset + t.size)
            .unwrap()
            .clone();
        let end = (f.data_start() + last.offset + last.size) as usize;
        let path = dir.path().join(format!("{ty}.gguf"));
        std::fs::write(&path, &b[..end - 3]).unwrap();
        match Model::load(&path) {
            Err(e @ Error::Gguf { .. }) => {
                let Error::Gguf { source, .. } = &e else {
                    unreachable!()
                };
                assert!(matches!(source, GgufError::OutOfRange { name, .. } if *name == last.name));
                let msg = assert_one_line(&e, &last.name);
                assert!(msg.starts_with(&path.display().to_string()), "{msg}");
            }
            other => panic!("{ty}: unexpected {:?}", other.err()),
        }
    }
}

/// Set field `field` (byte offset `off`) of block `blk` of the tensor's bytes to `v`.
fn poke(bytes: &mut [u8], ty: GgmlType, blk: usize, off: usize, v: f16) {
    let at = blk * ty.type_size() + off;
    bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn non_finite_scales_are_refused_at_load_naming_the_tensor() {
    let spec = kq_model::spec256();
    let target = "blk.2.ffn_down.weight"; // [256, 512]
    let mut checked = 0;
    for ty in BLOCK_TYPES {
        // The unedited file loads: the scan passes every finite scale.
        let good = kq_model::parse(kq_model::gguf_bytes(&spec, ty, 3));
        Model::from_gguf(good).unwrap_or_else(|e| panic!("{ty}: {e}"));
        let per_row = 512 / ty.block_size();
        let fields = mllama::quant::scales::fields(ty).unwrap();
        for (k, &(off, field)) in fields.iter().enumerate() {
            for (v, want) in [(f16::NAN, f32::NAN), (f16::INFINITY, f32::INFINITY)] {
                let (row, blk) = (7 + k, per_row - 1);
                let bytes = kq_model::gguf_bytes_with(&spec, ty, 3, |name, b| {
                    if name == target {
                        poke(b, ty, row * per_row + blk, off, v);
                    }
                });
                let e = Model::from_gguf(kq_model::parse(bytes)).err().unwrap();
                let Error::Gguf {
                    source:
                        GgufError::NonFiniteScale {
                            name,
                            ty: t,
                            row: r,
                            block: b,
                            field: f,
                            value,
                        },
                    ..
                } = &e
                else {
                    panic!("{ty} {field}: unexpected {e:?}");
                };
                assert_eq!(
                    (name.as_str(), *t, *r, *b, *f),
                    (target, ty, row as u64, blk as u64, field)
                );
                assert_eq!(value.is_nan(), want.is_nan());
                assert!(want.is_nan() || *value == want);
                let msg = assert_one_line(&e, target);
                assert!(msg.contains("non-finite") && msg.contains(field), "{msg}");
                checked += 1;
            }
        }
    }
    // Two values for each of the 12 scale fields of the 8 block types.
    assert_eq!(checked, 24);
}

#[test]
fn a_non_finite_scale_in_the_embedding_table_is_refused() {
    // Embedding rows are looked up, not multiplied: only the load-time scan can catch them.
    let spec = kq_model::spec256();
    for ty in [GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q5_1] {
        let off = mllama::quant::scales::fields(ty).unwrap()[0].0;
        let bytes = kq_model::gguf_bytes_with(&spec, ty, 5, |name, b| {
            if name == "token_embd.weight" {
                let last = b.len() / ty.type_size() - 1;
                poke(b, ty, last, off, f16::NEG_INFINITY);
            }
        });
        let e = Model::from_gguf(kq_model::parse(bytes)).err().unwrap();
        assert!(
            matches!(&e, Error::Gguf { source: GgufError::NonFiniteScale { name, row, .. }, .. }
                if name == "token_embd.weight" && *row == spec.embedding_rows as u64 - 1),
            "{ty}: {e:?}"
        );
        assert_one_line(&e, "token_embd.weight");
    }
}

/// `mllama run` on each bad Q4_K file: exit failure, one stderr line `error: <file>: ...` naming
/// the tensor.
#[test]
fn the_cli_prints_one_line_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let spec = kq_model::spec256();
    let ty = GgmlType::Q4_K;
    let target = "blk.0.attn_q.weight";
    let nan = kq_model::gguf_bytes_with(&spec, ty, 9, |name, b| {
        if name == target {
            poke(b, ty, 3, 2, f16::NAN); // dmin of block 3
        }
    });
    let mut bad_row = one_tensor(ty);
    let pos = row_len_pos(&bad_row);
    bad_row[pos..pos + 8].copy_from_slice(&300u64.to_le_bytes());
    let good = one_tensor(ty);
    let f = GgufFile::from_bytes(good.clone()).unwrap();
    let cut = &good[..(f.data_start() + f.tensors()[0].size) as usize - 1];
    for (file, bytes, needle) in [
        ("nan.gguf", &nan[..], "non-finite Q4_K scale dmin = NaN"),
        (
            "row.gguf",
            &bad_row[..],
            "row length 300 is not a multiple of the Q4_K block size 256",
        ),
        ("cut.gguf", cut, "lies outside the file"),
    ] {
        let path = dir.path().join(file);
        std::fs::write(&path, bytes).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mllama"))
            .args(["run", "-m", path.to_str().unwrap(), "-p", "hi"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let err = err.trim_end();
        assert!(!out.status.success(), "{file} accepted");
        assert_eq!(err.lines().count(), 1, "{file}: {err}");
        assert!(
            err.starts_with(&format!("error: {}: ", path.display())),
            "{err}"
        );
        let name = if file == "nan.gguf" { target } else { NAME };
        assert!(err.contains(name) && err.contains(needle), "{file}: {err}");
        eprintln!("{err}");
    }
}

/// Finite scales (accepted at load) whose values still overflow f32: the forward pass gives
/// non-finite logits, refused as an [`Error::Model`] instead of a silently sampled token.
#[test]
fn finite_weights_that_overflow_give_an_error_not_nan_answers() {
    let spec = kq_model::spec256();
    for ty in [GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q4_0] {
        // Final-norm weights of 1e33 (activations stay finite) and output-head scales of 65504:
        // the logits' products overflow.
        let off = mllama::quant::scales::fields(ty).unwrap()[0].0;
        let bytes = kq_model::gguf_bytes_with(&spec, ty, 4, |name, b| {
            if name == "output_norm.weight" {
                for v in b.chunks_exact_mut(4) {
                    v.copy_from_slice(&1e33f32.to_le_bytes());
                }
            }
            if name == "output.weight" {
                for blk in 0..b.len() / ty.type_size() {
                    poke(b, ty, blk, off, f16::MAX);
                }
            }
        });
        let m = Model::from_gguf(kq_model::parse(bytes)).unwrap();
        let mut seq = mllama::engine::sequence::Sequence::new(&m, 8, Default::default());
        let e = seq.feed(&[5, 6, 7], false).unwrap_err();
        assert!(matches!(e, Error::Model { .. }), "{ty}: {e:?}");
        let msg = assert_one_line(&e, "logits at position 2 are not finite");
        assert!(msg.contains("overflow"), "{msg}");
    }
}
