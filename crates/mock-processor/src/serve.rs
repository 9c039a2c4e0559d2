//! The accept loop: one HTTP/1.1 connection task per client, where an answer marked
//! [`LoseAnswer`] closes the connection instead of being sent.

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::routes::LoseAnswer;

/// Why a connection was closed unanswered.
#[derive(Debug, thiserror::Error)]
#[error("answer lost on purpose (injected fault)")]
struct Lost;

/// What a client may hold: a slow or idle client cannot keep connections open forever, nor
/// open as many as it likes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    /// The longest a client may take to finish a TLS handshake, or to send a request head.
    pub(crate) header_timeout: Duration,
    /// Connections open at once.
    pub(crate) max_connections: usize,
}

/// Serves `router` on `listener` (over TLS with `tls`, within `bounds`) until `stop` resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    (tls, bounds): (Option<TlsAcceptor>, Bounds),
    stop: impl Future<Output = ()>,
) {
    let places = Arc::new(Semaphore::new(bounds.max_connections));
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, most likely: keep serving the open connections.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => return,
        };
        let Ok(place) = Arc::clone(&places).try_acquire_owned() else {
            // Full: closed at once, before anything is read.
            tracing::debug!("connection refused: max_connections open");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    let handshake = acceptor.accept(stream);
                    match tokio::time::timeout(bounds.header_timeout, handshake).await {
                        Ok(Ok(stream)) => connection(stream, router, bounds).await,
                        Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
                None => connection(stream, router, bounds).await,
            }
            drop(place);
        });
    }
}

/// One HTTP/1.1 connection.
async fn connection<I>(io: I, router: Router, bounds: Bounds)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let router = router.clone();
        async move {
            let response = match router.oneshot(request.map(axum::body::Body::new)).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            // hyper closes a connection whose service fails, without a response.
            if response.extensions().get::<LoseAnswer>().is_some() {
                return Err(Lost);
            }
            Ok::<_, Lost>(response)
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.header_timeout)
        .serve_connection(TokioIo::new(io), service);
    if let Err(error) = connection.await {
        tracing::debug!(%error, "connection closed");
    }
}

/// A TLS acceptor for the PEM certificate chain and key at these paths.
pub(crate) fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
    .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Resolves at SIGTERM or SIGINT.
pub(crate) async fn signalled() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
