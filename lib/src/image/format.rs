//! What every decoder shares: the formats, the size check made from the header before decoding,
//! and the decoded RGB8 buffer.

use super::ImageLimits;

/// Image formats we decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Png,
    Jpeg,
    Gif,
    Bmp,
    WebP,
}

impl Format {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Format::Png => "PNG",
            Format::Jpeg => "JPEG",
            Format::Gif => "GIF",
            Format::Bmp => "BMP",
            Format::WebP => "WebP",
        }
    }
}

/// Refuse images whose declared size exceeds the limits. `format` names the file type in the message.
pub(crate) fn check_dimensions(
    format: Format,
    w: u32,
    h: u32,
    limits: &ImageLimits,
) -> Result<(), String> {
    let name = format.name();
    if w == 0 || h == 0 {
        return Err(format!("{name} image has an empty size ({w}x{h} pixels)"));
    }
    if w > limits.max_width || h > limits.max_height {
        return Err(format!(
            "{name} image is {w}x{h} pixels, more than the {}x{} limit (raise with --max-image-pixels, ImageLimits::max_width/max_height)",
            limits.max_width, limits.max_height
        ));
    }
    let pixels = w as u64 * h as u64;
    if pixels > limits.max_pixels {
        return Err(format!(
            "{name} image is {w}x{h} pixels ({:.1} megapixels), more than the limit of {:.1} megapixels (raise with --max-image-pixels, ImageLimits::max_pixels)",
            pixels as f64 / 1e6,
            limits.max_pixels as f64 / 1e6
        ));
    }
    Ok(())
}

/// A decoded, converted image: RGB8, row-major.
pub(crate) struct Rgb8 {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) data: Vec<u8>,
}
