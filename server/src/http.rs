//! The HTTP side: routes, the bearer-key check, request counting, and the listening [`Server`].

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::app::App;
use crate::config::Config;
use crate::error::{ApiError, Dialect};
use crate::registry::{Registry, ServedModel};
use crate::{ollama, openai};

fn dialect(path: &str) -> Dialect {
    if path.starts_with("/v1/") {
        Dialect::OpenAi
    } else {
        Dialect::Ollama
    }
}

/// Refuse API requests without `Authorization: Bearer KEY` when a key is set (`/` and
/// `/health` stay open).
async fn auth(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(key) = &app.config.api_key {
        let path = req.uri().path();
        let open = path == "/" || path == "/health";
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !open && given != Some(key.as_str()) {
            let e = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "missing or wrong API key: send Authorization: Bearer <key> (--api-key)",
            );
            return e.into_response_for(dialect(path));
        }
    }
    next.run(req).await
}

/// Count every request by route and status.
async fn count(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    app.metrics.request(&route, resp.status().as_u16());
    resp
}

async fn health(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "models": app.registry.models.iter().map(|m| m.name.clone()).collect::<Vec<_>>(),
        "uptime_s": app.started.elapsed().as_secs(),
    }))
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

async fn not_found(req: Request) -> Response {
    let path = req.uri().path().to_string();
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no such endpoint: {} {path}", req.method()),
    )
    .into_response_for(dialect(&path))
}

/// Every route over the shared state.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(ollama::root).head(ollama::root))
        .route("/api/version", get(ollama::version))
        .route("/api/tags", get(ollama::tags))
        .route("/api/ps", get(ollama::ps))
        .route("/api/show", post(ollama::show))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{id}", get(openai::model))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(app.config.max_body_bytes))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&app), count))
        .layer(middleware::from_fn_with_state(Arc::clone(&app), auth))
        .with_state(app)
}

/// A server with its models loaded and its socket bound, ready to [`run`](Server::run).
pub struct Server {
    app: Arc<App>,
    listener: std::net::TcpListener,
}

/// A server running on a background thread ([`Server::spawn`]); dropping it stops the server.
pub struct Spawned {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Server {
    /// Load every model of `config` (each once, memory-mapped) and bind its address.
    ///
    /// # Errors
    ///
    /// The library's error for a model that does not load, [`mllama::Error::Invalid`] for no
    /// models, a bad setting or an address that cannot be bound.
    pub fn bind(config: Config) -> Result<Server, mllama::Error> {
        if config.models.is_empty() {
            return Err(mllama::Error::Invalid(
                "no model to serve: give -m MODEL.gguf".into(),
            ));
        }
        let mut config = config;
        let mut models: Vec<Arc<ServedModel>> = Vec::new();
        for (name, path) in &config.models {
            let m = ServedModel::load(name.clone(), path)?;
            if let Some(b) = config.image_cache_bytes {
                m.model.image_cache.set_max_bytes(b);
            }
            if models.iter().any(|o| o.name == m.name) {
                return Err(mllama::Error::Invalid(format!(
                    "two models are named {}; name them with -m NAME=PATH",
                    m.name
                )));
            }
            models.push(Arc::new(m));
        }
        if config.parallel == 0 {
            config.parallel = crate::config::auto_parallel(&models, config.ctx);
        }
        let listener = std::net::TcpListener::bind(config.addr).map_err(|e| {
            mllama::Error::Invalid(format!("cannot listen on {}: {e}", config.addr))
        })?;
        listener.set_nonblocking(true).map_err(|e| {
            mllama::Error::Invalid(format!("cannot listen on {}: {e}", config.addr))
        })?;
        let app = Arc::new(App::new(config, Registry { models }));
        Ok(Server { app, listener })
    }

    /// The bound address (the real port when the configured one was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.app.config.addr)
    }

    /// Generations that run at once (`Config::parallel`, or what [`auto_parallel`] chose).
    ///
    /// [`auto_parallel`]: crate::config::auto_parallel
    pub fn parallel(&self) -> usize {
        self.app.config.parallel
    }

    /// The served models.
    pub fn models(&self) -> &[Arc<ServedModel>] {
        &self.app.registry.models
    }

    async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::from_std(self.listener)?;
        axum::serve(listener, router(self.app))
            .with_graceful_shutdown(shutdown)
            .await
    }

    fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mllama-http")
            .enable_all()
            .build()
    }

    /// Serve until Ctrl-C (blocks the calling thread; generations run on their own threads).
    pub fn run(self) -> std::io::Result<()> {
        Self::runtime()?.block_on(self.serve(async {
            let _ = tokio::signal::ctrl_c().await;
        }))
    }

    /// Serve on a background thread until the returned handle is dropped (for tests and
    /// embedding).
    pub fn spawn(self) -> std::io::Result<Spawned> {
        let addr = self.local_addr();
        let rt = Self::runtime()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let _ = rt.block_on(self.serve(async {
                let _ = rx.await;
            }));
        });
        Ok(Spawned {
            addr,
            stop: Some(tx),
            thread: Some(thread),
        })
    }
}
