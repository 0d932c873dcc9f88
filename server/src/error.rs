//! Errors a request can end with: an HTTP status, a one-line message naming the problem, and a
//! short code; written as Ollama's `{"error": "..."}` or OpenAI's
//! `{"error": {"message", "type", "code"}}`. Library errors map to statuses by variant.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// Which API's error shape to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `{"error": "message"}`
    Ollama,
    /// `{"error": {"message", "type", "param", "code"}}`
    OpenAi,
}

/// A refused or failed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// One line naming the problem.
    pub message: String,
    /// A short machine-readable code (OpenAI's `code`), e.g. `invalid_json`.
    pub code: &'static str,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            code,
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 for a model that is not served.
    pub fn unknown_model(name: &str, served: &[String]) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!(
                "model '{name}' not found; this server has: {}",
                served.join(", ")
            ),
        )
    }

    /// 500 for what should not happen.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }

    /// OpenAI's error `type` for this status.
    fn openai_type(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            404 => "not_found_error",
            429 | 503 => "server_busy",
            s if s >= 500 => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// The response in the given API's shape.
    pub fn into_response_for(self, dialect: Dialect) -> Response {
        let body = match dialect {
            Dialect::Ollama => json!({ "error": self.message }),
            Dialect::OpenAi => json!({ "error": {
                "message": self.message,
                "type": self.openai_type(),
                "param": null,
                "code": self.code,
            }}),
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<mllama::Error> for ApiError {
    /// Statuses by variant: the caller's input (context, limits, arguments, conversation, image,
    /// template) is a 4xx, the server's files and anything else a 500.
    fn from(e: mllama::Error) -> Self {
        use mllama::Error as E;
        let (status, code) = match &e {
            E::ContextFull { .. } => (StatusCode::BAD_REQUEST, "context_length_exceeded"),
            E::KvMemory { .. } => (StatusCode::BAD_REQUEST, "context_memory_exceeded"),
            E::LimitExceeded { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "limit_exceeded"),
            E::BadArgument { .. } | E::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_value"),
            E::Conversation(_) => (StatusCode::BAD_REQUEST, "invalid_conversation"),
            E::BadImage { .. } => (StatusCode::BAD_REQUEST, "invalid_image"),
            E::Template(_) => (StatusCode::BAD_REQUEST, "template_error"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    /// Ollama's shape (used outside `/v1`).
    fn into_response(self) -> Response {
        self.into_response_for(Dialect::Ollama)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_errors_map_to_statuses() {
        let full = mllama::Error::ContextFull {
            needed: 10,
            context: 5,
            setting: "--ctx",
        };
        assert_eq!(ApiError::from(full).status, StatusCode::BAD_REQUEST);
        let img = mllama::Error::BadImage {
            input: "image 1".into(),
            format: None,
            reason: "not an image".into(),
        };
        let e = ApiError::from(img);
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "invalid_image")
        );
        assert!(e.message.contains("image 1"), "{}", e.message);
        let io = mllama::Error::io("m.gguf", std::io::Error::other("gone"));
        assert_eq!(ApiError::from(io).status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
