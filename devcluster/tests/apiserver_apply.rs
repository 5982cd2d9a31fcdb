//! Server-side apply of an unchanged object is no write, as on a real API server: same
//! resourceVersion, no watch event. The operator relies on it to apply its child objects on
//! every resync without comparing them first.

mod common;

use std::time::Duration;

use common::Cluster;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::{Value, json};

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "workers", "labels": {"app": "w"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "w"}},
            "template": {
                "metadata": {"labels": {"app": "w"}, "annotations": {"hash": "abc"}},
                "spec": {"containers": [{
                    "name": "worker",
                    "image": "jetflow:1",
                    "env": [{"name": "A", "value": "1"}],
                    "resources": {"requests": {"cpu": "1000m", "memory": "0.5Gi"},
                                  "limits": {"cpu": "1500m"}},
                }]},
            },
        },
    })
}

#[tokio::test]
async fn an_unchanged_apply_after_another_managers_write_changes_nothing_and_sends_no_event() {
    let cluster = Cluster::start().await;
    let client = cluster.client().await;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let pp = PatchParams::apply("jetflow-operator").force();
    deployments
        .patch("workers", &pp, &Patch::Apply(&deployment()))
        .await
        .expect("apply creates");
    // Another manager writes after the apply (its managedFields entry comes after ours), as a
    // person's `kubectl annotate` or a controller's status update does.
    deployments
        .patch(
            "workers",
            &PatchParams {
                field_manager: Some("kubectl-annotate".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"metadata": {"annotations": {"note": "x"}}})),
        )
        .await
        .expect("annotate");
    deployments
        .patch_status(
            "workers",
            &PatchParams {
                field_manager: Some("deployment-controller".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"status": {"replicas": 2, "readyReplicas": 2}})),
        )
        .await
        .expect("status");
    let before = deployments.get("workers").await.expect("read");

    let mut events = watcher(
        Api::<Deployment>::default_namespaced(client.clone()),
        watcher::Config::default(),
    )
    .boxed();
    loop {
        match events.try_next().await.expect("watch") {
            Some(watcher::Event::InitDone) => break,
            Some(_) => {}
            None => panic!("the watch ended"),
        }
    }

    for _ in 0..3 {
        let again = deployments
            .patch("workers", &pp, &Patch::Apply(&deployment()))
            .await
            .expect("apply again");
        assert_eq!(
            again.metadata.resource_version, before.metadata.resource_version,
            "an unchanged apply wrote: {:#?}\nbefore: {:#?}",
            again.metadata.managed_fields, before.metadata.managed_fields
        );
    }
    // A real change afterwards is the next event the watch sees: nothing came before it.
    let mut changed = deployment();
    changed["spec"]["replicas"] = json!(3);
    let after = deployments
        .patch("workers", &pp, &Patch::Apply(&changed))
        .await
        .expect("apply a change");
    assert_ne!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    let next = tokio::time::timeout(Duration::from_secs(10), events.try_next())
        .await
        .expect("an event in time")
        .expect("watch")
        .expect("stream open");
    match next {
        watcher::Event::Apply(d) => assert_eq!(
            d.metadata.resource_version, after.metadata.resource_version,
            "the first event after the unchanged applies is the change"
        ),
        other => panic!("unexpected event {other:?}"),
    }

    // The same for a ConfigMap applied with a resourceVersion pinned to the version read.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "assignment"}, "data": {"a": "1"}});
    let first = cms
        .patch("assignment", &pp, &Patch::Apply(&cm))
        .await
        .expect("apply creates");
    let mut pinned = cm.clone();
    pinned["metadata"]["resourceVersion"] = json!(first.metadata.resource_version);
    let again = cms
        .patch("assignment", &pp, &Patch::Apply(&pinned))
        .await
        .expect("pinned apply again");
    assert_eq!(
        again.metadata.resource_version,
        first.metadata.resource_version
    );
}
