//! Authentication as a layer: [`RequireKey`] admits a request that presents a configured key
//! (see [`crate::auth`]) and marks its answer, so only callers get an access-log line each.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::StatusCode;
use tower_http::validate_request::ValidateRequest;

use super::rate_limits::ClientAddresses;
use crate::anonymous::AnonymousLimit;
use crate::auth::{KeyDirectory, Presented};

/// Put in the extensions of every answer to a request a valid key admitted (by
/// [`mark_authenticated`] inside [`RequireKey`]): only those get an access-log line each.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Authenticated;

/// Marks `response` as the answer to an authenticated request.
pub(crate) fn mark_authenticated(mut response: Response) -> Response {
    response.extensions_mut().insert(Authenticated);
    response
}

/// Admits requests that present a configured key — from the head, before any body is read —
/// and puts the [`Caller`](crate::auth::Caller) in their extensions. Otherwise `400` for more than one
/// `Authorization` header, `401`, or `429` once the address has sent too many requests without
/// a valid key.
/// tower-http's `ValidateRequestHeaderLayer::custom` runs it.
#[derive(Clone, Debug)]
pub(crate) struct RequireKey(Arc<KeyCheck>);

/// What [`RequireKey`] decides with, shared: a request clones one pointer.
#[derive(Debug)]
struct KeyCheck {
    keys: Arc<KeyDirectory>,
    /// Where a request without a valid key is counted.
    strangers: AnonymousLimit,
    addresses: ClientAddresses,
}

impl RequireKey {
    pub(crate) fn new(
        keys: Arc<KeyDirectory>,
        strangers: AnonymousLimit,
        addresses: ClientAddresses,
    ) -> Self {
        RequireKey(Arc::new(KeyCheck {
            keys,
            strangers,
            addresses,
        }))
    }
}

impl ValidateRequest<Body> for RequireKey {
    type ResponseBody = Body;

    fn validate(&mut self, request: &mut Request) -> Result<(), Response> {
        let check = &self.0;
        let refusal = match check.keys.authenticate(request.headers()) {
            Ok(caller) => {
                tracing::Span::current().record("user.id", caller.user.as_ref());
                request.extensions_mut().insert(caller);
                return Ok(());
            }
            Err(Presented::Repeated) => {
                crate::responses::simple(StatusCode::BAD_REQUEST, "send one Authorization header")
            }
            Err(Presented::Missing | Presented::Unknown) => {
                let ip = check.addresses.of(request.headers(), request.extensions());
                check.strangers.refuse(ip)
            }
        };
        Err(refusal)
    }
}
