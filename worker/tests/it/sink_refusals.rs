//! Outputs the sink refuses for good go to the error policy, against a real nats-server and the
//! jetflow-worker binary: a sink stream whose `maxMsgSize` is below an output's size, a sink
//! stream that is full and discards new messages, and an output over the server's
//! `max_payload` once its headers are added. Under `Dlq` the source message is dead-lettered
//! with the refusal in its headers and the rest flows; under `Skip` it is counted; under `Stop`
//! the split stops before it with the reason recorded. The worker never crash-loops on it.

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use jetflow_testsupport::NatsServer;
use jetflow_testsupport::http::metric_sum;

fn manifest(name: &str, policy: &str) -> String {
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

/// Creates the source, sink (`sink` adjusts its configuration) and dead-letter streams, and
/// publishes `payloads` to the source; returns their sequences.
async fn setup(
    server: &NatsServer,
    sink: impl FnOnce(&mut stream::Config),
    payloads: &[Bytes],
) -> (jetstream::Context, Vec<u64>) {
    let js = server.jetstream().await;
    create_stream(&js, "in", &["in.*"]).await;
    create_stream(&js, "dlq", &["dlq.>"]).await;
    let mut config = stream::Config {
        name: "out".to_owned(),
        subjects: vec!["out.>".to_owned()],
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    sink(&mut config);
    js.create_stream(config)
        .await
        .expect("create the sink stream");
    let mut seqs = Vec::new();
    for p in payloads {
        let ack = js.publish("in.data", p.clone()).await.expect("publish");
        seqs.push(ack.await.expect("publish ack").sequence);
    }
    (js, seqs)
}

fn small(i: u8) -> Bytes {
    Bytes::from(vec![b'a' + i; 100])
}

fn header(r: &SinkRecord, name: &str) -> String {
    r.headers
        .get(name)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_else(|| panic!("header {name} missing: {:?}", r.headers))
}

/// Under `Dlq`: the refused message is dead-lettered once with the refusal named, everything
/// else reaches the sink, the position passes it, and a restarted worker does not meet it again.
async fn dlq_sets_the_refused_message_aside(
    name: &str,
    sink: impl FnOnce(&mut stream::Config),
    payloads: &[Bytes],
    refused: usize,
    kind: &str,
) {
    let server = NatsServer::start();
    let (js, seqs) = setup(&server, sink, payloads).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let path = write_manifest(dir.path(), &manifest(name, "Dlq"));
    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    wait_for_positions(&checkpoints, name, &[*seqs.last().unwrap()]).await;
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the worker exited; log:\n{}",
        worker.log_text()
    );
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());

    let out = read_all(&js, "out").await;
    let expected: Vec<u64> = (0..payloads.len())
        .filter(|i| *i != refused)
        .map(|i| seqs[i])
        .collect();
    assert_eq!(
        out.iter().map(|r| r.source_seq).collect::<Vec<_>>(),
        expected,
        "every other message reaches the sink, once"
    );
    let dead = read_all(&js, "dlq").await;
    assert_eq!(dead.len(), 1, "the refused message, once");
    let d = &dead[0];
    assert_eq!(d.subject, format!("dlq.{name}"));
    assert_eq!(
        d.payload, payloads[refused],
        "the source message, untouched"
    );
    assert_eq!(header(d, "Jetflow-Error-Step"), "sink");
    assert_eq!(header(d, "Jetflow-Error-Kind"), kind);
    assert_eq!(d.source_seq, seqs[refused]);
    eprintln!("dead letter: {}", header(d, "Jetflow-Error"));

    // Restarted, the worker resumes after the refused message.
    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    worker.wait_ready(Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let refused = worker.metric("jetflow_worker_errors_total", &["kind=\"sink_refused\""]);
    assert_eq!(refused, 0.0, "refused again after the restart");
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());
    assert_eq!(stream_len(&js, "dlq").await, 1);
}

fn oversized() -> Vec<Bytes> {
    vec![
        small(0),
        small(1),
        Bytes::from(vec![b'x'; 2_000]),
        small(3),
        small(4),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_over_the_sink_streams_max_msg_size_is_dead_lettered_and_the_rest_flows() {
    dlq_sets_the_refused_message_aside(
        "refuse-size",
        |c| c.max_message_size = 1_024,
        &oversized(),
        2,
        "message_too_large",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_into_a_full_sink_stream_that_discards_new_is_dead_lettered() {
    // The sink stream holds one message already and takes two more; the fourth output is
    // refused, and so is the fifth.
    let payloads: Vec<Bytes> = (0..4).map(small).collect();
    let server = NatsServer::start();
    let (js, seqs) = setup(
        &server,
        |c| {
            c.max_messages = 3;
            c.discard = stream::DiscardPolicy::New;
        },
        &payloads,
    )
    .await;
    js.publish("out.earlier", Bytes::from_static(b"earlier"))
        .await
        .unwrap()
        .await
        .unwrap();
    let name = "refuse-full";
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let path = write_manifest(dir.path(), &manifest(name, "Dlq"));
    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    wait_for_positions(&checkpoints, name, &[*seqs.last().unwrap()]).await;
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the worker exited; log:\n{}",
        worker.log_text()
    );
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());
    assert_eq!(stream_len(&js, "out").await, 3);
    let dead = read_all(&js, "dlq").await;
    assert_eq!(
        dead.iter().map(|r| r.source_seq).collect::<Vec<_>>(),
        seqs[2..],
        "the messages the full stream refused, once each"
    );
    for d in &dead {
        assert_eq!(header(d, "Jetflow-Error-Kind"), "stream_full");
        assert!(
            header(d, "Jetflow-Error").contains("maximum messages exceeded"),
            "{:?}",
            d.headers
        );
    }
}

/// Why the pipeline's only split stopped, as its checkpoint records it.
fn stopped(checkpoints: &Path, name: &str) -> Option<String> {
    read_checkpoint(checkpoints, name)
        .splits
        .values()
        .next()?
        .stopped
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_policy_stops_before_an_output_the_sink_refuses() {
    let server = NatsServer::start();
    let payloads = oversized();
    let (js, seqs) = setup(&server, |c| c.max_message_size = 1_024, &payloads).await;
    let name = "refuse-stop";
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let path = write_manifest(dir.path(), &manifest(name, "Stop"));
    for run in 0..2 {
        let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
        let status = worker.wait(Duration::from_secs(60));
        let log = worker.log_text();
        assert_eq!(status.code(), Some(3), "run {run}: {status}; log:\n{log}");
        let checkpoint = read_checkpoint(&checkpoints, name);
        let position = checkpoint.splits.values().next().map(|p| p.position);
        assert_eq!(
            position,
            Some(seqs[1]),
            "run {run}: the position stays before the refused message"
        );
        let why = stopped(&checkpoints, name).unwrap_or_default();
        assert!(
            why.starts_with(&format!(
                "message {} refused by the sink: message_too_large: ",
                seqs[2]
            )),
            "run {run}: {why:?}"
        );
        // Outputs after the refused one may have been published before its refusal came back
        // (publishes are pipelined); their position is not committed, and the sink stream keeps
        // one copy of each when they are published again.
        let out: Vec<u64> = read_all(&js, "out")
            .await
            .iter()
            .map(|r| r.source_seq)
            .collect();
        assert_eq!(out[..2], seqs[..2], "run {run}: what came before, once");
        assert!(
            !out.contains(&seqs[2]) && out.iter().skip(2).all(|s| seqs[3..].contains(s)),
            "run {run}: {out:?}"
        );
        let unique: std::collections::BTreeSet<u64> = out.iter().copied().collect();
        assert_eq!(unique.len(), out.len(), "run {run}: {out:?}");
        assert_eq!(stream_len(&js, "dlq").await, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_over_the_servers_max_payload_is_skipped_and_counted() {
    // The source message fits the server's max_payload; with the output's headers (message id,
    // source stream, subject and sequence) it does not.
    let server = NatsServer::start_with("max_payload: 2048\n");
    let payloads = vec![small(0), Bytes::from(vec![b'x'; 1_990]), small(2), small(3)];
    let (js, seqs) = setup(&server, |_| {}, &payloads).await;
    let name = "refuse-payload";
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let path = write_manifest(dir.path(), &manifest(name, "Skip"));
    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    wait_for_positions(&checkpoints, name, &[*seqs.last().unwrap()]).await;
    let text = worker.metrics();
    assert_eq!(
        metric_sum(&text, "jetflow_worker_errors_total", &["sink_refused"]),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric_sum(&text, "jetflow_worker_errors_total", &["skipped"]),
        1.0,
        "{text}"
    );
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());
    let log = worker.log_text();
    assert!(log.contains("max_payload"), "{log}");
    let out = read_all(&js, "out").await;
    assert_eq!(
        out.iter().map(|r| r.source_seq).collect::<Vec<_>>(),
        [seqs[0], seqs[2], seqs[3]]
    );
    assert_eq!(stream_len(&js, "dlq").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_output_over_max_payload_is_dead_lettered_with_its_source_message() {
    // A map step doubles the payload: the source message fits the server's max_payload (and so
    // does its dead letter), its output does not.
    let server = NatsServer::start_with("max_payload: 2048\n");
    let big = format!(r#"{{"a": "{}"}}"#, "x".repeat(1_000));
    let payloads: Vec<Bytes> = vec![
        Bytes::from_static(br#"{"a": "one"}"#),
        Bytes::from(big),
        Bytes::from_static(br#"{"a": "three"}"#),
    ];
    let (js, seqs) = setup(&server, |_| {}, &payloads).await;
    create_stream(&js, "capture", &["notify.>"]).await;
    let name = "refuse-core";
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let text = manifest(name, "Dlq")
        .replace(
            "  sink:\n    jetstream:\n      stream: out\n      subject: \"out.{{token(2)}}\"\n",
            "  steps:\n    - name: double\n      map: '{a: .a, b: .a}'\n  sink:\n    core:\n      subject: \"notify.{{token(2)}}\"\n",
        );
    assert!(text.contains("core:"), "{text}");
    let path = write_manifest(dir.path(), &text);
    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    wait_for_positions(&checkpoints, name, &[*seqs.last().unwrap()]).await;
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());
    let out: Vec<u64> = read_all(&js, "capture")
        .await
        .iter()
        .map(|r| r.source_seq)
        .collect();
    assert_eq!(out, [seqs[0], seqs[2]]);
    let dead = read_all(&js, "dlq").await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        dead[0].payload, payloads[1],
        "the source message, untouched"
    );
    assert_eq!(header(&dead[0], "Jetflow-Error-Step"), "sink");
    assert_eq!(header(&dead[0], "Jetflow-Error-Kind"), "max_payload");
}
