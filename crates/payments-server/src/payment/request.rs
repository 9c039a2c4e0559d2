//! A payment request: parsed from its exact JSON text and validated.
//!
//! Amounts are never floats: the amount's JSON text (a number or a string) is parsed as a
//! decimal and held as integer minor units of its currency.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::currency::iso_currency;

/// The largest amount accepted, in major units (keeps every amount far inside `i64` minor units).
const MAX_MAJOR_UNITS: i64 = 1_000_000_000;
const MAX_DESCRIPTION: usize = 500;
const MAX_PAYMENT_METHOD: usize = 64;
const MAX_METADATA_ENTRIES: usize = 50;
const MAX_METADATA_KEY: usize = 40;
const MAX_METADATA_VALUE: usize = 500;

/// A validated payment request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PaymentRequest {
    pub(crate) amount_minor: i64,
    pub(crate) currency: &'static str,
    pub(crate) description: Option<String>,
    pub(crate) payment_method: String,
    pub(crate) metadata: BTreeMap<String, String>,
}

/// One invalid field.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct FieldError {
    pub(crate) field: String,
    pub(crate) message: String,
}

/// At most this many characters of a client's text are repeated in an error: the answer to a
/// bad request must not be larger than the request.
const ECHOED: usize = 40;

/// `text` as an error repeats it: whole when short, else its first [`ECHOED`] characters and `…`.
fn echoed(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(ECHOED) {
        None => Cow::Borrowed(text),
        Some((end, _)) => Cow::Owned(format!("{}…", &text[..end])),
    }
}

fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// The body as sent, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    #[serde(borrow)]
    amount: Option<&'a RawValue>,
    /// Only looked up in the ISO table: borrowed from the body unless it holds escapes.
    #[serde(borrow)]
    currency: Option<Cow<'a, str>>,
    description: Option<String>,
    payment_method: Option<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, Value>>,
}

/// Why a body is not a payment request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Invalid {
    /// Not JSON, or not the shape of a payment request (400, with serde's position).
    Malformed(String),
    /// Well-formed but invalid fields (422, each field named).
    Fields(Vec<FieldError>),
}

impl PaymentRequest {
    /// Parses and validates a request body.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, Invalid> {
        // serde reads a struct from an array of its fields in order too; a payment is an object.
        if body.trim_ascii_start().first() != Some(&b'{') {
            return Err(Invalid::Malformed(
                "the body must be a JSON object".to_owned(),
            ));
        }
        let wire: Wire<'_> = serde_json::from_slice(body)
            .map_err(|e| Invalid::Malformed(echoed_error(&e.to_string())))?;
        refuse_nul(&wire)?;
        let mut errors = Vec::new();
        let currency = match wire.currency.as_deref() {
            None => {
                errors.push(field_error("currency", "required"));
                None
            }
            Some(code) => match iso_currency(code) {
                Some(found) => Some(found),
                None => {
                    errors.push(field_error(
                        "currency",
                        format!(
                            "{:?} is not an active ISO 4217 code (upper case, e.g. \"USD\")",
                            echoed(code)
                        ),
                    ));
                    None
                }
            },
        };
        let amount = match (wire.amount, currency) {
            (None, _) => {
                errors.push(field_error("amount", "required"));
                None
            }
            (Some(raw), currency) => {
                let exponent = currency.map_or(2, |(_, e)| e);
                match parse_amount(raw.get(), exponent) {
                    Ok(minor) => Some(minor),
                    Err(message) => {
                        errors.push(field_error("amount", message));
                        None
                    }
                }
            }
        };
        let payment_method = match wire.payment_method {
            None => {
                errors.push(field_error("payment_method", "required"));
                String::new()
            }
            Some(method) => {
                if method.is_empty() || method.chars().count() > MAX_PAYMENT_METHOD {
                    errors.push(field_error(
                        "payment_method",
                        format!("1–{MAX_PAYMENT_METHOD} characters"),
                    ));
                }
                method
            }
        };
        if let Some(description) = &wire.description
            && description.chars().count() > MAX_DESCRIPTION
        {
            errors.push(field_error(
                "description",
                format!("at most {MAX_DESCRIPTION} characters"),
            ));
        }
        let metadata = valid_metadata(wire.metadata.unwrap_or_default(), &mut errors);
        match (amount, currency) {
            (Some(amount_minor), Some((currency, _))) if errors.is_empty() => Ok(PaymentRequest {
                amount_minor,
                currency,
                description: wire.description,
                payment_method,
                metadata,
            }),
            _ => Err(Invalid::Fields(errors)),
        }
    }
}

/// The metadata entries that are valid, each problem added to `errors`.
fn valid_metadata(
    entries: BTreeMap<String, Value>,
    errors: &mut Vec<FieldError>,
) -> BTreeMap<String, String> {
    let mut metadata = BTreeMap::new();
    if entries.len() > MAX_METADATA_ENTRIES {
        // Refused whole: one error, not one per entry.
        errors.push(field_error(
            "metadata",
            format!("at most {MAX_METADATA_ENTRIES} entries"),
        ));
        return metadata;
    }
    for (key, value) in entries {
        // The field's name is only written out for an error: a valid entry costs no `format!`.
        let field = || format!("metadata.{}", echoed(&key));
        if key.is_empty() || key.chars().count() > MAX_METADATA_KEY {
            errors.push(field_error(
                &field(),
                format!("keys are 1–{MAX_METADATA_KEY} characters"),
            ));
        }
        match value {
            Value::String(text) if text.chars().count() <= MAX_METADATA_VALUE => {
                metadata.insert(key, text);
            }
            Value::String(_) => errors.push(field_error(
                &field(),
                format!("at most {MAX_METADATA_VALUE} characters"),
            )),
            _ => errors.push(field_error(&field(), "metadata values are strings")),
        }
    }
    metadata
}

/// serde's message, which may quote the client's text (an unknown field's name, a string of
/// the wrong type), cut to [`MALFORMED_SHOWN`] characters.
fn echoed_error(message: &str) -> String {
    match message.char_indices().nth(MALFORMED_SHOWN) {
        None => message.to_owned(),
        Some((end, _)) => format!("{}…", &message[..end]),
    }
}

/// The longest parse error shown.
const MALFORMED_SHOWN: usize = 200;

/// No text may hold NUL (`\u0000`): PostgreSQL cannot store it, so it would be a failure there
/// and a success in memory. The same request must get the same answer on every backend.
fn refuse_nul(wire: &Wire<'_>) -> Result<(), Invalid> {
    let texts = [
        ("description", wire.description.as_deref()),
        ("payment_method", wire.payment_method.as_deref()),
        ("currency", wire.currency.as_deref()),
    ];
    let metadata = wire.metadata.iter().flatten().flat_map(|(key, value)| {
        [
            ("metadata", Some(key.as_str())),
            ("metadata", value.as_str()),
        ]
    });
    match texts
        .into_iter()
        .chain(metadata)
        .find(|(_, text)| text.is_some_and(|t| t.contains('\0')))
    {
        Some((field, _)) => Err(Invalid::Malformed(format!(
            "`{field}` holds a NUL character (\\u0000), which no text field may contain"
        ))),
        None => Ok(()),
    }
}

/// Parses the amount's JSON text (a number, or a string holding one) into minor units of a
/// currency with `exponent` minor digits, by its exact decimal value, not its spelling: `123`,
/// `123.0`, `1.23e2` and `"123.00"` are one amount. Refused: a value with more than
/// `min(2, exponent)` digits after the decimal point once trailing zeros are dropped (`99.999`
/// for USD, `0.5` for JPY), a sign, zero, more than a billion major units, and exponents
/// beyond ±30 (no amount needs them; they would only make the arithmetic large).
pub(crate) fn parse_amount(json_text: &str, exponent: u32) -> Result<i64, String> {
    let text = json_text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(json_text);
    let Some(decimal) = Decimal::parse(text) else {
        if text.starts_with('-') {
            return Err("must be more than zero".into());
        }
        return Err("must be a decimal number such as 99.99 (a JSON number or string)".into());
    };
    let allowed = exponent.min(2);
    if decimal.is_zero() {
        return Err("must be more than zero".into());
    }
    if decimal.fraction_digits() > allowed {
        return Err(format!("at most {allowed} digits after the decimal point"));
    }
    decimal
        .minor_units(exponent)
        .filter(|minor| *minor <= MAX_MAJOR_UNITS * 10_i64.pow(exponent))
        .ok_or_else(|| format!("at most {MAX_MAJOR_UNITS}"))
}

/// A decimal as `digits × 10^scale`, with no zero at either end of `digits` (empty for zero).
#[derive(Debug)]
struct Decimal {
    digits: String,
    scale: i32,
}

impl Decimal {
    /// `digits[.digits][(e|E)[+|-]digits]`, as JSON writes a non-negative number, with at most
    /// 64 digits and an exponent within ±30.
    fn parse(text: &str) -> Option<Self> {
        let (mantissa, power) = match text.split_once(['e', 'E']) {
            Some((mantissa, power)) => (mantissa, power_of_ten(power)?),
            None => (text, 0),
        };
        let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(whole) || (mantissa.contains('.') && !all_digits(fraction)) {
            return None;
        }
        if whole.len() + fraction.len() > 64 {
            return None;
        }
        // The point sits before the fraction's digits; zeros at either end carry no value.
        let mut digits: String = (whole.chars().chain(fraction.chars()))
            .skip_while(|c| *c == '0')
            .collect();
        let mut scale = power - i32::try_from(fraction.len()).ok()?;
        while digits.ends_with('0') {
            digits.pop();
            scale += 1;
        }
        Some(Decimal { digits, scale })
    }

    fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// Digits after the point the value needs.
    fn fraction_digits(&self) -> u32 {
        self.scale.min(0).unsigned_abs()
    }

    /// The value in units of `10^-exponent`, if it is a whole number of them that fits an
    /// `i64`.
    fn minor_units(&self, exponent: u32) -> Option<i64> {
        let shift = u32::try_from(self.scale.checked_add(i32::try_from(exponent).ok()?)?).ok()?;
        let digits: i64 = self.digits.parse().ok()?;
        digits.checked_mul(10_i64.checked_pow(shift)?)
    }
}

/// An exponent's text (`2`, `+2`, `-2`) within ±30.
fn power_of_ten(text: &str) -> Option<i32> {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    if unsigned.is_empty() || unsigned.len() > 2 || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: i32 = unsigned.parse().ok().filter(|v| *v <= 30)?;
    Some(if text.starts_with('-') { -value } else { value })
}

/// `minor` units of a currency with `exponent` minor digits, shown as a decimal with
/// `min(2, exponent)` fraction digits — the precision accepted — so an amount answered can be
/// sent back as is (more digits only if the amount needs them, which accepted ones never do).
/// It is written where it is displayed: a response body is serialised without a `String` of it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Amount {
    pub(crate) minor: i64,
    /// The currency's ISO 4217 exponent.
    pub(crate) exponent: u32,
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = self.exponent.saturating_sub(2);
        let (minor, exponent) = if self.minor % 10_i64.pow(hidden) == 0 {
            (self.minor / 10_i64.pow(hidden), self.exponent - hidden)
        } else {
            (self.minor, self.exponent)
        };
        if exponent == 0 {
            return write!(f, "{minor}");
        }
        let scale = 10_i64.pow(exponent);
        let width = exponent as usize;
        write!(f, "{}.{:0width$}", minor / scale, minor % scale)
    }
}

#[cfg(test)]
mod tests {
    use super::super::currency::currency_exponent;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn arrays_are_refused_and_errors_stay_smaller_than_the_request() {
        let array = br#"["12.34","USD",null,"card"]"#;
        assert_eq!(
            PaymentRequest::parse(array),
            Err(Invalid::Malformed(
                "the body must be a JSON object".to_owned()
            ))
        );
        let long = "X".repeat(60_000);
        let bodies = [
            format!(r#"{{"amount": 1, "currency": "{long}", "payment_method": "card"}}"#),
            format!(r#"{{"amount": 1, "currency": "USD", "payment_method": "card", "{long}": 1}}"#),
            format!(
                r#"{{"amount": 1, "currency": "USD", "payment_method": "card", "metadata": {{"{long}": "v"}}}}"#
            ),
            format!(r#"{{"amount": 1, "currency": "USD", "payment_method": ["{long}"]}}"#),
        ];
        for body in bodies {
            let answer = format!("{:?}", PaymentRequest::parse(body.as_bytes()));
            assert!(
                answer.len() < 600,
                "{} bytes: {}",
                answer.len(),
                &answer[..600]
            );
        }
        let many: Vec<String> = (0..1_000).map(|i| format!(r#""{i:0>41}": "v""#)).collect();
        let body = format!(
            r#"{{"amount": 1, "currency": "USD", "payment_method": "card", "metadata": {{{}}}}}"#,
            many.join(",")
        );
        let Err(Invalid::Fields(errors)) = PaymentRequest::parse(body.as_bytes()) else {
            panic!("refused");
        };
        assert_eq!(errors.len(), 1, "{errors:?}");
    }

    fn format_amount(minor: i64, exponent: u32) -> String {
        Amount { minor, exponent }.to_string()
    }

    /// `plain` (`123.45`) with `leading` zeros before it, `trailing` zeros after its last
    /// fraction digit, and its point moved `shift` places left into an exponent (`1.2345e2`).
    fn respell(plain: &str, leading: usize, trailing: usize, shift: i32) -> String {
        let (whole, fraction) = plain.split_once('.').unwrap_or((plain, ""));
        let fraction = format!("{fraction}{}", "0".repeat(trailing));
        let shift = shift
            .min(i32::try_from(whole.len()).unwrap_or(0) - 1)
            .max(0);
        let cut = whole.len() - shift as usize;
        let (head, moved) = whole.split_at(cut);
        let mantissa = if moved.is_empty() && fraction.is_empty() {
            head.to_owned()
        } else {
            format!("{head}.{moved}{fraction}")
        };
        let power = if shift > 0 {
            format!("e{shift}")
        } else {
            String::new()
        };
        format!("{}{mantissa}{power}", "0".repeat(leading))
    }

    #[test]
    fn amounts() {
        assert_eq!(parse_amount("99.99", 2), Ok(9999));
        assert_eq!(parse_amount("\"99.99\"", 2), Ok(9999));
        assert_eq!(parse_amount("50.00", 2), Ok(5000));
        assert_eq!(parse_amount("0.5", 2), Ok(50));
        assert_eq!(parse_amount("007", 2), Ok(700));
        assert_eq!(parse_amount("1000000000", 2), Ok(100_000_000_000));
        assert_eq!(parse_amount("1000", 0), Ok(1000));
        assert_eq!(parse_amount("1.5", 3), Ok(1500));
        // By value, not spelling: what Python's json.dumps writes for a float, trailing zeros,
        // exponent forms, in a number or a string.
        assert_eq!(parse_amount("123.0", 0), Ok(123));
        assert_eq!(parse_amount("99.990", 2), Ok(9999));
        assert_eq!(parse_amount("1e2", 2), Ok(10_000));
        assert_eq!(parse_amount("1.2345E+2", 2), Ok(12_345));
        assert_eq!(parse_amount("\"12345e-2\"", 2), Ok(12_345));
        assert_eq!(parse_amount("1000000000.000", 2), Ok(100_000_000_000));
        for (bad, says) in [
            ("0", "more than zero"),
            ("0.00", "more than zero"),
            ("-1", "more than zero"),
            ("99.999", "at most 2 digits"),
            ("100.5", "at most 0 digits"),
            ("1.", "decimal"),
            ("1e", "decimal"),
            ("1e99", "decimal"),
            ("1e+-2", "decimal"),
            ("123.5", "at most 0 digits"),
            ("99.9990", "at most 2 digits"),
            ("1e-3", "at most 2 digits"),
            (".5", "decimal"),
            ("\"abc\"", "decimal"),
            ("true", "decimal"),
            ("null", "decimal"),
            ("1000000000.01", "at most 1000000000"),
            ("99999999999999999999999", "at most"),
        ] {
            let exponent = if bad == "100.5" || bad == "123.5" {
                0
            } else {
                2
            };
            let error = parse_amount(bad, exponent).expect_err(bad);
            assert!(error.contains(says), "{bad}: {error}");
        }
        assert_eq!(format_amount(9999, 2), "99.99");
        assert_eq!(format_amount(5, 2), "0.05");
        assert_eq!(format_amount(1000, 0), "1000");
        assert_eq!(format_amount(1500, 3), "1.50");
        assert_eq!(format_amount(1501, 3), "1.501");
    }

    #[test]
    fn requests() {
        let ok = PaymentRequest::parse(
            br#"{"amount": 99.99, "currency": "USD", "description": "Premium subscription",
                "payment_method": "credit_card", "metadata": {"order_id": "ord_456"}}"#,
        )
        .expect("valid");
        assert_eq!((ok.amount_minor, ok.currency), (9999, "USD"));
        assert_eq!(ok.metadata["order_id"], "ord_456");

        assert!(matches!(
            PaymentRequest::parse(b"{\"amount\": 1,"),
            Err(Invalid::Malformed(m)) if m.contains("line 1")
        ));
        let Err(Invalid::Fields(errors)) = PaymentRequest::parse(
            br#"{"amount": -5, "currency": "usd", "payment_method": "", "metadata": {"n": 1}}"#,
        ) else {
            panic!("invalid fields")
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["currency", "amount", "payment_method", "metadata.n"]
        );
        assert!(matches!(
            PaymentRequest::parse(br#"{"amount": 1, "currency": "USD", "payment_method": "card", "extra": 1}"#),
            Err(Invalid::Malformed(m)) if m.contains("extra")
        ));
        for body in [
            r#"{"amount": 1, "currency": "USD", "payment_method": "ca\u0000rd"}"#,
            r#"{"amount": 1, "currency": "USD", "payment_method": "card", "description": "\u0000"}"#,
            r#"{"amount": 1, "currency": "USD", "payment_method": "card", "metadata": {"k\u0000": "v"}}"#,
            r#"{"amount": 1, "currency": "USD", "payment_method": "card", "metadata": {"k": "v\u0000"}}"#,
        ] {
            assert!(
                matches!(PaymentRequest::parse(body.as_bytes()), Err(Invalid::Malformed(m)) if m.contains("NUL")),
                "{body}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Hostile amounts and bodies: never a panic; an accepted amount is positive, in range
        /// and formats back to an equal amount.
        #[test]
        fn hostile_amounts(text in prop_oneof!["[-+0-9.eE\"]{0,30}", any::<String>()], exponent in 0_u32..=4) {
            if let Ok(minor) = parse_amount(&text, exponent) {
                prop_assert!(minor > 0 && minor <= MAX_MAJOR_UNITS * 10_i64.pow(exponent));
                prop_assert_eq!(parse_amount(&format_amount(minor, exponent), exponent), Ok(minor));
            }
        }

        #[test]
        fn hostile_bodies(body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            "\\{\"amount\": [-0-9.e\"]{0,12}, \"currency\": \"[A-Z]{3}\", \"payment_method\": \".{0,70}\"(, \"metadata\": \\{\"[a-z]{0,45}\": \".{0,10}\"\\})?\\}".prop_map(String::into_bytes),
        ]) {
            if let Ok(request) = PaymentRequest::parse(&body) {
                prop_assert!(request.amount_minor > 0);
                prop_assert!(currency_exponent(request.currency).is_some());
                prop_assert!(!request.payment_method.is_empty());
            }
        }

        /// Any decimal spelling of an accepted amount (zeros after, the point moved into an
        /// exponent; zeros before too in a string) gives the same minor units; one digit of
        /// precision more than the currency has is refused with the same message, however it
        /// is spelled.
        #[test]
        fn amounts_by_value_not_spelling(
            seed in 1_i64..=100_000_000_000,
            exponent in prop::sample::select(vec![0_u32, 2]),
            leading in 0_usize..3,
            trailing in 0_usize..4,
            shift in 0_i32..4,
        ) {
            let minor = seed % (MAX_MAJOR_UNITS * 10_i64.pow(exponent)) + 1;
            let plain = format_amount(minor, exponent);
            // JSON numbers have no leading zeros; strings may.
            let spelled = respell(&plain, 0, trailing, shift);
            prop_assert_eq!(parse_amount(&spelled, exponent), Ok(minor), "{}", spelled);
            let quoted = format!("\"{}\"", respell(&plain, leading, trailing, shift));
            prop_assert_eq!(parse_amount(&quoted, exponent), Ok(minor), "{}", quoted);
            // That the two spellings share an idempotency fingerprint is the idempotency
            // crate's own property (`equal_documents_share_a_fingerprint`).
            // One more significant digit after the currency's last one.
            let finer = if exponent == 0 { format!("{plain}.1") } else { format!("{plain}1") };
            let refused = parse_amount(&respell(&finer, 0, trailing, shift), exponent);
            let expected = format!("at most {} digits after the decimal point", exponent.min(2));
            prop_assert_eq!(refused, Err(expected));
        }

        /// Every amount in range survives formatting and parsing unchanged, as a JSON number and
        /// as a string.
        #[test]
        fn amount_round_trip(seed in 0_i64..=100_000_000_000, exponent in prop::sample::select(vec![0_u32, 2])) {
            let minor = seed % (MAX_MAJOR_UNITS * 10_i64.pow(exponent)) + 1;
            let text = format_amount(minor, exponent);
            prop_assert_eq!(parse_amount(&text, exponent), Ok(minor));
            prop_assert_eq!(parse_amount(&format!("\"{text}\""), exponent), Ok(minor));
        }
    }
}
