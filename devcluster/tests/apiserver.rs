//! The local API server through kube-rs (client read from the kubeconfig it writes): CRUD,
//! conflicts, patches, server-side apply, subresources, watches, finalizers, garbage
//! collection and authentication.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Cluster, eventually, pipeline, pipelines};
use futures::{StreamExt, TryStreamExt};
use jetflow_devcluster::apiserver::Config;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::runtime::watcher;
use serde_json::json;

fn cm(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    }
}

fn is_status(err: &kube::Error, code: u16, reason: &str) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == code && s.reason == reason)
}

#[tokio::test]
async fn configmap_crud_with_stale_update_refused_as_conflict() {
    let cluster = Cluster::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await);
    let created = api
        .create(&PostParams::default(), &cm("a", &[("k", "1")]))
        .await
        .expect("create");
    let err = api
        .create(&PostParams::default(), &cm("a", &[]))
        .await
        .expect_err("second create");
    assert!(is_status(&err, 409, "AlreadyExists"), "{err:?}");

    let mut update = created.clone();
    update.data = Some(BTreeMap::from([("k".into(), "2".into())]));
    let updated = api
        .replace("a", &PostParams::default(), &update)
        .await
        .expect("update with the current rv");
    assert_ne!(
        updated.metadata.resource_version,
        created.metadata.resource_version
    );

    // The same resourceVersion again is stale now.
    let err = api
        .replace("a", &PostParams::default(), &update)
        .await
        .expect_err("stale update");
    assert!(is_status(&err, 409, "Conflict"), "{err:?}");

    let patched = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"j": "x"}})),
        )
        .await
        .expect("merge patch");
    assert_eq!(
        patched
            .data
            .as_ref()
            .and_then(|d| d.get("j"))
            .map(String::as_str),
        Some("x")
    );
    let patched = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::<()>::Json(
                serde_json::from_value(json!([{"op": "remove", "path": "/data/j"}]))
                    .expect("patch"),
            ),
        )
        .await
        .expect("JSON patch");
    assert!(patched.data.as_ref().is_some_and(|d| !d.contains_key("j")));

    let err = api.get("missing").await.expect_err("get missing");
    assert!(is_status(&err, 404, "NotFound"), "{err:?}");
    api.delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    assert!(api.get_opt("a").await.expect("get").is_none());
}

#[tokio::test]
async fn create_in_a_missing_namespace_is_not_found() {
    let cluster = Cluster::start().await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client().await, "nowhere");
    let err = api
        .create(&PostParams::default(), &cm("a", &[]))
        .await
        .expect_err("no namespace");
    assert!(is_status(&err, 404, "NotFound"), "{err:?}");
}

#[tokio::test]
async fn list_filters_by_label_and_field_selectors() {
    let cluster = Cluster::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await);
    for (name, tier) in [("a", Some("web")), ("b", Some("db")), ("c", None)] {
        let mut c = cm(name, &[]);
        if let Some(t) = tier {
            c.metadata.labels = Some(BTreeMap::from([("tier".into(), t.into())]));
        }
        api.create(&PostParams::default(), &c)
            .await
            .expect("create");
    }
    let names = |list: kube::core::ObjectList<ConfigMap>| {
        let mut n: Vec<String> = list
            .items
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect();
        n.sort();
        n
    };
    let list = api
        .list(&ListParams::default().labels("tier in (web,db)"))
        .await
        .expect("list");
    assert_eq!(names(list), ["a", "b"]);
    let list = api
        .list(&ListParams::default().labels("!tier"))
        .await
        .expect("list");
    assert_eq!(names(list), ["c"]);
    let list = api
        .list(&ListParams::default().labels("tier!=web"))
        .await
        .expect("list");
    assert_eq!(names(list), ["b", "c"]);
    let list = api
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .expect("list");
    assert_eq!(names(list), ["b"]);
    let all: Api<ConfigMap> = Api::all(cluster.client().await);
    let list = all
        .list(&ListParams::default().fields("metadata.namespace=default"))
        .await
        .expect("list");
    assert_eq!(list.items.len(), 3);
    assert!(
        list.metadata
            .resource_version
            .is_some_and(|rv| !rv.is_empty())
    );
}

#[tokio::test]
async fn server_side_apply_creates_updates_and_leaves_a_no_op_unchanged() {
    let cluster = Cluster::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await);
    let pp = PatchParams::apply("manager-a");
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"x": "1", "y": "2"}});
    let first = api
        .patch("s", &pp, &Patch::Apply(&body))
        .await
        .expect("apply creates");
    let again = api
        .patch("s", &pp, &Patch::Apply(&body))
        .await
        .expect("apply again");
    assert_eq!(
        again.metadata.resource_version, first.metadata.resource_version,
        "a no-op apply is no write"
    );

    // Dropping a field from the applied configuration removes it.
    let body2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"x": "1"}});
    let second = api
        .patch("s", &pp, &Patch::Apply(&body2))
        .await
        .expect("apply update");
    assert_ne!(
        second.metadata.resource_version,
        first.metadata.resource_version
    );
    assert_eq!(
        second.data,
        Some(BTreeMap::from([("x".into(), "1".into())]))
    );

    // Another manager setting the same field to another value conflicts, unless forced.
    let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"x": "9"}});
    let err = api
        .patch("s", &PatchParams::apply("manager-b"), &Patch::Apply(&other))
        .await
        .expect_err("conflict");
    assert!(is_status(&err, 409, "Conflict"), "{err:?}");
    let forced = api
        .patch(
            "s",
            &PatchParams::apply("manager-b").force(),
            &Patch::Apply(&other),
        )
        .await
        .expect("forced apply");
    assert_eq!(
        forced
            .data
            .as_ref()
            .and_then(|d| d.get("x"))
            .map(String::as_str),
        Some("9")
    );
    // The same value from another manager is shared ownership, no conflict.
    let shared = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"x": "9"}});
    api.patch(
        "s",
        &PatchParams::apply("manager-c"),
        &Patch::Apply(&shared),
    )
    .await
    .expect("shared apply");
}

#[tokio::test]
async fn status_subresource_keeps_spec_and_status_apart_and_generation_follows_spec() {
    let cluster = Cluster::start().await;
    let api: Api<DynamicObject> =
        Api::namespaced_with(cluster.client().await, "default", &pipelines());
    let mut p = pipeline("p");
    p.data["status"] = json!({"phase": "Running"});
    let created = api
        .create(&PostParams::default(), &p)
        .await
        .expect("create");
    assert!(
        created.data.get("status").is_none(),
        "status is not written through the main resource"
    );
    assert_eq!(created.metadata.generation, Some(1));

    let with_status = api
        .patch_status(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}, "spec": {"parallelism": 7}})),
        )
        .await
        .expect("status patch");
    assert_eq!(with_status.data["status"]["phase"], "Running");
    assert_eq!(
        with_status.data["spec"]["parallelism"], 1,
        "the spec is not written through status"
    );
    assert_eq!(with_status.metadata.generation, Some(1));

    let labelled = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .expect("label");
    assert_eq!(
        labelled.metadata.generation,
        Some(1),
        "metadata is not spec"
    );
    let scaled = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"parallelism": 3}, "status": {"phase": "X"}})),
        )
        .await
        .expect("spec patch");
    assert_eq!(scaled.metadata.generation, Some(2));
    assert_eq!(scaled.data["status"]["phase"], "Running");

    // Server-side apply of status by the operator's manager.
    let status = json!({"apiVersion": "jetflow.io/v1alpha1", "kind": "Pipeline", "status": {"phase": "Failed"}});
    let applied = api
        .patch_status(
            "p",
            &PatchParams::apply("operator").force(),
            &Patch::Apply(&status),
        )
        .await
        .expect("status apply");
    assert_eq!(applied.data["status"]["phase"], "Failed");
    let again = api
        .patch_status(
            "p",
            &PatchParams::apply("operator").force(),
            &Patch::Apply(&status),
        )
        .await
        .expect("status apply again");
    assert_eq!(
        again.metadata.resource_version,
        applied.metadata.resource_version
    );
}

#[tokio::test]
async fn watcher_sees_added_modified_and_deleted() {
    let cluster = Cluster::start().await;
    let client = cluster.client().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    // The initial list completes before anything is written.
    loop {
        match events.try_next().await.expect("watch") {
            Some(watcher::Event::InitDone) => break,
            Some(_) => {}
            None => panic!("the watch ended"),
        }
    }
    api.create(&PostParams::default(), &cm("w", &[("v", "1")]))
        .await
        .expect("create");
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .expect("patch");
    api.delete("w", &DeleteParams::default())
        .await
        .expect("delete");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.try_next())
            .await
            .expect("an event in time")
            .expect("watch")
            .expect("stream open");
        match event {
            watcher::Event::Apply(c) => {
                seen.push(format!("apply {}", c.data.unwrap_or_default()["v"]))
            }
            watcher::Event::Delete(c) => {
                seen.push(format!("delete {}", c.metadata.name.unwrap_or_default()))
            }
            _ => {}
        }
    }
    assert_eq!(seen, ["apply 1", "apply 2", "delete w"]);
}

#[tokio::test]
async fn watch_of_one_object_by_field_selector_sees_only_it() {
    let cluster = Cluster::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await);
    let created = api
        .create(&PostParams::default(), &cm("one", &[("v", "1")]))
        .await
        .expect("create");
    let rv = created.metadata.resource_version.clone().expect("rv");
    let mut stream = api
        .watch(
            &WatchParams::default()
                .fields("metadata.name=one")
                .timeout(10),
            &rv,
        )
        .await
        .expect("watch")
        .boxed();
    api.create(&PostParams::default(), &cm("other", &[]))
        .await
        .expect("create other");
    api.patch(
        "one",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .expect("patch");
    let event = stream.try_next().await.expect("event").expect("open");
    match event {
        WatchEvent::Modified(c) => assert_eq!(c.metadata.name.as_deref(), Some("one")),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn watch_from_a_resource_version_older_than_the_history_is_gone() {
    let cluster = Cluster::start_with(Config {
        crds: common::jetflow_crds(),
        watch_history: 5,
        ..Config::default()
    })
    .await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await);
    let created = api
        .create(&PostParams::default(), &cm("h", &[("v", "0")]))
        .await
        .expect("create");
    for i in 1..20 {
        api.patch(
            "h",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"v": i.to_string()}})),
        )
        .await
        .expect("patch");
    }
    let rv = created.metadata.resource_version.expect("rv");
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .expect("watch")
        .boxed();
    match stream.try_next().await.expect("event").expect("open") {
        WatchEvent::Error(e) => assert_eq!(e.code, 410),
        other => panic!("expected a 410, got {other:?}"),
    }
}

#[tokio::test]
async fn watcher_relists_after_falling_behind_the_history() {
    let cluster = Cluster::start_with(Config {
        crds: common::jetflow_crds(),
        watch_history: 4,
        ..Config::default()
    })
    .await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await);
    api.create(&PostParams::default(), &cm("big", &[]))
        .await
        .expect("create");
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    loop {
        if let Some(watcher::Event::InitDone) = events.try_next().await.expect("watch") {
            break;
        }
    }
    // Large writes while the watcher is not read: the server's stream blocks, falls behind
    // the history, and tells the watcher 410 Gone.
    let blob = "x".repeat(200_000);
    for i in 0..100 {
        api.patch(
            "big",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"blob": blob, "i": i.to_string()}})),
        )
        .await
        .expect("patch");
    }
    let mut gone = false;
    let mut relisted = false;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("an event in time")
            .expect("open");
        match event {
            Err(watcher::Error::WatchError(e)) if e.code == 410 => gone = true,
            Ok(watcher::Event::Init) if gone => relisted = true,
            Ok(watcher::Event::InitApply(c)) | Ok(watcher::Event::Apply(c))
                if relisted
                    && c.data.as_ref().and_then(|d| d.get("i")).map(String::as_str)
                        == Some("99") =>
            {
                break;
            }
            Ok(watcher::Event::Apply(c))
                if !gone
                    && c.data.as_ref().and_then(|d| d.get("i")).map(String::as_str)
                        == Some("99") =>
            {
                panic!("the watcher kept up; the history was never exceeded");
            }
            _ => {}
        }
    }
    assert!(gone && relisted);
}

#[tokio::test]
async fn finalizers_keep_an_object_until_they_are_removed() {
    let cluster = Cluster::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await);
    let mut c = cm("f", &[]);
    c.metadata.finalizers = Some(vec!["jetflow.io/cleanup".into()]);
    api.create(&PostParams::default(), &c)
        .await
        .expect("create");
    api.delete("f", &DeleteParams::default())
        .await
        .expect("delete");
    let held = api.get("f").await.expect("still there");
    assert!(held.metadata.deletion_timestamp.is_some());
    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("remove finalizer");
    assert!(api.get_opt("f").await.expect("get").is_none());
}

#[tokio::test]
async fn garbage_collection_removes_objects_whose_owner_is_gone() {
    let cluster = Cluster::start().await;
    let client = cluster.client().await;
    let owners: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &pipelines());
    let owner = owners
        .create(&PostParams::default(), &pipeline("owner"))
        .await
        .expect("owner");
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let mut c = cm("owned", &[]);
    c.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "jetflow.io/v1alpha1".into(),
            kind: "Pipeline".into(),
            name: "owner".into(),
            uid: owner.metadata.uid.clone().expect("uid"),
            controller: Some(true),
            ..Default::default()
        },
    ]);
    api.create(&PostParams::default(), &c).await.expect("owned");
    api.create(&PostParams::default(), &cm("free", &[]))
        .await
        .expect("free");
    owners
        .delete("owner", &DeleteParams::default())
        .await
        .expect("delete owner");
    eventually("the owned ConfigMap to be collected", || async {
        api.get_opt("owned")
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    assert!(api.get_opt("free").await.expect("get").is_some());
}

#[tokio::test]
async fn a_scheduled_pod_is_deleted_only_after_its_grace_period_ends() {
    let cluster = Cluster::start().await;
    let api: Api<Pod> = Api::default_namespaced(cluster.client().await);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "spec": {"nodeName": "local", "terminationGracePeriodSeconds": 7, "containers": [{"name": "c", "image": "x"}]},
    }))
    .expect("pod");
    api.create(&PostParams::default(), &pod)
        .await
        .expect("create");
    api.delete("p", &DeleteParams::default())
        .await
        .expect("delete");
    let held = api.get("p").await.expect("still there");
    assert!(held.metadata.deletion_timestamp.is_some());
    assert_eq!(held.metadata.deletion_grace_period_seconds, Some(7));
    api.delete(
        "p",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .expect("final delete");
    assert!(api.get_opt("p").await.expect("get").is_none());
}

#[tokio::test]
async fn deployment_scale_subresource_reads_and_writes_replicas() {
    let cluster = Cluster::start().await;
    let api: Api<Deployment> = Api::default_namespaced(cluster.client().await);
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "d"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}}, "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}},
    }))
    .expect("deployment");
    api.create(&PostParams::default(), &d)
        .await
        .expect("create");
    let scale = api.get_scale("d").await.expect("scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(1));
    assert_eq!(
        scale.status.map(|s| s.selector),
        Some(Some("app=d".to_string()))
    );
    api.patch_scale(
        "d",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 4}})),
    )
    .await
    .expect("scale patch");
    assert_eq!(
        api.get("d")
            .await
            .expect("get")
            .spec
            .and_then(|s| s.replicas),
        Some(4)
    );
}

#[tokio::test]
async fn requests_without_a_known_token_are_unauthorized() {
    let cluster = Cluster::start().await;
    let client = cluster
        .handle
        .client_with_token("not-a-token")
        .expect("client");
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let err = api
        .list(&ListParams::default())
        .await
        .expect_err("unknown token");
    assert!(is_status(&err, 401, "Unauthorized"), "{err:?}");
}

#[tokio::test]
async fn token_request_gives_a_service_account_identity() {
    let cluster = Cluster::start().await;
    let client = cluster.client().await;
    let sas: Api<ServiceAccount> = Api::default_namespaced(client.clone());
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"audiences": []}});
    let req = http::Request::post(format!(
        "{}/api/v1/namespaces/default/serviceaccounts/default/token",
        cluster.handle.url
    ))
    .header("content-type", "application/json")
    .body(serde_json::to_vec(&request).expect("json"))
    .expect("request");
    let answer: serde_json::Value = client.request(req).await.expect("token request");
    let token = answer["status"]["token"]
        .as_str()
        .expect("token")
        .to_string();
    assert!(sas.get("default").await.is_ok());
    let as_sa = cluster.handle.client_with_token(&token).expect("client");
    let err = Api::<ConfigMap>::default_namespaced(as_sa)
        .list(&ListParams::default())
        .await;
    assert!(
        !matches!(err, Err(kube::Error::Api(ref s)) if s.code == 401),
        "the token authenticates: {err:?}"
    );

    let missing = http::Request::post(format!(
        "{}/api/v1/namespaces/default/serviceaccounts/nobody/token",
        cluster.handle.url
    ))
    .header("content-type", "application/json")
    .body(serde_json::to_vec(&request).expect("json"))
    .expect("request");
    let err = client
        .request::<serde_json::Value>(missing)
        .await
        .expect_err("no such account");
    assert!(is_status(&err, 404, "NotFound"), "{err:?}");
}

/// Needs the RBAC implementation (the stub in `rbac.rs` allows everything).
#[tokio::test]
async fn a_service_account_is_forbidden_until_a_role_binding_grants_it() {
    let cluster = Cluster::start().await;
    let admin = cluster.client().await;
    let sa_client = cluster
        .handle
        .client_with_token(&cluster.handle.issue_token("default", "default"))
        .expect("client");
    let api: Api<ConfigMap> = Api::default_namespaced(sa_client);
    let err = api
        .list(&ListParams::default())
        .await
        .expect_err("forbidden");
    assert!(is_status(&err, 403, "Forbidden"), "{err:?}");

    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "cm-reader"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}],
    }))
    .expect("role");
    Api::<Role>::default_namespaced(admin.clone())
        .create(&PostParams::default(), &role)
        .await
        .expect("role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "cm-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}],
    }))
    .expect("binding");
    Api::<RoleBinding>::default_namespaced(admin)
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");
    api.list(&ListParams::default()).await.expect("allowed now");
}

#[tokio::test]
async fn watcher_with_streaming_lists_gets_the_initial_events_then_changes() {
    let cluster = Cluster::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await);
    api.create(&PostParams::default(), &cm("before", &[]))
        .await
        .expect("create");
    let mut events = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut initial = Vec::new();
    loop {
        match events.try_next().await.expect("watch").expect("open") {
            watcher::Event::InitApply(c) => initial.push(c.metadata.name.unwrap_or_default()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(initial, ["before"]);
    api.create(&PostParams::default(), &cm("after", &[]))
        .await
        .expect("create");
    match events.try_next().await.expect("watch").expect("open") {
        watcher::Event::Apply(c) => assert_eq!(c.metadata.name.as_deref(), Some("after")),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn deleting_a_crd_stops_serving_it_and_removes_its_objects() {
    let cluster = Cluster::start().await;
    let client = cluster.client().await;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &pipelines());
    api.create(&PostParams::default(), &pipeline("p"))
        .await
        .expect("create");
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client);
    crds.delete("pipelines.jetflow.io", &DeleteParams::default())
        .await
        .expect("delete CRD");
    let err = api
        .list(&ListParams::default())
        .await
        .expect_err("no longer served");
    assert!(is_status(&err, 404, "NotFound"), "{err:?}");
    let crd = common::jetflow_crds().into_iter().next().expect("crd");
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(crd).expect("crd"),
    )
    .await
    .expect("recreate CRD");
    assert!(
        api.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn metadata_watcher_sees_partial_objects() {
    let cluster = Cluster::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await);
    let meta: Api<kube::core::PartialObjectMeta<ConfigMap>> =
        Api::default_namespaced(cluster.client().await);
    let mut events = watcher(meta, watcher::Config::default()).boxed();
    loop {
        if let watcher::Event::InitDone = events.try_next().await.expect("watch").expect("open") {
            break;
        }
    }
    api.create(&PostParams::default(), &cm("meta", &[("big", "value")]))
        .await
        .expect("create");
    match events.try_next().await.expect("watch").expect("open") {
        watcher::Event::Apply(m) => assert_eq!(m.metadata.name.as_deref(), Some("meta")),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn delete_collection_deletes_what_the_selector_picks() {
    let cluster = Cluster::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await);
    for (name, app) in [("a", "x"), ("b", "x"), ("c", "y")] {
        let mut c = cm(name, &[]);
        c.metadata.labels = Some(BTreeMap::from([("app".into(), app.into())]));
        api.create(&PostParams::default(), &c)
            .await
            .expect("create");
    }
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("app=x"),
    )
    .await
    .expect("delete collection");
    let left: Vec<String> = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert_eq!(left, ["c"]);
}

#[tokio::test]
async fn a_plain_http_kubeconfig_with_a_token_authenticates_kube_rs() {
    // What the kubelet writes for a pod: the http:// URL and a TokenRequest token.
    let cluster = Cluster::start().await;
    let token = cluster.handle.issue_token("default", "default");
    let text = jetflow_devcluster::apiserver::kubeconfig::render(
        &cluster.handle.url,
        None,
        "pod",
        &token,
        "default",
    );
    let path = cluster.file("pod-kubeconfig", &text);
    let kc = kube::config::Kubeconfig::read_from(&path).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    let api: Api<ConfigMap> =
        Api::default_namespaced(kube::Client::try_from(config).expect("client"));
    // Authenticated as the ServiceAccount (RBAC then refuses it, which no anonymous or
    // unauthenticated caller would get to).
    match api.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(
                status
                    .message
                    .contains("User \"system:serviceaccount:default:default\""),
                "{status:?}"
            );
        }
        other => {
            panic!("expected the ServiceAccount to be authenticated, then forbidden: {other:?}")
        }
    }
}
