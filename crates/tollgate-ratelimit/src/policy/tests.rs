use super::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn names_and_parameters_are_validated() {
    let alg = Algorithm::sliding_window(10, secs(1));
    assert!(Policy::new("bad name", Scope::Global, alg).is_err());
    assert!(Policy::new("", Scope::Global, alg).is_err());
    assert!(Policy::new("a:b", Scope::Global, alg).is_err());
    let zero = Policy::new("z", Scope::Global, Algorithm::sliding_window(0, secs(1)));
    assert!(matches!(zero, Err(Error::InvalidPolicy { .. })));
    let huge = Policy::new(
        "h",
        Scope::Global,
        Algorithm::sliding_window(u64::MAX, secs(1)),
    );
    assert!(huge.expect_err("too large").is_config());
    let tb = Policy::new(
        "t",
        Scope::Global,
        Algorithm::token_bucket(2_000_000, secs(1), 5),
    );
    assert!(tb.is_err(), "more than one token per µs");
    assert!(Policy::new("t", Scope::Global, Algorithm::token_bucket(20, secs(1), 0)).is_err());
}

#[test]
fn keys_hash_as_they_compare() {
    let policy = Arc::new(
        Policy::new("p", Scope::User, Algorithm::sliding_window(10, secs(1))).expect("valid"),
    );
    let keys: std::collections::HashSet<PolicyKey> = ["alice", "bob", "alice"]
        .into_iter()
        .map(|user| PolicyKey::new(Arc::clone(&policy), user))
        .collect();
    assert_eq!(keys.len(), 2);
    assert!(keys.contains(&PolicyKey::new(policy, "bob")));
}

#[test]
fn token_bucket_capacity_and_window() {
    let p = Policy::new(
        "burst",
        Scope::User,
        Algorithm::token_bucket(20, secs(1), 50),
    )
    .expect("valid");
    assert_eq!(p.capacity(), 50);
    assert_eq!(p.window(), Duration::from_millis(2500));
    assert_eq!(
        p.quota(),
        Quota::Gcra {
            interval: 50_000,
            tolerance: 2_500_000
        }
    );
}
