//! Starting server processes and talking HTTP/1.1 to them over real sockets.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::services;

pub(crate) use crate::fixtures::{ALICE, BOB, CAROL, payment, unique};

/// A server process, stopped (SIGKILL) when dropped.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) port: u16,
    _config: TempFile,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A file removed when dropped.
pub(crate) struct TempFile(pub(crate) std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// How to start a server.
#[derive(Clone, Debug, Default)]
pub(crate) struct Options {
    /// Extra environment variables.
    pub(crate) env: Vec<(String, String)>,
    /// The TOML file's text, if any.
    pub(crate) toml: Option<String>,
    /// Keep the default development mode (no API_KEYS).
    pub(crate) development: bool,
    /// The server's open-files limit (soft and hard), set with `prlimit`.
    pub(crate) open_files: Option<u64>,
    /// A hard open-files limit above `open_files`' soft one.
    pub(crate) open_files_hard: Option<u64>,
    /// Where the server's log (its standard output) goes; nowhere when unset.
    pub(crate) log: Option<std::path::PathBuf>,
}

impl Options {
    pub(crate) fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    pub(crate) fn toml(mut self, text: &str) -> Self {
        self.toml = Some(text.to_owned());
        self
    }
}

/// `toml` without the pre-drain at SIGTERM, unless the test sets one: no load balancer
/// watches these servers, and each test stops its servers with SIGTERM.
fn quick_stop(toml: Option<&str>) -> String {
    let text = toml.unwrap_or_default();
    if text.contains("pre_drain") {
        return text.to_owned();
    }
    let setting = "\npre_drain = \"0s\"\n";
    match text.find("[timeouts]") {
        Some(at) => {
            let (head, rest) = text.split_at(at + "[timeouts]".len());
            format!("{head}{setting}{rest}")
        }
        None => format!("{text}\n[timeouts]{setting}"),
    }
}

/// The workspace binary `name` (`mock-processor`, `tollgate-load`), built beside this test by
/// `cargo test --workspace`.
pub(crate) fn workspace_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    // target/<profile>/deps/server-<hash> → target/<profile>/<name>
    let path = (exe.parent().and_then(|deps| deps.parent()))
        .map(|profile| profile.join(name))
        .expect("a target directory");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p {name}` (or `cargo test --workspace`, which builds it)",
        path.display()
    );
    path
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Server {
    /// Starts a server and waits until it listens.
    pub(crate) fn start(options: &Options) -> Server {
        let mut server = Server::spawn(options);
        server.wait_until_listening();
        server
    }

    /// Waits until the server listens; panics if it exits first or takes over 30 s.
    pub(crate) fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                panic!("the server exited at start-up: {status}: {stderr}");
            }
            assert!(
                Instant::now() < deadline,
                "the server did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Replaces the server's configuration file with `toml` (what a reload then reads).
    pub(crate) fn rewrite_config(&self, toml: &str) {
        std::fs::write(&self._config.0, quick_stop(Some(toml))).expect("rewrite the config");
    }

    /// Sends SIGTERM and waits (10 s at most) for a clean exit: requests drained, audit
    /// flushed.
    pub(crate) fn terminate(&mut self) {
        self.signal("TERM");
        let status = self.exit_status();
        assert!(status.success(), "{status}");
    }

    /// Sends `signal` (`TERM`, `INT`, …).
    pub(crate) fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -{signal}");
    }

    /// Waits up to 10 s for the server to exit, and says how.
    pub(crate) fn exit_status(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running 10 s after the signal"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a server without waiting for it.
    pub(crate) fn spawn(options: &Options) -> Server {
        let port = free_port();
        let binary = env!("CARGO_BIN_EXE_payments-server");
        let mut command = match options.open_files {
            // prlimit sets the limit and execs the server: the same process.
            Some(files) => {
                let mut command = Command::new("prlimit");
                let hard = options.open_files_hard.unwrap_or(files);
                command.arg(format!("--nofile={files}:{hard}")).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("LOG_LEVEL", "warn")
            .env_remove("API_KEY")
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .env_remove("REDIS_CLUSTER_URLS")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_TRACES_EXPORTER")
            .env_remove("TOLLGATE_CONFIG")
            .env_remove("TOLLGATE_DEV")
            .stderr(Stdio::piped());
        match &options.log {
            Some(path) => command.stdout(std::fs::File::create(path).expect("the log file")),
            None => command.stdout(Stdio::null()),
        };
        if options.development {
            command.env_remove("API_KEYS");
        } else {
            command.env("API_KEYS", format!("{ALICE}:alice,{BOB}:bob,{CAROL}:carol"));
        }
        let path = std::env::temp_dir().join(format!("{}.toml", unique("tollgate")));
        std::fs::write(&path, quick_stop(options.toml.as_deref())).expect("write the config");
        command.env("TOLLGATE_CONFIG", &path);
        let config = TempFile(path);
        // The tests use the testing features (test payment methods, simulate-concurrent)
        // unless they say otherwise.
        command.env("TOLLGATE_TESTING", "true");
        command.envs(options.env.iter().map(|(k, v)| (k, v)));
        let child = command.spawn().expect("the server starts");
        Server {
            child,
            port,
            _config: config,
        }
    }

    pub(crate) fn get(&self, path: &str, key: Option<&str>) -> Response {
        let auth = key.map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        send(self.port, "GET", path, &headers, "")
            .unwrap_or_else(|| panic!("no answer to GET {path}"))
    }

    /// Pays as `user` and asks `/health` until it says `ok` (10 s at most), as a backend comes
    /// back; the last `/health`.
    pub(crate) fn until_healthy(&self, user: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.pay(user, &unique("order"), &payment("1.00", "card"));
            let health = self.get("/health", None).json();
            if health["status"] == "ok" || Instant::now() > deadline {
                return health;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `POST /api/v1/payments` as `key` with `idempotency_key`.
    pub(crate) fn pay(&self, key: &str, idempotency_key: &str, body: &str) -> Response {
        try_pay(self.port, key, idempotency_key, body)
            .unwrap_or_else(|| panic!("no answer to a payment"))
    }
}

pub(crate) use crate::reply::Reply as Response;

/// One request with a real HTTP client (ureq), or `None` if the connection was refused or
/// closed unanswered (a server being killed or shutting down).
pub(crate) fn send(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<Response> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(body.to_owned()).expect("a request");
    let mut response = agent.run(request).ok()?;
    Some(Response {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.body_mut().read_to_string().ok()?,
    })
}

/// `POST /api/v1/payments`, or `None` if the connection was refused or closed unanswered.
pub(crate) fn try_pay(port: u16, key: &str, idempotency_key: &str, body: &str) -> Option<Response> {
    try_pay_with(port, key, idempotency_key, body, &[])
}

/// [`try_pay`] with more headers (a `traceparent`, say).
pub(crate) fn try_pay_with(
    port: u16,
    key: &str,
    idempotency_key: &str,
    body: &str,
    more: &[(&str, &str)],
) -> Option<Response> {
    let auth = format!("Bearer {key}");
    let mut headers = vec![
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
        ("Idempotency-Key", idempotency_key),
    ];
    headers.extend_from_slice(more);
    send(port, "POST", "/api/v1/payments", &headers, body)
}

/// The series of the limiter's decisions taken by the local fallback, in `/metrics`.
pub(crate) const LOCAL_FALLBACK: &str =
    "rate_limiter_degraded_decisions_total{mode=\"local_fallback\"}";

/// The value of the sample `series` (name and labels, as exposed) in a `/metrics` text.
pub(crate) fn sample(metrics: &str, series: &str) -> Option<u64> {
    metrics
        .lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

/// The service URLs, or `None` after printing why the test is skipped.
pub(crate) fn services(test: &str) -> Option<(String, String)> {
    let redis = std::env::var("TEST_REDIS_URL")
        .ok()
        .filter(|v| !v.is_empty());
    let database = std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty());
    match (redis, database) {
        (Some(redis), Some(database)) => Some((redis, database)),
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: needs Redis and PostgreSQL; set TEST_REDIS_URL=redis://127.0.0.1:6379 and TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres to run it"
            );
            None
        }
    }
}

/// A schema and Redis prefix of one test, dropped and deleted afterwards.
pub(crate) struct Isolated {
    pub(crate) redis_url: String,
    pub(crate) database_url: String,
    pub(crate) schema: String,
    pub(crate) prefix: String,
}

impl Isolated {
    pub(crate) fn new(test: &str) -> Option<Isolated> {
        let (redis_url, database_url) = services(test)?;
        let schema = unique("tg_server");
        Some(Isolated {
            redis_url,
            database_url,
            prefix: schema.clone(),
            schema,
        })
    }

    /// Options that put a server on these services.
    pub(crate) fn options(&self) -> Options {
        Options::default()
            .env("REDIS_URL", &self.redis_url)
            .env("DATABASE_URL", &self.database_url)
            .env("DATABASE_SCHEMA", &self.schema)
            .env("REDIS_KEY_PREFIX", &self.prefix)
    }

    /// Runs SQL statements (`{schema}` is this test's schema).
    pub(crate) fn execute(&self, sql: &str) {
        runtime().block_on(execute(&self.database_url, &self.schema, sql));
    }

    /// Runs one SQL query returning one `bigint`.
    pub(crate) fn count(&self, sql: &str) -> i64 {
        runtime().block_on(services::count(&self.database_url, &self.schema, sql))
    }
}

/// A runtime for one blocking call into an async client (a test is synchronous).
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

impl Drop for Isolated {
    fn drop(&mut self) {
        runtime().block_on(async {
            services::drop_schema(&self.database_url, &self.schema).await;
            services::delete_keys(&self.redis_url, &self.prefix).await;
        });
    }
}

/// A TCP proxy to a service, that a test can cut (every connection dropped, new ones refused)
/// and restore: an outage without touching the shared service.
pub(crate) struct Proxy {
    pub(crate) port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    pub(crate) fn to(target: &str) -> Proxy {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let up = Arc::new(AtomicBool::new(true));
        let target = target.to_owned();
        let flag = Arc::clone(&up);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused in effect
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ] {
                    let (Ok(mut from), Ok(mut to)) = (from, to) else {
                        continue;
                    };
                    let flag = Arc::clone(&flag);
                    std::thread::spawn(move || {
                        let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
                        let mut buffer = [0_u8; 16 * 1024];
                        loop {
                            if !flag.load(Ordering::SeqCst) {
                                break;
                            }
                            match from.read(&mut buffer) {
                                Ok(0) => break,
                                Ok(n) => {
                                    if to.write_all(&buffer[..n]).is_err() {
                                        break;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => break,
                            }
                        }
                        let _ = from.shutdown(std::net::Shutdown::Both);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, up }
    }

    /// Drops every connection and refuses new ones until [`restore`](Self::restore).
    pub(crate) fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        // The relay threads notice within their 50 ms read timeout.
        std::thread::sleep(Duration::from_millis(200));
    }

    pub(crate) fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Runs `sql` (several statements), with `{schema}` replaced by `schema`.
async fn execute(database_url: &str, schema: &str, sql: &str) {
    let sql = sql.replace("{schema}", schema);
    let (client, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL is reachable");
    tokio::spawn(connection);
    client
        .batch_execute(&sql)
        .await
        .expect("the statements run");
}
