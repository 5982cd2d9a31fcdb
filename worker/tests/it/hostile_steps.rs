//! Hostile input on the steps side, end to end: the jetflow-worker binary against a real
//! nats-server, with messages built to break the steps (nested past any stack, and the like).
//! Each reaches its documented outcome (delivered, or dead-lettered with its error in the
//! headers), the messages after it are delivered, and the worker keeps running.

use std::time::{Duration, Instant};

use crate::common::*;
use async_nats::jetstream;
use bytes::Bytes;
use jetflow_testsupport::NatsServer;

/// A pipeline of one `map` step over `in.*` into `out`, dead letters to `dlq.<name>`.
fn manifest(name: &str, map: &str) -> String {
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
    - name: step
      map: '{map}'
  sink:
    jetstream:
      stream: out
      subject: "out.{{{{token(2)}}}}"
  errors:
    policy: Dlq
    deadLetterSubject: dlq.{name}
  checkpoint:
    interval: 300ms
"#
    )
}

async fn setup(server: &NatsServer, messages: &[Vec<u8>]) -> (jetstream::Context, Vec<u64>) {
    let js = server.jetstream().await;
    create_stream(&js, "in", &["in.*"]).await;
    create_stream(&js, "out", &["out.>"]).await;
    create_stream(&js, "dlq", &["dlq.>"]).await;
    let mut seqs = Vec::new();
    for m in messages {
        let ack = js
            .publish("in.data", Bytes::copy_from_slice(m))
            .await
            .expect("publish");
        seqs.push(ack.await.expect("publish ack").sequence);
    }
    (js, seqs)
}

/// Waits until `stream` holds `count` messages, failing at once (with the worker's log) if the
/// worker stops serving in the meantime: a worker that aborted never gets there.
async fn wait_alive_for_len(
    worker: &mut Worker,
    js: &jetstream::Context,
    stream: &str,
    count: u64,
) {
    worker.wait_ready(Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let len = stream_len(js, stream).await;
        if len >= count {
            return;
        }
        assert!(
            worker.is_ready(),
            "the worker stopped with {len} of {count} messages in {stream}; log:\n{}",
            worker.log_text()
        );
        assert!(
            Instant::now() < deadline,
            "stream {stream} holds {len} of {count} messages; log:\n{}",
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn header(r: &SinkRecord, name: &str) -> String {
    r.headers
        .get(name)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_else(|| panic!("header {name} missing: {:?}", r.headers))
}

/// 200,000 `[` (as plain JSON, and after a jq extension, where jaq's own reader would take
/// it), a value nested 100,000 levels built by the expression itself, and an error holding
/// one: each is dead-lettered with its error, the good messages around them are delivered,
/// and the worker goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_values_are_dead_lettered_and_the_worker_goes_on() {
    let deep = "[".repeat(200_000);
    let messages: Vec<Vec<u8>> = [
        r#"{"n": 1}"#.to_owned(),
        deep.clone(),
        r#"{"n": 2}"#.to_owned(),
        format!("[NaN, {deep}"),
        r#"{"n": 3}"#.to_owned(),
        r#"{"build": 100000}"#.to_owned(),
        r#"{"n": 4}"#.to_owned(),
        r#"{"index": 100000}"#.to_owned(),
        r#"{"n": 5}"#.to_owned(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect();
    let server = NatsServer::start();
    let (js, seqs) = setup(&server, &messages).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let name = "deep";
    let map = "if .build then (reduce range(.build) as $i (0; [.])) \
               elif .index then ((reduce range(.index) as $i (0; [.])) | .a) \
               else {n: .n} end";
    let path = write_manifest(dir.path(), &manifest(name, map));
    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    wait_alive_for_len(&mut worker, &js, "out", 5).await;
    wait_alive_for_len(&mut worker, &js, "dlq", 4).await;
    wait_for_positions(&checkpoints, name, &[*seqs.last().unwrap()]).await;
    let status = worker.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "exit {status}; log:\n{}",
        worker.log_text()
    );

    let out: Vec<String> = read_all(&js, "out")
        .await
        .iter()
        .map(|r| String::from_utf8(r.payload.to_vec()).unwrap())
        .collect();
    assert_eq!(
        out,
        [
            r#"{"n":1}"#,
            r#"{"n":2}"#,
            r#"{"n":3}"#,
            r#"{"n":4}"#,
            r#"{"n":5}"#
        ]
    );

    let dead = read_all(&js, "dlq").await;
    let expected = [
        (
            1,
            "parse",
            "payload nests arrays and objects deeper than 512 levels",
        ),
        (
            3,
            "parse",
            "payload nests arrays and objects deeper than 512 levels",
        ),
        (
            5,
            "eval",
            "output nests arrays and objects deeper than 512 levels",
        ),
        (
            7,
            "eval",
            "error holding a value nested deeper than 512 levels",
        ),
    ];
    assert_eq!(dead.len(), expected.len(), "each failed message once");
    for (letter, (index, kind, error)) in dead.iter().zip(expected) {
        assert_eq!(letter.source_seq, seqs[index]);
        assert_eq!(letter.payload, messages[index], "the original bytes");
        assert_eq!(header(letter, "Jetflow-Error-Step"), "step");
        assert_eq!(header(letter, "Jetflow-Error-Kind"), kind);
        assert!(
            header(letter, "Jetflow-Error").contains(error),
            "{index}: {:?}",
            letter.headers
        );
    }
}
