//! Where the Redis backend's commands go: a pool of connections to one Redis, or a Redis
//! Cluster.

use std::fmt;

use redis::FromRedisValue;

use crate::Error;

/// The Redis a [`RedisLimiter`](super::RedisLimiter) decides on. Built with `.into()` from a
/// [`deadpool_redis::Pool`], a [`redis::aio::ConnectionManager`], or (feature `cluster`) a
/// Redis Cluster connection.
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
    /// its keys' slot, and the connection follows redirections and failovers by itself. A
    /// decision whose keys fall in several slots is split per slot (see the
    /// [guide](crate::_guide#redis-cluster-and-atomicity)).
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
    /// Whether keys of different slots must go in different scripts.
    #[cfg(feature = "cluster")]
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, RedisConnection::Cluster(_))
    }

    /// Runs `script` (`EVALSHA`, loading it on `NOSCRIPT`).
    pub(crate) async fn invoke<T: FromRedisValue>(
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
    pub(crate) async fn ping(&self) -> Result<(), Error> {
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

fn pool_error(error: deadpool_redis::PoolError) -> Error {
    Error::backend(error, true)
}

fn redis_error(error: redis::RedisError) -> Error {
    let transient = error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_cluster_error();
    Error::backend(error, transient)
}
