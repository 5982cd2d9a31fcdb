//! Checkpoint stores: where a pipeline's committed positions live.
//!
//! A store keeps one [`Checkpoint`] per pipeline and writes it with a compare-and-swap: a write
//! names the [`Version`] it was based on and is refused with [`StoreError::Conflict`] when the
//! stored checkpoint changed in between. On top of that, [`Committer`] merges new positions with
//! [`Checkpoint::merged`], so that a position never moves backwards and a writer holding an
//! older assignment generation is refused, whatever the store.
//!
//! Locally the store is a file ([`FileStore`]); in a cluster it is the pipeline's checkpoint
//! ConfigMap ([`ConfigMapStore`]), behind the same trait. Stores do no retries of their own: a
//! failed write fails the checkpoint, and the source stays unacknowledged until a later one
//! succeeds.

pub mod configmap;
pub mod file;

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use jetflow_crds::checkpoint::{Checkpoint, MergeError, SplitPosition};

pub use configmap::ConfigMapStore;
pub use file::FileStore;

/// An opaque version of a stored checkpoint, compared on write: the checkpoint id for a file, a
/// resourceVersion for a ConfigMap.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Version(pub String);

/// A checkpoint as read from a store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// The checkpoint; empty (id 0, no splits) when none was ever written.
    pub checkpoint: Checkpoint,
    /// Its version; `None` when none was ever written.
    pub version: Option<Version>,
}

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stored checkpoint could not be read.
    #[error("cannot read checkpoint {location}: {source}")]
    Read {
        /// Where the checkpoint is.
        location: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The stored checkpoint is not valid JSON of the checkpoint format.
    #[error("checkpoint {location} is not valid: {source}")]
    Decode {
        /// Where the checkpoint is.
        location: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The checkpoint could not be written.
    #[error("cannot write checkpoint {location}: {source}")]
    Write {
        /// Where the checkpoint is.
        location: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The stored checkpoint changed since it was read (compare-and-swap refused).
    #[error(
        "checkpoint {location} changed concurrently: expected version {expected:?}, found {found:?}"
    )]
    Conflict {
        /// Where the checkpoint is.
        location: String,
        /// The version the write was based on.
        expected: Option<Version>,
        /// The version found.
        found: Option<Version>,
    },
    /// The new positions would move a split backwards or come from a stale owner.
    #[error("checkpoint {location}: {source}")]
    Refused {
        /// Where the checkpoint is.
        location: String,
        /// Which rule refused it.
        source: MergeError,
    },
    /// The stored checkpoint belongs to another epoch than this worker's configuration: it was
    /// reset (`jetflow.io/reset`) after this worker started, and a worker of the old epoch may
    /// never write its positions into the fresh checkpoint. The worker's replacement (the
    /// operator rolls the workers on a reset) carries the new epoch.
    #[error(
        "checkpoint {location} was reset (epoch {found:?}) after this worker started (epoch {ours:?}); its positions are not written"
    )]
    Superseded {
        /// Where the checkpoint is.
        location: String,
        /// The reset value in this worker's configuration.
        ours: Option<String>,
        /// The reset value the stored checkpoint records.
        found: Option<String>,
    },
    /// A store backend (such as the Kubernetes API) failed.
    #[error("checkpoint {location}: {source}")]
    Backend {
        /// Where the checkpoint is.
        location: String,
        /// The backend's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// A stable category for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Read { .. } => "read",
            Self::Decode { .. } => "decode",
            Self::Write { .. } => "write",
            Self::Conflict { .. } => "conflict",
            Self::Refused { .. } => "refused",
            Self::Superseded { .. } => "superseded",
            Self::Backend { .. } => "backend",
        }
    }
}

/// Where a pipeline's checkpoint is stored.
pub trait CheckpointStore: Send + Sync + 'static {
    /// Reads the stored checkpoint.
    fn load(&self) -> BoxFuture<'_, Result<Stored, StoreError>>;

    /// Replaces the stored checkpoint with `next` if its version is still `expected` (`None`:
    /// nothing stored yet) and returns the new version; otherwise fails with
    /// [`StoreError::Conflict`] and leaves the store unchanged.
    fn write<'a>(
        &'a self,
        expected: Option<&'a Version>,
        next: &'a Checkpoint,
    ) -> BoxFuture<'a, Result<Version, StoreError>>;

    /// Where the checkpoint is, for logs and errors.
    fn location(&self) -> String;
}

/// Commits new positions to a store: remembers the last version it read or wrote, merges with
/// the never-backwards rules, and on a conflict reads the store again and retries the merge
/// (a concurrent writer that moved other splits is fine; one that moved these splits past the
/// proposed positions makes the merge refuse).
pub struct Committer {
    store: std::sync::Arc<dyn CheckpointStore>,
    current: Stored,
}

/// How many times a commit re-reads the store after a conflict before giving up. Several
/// workers share one checkpoint (a file locally, a ConfigMap in a cluster); a re-read and merge
/// is cheap, and a commit that gives up fails a split's release or a final checkpoint.
const CONFLICT_RETRIES: usize = 10;

impl Committer {
    /// Reads the store's current checkpoint.
    pub async fn open(store: std::sync::Arc<dyn CheckpointStore>) -> Result<Self, StoreError> {
        let current = store.load().await?;
        Ok(Self { store, current })
    }

    /// The checkpoint as last read or written.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.current.checkpoint
    }

    /// The store.
    pub fn store(&self) -> &std::sync::Arc<dyn CheckpointStore> {
        &self.store
    }

    /// Merges the `updates` the never-backwards rules allow into the stored checkpoint and
    /// writes it with a compare-and-swap; a refused split leaves its committed entry as it is
    /// and does not hold the others back. Returns the refusals (one per refused split). With
    /// every update refused nothing is written.
    pub async fn commit_partly(
        &mut self,
        updates: &BTreeMap<String, SplitPosition>,
    ) -> Result<Vec<MergeError>, StoreError> {
        let mut attempt = 0;
        loop {
            let (next, refused) = self
                .current
                .checkpoint
                .merged_partly(updates, jiff::Timestamp::now());
            if refused.len() == updates.len() {
                return Ok(refused);
            }
            match self.store.write(self.current.version.as_ref(), &next).await {
                Ok(version) => {
                    self.current = Stored {
                        checkpoint: next,
                        version: Some(version),
                    };
                    return Ok(refused);
                }
                Err(StoreError::Conflict { .. }) if attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    self.current = self.store.load().await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Merges `updates` into the stored checkpoint and writes it with a compare-and-swap.
    pub async fn commit(
        &mut self,
        updates: &BTreeMap<String, SplitPosition>,
    ) -> Result<&Checkpoint, StoreError> {
        let mut attempt = 0;
        loop {
            let next = self
                .current
                .checkpoint
                .merged(updates, jiff::Timestamp::now())
                .map_err(|source| StoreError::Refused {
                    location: self.store.location(),
                    source,
                })?;
            match self.store.write(self.current.version.as_ref(), &next).await {
                Ok(version) => {
                    self.current = Stored {
                        checkpoint: next,
                        version: Some(version),
                    };
                    return Ok(&self.current.checkpoint);
                }
                Err(StoreError::Conflict { .. }) if attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    self.current = self.store.load().await?;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
