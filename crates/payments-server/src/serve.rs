//! Serving the app with hyper: the connection-level tuning axum's own `serve` does not expose —
//! a deadline and a size bound for the request head, `TCP_NODELAY`, half-closed clients,
//! connection caps in all and per client address — and a graceful drain. When to stop is
//! [`crate::signals`]' business, logging [`crate::logging`]'s.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use tollgate_http::client_ip::TrustedProxies;

use crate::config::{LimitsTuning, Timeouts};

/// What one client may hold of the server.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    max_connections: usize,
    max_connections_per_ip: usize,
    max_header_bytes: usize,
    /// Their connections carry many clients' requests: only `max_connections` applies to them.
    proxies: Arc<ArcSwap<TrustedProxies>>,
}

impl ConnectionLimits {
    pub(crate) fn from_config(
        tuning: &LimitsTuning,
        proxies: Arc<ArcSwap<TrustedProxies>>,
    ) -> Self {
        ConnectionLimits {
            max_connections: tuning
                .max_connections
                .unwrap_or_else(default_max_connections),
            max_connections_per_ip: tuning.max_connections_per_ip,
            max_header_bytes: tuning.max_header_bytes,
            proxies,
        }
    }
}

/// The open-files limit less room for pools, the listener and files, between 16 and 10 000:
/// past the limit `accept` fails for everyone, so the cap must come first.
fn default_max_connections() -> usize {
    soft_open_files_limit()
        .unwrap_or(1024)
        .saturating_sub(64)
        .clamp(16, 10_000)
}

/// The soft open-files limit, when the system has one to tell.
#[cfg(unix)]
fn soft_open_files_limit() -> Option<usize> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    usize::try_from(limit.current?).ok()
}

#[cfg(not(unix))]
fn soft_open_files_limit() -> Option<usize> {
    None
}

/// Raises this process's soft open-files limit to its hard limit (at most 1 048 576), so the
/// connection cap derived from it is as high as the system allows; `(before, after)` when it
/// was raised. Call it before [`ConnectionLimits`] are made.
#[cfg(unix)]
pub fn raise_open_files_limit() -> Option<(u64, u64)> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    const CEILING: u64 = 1 << 20;
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current?;
    let target = limit.maximum.unwrap_or(CEILING).min(CEILING);
    if target <= before {
        return None;
    }
    let raised = Rlimit {
        current: Some(target),
        maximum: limit.maximum,
    };
    setrlimit(Resource::Nofile, raised).ok()?;
    Some((before, target))
}

/// Elsewhere there is no open-files limit to raise.
#[cfg(not(unix))]
pub fn raise_open_files_limit() -> Option<(u64, u64)> {
    None
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and waits up to
/// `timeouts.shutdown_grace` for the requests in flight.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    timeouts: &Timeouts,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let admission = Arc::new(Admission::new(limits));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        match admission.admit(peer.ip()) {
            Ok(ticket) => connection(&graceful, stream, peer, app.clone(), timeouts, ticket),
            Err(refusal) => refuse(&stream, refusal),
        }
    }
    drop(listener);
    tracing::info!("shutting down: no new connections, draining requests in flight");
    let grace = timeouts.shutdown_grace;
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all requests answered"),
        () = tokio::time::sleep(grace) => tracing::warn!(?grace, "requests still in flight after the grace period"),
    }
}

/// Serves one connection, watched by `graceful`; `ticket` holds its place under the caps.
fn connection(
    graceful: &GracefulShutdown,
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    timeouts: &Timeouts,
    ticket: Ticket,
) {
    // Answers are small and written whole: never let Nagle hold one back for an ACK.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "TCP_NODELAY not set");
    }
    let service = service_fn(move |request: http::Request<Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(request)
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        // A client that sends its request and shuts its write side still gets its answer.
        .half_close(true)
        .header_read_timeout(timeouts.header_read)
        // A longer request line or header block is refused (431) before anything counts it.
        .max_buf_size(ticket.max_header_bytes)
        .serve_connection(TokioIo::new(stream), service);
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%peer, %error, "connection ended with an error");
        }
        drop(ticket);
    });
}

/// Why a connection was turned away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Turned {
    /// The server holds `max_connections`.
    Full,
    /// This address holds `max_connections_per_ip`.
    TooManyFromAddress,
}

/// An address may hold at most 1 / `FREE_SHARE` of the places still free.
const FREE_SHARE: usize = 8;

/// Open connections, in all and per address (IPv6 by /64, like the rate limits).
#[derive(Debug)]
struct Admission {
    limits: ConnectionLimits,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// A connection's place under the caps, given back when it closes.
#[derive(Debug)]
struct Ticket {
    admission: Arc<Admission>,
    /// The address group it counts against; `None` for a trusted proxy.
    address: Option<IpAddr>,
    max_header_bytes: usize,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self.admission.open.lock();
        open.0 -= 1;
        let Some(address) = self.address else {
            return;
        };
        if let Some(count) = open.1.get_mut(&address) {
            *count -= 1;
            if *count == 0 {
                open.1.remove(&address);
            }
        }
    }
}

/// The address a connection counts against: IPv4 (IPv4-mapped included) as is, IPv6 by /64.
fn address_group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1_u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

impl Admission {
    fn new(limits: ConnectionLimits) -> Self {
        Admission {
            limits,
            open: Mutex::new((0, HashMap::new())),
        }
    }

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Turned> {
        let address = address_group(ip);
        let mut open = self.open.lock();
        if open.0 >= self.limits.max_connections {
            return Err(Turned::Full);
        }
        let address = (!self.limits.proxies.load().contains(ip)).then_some(address);
        if let Some(address) = address {
            // An address's share shrinks as the server fills: it may hold at most an eighth of
            // the places still free, so each address that takes all it can leaves eight ninths
            // of the room it found (8 addresses leave 39 % of the places, 40 leave 1 %).
            let free = self.limits.max_connections - open.0;
            let from_address = open.1.entry(address).or_insert(0);
            if *from_address >= self.limits.max_connections_per_ip
                || *from_address * FREE_SHARE >= free
            {
                return Err(Turned::TooManyFromAddress);
            }
            *from_address += 1;
        }
        open.0 += 1;
        Ok(Ticket {
            admission: Arc::clone(self),
            address,
            max_header_bytes: self.limits.max_header_bytes,
        })
    }
}

/// Tells a refused client why in one write that never waits, then closes: a client that does
/// not read cannot hold the server.
fn refuse(stream: &TcpStream, refusal: Turned) {
    let (status, detail) = match refusal {
        Turned::Full => (
            "503 Service Unavailable",
            "the server holds as many connections as it serves",
        ),
        Turned::TooManyFromAddress => (
            "429 Too Many Requests",
            "too many connections from this address",
        ),
    };
    let body = format!(
        "{{\"type\":\"about:blank\",\"title\":\"{}\",\"status\":{},\"detail\":\"{detail}\"}}",
        &status[4..],
        &status[..3]
    );
    let answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(answer.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(proxies: &[&str]) -> Arc<Admission> {
        Arc::new(Admission::new(ConnectionLimits {
            max_connections: 64,
            max_connections_per_ip: 2,
            max_header_bytes: 16 * 1024,
            proxies: Arc::new(ArcSwap::from_pointee(TrustedProxies::new(
                proxies.iter().map(|p| p.parse().expect("an address")),
            ))),
        }))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn an_address_holds_at_most_its_share_until_a_connection_closes() {
        let admission = admission(&[]);
        let first = admission.admit(ip("198.51.100.1")).expect("first");
        let _second = admission
            .admit(ip("::ffff:198.51.100.1"))
            .expect("second, mapped");
        assert_eq!(
            admission.admit(ip("198.51.100.1")).err(),
            Some(Turned::TooManyFromAddress)
        );
        drop(first);
        let _third = admission
            .admit(ip("198.51.100.1"))
            .expect("a place was given back");
        // Other addresses, one after another, until the server is full.
        let mut held = Vec::new();
        for n in 2..=255 {
            match admission.admit(ip(&format!("198.51.100.{n}"))) {
                Ok(ticket) => held.push(ticket),
                Err(refusal) => {
                    assert_eq!(refusal, Turned::Full);
                    assert_eq!(held.len(), 62, "every place taken");
                    return;
                }
            }
        }
        panic!("never full");
    }

    #[test]
    fn an_address_never_holds_more_than_the_places_still_free() {
        let admission = Arc::new(Admission::new(ConnectionLimits {
            max_connections: 90,
            max_connections_per_ip: 1_000,
            max_header_bytes: 16 * 1024,
            proxies: Arc::default(),
        }));
        let mut held = Vec::new();
        let mut shares = Vec::new();
        for n in 1..=8_u8 {
            let address = ip(&format!("198.51.100.{n}"));
            let before = held.len();
            while let Ok(ticket) = admission.admit(address) {
                held.push(ticket);
            }
            shares.push(held.len() - before);
        }
        // Each address got less than the last; room is left after all eight.
        assert_eq!(shares, [10, 9, 8, 7, 7, 6, 5, 5], "{shares:?}");
        assert!(
            admission.admit(ip("198.51.100.9")).is_ok(),
            "a new client still gets in"
        );
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_prefix() {
        let admission = admission(&[]);
        let _a = admission.admit(ip("2001:db8::1")).expect("first");
        let _b = admission.admit(ip("2001:db8::ffff:2")).expect("second");
        assert_eq!(
            admission.admit(ip("2001:db8::3")).err(),
            Some(Turned::TooManyFromAddress)
        );
        assert!(
            admission.admit(ip("2001:db8:0:1::1")).is_ok(),
            "another /64"
        );
    }

    #[test]
    fn a_trusted_proxy_is_held_only_to_the_total() {
        let admission = admission(&["10.0.0.1"]);
        let held: Vec<_> = (0..64)
            .map(|_| admission.admit(ip("10.0.0.1")).expect("the proxy"))
            .collect();
        assert_eq!(admission.admit(ip("10.0.0.1")).err(), Some(Turned::Full));
        drop(held);
        assert!(
            admission.open.lock().1.is_empty(),
            "nothing counted per address"
        );
    }
}
