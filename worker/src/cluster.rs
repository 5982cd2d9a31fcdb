//! Where a worker keeps its checkpoint and finds its assignment, chosen by flags: files when it
//! runs locally, the operator's ConfigMaps when it runs in a pod.
//!
//! ```text
//!   --checkpoint-store file       <checkpoint-dir>/<namespace>/<pipeline>.json   (FileStore)
//!   --checkpoint-store configmap  ConfigMap <pipeline>-checkpoint, checkpoint.json (ConfigMapStore)
//!   --assignment-store file       --assignment-file, or none: every split is owned (FileAssignment)
//!   --assignment-store configmap  ConfigMap <pipeline>-assignment, assignment.json (ConfigMapAssignment),
//!                                 watched; read every 2 s only while the watch is broken
//! ```
//!
//! The ConfigMaps are in `$POD_NAMESPACE` (the operator sets it from the pod's own metadata),
//! else in the namespace of the client's configuration (the service account's, in a pod). The
//! Kubernetes client is built only when a ConfigMap store is asked for, and is used only for
//! checkpoints and assignment reads, never per message.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jetflow_crds::assignment::Assignment;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::assignment::configmap::ConfigMapAssignment;
use crate::assignment::{self, AssignmentSource, FileAssignment};
use crate::checkpoint::{CheckpointStore, ConfigMapStore, FileStore};
use crate::pipeline::Change;

/// How often a worker reads the assignment ConfigMap while its watch of it is broken: one
/// small `GET` per pod and interval (with the watch working, a change is seen at once).
pub const CONFIG_MAP_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The environment variable naming the pod's namespace.
pub const POD_NAMESPACE_ENV: &str = "POD_NAMESPACE";

/// A kind of store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// A local file.
    File,
    /// A ConfigMap of the pipeline, through the Kubernetes API.
    Configmap,
}

/// Why the in-cluster stores could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No Kubernetes client configuration was found (in a pod: the service account token).
    #[error("a ConfigMap store needs the Kubernetes API: {source}")]
    Client {
        /// The client's error.
        source: kube::Error,
    },
    /// A ConfigMap store was asked of stores set up without the Kubernetes API.
    #[error("no Kubernetes client: the stores were set up for files only")]
    NotConnected,
}

/// An assignment source and how to follow it.
#[derive(Clone)]
pub struct AssignmentFeed {
    /// Where the assignment is.
    pub source: Arc<dyn AssignmentSource>,
    /// How often it is read when polled (a file; a ConfigMap while its watch is broken).
    pub interval: Duration,
    /// The ConfigMap, watched, when the assignment is the operator's.
    config_map: Option<Arc<ConfigMapAssignment>>,
}

impl AssignmentFeed {
    /// Whether the assignment is the operator's ConfigMap (the worker runs in a pod).
    pub fn is_config_map(&self) -> bool {
        self.config_map.is_some()
    }

    /// Follows the assignment from `current` on, sending each change: the ConfigMap with a
    /// watch (polled while the watch is broken), a file by polling every interval.
    pub fn follow(
        &self,
        current: Assignment,
        changes: mpsc::Sender<Change>,
        cancel: CancellationToken,
    ) -> JoinHandle<()> {
        match &self.config_map {
            Some(cm) => cm.clone().follow(current, self.interval, changes, cancel),
            None => assignment::watch(self.source.clone(), current, self.interval, changes, cancel),
        }
    }
}

/// The Kubernetes client and namespace of the ConfigMap stores, when any is used.
#[derive(Clone)]
pub struct Stores {
    kube: Option<(kube::Client, String)>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("namespace", &self.namespace())
            .finish_non_exhaustive()
    }
}

impl Stores {
    /// Connects to the Kubernetes API if `checkpoint` or `assignment` is a ConfigMap store.
    pub async fn connect(
        checkpoint: StoreKind,
        assignment: StoreKind,
    ) -> Result<Self, ClusterError> {
        if checkpoint == StoreKind::File && assignment == StoreKind::File {
            return Ok(Self { kube: None });
        }
        let client = kube::Client::try_default()
            .await
            .map_err(|source| ClusterError::Client { source })?;
        let namespace = std::env::var(POD_NAMESPACE_ENV)
            .ok()
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| client.default_namespace().to_owned());
        Ok(Self::with_client(client, namespace))
    }

    /// ConfigMap stores through `client` in `namespace` (tests use an in-memory API).
    pub fn with_client(client: kube::Client, namespace: impl Into<String>) -> Self {
        Self {
            kube: Some((client, namespace.into())),
        }
    }

    /// File stores only.
    pub fn local() -> Self {
        Self { kube: None }
    }

    /// The namespace of the ConfigMaps, when connected.
    pub fn namespace(&self) -> Option<&str> {
        self.kube.as_ref().map(|(_, ns)| ns.as_str())
    }

    fn kube(&self) -> Result<&(kube::Client, String), ClusterError> {
        self.kube.as_ref().ok_or(ClusterError::NotConnected)
    }

    /// The checkpoint store of pipeline `name` (in `namespace`, for the file store's path).
    /// `epoch` is the reset value the worker configuration carries (see
    /// [`ConfigMapStore::with_epoch`]); the file store has none.
    pub fn checkpoint(
        &self,
        kind: StoreKind,
        dir: &Path,
        namespace: &str,
        name: &str,
        epoch: Option<&str>,
    ) -> Result<Arc<dyn CheckpointStore>, ClusterError> {
        Ok(match kind {
            StoreKind::File => Arc::new(FileStore::new(dir, namespace, name)),
            StoreKind::Configmap => {
                let (client, ns) = self.kube()?;
                Arc::new(
                    ConfigMapStore::new(client.clone(), ns, name)
                        .with_epoch(epoch.map(str::to_owned)),
                )
            }
        })
    }

    /// The assignment source of pipeline `name` and how to follow it; `None` when the worker
    /// follows no assignment (a file store without a file: it owns every split).
    pub fn assignment(
        &self,
        kind: StoreKind,
        file: Option<&Path>,
        name: &str,
    ) -> Result<Option<AssignmentFeed>, ClusterError> {
        Ok(match (kind, file) {
            (StoreKind::File, None) => None,
            (StoreKind::File, Some(path)) => Some(AssignmentFeed {
                source: Arc::new(FileAssignment::new(path)),
                interval: assignment::POLL_INTERVAL,
                config_map: None,
            }),
            (StoreKind::Configmap, _) => {
                let (client, ns) = self.kube()?;
                let cm = Arc::new(ConfigMapAssignment::new(client.clone(), ns, name));
                Some(AssignmentFeed {
                    source: cm.clone(),
                    interval: CONFIG_MAP_POLL_INTERVAL,
                    config_map: Some(cm),
                })
            }
        })
    }
}
