//! Helpers for the steps tests: the worker's HTTP endpoints (found through its log) and
//! waiting for committed positions.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::Worker;
pub use crate::common::wait_for_positions;

/// The log without terminal colour codes (`ESC [ … m`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
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

/// The address of the worker's HTTP server, from its start-up log line.
pub fn http_addr(worker: &Worker) -> Option<String> {
    strip_ansi(&worker.log_text())
        .split_whitespace()
        .find_map(|w| w.strip_prefix("metrics="))
        .map(|a| a.trim_matches('"').to_owned())
}

/// GET `path` from the worker: (status line, whole response).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(String, String)> {
    let mut stream = TcpStream::connect(addr)?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let status = text.lines().next().unwrap_or_default().to_owned();
    Ok((status, text))
}

/// The worker's /metrics text.
pub fn metrics(worker: &Worker) -> String {
    let addr = http_addr(worker)
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{}", worker.log_text()));
    http_get(&addr, "/metrics").expect("GET /metrics").1
}

/// The value of the first sample whose line contains every part of `name_and_labels`.
pub fn metric(text: &str, name_and_labels: &[&str]) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| name_and_labels.iter().all(|part| l.contains(part)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Waits until /readyz answers 200: the worker runs its splits and handles SIGTERM.
pub async fn wait_ready(worker: &mut Worker) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(addr) = http_addr(worker)
            && let Ok((status, _)) = http_get(&addr, "/readyz")
            && status.contains(" 200 ")
        {
            return;
        }
        assert!(
            worker.child.try_wait().unwrap().is_none(),
            "worker exited; log:\n{}",
            worker.log_text()
        );
        assert!(
            Instant::now() < deadline,
            "worker not ready after 60s; log:\n{}",
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
