//! [`RedisConnection`]: where a Tollgate crate's Redis commands go.

use std::fmt;

use redis::FromRedisValue;

use crate::Error;

/// One Redis for the Tollgate crates that keep state there. Built with `.into()` from a
/// [`deadpool_redis::Pool`], a [`redis::aio::ConnectionManager`], or (feature `cluster`) a
/// Redis Cluster connection; clones share the same connections, so one value can serve a rate
/// limiter and an idempotency store together.
#[derive(Clone)]
#[non_exhaustive]
pub enum RedisConnection {
    /// Connections from a pool to one Redis: standalone, or the primary of a replicated set.
    /// deadpool-redis checks each connection it hands out with a `PING`: a second round trip.
    Pool(deadpool_redis::Pool),
    /// One multiplexed connection to one Redis, shared by every caller (requests are
    /// pipelined on it) and re-established by itself after a failure: one round trip per
    /// call, no pool to size.
    Multiplexed(redis::aio::ConnectionManager),
    /// One multiplexed connection to a Redis Cluster: each script goes to the primary serving
    /// its keys' slot, and the connection follows redirections and failovers by itself.
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisConnection::Pool(pool) => f.debug_tuple("Pool").field(&pool.status()).finish(),
            RedisConnection::Multiplexed(_) => f.write_str("Multiplexed"),
            #[cfg(feature = "cluster")]
            RedisConnection::Cluster(_) => f.write_str("Cluster"),
        }
    }
}

impl From<deadpool_redis::Pool> for RedisConnection {
    fn from(pool: deadpool_redis::Pool) -> Self {
        RedisConnection::Pool(pool)
    }
}

impl From<redis::aio::ConnectionManager> for RedisConnection {
    fn from(connection: redis::aio::ConnectionManager) -> Self {
        RedisConnection::Multiplexed(connection)
    }
}

#[cfg(feature = "cluster")]
impl From<redis::cluster_async::ClusterConnection> for RedisConnection {
    fn from(connection: redis::cluster_async::ClusterConnection) -> Self {
        RedisConnection::Cluster(connection)
    }
}

impl RedisConnection {
    /// Whether keys of different hash slots must go in different scripts.
    pub fn is_cluster(&self) -> bool {
        match self {
            #[cfg(feature = "cluster")]
            RedisConnection::Cluster(_) => true,
            _ => false,
        }
    }

    /// Runs `script` (`EVALSHA`, loading it on `NOSCRIPT`).
    pub async fn invoke<T: FromRedisValue>(
        &self,
        script: &redis::ScriptInvocation<'_>,
    ) -> Result<T, Error> {
        match self {
            RedisConnection::Pool(pool) => {
                let mut conn = pool.get().await.map_err(pool_error)?;
                script.invoke_async(&mut *conn).await.map_err(redis_error)
            }
            RedisConnection::Multiplexed(connection) => {
                // Clones share the one connection.
                let mut conn = connection.clone();
                script.invoke_async(&mut conn).await.map_err(redis_error)
            }
            #[cfg(feature = "cluster")]
            RedisConnection::Cluster(connection) => {
                // Clones share one multiplexed connection per node.
                let mut conn = connection.clone();
                script.invoke_async(&mut conn).await.map_err(redis_error)
            }
        }
    }

    /// `PING`: one connection of the pool, or every node of the cluster.
    pub async fn ping(&self) -> Result<(), Error> {
        let ping = redis::cmd("PING");
        match self {
            RedisConnection::Pool(pool) => {
                let mut conn = pool.get().await.map_err(pool_error)?;
                ping.query_async::<String>(&mut *conn)
                    .await
                    .map_err(redis_error)?;
            }
            RedisConnection::Multiplexed(connection) => {
                let mut conn = connection.clone();
                ping.query_async::<String>(&mut conn)
                    .await
                    .map_err(redis_error)?;
            }
            #[cfg(feature = "cluster")]
            RedisConnection::Cluster(connection) => {
                let mut conn = connection.clone();
                ping.query_async::<String>(&mut conn)
                    .await
                    .map_err(redis_error)?;
            }
        }
        Ok(())
    }
}

/// No connection could be had from the pool: it may pass.
fn pool_error(error: deadpool_redis::PoolError) -> Error {
    Error::backend(error, true)
}

/// A connection that failed, timed out or was refused may pass; a script error will not.
fn redis_error(error: redis::RedisError) -> Error {
    let transient = error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_cluster_error();
    Error::backend(error, transient)
}
