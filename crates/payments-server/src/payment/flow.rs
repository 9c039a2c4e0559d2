//! The payment flow: validate, reconcile what an earlier owner of the key recorded, record the
//! intent, charge once behind the circuit breaker, record the result.
//!
//! Crash safety: the pending row commits *before* the processor is called, so a crash or a lost
//! answer leaves evidence that the next owner of the key finds; the processor deduplicates by
//! reference (the transaction id), so a resumed attempt asks it first and never charges twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_audit::{Action, AuditEvent, Outcome as AuditOutcome};
use tollgate_idempotency::Scope;
use tollgate_idempotency::store::{Lease, StoredResponse};
use tollgate_retry::breaker::{CircuitBreaker, Permit};

use super::{FieldError, IntentStore, Invalid, Payment, PaymentRequest, Status};
use crate::ledger::{Completion, Finished, Ledger, LedgerError};
use crate::processor::{Charge, ChargeResult, PaymentProcessor, ProcessorError};

/// What the flow needs: where payments are kept, who charges them, and the breaker in front.
#[derive(Debug)]
pub(crate) struct Payments {
    pub(crate) ledger: Arc<dyn Ledger>,
    pub(crate) processor: Arc<dyn PaymentProcessor>,
    pub(crate) breaker: CircuitBreaker,
    /// How long idempotency records are kept: a payment older than this under the same key
    /// belongs to another request.
    pub(crate) record_ttl: Duration,
    /// How long a charge may take before its answer counts as lost.
    pub(crate) processor_timeout: Duration,
    /// Where a fresh key's claim is written with its pending payment (see `payment::claim`).
    pub(crate) intents: Option<IntentStore>,
}

/// One request that owns its idempotency key.
#[derive(Debug)]
pub(crate) struct Attempt<'a> {
    pub(crate) user: &'a str,
    pub(crate) request_id: &'a str,
    pub(crate) scope: &'a Scope,
    pub(crate) lease: Lease,
    pub(crate) body: &'a [u8],
    pub(crate) started: Instant,
    /// The W3C `traceparent` for the processor call: the client's trace, a new parent id.
    pub(crate) traceparent: Option<&'a str>,
}

impl Attempt<'_> {
    /// An audit event of this attempt.
    pub(crate) fn event(&self, action: Action, outcome: AuditOutcome, status: u16) -> AuditEvent {
        AuditEvent::new(self.user, action, outcome)
            .status(status)
            .idempotency_key(self.scope.key().as_str())
            .request_id(self.request_id)
            .latency(self.started.elapsed())
    }
}

/// A payment the processor settled (charged or declined), recorded with its receipt.
#[derive(Debug)]
pub(crate) struct Settled {
    pub(crate) payment: Payment,
    /// The answer, exactly as stored for replays.
    pub(crate) receipt: StoredResponse,
    /// Whether the ledger completed the idempotency record in its own statement.
    pub(crate) record_completed: bool,
}

/// Why a payment was not settled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    /// Not JSON, or not the shape of a payment request. Nothing happened.
    #[error("the body is not a payment request: {0}")]
    Malformed(String),
    /// Well-formed but invalid fields. Nothing happened.
    #[error("one or more fields are invalid")]
    Invalid(Vec<FieldError>),
    /// The breaker refuses calls to the processor. Nothing was recorded.
    #[error("the payment processor is unavailable (circuit open); nothing was charged")]
    CircuitOpen { retry_after: Duration },
    /// The breaker opened after the claim recorded the payment: pending, nothing charged; the
    /// retry completes it.
    #[error(
        "the payment processor is unavailable (circuit open); the payment is pending and nothing was charged"
    )]
    CircuitOpenPending {
        payment: Box<Payment>,
        retry_after: Duration,
    },
    /// The ledger failed; the payment may have been recorded.
    #[error("payment storage failed")]
    Storage(#[source] LedgerError),
    /// The processor's answer is unknown: the payment stays pending for the retry to reconcile.
    #[error("the processor's answer is unknown")]
    ProcessorLost {
        payment: Box<Payment>,
        #[source]
        cause: AnswerLost,
    },
    /// A newer owner took the key over (this lease expired); nothing was written.
    #[error("this request's claim on the idempotency key was taken over")]
    TakenOver,
}

/// Why the processor's answer to a charge (or to a lookup of one) is not known.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AnswerLost {
    /// The call failed, or its answer was lost.
    #[error(transparent)]
    Failed(ProcessorError),
    /// The breaker refused the call of a resumed payment.
    #[error(transparent)]
    Refused(tollgate_retry::Error),
    /// No answer within the processor timeout.
    #[error("no answer from the processor within {0:?}")]
    TimedOut(Duration),
}

impl From<Invalid> for Refused {
    fn from(invalid: Invalid) -> Self {
        match invalid {
            Invalid::Malformed(message) => Refused::Malformed(message),
            Invalid::Fields(errors) => Refused::Invalid(errors),
        }
    }
}

impl From<LedgerError> for Refused {
    fn from(error: LedgerError) -> Self {
        match error {
            LedgerError::Fenced => Refused::TakenOver,
            other => Refused::Storage(other),
        }
    }
}

/// A breaker permit for a processor call not made yet: if the request ends before the call
/// (the pending insert failed, or the client went away), it records nothing. Once the call is
/// under way, a permit dropped with it counts as a failure (see `Permit`).
struct NotCalled(Option<Permit>);

impl Drop for NotCalled {
    fn drop(&mut self) {
        if let Some(permit) = self.0.take() {
            permit.ignore();
        }
    }
}

/// The payment an attempt is about, its result if already known, and the breaker permit its
/// charge will use.
struct Intent {
    payment: Payment,
    known: Option<ChargeResult>,
    permit: Option<Permit>,
}

impl Payments {
    /// Pays once for `attempt`, whose claim may have `recorded` its pending payment already
    /// (see `payment::claim`); `receipt` renders the answer that is stored and replayed.
    pub(crate) async fn pay(
        &self,
        attempt: &Attempt<'_>,
        recorded: Option<Payment>,
        receipt: impl FnOnce(&Payment) -> StoredResponse,
    ) -> Result<Settled, Refused> {
        let Intent {
            mut payment,
            known,
            permit,
        } = match recorded {
            Some(recorded) => self.recorded(recorded)?,
            None => {
                let request = PaymentRequest::parse(attempt.body)?;
                self.intent(attempt, request).await?
            }
        };
        let result = match known {
            Some(result) => result,
            None => match self.charge(&payment, permit, attempt.traceparent).await {
                Ok(result) => result,
                Err(cause) => {
                    let payment = Box::new(payment);
                    return Err(Refused::ProcessorLost { payment, cause });
                }
            },
        };
        payment.settle(&result);
        let receipt = receipt(&payment);
        let record_completed = self.record(attempt, &payment, &receipt).await?;
        Ok(Settled {
            payment,
            receipt,
            record_completed,
        })
    }

    /// A payment its claim recorded (pending): charge it with a permit of the breaker.
    fn recorded(&self, payment: Payment) -> Result<Intent, Refused> {
        match self.breaker.try_acquire() {
            Ok(permit) => Ok(Intent {
                payment,
                known: None,
                permit: Some(permit),
            }),
            Err(error) => Err(Refused::CircuitOpenPending {
                payment: Box::new(payment),
                retry_after: error.retry_after().unwrap_or(Duration::from_secs(1)),
            }),
        }
    }

    /// A resumed claim reconciles what an earlier owner recorded (its answer was lost, it timed
    /// out, or its lease expired); a fresh claim skips the lookup — every path that records a
    /// payment ends the claim as ambiguous or completed, never as "nothing happened" — and
    /// records a new pending payment once the breaker admits it.
    async fn intent(
        &self,
        attempt: &Attempt<'_>,
        request: PaymentRequest,
    ) -> Result<Intent, Refused> {
        let key = attempt.scope.key().as_str();
        let existing = if attempt.lease.resumed {
            self.ledger
                .find_by_key(attempt.user, key, self.record_ttl)
                .await?
        } else {
            None
        };
        if let Some(payment) = existing {
            let known = match payment.status {
                Status::Succeeded => Some(ChargeResult::Approved),
                Status::Failed => Some(ChargeResult::Declined {
                    code: payment.decline_code.clone().unwrap_or_default(),
                }),
                Status::Pending => match self.processor.lookup(&payment.transaction_id).await {
                    Ok(known) => known,
                    Err(error) => {
                        let payment = Box::new(payment);
                        let cause = AnswerLost::Failed(error);
                        return Err(Refused::ProcessorLost { payment, cause });
                    }
                },
            };
            return Ok(Intent {
                payment,
                known,
                permit: None,
            });
        }
        // Refuse before recording anything while the processor is known to be down. The permit
        // is the one the charge uses: a half-open breaker could refuse a second acquisition.
        let permit = self.breaker.try_acquire().map_err(|error| {
            let retry_after = error.retry_after().unwrap_or(Duration::from_secs(1));
            Refused::CircuitOpen { retry_after }
        })?;
        let payment = Payment::pending(attempt.user, Some(key), request);
        let started = payment.started_event(key, attempt.request_id, attempt.started.elapsed());
        // On failure the insert may have committed with its acknowledgement lost: the claim is
        // kept (ambiguous) so the retry looks the payment up rather than inserting twice. The
        // processor is not called yet: whatever happens to the insert says nothing about it.
        let mut unused = NotCalled(Some(permit));
        self.ledger.insert_pending(&payment, started).await?;
        Ok(Intent {
            payment,
            known: None,
            permit: unused.0.take(),
        })
    }

    /// Charges through the circuit breaker (with `permit`, or a new one), with a deadline;
    /// `Err` means the answer is unknown.
    async fn charge(
        &self,
        payment: &Payment,
        permit: Option<Permit>,
        traceparent: Option<&str>,
    ) -> Result<ChargeResult, AnswerLost> {
        let permit = match permit {
            Some(permit) => permit,
            None => self.breaker.try_acquire().map_err(AnswerLost::Refused)?,
        };
        let charge = Charge {
            reference: &payment.transaction_id,
            amount_minor: payment.amount_minor,
            currency: &payment.currency,
            payment_method: &payment.payment_method,
            traceparent,
        };
        let timeout = self.processor_timeout;
        match tokio::time::timeout(timeout, self.processor.charge(&charge)).await {
            Ok(Ok(result)) => {
                // A decline is the processor working correctly.
                permit.success();
                Ok(result)
            }
            Ok(Err(error)) => {
                // A failure the request caused says nothing about the processor.
                if error.caused_by_request {
                    permit.ignore();
                } else {
                    permit.failure();
                }
                Err(AnswerLost::Failed(error))
            }
            Err(_) => {
                permit.failure();
                Err(AnswerLost::TimedOut(timeout))
            }
        }
    }

    /// Records the final status, the `payment_attempt` event and — where the ledger can, in
    /// the same statement — the idempotency completion. `true` if the ledger completed it.
    async fn record(
        &self,
        attempt: &Attempt<'_>,
        payment: &Payment,
        receipt: &StoredResponse,
    ) -> Result<bool, Refused> {
        let outcome = match payment.status {
            Status::Succeeded => AuditOutcome::Success,
            _ => AuditOutcome::Failure,
        };
        let event = attempt
            .event(Action::PAYMENT_ATTEMPT, outcome, receipt.status)
            .transaction_id(payment.transaction_id.as_str())
            .field("resumed", attempt.lease.resumed)
            .field("amount_minor", payment.amount_minor)
            .field("currency", payment.currency.as_str());
        let completion = Completion {
            scope: attempt.scope,
            fence: attempt.lease.fence,
            response: receipt,
            ttl: self.record_ttl,
        };
        match self.ledger.finish(payment, completion, event).await? {
            Finished::RecordCompleted => Ok(true),
            Finished::RecordLeftToCaller => Ok(false),
        }
    }
}
