//! One split in trouble does not hold the others, and a worker whose checkpoints fail does not
//! run ahead of them: the jetflow-worker binary against a real nats-server. A message on which
//! a jq expression never ends fails after the step budget and goes to the dead-letter stream
//! while the other split goes on checkpointing; with a budget too long to matter, the stuck
//! split is left out of the checkpoints and the other split is still committed; a checkpoint
//! store that refuses writes pauses reading until it takes them again.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use async_nats::jetstream;
use bytes::Bytes;
use jetflow_testsupport::NatsServer;
use jetflow_testsupport::http::metric_sum;

/// A pipeline over `in.a` and `in.b` (two splits) whose map never ends on `{"spin": true}`.
fn spinning(name: &str) -> String {
    spinning_with(name, "Dlq")
}

fn spinning_with(name: &str, policy: &str) -> String {
    format!(
        r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata:
  name: {name}
spec:
  source:
    jetstream:
      stream: in
      filterSubjects: ["in.a", "in.b"]
  steps:
    - name: spin
      map: 'if .spin then (def f: f; f) else . end'
  sink:
    jetstream:
      stream: out
      subject: "out.{{{{token(2)}}}}"
  errors:
    policy: {policy}
    deadLetterSubject: dlq.{name}
  checkpoint:
    interval: 300ms
"#
    )
}

async fn publish_to(js: &jetstream::Context, subject: &str, payload: &str, count: usize) -> u64 {
    let mut last = 0;
    for _ in 0..count {
        let ack = js
            .publish(
                subject.to_owned(),
                Bytes::copy_from_slice(payload.as_bytes()),
            )
            .await
            .expect("publish");
        last = ack.await.expect("publish ack").sequence;
    }
    last
}

async fn streams(server: &NatsServer) -> jetstream::Context {
    let js = server.jetstream().await;
    create_stream(&js, "in", &["in.*"]).await;
    create_stream(&js, "out", &["out.>"]).await;
    create_stream(&js, "dlq", &["dlq.>"]).await;
    js
}

fn position(checkpoints: &Path, name: &str, split: &str) -> u64 {
    read_checkpoint(checkpoints, name)
        .splits
        .get(split)
        .map_or(0, |p| p.position)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_expression_goes_to_the_dead_letter_stream_and_the_other_split_keeps_checkpointing()
 {
    let server = NatsServer::start();
    let js = streams(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let path = write_manifest(dir.path(), &spinning("runaway"));
    let spin = publish_to(&js, "in.a", r#"{"spin": true}"#, 1).await;
    let after_spin = publish_to(&js, "in.a", r#"{"spin": false}"#, 5).await;
    let last_b = publish_to(&js, "in.b", r#"{"n": 1}"#, 20).await;
    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    worker.wait_ready(Duration::from_secs(60)).await;

    // The other split is committed, again and again, while the first meets its runaway message.
    wait_for_positions(&checkpoints, "runaway", &[last_b]).await;
    let more_b = publish_to(&js, "in.b", r#"{"n": 2}"#, 20).await;
    wait_for_positions(&checkpoints, "runaway", &[more_b]).await;
    // The runaway message was given up on after the budget (1 s by default), dead-lettered,
    // and the messages after it went on.
    wait_for_len(&js, "dlq", 1, Duration::from_secs(30)).await;
    wait_for_positions(&checkpoints, "runaway", &[after_spin, more_b]).await;
    wait_for_len(&js, "out", 45, Duration::from_secs(30)).await;
    let text = worker.metrics();
    let status = worker.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "exit {status}; log:\n{}",
        worker.log_text()
    );

    let dead = read_all(&js, "dlq").await;
    assert_eq!(dead.len(), 1, "the runaway message once");
    let header = |name: &str| {
        dead[0]
            .headers
            .get(name)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(header("Jetflow-Error-Kind"), "timeout");
    assert_eq!(header("Jetflow-Error-Step"), "spin");
    assert_eq!(dead[0].source_seq, spin);
    assert_eq!(dead[0].payload, r#"{"spin": true}"#.as_bytes());
    assert_eq!(
        read_all(&js, "out").await.len(),
        45,
        "every other message once"
    );
    assert_eq!(
        metric_sum(
            &text,
            "jetflow_worker_errors_total",
            &["kind=\"step_timeout\""]
        ),
        1.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_stuck_in_a_step_is_left_out_of_checkpoints_and_the_others_commit() {
    let server = NatsServer::start();
    let js = streams(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let path = write_manifest(dir.path(), &spinning("stuck"));
    let first_a = publish_to(&js, "in.a", r#"{"spin": false}"#, 3).await;
    let mut worker = Worker::start(
        &path,
        &server.url(),
        &checkpoints,
        &["--step-timeout", "1h"],
    );
    worker.wait_ready(Duration::from_secs(60)).await;
    wait_for_positions(&checkpoints, "stuck", &[first_a]).await;

    // in.a gets stuck for the budget (an hour); in.b goes on and is committed, more than once.
    publish_to(&js, "in.a", r#"{"spin": true}"#, 1).await;
    publish_to(&js, "in.a", r#"{"spin": false}"#, 3).await;
    let last_b = publish_to(&js, "in.b", r#"{"n": 1}"#, 10).await;
    wait_for_positions(&checkpoints, "stuck", &[last_b]).await;
    let more_b = publish_to(&js, "in.b", r#"{"n": 2}"#, 10).await;
    wait_for_positions(&checkpoints, "stuck", &[more_b]).await;
    assert_eq!(position(&checkpoints, "stuck", "in.a"), first_a);
    assert!(
        strip(&worker).contains("split did not answer the checkpoint in time"),
        "{}",
        worker.log_text()
    );
    worker.kill();
}

fn strip(worker: &Worker) -> String {
    worker.plain_log()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_pauses_while_checkpoints_fail_and_resumes_once_one_is_committed() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "in", &["in.*"]).await;
    create_stream(&js, "out", &["out.>"]).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let path = write_manifest(
        dir.path(),
        r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata:
  name: paused
spec:
  source:
    jetstream:
      stream: in
  sink:
    jetstream:
      stream: out
      subject: "out.{{token(2)}}"
  checkpoint:
    interval: 300ms
"#,
    );
    let first = publish(&js, &["in.a"], 500, 64).await;
    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    worker.wait_ready(Duration::from_secs(60)).await;
    wait_for_positions(&checkpoints, "paused", &[*first["in.a"].last().unwrap()]).await;

    // The store refuses every write: its lock file's path is taken by a directory.
    let lock = checkpoints.join("default").join("paused.json.lock");
    let _ = std::fs::remove_file(&lock);
    std::fs::create_dir(&lock).unwrap();
    publish(&js, &["in.a"], 100, 64).await;
    wait_for_len(&js, "out", 600, Duration::from_secs(30)).await;
    // Several checkpoint intervals fail.
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric_sum(
        &worker.metrics(),
        "jetflow_worker_checkpoint_failures_total",
        &[],
    ) < 5.0
    {
        assert!(Instant::now() < deadline, "{}", worker.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // What comes now is not read: the worker does not run ahead of its last commit.
    publish(&js, &["in.a"], 3_000, 64).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = stream_len(&js, "out").await;
    assert_eq!(held, 600, "read while checkpoints failed");
    let text = worker.metrics();
    assert_eq!(
        metric_sum(&text, "jetflow_worker_reading_paused", &[]),
        1.0,
        "{text}"
    );

    // The store takes writes again: reading resumes, every message arrives once.
    std::fs::remove_dir(&lock).unwrap();
    wait_for_len(&js, "out", 3_600, Duration::from_secs(60)).await;
    wait_for_positions(&checkpoints, "paused", &[3_600]).await;
    let text = worker.metrics();
    assert_eq!(
        metric_sum(&text, "jetflow_worker_reading_paused", &[]),
        0.0,
        "{text}"
    );
    let status = worker.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "exit {status}; log:\n{}",
        worker.log_text()
    );
    assert_exactly_once(&read_all(&js, "out").await, 1..=3_600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_policy_records_a_runaway_message_in_the_checkpoint() {
    let server = NatsServer::start();
    let js = streams(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let path = write_manifest(dir.path(), &spinning_with("halt", "Stop"));
    let good = publish_to(&js, "in.a", r#"{"spin": false}"#, 2).await;
    let spin = publish_to(&js, "in.a", r#"{"spin": true}"#, 1).await;
    publish_to(&js, "in.a", r#"{"spin": false}"#, 2).await;
    let last_b = publish_to(&js, "in.b", r#"{"n": 1}"#, 5).await;
    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    worker.wait_ready(Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let stopped = loop {
        let checkpoint = read_checkpoint(&checkpoints, "halt");
        if let Some(reason) = checkpoint
            .splits
            .get("in.a")
            .and_then(|p| p.stopped.clone())
        {
            break reason;
        }
        assert!(Instant::now() < deadline, "{}", worker.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        stopped.contains(&format!("message {spin} failed in step spin: timeout")),
        "{stopped}"
    );
    wait_for_positions(&checkpoints, "halt", &[good, last_b]).await;
    worker.kill();
}
