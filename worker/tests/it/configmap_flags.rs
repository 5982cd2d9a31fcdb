//! The worker binary accepts the arguments the operator gives its pods (read from the
//! operator's golden Deployment, so the two cannot drift apart) and, asked for ConfigMap
//! stores where there is no Kubernetes API, fails with a message that says so.

use std::process::{Command, Stdio};

use jetflow_testsupport::NatsServer;

/// The worker container's `args` in the operator's golden Deployment.
fn operator_worker_args() -> Vec<String> {
    let golden = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../operator/src/pipeline/build/golden/deployment.yaml"
    );
    let text = std::fs::read_to_string(golden).expect("operator golden Deployment");
    let mut lines = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("- args:"));
    lines.next().expect("worker args");
    lines
        .map_while(|l| l.trim_start().strip_prefix("- "))
        .map(|a| a.trim_matches('\'').trim_matches('"').to_owned())
        .collect()
}

#[test]
fn the_operators_worker_arguments_select_the_config_map_stores() {
    let args = operator_worker_args();
    for pair in [
        ["--checkpoint-store", "configmap"],
        ["--assignment-store", "configmap"],
    ] {
        assert!(
            args.windows(2).any(|w| w == pair),
            "the operator passes {pair:?}: {args:?}"
        );
    }

    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = crate::common::write_manifest(
        dir.path(),
        &format!(
            r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata: {{name: orders, namespace: shop}}
spec:
  connection: {{url: "{}"}}
  source:
    jetstream: {{stream: orders, filterSubjects: ["orders.eu"]}}
  sink:
    jetstream: {{stream: copies, subject: "copies.{{{{token(2)}}}}"}}
"#,
            server.url()
        ),
    );

    // The pod's arguments, with the paths and the pod name of this test.
    let args: Vec<String> = args
        .iter()
        .map(|a| match a.as_str() {
            "/etc/jetflow/config/pipeline.yaml" => manifest.display().to_string(),
            "/etc/jetflow/secrets" => dir.path().display().to_string(),
            "$(POD_NAME)" => "orders-worker-0".to_owned(),
            "0.0.0.0:9090" => "127.0.0.1:0".to_owned(),
            other => other.to_owned(),
        })
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_jetflow-worker"))
        .args(&args)
        .env("POD_NAMESPACE", "shop")
        .env("KUBECONFIG", dir.path().join("no-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env("HOME", dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run jetflow-worker");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("a ConfigMap store needs the Kubernetes API"),
        "{stderr}"
    );
}
