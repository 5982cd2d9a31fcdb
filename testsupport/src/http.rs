//! Plain HTTP GETs to the processes under test (`/metrics`, `/healthz`, `/readyz` of a worker,
//! the operator or a pod), and reading their Prometheus text.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// An HTTP answer.
#[derive(Clone, Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: String,
}

impl Response {
    /// Whether the status is 200.
    pub fn is_ok(&self) -> bool {
        self.status == 200
    }
}

/// GET `path` from `addr` (`host:port`) over HTTP/1.0; `None` when nothing listens there or no
/// whole answer came within 5 s.
pub fn get(addr: &str, path: &str) -> Option<Response> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(Response {
        status,
        body: body.to_owned(),
    })
}

/// The body of a 200 answer to GET `path` from `addr`, if there is one.
pub fn get_ok(addr: &str, path: &str) -> Option<String> {
    get(addr, path).filter(Response::is_ok).map(|r| r.body)
}

/// The sum of the samples of metric `name` whose labels contain each of `labels` (a pair such
/// as `direction="in"`, or a part of one); 0 when there is none.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            (metric == name && labels.iter().all(|want| series.contains(want)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sum_adds_the_matching_samples_only() {
        let text = "# HELP jetflow_worker_messages_total Messages.\n\
                    jetflow_worker_messages_total{direction=\"in\",split=\"a\"} 3\n\
                    jetflow_worker_messages_total{direction=\"in\",split=\"b\"} 4\n\
                    jetflow_worker_messages_total{direction=\"out\",split=\"a\"} 5\n\
                    jetflow_worker_messages_total_other{direction=\"in\"} 100\n\
                    jetflow_worker_reading_paused 1\n";
        let sum = |name, labels: &[&str]| metric_sum(text, name, labels);
        assert_eq!(
            sum("jetflow_worker_messages_total", &["direction=\"in\""]),
            7.0
        );
        assert_eq!(sum("jetflow_worker_messages_total", &[]), 12.0);
        assert_eq!(sum("jetflow_worker_reading_paused", &[]), 1.0);
        assert_eq!(sum("jetflow_worker_missing", &[]), 0.0);
    }
}
