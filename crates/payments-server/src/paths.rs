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

    /// Every route is documented in `docs/openapi.yaml`, with its method, and the spec documents
    /// no route the server lacks.
    #[test]
    fn openapi_lists_every_route() {
        let spec = include_str!("../../../docs/openapi.yaml");
        let mut documented = Vec::new();
        let mut in_paths = false;
        let mut path = None;
        for line in spec.lines() {
            if line.starts_with("paths:") {
                in_paths = true;
                continue;
            }
            if in_paths && !line.starts_with(' ') && !line.trim().is_empty() {
                in_paths = false;
            }
            if !in_paths {
                continue;
            }
            if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
                path = Some(format!("/{p}"));
            } else if let (Some(p), Some(method)) = (
                &path,
                line.strip_prefix("    ").and_then(|l| l.strip_suffix(':')),
            ) {
                if ["get", "post", "put", "patch", "delete"].contains(&method) {
                    documented.push((method.to_uppercase(), p.clone()));
                }
            }
        }
        let mut routed: Vec<_> = ROUTES
            .iter()
            .map(|(m, t)| (m.as_str().to_owned(), (*t).to_owned()))
            .collect();
        routed.sort();
        documented.sort();
        assert_eq!(routed, documented);
    }

    #[test]
    fn locations_are_under_the_payments_route() {
        assert_eq!(payment_location("txn_1"), "/api/v1/payments/txn_1");
        assert_eq!(endpoint(&Method::POST, PAYMENTS), "POST /api/v1/payments");
    }
}
