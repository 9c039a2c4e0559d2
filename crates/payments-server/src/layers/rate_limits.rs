//! Rate limits: tollgate-http's layer, keyed on the caller, the client address (behind trusted
//! proxies) and the route's own endpoint.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::ConnectInfo;
use http::{Extensions, HeaderMap, Method};
use tollgate_http::RequestHead;
use tollgate_http::client_ip::{TrustedProxies, client_ip};
use tollgate_http::ratelimit::{RateLimitLayer, Subject};
use tollgate_ratelimit::{DynRateLimiter, LivePolicies};

use crate::anonymous::AnonymousLimit;
use crate::auth::Caller;
use crate::paths;
use crate::subjects::Subjects;

/// Where requests come from, behind the trusted proxies (replaced whole by a reload).
#[derive(Clone, Debug)]
pub(crate) struct ClientAddresses(pub(crate) Arc<ArcSwap<TrustedProxies>>);

impl ClientAddresses {
    /// The client's address: the peer, or the first untrusted hop its trusted proxies name.
    pub(crate) fn of(&self, headers: &HeaderMap, extensions: &Extensions) -> Option<IpAddr> {
        let peer = extensions.get::<ConnectInfo<SocketAddr>>()?.0.ip();
        Some(client_ip(peer, headers, &self.0.load()))
    }
}

/// The limits of a public route: the strangers' bucket (per address, and the ceiling of all
/// strangers), never a policy an authenticated request also consumes.
pub(crate) fn for_public_route(
    strangers: &AnonymousLimit,
    addresses: ClientAddresses,
) -> RateLimitLayer {
    RateLimitLayer::new(
        strangers.limiter(),
        strangers.policies().clone(),
        move |head: &RequestHead<'_>| Subject {
            user: None,
            ip: addresses.of(head.headers(), head.extensions()),
            ..Subject::default()
        },
    )
}

/// What the limits of an authenticated route decide with: the limiter, the policy table, the
/// users' tiers and dimensions (each replaced whole by a reload), and the client address.
#[derive(Clone, Debug)]
pub(crate) struct RouteLimits {
    pub(crate) limiter: Arc<dyn DynRateLimiter>,
    pub(crate) policies: LivePolicies,
    pub(crate) subjects: Arc<ArcSwap<Subjects>>,
    pub(crate) addresses: ClientAddresses,
}

impl RouteLimits {
    /// The limits of `method template`: every policy that applies to the caller, its address
    /// and this endpoint, decided together.
    pub(crate) fn layer(&self, method: &Method, template: &str) -> RateLimitLayer {
        let endpoint = paths::endpoint(method, template);
        let RouteLimits {
            subjects,
            addresses,
            ..
        } = self.clone();
        RateLimitLayer::new(
            Arc::clone(&self.limiter),
            self.policies.clone(),
            move |head: &RequestHead<'_>| {
                let caller = head.extensions().get::<Caller>();
                let subjects = subjects.load();
                Subject {
                    user: caller.map(|caller| caller.user.as_ref().to_owned()),
                    ip: addresses.of(head.headers(), head.extensions()),
                    endpoint: Some(endpoint.clone()),
                    tier: caller
                        .and_then(|caller| subjects.tier_of(caller))
                        .map(|tier| tier.as_ref().to_owned()),
                    dimensions: subjects.dimensions(head.headers()),
                }
            },
        )
    }
}
