//! Where the Redis store's commands go: a pool of connections to one Redis, or a Redis Cluster.

use std::fmt;

use redis::FromRedisValue;

use crate::Error;

/// The Redis a [`RedisStore`](super::RedisStore) keeps its records in. Built with `.into()`
/// from a [`deadpool_redis::Pool`], a [`redis::aio::ConnectionManager`], or (feature
/// `cluster`) a Redis Cluster connection.
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
    /// One multiplexed connection to a Redis Cluster. Every script touches one record, so it
    /// goes whole to the primary serving that record's slot.
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
    /// Runs `script` (`EVALSHA`, loading it on `NOSCRIPT`).
    pub(crate) async fn invoke<T: FromRedisValue>(
        &self,
        script: &redis::ScriptInvocation<'_>,
    ) -> Result<T, Error> {
        match self {
            RedisConnection::Pool(pool) => {
                let mut conn = pool.get().await.map_err(|e| Error::store(e, true))?;
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
}

fn redis_error(error: redis::RedisError) -> Error {
    let transient = error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_cluster_error();
    Error::store(error, transient)
}
