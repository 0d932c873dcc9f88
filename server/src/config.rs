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
    /// Generations that run at once.
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
}

/// The default port, Ollama's.
pub const DEFAULT_PORT: u16 = 11434;

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            models: Vec::new(),
            parallel: 2,
            queue: 64,
            keep_sessions: 4,
            ctx: None,
            api_key: None,
            max_body_bytes: 100 << 20,
            max_images: 8,
            image_limits: ImageLimits::default(),
            image_cache_bytes: None,
            max_memory: None,
        }
    }
}
