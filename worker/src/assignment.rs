//! Where a worker learns which splits it owns: an [`AssignmentSource`], followed for changes.
//!
//! The assignment is [`Assignment`] JSON, `{"generation": N, "owners": {"<split>": "<worker>"}}`,
//! the same document the operator publishes in a cluster. Locally it is a file
//! ([`FileAssignment`], `--assignment-file`); in a cluster the operator's ConfigMap implements
//! the same trait ([`configmap::ConfigMapAssignment`]). [`watch`] reads a source every interval
//! (the file; the ConfigMap is watched instead, see [`configmap::ConfigMapAssignment::follow`],
//! and read every interval only while its watch is broken) and hands every newer assignment to
//! the runner, which releases the splits the worker lost before it starts the ones it gained
//! (see `pipeline::control`).
//!
//! Errors: a source that cannot be read or holds invalid JSON (a file caught half-written by a
//! tool that does not rename) is logged and read again at the next poll; the assignment in force
//! stays. The watch ends when its token is cancelled or the runner is gone.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use jetflow_crds::assignment::Assignment;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::pipeline::Change;

pub mod configmap;

/// How often [`watch`] reads the source by default.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Why an assignment could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AssignmentError {
    /// The assignment could not be read.
    #[error("cannot read assignment {location}: {source}")]
    Read {
        /// Where the assignment is.
        location: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The assignment is not valid JSON of the assignment format.
    #[error("assignment {location} is not valid: {source}")]
    Decode {
        /// Where the assignment is.
        location: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A backend (such as the Kubernetes API) failed.
    #[error("cannot read assignment {location}: {source}")]
    Backend {
        /// Where the assignment is.
        location: String,
        /// The backend's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Where the assignment comes from.
pub trait AssignmentSource: Send + Sync + 'static {
    /// Reads the current assignment; `None` while there is none (the worker owns nothing).
    fn load(&self) -> BoxFuture<'_, Result<Option<Assignment>, AssignmentError>>;

    /// Where the assignment is, for logs.
    fn location(&self) -> String;
}

/// An assignment kept in a local JSON file. Writers should replace it by renaming, so that a
/// reader never sees half a file; a half file is read again at the next poll anyway.
#[derive(Clone, Debug)]
pub struct FileAssignment {
    path: PathBuf,
}

impl FileAssignment {
    /// The assignment in `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(path: &Path) -> Result<Option<Assignment>, AssignmentError> {
        let location = path.display().to_string();
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(AssignmentError::Read { location, source }),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|source| AssignmentError::Decode { location, source })
    }
}

impl AssignmentSource for FileAssignment {
    fn load(&self) -> BoxFuture<'_, Result<Option<Assignment>, AssignmentError>> {
        let path = self.path.clone();
        async move {
            tokio::task::spawn_blocking(move || Self::read(&path))
                .await
                .unwrap_or_else(|e| {
                    Err(AssignmentError::Read {
                        location: self.location(),
                        source: std::io::Error::other(e),
                    })
                })
        }
        .boxed()
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }
}

/// Reads the assignment in force at start: an absent one is an empty assignment (generation
/// 0, no owners), so that a worker told to follow an assignment owns nothing until it has one.
pub async fn initial(source: &dyn AssignmentSource) -> Result<Assignment, AssignmentError> {
    Ok(source.load().await?.unwrap_or_default())
}

/// Polls `source` every `interval` and sends each assignment that differs from the last one
/// seen (starting from `current`) as [`Change::Assignment`].
pub fn watch(
    source: Arc<dyn AssignmentSource>,
    mut current: Assignment,
    interval: Duration,
    changes: mpsc::Sender<Change>,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            match source.load().await {
                Ok(Some(next)) if next != current => {
                    failing = false;
                    current = next.clone();
                    if changes.send(Change::Assignment(next)).await.is_err() {
                        return;
                    }
                }
                Ok(_) => failing = false,
                Err(e) => {
                    // Logged once per run of failures, not at every poll.
                    if !failing {
                        tracing::warn!(error = %e, "cannot read the assignment; keeping the one in force");
                    }
                    failing = true;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_changes_are_sent_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("assignment.json");
        let source = Arc::new(FileAssignment::new(&path));
        assert_eq!(
            initial(source.as_ref()).await.unwrap(),
            Assignment::default()
        );

        let (tx, mut rx) = mpsc::channel(4);
        let cancel = CancellationToken::new();
        let task = watch(
            source,
            Assignment::default(),
            Duration::from_millis(20),
            tx,
            cancel.clone(),
        );
        std::fs::write(&path, "{not json").unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        std::fs::write(&path, r#"{"generation": 2, "owners": {"a": "w1"}}"#).unwrap();
        let Some(Change::Assignment(a)) = rx.recv().await else {
            panic!("no assignment")
        };
        assert_eq!(a.generation, 2);
        assert_eq!(a.splits_of("w1").collect::<Vec<_>>(), ["a"]);
        // The same content again is no change.
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(rx.try_recv().is_err());
        cancel.cancel();
        task.await.unwrap();
    }
}
