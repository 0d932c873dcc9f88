//! Ollama's API (shapes of its `docs/api.md`): `/`, `/api/version`, `/api/tags`, `/api/show`,
//! `/api/ps`, `/api/chat`, `/api/generate`. Generations stream as NDJSON by default; the final
//! object has `done_reason` and nanosecond durations, plus `image_encode_duration` (vision
//! tower, projector and cross-attention K/V of the images encoded for this request).

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

use crate::app::App;
use crate::body::{self, RawBody};
use crate::error::ApiError;
use crate::images;
use crate::registry::ServedModel;
use crate::request::{check_image_count, role, GenOptions, Job, Msg, Prompt, Role};
use crate::time::rfc3339_now;
use crate::worker::{self, Done, Event};

/// The API level reported by `/api/version` (Ollama's numbering; clients check it).
pub const API_VERSION: &str = "0.6.0";

/// `GET /`
pub async fn root() -> &'static str {
    "mllama is running (Ollama and OpenAI APIs)"
}

/// `GET /api/version`
pub async fn version() -> Json<Value> {
    Json(json!({ "version": API_VERSION, "mllama": env!("CARGO_PKG_VERSION") }))
}

fn summary(m: &ServedModel) -> Value {
    json!({
        "name": m.name,
        "model": m.name,
        "modified_at": m.modified_at,
        "size": m.size,
        "digest": m.digest,
        "details": m.details(),
    })
}

/// `GET /api/tags`
pub async fn tags(State(app): State<Arc<App>>) -> Json<Value> {
    let models: Vec<Value> = app.registry.models.iter().map(|m| summary(m)).collect();
    Json(json!({ "models": models }))
}

/// `GET /api/ps`: every served model is loaded for as long as the server runs.
pub async fn ps(State(app): State<Arc<App>>) -> Json<Value> {
    let models: Vec<Value> = app
        .registry
        .models
        .iter()
        .map(|m| {
            let mut v = summary(m);
            v["expires_at"] = json!("9999-12-31T23:59:59Z");
            v["size_vram"] = json!(0);
            v["context_length"] = json!(app.config.ctx.unwrap_or(m.context_length().min(4096)));
            v
        })
        .collect();
    Json(json!({ "models": models }))
}

/// `POST /api/show`
pub async fn show(State(app): State<Arc<App>>, body: RawBody) -> Response {
    let r = (|| {
        let v = body::json_object(body, app.config.max_body_bytes)?;
        let name = body::string(&v, "model")?
            .or(body::string(&v, "name")?)
            .unwrap_or("");
        let m = app.registry.find(name)?;
        Ok::<_, ApiError>(json!({
            "modelfile": format!("# served by mllama from {}\nFROM {}\n", m.path.display(), m.path.display()),
            "parameters": m.parameters_text(),
            "template": m.template(),
            "details": m.details(),
            "model_info": m.model_info(),
            "capabilities": ["completion", "vision"],
            "modified_at": m.modified_at,
        }))
    })();
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The images of a message or request: a list of base64 strings.
fn image_list(v: Option<&Value>, what: &str) -> Result<Vec<Vec<u8>>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let s = x.as_str().ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_image",
                        format!("{what}[{i}] must be a base64 string"),
                    )
                })?;
                images::decode(s, &format!("{what}[{i}]"))
            })
            .collect(),
        Some(other) => Err(ApiError::bad_request(
            "invalid_image",
            format!("{what} must be an array of base64 strings, got {other}"),
        )),
    }
}

/// Which endpoint a generation came from (they differ in the text field's name).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Generate,
}

/// Parsed request: the job, or nothing to generate (a load request).
struct Parsed {
    job: Option<Job>,
    stream: bool,
    model: Arc<ServedModel>,
    unload: bool,
}

fn parse(app: &App, v: &Value, kind: Kind, received: Instant) -> Result<Parsed, ApiError> {
    let model = app.registry.find(body::string(v, "model")?.unwrap_or(""))?;
    let stream = body::boolean(v, "stream", true)?;
    body::unsupported(v, "format", "structured output (format)")?;
    body::unsupported(v, "tools", "tool calling")?;
    body::unsupported(v, "suffix", "fill-in-the-middle (suffix)")?;
    body::unsupported(v, "template", "a per-request template")?;
    let opts = GenOptions::from_ollama(v.get("options").unwrap_or(&Value::Null), "options.")?;
    let unload = matches!(v.get("keep_alive"), Some(k) if k.as_f64() == Some(0.0) || k.as_str() == Some("0"));
    let prompt = match kind {
        Kind::Chat => {
            let msgs = match v.get("messages") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(a)) => a.clone(),
                Some(other) => {
                    return Err(ApiError::bad_request(
                        "invalid_value",
                        format!("messages must be an array, got {other}"),
                    ))
                }
            };
            let mut out = Vec::new();
            for (i, m) in msgs.iter().enumerate() {
                let what = format!("messages[{i}]");
                let r = m.get("role").and_then(Value::as_str).ok_or_else(|| {
                    ApiError::bad_request("invalid_value", format!("{what}.role must be a string"))
                })?;
                let text = match m.get("content") {
                    None | Some(Value::Null) => "",
                    Some(Value::String(s)) => s.as_str(),
                    Some(other) => {
                        return Err(ApiError::bad_request(
                            "invalid_value",
                            format!("{what}.content must be a string, got {other}"),
                        ))
                    }
                };
                let role = role(r, &what)?;
                let images = image_list(m.get("images"), &format!("{what}.images"))?;
                if role != Role::User && !images.is_empty() {
                    return Err(ApiError::bad_request(
                        "invalid_conversation",
                        format!("{what}: images go with user messages"),
                    ));
                }
                out.push(Msg {
                    role,
                    text: text.to_string(),
                    images,
                });
            }
            (!out.is_empty()).then_some(Prompt::Chat(out))
        }
        Kind::Generate => {
            let text = body::string(v, "prompt")?.unwrap_or("");
            let images = image_list(v.get("images"), "images")?;
            if text.is_empty() && images.is_empty() {
                None
            } else if body::boolean(v, "raw", false)? {
                Some(Prompt::Raw {
                    text: text.to_string(),
                    images,
                })
            } else {
                let mut msgs = Vec::new();
                if let Some(sys) = body::string(v, "system")?.filter(|s| !s.is_empty()) {
                    msgs.push(Msg {
                        role: Role::System,
                        text: sys.to_string(),
                        images: Vec::new(),
                    });
                }
                msgs.push(Msg {
                    role: Role::User,
                    text: text.to_string(),
                    images,
                });
                Some(Prompt::Chat(msgs))
            }
        }
    };
    let n_images = match &prompt {
        Some(Prompt::Chat(m)) => m.iter().map(|m| m.images.len()).sum(),
        Some(Prompt::Raw { images, .. }) => images.len(),
        None => 0,
    };
    check_image_count(n_images, app.config.max_images)?;
    let job = match prompt {
        None => None,
        Some(prompt) => Some(Job {
            params: opts.sampling(&model)?,
            max_tokens: opts.max_tokens()?,
            ctx: opts.ctx()?,
            stop: opts.stop.clone(),
            model: Arc::clone(&model),
            prompt,
            received,
        }),
    };
    Ok(Parsed {
        job,
        stream,
        model,
        unload,
    })
}

/// One NDJSON object: a piece of text, or (`done`) the final figures.
fn frame(kind: Kind, model: &str, text: &str, done: Option<&Done>) -> Value {
    let mut v = json!({ "model": model, "created_at": rfc3339_now() });
    match kind {
        Kind::Chat => v["message"] = json!({ "role": "assistant", "content": text }),
        Kind::Generate => v["response"] = json!(text),
    }
    v["done"] = json!(done.is_some());
    if let Some(d) = done {
        let s = &d.started;
        v["done_reason"] = json!(d.finish.as_str());
        v["total_duration"] = json!(d.total_ns);
        v["load_duration"] = json!(s.load_ns);
        v["prompt_eval_count"] = json!(s.prefill_tokens);
        v["prompt_eval_duration"] = json!(s.prefill_ns);
        v["eval_count"] = json!(d.eval_count);
        v["eval_duration"] = json!(d.eval_ns);
        v["image_encode_duration"] = json!(s.image_encode_ns);
        v["images_encoded"] = json!(s.images_encoded);
        v["image_cache_hits"] = json!(s.image_cache_hits);
        v["prompt_tokens"] = json!(s.prompt_tokens);
    }
    v
}

fn line(v: &Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

async fn generation(app: Arc<App>, body: RawBody, kind: Kind) -> Response {
    let received = Instant::now();
    let p = match body::json_object(body, app.config.max_body_bytes)
        .and_then(|v| parse(&app, &v, kind, received))
    {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let name = p.model.name.clone();
    let Some(job) = p.job else {
        let mut v = frame(kind, &name, "", None);
        v["done"] = json!(true);
        v["done_reason"] = json!(if p.unload { "unload" } else { "load" });
        return Json(v).into_response();
    };
    let mut running = match worker::start(&app, job).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if p.stream {
        let events = UnboundedReceiverStream::new(running.events);
        let frames = events.map(move |ev| {
            Ok::<_, std::convert::Infallible>(match ev {
                Event::Text(t) => line(&frame(kind, &name, &t, None)),
                Event::Done(d) => line(&frame(kind, &name, "", Some(&d))),
                Event::Failed(e) => line(&json!({ "error": e.message })),
                Event::Started(_) => Bytes::new(),
            })
        });
        return (
            [(header::CONTENT_TYPE, "application/x-ndjson")],
            Body::from_stream(frames),
        )
            .into_response();
    }
    let mut text = String::new();
    while let Some(ev) = running.events.recv().await {
        match ev {
            Event::Text(t) => text.push_str(&t),
            Event::Done(d) => return Json(frame(kind, &name, &text, Some(&d))).into_response(),
            Event::Failed(e) => return e.into_response(),
            Event::Started(_) => {}
        }
    }
    ApiError::internal("the generation ended without a result").into_response()
}

/// `POST /api/chat`
pub async fn chat(State(app): State<Arc<App>>, body: RawBody) -> Response {
    generation(app, body, Kind::Chat).await
}

/// `POST /api/generate`
pub async fn generate(State(app): State<Arc<App>>, body: RawBody) -> Response {
    generation(app, body, Kind::Generate).await
}
