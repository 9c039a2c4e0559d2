//! The payment processor seam, and a simulated processor for tests and demos.
//!
//! Every charge carries a reference (the transaction id) that the processor deduplicates on, as
//! real processors do with their own idempotency keys: a charge resumed after an ambiguous
//! failure asks [`PaymentProcessor::lookup`] first and never charges twice.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// A processor in memory: configurable latency, decline and failure rates.
pub(crate) struct SimulatedProcessor {
    tuning: ProcessorTuning,
    /// Every charge by reference: the answer, and what was charged.
    charges: Mutex<HashMap<String, (ChargeResult, i64, String)>>,
    charged: AtomicU64,
}

impl fmt::Debug for SimulatedProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimulatedProcessor")
            .field("tuning", &self.tuning)
            .field("charged", &self.charged.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SimulatedProcessor {
    pub(crate) fn new(tuning: ProcessorTuning) -> Self {
        SimulatedProcessor {
            tuning,
            charges: Mutex::new(HashMap::new()),
            charged: AtomicU64::new(0),
        }
    }

    async fn delay(&self) {
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
        self.delay().await;
        let (result, lose_answer) = {
            let mut charges = self.charges.lock();
            if let Some((previous, amount, currency)) = charges.get(charge.reference) {
                // Like a real processor's idempotency check: a reference names one charge.
                if (*amount, currency.as_str()) != (charge.amount_minor, charge.currency) {
                    return Err(ProcessorError(format!(
                        "reference {} was already used for another amount",
                        charge.reference
                    )));
                }
                (previous.clone(), false)
            } else {
                let result = if charge.payment_method == test_methods::DECLINE
                    || fastrand::f64() < self.tuning.decline_rate
                {
                    ChargeResult::Declined {
                        code: "card_declined".into(),
                    }
                } else {
                    self.charged.fetch_add(1, Ordering::Relaxed);
                    ChargeResult::Approved
                };
                charges.insert(
                    charge.reference.to_owned(),
                    (
                        result.clone(),
                        charge.amount_minor,
                        charge.currency.to_owned(),
                    ),
                );
                let lose = charge.payment_method == test_methods::TIMEOUT_AFTER_CHARGE
                    || fastrand::f64() < self.tuning.failure_rate;
                (result, lose)
            }
        };
        if lose_answer {
            return Err(ProcessorError(
                "timed out waiting for the processor's answer".into(),
            ));
        }
        Ok(result)
    }

    async fn lookup(&self, reference: &str) -> Result<Option<ChargeResult>, ProcessorError> {
        self.delay().await;
        Ok(self
            .charges
            .lock()
            .get(reference)
            .map(|(result, _, _)| result.clone()))
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
        let processor = SimulatedProcessor::new(ProcessorTuning {
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
        assert_eq!(processor.charged.load(Ordering::Relaxed), 2);
    }
}
