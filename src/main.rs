//! The `mllama` command-line tool.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod cli;
mod eval;
mod model_arg;
#[cfg(feature = "serve")]
mod serve;

#[derive(Parser)]
#[command(
    name = "mllama",
    version,
    about = "Run Llama 3.2 Vision (mllama) GGUF models on the CPU"
)]
struct Cli {
    /// Worker threads for the kernels (default: one per core).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// The vision projector of an Ollama era-1 text blob (Ollama 0.4-0.6 kept it in a second
    /// blob); not needed when -m names an Ollama model.
    #[arg(long, global = true, value_name = "FILE")]
    mmproj: Option<PathBuf>,
    /// Storage layout of the model, instead of detecting it: ours, era1, era2a, era2b (Ollama's;
    /// era2a is recognised by its blob digest, so a renamed 2a blob needs this).
    #[arg(long, global = true, value_name = "LAYOUT")]
    layout: Option<String>,
    /// Row order of an era-1 text blob's cross-attention q/k: ggml (permuted, the default, as
    /// Ollama's converters wrote) or hf. No era-1 blob has been inspected to settle it.
    #[arg(long, global = true, default_value = "ggml", value_parser = ["ggml", "hf"])]
    era1_cross_qk: String,
    /// Keep the weights in place in the memory-mapped file instead of repacking the decoder's
    /// Q4_0 matrices (and, on x86, Q8_0, Q4_K, Q6_K and Q4_1) into row-interleaved copies at load
    /// (less load time and no copy; slower decode and prompts; Q4_0 and Q8_0 give the same
    /// results, the others the same within float rounding).
    #[arg(long, global = true)]
    no_repack: bool,
    /// Arithmetic of the vision tower and projector: auto (f32 for float files; for quantized
    /// files int16 on x86-64, f32 on ARM), f32, int16 (12-bit integer weights, quantized into
    /// memory once, and activations; within 0.2% of f32) or int8 (faster, less faithful: ~2%).
    #[arg(long, global = true, default_value = "auto", value_name = "PRECISION", value_parser = ["auto", "f32", "int8", "int16"])]
    vision_precision: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Answer one prompt (about images) with the model's chat template, streaming the text.
    /// Without -m, runs the demo model on the demo image.
    Run {
        /// The model: a GGUF file or an Ollama model name such as llama3.2-vision:11b (default:
        /// the demo model in models/demo).
        #[arg(short, long)]
        model: Option<PathBuf>,
        /// An image (repeatable); placed where the prompt has <|image|>, else before the text.
        #[arg(long = "image")]
        images: Vec<PathBuf>,
        /// The question; `-` reads it from stdin.
        #[arg(short, long)]
        prompt: Option<String>,
        /// Send the prompt as is, without the chat template.
        #[arg(long)]
        raw: bool,
        /// A system message (the Llama 3.2 Vision template refuses one together with images).
        #[arg(long)]
        system: Option<String>,
        #[command(flatten)]
        args: cli::GenArgs,
    },
    /// An interactive conversation: /image PATH attaches a picture to the next message, /reset,
    /// /stats, /help, /quit. Works with piped input too.
    Chat {
        /// The model: a GGUF file or an Ollama model name such as llama3.2-vision:11b (default:
        /// the demo model in models/demo).
        #[arg(short, long)]
        model: Option<PathBuf>,
        /// A system message.
        #[arg(long)]
        system: Option<String>,
        #[command(flatten)]
        args: cli::GenArgs,
    },
    /// Measure vision, cross K/V, prefill and decode speed on a synthetic model at real shapes
    /// (or a GGUF) next to this machine's read bandwidth and FMA peak.
    Bench {
        /// A model with random weights at these shapes, built in memory: 11b, 90b or tiny.
        #[arg(long, conflicts_with = "model")]
        synthetic: Option<String>,
        /// A GGUF model (or Ollama model name) instead of a synthetic one.
        #[arg(short, long)]
        model: Option<PathBuf>,
        /// File type of the synthetic model's text decoder, with `quantize`'s per-tensor mix:
        /// q4_0, q4_1, q5_0, q5_1, q8_0, q4_k_m, q4_k_s, q5_k_m, q5_k_s, q6_k, f16, bf16, f32.
        #[arg(long = "type", default_value = "q4_0")]
        ty: String,
        /// Quantize the synthetic vision tower and projector too (default F16, as `quantize`).
        #[arg(long)]
        quantize_vision: bool,
        /// Which part to run: decode, prefill, vision or all.
        #[arg(long, default_value = "all", value_parser = ["all", "decode", "prefill", "vision"])]
        only: String,
        /// Prompt length for prefill.
        #[arg(long, default_value_t = 128)]
        prompt_tokens: usize,
        /// Decode steps timed.
        #[arg(long, default_value_t = 16)]
        decode_tokens: usize,
        /// Real tiles of the benchmark image, 1 to 4 (default 4).
        #[arg(long)]
        tiles: Option<usize>,
        /// Print one JSON object instead of a report.
        #[arg(long)]
        json: bool,
    },
    /// The vision cache directory: `list` its entries, or `clear` it.
    Cache {
        /// list or clear.
        #[arg(value_parser = ["list", "clear"])]
        action: String,
        /// The cache directory (default: $XDG_CACHE_HOME/mllama or ~/.cache/mllama).
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
    /// Run a prompt (and images) through the model; write input ids, logits at every prompt
    /// position, greedy tokens and vision states to a safetensors file.
    Eval {
        /// The model: a GGUF file or an Ollama model name.
        #[arg(short, long)]
        model: PathBuf,
        /// An image for each <|image|> token of the prompt, in order.
        #[arg(long = "image")]
        images: Vec<PathBuf>,
        /// The prompt text; special tokens written in it (<|image|>, <|eot_id|>, ...) are recognised.
        #[arg(long)]
        prompt: String,
        /// Tokenize like HF with add_special_tokens=True (BOS added, processor rules applied).
        #[arg(long)]
        add_bos: bool,
        /// Greedy tokens to generate through the caches.
        #[arg(long, default_value_t = 0)]
        generate: usize,
        /// Meta's cross-attention semantics for text before the first image (default: HF's).
        #[arg(long)]
        meta_cross_attn: bool,
        /// Which side of local vision layer k is intermediate feature k: `input` (Meta's
        /// reference, HF 4.x, Ollama; the default) or `output` (HF transformers 5.x compatibility).
        #[arg(long, default_value = "input", value_parser = ["input", "output"])]
        vision_taps: String,
        /// Storage of the attention caches: `auto` (f16 for quantized models, f32 otherwise),
        /// `f32` or `f16`.
        #[arg(long, default_value = "auto", value_parser = ["auto", "f32", "f16"])]
        kv_cache: String,
        /// Output safetensors file.
        #[arg(long)]
        out: PathBuf,
        /// Print timings and peak memory to stderr.
        #[arg(long)]
        stats: bool,
    },
    /// Serve models over HTTP with Ollama's API (/api/chat, /api/generate, ...) and OpenAI's
    /// (/v1/chat/completions), on 127.0.0.1:11434 by default.
    #[cfg(feature = "serve")]
    Serve(serve::ServeArgs),
    /// Describe a GGUF file: architecture, dimensions, tensors by type, tokenizer, and for an
    /// mllama model its layout (ours, Ollama era 1 / 2a / 2b) and every storage convention undone.
    Info {
        /// The GGUF file (any architecture) or an Ollama model name.
        file: PathBuf,
        /// Also list every metadata key.
        #[arg(long)]
        keys: bool,
        /// List every tensor with its type and shape.
        #[arg(long)]
        tensors: bool,
    },
}

fn run(cli: Cli) -> mllama::Result<()> {
    // The server runs generations on its own threads; their kernels use rayon's global pool,
    // which --threads sizes.
    #[cfg(feature = "serve")]
    if let Cmd::Serve(args) = cli.cmd {
        if let Some(n) = cli.threads {
            if n == 0 {
                return Err(mllama::Error::Invalid(
                    "--threads must be at least 1".into(),
                ));
            }
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build_global()
                .map_err(|e| mllama::Error::Invalid(format!("cannot start worker threads: {e}")))?;
        }
        return serve::serve(args);
    }
    // All work runs on a worker of one pool: kernels then split jobs through the worker's own
    // deque (no allocation per decode step), and --threads sizes it.
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(n) = cli.threads {
        if n == 0 {
            return Err(mllama::Error::Invalid(
                "--threads must be at least 1".into(),
            ));
        }
        builder = builder.num_threads(n);
    }
    let pool = builder
        .build()
        .map_err(|e| mllama::Error::Invalid(format!("cannot start worker threads: {e}")))?;
    model_arg::set(
        cli.mmproj,
        cli.layout.as_deref(),
        &cli.era1_cross_qk,
        cli.no_repack,
        &cli.vision_precision,
    )?;
    pool.install(|| run_command(cli.cmd))
}

/// Print to stdout; a closed pipe (`mllama ... | head`) ends the program quietly.
fn out(s: &str) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_all(s.as_bytes()).and_then(|_| o.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

fn run_command(cmd: Cmd) -> mllama::Result<()> {
    match cmd {
        Cmd::Run {
            model,
            images,
            prompt,
            raw,
            system,
            args,
        } => cli::run(model, images, prompt, raw, system, args),
        Cmd::Chat {
            model,
            system,
            args,
        } => cli::chat(model, system, args),
        Cmd::Bench {
            synthetic,
            model,
            ty,
            quantize_vision,
            only,
            prompt_tokens,
            decode_tokens,
            tiles,
            json,
        } => {
            let ty = mllama::quant::mix::FileType::parse(&ty).ok_or_else(|| {
                mllama::Error::Invalid(format!(
                    "--type {ty}: unknown type (expected one of {})",
                    mllama::quant::mix::FileType::names()
                ))
            })?;
            let only = match only.as_str() {
                "decode" => crate::bench::Only::Decode,
                "prefill" => crate::bench::Only::Prefill,
                "vision" => crate::bench::Only::Vision,
                _ => crate::bench::Only::All,
            };
            let r = crate::bench::run(&crate::bench::BenchOptions {
                synthetic,
                model,
                ty,
                quantize_vision,
                only,
                prompt_tokens,
                decode_tokens: decode_tokens.max(1),
                probe_bytes: 512 << 20,
                tiles,
            })?;
            if json {
                out(&format!("{}\n", r.to_json()));
            } else {
                out(&format!("{}\n", r.report()));
            }
            Ok(())
        }
        Cmd::Eval {
            model,
            images,
            prompt,
            add_bos,
            generate,
            meta_cross_attn,
            vision_taps,
            kv_cache,
            out,
            stats,
        } => {
            let req = crate::eval::EvalRequest {
                model,
                images,
                prompt,
                add_bos,
                generate,
                semantics: mllama::models::mllama::Semantics {
                    meta_cross_attn,
                    taps: if vision_taps == "input" {
                        mllama::models::mllama::TapConvention::LayerInput
                    } else {
                        mllama::models::mllama::TapConvention::LayerOutput
                    },
                    cache: mllama::CachePrecision::parse(&kv_cache).unwrap_or_default(),
                },
                out,
            };
            let s = crate::eval::run(&req)?;
            if stats {
                eprintln!("{}", s.summary());
            }
            Ok(())
        }
        #[cfg(feature = "serve")]
        Cmd::Serve(args) => serve::serve(args),
        Cmd::Cache { action, cache_dir } => {
            let dir = cli::cache_dir(cache_dir.as_deref(), false).ok_or_else(|| {
                mllama::Error::Invalid(
                    "no cache directory: set HOME or XDG_CACHE_HOME, or give --cache-dir".into(),
                )
            })?;
            out(&cache_command(&dir, &action)?);
            Ok(())
        }
        Cmd::Info {
            file,
            keys,
            tensors,
        } => {
            let opts = model_arg::options();
            let layout = mllama::models::mllama::open::inspect(&file, &opts);
            let gguf_path = match &layout {
                Ok(p) => p.model_file.clone(),
                Err(_) => file.clone(),
            };
            let f = mllama::format::gguf::GgufFile::open(&gguf_path)?;
            let mut text = mllama::models::info::summary(&f, keys);
            text.push_str(&mllama::models::mllama::open::layout_report(&layout));
            if tensors {
                text.push_str("\ntensor list:\n");
                for t in f.tensors() {
                    text.push_str(&format!(
                        "  {:<48} {:<6} {:?}\n",
                        t.name,
                        t.ty.name(),
                        t.shape()
                    ));
                }
            }
            out(&text);
            Ok(())
        }
    }
}

/// `mllama cache list|clear` on `dir`: the report to print.
fn cache_command(dir: &std::path::Path, action: &str) -> mllama::Result<String> {
    let cache = mllama::DiskCache::new(dir, 0);
    let io = |e| mllama::Error::io(dir, e);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    if action == "clear" {
        let (n, bytes) = cache.clear().map_err(io)?;
        return Ok(format!(
            "{}: deleted {n} entries ({:.1} MiB)\n",
            dir.display(),
            mib(bytes)
        ));
    }
    let entries = cache.list().map_err(io)?;
    let mut text = String::new();
    for e in entries.iter().rev() {
        let age = e.last_used.elapsed().map_or(0, |d| d.as_secs());
        let name = e.file.file_name().unwrap_or_default().to_string_lossy();
        text.push_str(&format!(
            "{name}  {:>9.1} MiB  used {age} s ago\n",
            mib(e.bytes)
        ));
    }
    let total: u64 = entries.iter().map(|e| e.bytes).sum();
    text.push_str(&format!(
        "{}: {} entries, {:.1} MiB\n",
        dir.display(),
        entries.len(),
        mib(total)
    ));
    Ok(text)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
                || !e.use_stderr()
            {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line: clap's first line without its usage and "--help" hints.
            let msg = e.to_string();
            let first = msg
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments");
            eprintln!("{}", first.trim_end());
            return ExitCode::from(2);
        }
    };
    // The library prints nothing: its warnings about MLLAMA_SIMD, MLLAMA_PREFETCH and
    // MLLAMA_SPIN_US are shown here.
    for w in [
        mllama::kernels::path_warning(),
        mllama::kernels::prefetch_warning(),
        mllama::kernels::team::spin_warning(),
    ]
    .into_iter()
    .flatten()
    {
        eprintln!("warning: {w}");
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
