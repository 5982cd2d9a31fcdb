//! Helpers for the Core, bounded, dynamic-split, ownership and authentication tests: worker
//! processes with their own id and metrics address, Core subscribers.

use std::path::Path;
use std::time::Duration;

use crate::common::Worker;

/// Starts `jetflow-worker run` as `worker_id` with its HTTP endpoints on `metrics` (an
/// address), see [`Worker::start`].
pub fn spawn(
    manifest: &Path,
    nats: &str,
    checkpoints: &Path,
    worker_id: &str,
    metrics: &str,
    extra: &[&str],
) -> Worker {
    let args = [
        &["--worker-id", worker_id, "--metrics-addr", metrics],
        extra,
    ]
    .concat();
    Worker::start(manifest, nats, checkpoints, &args)
}

pub use jetflow_testsupport::worker::free_addr;

/// Collects Core messages from a subscription until none arrived for `quiet`.
pub async fn collect(
    sub: &mut async_nats::Subscriber,
    quiet: Duration,
) -> Vec<async_nats::Message> {
    use futures::StreamExt;
    let mut out = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(quiet, sub.next()).await {
        out.push(m);
    }
    out
}

/// The payload as a number.
pub fn number(payload: &[u8]) -> u64 {
    std::str::from_utf8(payload)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("payload {payload:?} is not a number"))
}
