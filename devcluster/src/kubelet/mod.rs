//! A local kubelet: runs the pods of Deployments as local processes.
//!
//! It is an ordinary client of the API and plays two roles, driven by one loop that wakes on
//! watch events (Pods, Deployments) when the API serves watches, and at least every 500 ms
//! either way (a full list of Deployments and Pods each time: fine for a local control plane):
//!
//! - [`deployment`]: the Deployment controller: pods per `spec.replicas`, rolling updates,
//!   Deployment status.
//! - [`pod`]: the pod runtime for pods with `spec.nodeName: local`: one folder per pod
//!   (`<root>/pods/<namespace>_<pod>/`: volumes, `logs/<container>.log`, `kubeconfig`), one
//!   process per container ([`container`], [`process`]), environment ([`env`]), volumes
//!   ([`volumes`]), probes ([`probes`]), a loopback IP per pod ([`network`]) and the pod status
//!   ([`status`]).
//!
//! What a container sees differs from a real node: the program is the file name of
//! `command[0]` found in the kubelet's bin folders (or `PATH`); volumes are folders on the
//! host and every argument, environment value and working directory that starts with a mount
//! path is rewritten to that folder; `0.0.0.0` in arguments and environment values becomes the
//! pod IP; back-off is 1 s doubling to 20 s (not 10 s to 5 min). See each module's doc.
//!
//! Shutdown: when `stop` is cancelled the loop ends and every pod's processes are stopped in
//! parallel (SIGTERM, SIGKILL after the pod's grace period); nothing is deleted from the API.
//! Errors of the API are logged and retried at the next pass; `run` fails only when its root
//! folder cannot be made.

pub mod deployment;

mod container;
mod env;
mod network;
mod pod;
mod probes;
mod process;
mod status;
mod volumes;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The node name of every pod this kubelet runs.
pub const NODE_NAME: &str = "local";

/// How often the kubelet looks at everything even without watch events.
const RESYNC: Duration = Duration::from_millis(500);

/// How the kubelet runs pods.
#[derive(Clone, Debug)]
pub struct KubeletConfig {
    /// A folder of the kubelet's own: one sub-folder per pod (volumes, logs, kubeconfig).
    pub root: PathBuf,
    /// Folders searched for a container command's file name (`/usr/local/bin/jetflow-worker`
    /// runs `<dir>/jetflow-worker`, first folder that has it).
    pub bin_dirs: Vec<PathBuf>,
    /// The API server's URL written into each pod's kubeconfig.
    pub server_url: String,
}

/// Why the kubelet stopped.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// The API refused or failed a request the kubelet cannot go on without.
    #[error("the Kubernetes API failed: {0}")]
    Api(#[from] kube::Error),
    /// The kubelet's root folder could not be made.
    #[error("creating the kubelet folder {path}: {source}")]
    CreateRoot {
        /// The folder.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// What every part of the kubelet shares.
pub(crate) struct Shared {
    pub(crate) client: kube::Client,
    pub(crate) config: KubeletConfig,
    pub(crate) ips: network::IpPool,
}

/// Wakes `wake` on every event of a watch of all `K`, until `stop`.
fn watch_all<K>(client: kube::Client, wake: Arc<Notify>, stop: CancellationToken)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
    K::DynamicType: Default,
{
    tokio::spawn(async move {
        let stream = watcher(Api::<K>::all(client), watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                event = stream.next() => match event {
                    Some(Ok(_)) => wake.notify_one(),
                    Some(Err(e)) => tracing::debug!(error = %e, "watch failed; resync continues"),
                    None => return,
                },
            }
        }
    });
}

/// Runs the kubelet with `client` (an identity allowed to read Deployments and ServiceAccounts,
/// to write Pods and their status, Deployments' status, and to request tokens) until `stop`
/// is cancelled, then stops every pod it started (SIGTERM, then SIGKILL after each pod's grace
/// period) before returning.
pub async fn run(
    client: kube::Client,
    config: KubeletConfig,
    stop: CancellationToken,
) -> Result<(), KubeletError> {
    let pods_dir = config.root.join("pods");
    tokio::fs::create_dir_all(&pods_dir)
        .await
        .map_err(|source| KubeletError::CreateRoot {
            path: pods_dir.clone(),
            source,
        })?;
    let shared = Arc::new(Shared {
        client: client.clone(),
        config,
        ips: network::IpPool::shared(),
    });
    let wake = Arc::new(Notify::new());
    let watches = stop.child_token();
    watch_all::<Pod>(client.clone(), wake.clone(), watches.clone());
    watch_all::<Deployment>(client.clone(), wake.clone(), watches.clone());

    let mut workers = pod::PodWorkers::new(shared);
    let pods_api: Api<Pod> = Api::all(client.clone());
    let deployments_api: Api<Deployment> = Api::all(client.clone());
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = wake.notified() => {}
            _ = resync.tick() => {}
        }
        let pods = match pods_api.list(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(e) => {
                tracing::warn!(error = %e, "listing pods failed");
                continue;
            }
        };
        workers.sync(&pods);
        match deployments_api.list(&ListParams::default()).await {
            Ok(list) => deployment::sync(&client, &list.items, &pods).await,
            Err(e) => tracing::warn!(error = %e, "listing deployments failed"),
        }
    }
    watches.cancel();
    workers.shutdown().await;
    Ok(())
}
