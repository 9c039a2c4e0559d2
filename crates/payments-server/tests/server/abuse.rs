//! What one anonymous client or one user controls stays bounded — checked on real processes
//! over real sockets, each test in a bounded time. The figures asserted here are the bounds
//! `docs/reliability.md` states.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::{ALICE, BOB, CAROL, Isolated, Options, Server, payment, try_pay, unique};

/// The series and bytes of `/metrics`.
fn metrics_shape(server: &Server) -> (usize, usize) {
    let body = server.get("/metrics", None).body;
    let series = body.lines().filter(|l| !l.starts_with('#')).count();
    (series, body.len())
}

/// Sends `requests` pipelined on one connection and counts the answers.
fn pipelined(port: u16, requests: Vec<Vec<u8>>) -> usize {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    let expected = requests.len();
    let sender = std::thread::spawn(move || {
        for request in requests {
            if writer.write_all(&request).is_err() {
                break;
            }
        }
    });
    let mut reader = stream;
    let (mut answers, mut buffer, mut tail) = (0, [0_u8; 64 * 1024], Vec::new());
    while answers < expected {
        let Ok(n) = reader.read(&mut buffer) else {
            break;
        };
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&buffer[..n]);
        answers += tail.windows(9).filter(|w| w == b"HTTP/1.1 ").count();
        // Keep the last bytes: a status line may straddle two reads.
        let keep = tail.len().min(8);
        tail.drain(..tail.len() - keep);
    }
    let _ = sender.join();
    answers
}

#[test]
fn unique_methods_never_become_metric_series() {
    let server = Server::start(&Options::default());
    let request =
        |method: &str| format!("{method} /health HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes();
    // The first unknown method makes the `other` series, the first scrape its own; none after
    // them makes another.
    assert_eq!(
        pipelined(server.port, vec![request("FIRSTCUSTOMMETHOD")]),
        1
    );
    metrics_shape(&server);
    let (series, bytes) = metrics_shape(&server);
    let started = Instant::now();
    let senders: Vec<_> = (0..8)
        .map(|connection| {
            let port = server.port;
            std::thread::spawn(move || {
                let requests = (0..6_250)
                    .map(|i| request(&format!("M{connection:02}X{i:021}")))
                    .collect();
                pipelined(port, requests)
            })
        })
        .collect();
    let answered: usize = senders
        .into_iter()
        .map(|s| s.join().expect("a sender"))
        .sum();
    assert_eq!(answered, 50_000);
    let (series_after, bytes_after) = metrics_shape(&server);
    assert_eq!(series_after, series, "50 000 unique methods, no new series");
    assert!(
        bytes_after < bytes + 512,
        "/metrics grew from {bytes} to {bytes_after} bytes"
    );
    // A method of 400 kB is refused before anything counts it.
    let huge = request(&"M".repeat(400_000));
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    let _ = stream.write_all(&huge);
    let mut answer = Vec::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431"),
        "{text}"
    );
    assert_eq!(metrics_shape(&server).0, series);
    eprintln!(
        "abuse: 50 000 unique methods in {:?}; /metrics {series} series and {bytes_after} bytes after",
        started.elapsed()
    );
}

/// The server's resident memory, in kB.
fn rss_kb(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id()))
        .expect("the server's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

#[test]
fn anonymous_bodies_are_never_held() {
    // Every connection admitted (the per-address cap is tested apart), to measure what each
    // anonymous connection with a large body costs.
    let server =
        Server::start(&Options::default().toml("[limits]\nmax_connections_per_ip = 5000\n"));
    server.get("/health", None).expect(200);
    let before = rss_kb(&server);
    let head = "POST /api/v1/payments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n";
    let part = vec![b'x'; 32 * 1024];
    let mut held = Vec::new();
    for _ in 0..3_000 {
        let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(&part);
        held.push(stream);
    }
    std::thread::sleep(Duration::from_millis(500));
    let during = rss_kb(&server);
    // Each is answered from its head: 401, or 429 once the address has sent too many
    // requests without a valid key.
    let mut refused = 0;
    for stream in &mut held {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut status = [0_u8; 12];
        if stream.read_exact(&mut status).is_ok()
            && (&status[9..12] == b"401" || &status[9..12] == b"429")
        {
            refused += 1;
        }
    }
    let grown_mb = during.saturating_sub(before) / 1024;
    eprintln!("abuse: 3 000 anonymous 32 KiB bodies held: RSS {before} kB -> {during} kB");
    assert_eq!(refused, 3_000, "each answered from its head");
    assert!(
        grown_mb < 64,
        "RSS grew {grown_mb} MB for 3 000 anonymous connections"
    );
}

#[test]
fn one_client_cannot_lock_out_another() {
    let server = Server::start(&Options {
        open_files: Some(1_024),
        ..Options::default()
    });
    let mut held = Vec::new();
    for _ in 0..1_100 {
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", server.port)) {
            held.push(stream);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    // Another client, from another address.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let served = runtime.block_on(async {
        let mut served = 0;
        for _ in 0..6 {
            if health_from("127.0.0.2", server.port)
                .await
                .starts_with("HTTP/1.1 200")
            {
                served += 1;
            }
        }
        served
    });
    // The first client's connections past the cap were refused, in one write, and closed.
    let mut refused = 0;
    for stream in &mut held {
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let mut status = [0_u8; 12];
        if stream.read_exact(&mut status).is_ok() && &status[9..12] == b"429" {
            refused += 1;
        }
    }
    eprintln!(
        "abuse: 1 100 held from one address: {refused} refused, the other client served {served}/6"
    );
    assert_eq!(served, 6);
    assert!(refused >= 1_100 - 256, "{refused} refused");
}

/// A connection to the server on `port` from the local address `local` (any of 127.0.0.0/8),
/// or `None` if it was refused.
async fn connect_from(local: &str, port: u16) -> Option<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(format!("{local}:0").parse().expect("an address"))
        .expect("bind");
    socket
        .connect(format!("127.0.0.1:{port}").parse().expect("an address"))
        .await
        .ok()
}

/// `GET /health` from `local`, its status line and headers.
async fn health_from(local: &str, port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(mut stream) = connect_from(local, port).await else {
        return String::new();
    };
    let request = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if stream.write_all(request).await.is_err() {
        return String::new();
    }
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn a_body_declared_too_large_is_refused_before_it_is_sent() {
    let server = Server::start(&Options::default());
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    let auth = format!("Bearer {ALICE}");
    write!(
        stream,
        "POST /api/v1/payments HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nIdempotency-Key: {}\r\nExpect: 100-continue\r\nContent-Length: 1000000\r\n\r\n",
        unique("order")
    )
    .expect("write the head");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut answer = [0_u8; 12];
    stream.read_exact(&mut answer).expect("an answer");
    assert_eq!(&answer, b"HTTP/1.1 413", "not 100 Continue");
}

/// A user over the payments limit for ten seconds: every refusal counted, a bounded number of
/// audit rows, nothing lost at shutdown.
#[test]
fn a_ten_second_429_flood_writes_a_bounded_number_of_audit_rows() {
    let Some(services) =
        Isolated::new("a_ten_second_429_flood_writes_a_bounded_number_of_audit_rows")
    else {
        return;
    };
    let config = "[[policy]]\nname = \"payments\"\nscope = \"user\"\nalgorithm = \"sliding-window\"\n\
                  limit = 1\nwindow = \"1h\"\nendpoint = \"POST /api/v1/payments\"\n";
    let mut server = Server::start(&services.options().toml(config));
    let body = payment("1.00", "card");
    server.pay(CAROL, &unique("order"), &body).expect(201);
    let until = Instant::now() + Duration::from_secs(10);
    let floods: Vec<_> = (0..4)
        .map(|_| {
            let (port, body) = (server.port, body.clone());
            std::thread::spawn(move || {
                let mut refused = 0_u64;
                while Instant::now() < until {
                    if try_pay(port, CAROL, &unique("order"), &body)
                        .is_some_and(|r| r.status == 429)
                    {
                        refused += 1;
                    }
                }
                refused
            })
        })
        .collect();
    let refused: u64 = floods.into_iter().map(|f| f.join().expect("a flood")).sum();
    // Someone else's trail is untouched by it.
    server.pay(BOB, &unique("order"), &body).expect(201);
    let metrics = server.get("/metrics", None).body;
    let made: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("rate_limit_exceeded_total{policy=\"payments\"} "))
        .and_then(|n| n.parse().ok())
        .expect("the refusals the server made");
    server.terminate();
    let rows = services.count(
        "SELECT count(*) FROM {schema}.audit_events WHERE user_id = 'carol' AND action = 'rate_limited'",
    );
    let counted = services.count(
        "SELECT coalesce(sum(coalesce((fields->>'repeated')::bigint, 1)), 0)::bigint \
         FROM {schema}.audit_events WHERE user_id = 'carol' AND action = 'rate_limited'",
    );
    eprintln!("abuse: a 10 s flood of {refused} refusals wrote {rows} audit rows");
    assert!(refused > 1_000, "a flood: {refused}");
    assert!(rows <= 4, "{rows} rows for {refused} refusals");
    assert!(
        made >= i64::try_from(refused).unwrap_or(i64::MAX),
        "{made} made, {refused} seen"
    );
    assert_eq!(
        counted, made,
        "every refusal the server made is counted in the trail"
    );
    assert_eq!(
        services.count("SELECT count(*) FROM {schema}.audit_events WHERE user_id = 'bob'"),
        2
    );
}

/// 100 payments a second with a 10-second TTL and cleanup every second: expired records are
/// deleted as fast as they come, so the table holds the live records and at most a few seconds
/// of expired ones, never the whole history. Without cleanup, 14–16 s in, 100–300 rows would
/// have been expired for more than 3 s.
#[test]
fn cleanup_keeps_the_table_near_its_steady_size() {
    let Some(services) = Isolated::new("cleanup_keeps_the_table_near_its_steady_size") else {
        return;
    };
    let config = "[processor]\nlatency = \"1ms\"\ntimeout = \"1s\"\n\
                  [idempotency]\nlease = \"2s\"\nttl = \"10s\"\ncleanup_interval = \"1s\"\n\
                  [[policy]]\nname = \"global\"\nscope = \"global\"\nalgorithm = \"sliding-window\"\n\
                  limit = 100000\nwindow = \"60s\"\n";
    let server = Server::start(&services.options().toml(config));
    let started = Instant::now();
    // Four clients of 25 payments a second each, for 16 s.
    let clients: Vec<_> = (0..4_u64)
        .map(|client| {
            let port = server.port;
            std::thread::spawn(move || {
                let body = payment("1.00", "card");
                for n in 0..400_u64 {
                    let due = started + Duration::from_millis(n * 40 + client * 10);
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    let paid = try_pay(port, ALICE, &unique("order"), &body);
                    assert_eq!(paid.map(|p| p.status), Some(201));
                }
            })
        })
        .collect();
    let mut samples = Vec::new();
    for second in 14..17_u64 {
        let at = started + Duration::from_secs(second);
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        let rows = services.count("SELECT count(*) FROM {schema}.idempotency_records");
        let stale = services.count(
            "SELECT count(*) FROM {schema}.idempotency_records \
             WHERE expires_at < now() - interval '3 seconds'",
        );
        samples.push((rows, stale));
    }
    for client in clients {
        client.join().expect("a client");
    }
    eprintln!(
        "abuse: idempotency records (all, expired over 3 s ago) at 14-16 s of 100 payments/s, \
         TTL 10 s: {samples:?}"
    );
    for (rows, stale) in samples {
        assert_eq!(
            stale, 0,
            "{rows} rows, {stale} of them expired over 3 s ago"
        );
        assert!(
            rows <= 1_300,
            "{rows} rows, at most 1 000 live and 300 expired"
        );
    }
}

/// How many rate-limit decisions the server asked Redis for, and how many it answered from
/// remembered denials.
fn redis_checks(server: &Server) -> (u64, u64) {
    let metrics = server.get("/metrics", None).body;
    let series = r#"backend_call_duration_seconds_count{backend="redis",call="rate_limit_check"}"#;
    let remembered = "rate_limiter_remembered_denials_total ";
    let sample = |series| crate::support::sample(&metrics, series).unwrap_or(0);
    (sample(series), sample(remembered))
}

#[test]
fn a_user_flooding_past_the_limit_costs_redis_one_decision_not_one_per_request() {
    let Some(services) = Isolated::new("abuse::a_user_flooding_past_the_limit") else {
        return;
    };
    let policy = "[[policy]]\nname = \"payments\"\nscope = \"user\"\n\
                  algorithm = \"sliding-window\"\nlimit = 1\nwindow = \"1h\"\n\
                  endpoint = \"POST /api/v1/payments\"\n";
    // Two users, as both servers share the test's Redis prefix.
    let runs = [
        (ALICE, "", (2, 29)),
        (BOB, "[rate_limit]\nremembered_denials = 0\n", (31, 0)),
    ];
    for (key, remembered, asked) in runs {
        let server = Server::start(&services.options().toml(&format!("{remembered}{policy}")));
        server
            .pay(key, &unique("order"), &payment("1.00", "card"))
            .expect(201);
        for _ in 0..30 {
            let refused = server.pay(key, &unique("order"), &payment("1.00", "card"));
            refused.expect(429);
            let wait: u64 = refused
                .header("retry-after")
                .and_then(|v| v.parse().ok())
                .expect("Retry-After");
            // A sliding window forgets a request gradually, over up to two windows.
            assert!((1..=7200).contains(&wait), "{wait}");
            assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
        }
        assert_eq!(redis_checks(&server), asked, "with {remembered:?}");
    }
}

/// Pipelined batches of 64 requests (`request(n)` makes the n-th) from the local address
/// `local` until `until`: the count of answers by status.
async fn flood_from(
    local: &str,
    port: u16,
    request: impl Fn(u64) -> String,
    until: Instant,
) -> std::collections::BTreeMap<u16, u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut answers = std::collections::BTreeMap::new();
    let mut n = 0_u64;
    while Instant::now() < until {
        let Some(mut stream) = connect_from(local, port).await else {
            continue;
        };
        let mut batch = String::new();
        for last in (0..64).map(|i| i == 63) {
            n += 1;
            batch.push_str(&request(n));
            batch.push_str(if last {
                "Connection: close\r\n\r\n"
            } else {
                "\r\n"
            });
        }
        if stream.write_all(batch.as_bytes()).await.is_err() {
            continue;
        }
        let mut received = Vec::new();
        let read = stream.read_to_end(&mut received);
        let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
        let text = String::from_utf8_lossy(&received);
        for answer in text.split("HTTP/1.1 ").skip(1) {
            if let Some(status) = answer.get(..3).and_then(|s| s.parse().ok()) {
                *answers.entry(status).or_insert(0) += 1;
            }
        }
    }
    answers
}

/// The documented bound on what strangers add to the log: one line of counts per
/// `limits.anonymous_log_interval`, of at most this many bytes (24 kinds of at most 80 bytes,
/// and the line's own fields).
const STRANGER_LINE_BYTES: u64 = 2_500;

/// Two replicas on `services`, each logging at `info` to a file of its own.
fn replicas_logging_to_files(services: &Isolated) -> (Vec<Server>, Vec<std::path::PathBuf>) {
    let logs: Vec<_> = (0..2)
        .map(|i| std::env::temp_dir().join(format!("{}-{i}.log", unique("tollgate-flood"))))
        .collect();
    let servers = logs
        .iter()
        .map(|log| {
            Server::start(&Options {
                log: Some(log.clone()),
                ..services.options().env("LOG_LEVEL", "info")
            })
        })
        .collect();
    (servers, logs)
}

/// Strangers on 127.0.0.2–5 flooding `ports` until `until`, each address with `retry-config`
/// and with paths that match no route: the answers, counted by status.
fn flood_from_four_addresses(
    ports: Vec<u16>,
    until: Instant,
) -> std::thread::JoinHandle<std::collections::BTreeMap<u16, u64>> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let mut floods = tokio::task::JoinSet::new();
            for address in 2..=5 {
                let local = format!("127.0.0.{address}");
                let port = ports[address % 2];
                let config = |_| "GET /api/v1/retry-config HTTP/1.1\r\nHost: x\r\n".to_owned();
                let missing =
                    |n| format!("GET /nowhere/{n:020} HTTP/1.1\r\nHost: x\r\nX-Flood: {n}\r\n");
                let local_too = local.clone();
                floods.spawn(async move { flood_from(&local, port, config, until).await });
                floods.spawn(async move { flood_from(&local_too, port, missing, until).await });
            }
            let mut answers = std::collections::BTreeMap::new();
            while let Some(flood) = floods.join_next().await {
                for (status, count) in flood.expect("a flood") {
                    *answers.entry(status).or_insert(0_u64) += count;
                }
            }
            answers
        })
    })
}

/// Anonymous `retry-config` and 404 floods from several addresses for 20 s against two
/// replicas on one Redis: every payment of an authenticated user on either replica is `201`
/// throughout, the strangers are limited in their own bucket, and each replica's log grows by
/// its users' request lines and at most one line of counts per interval.
#[test]
fn strangers_flooding_from_several_addresses_never_stop_a_users_payments() {
    let Some(services) =
        Isolated::new("strangers_flooding_from_several_addresses_never_stop_a_users_payments")
    else {
        return;
    };
    let (servers, logs) = replicas_logging_to_files(&services);
    let size = |log: &std::path::PathBuf| std::fs::metadata(log).map_or(0, |m| m.len());
    let before: Vec<u64> = logs.iter().map(size).collect();
    let seconds = 20;
    let until = Instant::now() + Duration::from_secs(seconds);
    let floods = flood_from_four_addresses(servers.iter().map(|s| s.port).collect(), until);
    // The user pays on both replicas throughout: 4 rounds, within the payments policy.
    let started = Instant::now();
    let mut paid = Vec::new();
    for round in 0..4_u64 {
        let at = started + Duration::from_millis(2_000 + round * 5_000);
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        for server in &servers {
            paid.push(
                server
                    .pay(ALICE, &unique("order"), &payment("1.00", "card"))
                    .status,
            );
        }
    }
    let answers = floods.join().expect("the floods");
    // A summary written at the end of the last interval is in the log.
    std::thread::sleep(Duration::from_millis(1_500));
    let grown: Vec<u64> = logs
        .iter()
        .zip(&before)
        .map(|(log, before)| size(log) - before)
        .collect();
    let sent: u64 = answers.values().sum();
    eprintln!(
        "abuse: {sent} anonymous requests in {seconds} s from 4 addresses ({answers:?}); the user's payments {paid:?}; logs grew {grown:?} bytes"
    );
    for log in &logs {
        let _ = std::fs::remove_file(log);
    }
    assert_eq!(paid, [201; 8], "every payment of the user is served");
    assert!(sent > 20_000, "a flood: {sent} requests");
    assert!(answers.get(&429).copied().unwrap_or(0) > 0, "{answers:?}");
    // The user's 4 request lines per replica, and one line of counts per interval begun.
    let user_lines = 4 * 1_024;
    let intervals = seconds / 10 + 2;
    for bytes in grown {
        assert!(
            bytes <= user_lines + intervals * STRANGER_LINE_BYTES,
            "the log grew {bytes} bytes"
        );
    }
}

/// With the open-files limit at 1 024, eight addresses each holding all the connections they
/// are given still leave room: a ninth client is served.
#[test]
fn eight_addresses_holding_connections_leave_room_for_a_ninth() {
    // Held connections stay for the whole test, however slow the machine.
    let server = Server::start(&Options {
        open_files: Some(1_024),
        ..Options::default().toml("[timeouts]\nheader_read = \"120s\"\n")
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (shares, served) = runtime.block_on(async {
        let mut held = Vec::new();
        let mut shares = [0_usize; 8];
        for address in 1..=8 {
            let mut streams = Vec::new();
            for _ in 0..300 {
                let local = format!("127.0.0.{address}");
                if let Some(stream) = connect_from(&local, server.port).await {
                    streams.push(stream);
                }
            }
            // A refused connection was answered 429 and closed at once; a held one has nothing
            // to read. Counted until two counts 100 ms apart agree (a loaded machine may take
            // a while to deliver the refusals).
            let mut byte = [0_u8; 1];
            let mut count = || {
                streams
                    .iter()
                    .filter(|s| matches!(s.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock))
                    .count()
            };
            let mut last = usize::MAX;
            for _ in 0..50 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let now = count();
                if now == last {
                    break;
                }
                last = now;
            }
            shares[address - 1] = last;
            held.extend(streams);
        }
        let mut served = 0;
        for _ in 0..6 {
            if health_from("127.0.0.9", server.port)
                .await
                .starts_with("HTTP/1.1 200")
            {
                served += 1;
            }
        }
        drop(held);
        (shares, served)
    });
    let total: usize = shares.iter().sum();
    eprintln!(
        "abuse: 8 addresses asked for 300 connections each with 1 024 files: held {shares:?} ({total}); the ninth client served {served}/6"
    );
    assert_eq!(served, 6, "a ninth client is served");
    assert!(
        shares.windows(2).all(|w| w[1] <= w[0]),
        "each address got at most what the one before it did: {shares:?}"
    );
}

/// The open-files soft limit is raised to the hard limit at start-up (the default connection
/// cap is derived from it after that).
#[test]
fn the_open_files_limit_is_raised_at_start_up() {
    let server = Server::start(&Options {
        open_files: Some(1_024),
        open_files_hard: Some(4_096),
        ..Options::default()
    });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id()))
        .expect("the server's limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("the open-files line");
    let soft: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(soft, ["4096", "4096"], "{line}");
}
