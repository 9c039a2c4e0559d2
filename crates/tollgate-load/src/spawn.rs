//! The processes a run drives: the payments server under test, and the hello-world reference.

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::args::{Args, BoxError, Scenario};

/// The spawned server's TOML: limits that never interfere with a payments run; for a flood, a
/// payments limit of one an hour per user, so every later payment is refused.
fn server_config(args: &Args) -> String {
    let latency = humantime::format_duration(args.processor_latency);
    let global = "[[policy]]\nname = \"global\"\nscope = \"global\"\n\
                  algorithm = \"sliding-window\"\nlimit = 10000000\nwindow = \"60s\"\n";
    let flood = "[[policy]]\nname = \"payments\"\nscope = \"user\"\n\
                 algorithm = \"sliding-window\"\nlimit = 1\nwindow = \"1h\"\n\
                 endpoint = \"POST /api/v1/payments\"\n";
    let policies = match args.scenario {
        Scenario::Payments => global.to_owned(),
        Scenario::Flood => format!("{global}{flood}"),
    };
    let mut database = String::from("[database]\n");
    if let Some(group) = args.group_commit {
        database.push_str(&format!("group_commit = {group}\n"));
    }
    if let Some(writers) = args.group_commit_writers {
        database.push_str(&format!("group_commit_writers = {writers}\n"));
    }
    if let Some(alone) = args.group_commit_alone_up_to {
        database.push_str(&format!("group_commit_alone_up_to = {alone}\n"));
    }
    format!(
        "[processor]\nlatency = \"{latency}\"\n\
         [redis]\nconnection = \"{}\"\n{database}{policies}",
        args.redis_connection
    )
}

pub(crate) fn api_keys(users: usize) -> String {
    (0..users)
        .map(|i| format!("tollgate-load-key-{i}:load-user-{i}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn free_port() -> Result<u16, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A child process, killed when dropped.
pub(crate) struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_port(port: u16) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("nothing listens on port {port} after 30 s").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

pub(crate) fn spawn_server(
    args: &Args,
    binary: &PathBuf,
    run: &str,
    processor_url: Option<&str>,
) -> Result<(Spawned, String), BoxError> {
    let port = free_port()?;
    let config = std::env::temp_dir().join(format!("tollgate-load-{run}.toml"));
    std::fs::write(&config, server_config(args))?;
    let mut command = Command::new(binary);
    command
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("LOG_LEVEL", "warn")
        .env("API_KEYS", api_keys(args.users))
        .env("TOLLGATE_CONFIG", &config)
        .env("DATABASE_SCHEMA", run)
        .env("REDIS_KEY_PREFIX", run)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .stdout(Stdio::null());
    if let Some(url) = &args.database_url {
        command.env("DATABASE_URL", url);
    }
    if let Some(url) = &args.redis_url {
        command.env("REDIS_URL", url);
    }
    match processor_url {
        Some(url) => command.env("PROCESSOR_URL", url),
        None => command.env_remove("PROCESSOR_URL"),
    };
    let child = Spawned(command.spawn()?);
    wait_for_port(port)?;
    Ok((child, format!("http://127.0.0.1:{port}")))
}

/// `mock-processor` on a free port, charges in its memory, answering after `latency`.
pub(crate) fn spawn_processor(
    binary: &PathBuf,
    latency: Duration,
) -> Result<(Spawned, String), BoxError> {
    let port = free_port()?;
    let child = Command::new(binary)
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("LOG_LEVEL", "warn")
        .env_remove("DATABASE_URL")
        .args([
            "--latency",
            &humantime::format_duration(latency).to_string(),
        ])
        .stdout(Stdio::null())
        .spawn()?;
    let child = Spawned(child);
    wait_for_port(port)?;
    Ok((child, format!("http://127.0.0.1:{port}")))
}

pub(crate) fn spawn_hello() -> Result<(Spawned, String), BoxError> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--serve-hello", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let port: u16 = line.trim().parse()?;
    Ok((Spawned(child), format!("http://127.0.0.1:{port}")))
}

/// The reference server: reads the body, answers 201 with a small JSON body.
pub(crate) async fn serve_hello(addr: std::net::SocketAddr) -> Result<(), BoxError> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("{}", listener.local_addr()?.port());
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                |request: hyper::Request<hyper::body::Incoming>| async move {
                    let _ = request.into_body().collect().await;
                    let mut response = hyper::Response::new(Full::new(Bytes::from_static(
                        br#"{"transaction_id":"hello","status":"succeeded"}"#,
                    )));
                    *response.status_mut() = hyper::StatusCode::CREATED;
                    Ok::<_, Infallible>(response)
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
