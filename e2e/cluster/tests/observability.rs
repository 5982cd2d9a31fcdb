//! What operations teams rely on, checked against a pipeline running on the local control
//! plane: the chart's Grafana dashboards and Prometheus alerts use only metric and label names
//! that the real worker and operator pods export (plus the labels the PodMonitor and
//! Prometheus add to a target), the worker Deployment the operator built meets the
//! `restricted` Pod Security Standard, and the pods' logs are plain JSON lines carrying the
//! pipeline, worker and split.

use std::collections::BTreeSet;
use std::path::Path;

use jetflow_e2e_cluster::nats::{publish_js, wait_for_count};
use jetflow_e2e_cluster::promql::{self, Refs};
use jetflow_e2e_cluster::{Cluster, OPERATOR_NAMESPACE, TIMEOUT, render_chart};
use serde_json::Value;

const NS: &str = "payments";
const PIPELINE: &str = "payments-cents";

/// Labels Prometheus (through the Prometheus Operator's PodMonitor and ServiceMonitor) puts
/// on every scraped series.
const TARGET_LABELS: [&str; 7] = [
    "job",
    "instance",
    "namespace",
    "pod",
    "container",
    "endpoint",
    "service",
];

/// Every PromQL expression of the rendered dashboards and rules, with where it came from.
struct Queries {
    exprs: Vec<(String, String)>,
    /// Labels the PodMonitor's relabelings add.
    relabeled: BTreeSet<String>,
}

fn chart_queries() -> Queries {
    let manifests = render_chart(
        OPERATOR_NAMESPACE,
        &[
            "metrics.podMonitor.enabled=true".to_owned(),
            "metrics.prometheusRule.enabled=true".to_owned(),
            "metrics.grafanaDashboard.enabled=true".to_owned(),
        ],
    );
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&manifests)
        .map(|d| serde::Deserialize::deserialize(d).expect("a YAML document"))
        .filter(|d: &Value| !d.is_null())
        .collect();
    let mut exprs = Vec::new();
    let mut relabeled = BTreeSet::new();
    for doc in &docs {
        match doc["kind"].as_str() {
            Some("ConfigMap") if doc["metadata"]["labels"]["grafana_dashboard"] == "1" => {
                for (file, text) in doc["data"].as_object().expect("dashboard data") {
                    let dashboard: Value = serde_json::from_str(text.as_str().unwrap())
                        .unwrap_or_else(|e| panic!("{file} is not JSON: {e}"));
                    dashboard_exprs(file, &dashboard, &mut exprs);
                }
            }
            Some("PrometheusRule") => {
                for group in doc["spec"]["groups"].as_array().expect("rule groups") {
                    for rule in group["rules"].as_array().expect("rules") {
                        exprs.push((
                            format!("alert {}", rule["alert"].as_str().unwrap_or("?")),
                            rule["expr"].as_str().expect("a rule's expr").to_owned(),
                        ));
                    }
                }
            }
            Some("PodMonitor") => {
                for endpoint in doc["spec"]["podMetricsEndpoints"].as_array().unwrap() {
                    for relabel in endpoint["relabelings"].as_array().into_iter().flatten() {
                        if let Some(label) = relabel["targetLabel"].as_str() {
                            relabeled.insert(label.to_owned());
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Queries { exprs, relabeled }
}

/// The `expr` of every panel target and the query of every templating variable.
fn dashboard_exprs(file: &str, dashboard: &Value, out: &mut Vec<(String, String)>) {
    fn panels(file: &str, list: &Value, out: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?");
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((format!("{file}: panel {title:?}"), expr.to_owned()));
                }
            }
            panels(file, &panel["panels"], out);
        }
    }
    panels(file, &dashboard["panels"], out);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] == "query" {
            let query = var["query"]["query"]
                .as_str()
                .or_else(|| var["query"].as_str())
                .expect("a variable's query");
            out.push((
                format!("{file}: variable {}", var["name"].as_str().unwrap_or("?")),
                query.to_owned(),
            ));
        }
    }
}

/// The names `exprs` use that `exported` (and the target labels) do not have.
fn unknown(
    exprs: &[(String, String)],
    exported: &Refs,
    extra_labels: &BTreeSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (place, expr) in exprs {
        let refs = promql::refs(expr);
        for metric in refs.metrics.difference(&exported.metrics) {
            problems.push(format!("{place}: metric {metric} is not exported"));
        }
        for label in &refs.labels {
            if !exported.labels.contains(label)
                && !extra_labels.contains(label)
                && !TARGET_LABELS.contains(&label.as_str())
            {
                problems.push(format!("{place}: label {label} is on no exported series"));
            }
        }
    }
    problems
}

/// Reads every pod log the local kubelet wrote, by file.
fn pod_logs(cluster: &Cluster) -> Vec<(String, String)> {
    let pods = cluster.dir().join("cluster/kubelet/pods");
    let mut out = Vec::new();
    for pod in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
        for log in std::fs::read_dir(pod.path().join("logs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = std::fs::read_to_string(log.path()).unwrap_or_default();
            let name = log
                .path()
                .strip_prefix(&pods)
                .unwrap_or(Path::new(""))
                .display()
                .to_string();
            out.push((name, text));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_alerts_pod_security_and_logs_hold_for_a_running_pipeline() {
    let queries = chart_queries();
    assert!(
        queries.exprs.len() >= 15,
        "the chart's dashboards and rules hold {} queries",
        queries.exprs.len()
    );
    assert!(
        queries.relabeled.contains("pipeline"),
        "{:?}",
        queries.relabeled
    );

    let cluster = Cluster::start().await;
    cluster.ensure_namespace(NS);
    cluster.apply(NS, &Cluster::example("dead-letter"));
    cluster.wait_condition(NS, PIPELINE, "Ready", "True").await;
    let js = cluster.nats.jetstream().await;
    for i in 0..5 {
        publish_js(
            &js,
            "payments.card",
            format!(r#"{{"id":"p-{i}","amount":{i}}}"#),
        )
        .await;
    }
    // A payment whose amount is not a number: a dead letter, counted as an error.
    publish_js(
        &js,
        "payments.card",
        r#"{"id":"p-bad","amount":"12,50"}"#.to_owned(),
    )
    .await;
    wait_for_count(&js, "payments-dlq", 1, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.diagnostics()));
    // A spec only the operator's validation refuses: the operator counts a reconcile error.
    let invalid = jetflow_e2e_cluster::root().join("crds/tests/invalid/bad-sink-template.yaml");
    cluster.apply(NS, &invalid);

    let selector = format!("jetflow.io/pipeline={PIPELINE}");
    let worker_metrics = cluster
        .wait_for(
            "the worker's metrics with its dead letter",
            TIMEOUT,
            || async {
                for (pod, _) in cluster.pods(NS, &selector).await {
                    if let Some(text) = cluster.pod_metrics(NS, &pod).await
                        && text.contains(r#"kind="dead_letter""#)
                        && text.contains("jetflow_worker_checkpoint_duration_seconds_bucket")
                    {
                        return Some(text);
                    }
                }
                None
            },
        )
        .await;
    let operator_metrics = cluster
        .wait_for(
            "the operator's metrics with a reconcile error",
            TIMEOUT,
            || async {
                for (pod, _) in cluster
                    .pods(OPERATOR_NAMESPACE, "app.kubernetes.io/name=jetflow")
                    .await
                {
                    if let Some(text) = cluster.pod_metrics(OPERATOR_NAMESPACE, &pod).await
                        && text.contains("jetflow_operator_reconcile_errors_total{")
                    {
                        return Some(text);
                    }
                }
                None
            },
        )
        .await;
    let mut exported = promql::exported(&worker_metrics);
    let operator = promql::exported(&operator_metrics);
    exported.metrics.extend(operator.metrics);
    exported.labels.extend(operator.labels);

    // Dashboards and alerts: every name exists.
    let problems = unknown(&queries.exprs, &exported, &queries.relabeled);
    assert!(
        problems.is_empty(),
        "dashboards and alerts use names the binaries do not export:\n{}\nexported: {:?}",
        problems.join("\n"),
        exported
    );
    // The check is able to fail: a misspelt metric and a label no series has are caught.
    let wrong = [(
        "a wrong query".to_owned(),
        r#"sum by (region) (rate(jetflow_worker_message_total{split="a"}[5m]))"#.to_owned(),
    )];
    let caught = unknown(&wrong, &exported, &queries.relabeled);
    assert_eq!(caught.len(), 2, "{caught:?}");

    // Pod Security: the worker Deployment as the operator applied it.
    let deployments: Value = serde_json::from_str(&cluster.kubectl_ok(&[
        "get",
        "deployments",
        "-n",
        NS,
        "-l",
        &selector,
        "-o",
        "json",
    ]))
    .unwrap();
    let pod_spec = &deployments["items"][0]["spec"]["template"]["spec"];
    assert!(pod_spec.is_object(), "no worker Deployment: {deployments}");
    let violations = jetflow_testsupport::pod_security::restricted(pod_spec);
    assert!(
        violations.is_empty(),
        "the worker pods break the restricted Pod Security Standard:\n{violations:#?}"
    );

    // The operator's own pods, as the chart made them, comply as well.
    let operator: Value = serde_json::from_str(&cluster.kubectl_ok(&[
        "get",
        "deployment",
        "jetflow",
        "-n",
        OPERATOR_NAMESPACE,
        "-o",
        "json",
    ]))
    .unwrap();
    let violations =
        jetflow_testsupport::pod_security::restricted(&operator["spec"]["template"]["spec"]);
    assert!(
        violations.is_empty(),
        "the operator pods break the restricted Pod Security Standard:\n{violations:#?}"
    );

    // Logs: no colour codes anywhere; the workers' JSON lines say which pipeline, worker and
    // split they are about.
    let logs = pod_logs(&cluster);
    let mut worker_lines = 0;
    let mut split_lines = 0;
    for (file, text) in &logs {
        assert!(!text.contains("\x1b["), "colour codes in {file}:\n{text:?}");
        if !text.contains("jetflow-worker starting") {
            continue;
        }
        for line in text.lines() {
            let json: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{file}: not a JSON line ({e}): {line}"));
            if json["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("jetflow"))
            {
                assert_eq!(json["pipeline"], PIPELINE, "{file}: {line}");
                assert_eq!(json["namespace"], NS, "{file}: {line}");
                assert!(
                    json["worker"]
                        .as_str()
                        .is_some_and(|w| w.starts_with(PIPELINE)),
                    "{file}: {line}"
                );
                worker_lines += 1;
                split_lines += usize::from(json["split"].is_string());
            }
        }
    }
    assert!(
        worker_lines > 0 && split_lines > 0,
        "no worker log lines with a split: {logs:?}"
    );
}
