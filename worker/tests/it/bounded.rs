//! Bounded runs against a real nats-server with real worker processes: each kind of bound
//! (sequence, time, the stream's end at start) stops every split there, commits it finished,
//! and the worker exits 0 with a summary; a split whose filter holds nothing up to the bound
//! finishes at once; a rerun of a finished pipeline does nothing.

use std::time::Duration;

use crate::common::*;
use crate::support::*;
use jetflow_testsupport::NatsServer;

const SUBJECTS: [&str; 2] = ["orders.a", "orders.b"];

fn manifest(name: &str, bound: &str) -> String {
    format!(
        r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata:
  name: {name}
spec:
  source:
    jetstream:
      stream: orders
      filterSubjects: ["orders.a", "orders.b", "orders.empty"]
      batchSize: 100
    bound:
      {bound}
  sink:
    jetstream:
      stream: copy
      subject: "copy.{{{{subject}}}}"
  checkpoint:
    interval: 5s
"#
    )
}

async fn setup(server: &NatsServer) -> async_nats::jetstream::Context {
    let js = server.jetstream().await;
    create_stream(&js, "orders", &["orders.>"]).await;
    create_stream(&js, "copy", &["copy.>"]).await;
    js
}

/// Runs the worker until it exits on its own; returns its stdout.
async fn run_to_end(server: &NatsServer, dir: &std::path::Path, manifest: &str) -> String {
    let path = write_manifest(dir, manifest);
    let mut worker = spawn(
        &path,
        &server.url(),
        &dir.join("checkpoints"),
        "w1",
        &free_addr(),
        &[],
    );
    let status = worker.wait(Duration::from_secs(60));
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());
    worker.stdout()
}

/// Asserts the checkpoint holds every split finished at the last sequence of its subject up
/// to `end`.
fn assert_finished_at(dir: &std::path::Path, name: &str, end: u64, by_subject: &[(&str, &[u64])]) {
    let checkpoint = read_checkpoint(&dir.join("checkpoints"), name);
    for (split, seqs) in by_subject {
        let last = seqs
            .iter()
            .copied()
            .filter(|s| *s <= end)
            .max()
            .unwrap_or(0);
        let entry = &checkpoint.splits[*split];
        assert!(entry.finished, "{split} not finished: {checkpoint:?}");
        assert_eq!(entry.position, last, "{split}");
    }
    let empty = &checkpoint.splits["orders.empty"];
    assert!(empty.finished && empty.position == 0, "{empty:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_bound_stops_every_split_at_the_sequence() {
    let server = NatsServer::start();
    let js = setup(&server).await;
    let published = publish(&js, &SUBJECTS, 1_000, 64).await;
    let dir = tempfile::tempdir().unwrap();

    let out = run_to_end(&server, dir.path(), &manifest("by-seq", "sequence: 600")).await;
    let records = read_all(&js, "copy").await;
    assert_exactly_once(&records, 1..=600);
    assert_finished_at(
        dir.path(),
        "by-seq",
        600,
        &[
            ("orders.a", &published["orders.a"]),
            ("orders.b", &published["orders.b"]),
        ],
    );
    assert!(
        out.contains("split orders.a: 300 messages, final position 599"),
        "{out}"
    );
    assert!(
        out.contains("split orders.b: 300 messages, final position 600"),
        "{out}"
    );
    assert!(
        out.contains("bounded run finished: 3 splits, 600 messages"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_end_bound_reads_what_the_stream_held_at_start_and_a_rerun_does_nothing() {
    let server = NatsServer::start();
    let js = setup(&server).await;
    let published = publish(&js, &SUBJECTS, 20_000, 64).await;
    let dir = tempfile::tempdir().unwrap();
    let text = manifest("backfill", "streamEnd: true");
    let path = write_manifest(dir.path(), &text);
    let checkpoints = dir.path().join("checkpoints");
    let addr = free_addr();
    let mut worker = spawn(&path, &server.url(), &checkpoints, "w1", &addr, &[]);
    worker.wait_ready(Duration::from_secs(30)).await;
    // Stored after the splits started: beyond their end.
    publish(&js, &SUBJECTS, 2_000, 64).await;
    let status = worker.wait(Duration::from_secs(60));
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());

    let records = read_all(&js, "copy").await;
    assert_exactly_once(&records, 1..=20_000);
    assert_finished_at(
        dir.path(),
        "backfill",
        20_000,
        &[
            ("orders.a", &published["orders.a"]),
            ("orders.b", &published["orders.b"]),
        ],
    );
    let out = worker.stdout();
    assert!(
        out.contains("bounded run finished: 3 splits, 20000 messages"),
        "{out}"
    );

    // The rerun finds every split finished: no message moves, exit 0.
    let before = read_checkpoint(&checkpoints, "backfill");
    let out = run_to_end(&server, dir.path(), &text).await;
    assert!(
        out.contains("bounded run finished: 3 splits, 0 messages"),
        "{out}"
    );
    assert_eq!(stream_len(&js, "copy").await, 20_000);
    assert_eq!(
        read_checkpoint(&checkpoints, "backfill").splits,
        before.splits
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_bound_stops_after_the_last_message_stored_before_the_time() {
    let server = NatsServer::start();
    let js = setup(&server).await;
    let early = publish(&js, &SUBJECTS, 500, 64).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let bound = jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    publish(&js, &SUBJECTS, 500, 64).await;
    let dir = tempfile::tempdir().unwrap();

    let text = manifest("by-time", &format!("time: \"{bound}\""));
    let out = run_to_end(&server, dir.path(), &text).await;
    let records = read_all(&js, "copy").await;
    assert_exactly_once(&records, 1..=500);
    assert_finished_at(
        dir.path(),
        "by-time",
        500,
        &[
            ("orders.a", &early["orders.a"]),
            ("orders.b", &early["orders.b"]),
        ],
    );
    assert!(
        out.contains("bounded run finished: 3 splits, 500 messages"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_bound_in_the_future_reads_live_messages_until_it_passes() {
    let server = NatsServer::start();
    let js = setup(&server).await;
    publish(&js, &SUBJECTS, 200, 64).await;
    let bound = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3);
    let dir = tempfile::tempdir().unwrap();
    let path = write_manifest(
        dir.path(),
        &manifest("until", &format!("time: \"{bound}\"")),
    );
    let addr = free_addr();
    let mut worker = spawn(
        &path,
        &server.url(),
        &dir.path().join("checkpoints"),
        "w1",
        &addr,
        &[],
    );
    worker.wait_ready(Duration::from_secs(30)).await;
    publish(&js, &SUBJECTS, 200, 64).await;
    while jiff::Timestamp::now() < bound + jiff::SignedDuration::from_millis(200) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Stored after the bound: not processed.
    publish(&js, &SUBJECTS, 200, 64).await;
    let status = worker.wait(Duration::from_secs(60));
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());
    let records = read_all(&js, "copy").await;
    assert_exactly_once(&records, 1..=400);
}
