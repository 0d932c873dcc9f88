//! `mllama serve`: flags, and the warning for a non-loopback address (the server itself is the
//! `mllama-server` crate).

use std::net::SocketAddr;
use std::path::PathBuf;

use mllama::image::ImageLimits;
use mllama::Error;
use mllama_server::{Config, Server};

/// Flags of `mllama serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// A model to serve: PATH, or NAME=PATH to serve it under a name clients use (e.g.
    /// llama3.2-vision=model.gguf); repeatable. Default: the demo model.
    #[arg(short, long = "model", value_name = "[NAME=]PATH")]
    pub models: Vec<String>,
    /// Address to listen on. Anything but loopback is reachable from the network.
    #[arg(long, default_value = "127.0.0.1:11434")]
    pub addr: SocketAddr,
    /// Generations that run at once (each has its own KV cache; weights are shared). Default:
    /// as many KV caches of the default context as fit in half the available memory, 2 to 16.
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Requests that may wait for a free slot; beyond that, 503.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// Idle conversations kept (each with its KV cache: 512 MiB at 4096 tokens for the 11B
    /// model) so a follow-up turn prefills only its new tokens; dropped when memory runs short.
    #[arg(long, default_value_t = 4)]
    pub keep_sessions: usize,
    /// Default context window in tokens (default: the model's, at most 4096); requests may set
    /// num_ctx.
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Require `Authorization: Bearer KEY` on every API request.
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Largest request body in MiB.
    #[arg(long, default_value_t = 100)]
    pub max_body_mb: usize,
    /// Most images in one request.
    #[arg(long, default_value_t = 8)]
    pub max_images: usize,
    /// Refuse images of more pixels than this, before decoding (default 64 Mpixel).
    #[arg(long, value_name = "PIXELS")]
    pub max_image_pixels: Option<u64>,
    /// Refuse image files larger than this many bytes (default 64 MiB).
    #[arg(long, value_name = "BYTES")]
    pub max_image_bytes: Option<u64>,
    /// Most memory for cached image encodings, in MiB (default 2048).
    #[arg(long)]
    pub image_cache_mb: Option<usize>,
    /// Memory budget of one conversation's KV cache in MiB (default: the memory available).
    #[arg(long, value_name = "MIB")]
    pub max_memory_mb: Option<u64>,
    /// Vision cache directory (default: $XDG_CACHE_HOME/mllama or ~/.cache/mllama): each
    /// image's cross-attention K/V, read back by later requests and processes.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Do not read or write the vision cache on disk.
    #[arg(long)]
    pub no_disk_cache: bool,
    /// Most MiB the vision cache directory may hold (default 4096).
    #[arg(long, value_name = "MIB")]
    pub disk_cache_mb: Option<u64>,
}

/// The library's image limits with the flags applied (as `run` and `chat` do).
fn limits(a: &ServeArgs) -> ImageLimits {
    let mut l = ImageLimits::default();
    if let Some(p) = a.max_image_pixels {
        l.max_pixels = p;
        l.max_width = u32::MAX;
        l.max_height = u32::MAX;
        l.max_alloc = l.max_alloc.max(p.saturating_mul(8));
    }
    if let Some(b) = a.max_image_bytes {
        l.max_bytes = b;
    }
    l
}

/// `mllama serve`
pub fn serve(a: ServeArgs) -> Result<(), Error> {
    let mut models: Vec<(Option<String>, PathBuf)> = a
        .models
        .iter()
        .map(|s| mllama_server::registry::parse_spec(s))
        .collect();
    if models.is_empty() {
        eprintln!(
            "note: no -m given; serving the demo model (a toy trained on pictures of coloured shapes, not Llama 3.2)"
        );
        models.push((None, crate::cli::demo_model()));
    }
    if a.parallel == Some(0) {
        return Err(Error::Invalid("--parallel must be at least 1".into()));
    }
    if a.ctx == Some(0) {
        return Err(Error::Invalid("--ctx must be at least 1".into()));
    }
    let config = Config {
        addr: a.addr,
        models,
        parallel: a.parallel.unwrap_or(0),
        queue: a.queue,
        keep_sessions: a.keep_sessions,
        ctx: a.ctx,
        api_key: a.api_key.clone(),
        max_body_bytes: a.max_body_mb.saturating_mul(1 << 20),
        max_images: a.max_images,
        image_limits: limits(&a),
        image_cache_bytes: a.image_cache_mb.map(|m| m.saturating_mul(1 << 20)),
        max_memory: a.max_memory_mb.map(|m| m.saturating_mul(1 << 20)),
        cache_dir: crate::cli::cache_dir(a.cache_dir.as_deref(), a.no_disk_cache),
        disk_cache_bytes: a.disk_cache_mb.map(|m| m.saturating_mul(1 << 20)),
    };
    let server = Server::bind(config)?;
    let addr = server.local_addr();
    if !addr.ip().is_loopback() {
        eprintln!(
            "warning: listening on {addr}, reachable from other machines{}",
            if a.api_key.is_some() {
                " (requests need the --api-key)"
            } else {
                ", with no authentication (set --api-key)"
            }
        );
    }
    for m in server.models() {
        eprintln!(
            "model {} ({}), loaded in {:.2} s",
            m.name,
            m.path.display(),
            m.load_s
        );
    }
    eprintln!(
        "mllama serve: listening on http://{addr} (Ollama API /api/*, OpenAI API /v1/*); {} parallel, kernels {}",
        server.parallel(),
        mllama::kernels::simd_name()
    );
    server
        .run()
        .map_err(|e| Error::Invalid(format!("server: {e}")))
}
