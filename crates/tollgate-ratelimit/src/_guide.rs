//! # Guide: algorithms, guarantees and failure modes
//!
//! ## Units and exactness
//!
//! Time is an integer number of microseconds since the Unix epoch ([`Timestamp`](crate::Timestamp));
//! counts are integers. The Redis scripts run the same arithmetic in Lua, whose numbers are
//! doubles, so every policy is validated to keep intermediate products below 2^53
//! ([`MAX_LIMIT_WINDOW_PRODUCT`](crate::MAX_LIMIT_WINDOW_PRODUCT)); within that bound both backends
//! give bit-identical answers, which the conformance suite checks.
//!
//! ## Sliding-window counter
//!
//! Time is cut into aligned windows of length `W`. A key stores the count of the current window
//! `c`, of the previous one `p`, and the current window's index. At `e` µs into the current window
//! the request of cost `n` is admitted iff
//!
//! ```text
//! p·(W − e) + (c + n)·W  ≤  L·W
//! ```
//!
//! i.e. the previous window is assumed to have been uniformly spread and only its overlapping part
//! counts. **Error bound.** Since admission needs `c + n ≤ L`, every *aligned* window admits at
//! most `L`. Over an arbitrary interval `[t − W, t)` with `t` at `e` into its window, the admitted
//! count is at most `p + c ≤ p + L − p·(W − e)/W = L + p·e/W < 2L`: the approximation can overshoot
//! only when the previous window's traffic was bunched at its end, and never reaches `2L`. It also
//! undershoots (denies early) when that traffic was bunched at the start. The property tests check
//! both the aligned bound and the `< 2L` bound over random schedules. Use
//! [`Algorithm::SlidingLog`](crate::Algorithm::SlidingLog) where the exact bound matters.
//!
//! A denied request learns exactly when it will fit: either when `p`'s weight has decayed enough,
//! or, if `c + n > L`, in the next window once `c`'s weight has decayed.
//!
//! ## Sliding log
//!
//! Every admitted request's time is kept while it is inside the window; a request is admitted iff
//! the sum of the live entries plus its cost is at most `L`. Exact in every window of length `W`,
//! at the price of O(L) state per key and O(live entries) work per decision on Redis.
//!
//! ## Token bucket (GCRA)
//!
//! One timestamp per key, the theoretical arrival time `tat`. With emission interval
//! `T = period / rate` (whole µs, rounded down) and tolerance `τ = burst · T`, a request of cost `n`
//! at `now` is admitted iff `max(tat, now) + n·T − now ≤ τ`, and then `tat` moves there. A fresh
//! key admits `burst` at once and then `rate` per `period`. Remaining is
//! `⌊(τ − max(tat − now, 0)) / T⌋`; a denied request may retry after
//! `max(tat, now) + n·T − now − τ`. All integers, no accumulated drift.
//!
//! ## Several policies, one decision
//!
//! A request usually has several keys (global, per user, per endpoint, burst). They are decided
//! together: the memory backend locks their shards in index order; the Redis backend runs one
//! script over all keys. Only if every policy admits is anything consumed, so a request denied by
//! the per-user limit does not eat into the global one. The [`Decision`](crate::Decision) names the
//! binding policy: when denied, the one with the longest wait; otherwise the one with the fewest
//! requests remaining.
//!
//! ## Redis Cluster and atomicity
//!
//! Each key carries a hash tag of its own policy and subject (`tollgate:rl:{per-user:alice}`), so
//! every key maps to one slot and keys of different users spread over the cluster's primaries.
//! A script may only touch keys of one slot on Redis Cluster, so with a
//! [`RedisConnection::Cluster`](crate::redis::RedisConnection) (feature `cluster`) the limiter
//! groups a request's keys by slot and decides the groups at once, one script per group:
//!
//! - Each group is atomic, as a whole decision is on one Redis: it consumes only if every one of
//!   its policies admits.
//! - When every group admits, the request is admitted: one round trip (the groups in parallel).
//! - When a group denies (or fails), the groups that consumed are refunded, so a denied request
//!   ends up consuming nothing, and its [`Decision`](crate::Decision) reports each policy as it
//!   stands after the refund.
//! - Nothing is ever admitted beyond a limit: every consumption happens inside one group's
//!   atomic script.
//! - The price is a window of one round trip in which a request that another group will deny
//!   holds its units in the groups that admitted it: a concurrent request that needs the last
//!   units of such a policy may be denied although a single Redis would have admitted it. Near
//!   a limit and under contention the cluster errs towards refusing, never towards admitting.
//!   A refund that fails (the connection lost meanwhile) leaves the units consumed until the
//!   window passes, and is logged.
//! - On a manual clock the cluster decides bit for bit like the memory backend; the test suite
//!   checks it over random multi-policy schedules.
//!
//! Putting every key under one tag would keep full atomicity but funnel all traffic through
//! one primary, which is what a cluster is there to avoid.
//!
//! A failover loses what the failed primary acknowledged but had not yet replicated (Redis
//! replicates asynchronously): counts of the last few milliseconds of decisions on its slots,
//! so those subjects may get up to that many requests more than their limit once. While no
//! primary serves a slot (until the replica is promoted, about the cluster's
//! `cluster-node-timeout` plus an election), decisions on it fail and the
//! [`FailureMode`](crate::redis::FailureMode) applies, as for any unreachable Redis.
//!
//! ## When Redis is unreachable
//!
//! [`FailureMode`](crate::redis::FailureMode) chooses between failing open (admit, counted),
//! failing closed (deny with a fixed `Retry-After`) and deciding with a local memory limiter (each
//! process enforces the limits alone, so N processes admit up to N× the limit). Every degraded
//! decision is marked [`Decision::is_degraded`](crate::Decision::is_degraded) and counted in
//! [`RedisStats`](crate::redis::RedisStats); the limiter goes back to Redis by itself on the next
//! call once Redis answers again.
//!
//! ## Time
//!
//! The memory backend reads its [`Clock`](crate::clock::Clock) once per decision. The Redis
//! backend reads the Redis server's `TIME` inside the script, so several application servers with
//! skewed clocks still share one timeline; tests may inject a clock instead.
