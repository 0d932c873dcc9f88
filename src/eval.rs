//! `mllama eval`: run a prompt (with images) through the model and write every number a reference
//! comparison needs to a safetensors file. This is the stable interface tests and benchmarks use.

use std::path::{Path, PathBuf};
use std::time::Instant;

use safetensors::tensor::{Dtype, TensorView};

use mllama::engine::sequence::Sequence;
use mllama::image::{self, ImageLimits};
use mllama::models::mllama::preprocess;
use mllama::models::mllama::Semantics;
use mllama::text::sampling::argmax;
use mllama::Error;

/// What to evaluate (the flags of `mllama eval`); `tests::evaluates_the_demo_model` shows a use.
#[derive(Clone, Debug)]
pub struct EvalRequest {
    /// The GGUF model file.
    pub model: PathBuf,
    /// One image file per `<|image|>` token of the prompt, in order.
    pub images: Vec<PathBuf>,
    /// The prompt, special tokens written out (no chat template is applied).
    pub prompt: String,
    /// Tokenize like HF with `add_special_tokens=True` (processor rules included).
    pub add_bos: bool,
    /// Greedy tokens to generate after the prompt.
    pub generate: usize,
    /// Which reference numerics to follow.
    pub semantics: Semantics,
    /// The safetensors file to write (atomically).
    pub out: PathBuf,
}

/// Timings and sizes of one evaluation (printed with `--stats`). Times are in seconds.
#[derive(Clone, Debug, Default)]
pub struct EvalStats {
    /// Loading the model (file, weights, tokenizer).
    pub load_s: f64,
    /// Decoding and preprocessing each image.
    pub preprocess_s: Vec<f64>,
    /// The vision tower's precision (`f32`, `int8`), when images were encoded.
    pub vision_precision: Option<&'static str>,
    /// Preparing the vision weights for that precision (int8: quantizing them into memory),
    /// before the first image; not part of `vision_s`.
    pub vision_prepare_s: f64,
    /// Vision tower + projector of each image.
    pub vision_s: Vec<f64>,
    /// Cross-attention K/V of each image.
    pub cross_kv_s: Vec<f64>,
    /// Prefill of the whole prompt.
    pub prefill_s: f64,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Each greedy decode step after the first generated token.
    pub decode_s: Vec<f64>,
    /// Bytes of cross-attention K/V held for the images.
    pub cross_cache_bytes: usize,
    /// Peak resident set size at the end, if known.
    pub peak_rss_bytes: Option<u64>,
}

/// Peak resident set size of this process (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

struct OutTensor {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

fn f32s(name: &str, shape: Vec<usize>, v: &[f32]) -> OutTensor {
    OutTensor {
        name: name.into(),
        dtype: Dtype::F32,
        shape,
        data: bytemuck::cast_slice(v).to_vec(),
    }
}

fn i64s(name: &str, shape: Vec<usize>, v: &[i64]) -> OutTensor {
    OutTensor {
        name: name.into(),
        dtype: Dtype::I64,
        shape,
        data: bytemuck::cast_slice(v).to_vec(),
    }
}

/// Run the evaluation and write the output file (atomically: nothing appears at `out` on error).
/// The tensors written are listed in the README (`input_ids`, `logits` for every prompt position,
/// `greedy_ids`, `greedy_step_logits`, and with images `cross_attention_states`, `vision_states`,
/// `pixel_values`, `aspect_ratio_ids`, `aspect_ratio_mask`).
///
/// # Errors
///
/// The errors of [`Model::load`](mllama::Model::load) and image loading; [`Error::Invalid`] if the prompt is empty,
/// the number of `<|image|>` tokens differs from the number of images, prompt plus generated
/// tokens exceed the model's context, or the output directory does not exist; [`Error::Io`] if
/// the output cannot be written.
pub fn run(req: &EvalRequest) -> Result<EvalStats, Error> {
    let mut stats = EvalStats::default();
    let t0 = Instant::now();
    let model = crate::model_arg::open(&req.model)?;
    let tok = model.tokenizer()?;
    stats.load_s = t0.elapsed().as_secs_f64();

    let ids = tok.encode(&req.prompt, req.add_bos)?;
    if ids.is_empty() {
        return Err(Error::Invalid("the prompt is empty".into()));
    }
    // Images need a vision model (a text-only model refuses them before anything else).
    let vision = match req.images.is_empty() {
        true => None,
        false => Some(model.vision_tower()?),
    };
    let image_token = model.text.cfg.image_token;
    let n_image_tokens = ids.iter().filter(|&&t| Some(t) == image_token).count();
    if n_image_tokens != req.images.len() {
        return Err(Error::Invalid(format!(
            "the prompt has {n_image_tokens} <|image|> tokens but {} images were given (one --image per <|image|>)",
            req.images.len()
        )));
    }
    let ctx = ids.len() + req.generate;
    if ctx > model.text.cfg.context_length {
        return Err(Error::Invalid(format!(
            "prompt too long: {} prompt tokens + {} to generate exceed the model's context of {} tokens",
            ids.len(),
            req.generate,
            model.text.cfg.context_length
        )));
    }
    check_output_path(&req.out)?;

    // Images: decode and preprocess everything first, so a bad image fails before any model work.
    let limits = ImageLimits::default();
    let mut pre = Vec::with_capacity(req.images.len());
    let pcfg = model.cfg.preprocess.as_ref();
    for (path, pcfg) in req.images.iter().filter_map(|p| Some((p, pcfg?))) {
        let t = Instant::now();
        let img = image::load_image(path, &limits)?;
        pre.push(preprocess::preprocess(&img, pcfg)?);
        stats.preprocess_s.push(t.elapsed().as_secs_f64());
    }

    let mut seq = Sequence::new(&model, ctx, req.semantics);
    let mut states = Vec::new();
    let mut features = Vec::new();
    if let Some((tower, _)) = vision {
        stats.vision_precision = Some(model.vision_precision().name());
        stats.vision_prepare_s = tower.prepare().1;
        for im in &pre {
            let t = Instant::now();
            let out = tower.forward(
                &im.pixel_values,
                im.aspect_ratio_id,
                im.num_tiles,
                req.semantics.taps,
            );
            stats.vision_s.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            seq.attach_image(&out, im.num_tiles);
            stats.cross_kv_s.push(t.elapsed().as_secs_f64());
            states.extend_from_slice(&out.states);
            features.extend_from_slice(&out.features);
        }
    }
    stats.cross_cache_bytes = seq.cross_cache().bytes();

    let t = Instant::now();
    let logits = seq.feed(&ids, true)?.to_vec();
    stats.prefill_s = t.elapsed().as_secs_f64();
    stats.prompt_tokens = ids.len();
    let v = model.text.cfg.vocab_size;
    let mut greedy: Vec<i64> = Vec::with_capacity(req.generate);
    let mut step_logits: Vec<f32> = Vec::with_capacity(req.generate * v);
    if req.generate > 0 {
        let last = &logits[logits.len() - v..];
        greedy.push(argmax(last) as i64);
        step_logits.extend_from_slice(last);
    }
    while greedy.len() < req.generate {
        let t = Instant::now();
        let l = seq.feed(&[*greedy.last().unwrap_or(&0) as u32], false)?;
        stats.decode_s.push(t.elapsed().as_secs_f64());
        greedy.push(argmax(l) as i64);
        step_logits.extend_from_slice(l);
    }

    let s = ids.len();
    let mut out = vec![
        i64s(
            "input_ids",
            vec![1, s],
            &ids.iter().map(|&x| x as i64).collect::<Vec<_>>(),
        ),
        f32s("logits", vec![1, s, v], &logits),
        i64s("greedy_ids", vec![1, greedy.len()], &greedy),
        f32s("greedy_step_logits", vec![greedy.len(), v], &step_logits),
    ];
    if let (false, Some((_, vc))) = (pre.is_empty(), vision) {
        let (tiles, p, hdim) = (vc.max_tiles, vc.tokens_per_tile(), model.text.cfg.hidden);
        let ni = pre.len();
        let od = vc.output_dim;
        out.push(f32s(
            "cross_attention_states",
            vec![1, ni * tiles * p, hdim],
            &states,
        ));
        out.push(f32s("vision_states", vec![1, ni, tiles, p, od], &features));
        let ts = vc.image_size;
        let pv: Vec<f32> = pre
            .iter()
            .flat_map(|im| im.pixel_values.iter().copied())
            .collect();
        out.push(f32s("pixel_values", vec![1, ni, tiles, 3, ts, ts], &pv));
        let ar: Vec<i64> = pre.iter().map(|im| im.aspect_ratio_id as i64).collect();
        out.push(i64s("aspect_ratio_ids", vec![1, ni], &ar));
        let mask: Vec<i64> = pre.iter().flat_map(|im| im.aspect_ratio_mask()).collect();
        out.push(i64s("aspect_ratio_mask", vec![1, ni, tiles], &mask));
    }
    write_safetensors(&req.out, &out)?;
    stats.peak_rss_bytes = peak_rss_bytes();
    Ok(stats)
}

fn check_output_path(out: &Path) -> Result<(), Error> {
    if out.is_dir() {
        return Err(Error::Invalid(format!(
            "{}: output path is a directory",
            out.display()
        )));
    }
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Error::Invalid(format!(
            "{}: output directory {} does not exist",
            out.display(),
            dir.display()
        )));
    }
    Ok(())
}

fn write_safetensors(path: &Path, tensors: &[OutTensor]) -> Result<(), Error> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            TensorView::new(t.dtype, t.shape.clone(), &t.data)
                .map(|v| (t.name.clone(), v))
                .map_err(|e| Error::Invalid(format!("internal: tensor {}: {e}", t.name)))
        })
        .collect::<Result<_, _>>()?;
    let bytes = safetensors::serialize(views, None)
        .map_err(|e| Error::Invalid(format!("serializing output: {e}")))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".mllama-eval.")
        .suffix(".partial")
        .tempfile_in(&dir)
        .map_err(|e| Error::io(path, e))?;
    std::io::Write::write_all(&mut tmp, &bytes).map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

impl EvalStats {
    /// A human-readable summary.
    pub fn summary(&self) -> String {
        let ms = |s: f64| s * 1e3;
        let mut lines = vec![format!("load {:.1} ms", ms(self.load_s))];
        if let Some(p) = self.vision_precision {
            lines.push(format!(
                "vision precision {p} (preparing the weights {:.1} ms)",
                ms(self.vision_prepare_s)
            ));
        }
        for (i, ((p, v), c)) in self
            .preprocess_s
            .iter()
            .zip(&self.vision_s)
            .zip(&self.cross_kv_s)
            .enumerate()
        {
            lines.push(format!(
                "image {i}: preprocess {:.1} ms, vision tower + projector {:.1} ms, cross K/V {:.1} ms",
                ms(*p),
                ms(*v),
                ms(*c)
            ));
        }
        if self.cross_cache_bytes > 0 {
            lines.push(format!(
                "cross K/V cache {:.2} MiB",
                self.cross_cache_bytes as f64 / (1 << 20) as f64
            ));
        }
        lines.push(format!(
            "prefill {} tokens in {:.1} ms ({:.1} tokens/s)",
            self.prompt_tokens,
            ms(self.prefill_s),
            self.prompt_tokens as f64 / self.prefill_s.max(1e-9)
        ));
        if !self.decode_s.is_empty() {
            let mean = self.decode_s.iter().sum::<f64>() / self.decode_s.len() as f64;
            lines.push(format!(
                "decode {} steps: {:.2} ms/step ({:.1} tokens/s)",
                self.decode_s.len(),
                ms(mean),
                1.0 / mean.max(1e-9)
            ));
        }
        if let Some(r) = self.peak_rss_bytes {
            lines.push(format!("peak RSS {:.1} MiB", r as f64 / (1 << 20) as f64));
        }
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluates_the_demo_model() {
        // Formerly this type's doc example (binary crates run no doctests).
        let dir = tempfile::tempdir().unwrap();
        let req = EvalRequest {
            model: concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/models/demo/mllama-demo-q4_0.gguf"
            )
            .into(),
            images: vec![],
            prompt: "<|begin_of_text|>Hello".into(),
            add_bos: false,
            generate: 2,
            semantics: Default::default(),
            out: dir.path().join("out.safetensors"),
        };
        let stats = run(&req).unwrap();
        assert_eq!(stats.prompt_tokens, 2);
        assert!(req.out.exists());
    }
}
