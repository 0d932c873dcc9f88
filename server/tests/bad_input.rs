//! The bad-input matrix: every refusal is a 4xx JSON error naming the problem, in the API's
//! shape, and the server keeps answering (`/api/version`) after each.

mod common;

use common::*;
use mllama::image::ImageLimits;
use serde_json::{json, Value};

fn chat(extra: Value) -> Value {
    let mut v = json!({ "model": "demo", "stream": false, "messages": [{ "role": "user", "content": "Hi" }] });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

/// Send `body` (raw text) to `path`; check the status, that the error names `needle`, and that
/// the server still answers.
fn refuse(addr: std::net::SocketAddr, path: &str, body: &str, status: u16, needle: &str) {
    let r = request(addr, "POST", path, body, &[]);
    assert_eq!(r.status, status, "{path} {body:.200}: {}", r.body);
    let v = r.json();
    let msg = if path.starts_with("/v1/") {
        assert!(
            v["error"]["type"].is_string() && v["error"]["code"].is_string(),
            "{v}"
        );
        v["error"]["message"].as_str().unwrap().to_string()
    } else {
        v["error"].as_str().unwrap().to_string()
    };
    assert!(
        msg.contains(needle),
        "{path}: {msg:?} does not name {needle:?}"
    );
    assert!(!msg.contains('\n'), "one line: {msg:?}");
    assert_eq!(
        get(addr, "/api/version").status,
        200,
        "server down after {body:.200}"
    );
}

#[test]
fn bad_requests_are_refused_and_the_server_keeps_serving() {
    let srv = start(|_| {});
    let a = srv.addr;
    let img = b64(&demo_image());
    let with_opts = |o: Value| chat(json!({ "options": o })).to_string();
    refuse(a, "/api/chat", "{\"model\": ", 400, "malformed JSON");
    refuse(a, "/api/chat", "[1, 2]", 400, "JSON object");
    refuse(a, "/api/chat", "", 400, "empty request body");
    refuse(
        a,
        "/api/chat",
        &chat(json!({ "model": "llama9" })).to_string(),
        404,
        "llama9",
    );
    refuse(
        a,
        "/api/chat",
        &chat(json!({ "model": null })).to_string(),
        400,
        "no model",
    );
    refuse(
        a,
        "/api/chat",
        &chat(json!({ "stream": "yes" })).to_string(),
        400,
        "stream",
    );
    refuse(
        a,
        "/api/chat",
        &chat(json!({ "format": "json" })).to_string(),
        400,
        "format",
    );
    refuse(
        a,
        "/api/chat",
        &chat(json!({ "messages": "hi" })).to_string(),
        400,
        "messages",
    );
    refuse(
        a,
        "/api/chat",
        &chat(json!({ "messages": [{ "role": "tool", "content": "x" }] })).to_string(),
        400,
        "role 'tool'",
    );
    refuse(
        a,
        "/api/chat",
        &chat(json!({ "messages": [{ "role": "user", "content": "x" }, { "role": "system", "content": "late" }] })).to_string(),
        400,
        "system message",
    );
    let bad_b64 = json!([{ "role": "user", "content": "x", "images": ["@@not base64@@"] }]);
    refuse(
        a,
        "/api/chat",
        &chat(json!({ "messages": bad_b64 })).to_string(),
        400,
        "messages[0].images[0]: not valid base64",
    );
    let not_image =
        json!([{ "role": "user", "content": "x", "images": [b64(b"hello, this is text")] }]);
    refuse(
        a,
        "/api/chat",
        &chat(json!({ "messages": not_image })).to_string(),
        400,
        "messages[0].images[0]",
    );
    refuse(
        a,
        "/api/chat",
        &with_opts(json!({ "temperature": -1 })),
        400,
        "temperature",
    );
    refuse(
        a,
        "/api/chat",
        &with_opts(json!({ "temperature": "hot" })),
        400,
        "options.temperature",
    );
    refuse(
        a,
        "/api/chat",
        &with_opts(json!({ "top_p": 2.0 })),
        400,
        "top_p",
    );
    refuse(
        a,
        "/api/chat",
        &with_opts(json!({ "top_k": -5 })),
        400,
        "top_k",
    );
    refuse(
        a,
        "/api/chat",
        &with_opts(json!({ "repeat_penalty": 0 })),
        400,
        "repeat_penalty",
    );
    refuse(
        a,
        "/api/chat",
        &with_opts(json!({ "num_predict": -7 })),
        400,
        "num_predict",
    );
    refuse(
        a,
        "/api/chat",
        &with_opts(json!({ "num_ctx": 0 })),
        400,
        "num_ctx",
    );
    refuse(
        a,
        "/api/chat",
        &with_opts(json!({ "num_ctx": 100_000_000 })),
        400,
        "at most",
    );
    refuse(
        a,
        "/api/chat",
        &with_opts(json!({ "stop": [1, 2] })),
        400,
        "stop",
    );
    // A prompt longer than the context.
    let long = "word ".repeat(400);
    let body =
        json!({ "model": "demo", "prompt": long, "stream": false, "options": { "num_ctx": 64 } });
    refuse(
        a,
        "/api/generate",
        &body.to_string(),
        400,
        "do not fit in the context of 64",
    );
    // More images than --max-images (8).
    let nine = json!({ "model": "demo", "prompt": "x", "images": vec![img.clone(); 9] });
    refuse(a, "/api/generate", &nine.to_string(), 413, "at most 8");
    // OpenAI's shape.
    refuse(a, "/v1/chat/completions", "{", 400, "malformed JSON");
    let oa = |extra: Value| {
        let mut v = json!({ "model": "demo", "messages": [{ "role": "user", "content": "Hi" }] });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v.to_string()
    };
    refuse(
        a,
        "/v1/chat/completions",
        &oa(json!({ "model": "gpt-4o" })),
        404,
        "gpt-4o",
    );
    refuse(
        a,
        "/v1/chat/completions",
        &oa(json!({ "n": 2 })),
        400,
        "n = 2",
    );
    refuse(
        a,
        "/v1/chat/completions",
        &oa(json!({ "max_tokens": 0 })),
        400,
        "max_tokens",
    );
    refuse(
        a,
        "/v1/chat/completions",
        &oa(json!({ "temperature": -0.5 })),
        400,
        "temperature",
    );
    refuse(
        a,
        "/v1/chat/completions",
        &oa(json!({ "messages": [] })),
        400,
        "messages",
    );
    let remote = json!([{ "role": "user", "content": [{ "type": "image_url", "image_url": { "url": "https://example.com/a.png" } }] }]);
    refuse(
        a,
        "/v1/chat/completions",
        &oa(json!({ "messages": remote })),
        400,
        "not fetched",
    );
    let part = json!([{ "role": "user", "content": [{ "type": "input_audio" }] }]);
    refuse(
        a,
        "/v1/chat/completions",
        &oa(json!({ "messages": part })),
        400,
        "input_audio",
    );
    // Unknown endpoints.
    let r = get(a, "/api/pull");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().unwrap().contains("/api/pull"));
}

#[test]
fn size_limits_are_413_naming_the_limit() {
    let srv = start(|c| {
        c.max_body_bytes = 200_000;
        c.max_images = 2;
        c.image_limits = ImageLimits {
            max_bytes: 20_000,
            max_pixels: 1000,
            ..ImageLimits::default()
        };
    });
    let a = srv.addr;
    let big = json!({ "model": "demo", "prompt": "x".repeat(300_000) });
    refuse(
        a,
        "/api/generate",
        &big.to_string(),
        413,
        "request body larger than 200000 bytes",
    );
    let three = json!({ "model": "demo", "prompt": "x", "images": vec![b64(&bmp(8, 8)); 3] });
    refuse(a, "/api/generate", &three.to_string(), 413, "at most 2");
    // The demo JPEG (25 kB) is above the 20 kB image limit.
    let jpg = json!({ "model": "demo", "prompt": "x", "images": [b64(&demo_image())] });
    refuse(a, "/api/generate", &jpg.to_string(), 413, "images[0]");
    // 64×48 pixels are above the 1000-pixel limit.
    let px = json!({ "model": "demo", "prompt": "x", "images": [b64(&bmp(64, 48))] });
    refuse(a, "/api/generate", &px.to_string(), 413, "pixels");
    // Within the limits, the same server answers.
    let ok = json!({ "model": "demo", "prompt": "x", "images": [b64(&bmp(30, 30))], "stream": false, "options": { "num_predict": 2 } });
    assert_eq!(post(a, "/api/generate", &ok).status, 200);
}

#[test]
fn api_key_is_required_when_set() {
    let srv = start(|c| c.api_key = Some("s3cret".into()));
    let a = srv.addr;
    assert_eq!(get(a, "/").status, 200);
    assert_eq!(get(a, "/health").status, 200);
    let r = get(a, "/api/tags");
    assert_eq!(r.status, 401);
    assert!(r.json()["error"].as_str().unwrap().contains("API key"));
    let r = get(a, "/v1/models");
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    let r = request(
        a,
        "GET",
        "/v1/models",
        "",
        &[("Authorization", "Bearer wrong")],
    );
    assert_eq!(r.status, 401);
    let r = request(
        a,
        "GET",
        "/v1/models",
        "",
        &[("Authorization", "Bearer s3cret")],
    );
    assert_eq!(r.status, 200);
}
