//! `kubectl jetflow` on the local control plane: the built `kubectl-jetflow` binary run as
//! kubectl runs a plugin (`kubectl jetflow …` with its folder on the PATH) and directly, with
//! the cluster's kubeconfig, against the real operator, worker pods and nats-server. The
//! dead-letter example: bad payments become dead letters, `dlq list` shows them (and not the
//! dead letters of another source, or of another pipeline of the same source, on the same
//! subject), the step is fixed, `dlq replay` sends
//! them back once and to this pipeline only (a second pipeline on the same source stream skips
//! them; the replayed letters are deleted, so a second replay sends nothing and `dlq list` shows
//! none), `status` shows the splits, and `rewind` moves a running pipeline back by time and by
//! sequence.

use std::collections::BTreeSet;
use std::process::{Command, Output};

use jetflow_e2e_cluster::nats::{self, publish_js, source_sequences};
use jetflow_e2e_cluster::{Cluster, TIMEOUT, bin_dir};

const NS: &str = "shop";
const PIPELINE: &str = "payments-cents";
/// A second pipeline on the same source stream, whose steps every payment passes.
const AUDIT: &str = "payments-audit";
const AUDIT_MANIFEST: &str = r#"
apiVersion: jetflow.io/v1alpha1
kind: Stream
metadata:
  name: payments-audit
spec:
  subjects: ["audit.payments.*"]
  duplicateWindow: 15m
---
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata:
  name: payments-audit
spec:
  source:
    jetstream:
      stream: payments
  sink:
    jetstream:
      stream: payments-audit
      subject: "audit.{{subject}}"
  checkpoint:
    interval: 1s
"#;

/// `kubectl jetflow ARGS`: kubectl finds the plugin on the PATH.
fn kubectl_jetflow(cluster: &Cluster, args: &[&str]) -> Output {
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("kubectl")
        .arg("jetflow")
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", cluster.kubeconfig())
        .output()
        .expect("kubectl on PATH")
}

/// The `kubectl-jetflow` binary itself, with `--kubeconfig`.
fn plugin(cluster: &Cluster, args: &[&str]) -> Output {
    let binary = bin_dir().join("kubectl-jetflow");
    assert!(
        binary.exists(),
        "{} is missing: `cargo build -p kubectl-jetflow` first (scripts/test.sh does)",
        binary.display()
    );
    Command::new(binary)
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .expect("running kubectl-jetflow")
}

fn ok(cluster: &Cluster, what: &str, out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        cluster.diagnostics()
    );
    stdout
}

/// Waits until the split's committed position is `position`.
async fn wait_position(cluster: &Cluster, position: u64) {
    wait_position_of(cluster, PIPELINE, position).await;
}

/// Waits until the split of `pipeline` has committed position `position`.
async fn wait_position_of(cluster: &Cluster, pipeline: &str, position: u64) {
    cluster
        .wait_pipeline(NS, pipeline, &format!("position {position}"), |p| {
            p.status.as_ref().is_some_and(|s| {
                s.splits.len() == 1 && s.splits[0].position == position && s.lag == Some(0)
            })
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_jetflow_lists_and_replays_dead_letters_shows_status_and_rewinds() {
    let cluster = Cluster::start().await;
    cluster.apply(NS, &Cluster::example("dead-letter"));
    // The rewinds below read again what was written minutes earlier: the sink's duplicate
    // window must still hold those outputs' message ids on a slow machine.
    cluster.kubectl_ok(&[
        "patch",
        "stream",
        "payments-cents",
        "-n",
        NS,
        "--type=merge",
        "-p",
        r#"{"spec":{"duplicateWindow":"15m"}}"#,
    ]);
    // The plugin reaches NATS through the Pipeline's own connection.
    let url = cluster.nats.url();
    cluster.kubectl_ok(&[
        "patch",
        "pipeline",
        PIPELINE,
        "-n",
        NS,
        "--type=merge",
        "-p",
        &format!(r#"{{"spec":{{"connection":{{"url":"{url}"}}}}}}"#),
    ]);
    cluster.wait_condition(NS, PIPELINE, "Ready", "True").await;
    let audit = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(audit.path(), AUDIT_MANIFEST).expect("write manifest");
    cluster.apply(NS, audit.path());
    cluster.wait_condition(NS, AUDIT, "Ready", "True").await;
    let js = cluster.nats.jetstream().await;

    // Ten payments, three of them with the amount as a string: dead letters.
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for i in 0..10u32 {
        if i % 3 == 1 {
            let body = format!(r#"{{"id":"p{i}","amount":"{i}.5"}}"#);
            bad.push(publish_js(&js, "payments.card", body).await);
        } else {
            let body = format!(r#"{{"id":"p{i}","amount":{i}.25}}"#);
            good.push(publish_js(&js, "payments.card", body).await);
        }
    }
    nats::wait_for_count(&js, "payments-cents", good.len() as u64, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.diagnostics()));
    nats::wait_for_count(&js, "payments-dlq", bad.len() as u64, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.diagnostics()));
    wait_position(&cluster, 10).await;
    nats::wait_for_count(&js, "payments-audit", 10, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.diagnostics()));
    // The dead letter of another pipeline sharing the subject, read from another stream: not
    // this pipeline's to list or replay.
    let mut foreign = async_nats::HeaderMap::new();
    foreign.insert("Jetflow-Source", "refunds/1/refunds.card");
    foreign.insert("Jetflow-Error-Step", "amount-in-cents");
    js.publish_with_headers("dlq.payments", foreign, r#"{"id":"r1"}"#.into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    // And the dead letter of another pipeline of the same source (its message id names it).
    let mut sibling = async_nats::HeaderMap::new();
    sibling.insert("Jetflow-Source", "payments/2/payments.card");
    sibling.insert("Jetflow-Error-Step", "amount-in-cents");
    sibling.insert("Nats-Msg-Id", "shop/payments-audit:00000000000000ff:2:dlq");
    js.publish_with_headers("dlq.payments", sibling, r#"{"id":"p1"}"#.into())
        .await
        .expect("publish")
        .await
        .expect("stored");

    // status, through kubectl: the split, its owner, position and lag, and the checkpoint.
    let status = ok(
        &cluster,
        "kubectl jetflow status",
        kubectl_jetflow(&cluster, &["status", PIPELINE, "-n", NS]),
    );
    let pods = cluster
        .pods(NS, &format!("jetflow.io/pipeline={PIPELINE}"))
        .await;
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert!(status.contains("Running"), "{status}");
    assert!(status.contains("checkpoint "), "{status}");
    let row = status
        .lines()
        .find(|l| l.starts_with('>'))
        .unwrap_or_else(|| panic!("a row for split >: {status}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells, [">", pods[0].0.as_str(), "10", "0", "-"], "{status}");

    // dlq list: each dead letter with its step, error kind and text, source subject and
    // sequence.
    let listed = ok(
        &cluster,
        "kubectl jetflow dlq list",
        kubectl_jetflow(&cluster, &["dlq", "list", PIPELINE, "-n", NS]),
    );
    assert!(listed.starts_with("3 dead letters"), "{listed}");
    for seq in &bad {
        let line = listed
            .lines()
            .find(|l| l.split('\t').nth(5) == Some(&seq.to_string()))
            .unwrap_or_else(|| panic!("dead letter of source sequence {seq}: {listed}"));
        let cells: Vec<&str> = line.split('\t').collect();
        assert_eq!(cells[2], "amount-in-cents", "{line}");
        assert!(!cells[3].is_empty(), "an error kind: {line}");
        assert_eq!(cells[4], "payments.card", "{line}");
        assert!(cells[6].contains("amount is not a number"), "{line}");
    }
    let other_step = ok(
        &cluster,
        "dlq list --step",
        plugin(
            &cluster,
            &["dlq", "list", PIPELINE, "-n", NS, "--step", "has-amount"],
        ),
    );
    assert!(other_step.starts_with("0 dead letters"), "{other_step}");

    // The step is fixed to take amounts written as strings; the dead letters go back once.
    let fixed = r#"[{"name":"has-amount","filter":"has(\"amount\")"},{"name":"amount-in-cents","map":"{id, cents: (.amount | tonumber * 100 | round)}"}]"#;
    cluster.kubectl_ok(&[
        "patch",
        "pipeline",
        PIPELINE,
        "-n",
        NS,
        "--type=merge",
        "-p",
        &format!(r#"{{"spec":{{"steps":{fixed}}}}}"#),
    ]);
    cluster
        .wait_condition(NS, PIPELINE, "Progressing", "False")
        .await;
    let replayed = ok(
        &cluster,
        "dlq replay",
        plugin(&cluster, &["dlq", "replay", PIPELINE, "-n", NS]),
    );
    assert!(
        replayed.starts_with("replayed 3 dead letters"),
        "{replayed}"
    );
    nats::wait_for_count(&js, "payments-cents", 10, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.diagnostics()));
    // The replayed letters were deleted: none is listed, and replaying again sends nothing.
    let left = ok(
        &cluster,
        "dlq list after the replay",
        plugin(&cluster, &["dlq", "list", PIPELINE, "-n", NS]),
    );
    assert!(left.starts_with("0 dead letters"), "{left}");
    let again = ok(
        &cluster,
        "dlq replay again",
        kubectl_jetflow(&cluster, &["dlq", "replay", PIPELINE, "-n", NS]),
    );
    assert!(
        again.starts_with("replayed 0 dead letters") && again.contains("0 already replayed"),
        "{again}"
    );
    assert_eq!(nats::count(&js, "payments").await.unwrap(), 13);
    // The other pipelines' dead letters on the shared subject are not this pipeline's to delete.
    assert_eq!(nats::count(&js, "payments-dlq").await.unwrap(), 2);
    wait_position(&cluster, 13).await;
    // The second pipeline on the source stream read the three replayed messages and skipped
    // them: its sink holds each payment once.
    wait_position_of(&cluster, AUDIT, 13).await;
    assert_eq!(
        nats::count(&js, "payments-audit").await.unwrap(),
        10,
        "the audit pipeline wrote the replayed payments again"
    );
    let audit_pods = cluster
        .pods(NS, &format!("jetflow.io/pipeline={AUDIT}"))
        .await;
    let metrics = cluster
        .pod_metrics(NS, &audit_pods[0].0)
        .await
        .expect("the audit worker's /metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("jetflow_worker_skipped_messages_total")
                && l.contains(r#"reason="replay_for_other""#)
                && l.ends_with(" 3")),
        "three messages skipped as replayed for another pipeline:\n{metrics}"
    );
    let cents = nats::messages(&js, "payments-cents").await.unwrap();
    assert_eq!(cents.len(), 10, "7 good payments and 3 replayed, once each");
    let ids: BTreeSet<String> = cents
        .iter()
        .map(|m| m.json().unwrap()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 10, "{ids:?}");
    let replayed_cents = cents
        .iter()
        .find(|m| m.json().unwrap()["id"] == "p1")
        .expect("p1 replayed");
    assert_eq!(replayed_cents.json().unwrap()["cents"], 150);
    // The replay's target is its input's: the output does not carry it on.
    assert_eq!(
        replayed_cents.header("Jetflow-Replay-For"),
        None,
        "{:?}",
        replayed_cents.headers
    );

    // rewind by time: every split back to the first message stored after `t`.
    let t = jiff::Timestamp::now();
    let later = publish_js(
        &js,
        "payments.card",
        r#"{"id":"p20","amount":20}"#.to_owned(),
    )
    .await;
    wait_position(&cluster, later).await;
    let out = ok(
        &cluster,
        "rewind --to-time",
        kubectl_jetflow(
            &cluster,
            &["rewind", PIPELINE, "-n", NS, "--to-time", &t.to_string()],
        ),
    );
    assert!(
        out.contains(&format!("rewound: positions >={}", later - 1)),
        "{out}"
    );
    wait_position(&cluster, later).await;

    // rewind by sequence, to the first dead letter: the original bad payments are read again
    // and, with the fixed step, written under their own source sequences.
    let out = ok(
        &cluster,
        "rewind --to-sequence",
        plugin(
            &cluster,
            &[
                "rewind",
                PIPELINE,
                "-n",
                NS,
                "--to-sequence",
                &bad[0].to_string(),
            ],
        ),
    );
    assert!(
        out.contains(&format!("rewound: positions >={}", bad[0] - 1)),
        "{out}"
    );
    let events = cluster.kubectl_ok(&["get", "events", "-n", NS, "-o", "json"]);
    assert!(events.contains("\"Rewound\""), "a Rewound event: {events}");
    nats::wait_for_count(&js, "payments-cents", 14, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.diagnostics()));
    wait_position(&cluster, later).await;
    let sources: BTreeSet<u64> =
        source_sequences(&nats::messages(&js, "payments-cents").await.unwrap())
            .into_iter()
            .collect();
    for seq in &bad {
        assert!(
            sources.contains(seq),
            "source sequence {seq} reprocessed: {sources:?}"
        );
    }
    assert_eq!(
        nats::count(&js, "payments-cents").await.unwrap(),
        14,
        "7 good, 3 replayed, 1 later, 3 reprocessed after the rewind; nothing else twice"
    );

    // A wrong rewind is refused before anything is written.
    let refused = plugin(
        &cluster,
        &["rewind", PIPELINE, "-n", NS, "--to-sequence", "0"],
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--to-sequence must be at least 1"));
}
