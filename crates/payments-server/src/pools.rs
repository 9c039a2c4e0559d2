//! The connection pools to Redis and PostgreSQL, sized and bounded by `[redis]` and
//! `[database]`.

use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod, Runtime};

use crate::backends::{backend, StartError};
use crate::config::{Config, DatabaseTuning, RedisTuning};

/// The Redis pool, if `REDIS_URL` is set.
pub(crate) fn redis(
    config: &Config,
    tuning: &RedisTuning,
) -> Result<Option<deadpool_redis::Pool>, StartError> {
    let Some(url) = &config.redis_url else {
        return Ok(None);
    };
    let timeout = Some(tuning.pool_timeout);
    deadpool_redis::Config::from_url(url.as_str())
        .builder()
        .map_err(|e| backend("REDIS_URL")(e.into()))?
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
    let pg: tokio_postgres::Config = without_driver(url)
        .parse()
        .map_err(|e: tokio_postgres::Error| backend("DATABASE_URL")(e.into()))?;
    let manager = Manager::from_config(
        pg,
        tokio_postgres::NoTls,
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
