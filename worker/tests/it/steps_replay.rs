//! Determinism under replay: a worker running a multi-output `map` is killed with SIGKILL at
//! random moments and restarted; every output still reaches the sink exactly once, because a
//! replayed message yields the same outputs with the same message ids.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use jetflow_testsupport::NatsServer;

const SOURCE_MESSAGES: usize = 30_000;

fn manifest() -> &'static str {
    r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata:
  name: steps-replay
spec:
  source:
    jetstream:
      stream: events
      filterSubjects: ["events.a", "events.b"]
  steps:
    - name: drop-odd
      filter: '.n % 5 != 4'
    - name: fan-out
      map: '.n as $n | range(.k) | {src: $seq, i: ., n: $n, on: $subject}'
    - setHeaders:
        Part: "{{payload.i}}"
  sink:
    jetstream:
      stream: parts
      subject: "parts.{{token(2)}}"
  checkpoint:
    interval: 300ms
"#
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_with_a_multi_output_map_yields_each_output_exactly_once() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "events", &["events.*"]).await;
    create_stream(&js, "parts", &["parts.>"]).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let path = write_manifest(dir.path(), manifest());

    // Message n has k = 1 + n % 3 outputs unless the filter drops it (n % 5 == 4).
    let expected_outputs: usize = (0..SOURCE_MESSAGES)
        .filter(|n| n % 5 != 4)
        .map(|n| 1 + n % 3)
        .sum();
    let publisher = {
        let js = js.clone();
        tokio::spawn(async move {
            let mut pending = std::collections::VecDeque::new();
            let mut seqs = Vec::with_capacity(SOURCE_MESSAGES);
            for n in 0..SOURCE_MESSAGES {
                let subject = if n.is_multiple_of(2) {
                    "events.a"
                } else {
                    "events.b"
                };
                let payload = format!(r#"{{"n":{n},"k":{}}}"#, 1 + n % 3);
                let ack = js
                    .publish(subject, Bytes::from(payload))
                    .await
                    .expect("publish");
                pending.push_back((n, ack));
                if pending.len() >= 1000 {
                    let (n, ack) = pending.pop_front().unwrap();
                    seqs.push((n, ack.await.expect("publish ack").sequence));
                }
            }
            for (n, ack) in pending {
                seqs.push((n, ack.await.expect("publish ack").sequence));
            }
            seqs
        })
    };

    let mut rng = Rng::from_clock();
    let mut mid_run = 0;
    for kill in 1..=5 {
        let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
        let delay = 500 + rng.below(1500);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        assert!(
            worker.child.try_wait().unwrap().is_none(),
            "worker exited early; log:\n{}",
            worker.log_text()
        );
        worker.kill();
        let done = stream_len(&js, "parts").await;
        eprintln!("kill {kill} after {delay} ms: {done} outputs so far");
        if done > 0 && done < expected_outputs as u64 {
            mid_run += 1;
        }
    }
    assert!(
        mid_run > 0,
        "no kill landed while outputs were being written"
    );
    let seqs: BTreeMap<u64, usize> = publisher
        .await
        .unwrap()
        .into_iter()
        .map(|(n, seq)| (seq, n))
        .collect();

    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    wait_for_len(
        &js,
        "parts",
        expected_outputs as u64,
        Duration::from_secs(120),
    )
    .await;
    // Every split committed its last message, and the worker is up (a SIGTERM sent before it
    // installed its handler would kill it outright).
    let last: Vec<u64> = ["events.a", "events.b"]
        .iter()
        .map(|subject| {
            let parity = usize::from(*subject == "events.b");
            *seqs.iter().rfind(|(_, n)| *n % 2 == parity).unwrap().0
        })
        .collect();
    wait_for_positions(&checkpoints, "steps-replay", &last).await;
    worker.wait_ready(Duration::from_secs(60)).await;
    let status = worker.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "exit {status}; log:\n{}",
        worker.log_text()
    );

    let records = read_all(&js, "parts").await;
    assert_eq!(records.len(), expected_outputs, "no output twice");
    // Checked by content: each (source sequence, output index) once, with the right values.
    let mut seen: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    for r in &records {
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        let src = v["src"].as_u64().unwrap();
        let i = v["i"].as_u64().unwrap();
        let n = seqs[&src];
        assert_eq!(v["n"].as_u64().unwrap() as usize, n);
        assert_eq!(r.source_seq, src);
        let subject = if n.is_multiple_of(2) {
            "events.a"
        } else {
            "events.b"
        };
        assert_eq!(v["on"], subject);
        assert_eq!(r.subject, format!("parts.{}", &subject[7..]));
        assert_eq!(
            r.headers.get("Part").map(|h| h.as_str().to_owned()),
            Some(i.to_string())
        );
        *seen.entry((src, i)).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "outputs more than once: {twice:?}");
    for (seq, n) in &seqs {
        let outputs = if n % 5 == 4 { 0 } else { 1 + n % 3 };
        for i in 0..outputs as u64 {
            assert!(
                seen.contains_key(&(*seq, i)),
                "output {i} of message {n} (seq {seq}) missing"
            );
        }
        assert!(
            !seen.contains_key(&(*seq, outputs as u64)),
            "message {n} has an output too many"
        );
    }
    // Message ids are distinct per output, so the sink's deduplication did the work.
    let ids: std::collections::BTreeSet<&str> = records.iter().map(|r| r.msg_id.as_str()).collect();
    assert_eq!(ids.len(), records.len());
}
