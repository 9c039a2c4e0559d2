//! [`app`]: the whole HTTP surface as an axum `Router`, a function of the state.
//!
//! Built bottom-up; nothing calls back into it. Each route is one concrete stack, so a request
//! clones no boxed services on its way down. A request goes, one way:
//!
//! ```text
//! request id → no-store → span → measure → router
//!   probes:          deadline (body 413/408, answer 503) → handler
//!   retry-config:    deadline → the strangers' limits (429) → handler
//!   authenticated:   auth (401) →
//!     POST payments: accounting → deadline → limits → body (413/408) → JSON (415)
//!                    → idempotency (400/409/422, replay) → payment handler
//!     simulate:      deadline → check (400/415/422) → limits → fan-out through the
//!                    payment stack above (from accounting on)
//!     other routes:  deadline → limits → handler
//! ```

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on_service};
use http::Method;
use http::header::{CACHE_CONTROL, HeaderValue};
use tollgate_http::RequestHead;
use tollgate_http::idempotency::{IdempotencyLayer, Identity};
use tower::ServiceBuilder;
use tower::util::MapResponseLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use tower_http::validate_request::ValidateRequestHeaderLayer;

use crate::auth::Caller;
use crate::handlers::simulate;
use crate::handlers::{self, audit, payments, probes, rate_limits};
use crate::layers::accounting::Accounting;
use crate::layers::auth::{RequireKey, mark_authenticated};
use crate::layers::body::ReadBody;
use crate::layers::claim::ClaimWithIntent;
use crate::layers::deadline::{BodyRead, DeadlineLayer};
use crate::layers::json::RequireJson;
use crate::layers::observe::{self, Measure};
use crate::layers::rate_limits::{for_public_route as public_limits, for_route as limits_layer};
use crate::layers::request_id::{self, UuidV7, X_REQUEST_ID};
use crate::layers::stage::{AroundLayer, Next, StageLayer};
use crate::paths;
use crate::state::AppState;

/// The server's router over `state`. Serve it with `ConnectInfo<SocketAddr>` in each request's
/// extensions (per-IP limits and trusted proxies need the peer address).
pub fn app(state: Arc<AppState>) -> Router {
    let span_state = Arc::clone(&state);
    routes(&state)
        .layer(
            ServiceBuilder::new()
                .map_request(request_id::drop_unusable)
                .layer(SetRequestIdLayer::new(X_REQUEST_ID, UuidV7))
                .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
                // Payments, audit trails and quotas are one caller's and change: no cache, shared
                // or private, may keep them.
                .layer(SetResponseHeaderLayer::overriding(
                    CACHE_CONTROL,
                    HeaderValue::from_static("no-store"),
                ))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(move |request: &Request| {
                            observe::span(&span_state, request)
                        })
                        .on_request(())
                        .on_response(())
                        .on_failure(()),
                )
                .layer(AroundLayer::new(Measure(Arc::clone(&state)))),
        )
        .with_state(state)
}

/// Every route, each with the layers its access needs.
fn routes(s: &Arc<AppState>) -> Router<Arc<AppState>> {
    let payments = payment_pipeline(s);
    Router::new()
        .route(
            paths::HEALTH,
            route(s, Method::GET, paths::HEALTH, Access::Probe, probes::health),
        )
        .route(
            paths::READY,
            route(s, Method::GET, paths::READY, Access::Probe, probes::ready),
        )
        .route(
            paths::METRICS,
            route(
                s,
                Method::GET,
                paths::METRICS,
                Access::Probe,
                probes::metrics,
            ),
        )
        .route(
            paths::RETRY_CONFIG,
            route(
                s,
                Method::GET,
                paths::RETRY_CONFIG,
                Access::Public,
                probes::retry_config,
            ),
        )
        .route(paths::PAYMENTS, payments_route(s, payments.clone()))
        .route(
            paths::PAYMENT,
            route(
                s,
                Method::GET,
                paths::PAYMENT,
                Access::Authenticated,
                payments::get_payment,
            ),
        )
        .route(
            paths::RATE_LIMITS,
            route(
                s,
                Method::GET,
                paths::RATE_LIMITS,
                Access::Authenticated,
                rate_limits::rate_limits,
            ),
        )
        .route(
            paths::AUDIT_LOGS,
            route(
                s,
                Method::GET,
                paths::AUDIT_LOGS,
                Access::Authenticated,
                audit::audit_logs,
            ),
        )
        .route(paths::SIMULATE, simulate_route(s, payments))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
}

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    /// Anyone, never rate limited: an overloaded server must still answer its orchestrator and
    /// its monitoring.
    Probe,
    /// Anyone, within the strangers' bucket (per address, and a ceiling of its own): never a
    /// policy an authenticated request needs, so strangers cannot use up users' quotas.
    Public,
    /// A caller with a key, refused before the body is read and before any limit, so anonymous
    /// traffic cannot drain the quota authenticated users depend on.
    Authenticated,
}

/// Authentication from the request head (401 or 429 for a stranger, before any body is read).
fn require_key(state: &Arc<AppState>) -> ValidateRequestHeaderLayer<RequireKey> {
    ValidateRequestHeaderLayer::custom(RequireKey(Arc::clone(state)))
}

/// Inside [`RequireKey`]: marks the answers of the requests it admitted, which alone get an
/// access-log line each.
fn authenticated_mark() -> MapResponseLayer<fn(Response) -> Response> {
    MapResponseLayer::new(mark_authenticated)
}

fn filter(method: &Method) -> MethodFilter {
    MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET)
}

/// `handler` on `method template`, behind what `access` asks for, the body limit and the
/// request deadline.
fn route<H, T>(
    state: &Arc<AppState>,
    method: Method,
    template: &str,
    access: Access,
    handler: H,
) -> MethodRouter<Arc<AppState>>
where
    H: Handler<T, Arc<AppState>>,
    T: 'static,
{
    let limits = match access {
        Access::Probe => None,
        Access::Public => Some(public_limits(state)),
        Access::Authenticated => Some(limits_layer(state, method.clone(), template)),
    };
    let authenticated = access == Access::Authenticated;
    let stack = ServiceBuilder::new()
        .option_layer(authenticated.then(|| require_key(state)))
        .option_layer(authenticated.then(authenticated_mark))
        .layer(DeadlineLayer::new(state.timeouts.request, BodyRead::Unread))
        .option_layer(limits)
        .service(handler.with_state(Arc::clone(state)));
    on_service(filter(&method), stack)
}

/// `POST /api/v1/payments`: a caller with a key, then the payment pipeline.
fn payments_route(
    state: &Arc<AppState>,
    payments: impl Next + Sync,
) -> MethodRouter<Arc<AppState>> {
    let stack = ServiceBuilder::new()
        .layer(require_key(state))
        .layer(authenticated_mark())
        .service(payments);
    on_service(MethodFilter::POST, stack)
}

/// `POST /api/v1/simulate-concurrent`: checked whole before its own limit, then fanned out
/// through the payment pipeline; `404` unless `testing.simulate_concurrent` is on (one request
/// is up to 100 payment attempts).
fn simulate_route<P: Next + Sync>(
    state: &Arc<AppState>,
    payments: P,
) -> MethodRouter<Arc<AppState>> {
    if !state.testing.simulate_concurrent {
        return axum::routing::post(handlers::simulate::off);
    }
    let run = |State(payments): State<P>, request: Request| simulate::run(payments, request);
    let stack = ServiceBuilder::new()
        .layer(require_key(state))
        .layer(authenticated_mark())
        .layer(DeadlineLayer::new(state.timeouts.request, BodyRead::Read))
        .layer(StageLayer::new(simulate::PlanFirst))
        .layer(limits_layer(state, Method::POST, paths::SIMULATE))
        .service(run.with_state(payments));
    on_service(MethodFilter::POST, stack)
}

/// `POST /api/v1/payments` below authentication: accounting → deadline → limits → body →
/// JSON → idempotency → the payment handler. The body is read after the limits: a refused
/// request's is never read (a flood of 429s costs no body reads, and a client that waits for
/// `100 Continue` is answered without sending it). `simulate-concurrent` sends its copies
/// through it too. Concrete, not boxed: a boxed service is cloned into a new box on every
/// request.
fn payment_pipeline(state: &Arc<AppState>) -> impl Next + Sync + use<> {
    let scoped = |head: &RequestHead<'_>| {
        let caller = head.extensions().get::<Caller>()?;
        Some(Identity::new(caller.user.as_ref(), paths::PAYMENTS))
    };
    let mut idempotency = IdempotencyLayer::new(Arc::clone(&state.idempotency), scoped);
    if let Some(intents) = &state.payments.intents {
        // A fresh key's claim is written with its pending payment.
        let breaker = state.payments.breaker.clone();
        idempotency = idempotency.claim_hook(ClaimWithIntent::new(intents.clone(), breaker));
    }
    ServiceBuilder::new()
        .layer(AroundLayer::new(Accounting(Arc::clone(state))))
        .layer(DeadlineLayer::new(state.timeouts.request, BodyRead::Later))
        .layer(limits_layer(state, Method::POST, paths::PAYMENTS))
        .layer(StageLayer::new(ReadBody {
            timeout: state.timeouts.request,
        }))
        .layer(ValidateRequestHeaderLayer::custom(RequireJson))
        .map_response(IntoResponse::into_response)
        .layer(idempotency)
        .service(payments::create_payment.with_state(Arc::clone(state)))
}
