//! A decode step allocates nothing: every buffer (activations, quantized activations, attention
//! scratch, logits, key ranges) is sized once and reused. Counted with a global allocator.
//!
//! The steps run inside a rayon pool, as the CLI runs them: jobs spawned from a worker go to its
//! own deque, while jobs injected from outside a pool may allocate a queue block now and then.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use mllama::engine::sequence::Sequence;
use mllama::models::mllama::spec::ModelSpec;
use mllama::models::mllama::synthetic::{build, SyntheticOptions};
use mllama::models::mllama::vision::VisionOutput;
use mllama::models::mllama::Semantics;
use mllama::quant::mix::FileType;
use mllama::text::sampling::argmax;
use mllama::GgmlType;

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn decode_allocations(ty: FileType, sem: Semantics, with_image: bool, repack: bool) -> usize {
    let spec = ModelSpec {
        // Wide enough that the kernels split work over several tasks.
        hidden: 256,
        ffn: 768,
        n_heads: 8,
        n_kv_heads: 2,
        vocab_size: 4096,
        embedding_rows: 4104,
        image_token: 4096,
        ..ModelSpec::tiny()
    };
    let mut model = build(
        &spec,
        &SyntheticOptions {
            file_type: ty,
            vision_type: GgmlType::F16,
            distinct_layers: None,
            seed: 9,
        },
    )
    .unwrap();
    if repack {
        // Q4_0 matrices in their repacked layout (where this CPU's path has a kernel for it).
        model.repack();
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    pool.install(|| {
        let mut seq = Sequence::new(&model, 256, sem);
        let mut prompt: Vec<u32> = (0..40).map(|i| (i * 37 + 5) % 4000).collect();
        if with_image {
            let vc = model.cfg.vision.as_ref().unwrap();
            let n = vc.max_tiles * vc.tokens_per_tile() * spec.hidden;
            let states = (0..n)
                .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
                .collect();
            seq.attach_image(
                &VisionOutput {
                    states,
                    features: Vec::new(),
                },
                2,
            );
            prompt[5] = spec.image_token;
        }
        let mut next = argmax(seq.feed(&prompt, false).unwrap()) as u32;
        // Warm-up: buffers reach their decode sizes, thread-local scratch exists on every worker.
        for _ in 0..8 {
            next = argmax(seq.feed(&[next], false).unwrap()) as u32;
        }
        // Steady state: a window of 32 steps without any allocation. A worker thread that never
        // ran some job during the warm-up (possible when the machine is loaded and one thread
        // steals everything) creates its thread-local scratch once, later; an allocation per
        // step would show in every window, so three windows in a row must not all allocate.
        let mut counts = Vec::new();
        for _ in 0..3 {
            let before = ALLOCS.load(Ordering::SeqCst);
            for _ in 0..32 {
                next = argmax(seq.feed(&[next], false).unwrap()) as u32;
            }
            counts.push(ALLOCS.load(Ordering::SeqCst) - before);
            if counts.last() == Some(&0) {
                break;
            }
        }
        // One-time creations are few: at most a handful per worker.
        assert!(
            counts.iter().sum::<usize>() <= 8,
            "allocations per window of 32 decode steps: {counts:?}"
        );
        *counts.last().unwrap()
    })
}

#[test]
fn decode_steps_do_not_allocate() {
    let cases = [
        (FileType::Q4_0, true),
        (FileType::Q4_0, false),
        (FileType::Q8_0, false),
        (FileType::F16, false),
        (FileType::F32, false),
    ];
    for (ty, repack) in cases {
        for with_image in [false, true] {
            for meta in [false, true] {
                let sem = Semantics {
                    meta_cross_attn: meta,
                    ..Default::default()
                };
                let n = decode_allocations(ty, sem, with_image, repack);
                assert_eq!(
                    n, 0,
                    "{ty}, repacked {repack}, image {with_image}, meta {meta}: {n} allocations in each of three windows of 32 decode steps"
                );
            }
        }
    }
}
