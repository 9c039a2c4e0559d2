//! The Python examples (`examples/python/`) against the real server on Redis and PostgreSQL,
//! charging through a `mock-processor` that fails and loses some of its answers: the concurrent
//! test sees one execution for ten simultaneous requests, and a 20-second locust run of 40
//! users ends with zero failures and one payment row and one charge per key it created.

use std::path::PathBuf;
use std::process::Command;

use crate::processor::MockProcessor;
use crate::support::{ALICE, Isolated, Server, free_port, unique};

/// The Python that has `examples/python/requirements.txt` installed (`TEST_PYTHON`), or `None`
/// after printing why the test is skipped.
fn python(test: &str) -> Option<String> {
    let python = std::env::var("TEST_PYTHON").ok().filter(|v| !v.is_empty());
    if python.is_none() {
        eprintln!(
            "SKIPPED {test}: needs a Python with the examples' requirements; run `python3 -m venv /tmp/tollgate-py && /tmp/tollgate-py/bin/pip install -r examples/python/requirements.txt` and set TEST_PYTHON=/tmp/tollgate-py/bin/python"
        );
    }
    python
}

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/python")
}

/// Runs the example `args` with `python` in `examples/python`; its output, or a panic with it.
fn run(python: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new(python)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(examples_dir())
        .output()
        .expect("python runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{args:?} failed: {text}");
    text
}

/// 20 s of locust, 40 users, against `url`: the keys of the payments it created (one per line)
/// and its summary. Fails on any failure locust counted.
fn run_locust(python: &str, url: &str) -> (String, String) {
    let keys_file = std::env::temp_dir().join(format!("{}.keys", unique("locust")));
    let keys_path = keys_file.to_string_lossy().into_owned();
    let locust = run(
        python,
        &[
            "-m",
            "locust",
            "-f",
            "locustfile.py",
            "--host",
            url,
            "--headless",
            "-u",
            "40",
            "-r",
            "40",
            "-t",
            "20s",
            "--stop-timeout",
            "15",
            "--only-summary",
        ],
        &[
            ("TOLLGATE_API_KEY", ALICE),
            ("TOLLGATE_LOCUST_KEYS", &keys_path),
        ],
    );
    let keys = std::fs::read_to_string(&keys_file).expect("the created keys");
    let _ = std::fs::remove_file(&keys_file);
    (keys, locust)
}

#[test]
fn the_python_examples_pay_once_per_key() {
    let test = "the_python_examples_pay_once_per_key";
    let Some(services) = Isolated::new(test) else {
        return;
    };
    let Some(python) = python(test) else {
        return;
    };
    let faults = [
        "--fail-rate",
        "0.1",
        "--lose-rate",
        "0.1",
        "--latency",
        "20ms",
    ];
    let processor = MockProcessor::start(free_port(), &faults);
    // The examples' load-test limits (40 users share one API key), and one processor attempt
    // per request, so the faults reach the clients and their retries. A fifth of the calls fail
    // by design, and on a loaded machine timeouts add to them: the breaker opens only when
    // every call of its window fails, and then not for longer than the clients retry (its
    // default 50 % and 30 s once stalled a run, whose clients gave up while it was open).
    let limits = std::fs::read_to_string(examples_dir().join("load-test.toml")).expect("limits");
    let config = format!(
        "{limits}\n[processor]\nmax_attempts = 1\n\
         [breaker]\nfailure_rate_threshold = 100\nwait_in_open = \"1s\"\n"
    );
    let options = services
        .options()
        .env("PROCESSOR_URL", &processor.url())
        .toml(&config);
    let server = Server::start(&options);
    let url = format!("http://127.0.0.1:{}", server.port);

    let concurrent = run(
        &python,
        &["test_concurrent.py", "--url", &url, "--api-key", ALICE],
        &[],
    );
    assert!(
        concurrent.contains("executed 1, replayed 9"),
        "{concurrent}"
    );

    let (keys, locust) = run_locust(&python, &url);
    let keys: Vec<&str> = keys.lines().collect();
    assert!(
        keys.len() > 100,
        "locust created {} payments: {locust}",
        keys.len()
    );

    let created = i64::try_from(keys.len()).expect("a count");
    let listed = keys
        .iter()
        .map(|key| format!("'{}'", key.replace('\'', "")))
        .collect::<Vec<_>>()
        .join(",");
    let matching = format!(
        "SELECT count(DISTINCT idempotency_key) FROM {{schema}}.payments WHERE idempotency_key IN ({listed})"
    );
    assert_eq!(services.count(&matching), created, "a row for every key");
    // The rows: locust's, and the concurrent test's one.
    let rows = services.count("SELECT count(*) FROM {schema}.payments");
    assert_eq!(rows, created + 1, "one row per key and no other");
    let pending =
        services.count("SELECT count(*) FROM {schema}.payments WHERE status <> 'succeeded'");
    assert_eq!(pending, 0, "every payment finished");
    let (charges, requests) = processor.stats();
    assert_eq!(charges, rows, "one charge per payment");
    eprintln!(
        "python examples: locust created {created} payments (plus 1 concurrent), {charges} charges, {requests} processor requests\n{locust}"
    );
}
