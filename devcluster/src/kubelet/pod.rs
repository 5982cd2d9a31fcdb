//! The pod runtime: one worker task per pod bound to this node (`spec.nodeName: local`).
//!
//! A worker allocates the pod's IP, makes its folder `<root>/pods/<namespace>_<pod>/` (volumes,
//! `logs/`, `kubeconfig` with a service account token from the TokenRequest API), runs the
//! init containers one after the other, then every container (see [`super::container`]), keeps
//! the volumes and the token fresh, and writes the pod's status whenever it changes.
//!
//! Termination: a pod with `deletionTimestamp` has its containers stopped (SIGTERM, SIGKILL
//! after `deletionGracePeriodSeconds`, else `terminationGracePeriodSeconds`, else 30 s), then
//! is deleted with `gracePeriodSeconds=0`; a pod that vanished from the API has its containers
//! stopped the same way; at kubelet shutdown every pod is stopped so, in parallel, and nothing
//! is deleted. The folder of a deleted or vanished pod is removed; at shutdown it is kept.
//! Failures of the API are logged and retried every second. The token comes from the
//! TokenRequest API (`POST .../serviceaccounts/{name}/token`, 24 h asked, renewed at 80% of its
//! life into the kubeconfig file); until a request succeeds (any error, 404 included: the
//! ServiceAccount may not exist yet) the pod stays `ContainerCreating` with the error as
//! message. With `automountServiceAccountToken: false` the kubeconfig has no user credentials
//! (anonymous), but `KUBECONFIG` still points to it, so that a process never falls back to the
//! kubeconfig of whoever runs the kubelet.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::container::{ContainerRuntime, ContainerTask};
use super::env::{Sources, service_account};
use super::status::{self, PodView};
use super::volumes::{self, Token, VolumeSet};
use super::{NODE_NAME, Shared};

/// What the runtime tells a pod worker.
#[derive(Clone, Debug)]
enum PodEvent {
    Update(Box<Pod>),
    Vanished,
    Shutdown,
}

struct Worker {
    events: watch::Sender<PodEvent>,
    /// What the worker last got: resource version, marked deleted.
    seen: (Option<String>, bool),
    handle: JoinHandle<()>,
}

fn version_of(pod: &Pod) -> (Option<String>, bool) {
    (
        pod.metadata.resource_version.clone(),
        pod.metadata.deletion_timestamp.is_some(),
    )
}

/// The pod workers of this node, by pod UID.
pub(crate) struct PodWorkers {
    shared: Arc<Shared>,
    workers: HashMap<String, Worker>,
}

fn on_this_node(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(NODE_NAME)
}

impl PodWorkers {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            workers: HashMap::new(),
        }
    }

    /// Starts a worker for each new pod of this node, passes changes on, and stops the workers
    /// of pods that are gone. `pods` is a full list of the cluster's pods.
    pub(crate) fn sync(&mut self, pods: &[Pod]) {
        self.workers.retain(|_, w| !w.handle.is_finished());
        let mut seen = HashSet::new();
        for pod in pods.iter().filter(|p| on_this_node(p)) {
            let Some(uid) = pod.metadata.uid.clone() else {
                continue;
            };
            seen.insert(uid.clone());
            match self.workers.get_mut(&uid) {
                Some(worker) => {
                    if worker.seen != version_of(pod) {
                        worker.seen = version_of(pod);
                        worker
                            .events
                            .send_replace(PodEvent::Update(Box::new(pod.clone())));
                    }
                }
                None => {
                    let (events, rx) = watch::channel(PodEvent::Update(Box::new(pod.clone())));
                    let handle = tokio::spawn(run_pod(self.shared.clone(), pod.clone(), rx));
                    self.workers.insert(
                        uid,
                        Worker {
                            events,
                            seen: version_of(pod),
                            handle,
                        },
                    );
                }
            }
        }
        for (uid, worker) in &self.workers {
            if !seen.contains(uid) && !matches!(*worker.events.borrow(), PodEvent::Vanished) {
                worker.events.send_replace(PodEvent::Vanished);
            }
        }
    }

    /// Stops every pod (in parallel) and waits for all of them.
    pub(crate) async fn shutdown(self) {
        for worker in self.workers.values() {
            worker.events.send_replace(PodEvent::Shutdown);
        }
        for (_, worker) in self.workers {
            let _ = worker.handle.await;
        }
    }
}

/// How a pod worker ends.
enum End {
    Deleted(Box<Pod>),
    Vanished,
    Shutdown,
}

fn grace(pod: &Pod) -> Duration {
    let seconds = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    Duration::from_secs(seconds.max(0) as u64)
}

/// Forwards pod updates to `latest` until the pod ends.
async fn wait_end(events: &mut watch::Receiver<PodEvent>, latest: &watch::Sender<Pod>) -> End {
    loop {
        let event = events.borrow_and_update().clone();
        match event {
            PodEvent::Update(pod) if pod.metadata.deletion_timestamp.is_some() => {
                return End::Deleted(pod);
            }
            PodEvent::Update(pod) => {
                latest.send_replace(*pod);
            }
            PodEvent::Vanished => return End::Vanished,
            PodEvent::Shutdown => return End::Shutdown,
        }
        if events.changed().await.is_err() {
            return End::Shutdown;
        }
    }
}

/// One pod, from its first sighting to its end.
async fn run_pod(shared: Arc<Shared>, pod: Pod, mut events: watch::Receiver<PodEvent>) {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let dir = shared
        .config
        .root
        .join("pods")
        .join(format!("{namespace}_{name}"));
    let ip = match shared.ips.allocate() {
        Ok(ip) => ip,
        Err(e) => {
            tracing::error!(pod = %name, %namespace, error = %e, "pod cannot start");
            wait_end(&mut events, &watch::channel(pod).0).await;
            return;
        }
    };
    let (latest_tx, latest_rx) = watch::channel(pod.clone());
    let (term_tx, term_rx) = watch::channel(None::<Instant>);
    let mut life = PodLife {
        shared: shared.clone(),
        api: Api::namespaced(shared.client.clone(), &namespace),
        dir: dir.clone(),
        ip,
        pod: latest_rx,
        term: term_rx,
        notify: Arc::new(Notify::new()),
        init: Vec::new(),
        containers: Vec::new(),
        tasks: Vec::new(),
        token: None,
        volumes: VolumeSet::new(&dir),
        written: None,
        start_time: Time(jiff::Timestamp::now()),
    };
    let end = tokio::select! {
        end = wait_end(&mut events, &latest_tx) => end,
        () = life.run() => End::Shutdown,
    };
    let last = latest_tx.borrow().clone();
    let deadline = Instant::now()
        + match &end {
            End::Deleted(pod) => grace(pod),
            _ => grace(&last),
        };
    term_tx.send_replace(Some(deadline));
    for task in life.tasks.drain(..) {
        let _ = task.await;
    }
    shared.ips.release(ip);
    match end {
        End::Deleted(pod) => {
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: pod.metadata.uid.clone().map(|uid| Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match life.api.delete(&name, &params).await {
                Ok(_) => tracing::info!(pod = %name, %namespace, "pod terminated and deleted"),
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => {
                    tracing::warn!(pod = %name, %namespace, error = %e, "deleting a terminated pod failed")
                }
            }
            let _ = tokio::fs::remove_dir_all(&dir).await;
        }
        End::Vanished => {
            tracing::info!(pod = %name, %namespace, "pod removed from the API; its containers are stopped");
            let _ = tokio::fs::remove_dir_all(&dir).await;
        }
        End::Shutdown => {}
    }
}

/// Where a pod stands.
enum Stage {
    Preparing,
    Init(usize),
    Running,
}

/// A pod's life before its end: folders, volumes, token, containers, status.
struct PodLife {
    shared: Arc<Shared>,
    api: Api<Pod>,
    dir: PathBuf,
    ip: Ipv4Addr,
    pod: watch::Receiver<Pod>,
    term: watch::Receiver<Option<Instant>>,
    notify: Arc<Notify>,
    init: Vec<watch::Sender<ContainerRuntime>>,
    containers: Vec<watch::Sender<ContainerRuntime>>,
    tasks: Vec<JoinHandle<()>>,
    token: Option<Token>,
    volumes: VolumeSet,
    written: Option<PodStatus>,
    start_time: Time,
}

impl PodLife {
    fn current(&self) -> Pod {
        self.pod.borrow().clone()
    }

    /// The token (renewed when due) and the kubeconfig; `Err` says why the pod must wait.
    async fn refresh_token(&mut self, pod: &Pod) -> Result<(), String> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let account = service_account(pod);
        let automount = pod
            .spec
            .as_ref()
            .and_then(|s| s.automount_service_account_token)
            .unwrap_or(true);
        let path = self.dir.join("kubeconfig");
        let due = self
            .token
            .as_ref()
            .is_none_or(|t| std::time::Instant::now() >= t.renew_at);
        if !due {
            return Ok(());
        }
        if automount {
            let token = volumes::request_token(&self.shared.client, namespace, account)
                .await
                .map_err(|e| format!("token for service account {account}: {e}"))?;
            self.token = Some(token);
        }
        let user = format!("system:serviceaccount:{namespace}:{account}");
        volumes::write_kubeconfig(
            &path,
            &self.shared.config.server_url,
            namespace,
            &user,
            self.token.as_ref().map(|t| t.token.as_str()),
        )
        .await
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
        if !automount {
            // Anonymous kubeconfig: written once.
            self.token = Some(Token {
                token: String::new(),
                renew_at: std::time::Instant::now() + Duration::from_secs(u32::MAX as u64),
            });
        }
        Ok(())
    }

    /// Folders, token and volumes; `Err` says why the containers cannot be created yet.
    async fn prepare(&mut self) -> Result<(), String> {
        let pod = self.current();
        tokio::fs::create_dir_all(self.dir.join("logs"))
            .await
            .map_err(|e| format!("creating {}: {e}", self.dir.display()))?;
        self.refresh_token(&pod).await?;
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut sources = Sources::new(self.shared.client.clone(), namespace);
        let token = self.token.as_ref().map(|t| t.token.clone());
        self.volumes
            .sync(&mut sources, &pod, &self.ip.to_string(), token.as_deref())
            .await
            .map_err(|e| e.to_string())
    }

    fn spawn(&mut self, index: usize, init: bool) {
        let pod = self.current();
        let spec = pod.spec.clone().unwrap_or_default();
        let container = if init {
            spec.init_containers.unwrap_or_default().get(index).cloned()
        } else {
            spec.containers.get(index).cloned()
        };
        let Some(container) = container else {
            return;
        };
        let state = if init {
            self.init[index].clone()
        } else {
            self.containers[index].clone()
        };
        let task = ContainerTask {
            shared: self.shared.clone(),
            pod,
            container,
            init,
            pod_dir: self.dir.clone(),
            ip: self.ip,
            state,
            notify: self.notify.clone(),
            term: self.term.clone(),
        };
        self.tasks.push(tokio::spawn(task.run()));
    }

    async fn write_status(&mut self, creating: Option<&str>) {
        let pod = self.current();
        let init: Vec<ContainerRuntime> = self.init.iter().map(|s| s.borrow().clone()).collect();
        let containers: Vec<ContainerRuntime> =
            self.containers.iter().map(|s| s.borrow().clone()).collect();
        let ip = self.ip.to_string();
        let status = status::build(&PodView {
            pod: &pod,
            pod_ip: &ip,
            start_time: &self.start_time,
            init: &init,
            containers: &containers,
            creating,
            previous: self.written.as_ref(),
        });
        if self.written.as_ref() == Some(&status) {
            return;
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        let patch = serde_json::json!({ "status": status });
        match self
            .api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => self.written = Some(status),
            Err(e) => {
                tracing::debug!(pod = %name, error = %e, "writing pod status failed; retrying")
            }
        }
    }

    async fn run(&mut self) {
        let pod = self.current();
        let spec = pod.spec.clone().unwrap_or_default();
        let inits = spec.init_containers.as_ref().map_or(0, Vec::len);
        let first = if inits > 0 {
            "PodInitializing"
        } else {
            "ContainerCreating"
        };
        self.init = (0..inits)
            .map(|_| watch::channel(ContainerRuntime::waiting("PodInitializing")).0)
            .collect();
        self.containers = spec
            .containers
            .iter()
            .map(|_| watch::channel(ContainerRuntime::waiting(first)).0)
            .collect();
        let mut stage = Stage::Preparing;
        let mut creating: Option<String> = Some("preparing the pod".into());
        let mut next_refresh = Instant::now();
        loop {
            match stage {
                Stage::Preparing => match self.prepare().await {
                    Ok(()) => {
                        creating = None;
                        next_refresh = Instant::now() + Duration::from_secs(1);
                        if inits > 0 {
                            self.spawn(0, true);
                            stage = Stage::Init(0);
                        } else {
                            (0..self.containers.len()).for_each(|i| self.spawn(i, false));
                            stage = Stage::Running;
                        }
                    }
                    Err(message) => {
                        if creating.as_deref() != Some(message.as_str()) {
                            tracing::warn!(pod = ?pod.metadata.name, %message, "pod cannot start yet");
                        }
                        creating = Some(message);
                    }
                },
                Stage::Init(i) => {
                    let state = self.init[i].borrow().clone();
                    if state.done && state.exit_code() == Some(0) {
                        if i + 1 < inits {
                            self.spawn(i + 1, true);
                            stage = Stage::Init(i + 1);
                        } else {
                            (0..self.containers.len()).for_each(|i| self.spawn(i, false));
                            stage = Stage::Running;
                        }
                    }
                }
                Stage::Running => {}
            }
            if !matches!(stage, Stage::Preparing) && Instant::now() >= next_refresh {
                next_refresh = Instant::now() + Duration::from_secs(1);
                if let Err(message) = self.prepare().await {
                    tracing::debug!(pod = ?pod.metadata.name, %message, "refreshing volumes failed; the old ones stay");
                }
            }
            self.write_status(creating.as_deref()).await;
            tokio::select! {
                () = self.notify.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}
