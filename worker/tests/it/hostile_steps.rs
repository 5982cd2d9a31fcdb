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
    let deadline = Instant::now() + Duration::from_secs(180);
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
        if Instant::now() > deadline {
            let seqs: Vec<u64> = read_all(js, stream)
                .await
                .iter()
                .map(|r| r.source_seq)
                .collect();
            panic!(
                "stream {stream} holds {len} of {count} messages (of source sequences {seqs:?}); log:\n{}",
                worker.log_text()
            );
        }
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
    // Building 100,000 levels takes a while in a debug build on a busy machine: the time
    // budget is not what is tested here.
    let budget = ["--step-timeout", "120s"];
    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &budget);
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

/// One message to publish: subject, headers, payload.
struct Hostile {
    subject: String,
    headers: Vec<(&'static str, String)>,
    payload: Vec<u8>,
}

fn hostile(
    subject: &str,
    headers: &[(&'static str, &str)],
    payload: impl Into<Vec<u8>>,
) -> Hostile {
    Hostile {
        subject: subject.to_owned(),
        headers: headers.iter().map(|(n, v)| (*n, (*v).to_owned())).collect(),
        payload: payload.into(),
    }
}

/// Payloads that are not JSON, with NUL bytes, invalid UTF-8 or 4 MiB long; headers that are
/// huge, repeated or named like jetflow's own; subjects with odd tokens. Each is delivered
/// or dead-lettered with its error, and the worker keeps running to the last message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_payloads_headers_and_subjects_reach_their_outcomes() {
    // JetStream takes at most 64 KiB of headers per message.
    let big_header = "h".repeat(60_000);
    let huge = format!(r#"{{"n": 5, "s": "{}"}}"#, "x".repeat(4 << 20));
    let multi: Vec<(&'static str, String)> = (0..100).map(|i| ("Multi", format!("m{i}"))).collect();
    let long_token = "t".repeat(200);
    let mut messages = vec![
        hostile("in.data", &[], r#"{"n": 0}"#),
        hostile("in.data", &[], "not json"),
        hostile("in.data", &[], b"{\"n\": 2, \"s\": \"a\0b\"}".to_vec()),
        hostile("in.data", &[], r#"{"n": 3, "s": "a\u0000b"}"#),
        hostile("in.data", &[], b"{\"n\": 4, \"s\": \"\xff\xfe\"}".to_vec()),
        hostile("in.data", &[], huge),
        hostile("in.data", &[("Big", &big_header)], r#"{"n": 6}"#),
        hostile("in.data", &[], r#"{"n": 7}"#),
        hostile(
            "in.data",
            &[
                ("Nats-Msg-Id", "same"),
                ("Jetflow-Error", "fake"),
                ("Jetflow-Source", "fake"),
            ],
            r#"{"n": 8}"#,
        ),
        // (The source stream itself drops a message whose id repeats one in its window.)
        hostile("in.data", &[("Nats-Msg-Id", "other")], r#"{"n": 9}"#),
        hostile("in.data", &[("Jetflow-Error-Kind", "fake")], "not json"),
        hostile("in.ünï-cödé", &[], r#"{"n": 11}"#),
        hostile(&format!("in.{long_token}"), &[], r#"{"n": 12}"#),
        hostile("in.a-b_c~!@#$%^&()=+", &[], r#"{"n": 13}"#),
        hostile("in.data", &[], r#"{"n": 14}"#),
    ];
    messages[7].headers = multi;
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "in", &["in.*"]).await;
    create_stream(&js, "out", &["out.>"]).await;
    create_stream(&js, "dlq", &["dlq.>"]).await;
    let mut seqs = Vec::new();
    for m in &messages {
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in &m.headers {
            headers.append(*name, value.as_str());
        }
        let ack = js
            .publish_with_headers(m.subject.clone(), headers, Bytes::from(m.payload.clone()))
            .await
            .expect("publish");
        seqs.push(ack.await.expect("publish ack").sequence);
    }
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let name = "hostile";
    let map = r#"{n, len: ((.s // "") | length), big: (($headers.Big // "") | length), multi: $headers.Multi}"#;
    let path = write_manifest(dir.path(), &manifest(name, map));
    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    let delivered = [0, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14];
    let dead = [1, 2, 10];
    wait_alive_for_len(&mut worker, &js, "out", delivered.len() as u64).await;
    wait_alive_for_len(&mut worker, &js, "dlq", dead.len() as u64).await;
    wait_for_positions(&checkpoints, name, &[*seqs.last().unwrap()]).await;
    let status = worker.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "exit {status}; log:\n{}",
        worker.log_text()
    );

    let out = read_all(&js, "out").await;
    let seen: Vec<u64> = out.iter().map(|r| r.source_seq).collect();
    let expected: Vec<u64> = delivered.iter().map(|&i| seqs[i]).collect();
    assert_eq!(seen, expected, "every delivered message once, in order");
    let by_n = |n: u64| -> (&SinkRecord, serde_json::Value) {
        let record = out
            .iter()
            .find(|r| r.source_seq == seqs[n as usize])
            .expect("delivered");
        let text = std::str::from_utf8(&record.payload).expect("outputs are UTF-8");
        (
            record,
            serde_json::from_str(text).expect("outputs are JSON"),
        )
    };
    assert_eq!(by_n(3).1["len"], 3, "an escaped NUL is a character");
    assert_eq!(
        by_n(4).1["len"],
        2,
        "invalid UTF-8 reads as replacement characters"
    );
    assert_eq!(by_n(5).1["len"], 4 << 20);
    assert_eq!(by_n(6).1["big"], 60_000);
    assert_eq!(
        by_n(7).1["multi"],
        "m0",
        "$headers holds a header's first value"
    );
    for n in [8, 9] {
        let (record, _) = by_n(n);
        let ids: Vec<&str> = record
            .headers
            .get_all("Nats-Msg-Id")
            .map(|v| v.as_str())
            .collect();
        assert_eq!(ids.len(), 1, "{:?}", record.headers);
        assert!(
            !["same", "other"].contains(&ids[0]),
            "the output's id is jetflow's"
        );
        assert!(
            !header(record, "Jetflow-Source").contains("fake"),
            "{:?}",
            record.headers
        );
    }
    for (n, subject) in [
        (11, "out.ünï-cödé".to_owned()),
        (12, format!("out.{long_token}")),
        (13, "out.a-b_c~!@#$%^&()=+".to_owned()),
    ] {
        assert_eq!(by_n(n).0.subject, subject);
    }

    let letters = read_all(&js, "dlq").await;
    let seen: Vec<u64> = letters.iter().map(|r| r.source_seq).collect();
    let expected: Vec<u64> = dead.iter().map(|&i| seqs[i]).collect();
    assert_eq!(seen, expected);
    for (letter, &i) in letters.iter().zip(&dead) {
        assert_eq!(letter.payload, messages[i].payload, "the original bytes");
        let kinds: Vec<&str> = letter
            .headers
            .get_all("Jetflow-Error-Kind")
            .map(|v| v.as_str())
            .collect();
        assert_eq!(
            kinds,
            ["parse"],
            "jetflow's error headers only: {:?}",
            letter.headers
        );
        assert!(header(letter, "Jetflow-Error").contains("payload is not JSON"));
    }
}
