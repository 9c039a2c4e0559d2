//! A processor simulation in this process, for tests and demos: configurable latency, decline
//! and failure rates, and test payment methods. Its charges are kept in its memory, so a payment
//! is reconciled only by the process that charged it; several processes share a real processor
//! (`PROCESSOR_URL`, `mock-processor` in development).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{Charge, ChargeResult, PaymentProcessor, ProcessorError, test_methods};
use crate::config::ProcessorTuning;

/// A simulated processor keeping its charges in its memory.
#[derive(Debug)]
pub(crate) struct SimulatedProcessor {
    tuning: ProcessorTuning,
    /// The charges made, by reference: the result, the amount and the currency.
    charges: Mutex<HashMap<String, (ChargeResult, i64, String)>>,
    /// Whether the test payment methods force their outcome.
    test_methods: bool,
}

/// A charge as the simulation holds it.
#[derive(Debug)]
struct Booked {
    result: ChargeResult,
    amount_minor: i64,
    currency: String,
    /// Whether this call made it (a first charge), or found it (a repeat).
    new: bool,
}

impl SimulatedProcessor {
    pub(crate) fn new(tuning: ProcessorTuning, test_methods: bool) -> Self {
        SimulatedProcessor {
            tuning,
            charges: Mutex::default(),
            test_methods,
        }
    }

    /// Records `decided` for the charge's reference unless one is recorded; the recorded one.
    fn book(&self, charge: &Charge<'_>, decided: ChargeResult) -> Booked {
        let mut charges = self.charges.lock();
        if let Some((result, amount_minor, currency)) = charges.get(charge.reference) {
            return Booked {
                result: result.clone(),
                amount_minor: *amount_minor,
                currency: currency.clone(),
                new: false,
            };
        }
        let currency = charge.currency.to_owned();
        charges.insert(
            charge.reference.to_owned(),
            (decided.clone(), charge.amount_minor, currency.clone()),
        );
        Booked {
            result: decided,
            amount_minor: charge.amount_minor,
            currency,
            new: true,
        }
    }

    /// Whether `method` is the test method `name`, and test methods are on.
    fn is_test(&self, method: &str, name: &str) -> bool {
        self.test_methods && method == name
    }

    /// What this charge would be decided as if it were new.
    fn decide(&self, charge: &Charge<'_>) -> ChargeResult {
        if self.is_test(charge.payment_method, test_methods::DECLINE)
            || fastrand::f64() < self.tuning.decline_rate
        {
            ChargeResult::Declined {
                code: "card_declined".into(),
            }
        } else {
            ChargeResult::Approved
        }
    }

    async fn answer_delay(&self) {
        if !self.tuning.latency.is_zero() {
            // ±50 % so concurrent requests interleave differently on every run.
            let jitter = 0.5 + fastrand::f64();
            let delay = self.tuning.latency.mul_f64(jitter);
            tokio::time::sleep(delay.max(Duration::from_micros(1))).await;
        }
    }
}

#[async_trait]
impl PaymentProcessor for SimulatedProcessor {
    async fn charge(&self, charge: &Charge<'_>) -> Result<ChargeResult, ProcessorError> {
        let recorded = self.book(charge, self.decide(charge));
        // Like a real processor's idempotency check: a reference names one charge.
        if (recorded.amount_minor, recorded.currency.as_str())
            != (charge.amount_minor, charge.currency)
        {
            return Err(ProcessorError::caused_by_request(format!(
                "reference {} was already used for another amount",
                charge.reference
            )));
        }
        // The charge is made; its answer takes the processor's latency to come back (a crash
        // in between is the case reconciliation exists for).
        self.answer_delay().await;
        if recorded.new && self.is_test(charge.payment_method, test_methods::TIMEOUT_AFTER_CHARGE) {
            return Err(ProcessorError::caused_by_request(
                "timed out waiting for the processor's answer (test payment method)",
            ));
        }
        if recorded.new && fastrand::f64() < self.tuning.failure_rate {
            return Err(ProcessorError::new(
                "timed out waiting for the processor's answer",
            ));
        }
        Ok(recorded.result)
    }

    async fn lookup(&self, reference: &str) -> Result<Option<ChargeResult>, ProcessorError> {
        let charges = self.charges.lock();
        Ok(charges.get(reference).map(|(result, _, _)| result.clone()))
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
            traceparent: None,
        }
    }

    #[tokio::test]
    async fn charges_once_per_reference() {
        let tuning = ProcessorTuning {
            latency: Duration::ZERO,
            ..ProcessorTuning::default()
        };
        let processor = SimulatedProcessor::new(tuning, true);
        let approved =
            |r: Result<ChargeResult, ProcessorError>| matches!(r, Ok(ChargeResult::Approved));
        assert!(approved(processor.charge(&charge("t1", "card")).await));
        assert!(approved(processor.charge(&charge("t1", "card")).await));
        assert!(matches!(
            processor.charge(&charge("t2", test_methods::DECLINE)).await,
            Ok(ChargeResult::Declined { .. })
        ));
        assert!(
            processor
                .charge(&charge("t3", test_methods::TIMEOUT_AFTER_CHARGE))
                .await
                .is_err()
        );
        assert!(matches!(
            processor.lookup("t3").await,
            Ok(Some(ChargeResult::Approved))
        ));
        assert!(matches!(processor.lookup("t4").await, Ok(None)));
        let other_amount = Charge {
            amount_minor: 999,
            ..charge("t1", "card")
        };
        assert!(
            processor.charge(&other_amount).await.is_err(),
            "a reference names one amount"
        );
    }

    #[tokio::test]
    async fn test_methods_are_ordinary_methods_unless_turned_on() {
        let tuning = ProcessorTuning {
            latency: Duration::ZERO,
            ..ProcessorTuning::default()
        };
        let processor = SimulatedProcessor::new(tuning, false);
        for (reference, method) in [
            ("t1", test_methods::DECLINE),
            ("t2", test_methods::TIMEOUT_AFTER_CHARGE),
        ] {
            assert!(matches!(
                processor.charge(&charge(reference, method)).await,
                Ok(ChargeResult::Approved)
            ));
        }
        let on = SimulatedProcessor::new(tuning, true);
        let lost = on
            .charge(&charge("t3", test_methods::TIMEOUT_AFTER_CHARGE))
            .await
            .expect_err("lost");
        assert!(
            lost.caused_by_request,
            "a test method is never the processor failing"
        );
    }
}
