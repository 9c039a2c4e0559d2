//! The route table: one place that says which method and path template each handler serves,
//! whether it needs a key, and whether it is rate limited. `docs/openapi.yaml` is checked
//! against it by a test.

use http::Method;

/// A handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Route {
    Health,
    Ready,
    Metrics,
    RetryConfig,
    CreatePayment,
    GetPayment,
    RateLimits,
    AuditLogs,
    SimulateConcurrent,
}

/// Every route: method, path template, handler, needs a Bearer key.
pub(crate) const ROUTES: &[(Method, &str, Route, bool)] = &[
    (Method::GET, "/health", Route::Health, false),
    (Method::GET, "/ready", Route::Ready, false),
    (Method::GET, "/metrics", Route::Metrics, false),
    (
        Method::GET,
        "/api/v1/retry-config",
        Route::RetryConfig,
        false,
    ),
    (Method::POST, "/api/v1/payments", Route::CreatePayment, true),
    (
        Method::GET,
        "/api/v1/payments/{transaction_id}",
        Route::GetPayment,
        true,
    ),
    (Method::GET, "/api/v1/rate-limits", Route::RateLimits, true),
    (Method::GET, "/api/v1/audit-logs", Route::AuditLogs, true),
    (
        Method::POST,
        "/api/v1/simulate-concurrent",
        Route::SimulateConcurrent,
        true,
    ),
];

/// A request matched to its route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Matched {
    pub(crate) route: Route,
    pub(crate) template: &'static str,
    pub(crate) authenticated: bool,
    /// The `{transaction_id}` segment, if the template has one.
    pub(crate) param: Option<String>,
}

impl Matched {
    /// Probes and metrics are never rate limited: an overloaded server must still answer its
    /// orchestrator and its monitoring.
    pub(crate) fn rate_limited(&self) -> bool {
        self.template.starts_with("/api/")
    }
}

/// Why no route matched.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NoMatch {
    /// No route has this path (404).
    NotFound,
    /// The path exists with other methods (405 with `Allow`).
    MethodNotAllowed(&'static str),
}

fn template_matches(template: &str, path: &str) -> Option<Option<String>> {
    match template.split_once('{') {
        None => (template == path).then_some(None),
        Some((prefix, _)) => {
            let param = path.strip_prefix(prefix)?;
            (!param.is_empty() && !param.contains('/')).then(|| Some(param.to_owned()))
        }
    }
}

/// Finds the route for `method path`.
pub(crate) fn find(method: &Method, path: &str) -> Result<Matched, NoMatch> {
    let mut allowed = None;
    for (route_method, template, route, authenticated) in ROUTES {
        let Some(param) = template_matches(template, path) else {
            continue;
        };
        if route_method == method {
            return Ok(Matched {
                route: *route,
                template,
                authenticated: *authenticated,
                param,
            });
        }
        allowed = Some(route_method.as_str());
    }
    Err(match allowed {
        // Every path serves exactly one method, so `Allow` is that one.
        Some(method) => NoMatch::MethodNotAllowed(method),
        None => NoMatch::NotFound,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        let found = find(&Method::GET, "/api/v1/payments/txn_1").expect("route");
        assert_eq!(found.route, Route::GetPayment);
        assert_eq!(found.param.as_deref(), Some("txn_1"));
        assert_eq!(
            find(&Method::POST, "/api/v1/payments").map(|m| m.route),
            Ok(Route::CreatePayment)
        );
        assert_eq!(
            find(&Method::GET, "/api/v1/payments"),
            Err(NoMatch::MethodNotAllowed("POST"))
        );
        assert_eq!(
            find(&Method::GET, "/api/v1/payments/"),
            Err(NoMatch::NotFound)
        );
        assert_eq!(
            find(&Method::GET, "/api/v1/payments/a/b"),
            Err(NoMatch::NotFound)
        );
        assert_eq!(find(&Method::GET, "/nope"), Err(NoMatch::NotFound));
        assert!(!find(&Method::GET, "/health").expect("route").rate_limited());
    }

    /// Every route of the router is documented in `docs/openapi.yaml`, with its method, and the
    /// spec documents no route the router lacks.
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
            .map(|(m, t, _, _)| (m.as_str().to_owned(), (*t).to_owned()))
            .collect();
        routed.sort();
        documented.sort();
        assert_eq!(routed, documented);
    }
}
