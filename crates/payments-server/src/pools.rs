//! The connection pools to Redis and PostgreSQL, sized and bounded by `[redis]` and
//! `[database]`, over TLS when the URLs ask for it (see [`crate::tls`]).

use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod, Runtime};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::backends::{StartError, backend};
use crate::config::{Config, DatabaseTuning, RedisTuning};
use crate::tls::PgUrl;

/// The Redis pool, if `REDIS_URL` is set.
pub(crate) fn redis(
    config: &Config,
    tuning: &RedisTuning,
) -> Result<Option<deadpool_redis::Pool>, StartError> {
    let Some(url) = &config.redis_url else {
        return Ok(None);
    };
    let manager = match &config.redis_ca_file {
        None => deadpool_redis::Manager::new(url.as_str()),
        Some(path) => {
            let invalid = |e: String| StartError::Invalid(format!("REDIS_CA_FILE {e}"));
            let pem =
                std::fs::read(path).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
            crate::tls::certificates_in(&pem, path).map_err(invalid)?;
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            };
            // The pool's own configuration would drop the certificates: the manager is built
            // from the client's connection details, which keep them.
            redis::Client::build_with_tls(url.as_str(), certificates).and_then(|client| {
                deadpool_redis::Manager::new(client.get_connection_info().clone())
            })
        }
    }
    .map_err(|e| backend("REDIS_URL")(e.into()))?;
    let timeout = Some(tuning.pool_timeout);
    deadpool_redis::Pool::builder(manager)
        .max_size(tuning.pool_size)
        .wait_timeout(timeout)
        .create_timeout(timeout)
        .runtime(deadpool_redis::Runtime::Tokio1)
        .build()
        .map(Some)
        .map_err(|e| backend("REDIS_URL")(e.into()))
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
