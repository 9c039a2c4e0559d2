//! `payments-server healthcheck`: one `GET /ready` to the server on this machine, for a
//! container's health check (the image has no curl).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Longer than the readiness probe's own deadline for a backend (2 s).
const TIMEOUT: Duration = Duration::from_secs(5);

/// `Ok` when the server listening on `bind` (or, for an unspecified address, on loopback)
/// answers `GET /ready` with `200`.
pub fn check(bind: SocketAddr) -> Result<(), String> {
    let address = match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), bind.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), bind.port())
        }
        _ => bind,
    };
    let mut stream =
        TcpStream::connect_timeout(&address, TIMEOUT).map_err(|e| format!("{address}: {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| format!("{address}: {e}"))?;
    write!(
        stream,
        "GET /ready HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("{address}: {e}"))?;
    let mut head = [0_u8; 64];
    let read = stream
        .read(&mut head)
        .map_err(|e| format!("{address}: {e}"))?;
    let status = String::from_utf8_lossy(&head[..read])
        .split_whitespace()
        .nth(1)
        .map(str::to_owned)
        .unwrap_or_default();
    if status == "200" {
        Ok(())
    } else {
        Err(format!(
            "GET http://{address}/ready answered {status:?}, not 200"
        ))
    }
}
