//! The `Jetflow-Replay-For` header of a replayed dead letter: `kubectl jetflow dlq replay`
//! republishes a dead letter into its source subject with this header naming the pipeline the
//! letter came from (`<namespace>/<pipeline>`). Every other pipeline reading that subject skips
//! the message (counted as processed, metric `jetflow_worker_skipped_messages_total{reason=
//! "replay_for_other"}`); the pipeline it names processes it as any message. No output carries
//! the header on.

use async_nats::HeaderMap;

/// The header's name.
pub const REPLAY_FOR: &str = "Jetflow-Replay-For";

/// The header's value for pipeline `name` of `namespace`.
pub fn target(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Whether a message with `headers` is a dead letter replayed for another pipeline than
/// `pipeline` (`<namespace>/<pipeline>`): one header lookup, and none for a message without
/// headers.
pub fn for_other(headers: Option<&HeaderMap>, pipeline: &str) -> bool {
    headers
        .and_then(|h| h.get(REPLAY_FOR))
        .is_some_and(|v| v.as_str() != pipeline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_header_naming_another_pipeline_is_for_another() {
        let mut h = HeaderMap::new();
        assert!(!for_other(None, "shop/a"));
        assert!(!for_other(Some(&h), "shop/a"));
        h.insert(REPLAY_FOR, "shop/a");
        assert!(!for_other(Some(&h), "shop/a"));
        assert!(for_other(Some(&h), "shop/b"));
        assert!(for_other(Some(&h), "other/a"));
    }
}
