//! [`RetryMiddleware`]: the reqwest middleware.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{Extensions, HeaderValue, StatusCode};
use parking_lot::Mutex;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};
use tollgate_retry::breaker::{BreakerConfig, CircuitBreaker};
use tollgate_retry::budget::RetryBudget;
use tollgate_retry::clock::{Clock, Sleeper, SystemClock};
use tollgate_retry::config::RetryConfig;
use tollgate_retry::retry::{Attempts, Retrier, RetryPolicy};

use crate::{Error, Rules};

/// The idempotency key a request was sent with (the caller's, or the one the middleware made),
/// left in the response's extensions for logs and reconciliation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(pub String);

/// What failed an attempt that is about to be retried.
#[derive(Debug)]
#[non_exhaustive]
pub enum Failure<'a> {
    /// The server answered with a retryable status.
    Status(StatusCode),
    /// The request did not get an answer: connecting, sending or reading failed, or it timed out.
    Error(&'a reqwest_middleware::Error),
}

/// What [`RetryMiddleware::notify`]'s hook hears before each wait for another attempt.
#[derive(Debug)]
#[non_exhaustive]
pub struct RetryEvent<'a> {
    /// The attempt that failed (1-based).
    pub attempt: u32,
    /// The wait before the next attempt (after jitter and `Retry-After`).
    pub delay: Duration,
    /// Why it is retried.
    pub failure: Failure<'a>,
    /// The request's idempotency key, if it has one.
    pub key: Option<&'a str>,
}

type Notify = Arc<dyn Fn(&RetryEvent<'_>) + Send + Sync>;

/// Retries a reqwest client's requests only where that is safe. See the [crate] documentation.
pub struct RetryMiddleware {
    retrier: Retrier,
    rules: Rules,
    generate_keys: bool,
    breakers: Option<Breakers>,
    clock: Arc<dyn Clock>,
    notify: Option<Notify>,
}

impl fmt::Debug for RetryMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryMiddleware")
            .field("retrier", &self.retrier)
            .field("rules", &self.rules)
            .field("generate_keys", &self.generate_keys)
            .field("breakers", &self.breakers.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for RetryMiddleware {
    /// [`RetryConfig::default`]'s policy and rules, with an AWS-standard retry budget.
    fn default() -> Self {
        RetryMiddleware::from_config(&RetryConfig::default())
            .expect("the default retry configuration is valid")
    }
}

impl RetryMiddleware {
    /// Retries under `policy` (its attempts, backoff, `Retry-After` bounds, time limit and
    /// budget) with the default [`Rules`], on the system clock and tokio's timer.
    pub fn new(policy: RetryPolicy) -> Self {
        RetryMiddleware {
            retrier: Retrier::new(policy),
            rules: Rules::default(),
            generate_keys: true,
            breakers: None,
            clock: Arc::new(SystemClock::new()),
            notify: None,
        }
    }

    /// The policy and rules `config` describes, with an AWS-standard retry budget shared by
    /// every request of the client.
    pub fn from_config(config: &RetryConfig) -> Result<Self, Error> {
        let policy = config.to_policy().map_err(Error::Policy)?;
        let rules = Rules::from_config(config)?;
        Ok(RetryMiddleware::new(policy.budget(RetryBudget::aws_standard())).rules(rules))
    }

    /// Configures itself from the policy a Tollgate server publishes at
    /// `{base_url}/api/v1/retry-config`, fetched with `client` (give it the headers the server
    /// wants, such as an API key).
    pub async fn from_server(client: &reqwest::Client, base_url: &str) -> Result<Self, Error> {
        let url = format!("{}/api/v1/retry-config", base_url.trim_end_matches('/'));
        let fetch = |source| Error::Fetch {
            url: url.clone(),
            source,
        };
        let response = client.get(&url).send().await.map_err(fetch)?;
        let body = response
            .error_for_status()
            .map_err(fetch)?
            .bytes()
            .await
            .map_err(fetch)?;
        let config: RetryConfig =
            serde_json::from_slice(&body).map_err(|source| Error::Decode {
                url: url.clone(),
                source,
            })?;
        RetryMiddleware::from_config(&config)
    }

    /// Replaces what is retried and which methods need a key.
    pub fn rules(mut self, rules: Rules) -> Self {
        self.rules = rules;
        self
    }

    /// Whether requests that need a key and have none are given one (default: yes). Turned
    /// off, such requests are sent exactly once.
    pub fn generate_keys(mut self, generate: bool) -> Self {
        self.generate_keys = generate;
        self
    }

    /// Calls each host through a circuit breaker of its own, made from `config`: while a host's
    /// breaker is open its requests fail at once with [`Error::CircuitOpen`]. Transport errors
    /// and 5xx count as failures.
    pub fn breaker_per_host(mut self, config: BreakerConfig) -> Self {
        self.breakers = Some(Breakers {
            config,
            by_host: Mutex::default(),
        });
        self
    }

    /// Calls `hook` before each wait for another attempt, with the attempt, the delay and what
    /// failed.
    pub fn notify(mut self, hook: impl Fn(&RetryEvent<'_>) + Send + Sync + 'static) -> Self {
        self.notify = Some(Arc::new(hook));
        self
    }

    /// Runs on `clock` and waits with `sleeper` (tests: a
    /// [`ManualClock`](tollgate_retry::clock::ManualClock) is both, so waits take no time).
    pub fn clock(mut self, clock: Arc<dyn Clock>, sleeper: Arc<dyn Sleeper>) -> Self {
        self.retrier = self.retrier.clock(Arc::clone(&clock), sleeper);
        self.clock = clock;
        self
    }

    /// Fixes the jitter's randomness (tests).
    pub fn seed(mut self, seed: u64) -> Self {
        self.retrier = self.retrier.seed(seed);
        self
    }

    /// Adds a fresh UUIDv7 key if the request needs one and has none; returns the key it
    /// carries.
    fn ensure_key(&self, request: &mut Request) -> Option<String> {
        let header = self.rules.key_header();
        if self.generate_keys
            && self.rules.needs_key(request.method())
            && !request.headers().contains_key(header)
        {
            let key = uuid::Uuid::now_v7().to_string();
            if let Ok(value) = HeaderValue::from_str(&key) {
                request.headers_mut().insert(header.clone(), value);
            }
        }
        let value = request.headers().get(header)?;
        value.to_str().ok().map(str::to_owned)
    }

    fn breaker_for(&self, request: &Request) -> Option<(String, CircuitBreaker)> {
        let breakers = self.breakers.as_ref()?;
        let url = request.url();
        let host = format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or_default()
        );
        let breaker = breakers.get(&host, &self.clock);
        Some((host, breaker))
    }

    async fn attempt(
        &self,
        breaker: Option<&(String, CircuitBreaker)>,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let Some((host, breaker)) = breaker else {
            return next.run(request, extensions).await;
        };
        let permit = breaker.try_acquire().map_err(|refused| {
            reqwest_middleware::Error::middleware(Error::CircuitOpen {
                host: host.clone(),
                retry_after: refused.retry_after().unwrap_or_default(),
            })
        })?;
        let result = next.run(request, extensions).await;
        match &result {
            Ok(response) if !response.status().is_server_error() => permit.success(),
            Ok(_) | Err(reqwest_middleware::Error::Reqwest(_)) => permit.failure(),
            Err(_) => permit.ignore(),
        }
        result
    }

    fn observe(
        &self,
        key: Option<&str>,
    ) -> impl FnMut(&tollgate_retry::retry::Retrying, &reqwest_middleware::Result<Response>) {
        move |retrying, result| {
            let failure = match result {
                Ok(response) => Failure::Status(response.status()),
                Err(error) => Failure::Error(error),
            };
            #[cfg(feature = "tracing")]
            trace_retry(retrying, &failure);
            let Some(notify) = &self.notify else { return };
            notify(&RetryEvent {
                attempt: retrying.attempt,
                delay: retrying.delay,
                failure,
                key,
            });
        }
    }
}

/// A DEBUG event per retry, with OpenTelemetry's names: `http.request.resend_count` (the retry
/// about to be sent), `error.type` (the status, or `timeout`, `connect`, `request`, `body`),
/// `tollgate.retry.delay_ms` and the error's message.
#[cfg(feature = "tracing")]
fn trace_retry(retrying: &tollgate_retry::retry::Retrying, failure: &Failure<'_>) {
    let delay_ms = u64::try_from(retrying.delay.as_millis()).unwrap_or(u64::MAX);
    let (error_type, message) = match failure {
        Failure::Status(status) => (status.as_str().to_owned(), String::new()),
        Failure::Error(error) => (error_kind(error).to_owned(), error.to_string()),
    };
    tracing::debug!(
        http.request.resend_count = retrying.attempt,
        error.type = error_type,
        error.message = message,
        tollgate.retry.delay_ms = delay_ms,
        "retrying request"
    );
}

#[cfg(feature = "tracing")]
fn error_kind(error: &reqwest_middleware::Error) -> &'static str {
    match error {
        reqwest_middleware::Error::Reqwest(error) if error.is_timeout() => "timeout",
        reqwest_middleware::Error::Reqwest(error) if error.is_connect() => "connect",
        reqwest_middleware::Error::Reqwest(error) if error.is_body() => "body",
        reqwest_middleware::Error::Reqwest(_) => "request",
        reqwest_middleware::Error::Middleware(_) => "middleware",
    }
}

#[async_trait::async_trait]
impl Middleware for RetryMiddleware {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let key = self.ensure_key(&mut request);
        let breaker = self.breaker_for(&request);
        let repeatable = self.rules.may_repeat(request.method(), request.headers())
            && request.try_clone().is_some();
        let (result, attempts) = if repeatable {
            let finished = self
                .retrier
                .run_observed(
                    |_| {
                        let copy = request.try_clone();
                        // Each attempt starts from the caller's extensions.
                        let (mut extensions, next) = (extensions.clone(), next.clone());
                        let breaker = breaker.as_ref();
                        async move {
                            // Cloned once already, the body is in memory: this copy exists too.
                            let copy = copy.ok_or_else(|| {
                                reqwest_middleware::Error::middleware(NotRepeatable)
                            })?;
                            self.attempt(breaker, copy, &mut extensions, next).await
                        }
                    },
                    |result| self.rules.attempt(result),
                    self.observe(key.as_deref()),
                )
                .await;
            (finished.result, finished.attempts)
        } else {
            let once = self.attempt(breaker.as_ref(), request, extensions, next);
            (once.await, 1)
        };
        let mut response = result?;
        response.extensions_mut().insert(Attempts(attempts));
        if let Some(key) = key {
            response.extensions_mut().insert(IdempotencyKey(key));
        }
        Ok(response)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the request's body cannot be sent twice")]
struct NotRepeatable;

/// One breaker per host, made on first use.
struct Breakers {
    config: BreakerConfig,
    by_host: Mutex<HashMap<String, CircuitBreaker>>,
}

impl Breakers {
    fn get(&self, host: &str, clock: &Arc<dyn Clock>) -> CircuitBreaker {
        let mut by_host = self.by_host.lock();
        if let Some(breaker) = by_host.get(host) {
            return breaker.clone();
        }
        let breaker = CircuitBreaker::with_clock(self.config, Arc::clone(clock)).named(host);
        by_host.insert(host.to_owned(), breaker.clone());
        breaker
    }
}
