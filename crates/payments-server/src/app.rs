//! [`app`]: the whole HTTP surface as an axum `Router`, a function of the state.
//!
//! Built bottom-up; nothing calls back into it. A request goes, one way:
//!
//! ```text
//! request id → span → duration → deadline → router
//!   public:        body (413/408) → deadline (503) → [limits (429)] → probe / retry-config
//!   authenticated: auth (401) → body (413/408) →
//!     POST payments: accounting → deadline (503) → limits (429) → JSON (415)
//!                    → idempotency (400/409/422, replay) → payment handler
//!     simulate:      plan (400/415/422) → deadline → limits → fan-out through the payment
//!                    pipeline above
//!     other routes:  deadline (503) → limits (429) → handler
//! ```

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::IntoResponse;
use axum::routing::{get, post, post_service, MethodRouter};
use axum::Router;
use http::Method;
use tollgate_http::idempotency::{IdempotencyLayer, Identity};
use tollgate_http::RequestHead;
use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::{self, Caller};
use crate::handlers::simulate::{self, Pipeline};
use crate::handlers::{self, audit, limits, payments, probes};
use crate::layers::limits::for_route as limits_layer;
use crate::layers::request_id::{self, UuidV7, X_REQUEST_ID};
use crate::layers::{accounting, body, deadline, json, observe};
use crate::paths;
use crate::state::AppState;

/// The server's router over `state`. Serve it with `ConnectInfo<SocketAddr>` in each request's
/// extensions (per-IP limits and trusted proxies need the peer address).
pub fn app(state: Arc<AppState>) -> Router {
    let payments = payment_pipeline(&state);
    Router::new()
        .merge(public_routes(&state))
        .merge(authenticated_routes(&state, payments))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .map_request(request_id::drop_unusable)
                .layer(SetRequestIdLayer::new(X_REQUEST_ID, UuidV7))
                .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(observe::span)
                        .on_request(())
                        .on_response(observe::log_answer)
                        .on_failure(()),
                )
                .layer(from_fn_with_state(Arc::clone(&state), observe::measure))
                .layer(from_fn_with_state(Arc::clone(&state), deadline::start)),
        )
        .with_state(state)
}

/// `route` under the request deadline.
fn timed(state: &Arc<AppState>, route: MethodRouter<Arc<AppState>>) -> MethodRouter<Arc<AppState>> {
    route.layer(from_fn_with_state(Arc::clone(state), deadline::enforce))
}

/// `route` under the rate limits of `method template`, then the request deadline.
fn limited(
    state: &Arc<AppState>,
    method: Method,
    template: &str,
    route: MethodRouter<Arc<AppState>>,
) -> MethodRouter<Arc<AppState>> {
    timed(state, route.layer(limits_layer(state, method, template)))
}

/// Probes and metrics (never rate limited: an overloaded server must still answer its
/// orchestrator and its monitoring) and the public retry policy.
fn public_routes(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route(paths::HEALTH, timed(state, get(probes::health)))
        .route(paths::READY, timed(state, get(probes::ready)))
        .route(paths::METRICS, timed(state, get(probes::metrics)))
        .route(
            paths::RETRY_CONFIG,
            limited(
                state,
                Method::GET,
                paths::RETRY_CONFIG,
                get(probes::retry_config),
            ),
        )
        .route_layer(from_fn_with_state(Arc::clone(state), body::buffer))
}

/// Every route that needs a key: refused before the body is read and before any limit, so
/// anonymous traffic cannot drain the quota authenticated users depend on.
fn authenticated_routes(state: &Arc<AppState>, payments: Pipeline) -> Router<Arc<AppState>> {
    let simulate =
        post(|State(payments): State<Pipeline>, request: Request| simulate::run(payments, request))
            .layer(limits_layer(state, Method::POST, paths::SIMULATE))
            .layer(from_fn_with_state(Arc::clone(state), deadline::enforce))
            .layer(from_fn(simulate::plan))
            .with_state(payments.clone());
    Router::new()
        .route(paths::PAYMENTS, post_service(payments))
        .route(
            paths::PAYMENT,
            limited(
                state,
                Method::GET,
                paths::PAYMENT,
                get(payments::get_payment),
            ),
        )
        .route(
            paths::RATE_LIMITS,
            limited(
                state,
                Method::GET,
                paths::RATE_LIMITS,
                get(limits::rate_limits),
            ),
        )
        .route(
            paths::AUDIT_LOGS,
            limited(
                state,
                Method::GET,
                paths::AUDIT_LOGS,
                get(audit::audit_logs),
            ),
        )
        .route(paths::SIMULATE, simulate)
        .route_layer(from_fn_with_state(Arc::clone(state), body::buffer))
        .route_layer(from_fn_with_state(Arc::clone(state), auth::require_key))
}

/// `POST /api/v1/payments` below authentication: accounting → deadline → limits → JSON →
/// idempotency → the payment handler. `simulate-concurrent` sends its copies through it too.
fn payment_pipeline(state: &Arc<AppState>) -> Pipeline {
    let scoped = |head: &RequestHead<'_>| {
        let caller = head.extensions().get::<Caller>()?;
        Some(Identity::new(caller.0.as_ref(), paths::PAYMENTS))
    };
    let stack = ServiceBuilder::new()
        .layer(from_fn_with_state(Arc::clone(state), accounting::payments))
        .layer(from_fn_with_state(Arc::clone(state), deadline::enforce))
        .layer(limits_layer(state, Method::POST, paths::PAYMENTS))
        .layer(from_fn(json::require_json))
        .map_response(IntoResponse::into_response)
        .layer(IdempotencyLayer::new(
            Arc::clone(&state.idempotency),
            scoped,
        ))
        .service(payments::create_payment.with_state(Arc::clone(state)));
    BoxCloneSyncService::new(stack)
}
