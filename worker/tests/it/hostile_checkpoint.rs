//! Checkpoints under hostile conditions, against a real nats-server and real worker processes:
//! a split whose position another owner moved on does not hold the other splits' commits back;
//! a NATS Core source keeps reading while checkpoints fail; messages the source's retention
//! removed before they were read are counted and reported with their range; a killed
//! `streamEnd` run ends where it was meant to; and a resume older than the sink's duplicate
//! window is refused under exactly once, reported under at least once.

use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use jetflow_crds::checkpoint::Checkpoint;
use jetflow_testsupport::NatsServer;
use jetflow_testsupport::http::metric_sum;
use jetflow_worker::checkpoint::FileStore;

use crate::common::*;
use crate::support::*;

/// Waits until `check` holds for the checkpoint of `default/<name>`.
async fn wait_for_checkpoint(
    checkpoints: &Path,
    name: &str,
    worker: &Worker,
    what: &str,
    check: impl Fn(&Checkpoint) -> bool,
) -> Checkpoint {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let checkpoint = read_checkpoint(checkpoints, name);
        if check(&checkpoint) {
            return checkpoint;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {checkpoint:?}\nlog:\n{}",
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the worker's metric `name` with `labels` reaches `at_least`.
async fn wait_for_metric(worker: &Worker, name: &str, labels: &[&str], at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let value = metric_sum(&worker.metrics(), name, labels);
        if value >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{labels:?} is {value}, never {at_least}; log:\n{}",
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Makes the file store refuse every write: its lock file's path is taken by a directory.
/// Returns the directory, to remove when the store may take writes again.
fn break_store(checkpoints: &Path, name: &str) -> std::path::PathBuf {
    let lock = checkpoints
        .join("default")
        .join(format!("{name}.json.lock"));
    let _ = std::fs::remove_file(&lock);
    std::fs::create_dir(&lock).unwrap();
    lock
}

fn jetstream_manifest(name: &str, subjects: &str, interval: &str, extra: &str) -> String {
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
      filterSubjects: {subjects}
  sink:
    jetstream:
      stream: out
      subject: "out.{{{{subject}}}}"
  checkpoint:
    interval: {interval}
{extra}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_another_owner_moved_on_is_stopped_and_the_others_are_still_committed() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "in", &["in.*"]).await;
    create_stream(&js, "out", &["out.>"]).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let path = write_manifest(
        dir.path(),
        &jetstream_manifest("taken", r#"["in.a", "in.b"]"#, "300ms", ""),
    );
    let first = publish(&js, &["in.a", "in.b"], 200, 64).await;
    let addr = free_addr();
    let mut worker = spawn(&path, &server.url(), &checkpoints, "w1", &addr, &[]);
    worker.wait_ready(Duration::from_secs(60)).await;
    let lasts = [
        *first["in.a"].last().unwrap(),
        *first["in.b"].last().unwrap(),
    ];
    wait_for_positions(&checkpoints, "taken", &lasts).await;

    // Another worker, under a newer assignment, commits split in.a past this worker.
    let store = FileStore::new(&checkpoints, "default", "taken");
    let stored = store.load_blocking().unwrap();
    let mut next = stored.checkpoint.clone();
    next.id += 1;
    let entry = next.splits.get_mut("in.a").unwrap();
    entry.owner = Some("w2".into());
    entry.generation = 7;
    entry.position += 1_000;
    let taken = entry.clone();
    store
        .write_blocking(stored.version.as_ref(), &next)
        .unwrap();

    let more = publish(&js, &["in.a", "in.b"], 200, 64).await;
    let last_b = *more["in.b"].last().unwrap();
    wait_for_checkpoint(
        &checkpoints,
        "taken",
        &worker,
        "split in.b never committed past the refused split",
        |c| c.splits.get("in.b").is_some_and(|p| p.position == last_b),
    )
    .await;
    wait_for_metric(
        &worker,
        "jetflow_worker_errors_total",
        &["split=\"in.a\"", "kind=\"checkpoint_refused\""],
        1.0,
    )
    .await;
    let checkpoint = read_checkpoint(&checkpoints, "taken");
    assert_eq!(checkpoint.splits["in.a"], taken, "the other owner's entry");
    let log = worker.log_text();
    assert!(
        log.contains("checkpoint refused the split's position") && log.contains("in.a"),
        "{log}"
    );
    assert_eq!(
        metric_sum(&worker.metrics(), "jetflow_worker_reading_paused", &[]),
        0.0
    );
    // More of in.b is still read and committed; in.a is not read any more here.
    let later = publish(&js, &["in.b"], 50, 64).await;
    wait_for_positions(&checkpoints, "taken", &[*later["in.b"].last().unwrap()]).await;
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());
    assert_eq!(read_checkpoint(&checkpoints, "taken").splits["in.a"], taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_source_keeps_reading_while_checkpoints_fail() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "out", &["out.>"]).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let path = write_manifest(
        dir.path(),
        r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata:
  name: core-failing
spec:
  source:
    core:
      subjects: ["in.a"]
  sink:
    jetstream:
      stream: out
      subject: "out.{{subject}}"
  checkpoint:
    interval: 300ms
"#,
    );
    let addr = free_addr();
    let mut worker = spawn(&path, &server.url(), &checkpoints, "w1", &addr, &[]);
    worker.wait_ready(Duration::from_secs(60)).await;
    let client = server.client().await;
    let publish_core = async |from: u64, count: u64| {
        for i in from..from + count {
            client.publish("in.a", i.to_string().into()).await.unwrap();
            // About 10,000 a second: a pace the worker keeps up with, so that what goes
            // missing is what a paused split would lose.
            if i.is_multiple_of(200) {
                client.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        client.flush().await.unwrap();
    };
    publish_core(0, 100).await;
    wait_for_len(&js, "out", 100, Duration::from_secs(30)).await;
    wait_for_checkpoint(
        &checkpoints,
        "core-failing",
        &worker,
        "first checkpoint",
        |c| c.splits.contains_key("in.a"),
    )
    .await;

    let lock = break_store(&checkpoints, "core-failing");
    // A trickle of messages (a checkpoint is written only when positions moved) until more
    // checkpoints failed than a JetStream source pauses after.
    let mut sent = 100;
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric_sum(
        &worker.metrics(),
        "jetflow_worker_checkpoint_failures_total",
        &[],
    ) < 5.0
    {
        assert!(Instant::now() < deadline, "{}", worker.log_text());
        publish_core(sent, 10).await;
        sent += 10;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // More than the client's subscription buffer (65,536 messages) holds: a paused split
    // would drop some of them without a trace. Each message is delivered, or (a worker that
    // does not keep up) counted as dropped.
    const MORE: u64 = 80_000;
    publish_core(sent, MORE).await;
    let total = sent + MORE;
    let deadline = Instant::now() + Duration::from_secs(120);
    let dropped = loop {
        let len = stream_len(&js, "out").await;
        let dropped = metric_sum(
            &worker.metrics(),
            "jetflow_worker_dropped_total",
            &["reason=\"slow_consumer\""],
        ) as u64;
        if len + dropped == total {
            break dropped;
        }
        assert!(
            Instant::now() < deadline,
            "out holds {len} of {total}, {dropped} counted as dropped, while checkpoints fail; log:\n{}",
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("{dropped} messages dropped by a worker that did not keep up, and counted");
    let text = worker.metrics();
    assert_eq!(metric_sum(&text, "jetflow_worker_reading_paused", &[]), 0.0);
    assert!(
        metric_sum(&text, "jetflow_worker_checkpoint_failures_total", &[]) >= 5.0,
        "{text}"
    );
    let numbers: std::collections::BTreeSet<u64> = read_all(&js, "out")
        .await
        .iter()
        .map(|r| number(&r.payload))
        .collect();
    assert_eq!(
        numbers.len() as u64 + dropped,
        total,
        "every message once, or counted"
    );
    std::fs::remove_dir(&lock).unwrap();
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_removed_by_retention_before_they_were_read_are_counted_and_reported() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    js.create_stream(stream::Config {
        name: "in".into(),
        subjects: vec!["in.*".into()],
        max_messages: 1_000,
        ..Default::default()
    })
    .await
    .unwrap();
    create_stream(&js, "out", &["out.>"]).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let path = write_manifest(
        dir.path(),
        &jetstream_manifest("gap", r#"["in.a"]"#, "300ms", ""),
    );
    publish(&js, &["in.a"], 500, 64).await;
    let addr = free_addr();
    let mut worker = spawn(&path, &server.url(), &checkpoints, "w1", &addr, &[]);
    worker.wait_ready(Duration::from_secs(60)).await;
    wait_for_positions(&checkpoints, "gap", &[500]).await;
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());

    // While the worker is down the stream keeps only its last 1,000 messages: 2501..=3500.
    publish(&js, &["in.a"], 3_000, 64).await;
    let mut worker = spawn(&path, &server.url(), &checkpoints, "w1", &addr, &[]);
    worker.wait_ready(Duration::from_secs(60)).await;
    wait_for_positions(&checkpoints, "gap", &[3_500]).await;
    let skipped = metric_sum(
        &worker.metrics(),
        "jetflow_worker_skipped_messages_total",
        &["split=\"in.a\"", "reason=\"retention\""],
    );
    assert_eq!(skipped, 2_000.0, "{}", worker.metrics());
    let log = worker.log_text();
    assert!(
        log.contains("stream sequences 501..=2500 are skipped"),
        "{log}"
    );
    let gap = read_checkpoint(&checkpoints, "gap").splits["in.a"]
        .retention_gap
        .clone()
        .expect("the gap in the checkpoint");
    assert_eq!((gap.first, gap.last), (501, 2_500));
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());
    let records = read_all(&js, "out").await;
    assert_exactly_once(&records, (1..=500).chain(2_501..=3_500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_stream_end_run_ends_where_it_was_meant_to_end() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "in", &["in.*"]).await;
    create_stream(&js, "out", &["out.>"]).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let text = jetstream_manifest("backfill", r#"["in.a", "in.b"]"#, "300ms", "")
        .replace("  sink:", "    bound:\n      streamEnd: true\n  sink:");
    let path = write_manifest(dir.path(), &text);
    const TOTAL: u64 = 100_000;
    publish(&js, &["in.a", "in.b"], TOTAL as usize, 64).await;
    let addr = free_addr();
    let mut worker = spawn(&path, &server.url(), &checkpoints, "w1", &addr, &[]);
    // Killed once it committed a position, mid-run.
    wait_for_checkpoint(
        &checkpoints,
        "backfill",
        &worker,
        "no position committed",
        |c| c.splits.values().any(|p| p.position > 0),
    )
    .await;
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the run ended before it could be killed; log:\n{}",
        worker.log_text()
    );
    worker.kill();
    let at_kill = stream_len(&js, "out").await;
    assert!(at_kill < TOTAL, "the run was complete when killed");

    // Stored after the run started: beyond its end, however often it restarts.
    publish(&js, &["in.a", "in.b"], 2_000, 64).await;
    let mut worker = spawn(&path, &server.url(), &checkpoints, "w1", &addr, &[]);
    let status = worker.wait(Duration::from_secs(120));
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());
    let records = read_all(&js, "out").await;
    assert_exactly_once(&records, 1..=TOTAL);
    let checkpoint = read_checkpoint(&checkpoints, "backfill");
    for split in ["in.a", "in.b"] {
        let entry = &checkpoint.splits[split];
        assert!(entry.finished, "{split}: {entry:?}");
        assert_eq!(entry.end, Some(TOTAL), "{split}: {entry:?}");
    }
}

/// Runs a pipeline into a sink stream with a 2 s duplicate window until 1,000 messages are
/// committed, then makes the store refuse writes, lets 1,000 more reach the sink uncommitted,
/// kills the worker and keeps it down past the window. Returns the restarted worker.
async fn resume_after_the_window(
    server: &NatsServer,
    js: &jetstream::Context,
    dir: &Path,
    mode: &str,
) -> Worker {
    create_stream(js, "in", &["in.*"]).await;
    js.create_stream(stream::Config {
        name: "out".into(),
        subjects: vec!["out.>".into()],
        duplicate_window: Duration::from_secs(2),
        ..Default::default()
    })
    .await
    .unwrap();
    let checkpoints = dir.join("checkpoints");
    let path = write_manifest(
        dir,
        &jetstream_manifest("late", r#"["in.a"]"#, "1s", &format!("    mode: {mode}")),
    );
    publish(js, &["in.a"], 1_000, 64).await;
    let addr = free_addr();
    let mut worker = spawn(&path, &server.url(), &checkpoints, "w1", &addr, &[]);
    worker.wait_ready(Duration::from_secs(60)).await;
    wait_for_positions(&checkpoints, "late", &[1_000]).await;
    let lock = break_store(&checkpoints, "late");
    publish(js, &["in.a"], 1_000, 64).await;
    wait_for_len(js, "out", 2_000, Duration::from_secs(30)).await;
    worker.kill();
    std::fs::remove_dir(&lock).unwrap();
    let committed = read_checkpoint(&checkpoints, "late");
    assert_eq!(committed.splits["in.a"].position, 1_000);
    // Down past the window, counted from the last commit.
    let past = committed.time.unwrap() + jiff::SignedDuration::from_secs(4);
    while jiff::Timestamp::now() < past {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    spawn(&path, &server.url(), &checkpoints, "w1", &addr, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_refuses_a_resume_older_than_the_sink_duplicate_window() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    let mut worker = resume_after_the_window(&server, &js, dir.path(), "ExactlyOnce").await;
    // Every split refused: the run ends as stopped (exit 3).
    let status = worker.wait(Duration::from_secs(60));
    let log = worker.log_text();
    assert_eq!(status.code(), Some(3), "{status}; log:\n{log}");
    assert!(
        log.contains("exactly once cannot hold")
            && log.contains("duplicate window of sink stream out (2s)")
            && log.contains("spec.checkpoint.mode: AtLeastOnce"),
        "{log}"
    );
    assert_eq!(stream_len(&js, "out").await, 2_000, "duplicates written");
    let entry = &read_checkpoint(&dir.path().join("checkpoints"), "late").splits["in.a"];
    let exceeded = entry.window_exceeded.clone().expect("the finding recorded");
    assert!(exceeded.refused, "{exceeded:?}");
    assert_eq!(exceeded.window_seconds, 2);
    assert!(exceeded.age_seconds >= 4, "{exceeded:?}");
    assert_eq!(entry.position, 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_reports_a_resume_older_than_the_sink_duplicate_window_and_goes_on() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    let mut worker = resume_after_the_window(&server, &js, dir.path(), "AtLeastOnce").await;
    // The replay is written again: at least once, as asked.
    wait_for_len(&js, "out", 3_000, Duration::from_secs(60)).await;
    wait_for_positions(&dir.path().join("checkpoints"), "late", &[2_000]).await;
    wait_for_metric(
        &worker,
        "jetflow_worker_errors_total",
        &["split=\"in.a\"", "kind=\"duplicate_window\""],
        1.0,
    )
    .await;
    let log = worker.log_text();
    assert!(
        log.contains("older than the sink stream's duplicate window"),
        "{log}"
    );
    let entry = &read_checkpoint(&dir.path().join("checkpoints"), "late").splits["in.a"];
    let exceeded = entry.window_exceeded.clone().expect("the finding recorded");
    assert!(!exceeded.refused, "{exceeded:?}");
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());
}
