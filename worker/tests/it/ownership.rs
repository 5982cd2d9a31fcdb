//! Split ownership across worker processes: three workers share one pipeline of six splits and
//! one checkpoint folder, each running the splits an assignment file gives it. The assignment
//! is rewritten to take one worker's splits away (a new generation), that worker is later
//! killed, messages keep coming throughout, and the sink ends up holding every source message
//! exactly once. A worker stopped gracefully (SIGTERM, as a rolling update stops a pod) releases
//! its splits in its final checkpoint, so their next owner starts them at once. A frozen owner
//! (SIGSTOP) keeps its split from its new owner across two assignment changes until it wakes up
//! and releases it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::*;
use jetflow_testsupport::NatsServer;

const SUBJECTS: [&str; 6] = [
    "transfers.eu",
    "transfers.us",
    "transfers.apac",
    "transfers.latam",
    "transfers.mea",
    "transfers.anz",
];

const MANIFEST: &str = r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata:
  name: ledger
spec:
  source:
    jetstream:
      stream: transfers
      filterSubjects: ["transfers.eu", "transfers.us", "transfers.apac", "transfers.latam", "transfers.mea", "transfers.anz"]
      batchSize: 200
  sink:
    jetstream:
      stream: ledger
      subject: "ledger.{{subject}}"
  checkpoint:
    interval: 500ms
  parallelism: 3
"#;

/// Replaces the assignment file by a rename, as a writer should.
fn write_assignment(path: &Path, generation: u64, owners: &[(&str, &str)]) {
    let owners: serde_json::Map<String, serde_json::Value> = owners
        .iter()
        .map(|(split, worker)| ((*split).to_owned(), serde_json::json!(worker)))
        .collect();
    let text = serde_json::json!({"generation": generation, "owners": owners}).to_string();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The timestamp of the first log line containing `text`.
fn log_time(log: &str, text: &str) -> String {
    let line = log
        .lines()
        .find(|l| l.contains(text))
        .unwrap_or_else(|| panic!("no {text:?} in:\n{log}"));
    line.split_whitespace().next().unwrap().to_owned()
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splits_moved_between_three_workers_arrive_exactly_once() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "transfers", &["transfers.>"]).await;
    create_stream(&js, "ledger", &["ledger.>"]).await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), MANIFEST);
    let checkpoints = dir.path().join("checkpoints");
    let assignment = dir.path().join("assignment.json");
    let assignment_arg = assignment.display().to_string();
    write_assignment(
        &assignment,
        1,
        &[
            ("transfers.eu", "w1"),
            ("transfers.us", "w1"),
            ("transfers.apac", "w2"),
            ("transfers.latam", "w2"),
            ("transfers.mea", "w3"),
            ("transfers.anz", "w3"),
        ],
    );
    publish(&js, &SUBJECTS, 6_000, 128).await;

    let mut workers = Vec::new();
    for id in ["w1", "w2", "w3"] {
        let addr = free_addr();
        let worker = spawn(
            &manifest,
            &server.url(),
            &checkpoints,
            id,
            &addr,
            &[
                "--assignment-file",
                &assignment_arg,
                "--handover-timeout",
                "20s",
            ],
        );
        workers.push((worker, addr));
    }
    for (worker, _) in &mut workers {
        worker.wait_ready(Duration::from_secs(30)).await;
    }

    // Messages keep coming for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let js = js.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                publish(&js, &SUBJECTS, 600, 128).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let checkpoint = || read_checkpoint(&checkpoints, "ledger");
    wait_until(
        "every split committed by its first owner",
        Duration::from_secs(30),
        || {
            let c = checkpoint();
            SUBJECTS
                .iter()
                .all(|s| c.splits.get(*s).is_some_and(|p| p.position > 0))
        },
    )
    .await;

    // Generation 2: w3 loses both its splits while it is running.
    write_assignment(
        &assignment,
        2,
        &[
            ("transfers.eu", "w1"),
            ("transfers.us", "w1"),
            ("transfers.apac", "w2"),
            ("transfers.latam", "w2"),
            ("transfers.mea", "w1"),
            ("transfers.anz", "w2"),
        ],
    );
    let handed_over = |c: &jetflow_crds::checkpoint::Checkpoint, split: &str, owner: &str| {
        c.splits
            .get(split)
            .is_some_and(|p| p.generation == 2 && p.owner.as_deref() == Some(owner))
    };
    wait_until(
        "the new owners committing the moved splits",
        Duration::from_secs(30),
        || {
            let c = checkpoint();
            handed_over(&c, "transfers.mea", "w1") && handed_over(&c, "transfers.anz", "w2")
        },
    )
    .await;
    let moved_at = checkpoint();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Later w3 is killed; the others go on.
    workers[2].0.kill();
    // Each moved split started at its new owner only after w3 had drained, committed and
    // acknowledged it.
    let w3_log = workers[2].0.plain_log();
    for (split, owner) in [("transfers.mea", 0), ("transfers.anz", 1)] {
        let released = log_time(
            &w3_log,
            &format!(
                "split stopped, committed and acknowledged; writing its release record split={split} "
            ),
        );
        let gainer_log = workers[owner].0.plain_log();
        let started = log_time(&gainer_log, &format!("starting split split={split} "));
        assert!(
            released < started,
            "{split}: released at {released}, started at {started}"
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Release);
    publisher.await.unwrap();

    let total = stream_len(&js, "transfers").await;
    wait_for_len(&js, "ledger", total, Duration::from_secs(60)).await;
    // A little longer, so that a duplicate would have time to arrive too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (worker, _) in workers.iter_mut().take(2) {
        let status = worker.terminate(Duration::from_secs(30));
        assert!(status.success(), "{status}; log:\n{}", worker.log_text());
    }

    let records = read_all(&js, "ledger").await;
    assert_exactly_once(&records, 1..=total);
    let last = checkpoint();
    for split in ["transfers.mea", "transfers.anz"] {
        let (before, after) = (&moved_at.splits[split], &last.splits[split]);
        assert!(
            after.position > before.position,
            "{split} did not move on after the handover"
        );
        assert_ne!(after.owner.as_deref(), Some("w3"));
    }
    for (split, position) in &last.splits {
        assert!(position.generation == 2, "{split}: {position:?}");
    }
    eprintln!("{total} source messages over 6 splits, each in the sink once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owners_split_is_taken_over_after_the_handover_timeout() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "transfers", &["transfers.>"]).await;
    create_stream(&js, "ledger", &["ledger.>"]).await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), MANIFEST);
    let checkpoints = dir.path().join("checkpoints");
    let assignment = dir.path().join("assignment.json");
    let assignment_arg = assignment.display().to_string();
    let first: Vec<(&str, &str)> = SUBJECTS
        .iter()
        .enumerate()
        .map(|(i, s)| (*s, if i < 3 { "w1" } else { "w2" }))
        .collect();
    write_assignment(&assignment, 1, &first);
    let mut workers = Vec::new();
    for id in ["w1", "w2"] {
        let addr = free_addr();
        let worker = spawn(
            &manifest,
            &server.url(),
            &checkpoints,
            id,
            &addr,
            &[
                "--assignment-file",
                &assignment_arg,
                "--handover-timeout",
                "2s",
            ],
        );
        workers.push((worker, addr));
    }
    for (worker, _) in &mut workers {
        worker.wait_ready(Duration::from_secs(30)).await;
    }
    publish(&js, &SUBJECTS, 6_000, 128).await;
    let checkpoint = || read_checkpoint(&checkpoints, "ledger");
    wait_until("every split committed", Duration::from_secs(30), || {
        let c = checkpoint();
        SUBJECTS
            .iter()
            .all(|s| c.splits.get(*s).is_some_and(|p| p.position > 0))
    })
    .await;

    // w2 dies owning three splits; only then are they given to w1.
    workers[1].0.kill();
    publish(&js, &SUBJECTS, 3_000, 128).await;
    let all_w1: Vec<(&str, &str)> = SUBJECTS.iter().map(|s| (*s, "w1")).collect();
    write_assignment(&assignment, 2, &all_w1);
    publish(&js, &SUBJECTS, 3_000, 128).await;

    wait_for_len(&js, "ledger", 12_000, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = workers[0].0.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "{status}; log:\n{}",
        workers[0].0.log_text()
    );
    let log = workers[0].0.plain_log();
    assert!(
        log.contains("waiting for the previous owner to release the split split=transfers.mea"),
        "{log}"
    );
    let records = read_all(&js, "ledger").await;
    assert_exactly_once(&records, 1..=12_000);
    let last = checkpoint();
    // Every split ends with w1. The splits taken over from w2 were committed under generation
    // 2; w1's own splits may have seen their last message before w1 read generation 2, and a
    // split whose position did not move is not rewritten, so they may still say generation 1.
    for (i, split) in SUBJECTS.iter().enumerate() {
        let p = &last.splits[*split];
        assert_eq!(p.owner.as_deref(), Some("w1"), "{split}: {p:?}");
        if i >= 3 {
            assert_eq!(p.generation, 2, "{split}: {p:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_with_sigterm_releases_its_splits_to_the_next_owner_at_once() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "transfers", &["transfers.>"]).await;
    create_stream(&js, "ledger", &["ledger.>"]).await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), MANIFEST);
    let checkpoints = dir.path().join("checkpoints");
    let assignment = dir.path().join("assignment.json");
    let assignment_arg = assignment.display().to_string();
    let first: Vec<(&str, &str)> = SUBJECTS
        .iter()
        .enumerate()
        .map(|(i, s)| (*s, if i < 3 { "w1" } else { "w2" }))
        .collect();
    write_assignment(&assignment, 1, &first);
    let mut workers = Vec::new();
    for id in ["w1", "w2"] {
        let addr = free_addr();
        let worker = spawn(
            &manifest,
            &server.url(),
            &checkpoints,
            id,
            &addr,
            &[
                "--assignment-file",
                &assignment_arg,
                // Far longer than the test waits: a gained split that waited for it fails.
                "--handover-timeout",
                "120s",
            ],
        );
        workers.push((worker, addr));
    }
    for (worker, _) in &mut workers {
        worker.wait_ready(Duration::from_secs(30)).await;
    }
    publish(&js, &SUBJECTS, 6_000, 128).await;
    let checkpoint = || read_checkpoint(&checkpoints, "ledger");
    wait_until("every split committed", Duration::from_secs(30), || {
        let c = checkpoint();
        SUBJECTS
            .iter()
            .all(|s| c.splits.get(*s).is_some_and(|p| p.position > 0))
    })
    .await;

    // A rolling update stops w2 (SIGTERM) before the assignment moves its splits.
    let status = workers[1].0.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "{status}; log:\n{}",
        workers[1].0.log_text()
    );
    let stopped = checkpoint();
    for split in &SUBJECTS[3..] {
        let p = &stopped.splits[*split];
        assert!(
            p.released && p.owner.as_deref() == Some("w2"),
            "{split}: {p:?}"
        );
    }
    publish(&js, &SUBJECTS, 3_000, 128).await;
    let all_w1: Vec<(&str, &str)> = SUBJECTS.iter().map(|s| (*s, "w1")).collect();
    write_assignment(&assignment, 2, &all_w1);
    let moved = Instant::now();
    wait_for_len(&js, "ledger", 9_000, Duration::from_secs(30)).await;
    assert!(
        moved.elapsed() < Duration::from_secs(30),
        "the moved splits waited for the handover timeout"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = workers[0].0.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "{status}; log:\n{}",
        workers[0].0.log_text()
    );
    assert_exactly_once(&read_all(&js, "ledger").await, 1..=9_000);
    let log = workers[0].0.plain_log();
    assert!(
        !log.contains("waiting for the previous owner to release the split"),
        "{log}"
    );
    // w1 claimed the released splits and committed them as their owner.
    let last = checkpoint();
    for split in &SUBJECTS[3..] {
        let p = &last.splits[*split];
        assert_eq!(p.owner.as_deref(), Some("w1"), "{split}: {p:?}");
        assert_eq!(p.generation, 2, "{split}: {p:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_worker_releases_its_splits_even_when_one_was_taken_on_by_a_newer_owner() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "transfers", &["transfers.>"]).await;
    create_stream(&js, "ledger", &["ledger.>"]).await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), MANIFEST);
    let checkpoints = dir.path().join("checkpoints");
    let assignment = dir.path().join("assignment.json");
    let assignment_arg = assignment.display().to_string();
    let all_w1: Vec<(&str, &str)> = SUBJECTS.iter().map(|s| (*s, "w1")).collect();
    write_assignment(&assignment, 1, &all_w1);
    let addr = free_addr();
    let mut worker = spawn(
        &manifest,
        &server.url(),
        &checkpoints,
        "w1",
        &addr,
        &["--assignment-file", &assignment_arg],
    );
    worker.wait_ready(Duration::from_secs(30)).await;
    publish(&js, &SUBJECTS, 1_200, 128).await;
    let checkpoint = || read_checkpoint(&checkpoints, "ledger");
    wait_until("every split committed", Duration::from_secs(30), || {
        let c = checkpoint();
        SUBJECTS
            .iter()
            .all(|s| c.splits.get(*s).is_some_and(|p| p.position > 0))
    })
    .await;

    // transfers.anz was given to w9 under an assignment w1 has not seen yet, and w9 moved it on.
    let store = Arc::new(jetflow_worker::checkpoint::FileStore::new(
        &checkpoints,
        "default",
        "ledger",
    ));
    let mut committer = jetflow_worker::checkpoint::Committer::open(store)
        .await
        .unwrap();
    let taken = jetflow_crds::checkpoint::SplitPosition {
        position: committer.checkpoint().splits["transfers.anz"].position + 1_000,
        owner: Some("w9".into()),
        generation: 2,
        ..Default::default()
    };
    committer
        .commit(&[("transfers.anz".to_owned(), taken.clone())].into())
        .await
        .unwrap();
    publish(&js, &SUBJECTS, 600, 128).await;

    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());
    let last = checkpoint();
    assert_eq!(
        last.splits["transfers.anz"], taken,
        "left to its newer owner"
    );
    for split in &SUBJECTS[..5] {
        let p = &last.splits[*split];
        assert!(
            p.released && p.owner.as_deref() == Some("w1"),
            "{split}: {p:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_owners_split_waits_for_its_release_across_two_assignment_changes() {
    const THREE: [&str; 3] = ["transfers.eu", "transfers.us", "transfers.apac"];
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "transfers", &["transfers.>"]).await;
    // A duplicate window far shorter than the test: two workers running one split at once
    // publish the same outputs seconds apart, and the sink keeps both.
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "ledger".into(),
        subjects: vec!["ledger.>".into()],
        duplicate_window: Duration::from_millis(100),
        ..Default::default()
    })
    .await
    .expect("create sink stream");
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(
        dir.path(),
        &MANIFEST.replace(
            r#"["transfers.eu", "transfers.us", "transfers.apac", "transfers.latam", "transfers.mea", "transfers.anz"]"#,
            r#"["transfers.eu", "transfers.us", "transfers.apac"]"#,
        ),
    );
    let checkpoints = dir.path().join("checkpoints");
    let assignment = dir.path().join("assignment.json");
    let assignment_arg = assignment.display().to_string();
    write_assignment(
        &assignment,
        1,
        &[
            ("transfers.eu", "w1"),
            ("transfers.us", "w2"),
            ("transfers.apac", "w3"),
        ],
    );
    let mut workers = Vec::new();
    for id in ["w1", "w2", "w3"] {
        let addr = free_addr();
        let worker = spawn(
            &manifest,
            &server.url(),
            &checkpoints,
            id,
            &addr,
            &[
                "--assignment-file",
                &assignment_arg,
                // Far longer than the test: only a release lets a gained split start.
                "--handover-timeout",
                "120s",
            ],
        );
        workers.push((worker, addr));
    }
    for (worker, _) in &mut workers {
        worker.wait_ready(Duration::from_secs(30)).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let js = js.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                publish(&js, &THREE, 300, 128).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let checkpoint = || read_checkpoint(&checkpoints, "ledger");
    wait_until("every split committed", Duration::from_secs(30), || {
        let c = checkpoint();
        THREE
            .iter()
            .all(|s| c.splits.get(*s).is_some_and(|p| p.position > 0))
    })
    .await;

    // w1 freezes while it runs transfers.eu, with outputs published past its last checkpoint.
    // It stays frozen for less than the sink's publish timeout (5 s), so that its own publishes
    // are not sent again when it wakes up.
    workers[0].0.signal("STOP");
    // Generation 2 gives transfers.eu to w2, which waits for w1's release.
    write_assignment(
        &assignment,
        2,
        &[
            ("transfers.eu", "w2"),
            ("transfers.us", "w2"),
            ("transfers.apac", "w3"),
        ],
    );
    wait_until("w2 waiting for w1", Duration::from_secs(10), || {
        workers[1]
            .0
            .plain_log()
            .contains("waiting for the previous owner to release the split split=transfers.eu")
    })
    .await;
    // Generation 3 leaves transfers.eu with w2 and moves transfers.us to w3.
    write_assignment(
        &assignment,
        3,
        &[
            ("transfers.eu", "w2"),
            ("transfers.us", "w3"),
            ("transfers.apac", "w3"),
        ],
    );
    wait_until("w3 taking transfers.us", Duration::from_secs(30), || {
        workers[2]
            .0
            .plain_log()
            .contains("starting split split=transfers.us ")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // w1 wakes up, still running transfers.eu until it reads the new assignment.
    workers[0].0.signal("CONT");
    wait_until("w2 running transfers.eu", Duration::from_secs(30), || {
        workers[1]
            .0
            .plain_log()
            .contains("starting split split=transfers.eu ")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Release);
    publisher.await.unwrap();

    let total = stream_len(&js, "transfers").await;
    wait_for_len(&js, "ledger", total, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (worker, _) in &mut workers {
        let status = worker.terminate(Duration::from_secs(30));
        assert!(status.success(), "{status}; log:\n{}", worker.log_text());
    }
    // Every source sequence (`Jetflow-Source`) once: no gap, and no repeat from two workers at once.
    assert_exactly_once(&read_all(&js, "ledger").await, 1..=total);
    let released = log_time(
        &workers[0].0.plain_log(),
        "split stopped, committed and acknowledged; writing its release record split=transfers.eu ",
    );
    let started = log_time(
        &workers[1].0.plain_log(),
        "starting split split=transfers.eu ",
    );
    assert!(
        released < started,
        "transfers.eu: started by w2 at {started}, released by w1 at {released}"
    );
    eprintln!("{total} source messages over 3 splits, each in the sink once");
}
