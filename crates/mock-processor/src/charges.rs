//! Where charges are kept, one per reference: in memory, or in PostgreSQL so they survive a
//! restart of the processor.

use std::collections::HashMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::Serialize;
use tokio_postgres::types::ToSql;

pub(crate) use tollgate_backend::BoxError;

/// One charge, as `POST /v1/charges` and `GET /v1/charges/{reference}` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Charge {
    pub(crate) id: String,
    /// The caller's deduplication reference: the `Idempotency-Key` it charged with.
    pub(crate) reference: String,
    pub(crate) amount: i64,
    pub(crate) currency: String,
    pub(crate) payment_method: String,
    /// `succeeded` or `declined`.
    pub(crate) status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) decline_code: Option<String>,
    /// Seconds since the Unix epoch.
    pub(crate) created: i64,
    /// The W3C `traceparent` of the request that made it, if it carried one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) traceparent: Option<String>,
}

impl Charge {
    /// A new charge, declined with `card_declined` or succeeded.
    pub(crate) fn new(
        reference: &str,
        amount: i64,
        currency: &str,
        payment_method: &str,
        declined: bool,
    ) -> Self {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Charge {
            id: format!("ch_{}", uuid::Uuid::now_v7().simple()),
            reference: reference.to_owned(),
            amount,
            currency: currency.to_owned(),
            payment_method: payment_method.to_owned(),
            status: if declined { "declined" } else { "succeeded" },
            decline_code: declined.then(|| "card_declined".to_owned()),
            created,
            traceparent: None,
        }
    }
}

/// What [`ChargeBook::record`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Recorded {
    /// The charge kept under the reference.
    pub(crate) charge: Charge,
    /// Whether this call made it (`false`: the reference was charged before).
    pub(crate) new: bool,
}

/// The charges, one per reference.
#[async_trait]
pub(crate) trait ChargeBook: Send + Sync + fmt::Debug {
    /// Keeps `charge` unless its reference has one; the one kept.
    async fn record(&self, charge: Charge) -> Result<Recorded, BoxError>;

    /// The charge with `reference`, if any.
    async fn find(&self, reference: &str) -> Result<Option<Charge>, BoxError>;

    /// How many charges were made.
    async fn count(&self) -> Result<i64, BoxError>;
}

/// Charges in this process.
#[derive(Debug, Default)]
pub(crate) struct MemoryCharges {
    charges: Mutex<HashMap<String, Charge>>,
}

#[async_trait]
impl ChargeBook for MemoryCharges {
    async fn record(&self, charge: Charge) -> Result<Recorded, BoxError> {
        let mut charges = self.charges.lock();
        if let Some(kept) = charges.get(&charge.reference) {
            return Ok(Recorded {
                charge: kept.clone(),
                new: false,
            });
        }
        charges.insert(charge.reference.clone(), charge.clone());
        Ok(Recorded { charge, new: true })
    }

    async fn find(&self, reference: &str) -> Result<Option<Charge>, BoxError> {
        Ok(self.charges.lock().get(reference).cloned())
    }

    async fn count(&self) -> Result<i64, BoxError> {
        Ok(i64::try_from(self.charges.lock().len()).unwrap_or(i64::MAX))
    }
}

/// The `charges` table in `{schema}`.
pub(crate) const MIGRATE: &str = "
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.charges (
    reference      text PRIMARY KEY,
    id             text NOT NULL UNIQUE,
    amount         bigint NOT NULL,
    currency       text NOT NULL,
    payment_method text NOT NULL,
    status         text NOT NULL,
    decline_code   text,
    created        bigint NOT NULL,
    traceparent    text
);
ALTER TABLE {schema}.charges ADD COLUMN IF NOT EXISTS traceparent text;
";

const COLUMNS: &str =
    "id, reference, amount, currency, payment_method, status, decline_code, created, traceparent";

/// Insert-or-read in one statement: one round trip per charge.
const RECORD: &str = "
WITH inserted AS (
    INSERT INTO {schema}.charges ({columns}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    ON CONFLICT (reference) DO NOTHING RETURNING {columns})
SELECT {columns}, true FROM inserted
UNION ALL
SELECT {columns}, false FROM {schema}.charges
WHERE reference = $2 AND NOT EXISTS (SELECT 1 FROM inserted)
";

/// Charges in `{schema}.charges`.
#[derive(Debug)]
pub(crate) struct PostgresCharges {
    pool: deadpool_postgres::Pool,
    record_sql: String,
    find_sql: String,
    count_sql: String,
}

impl PostgresCharges {
    /// The book on a migrated `schema` (see [`MIGRATE`]).
    pub(crate) fn new(pool: deadpool_postgres::Pool, schema: &str) -> Self {
        let fill = |sql: &str| {
            sql.replace("{schema}", schema)
                .replace("{columns}", COLUMNS)
        };
        PostgresCharges {
            pool,
            record_sql: fill(RECORD),
            find_sql: fill("SELECT {columns} FROM {schema}.charges WHERE reference = $1"),
            count_sql: fill("SELECT count(*) FROM {schema}.charges"),
        }
    }

    async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<tokio_postgres::Row>, BoxError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(sql).await?;
        Ok(client.query_opt(&statement, params).await?)
    }
}

fn charge(row: &tokio_postgres::Row) -> Result<Charge, BoxError> {
    let status: String = row.try_get("status")?;
    Ok(Charge {
        id: row.try_get("id")?,
        reference: row.try_get("reference")?,
        amount: row.try_get("amount")?,
        currency: row.try_get("currency")?,
        payment_method: row.try_get("payment_method")?,
        status: if status == "declined" {
            "declined"
        } else {
            "succeeded"
        },
        decline_code: row.try_get("decline_code")?,
        created: row.try_get("created")?,
        traceparent: row.try_get("traceparent")?,
    })
}

#[async_trait]
impl ChargeBook for PostgresCharges {
    async fn record(&self, new: Charge) -> Result<Recorded, BoxError> {
        let params: [&(dyn ToSql + Sync); 9] = [
            &new.id,
            &new.reference,
            &new.amount,
            &new.currency,
            &new.payment_method,
            &new.status,
            &new.decline_code,
            &new.created,
            &new.traceparent,
        ];
        let mut row = self.query_opt(&self.record_sql, &params).await?;
        if row.is_none() {
            // A concurrent insert of the same reference committed after this statement's
            // snapshot: a new statement sees it.
            row = self.query_opt(&self.record_sql, &params).await?;
        }
        let row = row.ok_or("the charge vanished")?;
        Ok(Recorded {
            charge: charge(&row)?,
            new: row.try_get(9)?,
        })
    }

    async fn find(&self, reference: &str) -> Result<Option<Charge>, BoxError> {
        let row = self.query_opt(&self.find_sql, &[&reference]).await?;
        row.as_ref().map(charge).transpose()
    }

    async fn count(&self) -> Result<i64, BoxError> {
        let row = self.query_opt(&self.count_sql, &[]).await?;
        Ok(row.map_or(Ok(0), |row| row.try_get(0))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_charge_per_reference() {
        let book = MemoryCharges::default();
        let first = book
            .record(Charge::new("ref-1", 100, "USD", "card", false))
            .await
            .expect("recorded");
        assert!(first.new);
        let again = book
            .record(Charge::new("ref-1", 100, "USD", "card", true))
            .await
            .expect("recorded");
        assert!(!again.new);
        assert_eq!(again.charge, first.charge, "the first charge stands");
        assert_eq!(book.count().await.expect("a count"), 1);
        assert_eq!(book.find("ref-1").await.expect("found"), Some(first.charge));
        assert_eq!(book.find("ref-2").await.expect("absent"), None);
    }
}
