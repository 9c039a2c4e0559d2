//! Payments: the request as validated, the record as stored, the JSON as answered.
//!
//! Amounts are never floats: the amount's JSON text (a number or a string) is parsed as a
//! decimal and held as integer minor units of its currency.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

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
    pub(crate) fn to_json(&self) -> Value {
        let exponent = currency_exponent(&self.currency).unwrap_or(2);
        let mut body = json!({
            "transaction_id": self.transaction_id,
            "status": self.status.as_str(),
            "amount": format_amount(self.amount_minor, exponent),
            "amount_minor": self.amount_minor,
            "currency": self.currency,
            "description": self.description,
            "payment_method": self.payment_method,
            "metadata": self.metadata,
            "created_at": humantime::format_rfc3339_millis(self.created_at).to_string(),
        });
        if let (Some(code), Some(object)) = (&self.decline_code, body.as_object_mut()) {
            object.insert("decline_code".into(), Value::from(code.as_str()));
        }
        body
    }
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

/// Active ISO 4217 currency codes and their minor-unit exponents (2 unless listed).
const CURRENCIES: &str = "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD:3 BIF:0 BMD BND \
BOB BOV BRL BSD BTN BWP BYN BZD CAD CDF CHE CHF CHW CLF:4 CLP:0 CNY COP COU CRC CUP CVE CZK DJF:0 \
DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF:0 GTQ GYD HKD HNL HTG HUF IDR ILS INR \
IQD:3 IRR ISK:0 JMD JOD:3 JPY:0 KES KGS KHR KMF:0 KPW KRW:0 KWD:3 KYD KZT LAK LBP LKR LRD LSL LYD:3 \
MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR:3 PAB PEN \
PGK PHP PKR PLN PYG:0 QAR RON RSD RUB RWF:0 SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP \
SZL THB TJS TMT TND:3 TOP TRY TTD TWD TZS UAH UGX:0 USD USN UYI:0 UYU UYW:4 UZS VED VES VND:0 VUV:0 \
WST XAF:0 XCD XCG XOF:0 XPF:0 YER ZAR ZMW ZWG";

/// The code (as a static string) and its exponent, if `code` is an active ISO 4217 code.
fn iso_currency(code: &str) -> Option<(&'static str, u32)> {
    CURRENCIES.split_ascii_whitespace().find_map(|entry| {
        let (name, exponent) = entry.split_once(':').unwrap_or((entry, "2"));
        (name == code).then(|| (name, exponent.parse().unwrap_or(2)))
    })
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
