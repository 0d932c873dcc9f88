//! The state every handler shares: configuration, models, kept sessions, metrics, and the
//! admission of generations (`--parallel` slots, a `--queue` of waiting requests, then 503).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::pool::SessionPool;
use crate::registry::Registry;

/// Shared server state.
pub struct App {
    /// Settings.
    pub config: Config,
    /// Served models.
    pub registry: Registry,
    /// Kept conversations.
    pub pool: SessionPool,
    /// Counters.
    pub metrics: Metrics,
    /// One permit per generation slot.
    slots: Arc<Semaphore>,
    /// When the server started.
    pub started: Instant,
}

/// Decrements the queued gauge when a waiting request leaves the queue (admitted or gone).
struct Queued<'a>(&'a Metrics);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

impl App {
    /// State over loaded models.
    pub fn new(config: Config, registry: Registry) -> App {
        App {
            pool: SessionPool::new(config.keep_sessions),
            slots: Arc::new(Semaphore::new(config.parallel.max(1))),
            config,
            registry,
            metrics: Metrics::default(),
            started: Instant::now(),
        }
    }

    /// A generation slot: at once if one is free, after waiting if the queue has room, else a
    /// 503. Dropping the future (the client went away) leaves the queue.
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        if let Ok(p) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(p);
        }
        let waiting = self.metrics.queued.fetch_add(1, Ordering::Relaxed);
        let _queued = Queued(&self.metrics);
        if waiting as usize >= self.config.queue {
            Metrics::add(&self.metrics.rejected_busy, 1);
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_busy",
                format!(
                    "server busy: {} generations running and {} requests queued (--parallel, --queue); try again later",
                    self.config.parallel, self.config.queue
                ),
            ));
        }
        Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| ApiError::internal("the server is shutting down"))
    }
}
