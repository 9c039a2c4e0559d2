//! The client's address behind reverse proxies, for per-IP limits.
//!
//! The forwarding headers are only believed as far as the proxies you trust: walking the chain
//! from the right, each hop added by a trusted proxy is skipped, and the first address not in
//! the trusted set is the client. With no trusted proxies the peer address is the client,
//! whatever the headers say (anyone can send them).
//!
//! The chain is read from the one header your proxies write: `X-Forwarded-For` by default, or
//! RFC 7239's `Forwarded` (its `for=` parameters) with [`TrustedProxies::header`]. Only that
//! one: a proxy passes on whatever other forwarding header the client made up. A hop that is
//! not an address (`for=unknown`, an obfuscated `for=_hidden`, a malformed entry) ends the
//! walk: the last address believed is the client. Trusted proxies are addresses or CIDR ranges
//! (`10.0.0.0/8`, `fd00::/8`).
//!
//! # Example
//!
//! ```
//! use std::net::IpAddr;
//! use http::HeaderMap;
//! use tollgate_http::client_ip::{ForwardedHeader, TrustedProxies, client_ip};
//!
//! let ip = |text: &str| text.parse::<IpAddr>().unwrap();
//! let trusted = TrustedProxies::parse(["10.0.0.0/24"]).unwrap();
//! let mut headers = HeaderMap::new();
//! headers.insert("x-forwarded-for", "203.0.113.7, 198.51.100.1, 10.0.0.9".parse().unwrap());
//! assert_eq!(client_ip(ip("10.0.0.2"), &headers, &trusted), ip("198.51.100.1"));
//! // Untrusted peer: the header is ignored.
//! assert_eq!(client_ip(ip("10.0.0.2"), &headers, &TrustedProxies::none()), ip("10.0.0.2"));
//! // Proxies that write RFC 7239: IPv6 in brackets, ports ignored.
//! let rfc = trusted.clone().header(ForwardedHeader::Forwarded);
//! headers.insert("forwarded", r#"for="[2001:db8::17]:4711", for=10.0.0.9;proto=https"#.parse().unwrap());
//! assert_eq!(client_ip(ip("10.0.0.2"), &headers, &rfc), ip("2001:db8::17"));
//! // The other header is not read: here a client could have written it.
//! assert_eq!(client_ip(ip("10.0.0.2"), &headers, &trusted), ip("198.51.100.1"));
//! // A dual-stack listener reports the proxy as ::ffff:10.0.0.2: still a trusted proxy.
//! assert_eq!(client_ip(ip("::ffff:10.0.0.2"), &headers, &rfc), ip("2001:db8::17"));
//! ```

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use http::HeaderMap;

/// An address range: an address and how many of its leading bits a member shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

/// An [`IpRange`]'s text was not an address or `address/prefix`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or CIDR range (10.0.0.1, 10.0.0.0/8, fd00::/8)")]
pub struct InvalidRange(String);

impl IpRange {
    /// One address (`/32` or `/128`), an IPv4-mapped one as the IPv4 address it maps.
    pub fn host(ip: IpAddr) -> Self {
        let network = canonical(ip);
        let prefix = if network.is_ipv4() { 32 } else { 128 };
        IpRange { network, prefix }
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => same_prefix(
                u128::from(net.to_bits()) << 96,
                u128::from(ip.to_bits()) << 96,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix(net.to_bits(), ip.to_bits(), self.prefix)
            }
            _ => false,
        }
    }
}

fn same_prefix(a: u128, b: u128, prefix: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    a & mask == b & mask
}

impl FromStr for IpRange {
    type Err = InvalidRange;

    fn from_str(text: &str) -> Result<Self, InvalidRange> {
        let invalid = || InvalidRange(text.to_owned());
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let host = IpRange::host(address.parse().map_err(|_| invalid())?);
        let prefix = match prefix {
            None => return Ok(host),
            Some(prefix) => prefix.parse::<u8>().map_err(|_| invalid())?,
        };
        // A mapped IPv4 range (::ffff:10.0.0.0/104) is the IPv4 range it maps.
        let prefix = match (address.parse::<IpAddr>(), host.network) {
            (Ok(IpAddr::V6(_)), IpAddr::V4(_)) => prefix.checked_sub(96).ok_or_else(invalid)?,
            _ => prefix,
        };
        if prefix > host.prefix {
            return Err(invalid());
        }
        Ok(IpRange {
            network: host.network,
            prefix,
        })
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl<'de> serde::Deserialize<'de> for IpRange {
    /// From its text: `10.0.0.1` or `10.0.0.0/8`.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The forwarding header trusted proxies write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, HAProxy, most load balancers).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    Forwarded,
}

/// The reverse proxies whose forwarding header is believed, and which header that is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    ranges: Vec<IpRange>,
    header: ForwardedHeader,
}

impl TrustedProxies {
    /// Trust exactly these addresses (IPv4-mapped IPv6 ones as the IPv4 address they map).
    pub fn new(proxies: impl IntoIterator<Item = IpAddr>) -> Self {
        TrustedProxies::ranges(proxies.into_iter().map(IpRange::host))
    }

    /// Trust every address in these ranges.
    pub fn ranges(ranges: impl IntoIterator<Item = IpRange>) -> Self {
        TrustedProxies {
            ranges: ranges.into_iter().collect(),
            header: ForwardedHeader::default(),
        }
    }

    /// Reads the chain from `header` (`X-Forwarded-For` unless set).
    pub fn header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// Trust the addresses and ranges written here (`10.0.0.1`, `10.0.0.0/8`, `fd00::/8`).
    pub fn parse<'a>(texts: impl IntoIterator<Item = &'a str>) -> Result<Self, InvalidRange> {
        texts
            .into_iter()
            .map(str::parse)
            .collect::<Result<Vec<IpRange>, _>>()
            .map(TrustedProxies::ranges)
    }

    /// Trust nobody: the peer is the client.
    pub fn none() -> Self {
        TrustedProxies::default()
    }

    /// Whether `ip` is a trusted proxy (an IPv4-mapped address as the IPv4 address it maps).
    /// A server can use it to treat a proxy's connections as many clients' connections.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|range| range.contains(ip))
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
    let hops: Vec<Option<IpAddr>> = match trusted.header {
        ForwardedHeader::Forwarded => header_items(headers, http::header::FORWARDED.as_str())
            .map(forwarded_for)
            .collect(),
        ForwardedHeader::XForwardedFor => header_items(headers, "x-forwarded-for")
            .map(|hop| hop.parse().ok())
            .collect(),
    };
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.map(canonical) {
            Some(ip) if trusted.contains(ip) => client = ip,
            Some(ip) => return ip,
            // Not an address: stop believing the chain at this point.
            None => return client,
        }
    }
    client
}

/// The comma-separated items of every `name` header, in order.
fn header_items<'h>(headers: &'h HeaderMap, name: &str) -> impl Iterator<Item = &'h str> + use<'h> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// The address in one `Forwarded` element's `for=` (RFC 7239 §4, §6): `192.0.2.60`,
/// `"192.0.2.60:8080"`, `"[2001:db8::17]"`, `"[2001:db8::17]:4711"`; `None` for `unknown`, an
/// obfuscated identifier, or no `for=` at all.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim())
    })?;
    let value = value.trim_matches('"');
    if let Some(bracketed) = value.strip_prefix('[') {
        return bracketed.split_once(']')?.0.parse().ok();
    }
    let host = match value.split_once(':') {
        // One colon: IPv4 with a port.
        Some((host, port)) if !port.contains(':') => host,
        _ => value,
    };
    host.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn ranges_contain_their_addresses() {
        let range: IpRange = "10.1.0.0/16".parse().expect("valid");
        assert!(range.contains(ip("10.1.255.7")));
        assert!(range.contains(ip("::ffff:10.1.0.1")), "mapped");
        assert!(!range.contains(ip("10.2.0.1")));
        assert!(!range.contains(ip("fd00::1")));
        let v6: IpRange = "fd00::/8".parse().expect("valid");
        assert!(v6.contains(ip("fdff::1")) && !v6.contains(ip("fe80::1")));
        let everything: IpRange = "0.0.0.0/0".parse().expect("valid");
        assert!(everything.contains(ip("203.0.113.9")));
        let mapped: IpRange = "::ffff:10.0.0.0/104".parse().expect("valid");
        assert_eq!(mapped.to_string(), "10.0.0.0/8");
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0/8",
            "x",
            "10.0.0.1/",
            "::ffff:10.0.0.0/90",
        ] {
            assert!(bad.parse::<IpRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_elements() {
        assert_eq!(
            forwarded_for("for=192.0.2.60;proto=http;by=203.0.113.43"),
            Some(ip("192.0.2.60"))
        );
        assert_eq!(
            forwarded_for(r#"For="[2001:db8:cafe::17]:4711""#),
            Some(ip("2001:db8:cafe::17"))
        );
        assert_eq!(
            forwarded_for(r#"for="192.0.2.60:8080""#),
            Some(ip("192.0.2.60"))
        );
        assert_eq!(forwarded_for("for=unknown"), None);
        assert_eq!(forwarded_for("for=_hidden"), None);
        assert_eq!(forwarded_for("proto=https"), None);
    }

    #[test]
    fn an_unknown_hop_ends_the_walk() {
        let trusted = TrustedProxies::parse(["10.0.0.0/8"])
            .expect("valid")
            .header(ForwardedHeader::Forwarded);
        let mut headers = HeaderMap::new();
        headers.insert(
            "forwarded",
            "for=203.0.113.1, for=unknown, for=10.0.0.7"
                .parse()
                .expect("a value"),
        );
        // Through the trusted 10.0.0.7, then a hop nobody can name: the last believed address.
        assert_eq!(
            client_ip(ip("10.0.0.2"), &headers, &trusted),
            ip("10.0.0.7")
        );
        assert!(TrustedProxies::parse(["10.0.0.1", "nope"]).is_err());
    }
}
