//! `mllama serve`: an HTTP server speaking Ollama's API (`/api/*`) and OpenAI's
//! (`/v1/chat/completions`, `/v1/models`) over the mllama library, so that apps and clients
//! written for a local Ollama work unchanged with Llama 3.2 Vision.
//!
//! ```no_run
//! use mllama_server::{Config, Server};
//!
//! let config = Config {
//!     models: vec![(Some("llama3.2-vision".into()), "model.gguf".into())],
//!     ..Config::default()
//! };
//! let server = Server::bind(config)?;
//! println!("listening on {}", server.local_addr());
//! server.run().map_err(|e| mllama::Error::Invalid(e.to_string()))?;
//! # Ok::<(), mllama::Error>(())
//! ```
//!
//! Each model is loaded once and shared (`Arc<Model>`) by every request. Generations run on
//! blocking threads, `Config::parallel` at a time, with up to `Config::queue` waiting (then 503);
//! a client that disconnects stops its generation before the next token. Recent conversations'
//! sessions are kept, so a follow-up turn prefills only its new tokens.
//!
//! Module map, lowest layer first (a module uses only those above it):
//! - [`time`], [`error`] (statuses and both APIs' error shapes), [`images`] (base64, `data:`
//!   URIs), [`stop`] (stop strings), [`metrics`] (Prometheus counters), [`config`], [`body`]
//!   (body limit, JSON fields).
//! - [`registry`]: served models and what the listing endpoints report.
//! - [`request`]: the generation request both APIs parse into ([`request::Job`]), options.
//! - [`pool`]: kept sessions, matched by conversation history.
//! - [`app`]: shared state and admission (parallel slots, queue).
//! - [`worker`]: a generation on a blocking thread, reporting through a channel.
//! - [`ollama`], [`openai`]: the two APIs' handlers.
//! - [`http`]: routes, API key, request counting, [`Server`].

#![warn(missing_docs)]

pub mod app;
pub mod body;
pub mod config;
pub mod error;
pub mod http;
pub mod images;
pub mod metrics;
pub mod ollama;
pub mod openai;
pub mod pool;
pub mod registry;
pub mod request;
pub mod stop;
pub mod time;
pub mod worker;

pub use config::Config;
pub use error::ApiError;
pub use http::{router, Server, Spawned};
