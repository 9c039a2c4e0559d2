//! The Tollgate payments server: configuration, logging, backends, serve.
//!
//! `--help` lists every setting; `docs/operations.md` explains them.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use payments_server::config::{Command, Config};
use payments_server::logging::init_logging;
use payments_server::reload::reload_on_hangup;
use payments_server::serve::{raise_open_files_limit, serve};
use payments_server::signals::stop_accepting;
use payments_server::{Server, app};
use tokio::net::TcpListener;

/// Every request allocates small, short-lived objects (headers, JSON, keys); mimalloc serves
/// them from thread-local pages. Measured in docs/performance.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn run(config: Config) -> Result<(), String> {
    let server = Server::build(&config).await.map_err(|e| e.to_string())?;
    server.spawn_tasks();
    tokio::spawn(reload_on_hangup(Arc::clone(&server.state), config.clone()));
    let listener = TcpListener::bind(config.bind_addr)
        .await
        .map_err(|e| format!("BIND_ADDR {}: {e}", config.bind_addr))?;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "payments-server listening");
    }
    let router = app(Arc::clone(&server.state));
    serve(
        listener,
        router,
        &server.timeouts,
        server.limits.clone(),
        stop_accepting(&server.state, server.timeouts.pre_drain),
    )
    .await;
    server.shutdown().await;
    Ok(())
}

/// A command's lines on standard output, or its error on standard error: the exit code.
fn print(result: Result<Vec<String>, String>, command: &str) -> ExitCode {
    match result {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("payments-server {command}: {error}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    match &config.command {
        Some(Command::Healthcheck) => {
            return match payments_server::healthcheck::check(config.bind_addr) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("payments-server healthcheck: {error}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Migrations) => {
            return match payments_server::migration_sql(&config.database_schema) {
                Ok(sql) => {
                    println!("{sql}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("payments-server migrations: {error}");
                    ExitCode::from(2)
                }
            };
        }
        Some(Command::CheckConfig { file }) => {
            return match config.check_file(file.as_deref()) {
                Ok(valid) => {
                    println!("{valid}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("payments-server: invalid configuration: {error}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Keys(command)) => {
            return print(
                payments_server::keys_command(&config, command).await,
                "keys",
            );
        }
        Some(Command::Limits(command)) => {
            return print(
                payments_server::limits_command(&config, command).await,
                "limits",
            );
        }
        None => {}
    }
    let telemetry = match init_logging(&config) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("payments-server: invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    // Before the connection cap is derived from it: past the limit, accept fails for everyone.
    if let Some((before, after)) = raise_open_files_limit() {
        tracing::info!(before, after, "open-files limit raised to the hard limit");
    }
    let code = match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("payments-server: {error}");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown().await;
    code
}
