//! The correctness audit of a run: for every idempotency key one payment, stored and
//! succeeded, and every reply identical.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::drive::{HttpClient, Measured, Sample};

/// Every key's successful replies agree; no two keys share a payment; every payment exists,
/// succeeded, and belongs to its user.
pub(crate) async fn audit(base: &str, measured: &Measured, concurrency: usize) -> Vec<String> {
    let (mut violations, to_check) = check_replies(&measured.samples);
    violations.extend(check_stored(base, to_check, concurrency).await);
    violations
}

/// Every key's successful replies agree and at most one executed; no two keys share a
/// transaction. Returns the violations and, per key, `(user, transaction id)` to look up.
pub(crate) fn check_replies(samples: &[Sample]) -> (Vec<String>, Vec<(usize, String)>) {
    let mut violations = Vec::new();
    let mut by_key: HashMap<&str, Vec<&Sample>> = HashMap::new();
    for sample in samples {
        by_key.entry(&sample.key).or_default().push(sample);
    }
    let mut owner_of_txn: HashMap<&str, &str> = HashMap::new();
    let mut to_check = Vec::new();
    for (key, samples) in &by_key {
        let ok: Vec<_> = samples.iter().filter(|s| s.status == 201).collect();
        let executed = samples
            .iter()
            .filter(|s| s.replayed == Some(false) && s.status == 201)
            .count();
        if executed > 1 {
            violations.push(format!("key {key}: executed {executed} times"));
        }
        let bodies: HashSet<u64> = ok.iter().map(|s| s.body_hash).collect();
        let txns: HashSet<_> = ok
            .iter()
            .filter_map(|s| s.transaction_id.as_deref())
            .collect();
        if bodies.len() > 1 || txns.len() > 1 {
            violations.push(format!(
                "key {key}: {} different replies, {} transaction ids",
                bodies.len(),
                txns.len()
            ));
        }
        if let (Some(txn), Some(first)) = (txns.iter().next(), ok.first()) {
            if let Some(other) = owner_of_txn.insert(txn, key) {
                violations.push(format!("keys {key} and {other} share {txn}"));
            }
            to_check.push((first.user, (*txn).to_owned()));
        }
    }
    (violations, to_check)
}

/// Each payment exists, succeeded, and is readable by its owner.
async fn check_stored(
    base: &str,
    to_check: Vec<(usize, String)>,
    concurrency: usize,
) -> Vec<String> {
    let mut violations = Vec::new();
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let found = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let queue = Arc::new(tokio::sync::Mutex::new(to_check));
    let mut checkers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (client, base, queue, found) = (
            client.clone(),
            base.to_owned(),
            Arc::clone(&queue),
            Arc::clone(&found),
        );
        checkers.spawn(async move {
            loop {
                let Some((user, txn)) = queue.lock().await.pop() else {
                    break;
                };
                let request = hyper::Request::get(format!("{base}/api/v1/payments/{txn}"))
                    .header("authorization", format!("Bearer tollgate-load-key-{user}"))
                    .body(Full::new(Bytes::new()));
                let outcome = match request {
                    Ok(request) => match client.request(request).await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let body = response
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let state = serde_json::from_slice::<serde_json::Value>(&body)
                                .ok()
                                .and_then(|v| v.get("status")?.as_str().map(str::to_owned));
                            (status == 200 && state.as_deref() == Some("succeeded"))
                                .then_some(())
                                .ok_or(format!("payment {txn}: {status} {state:?}"))
                        }
                        Err(error) => Err(format!("payment {txn}: {error}")),
                    },
                    Err(error) => Err(format!("payment {txn}: {error}")),
                };
                found.lock().await.push(outcome);
            }
        });
    }
    while checkers.join_next().await.is_some() {}
    for outcome in found.lock().await.drain(..) {
        if let Err(violation) = outcome {
            violations.push(violation);
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: &str, status: u16, replayed: Option<bool>, txn: &str, body: u64) -> Sample {
        Sample {
            user: 0,
            key: Arc::from(key),
            status,
            replayed,
            transaction_id: Some(txn.to_owned()),
            body_hash: body,
        }
    }

    #[test]
    fn the_audit_accepts_a_correct_run_and_names_every_kind_of_violation() {
        let clean = [
            sample("k1", 201, Some(false), "t1", 1),
            sample("k1", 201, Some(true), "t1", 1),
            sample("k1", 409, None, "", 9),
            sample("k2", 201, Some(false), "t2", 2),
        ];
        let (violations, to_check) = check_replies(&clean);
        assert!(violations.is_empty(), "{violations:?}");
        assert_eq!(to_check.len(), 2);

        let broken = [
            // Executed twice.
            sample("k1", 201, Some(false), "t1", 1),
            sample("k1", 201, Some(false), "t1", 1),
            // Replies disagree.
            sample("k2", 201, Some(false), "t2", 2),
            sample("k2", 201, Some(true), "t2", 3),
            // Two keys, one payment (what a hello-world server does).
            sample("k3", 201, None, "hello", 4),
            sample("k4", 201, None, "hello", 4),
        ];
        let (violations, _) = check_replies(&broken);
        let text = violations.join("\n");
        assert!(text.contains("k1: executed 2 times"), "{text}");
        assert!(text.contains("k2: 2 different replies"), "{text}");
        assert!(text.contains("share hello"), "{text}");
        assert_eq!(violations.len(), 3, "{text}");
    }
}
