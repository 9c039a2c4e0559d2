//! TLS to PostgreSQL, Redis and the processor, against servers that refuse plain connections
//! and present a certificate for `localhost` signed by a test CA (`.ci/tls-services` makes
//! them): every `sslmode`, `rediss://` with a private CA, `https` to `mock-processor` with
//! `PROCESSOR_CA_FILE`, and the one-line start-up errors of a wrong CA, a host name the
//! certificate does not name, and plain text to a TLS-only server.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{ALICE, Options, Server, payment, unique};

/// The TLS services, from `TEST_TLS_DIR`, `TEST_REDIS_TLS_URL` and `TEST_DATABASE_TLS_URL`.
struct Tls {
    dir: PathBuf,
    redis_url: String,
    database_url: String,
}

impl Tls {
    fn new(test: &str) -> Option<Tls> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        match (
            var("TEST_TLS_DIR"),
            var("TEST_REDIS_TLS_URL"),
            var("TEST_DATABASE_TLS_URL"),
        ) {
            (Some(dir), Some(redis_url), Some(database_url)) => Some(Tls {
                dir: PathBuf::from(dir),
                redis_url,
                database_url,
            }),
            _ => {
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED {test}: needs Redis and PostgreSQL with TLS; run \
                     `eval \"$(.ci/tls-services)\"` to start them and set TEST_TLS_DIR, \
                     TEST_REDIS_TLS_URL and TEST_DATABASE_TLS_URL"
                );
                None
            }
        }
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// The TLS database URL with `host` for `localhost` and `query` appended.
    fn database(&self, host: &str, query: &str) -> String {
        let url = self
            .database_url
            .replacen("@localhost:", &format!("@{host}:"), 1);
        format!("{url}?{query}")
    }

    /// Options for a server on `database_url` (and no Redis), isolated in its own schema.
    fn on_database(&self, database_url: &str) -> Options {
        Options::default()
            .env("DATABASE_URL", database_url)
            .env("DATABASE_SCHEMA", &unique("tls").replace('-', "_"))
    }
}

/// Starts the server with `options` expecting it to refuse to start; its standard error.
pub(crate) fn start_up_error(options: &Options) -> String {
    let mut server = Server::spawn(options);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            assert!(!status.success(), "exited cleanly instead of refusing");
            let mut stderr = String::new();
            if let Some(mut pipe) = server.child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            return stderr;
        }
        assert!(Instant::now() < deadline, "started anyway: {options:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn postgres_with_verify_full_serves_payments() {
    let Some(tls) = Tls::new("postgres_with_verify_full_serves_payments") else {
        return;
    };
    let url = tls.database(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", tls.file("ca.crt")),
    );
    let server = Server::start(&tls.on_database(&url));
    server.get("/ready", None).expect(200);
    let key = unique("order");
    server
        .pay(ALICE, &key, &payment("5.00", "card"))
        .expect(201);
    let replay = server.pay(ALICE, &key, &payment("5.00", "card"));
    replay.expect(201);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
}

#[test]
fn each_sslmode_connects_or_refuses_as_libpq_would() {
    let Some(tls) = Tls::new("each_sslmode_connects_or_refuses_as_libpq_would") else {
        return;
    };
    let ca = format!("sslrootcert={}", tls.file("ca.crt"));
    // Encrypted, the certificate not checked (libpq's meaning of these modes).
    for (host, query) in [
        ("localhost", "sslmode=require".to_owned()),
        ("127.0.0.1", "sslmode=prefer".to_owned()),
        ("localhost", String::new()),
        // The chain is checked, not the name.
        ("127.0.0.1", format!("sslmode=verify-ca&{ca}")),
    ] {
        let mut server = Server::start(&tls.on_database(&tls.database(host, &query)));
        server.get("/ready", None).expect(200);
        server.terminate();
    }
}

#[test]
fn tls_mistakes_are_one_line_at_start_up_naming_the_setting() {
    let Some(tls) = Tls::new("tls_mistakes_are_one_line_at_start_up_naming_the_setting") else {
        return;
    };
    let wrong = format!("sslrootcert={}", tls.file("wrong-ca.crt"));
    let right = format!("sslrootcert={}", tls.file("ca.crt"));
    for (host, query, says) in [
        (
            "localhost",
            format!("sslmode=verify-full&{wrong}"),
            "UnknownIssuer",
        ),
        (
            "127.0.0.1",
            format!("sslmode=verify-full&{right}"),
            "not valid for name",
        ),
        ("localhost", "sslmode=disable".to_owned(), "no encryption"),
        (
            "localhost",
            "sslmode=verify-full&sslrootcert=/nonexistent.pem".to_owned(),
            "/nonexistent.pem",
        ),
        (
            "localhost",
            "sslmode=sometimes".to_owned(),
            "sslmode=sometimes",
        ),
    ] {
        let stderr = start_up_error(&tls.on_database(&tls.database(host, &query)));
        assert!(
            stderr.contains("DATABASE_URL") && stderr.contains(says),
            "{query}: {stderr}"
        );
        let line = stderr
            .lines()
            .filter(|l| l.contains("DATABASE_URL"))
            .count();
        assert!(line >= 1, "{stderr}");
    }
    let redis = |ca: &str| {
        Options::default()
            .env("REDIS_URL", &tls.redis_url)
            .env("REDIS_CA_FILE", &tls.file(ca))
            .env("REDIS_KEY_PREFIX", &unique("tls"))
    };
    let stderr = start_up_error(&redis("wrong-ca.crt"));
    assert!(stderr.contains("REDIS_URL"), "{stderr}");
    let stderr = start_up_error(&redis("server.key"));
    assert!(stderr.contains("REDIS_CA_FILE"), "{stderr}");
    let plain = tls.redis_url.replacen("rediss://", "redis://", 1);
    let stderr = start_up_error(&redis("ca.crt").env("REDIS_URL", &plain));
    assert!(stderr.contains("REDIS_URL"), "{stderr}");
}

#[test]
fn redis_over_tls_with_a_private_ca_holds_limits_and_keys() {
    let Some(tls) = Tls::new("redis_over_tls_with_a_private_ca_holds_limits_and_keys") else {
        return;
    };
    // No database: the idempotency records live in Redis too.
    let options = Options::default()
        .env("REDIS_URL", &tls.redis_url)
        .env("REDIS_CA_FILE", &tls.file("ca.crt"))
        .env("REDIS_KEY_PREFIX", &unique("tls"));
    let server = Server::start(&options);
    let health = server.get("/health", None).json();
    assert_eq!(health["services"]["redis"]["status"], "up", "{health}");
    let key = unique("order");
    let paid = server.pay(ALICE, &key, &payment("6.00", "card"));
    paid.expect(201);
    assert!(paid.header("x-ratelimit-remaining").is_some(), "{paid:?}");
    let replay = server.pay(ALICE, &key, &payment("6.00", "card"));
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    let tampered = server.pay(ALICE, &key, &payment("7.00", "card"));
    tampered.expect(422);
    // The server connects with TLS or not at all: the port speaks nothing else.
    let port = tls
        .redis_url
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    let plain = Command::new("timeout")
        .args(["5", "redis-cli", "-h", "127.0.0.1", "-p", &port, "ping"])
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli runs");
    assert!(
        !String::from_utf8_lossy(&plain.stdout).contains("PONG"),
        "the TLS port answered plain text"
    );
}

/// https to the processor: `mock-processor` serving the test CA's `localhost` certificate, the
/// server trusting that CA with `PROCESSOR_CA_FILE`; a payment is charged over TLS. The server
/// trusting another CA cannot charge (502, the payment pending), and a CA file without a
/// certificate is a start-up error naming the setting.
#[test]
fn the_processor_over_https_with_a_private_ca() {
    let Some(tls) = Tls::new("the_processor_over_https_with_a_private_ca") else {
        return;
    };
    let port = crate::support::free_port();
    let (cert, key) = (tls.file("server.crt"), tls.file("server.key"));
    let processor = crate::processor::MockProcessor::start(
        port,
        &["--tls-cert", cert.as_str(), "--tls-key", key.as_str()],
    );
    let url = format!("https://localhost:{port}");
    let trusting = |ca: &str| {
        Options::default()
            .env("PROCESSOR_URL", &url)
            .env("PROCESSOR_CA_FILE", &tls.file(ca))
            .toml("[processor]\nattempt_timeout = \"500ms\"\nmax_attempts = 2\ntimeout = \"2s\"\n")
    };
    let charges = || https_charges(port, &tls.file("ca.crt"));
    let server = Server::start(&trusting("ca.crt"));
    server
        .pay(ALICE, &unique("order"), &payment("5.00", "card"))
        .expect(201);
    assert_eq!(charges(), 1, "charged over https");

    let distrusting = Server::start(&trusting("wrong-ca.crt"));
    let refused = distrusting.pay(ALICE, &unique("order"), &payment("5.00", "card"));
    assert_eq!(refused.status, 502, "{}", refused.body);
    assert_eq!(charges(), 1, "nothing charged without trust");
    drop(processor);

    let empty = std::env::temp_dir().join(format!("{}.pem", unique("empty")));
    std::fs::write(&empty, "not a certificate\n").expect("a file");
    let error = start_up_error(
        &Options::default()
            .env("PROCESSOR_URL", &url)
            .env("PROCESSOR_CA_FILE", &empty.display().to_string()),
    );
    let _ = std::fs::remove_file(&empty);
    assert!(error.contains("PROCESSOR_CA_FILE"), "{error}");
    assert_eq!(error.trim().lines().count(), 1, "{error}");
}

/// `GET /v1/stats` of an https `mock-processor` on `port`, trusting the CA in `ca`: its charges.
fn https_charges(port: u16, ca: &str) -> i64 {
    use http_body_util::{BodyExt, Empty};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let pem = std::fs::read(ca).expect("the CA");
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.expect("a certificate")).expect("a CA");
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .enable_http1()
            .build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build::<_, Empty<bytes::Bytes>>(connector);
        let uri: http::Uri = format!("https://localhost:{port}/v1/stats")
            .parse()
            .expect("a URI");
        let response = client.get(uri).await.expect("stats over https");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        let stats: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        stats["charges"].as_i64().expect("charges")
    })
}
