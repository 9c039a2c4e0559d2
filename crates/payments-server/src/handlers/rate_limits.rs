//! `GET /api/v1/rate-limits`: the caller's tier and its quota under every policy of that tier
//! that counts for it alone, read without consuming.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};
use tollgate_ratelimit::{Decision, RateLimiter, RequestContext};

use crate::auth::Caller;
use crate::state::AppState;
use crate::{paths, responses};

pub(crate) async fn rate_limits(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let Some(caller) = request.extensions().get::<Caller>().cloned() else {
        return responses::unavailable("the caller is unknown");
    };
    let ip = state.addresses.of(request.headers(), request.extensions());
    let this_endpoint = paths::endpoint(&http::Method::GET, paths::RATE_LIMITS);
    let (tier, dimensions) = {
        let subjects = state.subjects.load();
        (
            subjects.tier_of(&caller),
            subjects.dimensions(request.headers()),
        )
    };
    let dimensions: Vec<(&str, &str)> = (dimensions.iter())
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let table = state.policies.current();
    let keys: Vec<_> = table
        .policies_for(tier.as_deref())
        .iter()
        // A shared policy counts everyone's requests: its remaining quota would let one user
        // watch everyone's traffic.
        .filter(|policy| !policy.scope().is_shared())
        .filter_map(|policy| {
            // Endpoint-bound policies are reported for their endpoint.
            let endpoint = policy.endpoint().unwrap_or(&this_endpoint);
            let mut ctx = RequestContext::new()
                .user(&caller.user)
                .endpoint(endpoint)
                .dimensions(&dimensions);
            if let Some(ip) = ip {
                ctx = ctx.ip(ip);
            }
            policy.key_for(&ctx)
        })
        .collect();

    match state.limiter.peek(&keys, 1).await {
        Ok(decision) => responses::json(
            StatusCode::OK,
            &json!({ "tier": tier.as_deref(), "policies": report(&decision) }),
        ),
        Err(error) => responses::unavailable(format!("the rate limiter is unavailable: {error}")),
    }
}

fn report(decision: &Decision<'_>) -> Vec<Value> {
    let now = decision.now().as_micros();
    decision
        .policies()
        .iter()
        .map(|d| {
            let policy = d.policy();
            let reset =
                (now + u64::try_from(d.reset_after().as_micros()).unwrap_or(0)).div_ceil(1_000_000);
            json!({
                "name": policy.name(),
                "scope": policy.scope().as_str(),
                "algorithm": policy.algorithm().as_str(),
                "endpoint": policy.endpoint(),
                "dimension": policy.dimension(),
                "mode": policy.mode().as_str(),
                "limit": d.limit(),
                "window_seconds": policy.window().as_secs_f64(),
                "remaining": d.remaining(),
                "reset": reset,
            })
        })
        .collect()
}
