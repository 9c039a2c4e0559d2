//! PostgreSQL only: the completion commits or rolls back with the caller's payment row.

use tollgate_idempotency::store::{Claim, IdempotencyStore};

use crate::support::{fingerprint, pg, response, scope, OPTIONS};

#[tokio::test]
async fn completion_commits_with_the_payment_row() {
    let Some((url, schema)) = pg::database("pg_only::completion_commits_with_the_payment_row")
    else {
        return;
    };
    let store = pg::store(&url, &schema, None).await;
    let pool = pg::pool(&url);
    let mut client = pool.get().await.expect("database");
    client
        .batch_execute(&format!(
            "CREATE TABLE {schema}.payments (id text PRIMARY KEY)"
        ))
        .await
        .expect("payments table");
    let s = scope("alice", "txn-key-0123456789ab");
    let fp = fingerprint(r#"{"amount":"1.00"}"#);
    let Claim::Acquired(lease) = store.claim(&s, &fp, OPTIONS).await.expect("claim") else {
        panic!("fresh key");
    };

    // A crash between the payment and the completion cannot happen: they are one transaction.
    let tx = client.transaction().await.expect("begin");
    tx.execute(
        &format!("INSERT INTO {schema}.payments VALUES ('txn_1')"),
        &[],
    )
    .await
    .expect("row");
    store
        .complete_in(&tx, &s, lease.fence, &response("txn_1"), OPTIONS.ttl)
        .await
        .expect("complete");
    tx.rollback().await.expect("rollback");
    assert!(matches!(
        store.claim(&s, &fp, OPTIONS).await.expect("claim"),
        Claim::InProgress { .. }
    ));

    let tx = client.transaction().await.expect("begin");
    tx.execute(
        &format!("INSERT INTO {schema}.payments VALUES ('txn_1')"),
        &[],
    )
    .await
    .expect("row");
    store
        .complete_in(&tx, &s, lease.fence, &response("txn_1"), OPTIONS.ttl)
        .await
        .expect("complete");
    tx.commit().await.expect("commit");
    assert_eq!(
        store.claim(&s, &fp, OPTIONS).await.expect("claim"),
        Claim::Completed(response("txn_1"))
    );
    drop(client);
    pg::drop_schema(&url, &schema).await;
}
