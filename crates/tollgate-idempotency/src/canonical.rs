//! Canonical JSON, written straight from the body's text.
//!
//! One pass over the bytes, no intermediate value tree, and numbers kept as the decimals they
//! are written as: going through `f64` would give `100000000000000000001` and
//! `100000000000000000000` (or `0.1` and `0.10000000000000001`) one spelling, and so one
//! fingerprint for two different requests.
//!
//! The canonical form: no insignificant whitespace; object members sorted by their decoded
//! names (byte order of UTF-8), each name at most once; strings with serde_json's escaping (one
//! spelling per string); numbers by value — `1`, `1.0`, `10e-1` and `0.1e1` are one number —
//! written in plain decimal notation when the decimal point falls within 21 digits before or 5
//! zeros after the first digit (`100`, `99.99`, `0.00012`), otherwise as `d.ddde±x` (`1e-7`,
//! `1.5e300`), with `-0` as `0`. Integers and ordinary decimals keep the spelling older
//! versions gave them, so their fingerprints are unchanged.

use std::borrow::Cow;

use crate::Error;

/// Nesting deeper than this is refused (serde_json's own limit), so a hostile body cannot
/// exhaust the stack.
const MAX_DEPTH: usize = 128;

/// The canonical form of the JSON text `input`.
pub(crate) fn canonical_json(input: &[u8]) -> Result<Vec<u8>, Error> {
    let mut reader = Reader {
        input,
        pos: 0,
        depth: 0,
    };
    let mut out = Vec::with_capacity(input.len());
    reader.skip_whitespace();
    reader.value(&mut out)?;
    reader.skip_whitespace();
    if reader.pos < input.len() {
        return Err(reader.error("trailing characters after the JSON value"));
    }
    Ok(out)
}

struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
    depth: usize,
}

impl<'a> Reader<'a> {
    /// `what` went wrong here, said where a person looks for it: line and column (of bytes).
    fn error(&self, what: &str) -> Error {
        let before = &self.input[..self.pos.min(self.input.len())];
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        let column = 1 + before.iter().rev().take_while(|&&b| b != b'\n').count();
        let end = if self.pos >= self.input.len() {
            " (the end of the body)"
        } else {
            ""
        };
        Error::InvalidBody(format!("{what} at line {line} column {column}{end}"))
    }

    fn error_at(&self, pos: usize, what: &str) -> Error {
        Reader { pos, ..*self }.error(what)
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect_literal(&mut self, literal: &[u8]) -> Result<(), Error> {
        if self.input[self.pos..].starts_with(literal) {
            self.pos += literal.len();
            Ok(())
        } else {
            Err(self.error("expected a JSON value"))
        }
    }

    fn value(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        match self.peek() {
            Some(b'{') => self.nested(out, Self::object),
            Some(b'[') => self.nested(out, Self::array),
            Some(b'"') => {
                let text = self.string()?;
                write_string(&text, out);
                Ok(())
            }
            Some(b't') => self.literal(b"true", out),
            Some(b'f') => self.literal(b"false", out),
            Some(b'n') => self.literal(b"null", out),
            Some(b'-' | b'0'..=b'9') => self.number(out),
            None => Err(self.error("expected a JSON value")),
            Some(_) => Err(self.error("expected a JSON value")),
        }
    }

    fn literal(&mut self, literal: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        self.expect_literal(literal)?;
        out.extend_from_slice(literal);
        Ok(())
    }

    fn nested(
        &mut self,
        out: &mut Vec<u8>,
        read: fn(&mut Self, &mut Vec<u8>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        if self.depth == MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        self.depth += 1;
        self.pos += 1;
        read(self, out)?;
        self.depth -= 1;
        Ok(())
    }

    /// After `[`: the elements in their order.
    fn array(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        out.push(b'[');
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            out.push(b']');
            return Ok(());
        }
        loop {
            self.skip_whitespace();
            self.value(out)?;
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => out.push(b','),
                Some(b']') => break,
                _ => return Err(self.error("expected `,` or `]`")),
            }
            self.pos += 1;
        }
        self.pos += 1;
        out.push(b']');
        Ok(())
    }

    /// After `{`: the members sorted by name. Each value is written at the end of `out` as it
    /// is read, then the members are put in order.
    fn object(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        let start = out.len();
        let mut members: Vec<(Cow<'a, str>, usize, usize)> = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            out.extend_from_slice(b"{}");
            return Ok(());
        }
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a member name"));
            }
            let name = self.string()?;
            self.skip_whitespace();
            if self.peek() != Some(b':') {
                return Err(self.error("expected `:`"));
            }
            self.pos += 1;
            self.skip_whitespace();
            let value_start = out.len();
            self.value(out)?;
            members.push((name, value_start, out.len()));
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => break,
                _ => return Err(self.error("expected `,` or `}`")),
            }
        }
        self.pos += 1;
        members.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if let Some(pair) = members.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            // Readers disagree on such a body (the first, the last, or refused): two readers of
            // one body must not, so it is not fingerprinted at all.
            return Err(Error::InvalidBody(format!(
                "the member {:?} appears twice",
                pair[0].0
            )));
        }
        let values = out.split_off(start);
        out.push(b'{');
        for (i, (name, from, to)) in members.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_string(name, out);
            out.push(b':');
            out.extend_from_slice(&values[from - start..to - start]);
        }
        out.push(b'}');
        Ok(())
    }

    /// At `"`: the decoded string. Borrowed when it has no escapes.
    fn string(&mut self) -> Result<Cow<'a, str>, Error> {
        let start = self.pos;
        self.pos += 1;
        let mut escaped = false;
        loop {
            match self.peek() {
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    self.pos += 2;
                }
                Some(0x00..=0x1f) => return Err(self.error("control character in a string")),
                Some(_) => self.pos += 1,
                None => return Err(self.error("unterminated string")),
            }
        }
        self.pos += 1;
        let quoted = &self.input[start..self.pos];
        if escaped {
            // serde_json decodes the escapes (and refuses invalid ones and lone surrogates).
            serde_json::from_slice::<String>(quoted)
                .map(Cow::Owned)
                .map_err(|_| self.error_at(start, "invalid escape in the string starting"))
        } else {
            std::str::from_utf8(&quoted[1..quoted.len() - 1])
                .map(Cow::Borrowed)
                .map_err(|_| self.error_at(start, "invalid UTF-8 in the string starting"))
        }
    }

    fn digits(&mut self) -> &'a [u8] {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        &self.input[start..self.pos]
    }

    /// A number, written by its value (see the module's documentation).
    fn number(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let integer = self.digits();
        if integer.is_empty() || (integer.len() > 1 && integer[0] == b'0') {
            return Err(self.error("invalid number"));
        }
        let mut fraction: &[u8] = &[];
        if self.peek() == Some(b'.') {
            self.pos += 1;
            fraction = self.digits();
            if fraction.is_empty() {
                return Err(self.error("invalid number"));
            }
        }
        let mut exponent: i64 = 0;
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            let sign = match self.peek() {
                Some(b'-') => -1,
                Some(b'+') => 1,
                _ => 0,
            };
            if sign != 0 {
                self.pos += 1;
            }
            let digits = self.digits();
            if digits.is_empty() {
                return Err(self.error("invalid number"));
            }
            exponent = digits
                .iter()
                .try_fold(0_i64, |n, d| {
                    n.checked_mul(10)?.checked_add(i64::from(d - b'0'))
                })
                .ok_or_else(|| self.error("number out of range"))?;
            if sign < 0 {
                exponent = -exponent;
            }
        }
        let number = Decimal::new(negative, integer, fraction, exponent)
            .ok_or_else(|| self.error("number out of range"))?;
        number.write(out);
        Ok(())
    }
}

/// A number as `±digits × 10^exponent`, the digits without leading or trailing zeros.
struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    exponent: i64,
}

impl Decimal {
    fn new(negative: bool, integer: &[u8], fraction: &[u8], exponent: i64) -> Option<Self> {
        let mut digits: Vec<u8> = integer.iter().chain(fraction).copied().collect();
        let mut exponent = exponent.checked_sub(i64::try_from(fraction.len()).ok()?)?;
        let leading = digits.iter().take_while(|&&d| d == b'0').count();
        digits.drain(..leading);
        while digits.last() == Some(&b'0') {
            digits.pop();
            exponent = exponent.checked_add(1)?;
        }
        // Where the decimal point falls, counted from the first digit; checked once here so the
        // writer's arithmetic cannot overflow.
        exponent.checked_add(i64::try_from(digits.len()).ok()?)?;
        Some(Decimal {
            negative: negative && !digits.is_empty(),
            digits,
            exponent,
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        let digits = &self.digits[..];
        if digits.is_empty() {
            out.push(b'0');
            return;
        }
        if self.negative {
            out.push(b'-');
        }
        let len = digits.len() as i64;
        // The number is 0.DIGITS × 10^point.
        let point = len + self.exponent;
        if self.exponent >= 0 && point <= 21 {
            out.extend_from_slice(digits);
            out.resize(out.len() + self.exponent as usize, b'0');
        } else if self.exponent < 0 && point > 0 {
            let (whole, fraction) = digits.split_at(point as usize);
            out.extend_from_slice(whole);
            out.push(b'.');
            out.extend_from_slice(fraction);
        } else if self.exponent < 0 && point > -5 {
            out.extend_from_slice(b"0.");
            out.resize(out.len() + (-point) as usize, b'0');
            out.extend_from_slice(digits);
        } else {
            out.push(digits[0]);
            if digits.len() > 1 {
                out.push(b'.');
                out.extend_from_slice(&digits[1..]);
            }
            out.push(b'e');
            out.extend_from_slice((point - 1).to_string().as_bytes());
        }
    }
}

/// A decoded string in canonical form. A string read without escapes has no character that
/// needs one (control characters are refused unescaped), so its text is already canonical.
#[expect(
    clippy::ptr_arg,
    reason = "the variant says whether the text may need escapes"
)]
fn write_string(text: &Cow<'_, str>, out: &mut Vec<u8>) {
    match text {
        Cow::Borrowed(raw) => {
            out.push(b'"');
            out.extend_from_slice(raw.as_bytes());
            out.push(b'"');
        }
        // serde_json's escaping, one spelling per string; writing to a `Vec` cannot fail.
        Cow::Owned(decoded) => {
            let _ = serde_json::to_writer(&mut *out, decoded);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(text: &str) -> String {
        String::from_utf8(canonical_json(text.as_bytes()).expect(text)).expect("utf-8")
    }

    #[test]
    fn numbers_by_value() {
        for (spellings, canonical_form) in [
            (&["0", "-0", "0.0", "0e5", "-0.000e-3"][..], "0"),
            (&["1", "1.0", "1e0", "10e-1", "0.1e1", "1E+0"][..], "1"),
            (&["100", "1e2", "1.00e2", "100.000"][..], "100"),
            (&["99.99", "9999e-2", "0.9999e2"][..], "99.99"),
            (&["-2.5", "-25e-1"][..], "-2.5"),
            (&["0.00012", "1.2e-4"][..], "0.00012"),
            (&["1e-7", "0.0000001", "10e-8"][..], "1e-7"),
            (&["1.5e300", "15e299"][..], "1.5e300"),
            (
                &["1e20", "100000000000000000000"][..],
                "100000000000000000000",
            ),
            (&["1e21", "1000000000000000000000"][..], "1e21"),
            (&["100000000000000000001"][..], "100000000000000000001"),
            (&["0.10000000000000001"][..], "0.10000000000000001"),
            (&["18446744073709551616"][..], "18446744073709551616"),
        ] {
            for spelling in spellings {
                assert_eq!(canonical(spelling), canonical_form, "{spelling}");
            }
        }
    }

    #[test]
    fn objects_sorted_strings_escaped_once() {
        assert_eq!(
            canonical(" { \"b\" : [ 1 , {\"z\":null,\"y\":true} ] , \"a\" : \"x\" } "),
            r#"{"a":"x","b":[1,{"y":true,"z":null}]}"#
        );
        assert_eq!(canonical(r#""\u00e9\/""#), "\"é/\"");
        assert_eq!(canonical(r#""a\"b\n""#), r#""a\"b\n""#);
        assert_eq!(canonical(r#"{"\u0061":1}"#), r#"{"a":1}"#);
        assert_eq!(canonical("[]"), "[]");
        assert_eq!(canonical("{}"), "{}");
    }

    #[test]
    fn errors_say_where() {
        let error = canonical_json(b"{\n  \"amount\": 1,").expect_err("cut short");
        assert_eq!(
            error.to_string(),
            "the request body is not valid JSON: expected a member name at line 2 column 15 \
             (the end of the body)"
        );
        let error = canonical_json(b"[1, \"a\\qb\"]").expect_err("bad escape");
        assert!(
            error
                .to_string()
                .ends_with("invalid escape in the string starting at line 1 column 5"),
            "{error}"
        );
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        for bad in [
            "01",
            "1.",
            ".5",
            "+1",
            "-",
            "1e",
            "1e+",
            "[1,]",
            "{\"a\":1,}",
            "{a:1}",
            "[1 2]",
            "\"\t\"",
            "\"\\x\"",
            "\"\\ud800\"",
            "tru",
            "nul",
            "1 2",
            "\"abc",
            "[",
            "{\"a\"}",
            "1e99999999999999999999",
        ] {
            assert!(canonical_json(bad.as_bytes()).is_err(), "{bad:?} accepted");
            assert!(
                serde_json::from_str::<serde_json::Value>(bad).is_err() || bad.starts_with("1e9"),
                "{bad:?} is valid JSON"
            );
        }
        assert!(canonical_json(b"\"\xff\"").is_err(), "invalid UTF-8");
        let twice = canonical_json(br#"{"a":{"n":1,"\u006e":2}}"#);
        assert!(
            matches!(&twice, Err(Error::InvalidBody(m)) if m.contains("\"n\" appears twice")),
            "{twice:?}"
        );
        let deep = "[".repeat(10_000);
        assert!(
            canonical_json(deep.as_bytes()).is_err(),
            "no stack overflow"
        );
        let fine = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(canonical(&fine), fine);
    }
}
