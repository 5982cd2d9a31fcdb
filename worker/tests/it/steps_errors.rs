//! The error policies end to end: the jetflow-worker binary against a real nats-server, with a
//! payload that is not JSON and with an expression that fails at run time, under `Dlq`, `Skip`
//! and `Stop`.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use crate::common::*;
use async_nats::jetstream;
use bytes::Bytes;
use jetflow_testsupport::NatsServer;
use jetflow_testsupport::http::metric_sum;

/// The source messages: good ones around one that is not JSON (index 2) and one whose `.a.b`
/// fails because `.a` is a string (index 4).
const MESSAGES: [&str; 6] = [
    r#"{"a": {"b": 1}}"#,
    r#"{"a": {"b": 2}}"#,
    r#"{"a": "#,
    r#"{"a": {"b": 3}}"#,
    r#"{"a": "text"}"#,
    r#"{"a": {"b": 4}}"#,
];
const MALFORMED: usize = 2;
const FAILING: usize = 4;

fn manifest(name: &str, policy: &str, map: &str) -> String {
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
  steps:
    - name: keep-all
      filter: 'true'
    - name: extract
      map: '{map}'
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

async fn setup(server: &NatsServer, messages: &[&str]) -> (jetstream::Context, Vec<u64>) {
    let js = server.jetstream().await;
    create_stream(&js, "in", &["in.*"]).await;
    create_stream(&js, "out", &["out.>"]).await;
    create_stream(&js, "dlq", &["dlq.>"]).await;
    let mut seqs = Vec::new();
    for m in messages {
        let ack = js
            .publish("in.data", Bytes::copy_from_slice(m.as_bytes()))
            .await
            .expect("publish");
        seqs.push(ack.await.expect("publish ack").sequence);
    }
    (js, seqs)
}

/// Why the pipeline's only split stopped, as its checkpoint records it.
fn stopped(checkpoints: &Path, name: &str) -> Option<String> {
    let checkpoint = read_checkpoint(checkpoints, name);
    checkpoint.splits.values().next()?.stopped.clone()
}

fn position(checkpoints: &Path, name: &str) -> u64 {
    let checkpoint = read_checkpoint(checkpoints, name);
    assert!(checkpoint.splits.len() <= 1, "{checkpoint:?}");
    checkpoint
        .splits
        .values()
        .map(|p| p.position)
        .next()
        .unwrap_or(0)
}

fn values_b(records: &[SinkRecord]) -> Vec<i64> {
    records
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
            v["b"].as_i64().unwrap()
        })
        .collect()
}

fn header(r: &SinkRecord, name: &str) -> String {
    r.headers
        .get(name)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_else(|| panic!("header {name} missing: {:?}", r.headers))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_policy_sends_failed_messages_with_their_error_to_the_dead_letter_stream() {
    let server = NatsServer::start();
    let (js, seqs) = setup(&server, &MESSAGES).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let path = write_manifest(dir.path(), &manifest("errs-dlq", "Dlq", "{b: .a.b}"));
    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    wait_for_len(&js, "out", 4, Duration::from_secs(60)).await;
    wait_for_len(&js, "dlq", 2, Duration::from_secs(60)).await;
    wait_for_positions(&checkpoints, "errs-dlq", &[seqs[5]]).await;
    let status = worker.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "exit {status}; log:\n{}",
        worker.log_text()
    );

    let out = read_all(&js, "out").await;
    assert_eq!(values_b(&out), [1, 2, 3, 4]);

    let dead = read_all(&js, "dlq").await;
    assert_eq!(dead.len(), 2, "each failed message once");
    let malformed = &dead[0];
    assert_eq!(malformed.subject, "dlq.errs-dlq");
    assert_eq!(
        malformed.payload,
        MESSAGES[MALFORMED].as_bytes(),
        "original bytes"
    );
    assert_eq!(header(malformed, "Jetflow-Error-Step"), "keep-all");
    assert_eq!(header(malformed, "Jetflow-Error-Kind"), "parse");
    assert!(
        header(malformed, "Jetflow-Error").contains("payload is not JSON"),
        "{:?}",
        malformed.headers
    );
    assert_eq!(
        header(malformed, "Jetflow-Source"),
        format!("in/{}/in.data", seqs[MALFORMED])
    );
    assert_eq!(malformed.source_stream.as_deref(), Some("in"));
    assert_eq!(malformed.source_subject, "in.data");
    assert_eq!(malformed.source_seq, seqs[MALFORMED]);

    let failing = &dead[1];
    assert_eq!(failing.payload, MESSAGES[FAILING].as_bytes());
    assert_eq!(header(failing, "Jetflow-Error-Step"), "extract");
    assert_eq!(header(failing, "Jetflow-Error-Kind"), "eval");
    assert!(
        header(failing, "Jetflow-Error").contains("cannot index"),
        "{:?}",
        failing.headers
    );
    assert_eq!(failing.source_seq, seqs[FAILING]);

    // Restarted, the worker resumes after its checkpoint: no dead letter twice.
    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    worker.wait_ready(Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let status = worker.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "exit {status}; log:\n{}",
        worker.log_text()
    );
    assert_eq!(stream_len(&js, "dlq").await, 2);
    assert_eq!(stream_len(&js, "out").await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_policy_drops_failed_messages_and_counts_them() {
    let server = NatsServer::start();
    let (js, seqs) = setup(&server, &MESSAGES).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let path = write_manifest(dir.path(), &manifest("errs-skip", "Skip", "{b: .a.b}"));
    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    wait_for_len(&js, "out", 4, Duration::from_secs(60)).await;
    wait_for_positions(&checkpoints, "errs-skip", &[seqs[5]]).await;

    let text = worker.metrics();
    assert_eq!(
        metric_sum(&text, "jetflow_worker_errors_total", &["step_parse"]),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric_sum(&text, "jetflow_worker_errors_total", &["step_eval"]),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric_sum(&text, "jetflow_worker_errors_total", &["skipped"]),
        2.0,
        "{text}"
    );

    let status = worker.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "exit {status}; log:\n{}",
        worker.log_text()
    );
    assert_eq!(values_b(&read_all(&js, "out").await), [1, 2, 3, 4]);
    assert_eq!(stream_len(&js, "dlq").await, 0, "nothing dead-lettered");
}

/// Under `Stop`, the worker stops at the failing message (exit code 3) with its position just
/// before it; restarted unchanged it stops there again; once the pipeline is changed to get
/// past it (`fixed_policy`, `fixed_map`) the rest arrives, each message once.
async fn stop_policy_keeps_the_failing_message(
    failing: usize,
    fixed_policy: &str,
    fixed_map: &str,
    expected_out: &[i64],
    expected_dead: u64,
) {
    let server = NatsServer::start();
    // Only the good messages and the one failing message under test.
    let messages: Vec<&str> = MESSAGES
        .iter()
        .enumerate()
        .filter(|(i, _)| *i == failing || ![MALFORMED, FAILING].contains(i))
        .map(|(_, m)| *m)
        .collect();
    let bad = messages
        .iter()
        .position(|m| *m == MESSAGES[failing])
        .unwrap();
    let (js, seqs) = setup(&server, &messages).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let name = "errs-stop";
    let path = write_manifest(dir.path(), &manifest(name, "Stop", "{b: .a.b}"));

    for run in 0..2 {
        let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
        let status = worker.wait(Duration::from_secs(60));
        let log = worker.log_text();
        assert_eq!(
            status.code(),
            Some(3),
            "run {run}: exit {status}; log:\n{log}"
        );
        assert_eq!(
            position(&checkpoints, name),
            seqs[bad - 1],
            "run {run}: the position stays before the failing message"
        );
        // Recorded in the checkpoint, where the operator reads it into the status.
        let why = stopped(&checkpoints, name).unwrap_or_default();
        assert!(
            why.starts_with(&format!("message {} failed in step ", seqs[bad])),
            "run {run}: {why:?}"
        );
        let out = read_all(&js, "out").await;
        assert_eq!(
            values_b(&out),
            expected_out[..bad],
            "run {run}: only what came before, once"
        );
        assert_eq!(stream_len(&js, "dlq").await, 0);
    }

    let path = write_manifest(dir.path(), &manifest(name, fixed_policy, fixed_map));
    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    wait_for_len(
        &js,
        "out",
        expected_out.len() as u64,
        Duration::from_secs(60),
    )
    .await;
    wait_for_positions(&checkpoints, name, &[*seqs.last().unwrap()]).await;
    let status = worker.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "exit {status}; log:\n{}",
        worker.log_text()
    );
    assert_eq!(
        stopped(&checkpoints, name),
        None,
        "cleared once past the message"
    );
    let out = read_all(&js, "out").await;
    assert_eq!(values_b(&out), expected_out, "every message once, in order");
    let ids: BTreeSet<&str> = out.iter().map(|r| r.msg_id.as_str()).collect();
    assert_eq!(ids.len(), out.len());
    assert_eq!(stream_len(&js, "dlq").await, expected_dead);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_policy_stops_at_a_malformed_payload_and_loses_nothing() {
    // No step can read a payload that is not JSON: switching the policy to Dlq gets past it.
    stop_policy_keeps_the_failing_message(MALFORMED, "Dlq", "{b: .a.b}", &[1, 2, 3, 4], 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_policy_stops_at_a_failing_expression_and_loses_nothing() {
    // Fixed expression: the failing message now maps to b = 0.
    stop_policy_keeps_the_failing_message(
        FAILING,
        "Stop",
        "{b: (.a.b? // 0)}",
        &[1, 2, 3, 0, 4],
        0,
    )
    .await;
}

/// Sends `signal` (`STOP`, `CONT`) to the process whose id is in `pid_file`.
fn signal(pid_file: &Path, signal: &str) {
    let pid = std::fs::read_to_string(pid_file).expect("pid file");
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.trim())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Every message of a backlog fails (none is JSON), on four splits that share the dead-letter
/// publisher, with windows (`maxPending`) larger than its own limit of acks in flight (5,000).
/// The server pauses for a moment mid-flood (as a disk stall would), so that the unconfirmed
/// dead letters pile up past that limit: a split stuck on it could never poll the acks that
/// free it, and gave up on the message. Every message must reach the dead-letter stream, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_that_fails_entirely_is_dead_lettered_once_without_a_hang() {
    const COUNT: usize = 60_000;
    let server = NatsServer::start_with("pid_file: \"{dir}/nats.pid\"");
    let pid_file = server.dir().join("nats.pid");
    let (js, _) = setup(&server, &[]).await;
    let subjects = ["in.a", "in.b", "in.c", "in.d"];
    let published = publish(&js, &subjects, COUNT, 16).await;
    let lasts: Vec<u64> = published.values().map(|s| *s.last().unwrap()).collect();
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let text = manifest("errs-flood", "Dlq", "{b: .a.b}")
        .replace(
            "      stream: in\n",
            "      stream: in\n      filterSubjects: [in.a, in.b, in.c, in.d]\n      batchSize: 10000\n",
        )
        .replace(
            "      stream: out\n",
            "      stream: out\n      maxPending: 20000\n",
        );
    assert!(text.contains("batchSize: 10000"), "{text}");
    assert!(text.contains("maxPending: 20000"), "{text}");
    let path = write_manifest(dir.path(), &text);
    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    wait_for_len(&js, "dlq", 1_000, Duration::from_secs(60)).await;
    signal(&pid_file, "STOP");
    tokio::time::sleep(Duration::from_secs(4)).await;
    signal(&pid_file, "CONT");
    wait_for_len(&js, "dlq", COUNT as u64, Duration::from_secs(120)).await;
    wait_for_positions(&checkpoints, "errs-flood", &lasts).await;
    let status = worker.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "exit {status}; log:\n{}",
        worker.log_text()
    );

    assert_eq!(stream_len(&js, "out").await, 0);
    let dead = read_all(&js, "dlq").await;
    let seqs: BTreeSet<u64> = dead
        .iter()
        .map(|r| source_of(&r.headers).sequence)
        .collect();
    assert_eq!(dead.len(), COUNT, "each failed message once");
    assert_eq!(seqs.len(), COUNT, "every failed message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_policy_without_a_dead_letter_stream_stops_instead_of_dropping_dead_letters() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "in", &["in.*"]).await;
    create_stream(&js, "out", &["out.>"]).await;
    let mut seqs = Vec::new();
    for m in MESSAGES {
        let ack = js
            .publish("in.data", Bytes::from(m))
            .await
            .expect("publish");
        seqs.push(ack.await.expect("publish ack").sequence);
    }
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let name = "errs-nodlq";
    let path = write_manifest(dir.path(), &manifest(name, "Dlq", "{b: .a.b}"));

    // No stream captures dlq.errs-nodlq: the dead letter has nowhere to be kept. The worker
    // must neither drop it nor commit a position past the failed message.
    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        let committed = position(&checkpoints, name);
        assert!(
            committed < seqs[MALFORMED],
            "position {committed} passed the failed message {} whose dead letter no stream kept; log:\n{}",
            seqs[MALFORMED],
            worker.log_text()
        );
        if let Some(status) = worker.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker went on without a dead-letter stream; log:\n{}",
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success(), "log:\n{}", worker.log_text());
    let log = worker.log_text();
    assert!(
        log.contains("no stream captures the dead-letter subject dlq.errs-nodlq"),
        "{log}"
    );
    assert!(position(&checkpoints, name) < seqs[MALFORMED]);

    // With a stream on the subject, the restarted worker delivers both dead letters.
    create_stream(&js, "dlq", &["dlq.>"]).await;
    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    wait_for_len(&js, "dlq", 2, Duration::from_secs(60)).await;
    wait_for_positions(&checkpoints, name, &[seqs[5]]).await;
    let status = worker.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "exit {status}; log:\n{}",
        worker.log_text()
    );
    let out = read_all(&js, "out").await;
    assert_eq!(values_b(&out), [1, 2, 3, 4]);
    let dead = read_all(&js, "dlq").await;
    assert_eq!(dead.len(), 2, "each failed message once");
    assert_eq!(dead[0].payload, MESSAGES[MALFORMED].as_bytes());
    assert_eq!(dead[1].payload, MESSAGES[FAILING].as_bytes());
}
