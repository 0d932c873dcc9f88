//! `mllama serve` against the demo model on an ephemeral port: every endpoint, the streamed
//! frames of both APIs, greedy text equal to the library's for the same conversation, prefix
//! reuse across turns, and the listing endpoints' shapes.

mod common;

use std::sync::Arc;

use common::*;
use mllama::{Model, SamplingParams, Session, SessionOptions};
use mllama_server::Server;
use serde_json::{json, Value};

/// The library's greedy answer (`n` tokens at most) to a conversation of (role, text, images).
fn library(msgs: &[(&str, &str, Vec<Vec<u8>>)], n: usize) -> String {
    let model = Arc::new(Model::load(demo_model()).unwrap());
    let mut s = Session::new(
        model,
        SessionOptions {
            ctx: Some(512),
            ..Default::default()
        },
    )
    .unwrap();
    for (role, text, images) in msgs {
        for im in images {
            s.add_image_bytes(im, "image").unwrap();
        }
        match *role {
            "system" => s.push_system(text).unwrap(),
            "user" => s.push_user(text).unwrap(),
            _ => s.push_assistant(text).unwrap(),
        }
    }
    let mut g = s.generate(&SamplingParams::default(), n, None).unwrap();
    for p in g.by_ref() {
        p.unwrap();
    }
    g.text().to_string()
}

const Q: &str = "What is in this picture?";

#[test]
fn listing_endpoints() {
    let srv = start(|_| {});
    let a = srv.addr;
    let r = get(a, "/");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("running"));
    let v = get(a, "/api/version").json();
    assert!(v["version"].as_str().is_some_and(|s| !s.is_empty()));
    let tags = get(a, "/api/tags").json();
    let m = &tags["models"][0];
    assert_eq!(m["name"], "demo:latest");
    assert_eq!(m["details"]["family"], "mllama");
    assert_eq!(m["details"]["quantization_level"], "Q4_0");
    assert_eq!(
        m["size"].as_u64(),
        Some(std::fs::metadata(demo_model()).unwrap().len())
    );
    assert!(m["digest"].as_str().unwrap().len() == 64);
    let show = post(a, "/api/show", &json!({ "model": "demo" }));
    assert_eq!(show.status, 200);
    let show = show.json();
    let caps: Vec<&str> = show["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(caps.contains(&"vision") && caps.contains(&"completion"));
    assert_eq!(show["model_info"]["general.architecture"], "mllama");
    assert!(
        show["model_info"]["general.parameter_count"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(show["template"]
        .as_str()
        .unwrap()
        .contains("<|start_header_id|>"));
    let ps = get(a, "/api/ps").json();
    assert_eq!(ps["models"][0]["name"], "demo:latest");
    assert_eq!(ps["models"][0]["context_length"], 512);
    let models = get(a, "/v1/models").json();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "demo:latest");
    assert_eq!(get(a, "/v1/models/demo").json()["id"], "demo:latest");
    assert_eq!(get(a, "/health").json()["status"], "ok");
    let metrics = get(a, "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    assert!(metrics
        .body
        .contains("mllama_http_requests_total{route=\"/api/tags\",status=\"200\"} 1"));
}

#[test]
fn ollama_chat_with_image_equals_library_streamed_and_not() {
    let srv = start(|_| {});
    let img = demo_image();
    let want = library(&[("user", Q, vec![img.clone()])], 12);
    assert!(!want.is_empty());
    let req = json!({
        "model": "demo",
        "messages": [{ "role": "user", "content": Q, "images": [b64(&img)] }],
        "stream": false,
        "options": { "temperature": 0, "num_predict": 12 },
    });
    let r = post(srv.addr, "/api/chat", &req);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["message"]["content"], want.as_str());
    assert_eq!(v["message"]["role"], "assistant");
    assert_eq!(v["done"], true);
    assert!(["stop", "length"].contains(&v["done_reason"].as_str().unwrap()));
    for k in [
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
        "image_encode_duration",
    ] {
        assert!(v[k].is_u64(), "{k} missing: {v}");
    }
    assert!(v["prompt_eval_count"].as_u64().unwrap() > 5);
    assert!(v["created_at"].as_str().unwrap().ends_with('Z'));

    // Streamed: NDJSON frames whose pieces add up to the same text; the last has the figures.
    let mut req = req;
    req["stream"] = json!(true);
    let mut s = stream(srv.addr, "/api/chat", &req);
    assert_eq!(s.status, 200);
    assert_eq!(
        s.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .unwrap()
            .1,
        "application/x-ndjson"
    );
    let mut text = String::new();
    let mut last = Value::Null;
    while let Some(l) = s.next_line() {
        let f: Value = serde_json::from_str(&l).unwrap();
        if f["done"] == false {
            text.push_str(f["message"]["content"].as_str().unwrap());
        }
        last = f;
    }
    assert_eq!(text, want);
    assert_eq!(last["done"], true);
    assert!(last["eval_count"].as_u64().unwrap() >= 1);
    // The second time, the picture came from the image cache.
    assert_eq!(last["images_encoded"], 0);
    assert_eq!(last["image_cache_hits"], 1);
}

#[test]
fn ollama_generate_plain_raw_and_two_images() {
    let srv = start(|_| {});
    let img = demo_image();
    let want = library(&[("user", "Say something.", vec![])], 10);
    let r = post(
        srv.addr,
        "/api/generate",
        &json!({
            "model": "demo", "prompt": "Say something.", "stream": false,
            "options": { "temperature": 0, "num_predict": 10 },
        }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["response"], want.as_str());

    // Raw: the prompt as is.
    let r = post(
        srv.addr,
        "/api/generate",
        &json!({
            "model": "demo", "prompt": "<|begin_of_text|>Once upon a time", "raw": true, "stream": false,
            "options": { "temperature": 0, "num_predict": 6 },
        }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["done"], true);
    assert!(v["eval_count"].as_u64().unwrap() <= 6);

    // Two images in one message (Ollama refused a second one).
    let second = bmp(64, 48);
    let want2 = library(
        &[("user", "Compare them.", vec![img.clone(), second.clone()])],
        8,
    );
    let r = post(
        srv.addr,
        "/api/chat",
        &json!({
            "model": "demo", "stream": false,
            "messages": [{ "role": "user", "content": "Compare them.", "images": [b64(&img), b64(&second)] }],
            "options": { "temperature": 0, "num_predict": 8 },
        }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["message"]["content"], want2.as_str());
    assert_eq!(
        v["images_encoded"].as_u64().unwrap() + v["image_cache_hits"].as_u64().unwrap(),
        2
    );

    // An empty prompt loads the model.
    let r = post(srv.addr, "/api/generate", &json!({ "model": "demo" }));
    assert_eq!(r.json()["done_reason"], "load");
}

#[test]
fn openai_chat_completions_plain_and_sse() {
    let srv = start(|_| {});
    let img = demo_image();
    let want = library(&[("user", Q, vec![img.clone()])], 10);
    let url = format!("data:image/jpeg;base64,{}", b64(&img));
    let req = json!({
        "model": "demo",
        "messages": [{ "role": "user", "content": [
            { "type": "text", "text": Q },
            { "type": "image_url", "image_url": { "url": url } },
        ]}],
        "temperature": 0, "max_tokens": 10,
    });
    let r = post(srv.addr, "/v1/chat/completions", &req);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], want.as_str());
    let u = &v["usage"];
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );

    // Raw base64 in image_url works too; SSE with usage and [DONE].
    let mut req = req;
    req["messages"][0]["content"][1]["image_url"]["url"] = json!(b64(&img));
    req["stream"] = json!(true);
    req["stream_options"] = json!({ "include_usage": true });
    let mut s = stream(srv.addr, "/v1/chat/completions", &req);
    assert_eq!(s.status, 200);
    let ct = &s
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .unwrap()
        .1;
    assert!(ct.starts_with("text/event-stream"));
    let mut text = String::new();
    let mut frames = Vec::new();
    while let Some(l) = s.next_line() {
        frames.push(l.clone());
        let data = l
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("not an SSE data line: {l}"));
        if data == "[DONE]" {
            continue;
        }
        let c: Value = serde_json::from_str(data).unwrap();
        assert_eq!(c["object"], "chat.completion.chunk");
        if let Some(t) = c["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
    }
    assert_eq!(text, want);
    assert_eq!(frames.last().unwrap(), "data: [DONE]");
    let usage: Value =
        serde_json::from_str(frames[frames.len() - 2].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() >= 1);
    let fin: Value =
        serde_json::from_str(frames[frames.len() - 3].strip_prefix("data: ").unwrap()).unwrap();
    assert!(fin["choices"][0]["finish_reason"].is_string());
}

#[test]
fn follow_up_turns_prefill_only_new_tokens() {
    let srv = start(|_| {});
    let img = demo_image();
    let turns = [
        "What is in this picture?",
        "Tell me more.",
        "And the colours?",
    ];
    let mut history: Vec<Value> = Vec::new();
    let mut lib_history: Vec<(&str, String, Vec<Vec<u8>>)> = Vec::new();
    for (i, t) in turns.iter().enumerate() {
        let images = if i == 0 { vec![img.clone()] } else { vec![] };
        let mut m = json!({ "role": "user", "content": t });
        if i == 0 {
            m["images"] = json!([b64(&img)]);
        }
        history.push(m);
        lib_history.push(("user", t.to_string(), images));
        let r = post(
            srv.addr,
            "/api/chat",
            &json!({
                "model": "demo", "messages": history, "stream": false,
                "options": { "temperature": 0, "num_predict": 8 },
            }),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        let answer = v["message"]["content"].as_str().unwrap().to_string();
        let msgs: Vec<(&str, &str, Vec<Vec<u8>>)> = lib_history
            .iter()
            .map(|(r, t, i)| (*r, t.as_str(), i.clone()))
            .collect();
        assert_eq!(answer, library(&msgs, 8), "turn {}", i + 1);
        let evaluated = v["prompt_eval_count"].as_u64().unwrap();
        let total = v["prompt_tokens"].as_u64().unwrap();
        if i == 0 {
            assert_eq!(evaluated, total);
        } else {
            // Only what follows the previous turn's cache: the end of the last answer, the new
            // user message and the assistant header (well under the whole prompt).
            assert!(
                evaluated < total / 2,
                "turn {}: {evaluated} of {total} tokens prefilled",
                i + 1
            );
            assert!(evaluated >= 5);
        }
        history.push(json!({ "role": "assistant", "content": answer }));
        lib_history.push(("assistant", answer, vec![]));
    }
    let m = get(srv.addr, "/metrics").body;
    assert!(metric(&m, "mllama_prompt_tokens_reused_total") > 0.0);
}

#[test]
fn vision_cache_on_disk_serves_a_restarted_server() {
    let dir = std::env::temp_dir().join(format!("mllama-serve-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let img = demo_image();
    let want = library(&[("user", Q, vec![img.clone()])], 8);
    let req = json!({
        "model": "demo",
        "messages": [{ "role": "user", "content": Q, "images": [b64(&img)] }],
        "stream": false,
        "options": { "temperature": 0, "num_predict": 8 },
    });
    let mut counts = Vec::new();
    // Two servers one after the other (separate memory caches), one cache directory.
    for _ in 0..2 {
        let srv = start(|c| c.cache_dir = Some(dir.clone()));
        let v = post(srv.addr, "/api/chat", &req).json();
        assert_eq!(v["message"]["content"], want.as_str(), "{v}");
        counts.push((v["images_encoded"].clone(), v["image_cache_hits"].clone()));
    }
    assert_eq!(counts[0], (json!(1), json!(0)));
    assert_eq!(
        counts[1],
        (json!(0), json!(1)),
        "the second server read the disk cache"
    );
    assert!(std::fs::read_dir(&dir).unwrap().next().is_some());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn parallel_by_default_is_what_memory_allows() {
    let srv = Server::bind(mllama_server::Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        models: vec![(Some("demo".into()), demo_model())],
        ..mllama_server::Config::default()
    })
    .unwrap();
    let p = srv.parallel();
    assert!(
        (2..=mllama_server::config::MAX_AUTO_PARALLEL).contains(&p),
        "{p}"
    );
    let fixed = Server::bind(mllama_server::Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        models: vec![(Some("demo".into()), demo_model())],
        parallel: 3,
        ..mllama_server::Config::default()
    })
    .unwrap();
    assert_eq!(fixed.parallel(), 3);
}
