//! How a server runs: where it listens, what it serves, and its limits.

use std::net::SocketAddr;
use std::path::PathBuf;

use mllama::image::ImageLimits;

/// Settings of [`Server::bind`](crate::Server::bind); [`Default`] gives `mllama serve`'s
/// defaults (no models).
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on (default `127.0.0.1:11434`; port 0 picks a free one).
    pub addr: SocketAddr,
    /// Models to serve: `(name, path)`; no name means the file's stem.
    pub models: Vec<(Option<String>, PathBuf)>,
    /// Generations that run at once (0: [`auto_parallel`], what memory allows).
    pub parallel: usize,
    /// Requests that may wait for a slot; beyond that, 503.
    pub queue: usize,
    /// Idle conversations kept for prefix reuse.
    pub keep_sessions: usize,
    /// Default context window (`None`: the model's, at most 4096 tokens); requests may set
    /// their own (`num_ctx`).
    pub ctx: Option<usize>,
    /// Bearer token every API request must carry (`None`: no check).
    pub api_key: Option<String>,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Most images in one request.
    pub max_images: usize,
    /// Limits checked before an image is decoded.
    pub image_limits: ImageLimits,
    /// Most memory for cached image encodings, in bytes (`None`: the library's default).
    pub image_cache_bytes: Option<usize>,
    /// Memory budget of one session's KV cache in bytes (`None`: what the system has).
    pub max_memory: Option<u64>,
    /// Directory of the vision cache on disk (`None`: no disk cache); images encoded by one
    /// server (or `mllama run`) are read back by the next.
    pub cache_dir: Option<PathBuf>,
    /// Most bytes the vision cache directory may hold (`None`: the library's default, 4 GiB).
    pub disk_cache_bytes: Option<u64>,
}

/// Most generations [`auto_parallel`] allows (each runs on its own thread).
pub const MAX_AUTO_PARALLEL: usize = 16;

/// `--parallel` by default: as many sessions as fit, with the KV cache of the default context
/// of the largest model, in half the memory the system reports available; at least 2, at most
/// [`MAX_AUTO_PARALLEL`] (2 when the available memory is unknown).
pub fn auto_parallel(
    models: &[std::sync::Arc<crate::registry::ServedModel>],
    ctx: Option<usize>,
) -> usize {
    let per_session = models
        .iter()
        .map(|m| {
            let c = ctx.unwrap_or(
                m.context_length()
                    .min(mllama::engine::session::DEFAULT_CTX_CAP),
            );
            let half = mllama::Semantics::default().cache.half(&m.model.text);
            mllama::models::mllama::text::KvCache::bytes_for(&m.model.text, c, half) as u64
        })
        .max()
        .unwrap_or(1)
        .max(1);
    match mllama::engine::session::available_memory() {
        Some(avail) => ((avail / 2 / per_session) as usize).clamp(2, MAX_AUTO_PARALLEL),
        None => 2,
    }
}

/// The default port, Ollama's.
pub const DEFAULT_PORT: u16 = 11434;

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            models: Vec::new(),
            parallel: 0,
            queue: 64,
            keep_sessions: 4,
            ctx: None,
            api_key: None,
            max_body_bytes: 100 << 20,
            max_images: 8,
            image_limits: ImageLimits::default(),
            image_cache_bytes: None,
            max_memory: None,
            cache_dir: None,
            disk_cache_bytes: None,
        }
    }
}
