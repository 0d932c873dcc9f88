//! Image file decoding with header checks, and conversion to RGB the way HF's `convert_to_rgb` does it
//! on a PIL image.
//!
//! * The format is recognised from the first bytes (PNG, JPEG, GIF, BMP, WebP); everything else is
//!   refused with a message that lists the supported formats.
//! * The width and height are read from the file header by this module's own small parsers and
//!   checked against [`ImageLimits`] **before** any decoder runs, so a tiny file that declares a huge
//!   image is refused without allocating. The decoder's own header is checked again, and the `image`
//!   crate decoders also get an allocation limit.
//! * JPEG is decoded by [`super::jpeg`] (bit-exact with libjpeg-turbo, which Pillow uses); the other
//!   formats by the `image` crate.
//! * Conversion to RGB8 follows PIL semantics as used by transformers' `convert_to_rgb`: images with an
//!   alpha channel or a transparency entry are alpha-composited over white with Pillow's integer
//!   arithmetic, grayscale is replicated, 16-bit channels keep their high byte (Pillow's `RGB;16B` /
//!   `RGBA;16B` / `LA;16B` raw modes), and 16-bit grayscale (Pillow mode `I;16`) is **clipped** to 255
//!   the way Pillow's `I;16 -> RGB` conversion does.
//!
//! Errors are returned as plain messages (no file name); the public wrappers add the file name.

use super::format::{check_dimensions, check_file_size, DecodeError, Format, Rgb8};
use super::ImageLimits;
use crate::Limit;
use image::{ColorType, ImageDecoder, ImageFormat};
use std::io::Cursor;

pub(crate) const SUPPORTED: &str = "PNG, JPEG, WebP, GIF, BMP";

/// Recognise the format from the magic bytes.
pub(crate) fn sniff(bytes: &[u8]) -> Result<Format, String> {
    if bytes.is_empty() {
        return Err("empty file".into());
    }
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Ok(Format::Png);
    }
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Ok(Format::Jpeg);
    }
    if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        return Ok(Format::Gif);
    }
    if bytes.starts_with(b"BM") {
        return Ok(Format::Bmp);
    }
    if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        return Ok(Format::WebP);
    }
    let what = if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        Some("TIFF")
    } else if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        match &bytes[8..12] {
            b"avif" | b"avis" => Some("AVIF"),
            b"heic" | b"heix" | b"mif1" | b"msf1" | b"hevc" => Some("HEIF/HEIC"),
            _ => None,
        }
    } else if bytes.starts_with(&[0xFF, 0x0A]) || bytes.starts_with(b"\0\0\0\x0cJXL ") {
        Some("JPEG XL")
    } else if bytes.starts_with(b"\0\0\x01\0") {
        Some("ICO")
    } else if bytes.starts_with(b"8BPS") {
        Some("PSD")
    } else if bytes.starts_with(b"%PDF") {
        Some("PDF")
    } else if bytes.starts_with(b"\x89PNG") {
        Some("damaged PNG (bad signature)")
    } else {
        None
    };
    Err(match what {
        Some(w) => format!("not a supported image (looks like {w}; supported: {SUPPORTED})"),
        None => format!("not a supported image ({SUPPORTED})"),
    })
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}
fn le16(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]) as u32)
}
fn le24(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 3)
        .map(|s| s[0] as u32 | (s[1] as u32) << 8 | (s[2] as u32) << 16)
}
fn le32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Width and height declared in the file header, read without decoding anything. `None` when the
/// header is too short or not understood (the decoder then reports the problem).
pub(crate) fn header_dimensions(format: Format, b: &[u8]) -> Option<(u32, u32)> {
    match format {
        Format::Png => {
            if b.get(12..16)? != b"IHDR" {
                return None;
            }
            Some((be32(b, 16)?, be32(b, 20)?))
        }
        Format::Gif => Some((le16(b, 6)?, le16(b, 8)?)),
        Format::Bmp => {
            let dib = le32(b, 14)?;
            if ![12, 16, 40, 52, 56, 64, 108, 124].contains(&dib) {
                return None;
            }
            if dib == 12 {
                Some((le16(b, 18)?, le16(b, 20)?))
            } else {
                let w = le32(b, 18)? as i32;
                let h = le32(b, 22)? as i32;
                Some((w.unsigned_abs(), h.unsigned_abs()))
            }
        }
        Format::WebP => match b.get(12..16)? {
            b"VP8X" => Some((le24(b, 24)? + 1, le24(b, 27)? + 1)),
            b"VP8L" => {
                if *b.get(20)? != 0x2F {
                    return None;
                }
                let bits = le32(b, 21)?;
                Some(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1))
            }
            b"VP8 " => {
                if b.get(23..26)? != [0x9D, 0x01, 0x2A] {
                    return None;
                }
                Some((le16(b, 26)? & 0x3FFF, le16(b, 28)? & 0x3FFF))
            }
            _ => None,
        },
        Format::Jpeg => super::jpeg::header_dimensions(b),
    }
}

/// The checks made before decoding: file size, a known format, and the header's dimensions
/// against `limits`. Returns the format.
pub(crate) fn check_header(bytes: &[u8], limits: &ImageLimits) -> Result<Format, DecodeError> {
    check_file_size(bytes.len() as u64, limits)?;
    let format = sniff(bytes).map_err(|reason| DecodeError::Bad {
        format: None,
        reason,
    })?;
    if format == Format::Bmp && header_dimensions(format, bytes).is_none() {
        return Err(DecodeError::bad(
            format,
            "corrupt or truncated BMP: bad file header",
        ));
    }
    if let Some((w, h)) = header_dimensions(format, bytes) {
        check_dimensions(format, w, h, limits)?;
    }
    Ok(format)
}

/// Decode any supported file to RGB8 with PIL/HF semantics. Messages do not include a file name.
pub(crate) fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<Rgb8, DecodeError> {
    let format = check_header(bytes, limits)?;
    if format == Format::Jpeg {
        return super::jpeg::decode(bytes, limits)
            .map_err(|e| DecodeError::bad(format, e.to_string()));
    }
    decode_with_image_crate(format, bytes, limits)
}

fn image_error(format: Format, e: image::ImageError) -> String {
    use image::ImageError as E;
    let name = format.name();
    match e {
        E::Decoding(d) => format!("corrupt or truncated {name}: {d}"),
        E::Unsupported(u) => format!("unsupported {name} variant: {u}"),
        E::Limits(l) => format!("{name} exceeds the decoder limits: {l}"),
        E::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!("corrupt or truncated {name}: unexpected end of file")
        }
        E::IoError(io) => format!("corrupt or truncated {name}: {io}"),
        other => format!("cannot decode {name}: {other}"),
    }
}

fn decode_with_image_crate(
    format: Format,
    bytes: &[u8],
    limits: &ImageLimits,
) -> Result<Rgb8, DecodeError> {
    let image_format = match format {
        Format::Png => ImageFormat::Png,
        Format::Gif => ImageFormat::Gif,
        Format::Bmp => ImageFormat::Bmp,
        Format::WebP => ImageFormat::WebP,
        Format::Jpeg => unreachable!("JPEG is decoded by our own decoder"),
    };
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = Some(limits.max_width);
    decoder_limits.max_image_height = Some(limits.max_height);
    decoder_limits.max_alloc = Some(limits.max_alloc);
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), image_format);
    reader.limits(decoder_limits);
    let bad = |e| DecodeError::bad(format, image_error(format, e));
    let decoder = reader.into_decoder().map_err(bad)?;
    let (w, h) = decoder.dimensions();
    check_dimensions(format, w, h, limits)?;
    let color = decoder.color_type();
    let total = decoder.total_bytes();
    if total > limits.max_alloc {
        return Err(DecodeError::Limit {
            limit: Limit::DecoderMemory,
            value: total,
            max: limits.max_alloc,
            msg: format!(
                "decoding needs {total} bytes, more than the {} byte allocation limit (raise with {})",
                limits.max_alloc,
                Limit::DecoderMemory.setting()
            ),
        });
    }
    let mut buf = vec![0u8; total as usize];
    decoder.read_image(&mut buf).map_err(bad)?;
    let data = to_rgb8(format, color, &buf, w as usize * h as usize)
        .map_err(|reason| DecodeError::bad(format, reason))?;
    Ok(Rgb8 {
        width: w,
        height: h,
        data,
    })
}

/// Pillow's `ImagingAlphaComposite` of `(r, g, b, a)` over an opaque white background, RGB result.
#[inline]
pub(crate) fn composite_over_white(c: u8, a: u8) -> u8 {
    if a == 0 {
        return 255;
    }
    // Background alpha is 255, so outa255 = 255 * 255 and coef1 = a * 128 exactly.
    let a = a as u32;
    let coef1 = a * 255 * 255 * 128 / (255 * 255);
    let coef2 = 255 * 128 - coef1;
    let tmp = c as u32 * coef1 + 255 * coef2 + (0x80 << 7);
    ((((tmp >> 8) + tmp) >> 8) >> 7) as u8
}

/// Convert decoded samples to RGB8 with PIL/HF `convert_to_rgb` semantics.
fn to_rgb8(format: Format, color: ColorType, buf: &[u8], n: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(n * 3);
    // 16-bit samples from the `image` crate are native-endian.
    let hi = |s: &[u8]| (u16::from_ne_bytes([s[0], s[1]]) >> 8) as u8;
    let clip16 = |s: &[u8]| u16::from_ne_bytes([s[0], s[1]]).min(255) as u8;
    match color {
        ColorType::Rgb8 => out.extend_from_slice(&buf[..n * 3]),
        ColorType::Rgba8 => {
            for p in buf.chunks_exact(4).take(n) {
                out.extend(p[..3].iter().map(|&c| composite_over_white(c, p[3])));
            }
        }
        ColorType::L8 => {
            for &v in &buf[..n] {
                out.extend([v, v, v]);
            }
        }
        ColorType::La8 => {
            for p in buf.chunks_exact(2).take(n) {
                let v = composite_over_white(p[0], p[1]);
                out.extend([v, v, v]);
            }
        }
        ColorType::Rgb16 => {
            for p in buf.chunks_exact(6).take(n) {
                out.extend([hi(&p[0..2]), hi(&p[2..4]), hi(&p[4..6])]);
            }
        }
        ColorType::Rgba16 => {
            for p in buf.chunks_exact(8).take(n) {
                let a = hi(&p[6..8]);
                out.extend([0, 2, 4].map(|i| composite_over_white(hi(&p[i..i + 2]), a)));
            }
        }
        ColorType::La16 => {
            // Pillow opens 16-bit gray+alpha PNGs as RGBA (high bytes), then composites.
            for p in buf.chunks_exact(4).take(n) {
                let v = composite_over_white(hi(&p[0..2]), hi(&p[2..4]));
                out.extend([v, v, v]);
            }
        }
        ColorType::L16 => {
            // Pillow mode I;16 -> RGB clips every value above 255 to 255 (it does not scale).
            for p in buf.chunks_exact(2).take(n) {
                let v = clip16(p);
                out.extend([v, v, v]);
            }
        }
        other => {
            return Err(format!(
                "unsupported {} pixel format {other:?}",
                format.name()
            ))
        }
    }
    if out.len() != n * 3 {
        return Err(format!(
            "corrupt or truncated {}: short pixel data",
            format.name()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pillow's formula evaluated literally for a white opaque destination.
    fn pil_composite(src: u8, sa: u8) -> u8 {
        if sa == 0 {
            return 255;
        }
        let (da, dc) = (255u32, 255u32);
        let sa = sa as u32;
        let blend = da * (255 - sa);
        let outa255 = sa * 255 + blend;
        let coef1 = sa * 255 * 255 * 128 / outa255;
        let coef2 = 255 * 128 - coef1;
        let tmp = src as u32 * coef1 + dc * coef2;
        let t = tmp + (0x80 << 7);
        ((((t >> 8) + t) >> 8) >> 7) as u8
    }

    #[test]
    fn composite_matches_pillow_formula_everywhere() {
        for a in 0..=255u8 {
            for c in 0..=255u8 {
                assert_eq!(
                    composite_over_white(c, a),
                    pil_composite(c, a),
                    "c={c} a={a}"
                );
            }
            assert_eq!(composite_over_white(a, 255), a, "opaque is identity");
        }
    }

    #[test]
    fn sniff_formats() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nxxxx").unwrap(), Format::Png);
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]).unwrap(), Format::Jpeg);
        assert_eq!(sniff(b"GIF89a....").unwrap(), Format::Gif);
        assert_eq!(sniff(b"BM......").unwrap(), Format::Bmp);
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 ").unwrap(), Format::WebP);
        assert!(sniff(b"").unwrap_err().contains("empty"));
        assert!(sniff(b"II*\0abcd").unwrap_err().contains("TIFF"));
        assert!(sniff(b"hello world")
            .unwrap_err()
            .contains("not a supported image"));
    }
}
