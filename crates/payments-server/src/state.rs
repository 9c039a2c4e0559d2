//! [`AppState`]: everything the handlers and layers share, built bottom-up and never calling
//! back into the app.

use std::sync::Arc;

use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, Ordering};

use tollgate_audit::AuditLog;
use tollgate_clock::SystemClock;
use tollgate_http::client_ip::TrustedProxies;
use tollgate_idempotency::store::{ClaimOptions, IdempotencyStore};
use tollgate_idempotency::{Idempotency, IdempotencyConfig};
use tollgate_ratelimit::{DynRateLimiter, LivePolicies};
use tollgate_retry::breaker::{BreakerConfig, CircuitBreaker, State, Window};

use crate::access_log::StrangerLog;
use crate::anonymous::AnonymousLimit;
use crate::audit_trail::AuditTrail;
use crate::auth::KeyDirectory;
use crate::config::{ApiKey, FileConfig, TestingTuning, Timeouts};
use crate::health::HealthCache;
use crate::health::Services;
use crate::layers::rate_limits::ClientAddresses;
use crate::ledger::Ledger;
use crate::metrics::BackendLatency;
use crate::metrics::Metrics;
use crate::payment::IntentStore;
use crate::payment::Payments;
use crate::processor::PaymentProcessor;
use crate::refusals::RefusalDigest;
use crate::subjects::Subjects;

/// The state every handler and layer shares: a leaf, behind an `Arc`.
#[derive(Debug)]
pub struct AppState {
    pub(crate) keys: Arc<KeyDirectory>,
    pub(crate) limiter: Arc<dyn DynRateLimiter>,
    /// The policy table of requests with a key: replaced whole by a reload (SIGHUP).
    pub(crate) policies: LivePolicies,
    pub(crate) idempotency: Arc<Idempotency<Arc<dyn IdempotencyStore>>>,
    pub(crate) payments: Payments,
    pub(crate) audit: AuditTrail,
    pub(crate) services: Services,
    pub(crate) metrics: Arc<Metrics>,
    /// Behind the trusted proxies, replaced whole by a reload; shared with the connection
    /// limits.
    pub(crate) addresses: ClientAddresses,
    /// Users' tiers and the dimensions' headers: replaced whole by a reload.
    pub(crate) subjects: Arc<ArcSwap<Subjects>>,
    pub(crate) timeouts: Timeouts,
    pub(crate) testing: TestingTuning,
    pub(crate) anonymous: AnonymousLimit,
    pub(crate) stranger_log: Arc<StrangerLog>,
    pub(crate) health: HealthCache,
    /// Set at SIGTERM: `/ready` answers `503` from then on.
    draining: AtomicBool,
}

/// The backends an [`AppState`] is made of; the rest comes from the configuration.
#[derive(Debug)]
pub(crate) struct Backends {
    pub(crate) limiter: Arc<dyn DynRateLimiter>,
    pub(crate) store: Arc<dyn IdempotencyStore>,
    pub(crate) ledger: Arc<dyn Ledger>,
    pub(crate) audit: Arc<dyn AuditLog>,
    pub(crate) processor: Arc<dyn PaymentProcessor>,
    /// Where a fresh key's claim is written with its pending payment, if the backends can.
    pub(crate) intents: Option<IntentStore>,
    /// How long the backends' calls take.
    pub(crate) latency: BackendLatency,
    pub(crate) services: Services,
}

impl AppState {
    /// The state over `backends`, configured by `file`.
    pub(crate) fn new(
        file: &FileConfig,
        keys: &[ApiKey],
        backends: Backends,
    ) -> Result<Arc<Self>, String> {
        let metrics = Metrics::new(&backends.latency);
        let tuning = file.idempotency;
        let idempotency = Idempotency::new(
            backends.store,
            IdempotencyConfig::default()
                .claim(ClaimOptions::new(tuning.lease, tuning.ttl))
                .wait(tuning.wait),
        );
        let payments = Payments {
            ledger: backends.ledger,
            processor: backends.processor,
            breaker: breaker(file, &metrics),
            record_ttl: tuning.ttl,
            processor_timeout: file.processor.timeout,
            intents: backends.intents,
        };
        let policies = file.policy_set()?;
        metrics.zero_policies(&policies);
        let anonymous = AnonymousLimit::new(
            file.limits.anonymous_per_minute,
            file.limits.anonymous_ceiling_per_minute,
        )?;
        metrics.zero_policies(&anonymous.policies().current());
        Ok(Arc::new(AppState {
            keys: Arc::new(KeyDirectory::new(keys)),
            limiter: backends.limiter,
            policies: LivePolicies::new(policies),
            idempotency: Arc::new(idempotency),
            payments,
            audit: audit_trail(file, backends.audit, &metrics),
            services: backends.services,
            addresses: ClientAddresses(Arc::new(ArcSwap::from_pointee(trusted_proxies(file)))),
            subjects: Arc::new(ArcSwap::from_pointee(Subjects::new(file)?)),
            timeouts: file.timeouts,
            testing: file.testing,
            anonymous,
            stranger_log: Arc::new(StrangerLog::new(file.limits.anonymous_log_interval)),
            health: HealthCache::new(
                file.health.cache,
                metrics.health_probes.clone(),
                metrics.backend_up.clone(),
            ),
            metrics: Arc::new(metrics),
            draining: AtomicBool::new(false),
        }))
    }

    /// Puts in force, for every request from now on, what of `file` can change while the
    /// server runs: the policy table with its tiers, the users' tiers, the dimensions' headers,
    /// the trusted proxies, the strangers' limits, the audit's refusal window, the health
    /// cache and the log level. Everything is validated before anything changes: on an error
    /// nothing does.
    /// The number of policies now in force.
    pub fn reload(&self, file: &FileConfig) -> Result<usize, String> {
        // Everything that can fail first: a file is put in force whole or not at all.
        let policies = file.policy_set()?;
        let subjects = Subjects::new(file)?;
        let limits = &file.limits;
        let strangers = crate::anonymous::policies(
            limits.anonymous_per_minute,
            limits.anonymous_ceiling_per_minute,
        )?;
        let log_filter = file.log.level.as_deref().map(crate::config::log_filter);
        let log_filter = log_filter.transpose()?;
        let count = policies.policies().len();
        if let Some(filter) = log_filter {
            crate::logging::set_log_filter(filter);
        }
        self.metrics.zero_policies(&policies);
        self.anonymous.replace(strangers);
        self.audit.refusals.window.set(file.audit.refusal_window);
        self.health.ttl.set(file.health.cache);
        // A request reads each of these once. One that falls between two stores is decided
        // on the old settings or the new ones, per setting; a tier the table does not know
        // is decided on the defaults, so no mix fails.
        self.addresses.0.store(Arc::new(trusted_proxies(file)));
        self.policies.replace(policies);
        self.subjects.store(Arc::new(subjects));
        Ok(count)
    }

    /// From now on `/ready` answers `503`, so load balancers stop sending requests here; the
    /// requests that still come are served.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether [`start_draining`](Self::start_draining) was called.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

fn audit_trail(file: &FileConfig, log: Arc<dyn AuditLog>, metrics: &Metrics) -> AuditTrail {
    let refusals = RefusalDigest::new(file.audit.refusal_window, Arc::new(SystemClock::new()));
    AuditTrail::new(log, refusals, metrics.audit_refusals_folded.clone())
}

fn trusted_proxies(file: &FileConfig) -> TrustedProxies {
    TrustedProxies::ranges(file.trusted_proxies.iter().copied()).header(file.forwarded_header)
}

/// The processor's circuit breaker, reporting its state to `metrics` and the log.
fn breaker(file: &FileConfig, metrics: &Metrics) -> CircuitBreaker {
    let tuning = file.breaker;
    let breaker = CircuitBreaker::new(
        BreakerConfig::default()
            .window(Window::Count(tuning.window_calls.max(1)))
            .failure_rate_threshold(tuning.failure_rate_threshold)
            .minimum_calls(tuning.minimum_calls.max(1))
            .wait_in_open(tuning.wait_in_open),
    )
    .named("processor");
    let gauge = metrics.breaker_state.clone();
    breaker.on_transition(move |transition| {
        gauge.set(match transition.to {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        });
        tracing::warn!(from = ?transition.from, to = ?transition.to, "payment processor circuit breaker changed state");
    });
    breaker
}
