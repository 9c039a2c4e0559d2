//! Request fingerprints: blake3 over the method, the route and the body's canonical JSON.
//!
//! Canonical JSON sorts object members, drops insignificant whitespace and writes each number
//! by its exact decimal value (`1`, `1.0` and `1e0` are one number; `0.1` and
//! `0.10000000000000001` are two). Reordering members or reformatting the body keeps the
//! fingerprint; changing any value changes it, and the same key with a different fingerprint is
//! refused with `422`. An object with the same member twice is not fingerprinted at all
//! ([`Error::InvalidBody`]): readers disagree on which one counts. Form-encoded bodies
//! ([`Fingerprint::of_form`]) and raw bytes ([`Fingerprint::of_bytes`]) have fingerprints too;
//! [`Fingerprint::of`] picks by a [`BodyFormat`], or by `Content-Type`.
//!
//! # Example
//!
//! ```
//! use http::Method;
//! use tollgate_idempotency::fingerprint::Fingerprint;
//!
//! let route = "/api/v1/payments";
//! let a = Fingerprint::of_json(&Method::POST, route, br#"{"amount":"99.99","currency":"USD"}"#)?;
//! let b = Fingerprint::of_json(&Method::POST, route, b"{ \"currency\": \"USD\",\n  \"amount\": \"99.99\" }")?;
//! let c = Fingerprint::of_json(&Method::POST, route, br#"{"amount":"99.98","currency":"USD"}"#)?;
//! assert_eq!(a, b);
//! assert_ne!(a, c);
//! # Ok::<(), tollgate_idempotency::Error>(())
//! ```

use std::fmt;

use http::Method;

use crate::Error;
use crate::canonical::canonical_json;

/// A 256-bit request fingerprint.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 32]);

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// A [`Fingerprint`]'s text was not 64 hexadecimal digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a fingerprint is 64 hexadecimal digits")]
pub struct ParseFingerprintError;

impl std::str::FromStr for Fingerprint {
    type Err = ParseFingerprintError;

    /// The hexadecimal text [`Display`](fmt::Display) writes.
    fn from_str(text: &str) -> Result<Self, ParseFingerprintError> {
        let text = text.as_bytes();
        if text.len() != 64 {
            return Err(ParseFingerprintError);
        }
        let mut bytes = [0_u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| ParseFingerprintError)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| ParseFingerprintError)?;
        }
        Ok(Fingerprint(bytes))
    }
}

impl serde::Serialize for Fingerprint {
    /// As its hexadecimal text.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// How a request body is read for its fingerprint: which differences in its text are only
/// spelling (the same request) and which are a different request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodyFormat {
    /// Canonical JSON (see the module documentation); a body that is not JSON is refused.
    #[default]
    Json,
    /// `application/x-www-form-urlencoded` (Stripe-style APIs): fields decoded, sorted by name
    /// (fields of one name keep their order) and encoded one way, so `a=1&b=x%20y` and
    /// `b=x+y&a=1` are one request.
    Form,
    /// The bytes as sent.
    Bytes,
    /// JSON for `application/json` and `+json` types, form for
    /// `application/x-www-form-urlencoded`, the bytes otherwise.
    ByContentType,
}

impl Fingerprint {
    /// The fingerprint of a request whose body is in `format` (`content_type` is the request's
    /// `Content-Type`, for [`BodyFormat::ByContentType`]).
    pub fn of(
        method: &Method,
        route: &str,
        content_type: Option<&str>,
        body: &[u8],
        format: BodyFormat,
    ) -> Result<Self, Error> {
        let format = match format {
            BodyFormat::ByContentType => {
                let essence = content_type
                    .and_then(|t| t.split(';').next())
                    .map(|t| t.trim().to_ascii_lowercase())
                    .unwrap_or_default();
                if essence == "application/json" || essence.ends_with("+json") {
                    BodyFormat::Json
                } else if essence == "application/x-www-form-urlencoded" {
                    BodyFormat::Form
                } else {
                    BodyFormat::Bytes
                }
            }
            other => other,
        };
        match format {
            BodyFormat::Form => Ok(Fingerprint::of_form(method, route, body)),
            BodyFormat::Bytes => Ok(Fingerprint::of_bytes(method, route, body)),
            _ => Fingerprint::of_json(method, route, body),
        }
    }

    /// The fingerprint of a request with an `application/x-www-form-urlencoded` body.
    pub fn of_form(method: &Method, route: &str, body: &[u8]) -> Self {
        let mut fields: Vec<(String, String)> = form_urlencoded::parse(body)
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
        // Stable: fields of one name (a list) keep their order.
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        let canonical = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&fields)
            .finish();
        // Its own domain: a form body and a byte body with the same text are not one request.
        Fingerprint::of_bytes(method, route, format!("form\0{canonical}").as_bytes())
    }

    /// The fingerprint of a request with a JSON body (or an empty one).
    pub fn of_json(method: &Method, route: &str, body: &[u8]) -> Result<Self, Error> {
        let mut canonical = Vec::new();
        if !body.iter().all(u8::is_ascii_whitespace) {
            canonical = canonical_json(body)?;
        }
        Ok(Fingerprint::of_bytes(method, route, &canonical))
    }

    /// The fingerprint of a request whose body is compared byte for byte.
    pub fn of_bytes(method: &Method, route: &str, body: &[u8]) -> Self {
        let mut hasher = blake3::Hasher::new();
        // Domain-separated, length-prefixed fields: no two requests share an input.
        hasher.update(b"tollgate-idempotency-fingerprint-v1\0");
        for part in [method.as_str().as_bytes(), route.as_bytes(), body] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        Fingerprint(*hasher.finalize().as_bytes())
    }

    /// The raw bytes (for storage).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// From raw bytes (from storage).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Fingerprint(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(body: &str) -> Fingerprint {
        Fingerprint::of_json(&Method::POST, "/r", body.as_bytes()).expect("json")
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(
            fp(r#"{"a":1,"b":[1,2]}"#),
            fp(" { \"b\" : [ 1 , 2 ] , \"a\" : 1 } ")
        );
        assert_eq!(fp(r#"{"n":1}"#), fp(r#"{"n":1.0}"#));
        assert_eq!(fp(r#"{"n":1}"#), fp(r#"{"n":1e0}"#));
        assert_eq!(fp(r#"{"n":-0}"#), fp(r#"{"n":0.0}"#));
        assert_eq!(fp(r#"{"s":"\u00e9"}"#), fp("{\"s\":\"é\"}"));
        assert_ne!(fp(r#"{"n":1}"#), fp(r#"{"n":"1"}"#));
        assert_ne!(fp(r#"[1,2]"#), fp(r#"[2,1]"#), "array order matters");
        assert_eq!(fp(""), fp("  \n"), "empty bodies");
        let get = Fingerprint::of_json(&Method::GET, "/r", b"").expect("empty");
        assert_ne!(get, fp(""), "the method is part of it");
        assert!(Fingerprint::of_json(&Method::POST, "/r", b"{oops").is_err());
        let twice = Fingerprint::of_json(&Method::POST, "/r", br#"{"a":{"n":1,"n":2}}"#);
        assert!(
            matches!(&twice, Err(Error::InvalidBody(m)) if m.contains("\"n\" appears twice")),
            "{twice:?}"
        );
        let deep = "[".repeat(10_000);
        assert!(
            Fingerprint::of_json(&Method::POST, "/r", deep.as_bytes()).is_err(),
            "no stack overflow"
        );
    }

    #[test]
    fn form_bodies_by_field() {
        let of = |body: &str| Fingerprint::of_form(&Method::POST, "/r", body.as_bytes());
        assert_eq!(
            of("amount=1000&currency=usd"),
            of("currency=usd&amount=1000")
        );
        assert_eq!(of("d=x%20y&e=%C3%A9"), of("e=\u{e9}&d=x+y"));
        assert_ne!(of("a=1&a=2"), of("a=2&a=1"), "a list keeps its order");
        assert_ne!(of("amount=1000"), of("amount=1001"));
        let by_type = |content_type: &str, body: &str| {
            Fingerprint::of(
                &Method::POST,
                "/r",
                Some(content_type),
                body.as_bytes(),
                BodyFormat::ByContentType,
            )
            .expect("a fingerprint")
        };
        assert_eq!(
            by_type("application/x-www-form-urlencoded", "b=1&a=2"),
            of("a=2&b=1")
        );
        assert_eq!(
            by_type("application/json; charset=utf-8", r#"{"a":1}"#),
            fp(r#"{ "a": 1.0 }"#)
        );
        assert_eq!(
            by_type("text/plain", "hello"),
            Fingerprint::of_bytes(&Method::POST, "/r", b"hello")
        );
        assert_ne!(
            by_type("application/x-www-form-urlencoded", "a=1"),
            by_type("text/plain", "a=1")
        );
    }

    #[test]
    fn text_and_serde_round_trip() {
        let print = fp(r#"{"a":1}"#);
        assert_eq!(print.to_string().parse::<Fingerprint>(), Ok(print));
        let json = serde_json::to_string(&print).expect("serializes");
        assert_eq!(json, format!("\"{print}\""));
        assert_eq!(
            serde_json::from_str::<Fingerprint>(&json).expect("reads"),
            print
        );
        assert!("00".parse::<Fingerprint>().is_err());
        assert!("zz".repeat(32).parse::<Fingerprint>().is_err());
        assert!("é".repeat(32).parse::<Fingerprint>().is_err());
    }
}
