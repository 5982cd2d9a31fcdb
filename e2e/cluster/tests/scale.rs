//! A Pipeline scaled through its `scale` subresource, as `kubectl scale`, a
//! HorizontalPodAutoscaler or KEDA do it: `spec.parallelism` is the Scale's `spec.replicas`,
//! `status.replicas` the worker pods there are, `status.selector` the worker pods' label
//! selector. On the local control plane with the real operator, worker pods and a real
//! nats-server, while traffic flows; every message is checked for loss and duplicates.

use jetflow_e2e_cluster::nats::{self, Traffic};
use jetflow_e2e_cluster::{Cluster, TIMEOUT};
use k8s_openapi::api::apps::v1::Deployment;
use serde_json::Value;

const NS: &str = "shop";
const PIPELINE: &str = "orders-copy";
const WORKERS: &str = "orders-copy-worker";
const SCALE_PATH: &str = "/apis/jetflow.io/v1alpha1/namespaces/shop/pipelines/orders-copy/scale";

/// The worker Deployment's selector, written as a label selector string.
async fn deployment_selector(cluster: &Cluster) -> String {
    let d = kube::Api::<Deployment>::namespaced(cluster.client.clone(), NS)
        .get(WORKERS)
        .await
        .unwrap_or_else(|e| panic!("the worker Deployment: {e}\n{}", cluster.diagnostics()));
    let labels = d
        .spec
        .and_then(|s| s.selector.match_labels)
        .expect("the worker Deployment selects by labels");
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The Pipeline's Scale, read as an autoscaler reads it.
fn scale(cluster: &Cluster) -> Value {
    let raw = cluster.kubectl_ok(&["get", "--raw", SCALE_PATH]);
    serde_json::from_str(&raw).unwrap_or_else(|e| panic!("a Scale: {e}: {raw}"))
}

/// `kubectl scale` the Pipeline to `replicas` and wait until the workers and the status follow:
/// the Deployment has `replicas` ready pods, the status counts them and they own every split,
/// and the Scale says so.
async fn scale_to(cluster: &Cluster, replicas: u32, selector: &str) {
    let out = cluster.kubectl_ok(&[
        "scale",
        "pipeline",
        PIPELINE,
        "-n",
        NS,
        "--replicas",
        &replicas.to_string(),
    ]);
    assert!(out.contains("scaled"), "kubectl scale said: {out}");
    assert_eq!(
        cluster.kubectl_ok(&[
            "get",
            "pipeline",
            PIPELINE,
            "-n",
            NS,
            "-o",
            "jsonpath={.spec.parallelism}",
        ]),
        replicas.to_string(),
        "the Scale's spec.replicas is spec.parallelism"
    );
    cluster
        .wait_for_ready_deployment(NS, WORKERS, replicas)
        .await;
    let n = replicas as i32;
    cluster
        .wait_pipeline(
            NS,
            PIPELINE,
            &format!("status.replicas {replicas}, {replicas} ready, every split owned"),
            |p| {
                p.status.as_ref().is_some_and(|s| {
                    s.replicas == n
                        && s.ready_replicas == n
                        && !s.splits.is_empty()
                        && s.splits.iter().all(|s| s.owner.is_some())
                })
            },
        )
        .await;
    let scale = scale(cluster);
    assert_eq!(scale["kind"], "Scale", "{scale}");
    assert_eq!(scale["spec"]["replicas"], replicas, "{scale}");
    assert_eq!(scale["status"]["replicas"], replicas, "{scale}");
    assert_eq!(scale["status"]["selector"], selector, "{scale}");
    // The selector finds exactly the worker pods, as an autoscaler looking up their metrics
    // does.
    let pods = cluster.kubectl_ok(&["get", "pods", "-n", NS, "-l", selector, "-o", "name"]);
    let live = cluster.pods(NS, selector).await;
    assert_eq!(live.len(), replicas as usize, "{pods}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_scale_pipeline_scales_the_workers_and_the_scale_subresource_reports_them() {
    let cluster = Cluster::start().await;
    cluster.apply(NS, &Cluster::example("passthrough"));
    cluster.wait_condition(NS, PIPELINE, "Ready", "True").await;
    cluster.wait_for_ready_deployment(NS, WORKERS, 1).await;

    // The Scale of a fresh pipeline: one worker, selected by the Deployment's selector.
    let selector = deployment_selector(&cluster).await;
    assert_eq!(
        selector,
        "app.kubernetes.io/name=jetflow-worker,jetflow.io/pipeline=orders-copy"
    );
    let p = cluster
        .wait_pipeline(NS, PIPELINE, "status.selector and 1 replica", |p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.selector.is_some() && s.replicas == 1)
        })
        .await;
    assert_eq!(
        p.status.and_then(|s| s.selector).as_deref(),
        Some(selector.as_str())
    );
    let first = scale(&cluster);
    assert_eq!(first["spec"]["replicas"], 1, "{first}");
    assert_eq!(first["status"]["replicas"], 1, "{first}");
    assert_eq!(first["status"]["selector"], selector.as_str(), "{first}");

    let js = cluster.nats.jetstream().await;
    let flow = Traffic::start(js.clone(), 5);
    nats::wait_for_count(&js, "orders-copy", 50, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.diagnostics()));

    scale_to(&cluster, 2, &selector).await;
    scale_to(&cluster, 1, &selector).await;

    // Scaling to zero is refused by the CRD's rule on spec.parallelism (suspend stops the
    // workers instead), and changes nothing.
    let zero = cluster.kubectl(&["scale", "pipeline", PIPELINE, "-n", NS, "--replicas", "0"]);
    let stderr = String::from_utf8_lossy(&zero.stderr);
    assert!(!zero.status.success(), "scaled to 0: {stderr}");
    assert!(
        stderr.contains("parallelism must be at least 1"),
        "the CRD's message in {stderr}"
    );
    assert_eq!(scale(&cluster)["spec"]["replicas"], 1);

    traffic_flow_exactly_once(&cluster, &js, flow).await;
}

/// Stops the traffic and checks that the sink holds every published message exactly once.
async fn traffic_flow_exactly_once(
    cluster: &Cluster,
    js: &async_nats::jetstream::Context,
    flow: Traffic,
) {
    let expected = flow.stop().await;
    assert!(expected.len() > 50, "traffic flowed: {}", expected.len());
    cluster
        .assert_exactly_once(js, "orders-copy", &expected)
        .await;
}
