//! Replayed dead letters on a source stream several pipelines read, against a real nats-server
//! and a real worker process: a message whose `Jetflow-Replay-For` header names another
//! pipeline is skipped (its position moves on, counted in
//! `jetflow_worker_skipped_messages_total{reason="replay_for_other"}`, the steps never see it),
//! one naming this pipeline is processed as any other, and no output carries the header on.

use std::time::Duration;

use async_nats::HeaderMap;
use jetflow_testsupport::NatsServer;
use jetflow_testsupport::http::metric_sum;

use crate::common::*;
use crate::support::*;

const MANIFEST: &str = r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata:
  name: audit
spec:
  source:
    jetstream:
      stream: in
  steps:
    - map: '{n: (.n * 10)}'
  sink:
    jetstream:
      stream: out
      subject: "out.{{subject}}"
  checkpoint:
    interval: 300ms
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_replayed_for_another_pipeline_is_skipped_and_one_for_this_pipeline_is_processed()
 {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "in", &["in.*"]).await;
    create_stream(&js, "out", &["out.>"]).await;
    // 1 and 4 plain, 3 replayed for this pipeline, 2 and 5 for another (of this namespace, and
    // of this name in another namespace).
    let targets = [
        None,
        Some("default/payments"),
        Some("default/audit"),
        None,
        Some("shop/audit"),
    ];
    for (i, target) in targets.iter().enumerate() {
        let mut headers = HeaderMap::new();
        headers.insert("Trace", "t");
        if let Some(t) = target {
            headers.insert("Jetflow-Replay-For", *t);
        }
        let body = format!(r#"{{"n":{}}}"#, i + 1);
        js.publish_with_headers("in.a", headers, body.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let path = write_manifest(dir.path(), MANIFEST);
    let addr = free_addr();
    let mut worker = spawn(&path, &server.url(), &checkpoints, "w1", &addr, &[]);
    worker.wait_ready(Duration::from_secs(60)).await;
    wait_for_positions(&checkpoints, "audit", &[5]).await;
    let skipped = metric_sum(
        &worker.metrics(),
        "jetflow_worker_skipped_messages_total",
        &["reason=\"replay_for_other\""],
    );
    assert_eq!(skipped, 2.0, "{}", worker.metrics());
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());

    let records = read_all(&js, "out").await;
    let got: Vec<(u64, String)> = records
        .iter()
        .map(|r| {
            (
                r.source_seq,
                String::from_utf8_lossy(&r.payload).into_owned(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (1, r#"{"n":10}"#.to_owned()),
            (3, r#"{"n":30}"#.to_owned()),
            (4, r#"{"n":40}"#.to_owned()),
        ],
        "each output from its own message's steps"
    );
    for r in &records {
        assert!(
            r.headers.get("Jetflow-Replay-For").is_none(),
            "{:?}",
            r.headers
        );
        assert_eq!(r.headers.get("Trace").map(|v| v.as_str()), Some("t"));
    }
}
