//! The local kubelet against kube-fake-client's in-process API, with real processes: a small
//! Python HTTP server (`fakeworker`, found through the kubelet's bin folder) that records its
//! arguments, environment and configuration file, serves `/readyz` and traps SIGTERM.
//!
//! kube-fake-client has no TokenRequest: a create interceptor answers
//! `POST .../serviceaccounts/{name}/token` with a token, as the local API server does. It
//! deletes objects at once (no graceful deletion), so a deleted pod "vanishes" for the kubelet,
//! which stops its process gracefully all the same; one test puts [`graceful`] in front of it,
//! which marks pods deleted as the local API server does (`deletionTimestamp`) until a DELETE
//! with `gracePeriodSeconds=0` removes them.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jetflow_devcluster::kubelet::{self, KubeletConfig};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapKeySelector, ConfigMapVolumeSource, Container, ContainerPort,
    EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, Pod, PodSpec,
    PodTemplateSpec, Probe, ServiceAccount, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube_fake_client::ClientBuilder;
use kube_fake_client::interceptor::Funcs;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const SERVER: &str = r#"#!/usr/bin/env python3
import http.server, json, os, signal, sys, time
args = sys.argv[1:]
def opt(name, default=None):
    return args[args.index(name) + 1] if name in args else default
host, port = opt("--listen", "127.0.0.1:0").rsplit(":", 1)
config = opt("--config")
out = os.environ["OUT_DIR"]
name = os.environ.get("POD_NAME", "unknown")
def append(suffix, text):
    with open(os.path.join(out, name + suffix), "a") as f:
        f.write(text + "\n")
term_delay = float(os.environ.get("TERM_DELAY", "0"))
def on_term(sig, frame):
    append(".term", "%f" % time.time())
    if os.environ.get("IGNORE_TERM"):
        return
    time.sleep(term_delay)
    append(".exit", "%f" % time.time())
    os._exit(0)
signal.signal(signal.SIGTERM, on_term)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ready = os.environ.get("READY_FILE")
        ok = self.path != "/readyz" or not ready or os.path.exists(ready)
        self.send_response(200 if ok else 503)
        self.end_headers()
    def log_message(self, *a):
        pass
server = http.server.HTTPServer((host, int(port)), Handler)
record = {"argv": sys.argv, "env": dict(os.environ), "cwd": os.getcwd(), "pid": os.getpid(),
          "config": open(config).read() if config and os.path.exists(config) else None}
append(".start", json.dumps(record))
print("serving on", host, port, flush=True)
server.serve_forever(poll_interval=0.1)
"#;

/// A kubelet running against a fake API, with its folders.
struct Harness {
    client: kube::Client,
    dir: tempfile::TempDir,
    stop: CancellationToken,
    task: Option<JoinHandle<Result<(), kubelet::KubeletError>>>,
}

impl Harness {
    async fn start() -> Self {
        Self::start_with(false).await
    }

    /// A harness whose API deletes pods gracefully.
    async fn start_graceful() -> Self {
        Self::start_with(true).await
    }

    async fn start_with(graceful_deletion: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(dir.path().join("out")).unwrap();
        let script = bin.join("fakeworker");
        // The interpreter itself, not a launcher (such as a pyenv shim) that adds variables.
        let python = std::process::Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .unwrap();
        let python = String::from_utf8(python.stdout).unwrap();
        let body = SERVER.replacen("/usr/bin/env python3", python.trim(), 1);
        std::fs::write(&script, body).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let token_requests = Funcs::new().create(|ctx| {
            if ctx.object.get("kind").and_then(Value::as_str) == Some("TokenRequest") {
                let mut answer = ctx.object.clone();
                answer["status"] = json!({
                    "token": format!("token-of-{}", ctx.namespace),
                    "expirationTimestamp": jiff::Timestamp::now()
                        .checked_add(jiff::SignedDuration::from_hours(24))
                        .unwrap()
                        .to_string(),
                });
                return Ok(Some(answer));
            }
            Ok(None)
        });
        let client = ClientBuilder::new()
            .with_status_subresource::<Pod>()
            .with_status_subresource::<Deployment>()
            .with_object(ServiceAccount {
                metadata: ObjectMeta {
                    name: Some("default".into()),
                    namespace: Some("default".into()),
                    ..Default::default()
                },
                ..Default::default()
            })
            .with_interceptor_funcs(token_requests)
            .build()
            .await
            .unwrap();
        let client = if graceful_deletion {
            graceful(client)
        } else {
            client
        };
        let stop = CancellationToken::new();
        let config = KubeletConfig {
            root: dir.path().join("kubelet"),
            bin_dirs: vec![dir.path().join("missing"), bin],
            server_url: "http://127.0.0.1:6443".into(),
        };
        let task = tokio::spawn(kubelet::run(client.clone(), config, stop.clone()));
        Self {
            client,
            dir,
            stop,
            task: Some(task),
        }
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// The live pods of Deployment `name`.
    async fn pods_of(&self, name: &str) -> Vec<Pod> {
        let mut pods: Vec<Pod> = self
            .pods()
            .list(&ListParams::default().labels(&format!("app={name}")))
            .await
            .unwrap()
            .items;
        pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        pods
    }

    /// The records the server of pod `pod` wrote at each start.
    fn starts(&self, pod: &str) -> Vec<Value> {
        read_lines(&self.out().join(format!("{pod}.start")))
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the kubelet stops within its pods' grace periods")
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Pods marked deleted: "namespace/name" to (deletionTimestamp, grace seconds).
type Marks = Arc<Mutex<HashMap<String, (String, i64)>>>;

/// `client` with graceful pod deletion in front: a DELETE of a pod without
/// `gracePeriodSeconds=0` only marks it (reads show `deletionTimestamp` and
/// `deletionGracePeriodSeconds`); a DELETE with it removes the pod.
fn graceful(client: kube::Client) -> kube::Client {
    let marks = Marks::default();
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let (client, marks) = (client.clone(), marks.clone());
        async move { graceful_send(client, marks, request).await }
    });
    kube::Client::new(service, "default")
}

fn mark(object: &mut Value, marks: &Marks) {
    let meta = &object["metadata"];
    let key = format!(
        "{}/{}",
        meta["namespace"].as_str().unwrap_or_default(),
        meta["name"].as_str().unwrap_or_default()
    );
    if let Some((at, grace)) = marks.lock().unwrap().get(&key) {
        object["metadata"]["deletionTimestamp"] = json!(at);
        object["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
    }
}

async fn graceful_send(
    client: kube::Client,
    marks: Marks,
    request: http::Request<kube::client::Body>,
) -> Result<http::Response<kube::client::Body>, kube::Error> {
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // api/v1/namespaces/{ns}/pods[/{name}]
    let pods = segments.len() >= 5 && segments[..2] == ["api", "v1"] && segments[4] == "pods"
        || segments == ["api", "v1", "pods"];
    let method = request.method().clone();
    if pods && method == http::Method::DELETE && segments.len() == 6 {
        let (namespace, name) = (segments[3].to_owned(), segments[5].to_owned());
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await?;
        let options: Value = serde_json::from_slice(&bytes).unwrap_or(json!({}));
        let key = format!("{namespace}/{name}");
        if options["gracePeriodSeconds"].as_i64() != Some(0) {
            let pod = Api::<Pod>::namespaced(client.clone(), &namespace)
                .get(&name)
                .await?;
            let grace = options["gracePeriodSeconds"]
                .as_i64()
                .or(pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds))
                .unwrap_or(30);
            marks
                .lock()
                .unwrap()
                .entry(key)
                .or_insert_with(|| (jiff::Timestamp::now().to_string(), grace));
            let mut object = serde_json::to_value(&pod).unwrap();
            mark(&mut object, &marks);
            return Ok(http::Response::new(
                serde_json::to_vec(&object).unwrap().into(),
            ));
        }
        marks.lock().unwrap().remove(&key);
        let request = http::Request::from_parts(parts, bytes.into());
        return client.send(request).await;
    }
    let response = client.send(request).await?;
    if !(pods && method == http::Method::GET && response.status().is_success()) {
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let mut object: Value = serde_json::from_slice(&body.collect_bytes().await?).unwrap();
    if let Some(items) = object.get_mut("items").and_then(Value::as_array_mut) {
        items.iter_mut().for_each(|item| mark(item, &marks));
    } else {
        mark(&mut object, &marks);
    }
    Ok(http::Response::from_parts(
        parts,
        serde_json::to_vec(&object).unwrap().into(),
    ))
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Polls `check` every 100 ms until it gives a value, failing after `secs` seconds.
async fn wait_for<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn alive(pid: i64) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn value_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// A Deployment of the recording server: config volume at /etc/app/config, an emptyDir at
/// /cache, readiness on the named port.
fn server_deployment(h: &Harness, name: &str, replicas: i32, extra_env: Vec<EnvVar>) -> Deployment {
    let labels = BTreeMap::from([("app".to_owned(), name.to_owned())]);
    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_IP", "status.podIP"),
        EnvVar {
            name: "GREETING".into(),
            value_from: Some(EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: "app-config".into(),
                    key: "greeting".into(),
                    optional: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
        value_env("OUT_DIR", &h.out().to_string_lossy()),
        value_env("CACHE_DIR", "/cache/sub"),
        value_env("SELF", "pod $(POD_NAME)"),
    ];
    env.extend(extra_env);
    Deployment {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    termination_grace_period_seconds: Some(10),
                    containers: vec![Container {
                        name: "server".into(),
                        image: Some("example/fakeworker:1".into()),
                        command: Some(vec!["/usr/local/bin/fakeworker".into()]),
                        args: Some(vec![
                            "--listen".into(),
                            "0.0.0.0:8080".into(),
                            "--config".into(),
                            "/etc/app/config/settings.txt".into(),
                            "--id".into(),
                            "$(POD_NAME)".into(),
                            "--literal".into(),
                            "$$(POD_NAME)".into(),
                            "--etc".into(),
                            "/etc/app".into(),
                        ]),
                        env: Some(env),
                        ports: Some(vec![ContainerPort {
                            name: Some("http".into()),
                            container_port: 8080,
                            ..Default::default()
                        }]),
                        readiness_probe: Some(Probe {
                            http_get: Some(HTTPGetAction {
                                path: Some("/readyz".into()),
                                port: IntOrString::String("http".into()),
                                ..Default::default()
                            }),
                            period_seconds: Some(1),
                            failure_threshold: Some(1),
                            ..Default::default()
                        }),
                        volume_mounts: Some(vec![
                            VolumeMount {
                                name: "config".into(),
                                mount_path: "/etc/app/config".into(),
                                read_only: Some(true),
                                ..Default::default()
                            },
                            VolumeMount {
                                name: "cache".into(),
                                mount_path: "/cache".into(),
                                ..Default::default()
                            },
                        ]),
                        ..Default::default()
                    }],
                    volumes: Some(vec![
                        Volume {
                            name: "config".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: "app-config".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        Volume {
                            name: "cache".into(),
                            empty_dir: Some(EmptyDirVolumeSource::default()),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

async fn create_config(h: &Harness, settings: &str) {
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("app-config".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            ("settings.txt".to_owned(), settings.to_owned()),
            ("greeting".to_owned(), "hello".to_owned()),
        ])),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(h.client.clone(), "default")
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
}

/// Waits until Deployment `name` has `n` pods, all ready, and reports `n` ready replicas.
async fn wait_ready(h: &Harness, name: &str, n: usize) -> Vec<Pod> {
    wait_for(&format!("{n} ready pods of {name}"), 60, || async {
        let pods = h.pods_of(name).await;
        let d = h.deployments().get(name).await.ok()?;
        let status = d.status?;
        (pods.len() == n
            && pods.iter().all(is_ready)
            && status.ready_replicas == Some(n as i32)
            && status.available_replicas == Some(n as i32))
        .then_some(pods)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_pods_run_with_env_volumes_kubeconfig_and_their_own_ip() {
    let mut h = Harness::start().await;
    create_config(&h, "version=1").await;
    let d = server_deployment(&h, "web", 2, vec![]);
    h.deployments()
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let pods = wait_ready(&h, "web", 2).await;

    let deployment = h.deployments().get("web").await.unwrap();
    let status = deployment.status.clone().unwrap();
    assert_eq!(status.replicas, Some(2));
    assert_eq!(status.updated_replicas, Some(2));
    assert_eq!(status.unavailable_replicas, Some(0));
    assert_eq!(status.observed_generation, deployment.metadata.generation);
    let conditions = status.conditions.unwrap();
    let available = conditions.iter().find(|c| c.type_ == "Available").unwrap();
    assert_eq!(available.status, "True");
    let progressing = conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(
        progressing.reason.as_deref(),
        Some("NewReplicaSetAvailable")
    );

    let mut ips = Vec::new();
    for pod in &pods {
        let name = pod.metadata.name.clone().unwrap();
        let hash = &pod.metadata.labels.as_ref().unwrap()["pod-template-hash"];
        assert!(
            name.starts_with(&format!("web-{hash}-"))
                && name.len() == "web-".len() + hash.len() + 6
        );
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.controller,
                owner.block_owner_deletion
            ),
            ("Deployment", Some(true), Some(true))
        );
        assert_eq!(owner.uid, deployment.metadata.uid.clone().unwrap());
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("local"));
        let pod_status = pod.status.as_ref().unwrap();
        assert_eq!(pod_status.phase.as_deref(), Some("Running"));
        assert_eq!(pod_status.host_ip.as_deref(), Some("127.0.0.1"));
        let ip = pod_status.pod_ip.clone().unwrap();
        assert!(ip.starts_with("127.0.") && ip != "127.0.0.1", "{ip}");
        ips.push(ip.clone());
        let cs = &pod_status.container_statuses.as_ref().unwrap()[0];
        assert!(cs.ready && cs.started == Some(true) && cs.restart_count == 0);
        assert!(cs.state.as_ref().unwrap().running.is_some());
        assert_eq!(cs.image, "example/fakeworker:1");
        let pid: i64 = cs
            .container_id
            .as_ref()
            .unwrap()
            .strip_prefix("local://")
            .unwrap()
            .parse()
            .unwrap();

        let start = h.starts(&name).pop().unwrap();
        assert_eq!(start["pid"].as_i64(), Some(pid));
        let argv: Vec<&str> = start["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let pod_dir = h
            .dir
            .path()
            .join("kubelet/pods")
            .join(format!("default_{name}"));
        let config_path = pod_dir.join("volumes/config/settings.txt");
        assert_eq!(
            argv[1..],
            [
                "--listen",
                &format!("{ip}:8080"),
                "--config",
                &config_path.to_string_lossy(),
                "--id",
                &name,
                "--literal",
                "$(POD_NAME)",
                "--etc",
                &pod_dir.join("rootfs/server/etc/app").to_string_lossy(),
            ]
        );
        // A parent of a mount path leads to the mount through the container's rootfs tree.
        assert_eq!(
            std::fs::read_to_string(pod_dir.join("rootfs/server/etc/app/config/settings.txt"))
                .unwrap(),
            "version=1"
        );
        assert_eq!(start["config"], "version=1");
        let env = start["env"].as_object().unwrap();
        assert_eq!(env["POD_NAME"], name.as_str());
        assert_eq!(env["POD_IP"], ip.as_str());
        assert_eq!(env["GREETING"], "hello");
        assert_eq!(env["SELF"], format!("pod {name}").as_str());
        assert_eq!(
            env["CACHE_DIR"],
            pod_dir.join("volumes/cache/sub").to_string_lossy().as_ref()
        );
        let kubeconfig = pod_dir.join("kubeconfig");
        assert_eq!(env["KUBECONFIG"], kubeconfig.to_string_lossy().as_ref());
        let text = std::fs::read_to_string(&kubeconfig).unwrap();
        assert!(
            text.contains("token-of-default") && text.contains("http://127.0.0.1:6443"),
            "{text}"
        );
        let allowed = [
            "PATH",
            "HOME",
            "USER",
            "LOGNAME",
            "LANG",
            "LC_ALL",
            "TZ",
            "HOSTNAME",
            "KUBECONFIG",
            "POD_NAME",
            "POD_IP",
            "GREETING",
            "OUT_DIR",
            "CACHE_DIR",
            "SELF",
        ];
        for key in env.keys() {
            // LC_CTYPE may be set by Python itself.
            assert!(
                allowed.contains(&key.as_str()) || key == "LC_CTYPE",
                "{key} leaked into the pod"
            );
        }
        let log = std::fs::read_to_string(pod_dir.join("logs/server.log")).unwrap();
        assert!(log.contains(&format!("serving on {ip} 8080")), "{log}");
    }
    assert_ne!(ips[0], ips[1]);

    // A changed ConfigMap reaches the mounted file.
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), "default");
    cms.patch(
        "app-config",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"settings.txt": "version=2"}})),
    )
    .await
    .unwrap();
    let file = h
        .dir
        .path()
        .join("kubelet/pods")
        .join(format!(
            "default_{}",
            pods[0].metadata.name.as_deref().unwrap()
        ))
        .join("volumes/config/settings.txt");
    wait_for("the new configuration in the volume", 10, || async {
        (std::fs::read_to_string(&file).ok()? == "version=2").then_some(())
    })
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_drives_the_ready_condition_and_ready_replicas() {
    let mut h = Harness::start().await;
    create_config(&h, "x").await;
    let flag = h.dir.path().join("ready");
    let d = server_deployment(
        &h,
        "gate",
        1,
        vec![value_env("READY_FILE", &flag.to_string_lossy())],
    );
    h.deployments()
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let running = wait_for("a running, unready pod", 30, || async {
        let pods = h.pods_of("gate").await;
        let pod = pods.first()?.clone();
        let cs = pod
            .status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .first()?
            .clone();
        (cs.state.as_ref()?.running.is_some() && cs.started == Some(true)).then_some(pod)
    })
    .await;
    assert!(!is_ready(&running));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !is_ready(&h.pods_of("gate").await[0]),
        "not ready while /readyz fails"
    );
    let d = h.deployments().get("gate").await.unwrap();
    assert_eq!(d.status.unwrap().ready_replicas, Some(0));

    std::fs::write(&flag, "").unwrap();
    wait_ready(&h, "gate", 1).await;

    std::fs::remove_file(&flag).unwrap();
    wait_for("the pod unready again", 20, || async {
        let pods = h.pods_of("gate").await;
        let d = h.deployments().get("gate").await.ok()?;
        (!is_ready(pods.first()?) && d.status?.ready_replicas == Some(0)).then_some(())
    })
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_container_backs_off_and_counts_restarts() {
    let mut h = Harness::start().await;
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("crasher".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some("local".into()),
            containers: vec![Container {
                name: "worker".into(),
                command: Some(vec![
                    "sh".into(),
                    "-c".into(),
                    "echo crashing; exit 3".into(),
                ]),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    };
    h.pods().create(&PostParams::default(), &pod).await.unwrap();
    let cs = wait_for("CrashLoopBackOff after two restarts", 30, || async {
        let pod = h.pods().get("crasher").await.ok()?;
        let cs = pod.status?.container_statuses?.first()?.clone();
        let waiting = cs.state.as_ref()?.waiting.as_ref()?;
        (waiting.reason.as_deref() == Some("CrashLoopBackOff") && cs.restart_count >= 2)
            .then_some(cs)
    })
    .await;
    let waiting = cs.state.unwrap().waiting.unwrap();
    let message = waiting.message.unwrap();
    assert!(
        message.starts_with("back-off ")
            && message.contains("restarting failed container=worker pod=crasher_default("),
        "{message}"
    );
    let last = cs.last_state.unwrap().terminated.unwrap();
    assert_eq!(last.exit_code, 3);
    assert_eq!(last.reason.as_deref(), Some("Error"));
    assert!(!cs.ready);
    let log = std::fs::read_to_string(
        h.dir
            .path()
            .join("kubelet/pods/default_crasher/logs/worker.log"),
    )
    .unwrap();
    assert!(
        log.matches("crashing").count() >= 3,
        "each run appends to the log: {log}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_down_terminates_pods_gracefully_within_their_grace_period() {
    let mut h = Harness::start().await;
    create_config(&h, "x").await;
    let d = server_deployment(&h, "scale", 3, vec![value_env("TERM_DELAY", "1")]);
    h.deployments()
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let before = wait_ready(&h, "scale", 3).await;
    h.deployments()
        .patch(
            "scale",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    let after = wait_ready(&h, "scale", 1).await;
    let kept = after[0].metadata.name.clone().unwrap();
    for pod in before
        .iter()
        .filter(|p| p.metadata.name.as_deref() != Some(&kept))
    {
        let name = pod.metadata.name.clone().unwrap();
        let pid = h.starts(&name)[0]["pid"].as_i64().unwrap();
        wait_for("the removed pod's process gone", 20, || async {
            (!alive(pid)).then_some(())
        })
        .await;
        let term = read_lines(&h.out().join(format!("{name}.term")));
        let exit = read_lines(&h.out().join(format!("{name}.exit")));
        assert_eq!(term.len(), 1, "SIGTERM seen once by {name}");
        assert_eq!(
            exit.len(),
            1,
            "{name} exited on its own within the grace period"
        );
        let (t, e): (f64, f64) = (term[0].parse().unwrap(), exit[0].parse().unwrap());
        assert!(e - t >= 0.9, "{name} had its second to finish");
        let dir = h.dir.path().join(format!("kubelet/pods/default_{name}"));
        wait_for("the removed pod's folder gone", 10, || async {
            (!dir.exists()).then_some(())
        })
        .await;
    }
    let kept_pid = h.starts(&kept)[0]["pid"].as_i64().unwrap();
    assert!(alive(kept_pid));

    // Scale up again: new pods start.
    h.deployments()
        .patch(
            "scale",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    wait_ready(&h, "scale", 2).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_change_rolls_the_pods_one_at_a_time() {
    let mut h = Harness::start().await;
    create_config(&h, "x").await;
    let d = server_deployment(&h, "roll", 2, vec![]);
    h.deployments()
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let old = wait_ready(&h, "roll", 2).await;
    let old_hash = old[0].metadata.labels.as_ref().unwrap()["pod-template-hash"].clone();
    h.deployments()
        .patch(
            "roll",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"template": {"metadata": {"annotations": {"rev": "2"}}}}}),
            ),
        )
        .await
        .unwrap();
    let (most, least_ready) = (AtomicUsize::new(0), AtomicUsize::new(usize::MAX));
    let new_hash = wait_for("every pod on the new template", 60, || {
        let h = &h;
        let old_hash = old_hash.clone();
        let (most, least_ready) = (&most, &least_ready);
        async move {
            let pods = h.pods_of("roll").await;
            most.fetch_max(pods.len(), Ordering::SeqCst);
            least_ready.fetch_min(
                pods.iter().filter(|p| is_ready(p)).count(),
                Ordering::SeqCst,
            );
            let hashes: Vec<String> = pods
                .iter()
                .map(|p| p.metadata.labels.as_ref().unwrap()["pod-template-hash"].clone())
                .collect();
            let d = h.deployments().get("roll").await.ok()?;
            let st = d.status?;
            (pods.len() == 2
                && pods.iter().all(is_ready)
                && hashes.iter().all(|x| *x != old_hash)
                && st.updated_replicas == Some(2)
                && st.available_replicas == Some(2))
            .then(|| hashes[0].clone())
        }
    })
    .await;
    assert_ne!(new_hash, old_hash);
    let (most, least_ready) = (most.into_inner(), least_ready.into_inner());
    assert!(
        most <= 3,
        "at most one pod over the replicas (surge 1), saw {most}"
    );
    assert_eq!(
        least_ready, 2,
        "never fewer ready pods than replicas (maxUnavailable 0)"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_pod_is_replaced_and_its_process_stopped() {
    let mut h = Harness::start().await;
    create_config(&h, "x").await;
    let d = server_deployment(&h, "heal", 1, vec![]);
    h.deployments()
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let first = wait_ready(&h, "heal", 1).await.remove(0);
    let first_name = first.metadata.name.clone().unwrap();
    let pid = h.starts(&first_name)[0]["pid"].as_i64().unwrap();
    h.pods()
        .delete(&first_name, &DeleteParams::default())
        .await
        .unwrap();
    let second = wait_for("a replacement pod", 30, || async {
        let pods = h.pods_of("heal").await;
        pods.into_iter()
            .find(|p| p.metadata.name.as_deref() != Some(&first_name) && is_ready(p))
    })
    .await;
    assert_ne!(second.metadata.name, first.metadata.name);
    wait_for("the deleted pod's process gone", 20, || async {
        (!alive(pid)).then_some(())
    })
    .await;
    assert_eq!(
        read_lines(&h.out().join(format!("{first_name}.term"))).len(),
        1
    );

    // Deleting the Deployment takes its pods and processes with it.
    let pid2 = h.starts(second.metadata.name.as_deref().unwrap())[0]["pid"]
        .as_i64()
        .unwrap();
    h.deployments()
        .delete("heal", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the Deployment's process gone", 20, || async {
        (!alive(pid2)).then_some(())
    })
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_kubelet_leaves_no_process_alive() {
    let mut h = Harness::start().await;
    create_config(&h, "x").await;
    let polite = server_deployment(&h, "polite", 2, vec![]);
    h.deployments()
        .create(&PostParams::default(), &polite)
        .await
        .unwrap();
    let mut stubborn = server_deployment(&h, "stubborn", 1, vec![value_env("IGNORE_TERM", "1")]);
    let spec = stubborn
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap();
    spec.termination_grace_period_seconds = Some(1);
    h.deployments()
        .create(&PostParams::default(), &stubborn)
        .await
        .unwrap();
    let mut pids = Vec::new();
    for (name, n) in [("polite", 2), ("stubborn", 1)] {
        for pod in wait_ready(&h, name, n).await {
            let pod_name = pod.metadata.name.unwrap();
            pids.push((
                pod_name.clone(),
                h.starts(&pod_name)[0]["pid"].as_i64().unwrap(),
            ));
        }
    }
    let began = std::time::Instant::now();
    h.stop().await;
    let took = began.elapsed();
    for (name, pid) in &pids {
        assert!(!alive(*pid), "{name} (pid {pid}) survived the kubelet");
        assert_eq!(
            read_lines(&h.out().join(format!("{name}.term"))).len(),
            1,
            "{name} got SIGTERM"
        );
    }
    assert!(
        took < Duration::from_secs(8),
        "pods stop in parallel within their grace: {took:?}"
    );
    // Nothing was deleted: the API server goes away too.
    assert_eq!(h.pods_of("polite").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_marked_deleted_is_stopped_within_its_grace_then_removed_by_the_kubelet() {
    let mut h = Harness::start_graceful().await;
    create_config(&h, "x").await;
    let d = server_deployment(&h, "grace", 1, vec![value_env("TERM_DELAY", "1")]);
    h.deployments()
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let first = wait_ready(&h, "grace", 1).await.remove(0);
    let name = first.metadata.name.clone().unwrap();
    h.pods()
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    let marked = h.pods().get(&name).await.unwrap();
    assert!(
        marked.metadata.deletion_timestamp.is_some(),
        "the API only marks the pod"
    );
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(10));
    wait_for("the marked pod removed", 30, || async {
        h.pods()
            .get_opt(&name)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    // Removed only after its process had its second to finish.
    assert_eq!(read_lines(&h.out().join(format!("{name}.term"))).len(), 1);
    assert_eq!(read_lines(&h.out().join(format!("{name}.exit"))).len(), 1);
    wait_for("a replacement pod", 30, || async {
        let pods = h.pods_of("grace").await;
        (pods.len() == 1 && pods[0].metadata.name.as_deref() != Some(&name) && is_ready(&pods[0]))
            .then_some(())
    })
    .await;

    // A process that ignores SIGTERM is killed at the end of the grace period asked for.
    let mut stubborn = server_deployment(&h, "stubborn", 1, vec![value_env("IGNORE_TERM", "1")]);
    stubborn.metadata.name = Some("stubborn".into());
    h.deployments()
        .create(&PostParams::default(), &stubborn)
        .await
        .unwrap();
    let pod = wait_ready(&h, "stubborn", 1).await.remove(0);
    let name = pod.metadata.name.clone().unwrap();
    let pid = h.starts(&name)[0]["pid"].as_i64().unwrap();
    let began = std::time::Instant::now();
    let params = DeleteParams {
        grace_period_seconds: Some(1),
        ..Default::default()
    };
    h.pods().delete(&name, &params).await.unwrap();
    wait_for("the stubborn pod removed", 30, || async {
        h.pods()
            .get_opt(&name)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let took = began.elapsed();
    assert!(!alive(pid), "SIGKILL after the grace period");
    assert!(
        took >= Duration::from_millis(900),
        "the grace period was given: {took:?}"
    );
    assert_eq!(read_lines(&h.out().join(format!("{name}.term"))).len(), 1);
    assert!(read_lines(&h.out().join(format!("{name}.exit"))).is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_liveness_probe_restarts_the_container() {
    let mut h = Harness::start().await;
    let flag = h.dir.path().join("alive");
    let check = format!("test -e {}", flag.display());
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("sleeper".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some("local".into()),
            termination_grace_period_seconds: Some(5),
            containers: vec![Container {
                name: "sleeper".into(),
                command: Some(vec!["sh".into(), "-c".into(), "exec sleep 600".into()]),
                liveness_probe: Some(Probe {
                    exec: Some(k8s_openapi::api::core::v1::ExecAction {
                        command: Some(vec!["sh".into(), "-c".into(), check]),
                    }),
                    period_seconds: Some(1),
                    failure_threshold: Some(2),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    };
    h.pods().create(&PostParams::default(), &pod).await.unwrap();
    let cs = wait_for("a restart after the liveness probe failed", 30, || async {
        let pod = h.pods().get("sleeper").await.ok()?;
        let cs = pod.status?.container_statuses?.first()?.clone();
        (cs.restart_count >= 1).then_some(cs)
    })
    .await;
    let last = cs.last_state.unwrap().terminated.unwrap();
    assert_eq!(last.exit_code, 143, "stopped by SIGTERM");
    assert!(last.message.unwrap().starts_with("Liveness probe failed"));

    // Alive again: the container keeps running.
    std::fs::write(&flag, "").unwrap();
    let running = wait_for("the container running", 30, || async {
        let pod = h.pods().get("sleeper").await.ok()?;
        let cs = pod.status?.container_statuses?.first()?.clone();
        cs.state.as_ref()?.running.as_ref()?;
        Some(cs.restart_count)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pod = h.pods().get("sleeper").await.unwrap();
    let cs = pod.status.unwrap().container_statuses.unwrap().remove(0);
    assert_eq!(
        cs.restart_count, running,
        "no restart while the probe succeeds"
    );
    assert!(cs.state.unwrap().running.is_some());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_waits_in_container_creating_until_its_config_map_exists() {
    let mut h = Harness::start().await;
    let d = server_deployment(&h, "early", 1, vec![]);
    h.deployments()
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let message = wait_for(
        "ContainerCreating for the missing ConfigMap",
        30,
        || async {
            let pods = h.pods_of("early").await;
            let cs = pods
                .first()?
                .status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .first()?
                .clone();
            let waiting = cs.state?.waiting?;
            (waiting.reason.as_deref() == Some("ContainerCreating"))
                .then_some(waiting.message)
                .flatten()
        },
    )
    .await;
    assert!(message.contains("app-config"), "{message}");
    create_config(&h, "late").await;
    let pods = wait_ready(&h, "early", 1).await;
    let start = h
        .starts(pods[0].metadata.name.as_deref().unwrap())
        .pop()
        .unwrap();
    assert_eq!(start["config"], "late");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_run_first_and_a_never_restarted_pod_succeeds() {
    let mut h = Harness::start().await;
    let marker = h.out().join("initialized");
    let shell = |script: String| Container {
        name: String::new(),
        command: Some(vec!["sh".into(), "-c".into(), script]),
        ..Default::default()
    };
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("batch".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some("local".into()),
            restart_policy: Some("Never".into()),
            init_containers: Some(vec![Container {
                name: "prepare".into(),
                ..shell(format!("sleep 0.5; touch {}", marker.display()))
            }]),
            containers: vec![Container {
                name: "main".into(),
                ..shell(format!("test -e {}", marker.display()))
            }],
            ..Default::default()
        }),
        status: None,
    };
    h.pods().create(&PostParams::default(), &pod).await.unwrap();
    let status = wait_for("the pod Succeeded", 30, || async {
        let status = h.pods().get("batch").await.ok()?.status?;
        (status.phase.as_deref() == Some("Succeeded")).then_some(status)
    })
    .await;
    let init = &status.init_container_statuses.unwrap()[0];
    let done = init.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(
        (done.exit_code, done.reason.as_deref()),
        (0, Some("Completed"))
    );
    let main = &status.container_statuses.unwrap()[0];
    let done = main.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(
        done.exit_code, 0,
        "the main container ran after the init container"
    );
    assert_eq!(main.restart_count, 0);
    let ready = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("False", Some("PodCompleted"))
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_and_projected_volumes_reach_the_process() {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{
        DownwardAPIProjection, DownwardAPIVolumeFile, KeyToPath, ProjectedVolumeSource, Secret,
        SecretVolumeSource, ServiceAccountTokenProjection, VolumeProjection,
    };
    let mut h = Harness::start().await;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("creds".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            ("password".to_owned(), ByteString(b"s3cret".to_vec())),
            ("unused".to_owned(), ByteString(b"x".to_vec())),
        ])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(h.client.clone(), "default")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let out = h.out();
    let script = "cat \"$1\" > \"$3/pw\"; cat \"$2/labels\" > \"$3/labels\"; \
                  cat \"$2/token\" > \"$3/token\"; exec sleep 600";
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("mounts".into()),
            namespace: Some("default".into()),
            labels: Some(BTreeMap::from([("tier".to_owned(), "db".to_owned())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some("local".into()),
            termination_grace_period_seconds: Some(1),
            containers: vec![Container {
                name: "main".into(),
                command: Some(vec!["sh".into(), "-c".into(), script.into()]),
                args: Some(vec![
                    "sh".into(),
                    "/var/creds/pw".into(),
                    "/var/info".into(),
                    out.to_string_lossy().into_owned(),
                ]),
                volume_mounts: Some(vec![
                    VolumeMount {
                        name: "creds".into(),
                        mount_path: "/var/creds".into(),
                        ..Default::default()
                    },
                    VolumeMount {
                        name: "maybe".into(),
                        mount_path: "/var/maybe".into(),
                        ..Default::default()
                    },
                    VolumeMount {
                        name: "info".into(),
                        mount_path: "/var/info".into(),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }],
            volumes: Some(vec![
                Volume {
                    name: "creds".into(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some("creds".into()),
                        items: Some(vec![KeyToPath {
                            key: "password".into(),
                            path: "pw".into(),
                            mode: None,
                        }]),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                Volume {
                    name: "maybe".into(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some("absent".into()),
                        optional: Some(true),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                Volume {
                    name: "info".into(),
                    projected: Some(ProjectedVolumeSource {
                        sources: Some(vec![
                            VolumeProjection {
                                downward_api: Some(DownwardAPIProjection {
                                    items: Some(vec![DownwardAPIVolumeFile {
                                        path: "labels".into(),
                                        field_ref: Some(ObjectFieldSelector {
                                            field_path: "metadata.labels".into(),
                                            ..Default::default()
                                        }),
                                        ..Default::default()
                                    }]),
                                }),
                                ..Default::default()
                            },
                            VolumeProjection {
                                service_account_token: Some(ServiceAccountTokenProjection {
                                    path: "token".into(),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            },
                        ]),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        status: None,
    };
    h.pods().create(&PostParams::default(), &pod).await.unwrap();
    wait_for("the files copied by the process", 30, || async {
        let token = std::fs::read_to_string(out.join("token")).ok()?;
        (!token.is_empty()).then_some(())
    })
    .await;
    assert_eq!(std::fs::read_to_string(out.join("pw")).unwrap(), "s3cret");
    assert_eq!(
        std::fs::read_to_string(out.join("labels")).unwrap(),
        "tier=\"db\"\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("token")).unwrap(),
        "token-of-default"
    );
    let creds = h
        .dir
        .path()
        .join("kubelet/pods/default_mounts/volumes/creds");
    assert!(!creds.join("unused").exists(), "only the items asked for");
    h.stop().await;
}
