//! The server's typed errors: every failed request is answered with a status and
//! `{"error": {"kind": "...", "message": "..."}}`, where `kind` is a stable snake_case name a
//! client can match on and `message` says what to change.
//!
//! Client mistakes are 4xx (400 for anything wrong in the request, 404/405 for routes, 413 for
//! a body over `--max-body-bytes`); failures of the model or the server are 5xx, and a request
//! refused because `--max-queue` requests are already in is a 503 with `Retry-After`. Library errors
//! are sorted by whether the request could have avoided them: an unknown `unnorm_key`, a bad
//! image or an empty instruction are the client's; non-finite logits or a candle failure are not.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// What went wrong, as the `kind` the client sees. One variant per distinct fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The body is not JSON.
    BadJson,
    /// JSON, but not the shape of a request (not an object, `encoded` beside other fields).
    BadRequest,
    /// A required field is absent.
    MissingField,
    /// A field of ours has the wrong type or value.
    BadField,
    /// A field we do not know that looks like a misspelling of one we do.
    UnknownField,
    /// The image cannot be decoded or used.
    BadImage,
    /// The instruction is empty.
    EmptyInstruction,
    /// The `unnorm_key` is not among the checkpoint's statistics.
    UnknownUnnormKey,
    /// No `unnorm_key` was given and the checkpoint has several.
    AmbiguousUnnormKey,
    /// The prompt would not fit the model's positions.
    RequestTooLong,
    /// Decoder settings that cannot be built for this policy.
    BadDecoder,
    /// The body is larger than `--max-body-bytes` (413), announced or sent.
    BodyTooLarge,
    /// The body did not arrive within `--body-timeout-ms` (408).
    BodyTimeout,
    /// `/act` or `/reset` without `Content-Type: application/json` (415): what keeps a web page
    /// from posting to the robot without a CORS preflight.
    UnsupportedMediaType,
    /// The server has an API key and the request did not bring it (401).
    Unauthorized,
    /// No such route (404).
    NotFound,
    /// The route exists for another method (405).
    MethodNotAllowed,
    /// `--max-queue` requests are already admitted; retry after the answers ahead (503).
    Overloaded,
    /// The model failed on a valid request (non-finite logits, a non-action token refused).
    ModelError,
    /// Anything else that is the server's fault.
    Internal,
}

impl ErrorKind {
    /// The name clients match on.
    pub fn name(self) -> &'static str {
        match self {
            Self::BadJson => "bad_json",
            Self::BadRequest => "bad_request",
            Self::MissingField => "missing_field",
            Self::BadField => "bad_field",
            Self::UnknownField => "unknown_field",
            Self::BadImage => "bad_image",
            Self::EmptyInstruction => "empty_instruction",
            Self::UnknownUnnormKey => "unknown_unnorm_key",
            Self::AmbiguousUnnormKey => "ambiguous_unnorm_key",
            Self::RequestTooLong => "request_too_long",
            Self::BadDecoder => "bad_decoder",
            Self::BodyTooLarge => "body_too_large",
            Self::BodyTimeout => "body_timeout",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Overloaded => "overloaded",
            Self::ModelError => "model_error",
            Self::Internal => "internal",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Self::ModelError | Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// A failed request: its kind and a message for the person who wrote the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn missing(field: &str) -> Self {
        Self::new(
            ErrorKind::MissingField,
            format!("the request has no `{field}` field"),
        )
    }

    /// Field `field` of ours holds something unusable; `why` says what.
    pub fn field(field: &str, why: impl std::fmt::Display) -> Self {
        Self::new(ErrorKind::BadField, format!("field `{field}`: {why}"))
    }

    pub fn image(why: impl std::fmt::Display) -> Self {
        Self::new(ErrorKind::BadImage, format!("field `image`: {why}"))
    }

    /// The JSON body of the answer.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": {"kind": self.kind.name(), "message": self.message}})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<spec_vla::Error> for ApiError {
    /// Sorts a library error into the client's fault (4xx) or the server's (5xx). The library's
    /// message is kept: it already names the problem (e.g. the known `unnorm_key`s).
    fn from(error: spec_vla::Error) -> Self {
        use spec_vla::limits::Limit;
        use spec_vla::Error as E;
        let kind = match &error {
            E::InvalidImage(_) => ErrorKind::BadImage,
            E::EmptyInstruction => ErrorKind::EmptyInstruction,
            E::UnknownUnnormKey { .. } => ErrorKind::UnknownUnnormKey,
            E::AmbiguousUnnormKey { .. } => ErrorKind::AmbiguousUnnormKey,
            E::RequestTooLong { .. } => ErrorKind::RequestTooLong,
            // Only request settings reach the library after start-up (the server's own were
            // built once at start-up), so these are the request's decoder settings.
            E::InvalidSetting { .. } | E::DraftMismatch(_) => ErrorKind::BadDecoder,
            // Every bound is on something the request sent: the image, the instruction, or
            // else its decoder settings (the server's own were built at start-up).
            E::LimitExceeded { limit, .. } => match limit {
                Limit::ImageBytes => ErrorKind::BadImage,
                Limit::InstructionBytes => ErrorKind::RequestTooLong,
                _ => ErrorKind::BadDecoder,
            },
            E::NonFiniteLogits { .. } | E::NonActionToken { .. } => ErrorKind::ModelError,
            _ => ErrorKind::Internal,
        };
        Self::new(kind, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = crate::api::json_response(self.kind.status(), &self.body());
        use axum::http::{header, HeaderValue};
        let headers = response.headers_mut();
        match self.kind {
            ErrorKind::Overloaded => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ErrorKind::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            // The body may be only partly read: the connection cannot carry another request.
            ErrorKind::BodyTimeout | ErrorKind::BodyTooLarge => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_errors_sort_into_client_and_server_faults() {
        let client = [
            spec_vla::Error::EmptyInstruction,
            spec_vla::Error::InvalidImage("x".into()),
            spec_vla::Error::UnknownUnnormKey {
                key: "k".into(),
                known: vec![],
            },
            spec_vla::Error::InvalidSetting {
                setting: "x",
                reason: "x".into(),
            },
            spec_vla::Error::LimitExceeded {
                limit: spec_vla::limits::Limit::DrafterHistory,
                max: 64,
                got: 10_000_000_000,
            },
        ];
        for e in client {
            let api = ApiError::from(e);
            assert!(api.kind.status().is_client_error(), "{api}");
        }
        let server = ApiError::from(spec_vla::Error::NonFiniteLogits { stage: "decode" });
        assert!(server.kind.status().is_server_error());
        assert_eq!(
            ApiError::new(ErrorKind::BodyTooLarge, "").kind.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let body = ApiError::missing("image").body();
        assert_eq!(body["error"]["kind"], "missing_field");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("`image`")));
    }
}
