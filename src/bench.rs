//! `mllama bench`: whole-model throughput at real shapes, against what this machine can do.
//!
//! Measures, on a synthetic model at the exact 11B/90B shapes (or a real GGUF): the vision tower +
//! projector per image (4 tiles), the cross-attention K/V precompute, prefill tokens/s, decode
//! tokens/s, weight bytes read per decoded token and the resulting effective bandwidth, next to
//! this machine's read bandwidth and FMA peak measured by built-in probes in the same run.

use std::time::Instant;

use serde_json::json;

use crate::eval::peak_rss_bytes;
use mllama::engine::sequence::Sequence;
use mllama::kernels::{self, probe};
use mllama::models::mllama::spec::ModelSpec;
use mllama::models::mllama::synthetic::{self, SyntheticOptions};
use mllama::models::mllama::{Model, Semantics};
use mllama::quant::mix::FileType;
use mllama::text::sampling::argmax;
use mllama::{Error, GgmlType};

/// Which parts to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Only {
    /// Vision, prefill and decode.
    All,
    /// Decode only (prefill runs untimed first).
    Decode,
    /// Prefill only.
    Prefill,
    /// The vision tower + projector only.
    Vision,
}

/// What `mllama bench` runs (its flags). Every run also probes the machine's read bandwidth
/// (over `probe_bytes`) and FMA peak (for half a second).
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// `Some("11b" | "90b" | "tiny")` for a synthetic model, else `model` is a GGUF path.
    pub synthetic: Option<String>,
    /// A GGUF model file (when `synthetic` is `None`).
    pub model: Option<std::path::PathBuf>,
    /// File type of the synthetic model's text decoder (its per-tensor mix, as `quantize -t`).
    pub ty: FileType,
    /// Also quantize vision matrices, with the file type's base type (synthetic only).
    pub quantize_vision: bool,
    /// Which parts to run.
    pub only: Only,
    /// Prompt length of the prefill (at least 2).
    pub prompt_tokens: usize,
    /// Timed decode steps.
    pub decode_tokens: usize,
    /// Bytes of the read-bandwidth probe buffer.
    pub probe_bytes: usize,
    /// Real tiles of the benchmark image (1 to the model's `max_tiles`; `None`: all).
    pub tiles: Option<usize>,
}

/// Everything measured; keys of parts not run are absent from the JSON.
#[derive(Clone, Debug, Default)]
pub struct BenchResult {
    /// Which model ran (synthetic preset and types, or the file path).
    pub model: String,
    /// The active kernel path (e.g. `avx2`).
    pub simd: String,
    /// Rayon worker threads.
    pub threads: usize,
    /// Seconds to build or load the model (repacking included).
    pub build_s: f64,
    /// Seconds of that spent repacking weights (0 with `--no-repack`).
    pub repack_s: f64,
    /// Weight bytes repacked into row-interleaved layouts (0 with `--no-repack`).
    pub repacked_bytes: u64,
    /// Weight bytes a decode step reads ([`Model::text_bytes_per_token`]).
    pub weight_bytes_per_token: u64,
    /// Best read bandwidth measured by the probe, GB/s.
    pub read_bandwidth_gbs: f64,
    /// FMA peak measured by the probe, GFLOP/s.
    pub fma_peak_gflops: f64,
    /// Real tiles of the benchmark image.
    pub vision_tiles: usize,
    /// Vision tower + projector time for one image of `vision_tiles` tiles, ms.
    pub vision_ms_per_image: Option<f64>,
    /// The precision the tower ran in (`f32`, `int8`).
    pub vision_precision: Option<String>,
    /// Preparing the vision weights for that precision before the image (int8: quantizing
    /// them into memory), ms; not part of `vision_ms_per_image`.
    pub vision_prepare_ms: Option<f64>,
    /// Bytes of those in-memory weights.
    pub vision_prepared_bytes: u64,
    /// Writing the image's cross K/V to a vision cache directory (in the caches' precision), ms.
    pub disk_write_ms: Option<f64>,
    /// Reading it back (a `cache=disk` hit: read, checksum, widen to f32), ms.
    pub disk_read_ms: Option<f64>,
    /// Vision throughput, GFLOP/s.
    pub vision_gflops: Option<f64>,
    /// Cross-attention K/V precompute for one image, ms.
    pub cross_kv_ms: Option<f64>,
    /// Prefill speed, tokens/s.
    pub prefill_tokens_per_s: Option<f64>,
    /// Prefill throughput, GFLOP/s.
    pub prefill_gflops: Option<f64>,
    /// Median over the back-to-back timed steps (no probe between them).
    pub decode_tokens_per_s: Option<f64>,
    /// Median decode step time, ms.
    pub decode_ms_per_token: Option<f64>,
    /// Fastest back-to-back step.
    pub decode_best_tokens_per_s: Option<f64>,
    /// Median of the read bandwidth probed right before each paired step, GB/s.
    pub decode_probe_gbs: Option<f64>,
    /// Median over steps of (weight bytes / step time) / (read bandwidth probed right before the
    /// step): robust to other tenants slowing the machine down during the run.
    pub decode_paired_fraction: Option<f64>,
    /// Peak resident set size at the end, if known.
    pub peak_rss_bytes: Option<u64>,
    /// Remarks printed with the report (e.g. aliased layers of a synthetic 90B model).
    pub notes: Vec<String>,
}

impl BenchResult {
    /// Weight bytes per token × median decode speed, GB/s (`None` without decode figures).
    pub fn effective_bandwidth_gbs(&self) -> Option<f64> {
        self.decode_tokens_per_s
            .map(|t| t * self.weight_bytes_per_token as f64 / 1e9)
    }

    /// A disk cache hit's time over the encode it saves (vision tower + projector + cross K/V).
    pub fn disk_read_fraction(&self) -> Option<f64> {
        match (
            self.disk_read_ms,
            self.vision_ms_per_image,
            self.cross_kv_ms,
        ) {
            (Some(r), Some(v), Some(c)) => Some(r / (v + c)),
            _ => None,
        }
    }

    /// The results as a JSON object (`mllama bench --json`); parts not run are absent.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("model".into(), json!(self.model));
        m.insert("simd".into(), json!(self.simd));
        m.insert("threads".into(), json!(self.threads));
        m.insert("build_s".into(), json!(self.build_s));
        m.insert("repack_s".into(), json!(self.repack_s));
        m.insert("repacked_bytes".into(), json!(self.repacked_bytes));
        m.insert(
            "weight_bytes_per_token".into(),
            json!(self.weight_bytes_per_token),
        );
        m.insert("read_bandwidth_gbs".into(), json!(self.read_bandwidth_gbs));
        m.insert("fma_peak_gflops".into(), json!(self.fma_peak_gflops));
        if self.vision_ms_per_image.is_some() {
            m.insert("vision_tiles".into(), json!(self.vision_tiles));
        }
        if let Some(p) = &self.vision_precision {
            m.insert("vision_precision".into(), json!(p));
            m.insert(
                "vision_prepared_bytes".into(),
                json!(self.vision_prepared_bytes),
            );
        }
        let mut opt = |k: &str, v: Option<f64>| {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        };
        opt("vision_ms_per_image", self.vision_ms_per_image);
        opt("vision_prepare_ms", self.vision_prepare_ms);
        opt("vision_gflops", self.vision_gflops);
        opt(
            "vision_fraction_of_fma_peak",
            self.vision_gflops.map(|g| g / self.fma_peak_gflops),
        );
        opt("cross_kv_ms", self.cross_kv_ms);
        opt("disk_write_ms", self.disk_write_ms);
        opt("disk_read_ms", self.disk_read_ms);
        opt("disk_read_fraction", self.disk_read_fraction());
        opt("prefill_tokens_per_s", self.prefill_tokens_per_s);
        opt("prefill_gflops", self.prefill_gflops);
        opt(
            "prefill_fraction_of_fma_peak",
            self.prefill_gflops.map(|g| g / self.fma_peak_gflops),
        );
        opt("decode_tokens_per_s", self.decode_tokens_per_s);
        opt("decode_ms_per_token", self.decode_ms_per_token);
        opt("effective_bandwidth_gbs", self.effective_bandwidth_gbs());
        opt(
            "bandwidth_fraction",
            self.effective_bandwidth_gbs()
                .map(|b| b / self.read_bandwidth_gbs),
        );
        opt("decode_paired_fraction", self.decode_paired_fraction);
        opt("decode_probe_gbs", self.decode_probe_gbs);
        if let Some(r) = self.peak_rss_bytes {
            m.insert("peak_rss_bytes".into(), json!(r));
        }
        if !self.notes.is_empty() {
            m.insert("notes".into(), json!(self.notes));
        }
        serde_json::Value::Object(m)
    }

    /// A human-readable report, one line per measurement.
    pub fn report(&self) -> String {
        let mut l = vec![
            format!("model        {}", self.model),
            format!("kernels      {} on {} threads", self.simd, self.threads),
            format!(
                "machine      read bandwidth {:.1} GB/s, FMA peak {:.0} GFLOP/s (probes, this run)",
                self.read_bandwidth_gbs, self.fma_peak_gflops
            ),
            format!(
                "model built  {:.1} s (repacking {:.1} s, {:.0} MiB)",
                self.build_s,
                self.repack_s,
                self.repacked_bytes as f64 / (1 << 20) as f64
            ),
        ];
        if let (Some(ms), Some(g)) = (self.vision_ms_per_image, self.vision_gflops) {
            l.push(format!(
                "vision       {ms:.0} ms per image ({} tiles, {}), {g:.1} GFLOP/s = {:.0}% of FMA peak",
                self.vision_tiles,
                self.vision_precision.as_deref().unwrap_or("f32"),
                100.0 * g / self.fma_peak_gflops
            ));
            if let Some(p) = self
                .vision_prepare_ms
                .filter(|_| self.vision_prepared_bytes > 0)
            {
                l.push(format!(
                    "vision prep  {p:.0} ms: weights quantized into {:.0} MiB",
                    self.vision_prepared_bytes as f64 / (1 << 20) as f64
                ));
            }
        }
        if let Some(ms) = self.cross_kv_ms {
            l.push(format!("cross K/V    {ms:.0} ms per image"));
        }
        if let (Some(w), Some(r), Some(f)) = (
            self.disk_write_ms,
            self.disk_read_ms,
            self.disk_read_fraction(),
        ) {
            l.push(format!(
                "disk cache   write {w:.0} ms, read {r:.0} ms = {:.2}% of vision + cross K/V",
                100.0 * f
            ));
        }
        if let (Some(t), Some(g)) = (self.prefill_tokens_per_s, self.prefill_gflops) {
            l.push(format!(
                "prefill      {t:.1} tokens/s, {g:.1} GFLOP/s = {:.0}% of FMA peak",
                100.0 * g / self.fma_peak_gflops
            ));
        }
        if let (Some(t), Some(bw), Some(f)) = (
            self.decode_tokens_per_s,
            self.effective_bandwidth_gbs(),
            self.decode_paired_fraction,
        ) {
            l.push(format!(
                "decode       {t:.2} tokens/s (median); {:.2} GB of weights per token → {bw:.1} GB/s; {:.0}% of the read bandwidth probed beside each step (median)",
                self.weight_bytes_per_token as f64 / 1e9,
                100.0 * f
            ));
            if let Some(b) = self.decode_best_tokens_per_s {
                l.push(format!(
                    "             best step {b:.2} tokens/s = {:.0}% of the best probe",
                    100.0 * b * self.weight_bytes_per_token as f64 / 1e9 / self.read_bandwidth_gbs
                ));
            }
        }
        if let Some(r) = self.peak_rss_bytes {
            l.push(format!(
                "peak RSS     {:.2} GiB",
                r as f64 / (1u64 << 30) as f64
            ));
        }
        for n in &self.notes {
            l.push(format!("note         {n}"));
        }
        l.join("\n")
    }
}

/// Time the image's cross K/V, then writing them to a vision cache directory (a temporary one)
/// and reading them back, as a first and a second run of the same image do.
fn disk_round_trip(
    model: &Model,
    out: &mllama::models::mllama::vision::VisionOutput,
    n_tiles: usize,
    r: &mut BenchResult,
) -> Result<(), Error> {
    use mllama::models::mllama::disk_cache::{DiskCache, Layout};
    let Some(vc) = model.cfg.vision.as_ref() else {
        return Ok(());
    };
    let tc = &model.cfg.text;
    let keys = vc.max_tiles * vc.tokens_per_tile();
    let t = Instant::now();
    let kv = model.text.cross_kv(&out.states, keys);
    r.cross_kv_ms = Some(t.elapsed().as_secs_f64() * 1e3);
    let layout = Layout {
        layers: kv.len(),
        values: tc.n_kv_heads * keys * tc.head_dim,
        tile_slots: vc.max_tiles,
        tokens_per_tile: vc.tokens_per_tile(),
    };
    let dir = tempfile::tempdir()
        .map_err(|e| Error::Invalid(format!("a temporary cache directory: {e}")))?;
    let cache = DiskCache::new(dir.path(), u64::MAX);
    let half = Semantics::default().cache.half(&model.text);
    let key = [0u8; 32];
    let t = Instant::now();
    cache
        .store(&key, &kv, n_tiles, &layout, half)
        .map_err(|w| Error::Invalid(w.to_string()))?;
    r.disk_write_ms = Some(t.elapsed().as_secs_f64() * 1e3);
    let t = Instant::now();
    let back = cache.load(&key, &layout);
    r.disk_read_ms = Some(t.elapsed().as_secs_f64() * 1e3);
    match back {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(Error::Invalid(
            "the cache entry just written is missing".into(),
        )),
        Err(w) => Err(Error::Invalid(w.to_string())),
    }
}

/// Floating-point operations of one vision tower + projector pass over an image of `n_tiles`
/// real tiles, counted from the shapes (0 for a text-only model): the patch convolution runs on
/// the real tiles only; the layers and the projector on every tile slot (HF's pad⊗pad mask
/// makes the real tiles attend to the empty slots, so they cannot be skipped).
pub fn vision_flops(m: &Model, n_tiles: usize) -> f64 {
    let Some(c) = &m.cfg.vision else {
        return 0.0;
    };
    let (t, g, p8, p, d, f) = (
        c.max_tiles as f64,
        c.grid() as f64,
        c.padded_tokens_per_tile() as f64,
        c.tokens_per_tile() as f64,
        c.hidden as f64,
        c.ffn as f64,
    );
    let n = t * p8;
    let patch = n_tiles.min(c.max_tiles) as f64
        * g
        * g
        * (c.channels * c.patch_size * c.patch_size) as f64
        * d;
    let layer = n * (4.0 * d * d + 2.0 * d * f) + 2.0 * n * n * d;
    let layers = (c.n_local + c.n_global) as f64 * layer;
    let proj = t * p * c.output_dim as f64 * m.text.cfg.hidden as f64;
    2.0 * (patch + layers + proj)
}

/// Multiply-adds of a prefill of `n` tokens (matrices only, plus attention).
pub fn prefill_flops(m: &Model, n: usize, cross_keys: usize) -> f64 {
    let c = &m.text.cfg;
    let (h, hd, f) = (c.hidden as f64, c.head_dim as f64, c.ffn as f64);
    let (q, kv) = (c.n_heads as f64 * hd, c.n_kv_heads as f64 * hd);
    let n = n as f64;
    let mut macs = 0.0;
    for i in 0..c.n_layers {
        macs += n * 3.0 * h * f;
        if c.cross_layers.contains(&i) {
            macs += n * 2.0 * h * q + 2.0 * n * cross_keys as f64 * q;
        } else {
            macs += n * (2.0 * h * q + 2.0 * h * kv) + n * n * q;
        }
    }
    macs += h * c.vocab_size as f64; // logits of the last row
    2.0 * macs
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Build or load the model, probe the machine, and run the parts `o.only` asks for.
///
/// # Errors
///
/// [`Error::Invalid`] for an unknown synthetic preset or type, or neither a preset nor a model;
/// the errors of [`Model::load`], [`synthetic::build`] and
/// [`Sequence::feed`](mllama::engine::sequence::Sequence::feed).
pub fn run(o: &BenchOptions) -> Result<BenchResult, Error> {
    let mut r = BenchResult {
        simd: kernels::simd_name().to_string(),
        threads: rayon::current_num_threads(),
        ..Default::default()
    };
    let t0 = Instant::now();
    let model = match (&o.synthetic, &o.model) {
        (Some(s), _) => {
            let (spec, distinct) = match s.as_str() {
                "11b" => (ModelSpec::llama32_11b(), None),
                "90b" => (ModelSpec::llama32_90b(), Some(4)),
                "tiny" => (ModelSpec::tiny(), None),
                other => {
                    return Err(Error::Invalid(format!(
                        "--synthetic {other}: expected 11b, 90b or tiny"
                    )))
                }
            };
            let vision_type = if o.quantize_vision || !o.ty.is_quantized() {
                o.ty.base()
            } else {
                GgmlType::F16
            };
            if let Some(k) = distinct {
                r.notes.push(format!(
                    "synthetic {s}: {k} self layers and 1 cross layer have distinct weights, the others alias them (to fit in memory); every layer still streams its weights from DRAM"
                ));
            }
            r.model = format!("synthetic {s}, text {}, vision {vision_type}", o.ty);
            let mut m = synthetic::build(
                &spec,
                &SyntheticOptions {
                    file_type: o.ty,
                    vision_type,
                    distinct_layers: distinct,
                    seed: 7,
                },
            )?;
            if !crate::model_arg::options().no_repack {
                m.repack();
            }
            m.set_vision_precision(crate::model_arg::options().vision_precision);
            m
        }
        (None, Some(path)) => {
            r.model = path.display().to_string();
            crate::model_arg::open(path)?
        }
        (None, None) => {
            return Err(Error::Invalid(
                "bench needs --synthetic 11b|90b|tiny or -m MODEL.gguf".into(),
            ))
        }
    };
    r.build_s = t0.elapsed().as_secs_f64();
    r.repack_s = model.repack_stats().2;
    r.repacked_bytes = model.repack_stats().1 as u64;
    r.weight_bytes_per_token = model.text_bytes_per_token() as u64;

    let path = kernels::active_path();
    let probe_buf = probe::probe_buffer(o.probe_bytes).map_err(|e| {
        Error::Invalid(format!(
            "bench: cannot allocate the read probe's {} MiB buffer: {e}",
            o.probe_bytes >> 20
        ))
    })?;
    r.read_bandwidth_gbs = probe::best_read_gbs(path, &probe_buf, 3);
    r.fma_peak_gflops = probe::fma_peak_gflops(path, 0.5);

    let ar_2x2 = (model.cfg.preprocess.as_ref())
        .and_then(|p| {
            p.supported_aspect_ratios
                .iter()
                .position(|&hw| hw == (2, 2))
        })
        .map(|i| i + 1)
        .unwrap_or(1);
    let want_vision = matches!(o.only, Only::All | Only::Vision);
    let want_prefill = matches!(o.only, Only::All | Only::Prefill);
    let want_decode = matches!(o.only, Only::All | Only::Decode);
    let vision = match model.vision_tower() {
        Ok(v) => Some(v),
        Err(e) if matches!(o.only, Only::Vision) => return Err(e),
        Err(_) => {
            r.notes
                .push("text-only model: no image, no vision or cross-attention work".into());
            None
        }
    };
    // The image's tile count (`--tiles`, default all slots) and an aspect ratio of exactly that
    // many tiles (2×2 for 4, 1×n otherwise).
    let (mut n_tiles, mut ar_id) = (0, ar_2x2);
    if let (Some((_, vc)), Some(pre)) = (vision, model.cfg.preprocess.as_ref()) {
        n_tiles = o.tiles.unwrap_or(vc.max_tiles);
        if !(1..=vc.max_tiles).contains(&n_tiles) {
            return Err(Error::Invalid(format!(
                "--tiles {n_tiles}: expected 1 to {}",
                vc.max_tiles
            )));
        }
        let ratios = &pre.supported_aspect_ratios;
        ar_id = ratios
            .iter()
            .position(|&(h, w)| (h, w) == (2, 2) && n_tiles == 4)
            .or_else(|| ratios.iter().position(|&(h, w)| h * w == n_tiles))
            .map_or(ar_2x2, |i| i + 1);
        r.vision_tiles = n_tiles;
    }

    // The image: random pixels in all tile slots (a 2×2 image uses all 4).
    let mut image = None;
    if let Some((tower, vc)) = vision {
        let px: Vec<f32> = (0..vc.max_tiles * 3 * vc.image_size * vc.image_size)
            .map(|i| ((i * 2654435761usize) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        if want_vision {
            r.vision_precision = Some(model.vision_precision().name().to_string());
            let (bytes, prepare_s) = tower.prepare();
            r.vision_prepare_ms = Some(prepare_s * 1e3);
            r.vision_prepared_bytes = bytes as u64;
            let t = Instant::now();
            let out = tower.forward(&px, ar_id, n_tiles, Semantics::default().taps);
            let s = t.elapsed().as_secs_f64();
            r.vision_ms_per_image = Some(s * 1e3);
            r.vision_gflops = Some(vision_flops(&model, n_tiles) / s / 1e9);
            disk_round_trip(&model, &out, n_tiles, &mut r)?;
            image = Some(out);
        } else {
            // Decode/prefill alone still need cross K/V; their values do not matter for speed.
            let p = vc.tokens_per_tile();
            image = Some(mllama::models::mllama::vision::VisionOutput {
                states: (0..vc.max_tiles * p * model.text.cfg.hidden)
                    .map(|i| ((i * 40503) % 997) as f32 / 997.0 - 0.5)
                    .collect(),
                features: Vec::new(),
            });
        }
    }

    if want_prefill || want_decode {
        let c = &model.text.cfg;
        let n = o.prompt_tokens.max(2);
        let mut seq = Sequence::new(&model, n + 2 * o.decode_tokens + 4, Semantics::default());
        if let Some(img) = &image {
            let t = Instant::now();
            seq.attach_image(img, n_tiles);
            r.cross_kv_ms = Some(t.elapsed().as_secs_f64() * 1e3);
        }
        // A chat-like prompt: a few tokens, the image, text.
        let mut prompt: Vec<u32> = (0..n)
            .map(|i| ((i * 7919 + 13) % (c.vocab_size - 300)) as u32)
            .collect();
        if let (Some(im), Some(_)) = (c.image_token, &image) {
            prompt[1.min(n - 1)] = im;
        }
        let cross_keys = seq.cross_cache().n_keys;
        let t = Instant::now();
        let logits = seq.feed(&prompt, false)?;
        let s = t.elapsed().as_secs_f64();
        let mut next = argmax(logits) as u32;
        if want_prefill {
            r.prefill_tokens_per_s = Some(n as f64 / s);
            r.prefill_gflops = Some(prefill_flops(&model, n, cross_keys) / s / 1e9);
        }
        if want_decode {
            // Two warm-up steps, then timed steps each right after a read-bandwidth probe pass
            // (the machine may be shared: pairing makes the ratio fair to both), then as many
            // steps back to back for the speed a user sees: a probe pass evicts the caches, and
            // a model small enough to stay in a large L3 from one token to the next (SmolLM2's
            // 90 MB in a 480 MiB L3) would otherwise be timed reading from memory every step.
            for _ in 0..2 {
                next = argmax(seq.feed(&[next], false)?) as u32;
            }
            let bytes = r.weight_bytes_per_token as f64;
            let mut probes = Vec::with_capacity(o.decode_tokens);
            let mut ratios = Vec::with_capacity(o.decode_tokens);
            for _ in 0..o.decode_tokens {
                let bw = probe::best_read_gbs(path, &probe_buf, 1);
                r.read_bandwidth_gbs = r.read_bandwidth_gbs.max(bw);
                let t = Instant::now();
                next = argmax(seq.feed(&[next], false)?) as u32;
                let dt = t.elapsed().as_secs_f64();
                probes.push(bw);
                ratios.push(bytes / dt / 1e9 / bw);
            }
            let mut times = Vec::with_capacity(o.decode_tokens);
            for _ in 0..o.decode_tokens {
                let t = Instant::now();
                next = argmax(seq.feed(&[next], false)?) as u32;
                times.push(t.elapsed().as_secs_f64());
            }
            r.decode_probe_gbs = Some(median(&mut probes));
            let med = median(&mut times);
            r.decode_tokens_per_s = Some(1.0 / med);
            r.decode_ms_per_token = Some(med * 1e3);
            r.decode_best_tokens_per_s = Some(1.0 / times.iter().cloned().fold(f64::MAX, f64::min));
            r.decode_paired_fraction = Some(median(&mut ratios));
        }
    }
    r.peak_rss_bytes = peak_rss_bytes();
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vision_flops_count_the_patch_convolution_of_real_tiles_only() {
        let m = Model::load(crate::cli::demo_model()).unwrap();
        let c = m.cfg.vision.as_ref().unwrap();
        // One tile's patch convolution: G² patches of 3·p·p values onto D channels, 2 flops each.
        let per_tile = 2.0
            * (c.grid() * c.grid() * c.channels * c.patch_size * c.patch_size * c.hidden) as f64;
        let all = vision_flops(&m, c.max_tiles);
        for t in 1..c.max_tiles {
            let d = all - vision_flops(&m, t);
            assert!(
                (d - (c.max_tiles - t) as f64 * per_tile).abs() <= 1e-9 * all,
                "{t}: {d}"
            );
        }
    }
}
