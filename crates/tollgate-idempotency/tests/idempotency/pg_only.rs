//! PostgreSQL only: the completion commits or rolls back with the caller's payment row.

use tollgate_idempotency::Scope;
use tollgate_idempotency::postgres::PostgresStore;
use tollgate_idempotency::store::{Claim, IdempotencyStore};

use crate::support::{OPTIONS, fingerprint, pg, response, scope};

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

/// The completion composed into the caller's own statement: one round trip, and the caller's
/// writes happen only if the fence still owns the key.
#[tokio::test]
async fn completion_composes_into_one_statement() {
    let Some((url, schema)) = pg::database("pg_only::completion_composes_into_one_statement")
    else {
        return;
    };
    let store = pg::store(&url, &schema, None).await;
    let pool = pg::pool(&url);
    let client = pool.get().await.expect("database");
    client
        .batch_execute(&format!(
            "CREATE TABLE {schema}.payments (id text PRIMARY KEY)"
        ))
        .await
        .expect("payments table");
    let sql = format!(
        "WITH c AS ({}) INSERT INTO {schema}.payments SELECT $10 WHERE EXISTS (SELECT 1 FROM c)",
        store.completion_statement()
    );
    let s = scope("alice", "txn-key-0123456789cd");
    let fp = fingerprint(r#"{"amount":"2.00"}"#);
    let Claim::Acquired(lease) = store.claim(&s, &fp, OPTIONS).await.expect("claim") else {
        panic!("fresh key");
    };
    let stored = response("txn_2");
    for (fence, written) in [(lease.fence + 1, 0), (lease.fence, 1)] {
        // A stale fence writes nothing at all; the owner's writes both rows.
        let params = store.completion_params(&s, fence, &stored, OPTIONS.ttl);
        let mut all = params.as_params().to_vec();
        let id = format!("txn_fence_{fence}");
        all.push(&id);
        let rows = client.execute(sql.as_str(), &all).await.expect("statement");
        assert_eq!(rows, written, "fence {fence}");
    }
    assert_eq!(
        store.claim(&s, &fp, OPTIONS).await.expect("claim"),
        Claim::Completed(stored.clone())
    );
    let rows: i64 = client
        .query_one(&format!("SELECT count(*) FROM {schema}.payments"), &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 1);
    drop(client);
    pg::drop_schema(&url, &schema).await;
}

/// The claim of a key never seen, composed with the caller's first write: both commit in one
/// statement, a key with a record writes neither, and the lease it grants completes as usual.
#[tokio::test]
async fn a_fresh_claim_composes_with_the_first_write() {
    let Some((url, schema)) = pg::database("pg_only::a_fresh_claim_composes_with_the_first_write")
    else {
        return;
    };
    let store = pg::store(&url, &schema, None).await;
    let pool = pg::pool(&url);
    let client = pool.get().await.expect("database");
    client
        .batch_execute(&format!(
            "CREATE TABLE {schema}.payments (id text PRIMARY KEY)"
        ))
        .await
        .expect("payments table");
    let sql = format!(
        "WITH c AS ({}), p AS (INSERT INTO {schema}.payments SELECT $8::text WHERE EXISTS (SELECT 1 FROM c)) \
         SELECT fence FROM c",
        store.claim_statement()
    );
    let s = scope("alice", "txn-key-0123456789ef");
    let fp = fingerprint(r#"{"amount":"3.00"}"#);
    let mut fences = Vec::new();
    for id in ["txn_first", "txn_second"] {
        let params = store.claim_params(&s, &fp, OPTIONS);
        let mut all = params.as_params().to_vec();
        all.push(&id);
        let row = client
            .query_opt(sql.as_str(), &all)
            .await
            .expect("statement");
        fences.push(row.map(|row| row.get::<_, i64>(0)));
    }
    assert!(fences[0].is_some(), "the fresh key is claimed");
    assert_eq!(fences[1], None, "a key with a record is not");
    let rows: Vec<String> = client
        .query(&format!("SELECT id FROM {schema}.payments"), &[])
        .await
        .expect("rows")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(rows, ["txn_first"], "only the claim's own write");
    assert!(matches!(
        store.claim(&s, &fp, OPTIONS).await.expect("claim"),
        Claim::InProgress { .. }
    ));
    let fence = u64::try_from(fences[0].unwrap_or_default()).expect("a fence");
    store
        .complete(&s, fence, &response("txn_first"), OPTIONS.ttl)
        .await
        .expect("the lease completes");
    assert_eq!(
        store.claim(&s, &fp, OPTIONS).await.expect("claim"),
        Claim::Completed(response("txn_first"))
    );
    drop(client);
    pg::drop_schema(&url, &schema).await;
}

/// The claims of `scopes` in one statement: the key and fence of each key it claimed, by key.
async fn claim_many(
    client: &tollgate_idempotency::postgres::tokio_postgres::Client,
    schema: &str,
    scopes: &[&Scope],
    fp: &tollgate_idempotency::fingerprint::Fingerprint,
) -> Vec<(String, i64)> {
    let claim = PostgresStore::claim_many_statement_in(
        schema,
        "unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) AS i(u, o, k, f)",
        &[
            "i.u",
            "i.o",
            "i.k",
            "i.f",
            "30000",
            "86400000",
            "NULL::timestamptz",
        ],
    )
    .expect("a statement");
    let users: Vec<&str> = scopes.iter().map(|s| s.user()).collect();
    let operations: Vec<&str> = scopes.iter().map(|s| s.operation()).collect();
    let keys: Vec<String> = scopes.iter().map(|s| s.key().to_string()).collect();
    let prints = vec![fp.as_bytes().as_slice(); scopes.len()];
    let claimed = client
        .query(&claim, &[&users, &operations, &keys, &prints])
        .await
        .expect("claimed");
    let mut fences: Vec<(String, i64)> = claimed
        .iter()
        .map(|row| (row.get::<_, String>(2), row.get::<_, i64>(3)))
        .collect();
    fences.sort();
    fences
}

/// The completions of `leases` (a scope and a fence) in one statement, storing `201 {}`: the
/// keys it completed.
async fn complete_many(
    client: &tollgate_idempotency::postgres::tokio_postgres::Client,
    schema: &str,
    leases: &[(&Scope, i64)],
) -> Vec<String> {
    let complete = PostgresStore::completion_many_statement_in(
        schema,
        "unnest($1::text[], $2::text[], $3::text[], $4::int8[]) AS i(u, o, k, fence)",
        &[
            "i.u",
            "i.o",
            "i.k",
            "i.fence",
            "201",
            "'[]'::jsonb",
            "'\\x7b7d'::bytea",
            "86400000",
            "NULL::timestamptz",
        ],
    )
    .expect("a statement");
    let users: Vec<&str> = leases.iter().map(|(s, _)| s.user()).collect();
    let operations: Vec<&str> = leases.iter().map(|(s, _)| s.operation()).collect();
    let keys: Vec<String> = leases.iter().map(|(s, _)| s.key().to_string()).collect();
    let fences: Vec<i64> = leases.iter().map(|(_, fence)| *fence).collect();
    let completed = client
        .query(&complete, &[&users, &operations, &keys, &fences])
        .await
        .expect("completed");
    completed.iter().map(|row| row.get(2)).collect()
}

/// The claims of many keys in one statement, then their completions in another: fresh keys are
/// claimed, a key with a record and a key's second row are not; a lease whose fence is stale
/// completes nothing. Each key's outcome is the one its own statement would have had.
#[tokio::test]
async fn many_keys_claim_and_complete_in_one_statement_each() {
    let Some((url, schema)) =
        pg::database("pg_only::many_keys_claim_and_complete_in_one_statement_each")
    else {
        return;
    };
    let store = pg::store(&url, &schema, None).await;
    let fp = fingerprint(r#"{"amount":"4.00"}"#);
    let taken = scope("alice", "many-taken-0123456789");
    assert!(matches!(
        store.claim(&taken, &fp, OPTIONS).await.expect("claim"),
        Claim::Acquired(_)
    ));
    let (first, second) = (
        scope("alice", "many-first-0123456789"),
        scope("bob", "many-second-0123456789"),
    );
    let client = pg::pool(&url).get().await.expect("database");
    let fences = claim_many(&client, &schema, &[&taken, &first, &second, &first], &fp).await;
    let claimed: Vec<&str> = fences.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(
        claimed,
        ["many-first-0123456789", "many-second-0123456789"],
        "the fresh keys, once each"
    );

    // The first with its own fence, the second with a fence that is not its record's.
    let leases = [(&first, fences[0].1), (&second, fences[1].1 + 1000)];
    let completed = complete_many(&client, &schema, &leases).await;
    assert_eq!(
        completed,
        [first.key().to_string()],
        "only the live owner's"
    );
    let replay = store.claim(&first, &fp, OPTIONS).await.expect("claim");
    assert!(
        matches!(&replay, Claim::Completed(r) if r.status == 201 && &r.body[..] == b"{}"),
        "{replay:?}"
    );
    assert!(matches!(
        store.claim(&second, &fp, OPTIONS).await.expect("claim"),
        Claim::InProgress { .. }
    ));
    drop(client);
    pg::drop_schema(&url, &schema).await;
}
