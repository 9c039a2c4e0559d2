//! Rate limits: tollgate-http's layer, keyed on the caller, the client address (behind trusted
//! proxies) and the route's own endpoint.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::ConnectInfo;
use http::{Extensions, HeaderMap, Method};
use tollgate_http::RequestHead;
use tollgate_http::client_ip::client_ip;
use tollgate_http::ratelimit::{RateLimitLayer, Subject};

use crate::auth::Caller;
use crate::paths;
use crate::state::AppState;

/// The client's address: the peer, or the first untrusted hop its trusted proxies name.
pub(crate) fn client_address(
    state: &AppState,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> Option<IpAddr> {
    let peer = extensions.get::<ConnectInfo<SocketAddr>>()?.0.ip();
    Some(client_ip(peer, headers, &state.trusted_proxies.load()))
}

/// The limits of a public route: the strangers' bucket (per address, and the ceiling of all
/// strangers), never a policy an authenticated request also consumes.
pub(crate) fn for_public_route(state: &Arc<AppState>) -> RateLimitLayer {
    let extractor_state = Arc::clone(state);
    RateLimitLayer::new(
        state.anonymous.limiter(),
        state.anonymous.policies().clone(),
        move |head: &RequestHead<'_>| Subject {
            user: None,
            ip: client_address(&extractor_state, head.headers(), head.extensions()),
            ..Subject::default()
        },
    )
}

/// The limits of `method template`: every policy that applies to the caller, its address and
/// this endpoint, decided together.
pub(crate) fn for_route(state: &Arc<AppState>, method: Method, template: &str) -> RateLimitLayer {
    let endpoint = paths::endpoint(&method, template);
    let extractor_state = Arc::clone(state);
    RateLimitLayer::new(
        Arc::clone(&state.limiter),
        state.policies.clone(),
        move |head: &RequestHead<'_>| {
            let state = &extractor_state;
            let caller = head.extensions().get::<Caller>();
            let subjects = state.subjects.load();
            Subject {
                user: caller.map(|caller| caller.user.as_ref().to_owned()),
                ip: client_address(state, head.headers(), head.extensions()),
                endpoint: Some(endpoint.clone()),
                tier: caller
                    .and_then(|caller| subjects.tier_of(caller))
                    .map(|tier| tier.as_ref().to_owned()),
                dimensions: subjects.dimensions(head.headers()),
            }
        },
    )
}
