//! Steps end to end: the jetflow-worker binary against a real nats-server, running each step
//! kind, a multi-output map, and a header-only pipeline over payloads that are not JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::common::*;
use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;
use jetflow_testsupport::NatsServer;
use serde_json::Value;

/// Publishes each `(subject, headers, payload)` and returns the stream sequences in order.
async fn publish_each(
    js: &jetstream::Context,
    messages: &[(String, HeaderMap, Bytes)],
) -> Vec<u64> {
    let mut seqs = Vec::with_capacity(messages.len());
    for (subject, headers, payload) in messages {
        let ack = js
            .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
            .await
            .expect("publish");
        seqs.push(ack.await.expect("publish ack").sequence);
    }
    seqs
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(|v| v.as_str().to_owned())
}

/// Runs `manifest` until `sink` holds `expected` messages and every split committed its last
/// message (`last_seqs`), then stops the worker with SIGTERM, which must exit cleanly.
async fn run_until(
    server: &NatsServer,
    js: &jetstream::Context,
    manifest: &str,
    sink: &str,
    expected: u64,
    last_seqs: &[u64],
) -> Vec<SinkRecord> {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let path = write_manifest(dir.path(), manifest);
    let name = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("name: "))
        .expect("metadata.name");
    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    wait_for_len(js, sink, expected, Duration::from_secs(60)).await;
    wait_for_positions(&checkpoints, name, last_seqs).await;
    let status = worker.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "exit {status}; log:\n{}",
        worker.log_text()
    );
    assert_eq!(stream_len(js, sink).await, expected, "no extra outputs");
    read_all(js, sink).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_step_kind_transforms_messages_end_to_end() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "orders", &["orders.*"]).await;
    create_stream(&js, "summary", &["out.>"]).await;

    let mut messages = Vec::new();
    for i in 0..40u64 {
        let mut headers = HeaderMap::new();
        headers.insert("Trace-Id", format!("t-{i}").as_str());
        headers.insert("Keep-Me", "yes");
        let subject = if i % 2 == 0 { "orders.eu" } else { "orders.us" };
        let payload = serde_json::json!({
            "id": format!("o-{i}"),
            "status": if i % 4 == 3 { "pending" } else { "paid" },
            "qty": i,
            "price": 1.5,
            "customer": {"region": if i % 3 == 0 { "north" } else { "south" }},
        });
        messages.push((
            subject.to_owned(),
            headers,
            Bytes::from(payload.to_string()),
        ));
    }
    let seqs = publish_each(&js, &messages).await;

    let manifest = r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata:
  name: steps-kinds
spec:
  source:
    jetstream:
      stream: orders
      filterSubjects: ["orders.eu", "orders.us"]
  steps:
    - name: paid-only
      filter: '.status == "paid"'
    - name: summarize
      map: '{id, total: (.qty * .price), region: .customer.region, seq: $seq, trace: $headers["Trace-Id"], from: $subject}'
    - setSubject: "by-region.{{payload.region}}.{{token(2)}}"
    - setHeaders:
        Region: "{{payload.region}}"
        Routed-As: "{{subject}}"
    - dropHeaders: ["Trace-Id"]
  sink:
    jetstream:
      stream: summary
      subject: "out.{{subject}}"
  checkpoint:
    interval: 300ms
"#;
    let paid: Vec<usize> = (0..40).filter(|i| i % 4 != 3).collect();
    let records = run_until(
        &server,
        &js,
        manifest,
        "summary",
        paid.len() as u64,
        &[seqs[38], seqs[39]],
    )
    .await;

    let by_seq: BTreeMap<u64, &SinkRecord> = records.iter().map(|r| (r.source_seq, r)).collect();
    assert_eq!(by_seq.len(), paid.len(), "one output per paid order");
    for i in paid {
        let seq = seqs[i];
        let r = by_seq
            .get(&seq)
            .unwrap_or_else(|| panic!("order {i} (seq {seq}) missing"));
        let region = if i % 3 == 0 { "north" } else { "south" };
        let token = if i % 2 == 0 { "eu" } else { "us" };
        let source_subject = format!("orders.{token}");
        assert_eq!(r.subject, format!("out.by-region.{region}.{token}"));
        assert_eq!(r.source_subject, source_subject);
        let v: Value = serde_json::from_slice(&r.payload).unwrap();
        assert_eq!(v["id"], format!("o-{i}"));
        assert_eq!(v["total"].as_f64().unwrap(), i as f64 * 1.5);
        assert_eq!(v["region"], region);
        assert_eq!(v["seq"].as_u64().unwrap(), seq);
        assert_eq!(v["trace"], format!("t-{i}"));
        assert_eq!(v["from"], source_subject.as_str());
        assert_eq!(header(&r.headers, "Region").as_deref(), Some(region));
        assert_eq!(
            header(&r.headers, "Routed-As"),
            Some(format!("by-region.{region}.{token}"))
        );
        assert_eq!(header(&r.headers, "Keep-Me").as_deref(), Some("yes"));
        assert_eq!(header(&r.headers, "Trace-Id"), None, "dropped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_output_map_emits_every_output_once_in_order() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "orders", &["orders.*"]).await;
    create_stream(&js, "items", &["items.>"]).await;

    // Order i has i % 4 items: 0 to 3 outputs each.
    let mut messages = Vec::new();
    let mut expected = 0;
    for i in 0..60usize {
        let items: Vec<String> = (0..i % 4).map(|k| format!("sku-{i}-{k}")).collect();
        expected += items.len();
        let payload = serde_json::json!({"id": i, "items": items});
        // A step that never reads headers leaves every output the source's headers.
        let mut headers = HeaderMap::new();
        headers.insert("Order", format!("o-{i}").as_str());
        messages.push((
            "orders.all".to_owned(),
            headers,
            Bytes::from(payload.to_string()),
        ));
    }
    let seqs = publish_each(&js, &messages).await;
    let manifest = r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata:
  name: steps-fanout
spec:
  source:
    jetstream:
      stream: orders
  steps:
    - name: explode
      map: '.id as $id | .items | to_entries[] | {order: $id, sku: .value, index: .key}'
  sink:
    jetstream:
      stream: items
      subject: "items.{{token(2)}}"
  checkpoint:
    interval: 300ms
"#;
    let records = run_until(
        &server,
        &js,
        manifest,
        "items",
        expected as u64,
        &[*seqs.last().unwrap()],
    )
    .await;

    let ids: BTreeSet<&str> = records.iter().map(|r| r.msg_id.as_str()).collect();
    assert_eq!(ids.len(), expected, "every output has its own message id");
    let mut next_index: BTreeMap<u64, u64> = BTreeMap::new();
    let mut last_seq = 0;
    for r in &records {
        let v: Value = serde_json::from_slice(&r.payload).unwrap();
        let order = v["order"].as_u64().unwrap() as usize;
        let index = v["index"].as_u64().unwrap();
        assert_eq!(r.source_seq, seqs[order]);
        assert_eq!(v["sku"], format!("sku-{order}-{index}"));
        assert_eq!(header(&r.headers, "Order"), Some(format!("o-{order}")));
        // In source order, and within a message in output order.
        assert!(r.source_seq >= last_seq, "outputs in source order");
        last_seq = r.source_seq;
        let want = next_index.entry(r.source_seq).or_default();
        assert_eq!(index, *want, "outputs of seq {} in order", r.source_seq);
        *want += 1;
    }
    for (order, seq) in seqs.iter().enumerate() {
        assert_eq!(
            next_index.get(seq).copied().unwrap_or(0),
            (order % 4) as u64,
            "order {order}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_steps_pass_payloads_that_are_not_json_untouched() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "raw", &["raw.*"]).await;
    create_stream(&js, "tagged", &["tagged.>"]).await;

    let payloads: Vec<Bytes> = vec![
        Bytes::from_static(b"not json at all"),
        Bytes::from_static(b"\xff\xfe\x00binary\x01"),
        Bytes::from_static(b"{\"half\": "),
        Bytes::from_static(b"  {\"json\" : true }  "),
        Bytes::new(),
    ];
    let messages: Vec<_> = payloads
        .iter()
        .map(|p| ("raw.feed".to_owned(), HeaderMap::new(), p.clone()))
        .collect();
    let seqs = publish_each(&js, &messages).await;
    let manifest = r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata:
  name: steps-headers-only
spec:
  source:
    jetstream:
      stream: raw
  steps:
    - setHeaders:
        Feed: "{{token(2)}}"
    - setSubject: "tagged.{{token(2)}}"
  sink:
    jetstream:
      stream: tagged
      subject: "{{subject}}"
  checkpoint:
    interval: 300ms
"#;
    let records = run_until(
        &server,
        &js,
        manifest,
        "tagged",
        payloads.len() as u64,
        &[*seqs.last().unwrap()],
    )
    .await;
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.source_seq, seqs[i]);
        assert_eq!(r.payload, payloads[i], "payload {i} byte for byte");
        assert_eq!(r.subject, "tagged.feed");
        assert_eq!(header(&r.headers, "Feed").as_deref(), Some("feed"));
    }
}
