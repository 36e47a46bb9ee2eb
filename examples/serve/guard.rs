//! What is checked from a request's head, before a handler reads a byte of its body:
//!
//! - **API key** (`--api-key` or `SPEC_VLA_API_KEY`): every route but `/health` needs
//!   `Authorization: Bearer <key>`, compared in constant time; otherwise 401 `unauthorized`.
//! - **Content type**: `POST /act` and `POST /reset` take only `application/json` (415
//!   `unsupported_media_type`). A web page can send a cross-origin POST without a CORS preflight
//!   only as `text/plain`, `application/x-www-form-urlencoded` or `multipart/form-data`; asking
//!   for JSON makes a browser ask the server first, and this server never answers a preflight
//!   with permission. So a page open on the robot's computer cannot drive the robot.
//! - **Announced length**: a `Content-Length` over `--max-body-bytes` is a 413 at once, without
//!   waiting for the body.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::errors::{ApiError, ErrorKind};

/// The environment variable holding the API key when `--api-key` is not given.
pub const API_KEY_ENV: &str = "SPEC_VLA_API_KEY";

/// The head checks' settings.
#[derive(Debug, Clone)]
pub struct Guard {
    api_key: Option<Arc<[u8]>>,
    max_body_bytes: usize,
}

impl Guard {
    pub fn new(api_key: Option<&str>, max_body_bytes: usize) -> Self {
        Self {
            api_key: api_key.map(|k| Arc::from(k.as_bytes())),
            max_body_bytes,
        }
    }

    /// The first check `request`'s head fails, if any.
    fn check(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), ApiError> {
        if let Some(key) = &self.api_key {
            if path != "/health" && !has_key(headers, key) {
                return Err(ApiError::new(
                    ErrorKind::Unauthorized,
                    "this server needs `Authorization: Bearer <key>` (its --api-key)",
                ));
            }
        }
        if method == Method::POST && matches!(path, "/act" | "/reset") && !is_json(headers) {
            return Err(ApiError::new(
                ErrorKind::UnsupportedMediaType,
                "send the body as `Content-Type: application/json` (requests.post(url, json=...) \
                 does)",
            ));
        }
        let announced = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if announced.is_some_and(|n| n > self.max_body_bytes as u64) {
            return Err(ApiError::new(
                ErrorKind::BodyTooLarge,
                "the body is larger than the server's --max-body-bytes",
            ));
        }
        Ok(())
    }
}

/// The middleware: answers a failed check at once, else runs the route.
pub async fn check_head(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    match guard.check(request.method(), request.uri().path(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// `Content-Type: application/json`, parameters (`; charset=utf-8`) allowed.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let media_type = value.split(';').next().unwrap_or_default().trim();
    media_type.eq_ignore_ascii_case("application/json")
}

/// `Authorization: Bearer <key>` with exactly `key`.
fn has_key(headers: &HeaderMap, key: &[u8]) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let scheme = b"bearer ";
    if value.len() < scheme.len() || !value[..scheme.len()].eq_ignore_ascii_case(scheme) {
        return false;
    }
    constant_time_eq(value[scheme.len()..].trim_ascii(), key)
}

/// Whether `a == b`, in a time that depends on their lengths only, never on where they first
/// differ (so that a client cannot find the key byte by byte from response times). A dozen
/// lines instead of a dependency (`subtle`) for one comparison.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            if let Ok(value) = HeaderValue::from_str(value) {
                map.insert(name.clone(), value);
            }
        }
        map
    }

    #[test]
    fn checks_key_type_and_length_from_the_head() {
        let guard = Guard::new(Some("s3cret"), 100);
        let kind = |method: Method, path: &str, pairs: &[(header::HeaderName, &str)]| {
            guard
                .check(&method, path, &headers(pairs))
                .err()
                .map(|e| e.kind)
        };
        let auth = (header::AUTHORIZATION, "Bearer s3cret");
        let json = (header::CONTENT_TYPE, "application/json; charset=utf-8");
        assert_eq!(
            kind(Method::POST, "/act", &[auth.clone(), json.clone()]),
            None
        );
        assert_eq!(
            kind(Method::GET, "/health", &[]),
            None,
            "health needs no key"
        );
        for wrong in [
            "Bearer s3cre",
            "Bearer s3cretX",
            "Basic s3cret",
            "s3cret",
            "",
        ] {
            let got = kind(Method::GET, "/info", &[(header::AUTHORIZATION, wrong)]);
            assert_eq!(got, Some(ErrorKind::Unauthorized), "{wrong:?}");
        }
        assert_eq!(
            kind(Method::GET, "/info", &[]),
            Some(ErrorKind::Unauthorized)
        );
        assert_eq!(
            kind(
                Method::GET,
                "/info",
                &[(header::AUTHORIZATION, "bearer  s3cret ")]
            ),
            None
        );
        for text in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonp",
        ] {
            let got = kind(
                Method::POST,
                "/reset",
                &[auth.clone(), (header::CONTENT_TYPE, text)],
            );
            assert_eq!(got, Some(ErrorKind::UnsupportedMediaType), "{text}");
        }
        assert_eq!(
            kind(Method::POST, "/act", std::slice::from_ref(&auth)),
            Some(ErrorKind::UnsupportedMediaType)
        );
        let long = (header::CONTENT_LENGTH, "100000000000");
        assert_eq!(
            kind(Method::POST, "/act", &[auth.clone(), json.clone(), long]),
            Some(ErrorKind::BodyTooLarge)
        );
        let open = Guard::new(None, 100);
        assert!(open.check(&Method::GET, "/info", &HeaderMap::new()).is_ok());
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
