//! W3C Trace Context: the caller's trace id, for the request's log lines, and the
//! `traceparent` of a call the request makes (the processor's), so the call joins the caller's
//! trace.

/// W3C Trace Context's `traceparent`, named once: a lookup by a string parses the name each time,
/// and every request looks for it.
pub(crate) const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// The trace id of a valid W3C `traceparent` header (version `00`: `00-<32 hex trace id>-<16
/// hex parent id>-<2 hex flags>`, neither id all zeros), so the request's log lines can be
/// found from the caller's trace. Anything else is ignored, as the Trace Context
/// recommendation asks.
pub(crate) fn trace_id(headers: &http::HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(TRACEPARENT).iter();
    let value = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    let mut parts = value.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |text: &str, len: usize| {
        text.len() == len
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = version == "00"
        && parts.next().is_none()
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0');
    valid.then_some(trace)
}

/// The `traceparent` for a call this request makes: the caller's trace id and flags, with a
/// new parent id (this server's span of the call), if the caller sent a valid one. When spans
/// are exported, the request's own span is the parent, in the caller's trace or a new one.
pub(crate) fn child_traceparent(headers: &http::HeaderMap) -> Option<String> {
    #[cfg(feature = "otlp")]
    if crate::telemetry::exporting() {
        return crate::telemetry::current_traceparent();
    }
    let trace = trace_id(headers)?;
    let value = headers.get(TRACEPARENT)?.to_str().ok()?.trim();
    let flags = value.get(value.len() - 2..)?;
    Some(format!("00-{trace}-{:016x}-{flags}", fastrand::u64(1..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(value: &str) -> Option<String> {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", value.parse().expect("a value"));
        trace_id(&headers).map(str::to_owned)
    }

    #[test]
    fn only_valid_traceparents_are_read() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            trace(&format!("00-{id}-00f067aa0ba902b7-01")).as_deref(),
            Some(id)
        );
        for bad in [
            format!("01-{id}-00f067aa0ba902b7-01"),
            format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)),
            format!("00-{id}-0000000000000000-01"),
            format!("00-{}-00f067aa0ba902b7-01", id.to_uppercase()),
            format!("00-{id}-00f067aa0ba902b7"),
            format!("00-{id}-00f067aa0ba902b7-01-extra"),
            "garbage".to_owned(),
        ] {
            assert_eq!(trace(&bad), None, "{bad}");
        }
    }

    #[test]
    fn a_call_continues_the_callers_trace_with_a_new_parent() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            format!("00-{id}-00f067aa0ba902b7-01")
                .parse()
                .expect("a value"),
        );
        let child = child_traceparent(&headers).expect("a traceparent");
        let mut parts = child.split('-');
        assert_eq!(parts.next(), Some("00"));
        assert_eq!(parts.next(), Some(id), "the same trace");
        let parent = parts.next().expect("a parent id");
        assert_eq!(parent.len(), 16);
        assert_ne!(parent, "00f067aa0ba902b7", "a new parent id");
        assert_eq!(parts.next(), Some("01"), "the same flags");
        assert_eq!(child_traceparent(&http::HeaderMap::new()), None);
    }
}
