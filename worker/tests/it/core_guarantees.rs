//! Delivery guarantees with NATS Core on either side, against a real nats-server and real worker
//! processes: Core to Core and Core to JetStream are at most once (what is published while the
//! worker is ready arrives once; what is published while it is down never arrives; nothing
//! arrives twice, even across a restart), JetStream to Core is at least once (a worker killed
//! mid-run and restarted leaves no source message missing).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::common::*;
use crate::support::*;
use jetflow_testsupport::NatsServer;

/// Publishes numbered messages on `subjects` (round-robin) until stopped; `last` holds the
/// number of the last message handed to the connection.
struct Publisher {
    last: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    fn start(client: async_nats::Client, subjects: &'static [&'static str]) -> Self {
        let last = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (last.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut i = 0u64;
            while !s.load(Ordering::Acquire) {
                i += 1;
                let subject = subjects[(i as usize) % subjects.len()];
                client
                    .publish(subject, i.to_string().into())
                    .await
                    .expect("publish");
                l.store(i, Ordering::Release);
                if i.is_multiple_of(20) {
                    client.flush().await.expect("flush");
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            client.flush().await.expect("flush");
        });
        Self { last, stop, task }
    }

    fn last(&self) -> u64 {
        self.last.load(Ordering::Acquire)
    }

    /// Runs until `more` messages after now were published; returns the last number.
    async fn publish_more(&self, more: u64) -> u64 {
        let target = self.last() + more;
        while self.last() < target {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.last()
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Release);
        self.task.await.unwrap();
        self.last.load(Ordering::Acquire)
    }
}

fn counts(numbers: impl Iterator<Item = u64>) -> BTreeMap<u64, usize> {
    let mut seen = BTreeMap::new();
    for n in numbers {
        *seen.entry(n).or_default() += 1;
    }
    seen
}

fn assert_range_present(seen: &BTreeMap<u64, usize>, from: u64, to: u64, what: &str) {
    let missing: Vec<u64> = (from..=to).filter(|n| !seen.contains_key(n)).collect();
    assert!(
        missing.is_empty(),
        "{} of the messages {from}..={to} ({what}) are missing, first: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

fn assert_none_twice(seen: &BTreeMap<u64, usize>) {
    let twice: Vec<u64> = seen
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, _)| *n)
        .collect();
    assert!(
        twice.is_empty(),
        "at most once broken: {} messages arrived twice, first: {:?}",
        twice.len(),
        &twice[..twice.len().min(10)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_to_core_delivers_once_what_is_published_while_ready() {
    let server = NatsServer::start();
    let client = server.client().await;
    let mut sink = client.subscribe("out.>").await.unwrap();
    client.flush().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let manifest = write_manifest(
        dir.path(),
        r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata:
  name: core-core
spec:
  source:
    core:
      subjects: ["in.a", "in.b"]
  sink:
    core:
      subject: "out.{{subject}}"
  checkpoint:
    interval: 300ms
"#,
    );

    let publisher = Publisher::start(server.client().await, &["in.a", "in.b"]);
    publisher.publish_more(500).await;
    let before_start = publisher.last();
    let addr = free_addr();
    let mut worker = spawn(&manifest, &server.url(), &checkpoints, "w1", &addr, &[]);
    worker.wait_ready(Duration::from_secs(30)).await;
    let at_ready = publisher.last();
    publisher.publish_more(5_000).await;
    let last = publisher.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());

    let received = collect(&mut sink, Duration::from_secs(1)).await;
    for m in &received {
        let headers = m.headers.as_ref().expect("headers");
        assert!(headers.get("Nats-Msg-Id").is_some());
        let source = source_of(headers).subject;
        assert_eq!(m.subject.as_str(), format!("out.{source}"));
    }
    let seen = counts(received.iter().map(|m| number(&m.payload)));
    assert_none_twice(&seen);
    assert_range_present(
        &seen,
        at_ready + 1,
        last,
        "published while the worker was ready",
    );
    assert!(
        seen.range(..=before_start).next().is_none(),
        "a message published before the worker started arrived"
    );
    eprintln!(
        "published {last}, received {} ({} after ready)",
        received.len(),
        last - at_ready
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_to_jetstream_is_at_most_once_across_a_crash() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "capture", &["capture.>"]).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let manifest = write_manifest(
        dir.path(),
        r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata:
  name: core-js
spec:
  source:
    core:
      subjects: ["sensors.a", "sensors.b"]
      queueGroup: capture
  sink:
    jetstream:
      stream: capture
      subject: "capture.{{subject}}"
  checkpoint:
    interval: 300ms
"#,
    );
    let client = server.client().await;
    let subjects = ["sensors.a", "sensors.b"];
    // Before any worker: never seen.
    publish_numbers(&client, &subjects, 1, 500).await;

    // First run: everything published while it is ready is stored once; then it is killed.
    let addr = free_addr();
    let mut first = spawn(&manifest, &server.url(), &checkpoints, "w1", &addr, &[]);
    first.wait_ready(Duration::from_secs(30)).await;
    publish_numbers(&client, &subjects, 501, 3_000).await;
    wait_for_len(&js, "capture", 3_000, Duration::from_secs(30)).await;
    first.kill();

    // Published while no worker runs: never seen.
    publish_numbers(&client, &subjects, 3_501, 1_000).await;

    let addr = free_addr();
    let mut second = spawn(&manifest, &server.url(), &checkpoints, "w1", &addr, &[]);
    second.wait_ready(Duration::from_secs(30)).await;
    publish_numbers(&client, &subjects, 4_501, 3_000).await;
    wait_for_len(&js, "capture", 6_000, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = second.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}; log:\n{}", second.log_text());

    let records = read_all(&js, "capture").await;
    let seen = counts(records.iter().map(|r| number(&r.payload)));
    assert_none_twice(&seen);
    assert_range_present(&seen, 501, 3_500, "published while the first worker ran");
    assert_range_present(&seen, 4_501, 7_500, "published while the second worker ran");
    assert_eq!(
        records.len(),
        6_000,
        "messages published before a worker ran, or while none ran, were stored"
    );
    // A Core source names its subject; it has no stream to name.
    assert!(records.iter().all(|r| {
        r.source_subject.starts_with("sensors.")
            && r.source_stream.is_none()
            && r.headers
                .get("Jetflow-Source")
                .unwrap()
                .as_str()
                .starts_with("/")
    }));
    // The second run's positions (and so its message ids) continue after the first run's:
    // ids that started again at 1 would have been dropped as duplicates of the first run.
    let first_run_max = records[..3_000].iter().map(|r| r.source_seq).max().unwrap();
    assert!(
        records[3_000..]
            .iter()
            .all(|r| r.source_seq > first_run_max)
    );
}

/// Publishes the numbers `first..first + count` round-robin over `subjects`, paced.
async fn publish_numbers(client: &async_nats::Client, subjects: &[&str], first: u64, count: u64) {
    for i in first..first + count {
        let subject = subjects[(i as usize) % subjects.len()];
        client
            .publish(subject.to_owned(), i.to_string().into())
            .await
            .expect("publish");
        if i.is_multiple_of(50) {
            client.flush().await.expect("flush");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    client.flush().await.expect("flush");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_to_core_is_at_least_once_across_a_crash() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "alerts", &["alerts.>"]).await;
    let client = server.client().await;
    let mut sink = client.subscribe("notify.>").await.unwrap();
    client.flush().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let manifest = write_manifest(
        dir.path(),
        r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata:
  name: js-core
spec:
  source:
    jetstream:
      stream: alerts
      filterSubjects: ["alerts.a", "alerts.b"]
  sink:
    core:
      subject: "notify.{{token(2)}}"
  checkpoint:
    interval: 500ms
"#,
    );
    let subjects = ["alerts.a", "alerts.b"];
    publish(&js, &subjects, 10_000, 64).await;

    // The subscriber keeps up on its own task while the worker runs, is killed and restarts.
    let collector = tokio::spawn(async move {
        use futures::StreamExt;
        let mut seqs = Vec::new();
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(10), sink.next()).await {
            let seq = m
                .headers
                .as_ref()
                .map(|h| source_of(h).sequence)
                .expect("a Jetflow-Source header");
            seqs.push(seq);
        }
        seqs
    });

    let addr = free_addr();
    let mut first = spawn(&manifest, &server.url(), &checkpoints, "w1", &addr, &[]);
    first.wait_ready(Duration::from_secs(30)).await;
    // Messages keep arriving in the stream while the worker runs.
    publish(&js, &subjects, 10_000, 64).await;
    wait_for_checkpoint(&checkpoints, "js-core", 3_000).await;
    first.kill();
    let addr = free_addr();
    let mut second = spawn(&manifest, &server.url(), &checkpoints, "w1", &addr, &[]);
    second.wait_ready(Duration::from_secs(30)).await;
    publish(&js, &subjects, 5_000, 64).await;
    let total = stream_len(&js, "alerts").await;
    let seqs = collector.await.unwrap();
    let status = second.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}; log:\n{}", second.log_text());

    let seen = counts(seqs.iter().copied());
    assert_range_present(&seen, 1, total, "every source message");
    let repeated = seen.values().filter(|c| **c > 1).count();
    eprintln!(
        "{total} source messages, {} received, {repeated} repeated after the crash",
        seqs.len()
    );
}

/// Waits until the checkpoint's positions add up to at least `at_least`.
async fn wait_for_checkpoint(dir: &std::path::Path, name: &str, at_least: u64) {
    for _ in 0..600 {
        let checkpoint = read_checkpoint(dir, name);
        let max = checkpoint
            .splits
            .values()
            .map(|p| p.position)
            .max()
            .unwrap_or(0);
        if max >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no checkpoint reached position {at_least}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_group_shares_core_subjects_between_two_workers() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "done", &["done.>"]).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let manifest = write_manifest(
        dir.path(),
        r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata:
  name: shared
spec:
  source:
    core:
      subjects: ["jobs.a", "jobs.b"]
      queueGroup: shared
  sink:
    jetstream:
      stream: done
      subject: "done.{{subject}}"
  checkpoint:
    interval: 200ms
"#,
    );
    let mut workers = Vec::new();
    for id in ["w1", "w2"] {
        let addr = free_addr();
        let mut worker = spawn(&manifest, &server.url(), &checkpoints, id, &addr, &[]);
        worker.wait_ready(Duration::from_secs(30)).await;
        workers.push((worker, addr));
    }
    let client = server.client().await;
    publish_numbers(&client, &["jobs.a", "jobs.b"], 1, 4_000).await;
    wait_for_len(&js, "done", 4_000, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let shares: Vec<u64> = workers
        .iter()
        .map(|(w, _)| w.metric("jetflow_worker_messages_total", &["direction=\"in\""]) as u64)
        .collect();
    for (worker, _) in &mut workers {
        let status = worker.terminate(Duration::from_secs(30));
        assert!(status.success(), "{status}; log:\n{}", worker.log_text());
        // Each worker counts its own messages; one whose count is behind another's leaves the
        // position alone. Only a commit racing another worker's write can still be refused
        // (harmless: nothing is acknowledged to a Core source), and then its next one skips.
        let log = worker.plain_log();
        let failed: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("checkpoint failed"))
            .collect();
        assert!(
            failed.len() <= 2
                && failed
                    .iter()
                    .all(|l| l.contains("is behind the committed position")),
            "{log}"
        );
    }
    let records = read_all(&js, "done").await;
    let seen = counts(records.iter().map(|r| number(&r.payload)));
    assert_none_twice(&seen);
    assert_range_present(&seen, 1, 4_000, "published while both workers ran");
    assert_eq!(records.len(), 4_000);
    assert_eq!(shares.iter().sum::<u64>(), 4_000);
    assert!(
        shares.iter().all(|s| *s > 0),
        "one worker got nothing: {shares:?}"
    );
}
