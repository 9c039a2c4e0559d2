//! Payments: the request as validated, the record as stored, and the flow that charges each
//! payment at most once. Nothing here knows HTTP: the flow returns a typed outcome or a typed
//! refusal, which `handlers::payments` maps to an answer.

mod currency;
mod flow;
mod intent;
mod metadata;
mod model;
mod request;

pub(crate) use flow::{Attempt, Payments, Refused, Settled};
pub(crate) use intent::IntentStore;
pub(crate) use metadata::Metadata;
pub(crate) use model::{Payment, Status};
pub(crate) use request::{FieldError, Invalid, PaymentRequest};
