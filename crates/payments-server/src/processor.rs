//! The payment processor seam, and a simulated processor for tests and demos.
//!
//! Every charge carries a reference (the transaction id) that the processor deduplicates on, as
//! real processors do with their own idempotency keys: a charge resumed after an ambiguous
//! failure asks [`PaymentProcessor::lookup`] first and never charges twice.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::config::ProcessorTuning;

/// One charge.
#[derive(Clone, Debug)]
pub(crate) struct Charge<'a> {
    /// Deduplication reference: the transaction id.
    pub(crate) reference: &'a str,
    pub(crate) amount_minor: i64,
    pub(crate) currency: &'a str,
    pub(crate) payment_method: &'a str,
}

/// The processor's final answer about a charge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ChargeResult {
    Approved,
    Declined { code: String },
}

/// The processor could not give an answer: the charge may or may not have happened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("payment processor error: {0}")]
pub(crate) struct ProcessorError(pub(crate) String);

/// Something that charges payment methods.
#[async_trait]
pub(crate) trait PaymentProcessor: Send + Sync + fmt::Debug {
    /// Charges once per reference: a repeated reference returns the first answer.
    async fn charge(&self, charge: &Charge<'_>) -> Result<ChargeResult, ProcessorError>;

    /// What became of the charge with `reference`, if the processor has seen it.
    async fn lookup(&self, reference: &str) -> Result<Option<ChargeResult>, ProcessorError>;
}

/// Test payment methods that force an outcome, like a processor's test cards.
pub(crate) mod test_methods {
    /// Always declined (`card_declined`).
    pub(crate) const DECLINE: &str = "test_decline";
    /// Charged, but the first answer is lost (a timeout after the charge): the retry must find
    /// the charge instead of charging again.
    pub(crate) const TIMEOUT_AFTER_CHARGE: &str = "test_timeout_after_charge";
}

/// Where the simulated processor keeps its charges: in this process, or in PostgreSQL so that
/// every server process talks to the same "processor" (and tests can count its charges).
enum Book {
    Memory(Mutex<HashMap<String, (ChargeResult, i64, String)>>),
    Postgres {
        pool: deadpool_postgres::Pool,
        schema: String,
    },
}

/// A processor simulation: configurable latency, decline and failure rates.
pub(crate) struct SimulatedProcessor {
    tuning: ProcessorTuning,
    book: Book,
}

impl fmt::Debug for SimulatedProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let book = match self.book {
            Book::Memory(_) => "memory",
            Book::Postgres { .. } => "postgresql",
        };
        f.debug_struct("SimulatedProcessor")
            .field("tuning", &self.tuning)
            .field("book", &book)
            .finish()
    }
}

fn pg_error(error: impl fmt::Display) -> ProcessorError {
    ProcessorError(error.to_string())
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

impl SimulatedProcessor {
    /// Charges kept in this process.
    pub(crate) fn in_memory(tuning: ProcessorTuning) -> Self {
        SimulatedProcessor {
            tuning,
            book: Book::Memory(Mutex::new(HashMap::new())),
        }
    }

    /// Charges kept in `schema.simulated_charges`, shared by every process on the database.
    pub(crate) async fn in_postgres(
        tuning: ProcessorTuning,
        pool: deadpool_postgres::Pool,
        schema: &str,
    ) -> Result<Self, ProcessorError> {
        crate::ledger::migrate(
            &pool,
            &format!("{schema}.simulated_charges"),
            &format!(
                "CREATE TABLE IF NOT EXISTS {schema}.simulated_charges (
                    reference    text PRIMARY KEY,
                    amount_minor bigint NOT NULL,
                    currency     text NOT NULL,
                    result       text NOT NULL,
                    decline_code text,
                    charged_at   timestamptz NOT NULL DEFAULT now()
                 )"
            ),
        )
        .await
        .map_err(ProcessorError)?;
        Ok(SimulatedProcessor {
            tuning,
            book: Book::Postgres {
                pool,
                schema: schema.to_owned(),
            },
        })
    }

    /// What this charge would be decided as if it were new.
    fn decide(&self, charge: &Charge<'_>) -> ChargeResult {
        if charge.payment_method == test_methods::DECLINE
            || fastrand::f64() < self.tuning.decline_rate
        {
            ChargeResult::Declined {
                code: "card_declined".into(),
            }
        } else {
            ChargeResult::Approved
        }
    }

    /// Records `decided` for the charge's reference unless one is recorded; returns the recorded
    /// result and whether it is new.
    async fn record(
        &self,
        charge: &Charge<'_>,
        decided: ChargeResult,
    ) -> Result<(ChargeResult, bool), ProcessorError> {
        let (recorded, amount, currency, new) = match &self.book {
            Book::Memory(charges) => {
                let mut charges = charges.lock();
                match charges.get(charge.reference) {
                    Some((result, amount, currency)) => {
                        (result.clone(), *amount, currency.clone(), false)
                    }
                    None => {
                        charges.insert(
                            charge.reference.to_owned(),
                            (
                                decided.clone(),
                                charge.amount_minor,
                                charge.currency.to_owned(),
                            ),
                        );
                        (
                            decided,
                            charge.amount_minor,
                            charge.currency.to_owned(),
                            true,
                        )
                    }
                }
            }
            Book::Postgres { pool, schema } => {
                let client = pool.get().await.map_err(pg_error)?;
                let (result, code) = encode(&decided);
                // Insert-or-read in one prepared statement: one round trip per charge.
                let statement = client
                    .prepare_cached(&format!(
                        "WITH inserted AS ( \
                             INSERT INTO {schema}.simulated_charges \
                             (reference, amount_minor, currency, result, decline_code) \
                             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (reference) DO NOTHING \
                             RETURNING result, decline_code, amount_minor, currency) \
                         SELECT result, decline_code, amount_minor, currency, true FROM inserted \
                         UNION ALL \
                         SELECT result, decline_code, amount_minor, currency, false \
                         FROM {schema}.simulated_charges \
                         WHERE reference = $1 AND NOT EXISTS (SELECT 1 FROM inserted)"
                    ))
                    .await
                    .map_err(pg_error)?;
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
                    &charge.reference,
                    &charge.amount_minor,
                    &charge.currency,
                    &result,
                    &code,
                ];
                let mut row = client
                    .query_opt(&statement, &params)
                    .await
                    .map_err(pg_error)?;
                if row.is_none() {
                    // A concurrent insert of the same reference committed after this
                    // statement's snapshot: it is visible to a new one.
                    row = client
                        .query_opt(&statement, &params)
                        .await
                        .map_err(pg_error)?;
                }
                let row = row.ok_or_else(|| pg_error("the charge vanished"))?;
                let result: String = row.get(0);
                (
                    decode(&result, row.get(1)),
                    row.get::<_, i64>(2),
                    row.get::<_, String>(3),
                    row.get::<_, bool>(4),
                )
            }
        };
        // Like a real processor's idempotency check: a reference names one charge.
        if (amount, currency.as_str()) != (charge.amount_minor, charge.currency) {
            return Err(ProcessorError(format!(
                "reference {} was already used for another amount",
                charge.reference
            )));
        }
        Ok((recorded, new))
    }

    async fn answer_delay(&self) {
        if !self.tuning.latency.is_zero() {
            // ±50 % so concurrent requests interleave differently on every run.
            let jitter = 0.5 + fastrand::f64();
            tokio::time::sleep(
                self.tuning
                    .latency
                    .mul_f64(jitter)
                    .max(Duration::from_micros(1)),
            )
            .await;
        }
    }
}

#[async_trait]
impl PaymentProcessor for SimulatedProcessor {
    async fn charge(&self, charge: &Charge<'_>) -> Result<ChargeResult, ProcessorError> {
        let (result, new) = self.record(charge, self.decide(charge)).await?;
        // The charge is made; its answer takes the processor's latency to come back (a crash
        // in between is the case reconciliation exists for).
        self.answer_delay().await;
        let lose = new
            && (charge.payment_method == test_methods::TIMEOUT_AFTER_CHARGE
                || fastrand::f64() < self.tuning.failure_rate);
        if lose {
            return Err(ProcessorError(
                "timed out waiting for the processor's answer".into(),
            ));
        }
        Ok(result)
    }

    async fn lookup(&self, reference: &str) -> Result<Option<ChargeResult>, ProcessorError> {
        match &self.book {
            Book::Memory(charges) => Ok(charges
                .lock()
                .get(reference)
                .map(|(result, _, _)| result.clone())),
            Book::Postgres { pool, schema } => {
                let client = pool.get().await.map_err(pg_error)?;
                let row = client
                    .query_opt(
                        &format!(
                            "SELECT result, decline_code FROM {schema}.simulated_charges \
                             WHERE reference = $1"
                        ),
                        &[&reference],
                    )
                    .await
                    .map_err(pg_error)?;
                Ok(row.map(|row| decode(&row.get::<_, String>(0), row.get(1))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge<'a>(reference: &'a str, method: &'a str) -> Charge<'a> {
        Charge {
            reference,
            amount_minor: 100,
            currency: "USD",
            payment_method: method,
        }
    }

    #[tokio::test]
    async fn charges_once_per_reference() {
        let processor = SimulatedProcessor::in_memory(ProcessorTuning {
            latency: Duration::ZERO,
            ..ProcessorTuning::default()
        });
        assert_eq!(
            processor.charge(&charge("t1", "card")).await,
            Ok(ChargeResult::Approved)
        );
        assert_eq!(
            processor.charge(&charge("t1", "card")).await,
            Ok(ChargeResult::Approved)
        );
        assert!(matches!(
            processor.charge(&charge("t2", test_methods::DECLINE)).await,
            Ok(ChargeResult::Declined { .. })
        ));
        assert!(processor
            .charge(&charge("t3", test_methods::TIMEOUT_AFTER_CHARGE))
            .await
            .is_err());
        assert_eq!(
            processor.lookup("t3").await,
            Ok(Some(ChargeResult::Approved))
        );
        assert_eq!(processor.lookup("t4").await, Ok(None));
        assert!(
            processor
                .charge(&Charge {
                    amount_minor: 999,
                    ..charge("t1", "card")
                })
                .await
                .is_err(),
            "a reference names one amount"
        );
    }
}
