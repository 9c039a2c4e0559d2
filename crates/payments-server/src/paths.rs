//! Every route path, named once. The router, the rate-limit policies, the idempotency scope,
//! `Location` headers and the OpenAPI check all read them from here.

use http::Method;

/// `GET` liveness and each backend's state.
pub const HEALTH: &str = "/health";
/// `GET` readiness for a load balancer.
pub const READY: &str = "/ready";
/// `GET` Prometheus metrics.
pub const METRICS: &str = "/metrics";
/// `GET` the recommended client retry policy.
pub const RETRY_CONFIG: &str = "/api/v1/retry-config";
/// `POST` a payment.
pub const PAYMENTS: &str = "/api/v1/payments";
/// `GET` one payment.
pub const PAYMENT: &str = "/api/v1/payments/{transaction_id}";
/// `GET` the caller's limits.
pub const RATE_LIMITS: &str = "/api/v1/rate-limits";
/// `GET` the caller's audit trail.
pub const AUDIT_LOGS: &str = "/api/v1/audit-logs";
/// `POST` concurrent same-key payments, to watch idempotency at work.
pub const SIMULATE: &str = "/api/v1/simulate-concurrent";

/// Every route: method and path template.
pub const ROUTES: &[(Method, &str)] = &[
    (Method::GET, HEALTH),
    (Method::GET, READY),
    (Method::GET, METRICS),
    (Method::GET, RETRY_CONFIG),
    (Method::POST, PAYMENTS),
    (Method::GET, PAYMENT),
    (Method::GET, RATE_LIMITS),
    (Method::GET, AUDIT_LOGS),
    (Method::POST, SIMULATE),
];

/// The endpoint a rate-limit policy names: `METHOD /route/template`.
pub fn endpoint(method: &Method, template: &str) -> String {
    format!("{method} {template}")
}

/// The `Location` of a payment.
pub(crate) fn payment_location(transaction_id: &str) -> String {
    format!("{PAYMENTS}/{transaction_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_under_the_payments_route() {
        assert_eq!(payment_location("txn_1"), "/api/v1/payments/txn_1");
        assert_eq!(endpoint(&Method::POST, PAYMENTS), "POST /api/v1/payments");
    }
}
