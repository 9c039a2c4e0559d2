//! The app in process: built from a TOML text on memory backends, or on Redis and PostgreSQL
//! with a schema and key prefix of its own; requests go through `tower::ServiceExt::oneshot`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use clap::Parser;
use payments_server::config::{ApiKey, Config, FileConfig};
use payments_server::{AppState, Server, app};
use tower::ServiceExt;

use crate::services;

pub(crate) use crate::reply::Reply;

pub(crate) use crate::fixtures::{ALICE, BOB, CAROL, payment, unique};

/// The services a test runs on, removed afterwards.
pub(crate) struct Services {
    /// PostgreSQL itself: what the test reads and cleans up through.
    pub(crate) database_url: String,
    /// What the server connects to, when not `database_url` (a pooler).
    server_database_url: Option<String>,
    /// Whether the server sends its statements unnamed (a pooler in transaction mode).
    unnamed_statements: bool,
    redis_url: String,
    pub(crate) schema: String,
    server: Option<Server>,
    /// Whether dropping these removes the schema and the keys (a second replica's do not).
    owns_data: bool,
}

impl Drop for Services {
    fn drop(&mut self) {
        // A runtime of its own: a test's runtime is shutting down around this drop.
        let (database, redis, schema) = (
            self.database_url.clone(),
            self.redis_url.clone(),
            self.schema.clone(),
        );
        let server = self.server.take();
        let owns_data = self.owns_data;
        let cleanup = std::thread::spawn(move || {
            runtime().block_on(async move {
                if let Some(server) = server {
                    server.shutdown().await;
                }
                if owns_data {
                    services::drop_schema(&database, &schema).await;
                    services::delete_keys(&redis, &schema).await;
                }
            })
        });
        let _ = cleanup.join();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// The app under test.
pub(crate) struct Api {
    router: Router,
    state: Arc<AppState>,
    pub(crate) services: Option<Services>,
}

fn keys() -> String {
    format!("{ALICE}:alice,{BOB}:bob,{CAROL}:carol")
}

impl Api {
    /// Memory backends, configured by the TOML `config`.
    pub(crate) fn memory(config: &str) -> Api {
        let file = FileConfig::parse(config).expect("a valid configuration");
        let keys = [
            ApiKey::new(ALICE, "alice"),
            ApiKey::new(BOB, "bob"),
            ApiKey::new(CAROL, "carol"),
        ];
        let state = AppState::in_memory(&file, &keys).expect("a state");
        Api {
            router: app(Arc::clone(&state)),
            state,
            services: None,
        }
    }

    /// Redis and PostgreSQL from `TEST_REDIS_URL` and `TEST_DATABASE_URL`, or `None` after
    /// printing why `test` is skipped.
    pub(crate) async fn services(test: &str, config: &str) -> Option<Api> {
        let (Some(redis_url), Some(database_url)) =
            (env("TEST_REDIS_URL"), env("TEST_DATABASE_URL"))
        else {
            eprintln!(
                "SKIPPED {test}: needs Redis and PostgreSQL; set TEST_REDIS_URL=redis://127.0.0.1:6379 and TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres to run it"
            );
            return None;
        };
        let schema = unique("tg_api");
        let services = Target {
            redis_url,
            database_url,
            server_database_url: None,
            unnamed_statements: false,
        };
        Some(Api::on_services(config, services, schema, true).await)
    }

    /// Like [`services`](Self::services), but the server reaches PostgreSQL through PgBouncer:
    /// in transaction mode (`TEST_PGBOUNCER_URL`, statements sent unnamed) or, with `session`,
    /// in session mode (`TEST_PGBOUNCER_SESSION_URL`, the defaults); `None` after printing why
    /// `test` is skipped.
    pub(crate) async fn through_pgbouncer(test: &str, config: &str, session: bool) -> Option<Api> {
        let variable = if session {
            "TEST_PGBOUNCER_SESSION_URL"
        } else {
            "TEST_PGBOUNCER_URL"
        };
        let (Some(redis_url), Some(database_url), Some(pooler)) = (
            env("TEST_REDIS_URL"),
            env("TEST_DATABASE_URL"),
            env(variable),
        ) else {
            eprintln!(
                "SKIPPED {test}: needs Redis, PostgreSQL and PgBouncer; run `eval \"$(.ci/pgbouncer)\"` (it sets {variable}) and set TEST_REDIS_URL and TEST_DATABASE_URL to run it"
            );
            return None;
        };
        let services = Target {
            redis_url,
            database_url,
            server_database_url: Some(pooler),
            unnamed_statements: !session,
        };
        Some(Api::on_services(config, services, unique("tg_api"), true).await)
    }

    /// Another replica of this app, on the same Redis keys and PostgreSQL schema (`None` on
    /// memory backends).
    pub(crate) async fn replica(&self, config: &str) -> Option<Api> {
        let services = self.services.as_ref()?;
        let target = Target {
            redis_url: services.redis_url.clone(),
            database_url: services.database_url.clone(),
            server_database_url: services.server_database_url.clone(),
            unnamed_statements: services.unnamed_statements,
        };
        Some(Api::on_services(config, target, services.schema.clone(), false).await)
    }

    async fn on_services(config: &str, target: Target, schema: String, owns_data: bool) -> Api {
        let Target {
            redis_url,
            database_url,
            server_database_url,
            unnamed_statements,
        } = target;
        let config = if unnamed_statements {
            without_prepared_statements(config)
        } else {
            config.to_owned()
        };
        let server_url = server_database_url
            .clone()
            .unwrap_or_else(|| database_url.clone());
        let path = std::env::temp_dir().join(format!("{}.toml", unique(&schema)));
        std::fs::write(&path, &config).expect("write the configuration");
        let path = path.to_string_lossy().into_owned();
        let args = [
            "payments-server",
            "--api-keys",
            &keys(),
            "--redis-url",
            &redis_url,
            "--database-url",
            &server_url,
            "--database-schema",
            &schema,
            "--redis-key-prefix",
            &schema,
            "--config",
            &path,
        ];
        let server = Server::build(&Config::parse_from(args)).await;
        let _ = std::fs::remove_file(&path);
        let server = server.unwrap_or_else(|e| panic!("the services are reachable: {e}"));
        Api {
            router: app(Arc::clone(&server.state)),
            state: Arc::clone(&server.state),
            services: Some(Services {
                database_url,
                server_database_url,
                unnamed_statements,
                redis_url,
                schema,
                server: Some(server),
                owns_data,
            }),
        }
    }

    /// Puts `config` in force as a SIGHUP would.
    pub(crate) fn reload(&self, config: &str) {
        let file = FileConfig::parse(config).expect("a valid configuration");
        self.state.reload(&file).expect("reloaded");
    }

    /// Sends `request` as if from 127.0.0.1.
    pub(crate) async fn send(&self, mut request: http::Request<Body>) -> Reply {
        let peer = SocketAddr::from(([127, 0, 0, 1], 40_000));
        request.extensions_mut().insert(ConnectInfo(peer));
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|never| match never {});
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX)
            .await
            .expect("a body");
        Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// `method path` with `headers` and `body`.
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Reply {
        let mut request = http::Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request.body(body.into()).expect("a request"))
            .await
    }

    /// `GET path`, as `key` if any.
    pub(crate) async fn get(&self, path: &str, key: Option<&str>) -> Reply {
        let auth = key.map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        self.call("GET", path, &headers, Body::empty()).await
    }

    /// `POST /api/v1/payments` as `key` with `idempotency_key`.
    pub(crate) async fn pay(&self, key: &str, idempotency_key: &str, body: &str) -> Reply {
        let auth = format!("Bearer {key}");
        let headers = [
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
            ("Idempotency-Key", idempotency_key),
        ];
        self.call("POST", "/api/v1/payments", &headers, body.to_owned())
            .await
    }

    /// One `bigint` from PostgreSQL (`{schema}` is this test's schema); `None` on memory.
    pub(crate) async fn count(&self, sql: &str) -> Option<i64> {
        let services = self.services.as_ref()?;
        Some(services::count(&services.database_url, &services.schema, sql).await)
    }
}

/// Where a test's services are.
struct Target {
    redis_url: String,
    database_url: String,
    server_database_url: Option<String>,
    unnamed_statements: bool,
}

/// `config` with `database.prepared_statements = false`, as a pooler in transaction mode
/// needs.
fn without_prepared_statements(config: &str) -> String {
    let setting = "prepared_statements = false\n";
    match config.find("[database]\n") {
        Some(at) => {
            let (head, rest) = config.split_at(at + "[database]\n".len());
            format!("{head}{setting}{rest}")
        }
        None => format!("{config}\n[database]\n{setting}"),
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Runs each named scenario `async fn name(api: &Api)` on memory backends, again on Redis and
/// PostgreSQL when their test URLs are set, and again with PostgreSQL behind PgBouncer in
/// transaction mode and in session mode when `.ci/pgbouncer`'s URLs are set: one test per
/// scenario and backend.
macro_rules! on_every_backend {
    ($config:expr; $($name:ident),+ $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let api = crate::support::Api::memory($config);
                    super::$name(&api).await;
                }
            )+
        }
        mod redis_and_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let test = concat!(module_path!(), "::", stringify!($name));
                    if let Some(api) = crate::support::Api::services(test, $config).await {
                        super::$name(&api).await;
                    }
                }
            )+
        }
        mod through_pgbouncer {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let test = concat!(module_path!(), "::", stringify!($name));
                    if let Some(api) = crate::support::Api::through_pgbouncer(test, $config, false).await {
                        super::$name(&api).await;
                    }
                }
            )+
        }
        mod through_pgbouncer_in_session_mode {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let test = concat!(module_path!(), "::", stringify!($name));
                    if let Some(api) = crate::support::Api::through_pgbouncer(test, $config, true).await {
                        super::$name(&api).await;
                    }
                }
            )+
        }
    };
}

pub(crate) use on_every_backend;
