//! The vision cache on disk: a new model (as in a new process) reads an image's K/V back from
//! disk, bit for bit what a fresh encode gives the session; corrupt, truncated, unwritable and
//! full caches are detected and the work goes on; concurrent writers of one entry; LRU eviction.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

use mllama::engine::sequence::Sequence;
use mllama::image::ImageLimits;
use mllama::models::mllama::disk_cache::{
    entry_key, model_identity, CacheWarning, DiskCache, EntrySettings, Layout,
};
use mllama::models::mllama::image_cache::DiskSide;
use mllama::{
    CachePrecision, ImageSource, Model, SamplingParams, Semantics, Session, SessionOptions,
    TapConvention,
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn demo() -> Model {
    Model::load(root().join("models/demo/mllama-demo-q4_0.gguf")).unwrap()
}

fn image_bytes() -> Vec<u8> {
    std::fs::read(root().join("models/demo/example.jpg")).unwrap()
}

fn settings(model: &Model, cache: CachePrecision) -> EntrySettings {
    EntrySettings {
        taps: TapConvention::LayerInput,
        half: cache.half(&model.text),
        kernels: mllama::kernels::simd_name(),
        vision: model.vision_precision(),
    }
}

/// Last-position logits of a short prompt that sees the image, through a sequence holding `im`.
fn logits_with(model: &Model, im: &mllama::EncodedImage, cache: CachePrecision) -> Vec<f32> {
    let sem = Semantics {
        cache,
        ..Default::default()
    };
    let mut seq = Sequence::new(model, 64, sem);
    seq.attach_encoded(im);
    let tok = model.tokenizer().unwrap();
    let mut ids = tok.encode("Look:", true).unwrap();
    ids.push(model.cfg.text.image_token.unwrap());
    ids.extend(tok.encode(" what is it?", false).unwrap());
    seq.feed(&ids, false).unwrap().to_vec()
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// The only entry file of `dir`.
fn only_entry(dir: &Path) -> PathBuf {
    let entries = DiskCache::new(dir, u64::MAX).list().unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries[0].file.clone()
}

#[test]
fn a_new_model_reads_the_image_from_disk_bit_identical() {
    for cache in [CachePrecision::Auto, CachePrecision::F32] {
        let dir = tempfile::tempdir().unwrap();
        let bytes = image_bytes();
        let limits = ImageLimits::default();
        let lookup = |model: &Model| {
            let d = DiskCache::new(dir.path(), u64::MAX);
            let id = model_identity(model.gguf());
            let side = DiskSide {
                cache: &d,
                identity: &id,
            };
            let s = settings(model, cache);
            model
                .image_cache
                .lookup(model, &bytes, "example.jpg", s, &limits, Some(side))
                .unwrap()
        };
        let first = lookup(&demo());
        assert_eq!(first.source, ImageSource::Miss);
        assert!(first.warnings.is_empty() && first.encode.vision_s > 0.0);
        // A new model has an empty memory cache: a second process.
        let model = demo();
        let second = lookup(&model);
        assert_eq!(second.source, ImageSource::Disk, "{cache:?}");
        assert!(second.warnings.is_empty());
        assert_eq!(second.image.n_tiles, first.image.n_tiles);
        // Then the memory cache of that model.
        assert_eq!(lookup(&model).source, ImageSource::Memory);

        // A fresh encode by this model, and what the session computes from each: bit-identical.
        let img = mllama::image::decode_image(&bytes, &limits).unwrap();
        let pre = mllama::models::mllama::preprocess::preprocess(
            &img,
            model.cfg.preprocess.as_ref().unwrap(),
        )
        .unwrap();
        let (fresh, _) = model.encode_image(&pre, TapConvention::LayerInput);
        let (a, b) = (
            logits_with(&model, &fresh, cache),
            logits_with(&model, &second.image, cache),
        );
        assert_eq!(bits(&a), bits(&b), "{cache:?}: logits differ");
        if cache == CachePrecision::F32 {
            // f32 caches: the entry holds the exact values.
            for ((k1, v1), (k2, v2)) in fresh.kv.iter().zip(&second.image.kv) {
                assert_eq!((bits(k1), bits(v1)), (bits(k2), bits(v2)));
            }
        }
    }
}

#[test]
fn sessions_report_miss_memory_and_disk() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SessionOptions {
        cache_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let img = root().join("models/demo/example.jpg");
    let answer = |s: &mut Session| {
        s.push_user("What is this?").unwrap();
        let p = SamplingParams {
            temperature: 0.0,
            ..Default::default()
        };
        let mut g = s.generate(&p, 8, None).unwrap();
        for piece in g.by_ref() {
            piece.unwrap();
        }
        g.text().to_string()
    };
    let mut s1 = Session::new(demo(), opts.clone()).unwrap();
    s1.add_image(&img).unwrap();
    s1.add_image(&img).unwrap();
    let a1 = answer(&mut s1);
    let sources: Vec<ImageSource> = s1.stats().images.iter().map(|i| i.source).collect();
    assert_eq!(sources, [ImageSource::Miss, ImageSource::Memory]);
    assert!(s1.take_warnings().is_empty());

    let mut s2 = Session::new(demo(), opts).unwrap();
    s2.add_image(&img).unwrap();
    s2.add_image(&img).unwrap();
    let st = &s2.stats().images;
    assert_eq!(st[0].source, ImageSource::Disk);
    assert!(st[0].disk_s > 0.0 && st[0].vision_s == 0.0);
    assert_eq!(answer(&mut s2), a1);
}

#[test]
fn an_unwritable_cache_directory_gives_one_warning_and_the_run_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    // A "directory" under a regular file cannot be created, even by root.
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let mut dirs = vec![file.join("cache")];
    // A read-only directory, where permissions apply (not as root).
    let ro = tmp.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    set_mode(&ro, 0o555);
    if std::fs::write(ro.join("probe"), b"").is_err() {
        dirs.push(ro.clone());
    }
    let bytes = image_bytes();
    let mut other = bytes.clone();
    other.extend_from_slice(b"trailing bytes: another file, another key");
    for dir in dirs {
        let opts = SessionOptions {
            cache_dir: Some(dir.clone()),
            ..Default::default()
        };
        let mut s = Session::new(demo(), opts).unwrap();
        s.add_image_bytes(&bytes, "a.jpg").unwrap();
        s.add_image_bytes(&other, "b.jpg").unwrap();
        let w = s.take_warnings();
        assert_eq!(w.len(), 1, "{}: {w:?}", dir.display());
        assert!(matches!(&w[0], CacheWarning::Unwritable { .. }), "{w:?}");
        let sources: Vec<ImageSource> = s.stats().images.iter().map(|i| i.source).collect();
        assert_eq!(sources, [ImageSource::Miss, ImageSource::Miss]);
        s.push_user("What are these?").unwrap();
        assert!(s.generate(&SamplingParams::default(), 2, None).is_ok());
    }
    set_mode(&ro, 0o755);
}

fn set_mode(p: &Path, mode: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    #[cfg(not(unix))]
    let _ = (p, mode);
}

/// Per cross layer (K, V).
type LayerKv = Vec<(Vec<f32>, Vec<f32>)>;

/// A small layout and K/V of `seed` for direct [`DiskCache`] tests.
fn small(seed: u32) -> (Layout, LayerKv) {
    let layout = Layout {
        layers: 2,
        values: 2 * 4 * 5 * 8,
        tile_slots: 4,
        tokens_per_tile: 5,
    };
    let val =
        |i: usize| ((i as u32).wrapping_mul(2654435761) ^ seed) as f32 / u32::MAX as f32 - 0.5;
    let kv = (0..layout.layers)
        .map(|l| {
            let k = (0..layout.values).map(|i| val(i + l * 1000)).collect();
            let v = (0..layout.values)
                .map(|i| val(i + l * 1000 + 500))
                .collect();
            (k, v)
        })
        .collect();
    (layout, kv)
}

#[test]
fn truncated_or_altered_entries_are_refused_at_many_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let cache = DiskCache::new(dir.path(), u64::MAX);
    let (layout, kv) = small(1);
    for half in [true, false] {
        let key = [half as u8 + 7; 32];
        cache.store(&key, &kv, 3, &layout, half).unwrap();
        let file = cache.entry_path(&key);
        let good = std::fs::read(&file).unwrap();
        let back = cache.load(&key, &layout).unwrap().unwrap();
        assert_eq!(back.n_tiles, 3);
        assert_eq!(back.rounded, half);
        for ((k, v), (k0, v0)) in back.kv.iter().zip(&kv) {
            if !half {
                assert_eq!((bits(k), bits(v)), (bits(k0), bits(v0)));
            }
        }
        let corrupt = |bytes: &[u8], what: String| {
            std::fs::write(&file, bytes).unwrap();
            match cache.load(&key, &layout) {
                Err(CacheWarning::Corrupt { .. }) => {}
                Err(w) => panic!("{what}: {w}"),
                Ok(_) => panic!("{what}: accepted"),
            }
        };
        // Every byte of the header and checksum, and every 7th byte of the data (one write and
        // read per case: all of them would take minutes).
        let n = good.len();
        let positions: Vec<usize> = (0..n)
            .filter(|&i| i < 96 || i + 40 > n || i % 7 == 3)
            .collect();
        for &at in &positions {
            for bit in [0x01u8, 0x80] {
                let mut b = good.clone();
                b[at] ^= bit;
                corrupt(&b, format!("bit {bit:#x} of byte {at} flipped"));
            }
        }
        for &len in &positions {
            corrupt(&good[..len], format!("truncated to {len}"));
        }
        let mut longer = good.clone();
        longer.push(0);
        corrupt(&longer, "one byte appended".into());
        // Another model's layout is refused too.
        std::fs::write(&file, &good).unwrap();
        let other = Layout {
            tokens_per_tile: 6,
            ..layout
        };
        assert!(matches!(
            cache.load(&key, &other),
            Err(CacheWarning::Corrupt { .. })
        ));
    }
}

#[test]
fn a_corrupt_entry_is_recomputed_with_a_warning_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = image_bytes();
    let limits = ImageLimits::default();
    let lookup = |model: &Model| {
        let d = DiskCache::new(dir.path(), u64::MAX);
        let id = model_identity(model.gguf());
        let side = DiskSide {
            cache: &d,
            identity: &id,
        };
        let s = settings(model, CachePrecision::Auto);
        model
            .image_cache
            .lookup(model, &bytes, "example.jpg", s, &limits, Some(side))
            .unwrap()
    };
    assert_eq!(lookup(&demo()).source, ImageSource::Miss);
    let file = only_entry(dir.path());
    let mut b = std::fs::read(&file).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x10;
    std::fs::write(&file, &b).unwrap();
    let again = lookup(&demo());
    assert_eq!(again.source, ImageSource::Miss);
    assert_eq!(again.warnings.len(), 1);
    assert!(matches!(&again.warnings[0], CacheWarning::Corrupt { .. }));
    assert!(again.warnings[0].to_string().contains("unusable"));
    // The recomputed entry replaced it.
    let third = lookup(&demo());
    assert_eq!(third.source, ImageSource::Disk);
    assert!(third.warnings.is_empty());
}

#[test]
fn concurrent_writers_of_one_entry_all_succeed_and_leave_one_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, kv) = small(2);
    let key = [42u8; 32];
    let n = 8;
    let barrier = Arc::new(Barrier::new(n));
    std::thread::scope(|s| {
        for _ in 0..n {
            let (barrier, kv, dir) = (Arc::clone(&barrier), &kv, dir.path());
            s.spawn(move || {
                // Each thread its own cache object, as separate processes would have.
                let cache = DiskCache::new(dir, u64::MAX);
                barrier.wait();
                cache.store(&key, kv, 4, &layout, true).unwrap();
                // Readers during the writes see a whole entry or none.
                if let Some(back) = cache.load(&key, &layout).unwrap() {
                    assert_eq!(back.n_tiles, 4);
                }
            });
        }
    });
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let cache = DiskCache::new(dir.path(), u64::MAX);
    assert!(cache.load(&key, &layout).unwrap().is_some());
}

#[test]
fn least_recently_used_entries_are_evicted_at_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, kv) = small(3);
    let probe = DiskCache::new(dir.path(), u64::MAX);
    probe.store(&[0; 32], &kv, 1, &layout, false).unwrap();
    let size = probe.list().unwrap()[0].bytes;
    probe.clear().unwrap();

    // Room for two entries and a half.
    let cache = DiskCache::new(dir.path(), size * 5 / 2);
    let (a, b, c) = ([1u8; 32], [2u8; 32], [3u8; 32]);
    let age = |key: &[u8; 32], secs: u64| {
        let f = std::fs::File::options()
            .write(true)
            .open(cache.entry_path(key))
            .unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(secs))
            .unwrap();
    };
    cache.store(&a, &kv, 1, &layout, false).unwrap();
    age(&a, 300);
    cache.store(&b, &kv, 1, &layout, false).unwrap();
    age(&b, 200);
    // Reading a makes it the most recently used: b is now the oldest.
    assert!(cache.load(&a, &layout).unwrap().is_some());
    cache.store(&c, &kv, 1, &layout, false).unwrap();
    let exists = |k: &[u8; 32]| cache.entry_path(k).exists();
    assert!(exists(&a) && !exists(&b) && exists(&c));
    assert_eq!(cache.list().unwrap().len(), 2);

    // An entry larger than the bound is not written; clear empties the directory.
    let tiny = DiskCache::new(dir.path(), size - 1);
    tiny.store(&[9; 32], &kv, 1, &layout, false).unwrap();
    assert!(!tiny.entry_path(&[9; 32]).exists());
    assert_eq!(cache.clear().unwrap(), (2, 2 * size));
    assert!(cache.list().unwrap().is_empty());
}

#[test]
fn keys_depend_on_image_model_and_settings() {
    let (m1, id) = (demo(), [1u8; 32]);
    let s = settings(&m1, CachePrecision::Auto);
    let k = entry_key(&id, &s, b"image");
    assert_ne!(k, entry_key(&[2u8; 32], &s, b"image"));
    assert_ne!(k, entry_key(&id, &s, b"imagf"));
    let taps = EntrySettings {
        taps: TapConvention::LayerOutput,
        ..s
    };
    assert_ne!(k, entry_key(&id, &taps, b"image"));
    let prec = EntrySettings { half: !s.half, ..s };
    assert_ne!(k, entry_key(&id, &prec, b"image"));
    let path = EntrySettings {
        kernels: "scalar-other",
        ..s
    };
    assert_ne!(k, entry_key(&id, &path, b"image"));
    let other = match s.vision {
        mllama::VisionPrecision::Int8 => mllama::VisionPrecision::F32,
        _ => mllama::VisionPrecision::Int8,
    };
    let vision = EntrySettings { vision: other, ..s };
    assert_ne!(k, entry_key(&id, &vision, b"image"));
    // The model identity is stable, and changes with the weights.
    assert_eq!(model_identity(m1.gguf()), model_identity(demo().gguf()));
    let f = m1.gguf();
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(root().join("models/demo/mllama-demo-q4_0.gguf")).unwrap();
    let last = f.tensors().last().unwrap();
    let r = f.tensor_range(last);
    for at in [r.start, (r.start + r.end) / 2] {
        let mut b = bytes.clone();
        b[at] ^= 1;
        let p = tmp.path().join(format!("changed-{at}.gguf"));
        std::fs::write(&p, &b).unwrap();
        let g = mllama::format::gguf::GgufFile::open(&p).unwrap();
        assert_ne!(
            model_identity(f),
            model_identity(&g),
            "weight byte {at} changed"
        );
    }
}
