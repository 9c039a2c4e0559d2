//! `tollgate-load`: drives a payments server with many users, a share of deliberate retries and
//! of concurrent same-key duplicates, then reports throughput, latency percentiles, status
//! counts and a correctness audit: for every idempotency key exactly one payment exists and
//! every successful reply agrees.
//!
//! References measured in the same run, on the same machine, with the same client:
//! `--reference hello` drives a hyper hello-world server (a child process, like the server),
//! `--reference pg-commits` runs two single-row autocommitted INSERTs per "payment" on the same
//! database. Ratios, not absolute numbers, are what carry between machines.
//!
//! `--processor target/release/mock-processor` puts a real processor process behind the spawned
//! server; without it the server's in-process simulation charges (in the server's memory).
//! With `--database-url` the run also reports the database's write transactions (commits)
//! per payment.
//!
//! `--scenario flood` sends only authenticated payments over the payments limit instead: every
//! answer after the first is a `429`, which measures what a refusal costs.
//!
//! ```text
//! cargo run --release -p tollgate-load -- --spawn target/release/payments-server \
//!     --duration 10s --concurrency 32 --reference hello
//! ```

mod args;
mod audit;
mod drive;
mod pg_reference;
mod spawn;

use std::collections::HashSet;

use clap::Parser;

use crate::args::{Args, BoxError, Reference};
use crate::drive::{load, progress_bar, report};
use crate::spawn::{api_keys, serve_hello, spawn_hello, spawn_processor, spawn_server};

async fn run(args: Args) -> Result<bool, BoxError> {
    let run_id = format!("load_{}_{}", std::process::id(), fastrand::u32(..));
    let processor = match &args.processor {
        Some(binary) => Some(spawn_processor(binary, args.processor_latency)?),
        None => None,
    };
    let processor_url = processor.as_ref().map(|(_, url)| url.as_str());
    let (_server, base) = match &args.spawn {
        Some(binary) => {
            let (child, base) = spawn_server(&args, binary, &run_id, processor_url)?;
            (Some(child), base)
        }
        None => (None, args.url.trim_end_matches('/').to_owned()),
    };
    let commits_before = match &args.database_url {
        Some(url) => Some(pg_reference::write_transactions(url).await?),
        None => None,
    };
    let bar = progress_bar(&args, "payments-server");
    let measured = load(&args, &base, &run_id, &bar).await;
    bar.finish_and_clear();
    let (requests_per_sec, payments_per_sec) =
        report(&format!("payments-server at {base}"), &measured);
    if let (Some(before), Some(url)) = (commits_before, &args.database_url) {
        let commits = pg_reference::write_transactions(url).await? - before - 1;
        let payments = payments_per_sec * args.duration.as_secs_f64();
        println!(
            "  database: {commits} write transactions for ~{payments:.0} payments executed, {:.2} per payment (the whole cluster: audit batches and other clients included)",
            commits as f64 / payments.max(1.0)
        );
    }
    let violations = audit::audit(&base, &measured, args.concurrency).await;
    let keys: HashSet<_> = measured.samples.iter().map(|s| &s.key).collect();
    if violations.is_empty() {
        println!(
            "  audit: {} keys, every reply agrees, one payment per key, each stored and succeeded",
            keys.len()
        );
    } else {
        println!("  audit: {} VIOLATIONS", violations.len());
        for violation in violations.iter().take(10) {
            println!("    {violation}");
        }
    }
    match args.reference {
        Reference::None => {}
        Reference::Hello => {
            let (_hello, hello_base) = spawn_hello()?;
            let bar = progress_bar(&args, "hyper hello-world");
            let reference = load(&args, &hello_base, &run_id, &bar).await;
            bar.finish_and_clear();
            let (hello_rate, _) = report(
                "reference: hyper hello-world (same client, same mix)",
                &reference,
            );
            println!(
                "  ratio: payments-server / hello-world = {:.2}×",
                requests_per_sec / hello_rate
            );
        }
        Reference::PgCommits => {
            let url = args
                .database_url
                .as_deref()
                .ok_or("--reference pg-commits needs --database-url")?;
            let rate =
                pg_reference::pg_commits(url, args.concurrency, args.duration, &run_id).await?;
            println!(
                "reference: two single-row commits per payment, {} connections",
                args.concurrency
            );
            println!("  {rate:.0} payments/s");
            println!(
                "  ratio: payments-server executed / two-commit reference = {:.2}×",
                payments_per_sec / rate
            );
        }
    }
    if args.spawn.is_some()
        && let Some(url) = &args.database_url
    {
        pg_reference::drop_schema(url, &run_id).await;
    }
    Ok(violations.is_empty() && measured.errors == 0)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.print_api_keys {
        println!("{}", api_keys(args.users));
        return std::process::ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tollgate-load: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Some(addr) = args.serve_hello {
        if let Err(error) = runtime.block_on(serve_hello(addr)) {
            eprintln!("tollgate-load: {error}");
        }
        return std::process::ExitCode::FAILURE;
    }
    match runtime.block_on(run(args)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(error) => {
            eprintln!("tollgate-load: {error}");
            std::process::ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drive::body_for;

    #[test]
    fn api_keys_and_bodies() {
        assert_eq!(
            api_keys(2),
            "tollgate-load-key-0:load-user-0,tollgate-load-key-1:load-user-1"
        );
        let body: serde_json::Value = serde_json::from_slice(&body_for(1205)).expect("JSON");
        assert_eq!(body["amount"], "12.05");
    }
}
