//! The ids a request's log lines and error reports share. Until OpenTelemetry is wired in,
//! the trace id is the one a caller sent in a W3C `traceparent` header, or a fresh one, and
//! the span id is fresh for each request: enough to find every line of one request, and the
//! caller's trace when it has one.

use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceIds {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
}

impl TraceIds {
    /// The ids of a request that carried `traceparent` (if any).
    pub fn for_request(traceparent: Option<&str>) -> Self {
        let trace_id = traceparent
            .and_then(trace_id_of)
            .unwrap_or_else(|| Uuid::new_v4().simple().to_string());
        Self {
            trace_id,
            span_id: Uuid::new_v4().simple().to_string()[..16].to_owned(),
        }
    }
}

/// The trace id of a well-formed `traceparent` (`00-<trace>-<parent>-<flags>`).
fn trace_id_of(header: &str) -> Option<String> {
    let mut parts = header.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex =
        |s: &str, len| s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && hex(flags, 2);
    valid.then(|| trace.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callers_trace_id_is_kept_and_a_malformed_one_replaced() {
        let ids = TraceIds::for_request(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
        assert_eq!(ids.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ids.span_id.len(), 16);
        assert_ne!(
            ids.span_id, "00f067aa0ba902b7",
            "the span is ours, not the caller's"
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            let ids = TraceIds::for_request(Some(bad));
            assert_eq!(ids.trace_id.len(), 32);
            assert!(!bad.contains(&ids.trace_id), "{bad}");
        }
        assert_ne!(
            TraceIds::for_request(None).trace_id,
            TraceIds::for_request(None).trace_id
        );
    }
}
