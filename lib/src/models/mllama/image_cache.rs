//! Encoded images (cross-attention K/V) and the bounded cache of them a model keeps.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::image::{self, ImageLimits};
use crate::models::mllama::config::VisionConfig;
use crate::models::mllama::disk_cache::{self, CacheWarning, DiskCache, EntrySettings, Layout};
use crate::models::mllama::{preprocess, Model, TapConvention, VisionPrecision};
use crate::Error;

/// Default bound of the image cache: 2 GiB of cross-attention K/V (about 5 images of the 11B
/// model). Change it with [`ImageCache::set_max_bytes`] on [`Model::image_cache`].
pub const DEFAULT_IMAGE_CACHE_BYTES: usize = 2 << 30;

/// One image after the vision tower: its cross-attention K/V for every cross layer, head-major
/// `[n_kv_heads][tile_slots · tokens_per_tile][head_dim]`, all tile slots kept.
///
/// Made by [`Model::encode_image`] or [`ImageCache::get_or_encode`]; attach it to a conversation
/// through [`Session::add_image`](crate::Session::add_image) (which uses the cache) rather than by hand.
pub struct EncodedImage {
    /// Per cross layer, in layer order: (K with k_norm applied, V), each f32 head-major
    /// `[n_kv_heads][tile_slots · tokens_per_tile][head_dim]`.
    pub kv: Vec<(Vec<f32>, Vec<f32>)>,
    /// Real tiles of the image (1 to `tile_slots`); the keys of the other slots are never attended
    /// to by text that sees the image.
    pub n_tiles: usize,
    /// Tile slots the K/V cover (the model's `max_tiles`, 4 for Llama 3.2 Vision).
    pub tile_slots: usize,
    /// Vision tokens per tile: patches + the class token (1601 at 560-pixel tiles).
    pub tokens_per_tile: usize,
}

/// Where the time of encoding one image went: returned beside the [`EncodedImage`] by
/// [`Model::encode_image`] and [`ImageCache::get_or_encode`] (not stored in the image, which a
/// cache shares between sessions), and listed per image in
/// [`SessionStats::encoded`](crate::SessionStats::encoded).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EncodeStats {
    /// Seconds spent in the vision tower + projector.
    pub vision_s: f64,
    /// Seconds spent computing the cross-attention K/V of every cross layer.
    pub cross_kv_s: f64,
    /// Seconds spent preparing the tower's weights for its precision before this image (int8:
    /// quantizing them into memory, once per model; 0 otherwise).
    pub prepare_s: f64,
}

/// Where an image's K/V came from ([`ImageCache::lookup`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageSource {
    /// Not cached: decoded and run through the vision tower now.
    Miss,
    /// The in-memory cache of this process.
    Memory,
    /// The disk cache ([`DiskCache`]).
    Disk,
}

impl ImageSource {
    /// `miss`, `memory` or `disk`.
    pub fn name(self) -> &'static str {
        match self {
            ImageSource::Miss => "miss",
            ImageSource::Memory => "memory",
            ImageSource::Disk => "disk",
        }
    }
}

/// What [`ImageCache::lookup`] returns: the image, where it came from, what it cost, and any
/// disk cache problem met on the way (the work went on without it).
pub struct Lookup {
    /// The encoded image.
    pub image: Arc<EncodedImage>,
    /// Where it came from.
    pub source: ImageSource,
    /// Vision tower and cross K/V time (zero unless `source` is [`ImageSource::Miss`]).
    pub encode: EncodeStats,
    /// Seconds spent reading the disk entry (a hit) or writing it (a miss).
    pub disk_s: f64,
    /// Disk cache problems (a corrupt entry, an unwritable directory).
    pub warnings: Vec<CacheWarning>,
}

/// The disk side of a lookup: a cache directory and the model's
/// [`model_identity`](disk_cache::model_identity).
#[derive(Clone, Copy)]
pub struct DiskSide<'a> {
    /// The cache directory.
    pub cache: &'a DiskCache,
    /// The identity of the model the lookup is for.
    pub identity: &'a [u8; 32],
}

impl EncodedImage {
    /// Bytes of K/V held (4 bytes per value, K and V of every cross layer): what the image costs
    /// in an [`ImageCache`].
    pub fn bytes(&self) -> usize {
        self.kv.iter().map(|(k, v)| 4 * (k.len() + v.len())).sum()
    }
}

struct CacheEntry {
    key: [u8; 32],
    image: Arc<EncodedImage>,
    last_used: u64,
}

/// Encoded images kept across turns and sessions, bounded in bytes; the least recently used
/// entry is dropped when a new one would exceed the bound (an entry a session still holds stays
/// alive in that session). A single image larger than the bound is used but not kept.
///
/// Every [`Model`] owns one ([`Model::image_cache`], bounded by [`DEFAULT_IMAGE_CACHE_BYTES`]);
/// [`Session::add_image`](crate::Session::add_image) goes through it. All methods take `&self` and are thread-safe.
///
/// ```
/// use std::sync::Arc;
/// use mllama::image::ImageLimits;
/// use mllama::{Model, TapConvention};
///
/// # fn main() -> Result<(), mllama::Error> {
/// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
/// let model = Model::load("models/demo/mllama-demo-q4_0.gguf")?;
/// let path = "models/demo/example.jpg";
/// let bytes = std::fs::read(path).map_err(|e| mllama::Error::io(path, e))?;
/// let (taps, limits) = (TapConvention::default(), ImageLimits::default());
///
/// // First use: decoded, preprocessed and run through the vision tower (timed).
/// let (first, work) = model.image_cache.get_or_encode(&model, &bytes, path, taps, &limits)?;
/// assert!(work.is_some_and(|w| w.vision_s > 0.0));
/// // Second use: the same K/V, no vision work.
/// let (again, work) = model.image_cache.get_or_encode(&model, &bytes, path, taps, &limits)?;
/// assert!(work.is_none() && Arc::ptr_eq(&first, &again));
/// assert_eq!(model.image_cache.usage(), (1, first.bytes()));
///
/// // A bound below one image's size empties the cache; images are then used but not kept.
/// model.image_cache.set_max_bytes(first.bytes() - 1);
/// assert_eq!(model.image_cache.usage(), (0, 0));
/// # Ok(())
/// # }
/// ```
pub struct ImageCache {
    max_bytes: Mutex<usize>,
    entries: Mutex<(Vec<CacheEntry>, u64)>,
}

impl ImageCache {
    /// An empty cache holding at most `max_bytes` of K/V (as counted by
    /// [`EncodedImage::bytes`]).
    ///
    /// ```
    /// let cache = mllama::ImageCache::new(256 << 20);
    /// assert_eq!(cache.usage(), (0, 0));
    /// ```
    pub fn new(max_bytes: usize) -> Self {
        ImageCache {
            max_bytes: Mutex::new(max_bytes),
            entries: Mutex::new((Vec::new(), 0)),
        }
    }

    /// Change the bound in bytes, evicting least recently used entries until the rest fits.
    pub fn set_max_bytes(&self, max_bytes: usize) {
        *self.max_bytes.lock().unwrap_or_else(|e| e.into_inner()) = max_bytes;
        let mut g = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        Self::evict(&mut g.0, max_bytes, 0);
    }

    /// `(entries, bytes)` currently held.
    pub fn usage(&self) -> (usize, usize) {
        let g = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        (g.0.len(), g.0.iter().map(|e| e.image.bytes()).sum())
    }

    fn evict(entries: &mut Vec<CacheEntry>, max: usize, incoming: usize) {
        loop {
            let used: usize = entries.iter().map(|e| e.image.bytes()).sum();
            if used + incoming <= max || entries.is_empty() {
                return;
            }
            let (i, _) = entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .unwrap_or((0, &entries[0]));
            entries.remove(i);
        }
    }

    /// The cache key of image bytes under a tap convention and a (resolved) vision precision:
    /// SHA-256 of the convention and precision bytes followed by the file bytes (the same
    /// picture re-encoded as another file is another key).
    pub fn key(bytes: &[u8], taps: TapConvention, vision: VisionPrecision) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update([taps as u8, vision as u8]);
        h.update(bytes);
        h.finalize().into()
    }

    /// The key of an image read back from an f16 disk entry: its values are f16-rounded, right
    /// for half-precision caches only, so it is kept apart from exact encodings.
    fn rounded_key(bytes: &[u8], taps: TapConvention, vision: VisionPrecision) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"f16-rounded");
        h.update([taps as u8, vision as u8]);
        h.update(bytes);
        h.finalize().into()
    }

    fn get(&self, key: &[u8; 32]) -> Option<Arc<EncodedImage>> {
        let mut g = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        g.1 += 1;
        let tick = g.1;
        let e = g.0.iter_mut().find(|e| &e.key == key)?;
        e.last_used = tick;
        Some(Arc::clone(&e.image))
    }

    fn insert(&self, key: [u8; 32], image: Arc<EncodedImage>) {
        let max = *self.max_bytes.lock().unwrap_or_else(|e| e.into_inner());
        let mut g = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if image.bytes() > max {
            return;
        }
        Self::evict(&mut g.0, max, image.bytes());
        g.1 += 1;
        let tick = g.1;
        g.0.push(CacheEntry {
            key,
            image,
            last_used: tick,
        });
    }

    /// The encoded image for these bytes (an image file held in memory: PNG, JPEG, WebP, GIF or
    /// BMP): from the cache, or decoded, preprocessed with the model's settings and run through
    /// the vision tower now (and then cached). Returns the image and, when it was encoded now,
    /// the timings of that work (`None`: it came from the cache).
    ///
    /// `name` labels errors (a file name); `limits` bound the decoder. Two threads that miss on
    /// the same new image at the same time both encode it.
    ///
    /// # Errors
    ///
    /// [`Error::BadImage`] when the bytes are not a supported image, [`Error::LimitExceeded`] when
    /// they exceed `limits` (the message starts with `name`); [`Error::BadArgument`] when the
    /// model's preprocessing config is unusable; [`Error::TextOnlyModel`] for a text-only model.
    pub fn get_or_encode(
        &self,
        model: &Model,
        bytes: &[u8],
        name: &str,
        taps: TapConvention,
        limits: &ImageLimits,
    ) -> Result<(Arc<EncodedImage>, Option<EncodeStats>), Error> {
        model.vision_tower()?; // a text-only model takes no images
        let pcfg = model.cfg.preprocess.as_ref().ok_or_else(|| Error::Model {
            path: model.gguf().path().to_path_buf(),
            msg: "no image preprocessing configuration".into(),
        })?;
        let key = Self::key(bytes, taps, model.vision_precision());
        if let Some(im) = self.get(&key) {
            return Ok((im, None));
        }
        let img = image::decode_image(bytes, limits).map_err(|e| e.for_input(name))?;
        let pre = preprocess::preprocess(&img, pcfg)?;
        let (im, work) = model.encode_image(&pre, taps);
        let im = Arc::new(im);
        self.insert(key, Arc::clone(&im));
        Ok((im, Some(work)))
    }

    /// The encoded image for these bytes, from this memory cache, else from the disk cache
    /// `disk` (then kept in memory too), else decoded, preprocessed and run through the vision
    /// tower now (then stored in both), with where it came from and the time it took.
    ///
    /// `settings` are the session's: its tap convention and whether its caches are half
    /// precision (a disk entry then holds f16 where the values fit; read back, the session's
    /// cross cache is bit for bit that of a fresh encode). A corrupt disk entry, or a directory
    /// that cannot be written, is reported in [`Lookup::warnings`] and the work goes on without it.
    ///
    /// # Errors
    ///
    /// As [`get_or_encode`](ImageCache::get_or_encode).
    pub fn lookup(
        &self,
        model: &Model,
        bytes: &[u8],
        name: &str,
        settings: EntrySettings,
        limits: &ImageLimits,
        disk: Option<DiskSide<'_>>,
    ) -> Result<Lookup, Error> {
        let (_, vc) = model.vision_tower()?; // a text-only model takes no images
        let pcfg = model.cfg.preprocess.as_ref().ok_or_else(|| Error::Model {
            path: model.gguf().path().to_path_buf(),
            msg: "no image preprocessing configuration".into(),
        })?;
        let taps = settings.taps;
        let vision = model.vision_precision();
        let (exact, rounded) = (
            Self::key(bytes, taps, vision),
            Self::rounded_key(bytes, taps, vision),
        );
        let found = match self.get(&exact) {
            Some(im) => Some(im),
            None if settings.half => self.get(&rounded),
            None => None,
        };
        if let Some(image) = found {
            return Ok(Lookup {
                image,
                source: ImageSource::Memory,
                encode: EncodeStats::default(),
                disk_s: 0.0,
                warnings: Vec::new(),
            });
        }
        let layout = disk_layout(model, vc);
        if disk.is_some() {
            // The limits refuse the same files whether or not the image is on disk.
            image::check_image_header(bytes, limits).map_err(|e| e.for_input(name))?;
        }
        let disk = disk.map(|d| (d.cache, disk_cache::entry_key(d.identity, &settings, bytes)));
        let mut warnings = Vec::new();
        if let Some((cache, key)) = &disk {
            let t = Instant::now();
            match cache.load(key, &layout) {
                Ok(Some(stored)) => {
                    let mem_key = if stored.rounded { rounded } else { exact };
                    let image = Arc::new(EncodedImage {
                        kv: stored.kv,
                        n_tiles: stored.n_tiles,
                        tile_slots: layout.tile_slots,
                        tokens_per_tile: layout.tokens_per_tile,
                    });
                    self.insert(mem_key, Arc::clone(&image));
                    return Ok(Lookup {
                        image,
                        source: ImageSource::Disk,
                        encode: EncodeStats::default(),
                        disk_s: t.elapsed().as_secs_f64(),
                        warnings,
                    });
                }
                Ok(None) => {}
                Err(w) => warnings.push(w),
            }
        }
        let img = image::decode_image(bytes, limits).map_err(|e| e.for_input(name))?;
        let pre = preprocess::preprocess(&img, pcfg)?;
        let (im, encode) = model.encode_image(&pre, taps);
        let image = Arc::new(im);
        self.insert(exact, Arc::clone(&image));
        let t = Instant::now();
        if let Some((cache, key)) = &disk {
            let half = settings.half;
            if let Err(w) = cache.store(key, &image.kv, image.n_tiles, &layout, half) {
                warnings.push(w);
            }
        }
        Ok(Lookup {
            image,
            source: ImageSource::Miss,
            encode,
            disk_s: if disk.is_some() {
                t.elapsed().as_secs_f64()
            } else {
                0.0
            },
            warnings,
        })
    }
}

/// The dimensions of `model`'s disk cache entries.
fn disk_layout(model: &Model, vc: &VisionConfig) -> Layout {
    let tc = &model.cfg.text;
    Layout {
        layers: tc.cross_layers.len(),
        values: tc.n_kv_heads * vc.max_tiles * vc.tokens_per_tile() * tc.head_dim,
        tile_slots: vc.max_tiles,
        tokens_per_tile: vc.tokens_per_tile(),
    }
}
