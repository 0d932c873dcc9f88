//! Sessions that can be owned: many sessions over one `Arc<Model>`, kept in a map, moved to other
//! threads and run there, give the same answers as on the thread that made them; image timings go
//! to the session's stats, not into the shared encoded image.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use mllama::{Model, SamplingParams, Session, SessionOptions};

fn demo(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("models/demo")
        .join(file)
}

fn opts() -> SessionOptions {
    SessionOptions {
        ctx: Some(256),
        date_string: Some("26 Jul 2024".into()),
        ..Default::default()
    }
}

/// A greedy answer of `n` tokens, as (ids, text).
fn answer(s: &mut Session, n: usize) -> (Vec<u32>, String) {
    let mut g = s.generate(&SamplingParams::default(), n, None).unwrap();
    let ids = g.by_ref().map(|p| p.unwrap().id).collect();
    (ids, g.text().to_string())
}

#[test]
fn sessions_move_between_threads_and_answer_alike() {
    let model = Arc::new(Model::load(demo("mllama-demo-q4_0.gguf")).unwrap());
    let prompts = ["Name a colour.", "Count to three.", "Say hello."];

    // Reference answers, each generated on this thread.
    let want: Vec<(Vec<u32>, String)> = prompts
        .iter()
        .map(|p| {
            let mut s = Session::new(Arc::clone(&model), opts()).unwrap();
            s.push_user(p).unwrap();
            answer(&mut s, 6)
        })
        .collect();
    assert!(want.iter().all(|(ids, _)| !ids.is_empty()));

    // The same conversations kept in a map (as a server would), each sent to its own thread.
    let mut sessions: HashMap<usize, Session> = HashMap::new();
    for (i, p) in prompts.iter().enumerate() {
        let mut s = Session::new(Arc::clone(&model), opts()).unwrap();
        s.push_user(p).unwrap();
        sessions.insert(i, s);
    }
    let workers: Vec<_> = sessions
        .into_iter()
        .map(|(i, mut s)| {
            std::thread::spawn(move || {
                let got = answer(&mut s, 6);
                (i, got, s)
            })
        })
        .collect();
    let mut back = HashMap::new();
    for w in workers {
        let (i, got, s) = w.join().expect("worker thread");
        assert_eq!(
            got, want[i],
            "session {i} answered differently on another thread"
        );
        back.insert(i, s);
    }
    // The sessions came back with their conversation and still share the one model.
    for (i, s) in &back {
        assert_eq!(s.messages().len(), 2, "session {i}: user + assistant");
        assert!(Arc::ptr_eq(s.model(), &model));
    }
    // Dropping the sessions releases the model: nothing else kept a reference.
    drop(back);
    assert_eq!(Arc::strong_count(&model), 1);
}

#[test]
fn image_timings_go_to_the_session_that_encoded_it() {
    let model = Arc::new(Model::load(demo("mllama-demo-q4_0.gguf")).unwrap());
    let image = demo("example.jpg");

    let mut first = Session::new(Arc::clone(&model), opts()).unwrap();
    first.add_image(&image).unwrap();
    let st = first.stats();
    assert_eq!((st.encoded.len(), st.cache_hits), (1, 0));
    assert!(st.encoded[0].vision_s > 0.0 && st.encoded[0].cross_kv_s > 0.0);

    // Another session on another thread: the same image comes from the shared cache, no work.
    let m = Arc::clone(&model);
    let second = std::thread::spawn(move || {
        let mut s = Session::new(m, opts()).unwrap();
        s.add_image(&image).unwrap();
        s
    })
    .join()
    .expect("worker thread");
    assert_eq!(
        (second.stats().encoded.len(), second.stats().cache_hits),
        (0, 1)
    );
    assert_eq!(model.image_cache.usage().0, 1);
}
