//! [`check_schema`].

use crate::Error;

/// `schema` if it is a plain lower-case identifier (`[a-z_][a-z0-9_]*`, at most 63 bytes, the
/// length PostgreSQL keeps): schema names are spliced into SQL, so nothing else passes.
pub fn check_schema(schema: &str) -> Result<&str, Error> {
    let bytes = schema.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
    if valid {
        Ok(schema)
    } else {
        Err(Error::InvalidSchema(schema.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lower_case_identifiers_only() {
        for good in ["tollgate", "_x", "a1_b2", &"a".repeat(63)] {
            assert!(check_schema(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1a",
            "Tollgate",
            "a-b",
            "a b",
            "a;drop",
            &"a".repeat(64),
            "é",
        ] {
            assert!(check_schema(bad).is_err(), "{bad}");
        }
    }
}
