//! Serving the app with hyper: the connection-level tuning axum's own `serve` does not expose —
//! a deadline for the request head, `TCP_NODELAY`, half-closed clients — and a graceful drain.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use crate::config::Timeouts;

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and waits up to
/// `timeouts.shutdown_grace` for the requests in flight.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    timeouts: &Timeouts,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
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
        connection(&graceful, stream, peer, app.clone(), timeouts);
    }
    drop(listener);
    tracing::info!("shutting down: no new connections, draining requests in flight");
    let grace = timeouts.shutdown_grace;
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all requests answered"),
        () = tokio::time::sleep(grace) => tracing::warn!(?grace, "requests still in flight after the grace period"),
    }
}

/// Serves one connection, watched by `graceful`.
fn connection(
    graceful: &GracefulShutdown,
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    timeouts: &Timeouts,
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
        .serve_connection(TokioIo::new(stream), service);
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%peer, %error, "connection ended with an error");
        }
    });
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Installs the log subscriber: `LOG_LEVEL`'s filter, text or JSON lines.
pub fn init_logging(config: &crate::config::Config) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .map_err(|e| format!("LOG_LEVEL {:?}: {e}", config.log_level))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        crate::config::LogFormat::Json => builder.json().flatten_event(true).init(),
        crate::config::LogFormat::Text => builder.init(),
    }
    Ok(())
}
