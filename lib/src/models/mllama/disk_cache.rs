//! The vision cache on disk: each image's cross-attention K/V in one file, so the same picture in
//! a new process costs a file read instead of the vision tower.
//!
//! - **Where**: a directory ([`default_dir`]: `$XDG_CACHE_HOME/mllama`, else `~/.cache/mllama` on
//!   Linux), one file `<key>.kv` per image, where the key ([`entry_key`]) is a SHA-256 of the
//!   image file's bytes, the model's identity ([`model_identity`]) and every setting that changes
//!   the K/V ([`EntrySettings`]).
//! - **What**: per cross layer, K (k_norm applied) and V for all tile slots, in the precision the
//!   session's caches use (f16 when they are half precision and the layer's values fit, else f32),
//!   so an entry read back gives the session bit for bit the cross cache a fresh encode gives.
//! - **Never trusted**: a SHA-256 of the file's contents is its last 32 bytes; a file that is
//!   truncated, altered at any byte or of another layout is refused ([`CacheWarning::Corrupt`])
//!   and the image is encoded again.
//! - **Atomic**: written to a hidden temporary file in the directory and renamed into place, so a
//!   reader sees a whole entry or none; two writers of the same entry both succeed and one of
//!   their (identical) files remains.
//! - **Bounded**: after each write the least recently used entries (by modification time, which a
//!   read refreshes) are deleted until the directory holds at most the bound
//!   ([`DEFAULT_DISK_CACHE_BYTES`]).
//!
//! File layout (little-endian): magic `MLLAMAKV`, version u32, key `[32]`, real tiles u32, tile
//! slots u32, tokens per tile u32, layers u32; per layer its element type u32 (0 f32, 1 f16) and
//! values u64 (of K, and of V); per layer K then V; SHA-256 of all preceding bytes.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use half::f16;
use half::slice::HalfFloatSliceExt;
use sha2::{Digest, Sha256};

use crate::format::gguf::GgufFile;
use crate::models::mllama::text::fits_f16;
use crate::models::mllama::TapConvention;

/// Default bound of the disk cache: 4 GiB (about 19 images of the 11B model at f16).
pub const DEFAULT_DISK_CACHE_BYTES: u64 = 4 << 30;

const MAGIC: &[u8; 8] = b"MLLAMAKV";
const VERSION: u32 = 1;
/// Extension of complete entries; temporary files start with [`TMP_PREFIX`].
const EXT: &str = "kv";
const TMP_PREFIX: &str = ".tmp-";
/// Temporary files older than this are left over by a killed writer and may be deleted.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// The platform cache directory for mllama: `$XDG_CACHE_HOME/mllama` (when set to an absolute
/// path), else `$HOME/.cache/mllama` on Linux and other Unix systems, `$HOME/Library/Caches/mllama`
/// on macOS, `%LOCALAPPDATA%\mllama\cache` on Windows. `None` when the environment names none.
pub fn default_dir() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if cfg!(windows) {
        return env("LOCALAPPDATA").map(|p| p.join("mllama").join("cache"));
    }
    if cfg!(target_os = "macos") {
        return env("HOME").map(|h| h.join("Library/Caches/mllama"));
    }
    env("XDG_CACHE_HOME")
        .map(|p| p.join("mllama"))
        .or_else(|| env("HOME").map(|h| h.join(".cache/mllama")))
}

/// A model's identity for cache keys: SHA-256 of the GGUF's length, its whole header (metadata
/// and tensor table), and of 4 KiB at the start, middle and end of every tensor's data. Two files
/// with the same header that differ in weights (another fine-tune quantized alike) differ in
/// those samples; reading them costs a few pages per tensor, not a pass over the weights.
pub fn model_identity(f: &GgufFile) -> [u8; 32] {
    const SAMPLE: usize = 4096;
    let bytes: &[u8] = f.bytes();
    let mut h = Sha256::new();
    h.update(b"mllama model identity v1");
    h.update(f.file_len().to_le_bytes());
    h.update(&bytes[..(f.data_start() as usize).min(bytes.len())]);
    for t in f.tensors() {
        let r = f.tensor_range(t);
        let data = &bytes[r];
        let n = data.len();
        let mid = n / 2;
        for range in [
            0..SAMPLE.min(n),
            mid.saturating_sub(SAMPLE / 2)..(mid + SAMPLE / 2).min(n),
            n.saturating_sub(SAMPLE)..n,
        ] {
            h.update(&data[range]);
        }
    }
    h.finalize().into()
}

/// Everything besides the image bytes and the model that changes an entry's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntrySettings {
    /// Which side of each tapped vision layer is a feature.
    pub taps: TapConvention,
    /// Whether the session's caches store f16 (the entry then holds f16 where the values fit).
    pub half: bool,
    /// The kernel path ([`crate::kernels::simd_name`]): float sums may round differently per
    /// path, so an entry is only reused on the path that made it.
    pub kernels: &'static str,
    /// The vision tower's precision, resolved ([`crate::Model::vision_precision`]).
    pub vision: crate::VisionPrecision,
}

/// The key of an entry: SHA-256 over a format tag, the model identity, the settings and the image
/// file's bytes. (Meta's or HF's cross-attention semantics read the same K/V, so they share
/// entries.)
pub fn entry_key(identity: &[u8; 32], s: &EntrySettings, image: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"mllama vision cache v1");
    h.update(identity);
    h.update([s.taps as u8, s.half as u8, s.vision as u8]);
    h.update((s.kernels.len() as u32).to_le_bytes());
    h.update(s.kernels.as_bytes());
    h.update(image);
    h.finalize().into()
}

/// The dimensions an entry must have to be used by a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Cross-attention layers.
    pub layers: usize,
    /// Values of K (and of V) per layer: kv heads × tile slots × tokens per tile × head dim.
    pub values: usize,
    /// Tile slots covered (all of them, padding slots included).
    pub tile_slots: usize,
    /// Vision tokens per tile.
    pub tokens_per_tile: usize,
}

/// One image's cross-attention K/V as stored, back in f32: per cross layer (K, V).
pub struct StoredKv {
    /// Per cross layer (K, V), f32 head-major (f16 entries widened exactly).
    pub kv: Vec<(Vec<f32>, Vec<f32>)>,
    /// Real tiles of the image.
    pub n_tiles: usize,
    /// Whether any layer was stored as f16 (the values are then f16-rounded: right for a
    /// half-precision cache only).
    pub rounded: bool,
}

/// A problem with the disk cache that did not stop the work: the image was encoded instead (or
/// its entry not written). Returned to the caller, never printed by the library.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheWarning {
    /// The cache directory cannot be created or written (read-only, full, not a directory): the
    /// entry was not stored, and this cache writes nothing more.
    Unwritable {
        /// The directory.
        dir: PathBuf,
        /// The system's reason.
        reason: String,
    },
    /// An entry failed its checks (truncated, altered, another layout) or could not be read; the
    /// image was encoded again and the entry replaced.
    Corrupt {
        /// The entry's file.
        file: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

impl std::fmt::Display for CacheWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheWarning::Unwritable { dir, reason } => write!(
                f,
                "vision cache directory {} is not writable ({reason}); continuing without the disk cache",
                dir.display()
            ),
            CacheWarning::Corrupt { file, reason } => write!(
                f,
                "vision cache entry {} is unusable ({reason}); encoding the image again",
                file.display()
            ),
        }
    }
}

/// One entry of a cache directory ([`DiskCache::list`]).
#[derive(Clone, Debug)]
pub struct DiskEntry {
    /// The file.
    pub file: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// When it was last written or read.
    pub last_used: SystemTime,
}

/// A vision cache directory (see the [module documentation](self)). Thread-safe: any number of
/// threads and processes may read and write the same directory.
#[derive(Debug)]
pub struct DiskCache {
    dir: PathBuf,
    max_bytes: AtomicU64,
    /// Set after the first failed write: nothing more is written.
    writes_off: AtomicBool,
}

impl DiskCache {
    /// A cache in `dir` (created on the first write) holding at most `max_bytes`.
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> Self {
        DiskCache {
            dir: dir.into(),
            max_bytes: AtomicU64::new(max_bytes),
            writes_off: AtomicBool::new(false),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The bound in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes.load(Ordering::Relaxed)
    }

    /// Whether writes were turned off by a failure ([`CacheWarning::Unwritable`]).
    pub fn writes_off(&self) -> bool {
        self.writes_off.load(Ordering::Relaxed)
    }

    /// The file of the entry `key`.
    pub fn entry_path(&self, key: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}.{EXT}", hex(key)))
    }

    /// Read entry `key`: `Ok(None)` if there is none (or it cannot be opened), `Err` (a [`CacheWarning::Corrupt`]) if the
    /// file fails any check against its checksum, its key or `layout`. A good entry's
    /// modification time is set to now (its LRU age).
    pub fn load(&self, key: &[u8; 32], layout: &Layout) -> Result<Option<StoredKv>, CacheWarning> {
        let file = self.entry_path(key);
        let corrupt = |reason: String| CacheWarning::Corrupt {
            file: file.clone(),
            reason,
        };
        // A file that cannot be opened (none, or a directory that is not one) is no entry.
        let Ok(mut f) = File::open(&file) else {
            return Ok(None);
        };
        let len = f
            .metadata()
            .map_err(|e| corrupt(format!("cannot stat: {e}")))?
            .len();
        let max = (header_len(layout.layers) + layout.layers * layout.values * 8 + 32) as u64;
        if len > max {
            return Err(corrupt(format!(
                "{len} bytes, more than the {max} of an entry for this model"
            )));
        }
        let mut buf = Vec::with_capacity(len as usize);
        f.read_to_end(&mut buf)
            .map_err(|e| corrupt(format!("read failed: {e}")))?;
        let kv = parse(&buf, key, layout).map_err(corrupt)?;
        // Refresh the LRU age; failing to (a read-only directory) only ages the entry.
        let _ = f.set_modified(SystemTime::now());
        Ok(Some(kv))
    }

    /// Write entry `key` (atomically: temporary file, then rename), storing f16 for each layer
    /// whose K and V fit when `half`, then evict least recently used entries beyond the bound. An
    /// entry larger than the bound is not written. After a failure (returned as
    /// [`CacheWarning::Unwritable`]) this cache writes nothing more; until then it returns `Ok`.
    ///
    /// # Panics
    ///
    /// If `kv` does not match `layout` (the caller's own encoding), or `n_tiles` is 0 or more than
    /// the tile slots.
    pub fn store(
        &self,
        key: &[u8; 32],
        kv: &[(Vec<f32>, Vec<f32>)],
        n_tiles: usize,
        layout: &Layout,
        half: bool,
    ) -> Result<(), CacheWarning> {
        assert!(kv.len() == layout.layers && (1..=layout.tile_slots).contains(&n_tiles));
        assert!(kv
            .iter()
            .all(|(k, v)| k.len() == layout.values && v.len() == layout.values));
        if self.writes_off() {
            return Ok(());
        }
        let f16_layers: Vec<bool> = kv
            .iter()
            .map(|(k, v)| half && fits_f16(k) && fits_f16(v))
            .collect();
        let size = header_len(kv.len())
            + f16_layers
                .iter()
                .map(|&h| 2 * layout.values * if h { 2 } else { 4 })
                .sum::<usize>()
            + 32;
        if size as u64 > self.max_bytes() {
            return Ok(());
        }
        let result = fs::create_dir_all(&self.dir)
            .and_then(|()| self.write_entry(key, kv, n_tiles, layout, &f16_layers));
        match result {
            Ok(()) => {
                self.evict(Some(&self.entry_path(key)));
                Ok(())
            }
            Err(e) => {
                self.writes_off.store(true, Ordering::Relaxed);
                Err(CacheWarning::Unwritable {
                    dir: self.dir.clone(),
                    reason: e.to_string(),
                })
            }
        }
    }

    fn write_entry(
        &self,
        key: &[u8; 32],
        kv: &[(Vec<f32>, Vec<f32>)],
        n_tiles: usize,
        layout: &Layout,
        f16_layers: &[bool],
    ) -> io::Result<()> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let tmp = self.dir.join(format!(
            "{TMP_PREFIX}{}-{}-{nanos}-{}",
            &hex(key)[..16],
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut w = HashingWriter {
                inner: BufWriter::with_capacity(1 << 20, File::create(&tmp)?),
                hash: Sha256::new(),
            };
            w.write_all(MAGIC)?;
            w.write_all(&VERSION.to_le_bytes())?;
            w.write_all(key)?;
            for x in [n_tiles, layout.tile_slots, layout.tokens_per_tile, kv.len()] {
                w.write_all(&(x as u32).to_le_bytes())?;
            }
            for &h in f16_layers {
                w.write_all(&(h as u32).to_le_bytes())?;
                w.write_all(&(layout.values as u64).to_le_bytes())?;
            }
            let mut half_buf = Vec::new();
            for ((k, v), &h) in kv.iter().zip(f16_layers) {
                for x in [k, v] {
                    if h {
                        half_buf.resize(x.len(), f16::ZERO);
                        half_buf.convert_from_f32_slice(x);
                        w.write_all(bytemuck::cast_slice(&half_buf))?;
                    } else {
                        w.write_all(bytemuck::cast_slice(x))?;
                    }
                }
            }
            let digest: [u8; 32] = w.hash.finalize_reset().into();
            w.inner.write_all(&digest)?;
            w.inner
                .into_inner()
                .map_err(|e| e.into_error())?
                .sync_all()?;
            fs::rename(&tmp, self.entry_path(key))
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    /// Delete least recently used entries until the directory holds at most the bound, and
    /// temporary files left by killed writers. `keep` (the entry just written) goes last.
    fn evict(&self, keep: Option<&Path>) {
        let Ok(mut entries) = self.list() else {
            return;
        };
        self.remove_stale_tmp();
        entries.sort_by_key(|e| (Some(e.file.as_path()) == keep, e.last_used));
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
        for e in entries {
            if total <= self.max_bytes() {
                break;
            }
            if fs::remove_file(&e.file).is_ok() || !e.file.exists() {
                total -= e.bytes;
            }
        }
    }

    fn remove_stale_tmp(&self) {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.flatten() {
            let stale = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_TMP);
            if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) && stale {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// The entries in the directory (none if it does not exist), oldest use first.
    ///
    /// # Errors
    ///
    /// The directory exists but cannot be read.
    pub fn list(&self) -> io::Result<Vec<DiskEntry>> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e?;
            let path = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            let is_entry = name.len() == 64 + 1 + EXT.len()
                && name.ends_with(EXT)
                && name[..64].bytes().all(|b| b.is_ascii_hexdigit());
            if !is_entry {
                continue;
            }
            let Ok(m) = e.metadata() else { continue };
            out.push(DiskEntry {
                file: path,
                bytes: m.len(),
                last_used: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        out.sort_by_key(|e| e.last_used);
        Ok(out)
    }

    /// Delete every entry and temporary file. Returns the entries deleted and their bytes.
    ///
    /// # Errors
    ///
    /// The directory cannot be read, or an entry cannot be deleted.
    pub fn clear(&self) -> io::Result<(usize, u64)> {
        let entries = self.list()?;
        let mut bytes = 0;
        for e in &entries {
            fs::remove_file(&e.file)?;
            bytes += e.bytes;
        }
        if let Ok(rd) = fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                    fs::remove_file(e.path())?;
                }
            }
        }
        Ok((entries.len(), bytes))
    }
}

/// Bytes before the data of an entry of `layers` layers.
fn header_len(layers: usize) -> usize {
    MAGIC.len() + 4 + 32 + 4 * 4 + layers * 12
}

/// Check and decode a whole entry file against its checksum, `key` and `layout`.
fn parse(buf: &[u8], key: &[u8; 32], layout: &Layout) -> Result<StoredKv, String> {
    let hl = header_len(layout.layers);
    if buf.len() < hl + 32 {
        return Err(format!("truncated: {} bytes", buf.len()));
    }
    let (body, sum) = buf.split_at(buf.len() - 32);
    if Sha256::digest(body).as_slice() != sum {
        return Err("checksum mismatch (truncated or altered)".into());
    }
    let u32_at = |o: usize| u32::from_le_bytes(body[o..o + 4].try_into().unwrap()) as usize;
    if &body[..8] != MAGIC || u32_at(8) != VERSION as usize {
        return Err("not an mllama vision cache entry of this version".into());
    }
    if &body[12..44] != key {
        return Err("the entry is for another key".into());
    }
    let (n_tiles, slots, p, layers) = (u32_at(44), u32_at(48), u32_at(52), u32_at(56));
    if (slots, p, layers) != (layout.tile_slots, layout.tokens_per_tile, layout.layers)
        || !(1..=slots).contains(&n_tiles)
    {
        return Err(format!(
            "layout {n_tiles}/{slots} tiles × {p} tokens, {layers} layers does not match the model"
        ));
    }
    let mut kinds = Vec::with_capacity(layers);
    for l in 0..layers {
        let o = 60 + l * 12;
        let kind = u32_at(o);
        let n = u64::from_le_bytes(body[o + 4..o + 12].try_into().unwrap());
        if kind > 1 || n != layout.values as u64 {
            return Err(format!("layer {l}: type {kind}, {n} values"));
        }
        kinds.push(kind == 1);
    }
    let data_len: usize = kinds
        .iter()
        .map(|&h| 2 * layout.values * if h { 2 } else { 4 })
        .sum();
    if body.len() != hl + data_len {
        return Err(format!(
            "{} data bytes, expected {data_len}",
            body.len() - hl
        ));
    }
    let mut at = hl;
    let mut take = |h: bool| {
        let n = layout.values * if h { 2 } else { 4 };
        let bytes = &body[at..at + n];
        at += n;
        let mut out = vec![0f32; layout.values];
        if h {
            let mut half = vec![f16::ZERO; layout.values];
            bytemuck::cast_slice_mut::<f16, u8>(&mut half).copy_from_slice(bytes);
            half.convert_to_f32_slice(&mut out);
        } else {
            bytemuck::cast_slice_mut::<f32, u8>(&mut out).copy_from_slice(bytes);
        }
        out
    };
    let kv = kinds.iter().map(|&h| (take(h), take(h))).collect();
    Ok(StoredKv {
        kv,
        n_tiles,
        rounded: kinds.contains(&true),
    })
}

/// A writer that hashes what passes through it.
struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
