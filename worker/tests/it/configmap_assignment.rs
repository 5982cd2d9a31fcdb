//! The assignment ConfigMap the operator publishes, read by the worker on an in-memory
//! Kubernetes API: no ConfigMap is no assignment, every change is seen once, a bad document
//! keeps the assignment in force; and with a real nats-server, a worker that starts owning
//! nothing (and is ready) runs the splits the ConfigMap gives it, checkpointing into the
//! checkpoint ConfigMap.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::kube_support::{FakeApi, NS};
use jetflow_crds::assignment::Assignment;
use jetflow_crds::split::static_splits;
use jetflow_testsupport::NatsServer;
use jetflow_worker::assignment::configmap::ConfigMapAssignment;
use jetflow_worker::assignment::{self, AssignmentSource};
use jetflow_worker::cluster::{StoreKind, Stores};
use jetflow_worker::http::Health;
use jetflow_worker::pipeline::{Change, Membership};
use jetflow_worker::{Metrics, RunOutcome, Runner, RunnerConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn owners(generation: u64, list: &[(&str, &str)]) -> Assignment {
    Assignment {
        generation,
        owners: list
            .iter()
            .map(|(s, w)| ((*s).to_owned(), (*w).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    }
}

async fn next_assignment(rx: &mut mpsc::Receiver<Change>) -> Assignment {
    match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
        Ok(Some(Change::Assignment(a))) => a,
        other => panic!("expected an assignment change, got {other:?}"),
    }
}

#[tokio::test]
async fn assignment_config_map_changes_are_seen_once_each() {
    let api = FakeApi::new().await;
    let source = Arc::new(ConfigMapAssignment::new(api.worker_client(), NS, "orders"));
    assert_eq!(source.location(), "ConfigMap shop/orders-assignment");

    // Not published yet: the worker owns nothing.
    assert_eq!(source.load().await.unwrap(), None);
    let initial = assignment::initial(source.as_ref()).await.unwrap();
    assert_eq!(initial, Assignment::default());

    let (tx, mut rx) = mpsc::channel(4);
    let cancel = CancellationToken::new();
    let watch = assignment::watch(
        source.clone(),
        initial,
        Duration::from_millis(20),
        tx,
        cancel.clone(),
    );

    let first = owners(1, &[("orders.eu", "w-0"), ("orders.us", "w-1")]);
    api.publish_assignment("orders", &first).await;
    assert_eq!(next_assignment(&mut rx).await, first);

    // A document that does not parse is an error of the read; the assignment in force stays.
    let name = jetflow_crds::names::assignment_config_map("orders");
    let broken =
        serde_json::json!({ "data": { jetflow_crds::names::ASSIGNMENT_KEY: "{not json" } });
    api.config_maps()
        .patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&broken),
        )
        .await
        .unwrap();
    let err = source.load().await.unwrap_err();
    assert!(err.to_string().contains("not valid"), "{err}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(rx.try_recv().is_err(), "a broken document is no change");

    let second = owners(2, &[("orders.eu", "w-1"), ("orders.us", "w-1")]);
    api.publish_assignment("orders", &second).await;
    assert_eq!(next_assignment(&mut rx).await, second);
    assert_eq!(
        second.splits_of("w-1").collect::<Vec<_>>(),
        ["orders.eu", "orders.us"]
    );

    // Polls of an unchanged ConfigMap send nothing.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(rx.try_recv().is_err());
    cancel.cancel();
    watch.await.unwrap();

    // Only reads of the assignment ConfigMap (the Role grants get on it, nothing to write).
    let calls = api.calls();
    assert!(calls.len() > 5);
    for call in calls {
        assert_eq!(call.method, "GET", "{call:?}");
        assert_eq!(
            call.path,
            format!("/api/v1/namespaces/{NS}/configmaps/orders-assignment")
        );
    }
}

const MANIFEST: &str = r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata: {name: orders, namespace: shop}
spec:
  source:
    jetstream:
      stream: orders
      filterSubjects: ["orders.eu", "orders.us"]
  sink:
    jetstream:
      stream: copies
      subject: "copies.{{token(2)}}"
  checkpoint: {interval: 200ms}
"#;

async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a worker pod does: both stores are ConfigMaps (through [`Stores`], as with
/// `--checkpoint-store configmap --assignment-store configmap`); it starts before the operator
/// gave it anything, is ready, and runs what the assignment ConfigMap gives it, one split and
/// then the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_the_splits_the_assignment_config_map_gives_it() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "orders", &["orders.>"]).await;
    create_stream(&js, "copies", &["copies.>"]).await;
    let published = publish(&js, &["orders.eu", "orders.us"], 2_000, 32).await;
    let api = FakeApi::new().await;
    api.create_checkpoint("orders").await;

    let dir = tempfile::tempdir().unwrap();
    let pipeline =
        jetflow_crds::manifest::load_pipeline(&write_manifest(dir.path(), MANIFEST), None).unwrap();
    let stores = Stores::with_client(api.worker_client(), NS);
    let store = stores
        .checkpoint(StoreKind::Configmap, dir.path(), NS, "orders", None)
        .unwrap();
    let feed = stores
        .assignment(StoreKind::Configmap, None, "orders")
        .unwrap()
        .expect("an assignment source");
    assert_eq!(feed.source.location(), "ConfigMap shop/orders-assignment");

    let worker = "orders-worker-abc12";
    let initial = assignment::initial(feed.source.as_ref()).await.unwrap();
    let (tx, rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    assignment::watch(
        feed.source.clone(),
        initial.clone(),
        Duration::from_millis(50),
        tx,
        cancel.child_token(),
    );
    let membership = Membership::new(
        static_splits(&pipeline.spec),
        Some(initial),
        Some(rx),
        // The other owner of orders.us never releases it (it is gone): given up after this.
        Duration::from_secs(2),
    );
    let health = Arc::new(Health::default());
    let runner = Runner::new(
        RunnerConfig {
            pipeline,
            worker_id: worker.into(),
            generation: 0,
            shutdown_timeout: Duration::from_secs(20),
        },
        server.client().await,
        store,
        Metrics::new(),
        health.clone(),
    )
    .await
    .unwrap();
    let run = tokio::spawn(runner.run_with(membership, cancel.clone()));

    wait_until("the worker is ready", async || health.is_ready()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stream_len(&js, "copies").await, 0, "it owns nothing yet");

    api.publish_assignment(
        "orders",
        &owners(
            1,
            &[("orders.eu", worker), ("orders.us", "orders-worker-other")],
        ),
    )
    .await;
    wait_for_len(&js, "copies", 1_000, Duration::from_secs(30)).await;
    let eu_last = *published["orders.eu"].last().unwrap();
    wait_until("orders.eu is checkpointed", async || {
        api.checkpoint("orders")
            .await
            .splits
            .get("orders.eu")
            .is_some_and(|p| p.position == eu_last && p.generation == 1)
    })
    .await;
    let records = read_all(&js, "copies").await;
    assert!(records.iter().all(|r| r.source_subject == "orders.eu"));
    assert!(
        !api.checkpoint("orders")
            .await
            .splits
            .contains_key("orders.us"),
        "a split it does not own is not touched"
    );

    api.publish_assignment(
        "orders",
        &owners(2, &[("orders.eu", worker), ("orders.us", worker)]),
    )
    .await;
    wait_for_len(&js, "copies", 2_000, Duration::from_secs(30)).await;
    let us_last = *published["orders.us"].last().unwrap();
    wait_until("orders.us is checkpointed", async || {
        api.checkpoint("orders")
            .await
            .splits
            .get("orders.us")
            .is_some_and(|p| p.position == us_last)
    })
    .await;
    assert!(health.is_ready());
    cancel.cancel();
    assert_eq!(run.await.unwrap().unwrap(), RunOutcome::Completed);

    assert_exactly_once(&read_all(&js, "copies").await, 1..=2_000);
    let checkpoint = api.checkpoint("orders").await;
    // The stop released every split in the final checkpoint, under the generation in force.
    for split in ["orders.eu", "orders.us"] {
        assert_eq!(checkpoint.splits[split].owner.as_deref(), Some(worker));
        assert_eq!(checkpoint.splits[split].generation, 2);
        assert!(checkpoint.splits[split].released, "{split}");
    }
}
