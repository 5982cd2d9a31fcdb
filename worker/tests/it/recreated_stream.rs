//! A source stream deleted and created again under the same name: the jetflow-worker binary
//! against a real nats-server. Stream sequences start anew on the new stream, so the committed
//! position of the old one must not be taken as a position on it: every message of the new
//! stream reaches the sink, none is dropped as a "redelivery" or deduplicated against the old
//! stream's outputs.

use std::time::Duration;

use crate::common::*;
use async_nats::jetstream;
use bytes::Bytes;
use jetflow_testsupport::NatsServer;
use jetflow_testsupport::http::metric_sum;

const MANIFEST: &str = r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata:
  name: recreated
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
"#;

/// Publishes `count` messages whose payloads name `round` and their index.
async fn publish_round(js: &jetstream::Context, round: &str, count: usize) {
    for i in 0..count {
        js.publish("in.data", Bytes::from(format!("{round}-{i}")))
            .await
            .expect("publish")
            .await
            .expect("publish ack");
    }
}

async fn recreate(js: &jetstream::Context) {
    js.delete_stream("in").await.expect("delete stream");
    create_stream(js, "in", &["in.*"]).await;
}

/// How many sink messages carry each payload of `round`; asserts each exactly once.
fn assert_round(out: &[SinkRecord], round: &str, count: usize) {
    for i in 0..count {
        let payload = format!("{round}-{i}");
        let copies = out.iter().filter(|r| r.payload == payload).count();
        assert_eq!(copies, 1, "{payload} reached the sink {copies} times");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_source_stream_is_read_from_its_start_without_losing_messages() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "in", &["in.*"]).await;
    create_stream(&js, "out", &["out.>"]).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let path = write_manifest(dir.path(), MANIFEST);

    publish_round(&js, "first", 100).await;
    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    wait_for_len(&js, "out", 100, Duration::from_secs(60)).await;
    wait_for_positions(&checkpoints, "recreated", &[100]).await;
    let before = read_checkpoint(&checkpoints, "recreated");
    let first_created = before.splits.values().next().unwrap().stream_created;

    // While the worker runs: the stream is deleted, created again and gets 150 messages.
    recreate(&js).await;
    publish_round(&js, "second", 150).await;
    wait_for_len(&js, "out", 250, Duration::from_secs(60)).await;
    wait_for_positions(&checkpoints, "recreated", &[150]).await;
    assert!(first_created.is_some(), "{before:?}");
    let text = worker.metrics();
    assert_eq!(
        metric_sum(
            &text,
            "jetflow_worker_source_stream_recreated_total",
            &["split="]
        ),
        1.0,
        "{text}"
    );
    let status = worker.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "exit {status}; log:\n{}",
        worker.log_text()
    );
    let cp = read_checkpoint(&checkpoints, "recreated");
    let split = cp.splits.values().next().unwrap();
    let recreated = split.recreated.as_ref().expect("recreation recorded");
    assert_eq!(recreated.previous_position, 100);
    assert_eq!(recreated.previous_created, first_created);
    assert_ne!(split.stream_created, first_created);

    // While no worker runs: recreated again, 30 messages; the restarted worker finds the
    // checkpoint's stream gone.
    recreate(&js).await;
    publish_round(&js, "third", 30).await;
    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    wait_for_len(&js, "out", 280, Duration::from_secs(60)).await;
    wait_for_positions(&checkpoints, "recreated", &[30]).await;
    // Nothing more arrives later (no replay of an earlier stream).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let recreated = worker.metric("jetflow_worker_source_stream_recreated_total", &[]);
    assert_eq!(
        recreated, 1.0,
        "the restarted worker found the stream recreated"
    );
    let status = worker.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "exit {status}; log:\n{}",
        worker.log_text()
    );

    let out = read_all(&js, "out").await;
    assert_eq!(out.len(), 280);
    assert_round(&out, "first", 100);
    assert_round(&out, "second", 150);
    assert_round(&out, "third", 30);
    let ids: std::collections::BTreeSet<&str> = out.iter().map(|r| r.msg_id.as_str()).collect();
    assert_eq!(ids.len(), 280, "message ids are unique across the streams");
}
