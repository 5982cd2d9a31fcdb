//! The ConfigMap checkpoint store, for pipelines run in a cluster: the `checkpoint.json` key of
//! the ConfigMap `<pipeline>-checkpoint` in the pipeline's namespace, in the same format as the
//! file store.
//!
//! The compare-and-swap is Kubernetes' own optimistic concurrency: the store's [`Version`] is the
//! ConfigMap's `resourceVersion`, and a write replaces the ConfigMap carrying the version it was
//! based on, so the API server refuses it with 409 Conflict when another writer (another worker
//! pod, or the operator resetting the checkpoint) got there first. The refusal becomes
//! [`StoreError::Conflict`]; [`super::Committer`] then reads the ConfigMap again, merges its
//! positions with the never-backwards and generation rules and retries, a bounded number of
//! times. Several pods sharing one checkpoint therefore never lose each other's positions and
//! never move one back.
//!
//! The operator creates the ConfigMap (with an empty checkpoint) before it starts any worker,
//! and the workers' Role does not allow `create`. A missing ConfigMap is therefore an error, for
//! reads too ([`ConfigMapError::Missing`]): a worker that started from nothing because its
//! checkpoint was not where it should be would reprocess the whole stream. A ConfigMap without
//! the key, or with an empty value, holds the empty checkpoint.
//!
//! The ConfigMap records the checkpoint's epoch, the reset value the operator applied to it
//! (annotation [`names::RESET_APPLIED_ANNOTATION`]), and so does the worker configuration the
//! operator renders. The store refuses to write into a checkpoint of another epoch
//! ([`StoreError::Superseded`]): a worker that started before a reset (it is being replaced,
//! but may still run, and may even follow the new assignment) can never write its old
//! positions into the fresh checkpoint.
//!
//! The store keeps the ConfigMap it last read or wrote, so a checkpoint whose base is still
//! current costs one `PUT`; only after a conflict does it read again. The Kubernetes API is
//! touched only when a checkpoint is taken, never per message.

use std::collections::BTreeMap;
use std::sync::Mutex;

use futures::FutureExt;
use futures::future::BoxFuture;
use jetflow_crds::checkpoint::Checkpoint;
use jetflow_crds::names;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::PostParams;

use super::{CheckpointStore, StoreError, Stored, Version};

/// What went wrong talking to the Kubernetes API, kept as the source of
/// [`StoreError::Backend`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigMapError {
    /// The checkpoint ConfigMap does not exist; the operator creates it before the workers.
    #[error(
        "ConfigMap {namespace}/{name} does not exist (the jetflow operator creates it; workers may not)"
    )]
    Missing {
        /// The namespace.
        namespace: String,
        /// The ConfigMap's name.
        name: String,
    },
    /// Reading the ConfigMap failed.
    #[error("cannot read ConfigMap {namespace}/{name}: {source}")]
    Get {
        /// The namespace.
        namespace: String,
        /// The ConfigMap's name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// Replacing the ConfigMap failed for a reason other than a conflict.
    #[error("cannot replace ConfigMap {namespace}/{name}: {source}")]
    Replace {
        /// The namespace.
        namespace: String,
        /// The ConfigMap's name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// The API server returned a ConfigMap without a resourceVersion, so no compare-and-swap
    /// can be based on it.
    #[error("ConfigMap {namespace}/{name} has no resourceVersion")]
    NoVersion {
        /// The namespace.
        namespace: String,
        /// The ConfigMap's name.
        name: String,
    },
}

/// A pipeline's checkpoint kept in its checkpoint ConfigMap.
pub struct ConfigMapStore {
    api: Api<ConfigMap>,
    namespace: String,
    name: String,
    /// The epoch (reset value) of this worker's configuration; a checkpoint of another epoch is
    /// never written.
    epoch: Option<String>,
    /// The ConfigMap as last read or written: the base of the next replace when its
    /// resourceVersion is the one the write expects.
    last: Mutex<Option<ConfigMap>>,
}

impl std::fmt::Debug for ConfigMapStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigMapStore")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

impl ConfigMapStore {
    /// The store of pipeline `pipeline` in `namespace`: the ConfigMap
    /// [`names::checkpoint_config_map`].
    pub fn new(client: kube::Client, namespace: &str, pipeline: &str) -> Self {
        Self::named(client, namespace, &names::checkpoint_config_map(pipeline))
    }

    /// A store in the ConfigMap `name` in `namespace`.
    pub fn named(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            epoch: None,
            last: Mutex::new(None),
        }
    }

    /// The store of a worker whose configuration carries the epoch `epoch` (the annotation
    /// [`names::RESET_APPLIED_ANNOTATION`] of its Pipeline manifest; `None` for a pipeline never
    /// reset): writes into a checkpoint of another epoch are refused.
    pub fn with_epoch(mut self, epoch: Option<String>) -> Self {
        self.epoch = epoch;
        self
    }

    /// The epoch a checkpoint ConfigMap records.
    fn epoch_of(cm: &ConfigMap) -> Option<&str> {
        cm.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(names::RESET_APPLIED_ANNOTATION))
            .map(String::as_str)
    }

    fn check_epoch(&self, cm: &ConfigMap) -> Result<(), StoreError> {
        let found = Self::epoch_of(cm);
        if found == self.epoch.as_deref() {
            return Ok(());
        }
        Err(StoreError::Superseded {
            location: self.location(),
            ours: self.epoch.clone(),
            found: found.map(str::to_owned),
        })
    }

    /// The ConfigMap's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The ConfigMap's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn location(&self) -> String {
        format!("ConfigMap {}/{}", self.namespace, self.name)
    }

    fn backend(&self, source: ConfigMapError) -> StoreError {
        StoreError::Backend {
            location: self.location(),
            source: Box::new(source),
        }
    }

    fn missing(&self) -> StoreError {
        self.backend(ConfigMapError::Missing {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        })
    }

    fn version_of(&self, cm: &ConfigMap) -> Result<Version, StoreError> {
        cm.metadata
            .resource_version
            .clone()
            .filter(|v| !v.is_empty())
            .map(Version)
            .ok_or_else(|| {
                self.backend(ConfigMapError::NoVersion {
                    namespace: self.namespace.clone(),
                    name: self.name.clone(),
                })
            })
    }

    fn decode(&self, cm: &ConfigMap) -> Result<Option<Checkpoint>, StoreError> {
        let text = cm
            .data
            .as_ref()
            .and_then(|d| d.get(names::CHECKPOINT_KEY))
            .filter(|t| !t.trim().is_empty());
        text.map(|t| {
            serde_json::from_str(t).map_err(|source| StoreError::Decode {
                location: self.location(),
                source,
            })
        })
        .transpose()
    }

    async fn get(&self) -> Result<ConfigMap, StoreError> {
        match self.api.get(&self.name).await {
            Ok(cm) => {
                self.remember(&cm);
                Ok(cm)
            }
            Err(e) if is_status(&e, 404) => Err(self.missing()),
            Err(source) => Err(self.backend(ConfigMapError::Get {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                source,
            })),
        }
    }

    fn remember(&self, cm: &ConfigMap) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(cm.clone());
    }

    /// The remembered ConfigMap if its resourceVersion is `expected`.
    fn remembered_at(&self, expected: &Version) -> Option<ConfigMap> {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|cm| cm.metadata.resource_version.as_deref() == Some(expected.0.as_str()))
            .cloned()
    }

    async fn load_inner(&self) -> Result<Stored, StoreError> {
        let cm = self.get().await?;
        let version = self.version_of(&cm)?;
        Ok(Stored {
            checkpoint: self.decode(&cm)?.unwrap_or_default(),
            version: Some(version),
        })
    }

    async fn write_inner(
        &self,
        expected: Option<&Version>,
        next: &Checkpoint,
    ) -> Result<Version, StoreError> {
        let base = match expected.and_then(|v| self.remembered_at(v)) {
            Some(cm) => cm,
            None => self.get().await?,
        };
        self.check_epoch(&base)?;
        let found = self.version_of(&base)?;
        let conflict = |found: Option<Version>| StoreError::Conflict {
            location: self.location(),
            expected: expected.cloned(),
            found,
        };
        match expected {
            Some(v) if *v != found => return Err(conflict(Some(found))),
            // Nothing was stored when the writer read: the key must still be empty.
            None if self.decode(&base)?.is_some() => return Err(conflict(Some(found))),
            _ => {}
        }
        let json = serde_json::to_string(next).map_err(|source| StoreError::Decode {
            location: self.location(),
            source,
        })?;
        let mut cm = base;
        cm.data
            .get_or_insert_with(BTreeMap::new)
            .insert(names::CHECKPOINT_KEY.to_owned(), json);
        // `cm` still carries the resourceVersion it was read at: the API server refuses the
        // replace if the ConfigMap changed since.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &cm)
            .await
        {
            Ok(written) => {
                let version = self.version_of(&written)?;
                self.remember(&written);
                Ok(version)
            }
            Err(e) if is_status(&e, 409) => Err(conflict(None)),
            Err(e) if is_status(&e, 404) => Err(self.missing()),
            Err(source) => Err(self.backend(ConfigMapError::Replace {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                source,
            })),
        }
    }
}

impl CheckpointStore for ConfigMapStore {
    fn load(&self) -> BoxFuture<'_, Result<Stored, StoreError>> {
        self.load_inner().boxed()
    }

    fn write<'a>(
        &'a self,
        expected: Option<&'a Version>,
        next: &'a Checkpoint,
    ) -> BoxFuture<'a, Result<Version, StoreError>> {
        self.write_inner(expected, next).boxed()
    }

    fn location(&self) -> String {
        ConfigMapStore::location(self)
    }
}
