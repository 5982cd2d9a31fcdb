//! Where the outputs go, checked before a message moves: a sink subject that writes the
//! outputs back into the source stream (the default `{{subject}}` from stream ORDERS into
//! stream COPY) is refused by `jetflow-worker check` and by `run`, with exit code 2 and a
//! message naming the field, and the source stream does not grow.

use std::process::Output;
use std::time::Duration;

use crate::common::*;
use jetflow_testsupport::NatsServer;

const STREAMS: &str = r#"
apiVersion: jetflow.io/v1alpha1
kind: Stream
metadata: {name: orders}
spec: {name: ORDERS, subjects: ["orders.>"]}
---
apiVersion: jetflow.io/v1alpha1
kind: Stream
metadata: {name: copy}
spec: {name: COPY, subjects: ["copy.>"]}
"#;

fn pipeline(name: &str, steps: &str, sink_subject: Option<&str>) -> String {
    let subject = sink_subject
        .map(|s| format!("\n      subject: \"{s}\""))
        .unwrap_or_default();
    format!(
        r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata: {{name: {name}}}
spec:
  source:
    jetstream: {{stream: ORDERS}}
  steps: {steps}
  sink:
    jetstream:
      stream: COPY{subject}
  checkpoint: {{interval: 300ms}}
"#
    )
}

async fn setup(server: &NatsServer) -> async_nats::jetstream::Context {
    let js = server.jetstream().await;
    create_stream(&js, "ORDERS", &["orders.>"]).await;
    create_stream(&js, "COPY", &["copy.>"]).await;
    publish(&js, &["orders.eu.x", "orders.us.x"], 10, 16).await;
    js
}

fn check(path: &std::path::Path) -> Output {
    std::process::Command::new(worker_bin())
        .args(["check", "-f"])
        .arg(path)
        .output()
        .unwrap()
}

/// Runs the worker on `manifest` and expects it to refuse it with exit code 2 before a message
/// moves; returns its log.
async fn refused_by_run(
    server: &NatsServer,
    js: &async_nats::jetstream::Context,
    manifest: &std::path::Path,
) -> String {
    let dir = manifest.parent().unwrap();
    let mut worker = Worker::start(manifest, &server.url(), &dir.join("checkpoints"), &[]);
    let status = worker.wait(Duration::from_secs(30));
    let log = worker.plain_log();
    assert_eq!(status.code(), Some(2), "{log}");
    assert_eq!(stream_len(js, "ORDERS").await, 10, "the source stream grew");
    assert_eq!(stream_len(js, "COPY").await, 0);
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_sink_subject_into_another_stream_is_refused_before_a_message_moves() {
    let server = NatsServer::start();
    let js = setup(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_manifest(dir.path(), &pipeline("loop", "[]", None));

    let checked = check(&path);
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert_eq!(checked.status.code(), Some(2), "{stderr}");
    for part in [
        "spec.sink.jetstream.subject",
        "{{subject}}",
        "source stream ORDERS",
        "sink stream COPY",
    ] {
        assert!(
            stderr.contains(part),
            "check does not say {part:?}: {stderr}"
        );
    }

    let log = refused_by_run(&server, &js, &path).await;
    assert!(log.contains("spec.sink.jetstream.subject"), "{log}");
}

/// `setSubject: "{{subject}}"` passes the checks of the spec alone; the streams' subjects
/// show the outputs land in ORDERS, not COPY: from the manifest's Stream documents in `check`,
/// from NATS in `run`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_only_the_source_stream_captures_is_refused_against_the_streams() {
    let server = NatsServer::start();
    let js = setup(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let steps = r#"[{setSubject: "{{subject}}"}]"#;
    let alone = write_manifest(dir.path(), &pipeline("echo", steps, None));
    let checked = check(&alone);
    assert_eq!(
        checked.status.code(),
        Some(0),
        "without the streams nothing is certain: {}",
        String::from_utf8_lossy(&checked.stderr)
    );

    let with_streams = dir.path().join("with-streams.yaml");
    std::fs::write(
        &with_streams,
        format!("{STREAMS}---{}", pipeline("echo", steps, None)),
    )
    .unwrap();
    let checked = check(&with_streams);
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert_eq!(checked.status.code(), Some(2), "{stderr}");
    let expected = [
        "spec.sink.jetstream.subject",
        "outputs go to orders.>",
        "spec.steps[0].setSubject",
        "sink stream COPY (subjects copy.>) does not capture",
        "source stream ORDERS captures them",
    ];
    for part in expected {
        assert!(
            stderr.contains(part),
            "check does not say {part:?}: {stderr}"
        );
    }

    let log = refused_by_run(&server, &js, &alone).await;
    for part in expected {
        assert!(log.contains(part), "run does not say {part:?}: {log}");
    }
}

/// The same streams with a sink subject that COPY captures: checked and run, the ten
/// messages arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_subject_the_sink_stream_captures_passes_and_runs() {
    let server = NatsServer::start();
    let js = setup(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.yaml");
    std::fs::write(
        &path,
        format!(
            "{STREAMS}---{}",
            pipeline("ok", "[]", Some("copy.{{subject}}"))
        ),
    )
    .unwrap();
    let checked = check(&path);
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert_eq!(checked.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("checked against the subjects of the manifest's Stream ORDERS and COPY"),
        "{stdout}"
    );
    let mut worker = Worker::start(&path, &server.url(), &dir.path().join("checkpoints"), &[]);
    wait_for_len(&js, "COPY", 10, Duration::from_secs(30)).await;
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{}", worker.plain_log());
    assert_eq!(stream_len(&js, "ORDERS").await, 10);
}

/// Misspelt fields (`filterSubject` for `filterSubjects`, `checkpiont`) are refused as
/// `kubectl apply --validate=strict` refuses them, each named with the nearest known field,
/// rather than ignored (which would read the whole stream with the default checkpoint).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misspelt_fields_are_refused_by_check_and_run() {
    let server = NatsServer::start();
    let js = setup(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_manifest(
        dir.path(),
        r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata: {name: typo}
spec:
  source:
    jetstream:
      stream: ORDERS
      filterSubject: "orders.eu.>"
  sink:
    jetstream: {stream: COPY, subject: "copy.{{subject}}"}
  checkpiont:
    interval: 1s
"#,
    );
    let expected = [
        "spec.source.jetstream.filterSubject: unknown field; did you mean filterSubjects?",
        "spec.checkpiont: unknown field; did you mean checkpoint?",
    ];
    let checked = check(&path);
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert_eq!(checked.status.code(), Some(2), "{stderr}");
    for part in expected {
        assert!(
            stderr.contains(part),
            "check does not say {part:?}: {stderr}"
        );
    }
    let log = refused_by_run(&server, &js, &path).await;
    for part in expected {
        assert!(log.contains(part), "run does not say {part:?}: {log}");
    }
}

/// `--nats` and `connection.url` take a comma-separated list, as the NATS tools do: with an
/// unreachable address first, the worker connects to the next and moves the messages. A
/// malformed entry is refused naming it, and a password in the list is never shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comma_separated_server_list_connects_and_a_malformed_entry_is_named() {
    let server = NatsServer::start();
    let js = setup(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_manifest(
        dir.path(),
        &pipeline("list", "[]", Some("copy.{{subject}}")),
    );
    let unreachable = format!("nats://127.0.0.1:{}", jetflow_testsupport::free_port());
    let list = format!("{unreachable}, {}", server.url());
    let mut worker = Worker::start(&path, &list, &dir.path().join("checkpoints"), &[]);
    wait_for_len(&js, "COPY", 10, Duration::from_secs(60)).await;
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{}", worker.plain_log());

    let bad = format!("{},nats://alice:s3cret@127.0.0.1:42x2", server.url());
    let mut worker = Worker::start(&path, &bad, &dir.path().join("bad-checkpoints"), &[]);
    let status = worker.wait(Duration::from_secs(30));
    let log = worker.plain_log();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains("connection.url: entry 2 of 2 (nats://alice:***@127.0.0.1:42x2)"),
        "{log}"
    );
    assert!(!log.contains("s3cret"), "the password is shown: {log}");
    assert_eq!(stream_len(&js, "COPY").await, 10);
}
