//! Splits that follow the subjects of a stream (`splitBy: Subject`), against a real nats-server
//! and a real worker process: a subject that appears mid-run becomes a split and is processed
//! without a restart; a subject whose messages are purged has its split retired (committed,
//! then stopped) while the others go on.

use std::time::Duration;

use crate::common::*;
use crate::support::*;
use async_nats::jetstream::stream::Stream;
use futures::TryStreamExt;
use jetflow_testsupport::NatsServer;

const MANIFEST: &str = r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata:
  name: follow
spec:
  source:
    jetstream:
      stream: events
      filterSubjects: ["events.>"]
      splitBy: Subject
      discoveryInterval: 300ms
  sink:
    jetstream:
      stream: copy
      subject: "copy.{{subject}}"
  checkpoint:
    interval: 300ms
"#;

async fn wait_for_log(worker: &crate::common::Worker, text: &str) {
    for _ in 0..300 {
        if worker.plain_log().contains(text) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {text:?} in the log:\n{}", worker.plain_log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_subject_is_processed_without_a_restart_and_a_purged_one_is_retired() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "events", &["events.>"]).await;
    create_stream(&js, "copy", &["copy.>"]).await;
    publish(&js, &["events.a", "events.b"], 400, 64).await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), MANIFEST);
    let checkpoints = dir.path().join("checkpoints");
    let addr = free_addr();
    let mut worker = spawn(&manifest, &server.url(), &checkpoints, "w1", &addr, &[]);
    worker.wait_ready(Duration::from_secs(30)).await;
    wait_for_len(&js, "copy", 400, Duration::from_secs(30)).await;
    let split_c = worker.metric("jetflow_worker_messages_total", &["split=\"events.c\""]);
    assert_eq!(split_c, 0.0, "no split for a subject the stream never held");

    // A subject the stream never held before.
    let new = publish(&js, &["events.c"], 300, 64).await;
    wait_for_len(&js, "copy", 700, Duration::from_secs(30)).await;
    let last_c = *new["events.c"].last().unwrap();
    for _ in 0..100 {
        if read_checkpoint(&checkpoints, "follow")
            .splits
            .get("events.c")
            .is_some_and(|p| p.position == last_c)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        read_checkpoint(&checkpoints, "follow").splits["events.c"].position,
        last_c
    );

    // events.a loses all its messages: its split is retired, the others go on.
    let stream: Stream = js.get_stream("events").await.unwrap();
    stream.purge().filter("events.a").await.unwrap();
    // Its consumer goes with it; the others stay.
    let name = |split| jetflow_crds::split::consumer_name("default", "follow", split);
    let mut consumers: Vec<String> = Vec::new();
    for _ in 0..300 {
        consumers = stream.consumer_names().try_collect().await.unwrap();
        if !consumers.contains(&name("events.a")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!consumers.contains(&name("events.a")), "{consumers:?}");
    assert!(consumers.contains(&name("events.b")), "{consumers:?}");
    assert!(consumers.contains(&name("events.c")), "{consumers:?}");
    publish(&js, &["events.b", "events.c"], 200, 64).await;
    wait_for_len(&js, "copy", 900, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());

    let records = read_all(&js, "copy").await;
    assert_exactly_once(&records, 1..=900);
    let checkpoint = read_checkpoint(&checkpoints, "follow");
    assert_eq!(
        checkpoint.splits.keys().collect::<Vec<_>>(),
        ["events.a", "events.b", "events.c"]
    );
    // The retired split kept the position it had reached.
    assert_eq!(checkpoint.splits["events.a"].position, 399);
}

/// Runs `f` on the checkpoint file of `default/<name>` under the store's own lock, so that no
/// commit of the worker lands in between.
fn with_checkpoint_locked(
    checkpoints: &std::path::Path,
    name: &str,
    f: impl FnOnce(&std::path::Path),
) {
    let path = checkpoints.join("default").join(format!("{name}.json"));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.with_extension("json.lock"))
        .unwrap();
    lock.lock().unwrap();
    f(&path);
}

/// A new subject is found while the checkpoint store cannot be read, so the split set change
/// fails; nothing else changes afterwards. Once the store is readable again, the change is
/// applied anyway: the new split starts and its messages reach the sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_split_set_change_is_retried_until_applied() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "events", &["events.>"]).await;
    create_stream(&js, "copy", &["copy.>"]).await;
    publish(&js, &["events.a"], 100, 64).await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), MANIFEST);
    let checkpoints = dir.path().join("checkpoints");
    let addr = free_addr();
    let mut worker = spawn(&manifest, &server.url(), &checkpoints, "w1", &addr, &[]);
    worker.wait_ready(Duration::from_secs(30)).await;
    wait_for_len(&js, "copy", 100, Duration::from_secs(30)).await;
    for _ in 0..100 {
        if read_checkpoint(&checkpoints, "follow")
            .splits
            .get("events.a")
            .is_some_and(|p| p.position == 100)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The store breaks; a subject appears; the change that follows fails.
    let mut saved = Vec::new();
    with_checkpoint_locked(&checkpoints, "follow", |path| {
        saved = std::fs::read(path).unwrap();
        std::fs::write(path, b"not a checkpoint").unwrap();
    });
    publish(&js, &["events.b"], 50, 64).await;
    wait_for_log(&worker, "split set change not applied").await;

    // The store heals; no further change comes, since the subjects stay as they are.
    with_checkpoint_locked(&checkpoints, "follow", |path| {
        std::fs::write(path, &saved).unwrap();
    });
    wait_for_len(&js, "copy", 150, Duration::from_secs(30)).await;
    let split_b = worker.metric(
        "jetflow_worker_messages_total",
        &["split=\"events.b\"", "direction=\"in\""],
    );
    assert_eq!(
        split_b, 50.0,
        "the new subject's split read its messages once"
    );
    assert_eq!(stream_len(&js, "copy").await, 150);
    worker.terminate(Duration::from_secs(20));
}
