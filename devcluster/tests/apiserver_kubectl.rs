//! The local API server through the real kubectl (v1.32): server-side apply of the examples,
//! get (tables), annotate, status-driven `wait`, scale, delete, tokens, `get -w` and logs.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Cluster, eventually, pipelines};
use jetflow_devcluster::apiserver::Config;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::json;

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers: [{name: c, image: x}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_gets_annotates_waits_and_deletes_a_pipeline() {
    let cluster = Cluster::start().await;
    let example = common::repo_root().join("examples/backfill-bounded.yaml");
    let example = example.to_str().expect("path");
    let out = cluster.kubectl_ok(&["apply", "--server-side", "-f", example]);
    assert!(
        out.contains("pipeline.jetflow.io/clicks-backfill serverside-applied"),
        "{out}"
    );
    assert!(
        out.contains("stream.jetflow.io/clicks serverside-applied"),
        "{out}"
    );

    let rv = |c: &Cluster| {
        c.kubectl_ok(&[
            "get",
            "pipeline",
            "clicks-backfill",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
    };
    let before = rv(&cluster);
    cluster.kubectl_ok(&["apply", "--server-side", "-f", example]);
    assert_eq!(
        rv(&cluster),
        before,
        "re-applying the same manifest changes nothing"
    );
    let diff = cluster.kubectl(&["diff", "--server-side", "-f", example]);
    assert_eq!(
        diff.status.code(),
        Some(0),
        "no difference: {}",
        String::from_utf8_lossy(&diff.stdout)
    );

    let table = cluster.kubectl_ok(&["get", "pipelines"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("PHASE") && table.contains("clicks-backfill"),
        "{table}"
    );
    let short = cluster.kubectl_ok(&["get", "jfp", "-o", "name"]);
    assert_eq!(short.trim(), "pipeline.jetflow.io/clicks-backfill");

    cluster.kubectl_ok(&["annotate", "pipeline", "clicks-backfill", "team=data"]);
    let annotation = cluster.kubectl_ok(&[
        "get",
        "jfp",
        "clicks-backfill",
        "-o",
        "jsonpath={.metadata.annotations.team}",
    ]);
    assert_eq!(annotation, "data");

    // The operator's part, played by the test: Ready through the status subresource.
    let api: Api<DynamicObject> =
        Api::namespaced_with(cluster.client().await, "default", &pipelines());
    let status = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "reason": "Running", "message": "ok", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    api.patch_status(
        "clicks-backfill",
        &PatchParams::default(),
        &Patch::Merge(status),
    )
    .await
    .expect("status");
    let waited = cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pipeline/clicks-backfill",
        "--timeout=10s",
    ]);
    assert!(waited.contains("condition met"), "{waited}");
    let table = cluster.kubectl_ok(&["get", "pipelines"]);
    assert!(table.contains("Running"), "{table}");

    cluster.kubectl_ok(&["delete", "-f", example]);
    let left = cluster.kubectl_ok(&["get", "pipelines,streams", "-o", "name"]);
    assert!(left.trim().is_empty(), "{left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_scales_a_deployment() {
    let cluster = Cluster::start().await;
    let file = cluster.file("web.yaml", DEPLOYMENT);
    cluster.kubectl_ok(&["apply", "--server-side", "-f", file.to_str().expect("path")]);
    cluster.kubectl_ok(&["scale", "deployment", "web", "--replicas=5"]);
    let replicas = cluster.kubectl_ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]);
    assert_eq!(replicas, "5");
    let table = cluster.kubectl_ok(&["get", "deployments"]);
    assert!(table.contains("READY") && table.contains("0/5"), "{table}");

    // Strategic merge patches (kubectl set image, client-side apply) merge containers by name.
    cluster.kubectl_ok(&["set", "image", "deployment/web", "c=nginx:2"]);
    let containers = cluster.kubectl_ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers}",
    ]);
    assert_eq!(containers, r#"[{"image":"nginx:2","name":"c"}]"#);
    let yaml = cluster.kubectl_ok(&["get", "deploy", "web", "-o", "yaml"]);
    assert!(!yaml.contains("$setElementOrder"), "{yaml}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_token_gives_a_working_token() {
    let cluster = Cluster::start().await;
    let token = cluster.kubectl_ok(&["create", "token", "default"]);
    let client = cluster
        .handle
        .client_with_token(token.trim())
        .expect("client");
    let listed = Api::<ConfigMap>::default_namespaced(client)
        .list(&ListParams::default())
        .await;
    assert!(
        !matches!(listed, Err(kube::Error::Api(ref s)) if s.code == 401),
        "{listed:?}"
    );
    let out = cluster.kubectl(&["create", "token", "nobody"]);
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_watch_prints_a_row_per_change() {
    let cluster = Cluster::start().await;
    let mut child = Command::new("kubectl")
        .args(["get", "configmaps", "-w", "--request-timeout=20s"])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl runs");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await);
    // Create until kubectl has printed the row: its watch may start after the first create.
    let mut seen = false;
    for i in 0..50 {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("watched-{i}")}});
        api.patch(
            &format!("watched-{i}"),
            &PatchParams::apply("test"),
            &Patch::Apply(cm),
        )
        .await
        .expect("apply");
        if let Ok(Some(line)) = tokio::time::timeout(Duration::from_millis(400), rx.recv()).await {
            if line.starts_with("NAME") {
                continue;
            }
            assert!(line.starts_with("watched-"), "{line}");
            seen = true;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen, "kubectl get -w printed no row");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_reads_the_kubelet_log_file() {
    let root = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start_with(Config {
        crds: common::jetflow_crds(),
        kubelet_root: Some(root.path().to_path_buf()),
        ..Config::default()
    })
    .await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::default_namespaced(cluster.client().await);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "w"}, "spec": {"containers": [{"name": "worker", "image": "x"}]}});
    pods.patch("w", &PatchParams::apply("test"), &Patch::Apply(pod))
        .await
        .expect("pod");
    let logs = root.path().join("pods/default_w/logs");
    std::fs::create_dir_all(&logs).expect("dir");
    std::fs::write(logs.join("worker.log"), "line one\nline two\n").expect("log");
    let out = cluster.kubectl_ok(&["logs", "w"]);
    assert_eq!(out, "line one\nline two\n");
    let tail = cluster.kubectl_ok(&["logs", "w", "--tail=1"]);
    assert_eq!(tail, "line two\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_describe_shows_events_from_the_events_api() {
    let cluster = Cluster::start().await;
    let client = cluster.client().await;
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "described"}});
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let created = api
        .patch("described", &PatchParams::apply("test"), &Patch::Apply(cm))
        .await
        .expect("cm");
    let recorder = kube::runtime::events::Recorder::new(client, "jetflow-test".into());
    let reference = kube::Resource::object_ref(&created, &());
    recorder
        .publish(
            &kube::runtime::events::Event {
                type_: kube::runtime::events::EventType::Warning,
                reason: "SomethingWrong".into(),
                note: Some("the thing is wrong".into()),
                action: "Check".into(),
                secondary: None,
            },
            &reference,
        )
        .await
        .expect("event published");
    let out = eventually("the event in describe", || {
        let out = cluster.kubectl_ok(&["describe", "configmap", "described"]);
        async move { out.contains("SomethingWrong").then_some(out) }
    })
    .await;
    assert!(out.contains("the thing is wrong"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_of_simple_kinds_and_namespace_deletion() {
    let cluster = Cluster::start().await;
    cluster.kubectl_ok(&["create", "namespace", "shop"]);
    cluster.kubectl_ok(&[
        "create",
        "configmap",
        "c",
        "-n",
        "shop",
        "--from-literal=a=b",
    ]);
    cluster.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "s",
        "-n",
        "shop",
        "--from-literal=user=u",
    ]);
    cluster.kubectl_ok(&["create", "serviceaccount", "w", "-n", "shop"]);
    let data = cluster.kubectl_ok(&["get", "cm", "c", "-n", "shop", "-o", "jsonpath={.data.a}"]);
    assert_eq!(data, "b");
    let secret = cluster.kubectl_ok(&[
        "get",
        "secret",
        "s",
        "-n",
        "shop",
        "-o",
        "jsonpath={.data.user} {.type}",
    ]);
    assert_eq!(secret, "dQ== Opaque");
    let sas = cluster.kubectl_ok(&["get", "sa", "-n", "shop", "-o", "name"]);
    assert_eq!(
        sas.lines().collect::<Vec<_>>(),
        ["serviceaccount/default", "serviceaccount/w"]
    );

    // Deleting the namespace deletes its content, then the namespace (kubectl waits for it).
    cluster.kubectl_ok(&["delete", "namespace", "shop", "--timeout=20s"]);
    let left = cluster.kubectl_ok(&["get", "namespaces", "-o", "name"]);
    assert!(!left.contains("shop"), "{left}");
    let api: Api<ConfigMap> = Api::namespaced(cluster.client().await, "shop");
    assert!(
        api.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_auth_can_i_and_whoami_answer_for_the_admin() {
    let cluster = Cluster::start().await;
    assert_eq!(
        cluster
            .kubectl_ok(&["auth", "can-i", "create", "pipelines"])
            .trim(),
        "yes"
    );
    let whoami = cluster.kubectl_ok(&["auth", "whoami"]);
    assert!(
        whoami.contains("jetflow-admin") && whoami.contains("system:masters"),
        "{whoami}"
    );
}

/// Misspelt fields: `kubectl apply` (strict validation, its default) refuses them naming each,
/// server-side and client-side; `--validate=false` has them pruned, as kube-apiserver does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_refuses_unknown_fields_when_strict_and_prunes_them_otherwise() {
    let cluster = Cluster::start().await;
    let file = cluster.file(
        "typo.yaml",
        r#"apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata: {name: typo}
spec:
  source: {jetstream: {stream: ORDERS, filterSubject: "orders.eu.>"}}
  sink: {jetstream: {stream: COPY, subject: "copy.{{subject}}"}}
  checkpiont: {interval: 1s}
"#,
    );
    let file = file.to_str().expect("path");
    for args in [
        vec!["apply", "--validate=strict", "-f", file],
        vec!["apply", "--server-side", "-f", file],
    ] {
        let out = cluster.kubectl(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} admitted the typos");
        for field in [
            "unknown field \"spec.checkpiont\"",
            "unknown field \"spec.source.jetstream.filterSubject\"",
        ] {
            assert!(stderr.contains(field), "{args:?}: {stderr}");
        }
    }
    cluster.kubectl_ok(&["apply", "--validate=false", "-f", file]);
    let spec = cluster.kubectl_ok(&["get", "pipeline", "typo", "-o", "jsonpath={.spec}"]);
    assert!(!spec.contains("checkpiont"), "{spec}");
    assert!(!spec.contains("filterSubject\""), "{spec}");
}
