//! The runner with its checkpoints in a ConfigMap (on the in-memory Kubernetes API) and a real
//! nats-server: checkpoints land in the ConfigMap the operator created, a second run resumes
//! from it without duplicates, and a worker that owns no split yet is ready (the operator
//! assigns splits only to ready pods) and writes nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::kube_support::{FakeApi, NS};
use jetflow_crds::Pipeline;
use jetflow_crds::split::static_splits;
use jetflow_testsupport::NatsServer;
use jetflow_worker::checkpoint::{CheckpointStore, ConfigMapStore};
use jetflow_worker::http::Health;
use jetflow_worker::{Metrics, RunError, RunOutcome, Runner, RunnerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

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

fn pipeline() -> Pipeline {
    let dir = tempfile::tempdir().unwrap();
    let path = write_manifest(dir.path(), MANIFEST);
    let p = jetflow_crds::manifest::load_pipeline(&path, None).unwrap();
    jetflow_crds::validate::pipeline(&p).unwrap();
    p
}

struct Running {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<RunOutcome, RunError>>,
}

async fn start(
    server: &NatsServer,
    store: Arc<dyn CheckpointStore>,
    worker: &str,
    owned: bool,
    health: Arc<Health>,
) -> Running {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let p = pipeline();
    let splits = if owned {
        static_splits(&p.spec)
    } else {
        Vec::new()
    };
    let runner = Runner::new(
        RunnerConfig {
            pipeline: p,
            worker_id: worker.into(),
            generation: 1,
            shutdown_timeout: Duration::from_secs(20),
        },
        server.client().await,
        store,
        Metrics::new(),
        health,
    )
    .await
    .unwrap();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(runner.run(splits, cancel.clone()));
    Running { cancel, task }
}

/// Waits until the ConfigMap's checkpoint holds `want` for every split.
async fn wait_for_positions(api: &FakeApi, want: &[(&str, u64)]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = api.checkpoint("orders").await;
        if want
            .iter()
            .all(|(s, p)| c.splits.get(*s).is_some_and(|e| e.position == *p))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "checkpoint {c:?} never reached {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn last(seqs: &std::collections::BTreeMap<String, Vec<u64>>, subject: &str) -> u64 {
    *seqs[subject].last().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_checkpoints_land_in_the_config_map_and_a_restart_resumes_there() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "orders", &["orders.>"]).await;
    create_stream(&js, "copies", &["copies.>"]).await;
    let api = FakeApi::new().await;
    let created = api.create_checkpoint("orders").await;
    let store: Arc<dyn CheckpointStore> =
        Arc::new(ConfigMapStore::new(api.worker_client(), NS, "orders"));

    let first = publish(&js, &["orders.eu", "orders.us"], 3_000, 64).await;
    let run = start(
        &server,
        store.clone(),
        "orders-worker-0",
        true,
        Arc::default(),
    )
    .await;
    wait_for_len(&js, "copies", 3_000, Duration::from_secs(60)).await;
    // Checkpoints land in the ConfigMap while the run goes on, not only at shutdown.
    let (eu, us) = (last(&first, "orders.eu"), last(&first, "orders.us"));
    wait_for_positions(&api, &[("orders.eu", eu), ("orders.us", us)]).await;
    run.cancel.cancel();
    assert_eq!(run.task.await.unwrap().unwrap(), RunOutcome::Completed);

    let c = api.checkpoint("orders").await;
    assert!(c.id >= 1);
    for split in ["orders.eu", "orders.us"] {
        assert_eq!(c.splits[split].owner.as_deref(), Some("orders-worker-0"));
        assert_eq!(c.splits[split].generation, 1);
    }
    let cm = api
        .config_maps()
        .get(&jetflow_crds::names::checkpoint_config_map("orders"))
        .await
        .unwrap();
    assert_eq!(cm.metadata.labels, created.metadata.labels);

    // Another pod (a new ConfigMapStore, a new runner) resumes from the ConfigMap.
    let second = publish(&js, &["orders.eu", "orders.us"], 1_000, 64).await;
    let store: Arc<dyn CheckpointStore> =
        Arc::new(ConfigMapStore::new(api.worker_client(), NS, "orders"));
    let run = start(&server, store, "orders-worker-1", true, Arc::default()).await;
    wait_for_len(&js, "copies", 4_000, Duration::from_secs(60)).await;
    let (eu, us) = (last(&second, "orders.eu"), last(&second, "orders.us"));
    wait_for_positions(&api, &[("orders.eu", eu), ("orders.us", us)]).await;
    run.cancel.cancel();
    assert_eq!(run.task.await.unwrap().unwrap(), RunOutcome::Completed);
    let records = read_all(&js, "copies").await;
    assert_exactly_once(&records, 1..=4_000);
    assert!(records.iter().all(|r| r.msg_id.starts_with("shop/orders:")));
    let c = api.checkpoint("orders").await;
    assert_eq!(
        c.splits["orders.eu"].owner.as_deref(),
        Some("orders-worker-1")
    );

    // The worker's client kept to its Role: get and update of its checkpoint ConfigMap.
    for call in api.calls() {
        assert!(
            matches!(call.method.as_str(), "GET" | "PUT")
                && call.path == format!("/api/v1/namespaces/{NS}/configmaps/orders-checkpoint"),
            "unexpected {call:?}"
        );
    }
}

/// `GET /readyz` on the worker's HTTP server, over TCP: the status code.
async fn readyz(addr: std::net::SocketAddr) -> u16 {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /readyz HTTP/1.1\r\nHost: worker\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_owns_no_split_is_ready_and_writes_nothing() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "orders", &["orders.>"]).await;
    create_stream(&js, "copies", &["copies.>"]).await;
    publish(&js, &["orders.eu", "orders.us"], 100, 16).await;
    let api = FakeApi::new().await;
    api.create_checkpoint("orders").await;
    let store: Arc<dyn CheckpointStore> =
        Arc::new(ConfigMapStore::new(api.worker_client(), NS, "orders"));

    let health = Arc::new(Health::default());
    let http_cancel = CancellationToken::new();
    let (addr, http) = jetflow_worker::http::serve(
        "127.0.0.1:0".parse().unwrap(),
        Metrics::new(),
        health.clone(),
        http_cancel.clone(),
    )
    .await
    .unwrap();
    assert_eq!(readyz(addr).await, 503, "not ready before the run starts");

    let run = start(&server, store, "orders-worker-2", false, health.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while readyz(addr).await != 200 {
        assert!(
            Instant::now() < deadline,
            "a worker without splits never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Several checkpoint intervals with nothing to commit.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(readyz(addr).await, 200);
    assert_eq!(stream_len(&js, "copies").await, 0);

    run.cancel.cancel();
    assert_eq!(run.task.await.unwrap().unwrap(), RunOutcome::Completed);
    assert_eq!(readyz(addr).await, 503, "not ready once stopped");
    http_cancel.cancel();
    http.await.unwrap();

    assert!(
        api.calls().iter().all(|c| c.method == "GET"),
        "{:?}",
        api.calls()
    );
    assert_eq!(api.checkpoint("orders").await.id, 0);
}
