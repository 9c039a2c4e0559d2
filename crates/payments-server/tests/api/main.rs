//! The payments server in process: every route and every status code of the contract, driven
//! through `payments_server::app(state)` with `tower::ServiceExt::oneshot` — on memory backends,
//! and again on Redis and PostgreSQL when `TEST_REDIS_URL` and `TEST_DATABASE_URL` are set
//! (each test with a schema and key prefix of its own; without them each prints a `SKIPPED`
//! line and passes). What needs a process or a socket is in `tests/server`.

mod abuse;
mod audit;
#[path = "../common/fixtures.rs"]
mod fixtures;
mod limits;
mod openapi;
mod payments;
mod probes;
#[path = "../common/reply.rs"]
mod reply;
mod routing;
#[path = "../common/services.rs"]
mod services;
mod simulate;
mod support;
mod tiers;

/// Fast payments, limits high enough for any one test, and the testing features (the test
/// payment methods, simulate-concurrent).
pub(crate) const CONFIG: &str = r#"
[testing]
payment_methods = true
simulate_concurrent = true
[processor]
latency = "1ms"
[[policy]]
name = "global"
scope = "global"
algorithm = "sliding-window"
limit = 5000
window = "60s"
[[policy]]
name = "per-user"
scope = "user"
algorithm = "sliding-window"
limit = 500
window = "60s"
[[policy]]
name = "payments"
scope = "user"
algorithm = "sliding-window"
limit = 30
window = "60s"
endpoint = "POST /api/v1/payments"
[[policy]]
name = "burst"
scope = "user"
algorithm = "token-bucket"
limit = 20
window = "1s"
burst = 50
"#;

/// Payments slow enough (0.5–1.5 s) that a duplicate sent 100 ms later finds the first in
/// flight, and a duplicate wait (100 ms) far shorter than that.
pub(crate) const SLOW_CONFIG: &str = r#"
[processor]
latency = "1s"
[idempotency]
wait = "100ms"
"#;
