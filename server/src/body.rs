//! Request bodies: the size limit and JSON parsing, each refusal a 4xx naming the problem.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde_json::Value;

use crate::error::ApiError;

/// A body as the `Result` extractor gives it.
pub type RawBody = Result<Bytes, BytesRejection>;

/// Parse a JSON object body; `limit` is the configured maximum (named in the 413 message).
pub fn json_object(body: RawBody, limit: usize) -> Result<Value, ApiError> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body larger than {limit} bytes (--max-body-mb)"),
            )
        } else {
            ApiError::new(
                e.status(),
                "bad_body",
                format!("cannot read the request body: {}", e.body_text()),
            )
        }
    })?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_json",
            "empty request body: expected a JSON object",
        ));
    }
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("malformed JSON in the request body: {e}"),
        )
    })?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the request body must be a JSON object",
        ));
    }
    Ok(v)
}

/// A string field (`None` if absent or null), or a 400 naming it.
pub fn string<'a>(v: &'a Value, key: &str) -> Result<Option<&'a str>, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ApiError::bad_request(
            "invalid_value",
            format!("{key} must be a string, got {other}"),
        )),
    }
}

/// A boolean field with a default, or a 400 naming it.
pub fn boolean(v: &Value, key: &str, default: bool) -> Result<bool, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(ApiError::bad_request(
            "invalid_value",
            format!("{key} must be true or false, got {other}"),
        )),
    }
}

/// Refuse a field this server does not implement, unless it is absent or empty.
pub fn unsupported(v: &Value, key: &str, what: &str) -> Result<(), ApiError> {
    let set = match v.get(key) {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    };
    if set {
        return Err(ApiError::bad_request(
            "unsupported",
            format!("{key}: {what} is not supported by mllama serve"),
        ));
    }
    Ok(())
}
