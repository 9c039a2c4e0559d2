//! Payments: the request as validated, the record as stored, the JSON as answered.
//!
//! Amounts are never floats: the amount's JSON text (a number or a string) is parsed as a
//! decimal and held as integer minor units of its currency.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// The largest amount accepted, in major units (keeps every amount far inside `i64` minor units).
const MAX_MAJOR_UNITS: i64 = 1_000_000_000;
const MAX_DESCRIPTION: usize = 500;
const MAX_PAYMENT_METHOD: usize = 64;
const MAX_METADATA_ENTRIES: usize = 50;
const MAX_METADATA_KEY: usize = 40;
const MAX_METADATA_VALUE: usize = 500;

/// Where a payment stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Recorded before the processor was called, or the processor's answer is not known yet.
    Pending,
    /// Charged.
    Succeeded,
    /// Declined by the processor.
    Failed,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Self> {
        match name {
            "pending" => Some(Status::Pending),
            "succeeded" => Some(Status::Succeeded),
            "failed" => Some(Status::Failed),
            _ => None,
        }
    }
}

/// A payment as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Payment {
    pub(crate) transaction_id: String,
    pub(crate) user_id: String,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) status: Status,
    pub(crate) amount_minor: i64,
    pub(crate) currency: String,
    pub(crate) description: Option<String>,
    pub(crate) payment_method: String,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) decline_code: Option<String>,
    pub(crate) created_at: SystemTime,
}

impl Payment {
    /// A new pending payment for `request`.
    pub(crate) fn pending(
        user_id: &str,
        idempotency_key: Option<&str>,
        request: PaymentRequest,
    ) -> Self {
        Payment {
            transaction_id: format!("txn_{}", uuid::Uuid::now_v7().simple()),
            user_id: user_id.to_owned(),
            idempotency_key: idempotency_key.map(str::to_owned),
            status: Status::Pending,
            amount_minor: request.amount_minor,
            currency: request.currency.to_owned(),
            description: request.description,
            payment_method: request.payment_method,
            metadata: request.metadata,
            decline_code: None,
            created_at: SystemTime::now(),
        }
    }

    /// The response body: the contract's fields, `amount` as an exact decimal string.
    pub(crate) fn view(&self) -> PaymentView<'_> {
        let exponent = currency_exponent(&self.currency).unwrap_or(2);
        PaymentView {
            transaction_id: &self.transaction_id,
            status: self.status.as_str(),
            amount: format_amount(self.amount_minor, exponent),
            amount_minor: self.amount_minor,
            currency: &self.currency,
            description: self.description.as_deref(),
            payment_method: &self.payment_method,
            metadata: &self.metadata,
            created_at: humantime::format_rfc3339_millis(self.created_at).to_string(),
            decline_code: self.decline_code.as_deref(),
        }
    }

    /// [`view`](Self::view) as a JSON value (for embedding in a problem).
    pub(crate) fn to_json(&self) -> Value {
        serde_json::to_value(self.view()).unwrap_or_default()
    }
}

/// A payment as answered (serialized directly, without building a `Value`).
#[derive(Debug, serde::Serialize)]
pub(crate) struct PaymentView<'a> {
    transaction_id: &'a str,
    status: &'static str,
    amount: String,
    amount_minor: i64,
    currency: &'a str,
    description: Option<&'a str>,
    payment_method: &'a str,
    metadata: &'a BTreeMap<String, String>,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    decline_code: Option<&'a str>,
}

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
    currency: Option<String>,
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
        let wire: Wire<'_> =
            serde_json::from_slice(body).map_err(|e| Invalid::Malformed(e.to_string()))?;
        let mut errors = Vec::new();
        let currency = match wire.currency.as_deref() {
            None => {
                errors.push(field_error("currency", "required"));
                None
            }
            Some(code) => {
                match iso_currency(code) {
                    Some(found) => Some(found),
                    None => {
                        errors.push(field_error(
                        "currency",
                        format!("{code:?} is not an active ISO 4217 code (upper case, e.g. \"USD\")"),
                    ));
                        None
                    }
                }
            }
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
        if let Some(description) = &wire.description {
            if description.chars().count() > MAX_DESCRIPTION {
                errors.push(field_error(
                    "description",
                    format!("at most {MAX_DESCRIPTION} characters"),
                ));
            }
        }
        let mut metadata = BTreeMap::new();
        let entries = wire.metadata.unwrap_or_default();
        if entries.len() > MAX_METADATA_ENTRIES {
            errors.push(field_error(
                "metadata",
                format!("at most {MAX_METADATA_ENTRIES} entries"),
            ));
        }
        for (key, value) in entries {
            let field = format!("metadata.{key}");
            if key.is_empty() || key.chars().count() > MAX_METADATA_KEY {
                errors.push(field_error(
                    &field,
                    format!("keys are 1–{MAX_METADATA_KEY} characters"),
                ));
            }
            match value {
                Value::String(text) if text.chars().count() <= MAX_METADATA_VALUE => {
                    metadata.insert(key, text);
                }
                Value::String(_) => errors.push(field_error(
                    &field,
                    format!("at most {MAX_METADATA_VALUE} characters"),
                )),
                _ => errors.push(field_error(&field, "metadata values are strings")),
            }
        }
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

/// Parses the amount's JSON text (a number, or a string holding one) into minor units of a
/// currency with `exponent` minor digits. At most `min(2, exponent)` fraction digits; no
/// exponent notation, sign or leading `+`; more than zero; at most a billion major units.
pub(crate) fn parse_amount(json_text: &str, exponent: u32) -> Result<i64, String> {
    let text = json_text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(json_text);
    let shape = "a decimal number such as 99.99 (a JSON number or string)";
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (text.contains('.') && !digits(fraction)) {
        if text.starts_with('-') {
            return Err("must be more than zero".into());
        }
        return Err(format!("must be {shape}"));
    }
    let allowed = exponent.min(2);
    if fraction.len() > allowed as usize {
        return Err(format!("at most {allowed} digits after the decimal point"));
    }
    let whole: i64 = whole
        .trim_start_matches('0')
        .parse()
        .or_else(|_| {
            if whole.bytes().all(|b| b == b'0') {
                Ok(0)
            } else {
                Err(())
            }
        })
        .ok()
        .filter(|w| *w <= MAX_MAJOR_UNITS)
        .ok_or_else(|| format!("at most {MAX_MAJOR_UNITS}"))?;
    let scale = 10_i64.pow(exponent);
    let mut fraction_minor: i64 = 0;
    for (i, b) in fraction.bytes().enumerate() {
        let place = 10_i64.pow(exponent - 1 - i as u32);
        fraction_minor += i64::from(b - b'0') * place;
    }
    let minor = whole * scale + fraction_minor;
    if minor == 0 {
        return Err("must be more than zero".into());
    }
    if whole == MAX_MAJOR_UNITS && fraction_minor > 0 {
        return Err(format!("at most {MAX_MAJOR_UNITS}"));
    }
    Ok(minor)
}

/// `minor` units of a currency with `exponent` minor digits, as a decimal with
/// `min(2, exponent)` fraction digits — the precision accepted — so an amount answered can be
/// sent back as is. (More digits only if the amount needs them, which accepted ones never do.)
pub(crate) fn format_amount(minor: i64, exponent: u32) -> String {
    let hidden = exponent.saturating_sub(2);
    let (minor, exponent) = if minor % 10_i64.pow(hidden) == 0 {
        (minor / 10_i64.pow(hidden), exponent - hidden)
    } else {
        (minor, exponent)
    };
    if exponent == 0 {
        return minor.to_string();
    }
    let scale = 10_i64.pow(exponent);
    format!(
        "{}.{:0width$}",
        minor / scale,
        minor % scale,
        width = exponent as usize
    )
}

/// Active ISO 4217 currency codes and their minor-unit exponents, sorted by code (binary
/// search: this is on every payment's path).
const CURRENCIES: &[(&str, u32)] = &[
    ("AED", 2),
    ("AFN", 2),
    ("ALL", 2),
    ("AMD", 2),
    ("ANG", 2),
    ("AOA", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("AWG", 2),
    ("AZN", 2),
    ("BAM", 2),
    ("BBD", 2),
    ("BDT", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BMD", 2),
    ("BND", 2),
    ("BOB", 2),
    ("BOV", 2),
    ("BRL", 2),
    ("BSD", 2),
    ("BTN", 2),
    ("BWP", 2),
    ("BYN", 2),
    ("BZD", 2),
    ("CAD", 2),
    ("CDF", 2),
    ("CHE", 2),
    ("CHF", 2),
    ("CHW", 2),
    ("CLF", 4),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("COU", 2),
    ("CRC", 2),
    ("CUP", 2),
    ("CVE", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("DOP", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("ERN", 2),
    ("ETB", 2),
    ("EUR", 2),
    ("FJD", 2),
    ("FKP", 2),
    ("GBP", 2),
    ("GEL", 2),
    ("GHS", 2),
    ("GIP", 2),
    ("GMD", 2),
    ("GNF", 0),
    ("GTQ", 2),
    ("GYD", 2),
    ("HKD", 2),
    ("HNL", 2),
    ("HTG", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("IRR", 2),
    ("ISK", 0),
    ("JMD", 2),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KGS", 2),
    ("KHR", 2),
    ("KMF", 0),
    ("KPW", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("KYD", 2),
    ("KZT", 2),
    ("LAK", 2),
    ("LBP", 2),
    ("LKR", 2),
    ("LRD", 2),
    ("LSL", 2),
    ("LYD", 3),
    ("MAD", 2),
    ("MDL", 2),
    ("MGA", 2),
    ("MKD", 2),
    ("MMK", 2),
    ("MNT", 2),
    ("MOP", 2),
    ("MRU", 2),
    ("MUR", 2),
    ("MVR", 2),
    ("MWK", 2),
    ("MXN", 2),
    ("MXV", 2),
    ("MYR", 2),
    ("MZN", 2),
    ("NAD", 2),
    ("NGN", 2),
    ("NIO", 2),
    ("NOK", 2),
    ("NPR", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PAB", 2),
    ("PEN", 2),
    ("PGK", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("RUB", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SBD", 2),
    ("SCR", 2),
    ("SDG", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("SHP", 2),
    ("SLE", 2),
    ("SOS", 2),
    ("SRD", 2),
    ("SSP", 2),
    ("STN", 2),
    ("SVC", 2),
    ("SYP", 2),
    ("SZL", 2),
    ("THB", 2),
    ("TJS", 2),
    ("TMT", 2),
    ("TND", 3),
    ("TOP", 2),
    ("TRY", 2),
    ("TTD", 2),
    ("TWD", 2),
    ("TZS", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("USN", 2),
    ("UYI", 0),
    ("UYU", 2),
    ("UYW", 4),
    ("UZS", 2),
    ("VED", 2),
    ("VES", 2),
    ("VND", 0),
    ("VUV", 0),
    ("WST", 2),
    ("XAF", 0),
    ("XCD", 2),
    ("XCG", 2),
    ("XOF", 0),
    ("XPF", 0),
    ("YER", 2),
    ("ZAR", 2),
    ("ZMW", 2),
    ("ZWG", 2),
];

/// The code (as a static string) and its exponent, if `code` is an active ISO 4217 code.
fn iso_currency(code: &str) -> Option<(&'static str, u32)> {
    CURRENCIES
        .binary_search_by(|(name, _)| (*name).cmp(code))
        .ok()
        .map(|i| CURRENCIES[i])
}

/// The exponent of an active ISO 4217 code.
pub(crate) fn currency_exponent(code: &str) -> Option<u32> {
    iso_currency(code).map(|(_, exponent)| exponent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn currency_table_is_sorted_and_unique() {
        assert!(CURRENCIES.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(iso_currency("USD"), Some(("USD", 2)));
        assert_eq!(iso_currency("JPY"), Some(("JPY", 0)));
        assert_eq!(iso_currency("BHD"), Some(("BHD", 3)));
        assert_eq!(iso_currency("usd"), None);
        assert_eq!(iso_currency("XXX"), None);
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
        for (bad, says) in [
            ("0", "more than zero"),
            ("0.00", "more than zero"),
            ("-1", "more than zero"),
            ("99.999", "at most 2 digits"),
            ("100.5", "at most 0 digits"),
            ("1e2", "decimal"),
            ("1.", "decimal"),
            (".5", "decimal"),
            ("\"abc\"", "decimal"),
            ("true", "decimal"),
            ("null", "decimal"),
            ("1000000000.01", "at most 1000000000"),
            ("99999999999999999999999", "at most"),
        ] {
            let exponent = if bad == "100.5" { 0 } else { 2 };
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
