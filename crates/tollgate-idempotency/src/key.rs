//! The `Idempotency-Key` header: exactly one value, 16–255 characters of `[A-Za-z0-9_-]`, sent
//! bare or as an RFC 8941 sf-string (`"…"`, with `\"` and `\\` escapes) — or, under another
//! [`KeyPolicy`] (`parse_with`, `from_headers_with`), other lengths, or any printable ASCII
//! taken whole as Stripe's API takes it ([`KeyPolicy::STRIPE`]).
//!
//! # Example
//!
//! ```
//! use http::{HeaderMap, HeaderValue};
//! use tollgate_idempotency::key::{IdempotencyKey, KeyError};
//!
//! let key = IdempotencyKey::parse("\"order-7c1f0e9a2b4d4e11\"")?;
//! assert_eq!(key.as_str(), "order-7c1f0e9a2b4d4e11");
//! assert!(matches!(IdempotencyKey::parse("short"), Err(KeyError::Length { len: 5, .. })));
//!
//! let mut headers = HeaderMap::new();
//! assert!(matches!(IdempotencyKey::from_headers(&headers), Err(KeyError::Missing)));
//! headers.append("idempotency-key", HeaderValue::from_static("order-7c1f0e9a2b4d4e11"));
//! headers.append("idempotency-key", HeaderValue::from_static("order-7c1f0e9a2b4d4e12"));
//! assert!(matches!(IdempotencyKey::from_headers(&headers), Err(KeyError::Repeated)));
//! # Ok::<(), KeyError>(())
//! ```

use std::fmt;

use http::HeaderMap;

/// The shortest key accepted.
pub const MIN_KEY_LEN: usize = 16;
/// The longest key accepted.
pub const MAX_KEY_LEN: usize = 255;
/// The header's name.
pub const HEADER: &str = "idempotency-key";

/// Which keys are accepted. [`KeyPolicy::STRICT`], the default, takes 16–255 characters of
/// `[A-Za-z0-9_-]`, bare or as an RFC 8941 sf-string; [`KeyPolicy::STRIPE`] takes what Stripe's
/// API takes, any printable ASCII up to 255 characters, the header value as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyPolicy {
    /// The shortest key accepted.
    pub min_len: usize,
    /// The longest key accepted.
    pub max_len: usize,
    /// Any printable ASCII, the header value taken whole (no sf-string, no list); otherwise
    /// `[A-Za-z0-9_-]`, bare or quoted.
    pub printable: bool,
}

impl KeyPolicy {
    /// 16–255 characters of `[A-Za-z0-9_-]` (the default): long enough to be unguessable,
    /// safe in logs, URLs and storage keys.
    pub const STRICT: KeyPolicy = KeyPolicy {
        min_len: MIN_KEY_LEN,
        max_len: MAX_KEY_LEN,
        printable: false,
    };
    /// What Stripe accepts: 1–255 characters of printable ASCII, for APIs whose clients already
    /// send such keys.
    pub const STRIPE: KeyPolicy = KeyPolicy {
        min_len: 1,
        max_len: 255,
        printable: true,
    };

    /// `min_len..=max_len` characters under this policy's character set.
    pub fn with_lengths(self, min_len: usize, max_len: usize) -> Self {
        KeyPolicy {
            min_len,
            max_len,
            ..self
        }
    }
}

impl Default for KeyPolicy {
    fn default() -> Self {
        KeyPolicy::STRICT
    }
}

/// Why a key was refused; every variant maps to `400 Bad Request`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// No `Idempotency-Key` header.
    #[error("the Idempotency-Key header is required")]
    Missing,
    /// More than one value (two headers, or a comma-separated list).
    #[error("the Idempotency-Key header must appear once, with one value")]
    Repeated,
    /// Not a bare value or a well-formed sf-string.
    #[error("malformed Idempotency-Key: {0}")]
    Malformed(&'static str),
    /// Too short or too long.
    #[error("the Idempotency-Key must be {min} to {max} characters long, not {len}")]
    Length {
        /// The length given.
        len: usize,
        /// The shortest accepted.
        min: usize,
        /// The longest accepted.
        max: usize,
    },
    /// A character outside the policy's set.
    #[error("the Idempotency-Key may only contain {allowed}")]
    Charset {
        /// What the policy allows.
        allowed: &'static str,
    },
}

/// A validated idempotency key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(String);

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IdempotencyKey").field(&self.0).finish()
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for IdempotencyKey {
    type Err = KeyError;

    /// [`IdempotencyKey::parse`].
    fn from_str(value: &str) -> Result<Self, KeyError> {
        IdempotencyKey::parse(value)
    }
}

impl AsRef<str> for IdempotencyKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for IdempotencyKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for IdempotencyKey {
    /// Validated as [`IdempotencyKey::parse`] validates a header.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        IdempotencyKey::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl IdempotencyKey {
    /// The key in `headers`: exactly one `Idempotency-Key` header with one value.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, KeyError> {
        IdempotencyKey::from_headers_with(headers, &KeyPolicy::STRICT)
    }

    /// [`from_headers`](Self::from_headers) under `policy`.
    pub fn from_headers_with(headers: &HeaderMap, policy: &KeyPolicy) -> Result<Self, KeyError> {
        let mut values = headers.get_all(HEADER).iter();
        let value = values.next().ok_or(KeyError::Missing)?;
        if values.next().is_some() {
            return Err(KeyError::Repeated);
        }
        let text = value
            .to_str()
            .map_err(|_| KeyError::Malformed("not visible ASCII"))?;
        IdempotencyKey::parse_with(text, policy)
    }

    /// Parses one header value.
    pub fn parse(value: &str) -> Result<Self, KeyError> {
        IdempotencyKey::parse_with(value, &KeyPolicy::STRICT)
    }

    /// Parses one header value under `policy`.
    pub fn parse_with(value: &str, policy: &KeyPolicy) -> Result<Self, KeyError> {
        let value = value.trim_matches(|c| c == ' ' || c == '\t');
        let key = match value.strip_prefix('"') {
            _ if policy.printable => value.to_owned(),
            Some(quoted) => unquote(quoted)?,
            None if value.contains(',') => return Err(KeyError::Repeated),
            None => value.to_owned(),
        };
        IdempotencyKey::validate(key, policy)
    }

    fn validate(key: String, policy: &KeyPolicy) -> Result<Self, KeyError> {
        let len = key.chars().count();
        if !(policy.min_len..=policy.max_len).contains(&len) {
            return Err(KeyError::Length {
                len,
                min: policy.min_len,
                max: policy.max_len,
            });
        }
        let allowed = |b: u8| {
            if policy.printable {
                (b' '..=b'~').contains(&b)
            } else {
                b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
            }
        };
        if !key.bytes().all(allowed) {
            return Err(KeyError::Charset {
                allowed: if policy.printable {
                    "printable ASCII"
                } else {
                    "letters, digits, '-' and '_'"
                },
            });
        }
        Ok(IdempotencyKey(key))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The inside of an sf-string after its opening quote (RFC 8941 §4.2.5).
fn unquote(rest: &str) -> Result<String, KeyError> {
    let mut out = String::with_capacity(rest.len());
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('"' | '\\')) => out.push(escaped),
                _ => return Err(KeyError::Malformed("only \\\" and \\\\ may be escaped")),
            },
            '"' => {
                let after = chars.as_str();
                return match after.trim_start_matches([' ', '\t']).chars().next() {
                    None => Ok(out),
                    Some(',') => Err(KeyError::Repeated),
                    Some(_) => Err(KeyError::Malformed("text after the closing quote")),
                };
            }
            ' '..='~' => out.push(c),
            _ => return Err(KeyError::Malformed("sf-strings hold visible ASCII only")),
        }
    }
    Err(KeyError::Malformed("unterminated quoted string"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "abcDEF0123456789_-";

    #[test]
    fn bare_and_quoted() {
        assert_eq!(
            IdempotencyKey::parse(GOOD).map(|k| k.0),
            Ok(GOOD.to_owned())
        );
        assert_eq!(
            IdempotencyKey::parse(&format!(" \"{GOOD}\"\t")).map(|k| k.0),
            Ok(GOOD.to_owned())
        );
        assert_eq!(
            IdempotencyKey::parse(&"a".repeat(255)).map(|k| k.0.len()),
            Ok(255)
        );
    }

    #[test]
    fn refusals() {
        use KeyError::*;
        let length = |len| Length {
            len,
            min: MIN_KEY_LEN,
            max: MAX_KEY_LEN,
        };
        let charset = Charset {
            allowed: "letters, digits, '-' and '_'",
        };
        let cases: [(&str, KeyError); 9] = [
            ("", length(0)),
            ("\"\"", length(0)),
            (&"a".repeat(256), length(256)),
            ("abcdefghijklmnop!", charset.clone()),
            ("\"abcdefghij\\\"klmnop\"", charset),
            (
                "\"abcdefghijklmnop",
                Malformed("unterminated quoted string"),
            ),
            (
                "\"abcdefghijklmnop\" x",
                Malformed("text after the closing quote"),
            ),
            (
                "\"abcdefghij\\nklmnop\"",
                Malformed("only \\\" and \\\\ may be escaped"),
            ),
            ("abcdefghijklmnop, qrstuvwxyz123456", Repeated),
        ];
        for (input, expected) in cases {
            assert_eq!(IdempotencyKey::parse(input), Err(expected), "{input:?}");
        }
        assert_eq!(
            IdempotencyKey::parse("\"abcdefghijklmnop\", \"x\""),
            Err(Repeated)
        );
        assert_eq!(
            IdempotencyKey::parse("\"abcdéfghijklmnop\""),
            Err(Malformed("sf-strings hold visible ASCII only"))
        );
    }

    #[test]
    fn the_stripe_policy_takes_any_printable_key_whole() {
        let stripe = KeyPolicy::STRIPE;
        for key in [
            "k",
            "order #42, retry 1",
            "\"quoted\" as sent",
            &"~".repeat(255),
        ] {
            let parsed = IdempotencyKey::parse_with(key, &stripe).expect(key);
            assert_eq!(parsed.as_str(), key);
        }
        assert!(matches!(
            IdempotencyKey::parse_with(&"a".repeat(256), &stripe),
            Err(KeyError::Length {
                len: 256,
                min: 1,
                max: 255
            })
        ));
        assert!(matches!(
            IdempotencyKey::parse_with("tab\there", &stripe),
            Err(KeyError::Charset {
                allowed: "printable ASCII"
            })
        ));
        let short = KeyPolicy::STRICT.with_lengths(8, 64);
        assert!(IdempotencyKey::parse_with("abcd1234", &short).is_ok());
        assert!(IdempotencyKey::parse_with("abcd123", &short).is_err());
    }

    #[test]
    fn from_str_and_serde_validate() {
        let key: IdempotencyKey = GOOD.parse().expect("valid");
        assert_eq!(key.as_ref(), GOOD);
        let json = serde_json::to_string(&key).expect("serializes");
        assert_eq!(json, format!("\"{GOOD}\""));
        assert_eq!(
            serde_json::from_str::<IdempotencyKey>(&json).expect("reads"),
            key
        );
        assert!(serde_json::from_str::<IdempotencyKey>("\"short\"").is_err());
        assert!("short".parse::<IdempotencyKey>().is_err());
    }
}
