//! The conversion driver: validate everything, then stream tensors into the GGUF writer.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mllama::format::gguf::{Array, GgufWriter, TensorSink, Value};
use mllama::models::mllama::keys;
use mllama::models::mllama::spec::{ModelSpec, RopeScaling};
use mllama::quant::mix::FileType;
use mllama::GgmlType;
use rayon::prelude::*;

use crate::checkpoint::Checkpoint;
use crate::config::{GenerationConfig, MllamaConfig, PreprocessConfig};
use crate::error::{ConvertError, Result};
use crate::plan::{self, OutTensor, RowOrder, Source};

/// Converter options (the CLI flags).
#[derive(Clone, Debug)]
pub struct Options {
    /// The HF checkpoint directory (`config.json`, safetensors, tokenizer and preprocessor files).
    pub input: PathBuf,
    /// The GGUF file to write (atomically: nothing appears there unless conversion succeeds).
    pub output: PathBuf,
    /// The file type (`-t`): the storage type of the text matrices, or llama.cpp's per-tensor
    /// mix for `q4_k_m` and the like ([`mllama::models::mllama::mix`]); see [`parse_type`].
    pub ty: FileType,
    /// Also quantize the vision tower and projector matrices, with the file type's base type
    /// (default for quantized types: F16).
    pub quantize_vision: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// What a finished conversion reports.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Tensors written.
    pub tensors: usize,
    /// Bytes of source tensor data read.
    pub bytes_in: u64,
    /// Size of the output file in bytes.
    pub bytes_out: u64,
    /// Wall time of the conversion in seconds.
    pub seconds: f64,
    /// Per storage type: (type, number of tensors, bytes of data).
    pub by_type: Vec<(GgmlType, usize, u64)>,
    /// Things the user should know that did not stop the conversion (unused checkpoint tensors,
    /// a missing chat template, ...).
    pub warnings: Vec<String>,
}

/// Values converted per parallel task.
const TASK_VALUES: usize = 1 << 16;
/// Values converted per chunk (bounds the converter's own buffers: ≈ 4 bytes each in, ≤ 4 out).
const CHUNK_VALUES: usize = 1 << 22;

/// File types `-t` accepts ([`FileType::ALL`]: `f32`, `f16`, `bf16`, `q8_0`, `q6_k`, `q5_k_m`,
/// `q5_k_s`, `q5_1`, `q5_0`, `q4_k_m`, `q4_k_s`, `q4_1`, `q4_0`; case-insensitive).
///
/// ```
/// use mllama::quant::mix::FileType;
/// use mllama_quantize::convert::parse_type;
///
/// assert_eq!(parse_type("Q4_0"), Some(FileType::Q4_0));
/// assert_eq!(parse_type("q4_k_m"), Some(FileType::Q4KM));
/// assert_eq!(parse_type("q4_k"), None); // a tensor type, not a file type
/// ```
pub fn parse_type(s: &str) -> Option<FileType> {
    FileType::parse(s)
}

/// Build the writer (all metadata + tensor table) and the plan, validating the whole input; also
/// returns the opened checkpoint and the warnings. Nothing is written.
///
/// # Errors
///
/// As for [`run`], except those of writing the output.
pub fn prepare(opts: &Options) -> Result<(GgufWriter, Vec<OutTensor>, Checkpoint, Vec<String>)> {
    let dir = &opts.input;
    if !dir.exists() {
        return Err(ConvertError::file(dir, "input directory not found"));
    }
    if !dir.is_dir() {
        return Err(ConvertError::file(
            dir,
            "not a directory (expected an HF checkpoint directory)",
        ));
    }
    let cfg = MllamaConfig::load(dir)?;
    let pre = PreprocessConfig::load(dir, &cfg.vision)?;
    let gen = GenerationConfig::load(dir)?;
    let tok = crate::tokenizer::convert(dir, cfg.text.bos_token_id, cfg.text.pad_token_id)?;
    let ckpt = Checkpoint::open(dir)?;
    let (tensors, unused) = plan::build(&cfg, &ckpt, dir, opts.ty, opts.quantize_vision)?;
    let mut warnings = tok.warnings.clone();
    if !unused.is_empty() {
        warnings.push(format!(
            "{} checkpoint tensors not used: {}{}",
            unused.len(),
            unused
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            if unused.len() > 5 { ", …" } else { "" }
        ));
    }
    if tok.vocab_size <= cfg.image_token_index as usize {
        return Err(ConvertError::file(
            dir.join("tokenizer.json"),
            format!(
                "vocabulary of {} tokens has no image token id {}",
                tok.vocab_size, cfg.image_token_index
            ),
        ));
    }

    let mut w = GgufWriter::new(keys::ARCH);
    let mut add = |k: &str, v: Value| -> Result<()> {
        w.add(k, v)?;
        Ok(())
    };
    let name = cfg.name.clone().unwrap_or_else(|| {
        dir.canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "mllama".into())
    });
    add("general.name", Value::String(name))?;
    add("general.file_type", Value::U32(opts.ty.llama_ftype()))?;
    add("general.quantization_version", Value::U32(2))?;

    let t = &cfg.text;
    let v = &cfg.vision;
    let emb_rows = tensors
        .iter()
        .find(|x| x.name == keys::T_TOKEN_EMBD)
        .map(|x| x.shape[0])
        .unwrap_or(t.vocab_size);
    if pre.max_image_tiles != v.max_num_tiles {
        warnings.push(format!(
            "preprocessor max_image_tiles {} differs from vision max_num_tiles {}; using the model's",
            pre.max_image_tiles, v.max_num_tiles
        ));
    }
    spec(&cfg, &pre, emb_rows).write_metadata(&mut w)?;
    let mut add = |k: &str, v: Value| -> Result<()> {
        w.add(k, v)?;
        Ok(())
    };
    if let Some(g) = &gen {
        if let Some(x) = g.do_sample {
            add(keys::G_DO_SAMPLE, Value::Bool(x))?;
        }
        if let Some(x) = g.temperature {
            add(keys::G_TEMPERATURE, Value::F32(x as f32))?;
        }
        if let Some(x) = g.top_p {
            add(keys::G_TOP_P, Value::F32(x as f32))?;
        }
        if let Some(x) = g.top_k {
            add(keys::G_TOP_K, Value::I32(x as i32))?;
        }
    }
    let mut eos_ids = gen
        .as_ref()
        .map(|g| g.eos_token_ids.clone())
        .unwrap_or_default();
    if eos_ids.is_empty() {
        eos_ids = t.eos_token_ids.clone();
    }
    if !eos_ids.is_empty() {
        add(keys::G_EOS_IDS, Value::Array(Array::U32(eos_ids)))?;
    }

    for (k, v) in tok.kv {
        add(k, v)?;
    }

    for t in &tensors {
        w.add_tensor(&t.name, &t.shape, t.ty)?;
    }
    Ok((w, tensors, ckpt, warnings))
}

/// The architecture numbers of a checkpoint, as the runtime's metadata writer takes them.
pub fn spec(cfg: &MllamaConfig, pre: &PreprocessConfig, embedding_rows: usize) -> ModelSpec {
    let (t, v) = (&cfg.text, &cfg.vision);
    ModelSpec {
        vocab_size: t.vocab_size,
        embedding_rows,
        hidden: t.hidden_size,
        n_layers: t.num_hidden_layers,
        ffn: t.intermediate_size,
        n_heads: t.num_attention_heads,
        n_kv_heads: t.num_key_value_heads,
        rms_eps: t.rms_norm_eps as f32,
        rope_theta: t.rope_theta as f32,
        rope_scaling: t.rope_scaling.as_ref().map(|s| RopeScaling {
            factor: s.factor as f32,
            low_freq_factor: s.low_freq_factor as f32,
            high_freq_factor: s.high_freq_factor as f32,
            original_context_length: s.original_max_position_embeddings as u32,
        }),
        context_length: t.max_position_embeddings,
        cross_layers: t.cross_attention_layers.clone(),
        image_token: cfg.image_token_index,
        v_hidden: v.hidden_size,
        v_heads: v.attention_heads,
        v_ffn: v.intermediate_size,
        v_local: v.num_hidden_layers,
        v_global: v.num_global_layers,
        v_taps: v.intermediate_layers_indices.clone(),
        v_eps: v.norm_eps as f32,
        image_size: v.image_size,
        patch_size: v.patch_size,
        max_tiles: v.max_num_tiles,
        mean: pre.image_mean,
        std: pre.image_std,
        rescale_factor: pre.rescale_factor,
        aspect_ratios: v.supported_aspect_ratios.clone(),
    }
}

/// Check that the output can be created before doing any work.
fn check_output(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(ConvertError::file(path, "output path is a directory"));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(ConvertError::file(
            path,
            format!("output directory {} does not exist", dir.display()),
        ));
    }
    // Probe writability with a temporary file that is removed again.
    tempfile::Builder::new()
        .prefix(".quantize-probe.")
        .tempfile_in(&dir)
        .map_err(|e| ConvertError::file(path, format!("cannot write to {}: {e}", dir.display())))?;
    Ok(())
}

/// Run a conversion: check that the output can be written, read and validate every input file
/// and tensor shape, then stream the tensors (a few MB at a time, converted in parallel) into a
/// temporary file that is renamed to `opts.output` at the end. On error nothing is left at the
/// output path.
///
/// # Errors
///
/// A [`ConvertError`] naming the file (and tensor) at fault: a missing or unreadable input file,
/// a `config.json` that is not mllama, a missing tensor or a shape that does not match the
/// config, a truncated or corrupt safetensors file, an unsupported source dtype (only bf16, f16
/// and f32 are read), an output directory that does not exist or is not writable.
///
/// ```
/// use mllama_quantize::synthetic::{write_checkpoint, SynthDims};
/// use mllama_quantize::{run, ConvertError, Options};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let input = dir.path().join("ckpt");
/// write_checkpoint(&input, &SynthDims::tiny(), 1)?;
/// let opts = Options {
///     input,
///     output: dir.path().join("out.gguf"),
///     ty: mllama::quant::mix::FileType::Q4_0,
///     quantize_vision: false,
///     progress: false,
/// };
/// let s = run(&opts)?;
/// assert_eq!(s.bytes_out, std::fs::metadata(&opts.output)?.len());
/// // Text matrices Q4_0, vision F16, small tensors F32.
/// assert!(s.by_type.iter().any(|&(t, _, _)| t == mllama::GgmlType::Q4_0));
///
/// // A bad input: one line naming the file, and no output.
/// let missing = dir.path().join("missing");
/// let bad = Options { input: missing, output: dir.path().join("x.gguf"), ..opts };
/// let err: ConvertError = run(&bad).unwrap_err();
/// assert!(err.to_string().contains("input directory not found"));
/// assert!(!bad.output.exists());
/// # Ok(())
/// # }
/// ```
pub fn run(opts: &Options) -> Result<Summary> {
    let start = Instant::now();
    check_output(&opts.output)?;
    let (writer, tensors, ckpt, warnings) = prepare(opts)?;
    let total_in: u64 = tensors
        .iter()
        .map(|t| match &t.source {
            Source::Hf(n) => ckpt
                .get(n)
                .map(|s| (s.ty.size() * t.rows() * t.row_len()) as u64)
                .unwrap_or(0),
            Source::Computed(v) => 4 * v.len() as u64,
        })
        .sum();
    let pb = if opts.progress {
        let pb = ProgressBar::with_draw_target(Some(total_in), ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}  {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb
    } else {
        ProgressBar::hidden()
    };

    let bytes_out = writer.write_file::<ConvertError>(&opts.output, |_, info, sink| {
        let t = &tensors
            .iter()
            .find(|t| t.name == info.name)
            .ok_or_else(|| {
                ConvertError::Other(format!("internal: tensor {} not in plan", info.name))
            })?;
        pb.set_message(format!("{} {} {:?}", t.name, t.ty, t.shape));
        write_tensor(&ckpt, t, sink, &pb)
    })?;
    pb.finish_and_clear();

    let mut by_type: Vec<(GgmlType, usize, u64)> = Vec::new();
    for t in writer.tensors() {
        match by_type.iter_mut().find(|e| e.0 == t.ty) {
            Some(e) => {
                e.1 += 1;
                e.2 += t.size;
            }
            None => by_type.push((t.ty, 1, t.size)),
        }
    }
    Ok(Summary {
        tensors: tensors.len(),
        bytes_in: total_in,
        bytes_out,
        seconds: start.elapsed().as_secs_f64(),
        by_type,
        warnings,
    })
}

/// Stream one tensor: convert chunks of rows in parallel and write them in order.
fn write_tensor(
    ckpt: &Checkpoint,
    t: &OutTensor,
    sink: &mut TensorSink<'_>,
    pb: &ProgressBar,
) -> Result<()> {
    let row_len = t.row_len();
    let rows = t.rows();
    let out_row_bytes = t.ty.row_bytes(row_len as u64).ok_or_else(|| {
        ConvertError::Other(format!(
            "internal: {} rows of {row_len} as {}",
            t.name, t.ty
        ))
    })? as usize;
    let io = |e: std::io::Error| ConvertError::Other(format!("writing tensor {}: {e}", t.name));

    let src = match &t.source {
        Source::Computed(v) => {
            let mut out = vec![0u8; out_row_bytes * rows];
            mllama::quant::convert_f32(t.ty, v, row_len, &mut out)?;
            sink.write_all(&out).map_err(io)?;
            pb.inc(4 * v.len() as u64);
            return Ok(());
        }
        Source::Hf(name) => ckpt
            .get(name)
            .ok_or_else(|| ConvertError::Other(format!("internal: source {name} vanished")))?,
    };
    let src_row_bytes = row_len * src.ty.size();
    let chunk_rows = (CHUNK_VALUES / row_len).max(1);
    let task_rows = (TASK_VALUES / row_len).max(1);
    let mut out = vec![0u8; chunk_rows.min(rows) * out_row_bytes];
    let mut row0 = 0;
    while row0 < rows {
        let n = chunk_rows.min(rows - row0);
        let out_chunk = &mut out[..n * out_row_bytes];
        out_chunk
            .par_chunks_mut(task_rows * out_row_bytes)
            .enumerate()
            .try_for_each(|(ti, dst)| -> Result<()> {
                let r0 = row0 + ti * task_rows;
                let nr = dst.len() / out_row_bytes;
                let mut buf = vec![0f32; nr * row_len];
                for (k, b) in buf.chunks_exact_mut(row_len).enumerate() {
                    let r = plan::source_row(t.order, r0 + k);
                    ckpt.read_rows_f32(src, row_len, r, b);
                }
                mllama::quant::convert_f32_serial(t.ty, &buf, row_len, dst)?;
                Ok(())
            })?;
        sink.write_all(out_chunk).map_err(io)?;
        if t.order == RowOrder::AsIs {
            ckpt.release(src, row0 * src_row_bytes, (row0 + n) * src_row_bytes);
        }
        pb.inc((n * src_row_bytes) as u64);
        row0 += n;
    }
    if t.order != RowOrder::AsIs {
        ckpt.release(src, 0, rows * src_row_bytes);
    }
    Ok(())
}
