//! The file checkpoint store, for pipelines run locally: one JSON file per pipeline
//! (`<dir>/<namespace>/<pipeline>.json`, the same format as the `checkpoint.json` key of the
//! checkpoint ConfigMap).
//!
//! The compare-and-swap holds an exclusive lock on a `.lock` file beside it while it reads the
//! current checkpoint, compares its id with the expected version, writes a temporary file,
//! syncs it and renames it over the old one; a crash at any point leaves either the old or the
//! new checkpoint, never a torn one. Several worker processes on one machine can share the
//! folder.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use futures::FutureExt;
use futures::future::BoxFuture;
use jetflow_crds::checkpoint::Checkpoint;

use super::{CheckpointStore, StoreError, Stored, Version};

/// A checkpoint kept in a local file.
#[derive(Clone, Debug)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// The store of pipeline `name` in `namespace` under `dir`.
    pub fn new(dir: &Path, namespace: &str, name: &str) -> Self {
        Self::at(dir.join(namespace).join(format!("{name}.json")))
    }

    /// A store in the file `path`.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The checkpoint file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn read_error(&self, source: std::io::Error) -> StoreError {
        StoreError::Read {
            location: self.location(),
            source,
        }
    }

    fn write_error(&self, source: std::io::Error) -> StoreError {
        StoreError::Write {
            location: self.location(),
            source,
        }
    }

    /// Reads the checkpoint without locking (a rename is atomic, so a reader sees a whole file).
    pub fn load_blocking(&self) -> Result<Stored, StoreError> {
        let text = match std::fs::read(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Stored::default()),
            Err(e) => return Err(self.read_error(e)),
        };
        let checkpoint: Checkpoint =
            serde_json::from_slice(&text).map_err(|source| StoreError::Decode {
                location: self.location(),
                source,
            })?;
        let version = Some(version_of(&checkpoint));
        Ok(Stored {
            checkpoint,
            version,
        })
    }

    /// The compare-and-swap, blocking.
    pub fn write_blocking(
        &self,
        expected: Option<&Version>,
        next: &Checkpoint,
    ) -> Result<Version, StoreError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| self.write_error(e))?;
        let lock_path = self.path.with_extension("json.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| self.write_error(e))?;
        // Held until `lock` is dropped at the end of this function.
        lock.lock().map_err(|e| self.write_error(e))?;

        let found = self.load_blocking()?.version;
        if found.as_ref() != expected {
            return Err(StoreError::Conflict {
                location: self.location(),
                expected: expected.cloned(),
                found,
            });
        }
        let text = serde_json::to_vec_pretty(next).map_err(|source| StoreError::Decode {
            location: self.location(),
            source,
        })?;
        let tmp = self
            .path
            .with_extension(format!("json.tmp.{}", std::process::id()));
        let mut file = File::create(&tmp).map_err(|e| self.write_error(e))?;
        file.write_all(&text).map_err(|e| self.write_error(e))?;
        file.sync_all().map_err(|e| self.write_error(e))?;
        drop(file);
        std::fs::rename(&tmp, &self.path).map_err(|e| self.write_error(e))?;
        // Make the rename itself durable.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(version_of(next))
    }
}

fn version_of(checkpoint: &Checkpoint) -> Version {
    Version(checkpoint.id.to_string())
}

impl CheckpointStore for FileStore {
    fn load(&self) -> BoxFuture<'_, Result<Stored, StoreError>> {
        let this = self.clone();
        async move {
            tokio::task::spawn_blocking(move || this.load_blocking())
                .await
                .unwrap_or_else(|e| Err(self.read_error(std::io::Error::other(e))))
        }
        .boxed()
    }

    fn write<'a>(
        &'a self,
        expected: Option<&'a Version>,
        next: &'a Checkpoint,
    ) -> BoxFuture<'a, Result<Version, StoreError>> {
        let this = self.clone();
        let expected = expected.cloned();
        let next = next.clone();
        async move {
            tokio::task::spawn_blocking(move || this.write_blocking(expected.as_ref(), &next))
                .await
                .unwrap_or_else(|e| Err(self.write_error(std::io::Error::other(e))))
        }
        .boxed()
    }

    fn location(&self) -> String {
        FileStore::location(self)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use jetflow_crds::checkpoint::SplitPosition;

    use super::*;
    use crate::checkpoint::Committer;

    fn at(position: u64, generation: u64) -> BTreeMap<String, SplitPosition> {
        BTreeMap::from([(
            "orders.>".to_owned(),
            SplitPosition {
                position,
                generation,
                owner: Some("w1".into()),
                ..Default::default()
            },
        )])
    }

    #[test]
    fn compare_and_swap_refuses_a_stale_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path(), "default", "p");
        assert_eq!(store.load_blocking().unwrap(), Stored::default());

        let first = Checkpoint::default()
            .merged(&at(10, 0), jiff::Timestamp::now())
            .unwrap();
        let v1 = store.write_blocking(None, &first).unwrap();
        // A second writer that read "nothing stored" is refused.
        let err = store.write_blocking(None, &first).unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err}");

        let second = first.merged(&at(20, 0), jiff::Timestamp::now()).unwrap();
        let v2 = store.write_blocking(Some(&v1), &second).unwrap();
        // A writer still holding version 1 is refused, and the file keeps position 20.
        let stale = first.merged(&at(15, 0), jiff::Timestamp::now()).unwrap();
        let err = store.write_blocking(Some(&v1), &stale).unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
        let stored = store.load_blocking().unwrap();
        assert_eq!(stored.version, Some(v2));
        assert_eq!(stored.checkpoint.splits["orders.>"].position, 20);
    }

    #[tokio::test]
    async fn committer_never_moves_a_position_backwards() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn CheckpointStore> = Arc::new(FileStore::new(dir.path(), "ns", "p"));
        let mut a = Committer::open(store.clone()).await.unwrap();
        let mut b = Committer::open(store.clone()).await.unwrap();
        assert_eq!(a.commit(&at(100, 1)).await.unwrap().id, 1);
        // b read the empty store; its conflict is resolved by re-reading, and the merge then
        // refuses to move the split from 100 back to 50.
        let err = b.commit(&at(50, 1)).await.unwrap_err();
        assert!(matches!(err, StoreError::Refused { .. }), "{err}");
        // A writer with an older assignment generation is refused too.
        let err = b.commit(&at(200, 0)).await.unwrap_err();
        assert!(matches!(err, StoreError::Refused { .. }), "{err}");
        assert_eq!(b.commit(&at(200, 1)).await.unwrap().id, 2);
        assert_eq!(
            store.load().await.unwrap().checkpoint.splits["orders.>"].position,
            200
        );
    }
}
