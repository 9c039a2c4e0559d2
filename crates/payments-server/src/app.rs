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
use crate::layers::rate_limits::{RouteLimits, for_public_route};
use crate::layers::request_id::{self, UuidV7, X_REQUEST_ID};
use crate::layers::stage::{AroundLayer, Next, StageLayer};
use crate::paths;
use crate::state::AppState;

/// The server's router over `state`. Serve it with `ConnectInfo<SocketAddr>` in each request's
/// extensions (per-IP limits and trusted proxies need the peer address).
pub fn app(state: Arc<AppState>) -> Router {
    let addresses = state.addresses.clone();
    let measure = Measure {
        request_duration: state.metrics.request_duration.clone(),
        rate_limit_decisions: state.metrics.backends.rate_limit_decisions.clone(),
        stranger_log: Arc::clone(&state.stranger_log),
    };
    routes(&Kit::new(&state))
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
                        .make_span_with(move |request: &Request| observe::span(&addresses, request))
                        .on_request(())
                        .on_response(())
                        .on_failure(()),
                )
                .layer(AroundLayer::new(measure)),
        )
        .with_state(state)
}

/// What the routes are built from: the state the handlers read, and the middleware, each
/// holding only what it needs of it.
struct Kit {
    state: Arc<AppState>,
    require_key: RequireKey,
    limits: RouteLimits,
}

impl Kit {
    fn new(state: &Arc<AppState>) -> Self {
        Kit {
            state: Arc::clone(state),
            require_key: RequireKey::new(
                Arc::clone(&state.keys),
                state.anonymous.clone(),
                state.addresses.clone(),
            ),
            limits: RouteLimits {
                limiter: Arc::clone(&state.limiter),
                policies: state.policies.clone(),
                subjects: Arc::clone(&state.subjects),
                addresses: state.addresses.clone(),
            },
        }
    }

    /// Authentication from the request head (401 or 429 for a stranger, before any body is
    /// read).
    fn require_key(&self) -> ValidateRequestHeaderLayer<RequireKey> {
        ValidateRequestHeaderLayer::custom(self.require_key.clone())
    }

    /// `GET template` answered by `handler`, behind what `access` asks for and the request
    /// deadline.
    fn get<H, T>(&self, template: &str, access: Access, handler: H) -> MethodRouter<Arc<AppState>>
    where
        H: Handler<T, Arc<AppState>>,
        T: 'static,
    {
        let limits = match access {
            Access::Probe => None,
            Access::Public => Some(for_public_route(
                &self.state.anonymous,
                self.state.addresses.clone(),
            )),
            Access::Authenticated => Some(self.limits.layer(&Method::GET, template)),
        };
        let authenticated = access == Access::Authenticated;
        let stack = ServiceBuilder::new()
            .option_layer(authenticated.then(|| self.require_key()))
            .option_layer(authenticated.then(authenticated_mark))
            .layer(DeadlineLayer::new(
                self.state.timeouts.request,
                BodyRead::Unread,
            ))
            .option_layer(limits)
            .service(handler.with_state(Arc::clone(&self.state)));
        on_service(MethodFilter::GET, stack)
    }
}

/// Every route, each with the layers its access needs.
fn routes(kit: &Kit) -> Router<Arc<AppState>> {
    use Access::{Authenticated, Probe, Public};
    let payments = payment_pipeline(kit);
    Router::new()
        .route(paths::HEALTH, kit.get(paths::HEALTH, Probe, probes::health))
        .route(paths::READY, kit.get(paths::READY, Probe, probes::ready))
        .route(
            paths::METRICS,
            kit.get(paths::METRICS, Probe, probes::metrics),
        )
        .route(
            paths::RETRY_CONFIG,
            kit.get(paths::RETRY_CONFIG, Public, probes::retry_config),
        )
        .route(paths::PAYMENTS, payments_route(kit, payments.clone()))
        .route(
            paths::PAYMENT,
            kit.get(paths::PAYMENT, Authenticated, payments::get_payment),
        )
        .route(
            paths::RATE_LIMITS,
            kit.get(paths::RATE_LIMITS, Authenticated, rate_limits::rate_limits),
        )
        .route(
            paths::AUDIT_LOGS,
            kit.get(paths::AUDIT_LOGS, Authenticated, audit::audit_logs),
        )
        .route(paths::SIMULATE, simulate_route(kit, payments))
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

/// Inside [`RequireKey`]: marks the answers of the requests it admitted, which alone get an
/// access-log line each.
fn authenticated_mark() -> MapResponseLayer<fn(Response) -> Response> {
    MapResponseLayer::new(mark_authenticated)
}

/// `POST /api/v1/payments`: a caller with a key, then the payment pipeline.
fn payments_route(kit: &Kit, payments: impl Next + Sync) -> MethodRouter<Arc<AppState>> {
    let stack = ServiceBuilder::new()
        .layer(kit.require_key())
        .layer(authenticated_mark())
        .service(payments);
    on_service(MethodFilter::POST, stack)
}

/// `POST /api/v1/simulate-concurrent`: checked whole before its own limit, then fanned out
/// through the payment pipeline; `404` unless `testing.simulate_concurrent` is on (one request
/// is up to 100 payment attempts).
fn simulate_route<P: Next + Sync>(kit: &Kit, payments: P) -> MethodRouter<Arc<AppState>> {
    if !kit.state.testing.simulate_concurrent {
        return axum::routing::post(handlers::simulate::off);
    }
    let run = |State(payments): State<P>, request: Request| simulate::run(payments, request);
    let stack = ServiceBuilder::new()
        .layer(kit.require_key())
        .layer(authenticated_mark())
        .layer(DeadlineLayer::new(
            kit.state.timeouts.request,
            BodyRead::Read,
        ))
        .layer(StageLayer::new(simulate::PlanFirst))
        .layer(kit.limits.layer(&Method::POST, paths::SIMULATE))
        .service(run.with_state(payments));
    on_service(MethodFilter::POST, stack)
}

/// `POST /api/v1/payments` below authentication: accounting → deadline → limits → body →
/// JSON → idempotency → the payment handler. The body is read after the limits: a refused
/// request's is never read (a flood of 429s costs no body reads, and a client that waits for
/// `100 Continue` is answered without sending it). `simulate-concurrent` sends its copies
/// through it too. Concrete, not boxed: a boxed service is cloned into a new box on every
/// request.
fn payment_pipeline(kit: &Kit) -> impl Next + Sync + use<> {
    let state = &kit.state;
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
        .layer(AroundLayer::new(Accounting {
            metrics: Arc::clone(&state.metrics),
            audit: state.audit.clone(),
        }))
        .layer(DeadlineLayer::new(state.timeouts.request, BodyRead::Later))
        .layer(kit.limits.layer(&Method::POST, paths::PAYMENTS))
        .layer(StageLayer::new(ReadBody {
            timeout: state.timeouts.request,
        }))
        .layer(ValidateRequestHeaderLayer::custom(RequireJson))
        .map_response(IntoResponse::into_response)
        .layer(idempotency)
        .service(payments::create_payment.with_state(Arc::clone(state)))
}
