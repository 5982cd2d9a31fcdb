//! The worker's logs as a pod or a log file gets them: standard error is not a terminal, so no
//! colour codes; `--log-format json` writes one flat JSON object per line carrying the
//! pipeline, the worker and, for what a split's tasks log, the split.

use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use jetflow_testsupport::NatsServer;
use serde_json::Value;

/// A pipeline whose step fails on a message that is not JSON, with policy Skip: the split's
/// task logs the skipped message.
const MANIFEST: &str = r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata:
  name: logged
spec:
  source:
    jetstream:
      stream: in
      filterSubjects: ["in.a", "in.b"]
  steps:
    - name: extract
      map: '.a'
  sink:
    jetstream:
      stream: out
      subject: "out.{{token(2)}}"
  errors:
    policy: Skip
  checkpoint:
    interval: 200ms
"#;

async fn run_worker(format: &str) -> String {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "in", &["in.>"]).await;
    create_stream(&js, "out", &["out.>"]).await;
    for (subject, payload) in [
        ("in.a", r#"{"a": 1}"#),
        ("in.b", "not json"),
        ("in.a", r#"{"a": 2}"#),
    ] {
        js.publish(subject, Bytes::from(payload))
            .await
            .expect("publish")
            .await
            .expect("publish ack");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = write_manifest(dir.path(), MANIFEST);
    let checkpoints = dir.path().join("checkpoints");
    let mut worker = Worker::start(
        &path,
        &server.url(),
        &checkpoints,
        &["--log-format", format],
    );
    wait_for_len(&js, "out", 2, Duration::from_secs(30)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !worker.log_text().contains("skipping messages that fail") {
        assert!(
            std::time::Instant::now() < deadline,
            "no skip logged; log:\n{}",
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = worker.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "exit {status:?}; log:\n{}",
        worker.log_text()
    );
    worker.log_text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_to_a_file_carry_no_colour_codes() {
    let log = run_worker("text").await;
    assert!(log.contains("jetflow-worker starting"), "{log}");
    assert!(
        !log.contains("\x1b["),
        "terminal colour codes in a log that is not a terminal:\n{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_carry_pipeline_worker_and_split() {
    let log = run_worker("json").await;
    assert!(
        !log.contains("\x1b["),
        "colour codes in JSON logs:\n{log:?}"
    );
    let lines: Vec<Value> = log
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
        })
        .collect();
    let starting = lines
        .iter()
        .position(|l| l["message"] == "jetflow-worker starting")
        .unwrap_or_else(|| panic!("no start line:\n{log}"));
    // From the start line on, every line says which pipeline and worker it is about.
    for line in &lines[starting..] {
        assert_eq!(line["pipeline"], "logged", "{line}");
        assert_eq!(line["worker"], "test-worker", "{line}");
        assert_eq!(line["namespace"], "default", "{line}");
        assert!(
            line["level"].is_string() && line["timestamp"].is_string(),
            "{line}"
        );
    }
    // A line from a split's task carries its split, from the split's span.
    let skipped = lines
        .iter()
        .find(|l| l["message"] == "skipping messages that fail")
        .unwrap_or_else(|| panic!("no skip line:\n{log}"));
    assert_eq!(skipped["split"], "in.b", "{skipped}");
    assert_eq!(skipped["pipeline"], "logged", "{skipped}");
    assert!(skipped["seq"].is_u64(), "{skipped}");
}
