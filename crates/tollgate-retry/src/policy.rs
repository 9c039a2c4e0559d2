//! [`HttpRetryPolicy`], a `tower::retry::Policy` for tower and hyper clients that follows the
//! same rules as [`RetryLayer::http`](crate::layer::RetryLayer::http): 408/429/5xx (and a 409
//! with `Retry-After`) and transport errors are retried, `Retry-After` is obeyed within the
//! policy's bounds, and a request that is not idempotent is sent exactly once unless it carries
//! an `Idempotency-Key`, which every retry then repeats unchanged.
//!
//! Use it with `tower::retry::RetryLayer` when the rest of your stack is tower's own; the
//! request body must be `Clone` (for hyper, `Full<Bytes>` or `String`). The attempt count is
//! left in the response's extensions as [`Attempts`].
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use http::{Request, Response, StatusCode};
//! use tollgate_retry::backoff::Backoff;
//! use tollgate_retry::clock::ManualClock;
//! use tollgate_retry::policy::HttpRetryPolicy;
//! use tollgate_retry::retry::{Attempts, Retrier, RetryPolicy};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! let calls = Arc::new(AtomicU32::new(0));
//! let counter = Arc::clone(&calls);
//! // Rate limited once (Retry-After: 2), then the payment is created.
//! let server = service_fn(move |_request: Request<String>| {
//!     let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
//!     async move {
//!         let response = if first {
//!             Response::builder().status(StatusCode::TOO_MANY_REQUESTS).header("retry-after", "2")
//!         } else {
//!             Response::builder().status(StatusCode::CREATED)
//!         };
//!         Ok::<_, std::convert::Infallible>(response.body(()).unwrap())
//!     }
//! });
//! let clock = ManualClock::new();
//! let retrier = Retrier::with_clock(
//!     RetryPolicy::new(Backoff::exponential(Duration::from_millis(100), Duration::from_secs(2))),
//!     Arc::new(clock.clone()),
//!     Arc::new(clock.clone()),
//! );
//! let client = ServiceBuilder::new()
//!     .retry(HttpRetryPolicy::new(retrier))
//!     .service(server);
//!
//! let pay = Request::post("/api/v1/payments")
//!     .header("idempotency-key", "order-7c1f0e9a2b4d4e11")
//!     .body("{\"amount\":\"10.00\"}".to_owned())
//!     .unwrap();
//! let response = client.oneshot(pay).await.unwrap();
//! assert_eq!(response.status(), StatusCode::CREATED);
//! assert_eq!(response.extensions().get::<Attempts>(), Some(&Attempts(2)));
//! assert_eq!(clock.elapsed(), Duration::from_secs(2)); // the server's Retry-After
//! # });
//! ```

use std::fmt;
use std::time::SystemTime;

use http::{Request, Response};

use crate::classify::{http_attempt, may_retry};
use crate::clock::{BoxFuture, Timestamp};
use crate::retry::{Attempts, Retrier, Schedule};

/// A `tower::retry::Policy` for HTTP clients. Clones share the retrier (and its budget); each
/// request gets a schedule of its own.
pub struct HttpRetryPolicy {
    retrier: Retrier,
    schedule: Option<Schedule>,
}

impl HttpRetryPolicy {
    /// Retries under `retrier`'s policy, clock and budget.
    pub fn new(retrier: Retrier) -> Self {
        HttpRetryPolicy {
            retrier,
            schedule: None,
        }
    }
}

impl Clone for HttpRetryPolicy {
    /// tower clones the policy for every request before its first attempt; a clone starts a
    /// schedule of its own.
    fn clone(&self) -> Self {
        HttpRetryPolicy::new(self.retrier.clone())
    }
}

impl fmt::Debug for HttpRetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRetryPolicy")
            .field("retrier", &self.retrier)
            .field("schedule", &self.schedule)
            .finish()
    }
}

/// When the first attempt was sent, carried in the kept copy of the request: tower asks the
/// policy for that copy before the policy's per-request clone exists.
#[derive(Clone, Copy, Debug)]
struct FirstSent(Timestamp);

impl<B: Clone, R, E> tower::retry::Policy<Request<B>, Response<R>, E> for HttpRetryPolicy {
    type Future = BoxFuture;

    fn retry(
        &mut self,
        request: &mut Request<B>,
        result: &mut Result<Response<R>, E>,
    ) -> Option<BoxFuture> {
        let retrier = &self.retrier;
        let schedule = self.schedule.get_or_insert_with(|| {
            let started = request.extensions().get::<FirstSent>().map(|sent| sent.0);
            retrier.schedule_since(started.unwrap_or_else(|| retrier.now()))
        });
        let attempt = schedule.attempt();
        let verdict = http_attempt(result, SystemTime::now());
        match schedule.next(verdict, result.is_ok()) {
            Some(retrying) => Some(retrier.sleep(retrying.delay)),
            None => {
                if let Ok(response) = result {
                    response.extensions_mut().insert(Attempts(attempt));
                }
                None
            }
        }
    }

    fn clone_request(&mut self, request: &Request<B>) -> Option<Request<B>> {
        if !may_retry(request.method(), request.headers()) {
            return None;
        }
        let mut copy = Request::new(request.body().clone());
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.version_mut() = request.version();
        *copy.headers_mut() = request.headers().clone();
        *copy.extensions_mut() = request.extensions().clone();
        if copy.extensions().get::<FirstSent>().is_none() {
            copy.extensions_mut().insert(FirstSent(self.retrier.now()));
        }
        Some(copy)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use http::StatusCode;
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    use super::*;
    use crate::backoff::{Backoff, Jitter};
    use crate::clock::ManualClock;
    use crate::retry::RetryPolicy;

    fn retrying_client(
        statuses: &'static [u16],
        clock: &ManualClock,
        policy: RetryPolicy,
    ) -> (
        impl tower::Service<
            Request<String>,
            Response = Response<()>,
            Error = std::convert::Infallible,
            Future: Send,
        > + Clone,
        Arc<AtomicU32>,
    ) {
        let calls = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&calls);
        let server = service_fn(move |_request: Request<String>| {
            let n = counter.fetch_add(1, Ordering::SeqCst) as usize;
            let status = statuses[n.min(statuses.len() - 1)];
            async move {
                Ok::<_, std::convert::Infallible>(
                    Response::builder()
                        .status(status)
                        .body(())
                        .expect("a response"),
                )
            }
        });
        let retrier = Retrier::with_clock(policy, Arc::new(clock.clone()), Arc::new(clock.clone()));
        let service = ServiceBuilder::new()
            .retry(HttpRetryPolicy::new(retrier))
            .service(server);
        (service, calls)
    }

    fn fixed(delay_ms: u64) -> RetryPolicy {
        RetryPolicy::new(Backoff::constant(Duration::from_millis(delay_ms)).jitter(Jitter::None))
            .max_attempts(4)
    }

    fn post(key: Option<&str>) -> Request<String> {
        let mut builder = Request::post("/api/v1/payments");
        if let Some(key) = key {
            builder = builder.header("idempotency-key", key);
        }
        builder.body(String::new()).expect("a request")
    }

    #[tokio::test]
    async fn a_post_without_a_key_is_sent_once() {
        let clock = ManualClock::new();
        let (client, calls) = retrying_client(&[503, 201], &clock, fixed(100));
        let response = client.oneshot(post(None)).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_422_is_final_and_5xx_are_retried_until_the_limit() {
        let clock = ManualClock::new();
        let (client, calls) = retrying_client(&[503, 422, 201], &clock, fixed(100));
        let response = client
            .oneshot(post(Some("k-1234567890abcdef")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(response.extensions().get::<Attempts>(), Some(&Attempts(2)));
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        let (client, calls) = retrying_client(&[503], &clock, fixed(100));
        let response = client
            .oneshot(post(Some("k-1234567890abcdef")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn each_request_has_its_own_schedule() {
        let clock = ManualClock::new();
        let (client, calls) = retrying_client(&[503, 201, 503, 201], &clock, fixed(100));
        for _ in 0..2 {
            let response = client
                .clone()
                .oneshot(post(Some("k-1234567890abcdef")))
                .await
                .unwrap();
            assert_eq!(response.extensions().get::<Attempts>(), Some(&Attempts(2)));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(clock.elapsed(), Duration::from_millis(200));
    }

    #[tokio::test]
    async fn the_elapsed_limit_counts_from_the_first_attempt() {
        let clock = ManualClock::new();
        let policy = fixed(100).max_elapsed(Duration::from_millis(250));
        let (client, calls) = retrying_client(&[503], &clock, policy);
        client
            .oneshot(post(Some("k-1234567890abcdef")))
            .await
            .unwrap();
        // Attempts at 0, 100 and 200 ms; a fourth at 300 ms would pass the 250 ms limit.
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
