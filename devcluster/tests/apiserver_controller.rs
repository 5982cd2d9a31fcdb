//! A kube-runtime `Controller` against the local API server, as jetflow's operator runs one:
//! it sees Pipelines, server-side applies an owned ConfigMap and the status, and settles:
//! its repeated no-op applies write nothing (no new resourceVersion, so no watch event that
//! would make it loop).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Cluster, eventually, pipeline, pipelines};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ReconcileError(#[from] kube::Error);

struct Ctx {
    client: kube::Client,
    runs: AtomicUsize,
}

async fn reconcile(p: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    ctx.runs.fetch_add(1, Ordering::SeqCst);
    let ns = p.namespace().unwrap_or_default();
    let owner = p.controller_owner_ref(&pipelines()).expect("owner ref");
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("{}-config", p.name_any()), "ownerReferences": [owner]},
        "data": {"parallelism": p.data["spec"]["parallelism"].to_string()},
    });
    let pp = PatchParams::apply("jetflow-operator").force();
    Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns)
        .patch(&format!("{}-config", p.name_any()), &pp, &Patch::Apply(cm))
        .await?;
    let status = json!({"apiVersion": "jetflow.io/v1alpha1", "kind": "Pipeline", "status": {"phase": "Running", "observedGeneration": p.meta().generation}});
    Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &ns, &pipelines())
        .patch_status(&p.name_any(), &pp, &Patch::Apply(status))
        .await?;
    Ok(Action::requeue(Duration::from_millis(50)))
}

fn error_policy(_: Arc<DynamicObject>, _: &ReconcileError, _: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_millis(100))
}

#[tokio::test]
async fn a_controller_reconciles_owned_objects_and_settles_without_writes() {
    let cluster = Cluster::start().await;
    let client = cluster.client().await;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &pipelines());
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        runs: AtomicUsize::new(0),
    });
    let controller = Controller::new_with(api.clone(), watcher::Config::default(), pipelines())
        .owns(
            Api::<ConfigMap>::all(client.clone()),
            watcher::Config::default(),
        )
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    let running = tokio::spawn(controller);

    api.create(&PostParams::default(), &pipeline("p"))
        .await
        .expect("pipeline");
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let cm = eventually("the owned ConfigMap", || async {
        cms.get_opt("p-config").await.expect("get")
    })
    .await;
    let settled = eventually("the status", || async {
        let p = api.get("p").await.expect("get");
        (p.data["status"]["phase"] == "Running").then_some(p)
    })
    .await;

    // Several more reconciles (requeued every 50 ms) write nothing.
    let runs = ctx.runs.load(Ordering::SeqCst);
    eventually("five more reconciles", || async {
        (ctx.runs.load(Ordering::SeqCst) >= runs + 5).then_some(())
    })
    .await;
    assert_eq!(
        api.get("p").await.expect("get").metadata.resource_version,
        settled.metadata.resource_version
    );
    assert_eq!(
        cms.get("p-config")
            .await
            .expect("get")
            .metadata
            .resource_version,
        cm.metadata.resource_version
    );

    // A spec change is seen, reconciled, and observed in the status.
    api.patch(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"parallelism": 4}})),
    )
    .await
    .expect("spec");
    eventually("the new parallelism in the ConfigMap", || async {
        let cm = cms.get("p-config").await.expect("get");
        (cm.data
            .unwrap_or_default()
            .get("parallelism")
            .map(String::as_str)
            == Some("4"))
        .then_some(())
    })
    .await;
    eventually("observedGeneration 2", || async {
        (api.get("p").await.expect("get").data["status"]["observedGeneration"] == 2).then_some(())
    })
    .await;

    // Deleting the Pipeline garbage-collects its ConfigMap.
    api.delete("p", &Default::default()).await.expect("delete");
    eventually("the ConfigMap collected", || async {
        cms.get_opt("p-config")
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    running.abort();
}

#[tokio::test]
async fn kube_runtime_finalizer_helper_adds_its_finalizer_and_cleans_up_on_delete() {
    use kube::runtime::finalizer::{Event, finalizer};
    let cluster = Cluster::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await);
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "fin"}})).expect("configmap");
    api.create(&PostParams::default(), &cm)
        .await
        .expect("create");
    let run = |api: Api<ConfigMap>| async move {
        let obj = Arc::new(api.get("fin").await.expect("get"));
        finalizer(&api, "jetflow.io/cleanup", obj, |event| async move {
            Ok::<_, ReconcileError>(match event {
                Event::Apply(_) | Event::Cleanup(_) => Action::await_change(),
            })
        })
        .await
        .expect("finalizer step")
    };
    // First step: the finalizer is added (a JSON patch that tests the list and the version).
    run(api.clone()).await;
    let with = api.get("fin").await.expect("get");
    assert_eq!(
        with.metadata.finalizers,
        Some(vec!["jetflow.io/cleanup".to_string()])
    );
    // Deleted: held by the finalizer until the cleanup step removes it.
    api.delete("fin", &Default::default())
        .await
        .expect("delete");
    assert!(
        api.get("fin")
            .await
            .expect("held")
            .metadata
            .deletion_timestamp
            .is_some()
    );
    run(api.clone()).await;
    assert!(api.get_opt("fin").await.expect("get").is_none());
}
