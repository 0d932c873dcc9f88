//! OpenAI's API: `POST /v1/chat/completions` (string or content-part messages, images as
//! `image_url` with `data:` URIs or raw base64; SSE streaming ending with `data: [DONE]`,
//! `stream_options.include_usage`) and `GET /v1/models`. Errors are
//! `{"error": {"message", "type", "param", "code"}}`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

use crate::app::App;
use crate::body::{self, RawBody};
use crate::error::{ApiError, Dialect};
use crate::images;
use crate::registry::ServedModel;
use crate::request::{
    check_image_count, integer, number, role, stops, GenOptions, Job, Msg, Prompt, Role,
};
use crate::time::unix_now;
use crate::worker::{self, Done, Event};

fn model_entry(m: &ServedModel) -> Value {
    json!({ "id": m.name, "object": "model", "created": 0, "owned_by": "mllama" })
}

/// `GET /v1/models`
pub async fn models(State(app): State<Arc<App>>) -> Json<Value> {
    let data: Vec<Value> = app.registry.models.iter().map(|m| model_entry(m)).collect();
    Json(json!({ "object": "list", "data": data }))
}

/// `GET /v1/models/{id}`
pub async fn model(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.registry.find(&id) {
        Ok(m) => Json(model_entry(&m)).into_response(),
        Err(e) => e.into_response_for(Dialect::OpenAi),
    }
}

/// A message's content: a string, or parts (`text`, `image_url`). Image parts become images of
/// the message (placed first, or where the text has `<|image|>`).
fn content(m: &Value, what: &str) -> Result<(String, Vec<Vec<u8>>), ApiError> {
    match m.get("content") {
        None | Some(Value::Null) => Ok((String::new(), Vec::new())),
        Some(Value::String(s)) => Ok((s.clone(), Vec::new())),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            let mut imgs = Vec::new();
            for (j, p) in parts.iter().enumerate() {
                let pw = format!("{what}.content[{j}]");
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let t = p.get("text").and_then(Value::as_str).ok_or_else(|| {
                            ApiError::bad_request(
                                "invalid_value",
                                format!("{pw}.text must be a string"),
                            )
                        })?;
                        if !text.is_empty() && !t.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(t);
                    }
                    Some("image_url") => {
                        let url = match p.get("image_url") {
                            Some(Value::String(s)) => s.as_str(),
                            Some(o) => o.get("url").and_then(Value::as_str).ok_or_else(|| {
                                ApiError::bad_request(
                                    "invalid_image",
                                    format!("{pw}.image_url.url must be a string"),
                                )
                            })?,
                            None => {
                                return Err(ApiError::bad_request(
                                    "invalid_image",
                                    format!("{pw}: image_url missing"),
                                ))
                            }
                        };
                        imgs.push(images::decode(url, &pw)?);
                    }
                    other => {
                        return Err(ApiError::bad_request(
                            "unsupported",
                            format!(
                            "{pw}: content part type {other:?} is not supported (text, image_url)"
                        ),
                        ))
                    }
                }
            }
            Ok((text, imgs))
        }
        Some(other) => Err(ApiError::bad_request(
            "invalid_value",
            format!("{what}.content must be a string or an array of parts, got {other}"),
        )),
    }
}

struct Parsed {
    job: Job,
    stream: bool,
    include_usage: bool,
}

fn parse(app: &App, v: &Value, received: Instant) -> Result<Parsed, ApiError> {
    let model = app.registry.find(body::string(v, "model")?.unwrap_or(""))?;
    let stream = body::boolean(v, "stream", false)?;
    let include_usage = v
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    body::unsupported(v, "tools", "tool calling")?;
    if let Some(n) = integer(v, "n", "")? {
        if n != 1 {
            return Err(ApiError::bad_request(
                "unsupported",
                format!("n = {n}: only one choice (n = 1) is supported"),
            ));
        }
    }
    for k in ["frequency_penalty", "presence_penalty"] {
        if number(v, k, "")?.is_some_and(|x| x != 0.0) {
            return Err(ApiError::bad_request(
                "unsupported",
                format!("{k} is not supported (use 0)"),
            ));
        }
    }
    if let Some(f) = v
        .get("response_format")
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str)
    {
        if f != "text" {
            return Err(ApiError::bad_request(
                "unsupported",
                format!("response_format {f} is not supported"),
            ));
        }
    }
    let msgs = v.get("messages").and_then(Value::as_array).ok_or_else(|| {
        ApiError::bad_request("invalid_value", "messages must be a non-empty array")
    })?;
    let mut out = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let what = format!("messages[{i}]");
        let r = m.get("role").and_then(Value::as_str).ok_or_else(|| {
            ApiError::bad_request("invalid_value", format!("{what}.role must be a string"))
        })?;
        let role = role(r, &what)?;
        let (text, images) = content(m, &what)?;
        if role != Role::User && !images.is_empty() {
            return Err(ApiError::bad_request(
                "invalid_conversation",
                format!("{what}: images go with user messages"),
            ));
        }
        out.push(Msg { role, text, images });
    }
    if out.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_value",
            "messages must be a non-empty array",
        ));
    }
    check_image_count(
        out.iter().map(|m| m.images.len()).sum(),
        app.config.max_images,
    )?;
    let max = match integer(v, "max_completion_tokens", "")? {
        Some(n) => Some(("max_completion_tokens", n)),
        None => integer(v, "max_tokens", "")?.map(|n| ("max_tokens", n)),
    };
    let opts = GenOptions {
        temperature: number(v, "temperature", "")?,
        top_p: number(v, "top_p", "")?,
        seed: integer(v, "seed", "")?,
        stop: stops(v.get("stop"), "stop")?,
        ..GenOptions::default()
    };
    let max_tokens = match max {
        None => usize::MAX,
        Some((k, n)) => usize::try_from(n).ok().filter(|&n| n >= 1).ok_or_else(|| {
            ApiError::bad_request("invalid_value", format!("{k} must be ≥ 1, got {n}"))
        })?,
    };
    Ok(Parsed {
        job: Job {
            params: opts.sampling(&model)?,
            max_tokens,
            ctx: None,
            stop: opts.stop,
            model,
            prompt: Prompt::Chat(out),
            received,
        },
        stream,
        include_usage,
    })
}

fn usage(d: &Done) -> Value {
    let p = d.started.prompt_tokens;
    json!({
        "prompt_tokens": p,
        "completion_tokens": d.eval_count,
        "total_tokens": p + d.eval_count,
        "prompt_tokens_details": { "cached_tokens": p - d.started.prefill_tokens },
    })
}

fn sse(v: &Value) -> String {
    format!("data: {v}\n\n")
}

/// `POST /v1/chat/completions`
pub async fn chat_completions(State(app): State<Arc<App>>, body: RawBody) -> Response {
    let received = Instant::now();
    let p = match body::json_object(body, app.config.max_body_bytes)
        .and_then(|v| parse(&app, &v, received))
    {
        Ok(p) => p,
        Err(e) => return e.into_response_for(Dialect::OpenAi),
    };
    let name = p.job.model.name.clone();
    let mut running = match worker::start(&app, p.job).await {
        Ok(r) => r,
        Err(e) => return e.into_response_for(Dialect::OpenAi),
    };
    let id = format!(
        "chatcmpl-{:x}{:x}",
        unix_now(),
        received.elapsed().subsec_nanos()
    );
    let created = unix_now();
    if p.stream {
        let include_usage = p.include_usage;
        let chunk = move |delta: Value, finish: Option<&str>| {
            let mut c = json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": name,
                "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
            });
            if include_usage {
                c["usage"] = Value::Null;
            }
            c
        };
        let first = sse(&chunk(json!({ "role": "assistant", "content": "" }), None));
        let events = UnboundedReceiverStream::new(running.events);
        let frames = events.map(move |ev| {
            Ok::<_, std::convert::Infallible>(Bytes::from(match ev {
                Event::Text(t) => sse(&chunk(json!({ "content": t }), None)),
                Event::Done(d) => {
                    let mut s = sse(&chunk(json!({}), Some(d.finish.as_str())));
                    if include_usage {
                        let mut u = chunk(json!({}), None);
                        u["choices"] = json!([]);
                        u["usage"] = usage(&d);
                        s.push_str(&sse(&u));
                    }
                    s.push_str("data: [DONE]\n\n");
                    s
                }
                Event::Failed(e) => sse(&json!({ "error": { "message": e.message, "type": "server_error", "code": e.code } })),
                Event::Started(_) => String::new(),
            }))
        });
        let head = tokio_stream::once(Ok(Bytes::from(first)));
        return (
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            Body::from_stream(head.chain(frames)),
        )
            .into_response();
    }
    let mut text = String::new();
    while let Some(ev) = running.events.recv().await {
        match ev {
            Event::Text(t) => text.push_str(&t),
            Event::Done(d) => {
                return Json(json!({
                    "id": id, "object": "chat.completion", "created": created, "model": name,
                    "choices": [{
                        "index": 0,
                        "message": { "role": "assistant", "content": text },
                        "finish_reason": d.finish.as_str(),
                    }],
                    "usage": usage(&d),
                }))
                .into_response()
            }
            Event::Failed(e) => return e.into_response_for(Dialect::OpenAi),
            Event::Started(_) => {}
        }
    }
    ApiError::internal("the generation ended without a result").into_response_for(Dialect::OpenAi)
}
