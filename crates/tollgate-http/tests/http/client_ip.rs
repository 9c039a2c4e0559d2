use std::net::IpAddr;

use http::HeaderMap;
use tollgate_http::client_ip::{TrustedProxies, client_ip};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[test]
fn forwarded_for_is_believed_only_through_trusted_hops() {
    let trusted = TrustedProxies::new([ip("10.0.0.1"), ip("10.0.0.2")]);
    let mut headers = HeaderMap::new();
    headers.append("x-forwarded-for", "1.1.1.1".parse().expect("value"));
    headers.append(
        "x-forwarded-for",
        "2.2.2.2, 10.0.0.2".parse().expect("value"),
    );
    assert_eq!(
        client_ip(ip("10.0.0.1"), &headers, &trusted),
        ip("2.2.2.2"),
        "rightmost untrusted hop"
    );

    let mut spoofed = HeaderMap::new();
    spoofed.insert(
        "x-forwarded-for",
        "garbage, 10.0.0.2".parse().expect("value"),
    );
    assert_eq!(
        client_ip(ip("10.0.0.1"), &spoofed, &trusted),
        ip("10.0.0.2"),
        "stops at a malformed hop"
    );

    let mut only_proxies = HeaderMap::new();
    only_proxies.insert("x-forwarded-for", "10.0.0.2".parse().expect("value"));
    assert_eq!(
        client_ip(ip("10.0.0.1"), &only_proxies, &trusted),
        ip("10.0.0.2")
    );
    assert_eq!(
        client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
        ip("10.0.0.1")
    );
}
