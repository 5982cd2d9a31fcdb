//! The seam between the operator and the worker on a real nats-server: the operator's
//! reconcile (on an in-memory Kubernetes API) creates a Pipeline's consumers, and a real
//! `jetflow-worker` process, running the configuration the operator rendered, reads its splits
//! through exactly those consumers: nothing is recreated (same creation time, nothing in the
//! log), every message moves once. Also after a checkpoint, when the operator creates a
//! consumer after the committed position.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use jetflow_crds::checkpoint::Checkpoint;
use jetflow_crds::split::consumer_name;
use jetflow_crds::{Pipeline, PipelineStatus, Stream, names};
use jetflow_operator::controller::{Context, NatsPool, Settings};
use jetflow_operator::metrics::Metrics;
use jetflow_testsupport::NatsServer;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

const NS: &str = "shop";
const NAME: &str = "orders-copy";
const SPLITS: [&str; 2] = ["orders.eu", "orders.us"];

struct Operator {
    raw: kube::Client,
    ctx: Arc<Context>,
}

impl Operator {
    async fn new(nats: &NatsServer) -> Operator {
        let raw = kube_fake_client::ClientBuilder::new()
            .with_resource::<Pipeline>()
            .with_resource::<Stream>()
            .build()
            .await
            .expect("fake client");
        let ctx = Arc::new(Context::new(
            raw.clone(),
            Arc::new(Metrics::new()),
            NatsPool::new(nats.url()),
            Settings::default(),
            None,
        ));
        Operator { raw, ctx }
    }

    /// Creates the Pipeline as `kubectl apply` would (with the operator's finalizer in place,
    /// as the operator's own tests do).
    async fn create(&self, spec: serde_json::Value) {
        let mut p = Pipeline::new(NAME, serde_json::from_value(spec).expect("spec"));
        p.metadata.namespace = Some(NS.into());
        p.metadata.finalizers = Some(vec![jetflow_operator::FINALIZER.into()]);
        p.status = Some(PipelineStatus::default());
        Api::<Pipeline>::namespaced(self.raw.clone(), NS)
            .create(&PostParams::default(), &p)
            .await
            .expect("create pipeline");
    }

    async fn reconcile(&self) {
        let p = Api::<Pipeline>::namespaced(self.raw.clone(), NS)
            .get(NAME)
            .await
            .expect("pipeline");
        jetflow_operator::pipeline::reconcile(Arc::new(p), self.ctx.clone())
            .await
            .expect("reconcile");
    }

    /// The worker configuration the operator rendered, as a manifest file.
    async fn worker_manifest(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let cm = Api::<ConfigMap>::namespaced(self.raw.clone(), NS)
            .get(&names::config_map(NAME))
            .await
            .expect("worker configuration");
        write_manifest(dir, &cm.data.expect("data")[names::CONFIG_KEY])
    }

    /// Writes `checkpoint` into the checkpoint ConfigMap (what workers in pods do).
    async fn write_checkpoint(&self, checkpoint: &Checkpoint) {
        Api::<ConfigMap>::namespaced(self.raw.clone(), NS)
            .patch(
                &names::checkpoint_config_map(NAME),
                &PatchParams::default(),
                &Patch::Merge(&json!({"data": {
                    names::CHECKPOINT_KEY: serde_json::to_string(checkpoint).unwrap()
                }})),
            )
            .await
            .expect("write checkpoint");
    }
}

/// Each split's consumer: its creation time and deliver policy.
async fn consumers(
    js: &async_nats::jetstream::Context,
) -> BTreeMap<&'static str, async_nats::jetstream::consumer::Info> {
    let stream = js.get_stream("ORDERS").await.unwrap();
    let mut out = BTreeMap::new();
    for split in SPLITS {
        let info = stream
            .consumer_info(consumer_name(NS, NAME, split))
            .await
            .unwrap_or_else(|e| panic!("consumer of {split}: {e}"));
        out.insert(split, info);
    }
    out
}

/// Reads the worker's file checkpoint of `shop/orders-copy`.
fn worker_checkpoint(dir: &std::path::Path) -> Checkpoint {
    let path = dir.join(NS).join(format!("{NAME}.json"));
    std::fs::read(&path)
        .map(|t| serde_json::from_slice(&t).expect("checkpoint JSON"))
        .unwrap_or_default()
}

async fn wait_for_worker_positions(dir: &std::path::Path, want: &BTreeMap<String, u64>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let c = worker_checkpoint(dir);
        if want
            .iter()
            .all(|(s, p)| c.splits.get(s).is_some_and(|e| e.position == *p))
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "checkpoint {c:?} never reached {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_no_consumer_made(worker: &Worker) {
    let log = worker.log_text();
    for sign in [
        "recreating",
        "creating consumer",
        "updating the consumer",
        "cannot open split",
        "10012",
    ] {
        assert!(
            !log.contains(sign),
            "the worker did not read through the operator's consumer ({sign:?}); log:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_reads_through_the_consumers_the_operator_created() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "ORDERS", &["orders.>"]).await;
    create_stream(&js, "ORDERS_COPY", &["copy.>"]).await;
    let published = publish(&js, &SPLITS, 2_000, 32).await;

    let operator = Operator::new(&server).await;
    operator
        .create(json!({
            "source": {"jetstream": {"stream": "ORDERS", "filterSubjects": SPLITS}},
            "sink": {"jetstream": {"stream": "ORDERS_COPY", "subject": "copy.{{subject}}"}},
            "checkpoint": {"interval": "300ms"},
            "parallelism": 1,
        }))
        .await;
    operator.reconcile().await;
    let made = consumers(&js).await;
    for (split, info) in &made {
        assert_eq!(
            info.num_pending, 1_000,
            "{split}: lag visible before any worker"
        );
    }
    // A resync finds them as the shared definition wants them: nothing changes.
    operator.reconcile().await;
    let again = consumers(&js).await;
    for split in SPLITS {
        assert_eq!(again[split].created, made[split].created);
        assert_eq!(again[split].config, made[split].config);
    }

    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let manifest = operator.worker_manifest(dir.path()).await;
    let mut worker = Worker::start(&manifest, &server.url(), &checkpoints, &[]);
    wait_for_len(&js, "ORDERS_COPY", 2_000, Duration::from_secs(60)).await;
    let lasts: BTreeMap<String, u64> = SPLITS
        .iter()
        .map(|s| ((*s).to_owned(), *published[*s].last().unwrap()))
        .collect();
    wait_for_worker_positions(&checkpoints, &lasts).await;
    let read = consumers(&js).await;
    for split in SPLITS {
        assert_eq!(
            read[split].created, made[split].created,
            "{split}: the operator's consumer was read, not replaced"
        );
        assert_eq!(read[split].ack_floor.stream_sequence, lasts[split]);
    }
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "log:\n{}", worker.log_text());
    assert_no_consumer_made(&worker);

    // The operator creates a missing consumer after the committed position (a Pipeline
    // deleted and applied again, a consumer removed by hand): the worker reads on through it.
    let checkpoint = worker_checkpoint(&checkpoints);
    operator.write_checkpoint(&checkpoint).await;
    let stream = js.get_stream("ORDERS").await.unwrap();
    for split in SPLITS {
        stream
            .delete_consumer(&consumer_name(NS, NAME, split))
            .await
            .unwrap();
    }
    let more = publish(&js, &SPLITS, 600, 32).await;
    operator.reconcile().await;
    let made = consumers(&js).await;
    for split in SPLITS {
        assert_eq!(made[split].num_pending, 300, "{split}: only what follows");
    }
    let mut worker = Worker::start(&manifest, &server.url(), &checkpoints, &[]);
    wait_for_len(&js, "ORDERS_COPY", 2_600, Duration::from_secs(60)).await;
    let lasts: BTreeMap<String, u64> = SPLITS
        .iter()
        .map(|s| ((*s).to_owned(), *more[*s].last().unwrap()))
        .collect();
    wait_for_worker_positions(&checkpoints, &lasts).await;
    let read = consumers(&js).await;
    for split in SPLITS {
        assert_eq!(read[split].created, made[split].created, "{split}");
    }
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "log:\n{}", worker.log_text());
    assert_no_consumer_made(&worker);
    assert_exactly_once(&read_all(&js, "ORDERS_COPY").await, 1..=2_600);
}
