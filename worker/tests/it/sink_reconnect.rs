//! JetStream to NATS Core is at least once, and JetStream to JetStream exactly once, across
//! nats-server restarts: a worker publishing while the server is killed and started again (same
//! port, same store) leaves no source message missing, and into a JetStream sink none twice. What the killed server had not yet read from the worker's
//! connection is gone, so the worker counts a Core output delivered only after a round trip on
//! the connection it was published on, and publishes it again otherwise.
//!
//! Core deliveries are observed by a stream on the same server capturing the sink subject (its
//! store kept across the restarts and written through to disk), so that what the server
//! received is recorded even while no subscriber could be connected.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::{free_addr, spawn};
use async_nats::jetstream;
use jetflow_testsupport::NatsServer;
use jetflow_testsupport::http::metric_sum;

const SUBJECTS: [&str; 2] = ["alerts.a", "alerts.b"];

/// Retries `op` until it succeeds: the test's own clients reconnect after a restart too.
async fn retry<T, E: std::fmt::Display, F, Fut>(what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) => {
                assert!(Instant::now() < deadline, "{what}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn len(js: &jetstream::Context, stream: &str) -> u64 {
    retry("stream info", || async {
        let mut s = js.get_stream(stream).await.map_err(|e| e.to_string())?;
        s.info()
            .await
            .map(|i| i.state.messages)
            .map_err(|e| e.to_string())
    })
    .await
}

/// Publishes `count` messages round-robin over the source subjects; returns the last sequence
/// of each subject.
async fn publish_batch(js: &jetstream::Context, count: usize) -> BTreeMap<String, u64> {
    let payload = bytes::Bytes::from(vec![b'x'; 256]);
    let mut lasts = BTreeMap::new();
    let mut pending = std::collections::VecDeque::new();
    for i in 0..count {
        let subject = SUBJECTS[i % SUBJECTS.len()];
        let ack = retry("publish", || js.publish(subject, payload.clone())).await;
        pending.push_back((subject, ack));
        if pending.len() >= 1000 {
            let (s, ack) = pending.pop_front().unwrap();
            lasts.insert(s.to_owned(), ack.await.expect("publish ack").sequence);
        }
    }
    for (s, ack) in pending {
        lasts.insert(s.to_owned(), ack.await.expect("publish ack").sequence);
    }
    lasts
}

/// Every source sequence among the captured outputs.
async fn captured_sequences(js: &jetstream::Context) -> BTreeSet<u64> {
    read_all(js, "capture")
        .await
        .iter()
        .map(|r| r.source_seq)
        .collect()
}

/// Messages the worker took in from the source, over its splits (from its `/metrics`).
fn taken_in(addr: &str) -> f64 {
    jetflow_testsupport::http::get_ok(addr, "/metrics").map_or(0.0, |text| {
        metric_sum(
            &text,
            "jetflow_worker_messages_total",
            &["direction=\"in\""],
        )
    })
}

/// Sends `signal` (`STOP`, `CONT`) to process `pid`.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

fn server_pid(server: &NatsServer) -> u32 {
    let text = std::fs::read_to_string(server.dir().join("nats.pid")).expect("pid file");
    text.trim().parse().expect("pid")
}

/// Waits until `stream` stops growing: the server has stored all it received.
async fn settled(js: &jetstream::Context, stream: &str) -> u64 {
    let mut last = len(js, stream).await;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = len(js, stream).await;
        if now == last {
            return now;
        }
        last = now;
    }
}

/// A server whose pid file the rounds read and whose streams write through to disk, so that a
/// kill loses nothing they stored.
fn restartable_server() -> NatsServer {
    NatsServer::start_with(
        "pid_file: \"{dir}/nats.pid\"\njetstream {\n  store_dir: \"{dir}/jetstream\"\n  sync_interval: always\n}\n",
    )
}

/// Waits until the committed positions of pipeline `name` include each of `expected` (the
/// last sequence of each split), failing if the worker exits first.
async fn wait_committed(worker: &mut Worker, checkpoints: &Path, name: &str, expected: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let positions: BTreeSet<u64> = read_checkpoint(checkpoints, name)
            .splits
            .values()
            .map(|p| p.position)
            .collect();
        if expected.iter().all(|s| positions.contains(s)) {
            return;
        }
        if let Ok(Some(status)) = worker.child.try_wait() {
            panic!("worker exited with {status}; log:\n{}", worker.log_text());
        }
        assert!(
            Instant::now() < deadline,
            "positions {positions:?} never reached {expected:?}; log:\n{}",
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Kills and restarts the server three times while the worker holds outputs the server never
/// read (see the tests); `outputs` is the stream where the outputs are seen. Returns the last
/// source sequence of each subject and how many messages were published.
async fn restart_rounds(
    server: &mut NatsServer,
    js: &jetstream::Context,
    worker: &Worker,
    addr: &str,
    outputs: &str,
    started: Instant,
) -> (BTreeMap<String, u64>, u64) {
    let worker_pid = worker.child.id();
    // A round counts when the server froze while the worker held outputs it had not yet
    // published (the capture stream held less than the source): a few such rounds, whatever
    // the machine's speed.
    const BATCH: usize = 5_000;
    const ROUNDS: u64 = 3;
    let mut lasts = BTreeMap::new();
    let (mut rounds, mut published) = (0, 0u64);
    while rounds < ROUNDS {
        assert!(
            published < 20 * BATCH as u64,
            "the worker was never caught mid-batch"
        );
        // The batch waits in the source while the worker is paused, and is read at full speed
        // once it resumes.
        let taken = taken_in(addr);
        signal(worker_pid, "STOP");
        lasts = publish_batch(js, BATCH).await;
        published += BATCH as u64;
        signal(worker_pid, "CONT");
        // Paused again as soon as it has taken in part of the batch.
        let deadline = Instant::now() + Duration::from_secs(60);
        while taken_in(addr) < taken + 200.0 {
            assert!(
                Instant::now() < deadline,
                "no progress; log:\n{}",
                worker.log_text()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        signal(worker_pid, "STOP");
        let stored = settled(js, outputs).await;
        if stored == published {
            // Nothing outstanding: no round.
            signal(worker_pid, "CONT");
            continue;
        }
        signal(server_pid(server), "STOP");
        signal(worker_pid, "CONT");
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        server.restart();
        rounds += 1;
        eprintln!(
            "{:?} round {rounds}: the server froze with {stored} of {published} outputs stored, restarted",
            started.elapsed()
        );
    }
    (lasts, published)
}

/// Each round kills the server while the worker holds outputs the server never read: a batch
/// is published while the worker is paused; once the worker is busy with it, it is paused
/// again until the capture stream has stored everything it had sent; the server is frozen, the
/// worker resumes and publishes what it holds into the connection (the frozen server reads
/// none of it) for several checkpoint intervals, then the server is killed and started again
/// on the same port and store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_to_core_is_at_least_once_across_server_restarts() {
    let mut server = restartable_server();
    let js = server.jetstream().await;
    create_stream(&js, "alerts", &["alerts.>"]).await;
    create_stream(&js, "capture", &["notify.>"]).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let manifest = write_manifest(
        dir.path(),
        r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata:
  name: js-core-restarts
spec:
  source:
    jetstream:
      stream: alerts
      filterSubjects: ["alerts.a", "alerts.b"]
  sink:
    core:
      subject: "notify.{{token(2)}}"
  checkpoint:
    interval: 200ms
"#,
    );
    let addr = free_addr();
    let mut worker = spawn(&manifest, &server.url(), &checkpoints, "w1", &addr, &[]);
    let started = Instant::now();

    let (lasts, published) =
        restart_rounds(&mut server, &js, &worker, &addr, "capture", started).await;
    let expected: Vec<u64> = lasts.values().copied().collect();
    let total = published;
    assert_eq!(*expected.iter().max().unwrap(), total);

    // Every split's committed position reaches the end of the source.
    wait_committed(&mut worker, &checkpoints, "js-core-restarts", &expected).await;
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());

    eprintln!("{:?} every position committed", started.elapsed());
    // The capture stream may still be storing what it received.
    settled(&js, "capture").await;
    let seen = captured_sequences(&js).await;
    let missing: Vec<u64> = (1..=total).filter(|s| !seen.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "{} of {total} source messages never reached the Core subject although their \
         positions were committed, first: {:?}; log:\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        worker.log_text()
    );
}

/// The same rounds into a JetStream sink: the outputs the killed server never read are
/// published again on the new connection (their acks will never come), and the sink stream
/// drops the copies it already stored, so every source message is in it exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_to_jetstream_is_exactly_once_across_server_restarts() {
    let mut server = restartable_server();
    let js = server.jetstream().await;
    create_stream(&js, "alerts", &["alerts.>"]).await;
    create_stream(&js, "out", &["out.>"]).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let manifest = write_manifest(
        dir.path(),
        r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata:
  name: js-js-restarts
spec:
  source:
    jetstream:
      stream: alerts
      filterSubjects: ["alerts.a", "alerts.b"]
  sink:
    jetstream:
      stream: out
      subject: "out.{{subject}}"
  checkpoint:
    interval: 200ms
"#,
    );
    let addr = free_addr();
    let mut worker = spawn(&manifest, &server.url(), &checkpoints, "w1", &addr, &[]);
    let started = Instant::now();
    let (lasts, total) = restart_rounds(&mut server, &js, &worker, &addr, "out", started).await;
    let expected: Vec<u64> = lasts.values().copied().collect();

    wait_committed(&mut worker, &checkpoints, "js-js-restarts", &expected).await;
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());

    settled(&js, "out").await;
    assert_exactly_once(&read_all(&js, "out").await, 1..=total);
}
