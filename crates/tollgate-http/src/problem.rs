//! RFC 9457 problem details: every error this project answers is `application/problem+json`.
//!
//! # Example
//!
//! ```
//! use http::StatusCode;
//! use tollgate_http::problem::Problem;
//!
//! let response = Problem::new(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests")
//!     .detail("the per-user limit of 100 requests per 60 s is used up")
//!     .extension("policy", "per-user")
//!     .into_response();
//! assert_eq!(response.status(), 429);
//! assert_eq!(response.headers()["content-type"], "application/problem+json");
//! let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
//! assert_eq!(body["status"], 429);
//! assert_eq!(body["policy"], "per-user");
//! ```

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use serde_json::{Map, Value};

/// `application/problem+json`.
pub const CONTENT_TYPE_PROBLEM: &str = "application/problem+json";

/// A problem detail object.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    status: StatusCode,
    members: Map<String, Value>,
}

impl Problem {
    /// A problem with `status` and a short human-readable `title`; `type` is `about:blank`
    /// unless set.
    pub fn new(status: StatusCode, title: &str) -> Self {
        let mut members = Map::new();
        members.insert("type".into(), Value::from("about:blank"));
        members.insert("title".into(), Value::from(title));
        members.insert("status".into(), Value::from(status.as_u16()));
        Problem { status, members }
    }

    /// A URI identifying the problem type.
    pub fn type_uri(mut self, uri: &str) -> Self {
        self.members.insert("type".into(), Value::from(uri));
        self
    }

    /// An explanation specific to this occurrence.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.members
            .insert("detail".into(), Value::from(detail.into()));
        self
    }

    /// A URI identifying this occurrence (for example the request path).
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.members
            .insert("instance".into(), Value::from(instance.into()));
        self
    }

    /// An extension member (RFC 9457 §3.2); the standard members cannot be overwritten.
    pub fn extension(mut self, name: &str, value: impl Into<Value>) -> Self {
        if !matches!(name, "type" | "title" | "status" | "detail" | "instance") {
            self.members.insert(name.into(), value.into());
        }
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The JSON body.
    pub fn to_json(&self) -> Value {
        Value::Object(self.members.clone())
    }

    /// The response, with its body as bytes.
    pub fn into_response(self) -> Response<Bytes> {
        // Straight to bytes: `Value`'s `Display` goes through `fmt::Write`, at twice the cost.
        let body = Bytes::from(serde_json::to_vec(&self.members).unwrap_or_default());
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_PROBLEM));
        response
    }
}
