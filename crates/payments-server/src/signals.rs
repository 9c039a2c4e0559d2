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

/// Reloads `TOLLGATE_CONFIG` at every SIGHUP, for as long as the process runs: the policy
/// table with its tiers, the users' tiers, the dimensions and the trusted proxies are in force
/// for the next request on (see [`AppState::reload`]), and every key's state under a policy
/// that stays is kept. A file that does not parse or validate changes nothing: the error is
/// logged naming the setting, and what is in force stays.
pub async fn reload_on_hangup(state: std::sync::Arc<AppState>, config: crate::config::Config) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("SIGHUP cannot be watched: the policy table reloads only at a restart");
            return;
        };
        while hangups.recv().await.is_some() {
            reload(&state, &config);
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (state, config);
    }
}

/// One reload, logged.
fn reload(state: &AppState, config: &crate::config::Config) {
    if config.config_file.is_none() {
        tracing::warn!("SIGHUP: no TOLLGATE_CONFIG, so there is no policy table to reload");
        return;
    }
    let reloads = &state.metrics.config_reloads;
    match config.file().and_then(|file| state.reload(&file)) {
        Ok(count) => {
            reloads.with_label_values(&["success"]).inc();
            state.metrics.config_loaded();
            tracing::info!(
                policies = count,
                "SIGHUP: the policy table of TOLLGATE_CONFIG is in force (other settings take effect at the next start)"
            );
        }
        Err(error) => {
            reloads.with_label_values(&["failure"]).inc();
            tracing::error!(
                %error,
                "SIGHUP: TOLLGATE_CONFIG not reloaded, the policy table in force stays"
            );
        }
    }
}
