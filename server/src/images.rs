//! Images as requests carry them: plain base64 (Ollama's `images`, OpenAI's raw base64) or a
//! `data:` URI (OpenAI's `image_url`). Decoding the picture itself is the library's job.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

use crate::error::ApiError;

/// Standard alphabet, padding optional.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The bytes of image `what` (e.g. `messages[0].images[1]`) given as base64 or a `data:` URI.
/// Whitespace inside the base64 is ignored; a remote URL is refused (the server fetches nothing).
pub fn decode(s: &str, what: &str) -> Result<Vec<u8>, ApiError> {
    let s = s.trim();
    let payload = if let Some(rest) = s.strip_prefix("data:") {
        let (header, data) = rest.split_once(',').ok_or_else(|| {
            ApiError::bad_request(
                "invalid_image",
                format!("{what}: data: URI without a comma"),
            )
        })?;
        if !header.ends_with(";base64") {
            return Err(ApiError::bad_request(
                "invalid_image",
                format!("{what}: only base64 data: URIs are supported (data:image/...;base64,...)"),
            ));
        }
        data
    } else if s.starts_with("http://") || s.starts_with("https://") || s.starts_with("file:") {
        return Err(ApiError::bad_request(
            "invalid_image",
            format!("{what}: image URLs are not fetched; send the image as base64 or a data: URI"),
        ));
    } else {
        s
    };
    if payload.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_image",
            format!("{what}: the image is empty"),
        ));
    }
    let compact: String;
    let payload = if payload.bytes().any(|b| b.is_ascii_whitespace()) {
        compact = payload.split_ascii_whitespace().collect();
        compact.as_str()
    } else {
        payload
    };
    B64.decode(payload).map_err(|e| {
        ApiError::bad_request("invalid_base64", format!("{what}: not valid base64 ({e})"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_forms() {
        assert_eq!(decode("aGVsbG8=", "i").unwrap(), b"hello");
        assert_eq!(decode("aGVsbG8", "i").unwrap(), b"hello");
        assert_eq!(decode("aGVs\nbG8=", "i").unwrap(), b"hello");
        assert_eq!(
            decode("data:image/png;base64,aGVsbG8=", "i").unwrap(),
            b"hello"
        );
    }

    #[test]
    fn bad_forms_name_the_image() {
        let e = decode("not base64!", "messages[0].images[0]").unwrap_err();
        assert_eq!(e.code, "invalid_base64");
        assert!(
            e.message.starts_with("messages[0].images[0]"),
            "{}",
            e.message
        );
        assert_eq!(
            decode("https://x/y.png", "i").unwrap_err().code,
            "invalid_image"
        );
        assert_eq!(
            decode("data:image/png,abc", "i").unwrap_err().code,
            "invalid_image"
        );
        assert_eq!(decode("", "i").unwrap_err().code, "invalid_image");
    }
}
