//! Outputs the sink can never take, against a real nats-server and the jetflow-worker binary:
//! subjects another stream captures (the source stream itself, when `sink.jetstream.subject`
//! is left out), subjects no stream captures, subjects that cannot be published on (longer
//! than the server's control line, control characters), and refusals in the middle of a
//! fan-out. Each goes to the pipeline's error policy as a refusal of its kind, the worker keeps
//! running, and nothing is published again and again.

use std::time::{Duration, Instant};

use crate::common::*;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use jetflow_testsupport::NatsServer;

fn header(r: &SinkRecord, name: &str) -> String {
    r.headers
        .get(name)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_else(|| panic!("header {name} missing: {:?}", r.headers))
}

/// Publishes each payload on `subject`; returns their sequences.
async fn publish_all(js: &jetstream::Context, subject: &str, payloads: &[Bytes]) -> Vec<u64> {
    let mut seqs = Vec::new();
    for p in payloads {
        let ack = js
            .publish(subject.to_owned(), p.clone())
            .await
            .expect("publish");
        seqs.push(ack.await.expect("publish ack").sequence);
    }
    seqs
}

/// A pipeline `name` from stream `source` into `sink` (`subject: None` leaves the sink subject
/// out), with `steps` (YAML list items, indented by four spaces) and the `Dlq` policy.
fn manifest(name: &str, source: &str, sink: &str, subject: Option<&str>, steps: &str) -> String {
    let subject = subject
        .map(|s| format!("      subject: \"{s}\"\n"))
        .unwrap_or_default();
    let steps = if steps.is_empty() {
        String::new()
    } else {
        format!("  steps:\n{steps}")
    };
    format!(
        r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata:
  name: {name}
spec:
  source:
    jetstream:
      stream: {source}
{steps}  sink:
    jetstream:
      stream: {sink}
{subject}  errors:
    policy: Dlq
    deadLetterSubject: dlq.{name}
  checkpoint:
    interval: 300ms
"#
    )
}

/// Waits until `done` holds, failing after 60 s with `what`.
async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    mut done: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(Instant::now() < deadline, "{what} never happened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A step that takes each output's subject from the payload's `to`: what the routing checks
/// before start cannot judge, so the sink must.
const TO_PAYLOAD_SUBJECT: &str = "    - setSubject: \"{{payload.to}}\"\n";

/// The dead letters' kinds and errors.
fn kinds(dead: &[SinkRecord]) -> Vec<String> {
    dead.iter()
        .map(|d| header(d, "Jetflow-Error-Kind"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_routed_into_the_source_stream_are_refused_not_written_back() {
    // A subject taken from the payload names `orders.x`, which the source stream captures:
    // every output would be read again by the pipeline itself. (The default `{{subject}}`
    // without a setSubject step, the same loop from the spec alone, is refused before the
    // worker starts: `routing::the_default_sink_subject_into_another_stream_is_refused_before_a_message_moves`.)
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "ORDERS", &["orders.>"]).await;
    create_stream(&js, "COPY", &["copy.>"]).await;
    create_stream(&js, "dlq", &["dlq.>"]).await;
    let payloads: Vec<Bytes> = (0..10)
        .map(|i| Bytes::from(format!(r#"{{"to":"orders.x","i":{i}}}"#)))
        .collect();
    let seqs = publish_all(&js, "orders.x", &payloads).await;
    let name = "loop";
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let path = write_manifest(
        dir.path(),
        &manifest(name, "ORDERS", "COPY", None, TO_PAYLOAD_SUBJECT),
    );
    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    // Until every message is set aside, or the source stream grows (a loop).
    wait_until("10 dead letters or a growing source stream", || async {
        stream_len(&js, "dlq").await >= 10 || stream_len(&js, "ORDERS").await > 10
    })
    .await;
    wait_for_positions(&checkpoints, name, &[*seqs.last().unwrap()]).await;
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the worker exited; log:\n{}",
        worker.log_text()
    );
    let refused = worker.metric("jetflow_worker_errors_total", &["kind=\"sink_refused\""]);
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());
    assert_eq!(
        stream_len(&js, "ORDERS").await,
        10,
        "the source stream holds its 10 messages only: no output was written back"
    );
    assert_eq!(stream_len(&js, "COPY").await, 0);
    assert_eq!(refused, 10.0);
    let dead = read_all(&js, "dlq").await;
    assert_eq!(
        dead.iter().map(|d| d.source_seq).collect::<Vec<_>>(),
        seqs,
        "each message dead-lettered once"
    );
    assert!(kinds(&dead).iter().all(|k| k == "wrong_stream"), "{dead:?}");
    let error = header(&dead[0], "Jetflow-Error");
    for part in [
        "\"orders.x\"",
        "stream ORDERS",
        "sink stream COPY",
        "not published",
    ] {
        assert!(error.contains(part), "{part} missing: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_written_back_into_the_source_stream_are_refused_when_read_again() {
    // The sink stream does not exist when the worker starts, so nothing tells it beforehand that
    // `orders.x` (from the payload) is not the sink stream's: the outputs are published, the source stream stores
    // them, and the acks say so. Each is refused (`wrong_stream`, stored there); the copies the
    // pipeline then reads back are refused unpublished, and the source stream stops growing.
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "ORDERS", &["orders.>"]).await;
    create_stream(&js, "dlq", &["dlq.>"]).await;
    let payloads: Vec<Bytes> = (0..10)
        .map(|i| Bytes::from(format!(r#"{{"to":"orders.x","i":{i}}}"#)))
        .collect();
    publish_all(&js, "orders.x", &payloads).await;
    let name = "written-back";
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let path = write_manifest(
        dir.path(),
        &manifest(name, "ORDERS", "COPY", None, TO_PAYLOAD_SUBJECT),
    );
    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    // Settled: every message in the source stream is committed and has its dead letter. While
    // outputs were still written back, the source stream would hold one more than the dead
    // letters (the copy not yet read), or the position would lag its last message.
    let settled = || async {
        let mut stream = js.get_stream("ORDERS").await.unwrap();
        let state = stream.info().await.unwrap().state.clone();
        let (count, last) = (state.messages, state.last_sequence);
        let position = read_checkpoint(&checkpoints, name)
            .splits
            .values()
            .map(|p| p.position)
            .max()
            .unwrap_or(0);
        position == last && stream_len(&js, "dlq").await == count
            || count > 10 * payloads.len() as u64
    };
    wait_until("a settled source stream", settled).await;
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the worker exited; log:\n{}",
        worker.log_text()
    );
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());
    let written_back = stream_len(&js, "ORDERS").await - payloads.len() as u64;
    assert!(
        written_back <= payloads.len() as u64,
        "{written_back} outputs written back into the source stream: more than one per message"
    );
    let dead = read_all(&js, "dlq").await;
    assert_eq!(dead.len() as u64, payloads.len() as u64 + written_back);
    assert!(kinds(&dead).iter().all(|k| k == "wrong_stream"), "{dead:?}");
    let errors: Vec<String> = dead.iter().map(|d| header(d, "Jetflow-Error")).collect();
    let stored = errors
        .iter()
        .filter(|e| e.contains("captured by stream ORDERS, not by the sink stream COPY (the output was stored there)"))
        .count() as u64;
    assert_eq!(stored, written_back, "{errors:?}");
    assert!(
        errors.iter().any(|e| e.contains("(not published)")),
        "the copies read back are refused unpublished: {errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_from_another_stream_is_refused_as_wrong_stream_and_not_published_again() {
    // The sink stream's subjects change while the worker runs, and another stream now captures
    // the outputs' subjects: the worker learns of it from the ack of the first such output.
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "in", &["in.>"]).await;
    create_stream(&js, "out", &["out.>"]).await;
    create_stream(&js, "dlq", &["dlq.>"]).await;
    let name = "moved";
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let text = manifest(name, "in", "out", Some("out.{{token(2)}}"), "");
    let path = write_manifest(dir.path(), &text);
    let first = publish_all(&js, "in.a", &[Bytes::from_static(b"1")]).await;
    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    wait_for_positions(&checkpoints, name, &first).await;
    assert_eq!(stream_len(&js, "out").await, 1);

    let mut config = js
        .get_stream("out")
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    config.subjects = vec!["moved.>".to_owned()];
    js.update_stream(config)
        .await
        .expect("move the sink stream");
    create_stream(&js, "other", &["out.>"]).await;
    let payloads: Vec<Bytes> = (2..6).map(|i| Bytes::from(format!("{i}"))).collect();
    let seqs = publish_all(&js, "in.b", &payloads).await;
    wait_for_positions(&checkpoints, name, &[*seqs.last().unwrap()]).await;
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the worker exited; log:\n{}",
        worker.log_text()
    );
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());
    let dead = read_all(&js, "dlq").await;
    // Outputs refused by their ack and those refused before publishing (once the sink stream's
    // new subjects were read) reach the dead letters in the order their refusals were found.
    let mut dead_seqs: Vec<u64> = dead.iter().map(|d| d.source_seq).collect();
    dead_seqs.sort_unstable();
    assert_eq!(
        dead_seqs, seqs,
        "every message after the change dead-lettered once"
    );
    assert!(kinds(&dead).iter().all(|k| k == "wrong_stream"), "{dead:?}");
    let errors: Vec<String> = dead.iter().map(|d| header(d, "Jetflow-Error")).collect();
    assert!(
        errors.iter().any(|e| e.contains(
            "captured by stream other, not by the sink stream out (the output was stored there)"
        )),
        "{errors:?}"
    );
    // Outputs published before the first ack came back are stored in the other stream (they
    // cannot be unstored); none is published again, and none after the worker learnt of it.
    let stored = stream_len(&js, "other").await;
    assert!(
        (1..=payloads.len() as u64).contains(&stored),
        "{stored} outputs in the other stream"
    );
    assert_eq!(stream_len(&js, "out").await, 1);
}

/// A pipeline routing by a payload field into a sink stream on `out.eu.>`.
fn routed(name: &str) -> String {
    manifest(
        name,
        "in",
        "out",
        Some("{{subject}}"),
        "    - setSubject: \"out.{{payload.r}}.x\"\n",
    )
}

/// Runs `text` over `payloads` (published on `in.data`) with the sink stream `out` on
/// `sink_subjects` until every message is committed; returns the sink's and the dead-letter
/// stream's messages, the source sequences, and how many messages the sink refused
/// (`jetflow_worker_errors_total{kind="sink_refused"}`).
async fn run_to_end(
    server: &NatsServer,
    name: &str,
    text: &str,
    sink: impl FnOnce(&mut stream::Config),
    payloads: &[Bytes],
) -> (Vec<SinkRecord>, Vec<SinkRecord>, Vec<u64>, f64) {
    let js = server.jetstream().await;
    create_stream(&js, "in", &["in.>"]).await;
    create_stream(&js, "dlq", &["dlq.>"]).await;
    let mut config = stream::Config {
        name: "out".to_owned(),
        subjects: vec!["out.>".to_owned()],
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    sink(&mut config);
    js.create_stream(config).await.expect("sink stream");
    let seqs = publish_all(&js, "in.data", payloads).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let path = write_manifest(dir.path(), text);
    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    let end = *seqs.last().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let committed = read_checkpoint(&checkpoints, name)
            .splits
            .values()
            .any(|p| p.position == end);
        if committed {
            break;
        }
        if let Some(status) = worker.child.try_wait().unwrap() {
            panic!("the worker exited: {status}; log:\n{}", worker.log_text());
        }
        assert!(
            Instant::now() < deadline,
            "message {end} never committed; log:\n{}",
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = worker.metric("jetflow_worker_errors_total", &["kind=\"sink_refused\""]);
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());
    let (out, dead) = (read_all(&js, "out").await, read_all(&js, "dlq").await);
    (out, dead, seqs, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_no_stream_captures_is_dead_lettered_as_no_stream_and_the_worker_goes_on() {
    let server = NatsServer::start();
    let payloads: Vec<Bytes> = ["eu", "us", "eu"]
        .iter()
        .map(|r| Bytes::from(format!(r#"{{"r":"{r}"}}"#)))
        .collect();
    let (out, dead, seqs, _) = run_to_end(
        &server,
        "nostream",
        &routed("nostream"),
        |c| c.subjects = vec!["out.eu.>".to_owned()],
        &payloads,
    )
    .await;
    assert_eq!(
        out.iter().map(|r| r.source_seq).collect::<Vec<_>>(),
        [seqs[0], seqs[2]]
    );
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].source_seq, seqs[1]);
    assert_eq!(header(&dead[0], "Jetflow-Error-Kind"), "no_stream");
    let error = header(&dead[0], "Jetflow-Error");
    assert!(
        error.contains("no stream captures the output subject \"out.us.x\""),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_responders_for_a_subject_the_sink_stream_stopped_capturing_is_no_stream() {
    // The sink stream captures `out.>` when the worker starts and `out.eu.>` once the message
    // for `us` comes: the publish finds no stream, and the worker reads the sink stream again.
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "in", &["in.>"]).await;
    create_stream(&js, "out", &["out.>"]).await;
    create_stream(&js, "dlq", &["dlq.>"]).await;
    let name = "narrowed";
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let path = write_manifest(dir.path(), &routed(name));
    let first = publish_all(&js, "in.data", &[Bytes::from_static(br#"{"r":"eu"}"#)]).await;
    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    wait_for_positions(&checkpoints, name, &first).await;
    let mut config = js
        .get_stream("out")
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    config.subjects = vec!["out.eu.>".to_owned()];
    js.update_stream(config)
        .await
        .expect("narrow the sink stream");
    let seqs = publish_all(
        &js,
        "in.data",
        &[
            Bytes::from_static(br#"{"r":"us"}"#),
            Bytes::from_static(br#"{"r":"eu"}"#),
        ],
    )
    .await;
    wait_for_positions(&checkpoints, name, &[seqs[1]]).await;
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the worker exited; log:\n{}",
        worker.log_text()
    );
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());
    let dead = read_all(&js, "dlq").await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].source_seq, seqs[0]);
    assert_eq!(header(&dead[0], "Jetflow-Error-Kind"), "no_stream");
    assert!(
        header(&dead[0], "Jetflow-Error").contains("\"out.us.x\""),
        "{:?}",
        dead[0].headers
    );
    assert_eq!(stream_len(&js, "out").await, 2);
}

/// Payloads whose `r` field renders subjects that cannot be published on, between good ones.
fn hostile_subjects() -> (Vec<Bytes>, Vec<usize>) {
    let long = "x".repeat(6_000);
    let payloads = [
        "eu".to_owned(),
        long,
        "eu".to_owned(),
        "a\\u0001b".to_owned(),
        "a\\u0000b".to_owned(),
        "eu".to_owned(),
    ];
    let payloads = payloads
        .iter()
        .map(|r| Bytes::from(format!(r#"{{"r":"{r}"}}"#)))
        .collect();
    (payloads, vec![1, 3, 4])
}

fn assert_invalid_subjects_dead_lettered(
    out: &[SinkRecord],
    dead: &[SinkRecord],
    seqs: &[u64],
    bad: &[usize],
) {
    let good: Vec<u64> = (0..seqs.len())
        .filter(|i| !bad.contains(i))
        .map(|i| seqs[i])
        .collect();
    assert_eq!(out.iter().map(|r| r.source_seq).collect::<Vec<_>>(), good);
    assert_eq!(
        dead.iter().map(|d| d.source_seq).collect::<Vec<_>>(),
        bad.iter().map(|i| seqs[*i]).collect::<Vec<_>>()
    );
    assert!(
        kinds(dead).iter().all(|k| k == "invalid_subject"),
        "{dead:?}"
    );
    let long = header(&dead[0], "Jetflow-Error");
    assert!(
        long.contains(" bytes long, over the limit of 3840 bytes"),
        "{long}"
    );
    assert!(
        long.len() < 1_000,
        "the error quotes the subject shortened: {long}"
    );
    assert!(
        header(&dead[1], "Jetflow-Error").contains("contains the character '\\u{1}'"),
        "{:?}",
        dead[1].headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subjects_longer_than_the_control_line_or_with_control_characters_are_dead_lettered() {
    let server = NatsServer::start();
    let (payloads, bad) = hostile_subjects();
    let (out, dead, seqs, _) =
        run_to_end(&server, "hostile", &routed("hostile"), |_| {}, &payloads).await;
    assert_invalid_subjects_dead_lettered(&out, &dead, &seqs, &bad);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_sink_dead_letters_subjects_it_cannot_publish_on() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "capture", &["notify.>"]).await;
    let (payloads, bad) = hostile_subjects();
    let text = routed("hostile-core").replace(
        "  sink:\n    jetstream:\n      stream: out\n      subject: \"{{subject}}\"\n",
        "  sink:\n    core:\n      subject: \"notify.{{subject}}\"\n",
    );
    assert!(text.contains("core:"), "{text}");
    let (_, dead, seqs, _) = run_to_end(&server, "hostile-core", &text, |_| {}, &payloads).await;
    let out = read_all(&js, "capture").await;
    assert_invalid_subjects_dead_lettered(&out, &dead, &seqs, &bad);
}

/// A fan-out (`map: .items[]`) whose items set the subject.
fn fan_out(name: &str, map: &str) -> String {
    manifest(
        name,
        "in",
        "out",
        Some("{{subject}}"),
        &format!("    - map: '{map}'\n    - setSubject: \"out.{{{{payload.r}}}}.x\"\n"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_with_one_output_no_stream_captures_fails_whole_before_any_is_published() {
    let server = NatsServer::start();
    let payloads: Vec<Bytes> = [
        r#"{"items":[{"r":"eu"},{"r":"eu"}]}"#,
        r#"{"items":[{"r":"eu"},{"r":"us"},{"r":"eu"}]}"#,
        r#"{"items":[{"r":"eu"}]}"#,
    ]
    .iter()
    .map(|p| Bytes::from_static(p.as_bytes()))
    .collect();
    let (out, dead, seqs, _) = run_to_end(
        &server,
        "fanout-route",
        &fan_out("fanout-route", ".items[]"),
        |c| c.subjects = vec!["out.eu.>".to_owned()],
        &payloads,
    )
    .await;
    assert_eq!(
        out.iter().map(|r| r.source_seq).collect::<Vec<_>>(),
        [seqs[0], seqs[0], seqs[2]],
        "no output of the refused message"
    );
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].source_seq, seqs[1]);
    assert_eq!(
        dead[0].payload, payloads[1],
        "the source message, untouched"
    );
    assert_eq!(header(&dead[0], "Jetflow-Error-Kind"), "no_stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_with_one_output_over_max_payload_fails_whole_before_any_is_published() {
    // The second item's output doubles it past the server's max_payload.
    let server = NatsServer::start_with("max_payload: 2048\n");
    let big = "x".repeat(1_200);
    let payloads: Vec<Bytes> = vec![
        Bytes::from_static(br#"{"items":["a","b"]}"#),
        Bytes::from(format!(r#"{{"items":["a","{big}","c"]}}"#)),
        Bytes::from_static(br#"{"items":["d"]}"#),
    ];
    let (out, dead, seqs, _) = run_to_end(
        &server,
        "fanout-size",
        &fan_out("fanout-size", ".items[] | {r: \"eu\", a: ., b: .}"),
        |_| {},
        &payloads,
    )
    .await;
    assert_eq!(
        out.iter().map(|r| r.source_seq).collect::<Vec<_>>(),
        [seqs[0], seqs[0], seqs[2]],
        "no output of the refused message"
    );
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].source_seq, seqs[1]);
    assert_eq!(header(&dead[0], "Jetflow-Error-Kind"), "max_payload");
    let error = header(&dead[0], "Jetflow-Error");
    assert!(
        error.contains("output 1 of the message is") && error.contains("max_payload of 2048"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_with_one_output_over_the_sink_streams_max_msg_size_fails_whole() {
    let server = NatsServer::start();
    let big = "x".repeat(600);
    let payloads: Vec<Bytes> = vec![
        Bytes::from_static(br#"{"items":["a","b"]}"#),
        Bytes::from(format!(r#"{{"items":["a","{big}","c"]}}"#)),
        Bytes::from_static(br#"{"items":["d"]}"#),
    ];
    let (out, dead, seqs, _) = run_to_end(
        &server,
        "fanout-msgsize",
        &fan_out("fanout-msgsize", ".items[] | {r: \"eu\", a: ., b: .}"),
        |c| c.max_message_size = 1_024,
        &payloads,
    )
    .await;
    assert_eq!(
        out.iter().map(|r| r.source_seq).collect::<Vec<_>>(),
        [seqs[0], seqs[0], seqs[2]],
        "no output of the refused message"
    );
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].source_seq, seqs[1]);
    assert_eq!(header(&dead[0], "Jetflow-Error-Kind"), "message_too_large");
    let error = header(&dead[0], "Jetflow-Error");
    assert!(
        error.contains("output 1 of the message is")
            && error.contains("over the sink stream's maxMsgSize of 1024 bytes"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_the_full_sink_stream_refuses_midway_is_dead_lettered_once() {
    // Only the server can tell that its stream is full: the outputs it stored stay, the message
    // is dead-lettered once (not once per refused output), and what follows flows.
    let server = NatsServer::start();
    let payloads: Vec<Bytes> = vec![Bytes::from_static(
        br#"{"items":[{"r":"eu"},{"r":"eu"},{"r":"eu"},{"r":"eu"}]}"#,
    )];
    let (out, dead, seqs, refused) = run_to_end(
        &server,
        "fanout-full",
        &fan_out("fanout-full", ".items[]"),
        |c| {
            c.max_messages = 2;
            c.discard = stream::DiscardPolicy::New;
        },
        &payloads,
    )
    .await;
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].source_seq, seqs[0]);
    assert_eq!(header(&dead[0], "Jetflow-Error-Kind"), "stream_full");
    assert_eq!(
        refused, 1.0,
        "one outcome for the message, not one per refused output"
    );
}

/// The worker's peak resident memory (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a number of kB");
    kib * 1024
}

/// The worker's peak memory may not exceed this in the fan-out test: within its byte budget a
/// debug build peaks near 50 MiB there; holding the outputs of a whole batch of messages at
/// once (what an unbounded fan-out does) takes over 160 MiB.
const FAN_OUT_PEAK_RSS: u64 = 100 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_of_10000_outputs_per_message_is_delivered_once_within_the_memory_budget() {
    const MESSAGES: usize = 20;
    const ITEMS: usize = 10_000;
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "in", &["in.>"]).await;
    create_stream(&js, "out", &["out.>"]).await;
    create_stream(&js, "dlq", &["dlq.>"]).await;
    let items: Vec<String> = (0..ITEMS).map(|i| i.to_string()).collect();
    let payload = Bytes::from(format!(
        r#"{{"pad":"{}","items":[{}]}}"#,
        "p".repeat(64),
        items.join(",")
    ));
    let payloads = vec![payload; MESSAGES];
    let seqs = publish_all(&js, "in.data", &payloads).await;
    let name = "fanout-budget";
    let text = manifest(
        name,
        "in",
        "out",
        Some("out.{{token(2)}}"),
        "    - map: '.pad as $p | .items[] | {i: ., p: $p}'\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let path = write_manifest(dir.path(), &text);
    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    let end = *seqs.last().unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    while !read_checkpoint(&checkpoints, name)
        .splits
        .values()
        .any(|p| p.position == end)
    {
        if let Some(status) = worker.child.try_wait().unwrap() {
            panic!("the worker exited: {status}; log:\n{}", worker.log_text());
        }
        assert!(Instant::now() < deadline, "message {end} never committed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let peak = peak_rss(worker.child.id());
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());
    eprintln!("worker peak RSS: {} MiB", peak >> 20);

    let out = read_all(&js, "out").await;
    assert_eq!(out.len(), MESSAGES * ITEMS, "every output, once");
    let ids: std::collections::BTreeSet<&str> = out.iter().map(|r| r.msg_id.as_str()).collect();
    assert_eq!(ids.len(), out.len(), "no output twice");
    let mut per_message: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
    for r in &out {
        let value: serde_json::Value = serde_json::from_slice(&r.payload).expect("JSON");
        per_message
            .entry(r.source_seq)
            .or_default()
            .push(value["i"].as_u64().expect("i"));
    }
    assert_eq!(per_message.keys().copied().collect::<Vec<_>>(), seqs);
    for (seq, items) in &per_message {
        assert_eq!(
            *items,
            (0..ITEMS as u64).collect::<Vec<_>>(),
            "message {seq}: every item once, in order"
        );
    }
    assert_eq!(stream_len(&js, "dlq").await, 0);
    assert!(
        peak <= FAN_OUT_PEAK_RSS,
        "the worker's memory peaked at {} MiB, over {} MiB",
        peak >> 20,
        FAN_OUT_PEAK_RSS >> 20
    );
}
