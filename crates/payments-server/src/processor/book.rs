//! Where the simulated processor keeps its charges: one type per backend behind [`ChargeBook`].

use std::collections::HashMap;
use std::fmt;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio_postgres::types::ToSql;

use super::{Charge, ChargeResult, ProcessorError};

/// A charge as the book holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Recorded {
    pub(crate) result: ChargeResult,
    pub(crate) amount_minor: i64,
    pub(crate) currency: String,
    /// Whether this call recorded it (a first charge), or found it (a repeat).
    pub(crate) new: bool,
}

/// The simulated processor's own records, deduplicated by reference.
#[async_trait]
pub(crate) trait ChargeBook: Send + Sync + fmt::Debug {
    /// Records `decided` for the charge's reference unless one is recorded; the recorded one.
    async fn record(
        &self,
        charge: &Charge<'_>,
        decided: ChargeResult,
    ) -> Result<Recorded, ProcessorError>;

    /// The result recorded for `reference`, if any.
    async fn lookup(&self, reference: &str) -> Result<Option<ChargeResult>, ProcessorError>;
}

/// Charges kept in this process.
#[derive(Debug, Default)]
pub(crate) struct MemoryBook {
    charges: Mutex<HashMap<String, (ChargeResult, i64, String)>>,
}

#[async_trait]
impl ChargeBook for MemoryBook {
    async fn record(
        &self,
        charge: &Charge<'_>,
        decided: ChargeResult,
    ) -> Result<Recorded, ProcessorError> {
        let mut charges = self.charges.lock();
        if let Some((result, amount_minor, currency)) = charges.get(charge.reference) {
            return Ok(Recorded {
                result: result.clone(),
                amount_minor: *amount_minor,
                currency: currency.clone(),
                new: false,
            });
        }
        let currency = charge.currency.to_owned();
        charges.insert(
            charge.reference.to_owned(),
            (decided.clone(), charge.amount_minor, currency.clone()),
        );
        Ok(Recorded {
            result: decided,
            amount_minor: charge.amount_minor,
            currency,
            new: true,
        })
    }

    async fn lookup(&self, reference: &str) -> Result<Option<ChargeResult>, ProcessorError> {
        Ok(self
            .charges
            .lock()
            .get(reference)
            .map(|(result, _, _)| result.clone()))
    }
}

/// The `simulated_charges` table in `{schema}`.
pub(crate) const MIGRATE: &str = "
CREATE TABLE IF NOT EXISTS {schema}.simulated_charges (
    reference    text PRIMARY KEY,
    amount_minor bigint NOT NULL,
    currency     text NOT NULL,
    result       text NOT NULL,
    decline_code text,
    charged_at   timestamptz NOT NULL DEFAULT now()
);
";

/// Insert-or-read in one statement ($1 reference, $2 amount, $3 currency, $4 result, $5 decline
/// code): one round trip per charge.
const RECORD: &str = "
WITH inserted AS (
    INSERT INTO {schema}.simulated_charges (reference, amount_minor, currency, result, decline_code)
    VALUES ($1, $2, $3, $4, $5) ON CONFLICT (reference) DO NOTHING
    RETURNING result, decline_code, amount_minor, currency)
SELECT result, decline_code, amount_minor, currency, true FROM inserted
UNION ALL
SELECT result, decline_code, amount_minor, currency, false FROM {schema}.simulated_charges
WHERE reference = $1 AND NOT EXISTS (SELECT 1 FROM inserted)
";

/// The result for $1 reference.
const LOOKUP: &str =
    "SELECT result, decline_code FROM {schema}.simulated_charges WHERE reference = $1";

/// Charges kept in `{schema}.simulated_charges`, shared by every process on the database (so a
/// resumed request on another process finds the charge, and tests can count charges).
#[derive(Debug)]
pub(crate) struct PostgresBook {
    pool: deadpool_postgres::Pool,
    record_sql: String,
    lookup_sql: String,
}

impl PostgresBook {
    /// The book on a migrated `schema`.
    pub(crate) fn new(pool: deadpool_postgres::Pool, schema: &str) -> Self {
        PostgresBook {
            pool,
            record_sql: RECORD.replace("{schema}", schema),
            lookup_sql: LOOKUP.replace("{schema}", schema),
        }
    }
}

fn encode(result: &ChargeResult) -> (&'static str, Option<&str>) {
    match result {
        ChargeResult::Approved => ("approved", None),
        ChargeResult::Declined { code } => ("declined", Some(code)),
    }
}

fn decode(result: &str, code: Option<String>) -> ChargeResult {
    match result {
        "approved" => ChargeResult::Approved,
        _ => ChargeResult::Declined {
            code: code.unwrap_or_default(),
        },
    }
}

#[async_trait]
impl ChargeBook for PostgresBook {
    async fn record(
        &self,
        charge: &Charge<'_>,
        decided: ChargeResult,
    ) -> Result<Recorded, ProcessorError> {
        let client = self.pool.get().await.map_err(ProcessorError::new)?;
        let statement = client
            .prepare_cached(&self.record_sql)
            .await
            .map_err(ProcessorError::new)?;
        let (result, code) = encode(&decided);
        let params: [&(dyn ToSql + Sync); 5] = [
            &charge.reference,
            &charge.amount_minor,
            &charge.currency,
            &result,
            &code,
        ];
        let mut row = client
            .query_opt(&statement, &params)
            .await
            .map_err(ProcessorError::new)?;
        if row.is_none() {
            // A concurrent insert of the same reference committed after this statement's
            // snapshot: it is visible to a new one.
            row = client
                .query_opt(&statement, &params)
                .await
                .map_err(ProcessorError::new)?;
        }
        let row = row.ok_or_else(|| ProcessorError::new("the charge vanished"))?;
        Ok(Recorded {
            result: decode(&row.get::<_, String>(0), row.get(1)),
            amount_minor: row.get(2),
            currency: row.get(3),
            new: row.get(4),
        })
    }

    async fn lookup(&self, reference: &str) -> Result<Option<ChargeResult>, ProcessorError> {
        let client = self.pool.get().await.map_err(ProcessorError::new)?;
        let statement = client
            .prepare_cached(&self.lookup_sql)
            .await
            .map_err(ProcessorError::new)?;
        let row = client
            .query_opt(&statement, &[&reference])
            .await
            .map_err(ProcessorError::new)?;
        Ok(row.map(|row| decode(&row.get::<_, String>(0), row.get(1))))
    }
}
