//! A PostgreSQL failover under load: a primary and a synchronous streaming standby (made by
//! `.ci/pg-standby`), the server on a multi-host `DATABASE_URL` with
//! `target_session_attrs=read-write`, clients paying with retries on their keys. The primary
//! is stopped (`immediate`) and the standby promoted: the server serves again without a
//! restart, every payment answered `201` is on the new primary, and every key was charged
//! exactly once (counted by `mock-processor`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::processor::MockProcessor;
use crate::support::{
    ALICE, BOB, CAROL, Options, Server, free_port, payment, runtime, try_pay, unique,
};

/// A claim left by the primary's last moments is taken over after this: short, so that the
/// retries of the payments in flight end within the test.
const CONFIG: &str = "[[policy]]\nname = \"per-user\"\nscope = \"user\"\n\
    algorithm = \"sliding-window\"\nlimit = 1000000\nwindow = \"60s\"\n\
    [idempotency]\nlease = \"3s\"\nttl = \"1h\"\n[processor]\ntimeout = \"2s\"\n";

/// The pair's settings, from a fresh run of `.ci/pg-standby`.
struct Pair {
    dir: String,
    pg_ctl: String,
    url: String,
    standby_url: String,
}

/// One pair on this machine at a time: the tests here take turns.
static ONE_PAIR: Mutex<()> = Mutex::new(());

impl Pair {
    /// A fresh primary and standby, or `None` after saying why the test is skipped.
    fn start() -> Option<Pair> {
        if std::env::var("TEST_FAILOVER").ok().as_deref() != Some("1") {
            eprintln!(
                "SKIPPED failover tests: set TEST_FAILOVER=1 on a machine where .ci/pg-standby can run initdb (PostgreSQL's server binaries, root or the postgres user)"
            );
            return None;
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.ci/pg-standby");
        let output = std::process::Command::new("bash")
            .arg(script)
            .output()
            .expect("bash");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let printed = String::from_utf8_lossy(&output.stdout).into_owned();
        let value = |name: &str| {
            let line = printed.lines().find(|l| l.contains(&format!("{name}=")));
            let value = line
                .and_then(|l| l.split_once('='))
                .map(|(_, v)| v.trim_matches('\''));
            value
                .unwrap_or_else(|| panic!("{name} in {printed}"))
                .to_owned()
        };
        Some(Pair {
            dir: value("TEST_FAILOVER_DIR"),
            pg_ctl: value("TEST_FAILOVER_PG_CTL"),
            url: value("TEST_FAILOVER_URL"),
            standby_url: value("TEST_FAILOVER_STANDBY_URL"),
        })
    }

    /// `pg_ctl <args>` on `node` (`primary`, `standby`), as PostgreSQL's own user when root.
    fn pg_ctl(&self, node: &str, args: &[&str]) {
        let data = format!("{}/{node}", self.dir);
        let as_root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout);
        let mut command = if as_root.is_ok_and(|uid| uid.starts_with(b"0")) {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--", &self.pg_ctl]);
            command
        } else {
            std::process::Command::new(&self.pg_ctl)
        };
        let status = command
            .args(["-D", &data])
            .args(args)
            .output()
            .expect("pg_ctl");
        assert!(status.status.success(), "pg_ctl {args:?}: {status:?}");
    }
}

/// What the clients saw: each key's transaction, and when its `201` came.
type Paid = Mutex<BTreeMap<String, (String, Instant)>>;

/// Pays one new payment as `key` until it is answered `201` (retrying with the same key and
/// body on anything else, as a client should), and records it.
fn pay_until_created(port: u16, key: &str, paid: &Paid) {
    let (order, body) = (unique("failover"), payment("1.00", "card"));
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(answer) = try_pay(port, key, &order, &body)
            && answer.status == 201
        {
            let id = answer.json()["transaction_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            paid.lock()
                .expect("the record")
                .insert(order, (id, Instant::now()));
            return;
        }
        assert!(Instant::now() < deadline, "{order} never answered 201");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_failover_under_load_loses_no_acknowledged_payment_and_charges_once() {
    let _turn = ONE_PAIR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(pair) = Pair::start() else {
        return;
    };
    let processor = MockProcessor::start(free_port(), &[]);
    let schema = unique("tg_failover");
    let options = Options::default()
        .env("DATABASE_URL", &pair.url)
        .env("DATABASE_SCHEMA", &schema)
        .env("PROCESSOR_URL", &processor.url())
        .toml(CONFIG);
    let server = Server::start(&options);
    let (paid, stop) = (Paid::default(), AtomicBool::new(false));
    let (stopped_at, promoted_at) = std::thread::scope(|scope| {
        for client in 0..8 {
            let (paid, stop, port) = (&paid, &stop, server.port);
            let key = [ALICE, BOB, CAROL][client % 3];
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    pay_until_created(port, key, paid);
                }
            });
        }
        std::thread::sleep(Duration::from_secs(3));
        pair.pg_ctl("primary", &["-m", "immediate", "stop"]);
        let stopped_at = Instant::now();
        std::thread::sleep(Duration::from_millis(500));
        pair.pg_ctl("standby", &["promote", "-w"]);
        let promoted_at = Instant::now();
        std::thread::sleep(Duration::from_secs(4));
        stop.store(true, Ordering::Relaxed);
        (stopped_at, promoted_at)
    });

    let paid = paid.into_inner().expect("the record");
    let after = paid
        .values()
        .filter(|(_, at)| *at > promoted_at)
        .map(|(_, at)| *at)
        .min();
    let served_again = after
        .map(|at| at - promoted_at)
        .expect("a payment after the failover");
    let before = paid.values().filter(|(_, at)| *at < stopped_at).count();
    eprintln!(
        "failover: {} payments answered 201 ({before} before the primary stopped); served again \
         {:?} after it stopped, {served_again:?} after the promotion",
        paid.len(),
        served_again + (promoted_at - stopped_at)
    );
    assert!(served_again < Duration::from_secs(10), "{served_again:?}");
    let ids: Vec<String> = paid.values().map(|(id, _)| format!("'{id}'")).collect();
    let on_new_primary = runtime().block_on(crate::services::count(
        &pair.standby_url,
        &schema,
        &format!(
            "SELECT count(*) FROM {{schema}}.payments WHERE transaction_id IN ({})",
            ids.join(", ")
        ),
    ));
    assert_eq!(
        on_new_primary,
        ids.len() as i64,
        "every acknowledged payment is on the new primary"
    );
    let (charges, _) = processor.stats();
    assert_eq!(charges, ids.len() as i64, "one charge per key");
}

/// A primary that stays up but turns read-only (as a demoted one does) while the standby is
/// promoted: the server's pooled connections to it are dropped at their first refused write,
/// and payments go to the new primary, instead of failing on the old one request after request.
#[test]
fn a_primary_turned_read_only_is_left_for_the_one_that_takes_writes() {
    let _turn = ONE_PAIR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(pair) = Pair::start() else {
        return;
    };
    let options = Options::default()
        .env("DATABASE_URL", &pair.url)
        .env("DATABASE_SCHEMA", &unique("tg_readonly"))
        .toml(CONFIG);
    let server = Server::start(&options);
    let pay = || {
        try_pay(
            server.port,
            ALICE,
            &unique("order"),
            &payment("1.00", "card"),
        )
    };
    for _ in 0..20 {
        pay().expect("an answer").expect(201);
    }
    let primary = pair
        .url
        .replace(",127.0.0.1:5451", "")
        .replace("?target_session_attrs=read-write", "");
    runtime().block_on(async {
        let (client, connection) = tokio_postgres::connect(&primary, tokio_postgres::NoTls)
            .await
            .expect("the primary");
        tokio::spawn(connection);
        for statement in [
            "ALTER SYSTEM SET default_transaction_read_only = on",
            "SELECT pg_reload_conf()",
        ] {
            client.simple_query(statement).await.expect("read-only");
        }
    });
    pair.pg_ctl("standby", &["promote", "-w"]);
    let promoted = Instant::now();
    let mut refused = 0;
    while pay().map(|answer| answer.status) != Some(201) {
        refused += 1;
        assert!(
            promoted.elapsed() < Duration::from_secs(10),
            "{refused} refused, never served"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "read-only primary: served again after {refused} refusals, {:?}",
        promoted.elapsed()
    );
    for _ in 0..20 {
        pay().expect("an answer").expect(201);
    }
}
