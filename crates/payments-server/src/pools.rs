//! The connections to Redis (a multiplexed connection, a pool, or a cluster) and the pool to
//! PostgreSQL, sized and bounded by `[redis]` and `[database]`, over TLS when the URLs ask for
//! it (see [`crate::tls`]).

use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod, Runtime};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{Config, DatabaseTuning, RedisConnectionKind, RedisTuning};
use crate::start_error::{StartError, backend};
use crate::tls::PgUrl;

/// The Redis the server talks to — one server through one multiplexed connection or a pool,
/// or a Redis Cluster through one multiplexed connection per node — as the limiter and the
/// idempotency store both take it (clones share the connections).
pub(crate) use tollgate_ratelimit::redis::RedisConnection as Redis;

/// The setting that named `redis`, for start-up errors.
pub(crate) fn setting(redis: &Redis) -> &'static str {
    if redis.is_cluster() {
        "REDIS_CLUSTER_URLS"
    } else {
        "REDIS_URL"
    }
}

/// The pool, whose use `/metrics` shows (the other connections have none).
pub(crate) fn redis_pool(redis: &Redis) -> Option<&deadpool_redis::Pool> {
    match redis {
        Redis::Pool(pool) => Some(pool),
        _ => None,
    }
}

/// What the log says the limits are kept in.
pub(crate) fn describe(redis: &Redis) -> &'static str {
    match redis {
        Redis::Pool(_) => "redis",
        Redis::Multiplexed(_) => "redis (multiplexed)",
        _ => "redis cluster",
    }
}

/// Redis, if `REDIS_URL` or `REDIS_CLUSTER_URLS` is set (not both).
pub(crate) async fn redis(
    config: &Config,
    tuning: &RedisTuning,
) -> Result<Option<Redis>, StartError> {
    match (&config.redis_url, &config.redis_cluster_urls) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(StartError::Invalid(
            "REDIS_URL and REDIS_CLUSTER_URLS are both set: set REDIS_URL for one Redis, \
             REDIS_CLUSTER_URLS for a Redis Cluster"
                .to_owned(),
        )),
        (Some(url), None) => match tuning.connection {
            RedisConnectionKind::Pool => pool(url, config, tuning).map(|p| Some(p.into())),
            RedisConnectionKind::Multiplexed => multiplexed(url, config, tuning)
                .await
                .map(|c| Some(c.into())),
        },
        (None, Some(urls)) => cluster(urls, config, tuning).await.map(|c| Some(c.into())),
    }
}

/// `REDIS_CA_FILE` as the client takes it, if set: checked to hold a certificate.
fn ca_certificates(config: &Config) -> Result<Option<redis::TlsCertificates>, StartError> {
    let Some(path) = &config.redis_ca_file else {
        return Ok(None);
    };
    let invalid = |e: String| StartError::Invalid(format!("REDIS_CA_FILE {e}"));
    let pem = std::fs::read(path).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    crate::tls::certificates_in(&pem, path).map_err(invalid)?;
    Ok(Some(redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    }))
}

fn pool(
    url: &str,
    config: &Config,
    tuning: &RedisTuning,
) -> Result<deadpool_redis::Pool, StartError> {
    let manager = match ca_certificates(config)? {
        None => deadpool_redis::Manager::new(url),
        // The pool's own configuration would drop the certificates: the manager is built from
        // the client's connection details, which keep them.
        Some(certificates) => redis::Client::build_with_tls(url, certificates)
            .and_then(|client| deadpool_redis::Manager::new(client.get_connection_info().clone())),
    }
    .map_err(|e| backend("REDIS_URL")(e.into()))?;
    let timeout = Some(tuning.pool_timeout);
    deadpool_redis::Pool::builder(manager)
        .max_size(tuning.pool_size)
        .wait_timeout(timeout)
        .create_timeout(timeout)
        .runtime(deadpool_redis::Runtime::Tokio1)
        .build()
        .map_err(|e| backend("REDIS_URL")(e.into()))
}

/// Opens the one multiplexed connection (an unreachable Redis is a start-up error); it then
/// re-connects by itself, and a call made meanwhile fails at once rather than waiting.
async fn multiplexed(
    url: &str,
    config: &Config,
    tuning: &RedisTuning,
) -> Result<redis::aio::ConnectionManager, StartError> {
    let client = match ca_certificates(config)? {
        None => redis::Client::open(url),
        Some(certificates) => redis::Client::build_with_tls(url, certificates),
    }
    .map_err(|e| backend("REDIS_URL")(e.into()))?;
    // The limiter stops a decision at rate_limit.redis_timeout itself; the idempotency store's
    // calls stop at pool_timeout, as the pool's checkouts do.
    let settings = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(tuning.pool_timeout))
        .set_response_timeout(Some(tuning.pool_timeout))
        .set_number_of_retries(1);
    redis::aio::ConnectionManager::new_with_config(client, settings)
        .await
        .map_err(|e| backend("REDIS_URL")(e.into()))
}

/// Connects to the cluster through its seed nodes and learns its slots; an unreachable or
/// misconfigured cluster is a start-up error. The connection then follows redirections and
/// failovers by itself.
async fn cluster(
    urls: &str,
    config: &Config,
    tuning: &RedisTuning,
) -> Result<redis::cluster_async::ClusterConnection, StartError> {
    let invalid = |e: String| StartError::Invalid(format!("REDIS_CLUSTER_URLS: {e}"));
    let nodes: Vec<&str> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    if nodes.is_empty() {
        return Err(invalid(
            "no seed node (comma-separated redis:// URLs)".to_owned(),
        ));
    }
    if let Some(node) = nodes
        .iter()
        .find(|n| !(n.starts_with("redis://") || n.starts_with("rediss://")))
    {
        return Err(invalid(format!(
            "{node:?} is not a redis:// or rediss:// URL"
        )));
    }
    let mut builder = redis::cluster::ClusterClientBuilder::new(nodes)
        .connection_timeout(tuning.pool_timeout)
        .response_timeout(tuning.pool_timeout);
    if let Some(certificates) = ca_certificates(config)? {
        builder = builder.certs(certificates);
    }
    let client = builder
        .build()
        .map_err(|e| backend("REDIS_CLUSTER_URLS")(e.into()))?;
    // Each seed gets the connection timeout; give up on the whole list after a few.
    match tokio::time::timeout(tuning.pool_timeout * 3, client.get_async_connection()).await {
        Ok(connected) => connected.map_err(|e| backend("REDIS_CLUSTER_URLS")(e.into())),
        Err(_) => Err(backend("REDIS_CLUSTER_URLS")(
            format!("no seed node answered within {:?}", tuning.pool_timeout * 3).into(),
        )),
    }
}

/// `error` (a failure's rendered chain) with what to change when it is one configuration
/// fixes: PostgreSQL refusing a prepared statement is a pooler in transaction mode handing
/// the statement's execution to another server connection.
pub(crate) fn explained(error: String) -> String {
    if error.contains("prepared statement") && error.contains("does not exist") {
        format!(
            "{error} (PostgreSQL is reached through a pooler in transaction mode: set \
             database.prepared_statements = false)"
        )
    } else {
        error
    }
}

/// The PostgreSQL pool, if `DATABASE_URL` is set.
pub(crate) fn postgres(
    config: &Config,
    tuning: &DatabaseTuning,
) -> Result<Option<deadpool_postgres::Pool>, StartError> {
    let Some(url) = &config.database_url else {
        return Ok(None);
    };
    let url = PgUrl::parse(&without_driver(url))
        .map_err(|e| StartError::Invalid(format!("DATABASE_URL: {e}")))?;
    let mut pg: tokio_postgres::Config = url
        .rest
        .parse()
        .map_err(|e: tokio_postgres::Error| backend("DATABASE_URL")(e.into()))?;
    pg.ssl_mode(url.mode.negotiation());
    let tls = url
        .client_config()
        .map_err(|e| StartError::Invalid(format!("DATABASE_URL: {e}")))?;
    let manager = Manager::from_config(
        pg,
        MakeRustlsConnect::new(tls),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let timeout = Some(tuning.pool_timeout);
    deadpool_postgres::Pool::builder(manager)
        .max_size(tuning.pool_size)
        .wait_timeout(timeout)
        .create_timeout(timeout)
        .runtime(Runtime::Tokio1)
        .build()
        .map(Some)
        .map_err(|e| backend("DATABASE_URL")(e.into()))
}

/// `url` without the driver part of a driver-style scheme (`postgresql+asyncpg://…`, as
/// Python's SQLAlchemy writes them), which names a client library, not a server: said once in
/// the log, then ignored.
fn without_driver(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match scheme.split_once('+') {
        Some((base @ ("postgres" | "postgresql"), driver)) => {
            tracing::info!(
                driver,
                "DATABASE_URL names a driver ({scheme}://); it is ignored, the server connects \
                 with its own"
            );
            format!("{base}://{rest}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_prepared_statement_names_the_setting() {
        let lost = r#"db error: ERROR: prepared statement "s9" does not exist"#.to_owned();
        assert!(explained(lost).contains("database.prepared_statements = false"));
        assert_eq!(explained("timeout".to_owned()), "timeout");
    }

    #[test]
    fn driver_style_urls_lose_the_driver() {
        assert_eq!(
            without_driver("postgresql+asyncpg://user:pass@localhost/payments"),
            "postgresql://user:pass@localhost/payments"
        );
        assert_eq!(
            without_driver("postgres+psycopg2://h/db?sslmode=require"),
            "postgres://h/db?sslmode=require"
        );
        assert_eq!(without_driver("postgres://h/db"), "postgres://h/db");
        assert_eq!(
            without_driver("mysql+pymysql://h/db"),
            "mysql+pymysql://h/db"
        );
        assert_eq!(without_driver("host=/tmp user=me"), "host=/tmp user=me");
        let parsed: tokio_postgres::Config =
            without_driver("postgresql+asyncpg://user:pass@localhost/payments")
                .parse()
                .expect("a URL tokio-postgres reads");
        assert_eq!(parsed.get_dbname(), Some("payments"));
    }
}
