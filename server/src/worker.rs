//! Running a generation: admitted by [`App::admit`], it runs on a blocking thread (never on the
//! async executor) and reports through a channel: [`Event::Started`] once the images are encoded
//! and the prompt prefilled, then text, then [`Event::Done`] with the figures. When the receiver
//! is gone (the client disconnected), the generation stops before its next token.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use mllama::{Generation, Session, SessionOptions};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::app::App;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::pool::History;
use crate::request::{Job, Prompt, Role};
use crate::stop::StopMatcher;

/// Figures known when the prompt is processed.
#[derive(Clone, Debug, Default)]
pub struct Started {
    /// Tokens of the whole prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens processed (the rest came from a kept conversation's KV cache).
    pub prefill_tokens: usize,
    /// Nanoseconds of prefill.
    pub prefill_ns: u64,
    /// Nanoseconds encoding images (vision tower, projector, cross-attention K/V).
    pub image_encode_ns: u64,
    /// Images encoded, and images taken from the cache.
    pub images_encoded: usize,
    /// Images found in the image cache.
    pub image_cache_hits: usize,
    /// Nanoseconds getting a session ready (a kept one, or a new KV cache).
    pub load_ns: u64,
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-turn token or a stop string.
    Stop,
    /// The token budget or the context ran out.
    Length,
}

impl Finish {
    /// The name both APIs use (`stop`, `length`).
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// Figures of a finished generation.
#[derive(Clone, Debug)]
pub struct Done {
    /// Prompt figures.
    pub started: Started,
    /// Tokens generated.
    pub eval_count: usize,
    /// Nanoseconds generating them.
    pub eval_ns: u64,
    /// Nanoseconds from request to end.
    pub total_ns: u64,
    /// Why it ended.
    pub finish: Finish,
}

/// What a running generation reports.
#[derive(Debug)]
pub enum Event {
    /// The prompt is processed; text follows.
    Started(Started),
    /// A piece of the answer.
    Text(String),
    /// The end.
    Done(Box<Done>),
    /// A failure (before `Started`: the request is refused with it).
    Failed(ApiError),
}

/// A generation whose prompt is processed.
pub struct Running {
    /// Prompt figures.
    pub started: Started,
    /// Text and the end.
    pub events: UnboundedReceiver<Event>,
}

/// Wait for a slot, start the job on a blocking thread, and wait until its prompt is processed:
/// errors up to then (bad image, context too small, ...) refuse the request.
pub async fn start(app: &Arc<App>, job: Job) -> Result<Running, ApiError> {
    let permit = app.admit().await?;
    let (tx, mut rx) = unbounded_channel();
    let app2 = Arc::clone(app);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let m = &app2.metrics;
        let _running = RunningGauge::new(m);
        match run(&app2, job, &tx) {
            Ok(true) => Metrics::add(&m.generations_completed, 1),
            Ok(false) => Metrics::add(&m.generations_cancelled, 1),
            Err(e) => {
                Metrics::add(&m.generations_failed, 1);
                let _ = tx.send(Event::Failed(e));
            }
        }
    });
    match rx.recv().await {
        Some(Event::Started(started)) => Ok(Running {
            started,
            events: rx,
        }),
        Some(Event::Failed(e)) => Err(e),
        _ => Err(ApiError::internal("the generation ended unexpectedly")),
    }
}

/// Counts a generation as running while it lives (also if it panics).
struct RunningGauge<'a>(&'a Metrics);

impl<'a> RunningGauge<'a> {
    fn new(m: &'a Metrics) -> Self {
        m.running.fetch_add(1, Ordering::Relaxed);
        RunningGauge(m)
    }
}

impl Drop for RunningGauge<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

fn ns(s: f64) -> u64 {
    (s * 1e9) as u64
}

/// A session for `job`: the kept one that matches its history best, else a new one.
fn session_for(app: &App, job: &Job, want: &History) -> Result<Session, ApiError> {
    let ctx = job.ctx.or(app.config.ctx).unwrap_or(
        job.model
            .context_length()
            .min(mllama::engine::session::DEFAULT_CTX_CAP),
    );
    if let Some(s) = app.pool.take(&job.model.name, ctx, want) {
        return Ok(s);
    }
    let opts = SessionOptions {
        ctx: Some(ctx),
        image_limits: app.config.image_limits.clone(),
        max_memory: app.config.max_memory,
        cache_dir: app.config.cache_dir.clone(),
        disk_cache_bytes: app.config.disk_cache_bytes,
        ..Default::default()
    };
    match Session::new(Arc::clone(&job.model.model), opts.clone()) {
        // Kept conversations hold memory: give it back and try once more.
        Err(mllama::Error::KvMemory { .. }) if !app.pool.is_empty() => {
            app.pool.clear();
            Ok(Session::new(Arc::clone(&job.model.model), opts)?)
        }
        r => Ok(r?),
    }
}

/// Put the job's conversation into the session (replacing what it held; its KV cache stays).
fn fill(s: &mut Session, prompt: &Prompt) -> Result<(), mllama::Error> {
    s.rewind();
    match prompt {
        Prompt::Chat(msgs) => {
            for (i, m) in msgs.iter().enumerate() {
                for (j, im) in m.images.iter().enumerate() {
                    s.add_image_bytes(im, &format!("messages[{i}].images[{j}]"))?;
                }
                match m.role {
                    Role::System => s.push_system(&m.text)?,
                    Role::User => s.push_user(&m.text)?,
                    Role::Assistant => s.push_assistant(&m.text)?,
                }
            }
        }
        Prompt::Raw { text, images } => {
            for (j, im) in images.iter().enumerate() {
                s.add_image_bytes(im, &format!("images[{j}]"))?;
            }
            s.set_raw_prompt(text)?;
        }
    }
    // The disk cache's warnings (unwritable directory, damaged entry re-encoded): the server's
    // log, as `run` prints them.
    for w in s.take_warnings() {
        eprintln!("warning: {w}");
    }
    Ok(())
}

/// A session holding the job's conversation, its images encoded (or found in the cache).
fn prepare(app: &App, job: &Job) -> Result<(Session, Started), ApiError> {
    let m = &app.metrics;
    let t_load = Instant::now();
    let mut s = session_for(app, job, &History::of(&job.prompt, ""))?;
    let load_ns = ns(t_load.elapsed().as_secs_f64());
    let (enc0, hits0) = (s.stats().encoded.len(), s.stats().cache_hits);
    // On an error the session is dropped (its conversation is incomplete).
    fill(&mut s, &job.prompt)?;
    let encoded = &s.stats().encoded[enc0..];
    let started = Started {
        image_encode_ns: encoded.iter().map(|e| ns(e.vision_s + e.cross_kv_s)).sum(),
        images_encoded: encoded.len(),
        image_cache_hits: s.stats().cache_hits - hits0,
        load_ns,
        ..Started::default()
    };
    Metrics::add(&m.images_encoded, started.images_encoded as u64);
    Metrics::add(&m.image_cache_hits, started.image_cache_hits as u64);
    Metrics::add(&m.image_encode_us, started.image_encode_ns / 1000);
    Ok((s, started))
}

/// Send the answer's text as it comes, holding back possible stop strings. Returns whether a
/// stop string ended it and whether the client is still there.
fn relay(
    g: &mut Generation<'_>,
    job: &Job,
    tx: &UnboundedSender<Event>,
    m: &Metrics,
) -> Result<(bool, bool), ApiError> {
    let mut stop = StopMatcher::new(&job.stop);
    let (mut hit, mut alive, mut first) = (false, !tx.is_closed(), true);
    while alive && !hit {
        let Some(piece) = g.next() else { break };
        let piece = piece?;
        if first {
            m.ttft.observe(job.received.elapsed().as_secs_f64());
            first = false;
        }
        let (text, h) = stop.push(&piece.text);
        hit = h;
        if !text.is_empty() {
            alive = tx.send(Event::Text(text)).is_ok();
        }
        alive &= !tx.is_closed();
    }
    let rest = stop.finish();
    if alive && !hit && !rest.is_empty() {
        alive = tx.send(Event::Text(rest)).is_ok();
    }
    Ok((hit, alive))
}

/// Run `job` to its end on this (blocking) thread. `Ok(false)`: the client went away.
fn run(app: &App, job: Job, tx: &UnboundedSender<Event>) -> Result<bool, ApiError> {
    let m = &app.metrics;
    let (mut s, mut started) = prepare(app, &job)?;
    let ctx = s.context_size();
    let (answer, hit, alive) = {
        // On an error the session is dropped (its KV cache may not match its history).
        let mut g = s.generate(&job.params, job.max_tokens, None)?;
        let st = g.stats();
        started.prompt_tokens = st.context_tokens;
        started.prefill_tokens = st.prefill_tokens;
        started.prefill_ns = ns(st.prefill_s);
        Metrics::add(&m.prompt_tokens, st.prefill_tokens as u64);
        Metrics::add(
            &m.reused_tokens,
            (st.context_tokens - st.prefill_tokens) as u64,
        );
        let (hit, alive) = if tx.send(Event::Started(started.clone())).is_ok() {
            relay(&mut g, &job, tx, m)?
        } else {
            (false, false)
        };
        (g.text().to_string(), hit, alive)
    };
    let st = s.stats().clone();
    Metrics::add(&m.generated_tokens, st.decode_tokens as u64);
    // Without a stop string, the end is the budget or a full context unless an end-of-turn
    // token came first.
    let budget = job
        .max_tokens
        .min(ctx.saturating_sub(started.prompt_tokens));
    let finish = if !hit && st.decode_tokens >= budget {
        Finish::Length
    } else {
        Finish::Stop
    };
    app.pool
        .put(&job.model.name, History::of(&job.prompt, &answer), s);
    if !alive {
        return Ok(false);
    }
    m.duration.observe(job.received.elapsed().as_secs_f64());
    let done = Done {
        started,
        eval_count: st.decode_tokens,
        eval_ns: ns(st.decode_s),
        total_ns: ns(job.received.elapsed().as_secs_f64()),
        finish,
    };
    Ok(tx.send(Event::Done(Box::new(done))).is_ok())
}
