//! What every decoder shares: the formats, the size check made from the header before decoding,
//! and the decoded RGB8 buffer.

use super::ImageLimits;
use crate::{Error, Limit};

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

/// Why a decoder refused an image: a limit (typed, for [`Error::LimitExceeded`]) or the image
/// itself (for [`Error::BadImage`]). Messages carry no file name; [`DecodeError::into_error`] adds
/// it.
#[derive(Debug)]
pub(crate) enum DecodeError {
    /// `value` of `limit` is above `max`; `msg` says so.
    Limit {
        limit: Limit,
        value: u64,
        max: u64,
        msg: String,
    },
    /// The image cannot be decoded; `format` when recognised.
    Bad {
        format: Option<&'static str>,
        reason: String,
    },
}

impl DecodeError {
    /// A [`DecodeError::Bad`] for `format`.
    pub(crate) fn bad(format: Format, reason: impl Into<String>) -> Self {
        DecodeError::Bad {
            format: Some(format.name()),
            reason: reason.into(),
        }
    }

    /// The library error, naming `input` (a file name, or empty).
    pub(crate) fn into_error(self, input: &str) -> Error {
        let input = input.to_string();
        match self {
            DecodeError::Limit {
                limit,
                value,
                max,
                msg,
            } => Error::LimitExceeded {
                input,
                limit,
                value,
                max,
                msg,
            },
            DecodeError::Bad { format, reason } => Error::BadImage {
                input,
                format,
                reason,
            },
        }
    }
}

/// Decoders written with plain messages (the JPEG decoder) keep them.
impl From<DecodeError> for String {
    fn from(e: DecodeError) -> String {
        match e {
            DecodeError::Limit { msg, .. } => msg,
            DecodeError::Bad { reason, .. } => reason,
        }
    }
}

/// Refuse images whose declared size exceeds the limits. `format` names the file type in the message.
pub(crate) fn check_dimensions(
    format: Format,
    w: u32,
    h: u32,
    limits: &ImageLimits,
) -> Result<(), DecodeError> {
    let name = format.name();
    if w == 0 || h == 0 {
        return Err(DecodeError::bad(
            format,
            format!("{name} image has an empty size ({w}x{h} pixels)"),
        ));
    }
    if w > limits.max_width || h > limits.max_height {
        let (limit, value, max) = if w > limits.max_width {
            (Limit::ImageWidth, w, limits.max_width)
        } else {
            (Limit::ImageHeight, h, limits.max_height)
        };
        return Err(DecodeError::Limit {
            limit,
            value: value as u64,
            max: max as u64,
            msg: format!(
                "{name} image is {w}x{h} pixels, more than the {}x{} limit (raise with {})",
                limits.max_width,
                limits.max_height,
                limit.setting()
            ),
        });
    }
    let pixels = w as u64 * h as u64;
    if pixels > limits.max_pixels {
        return Err(DecodeError::Limit {
            limit: Limit::ImagePixels,
            value: pixels,
            max: limits.max_pixels,
            msg: format!(
                "{name} image is {w}x{h} pixels ({:.1} megapixels), more than the limit of {:.1} megapixels (raise with {})",
                pixels as f64 / 1e6,
                limits.max_pixels as f64 / 1e6,
                Limit::ImagePixels.setting()
            ),
        });
    }
    Ok(())
}

/// Refuse a file of `len` bytes above [`ImageLimits::max_bytes`].
pub(crate) fn check_file_size(len: u64, limits: &ImageLimits) -> Result<(), DecodeError> {
    if len > limits.max_bytes {
        return Err(DecodeError::Limit {
            limit: Limit::ImageBytes,
            value: len,
            max: limits.max_bytes,
            msg: format!(
                "file is {len} bytes, more than the {} byte limit (raise with {})",
                limits.max_bytes,
                Limit::ImageBytes.setting()
            ),
        });
    }
    Ok(())
}

/// A decoded, converted image: RGB8, row-major.
pub(crate) struct Rgb8 {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) data: Vec<u8>,
}
