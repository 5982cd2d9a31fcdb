//! Dynamic splits (`splitBy: Subject`): the splits are the distinct subjects a stream holds under
//! the source's filters, looked up again every `discoveryInterval`.
//!
//! The subjects are listed by the rule the operator uses too
//! ([`jetflow_nats::discovery::subjects`]). A subject that appears becomes a split the runner starts without a restart;
//! one that no longer holds messages (removed, purged, aged out) drops out of the list, and the
//! runner retires its split: drained, checkpointed, stopped, and its consumer deleted.
//!
//! Errors: a lookup that fails is logged and the split set stays as it was until the next
//! interval. The watch ends when its token is cancelled or the runner is gone.

use std::time::Duration;

use async_nats::jetstream;
use jetflow_crds::split::Split;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::pipeline::Change;

/// Why the subjects of a stream could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The stream could not be looked up.
    #[error("cannot look up stream {stream}: {source}")]
    GetStream {
        /// The stream.
        stream: String,
        /// The client's error.
        source: jetstream::context::GetStreamError,
    },
    /// The stream's subjects could not be listed.
    #[error(transparent)]
    ListSubjects(#[from] jetflow_nats::discovery::ListSubjectsError),
}

/// The splits of a `splitBy: Subject` source: one per subject holding messages in `stream`
/// under `filters` (the whole stream when there are none), in name order; the shared rule,
/// [`jetflow_nats::discovery::subjects`].
pub async fn subjects(
    js: &jetstream::Context,
    stream: &str,
    filters: &[String],
) -> Result<Vec<Split>, DiscoveryError> {
    let handle = js
        .get_stream(stream)
        .await
        .map_err(|source| DiscoveryError::GetStream {
            stream: stream.to_owned(),
            source,
        })?;
    Ok(jetflow_nats::discovery::subjects(&handle, filters).await?)
}

/// Lists the subjects every `interval` and sends the list when it changed (starting from
/// `current`) as [`Change::Splits`].
pub fn watch(
    js: jetstream::Context,
    stream: String,
    filters: Vec<String>,
    mut current: Vec<Split>,
    interval: Duration,
    changes: mpsc::Sender<Change>,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            match subjects(&js, &stream, &filters).await {
                Ok(next) if next != current => {
                    let added = next.iter().filter(|s| !current.contains(s)).count();
                    let removed = current.iter().filter(|s| !next.contains(s)).count();
                    tracing::info!(
                        added,
                        removed,
                        splits = next.len(),
                        "subjects in the stream changed"
                    );
                    current = next.clone();
                    if changes.send(Change::Splits(next)).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot look for new subjects; keeping the splits")
                }
            }
        }
    })
}
