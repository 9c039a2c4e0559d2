//! Fingerprints keep every number exact: property tests over numbers written many ways.

use http::Method;
use proptest::prelude::*;
use tollgate_idempotency::fingerprint::Fingerprint;

fn fingerprint(body: &str) -> Fingerprint {
    Fingerprint::of_json(&Method::POST, "/api/v1/payments", body.as_bytes()).expect(body)
}

/// A payment-like body with `number` as its amount, its members in either order.
fn body(number: &str, reversed: bool) -> String {
    if reversed {
        format!("{{ \"currency\" : \"USD\",\n  \"amount\" : {number} }}")
    } else {
        format!(r#"{{"amount":{number},"currency":"USD"}}"#)
    }
}

/// A decimal number as JSON spells it: sign, integer digits, fraction digits, exponent.
#[derive(Clone, Debug)]
struct Number {
    negative: bool,
    integer: String,
    fraction: String,
    exponent: i32,
}

impl Number {
    fn text(&self) -> String {
        let sign = if self.negative { "-" } else { "" };
        let fraction = if self.fraction.is_empty() {
            String::new()
        } else {
            format!(".{}", self.fraction)
        };
        format!("{sign}{}{fraction}e{}", self.integer, self.exponent)
    }

    /// Other spellings of the same value.
    fn respellings(&self) -> Vec<String> {
        let sign = if self.negative { "-" } else { "" };
        let all = format!("{}{}", self.integer, self.fraction);
        let all = all.trim_start_matches('0');
        let mantissa = if all.is_empty() { "0" } else { all };
        let shifted = i64::from(self.exponent) - self.fraction.len() as i64;
        let point = i64::from(self.exponent) + self.integer.len() as i64;
        vec![
            // Trailing zeros in the fraction and an upper-case, signed exponent.
            format!(
                "{sign}{}.{}000E{:+}",
                self.integer, self.fraction, self.exponent
            ),
            // Every digit before the point.
            format!("{sign}{mantissa}e{shifted}"),
            // Every digit after the point.
            format!("{sign}0.{}{}e{point}", self.integer, self.fraction),
        ]
    }
}

fn number() -> impl Strategy<Value = Number> {
    (
        any::<bool>(),
        prop_oneof![Just("0".to_owned()), "[1-9][0-9]{0,24}"],
        "[0-9]{0,24}",
        -400_i32..400,
    )
        .prop_map(|(negative, integer, fraction, exponent)| Number {
            negative,
            integer,
            fraction,
            exponent,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// One value, any spelling and member order: one fingerprint.
    #[test]
    fn equal_documents_share_a_fingerprint(n in number(), reversed in any::<bool>()) {
        let expected = fingerprint(&body(&n.text(), false));
        for spelling in n.respellings() {
            prop_assert_eq!(fingerprint(&body(&spelling, reversed)), expected, "{}", spelling);
        }
    }

    /// Any digit changed, anywhere in the digits: another fingerprint.
    #[test]
    fn numbers_that_differ_in_a_digit_differ(
        n in number(),
        at in any::<prop::sample::Index>(),
        by in 1_u8..10,
    ) {
        let mut changed = n.clone();
        let i = at.index(n.integer.len() + n.fraction.len());
        let in_integer = i < n.integer.len();
        let (part, i) = if in_integer {
            (&mut changed.integer, i)
        } else {
            (&mut changed.fraction, i - n.integer.len())
        };
        let mut bytes = part.clone().into_bytes();
        let digit = bytes[i] - b'0';
        bytes[i] = if in_integer && i == 0 && part.len() > 1 {
            // A leading zero is not JSON: cycle through 1-9 only.
            b'1' + (digit - 1 + by) % 9
        } else {
            b'0' + (digit + by) % 10
        };
        *part = String::from_utf8(bytes).expect("digits");
        prop_assume!(changed.integer != n.integer || changed.fraction != n.fraction);
        prop_assert_ne!(
            fingerprint(&body(&n.text(), false)),
            fingerprint(&body(&changed.text(), false)),
            "{} and {}", n.text(), changed.text()
        );
    }
}

#[test]
fn numbers_beyond_f64_stay_apart() {
    for (a, b) in [
        ("100000000000000000001", "100000000000000000000"),
        ("0.1", "0.10000000000000001"),
        ("9007199254740993", "9007199254740992"),
        ("1e400", "1.0000000000000000000001e400"),
    ] {
        assert_ne!(
            fingerprint(&body(a, false)),
            fingerprint(&body(b, false)),
            "{a} {b}"
        );
    }
}

#[test]
fn ordinary_bodies_keep_their_earlier_canonical_form() {
    // The form earlier versions wrote for integers and ordinary decimals: records stored before
    // an upgrade still match their retries after it.
    let body = r#"{ "payment_method": "card", "n": [1, 2.50, -0.125, 1e3], "amount": "99.99" }"#;
    let canonical = r#"{"amount":"99.99","n":[1,2.5,-0.125,1000],"payment_method":"card"}"#;
    assert_eq!(
        fingerprint(body),
        Fingerprint::of_bytes(&Method::POST, "/api/v1/payments", canonical.as_bytes())
    );
}
