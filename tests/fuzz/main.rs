//! Property-driven fuzzing of every parser that reads untrusted input: `Idempotency-Key` (bare
//! and RFC 8941 sf-string), canonical-JSON fingerprints, `Retry-After`, `X-Forwarded-For`, and
//! the rate-limit policy table. Each target runs a bounded number of generated cases (set
//! `PROPTEST_CASES` for a longer run) plus every file of its seed corpus in
//! `tests/fuzz/corpus/<target>/`; proptest keeps any failure it finds in
//! `tests/fuzz/main.proptest-regressions` and replays it first on every later run.
//!
//! The properties: no input panics, and what is accepted is exactly what the contract allows.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, Method};
use proptest::prelude::*;
use serde_json::Value;
use tollgate_http::client_ip::{TrustedProxies, client_ip};
use tollgate_idempotency::IdempotencyKey;
use tollgate_idempotency::fingerprint::Fingerprint;
use tollgate_ratelimit::config::RateLimitConfig;
use tollgate_ratelimit::{MemoryLimiter, RateLimiter, RequestContext};

/// The seed corpus of `target`, as text (lossy for the odd invalid byte).
fn corpus(target: &str) -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).expect("read a corpus file");
            (
                path.display().to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            )
        })
        .collect()
}

/// Text biased towards what the parsers care about, with any character now and then.
fn tricky_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_-]{0,300}",
        "\"[A-Za-z0-9_\\-\"\\\\ ,]{0,270}\"?",
        "[0-9 ,.:;\\[\\]a-fA-F\"\\\\-]{0,80}",
        any::<String>(),
    ]
}

fn key_property(input: &str) {
    match IdempotencyKey::parse(input) {
        Ok(key) => {
            let text = key.as_str();
            assert!((16..=255).contains(&text.len()), "{input:?} → {text:?}");
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "{input:?} → {text:?}"
            );
            // Bare and quoted spellings name the same key.
            assert_eq!(
                IdempotencyKey::parse(&format!("\"{text}\"")).map(|k| k.as_str().to_owned()),
                Ok(text.to_owned())
            );
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
    // Through a header map too, where repeated headers are a refusal.
    if let Ok(value) = HeaderValue::from_str(input) {
        let mut headers = HeaderMap::new();
        headers.insert("idempotency-key", value.clone());
        let once = IdempotencyKey::from_headers(&headers).is_ok();
        assert_eq!(once, IdempotencyKey::parse(input).is_ok());
        headers.append("idempotency-key", value);
        assert!(IdempotencyKey::from_headers(&headers).is_err());
    }
}

fn json_property(body: &[u8]) {
    let method = Method::POST;
    let of = |text: &[u8]| Fingerprint::of_json(&method, "/api/v1/payments", text);
    let fingerprint = of(body);
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    // One document in two layouts: one fingerprint.
    let compact = serde_json::to_vec(&value).expect("serialises");
    let pretty = serde_json::to_vec_pretty(&value).expect("serialises");
    assert!(
        of(&compact).is_ok_and(|f| of(&pretty).is_ok_and(|g| f == g)),
        "{value}"
    );
    // Re-serialising keeps the fingerprint unless it changed a number: serde_json reads
    // numbers as doubles, and the fingerprint keeps every digit.
    if let Ok(fingerprint) = &fingerprint
        && !has_numbers(&value)
    {
        assert!(of(&compact).is_ok_and(|f| f == *fingerprint), "{value}");
    }
}

fn has_numbers(value: &Value) -> bool {
    match value {
        Value::Number(_) => true,
        Value::Array(items) => items.iter().any(has_numbers),
        Value::Object(members) => members.values().any(has_numbers),
        _ => false,
    }
}

fn retry_after_property(input: &str) {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000);
    if let Ok(wait) = tollgate_retry::retry_after::parse(input, now)
        && let Ok(seconds) = input.trim().parse::<u64>()
    {
        assert_eq!(wait, Duration::from_secs(seconds));
    }
}

fn forwarded_for_property(input: &str, trusted: &[IpAddr]) {
    let peer: IpAddr = "10.0.0.1".parse().expect("an address");
    let Ok(value) = HeaderValue::from_str(input) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", value);
    let proxies = TrustedProxies::new(trusted.iter().copied().chain([peer]));
    let found = client_ip(peer, &headers, &proxies);
    // The client is the peer or an address written in the header (an IPv4-mapped IPv6 one as
    // the IPv4 address it maps), never something invented.
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let written = input
        .split(',')
        .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
        .any(|ip| canonical(ip) == found);
    assert!(found == peer || written, "{input:?} → {found}");
    // An untrusted peer's header is ignored.
    assert_eq!(client_ip(peer, &headers, &TrustedProxies::none()), peer);
}

fn policy_property(text: &str) {
    let Ok(config) = toml::from_str::<RateLimitConfig>(text) else {
        return;
    };
    let Ok(set) = config.into_policy_set() else {
        return;
    };
    // A table that validates can be used: one decision per policy, no panic, no overflow.
    let limiter = MemoryLimiter::new();
    let ctx = RequestContext::new()
        .user("alice")
        .ip("203.0.113.7".parse().expect("an address"))
        .endpoint("POST /api/v1/payments");
    let keys = set.keys_for(&ctx);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        for _ in 0..3 {
            let _ = limiter.check(&keys, 1).await;
        }
        let _ = limiter.peek(&keys, 1).await;
    });
}

#[test]
fn corpus_replays() {
    for (name, text) in corpus("key") {
        key_property(&text);
        let _ = name;
    }
    for (_, text) in corpus("json") {
        json_property(text.as_bytes());
    }
    for (_, text) in corpus("retry_after") {
        retry_after_property(&text);
    }
    for (_, text) in corpus("forwarded_for") {
        forwarded_for_property(&text, &[]);
    }
    for (name, text) in corpus("policy_toml") {
        policy_property(&text);
        assert!(
            name.contains("huge-window") || toml::from_str::<RateLimitConfig>(&text).is_ok(),
            "{name} is valid TOML for the table"
        );
    }
}

/// JSON text with members in any order and any whitespace, for a value.
fn scrambled(value: &Value, rng: &mut u64, out: &mut String) {
    fn next(rng: &mut u64) -> u64 {
        // xorshift: enough to vary the spelling, reproducible from the seed.
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    }
    let space = |n: u64| [" ", "", "\n", "\t ", ""][(n % 5) as usize];
    match value {
        Value::Object(map) => {
            let mut members: Vec<_> = map.iter().collect();
            let rotate = (next(rng) as usize) % members.len().max(1);
            members.rotate_left(rotate);
            out.push('{');
            for (i, (key, member)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(space(next(rng)));
                out.push_str(&serde_json::to_string(key).expect("a key"));
                out.push(':');
                out.push_str(space(next(rng)));
                scrambled(member, rng, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                    out.push_str(space(next(rng)));
                }
                scrambled(item, rng, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1.0e12..1.0e12_f64).prop_map(Value::from),
        "[a-z0-9 \\u{e9}\"\\\\]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2_000,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn idempotency_keys(input in tricky_text()) {
        key_property(&input);
    }

    #[test]
    fn json_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
        json_property(&body);
    }

    #[test]
    fn json_text_spelling_does_not_change_the_fingerprint(value in json_value(), seed in 1_u64..) {
        let mut rng = seed;
        let mut text = String::new();
        scrambled(&value, &mut rng, &mut text);
        let compact = serde_json::to_vec(&value).expect("serialises");
        let method = Method::POST;
        prop_assert_eq!(
            Fingerprint::of_json(&method, "/r", text.as_bytes()).ok(),
            Fingerprint::of_json(&method, "/r", &compact).ok(),
            "{}", text
        );
        json_property(text.as_bytes());
    }

    #[test]
    fn retry_after_values(input in tricky_text()) {
        retry_after_property(&input);
    }

    #[test]
    fn forwarded_for_values(
        input in tricky_text(),
        hops in prop::collection::vec(any::<IpAddr>(), 0..5),
        trusted_count in 0_usize..4,
    ) {
        forwarded_for_property(&input, &[]);
        let header = hops.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", ");
        let trusted: Vec<_> = hops.iter().rev().take(trusted_count).copied().collect();
        forwarded_for_property(&header, &trusted);
    }

    #[test]
    fn policy_tables(
        limit in prop_oneof![Just(0_u64), Just(1), Just(u64::MAX), any::<u64>()],
        window in prop_oneof![Just("1ns".to_owned()), Just("0s".to_owned()), Just("584942417355y".to_owned()), "[0-9]{1,20}(ns|us|ms|s|m|h|d)"],
        burst in prop::option::of(prop_oneof![Just(0_u64), Just(u64::MAX), any::<u64>()]),
        algorithm in prop::sample::select(vec!["sliding-window", "sliding-log", "token-bucket"]),
        scope in prop::sample::select(vec!["global", "user", "ip", "endpoint"]),
        noise in any::<String>(),
    ) {
        let burst = burst.map(|b| format!("burst = {b}\n")).unwrap_or_default();
        let text = format!(
            "[[policy]]\nname = \"p\"\nscope = \"{scope}\"\nalgorithm = \"{algorithm}\"\nlimit = {limit}\nwindow = \"{window}\"\n{burst}"
        );
        policy_property(&text);
        policy_property(&noise);
    }
}
