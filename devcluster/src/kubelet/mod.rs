//! A local kubelet: runs the pods of Deployments as local processes.
//!
//! (interface stub: the implementation replaces the body, keeping the signatures)

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

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
    let _ = (client, config);
    stop.cancelled().await;
    Ok(())
}
