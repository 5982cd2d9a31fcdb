//! jetflow end to end on the local control plane: the whole path a user takes, on one machine.
//!
//! ```text
//!   test ──kubectl apply --server-side──▶ jetflow-devcluster (API + kubelet)
//!     │                                     │ runs the pods of Deployments as processes
//!     │                                     ├── jetflow-operator pod (installed from the chart)
//!     │                                     └── jetflow-worker pods (the operator's Deployments)
//!     └──publish / read──────────────────▶ nats-server ◀── operator (admin), workers (data)
//! ```
//!
//! [`Cluster::start`] starts a real nats-server, `jetflow-devcluster up` (the binaries cargo
//! built beside the test: `jetflow-devcluster`, `jetflow-operator`, `jetflow-worker`), renders
//! the Helm chart with the real Helm SDK (`scripts/render-chart.py`) and applies it with kubectl,
//! so the operator runs as a pod under the chart's own ServiceAccount and RBAC. Tests then use
//! kubectl as a user would and read status through the API. Dropping a [`Cluster`] stops the
//! control plane, which stops every pod it runs (SIGTERM, then SIGKILL after the grace period).
//!
//! Every wait has a deadline and, when it passes, panics with the cluster's state: the
//! resources, the pods' logs, the operator's log and the control plane's log.

pub mod nats;
pub mod promql;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use jetflow_crds::pipeline::Pipeline;
use jetflow_testsupport::NatsServer;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tempfile::TempDir;

/// Upper bound for every wait; generous for a loaded 2-core CI machine, never slept.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// The namespace the chart is installed into.
pub const OPERATOR_NAMESPACE: &str = "jetflow-system";

/// How to start a cluster.
#[derive(Clone, Debug)]
pub struct Options {
    /// Appended to nats-server's configuration (authorization blocks).
    pub nats_conf: String,
    /// Operator replicas (`replicaCount`); leader election keeps one active.
    pub operator_replicas: u32,
    /// Extra `--set key=value` for the chart.
    pub chart_values: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nats_conf: String::new(),
            operator_replicas: 1,
            chart_values: Vec::new(),
        }
    }
}

pub use jetflow_testsupport::bin_dir;

/// The workspace root.
pub fn root() -> PathBuf {
    jetflow_testsupport::workspace_root()
}

/// Renders the chart with the real Helm SDK (see [`jetflow_testsupport::chart::render`]).
pub use jetflow_testsupport::chart::render as render_chart;

/// A local control plane with the operator installed, and a nats-server.
pub struct Cluster {
    /// The NATS server the operator and the workers use.
    pub nats: NatsServer,
    /// A client of the API as the admin.
    pub client: kube::Client,
    kubeconfig: PathBuf,
    dir: TempDir,
    devcluster: Option<ControlPlane>,
}

impl Cluster {
    /// Starts a cluster with default options.
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    /// Starts nats-server, the control plane, and installs the operator from the chart; returns
    /// once the operator's Deployment has all its replicas ready.
    pub async fn start_with(options: Options) -> Self {
        // A workspace test build compiles rustls with two providers: pick one, as the binaries do.
        jetflow_nats::install_crypto_provider();
        let nats = NatsServer::start_with(&options.nats_conf);
        let dir = tempfile::Builder::new()
            .prefix("jetflow-cluster-")
            .tempdir()
            .expect("a temporary folder");
        let state = dir.path().join("cluster");
        let bin = bin_dir();
        let binary = bin.join("jetflow-devcluster");
        assert!(
            binary.exists(),
            "{} is missing: `cargo build -p jetflow-devcluster -p jetflow-operator -p jetflow-worker` first (scripts/test.sh does)",
            binary.display()
        );
        let stdout = std::fs::File::create(dir.path().join("devcluster.out")).expect("log file");
        let stderr = std::fs::File::create(dir.path().join("devcluster.log")).expect("log file");
        let control_plane = ControlPlane(
            Command::new(&binary)
                .arg("up")
                .arg("--dir")
                .arg(&state)
                .arg("--crds")
                .arg(root().join("crds/generated"))
                .arg("--bin-dir")
                .arg(&bin)
                .env("RUST_LOG", "info,jetflow_devcluster=debug")
                .env_remove("KUBECONFIG")
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display())),
        );
        let kubeconfig = state.join("kubeconfig");
        let started = Instant::now();
        loop {
            let out =
                std::fs::read_to_string(dir.path().join("devcluster.out")).unwrap_or_default();
            if out.contains("API at") && kubeconfig.exists() {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                panic!(
                    "jetflow-devcluster did not start within 60 s:\n{}",
                    std::fs::read_to_string(dir.path().join("devcluster.log")).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let config = Kubeconfig::read_from(&kubeconfig).expect("the kubeconfig it wrote");
        let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
            .await
            .expect("a client configuration");
        let client = kube::Client::try_from(config).expect("a client");
        let cluster = Self {
            nats,
            client,
            kubeconfig,
            dir,
            devcluster: Some(control_plane),
        };
        cluster.install_operator(&options).await;
        cluster
    }

    async fn install_operator(&self, options: &Options) {
        let mut values = vec![
            format!("nats.url={}", self.nats.url()),
            format!("replicaCount={}", options.operator_replicas),
            "logLevel=info\\,jetflow_operator=debug".to_owned(),
        ];
        values.extend(options.chart_values.iter().cloned());
        let manifests = render_chart(OPERATOR_NAMESPACE, &values);
        std::fs::write(self.dir.path().join("chart.yaml"), &manifests).expect("chart.yaml");
        self.kubectl_ok(&["create", "namespace", OPERATOR_NAMESPACE]);
        self.kubectl_stdin_ok(&["apply", "--server-side", "-f", "-"], &manifests);
        self.wait_for_ready_deployment(OPERATOR_NAMESPACE, "jetflow", options.operator_replicas)
            .await;
    }

    /// The kubeconfig of the admin.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// This test's folder (logs, rendered chart).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs kubectl with the admin's kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, "")
    }

    /// Runs kubectl with `stdin` as its input.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl on PATH");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("kubectl's stdin");
        child.wait_with_output().expect("kubectl output")
    }

    /// Runs kubectl and returns its stdout; panics with its stderr and the cluster's state when
    /// it fails.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        self.kubectl_stdin_ok(args, "")
    }

    /// [`Self::kubectl_ok`] with input.
    pub fn kubectl_stdin_ok(&self, args: &[&str], stdin: &str) -> String {
        let output = self.kubectl_stdin(args, stdin);
        if !output.status.success() {
            panic!(
                "kubectl {} failed ({}):\n{}\n{}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr),
                self.diagnostics()
            );
        }
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `kubectl apply --server-side -n <namespace> -f <file>`, creating the namespace first if
    /// it does not exist.
    pub fn apply(&self, namespace: &str, file: &Path) -> String {
        self.ensure_namespace(namespace);
        self.kubectl_ok(&[
            "apply",
            "--server-side",
            "-n",
            namespace,
            "-f",
            &file.display().to_string(),
        ])
    }

    /// The example manifest `examples/<name>.yaml`.
    pub fn example(name: &str) -> PathBuf {
        root().join("examples").join(format!("{name}.yaml"))
    }

    /// Creates `namespace` unless it exists.
    pub fn ensure_namespace(&self, namespace: &str) {
        if !self
            .kubectl(&["get", "namespace", namespace])
            .status
            .success()
        {
            self.kubectl_ok(&["create", "namespace", namespace]);
        }
    }

    /// Polls `check` every 200 ms until it returns `Some`, up to `timeout`; then panics with
    /// `what` and the cluster's state.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, timeout: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let started = Instant::now();
        loop {
            if let Some(value) = check().await {
                return value;
            }
            if started.elapsed() > timeout {
                panic!(
                    "timed out after {:?} waiting for {what}\n{}",
                    timeout,
                    self.diagnostics()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The Pipeline, if it exists.
    pub async fn pipeline(&self, namespace: &str, name: &str) -> Option<Pipeline> {
        kube::Api::<Pipeline>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .ok()
            .flatten()
    }

    /// Waits until the Pipeline exists and `ok` holds of it.
    pub async fn wait_pipeline(
        &self,
        namespace: &str,
        name: &str,
        what: &str,
        ok: impl Fn(&Pipeline) -> bool,
    ) -> Pipeline {
        self.wait_for(
            &format!("pipeline {namespace}/{name}: {what}"),
            TIMEOUT,
            || async { self.pipeline(namespace, name).await.filter(|p| ok(p)) },
        )
        .await
    }

    /// Waits until the Pipeline's condition `type_` has `status`, for its current generation.
    pub async fn wait_condition(
        &self,
        namespace: &str,
        name: &str,
        type_: &str,
        status: &str,
    ) -> Pipeline {
        self.wait_pipeline(namespace, name, &format!("{type_}={status}"), |p| {
            condition(p, type_).is_some_and(|c| c.status == status)
                && p.status.as_ref().and_then(|s| s.observed_generation) == p.metadata.generation
        })
        .await
    }

    /// Waits until the Deployment has `replicas` ready replicas (and no more pods than that).
    pub async fn wait_for_ready_deployment(&self, namespace: &str, name: &str, replicas: u32) {
        use k8s_openapi::api::apps::v1::Deployment;
        let api = kube::Api::<Deployment>::namespaced(self.client.clone(), namespace);
        self.wait_for(
            &format!("deployment {namespace}/{name} to have {replicas} ready replicas"),
            TIMEOUT,
            || async {
                let d = api.get_opt(name).await.ok().flatten()?;
                let status = d.status?;
                (status.ready_replicas.unwrap_or(0) == replicas as i32
                    && status.replicas.unwrap_or(0) == replicas as i32
                    && status.updated_replicas.unwrap_or(0) == replicas as i32)
                    .then_some(())
            },
        )
        .await;
    }

    /// Names of the pods of `namespace` matching `selector`, with their process ids
    /// (`containerStatuses[0].containerID` is `local://<pid>`).
    pub async fn pods(&self, namespace: &str, selector: &str) -> Vec<(String, Option<u32>)> {
        use k8s_openapi::api::core::v1::Pod;
        let api = kube::Api::<Pod>::namespaced(self.client.clone(), namespace);
        let pods = api
            .list(&kube::api::ListParams::default().labels(selector))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        pods.into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| {
                let pid = p
                    .status
                    .and_then(|s| s.container_statuses)
                    .and_then(|c| c.into_iter().next())
                    .and_then(|c| c.container_id)
                    .and_then(|id| id.strip_prefix("local://").and_then(|p| p.parse().ok()));
                (p.metadata.name.unwrap_or_default(), pid)
            })
            .collect()
    }

    /// Sends `signal` (`KILL`, `TERM`, `STOP`, `CONT`) to a process.
    pub fn signal(pid: u32, signal: &str) {
        // std has no signal API and the workspace forbids unsafe code: kill(1).
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// What the cluster looks like: resources, pod logs (tails), the operator's and the
    /// control plane's logs. Printed by every failed wait.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        let get = |args: &[&str]| {
            let o = self.kubectl(args);
            format!(
                "$ kubectl {}\n{}{}\n",
                args.join(" "),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        };
        out.push_str(&get(&["get", "pipelines,streams,deployments,pods", "-A"]));
        out.push_str(&get(&["get", "pipelines,streams", "-A", "-o", "yaml"]));
        let pods_dir = self.dir.path().join("cluster/kubelet/pods");
        if let Ok(entries) = std::fs::read_dir(&pods_dir) {
            for entry in entries.flatten() {
                if let Ok(logs) = std::fs::read_dir(entry.path().join("logs")) {
                    for log in logs.flatten() {
                        let text = std::fs::read_to_string(log.path()).unwrap_or_default();
                        out.push_str(&format!(
                            "--- {} / {}\n{}\n",
                            entry.file_name().to_string_lossy(),
                            log.file_name().to_string_lossy(),
                            tail(&text, 60)
                        ));
                    }
                }
            }
        }
        let log =
            std::fs::read_to_string(self.dir.path().join("devcluster.log")).unwrap_or_default();
        out.push_str(&format!("--- jetflow-devcluster\n{}\n", tail(&log, 80)));
        out
    }

    /// Stops the control plane (every pod first) and waits for it; called by `Drop`.
    pub fn stop(&mut self) {
        drop(self.devcluster.take());
        if std::env::var_os("JETFLOW_KEEP").is_some() {
            let kept = self.dir.path().to_path_buf();
            eprintln!("kept {}", kept.display());
        }
    }
}

/// The `jetflow-devcluster` process: owned from the moment it is spawned, so that a test that
/// fails while the cluster starts still stops it (SIGTERM: every pod first, then the API; SIGKILL
/// after 45 s).
struct ControlPlane(Child);

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let child = &mut self.0;
        if matches!(child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let started = Instant::now();
            while matches!(child.try_wait(), Ok(None))
                && started.elapsed() < Duration::from_secs(45)
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("JETFLOW_KEEP").is_some() {
            let dir = std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().expect("a temporary folder"),
            );
            let _ = dir.keep();
        }
    }
}

/// The condition `type_` of a Pipeline.
pub fn condition<'a>(
    pipeline: &'a Pipeline,
    type_: &str,
) -> Option<&'a jetflow_crds::condition::Condition> {
    pipeline
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Cluster {
    /// The address of the pod's container port named `metrics`: its pod IP (its own
    /// loopback address on the local control plane) and the port.
    pub async fn metrics_address(&self, namespace: &str, pod: &str) -> Option<String> {
        use k8s_openapi::api::core::v1::Pod;
        let pod = kube::Api::<Pod>::namespaced(self.client.clone(), namespace)
            .get_opt(pod)
            .await
            .ok()
            .flatten()?;
        let port = pod
            .spec?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some("metrics"))?
            .container_port;
        Some(format!("{}:{port}", pod.status?.pod_ip?))
    }

    /// The pod's `/metrics` text, if it answers.
    pub async fn pod_metrics(&self, namespace: &str, pod: &str) -> Option<String> {
        let address = self.metrics_address(namespace, pod).await?;
        tokio::task::spawn_blocking(move || jetflow_testsupport::http::get_ok(&address, "/metrics"))
            .await
            .ok()
            .flatten()
    }
}

pub use jetflow_testsupport::http::metric_sum;

impl Cluster {
    /// Waits until the JetStream `stream` holds as many messages as `expected` has source
    /// sequences, then checks that their source sequences (`Jetflow-Source`) are exactly `expected`:
    /// every source message once, none lost, none repeated.
    pub async fn assert_exactly_once(
        &self,
        js: &async_nats::jetstream::Context,
        stream: &str,
        expected: &[u64],
    ) {
        nats::wait_for_count(js, stream, expected.len() as u64, TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.diagnostics()));
        let stored = nats::messages(js, stream)
            .await
            .expect("the sink's messages");
        let mut want = expected.to_vec();
        want.sort_unstable();
        assert_eq!(
            nats::source_sequences(&stored),
            want,
            "every source message exactly once in {stream}"
        );
    }
}
