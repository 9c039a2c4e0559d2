//! OpenTelemetry export (feature `otlp`): a server given `OTEL_EXPORTER_OTLP_ENDPOINT` sends its
//! request spans over OTLP/HTTP to a receiver this test runs, as children of the caller's W3C
//! trace, and the processor call carries the request span as its parent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::processor::MockProcessor;
use crate::support::{ALICE, Options, Server, free_port, payment, try_pay_with, unique};

/// What the receiver was sent: path, content type, body.
type Received = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// An OTLP/HTTP receiver on a free port: answers every request `200` with an empty
/// protobuf body, keeps what it was sent.
fn receiver() -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let received: Received = Arc::default();
    let keep = Arc::clone(&received);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let keep = Arc::clone(&keep);
            std::thread::spawn(move || serve(stream, &keep));
        }
    });
    (port, received)
}

/// Reads requests off one connection (the exporter keeps it alive) until it closes.
fn serve(stream: TcpStream, received: &Received) {
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
        let (mut length, mut content_type) = (0, String::new());
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "content-type" => value.trim().clone_into(&mut content_type),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        received
            .lock()
            .expect("lock")
            .push((path, content_type, body));
        let answer =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// Every span received so far, with its resource's `service.name`.
fn spans(received: &Received) -> Vec<(String, Span)> {
    let mut spans = Vec::new();
    for (path, content_type, body) in received.lock().expect("lock").iter() {
        assert_eq!(path, "/v1/traces");
        assert_eq!(content_type, "application/x-protobuf");
        let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP protobuf");
        for resource in request.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| string(a.value.as_ref()?.value.as_ref()?))
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push((service.clone(), span));
                }
            }
        }
    }
    spans
}

fn string(value: &Value) -> Option<String> {
    match value {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| string(a.value.as_ref()?.value.as_ref()?))
}

/// `span` has each attribute with its value.
fn assert_attributes(span: &Span, expected: &[(&str, &str)]) {
    for (key, value) in expected {
        assert_eq!(attribute(span, key).as_deref(), Some(*value), "{key}");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The processor call: a client span per attempt, a child of the request's `span`, whose id the
/// processor received as the parent in its traceparent (`charge`).
fn check_the_processor_call(
    received: &Received,
    span: &Span,
    charge: &serde_json::Value,
    trace: &str,
) {
    let client = spans(received)
        .into_iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "POST /v1/charges" && s.parent_span_id == span.span_id)
        .expect("the processor call's client span");
    assert_eq!(client.kind, 3, "SPAN_KIND_CLIENT");
    assert_eq!(hex(&client.trace_id), trace);
    let client_attributes = [
        ("http.request.method", "POST"),
        ("url.template", "/v1/charges"),
        ("server.address", "127.0.0.1"),
        ("http.response.status_code", "201"),
    ];
    assert_attributes(&client, &client_attributes);
    assert_eq!(
        attribute(&client, "http.request.resend_count"),
        None,
        "a first attempt"
    );
    assert_eq!(
        charge["traceparent"].as_str(),
        Some(format!("00-{trace}-{}-01", hex(&client.span_id)).as_str()),
        "{charge}"
    );
}

#[test]
fn request_spans_reach_an_otlp_receiver_in_the_callers_trace() {
    let (collector, received) = receiver();
    let processor = MockProcessor::start(free_port(), &[]);
    let options = Options::default()
        .env("PROCESSOR_URL", &processor.url())
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &format!("http://127.0.0.1:{collector}"),
        )
        .env("OTEL_SERVICE_NAME", "tollgate-test")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    let mut server = Server::start(&options);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let reply = try_pay_with(
        server.port,
        ALICE,
        &unique("order"),
        &payment("5.00", "card"),
        &[("traceparent", &format!("00-{trace}-{caller_span}-01"))],
    )
    .expect("an answer");
    assert_eq!(reply.status, 201, "{}", reply.body);
    let request_id = reply
        .header("x-request-id")
        .expect("a request id")
        .to_owned();

    let deadline = Instant::now() + Duration::from_secs(10);
    let (service, span) = loop {
        let found = spans(&received)
            .into_iter()
            .find(|(_, s)| attribute(s, "request_id").as_deref() == Some(request_id.as_str()));
        if let Some(found) = found {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "no span of {request_id} exported"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(service, "tollgate-test");
    assert_eq!(span.name, "POST /api/v1/payments");
    assert_eq!(hex(&span.trace_id), trace, "the caller's trace");
    assert_eq!(
        hex(&span.parent_span_id),
        caller_span,
        "the caller's span as parent"
    );
    assert_eq!(span.kind, 2, "SPAN_KIND_SERVER");
    // OpenTelemetry's HTTP server attributes.
    let server_attributes = [
        ("http.request.method", "POST"),
        ("http.route", "/api/v1/payments"),
        ("url.path", "/api/v1/payments"),
        ("client.address", "127.0.0.1"),
        ("http.response.status_code", "201"),
        ("user.id", "alice"),
    ];
    assert_attributes(&span, &server_attributes);

    let txn = reply.json()["transaction_id"]
        .as_str()
        .expect("a transaction id")
        .to_owned();
    check_the_processor_call(&received, &span, &processor.charge(&txn), trace);

    // Spans still queued at SIGTERM are flushed before the process exits.
    let before = spans(&received).len();
    server.get("/api/v1/rate-limits", Some(ALICE)).expect(200);
    server.terminate();
    assert!(
        spans(&received).len() > before,
        "the last request's span was flushed"
    );
}

/// An exporter setting the server cannot follow stops it at start-up, naming the variable.
#[test]
fn an_unsupported_exporter_setting_is_a_start_up_error() {
    let start = |name: &str, value: &str| {
        crate::tls::start_up_error(
            &Options::default()
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
                .env(name, value),
        )
    };
    let stderr = start("OTEL_TRACES_EXPORTER", "zipkin");
    assert!(stderr.contains("OTEL_TRACES_EXPORTER"), "{stderr}");
    let stderr = start("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
    assert!(stderr.contains("OTEL_EXPORTER_OTLP"), "{stderr}");
    let stderr = start("OTEL_EXPORTER_OTLP_TIMEOUT", "soon");
    assert!(stderr.contains("OTEL_EXPORTER_OTLP_TIMEOUT"), "{stderr}");
    let stderr = start("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem");
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_CERTIFICATE"),
        "{stderr}"
    );
}

/// With `[telemetry] backend_spans`, each call to Redis and PostgreSQL is a client span under
/// the request's, named `{operation} {system}` with `db.system.name` and `db.operation.name`.
#[test]
fn backend_calls_are_client_spans_when_asked_for() {
    let Some(services) =
        crate::support::Isolated::new("backend_calls_are_client_spans_when_asked_for")
    else {
        return;
    };
    let (collector, received) = receiver();
    let options = services
        .options()
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &format!("http://127.0.0.1:{collector}"),
        )
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .toml("[telemetry]\nbackend_spans = true\n");
    let server = Server::start(&options);
    let reply = server.pay(ALICE, &unique("order"), &payment("5.00", "card"));
    assert_eq!(reply.status, 201, "{}", reply.body);
    let request_id = reply
        .header("x-request-id")
        .expect("a request id")
        .to_owned();

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all: Vec<Span> = spans(&received).into_iter().map(|(_, s)| s).collect();
        let request = all
            .iter()
            .find(|s| attribute(s, "request_id").as_deref() == Some(request_id.as_str()));
        let children: Vec<&Span> = request
            .map(|r| {
                all.iter()
                    .filter(|s| s.parent_span_id == r.span_id)
                    .collect()
            })
            .unwrap_or_default();
        let named = |name: &str| children.iter().copied().find(|s| s.name == name);
        let (redis, claim) = (
            named("rate_limit_check redis"),
            named("payment_claim_with_pending postgresql"),
        );
        if let (Some(redis), Some(claim)) = (redis, claim) {
            assert_eq!(redis.kind, 3, "SPAN_KIND_CLIENT");
            assert_eq!(attribute(redis, "db.system.name").as_deref(), Some("redis"));
            assert_eq!(
                attribute(claim, "db.operation.name").as_deref(),
                Some("payment_claim_with_pending")
            );
            assert_eq!(
                attribute(claim, "db.system.name").as_deref(),
                Some("postgresql")
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no backend spans under the request: {:?}",
            children.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
