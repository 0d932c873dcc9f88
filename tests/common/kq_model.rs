//! Tiny mllama GGUFs built in memory from one set of random f32 weights, with the text matrices
//! stored in any type (the K-quants need rows that are multiples of 256, which the HF fixture
//! checkpoints do not have). Everything else is F32, so two files built with the same seed differ
//! only in how the text matrices are rounded.
#![allow(dead_code)]

use std::io::Write;

use mllama::format::gguf::{GgufFile, GgufWriter, Value};
use mllama::models::mllama::spec::ModelSpec;
use mllama::models::mllama::tensors::{self, Kind, Storage, Tensor};
use mllama::{GgmlType, GgufError};

/// [`ModelSpec::tiny`] with text rows of 256 and 512 values: hidden 256 (4 heads of 64, 2 KV
/// heads), MLP 512, 3 layers with cross-attention at layer 1.
pub fn spec256() -> ModelSpec {
    ModelSpec {
        hidden: 256,
        ffn: 512,
        n_heads: 4,
        n_kv_heads: 2,
        n_layers: 3,
        cross_layers: vec![1],
        ..ModelSpec::tiny()
    }
}

/// xorshift64*, deterministic per tensor.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (v >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// The f32 values of tensor `i` (same for every storage type): norms near 1, small gates and
/// biases, matrices uniform in ±1/√cols.
pub fn values(i: usize, t: &Tensor, seed: u64) -> Vec<f32> {
    let n: usize = t.shape.iter().product();
    let mut r = Rng((seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
    let (base, scale) = match t.decl.kind {
        Kind::Norm => (1.0, 0.05),
        Kind::Gate => (0.0, 0.5),
        Kind::RopeFactors => (1.0, 0.0),
        Kind::Bias | Kind::Table => (0.0, 0.02),
        _ => (0.0, 1.0 / (*t.shape.last().unwrap() as f32).sqrt()),
    };
    (0..n).map(|_| base + scale * r.unit()).collect()
}

/// The storage type of `t` when text matrices are `text`.
pub fn storage_type(t: &Tensor, text: GgmlType) -> GgmlType {
    match t.storage() {
        Storage::TextMatrix => text,
        _ => GgmlType::F32,
    }
}

/// The bytes of a GGUF of `spec` with text matrices (embedding and output head included) stored
/// as `text`, weights from `seed`; `edit(name, bytes)` may alter each tensor's stored bytes.
pub fn gguf_bytes_with(
    spec: &ModelSpec,
    text: GgmlType,
    seed: u64,
    edit: impl FnMut(&str, &mut Vec<u8>),
) -> Vec<u8> {
    gguf_bytes_by(spec, |t| storage_type(t, text), seed, edit)
}

/// [`gguf_bytes_with`] with each tensor's type chosen by `type_of`.
pub fn gguf_bytes_by(
    spec: &ModelSpec,
    type_of: impl Fn(&Tensor) -> GgmlType,
    seed: u64,
    mut edit: impl FnMut(&str, &mut Vec<u8>),
) -> Vec<u8> {
    let mut w = GgufWriter::new("mllama");
    w.add("general.name", Value::String("kq-test".into()))
        .unwrap();
    spec.write_metadata(&mut w).unwrap();
    let list = tensors::expand(&spec.dims());
    for t in &list {
        w.add_tensor(&t.name, &t.shape, type_of(t)).unwrap();
    }
    let mut out = Vec::new();
    w.write::<_, GgufError>(&mut out, |i, info, sink| {
        let t = &list[i];
        let v = values(i, t, seed);
        let mut bytes = vec![0u8; info.size as usize];
        mllama::quant::convert_f32(info.ty, &v, *t.shape.last().unwrap(), &mut bytes).unwrap();
        edit(&t.name, &mut bytes);
        sink.write_all(&bytes)?;
        Ok(())
    })
    .unwrap();
    out
}

/// [`gguf_bytes_with`] without edits.
pub fn gguf_bytes(spec: &ModelSpec, text: GgmlType, seed: u64) -> Vec<u8> {
    gguf_bytes_with(spec, text, seed, |_, _| {})
}

/// Parse GGUF bytes (panics on a parse error: for files the test built).
pub fn parse(bytes: Vec<u8>) -> GgufFile {
    GgufFile::from_bytes(bytes).unwrap()
}

/// A small model (hidden 64, MLP 256, vocabulary 64) whose text matrices use every new type:
/// `ffn_down` (rows of 256) Q4_K, Q5_K, Q6_K by layer, the other text matrices Q4_1, Q5_0, Q5_1
/// in turn; vision F16 with one 28-pixel tile; about 150 KB, for the GGUF fuzz seeds.
pub fn mixed_seed_bytes() -> Vec<u8> {
    let spec = ModelSpec {
        vocab_size: 64,
        embedding_rows: 72,
        image_token: 64,
        ffn: 256,
        n_layers: 3,
        cross_layers: vec![1],
        v_local: 2,
        v_global: 1,
        v_taps: vec![0, 1],
        v_ffn: 64,
        image_size: 28,
        max_tiles: 1,
        aspect_ratios: vec![(1, 1)],
        ..ModelSpec::tiny()
    };
    let k = [GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K];
    let legacy = [GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1];
    let counter = std::cell::Cell::new(0usize);
    gguf_bytes_by(
        &spec,
        |t| {
            match t.storage() {
                Storage::TextMatrix => {}
                Storage::Small => return GgmlType::F32,
                _ => return GgmlType::F16,
            }
            let layer = t.block.map_or(0, |b| b.index);
            if t.name.ends_with("ffn_down.weight") {
                return k[layer % 3];
            }
            counter.set(counter.get() + 1);
            legacy[counter.get() % 3]
        },
        11,
        |_, _| {},
    )
}
