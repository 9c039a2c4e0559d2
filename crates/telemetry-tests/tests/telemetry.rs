//! Each library with its `tracing` and `metrics` features on: the documented spans, events and
//! series, with the documented fields and labels.

use std::sync::Arc;
use std::time::Duration;

use telemetry_tests::{capture, find, measure};
use tracing::Level;

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

mod ratelimit {
    use super::*;
    use tollgate_ratelimit::{Algorithm, MemoryLimiter, Policy, PolicyKey, RateLimiter, Scope};

    fn one_a_minute(subject: &str) -> Vec<PolicyKey> {
        let policy = Policy::new(
            "payments",
            Scope::User,
            Algorithm::sliding_window(1, Duration::from_secs(60)),
        )
        .expect("a policy");
        vec![PolicyKey::new(Arc::new(policy), subject)]
    }

    #[test]
    fn a_refused_decision_names_its_policy_in_a_span_and_an_event() {
        let limiter = MemoryLimiter::new();
        let keys = one_a_minute("alice");
        let (captured, ()) = capture(|| {
            block_on(async {
                assert!(
                    limiter
                        .check(&keys, 1)
                        .await
                        .expect("a decision")
                        .is_allowed()
                );
                assert!(
                    !limiter
                        .check(&keys, 1)
                        .await
                        .expect("a decision")
                        .is_allowed()
                );
            })
        });
        let spans = captured.spans("tollgate.ratelimit.check");
        assert_eq!(spans.len(), 2);
        let (allowed, denied) = (&spans[0], &spans[1]);
        assert_eq!(allowed.level, Level::DEBUG);
        assert_eq!(allowed.field("tollgate.ratelimit.result"), Some("allowed"));
        assert_eq!(allowed.field("tollgate.ratelimit.policy"), None);
        assert_eq!(denied.field("tollgate.ratelimit.backend"), Some("memory"));
        assert_eq!(denied.field("tollgate.ratelimit.operation"), Some("check"));
        assert_eq!(
            denied.field("tollgate.ratelimit.policies"),
            Some("payments")
        );
        assert_eq!(denied.field("tollgate.ratelimit.cost"), Some("1"));
        assert_eq!(denied.field("tollgate.ratelimit.result"), Some("denied"));
        assert_eq!(denied.field("tollgate.ratelimit.policy"), Some("payments"));
        assert_eq!(denied.field("tollgate.ratelimit.degraded"), Some("false"));
        let retry_after: u64 = denied
            .field("tollgate.ratelimit.retry_after_ms")
            .and_then(|ms| ms.parse().ok())
            .expect("retry_after_ms");
        // A sliding window counts part of the previous window too: up to two windows' wait.
        assert!((1..=120_000).contains(&retry_after), "{retry_after}");

        let event = captured
            .event("rate limit denied")
            .expect("the denial's event");
        assert_eq!(event.level, Level::DEBUG);
        assert_eq!(event.span.as_deref(), Some("tollgate.ratelimit.check"));
        assert_eq!(event.field("tollgate.ratelimit.policy"), Some("payments"));
        assert_eq!(
            event.field("tollgate.ratelimit.key"),
            Some("payments:alice")
        );
        assert!(captured.at_least(Level::INFO).is_empty(), "quiet at INFO");
    }

    #[test]
    fn decisions_are_counted_per_policy_and_result_and_timed() {
        let limiter = MemoryLimiter::new();
        let keys = one_a_minute("bob");
        let (series, ()) = measure(|| {
            block_on(async {
                for _ in 0..3 {
                    limiter.check(&keys, 1).await.expect("a decision");
                }
            })
        });
        let count = |result: &str| {
            let labels = ["policy=payments", &format!("result={result}")];
            find(&series, "tollgate_ratelimit_decisions_total", &labels).map(|s| s.value)
        };
        assert_eq!(count("allowed"), Some(1.0));
        assert_eq!(count("denied"), Some(2.0));
        let timed = find(
            &series,
            "tollgate_ratelimit_backend_duration_seconds",
            &["backend=memory", "operation=check"],
        );
        assert_eq!(timed.map(|s| s.value), Some(3.0), "three samples");
    }
}

mod idempotency {
    use super::*;
    use http::Method;
    use tollgate_idempotency::memory::MemoryStore;
    use tollgate_idempotency::store::StoredResponse;
    use tollgate_idempotency::{
        HandlerResult, Idempotency, IdempotencyConfig, IdempotencyKey, Outcome, Scope,
    };

    fn pay_twice() -> (Outcome, Outcome) {
        let driver = Idempotency::new(MemoryStore::new(10), IdempotencyConfig::default());
        let key = IdempotencyKey::parse("order-7c1f0e9a2b4d4e11").expect("a key");
        let scope = Scope::new("alice", &Method::POST, "/pay", key);
        let fingerprint = tollgate_idempotency::fingerprint::Fingerprint::of_json(
            &Method::POST,
            "/pay",
            b"{\"amount\":\"10.00\"}",
        )
        .expect("JSON");
        let handler = |_| async {
            HandlerResult::Store(StoredResponse {
                status: 201,
                headers: vec![],
                body: "paid".into(),
            })
        };
        block_on(async {
            let first = driver.run(&scope, &fingerprint, handler).await;
            let again = driver.run(&scope, &fingerprint, handler).await;
            (first.expect("executed"), again.expect("replayed"))
        })
    }

    #[test]
    fn a_replayed_claim_is_a_claim_span_with_the_outcome_completed() {
        let (captured, (first, again)) = capture(pay_twice);
        assert!(matches!(first, Outcome::Executed(_)));
        assert!(matches!(again, Outcome::Replayed(_)));
        let claims = captured.spans("tollgate.idempotency.claim");
        let outcomes: Vec<_> = claims
            .iter()
            .map(|span| span.field("tollgate.idempotency.outcome"))
            .collect();
        assert_eq!(outcomes, [Some("acquired"), Some("completed")]);
        assert_eq!(
            claims[1].field("tollgate.idempotency.store"),
            Some("memory")
        );
        assert_eq!(claims[1].level, Level::DEBUG);
        let complete = captured
            .span("tollgate.idempotency.complete")
            .expect("a completion");
        assert_eq!(complete.field("tollgate.idempotency.outcome"), Some("ok"));
        assert!(captured.at_least(Level::INFO).is_empty(), "quiet at INFO");
    }

    #[test]
    fn store_calls_are_counted_by_outcome_and_timed() {
        let (series, _) = measure(pay_twice);
        let outcome = |operation: &str, outcome: &str| {
            let labels = [
                &format!("operation={operation}") as &str,
                &format!("outcome={outcome}"),
            ];
            find(&series, "tollgate_idempotency_outcomes_total", &labels).map(|s| s.value)
        };
        assert_eq!(outcome("claim", "acquired"), Some(1.0));
        assert_eq!(outcome("claim", "completed"), Some(1.0));
        assert_eq!(outcome("complete", "ok"), Some(1.0));
        let timed = find(
            &series,
            "tollgate_idempotency_store_duration_seconds",
            &["store=memory", "operation=claim"],
        );
        assert_eq!(timed.map(|s| s.value), Some(2.0));
    }
}

mod retry {
    use super::*;
    use tollgate_retry::backoff::{Backoff, Jitter};
    use tollgate_retry::breaker::{BreakerConfig, CircuitBreaker, Window};
    use tollgate_retry::budget::RetryBudget;
    use tollgate_retry::clock::ManualClock;
    use tollgate_retry::retry::{Attempt, Retrier, RetryPolicy};

    fn flaky_call(budget: Option<RetryBudget>) -> Result<u32, u32> {
        let clock = ManualClock::new();
        let mut policy =
            RetryPolicy::new(Backoff::constant(Duration::from_millis(250)).jitter(Jitter::None))
                .max_attempts(3);
        if let Some(budget) = budget {
            policy = policy.budget(budget);
        }
        let retrier = Retrier::with_clock(policy, Arc::new(clock.clone()), Arc::new(clock));
        block_on(retrier.run(
            |attempt| async move {
                if attempt < 3 {
                    Err(attempt)
                } else {
                    Ok(attempt)
                }
            },
            |result| {
                if result.is_err() {
                    Attempt::retry()
                } else {
                    Attempt::Done
                }
            },
        ))
    }

    #[test]
    fn a_retried_call_is_an_event_per_retry() {
        let (captured, result) = capture(|| flaky_call(None));
        assert_eq!(result, Ok(3));
        let retries = captured.events("retrying");
        assert_eq!(retries.len(), 2);
        assert_eq!(retries[0].level, Level::DEBUG);
        assert_eq!(retries[0].field("tollgate.retry.attempt"), Some("1"));
        assert_eq!(retries[1].field("tollgate.retry.attempt"), Some("2"));
        assert_eq!(retries[1].field("tollgate.retry.delay_ms"), Some("250"));
        assert_eq!(retries[1].field("error.type"), Some("error"));
    }

    #[test]
    fn an_exhausted_budget_is_an_event_and_a_series() {
        // Room for one retry: the second is refused.
        let budget = || Some(RetryBudget::quota(5, 5, 10, 1));
        let (captured, result) = capture(|| flaky_call(budget()));
        assert_eq!(result, Err(2));
        let refused = captured
            .event("retry budget exhausted")
            .expect("the refusal");
        assert_eq!(refused.field("tollgate.retry.attempt"), Some("2"));
        let (series, _) = measure(|| flaky_call(budget()));
        assert_eq!(
            find(&series, "tollgate_retry_budget_exhausted_total", &[]).map(|s| s.value),
            Some(1.0)
        );
        let retries = find(&series, "tollgate_retry_retries_total", &["cause=error"]);
        assert_eq!(retries.map(|s| s.value), Some(1.0));
    }

    fn open_a_breaker() -> CircuitBreaker {
        let config = BreakerConfig::default()
            .window(Window::Count(2))
            .minimum_calls(2)
            .failure_rate_threshold(50);
        let breaker =
            CircuitBreaker::with_clock(config, Arc::new(ManualClock::new())).named("processor");
        for _ in 0..2 {
            breaker.try_acquire().expect("closed").failure();
        }
        breaker
    }

    #[test]
    fn a_breaker_opening_is_a_warning_and_its_state_a_series() {
        let (captured, breaker) = capture(open_a_breaker);
        assert!(breaker.try_acquire().is_err(), "open");
        let opened = captured
            .event("circuit breaker opened")
            .expect("the transition");
        assert_eq!(opened.level, Level::WARN);
        assert_eq!(opened.field("tollgate.breaker.name"), Some("processor"));
        assert_eq!(opened.field("tollgate.breaker.from"), Some("closed"));
        assert_eq!(opened.field("tollgate.breaker.to"), Some("open"));

        let (series, _) = measure(open_a_breaker);
        let state = find(
            &series,
            "tollgate_retry_breaker_state",
            &["breaker=processor"],
        );
        assert_eq!(state.map(|s| s.value), Some(2.0), "open");
        let transitions = find(
            &series,
            "tollgate_retry_breaker_transitions_total",
            &["breaker=processor", "from=closed", "to=open"],
        );
        assert_eq!(transitions.map(|s| s.value), Some(1.0));
    }
}

mod audit {
    use super::*;
    use tollgate_audit::{Action, AuditEvent, AuditSink, JsonLinesSink, MemoryAuditLog, Outcome};

    fn event() -> AuditEvent {
        AuditEvent::new("alice", Action::PAYMENT_ATTEMPT, Outcome::Success)
    }

    #[test]
    fn a_write_is_a_span_and_writes_and_drops_are_series() {
        let sink = JsonLinesSink::new(Vec::new());
        let (captured, ()) =
            capture(|| block_on(async { sink.record(event()).await.expect("written") }));
        let write = captured.span("tollgate.audit.write").expect("the write");
        assert_eq!(write.level, Level::DEBUG);
        assert_eq!(write.field("tollgate.audit.sink"), Some("json_lines"));
        assert_eq!(write.field("tollgate.audit.events"), Some("1"));

        let memory = MemoryAuditLog::new(1);
        let (series, ()) = measure(|| {
            block_on(async {
                sink.record(event()).await.expect("written");
                for _ in 0..3 {
                    memory.record(event()).await.expect("recorded");
                }
            })
        });
        let written = find(
            &series,
            "tollgate_audit_events_written_total",
            &["sink=json_lines"],
        );
        assert_eq!(written.map(|s| s.value), Some(1.0));
        let dropped = find(&series, "tollgate_audit_dropped_total", &["sink=memory"]);
        assert_eq!(
            dropped.map(|s| s.value),
            Some(2.0),
            "a log of one keeps the newest"
        );
    }
}

mod reqwest_client {
    use super::*;
    use tollgate_reqwest::retry::clock::ManualClock;
    use tollgate_reqwest::{RetryMiddleware, reqwest, reqwest_middleware};

    #[test]
    fn a_retried_request_is_an_event_with_the_status_and_resend_count() {
        let (captured, status) = capture(|| {
            block_on(async {
                let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
                let app = axum::Router::new().route(
                    "/pay",
                    axum::routing::post(move || {
                        let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        async move {
                            if n == 0 {
                                http::StatusCode::BAD_GATEWAY
                            } else {
                                http::StatusCode::CREATED
                            }
                        }
                    }),
                );
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("a port");
                let address = listener.local_addr().expect("an address");
                tokio::spawn(async move { axum::serve(listener, app).await });
                let clock = ManualClock::new();
                let retry =
                    RetryMiddleware::default().clock(Arc::new(clock.clone()), Arc::new(clock));
                let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
                    .with(retry)
                    .build();
                let response = client
                    .post(format!("http://{address}/pay"))
                    .send()
                    .await
                    .expect("an answer");
                response.status().as_u16()
            })
        });
        assert_eq!(status, 201);
        let retried = captured.event("retrying request").expect("the retry");
        assert_eq!(retried.level, Level::DEBUG);
        assert_eq!(retried.field("http.request.resend_count"), Some("1"));
        assert_eq!(retried.field("error.type"), Some("502"));
    }
}
