//! The client's address behind reverse proxies, for per-IP limits.
//!
//! `X-Forwarded-For` is only believed as far as the proxies you trust: walking it from the right,
//! each hop added by a trusted proxy is skipped, and the first address not in the trusted set is
//! the client. With no trusted proxies the peer address is the client, whatever the header says
//! (anyone can send `X-Forwarded-For`).
//!
//! # Example
//!
//! ```
//! use std::net::IpAddr;
//! use http::HeaderMap;
//! use tollgate_http::client_ip::{client_ip, TrustedProxies};
//!
//! let proxy: IpAddr = "10.0.0.2".parse().unwrap();
//! let mut headers = HeaderMap::new();
//! headers.insert("x-forwarded-for", "203.0.113.7, 198.51.100.1, 10.0.0.9".parse().unwrap());
//!
//! let trusted = TrustedProxies::new(["10.0.0.2".parse().unwrap(), "10.0.0.9".parse().unwrap()]);
//! assert_eq!(client_ip(proxy, &headers, &trusted), "198.51.100.1".parse::<IpAddr>().unwrap());
//! // Untrusted peer: the header is ignored.
//! assert_eq!(client_ip(proxy, &headers, &TrustedProxies::none()), proxy);
//! // A dual-stack listener reports the proxy as ::ffff:10.0.0.2: still the trusted proxy.
//! let mapped: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
//! assert_eq!(client_ip(mapped, &headers, &trusted), "198.51.100.1".parse::<IpAddr>().unwrap());
//! ```

use std::net::IpAddr;

use http::HeaderMap;

/// The reverse proxies whose `X-Forwarded-For` entries are believed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpAddr>);

impl TrustedProxies {
    /// Trust exactly these addresses (IPv4-mapped IPv6 ones as the IPv4 address they map).
    pub fn new(proxies: impl IntoIterator<Item = IpAddr>) -> Self {
        TrustedProxies(proxies.into_iter().map(canonical).collect())
    }

    /// Trust nobody: the peer is the client.
    pub fn none() -> Self {
        TrustedProxies(Vec::new())
    }

    /// Whether `ip` is one of the trusted proxies (an IPv4-mapped address as the IPv4 address it
    /// maps). A server can use it to treat a proxy's connections as many clients' connections.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&canonical(ip))
    }
}

/// An IPv4 address a dual-stack socket reports as IPv4-mapped IPv6 (`::ffff:10.0.0.1`) is the
/// IPv4 address it maps: proxies are configured, and clients limited, by that.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client address for a request that arrived from `peer` with `headers`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = canonical(peer);
    if !trusted.contains(peer) {
        return peer;
    }
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>().map(canonical) {
            Ok(ip) if trusted.contains(ip) => client = ip,
            Ok(ip) => return ip,
            // A malformed hop: stop believing the header at this point.
            Err(_) => return client,
        }
    }
    client
}
