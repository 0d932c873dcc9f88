//! Image preprocessing against HF transformers' Mllama image processor (PIL backend).
//!
//! * `model_fixtures_match_hf`: every image of every case under `tests/fixtures/models/` — decoded RGB,
//!   resized image, `pixel_values`, `aspect_ratio_ids`, `aspect_ratio_mask` (tiles of 56 / 28 px).
//! * `real_size_fixtures_match_hf`: the compact 560-px references in `tests/fixtures/preprocess/`
//!   (regenerate with `scripts/gen_preprocess_fixtures.py`).
//! * Bad input: empty, random, truncated, huge declared sizes, non-images, missing files, fuzzing.
//!
//! Run with `--nocapture` to see the per-image difference tables.

use mllama::image::{decode_image, load_image, resize_bilinear, ImageLimits, RgbImage};
use mllama::models::mllama::preprocess::{plan_tiles, preprocess, PreprocessConfig};
use mllama::{Error, Limit};
use safetensors::SafeTensors;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// SplitMix64 finaliser, as in `scripts/gen_preprocess_fixtures.py`.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `sum_i (byte_i + 1) * splitmix64(i) mod 2^64`, hex — the fixture checksum of a uint8 image.
fn checksum(bytes: &[u8]) -> String {
    let mut total = 0u64;
    for (i, &b) in bytes.iter().enumerate() {
        total = total.wrapping_add((b as u64 + 1).wrapping_mul(splitmix64(i as u64)));
    }
    format!("{total:016x}")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn pair(v: &Value) -> (usize, usize) {
    (
        v[0].as_u64().unwrap() as usize,
        v[1].as_u64().unwrap() as usize,
    )
}

fn f32s(v: &Value) -> [f32; 3] {
    let a: Vec<f32> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    [a[0], a[1], a[2]]
}

fn tensor_u8(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<u8>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), safetensors::Dtype::U8, "{name}");
    (t.shape().to_vec(), t.data().to_vec())
}

fn tensor_f32(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
    let v = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (t.shape().to_vec(), v)
}

fn tensor_i64(st: &SafeTensors, name: &str) -> Vec<i64> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), safetensors::Dtype::I64, "{name}");
    t.data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn tensor_i32(st: &SafeTensors, name: &str) -> Vec<i32> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), safetensors::Dtype::I32, "{name}");
    t.data()
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// (max, mean) absolute difference of two sequences, which must be equally long. Panics on a
/// length mismatch or a non-finite difference (naming the index): a NaN must not pass a bound.
fn diff_stats(a: impl IntoIterator<Item = f64>, b: impl IntoIterator<Item = f64>) -> (f64, f64) {
    let (mut a, mut b) = (a.into_iter(), b.into_iter());
    let (mut max, mut sum, mut n) = (0f64, 0f64, 0usize);
    loop {
        match (a.next(), b.next()) {
            (Some(x), Some(y)) => {
                let d = (x - y).abs();
                assert!(d.is_finite(), "value {n}: ours {x}, reference {y}");
                max = max.max(d);
                sum += d;
                n += 1;
            }
            (None, None) => break,
            _ => panic!("length mismatch: one side ends after {n} values"),
        }
    }
    (max, if n > 0 { sum / n as f64 } else { 0.0 })
}

fn u8_diff(a: &[u8], b: &[u8]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    diff_stats(a.iter().map(|&v| v as f64), b.iter().map(|&v| v as f64))
}

/// Preprocessing config of a model fixture, from its `config.json` and `preprocessor_config.json`.
fn model_config(model_dir: &Path) -> PreprocessConfig {
    let cfg = read_json(&model_dir.join("config.json"));
    let pre = read_json(&model_dir.join("preprocessor_config.json"));
    let v = &cfg["vision_config"];
    let tile = v["image_size"].as_u64().unwrap() as usize;
    assert_eq!(pre["size"]["height"].as_u64().unwrap() as usize, tile);
    let ratios = v["supported_aspect_ratios"]
        .as_array()
        .unwrap()
        .iter()
        .map(pair)
        .collect();
    PreprocessConfig {
        tile_size: tile,
        max_tiles: pre["max_image_tiles"].as_u64().unwrap() as usize,
        mean: f32s(&pre["image_mean"]),
        std: f32s(&pre["image_std"]),
        rescale_factor: pre["rescale_factor"].as_f64().unwrap() as f32,
        supported_aspect_ratios: ratios,
    }
}

#[test]
fn model_fixtures_match_hf() {
    let limits = ImageLimits::default();
    let mut seen = 0;
    let mut cases: Vec<PathBuf> = glob_dirs(&repo().join("tests/fixtures/models"), 2, "cases");
    cases.sort();
    eprintln!(
        "{:<52} {:>9} {:>9} {:>7} {:>10} {:>10}",
        "model/case/image", "size", "resized", "rgb", "resize max", "pv max/mean"
    );
    for case_dir in cases {
        let case = read_json(&case_dir.join("case.json"));
        let Some(images) = case["images"].as_array() else {
            continue;
        };
        if images.is_empty() {
            continue;
        }
        let model_dir = case_dir.parent().unwrap().parent().unwrap().join("model");
        let cfg = model_config(&model_dir);
        let bytes = std::fs::read(case_dir.join("reference.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let (pv_shape, pv) = tensor_f32(&st, "pixel_values");
        let ids = tensor_i64(&st, "aspect_ratio_ids");
        let masks = tensor_i64(&st, "aspect_ratio_mask");
        let t = cfg.tile_size;
        assert_eq!(pv_shape, vec![1, images.len(), cfg.max_tiles, 3, t, t]);
        let per_image = cfg.max_tiles * 3 * t * t;
        for (i, meta) in images.iter().enumerate() {
            let file = meta["file"].as_str().unwrap();
            let label = format!(
                "{}/{}/{file}",
                model_dir
                    .parent()
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_string_lossy(),
                case_dir.file_name().unwrap().to_string_lossy()
            );
            // 1. Decoded RGB equals what the processor saw after convert_to_rgb.
            let img = load_image(&case_dir.join(file), &limits).unwrap();
            let (shape, rgb_ref) = tensor_u8(&st, &format!("image_rgb.{i}"));
            assert_eq!(
                shape,
                vec![img.height as usize, img.width as usize, 3],
                "{label}"
            );
            let (rgb_max, _) = u8_diff(&img.data, &rgb_ref);
            assert_eq!(rgb_max, 0.0, "{label}: decoded RGB differs from HF");
            // 2. Geometry.
            let plan = plan_tiles(img.width as usize, img.height as usize, &cfg).unwrap();
            assert_eq!(plan.canvas_hw, pair(&meta["canvas_hw"]), "{label}");
            assert_eq!(plan.tiles_hw, pair(&meta["tile_grid_hw"]), "{label}");
            assert_eq!(plan.resized_hw, pair(&meta["resized_hw"]), "{label}");
            // 3. Resize (bit-exact with Pillow; any difference is a regression).
            let resized =
                resize_bilinear(&img, plan.resized_hw.1 as u32, plan.resized_hw.0 as u32).unwrap();
            let (rshape, rs_ref) = tensor_u8(&st, &format!("image_resized_rgb.{i}"));
            assert_eq!(
                rshape,
                vec![plan.resized_hw.0, plan.resized_hw.1, 3],
                "{label}"
            );
            let (rs_max, rs_mean) = u8_diff(&resized.data, &rs_ref);
            assert_eq!(
                rs_max, 0.0,
                "{label}: resized image differs (mean {rs_mean})"
            );
            // 4. pixel_values, ids, mask.
            let out = preprocess(&img, &cfg).unwrap();
            let reference = &pv[i * per_image..(i + 1) * per_image];
            let (pv_max, pv_mean) = diff_stats(
                out.pixel_values.iter().map(|&v| v as f64),
                reference.iter().map(|&v| v as f64),
            );
            assert!(pv_max <= 1e-6, "{label}: pixel_values max diff {pv_max}");
            assert_eq!(out.aspect_ratio_id as i64, ids[i], "{label}");
            assert_eq!(
                out.aspect_ratio_mask(),
                masks[i * cfg.max_tiles..(i + 1) * cfg.max_tiles].to_vec(),
                "{label}"
            );
            eprintln!(
                "{label:<52} {:>9} {:>9} {:>7} {:>10} {:>.1e}/{:.1e}",
                format!("{}x{}", img.width, img.height),
                format!("{}x{}", plan.resized_hw.1, plan.resized_hw.0),
                "equal",
                rs_max,
                pv_max,
                pv_mean
            );
            seen += 1;
        }
    }
    assert!(
        seen >= 10,
        "expected the model fixture images, found {seen}"
    );
}

/// Directories `<root>/*/<sub>/*` (depth 2 with a fixed middle component).
fn glob_dirs(root: &Path, _depth: usize, sub: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for m in std::fs::read_dir(root).unwrap().flatten() {
        let d = m.path().join(sub);
        if let Ok(rd) = std::fs::read_dir(&d) {
            for c in rd.flatten() {
                if c.path().is_dir() {
                    out.push(c.path());
                }
            }
        }
    }
    out
}

#[test]
fn real_size_fixtures_match_hf() {
    let dir = repo().join("tests/fixtures/preprocess");
    let doc = read_json(&dir.join("reference.json"));
    let pre = &doc["preprocessor_config"];
    let tile = pre["size"]["height"].as_u64().unwrap() as usize;
    let max_tiles = pre["max_image_tiles"].as_u64().unwrap() as usize;
    let mut cfg = PreprocessConfig::with_tile_size(tile, max_tiles);
    cfg.mean = f32s(&pre["image_mean"]);
    cfg.std = f32s(&pre["image_std"]);
    cfg.rescale_factor = pre["rescale_factor"].as_f64().unwrap() as f32;
    assert_eq!(cfg, PreprocessConfig::llama32_vision());
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let limits = ImageLimits::default();
    let images = doc["images"].as_array().unwrap();
    assert!(images.len() >= 15);
    eprintln!(
        "{:<32} {:>10} {:>10} {:>5} {:>14} {:>14} {:>19} {:>9}",
        "image", "size", "resized", "grid", "decoded", "resized", "pv max/mean (samp.)", "sum dmax"
    );
    let mut failures = Vec::new();
    for meta in images {
        let file = meta["file"].as_str().unwrap();
        let img = load_image(&dir.join(file), &limits).unwrap();
        assert_eq!(
            (img.width as u64, img.height as u64),
            (
                meta["width"].as_u64().unwrap(),
                meta["height"].as_u64().unwrap()
            ),
            "{file}"
        );
        // Decoded image: checksum, and sampled differences if it does not match.
        let dec_ok = checksum(&img.data) == meta["decoded_checksum"].as_str().unwrap();
        let sampled = |prefix: &str, data: &[u8]| {
            let idx = tensor_i32(&st, &format!("{file}.{prefix}_index"));
            let (_, val) = tensor_u8(&st, &format!("{file}.{prefix}_value"));
            let ours: Vec<u8> = idx.iter().map(|&i| data[i as usize]).collect();
            u8_diff(&ours, &val)
        };
        let dec_desc = if dec_ok {
            "equal".to_string()
        } else {
            let (m, a) = sampled("decoded", &img.data);
            failures.push(format!(
                "{file}: decoded image differs (samples max {m}, mean {a})"
            ));
            format!("{m}/{a:.2}")
        };
        // Geometry.
        let plan = plan_tiles(img.width as usize, img.height as usize, &cfg).unwrap();
        assert_eq!(plan.canvas_hw, pair(&meta["canvas_hw"]), "{file}");
        assert_eq!(plan.tiles_hw, pair(&meta["tile_grid_hw"]), "{file}");
        assert_eq!(plan.resized_hw, pair(&meta["resized_hw"]), "{file}");
        assert_eq!(
            plan.aspect_ratio_id as u64,
            meta["aspect_ratio_id"].as_u64().unwrap(),
            "{file}"
        );
        // Resize.
        let resized =
            resize_bilinear(&img, plan.resized_hw.1 as u32, plan.resized_hw.0 as u32).unwrap();
        let rs_ok = checksum(&resized.data) == meta["resized_checksum"].as_str().unwrap();
        let rs_desc = if rs_ok {
            "equal".to_string()
        } else {
            let (m, a) = sampled("resized", &resized.data);
            if !dec_ok || m > 1.0 {
                failures.push(format!(
                    "{file}: resized image differs (samples max {m}, mean {a})"
                ));
            }
            format!("{m}/{a:.2}")
        };
        // pixel_values: samples, then per-slot / per-channel sums.
        let out = preprocess(&img, &cfg).unwrap();
        assert_eq!(out.pixel_values.len(), max_tiles * 3 * tile * tile);
        assert_eq!(
            out.num_tiles as u64,
            meta["num_tiles"].as_u64().unwrap(),
            "{file}"
        );
        let mask: Vec<i64> = meta["aspect_ratio_mask"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(out.aspect_ratio_mask(), mask, "{file}");
        let idx = tensor_i32(&st, &format!("{file}.pv_index"));
        let (_, val) = tensor_f32(&st, &format!("{file}.pv_value"));
        let (pv_max, pv_mean) = diff_stats(
            idx.iter().map(|&i| out.pixel_values[i as usize] as f64),
            val.iter().map(|&v| v as f64),
        );
        if pv_max > 0.05 || pv_mean > 0.005 {
            failures.push(format!(
                "{file}: pixel_values samples differ: max {pv_max}, mean {pv_mean}"
            ));
        }
        let n = (tile * tile) as f64;
        let mut sum_dmax = 0f64;
        for (key, f) in [
            ("pv_sum", (|v: f64| v) as fn(f64) -> f64),
            ("pv_abs_sum", |v: f64| v.abs()),
            ("pv_sumsq", |v: f64| v * v),
        ] {
            for slot in 0..max_tiles {
                for c in 0..3 {
                    let base = (slot * 3 + c) * tile * tile;
                    let ours: f64 = out.pixel_values[base..base + tile * tile]
                        .iter()
                        .map(|&v| f(v as f64))
                        .sum();
                    let reference = meta[key][slot][c].as_f64().unwrap();
                    let d = (ours - reference).abs() / n;
                    sum_dmax = sum_dmax.max(d);
                    if d.is_nan() || d > 0.005 {
                        failures.push(format!(
                            "{file}: {key}[{slot}][{c}] per-pixel mean differs by {d}"
                        ));
                    }
                }
            }
        }
        eprintln!(
            "{file:<32} {:>10} {:>10} {:>5} {dec_desc:>14} {rs_desc:>14} {:>9.1e}/{:.1e} {sum_dmax:>9.1e}",
            format!("{}x{}", img.width, img.height),
            format!("{}x{}", plan.resized_hw.1, plan.resized_hw.0),
            format!("{}x{}", plan.tiles_hw.0, plan.tiles_hw.1),
            pv_max,
            pv_mean
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ------------------------------------------------------------------------------------------------
// Bad input
// ------------------------------------------------------------------------------------------------

fn err_msg(r: Result<RgbImage, Error>) -> String {
    match r {
        Ok(img) => panic!(
            "expected an error, got a {}x{} image",
            img.width, img.height
        ),
        Err(e) => e.to_string(),
    }
}

/// The message of an [`Error::BadImage`] of `format` (`None`: not recognised).
fn bad_image(r: Result<RgbImage, Error>, format: Option<&str>) -> String {
    let e = r.map(|img| (img.width, img.height)).unwrap_err();
    assert!(
        matches!(&e, Error::BadImage { format: f, .. } if *f == format),
        "expected a bad {format:?} image, got {e:?}"
    );
    e.to_string()
}

/// The message of an [`Error::LimitExceeded`] of `limit`, checking its value against its maximum.
fn over_limit(r: Result<RgbImage, Error>, limit: Limit) -> String {
    let e = r.map(|img| (img.width, img.height)).unwrap_err();
    match &e {
        Error::LimitExceeded {
            limit: l,
            value,
            max,
            ..
        } if *l == limit => {
            assert!(value > max, "{e:?}");
            assert!(e.to_string().contains(limit.setting()), "{e}");
        }
        _ => panic!("expected {limit:?} exceeded, got {e:?}"),
    }
    e.to_string()
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(repo().join("tests/fixtures/preprocess").join(name)).unwrap()
}

/// CRC-32 (PNG chunk checksum), bitwise.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut v = (data.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(kind);
    v.extend_from_slice(data);
    let mut c = kind.to_vec();
    c.extend_from_slice(data);
    v.extend_from_slice(&crc32(&c).to_be_bytes());
    v
}

#[test]
fn empty_and_random_bytes_are_refused() {
    let lim = ImageLimits::default();
    assert!(bad_image(decode_image(&[], &lim), None).contains("empty file"));
    let mut x = 0x1234_5678u32;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let m = bad_image(decode_image(&random, &lim), None);
    assert!(
        m.contains("not a supported image (PNG, JPEG, WebP, GIF, BMP)"),
        "{m}"
    );
    let m = bad_image(decode_image(b"II*\0 a tiff file", &lim), None);
    assert!(
        m.contains("TIFF") && m.contains("not a supported image"),
        "{m}"
    );
}

#[test]
fn truncated_files_are_refused() {
    let lim = ImageLimits::default();
    for (name, what) in [
        ("small_200x150.png", "PNG"),
        ("scene_640x480.jpg", "JPEG"),
        ("progressive_1297x1001.jpg", "JPEG"),
        ("lossy_800x600.webp", "WebP"),
        ("palette_transparent_300x200.gif", "GIF"),
        ("bmp24_150x90.bmp", "BMP"),
    ] {
        let full = fixture(name);
        for frac in [0.1, 0.5, 0.9] {
            let cut = &full[..(full.len() as f64 * frac) as usize];
            let m = bad_image(decode_image(cut, &lim), Some(what));
            assert!(
                m.contains(what) && (m.contains("truncated") || m.contains("corrupt")),
                "{name} cut at {frac}: {m}"
            );
        }
    }
}

#[test]
fn huge_declared_png_is_refused_before_decoding() {
    // A valid signature and IHDR (with a correct CRC) declaring 100000 x 100000 RGBA, and no data.
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(png_chunk(b"IHDR", &ihdr));
    png.extend(png_chunk(b"IEND", &[]));
    let t = Instant::now();
    let m = over_limit(
        decode_image(&png, &ImageLimits::default()),
        Limit::ImageWidth,
    );
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        m.contains("100000x100000") && m.contains("16384x16384 limit"),
        "{m}"
    );
    // Within the width/height limits but over the pixel limit.
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&16_000u32.to_be_bytes());
    ihdr.extend_from_slice(&16_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(png_chunk(b"IHDR", &ihdr));
    let m = over_limit(
        decode_image(&png, &ImageLimits::default()),
        Limit::ImagePixels,
    );
    assert!(m.contains("16000x16000") && m.contains("megapixels"), "{m}");
    // Through load_image the message names the file.
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("photo.png");
    std::fs::write(&p, &png).unwrap();
    let m = over_limit(load_image(&p, &ImageLimits::default()), Limit::ImagePixels);
    assert!(
        m.starts_with(&format!("{}: PNG image is 16000x16000", p.display())),
        "{m}"
    );
}

#[test]
fn huge_declared_jpeg_gif_bmp_webp_are_refused() {
    let lim = ImageLimits::default();
    // JPEG: SOI, SOF0 declaring 60000 x 50000 with 3 components, EOI.
    let mut jpg = vec![0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08];
    jpg.extend_from_slice(&50_000u16.to_be_bytes());
    jpg.extend_from_slice(&60_000u16.to_be_bytes());
    jpg.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1, 0xFF, 0xD9]);
    let m = over_limit(decode_image(&jpg, &lim), Limit::ImageWidth);
    assert!(m.contains("60000x50000"), "{m}");
    // GIF: logical screen 65535 x 65535.
    let mut gif = b"GIF89a".to_vec();
    gif.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0x3B]);
    let m = over_limit(decode_image(&gif, &lim), Limit::ImageWidth);
    assert!(m.contains("65535x65535"), "{m}");
    // BMP: 20000 x 30000 declared in a BITMAPINFOHEADER.
    let mut bmp = b"BM".to_vec();
    bmp.extend_from_slice(&[0; 12]);
    bmp.extend_from_slice(&40u32.to_le_bytes());
    bmp.extend_from_slice(&20_000i32.to_le_bytes());
    bmp.extend_from_slice(&(-30_000i32).to_le_bytes());
    bmp.extend_from_slice(&[1, 0, 24, 0]);
    bmp.extend_from_slice(&[0; 24]);
    let m = over_limit(decode_image(&bmp, &lim), Limit::ImageWidth);
    assert!(m.contains("20000x30000"), "{m}");
    // WebP (VP8X canvas 16384 x 16384 is allowed by width but not by the pixel count).
    let mut webp = b"RIFF\0\0\0\0WEBPVP8X".to_vec();
    webp.extend_from_slice(&[10, 0, 0, 0, 0, 0, 0, 0]);
    webp.extend_from_slice(&[0xFF, 0x3F, 0x00, 0xFF, 0x3F, 0x00]);
    let m = over_limit(decode_image(&webp, &lim), Limit::ImagePixels);
    assert!(m.contains("16384x16384") && m.contains("megapixels"), "{m}");
    // Tighter caller limits are honoured too.
    let small = ImageLimits {
        max_width: 100,
        max_height: 100,
        ..ImageLimits::default()
    };
    let m = over_limit(
        decode_image(&fixture("small_200x150.png"), &small),
        Limit::ImageWidth,
    );
    assert!(m.contains("200x150") && m.contains("100x100 limit"), "{m}");
}

#[test]
fn files_that_are_not_images() {
    let lim = ImageLimits::default();
    let m = err_msg(decode_image(b"GIF89a this is not a gif at all", &lim));
    assert!(m.contains("GIF"), "{m}");
    let m = err_msg(decode_image(
        b"BM this is not a bitmap either, just text",
        &lim,
    ));
    assert!(m.contains("BMP"), "{m}");
    let m = err_msg(decode_image(b"\xFF\xD8\xFF\xE0 not a jpeg", &lim));
    assert!(m.contains("JPEG"), "{m}");
    let m = err_msg(decode_image(b"RIFF\x10\0\0\0WEBPVP8 garbage", &lim));
    assert!(m.contains("WebP"), "{m}");
}

#[test]
fn missing_and_oversized_files() {
    let p = repo().join("tests/fixtures/preprocess/does_not_exist.png");
    match load_image(&p, &ImageLimits::default()) {
        Err(e @ Error::Io { .. }) => assert!(e.to_string().contains("does_not_exist.png"), "{e}"),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    let lim = ImageLimits {
        max_bytes: 1000,
        ..ImageLimits::default()
    };
    let p = repo().join("tests/fixtures/preprocess/small_200x150.png");
    let m = over_limit(load_image(&p, &lim), Limit::ImageBytes);
    assert!(
        m.contains("small_200x150.png") && m.contains("1000 byte limit"),
        "{m}"
    );
    match load_image(&repo().join("tests/fixtures"), &ImageLimits::default()) {
        Err(e @ Error::Io { .. }) => assert!(e.to_string().contains("directory"), "{e}"),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

/// Corrupted and truncated versions of every fixture format must never panic.
#[test]
fn fuzzed_inputs_never_panic() {
    let lim = ImageLimits::default();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state = splitmix64(state);
        state
    };
    for name in [
        "scene_640x480.jpg",
        "progressive_1297x1001.jpg",
        "cmyk_240x180.jpg",
        "small_200x150.png",
        "gray16_333x517.png",
        "palette_transparent_300x200.gif",
        "bmp24_150x90.bmp",
        "lossy_800x600.webp",
        "tiny_1x1.png",
    ] {
        let orig = fixture(name);
        for round in 0..40 {
            let mut b = orig.clone();
            let flips = 1 + (next() % 8) as usize;
            for _ in 0..flips {
                // Bias towards the header, where the interesting fields are.
                let pos = if next() % 2 == 0 {
                    (next() % 64.min(b.len() as u64)) as usize
                } else {
                    (next() % b.len() as u64) as usize
                };
                b[pos] = next() as u8;
            }
            if round % 4 == 0 {
                let keep = (next() % b.len() as u64) as usize;
                b.truncate(keep.max(1));
            }
            let _ = decode_image(&b, &lim);
        }
    }
}

#[test]
fn preprocess_large_synthetic_image() {
    // A 4000x3000 image goes to a 2x2 canvas at 1120x840; unused slots stay zero.
    let (w, h) = (4000u32, 3000u32);
    let data: Vec<u8> = (0..w as usize * h as usize * 3)
        .map(|i| ((i * 7) % 251) as u8)
        .collect();
    let img = RgbImage::new(w, h, data).unwrap();
    let out = preprocess(&img, &PreprocessConfig::llama32_vision()).unwrap();
    assert_eq!(out.tiles_hw, (2, 2));
    assert_eq!(out.resized_hw, (840, 1120));
    assert_eq!(out.aspect_ratio_id, 6);
    assert_eq!(out.aspect_ratio_mask(), vec![1, 1, 1, 1]);
    assert!(out.pixel_values.iter().all(|v| v.is_finite()));
}
