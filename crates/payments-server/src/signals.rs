//! Signals: SIGTERM drains (readiness fails first, for the load balancer), SIGINT stops at
//! once, SIGHUP reloads the policy table.

use std::time::Duration;

use crate::state::AppState;

/// The signal that asked the server to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: an orchestrator replacing the process.
    Terminate,
    /// SIGINT: someone at a terminal.
    Interrupt,
}

/// Resolves on SIGINT or SIGTERM, saying which.
pub async fn shutdown_signal() -> Stop {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => tokio::select! {
                _ = tokio::signal::ctrl_c() => Stop::Interrupt,
                _ = terminate.recv() => Stop::Terminate,
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                Stop::Interrupt
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        Stop::Interrupt
    }
}

/// Resolves when the listener should close. At SIGTERM, first `pre_drain` during which
/// `/ready` answers `503` and requests are still served, so a load balancer stops sending
/// new ones before any is refused; SIGINT, or a second signal, closes it at once.
pub async fn stop_accepting(state: &AppState, pre_drain: Duration) {
    if shutdown_signal().await == Stop::Interrupt || pre_drain.is_zero() {
        return;
    }
    state.start_draining();
    tracing::info!(
        ?pre_drain,
        "SIGTERM: /ready answers 503 while requests are still served, then the listener closes"
    );
    tokio::select! {
        () = tokio::time::sleep(pre_drain) => {}
        _ = shutdown_signal() => tracing::info!("second signal: closing the listener now"),
    }
}
