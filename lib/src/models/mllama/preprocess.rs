//! Image preprocessing for Llama 3.2 Vision, reproducing HF transformers' `MllamaImageProcessor`
//! (PIL backend, transformers 5.24 with Pillow 13) — see `mllama-spec.md` §2.
//!
//! Pipeline for one image ([`preprocess`]):
//! 1. **Decode and convert to RGB** ([`load_image`](crate::image::load_image) / [`decode_image`](crate::image::decode_image)) exactly as PIL + HF's
//!    `convert_to_rgb` would: images with alpha (RGBA, LA, palette or grey/RGB with a `tRNS`
//!    transparency entry, GIF transparency, WebP alpha) are composited over **white** with Pillow's
//!    integer arithmetic; grey is replicated; 16-bit PNG channels keep their high byte; 16-bit grey
//!    PNGs are *clipped* to 255 (Pillow's `I;16 -> RGB`, which makes most 16-bit grey images white —
//!    that is what HF feeds the model, so we do the same). JPEGs are decoded bit-exactly like
//!    libjpeg-turbo (Pillow's decoder) by our own decoder. **EXIF orientation is not applied**
//!    (neither PIL's `Image.open` nor HF's processor rotates images), so a phone photo stored sideways
//!    with an orientation tag is processed sideways, as in HF.
//! 2. **Choose the tile canvas** ([`plan_tiles`]): among the supported (tiles_high, tiles_wide)
//!    arrangements, the smallest upscale factor ≥ 1 if any, else the largest downscale; ties go to
//!    the smallest canvas area, then list order.
//! 3. **Resize** without distortion to HF's `get_image_size_fit_to_canvas` size with Pillow's
//!    bilinear filter on uint8 ([`resize_bilinear`], bit-exact with Pillow 13, antialiased when
//!    downscaling). Images that already fit are not resized.
//! 4. **Pad** right/bottom with black to the canvas, **rescale** ×1/255 (computed in f64 and
//!    rounded to f32 like HF), **normalise** `(x - mean) / std` in f32, **split** into row-major
//!    tiles, CHW per tile, and **pack** into `max_tiles` slots; unused slots are all zeros.
//!
//! The output matches HF's `pixel_values` exactly (0 difference) whenever the decoded image matches
//! Pillow's, which it does for PNG, GIF, BMP, lossless WebP and JPEG (see the tests).

use rayon::prelude::*;

use crate::image::{resize_bilinear, RgbImage};
use crate::Error;

/// CLIP image mean used by Llama 3.2 Vision (RGB), the decimal values of the released
/// `preprocessor_config.json` rounded to f32 (as numpy does).
#[allow(clippy::excessive_precision)]
pub const CLIP_MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];
/// CLIP image standard deviation used by Llama 3.2 Vision (RGB), rounded to f32 like [`CLIP_MEAN`].
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.26862954, 0.26130258, 0.27577711];

/// The (tiles_high, tiles_wide) arrangements with at most `max_tiles` tiles, in HF's order
/// (`a` = 1.., `b` = 1.., `a * b <= max_tiles`). For 4 tiles:
/// `[(1,1),(1,2),(1,3),(1,4),(2,1),(2,2),(3,1),(4,1)]`; aspect-ratio id = 1 + index.
pub fn supported_aspect_ratios(max_tiles: usize) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    for a in 1..=max_tiles {
        for b in 1..=max_tiles {
            if a * b <= max_tiles {
                v.push((a, b));
            }
        }
    }
    v
}

/// Preprocessing parameters, all read from the GGUF by the model loader.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessConfig {
    /// Tile edge in pixels: 560 for the real model, 56 / 28 in the test models.
    pub tile_size: usize,
    /// Number of tile slots per image (4).
    pub max_tiles: usize,
    /// Per-channel mean subtracted after rescaling (RGB).
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by after subtracting the mean (RGB).
    pub std: [f32; 3],
    /// Rescale factor applied to uint8 values (1/255). When it is the f32 rounding of `1/n` for an
    /// integer `n` (the usual case), the exact f64 `1/n` is used, as HF does.
    pub rescale_factor: f32,
    /// Tile arrangements as (tiles_high, tiles_wide); the order defines the aspect-ratio ids
    /// (id = 1 + index).
    pub supported_aspect_ratios: Vec<(usize, usize)>,
}

impl PreprocessConfig {
    /// The released Llama 3.2 Vision settings: 560-px tiles, 4 tiles, CLIP mean/std, 1/255.
    pub fn llama32_vision() -> PreprocessConfig {
        PreprocessConfig::with_tile_size(560, 4)
    }

    /// CLIP mean/std, 1/255 and HF's aspect-ratio list for the given tile size and tile count.
    pub fn with_tile_size(tile_size: usize, max_tiles: usize) -> PreprocessConfig {
        PreprocessConfig {
            tile_size,
            max_tiles,
            mean: CLIP_MEAN,
            std: CLIP_STD,
            rescale_factor: 1.0 / 255.0,
            supported_aspect_ratios: supported_aspect_ratios(max_tiles),
        }
    }

    /// Check that the parameters are usable (non-zero sizes, every arrangement fits in `max_tiles`,
    /// finite non-zero std, ...).
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| {
            Err(Error::bad_argument(
                "PreprocessConfig",
                format!("preprocessing config: {m}"),
            ))
        };
        if self.tile_size == 0 || self.tile_size > 8192 {
            return bad(format!("tile_size {} is not in 1..=8192", self.tile_size));
        }
        if self.max_tiles == 0 || self.max_tiles > 64 {
            return bad(format!("max_tiles {} is not in 1..=64", self.max_tiles));
        }
        if self.supported_aspect_ratios.is_empty() {
            return bad("supported_aspect_ratios is empty".into());
        }
        for &(h, w) in &self.supported_aspect_ratios {
            if h == 0 || w == 0 || h * w > self.max_tiles {
                return bad(format!(
                    "aspect ratio ({h}, {w}) does not fit in {} tiles",
                    self.max_tiles
                ));
            }
        }
        if !(self.rescale_factor.is_finite() && self.rescale_factor > 0.0) {
            return bad(format!(
                "rescale_factor {} is not positive",
                self.rescale_factor
            ));
        }
        for c in 0..3 {
            if !self.mean[c].is_finite() || !self.std[c].is_finite() || self.std[c] == 0.0 {
                return bad(format!(
                    "mean/std of channel {c} ({}, {}) are not finite with non-zero std",
                    self.mean[c], self.std[c]
                ));
            }
        }
        Ok(())
    }

    /// The rescale factor as HF applies it (f64). `1/255` stored as f32 gives back `1.0 / 255.0`.
    fn rescale_f64(&self) -> f64 {
        let r = self.rescale_factor as f64;
        let inv = 1.0 / r;
        let n = inv.round();
        if n >= 1.0 && ((1.0 / n) as f32) == self.rescale_factor {
            1.0 / n
        } else {
            r
        }
    }
}

impl Default for PreprocessConfig {
    /// Same as [`PreprocessConfig::llama32_vision`].
    fn default() -> Self {
        PreprocessConfig::llama32_vision()
    }
}

/// The geometry chosen for one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TilePlan {
    /// (tiles_high, tiles_wide).
    pub tiles_hw: (usize, usize),
    /// Canvas size in pixels (height, width) = tiles × tile size.
    pub canvas_hw: (usize, usize),
    /// Size (height, width) the image is resized to before padding (equal to the input size when no
    /// resize is needed).
    pub resized_hw: (usize, usize),
    /// 1 + index of `tiles_hw` in the config's aspect-ratio list.
    pub aspect_ratio_id: usize,
}

/// Choose the canvas, tile grid, resize target and aspect-ratio id for an image of
/// `width × height` pixels, exactly as HF's `get_optimal_tiled_canvas` and
/// `get_image_size_fit_to_canvas` do (f64 arithmetic, `>= 1` upscale rule, smallest-area tie break).
pub fn plan_tiles(width: usize, height: usize, cfg: &PreprocessConfig) -> Result<TilePlan, Error> {
    cfg.validate()?;
    if width == 0 || height == 0 {
        return Err(Error::bad_argument(
            "width, height",
            format!("image has an empty size ({width}x{height} pixels)"),
        ));
    }
    let tile = cfg.tile_size;
    let scales: Vec<f64> = cfg
        .supported_aspect_ratios
        .iter()
        .map(|&(a, b)| {
            let sh = (a * tile) as f64 / height as f64;
            let sw = (b * tile) as f64 / width as f64;
            // numpy: where(scale_w > scale_h, scale_h, scale_w)
            if sw > sh {
                sh
            } else {
                sw
            }
        })
        .collect();
    let upscale = scales
        .iter()
        .copied()
        .filter(|&s| s >= 1.0)
        .reduce(f64::min);
    let selected = match upscale {
        Some(s) => s,
        None => scales
            .iter()
            .copied()
            .filter(|&s| s < 1.0)
            .reduce(f64::max)
            .expect("non-empty list"),
    };
    // Among arrangements with exactly that scale, the smallest area (first one on ties).
    let mut best: Option<(usize, usize)> = None; // (index, area)
    for (i, (&(a, b), &s)) in cfg.supported_aspect_ratios.iter().zip(&scales).enumerate() {
        if s == selected {
            let area = a * tile * b * tile;
            if best.is_none_or(|(_, ba)| area < ba) {
                best = Some((i, area));
            }
        }
    }
    let (index, _) = best.expect("the selected scale comes from the list");
    let (th, tw) = cfg.supported_aspect_ratios[index];
    let (canvas_h, canvas_w) = (th * tile, tw * tile);
    // get_image_size_fit_to_canvas
    let target_w = width.max(tile).min(canvas_w);
    let target_h = height.max(tile).min(canvas_h);
    let scale_h = target_h as f64 / height as f64;
    let scale_w = target_w as f64 / width as f64;
    let floor_or_1 = |x: f64| (x.floor() as usize).max(1);
    let (new_h, new_w) = if scale_w < scale_h {
        (floor_or_1(height as f64 * scale_w).min(target_h), target_w)
    } else {
        (target_h, floor_or_1(width as f64 * scale_h).min(target_w))
    };
    Ok(TilePlan {
        tiles_hw: (th, tw),
        canvas_hw: (canvas_h, canvas_w),
        resized_hw: (new_h, new_w),
        aspect_ratio_id: index + 1,
    })
}

/// The processor output for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessed {
    /// Normalised tiles, `[max_tiles, 3, tile, tile]` row-major; unused tile slots are all zeros.
    pub pixel_values: Vec<f32>,
    /// 1-based aspect-ratio id (index + 1 of `tiles_hw` in the config's list).
    pub aspect_ratio_id: usize,
    /// Number of real tiles: tiles_high × tiles_wide.
    pub num_tiles: usize,
    /// (tiles_high, tiles_wide).
    pub tiles_hw: (usize, usize),
    /// Size (height, width) after the resize, before padding.
    pub resized_hw: (usize, usize),
    /// Canvas size (height, width) the resized image is padded to.
    pub canvas_hw: (usize, usize),
    /// Number of tile slots in `pixel_values` (the config's `max_tiles`).
    pub max_tiles: usize,
    /// Tile edge in pixels.
    pub tile_size: usize,
}

impl Preprocessed {
    /// `[max_tiles]` mask: 1 for the real tiles, 0 for padding slots (slot 0 is always 1).
    pub fn aspect_ratio_mask(&self) -> Vec<i64> {
        let mut m = vec![0i64; self.max_tiles];
        for v in m.iter_mut().take(self.num_tiles) {
            *v = 1;
        }
        if let Some(first) = m.first_mut() {
            *first = 1;
        }
        m
    }

    /// The `[3, tile, tile]` slice of tile slot `t`.
    pub fn tile(&self, t: usize) -> &[f32] {
        let n = 3 * self.tile_size * self.tile_size;
        &self.pixel_values[t * n..(t + 1) * n]
    }
}

/// Per-channel lookup from a uint8 value to its normalised f32 value, computed as HF does:
/// `f32(v as f64 * rescale)` then `(x - mean) / std` in f32.
fn normalization_lut(cfg: &PreprocessConfig) -> [[f32; 256]; 3] {
    let rescale = cfg.rescale_f64();
    let mut lut = [[0f32; 256]; 3];
    for (c, table) in lut.iter_mut().enumerate() {
        for (v, out) in table.iter_mut().enumerate() {
            let x = (v as f64 * rescale) as f32;
            *out = (x - cfg.mean[c]) / cfg.std[c];
        }
    }
    lut
}

/// Pad `resized` (already at `plan.resized_hw`) to the canvas, rescale, normalise and split into
/// `max_tiles` CHW tile slots (unused slots zero).
pub fn normalize_and_tile(
    resized: &RgbImage,
    plan: &TilePlan,
    cfg: &PreprocessConfig,
) -> Result<Vec<f32>, Error> {
    cfg.validate()?;
    let (rh, rw) = (resized.height as usize, resized.width as usize);
    if (rh, rw) != plan.resized_hw || resized.data.len() != rh * rw * 3 {
        return Err(Error::bad_argument(
            "resized",
            format!(
                "resized image is {rw}x{rh} ({} bytes), the plan expects {}x{}",
                resized.data.len(),
                plan.resized_hw.1,
                plan.resized_hw.0
            ),
        ));
    }
    if rh > plan.canvas_hw.0 || rw > plan.canvas_hw.1 {
        return Err(Error::bad_argument(
            "plan",
            "resized image is larger than the canvas",
        ));
    }
    let tile = cfg.tile_size;
    let (th, tw) = plan.tiles_hw;
    let num_tiles = th * tw;
    if num_tiles > cfg.max_tiles {
        return Err(Error::bad_argument(
            "plan",
            format!("{num_tiles} tiles do not fit in {} slots", cfg.max_tiles),
        ));
    }
    let lut = normalization_lut(cfg);
    let mut out = vec![0f32; cfg.max_tiles * 3 * tile * tile];
    // One chunk = one row of one channel of one tile.
    out[..num_tiles * 3 * tile * tile]
        .par_chunks_mut(tile)
        .enumerate()
        .for_each(|(i, row)| {
            let r = i % tile;
            let c = (i / tile) % 3;
            let t = i / (3 * tile);
            let (ty, tx) = (t / tw, t % tw);
            let y = ty * tile + r;
            let x0 = tx * tile;
            let lut = &lut[c];
            if y >= rh || x0 >= rw {
                row.fill(lut[0]);
                return;
            }
            let n = (rw - x0).min(tile);
            let src = &resized.data[(y * rw + x0) * 3..];
            for (o, px) in row[..n].iter_mut().zip(src.chunks_exact(3)) {
                *o = lut[px[c] as usize];
            }
            row[n..].fill(lut[0]);
        });
    Ok(out)
}

/// Run the whole processor on one decoded image (canvas choice, resize, pad, normalise, tile).
/// Use the model's settings, [`ModelConfig::preprocess`](crate::models::mllama::ModelConfig::preprocess),
/// when the result goes to a model.
///
/// # Errors
///
/// [`Error::BadArgument`] if `cfg` fails [`PreprocessConfig::validate`] or the image has a zero
/// size.
///
/// ```
/// use std::path::Path;
/// use mllama::image::{load_image, ImageLimits};
/// use mllama::models::mllama::preprocess::{preprocess, PreprocessConfig};
///
/// # fn main() -> Result<(), mllama::Error> {
/// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
/// let img = load_image(Path::new("models/demo/example.jpg"), &ImageLimits::default())?;
/// let cfg = PreprocessConfig::llama32_vision();
/// let p = preprocess(&img, &cfg)?;
///
/// // 224x168 fits best on one 560-px tile (aspect-ratio id 1), upscaled to 560x420.
/// assert_eq!((p.tiles_hw, p.aspect_ratio_id, p.num_tiles), ((1, 1), 1, 1));
/// assert_eq!((p.resized_hw, p.canvas_hw), ((420, 560), (560, 560)));
/// // [max_tiles, 3, tile, tile], unused slots zero.
/// assert_eq!(p.pixel_values.len(), 4 * 3 * 560 * 560);
/// assert_eq!(p.aspect_ratio_mask(), [1, 0, 0, 0]);
/// assert!(p.tile(3).iter().all(|&v| v == 0.0));
/// # Ok(())
/// # }
/// ```
pub fn preprocess(img: &RgbImage, cfg: &PreprocessConfig) -> Result<Preprocessed, Error> {
    let plan = plan_tiles(img.width as usize, img.height as usize, cfg)?;
    let (rh, rw) = plan.resized_hw;
    let resized;
    let src = if (rh, rw) == (img.height as usize, img.width as usize) {
        img
    } else {
        resized = resize_bilinear(img, rw as u32, rh as u32)?;
        &resized
    };
    let pixel_values = normalize_and_tile(src, &plan, cfg)?;
    Ok(Preprocessed {
        pixel_values,
        aspect_ratio_id: plan.aspect_ratio_id,
        num_tiles: plan.tiles_hw.0 * plan.tiles_hw.1,
        tiles_hw: plan.tiles_hw,
        resized_hw: plan.resized_hw,
        canvas_hw: plan.canvas_hw,
        max_tiles: cfg.max_tiles,
        tile_size: cfg.tile_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(w: usize, h: usize) -> TilePlan {
        plan_tiles(w, h, &PreprocessConfig::llama32_vision()).unwrap()
    }

    #[test]
    fn aspect_ratio_list_matches_hf() {
        assert_eq!(
            supported_aspect_ratios(4),
            vec![
                (1, 1),
                (1, 2),
                (1, 3),
                (1, 4),
                (2, 1),
                (2, 2),
                (3, 1),
                (4, 1)
            ]
        );
    }

    #[test]
    fn spec_examples() {
        let p = plan(640, 480);
        assert_eq!(
            (p.canvas_hw, p.tiles_hw, p.aspect_ratio_id),
            ((560, 1120), (1, 2), 2)
        );
        assert_eq!(p.resized_hw, (480, 640));
        let p = plan(1024, 768);
        assert_eq!((p.canvas_hw, p.aspect_ratio_id), ((1120, 1120), 6));
        let p = plan(560, 560);
        assert_eq!(
            (p.tiles_hw, p.resized_hw, p.aspect_ratio_id),
            ((1, 1), (560, 560), 1)
        );
        let p = plan(1600, 1200);
        assert_eq!((p.tiles_hw, p.resized_hw), ((2, 2), (840, 1120)));
        let p = plan(200, 150);
        assert_eq!((p.tiles_hw, p.resized_hw), ((1, 1), (420, 560)));
        let p = plan(300, 900);
        assert_eq!(
            (p.tiles_hw, p.resized_hw, p.aspect_ratio_id),
            ((2, 1), (900, 300), 5)
        );
        let p = plan(1, 1);
        assert_eq!((p.tiles_hw, p.resized_hw), ((1, 1), (560, 560)));
        let p = plan(2000, 100);
        assert_eq!((p.tiles_hw, p.aspect_ratio_id), ((1, 4), 4));
        assert_eq!(p.resized_hw, (100, 2000)); // wide enough: only padded, not upscaled
    }

    #[test]
    fn rescale_recovers_exact_reciprocal() {
        let cfg = PreprocessConfig::llama32_vision();
        assert_eq!(cfg.rescale_f64(), 1.0 / 255.0);
        let lut = normalization_lut(&cfg);
        assert_eq!(lut[0][0], (0.0 - CLIP_MEAN[0]) / CLIP_STD[0]);
        assert_eq!(lut[2][255], (1.0 - CLIP_MEAN[2]) / CLIP_STD[2]);
    }

    #[test]
    fn mask_and_zero_slots() {
        let cfg = PreprocessConfig::with_tile_size(28, 4);
        let img = RgbImage::new(50, 20, vec![200; 50 * 20 * 3]).unwrap();
        let p = preprocess(&img, &cfg).unwrap();
        assert_eq!(p.tiles_hw, (1, 2));
        assert_eq!(p.aspect_ratio_mask(), vec![1, 1, 0, 0]);
        assert!(p.tile(2).iter().chain(p.tile(3)).all(|&v| v == 0.0));
        // Padding (bottom rows) is black: (0 - mean) / std.
        let t0 = p.tile(0);
        assert_eq!(t0[27 * 28], (0.0 - CLIP_MEAN[0]) / CLIP_STD[0]);
    }

    #[test]
    fn bad_config_is_an_error() {
        let mut cfg = PreprocessConfig::llama32_vision();
        cfg.supported_aspect_ratios.push((3, 3));
        let img = RgbImage::new(1, 1, vec![0; 3]).unwrap();
        let e = preprocess(&img, &cfg).unwrap_err();
        assert!(
            matches!(
                e,
                Error::BadArgument {
                    name: "PreprocessConfig",
                    ..
                }
            ),
            "{e:?}"
        );
    }
}
