//! More splits than the source stream allows consumers (`max_consumers`), against a real
//! nats-server and a real worker process: the splits whose consumers were made move their
//! messages, exactly once; the others are reported blocked (`jetflow_worker_split_blocked`,
//! errors of kind `consumer_limit`), tried again at doubling intervals, each logged at its
//! 1st, 2nd, 4th … refusal only; the worker keeps running and stops cleanly.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::*;
use async_nats::jetstream::stream;
use jetflow_testsupport::NatsServer;
use jetflow_testsupport::http::metric_sum;

const LIMIT: usize = 5;
const SUBJECTS: usize = 10;

const MANIFEST: &str = r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata:
  name: limited
spec:
  source:
    jetstream:
      stream: events
      filterSubjects: ["events.>"]
      splitBy: Subject
  sink:
    jetstream:
      stream: copy
      subject: "copy.{{subject}}"
  checkpoint:
    interval: 300ms
"#;

/// The splits the worker reports blocked.
fn blocked(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|l| l.starts_with("jetflow_worker_split_blocked{") && l.ends_with(" 1"))
        .filter_map(|l| l.split("split=\"").nth(1)?.split('"').next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splits_beyond_the_consumer_limit_are_reported_blocked_and_the_others_move() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    js.create_stream(stream::Config {
        name: "events".into(),
        subjects: vec!["events.>".into()],
        max_consumers: LIMIT as i32,
        ..Default::default()
    })
    .await
    .expect("create events");
    create_stream(&js, "copy", &["copy.>"]).await;
    let subjects: Vec<String> = (0..SUBJECTS).map(|i| format!("events.s{i}")).collect();
    let refs: Vec<&str> = subjects.iter().map(String::as_str).collect();
    publish(&js, &refs, SUBJECTS * 10, 32).await;

    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), MANIFEST);
    let checkpoints = dir.path().join("checkpoints");
    let started = Instant::now();
    let mut worker = Worker::start(&manifest, &server.url(), &checkpoints, &[]);
    worker.wait_ready(Duration::from_secs(60)).await;

    // Half the splits are refused their consumer and reported so.
    let deadline = Instant::now() + Duration::from_secs(60);
    let stuck = loop {
        let stuck = blocked(&worker.metrics());
        if stuck.len() == SUBJECTS - LIMIT {
            break stuck;
        }
        assert!(
            Instant::now() < deadline,
            "blocked splits {stuck:?}; log:\n{}",
            worker.plain_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The others move everything, and go on moving what comes next.
    wait_for_len(&js, "copy", (LIMIT * 10) as u64, Duration::from_secs(60)).await;
    publish(&js, &refs, SUBJECTS * 10, 32).await;
    wait_for_len(&js, "copy", (LIMIT * 20) as u64, Duration::from_secs(60)).await;

    // Each blocked split is tried again, each time after a longer wait.
    let refusals = |metrics: &str, split: &str| {
        metric_sum(
            metrics,
            "jetflow_worker_errors_total",
            &[&format!("split=\"{split}\""), "kind=\"consumer_limit\""],
        )
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let metrics = loop {
        let metrics = worker.metrics();
        if stuck.iter().all(|s| refusals(&metrics, s) >= 4.0) {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "blocked splits not tried again: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let elapsed = started.elapsed().as_secs_f64();
    let log = worker.plain_log();
    for split in &stuck {
        let count = refusals(&metrics, split);
        // Tries at 0 s, 1 s, 3 s, 7 s … after the first: at most log2(elapsed + 1) + 1 by now.
        assert!(
            count <= (elapsed + 1.0).log2().floor() + 1.0,
            "split {split} refused {count} times in {elapsed:.1} s: the retries do not back off"
        );
        let field = format!("split={split} ");
        let lines = log
            .lines()
            .filter(|l| l.contains(&field))
            .filter(|l| l.contains("cannot open split") || l.contains("split blocked"))
            .count() as f64;
        assert!(
            lines >= 1.0 && lines <= count.log2().floor() + 1.0,
            "split {split}: {lines} log lines for {count} refusals:\n{log}"
        );
    }
    assert!(
        log.contains("max_consumers"),
        "the line names the limit:\n{log}"
    );

    // The worker still runs and stops cleanly; what moved moved exactly once.
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "exit {status}; log:\n{log}");
    let records = read_all(&js, "copy").await;
    assert_eq!(
        records.len(),
        LIMIT * 20,
        "each message of an open split once"
    );
    let moved: BTreeSet<&str> = records.iter().map(|r| r.source_subject.as_str()).collect();
    assert!(
        moved.iter().all(|s| !stuck.contains(*s)),
        "a blocked split wrote: {moved:?}"
    );
}
