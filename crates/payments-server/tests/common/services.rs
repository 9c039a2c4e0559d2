//! What both server suites do to the real services: count rows in a test's schema, and remove
//! a test's schema and Redis keys afterwards.

/// One `bigint` from `sql`, with `{schema}` replaced by `schema`.
pub(crate) async fn count(database_url: &str, schema: &str, sql: &str) -> i64 {
    let sql = sql.replace("{schema}", schema);
    let (client, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL is reachable");
    tokio::spawn(connection);
    let row = client.query_typed_one(&sql, &[]).await.expect("a query");
    row.get::<_, i64>(0)
}

/// Drops `schema`, if PostgreSQL answers.
pub(crate) async fn drop_schema(database_url: &str, schema: &str) {
    if let Ok((client, connection)) =
        tokio_postgres::connect(database_url, tokio_postgres::NoTls).await
    {
        tokio::spawn(connection);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await;
    }
}

/// Deletes the Redis keys under `prefix`, if Redis answers.
pub(crate) async fn delete_keys(redis_url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(redis_url) else {
        return;
    };
    if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
        }
    }
}
