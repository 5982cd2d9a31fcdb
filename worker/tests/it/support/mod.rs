//! Helpers for the Core, bounded, dynamic-split, ownership and authentication tests: worker
//! processes with their own id and metrics address, readiness, Core subscribers.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Worker;

/// Starts `jetflow-worker run` as `worker_id` with `/readyz` on `metrics` (an address); its log
/// goes to `<dir of checkpoints>/<worker_id>-<n>.log` and stdout to `.out`.
pub fn spawn(
    manifest: &Path,
    nats: &str,
    checkpoints: &Path,
    worker_id: &str,
    metrics: &str,
    extra: &[&str],
) -> Worker {
    let dir = checkpoints.parent().unwrap_or(checkpoints);
    let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    let log = dir.join(format!("{worker_id}-{n}.log"));
    let out = dir.join(format!("{worker_id}-{n}.out"));
    // `JETFLOW_WORKER_BIN`: a copy taken right after the build (see common::worker_bin).
    let bin = std::env::var_os("JETFLOW_WORKER_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_jetflow-worker").into());
    let child = Command::new(bin)
        .arg("run")
        .arg("-f")
        .arg(manifest)
        .arg("--nats")
        .arg(nats)
        .arg("--checkpoint-dir")
        .arg(checkpoints)
        .arg("--worker-id")
        .arg(worker_id)
        .arg("--metrics-addr")
        .arg(metrics)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start jetflow-worker");
    Worker { child, log }
}

/// A free loopback address for a worker's HTTP endpoints.
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", jetflow_testsupport::free_port())
}

/// A plain HTTP GET; `None` when nothing listens yet.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// Waits until the worker at `addr` answers `/readyz` with 200.
pub async fn wait_ready(worker: &mut Worker, addr: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if http_get(addr, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            return;
        }
        if let Ok(Some(status)) = worker.child.try_wait() {
            panic!(
                "worker exited with {status} before it was ready; log:\n{}",
                worker.log_text()
            );
        }
        assert!(
            Instant::now() < deadline,
            "worker not ready after {timeout:?}; log:\n{}",
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the worker printed on stdout.
pub fn stdout_of(worker: &Worker) -> String {
    let out = worker.log.with_extension("out");
    std::fs::read_to_string(out).unwrap_or_default()
}

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

/// The worker's log without terminal colour codes.
pub fn plain_log(worker: &Worker) -> String {
    let text = worker.log_text();
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip `ESC [ ... m`.
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
