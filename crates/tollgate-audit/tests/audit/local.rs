use tollgate_audit::{
    Action, AuditEvent, AuditLog, AuditSink, JsonLinesSink, MemoryAuditLog, Outcome, PageRequest,
};

#[tokio::test]
async fn memory_ring_is_bounded_and_pages_per_user() {
    let log = MemoryAuditLog::new(50);
    for i in 0..60u16 {
        let user = if i % 3 == 0 { "bob" } else { "alice" };
        log.record(
            AuditEvent::new(user, Action::PAYMENT_ATTEMPT, Outcome::Success).status(200 + i),
        )
        .await
        .expect("recorded");
    }
    assert_eq!((log.len(), log.dropped()), (50, 10));
    // Full, the log took the ten from the longest trail: alice's 40 became 30, bob kept 20.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = log
            .page(
                "alice",
                PageRequest::new(Some(7), cursor.as_deref()).expect("valid"),
            )
            .await
            .expect("page");
        assert!(page.entries.iter().all(|e| e.user_id == "alice"));
        seen.extend(page.entries.iter().map(|e| e.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first, no repeats across pages");
    assert_eq!(seen.len(), 30, "alice's newest 30");
    let bob = log
        .page("bob", PageRequest::new(Some(100), None).expect("valid"))
        .await
        .expect("page");
    assert_eq!(bob.entries.len(), 20, "bob's whole trail");
}

#[test]
fn page_requests_are_validated() {
    assert!(PageRequest::new(Some(0), None).is_err());
    assert!(PageRequest::new(Some(101), None).is_err());
    assert!(PageRequest::new(None, Some("not-a-cursor")).is_err());
    assert_eq!(PageRequest::new(None, None).expect("defaults").limit(), 20);
}

#[tokio::test]
async fn json_lines_are_one_event_per_line() {
    let sink = JsonLinesSink::new(Vec::new());
    for action in [Action::RATE_LIMITED, Action::AUTH_FAILED] {
        sink.record(AuditEvent::new("carol", action, Outcome::Denied).field("api_key", "sk_123"))
            .await
            .expect("written");
    }
    sink.flush().await.expect("flushed");
    let text = String::from_utf8(sink.into_inner()).expect("utf-8");
    let events: Vec<AuditEvent> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is an event"))
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].action, Action::AUTH_FAILED);
    assert!(!text.contains("sk_123"), "secrets never reach the trail");
}
