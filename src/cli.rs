//! `mllama run` and `mllama chat` (a module of the binary, not of the library).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use mllama::image::ImageLimits;
use mllama::{
    CachePrecision, Error, ImageSource, Model, SamplingParams, Semantics, Session, SessionOptions,
    TapConvention,
};

/// Set by Ctrl-C: stops the answer being generated.
static CANCEL: AtomicBool = AtomicBool::new(false);
/// True while an answer is being generated (Ctrl-C outside it only prints a hint in chat).
static GENERATING: AtomicBool = AtomicBool::new(false);

/// The demo model shipped in the repository, used when no `-m` is given.
pub fn demo_model() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/demo/mllama-demo-q4_0.gguf"
    ))
}

/// The demo image.
pub fn demo_image() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/demo/example.jpg"
    ))
}

/// Flags shared by `run` and `chat`.
#[derive(clap::Args, Debug, Clone)]
pub struct GenArgs {
    /// Maximum tokens to generate.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 256)]
    pub max_tokens: usize,
    /// Sampling temperature (0 = greedy). Default: the model's generation config.
    #[arg(long, allow_negative_numbers = true)]
    pub temperature: Option<f32>,
    /// Keep only the k most likely tokens (0 = all). Default: the model's, else 50 when sampling.
    #[arg(long, allow_negative_numbers = true)]
    pub top_k: Option<usize>,
    /// Nucleus sampling mass (0 < p ≤ 1). Default: the model's generation config.
    #[arg(long, allow_negative_numbers = true)]
    pub top_p: Option<f32>,
    /// Drop tokens less likely than this fraction of the most likely one.
    #[arg(long, allow_negative_numbers = true)]
    pub min_p: Option<f32>,
    /// Penalty on tokens seen in the last 64 (1 = off).
    #[arg(long, allow_negative_numbers = true)]
    pub repeat_penalty: Option<f32>,
    /// RNG seed (same seed, same output).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Context window in tokens (default: the model's, at most 4096).
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Meta's cross-attention semantics for text before the first image (default: HF's).
    #[arg(long)]
    pub meta_cross_attn: bool,
    /// Which side of local vision layer k is intermediate feature k: `input` (Meta's reference,
    /// HF 4.x, Ollama; the default) or `output` (HF transformers 5.x compatibility).
    #[arg(long, default_value = "input", value_parser = ["input", "output"])]
    pub vision_taps: String,
    /// Storage of the attention caches: `auto` (f16 for quantized models, f32 otherwise), `f32`
    /// or `f16`.
    #[arg(long, default_value = "auto", value_parser = ["auto", "f32", "f16"])]
    pub kv_cache: String,
    /// Most memory for cached image encodings, in MiB (default 2048).
    #[arg(long)]
    pub image_cache_mb: Option<usize>,
    /// The vision cache directory (default: $XDG_CACHE_HOME/mllama or ~/.cache/mllama): each
    /// image's cross-attention K/V is kept there for later runs.
    #[arg(long, value_name = "DIR", conflicts_with = "no_disk_cache")]
    pub cache_dir: Option<PathBuf>,
    /// Neither read nor write the vision cache directory.
    #[arg(long)]
    pub no_disk_cache: bool,
    /// Most disk space for the vision cache, in MiB (default 4096); least recently used images
    /// are deleted beyond it.
    #[arg(long, value_name = "MIB")]
    pub disk_cache_mb: Option<u64>,
    /// Print timings and peak memory to stderr.
    #[arg(long)]
    pub stats: bool,
    /// Refuse images of more pixels than this, before decoding (default 67108864 = 64 Mpixel).
    #[arg(long, value_name = "PIXELS")]
    pub max_image_pixels: Option<u64>,
    /// Refuse image files larger than this many bytes (default 67108864 = 64 MiB).
    #[arg(long, value_name = "BYTES")]
    pub max_image_bytes: Option<u64>,
    /// Memory budget of the context's KV cache in MiB (default: the memory the system reports
    /// available); a --ctx that needs more is refused before anything is allocated.
    #[arg(long, value_name = "MIB")]
    pub max_memory_mb: Option<u64>,
}

impl GenArgs {
    pub fn sampling(&self, model: &Model) -> Result<SamplingParams, Error> {
        let mut p = SamplingParams::from_model(&model.cfg.generation);
        if let Some(t) = self.temperature {
            p.temperature = t;
            if t > 0.0 && p.top_k == 0 && self.top_k.is_none() {
                p.top_k = model.cfg.generation.top_k.unwrap_or(50);
            }
        }
        if let Some(k) = self.top_k {
            p.top_k = k;
        }
        if let Some(x) = self.top_p {
            p.top_p = x;
        }
        if let Some(x) = self.min_p {
            p.min_p = x;
        }
        if let Some(x) = self.repeat_penalty {
            p.repeat_penalty = x;
        }
        p.seed = self.seed;
        p.validate()?;
        if self.max_tokens == 0 {
            return Err(Error::Invalid("--max-tokens must be at least 1".into()));
        }
        Ok(p)
    }

    fn options(&self) -> SessionOptions {
        let mut limits = ImageLimits::default();
        if let Some(p) = self.max_image_pixels {
            limits.max_pixels = p;
            // The pixel count is the limit that matters; let the side lengths and the decoder's
            // allocations follow it (8 bytes per pixel covers RGBA16 and JPEG coefficients).
            limits.max_width = u32::MAX;
            limits.max_height = u32::MAX;
            limits.max_alloc = limits.max_alloc.max(p.saturating_mul(8));
        }
        if let Some(b) = self.max_image_bytes {
            limits.max_bytes = b;
        }
        SessionOptions {
            ctx: self.ctx,
            semantics: Semantics {
                meta_cross_attn: self.meta_cross_attn,
                taps: if self.vision_taps == "input" {
                    TapConvention::LayerInput
                } else {
                    TapConvention::LayerOutput
                },
                cache: CachePrecision::parse(&self.kv_cache).unwrap_or_default(),
            },
            image_limits: limits,
            max_memory: self.max_memory_mb.map(|m| m.saturating_mul(1 << 20)),
            cache_dir: cache_dir(self.cache_dir.as_deref(), self.no_disk_cache),
            disk_cache_bytes: self.disk_cache_mb.map(|m| m.saturating_mul(1 << 20)),
            ..Default::default()
        }
    }
}

/// The vision cache directory: `--cache-dir`, else the platform's; none with `--no-disk-cache`
/// (or when the environment names no cache directory).
pub fn cache_dir(dir: Option<&Path>, off: bool) -> Option<PathBuf> {
    if off {
        return None;
    }
    dir.map(Path::to_path_buf)
        .or_else(mllama::models::mllama::disk_cache::default_dir)
}

/// Add an image, then print the disk cache's warnings (the library returns them).
fn add_image(s: &mut Session, path: &Path) -> Result<(), Error> {
    let r = s.add_image(path);
    for w in s.take_warnings() {
        eprintln!("warning: {w}");
    }
    r
}

fn load(model: Option<PathBuf>, args: &GenArgs) -> Result<(Model, f64, bool), Error> {
    let demo = model.is_none();
    let path = model.unwrap_or_else(demo_model);
    if demo {
        eprintln!(
            "note: no -m given; using the demo model {} (a toy trained on pictures of coloured shapes, not Llama 3.2)",
            path.display()
        );
    }
    let t = Instant::now();
    let m = crate::model_arg::open(&path)?;
    if let Some(mb) = args.image_cache_mb {
        m.image_cache.set_max_bytes(mb << 20);
    }
    if let Some(c) = args.ctx {
        if c == 0 {
            return Err(Error::Invalid("--ctx must be at least 1".into()));
        }
    }
    Ok((m, t.elapsed().as_secs_f64(), demo))
}

fn install_ctrl_c() {
    let _ = ctrlc::set_handler(|| {
        if GENERATING.load(Ordering::SeqCst) {
            CANCEL.store(true, Ordering::SeqCst);
        } else {
            eprintln!("\n(Ctrl-C stops an answer; type /quit or press Ctrl-D to leave)");
        }
    });
}

/// Write generated text as it comes; a closed stdout ends quietly.
fn emit(s: &str) -> Result<(), Error> {
    let mut o = std::io::stdout().lock();
    match o.write_all(s.as_bytes()).and_then(|_| o.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(Error::Invalid(format!("writing to stdout: {e}"))),
    }
}

/// Generate one answer, streaming it to stdout.
fn answer(s: &mut Session, p: &SamplingParams, max: usize) -> Result<String, Error> {
    CANCEL.store(false, Ordering::SeqCst);
    GENERATING.store(true, Ordering::SeqCst);
    let result = (|| {
        let mut text = String::new();
        for piece in s.generate(p, max, Some(&CANCEL))? {
            let piece = piece?;
            emit(&piece.text)?;
            text.push_str(&piece.text);
        }
        Ok(text)
    })();
    GENERATING.store(false, Ordering::SeqCst);
    result
}

fn print_stats(s: &Session, load_s: f64) {
    let st = s.stats();
    let mut l = vec![format!("load {:.2} s", load_s)];
    match s.model().repack_stats() {
        (0, ..) => l.push("weights in place".into()),
        (n, bytes, t) => l.push(format!(
            "repacked {n} matrices ({:.0} MiB) in {t:.2} s",
            bytes as f64 / (1 << 20) as f64
        )),
    }
    if !st.images.is_empty() {
        let m = s.model();
        let prepare: f64 = st.images.iter().map(|im| im.prepare_s).sum();
        l.push(match m.vision_prepared_bytes() {
            0 => format!("vision precision {}", m.vision_precision().name()),
            b => format!(
                "vision precision {} (weights quantized into {:.0} MiB in {prepare:.2} s)",
                m.vision_precision().name(),
                b as f64 / (1 << 20) as f64
            ),
        });
    }
    for (i, im) in st.images.iter().enumerate() {
        let what = match im.source {
            ImageSource::Miss => format!(
                "vision tower + projector {:.2} s, cross K/V {:.2} s, cache write {:.3} s",
                im.vision_s, im.cross_kv_s, im.disk_s
            ),
            ImageSource::Memory => "no vision work".to_string(),
            ImageSource::Disk => format!("read {:.3} s, no vision work", im.disk_s),
        };
        l.push(format!(
            "image {i}: cache={} vision {:.3} s ({what})",
            im.source.name(),
            im.vision_s + im.cross_kv_s + im.disk_s
        ));
    }
    l.push(format!(
        "prefill {} tokens in {:.2} s ({:.1} tokens/s)",
        st.prefill_tokens,
        st.prefill_s,
        st.prefill_tokens as f64 / st.prefill_s.max(1e-9)
    ));
    l.push(format!(
        "decode {} tokens in {:.2} s ({:.2} tokens/s)",
        st.decode_tokens,
        st.decode_s,
        st.decode_tokens as f64 / st.decode_s.max(1e-9)
    ));
    l.push(format!(
        "context {} / {} tokens",
        st.context_tokens,
        s.context_size()
    ));
    l.push(format!(
        "kernels {} on {} threads",
        mllama::kernels::simd_name(),
        rayon::current_num_threads()
    ));
    if let Some(r) = crate::eval::peak_rss_bytes() {
        l.push(format!("peak RSS {:.1} MiB", r as f64 / (1 << 20) as f64));
    }
    eprintln!("{}", l.join("\n"));
}

/// `mllama run`
pub fn run(
    model: Option<PathBuf>,
    images: Vec<PathBuf>,
    prompt: Option<String>,
    raw: bool,
    system: Option<String>,
    args: GenArgs,
) -> Result<(), Error> {
    let (model, load_s, demo) = load(model, &args)?;
    let params = args.sampling(&model)?;
    let mut images = images;
    if demo && images.is_empty() && !raw {
        // The demo model only knows questions about pictures: without --image it is asked about
        // its demo picture.
        if prompt.is_some() {
            eprintln!(
                "note: no --image given; asking about the demo picture {}",
                demo_image().display()
            );
        }
        images.push(demo_image());
    }
    let prompt = match prompt.as_deref() {
        Some("-") => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| Error::Invalid(format!("reading the prompt from stdin: {e}")))?;
            s
        }
        Some(p) => p.to_string(),
        None if demo => "What is in this picture?".to_string(),
        None => {
            return Err(Error::Invalid(
                "no prompt: give -p TEXT (or -p - to read stdin)".into(),
            ))
        }
    };
    if prompt.trim().is_empty() {
        return Err(Error::Invalid("the prompt is empty".into()));
    }
    let mut s = Session::new(model, args.options())?;
    if let Some(sys) = &system {
        s.push_system(sys)?;
    }
    for im in &images {
        add_image(&mut s, im)?;
    }
    if raw {
        s.set_raw_prompt(&prompt)?;
    } else {
        s.push_user(&prompt)?;
    }
    install_ctrl_c();
    answer(&mut s, &params, args.max_tokens)?;
    if std::io::stdout().is_terminal() {
        emit("\n")?;
    }
    if args.stats {
        print_stats(&s, load_s);
    }
    Ok(())
}

const HELP: &str = "commands:
  /image PATH   attach an image to the next message
  /reset        forget the conversation
  /stats        timings of the last answer
  /help         this text
  /quit         leave (also Ctrl-D)
Ctrl-C stops the answer being written.";

/// `mllama chat`
pub fn chat(model: Option<PathBuf>, system: Option<String>, args: GenArgs) -> Result<(), Error> {
    let (model, load_s, _) = load(model, &args)?;
    let params = args.sampling(&model)?;
    let mut s = Session::new(model, args.options())?;
    if let Some(sys) = &system {
        s.push_system(sys)?;
    }
    let interactive = std::io::stdin().is_terminal();
    install_ctrl_c();
    if interactive {
        eprintln!("mllama chat: type a message, /help for commands.");
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
            let _ = std::io::stderr().flush();
        }
        let line = match lines.next() {
            None => break,
            Some(Ok(l)) => l,
            Some(Err(e)) => return Err(Error::Invalid(format!("reading stdin: {e}"))),
        };
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(cmd) = line.strip_prefix('/') {
            let (name, arg) = cmd
                .split_once(' ')
                .map(|(a, b)| (a, b.trim()))
                .unwrap_or((cmd, ""));
            match name {
                "quit" | "exit" => break,
                "help" => eprintln!("{HELP}"),
                "reset" => {
                    s.reset();
                    if let Some(sys) = &system {
                        s.push_system(sys)?;
                    }
                    eprintln!("(conversation reset)");
                }
                "stats" => print_stats(&s, load_s),
                "image" => {
                    if arg.is_empty() {
                        eprintln!("error: /image needs a path");
                        continue;
                    }
                    // A bad image is reported and the chat goes on.
                    match add_image(&mut s, Path::new(arg)) {
                        Ok(()) => eprintln!("(image attached to your next message)"),
                        Err(e) => eprintln!("error: {e}"),
                    }
                }
                other => eprintln!("error: unknown command /{other} (try /help)"),
            }
            continue;
        }
        if let Err(e) = s.push_user(line) {
            eprintln!("error: {e}");
            continue;
        }
        match answer(&mut s, &params, args.max_tokens) {
            Ok(_) => emit("\n")?,
            Err(e) => {
                emit("\n")?;
                eprintln!("error: {e}");
            }
        }
        if args.stats {
            print_stats(&s, load_s);
        }
    }
    Ok(())
}
