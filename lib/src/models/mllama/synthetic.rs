//! Models with random weights at exact real shapes, built in memory (no file), stored the way
//! `quantize` stores them: text matrices by the file type's per-tensor mix (the same rule,
//! [`mix::storage_types`]: e.g. `q4_k_m` gives Q6_K to `output` and to half of `attn_v` and
//! `ffn_down`), vision tower and projector in the given type (F16 for benchmarks), everything
//! small F32. For benchmarks.
//!
//! Weights are random bytes in valid blocks (every block type: random quants, scales and minima
//! with the f16 fields set to small finite values; F16/F32: small random values), so no f32 copy
//! of the model is ever made. A 90B-shaped model
//! does not fit in memory on most machines: with `distinct_layers = Some(k)` only the first `k`
//! self-attention layers and the first cross-attention layer get their own weights and the other
//! layers alias them (GGUF allows overlapping tensor data). Every layer still reads its weights
//! from DRAM on every token (one layer's weights are far larger than any cache), so decode
//! bandwidth figures stay meaningful.

use std::io::Write;

use half::f16;
use rayon::prelude::*;

use crate::format::gguf::{GgufFile, GgufWriter, MapBytes, TensorSink};
use crate::models::mllama::keys;
use crate::models::mllama::mix;
use crate::models::mllama::spec::ModelSpec;
use crate::models::mllama::tensors::{self, Block, Kind, Stack, Storage};
use crate::models::mllama::Model;
use crate::quant::mix::{fallback, FileType};
use crate::{Error, GgmlType};

/// How to build a synthetic model.
#[derive(Clone, Debug)]
pub struct SyntheticOptions {
    /// File type of the text decoder (its per-tensor mix, as `quantize -t` writes it).
    pub file_type: FileType,
    /// Storage type of the vision and projector matrices (rows that are not whole blocks fall
    /// back as in `quantize`).
    pub vision_type: GgmlType,
    /// Give only this many self layers (and one cross layer) distinct weights; `None`: all.
    pub distinct_layers: Option<usize>,
    /// Seed of the random weights (the same seed gives the same model).
    pub seed: u64,
}

/// xorshift64*: fast deterministic bytes.
struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Bytes per fill chunk for `ty`: a whole number of blocks (or elements), about 1 MB.
fn chunk_bytes(ty: GgmlType) -> usize {
    let b = ty.type_size();
    (1 << 20) / b * b
}

/// Byte offsets of a block's f16 scale fields (d, and dmin / m where the type has one).
fn scale_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q5_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q6_K => &[208],
        _ => &[],
    }
}

/// Typical |quantized value × sub-block scale| of a random block of `ty`: the f16 scale is
/// `scale / this`, so values come out of magnitude about `scale`.
fn typical_q(ty: GgmlType) -> f32 {
    match ty {
        GgmlType::Q8_0 => 127.0,
        GgmlType::Q4_0 | GgmlType::Q4_1 => 8.0,
        GgmlType::Q5_0 | GgmlType::Q5_1 => 16.0,
        GgmlType::Q4_K => 8.0 * 32.0,
        GgmlType::Q5_K => 16.0 * 32.0,
        _ => 32.0 * 64.0, // Q6_K: 6-bit quants times 8-bit scales
    }
}

/// Fill one chunk of whole blocks of `ty` with random quants and small finite f16 scales.
fn fill_blocks(ty: GgmlType, c: &mut [u8], r: &mut Rng, scale: f32) {
    let d = scale / typical_q(ty);
    for b in c.chunks_exact_mut(ty.type_size()) {
        for q in b.chunks_mut(8) {
            let x = r.next().to_le_bytes();
            q.copy_from_slice(&x[..q.len()]);
        }
        for &off in scale_fields(ty) {
            let v = f16::from_f32(d * (1.0 + 0.2 * r.unit()));
            b[off..off + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// Fill `out` with random content valid for `ty`, values of magnitude about `scale` (`base` added
/// for float types: norm weights sit near 1). `out` holds whole blocks.
fn fill(ty: GgmlType, out: &mut [u8], seed: u64, base: f32, scale: f32) {
    out.par_chunks_mut(chunk_bytes(ty))
        .enumerate()
        .for_each(|(ci, c)| {
            let mut r = Rng::new(seed ^ ((ci as u64 + 1) << 20));
            match ty {
                GgmlType::F32 => {
                    for b in c.chunks_exact_mut(4) {
                        b.copy_from_slice(&(base + scale * r.unit()).to_le_bytes());
                    }
                }
                GgmlType::F16 => {
                    for b in c.chunks_exact_mut(2) {
                        let v = f16::from_f32(base + scale * r.unit());
                        b.copy_from_slice(&v.to_le_bytes());
                    }
                }
                GgmlType::BF16 => {
                    for b in c.chunks_exact_mut(2) {
                        let v = half::bf16::from_f32(base + scale * r.unit());
                        b.copy_from_slice(&v.to_le_bytes());
                    }
                }
                _ => fill_blocks(ty, c, &mut r, scale),
            }
        });
}

/// Build the model in memory (anonymous memory, no file; no tokenizer).
///
/// # Errors
///
/// The writer's and loader's errors, e.g. [`Error::Model`] if a type cannot store the shapes.
///
/// ```
/// use mllama::models::mllama::spec::ModelSpec;
/// use mllama::models::mllama::synthetic::{build, SyntheticOptions};
/// use mllama::quant::mix::FileType;
/// use mllama::GgmlType;
///
/// # fn main() -> Result<(), mllama::Error> {
/// let opts = SyntheticOptions {
///     file_type: FileType::Q4KM,
///     vision_type: GgmlType::F16,
///     distinct_layers: None,
///     seed: 1,
/// };
/// let model = build(&ModelSpec::tiny(), &opts)?;
/// assert_eq!(model.cfg.text.hidden, 64);
/// assert!(model.tokenizer().is_err()); // no tokenizer data
/// # Ok(())
/// # }
/// ```
pub fn build(spec: &ModelSpec, opts: &SyntheticOptions) -> Result<Model, Error> {
    let mut w = GgufWriter::new(keys::ARCH);
    w.add(
        "general.name",
        crate::format::gguf::Value::String("synthetic".into()),
    )?;
    spec.write_metadata(&mut w)?;

    // Which layer's tensors a layer aliases, if any.
    let self_layers: Vec<usize> = (0..spec.n_layers)
        .filter(|i| !spec.cross_layers.contains(i))
        .collect();
    let source_layer = |i: usize| -> Option<usize> {
        let k = opts.distinct_layers?;
        if spec.cross_layers.contains(&i) {
            let first = spec.cross_layers[0];
            (i != first).then_some(first)
        } else {
            let pos = self_layers.iter().position(|&l| l == i)?;
            (pos >= k.max(1)).then(|| self_layers[pos % k.max(1)])
        }
    };
    let mut index_of = std::collections::HashMap::new();
    let tensors = tensors::expand(&spec.dims());
    let text_types = mix::storage_types(&tensors, spec.n_layers, opts.file_type, false);
    for (t, &text_ty) in tensors.iter().zip(&text_types) {
        let ty = match t.storage() {
            Storage::TextMatrix => text_ty,
            Storage::VisionMatrix => fallback(opts.vision_type, *t.shape.last().unwrap_or(&1)),
            Storage::Patch => {
                if opts.vision_type.is_quantized() {
                    GgmlType::F16
                } else {
                    opts.vision_type
                }
            }
            Storage::Small => GgmlType::F32,
        };
        // A tensor of an aliased text layer points at the same tensor of its source layer.
        let alias = t
            .block
            .filter(|b| b.stack == Stack::Text)
            .and_then(|b| source_layer(b.index))
            .and_then(|src| index_of.get(&t.decl.name(Some(Block::text(src)))).copied());
        let idx = match alias {
            Some(target) => w.add_tensor_alias(&t.name, target)?,
            None => w.add_tensor(&t.name, &t.shape, ty)?,
        };
        index_of.insert(t.name.clone(), idx);
    }

    // Write straight into anonymous memory (huge pages where the kernel allows): no second copy.
    let size = w.file_size() as usize;
    let mut map = crate::kernels::anon::huge_zeroed(size).map_err(|e| {
        Error::Invalid(format!(
            "synthetic model: cannot allocate {size} bytes: {e}"
        ))
    })?;
    {
        let mut buf = Vec::new();
        let mut cursor = std::io::Cursor::new(&mut map[..size]);
        w.write::<_, crate::GgufError>(&mut cursor, |i, t, sink: &mut TensorSink<'_>| {
            let decl = &tensors[i];
            let (base, scale) = match (decl.storage(), decl.decl.kind) {
                (Storage::Small, Kind::Norm) => (1.0, 0.05),
                (Storage::Small, Kind::Gate) => (0.0, 0.5),
                (Storage::Small, Kind::RopeFactors) => (1.0, 0.0),
                (Storage::Small, _) => (0.0, 0.02),
                _ => (0.0, 1.0 / (*decl.shape.last().unwrap_or(&1) as f32).sqrt()),
            };
            // In pieces of ~64 MB (whole fill chunks), so no tensor-sized buffer is allocated.
            let piece = chunk_bytes(t.ty) * 64;
            buf.resize(piece.min(t.size as usize), 0);
            let mut off = 0usize;
            while off < t.size as usize {
                let n = piece.min(t.size as usize - off);
                let seed =
                    opts.seed ^ (i as u64).wrapping_mul(0x1000_0001) ^ ((off / piece) as u64) << 40;
                fill(t.ty, &mut buf[..n], seed, base, scale);
                sink.write_all(&buf[..n])?;
                off += n;
            }
            Ok(())
        })?;
    }
    let file = GgufFile::from_map("<synthetic>", MapBytes::Anon(map))?;
    Model::from_gguf(file)
}
