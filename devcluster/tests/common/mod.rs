//! Shared helpers of the API server tests: a server started in-process, clients from the
//! kubeconfig it writes, kubectl, and polling with a deadline.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use jetflow_devcluster::apiserver::{Config, Handle, Server};
use kube::api::{ApiResource, DynamicObject};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The jetflow CRDs, as JSON.
pub fn jetflow_crds() -> Vec<Value> {
    ["jetflow.io_pipelines.yaml", "jetflow.io_streams.yaml"]
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(repo_root().join("crds/generated").join(f))
                .expect("CRD file");
            serde_yaml_ng::from_str(&text).expect("CRD YAML")
        })
        .collect()
}

/// A running server, its folder and the admin kubeconfig in it.
pub struct Cluster {
    pub handle: Handle,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

impl Cluster {
    /// Starts a server with the jetflow CRDs.
    pub async fn start() -> Self {
        Self::start_with(Config {
            crds: jetflow_crds(),
            ..Config::default()
        })
        .await
    }

    /// Starts a server with `config`.
    pub async fn start_with(config: Config) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let handle = Server::start(config).await.expect("server starts");
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        handle
            .write_kubeconfig(&kubeconfig)
            .expect("kubeconfig written");
        Self {
            handle,
            dir,
            kubeconfig,
        }
    }

    /// A kube client read from the written kubeconfig (HTTPS with the server's CA).
    pub async fn client(&self) -> kube::Client {
        let kc = Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig reads");
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("config");
        kube::Client::try_from(config).expect("client")
    }

    /// Runs kubectl against the server.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        std::process::Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .expect("kubectl runs")
    }

    /// Runs kubectl and asserts it succeeded; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Writes a file into the cluster's folder.
    pub fn file(&self, name: &str, content: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).expect("file written");
        p
    }
}

/// The Pipeline resource.
pub fn pipelines() -> ApiResource {
    ApiResource {
        group: "jetflow.io".into(),
        version: "v1alpha1".into(),
        api_version: "jetflow.io/v1alpha1".into(),
        kind: "Pipeline".into(),
        plural: "pipelines".into(),
    }
}

/// A minimal Pipeline.
pub fn pipeline(name: &str) -> DynamicObject {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "jetflow.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {
            "source": {"jetstream": {"stream": "in"}},
            "sink": {"jetstream": {"stream": "out", "subject": "out.{{subject}}"}},
            "parallelism": 1,
        },
    }))
    .expect("pipeline")
}

/// Polls `check` every 20 ms until it returns `Some`, failing after 10 s.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
