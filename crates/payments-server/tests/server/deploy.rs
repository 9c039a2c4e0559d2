//! The operations artefacts in `deploy/` name only metrics a running server exports: every
//! metric in the alert rules and the Grafana dashboard is in `/metrics` of a server on Redis
//! and PostgreSQL that has seen a payment, a replay, a 429 and a health probe.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::support::{ALICE, Isolated, Server, payment, unique};

fn deploy(path: &str) -> String {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Each `expr:` of a rules file, on one line or folded (`>-`) over the lines below it.
fn rule_expressions(yaml: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((indent, rest)) = line.split_once("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest != ">-" && rest != ">" && rest != "|" {
            found.push(rest.to_owned());
            continue;
        }
        let mut folded = String::new();
        while let Some(next) = lines.peek() {
            let deeper = next.len() - next.trim_start().len() > indent.len();
            if !deeper || next.trim().is_empty() {
                break;
            }
            folded.push(' ');
            folded.push_str(next.trim());
            lines.next();
        }
        found.push(folded);
    }
    found
}

/// Each target's `expr` in a Grafana dashboard.
fn dashboard_expressions(json: &serde_json::Value, found: &mut Vec<String>) {
    match json {
        serde_json::Value::Object(members) => {
            for (name, value) in members {
                match (name.as_str(), value) {
                    ("expr", serde_json::Value::String(expr)) => found.push(expr.clone()),
                    _ => dashboard_expressions(value, found),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                dashboard_expressions(item, found);
            }
        }
        _ => {}
    }
}

/// The metric names in a PromQL expression: identifiers outside label matchers, ranges and
/// grouping clauses that are not functions, aggregations or keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: [&str; 23] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        // Aggregations, which may put `by (…)` between their name and their parenthesis.
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let mut outside = String::new();
    let mut depth = 0_i32;
    for c in expr.chars() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            '"' if depth > 0 => {}
            _ if depth == 0 => outside.push(c),
            _ => {}
        }
    }
    let chars: Vec<char> = outside.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_group = false;
    while i < chars.len() {
        let c = chars[i];
        if skip_group {
            skip_group = c != ')';
            i += 1;
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let next = chars[i..].iter().find(|c| !c.is_whitespace());
        if KEYWORDS.contains(&word.as_str()) {
            // `by (le, route)` and the like name labels, not metrics.
            skip_group = next == Some(&'(');
        } else if next != Some(&'(') {
            names.insert(word);
        }
    }
    names
}

#[test]
fn the_metric_name_scanner_reads_promql() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le, route) (rate(x_bucket{route="/a", status=~"5.."}[5m])))
           / on (instance) group_left y_total > 0.5 and z"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["x_bucket", "y_total", "z"]
    );
    let rules = rule_expressions("      - expr: >-\n          a\n          / b\n        for: 1m\n");
    assert_eq!(rules, [" a / b"]);
}

#[test]
fn alerts_and_dashboard_name_only_exported_metrics() {
    let Some(services) = Isolated::new("alerts_and_dashboard_name_only_exported_metrics") else {
        return;
    };
    let policies = "[[policy]]\nname = \"global\"\nscope = \"global\"\n\
        algorithm = \"sliding-window\"\nlimit = 1000000\nwindow = \"60s\"\n\
        [[policy]]\nname = \"payments\"\nscope = \"user\"\nalgorithm = \"sliding-window\"\n\
        limit = 2\nwindow = \"1h\"\nendpoint = \"POST /api/v1/payments\"\n";
    let server = Server::start(&services.options().toml(policies));
    let key = unique("order");
    server
        .pay(ALICE, &key, &payment("1.00", "card"))
        .expect(201);
    server
        .pay(ALICE, &key, &payment("1.00", "card"))
        .expect(201);
    server
        .pay(ALICE, &unique("order"), &payment("1.00", "card"))
        .expect(429);
    server.get("/health", None).expect(200);
    let exported = server.get("/metrics", None).body;
    // Every call to a backend is timed: the payment's two statements and the Redis decision.
    for series in [
        r#"backend="postgres",call="payment_claim_with_pending""#,
        r#"backend="postgres",call="payment_finish""#,
        r#"backend="redis",call="rate_limit_check""#,
    ] {
        let count = format!("backend_call_duration_seconds_count{{{series}}} ");
        assert!(
            exported
                .lines()
                .any(|l| l.starts_with(&count) && !l.ends_with(" 0")),
            "{count} is exported and counted"
        );
    }
    // One request at a time: each write went alone, sent by its own request; the writer's
    // series is there, at zero.
    let sizes = "database_group_commit_size_count";
    let by_request = format!(r#"{sizes}{{sent_by="request"}} "#);
    assert!(
        (exported.lines()).any(|l| l.starts_with(&by_request) && !l.ends_with(" 0")),
        "{by_request} is counted\n{exported}"
    );
    let by_writer = format!(r#"{sizes}{{sent_by="writer"}} 0"#);
    assert!(exported.lines().any(|l| l == by_writer), "{by_writer}");

    let named = deployed_metric_names();
    let missing = unexported(&named, &exported);
    assert!(
        missing.is_empty(),
        "named but not exported: {missing:?}\n{exported}"
    );
    assert!(named.len() >= 25, "{named:?}");
}

/// Every metric the alert rules and the dashboard query (but `up`, Prometheus's own).
fn deployed_metric_names() -> BTreeSet<String> {
    let mut expressions = rule_expressions(&deploy("prometheus/alerts.yml"));
    let dashboard: serde_json::Value =
        serde_json::from_str(&deploy("grafana/tollgate.json")).expect("the dashboard is JSON");
    dashboard_expressions(&dashboard, &mut expressions);
    assert!(expressions.len() > 20, "{expressions:?}");
    expressions
        .iter()
        .flat_map(|e| metric_names(e))
        .filter(|name| name != "up")
        .collect()
}

/// The names in `named` that no line of the exposition `exported` has.
fn unexported<'a>(named: &'a BTreeSet<String>, exported: &str) -> Vec<&'a String> {
    named
        .iter()
        .filter(|name| {
            !exported.lines().any(|line| {
                line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} "))
            })
        })
        .collect()
}

/// A dashboard shows data and a `rate()` alert can fire from the first scrape: a server that
/// has served nothing yet exports every series the rules and the dashboard query, and the five
/// metrics the API's contract names.
#[test]
fn a_fresh_servers_first_scrape_has_every_queried_series() {
    let Some(services) = Isolated::new("a_fresh_servers_first_scrape_has_every_queried_series")
    else {
        return;
    };
    let server = Server::start(&services.options());
    let exported = server.get("/metrics", None).body;
    let mut named = deployed_metric_names();
    named.extend(
        [
            "payment_requests_total",
            "payment_success_rate",
            "rate_limit_exceeded_total",
            "idempotent_replays_total",
            "concurrent_conflicts_total",
        ]
        .map(str::to_owned),
    );
    let missing = unexported(&named, &exported);
    assert!(
        missing.is_empty(),
        "not in a fresh server's first scrape: {missing:?}\n{exported}"
    );
}

/// The compose file publishes the API alone: monitoring on loopback only, Grafana behind a
/// login, no password written in the file, and nginx keeps `/metrics` off the public port.
#[test]
fn the_compose_file_publishes_only_the_api_and_holds_no_secret() {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docker-compose.yml"),
    )
    .expect("docker-compose.yml");
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("valid YAML");
    let services = &docs[0]["services"];
    let services = services.as_hash().expect("services");
    for (name, service) in services {
        let name = name.as_str().unwrap_or_default();
        let Some(ports) = service["ports"].as_vec() else {
            continue;
        };
        for port in ports {
            let port = port.as_str().unwrap_or_default();
            let public = !port.starts_with("127.0.0.1:");
            assert!(
                !public || (name == "nginx" && port == "8000:8000"),
                "{name} publishes {port} beyond this host"
            );
        }
        for (variable, value) in service["environment"].as_hash().into_iter().flatten() {
            let (variable, value) = (
                variable.as_str().unwrap_or_default(),
                value.as_str().unwrap_or_default(),
            );
            let secret = ["PASSWORD", "API_KEYS", "DATABASE_URL"]
                .iter()
                .any(|s| variable.contains(s));
            if secret && !value.contains("postgres://tollgate:${") {
                assert!(
                    value.starts_with("${") && value.contains(":?"),
                    "{name}: {variable} must come from the operator and be required: {value}"
                );
            }
            if variable == "DATABASE_URL" {
                assert!(value.contains("${POSTGRES_PASSWORD:?"), "{name}: {value}");
            }
        }
    }
    let grafana = &docs[0]["services"]["grafana"]["environment"];
    assert_eq!(grafana["GF_AUTH_ANONYMOUS_ENABLED"].as_str(), Some("false"));
    let nginx = deploy("nginx/nginx.conf");
    let metrics = nginx
        .split("location = /metrics {")
        .nth(1)
        .expect("nginx has a /metrics location");
    assert!(metrics.trim_start().starts_with("return 404;"), "{metrics}");
}
