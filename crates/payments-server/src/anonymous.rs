//! Requests without a valid key, limited per client address: a stranger gets `401`s at a
//! bounded rate, then `429`s, and neither costs a log line at the default level.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use http::StatusCode;
use tollgate_ratelimit::{Algorithm, MemoryLimiter, Policy, RequestContext, Scope};

use crate::auth::unauthorized;
use crate::layers::limits::client_address;
use crate::state::AppState;

/// The per-address limit on requests without a valid key, kept in this process (a stranger is
/// not worth a round trip to Redis).
#[derive(Debug)]
pub(crate) struct AnonymousLimit {
    limiter: MemoryLimiter,
    policy: Option<Arc<Policy>>,
}

impl AnonymousLimit {
    /// `per_minute` requests without a valid key a minute from one address.
    pub(crate) fn new(per_minute: u64) -> Self {
        let policy = Policy::new(
            "anonymous",
            Scope::Ip,
            Algorithm::sliding_window(per_minute, Duration::from_secs(60)),
        )
        .ok()
        .map(Arc::new);
        AnonymousLimit {
            limiter: MemoryLimiter::new(),
            policy,
        }
    }

    /// The answer to a request without a valid key: `401`, or `429` past the address's limit.
    pub(crate) fn refuse(&self, state: &AppState, request: &Request) -> Response {
        let ip = client_address(state, request.headers(), request.extensions());
        let key = match (&self.policy, ip) {
            (Some(policy), Some(ip)) => policy.key_for(&RequestContext::new().ip(ip)),
            _ => None,
        };
        let Some(key) = key else {
            return unauthorized();
        };
        let keys = [key];
        let denied = match self.limiter.check_now(&keys, 1) {
            Ok(decision) if !decision.is_allowed() => {
                Some(decision.retry_after().unwrap_or(Duration::from_secs(1)))
            }
            _ => None,
        };
        match denied {
            Some(wait) => crate::problem::with_retry_after(
                crate::problem::simple(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many requests without a valid key from this address",
                ),
                wait,
            ),
            None => unauthorized(),
        }
    }
}
