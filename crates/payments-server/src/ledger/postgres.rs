//! Payments in PostgreSQL.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio_postgres::types::{ToSql, Type};
use tollgate_audit::AuditEvent;
use tollgate_audit::postgres::{EventParams, PostgresAuditLog};
use tollgate_backend::group_commit::{Batched, GroupCommit, GroupCommitConfig};
use tollgate_backend::postgres::{On, Query, StatementMode};
use tollgate_idempotency::postgres::{ClaimParams, PostgresStore};

use super::{BoxError, Completion, Finished, Ledger, LedgerError, sql};
use crate::metrics::{BackendLatency, Timer};
use crate::payment::{Metadata, Payment, Status};

/// Payments in PostgreSQL, in a schema already migrated (see [`sql::MIGRATE`]).
pub(crate) struct PostgresLedger {
    pool: deadpool_postgres::Pool,
    /// The pending row and its `payment_started` event: one statement.
    insert_pending: Query,
    /// The claim of a fresh key, the pending row and its event: one statement (and one for a
    /// whole batch).
    claim_pending: Arc<Batched>,
    /// The idempotency completion, the final status and the audit event: one statement, whose
    /// writes all happen only if the lease's fence still owns the key (and one for a batch).
    finish: Arc<Batched>,
    /// The two writes above of concurrent requests, in shared transactions, one statement for
    /// each write's callers; `None`: each alone.
    group: Option<GroupCommit>,
    find: Query,
    find_by_key: Query,
    mode: StatementMode,
    idempotency: Arc<PostgresStore>,
    timers: Timers,
}

/// The series of each statement in `backend_call_duration_seconds`.
struct Timers {
    claim_with_pending: Timer,
    insert_pending: Timer,
    finish: Timer,
    find: Timer,
    find_by_key: Timer,
}

impl Timers {
    fn new(latency: &BackendLatency) -> Self {
        let call = |name| latency.call("postgres", name);
        Timers {
            claim_with_pending: call("payment_claim_with_pending"),
            insert_pending: call("payment_insert_pending"),
            finish: call("payment_finish"),
            find: call("payment_find"),
            find_by_key: call("payment_find_by_key"),
        }
    }
}

impl fmt::Debug for PostgresLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresLedger")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl PostgresLedger {
    /// The ledger on `schema`, writing each payment's two statements with `idempotency`'s
    /// completion and `audit`'s insert composed into them, grouped as `group` says.
    pub(crate) fn new(
        pool: deadpool_postgres::Pool,
        schema: &str,
        idempotency: Arc<PostgresStore>,
        audit: &PostgresAuditLog,
        latency: &BackendLatency,
        (mode, group): (StatementMode, Option<GroupCommitConfig>),
    ) -> Result<Self, BoxError> {
        // Each write is one statement (atomic on its own): the database does a third of the
        // work of BEGIN, separate statements and COMMIT, which the load test showed to be the
        // bottleneck (PostgreSQL's backends held most of the CPU). Sent unnamed, each would be
        // planned at every call: the migration's functions plan them once per connection.
        let composed = sql::Writes::new(schema)?;
        let writes = match mode {
            StatementMode::Unnamed => composed.as_functions(schema)?.1,
            _ => composed,
        };
        let audit_insert = |first| audit.insert_select_statement(first);
        Ok(PostgresLedger {
            insert_pending: Query::new(
                sql::insert_pending(schema, audit_insert),
                &[&EventParams::TYPES[..], &sql::PAYMENT_PARAM_TYPES[..]].concat(),
            ),
            claim_pending: Arc::new(writes.claim_pending),
            finish: Arc::new(writes.finish),
            group: group.map(|config| {
                let latency = latency.clone();
                let observe = Arc::new(move |written| latency.batch(written));
                GroupCommit::observed(pool.clone(), mode, config, observe)
            }),
            find: Query::new(
                sql::select(schema, "transaction_id = $1 AND user_id = $2"),
                &[Type::TEXT, Type::TEXT],
            ),
            find_by_key: Query::new(
                sql::select(
                    schema,
                    "user_id = $1 AND idempotency_key = $2 AND created_at > $3 \
                     ORDER BY created_at DESC LIMIT 1",
                ),
                &[Type::TEXT, Type::TEXT, Type::TIMESTAMPTZ],
            ),
            mode,
            pool,
            idempotency,
            timers: Timers::new(latency),
        })
    }

    fn row(row: &tokio_postgres::Row) -> Result<Payment, LedgerError> {
        let status: String = row.try_get("status").map_err(LedgerError::storage)?;
        let metadata: serde_json::Value = row.try_get("metadata").map_err(LedgerError::storage)?;
        let metadata: Metadata = serde_json::from_value(metadata).map_err(LedgerError::storage)?;
        let get = |column: &str| {
            row.try_get::<_, String>(column)
                .map_err(LedgerError::storage)
        };
        let optional = |column: &str| {
            row.try_get::<_, Option<String>>(column)
                .map_err(LedgerError::storage)
        };
        Ok(Payment {
            transaction_id: get("transaction_id")?,
            user_id: get("user_id")?,
            idempotency_key: optional("idempotency_key")?,
            status: Status::parse(&status)
                .ok_or_else(|| LedgerError::storage(format!("unknown status {status:?}")))?,
            amount_minor: row.try_get("amount_minor").map_err(LedgerError::storage)?,
            currency: get("currency")?,
            description: optional("description")?,
            payment_method: get("payment_method")?,
            metadata,
            decline_code: optional("decline_code")?,
            created_at: row
                .try_get::<_, SystemTime>("created_at")
                .map_err(LedgerError::storage)?,
        })
    }

    async fn select_one(
        &self,
        query: &Query,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Payment>, LedgerError> {
        let client = self.pool.get().await.map_err(LedgerError::storage)?;
        let row = query.opt(self.mode, On::Client(&client), params).await;
        let row = row.map_err(LedgerError::storage)?;
        row.as_ref().map(Self::row).transpose()
    }

    /// One of the payment path's writes: with the writes of concurrent requests when they are
    /// grouped, alone otherwise.
    async fn write(
        &self,
        statement: &Arc<Batched>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, LedgerError> {
        if let Some(group) = &self.group {
            let rows = group.batch_rows(statement, params).await;
            return rows.map_err(|e| LedgerError::storage(e.into_source()));
        }
        let client = self.pool.get().await.map_err(LedgerError::storage)?;
        let one = statement.one();
        let rows = one.rows(self.mode, On::Client(&client), params).await;
        rows.map_err(LedgerError::storage)
    }

    /// Runs `query`; the number of rows it wrote.
    async fn execute(
        &self,
        query: &Query,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, LedgerError> {
        let client = self.pool.get().await.map_err(LedgerError::storage)?;
        let written = query.execute(self.mode, On::Client(&client), params).await;
        written.map_err(LedgerError::storage)
    }
}

/// The values of a payment row, in the order of [`sql::COLUMNS`].
struct RowParams<'a> {
    payment: &'a Payment,
    status: &'static str,
    metadata: serde_json::Value,
}

impl<'a> RowParams<'a> {
    fn new(payment: &'a Payment) -> Result<Self, LedgerError> {
        Ok(RowParams {
            payment,
            status: payment.status.as_str(),
            metadata: serde_json::to_value(&payment.metadata).map_err(LedgerError::storage)?,
        })
    }

    fn as_params(&self) -> [&(dyn ToSql + Sync); sql::PAYMENT_PARAMS] {
        let payment = self.payment;
        [
            &payment.transaction_id,
            &payment.user_id,
            &payment.idempotency_key,
            &self.status,
            &payment.amount_minor,
            &payment.currency,
            &payment.description,
            &payment.payment_method,
            &self.metadata,
            &payment.decline_code,
            &payment.created_at,
        ]
    }
}

impl PostgresLedger {
    /// Claims `scope`'s key if it has no record, with `payment` (pending) and `event` in the
    /// same statement; the claim's fence, or `None` (nothing written) if the key has a record.
    pub(crate) async fn claim_with_pending(
        &self,
        claim: &ClaimParams<'_>,
        payment: &Payment,
        event: &AuditEvent,
    ) -> Result<Option<u64>, LedgerError> {
        let row = RowParams::new(payment)?;
        let event = EventParams::new(event);
        let params: Vec<_> = claim
            .as_params()
            .into_iter()
            .chain(event.as_params())
            .chain(row.as_params())
            .collect();
        let claim = self.write(&self.claim_pending, &params);
        let rows = self.timers.claim_with_pending.time(claim).await?;
        let fence = rows.first().map(|row| row.get::<_, i64>(0));
        Ok(fence.map(|fence| u64::try_from(fence).unwrap_or(0)))
    }

    /// The idempotency store whose records this ledger's statements write.
    pub(crate) fn idempotency(&self) -> &PostgresStore {
        &self.idempotency
    }
}

#[async_trait]
impl Ledger for PostgresLedger {
    async fn insert_pending(
        &self,
        payment: &Payment,
        event: AuditEvent,
    ) -> Result<(), LedgerError> {
        let row = RowParams::new(payment)?;
        let event = EventParams::new(&event);
        let params: Vec<_> = event
            .as_params()
            .into_iter()
            .chain(row.as_params())
            .collect();
        let insert = self.execute(&self.insert_pending, &params);
        self.timers.insert_pending.time(insert).await?;
        Ok(())
    }

    async fn find(&self, user: &str, transaction_id: &str) -> Result<Option<Payment>, LedgerError> {
        let params: [&(dyn ToSql + Sync); 2] = [&transaction_id, &user];
        let select = self.select_one(&self.find, &params);
        self.timers.find.time(select).await
    }

    async fn find_by_key(
        &self,
        user: &str,
        key: &str,
        within: Duration,
    ) -> Result<Option<Payment>, LedgerError> {
        let since = SystemTime::now()
            .checked_sub(within)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let params: [&(dyn ToSql + Sync); 3] = [&user, &key, &since];
        let select = self.select_one(&self.find_by_key, &params);
        self.timers.find_by_key.time(select).await
    }

    async fn finish(
        &self,
        payment: &Payment,
        completion: Completion<'_>,
        event: AuditEvent,
    ) -> Result<Finished, LedgerError> {
        let completion = self.idempotency.completion_params(
            completion.scope,
            completion.fence,
            completion.response,
            completion.ttl,
        );
        let status = payment.status.as_str();
        let update: [&(dyn ToSql + Sync); sql::STATUS_PARAMS] =
            [&status, &payment.decline_code, &payment.transaction_id];
        let event = EventParams::new(&event);
        let params: Vec<_> = completion
            .as_params()
            .into_iter()
            .chain(update)
            .chain(event.as_params())
            .collect();
        // The statement's last part inserts the audit row (one row back) only if the fence
        // matched.
        let finish = self.write(&self.finish, &params);
        match self.timers.finish.time(finish).await?.len() {
            1 => Ok(Finished::RecordCompleted),
            // Taken over: nothing was written; the newer owner decides.
            _ => Err(LedgerError::Fenced),
        }
    }

    async fn ping(&self) -> Result<(), LedgerError> {
        let client = self.pool.get().await.map_err(LedgerError::storage)?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(LedgerError::storage)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The ledger's batch statements against a real PostgreSQL (`TEST_DATABASE_URL`): a
    //! batch's callers are each answered as their statement alone would answer them.

    use std::time::Duration;

    use tollgate_audit::postgres::AuditLogConfig;
    use tollgate_idempotency::fingerprint::Fingerprint;
    use tollgate_idempotency::store::{ClaimOptions, StoredResponse};
    use tollgate_idempotency::{IdempotencyKey, Scope};

    use super::*;

    const OPTIONS: ClaimOptions =
        ClaimOptions::new(Duration::from_secs(60), Duration::from_secs(3600));

    /// A ledger whose writes go through one writer, on a schema of its own.
    async fn ledger(
        test: &str,
        mode: StatementMode,
    ) -> Option<(Arc<PostgresLedger>, deadpool_postgres::Pool, String)> {
        let Some(url) = std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            eprintln!(
                "SKIPPED {test}: needs PostgreSQL; set TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres to run it"
            );
            return None;
        };
        let unnamed = usize::from(mode == StatementMode::Unnamed);
        let schema = format!("tg_ledger_batch_{}_{unnamed}", std::process::id());
        let config: tokio_postgres::Config = url.parse().expect("TEST_DATABASE_URL");
        let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
        let pool = (deadpool_postgres::Pool::builder(manager)
            .max_size(4)
            .build())
        .expect("pool");
        crate::migrate::run(&pool, &schema).await.expect("migrated");
        let store = Arc::new(PostgresStore::open(pool.clone(), &schema).expect("store"));
        let audit = PostgresAuditLog::open(pool.clone(), AuditLogConfig::default().schema(&schema))
            .expect("audit log");
        let group = (GroupCommitConfig::default().writers(1).max_batch(16)).alone_up_to(0);
        let writes = (mode, Some(group));
        let latency = BackendLatency::default();
        let ledger = PostgresLedger::new(pool.clone(), &schema, store, &audit, &latency, writes);
        Some((Arc::new(ledger.expect("ledger")), pool, schema))
    }

    /// Holds the ledger's one writer in a statement until the returned task ends: writes sent
    /// meanwhile form one batch.
    async fn occupy(
        ledger: &PostgresLedger,
        pool: &deadpool_postgres::Pool,
        schema: &str,
    ) -> tokio::task::JoinHandle<()> {
        let group = ledger.group.clone().expect("grouped");
        let sleep = Arc::new(Query::new(
            format!("SELECT pg_sleep(1)::text AS {schema}"),
            &[],
        ));
        let busy = tokio::spawn(async move {
            group.rows(&sleep, &[]).await.expect("slept");
        });
        let client = pool.get().await.expect("a connection");
        let running = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
             AND query LIKE '%pg_sleep(1)::text AS {schema}'"
        );
        while client
            .query_one(&running, &[])
            .await
            .expect("activity")
            .get::<_, i64>(0)
            == 0
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        busy
    }

    /// The idempotency key a test's `key` stands for.
    fn full(key: &str) -> String {
        format!("key-{key}-0123456789")
    }

    fn scope(key: &str) -> Scope {
        let key = IdempotencyKey::parse(&full(key)).expect("a key");
        Scope::new("alice", &http::Method::POST, "/api/v1/payments", key)
    }

    fn pending(key: &str) -> Payment {
        Payment {
            transaction_id: format!("txn_{key}"),
            user_id: "alice".into(),
            idempotency_key: Some(full(key)),
            status: Status::Pending,
            amount_minor: 100,
            currency: "USD".into(),
            description: None,
            payment_method: "credit_card".into(),
            metadata: Metadata::default(),
            decline_code: None,
            created_at: SystemTime::now(),
        }
    }

    /// Claims `key` with its pending payment: the fence, or `None`.
    async fn claim(ledger: Arc<PostgresLedger>, key: &'static str) -> Option<u64> {
        let (scope, payment) = (scope(key), pending(key));
        let fingerprint = Fingerprint::of_bytes(&http::Method::POST, "/api/v1/payments", b"{}");
        let params = ledger
            .idempotency()
            .claim_params(&scope, &fingerprint, OPTIONS);
        let event = payment.started_event(key, "req", Duration::ZERO);
        ledger
            .claim_with_pending(&params, &payment, &event)
            .await
            .expect("claimed or not")
    }

    /// Completes `key`'s lease `fence` with its payment succeeded.
    async fn finish(
        ledger: Arc<PostgresLedger>,
        key: &'static str,
        fence: u64,
    ) -> Result<Finished, LedgerError> {
        let (scope, mut payment) = (scope(key), pending(key));
        payment.status = Status::Succeeded;
        let response = StoredResponse {
            status: 201,
            headers: Vec::new(),
            body: "{}".into(),
        };
        let completion = Completion {
            scope: &scope,
            fence,
            response: &response,
            ttl: OPTIONS.ttl,
        };
        let event = AuditEvent::new(
            "alice",
            tollgate_audit::Action::PAYMENT_ATTEMPT,
            tollgate_audit::Outcome::Success,
        );
        ledger.finish(&payment, completion, event).await
    }

    /// `SELECT count(*)` of `what` in the test's schema.
    async fn count(pool: &deadpool_postgres::Pool, schema: &str, what: &str) -> i64 {
        let client = pool.get().await.expect("a connection");
        let sql = what.replace("{schema}", schema);
        client.query_one(&sql, &[]).await.expect("a count").get(0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_answers_each_payment_as_alone() {
        batch_answers_each_payment_as_alone(StatementMode::Prepared).await;
    }

    /// The same through the migration's functions, as behind a pooler in transaction mode.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_answers_each_payment_as_alone_sent_unnamed() {
        batch_answers_each_payment_as_alone(StatementMode::Unnamed).await;
    }

    async fn batch_answers_each_payment_as_alone(mode: StatementMode) {
        let Some((ledger, pool, schema)) =
            ledger("a_batch_answers_each_payment_as_alone", mode).await
        else {
            return;
        };
        let taken = claim(Arc::clone(&ledger), "taken")
            .await
            .expect("a fresh key");

        let busy = occupy(&ledger, &pool, &schema).await;
        let call = |key| tokio::spawn(claim(Arc::clone(&ledger), key));
        let again = call("taken");
        let twice = [call("twice"), call("twice")];
        let fresh = [call("fresh-1"), call("fresh-2")];
        let cancelled = call("cancelled");
        tokio::time::sleep(Duration::from_millis(50)).await;
        cancelled.abort();
        busy.await.expect("the slow statement");

        assert_eq!(again.await.expect("a task"), None, "a key with a record");
        let mut claimed = Vec::new();
        for call in twice {
            claimed.extend(call.await.expect("a task"));
        }
        assert_eq!(claimed.len(), 1, "one of a pair claims");
        let mut fences = Vec::new();
        for call in fresh {
            fences.push(call.await.expect("a task").expect("a fresh key"));
        }
        let written = "SELECT count(*) FROM {schema}.payments p JOIN {schema}.audit_events a \
                       ON a.transaction_id = p.transaction_id JOIN {schema}.idempotency_records r \
                       ON r.key = p.idempotency_key";
        assert_eq!(
            count(&pool, &schema, written).await,
            4,
            "taken, twice, fresh-1, fresh-2"
        );

        let busy = occupy(&ledger, &pool, &schema).await;
        let finishing = [
            tokio::spawn(finish(Arc::clone(&ledger), "fresh-1", fences[0])),
            tokio::spawn(finish(Arc::clone(&ledger), "fresh-2", fences[1] + 1000)),
            tokio::spawn(finish(Arc::clone(&ledger), "taken", taken)),
        ];
        busy.await.expect("the slow statement");
        let mut answers = Vec::new();
        for call in finishing {
            answers.push(call.await.expect("a task"));
        }
        assert!(matches!(answers[0], Ok(Finished::RecordCompleted)));
        assert!(
            matches!(answers[1], Err(LedgerError::Fenced)),
            "a fence taken over: {:?}",
            answers[1]
        );
        assert!(matches!(answers[2], Ok(Finished::RecordCompleted)));
        let succeeded = "SELECT count(*) FROM {schema}.payments WHERE status = 'succeeded'";
        assert_eq!(count(&pool, &schema, succeeded).await, 2);
        let completed =
            "SELECT count(*) FROM {schema}.idempotency_records WHERE state = 'completed'";
        assert_eq!(count(&pool, &schema, completed).await, 2);
        let events = "SELECT count(*) FROM {schema}.audit_events WHERE action = 'payment_attempt'";
        assert_eq!(count(&pool, &schema, events).await, 2);
        let client = pool.get().await.expect("a connection");
        (client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await)
            .expect("dropped");
    }
}
