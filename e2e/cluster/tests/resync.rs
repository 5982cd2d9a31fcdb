//! The operator applies a pipeline's objects by server-side apply on every reconcile, and relies
//! on the API server to find nothing changed: on the local control plane, as on a real one,
//! reconciles of a running pipeline leave its objects as they are (no new resourceVersion, so
//! no watch event and no reconcile set off by the operator's own applies).

use jetflow_crds::names;
use jetflow_e2e_cluster::{Cluster, TIMEOUT};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;

const NS: &str = "shop";
const PIPELINE: &str = "orders-copy";

/// The resourceVersion of every object the operator applies for the pipeline.
async fn versions(cluster: &Cluster) -> Vec<(String, Option<String>)> {
    let c = cluster.client.clone();
    let workers = names::workers(PIPELINE);
    let rv = |what: &str, meta: kube::api::ObjectMeta| (what.to_owned(), meta.resource_version);
    vec![
        rv(
            "Deployment",
            Api::<Deployment>::namespaced(c.clone(), NS)
                .get(&workers)
                .await
                .expect("the Deployment")
                .metadata,
        ),
        rv(
            "config ConfigMap",
            Api::<ConfigMap>::namespaced(c.clone(), NS)
                .get(&names::config_map(PIPELINE))
                .await
                .expect("the config ConfigMap")
                .metadata,
        ),
        rv(
            "assignment ConfigMap",
            Api::<ConfigMap>::namespaced(c.clone(), NS)
                .get(&names::assignment_config_map(PIPELINE))
                .await
                .expect("the assignment ConfigMap")
                .metadata,
        ),
        rv(
            "ServiceAccount",
            Api::<ServiceAccount>::namespaced(c.clone(), NS)
                .get(&workers)
                .await
                .expect("the ServiceAccount")
                .metadata,
        ),
        rv(
            "Role",
            Api::<Role>::namespaced(c.clone(), NS)
                .get(&workers)
                .await
                .expect("the Role")
                .metadata,
        ),
        rv(
            "RoleBinding",
            Api::<RoleBinding>::namespaced(c.clone(), NS)
                .get(&workers)
                .await
                .expect("the RoleBinding")
                .metadata,
        ),
    ]
}

/// How many times the operator reported an invalid rewind annotation (one Event, its series
/// counted).
async fn invalid_rewinds_reported(cluster: &Cluster) -> i32 {
    Api::<Event>::namespaced(cluster.client.clone(), NS)
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.name.as_deref() == Some(PIPELINE))
                && e.reason.as_deref() == Some("InvalidRewind")
        })
        .map(|e| e.series.as_ref().map_or(1, |s| s.count))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciles_of_a_running_pipeline_leave_its_objects_untouched() {
    let cluster = Cluster::start().await;
    cluster.apply(NS, &Cluster::example("passthrough"));
    cluster.wait_condition(NS, PIPELINE, "Ready", "True").await;
    cluster
        .wait_condition(NS, PIPELINE, "Progressing", "False")
        .await;
    // Someone else writes to the Deployment too (a person's annotation, another tool), so that
    // the operator's field manager entry is no longer the last one.
    cluster.kubectl_ok(&[
        "annotate",
        "deployment",
        &names::workers(PIPELINE),
        "-n",
        NS,
        "example.com/owner=team-a",
    ]);
    let before = versions(&cluster).await;

    // Each new (invalid) rewind value sets off a reconcile that reports it in an Event and
    // applies every object as before. One reconcile of a Pipeline runs at a time: once the
    // third value is reported, the reconciles of the first two have finished.
    for n in 1..=3 {
        let value = format!("not-a-rewind-{n}");
        cluster.kubectl_ok(&[
            "annotate",
            "pipeline",
            PIPELINE,
            "-n",
            NS,
            "--overwrite",
            &format!("{}={value}", names::REWIND_ANNOTATION),
        ]);
        cluster
            .wait_for(&format!("the Event about {value}"), TIMEOUT, || async {
                (invalid_rewinds_reported(&cluster).await >= n).then_some(())
            })
            .await;
    }
    assert_eq!(
        versions(&cluster).await,
        before,
        "a reconcile with nothing to change wrote\n{}",
        cluster.diagnostics()
    );
}
