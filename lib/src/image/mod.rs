//! Image files to RGB8 pixels: decoding with HF's conversion rules (PIL + `convert_to_rgb`), size
//! limits checked before decoding, and Pillow's bilinear resize.
//!
//! - `decode`: format sniffing, header checks, the `image` crate for PNG/GIF/BMP/WebP.
//! - `format`: the formats, the header size check, the RGB8 buffer.
//! - `jpeg`: our JPEG decoder, bit-exact with libjpeg-turbo (Pillow's), split by stage.
//! - `resize`: Pillow 13's bilinear resampling, bit-exact on RGB8.
//!
//! Images with alpha (RGBA, LA, palette or grey/RGB with a `tRNS` transparency entry, GIF
//! transparency, WebP alpha) are composited over **white** with Pillow's integer arithmetic; grey
//! is replicated; 16-bit PNG channels keep their high byte; 16-bit grey PNGs are *clipped* to 255
//! (Pillow's `I;16 -> RGB`). **EXIF orientation is not applied** (neither PIL's `Image.open` nor
//! HF's processor rotates images).

mod decode;
mod format;
mod jpeg;
mod resize;

use std::path::Path;

use crate::Error;

/// Limits checked before decoding (from the image header) so a hostile file cannot make us allocate
/// gigabytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest accepted width in pixels.
    pub max_width: u32,
    /// Largest accepted height in pixels.
    pub max_height: u32,
    /// Largest accepted width × height.
    pub max_pixels: u64,
    /// Largest accepted file size in bytes.
    pub max_bytes: u64,
    /// Most bytes a decoder may allocate for one image (pixel buffers, JPEG coefficients).
    pub max_alloc: u64,
}

impl Default for ImageLimits {
    /// 16384 × 16384 pixels at most, 64 Mpixel (2^26 pixels) total, 64 MiB files, 512 MiB of
    /// decoder allocations. A 4000×3000 phone photo (12 Mpixel) needs ~80 MB to decode.
    fn default() -> Self {
        ImageLimits {
            max_width: 16384,
            max_height: 16384,
            max_pixels: 64 << 20,
            max_bytes: 64 << 20,
            max_alloc: 512 << 20,
        }
    }
}

/// A decoded RGB8 image, row-major HWC (`data.len() == width * height * 3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Pixels, row by row, 3 bytes (R, G, B) each.
    pub data: Vec<u8>,
}

impl RgbImage {
    /// Wrap a pixel buffer, checking its length.
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Result<RgbImage, Error> {
        if data.len() as u64 != width as u64 * height as u64 * 3 {
            return Err(Error::bad_argument(
                "data",
                format!(
                    "RGB buffer of {} bytes does not match {width}x{height} pixels",
                    data.len()
                ),
            ));
        }
        Ok(RgbImage {
            width,
            height,
            data,
        })
    }

    /// The (R, G, B) value at column `x`, row `y` (panics when out of range).
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
}

/// Decode an image file held in memory (PNG, JPEG, WebP, GIF or BMP) to RGB8 with HF's conversion
/// rules (see the module docs). The header is checked against `limits` before decoding. Never panics.
///
/// # Errors
///
/// [`Error::LimitExceeded`] when the file or its declared size is above `limits` (which limit,
/// value, maximum); [`Error::BadImage`] when it is not a supported image or is corrupt. Their
/// `input` is empty (see [`Error::for_input`]).
///
/// ```
/// use mllama::image::{decode_image, ImageLimits};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
/// let bytes = std::fs::read("models/demo/example.jpg")?;
/// let img = decode_image(&bytes, &ImageLimits::default())?;
/// assert_eq!((img.width, img.height, img.data.len()), (224, 168, 224 * 168 * 3));
///
/// let small = ImageLimits { max_pixels: 100 * 100, ..ImageLimits::default() };
/// let err = decode_image(&bytes, &small).unwrap_err();
/// assert!(matches!(err, mllama::Error::LimitExceeded { limit: mllama::Limit::ImagePixels, .. }));
/// # Ok(())
/// # }
/// ```
pub fn decode_image(bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage, Error> {
    let img = decode::decode(bytes, limits).map_err(|e| e.into_error(""))?;
    Ok(RgbImage {
        width: img.width,
        height: img.height,
        data: img.data,
    })
}

/// The checks [`decode_image`] makes before decoding anything: the file size, a supported format,
/// and the width and height declared in the header against `limits`. An image taken from a cache
/// passes them too, so a limit refuses the same files with or without the cache.
///
/// # Errors
///
/// As [`decode_image`], for those checks.
pub fn check_image_header(bytes: &[u8], limits: &ImageLimits) -> Result<(), Error> {
    decode::check_header(bytes, limits)
        .map(|_| ())
        .map_err(|e| e.into_error(""))
}

/// Read and decode an image file like [`decode_image`]. The file size is checked before reading.
/// I/O errors (a directory too) are [`Error::Io`] (naming the path); decoding
/// errors are [`Error::LimitExceeded`] (a file larger than [`ImageLimits::max_bytes`] too) or
/// [`Error::BadImage`] with the path as their `input`, e.g.
/// `photo.png: PNG image is 40000x30000 pixels, more than the 16384x16384 limit ...`.
///
/// ```
/// use std::path::Path;
/// use mllama::image::{load_image, ImageLimits};
///
/// # fn main() -> Result<(), mllama::Error> {
/// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
/// let img = load_image(Path::new("models/demo/example.jpg"), &ImageLimits::default())?;
/// assert_eq!((img.width, img.height), (224, 168));
/// assert_eq!(img.pixel(0, 0).len(), 3); // RGB
///
/// let err = load_image(Path::new("no/such.png"), &ImageLimits::default()).unwrap_err();
/// assert!(matches!(err, mllama::Error::Io { .. }));
/// # Ok(())
/// # }
/// ```
pub fn load_image(path: &Path, limits: &ImageLimits) -> Result<RgbImage, Error> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let name = path.display().to_string();
    if meta.is_dir() {
        return Err(Error::io(path, is_a_directory()));
    }
    check_file_size(meta.len(), limits, &name)?;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let img = decode::decode(&bytes, limits).map_err(|e| e.into_error(&name))?;
    Ok(RgbImage {
        width: img.width,
        height: img.height,
        data: img.data,
    })
}

/// Refuse a file of `len` bytes above [`ImageLimits::max_bytes`] ([`Error::LimitExceeded`] naming
/// `name`), before reading it.
pub(crate) fn check_file_size(len: u64, limits: &ImageLimits, name: &str) -> Result<(), Error> {
    format::check_file_size(len, limits).map_err(|e| e.into_error(name))
}

/// The I/O error for a directory given as an image file.
pub(crate) fn is_a_directory() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::IsADirectory,
        "is a directory, not an image",
    )
}

/// Resize with Pillow's `Image.resize((width, height), Image.BILINEAR)` semantics (bit-exact with
/// Pillow 13 on RGB8; antialiased when downscaling). Returns a copy when the size is unchanged.
pub fn resize_bilinear(img: &RgbImage, width: u32, height: u32) -> Result<RgbImage, Error> {
    if img.data.len() as u64 != img.width as u64 * img.height as u64 * 3 {
        return Err(Error::bad_argument(
            "img",
            format!(
                "RGB buffer of {} bytes does not match {}x{} pixels",
                img.data.len(),
                img.width,
                img.height
            ),
        ));
    }
    if img.width == 0 || img.height == 0 || width == 0 || height == 0 {
        return Err(Error::bad_argument(
            "width, height",
            format!(
                "cannot resize {}x{} pixels to {width}x{height}",
                img.width, img.height
            ),
        ));
    }
    let data = resize::resize_bilinear_rgb8(
        &img.data,
        img.width as usize,
        img.height as usize,
        width as usize,
        height as usize,
    );
    Ok(RgbImage {
        width,
        height,
        data,
    })
}
