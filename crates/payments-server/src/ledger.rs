//! Where payments are kept: memory, or PostgreSQL where a payment's final state, its
//! idempotency completion and its audit event commit in one transaction.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use parking_lot::Mutex;
use tollgate_audit::postgres::{EventParams, PostgresAuditLog};
use tollgate_audit::{AuditEvent, AuditSink};
use tollgate_idempotency::postgres::PostgresStore;
use tollgate_idempotency::store::StoredResponse;
use tollgate_idempotency::Scope;

use crate::payment::{Payment, Status};

/// A ledger failure; the message is safe to show.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LedgerError {
    /// The database failed.
    #[error("payment storage failed: {0}")]
    Storage(String),
    /// Another request took over this idempotency key (this one's lease expired): nothing was
    /// written.
    #[error("this request's claim on the idempotency key was taken over; nothing was written")]
    Fenced,
}

/// The idempotency record to complete with a payment's final state.
#[derive(Debug)]
pub(crate) struct Completion<'a> {
    pub(crate) scope: &'a Scope,
    pub(crate) fence: u64,
    pub(crate) response: &'a StoredResponse,
    pub(crate) ttl: Duration,
}

/// How [`Ledger::finish`] left the idempotency record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Finished {
    /// Completed in the same transaction as the payment.
    RecordCompleted,
    /// Not touched: the caller (the idempotency layer) completes it.
    RecordLeftToCaller,
}

/// Payments storage.
#[async_trait]
pub(crate) trait Ledger: Send + Sync + fmt::Debug {
    /// Records a new pending payment (before the processor is called) and `event`, together
    /// where the backend can.
    async fn insert_pending(&self, payment: &Payment, event: AuditEvent)
        -> Result<(), LedgerError>;

    /// `user`'s payment `transaction_id`; another user's payment reads as absent.
    async fn find(&self, user: &str, transaction_id: &str) -> Result<Option<Payment>, LedgerError>;

    /// `user`'s newest payment created with idempotency key `key` in the last `within` (a key
    /// may be used again once its record expired; older payments are another request's).
    async fn find_by_key(
        &self,
        user: &str,
        key: &str,
        within: Duration,
    ) -> Result<Option<Payment>, LedgerError>;

    /// Moves `payment` to its final status and records `event`; where the backend can, completes
    /// `completion` in the same transaction.
    async fn finish(
        &self,
        payment: &Payment,
        completion: Completion<'_>,
        event: AuditEvent,
    ) -> Result<Finished, LedgerError>;

    /// Checks the backend can be reached.
    async fn ping(&self) -> Result<(), LedgerError>;
}

/// Payments in memory (lost at exit; bounded only by the rate limits).
#[derive(Debug)]
pub(crate) struct MemoryLedger {
    payments: Mutex<HashMap<String, Payment>>,
    by_key: Mutex<HashMap<(String, String), String>>,
    audit: Arc<dyn AuditSink>,
}

impl MemoryLedger {
    pub(crate) fn new(audit: Arc<dyn AuditSink>) -> Self {
        MemoryLedger {
            payments: Mutex::new(HashMap::new()),
            by_key: Mutex::new(HashMap::new()),
            audit,
        }
    }
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn insert_pending(
        &self,
        payment: &Payment,
        event: AuditEvent,
    ) -> Result<(), LedgerError> {
        if let Err(error) = self.audit.record(event).await {
            tracing::warn!(%error, "audit event not recorded");
        }
        if let Some(key) = &payment.idempotency_key {
            self.by_key.lock().insert(
                (payment.user_id.clone(), key.clone()),
                payment.transaction_id.clone(),
            );
        }
        self.payments
            .lock()
            .insert(payment.transaction_id.clone(), payment.clone());
        Ok(())
    }

    async fn find(&self, user: &str, transaction_id: &str) -> Result<Option<Payment>, LedgerError> {
        Ok(self
            .payments
            .lock()
            .get(transaction_id)
            .filter(|p| p.user_id == user)
            .cloned())
    }

    async fn find_by_key(
        &self,
        user: &str,
        key: &str,
        within: Duration,
    ) -> Result<Option<Payment>, LedgerError> {
        let id = self
            .by_key
            .lock()
            .get(&(user.to_owned(), key.to_owned()))
            .cloned();
        let found = match id {
            Some(id) => self.find(user, &id).await?,
            None => None,
        };
        let recent = |p: &Payment| p.created_at.elapsed().map_or(true, |age| age < within);
        Ok(found.filter(recent))
    }

    async fn finish(
        &self,
        payment: &Payment,
        _completion: Completion<'_>,
        event: AuditEvent,
    ) -> Result<Finished, LedgerError> {
        self.payments
            .lock()
            .insert(payment.transaction_id.clone(), payment.clone());
        if let Err(error) = self.audit.record(event).await {
            tracing::warn!(%error, "audit event not recorded");
        }
        Ok(Finished::RecordLeftToCaller)
    }

    async fn ping(&self) -> Result<(), LedgerError> {
        Ok(())
    }
}

/// Payments in PostgreSQL.
pub(crate) struct PostgresLedger {
    pool: deadpool_postgres::Pool,
    schema: String,
    /// The pending row and its `payment_started` event: one statement.
    insert_pending_sql: String,
    /// The idempotency completion, the final status and the audit event: one statement, whose
    /// writes all happen only if the lease's fence still owns the key.
    finish_sql: String,
    idempotency: Arc<PostgresStore>,
}

impl fmt::Debug for PostgresLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresLedger")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// Runs `ddl` under an advisory lock named after `table`: processes starting together must not
/// race on `CREATE TABLE IF NOT EXISTS`.
pub(crate) async fn migrate(
    pool: &deadpool_postgres::Pool,
    table: &str,
    ddl: &str,
) -> Result<(), String> {
    let mut client = pool.get().await.map_err(|e| e.to_string())?;
    let transaction = client.transaction().await.map_err(|e| e.to_string())?;
    transaction
        .execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            &[&format!("tollgate-migrate-{table}")],
        )
        .await
        .map_err(|e| e.to_string())?;
    transaction
        .batch_execute(ddl)
        .await
        .map_err(|e| e.to_string())?;
    transaction.commit().await.map_err(|e| e.to_string())
}

fn storage(error: impl fmt::Display) -> LedgerError {
    LedgerError::Storage(error.to_string())
}

const COLUMNS: &str = "transaction_id, user_id, idempotency_key, status, amount_minor, currency, \
                       description, payment_method, metadata, decline_code, created_at";

impl PostgresLedger {
    /// Creates the `payments` table in `schema` if missing. The schema name was validated by
    /// the idempotency store's start-up, which created it.
    pub(crate) async fn start(
        pool: deadpool_postgres::Pool,
        schema: &str,
        idempotency: Arc<PostgresStore>,
        audit: Arc<PostgresAuditLog>,
    ) -> Result<Self, LedgerError> {
        migrate(
            &pool,
            &format!("{schema}.payments"),
            &format!(
                "CREATE TABLE IF NOT EXISTS {schema}.payments (
                    transaction_id  text PRIMARY KEY,
                    user_id         text NOT NULL,
                    idempotency_key text,
                    status          text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
                    amount_minor    bigint NOT NULL CHECK (amount_minor > 0),
                    currency        text NOT NULL,
                    description     text,
                    payment_method  text NOT NULL,
                    metadata        jsonb NOT NULL,
                    decline_code    text,
                    created_at      timestamptz NOT NULL,
                    updated_at      timestamptz NOT NULL DEFAULT now()
                 );
                 -- Not unique: a key may be used again once its idempotency record expired.
                 CREATE INDEX IF NOT EXISTS payments_user_key
                     ON {schema}.payments (user_id, idempotency_key, created_at)"
            ),
        )
        .await
        .map_err(storage)?;
        // Each write is one statement (atomic on its own): the database does a third of the
        // work of BEGIN, separate statements and COMMIT, which the load test showed to be the
        // bottleneck (PostgreSQL's backends held most of the CPU).
        let insert_pending_sql = format!(
            "WITH p AS (INSERT INTO {schema}.payments ({COLUMNS}) \
             VALUES ($12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)) {}",
            audit.insert_select_statement(1)
        );
        let finish_sql = format!(
            "WITH c AS ({}), \
             u AS (UPDATE {schema}.payments SET status = $10, decline_code = $11, updated_at = now() \
                   WHERE transaction_id = $12 AND EXISTS (SELECT 1 FROM c)) \
             {} WHERE EXISTS (SELECT 1 FROM c)",
            idempotency.completion_statement(),
            audit.insert_select_statement(13)
        );
        Ok(PostgresLedger {
            pool,
            schema: schema.to_owned(),
            insert_pending_sql,
            finish_sql,
            idempotency,
        })
    }

    fn row(row: &tokio_postgres::Row) -> Result<Payment, LedgerError> {
        let status: String = row.try_get("status").map_err(storage)?;
        let metadata: serde_json::Value = row.try_get("metadata").map_err(storage)?;
        let metadata: BTreeMap<String, String> =
            serde_json::from_value(metadata).map_err(storage)?;
        Ok(Payment {
            transaction_id: row.try_get("transaction_id").map_err(storage)?,
            user_id: row.try_get("user_id").map_err(storage)?,
            idempotency_key: row.try_get("idempotency_key").map_err(storage)?,
            status: Status::parse(&status)
                .ok_or_else(|| storage(format!("unknown status {status:?}")))?,
            amount_minor: row.try_get("amount_minor").map_err(storage)?,
            currency: row.try_get("currency").map_err(storage)?,
            description: row.try_get("description").map_err(storage)?,
            payment_method: row.try_get("payment_method").map_err(storage)?,
            metadata,
            decline_code: row.try_get("decline_code").map_err(storage)?,
            created_at: row
                .try_get::<_, SystemTime>("created_at")
                .map_err(storage)?,
        })
    }

    async fn select_one(
        &self,
        condition: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<Payment>, LedgerError> {
        let client = self.pool.get().await.map_err(storage)?;
        let sql = format!(
            "SELECT {COLUMNS} FROM {}.payments WHERE {condition}",
            self.schema
        );
        let statement = client.prepare_cached(&sql).await.map_err(storage)?;
        let row = client
            .query_opt(&statement, params)
            .await
            .map_err(storage)?;
        row.as_ref().map(Self::row).transpose()
    }
}

#[async_trait]
impl Ledger for PostgresLedger {
    async fn insert_pending(
        &self,
        payment: &Payment,
        event: AuditEvent,
    ) -> Result<(), LedgerError> {
        let client = self.pool.get().await.map_err(storage)?;
        let statement = client
            .prepare_cached(&self.insert_pending_sql)
            .await
            .map_err(storage)?;
        let metadata = serde_json::to_value(&payment.metadata).map_err(storage)?;
        let status = payment.status.as_str();
        let event = EventParams::new(&event);
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            event.as_params().to_vec();
        params.extend_from_slice(&[
            &payment.transaction_id,
            &payment.user_id,
            &payment.idempotency_key,
            &status,
            &payment.amount_minor,
            &payment.currency,
            &payment.description,
            &payment.payment_method,
            &metadata,
            &payment.decline_code,
            &payment.created_at,
        ]);
        client.execute(&statement, &params).await.map_err(storage)?;
        Ok(())
    }

    async fn find(&self, user: &str, transaction_id: &str) -> Result<Option<Payment>, LedgerError> {
        self.select_one(
            "transaction_id = $1 AND user_id = $2",
            &[&transaction_id, &user],
        )
        .await
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
        self.select_one(
            "user_id = $1 AND idempotency_key = $2 AND created_at > $3 \
             ORDER BY created_at DESC LIMIT 1",
            &[&user, &key, &since],
        )
        .await
    }

    async fn finish(
        &self,
        payment: &Payment,
        completion: Completion<'_>,
        event: AuditEvent,
    ) -> Result<Finished, LedgerError> {
        let client = self.pool.get().await.map_err(storage)?;
        let statement = client
            .prepare_cached(&self.finish_sql)
            .await
            .map_err(storage)?;
        let completion = self.idempotency.completion_params(
            completion.scope,
            completion.fence,
            completion.response,
            completion.ttl,
        );
        let status = payment.status.as_str();
        let event = EventParams::new(&event);
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            completion.as_params().to_vec();
        params.extend_from_slice(&[&status, &payment.decline_code, &payment.transaction_id]);
        params.extend_from_slice(&event.as_params());
        // The statement's last part inserts the audit row only if the fence matched.
        match client.execute(&statement, &params).await.map_err(storage)? {
            1 => Ok(Finished::RecordCompleted),
            // Taken over: nothing was written; the newer owner decides.
            _ => Err(LedgerError::Fenced),
        }
    }

    async fn ping(&self) -> Result<(), LedgerError> {
        let client = self.pool.get().await.map_err(storage)?;
        client.simple_query("SELECT 1").await.map_err(storage)?;
        Ok(())
    }
}
