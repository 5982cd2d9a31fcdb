//! The worker as a process against a real nats-server: crashes, SIGTERM, a consumer deleted
//! behind its back, an invalid manifest, the HTTP endpoints.

use std::time::{Duration, Instant};

use crate::common::*;
use async_nats::jetstream::consumer::DeliverPolicy;
use jetflow_testsupport::{NatsServer, http};

const SUBJECTS: [&str; 3] = ["orders.eu", "orders.us", "orders.asia"];

fn manifest(name: &str, interval: &str) -> String {
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
      filterSubjects: ["orders.eu", "orders.us", "orders.asia"]
  sink:
    jetstream:
      stream: copy
      subject: "copy.{{{{subject}}}}"
  checkpoint:
    interval: {interval}
"#
    )
}

async fn setup(server: &NatsServer) -> async_nats::jetstream::Context {
    let js = server.jetstream().await;
    create_stream(&js, "orders", &["orders.>"]).await;
    create_stream(&js, "copy", &["copy.>"]).await;
    js
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_resumes_without_duplicates() {
    let server = NatsServer::start();
    let js = setup(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let path = write_manifest(dir.path(), &manifest("crashy", "300ms"));
    const TOTAL: usize = 200_000;

    // Publish while the worker runs and dies, so crashes hit reading, publishing and
    // checkpointing alike.
    let publisher = {
        let js = js.clone();
        tokio::spawn(async move { publish(&js, &SUBJECTS, TOTAL, 64).await })
    };
    let mut rng = Rng::from_clock();
    let mut kills = 0;
    while kills < 6 {
        let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
        let delay = 400 + rng.below(1600);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        assert!(
            worker.child.try_wait().unwrap().is_none(),
            "worker exited early; log:\n{}",
            worker.log_text()
        );
        worker.kill();
        kills += 1;
        let done = stream_len(&js, "copy").await;
        eprintln!("kill {kills} after {delay} ms: {done} outputs so far");
    }
    let published = publisher.await.unwrap();
    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    wait_for_len(&js, "copy", TOTAL as u64, Duration::from_secs(120)).await;
    // The sink may have been complete before this worker started (the outputs of a killed
    // run after its last checkpoint): it catches up by replaying them, which the sink drops as
    // duplicates, and commits the source's end.
    let lasts: Vec<u64> = SUBJECTS
        .iter()
        .map(|s| *published[*s].last().unwrap())
        .collect();
    wait_for_positions(&checkpoints, "crashy", &lasts).await;
    let status = worker.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "exit {status}; log:\n{}",
        worker.log_text()
    );

    let records = read_all(&js, "copy").await;
    assert_exactly_once(&records, 1..=TOTAL as u64);
    // Within each split the outputs of a run keep source order; across crashes a replay may
    // repeat a stretch that the duplicate window absorbed, so check that the sink's order per
    // source subject matches the source's.
    for subject in SUBJECTS {
        let out: Vec<u64> = records
            .iter()
            .filter(|r| r.source_subject == subject)
            .map(|r| r.source_seq)
            .collect();
        assert_eq!(out, published[subject], "order of {subject}");
    }
    let checkpoint = read_checkpoint(&checkpoints, "crashy");
    for subject in SUBJECTS {
        assert_eq!(
            checkpoint.splits[subject].position,
            *published[subject].last().unwrap(),
            "final position of {subject}"
        );
        assert_eq!(
            checkpoint.splits[subject].owner.as_deref(),
            Some("test-worker")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_takes_a_final_checkpoint_and_restart_redelivers_nothing() {
    let server = NatsServer::start();
    let js = setup(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    // A long interval: only the final checkpoint can have committed the last messages.
    let path = write_manifest(dir.path(), &manifest("graceful", "1h"));
    let published = publish(&js, &SUBJECTS, 30_000, 128).await;

    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    worker.wait_ready(Duration::from_secs(60)).await;
    wait_for_len(&js, "copy", 30_000, Duration::from_secs(60)).await;
    assert_eq!(read_checkpoint(&checkpoints, "graceful").id, 0);
    let asked = Instant::now();
    let status = worker.terminate(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "log:\n{}", worker.log_text());
    eprintln!("SIGTERM to exit: {:?}", asked.elapsed());

    let checkpoint = read_checkpoint(&checkpoints, "graceful");
    let stream = js.get_stream("orders").await.unwrap();
    for subject in SUBJECTS {
        let last = *published[subject].last().unwrap();
        assert_eq!(checkpoint.splits[subject].position, last, "{subject}");
        // The final checkpoint was acknowledged: the consumer's ack floor is the position.
        let name = jetflow_crds::split::consumer_name("default", "graceful", subject);
        let info = stream.consumer_info(&name).await.unwrap();
        assert_eq!(info.ack_floor.stream_sequence, last, "{subject} ack floor");
    }

    // Restarted and ready (reading every split), it is given one new message: the consumer
    // delivers it after anything it would redeliver, so once it reached the sink, a
    // redelivery would have been taken in before it.
    let mut again = Worker::start(&path, &server.url(), &checkpoints, &[]);
    again.wait_ready(Duration::from_secs(60)).await;
    let new = publish(&js, &SUBJECTS[..1], 1, 128).await[SUBJECTS[0]][0];
    wait_for_len(&js, "copy", 30_001, Duration::from_secs(60)).await;
    let taken = again.metric("jetflow_worker_messages_total", &["direction=\"in\""]);
    assert_eq!(taken, 1.0, "the restart took in only the new message");
    let status = again.terminate(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "log:\n{}", again.log_text());
    assert_eq!(stream_len(&js, "copy").await, 30_001);
    let after = read_checkpoint(&checkpoints, "graceful");
    for subject in SUBJECTS {
        let expected = if subject == SUBJECTS[0] {
            new
        } else {
            checkpoint.splits[subject].position
        };
        assert_eq!(after.splits[subject].position, expected, "{subject}");
    }
    let records = read_all(&js, "copy").await;
    assert_exactly_once(&records, 1..=30_001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_consumer_is_recreated_at_the_checkpoint() {
    let server = NatsServer::start();
    let js = setup(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let path = write_manifest(dir.path(), &manifest("phoenix", "200ms"));
    publish(&js, &SUBJECTS, 9_000, 64).await;

    let mut worker = Worker::start(&path, &server.url(), &checkpoints, &[]);
    wait_for_len(&js, "copy", 9_000, Duration::from_secs(60)).await;
    // Wait until the checkpoint covers everything read.
    let deadline = Instant::now() + Duration::from_secs(10);
    let position = loop {
        let c = read_checkpoint(&checkpoints, "phoenix");
        if let Some(p) = c.splits.get("orders.eu")
            && p.position == 9_000 - 2
        {
            break p.position;
        }
        assert!(Instant::now() < deadline, "checkpoint not taken: {c:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let stream = js.get_stream("orders").await.unwrap();
    let name = jetflow_crds::split::consumer_name("default", "phoenix", "orders.eu");
    stream.delete_consumer(&name).await.unwrap();
    publish(&js, &SUBJECTS, 3_000, 64).await;
    wait_for_len(&js, "copy", 12_000, Duration::from_secs(60)).await;

    let info = stream.consumer_info(&name).await.unwrap();
    assert_eq!(
        info.config.deliver_policy,
        DeliverPolicy::ByStartSequence {
            start_sequence: position + 1
        },
        "recreated at the checkpointed position + 1"
    );
    let lost = worker.metric("jetflow_worker_errors_total", &["kind=\"consumer_lost\""]);
    assert!(lost >= 1.0, "the lost consumer is counted");
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "log:\n{}", worker.log_text());
    let records = read_all(&js, "copy").await;
    assert_exactly_once(&records, 1..=12_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_work_queue_or_interest_source_is_refused_before_a_consumer_touches_it() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "copy", &["copy.>"]).await;
    for retention in [
        async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
        async_nats::jetstream::stream::RetentionPolicy::Interest,
    ] {
        let _ = js.delete_stream("orders").await;
        let mut stream = js
            .create_stream(async_nats::jetstream::stream::Config {
                name: "orders".into(),
                subjects: vec!["orders.>".into()],
                retention,
                ..Default::default()
            })
            .await
            .unwrap();
        // An Interest stream keeps only what a consumer wants: give it one that holds all.
        stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                durable_name: Some("keeper".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        for i in 0..10 {
            js.publish(format!("orders.eu.{i}"), "x".into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let path = write_manifest(dir.path(), &manifest("queue", "1s"));
        let mut worker = Worker::start(&path, &server.url(), &dir.path().join("checkpoints"), &[]);
        let status = worker.wait(Duration::from_secs(20));
        let log = worker.log_text();
        assert_eq!(status.code(), Some(2), "{retention:?}: {log}");
        let name = if retention == async_nats::jetstream::stream::RetentionPolicy::WorkQueue {
            "WorkQueue"
        } else {
            "Interest"
        };
        assert!(
            log.contains(&format!(
                "spec.source.jetstream.stream: stream orders has {name} retention"
            )),
            "{log}"
        );
        let info = stream.info().await.unwrap();
        assert_eq!(info.state.messages, 10, "{name}: no message removed");
        assert_eq!(info.state.consumer_count, 1, "{name}: no consumer made");
    }
}

#[tokio::test]
async fn invalid_pipeline_exits_with_code_2_before_any_message_moves() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_manifest(
        dir.path(),
        r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata: {name: broken}
spec:
  source: {jetstream: {stream: orders, filterSubjects: ["orders..eu"]}}
  sink: {jetstream: {stream: copy, subject: "copy.{{subjct}}"}}
"#,
    );
    let mut worker = Worker::start(
        &path,
        "nats://127.0.0.1:1",
        &dir.path().join("checkpoints"),
        &[],
    );
    let status = worker.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(2));
    let log = worker.log_text();
    assert!(
        log.contains("spec.source.jetstream.filterSubjects[0]"),
        "{log}"
    );
    assert!(log.contains("spec.sink.jetstream.subject"), "{log}");

    let check = std::process::Command::new(worker_bin())
        .args(["check", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(2));
}

/// Two filters that both match `orders.eu.x` would make two splits read, and the sink write,
/// every such message twice under two ids: the worker refuses them before anything moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_filter_subjects_are_refused_before_any_message_moves() {
    let server = NatsServer::start();
    let js = setup(&server).await;
    publish(&js, &["orders.eu.x", "orders.us.x"], 10, 16).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_manifest(
        dir.path(),
        r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata: {name: overlap}
spec:
  source: {jetstream: {stream: orders, filterSubjects: ["orders.>", "orders.eu.>"]}}
  sink: {jetstream: {stream: copy, subject: "copy.{{subject}}"}}
  checkpoint: {interval: 1s}
"#,
    );
    let mut worker = Worker::start(&path, &server.url(), &dir.path().join("checkpoints"), &[]);
    let status = worker.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(2), "{}", worker.log_text());
    let log = worker.log_text();
    for part in [
        "spec.source.jetstream.filterSubjects",
        "orders.>",
        "orders.eu.>",
    ] {
        assert!(log.contains(part), "log does not name {part}: {log}");
    }
    assert_eq!(stream_len(&js, "copy").await, 0);

    let check = std::process::Command::new(worker_bin())
        .args(["check", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_endpoints_report_health_and_split_metrics() {
    let server = NatsServer::start();
    let js = setup(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let path = write_manifest(dir.path(), &manifest("observed", "200ms"));
    publish(&js, &SUBJECTS, 3_000, 100).await;
    let port = jetflow_testsupport::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut worker = Worker::start(
        &path,
        &server.url(),
        &checkpoints,
        &["--metrics-addr", &addr],
    );
    wait_for_len(&js, "copy", 3_000, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;

    assert!(http::get(&addr, "/healthz").is_some_and(|r| r.is_ok()));
    assert!(worker.is_ready());
    let metrics = worker.metrics();
    for line in [
        r#"jetflow_worker_messages_total{direction="in",split="orders.eu"} 1000"#,
        r#"jetflow_worker_messages_total{direction="out",split="orders.eu"} 1000"#,
        r#"jetflow_worker_bytes_total{direction="out",split="orders.us"} 100000"#,
        r#"jetflow_worker_split_lag{split="orders.asia"} 0"#,
        r#"jetflow_worker_split_position{split="orders.asia"} 3000"#,
    ] {
        assert!(metrics.contains(line), "missing {line} in:\n{metrics}");
    }
    assert!(metrics.contains("jetflow_worker_checkpoint_duration_seconds_count"));
    assert!(metrics.contains("jetflow_worker_seconds_since_last_checkpoint"));
    assert!(
        !metrics.contains("jetflow_worker_checkpoint_id 0\n"),
        "{metrics}"
    );
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success());
}

#[tokio::test]
async fn sigterm_while_connecting_exits_cleanly() {
    // A listener that accepts the worker's connection and never answers keeps it connecting.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("nats://{}", silent.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = write_manifest(dir.path(), &manifest("starting", "1s"));
    let mut worker = Worker::start(&path, &url, &dir.path().join("checkpoints"), &[]);
    let (_connection, _) = silent.accept().unwrap();

    let status = worker.terminate(Duration::from_secs(3));
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());
    assert!(
        worker
            .log_text()
            .contains("stopped while connecting to NATS"),
        "{}",
        worker.log_text()
    );
}

/// The runtime runs on one thread per core by default; a worker given one thread for several
/// splits (`--runtime-threads 1`) moves every message exactly once as well, and zero threads
/// is refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_runtime_thread_moves_every_message_of_several_splits_exactly_once() {
    let server = NatsServer::start();
    let js = setup(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let path = write_manifest(dir.path(), &manifest("threads", "200ms"));

    let mut refused = Worker::start(
        &path,
        &server.url(),
        &checkpoints,
        &["--runtime-threads", "0"],
    );
    let status = refused.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(2));
    let log = refused.log_text();
    assert!(log.contains("--runtime-threads"), "{log}");

    const TOTAL: usize = 30_000;
    let mut worker = Worker::start(
        &path,
        &server.url(),
        &checkpoints,
        &["--runtime-threads", "1"],
    );
    let published = publish(&js, &SUBJECTS, TOTAL, 64).await;
    wait_for_len(&js, "copy", TOTAL as u64, Duration::from_secs(60)).await;
    let status = worker.terminate(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "log:\n{}", worker.log_text());
    assert_exactly_once(&read_all(&js, "copy").await, 1..=TOTAL as u64);
    let checkpoint = read_checkpoint(&checkpoints, "threads");
    for subject in SUBJECTS {
        assert_eq!(
            checkpoint.splits[subject].position,
            *published[subject].last().unwrap(),
            "final position of {subject}"
        );
    }
}
