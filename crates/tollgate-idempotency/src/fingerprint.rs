//! Request fingerprints: blake3 over the method, the route and the body's canonical JSON.
//!
//! Canonical JSON sorts object keys, drops insignificant whitespace and writes numbers in one
//! form (an integral value as an integer, so `1`, `1.0` and `1e0` are the same; other values in
//! their shortest round-trip form). Reordering keys or reformatting the body keeps the
//! fingerprint; changing any value changes it, and the same key with a different fingerprint is
//! refused with `422`.
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
use serde_json::Value;

use crate::Error;

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

impl Fingerprint {
    /// The fingerprint of a request with a JSON body (or an empty one).
    pub fn of_json(method: &Method, route: &str, body: &[u8]) -> Result<Self, Error> {
        let mut canonical = Vec::with_capacity(body.len());
        if !body.iter().all(u8::is_ascii_whitespace) {
            let Strict(value) =
                serde_json::from_slice(body).map_err(|e| Error::InvalidBody(e.to_string()))?;
            write_canonical(&value, &mut canonical);
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

/// A JSON value that refuses an object with the same member twice. `serde_json::Value` keeps
/// the last one, while a handler's own parser may refuse the body or keep the first: two readers
/// of one body must not disagree on what it says, so such a body is not fingerprinted at all.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if members.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "the member {key:?} appears twice"
                )));
            }
            members.insert(key, value);
        }
        Ok(Value::Object(members))
    }
}

/// Writes `value` as canonical JSON. Recursion depth is bounded by serde_json's parser limit.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // serde_json's own escaping (one spelling per string), written in place: writing to a
    // `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn write_number(n: &serde_json::Number, out: &mut Vec<u8>) {
    use std::io::Write as _;
    // Writes to a `Vec` cannot fail.
    let _ = if let Some(i) = n.as_i64() {
        write!(out, "{i}")
    } else if let Some(u) = n.as_u64() {
        write!(out, "{u}")
    } else if let Some(f) = n.as_f64() {
        // 2^53: beyond it an f64 no longer holds every integer, so keep its float spelling.
        if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
            write!(out, "{}", f as i64)
        } else {
            write!(out, "{n}")
        }
    } else {
        Ok(())
    };
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
}
