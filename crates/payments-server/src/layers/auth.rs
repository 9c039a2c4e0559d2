//! Authentication as a layer: [`RequireKey`] admits a request that presents a configured key
//! (see [`crate::auth`]) and marks its answer, so only callers get an access-log line each.

use axum::extract::Request;
use axum::response::Response;
use http::StatusCode;

use super::limits::client_address;
use super::stage::Check;
use crate::auth::{Caller, Presented};
use crate::state::AppState;

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
/// and puts the [`Caller`] in their extensions. Otherwise `400` for more than one
/// `Authorization` header, `401`, or `429` once the address has sent too many requests without
/// a valid key.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequireKey;

impl Check for RequireKey {
    fn check(&self, state: &AppState, request: &mut Request) -> Option<Response> {
        let refusal = match state.keys.authenticate(request.headers()) {
            Ok(user) => {
                tracing::Span::current().record("user", user.as_ref());
                request.extensions_mut().insert(Caller(user));
                return None;
            }
            Err(Presented::Repeated) => {
                crate::problem::simple(StatusCode::BAD_REQUEST, "send one Authorization header")
            }
            Err(Presented::Missing | Presented::Unknown) => {
                let ip = client_address(state, request.headers(), request.extensions());
                state.anonymous.refuse(ip)
            }
        };
        Some(refusal)
    }
}
