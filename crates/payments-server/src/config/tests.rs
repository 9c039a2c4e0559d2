use super::*;
use tollgate_http::client_ip::TrustedProxies;

/// What operators type for a boolean: `true/false`, `1/0`, `yes/no`, `on/off`, any case; the
/// bare flag means on.
#[test]
fn booleans_read_as_operators_write_them() {
    let parse = |args: &[&str]| {
        Config::try_parse_from(std::iter::once("payments-server").chain(args.iter().copied()))
    };
    for on in ["true", "1", "yes", "on", "TRUE", "Yes", "ON"] {
        let config = parse(&["--testing", on, "--dev", on]).expect(on);
        assert!(config.testing && config.dev, "{on}");
    }
    for off in ["false", "0", "no", "off", "False", "NO"] {
        let config = parse(&["--testing", off]).expect(off);
        assert!(!config.testing, "{off}");
    }
    assert!(parse(&["--testing"]).expect("bare").testing);
    assert!(!parse(&[]).expect("absent").testing);
    let error = parse(&["--testing", "maybe"])
        .expect_err("maybe")
        .to_string();
    assert!(error.contains("--testing"), "{error}");
}

#[test]
fn flags_turn_the_testing_features_on() {
    let parse = |args: &[&str]| {
        Config::try_parse_from(std::iter::once("payments-server").chain(args.iter().copied()))
            .expect("parses")
    };
    let on = parse(&["--testing"]).file().expect("defaults");
    assert!(on.testing.payment_methods && on.testing.simulate_concurrent);
    let off = parse(&[]).file().expect("defaults");
    assert!(!off.testing.payment_methods && !off.testing.simulate_concurrent);
}

#[test]
fn keys_from_a_file() {
    let path = std::env::temp_dir().join(format!("tollgate-keys-{}", std::process::id()));
    std::fs::write(
        &path,
        "# production keys\nsk_live_0123456789abcdef:alice\n\n  sk_live_fedcba9876543210:bob\n",
    )
    .expect("write");
    let parse = |args: &[&std::ffi::OsStr]| {
        Config::try_parse_from(
            std::iter::once(std::ffi::OsStr::new("payments-server")).chain(args.iter().copied()),
        )
        .expect("parses")
    };
    let flag = std::ffi::OsStr::new("--api-keys-file");
    let (keys, dev) = parse(&[flag, path.as_os_str()]).keys().expect("valid");
    assert!(!dev);
    let users: Vec<_> = keys.iter().map(|k| k.user.as_str()).collect();
    assert_eq!(users, ["alice", "bob"]);
    std::fs::write(&path, "short:alice\n").expect("write");
    let error = parse(&[flag, path.as_os_str()])
        .keys()
        .expect_err("a short key");
    assert!(error.starts_with("API_KEYS_FILE "), "{error}");
    assert!(error.contains("a key must be"), "{error}");
    let both = [
        flag,
        path.as_os_str(),
        std::ffi::OsStr::new("--api-keys"),
        std::ffi::OsStr::new("sk_live_0123456789abcdef:alice"),
    ];
    let error = parse(&both).keys().expect_err("both");
    assert!(error.contains("use one"), "{error}");
    let _ = std::fs::remove_file(&path);
    let error = parse(&[flag, path.as_os_str()])
        .keys()
        .expect_err("no file");
    assert!(error.starts_with("API_KEYS_FILE "), "{error}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1_000))]

    /// Any file text: a configuration or an error message, never a panic.
    #[test]
    fn hostile_config_files(text in proptest::prelude::any::<String>(), number in proptest::prelude::any::<f64>(), duration in "[0-9]{0,25}(ns|ms|s|h|d|y)?") {
        let _ = FileConfig::parse(&text);
        let section = format!("[processor]\ndecline_rate = {number:?}\n[timeouts]\nrequest = \"{duration}\"\n");
        match FileConfig::parse(&section) {
            Ok(config) => {
                proptest::prop_assert!((0.0..=1.0).contains(&config.processor.decline_rate));
                proptest::prop_assert!(!config.timeouts.request.is_zero());
            }
            Err(error) => proptest::prop_assert!(!error.is_empty()),
        }
    }
}

#[test]
fn toml_file() {
    let file = FileConfig::parse(
        r#"
            trusted_proxies = ["10.0.0.1", "172.16.0.0/12", "fd00::/8"]
            forwarded_header = "forwarded"
            [timeouts]
            request = "5s"
            [processor]
            decline_rate = 0.25
            [[policy]]
            name = "payments"
            scope = "user"
            algorithm = "sliding-window"
            limit = 1000
            window = "60s"
            endpoint = "POST /api/v1/payments"
            "#,
    )
    .expect("valid");
    assert_eq!(file.timeouts.request, Duration::from_secs(5));
    assert_eq!(file.timeouts.header_read, Duration::from_secs(10));
    assert_eq!(file.forwarded_header, ForwardedHeader::Forwarded);
    let proxies = TrustedProxies::ranges(file.trusted_proxies.iter().copied());
    for proxy in ["10.0.0.1", "172.31.255.1", "fd12::7"] {
        assert!(
            proxies.contains(proxy.parse().expect("an address")),
            "{proxy}"
        );
    }
    assert_eq!(file.policy_set().expect("valid").policies().len(), 1);
    assert_eq!(
        FileConfig::default()
            .policy_set()
            .expect("valid")
            .policies()
            .len(),
        4
    );

    let errors = [
        ("[timeouts]\nrequest = \"soon\"", "soon"),
        ("[timeouts]\nrequets = \"5s\"", "requets"),
        ("[processor]\ndecline_rate = 2.0", "processor.decline_rate"),
        ("[timeouts]\nrequest = \"0s\"", "timeouts.request"),
        (
            "[idempotency]\nlease = \"5s\"",
            "idempotency.lease (5s) must be longer than processor.timeout",
        ),
        (
            "[idempotency]\nttl = \"30s\"",
            "idempotency.ttl (30s) must be longer than idempotency.lease",
        ),
        (
            "[limits]\nmax_header_bytes = 100",
            "limits.max_header_bytes",
        ),
        ("trusted_proxies = [\"10.0.0.0/40\"]", "10.0.0.0/40"),
        (
            "[limits]\nmax_connections_per_ip = 0",
            "limits.max_connections_per_ip",
        ),
        ("[testing]\nsimulate = true", "simulate"),
        (
            "[[policy]]\nname = \"x\"\nscope = \"user\"\nalgorithm = \"sliding-window\"\nlimit = 0\nwindow = \"1s\"",
            "x",
        ),
    ];
    for (text, named) in errors {
        let error = FileConfig::parse(text).expect_err(text);
        assert!(error.contains(named), "{text}: {error}");
    }
}
