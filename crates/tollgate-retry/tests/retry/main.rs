//! Integration tests of tollgate-retry: property models of backoff, budgets and the circuit
//! breaker, the retry driver on a manual clock, and the AWS backoff-and-jitter simulation.

mod backoff;
mod breaker;
mod budget;
mod driver;
mod simulation;
