//! A worker as it runs in a pod: a real `jetflow-worker` process with both ConfigMap stores
//! (`--checkpoint-store configmap --assignment-store configmap`), reaching the in-memory
//! Kubernetes API over HTTP through a kubeconfig, and a real nats-server. A bounded run owns
//! nothing until the operator's assignment names it: it stays up and ready meanwhile, runs its
//! splits to the bound once assigned, records them `finished`, and stays up (the operator
//! scales the Deployment to 0); SIGTERM then stops it with exit code 0. The assignment
//! ConfigMap is followed with a watch; the fake API has no watch, so here the worker runs on its
//! fallback, polling. A worker that started before a reset of the checkpoint never writes into
//! the fresh one, even when it follows the new assignment.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::kube_support::{FakeApi, NS};
use crate::support::free_addr;
use jetflow_crds::assignment::Assignment;
use jetflow_crds::checkpoint::{Checkpoint, SplitPosition};
use jetflow_testsupport::NatsServer;
use jetflow_worker::assignment::configmap::ConfigMapAssignment;
use jetflow_worker::pipeline::Change;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WORKER: &str = "orders-worker-7c9f4-x2x8q";

fn manifest(nats: &str) -> String {
    format!(
        r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata: {{name: orders, namespace: {NS}}}
spec:
  connection: {{url: "{nats}"}}
  source:
    jetstream:
      stream: orders
      filterSubjects: ["orders.eu", "orders.us"]
    bound: {{streamEnd: true}}
  sink:
    jetstream:
      stream: copies
      subject: "copies.{{{{token(2)}}}}"
  checkpoint: {{interval: 200ms}}
"#
    )
}

/// Starts the worker with the arguments the operator gives its pods, on the fake API.
fn start_pod(manifest: &Path, kubeconfig: &Path, dir: &Path, metrics: &str) -> Worker {
    let mut command = Worker::command();
    command
        .arg("-f")
        .arg(manifest)
        .args(["--checkpoint-store", "configmap"])
        .args(["--assignment-store", "configmap"])
        .args(["--worker-id", WORKER])
        .args(["--metrics-addr", metrics])
        .arg("--secrets-dir")
        .arg(dir)
        .env("KUBECONFIG", kubeconfig)
        .env("POD_NAMESPACE", NS)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT");
    Worker::spawn(command, dir, "pod", metrics)
}

fn assert_up_and_ready(worker: &mut Worker, when: &str) {
    if let Some(status) = worker.child.try_wait().unwrap() {
        panic!(
            "the worker exited ({status}) {when}; log:\n{}",
            worker.log_text()
        );
    }
    assert!(worker.is_ready(), "not ready {when}");
}

async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_worker_pod_waits_for_its_assignment_runs_to_the_bound_and_stays_up() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "orders", &["orders.>"]).await;
    create_stream(&js, "copies", &["copies.>"]).await;
    let published = publish(&js, &["orders.eu", "orders.us"], 2_000, 32).await;
    let api = FakeApi::new().await;
    api.create_checkpoint("orders").await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.serve(dir.path()).await;
    let path = write_manifest(dir.path(), &manifest(&server.url()));
    let metrics = free_addr();

    let mut worker = start_pod(&path, &kubeconfig, dir.path(), &metrics);
    worker.wait_ready(Duration::from_secs(30)).await;
    // No assignment yet: nothing runs, and the pod neither exits nor stops being ready.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_up_and_ready(&mut worker, "while it owns no split");
    assert_eq!(stream_len(&js, "copies").await, 0, "it owns nothing yet");

    let owners = BTreeMap::from([
        ("orders.eu".to_owned(), WORKER.to_owned()),
        ("orders.us".to_owned(), WORKER.to_owned()),
    ]);
    api.publish_assignment(
        "orders",
        &Assignment {
            generation: 1,
            owners,
        },
    )
    .await;
    wait_for_len(&js, "copies", 2_000, Duration::from_secs(60)).await;
    wait_until(
        "both splits are finished at their last message",
        async || {
            let c = api.checkpoint("orders").await;
            ["orders.eu", "orders.us"].iter().all(|s| {
                c.splits.get(*s).is_some_and(|p| {
                    p.finished
                        && p.position == *published[*s].last().unwrap()
                        && p.owner.as_deref() == Some(WORKER)
                        && p.generation == 1
                })
            })
        },
    )
    .await;
    // Finished: it stays up, idle and ready, until the operator scales the workers to 0.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_up_and_ready(&mut worker, "after its splits finished");
    assert!(
        worker
            .log_text()
            .contains("every split this worker owns has reached its bound"),
        "{}",
        worker.log_text()
    );

    let status = worker.terminate(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "log:\n{}", worker.log_text());
    assert_exactly_once(&read_all(&js, "copies").await, 1..=2_000);
    // It followed the assignment with a watch first (which the fake cannot serve), then by
    // reading the ConfigMap.
    let calls = api.calls();
    let assignment_path = format!("/api/v1/namespaces/{NS}/configmaps/orders-assignment");
    assert!(
        calls
            .iter()
            .any(|c| c.query.contains("watch=true") && c.query.contains("orders-assignment")),
        "{calls:?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.method == "GET" && c.path == assignment_path && c.status == 200),
        "{calls:?}"
    );
}

/// The fallback of the watch, on the fake API (which serves no watch): a change of the
/// assignment is still seen, by reading the ConfigMap at the poll interval, once each; and the
/// watch was tried, with the field selector of the one ConfigMap.
#[tokio::test]
async fn the_assignment_is_read_at_each_interval_while_the_watch_is_broken() {
    let api = FakeApi::new().await;
    let source = Arc::new(ConfigMapAssignment::new(api.worker_client(), NS, "orders"));
    let (tx, mut rx) = mpsc::channel(4);
    let cancel = CancellationToken::new();
    let task = source.follow(
        Assignment::default(),
        Duration::from_millis(50),
        tx,
        cancel.clone(),
    );
    let first = Assignment {
        generation: 1,
        owners: BTreeMap::from([("orders.eu".to_owned(), "w-0".to_owned())]),
    };
    api.publish_assignment("orders", &first).await;
    let next = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
    assert!(
        matches!(&next, Ok(Some(Change::Assignment(a))) if *a == first),
        "{next:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        rx.try_recv().is_err(),
        "an unchanged ConfigMap is no change"
    );
    cancel.cancel();
    task.await.unwrap();

    let calls = api.calls();
    let selector = "fieldSelector=metadata.name%3Dorders-assignment";
    assert!(
        calls
            .iter()
            .any(|c| c.query.contains("watch=true") && c.query.contains(selector)),
        "{calls:?}"
    );
    assert!(
        calls.iter().filter(|c| c.query.is_empty()).count() >= 3,
        "polled by name: {calls:?}"
    );
}

/// What `jetflow.io/reset` does while old workers still run: the operator replaces the
/// checkpoint (every position 0 under a new generation, recording the reset value) and publishes
/// the new assignment before the rollout replaced the pods. An old pod that takes the new
/// generation must still not write its old positions into the fresh checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_before_a_reset_never_writes_into_the_fresh_checkpoint() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "orders", &["orders.>"]).await;
    create_stream(&js, "copies", &["copies.>"]).await;
    publish(&js, &["orders.eu", "orders.us"], 200, 32).await;
    let api = FakeApi::new().await;
    api.create_checkpoint("orders").await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.serve(dir.path()).await;
    let unbounded = manifest(&server.url()).replace("    bound: {streamEnd: true}\n", "");
    let path = write_manifest(dir.path(), &unbounded);
    let metrics = free_addr();
    let owners = BTreeMap::from([
        ("orders.eu".to_owned(), WORKER.to_owned()),
        ("orders.us".to_owned(), WORKER.to_owned()),
    ]);
    api.publish_assignment(
        "orders",
        &Assignment {
            generation: 1,
            owners: owners.clone(),
        },
    )
    .await;

    let mut worker = start_pod(&path, &kubeconfig, dir.path(), &metrics);
    worker.wait_ready(Duration::from_secs(30)).await;
    wait_until("both splits are committed", async || {
        let c = api.checkpoint("orders").await;
        ["orders.eu", "orders.us"]
            .iter()
            .all(|s| c.splits.get(*s).is_some_and(|p| p.position > 0))
    })
    .await;

    // The reset, then the new assignment (same owners, next generation), as the operator
    // writes them before the rollout.
    let fresh = Checkpoint {
        id: 0,
        time: None,
        splits: ["orders.eu", "orders.us"]
            .iter()
            .map(|s| {
                (
                    (*s).to_owned(),
                    SplitPosition {
                        position: 0,
                        generation: 2,
                        ..Default::default()
                    },
                )
            })
            .collect(),
    };
    api.reset_checkpoint("orders", "2026-12-01", &fresh).await;
    api.publish_assignment(
        "orders",
        &Assignment {
            generation: 2,
            owners,
        },
    )
    .await;
    // More messages, and many checkpoint intervals for the old worker to try.
    publish(&js, &["orders.eu", "orders.us"], 200, 32).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        api.checkpoint("orders").await,
        fresh,
        "the old worker wrote into the reset checkpoint; log:\n{}",
        worker.log_text()
    );
    // Its stop is clean: the final checkpoint is not written either.
    let status = worker.terminate(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "log:\n{}", worker.log_text());
    assert_eq!(api.checkpoint("orders").await, fresh);
}
