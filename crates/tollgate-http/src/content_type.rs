//! Content-type checks: a JSON API answers `415` to anything but JSON.
//!
//! # Example
//!
//! ```
//! use http::HeaderMap;
//! use tollgate_http::content_type::require_json;
//!
//! let mut headers = HeaderMap::new();
//! assert_eq!(require_json(&headers).unwrap_err().status(), 415);
//! headers.insert("content-type", "application/json; charset=utf-8".parse().unwrap());
//! assert!(require_json(&headers).is_ok());
//! headers.insert("content-type", "application/x-www-form-urlencoded".parse().unwrap());
//! assert!(require_json(&headers).is_err());
//! ```

use http::header::CONTENT_TYPE;
use http::{HeaderMap, StatusCode};

use crate::problem::Problem;

/// `Ok` if the request says its body is JSON (`application/json` or `application/*+json`, any
/// parameters); otherwise the `415` problem to answer.
pub fn require_json(headers: &HeaderMap) -> Result<(), Problem> {
    let media_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    match media_type.as_deref() {
        Some("application/json") => Ok(()),
        Some(t) if t.starts_with("application/") && t.ends_with("+json") => Ok(()),
        found => Err(
            Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported Media Type").detail(
                match found {
                    Some(t) => format!("expected application/json, got {t}"),
                    None => "expected a Content-Type of application/json".to_owned(),
                },
            ),
        ),
    }
}
