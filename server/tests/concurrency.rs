//! Several requests at once give the same text as one at a time; a full queue answers 503; a
//! client that disconnects mid-stream stops its generation (seen in `/metrics`) while the
//! server keeps serving.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn req(i: usize, img: &str) -> Value {
    let mut m =
        json!({ "role": "user", "content": format!("Question number {i}: what do you see?") });
    if i.is_multiple_of(2) {
        m["images"] = json!([img]);
    }
    json!({ "model": "demo", "messages": [m], "options": { "temperature": 0, "num_predict": 6 } })
}

fn streamed_text(addr: std::net::SocketAddr, body: &Value) -> String {
    let mut s = stream(addr, "/api/chat", body);
    assert_eq!(s.status, 200);
    let mut text = String::new();
    while let Some(l) = s.next_line() {
        let f: Value = serde_json::from_str(&l).unwrap();
        text.push_str(f["message"]["content"].as_str().unwrap_or(""));
    }
    text
}

#[test]
fn concurrent_streams_equal_sequential_answers() {
    let srv = start(|c| c.parallel = 3);
    let img = b64(&demo_image());
    let n = 4;
    let one_by_one: Vec<String> = (0..n)
        .map(|i| streamed_text(srv.addr, &req(i, &img)))
        .collect();
    let addr = srv.addr;
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let body = req(i, &img);
            std::thread::spawn(move || streamed_text(addr, &body))
        })
        .collect();
    let together: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(together, one_by_one);
    let m = get(srv.addr, "/metrics").body;
    assert_eq!(
        metric(&m, "mllama_generations_completed_total"),
        (2 * n) as f64
    );
    assert_eq!(metric(&m, "mllama_generations_running"), 0.0);
}

fn wait_for(addr: std::net::SocketAddr, name: &str, value: f64) -> f64 {
    let t = Instant::now();
    loop {
        let v = metric(&get(addr, "/metrics").body, name);
        if v >= value || t.elapsed() > Duration::from_secs(30) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn full_queue_is_503_and_a_disconnect_cancels() {
    let srv = start(|c| {
        c.parallel = 1;
        c.queue = 0;
        c.ctx = Some(4096);
    });
    let a = srv.addr;
    // A long generation, up to the 4096-token context: sampled from the whole vocabulary (no top-k
    // or top-p cut, which would keep the demo's few trained tokens, end-of-turn among them) at a
    // temperature so high that the demo model picks nearly uniformly among its 128k tokens, so an
    // end-of-turn token is unlikely to end it early (and with this seed does not).
    let long = json!({
        "model": "demo", "prompt": "<|begin_of_text|>Once", "raw": true,
        "options": { "temperature": 100.0, "top_k": 0, "top_p": 1.0, "seed": 7, "num_predict": -1 },
    });
    let mut s = stream(a, "/api/generate", &long);
    assert_eq!(s.status, 200);
    s.next_line().unwrap();
    s.next_line().unwrap();
    // The only slot is taken and nothing may queue.
    let r = post(
        a,
        "/api/generate",
        &json!({ "model": "demo", "prompt": "x", "stream": false }),
    );
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.json()["error"].as_str().unwrap().contains("--queue"));
    let r = post(
        a,
        "/v1/chat/completions",
        &json!({ "model": "demo", "messages": [{ "role": "user", "content": "x" }] }),
    );
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["type"], "server_busy");
    // The client goes away: its generation stops, far short of the context.
    drop(s);
    assert_eq!(wait_for(a, "mllama_generations_cancelled_total", 1.0), 1.0);
    let m = get(a, "/metrics").body;
    assert!(metric(&m, "mllama_generated_tokens_total") < 4000.0);
    assert_eq!(metric(&m, "mllama_generations_running"), 0.0);
    // A client waiting for a whole (not streamed) answer goes away too.
    let mut quiet = long.clone();
    quiet["stream"] = json!(false);
    send_and_close(a, "/api/generate", &quiet, 500);
    assert_eq!(wait_for(a, "mllama_generations_cancelled_total", 2.0), 2.0);
    // The slot is free again.
    let r = post(
        a,
        "/api/generate",
        &json!({ "model": "demo", "prompt": "x", "stream": false, "options": { "num_predict": 3 } }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(get(a, "/api/version").status, 200);
}

#[test]
fn many_disconnecting_clients_leave_the_others_unaffected() {
    let srv = start(|c| {
        c.parallel = 2;
        c.queue = 64;
    });
    let a = srv.addr;
    let img = b64(&demo_image());
    let want = streamed_text(a, &req(0, &img));
    let long = json!({
        "model": "demo", "prompt": "<|begin_of_text|>Once", "raw": true,
        "options": { "temperature": 1.0, "seed": 3, "num_predict": 300 },
    });
    let n = 6;
    let quitters: Vec<_> = (0..n)
        .map(|_| {
            let body = long.clone();
            std::thread::spawn(move || {
                let mut s = stream(a, "/api/generate", &body);
                assert_eq!(s.status, 200);
                s.next_line();
            })
        })
        .collect();
    let steady = std::thread::spawn(move || streamed_text(a, &req(0, &b64(&demo_image()))));
    for q in quitters {
        q.join().unwrap();
    }
    assert_eq!(steady.join().unwrap(), want);
    let t = Instant::now();
    let (cancelled, completed, m) = loop {
        let m = get(a, "/metrics").body;
        let c = metric(&m, "mllama_generations_cancelled_total");
        let d = metric(&m, "mllama_generations_completed_total");
        if c + d >= (n + 2) as f64 || t.elapsed() > Duration::from_secs(60) {
            break (c, d, m);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Each quitter either stopped early or had finished before its disconnect was seen.
    assert_eq!(cancelled + completed, (n + 2) as f64, "{m}");
    assert!(cancelled >= 1.0);
}
