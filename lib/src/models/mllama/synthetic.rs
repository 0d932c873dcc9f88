//! Models with random weights at exact real shapes, built in memory (no file), stored the way
//! `quantize` stores them: text matrices in the requested type, vision tower and projector F16
//! (unless asked otherwise), everything small F32. For benchmarks.
//!
//! Weights are random bytes in valid blocks (Q8_0/Q4_0: a small f16 scale and random quants;
//! F16/F32: small random values), so no f32 copy of the model is ever made. A 90B-shaped model
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
use crate::models::mllama::spec::ModelSpec;
use crate::models::mllama::tensors::{self, Block, Kind, Stack, Storage};
use crate::models::mllama::Model;
use crate::{Error, GgmlType};

/// How to build a synthetic model.
#[derive(Clone, Debug)]
pub struct SyntheticOptions {
    /// Storage type of the text matrices (F32, F16, BF16, Q8_0 or Q4_0).
    pub text_type: GgmlType,
    /// Storage type of the vision and projector matrices.
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

/// Fill `out` with random content valid for `ty`, values of magnitude about `scale` (`base` added
/// for float types: norm weights sit near 1).
fn fill(ty: GgmlType, out: &mut [u8], seed: u64, base: f32, scale: f32) {
    // A whole number of Q8_0 (34 B), Q4_0 (18 B) and 4-byte elements: lcm = 612.
    const CHUNK: usize = 612 * 1713;
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(ci, c)| {
        let mut r = Rng::new(seed ^ ((ci as u64 + 1) << 20));
        match ty {
            GgmlType::F32 => {
                for b in c.chunks_exact_mut(4) {
                    b.copy_from_slice(&(base + scale * r.unit()).to_le_bytes());
                }
            }
            GgmlType::F16 => {
                for b in c.chunks_exact_mut(2) {
                    b.copy_from_slice(&f16::from_f32(base + scale * r.unit()).to_le_bytes());
                }
            }
            GgmlType::BF16 => {
                for b in c.chunks_exact_mut(2) {
                    b.copy_from_slice(&half::bf16::from_f32(base + scale * r.unit()).to_le_bytes());
                }
            }
            GgmlType::Q8_0 | GgmlType::Q4_0 => {
                let (bs, qmax) = if ty == GgmlType::Q8_0 {
                    (34, 127.0)
                } else {
                    (18, 8.0)
                };
                for b in c.chunks_exact_mut(bs) {
                    let d = f16::from_f32(scale / qmax * (1.0 + 0.2 * r.unit()));
                    b[..2].copy_from_slice(&d.to_le_bytes());
                    for q in b[2..].chunks_mut(8) {
                        let x = r.next().to_le_bytes();
                        q.copy_from_slice(&x[..q.len()]);
                    }
                }
            }
            _ => {}
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
/// use mllama::GgmlType;
///
/// # fn main() -> Result<(), mllama::Error> {
/// let opts = SyntheticOptions {
///     text_type: GgmlType::Q8_0,
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
    for t in &tensors {
        let ty = match t.storage() {
            Storage::TextMatrix => opts.text_type,
            Storage::VisionMatrix => opts.vision_type,
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
    let mut map = memmap2::MmapMut::map_anon(size.max(1)).map_err(|e| {
        Error::Invalid(format!(
            "synthetic model: cannot allocate {size} bytes: {e}"
        ))
    })?;
    #[cfg(target_os = "linux")]
    let _ = map.advise(memmap2::Advice::HugePage);
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
            // In pieces of ~64 MB, so no tensor-sized buffer is ever allocated.
            const PIECE: usize = 612 * 1713 * 64;
            buf.resize(PIECE.min(t.size as usize), 0);
            let mut off = 0usize;
            while off < t.size as usize {
                let n = PIECE.min(t.size as usize - off);
                let seed =
                    opts.seed ^ (i as u64).wrapping_mul(0x1000_0001) ^ ((off / PIECE) as u64) << 40;
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
