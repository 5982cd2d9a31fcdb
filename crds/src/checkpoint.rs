//! The checkpoint format: per split, the last stream sequence fully processed and committed.
//!
//! The worker writes it (to a file locally, to a ConfigMap in a cluster) with a
//! compare-and-swap; the operator reads it into the Pipeline's status. A position never moves
//! backwards, and a write from an owner holding an older assignment generation is refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A committed checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// Increases by one with every committed checkpoint.
    pub id: u64,
    /// When the checkpoint was committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<jiff::Timestamp>,
    /// Per split, by split name.
    #[serde(default)]
    pub splits: BTreeMap<String, SplitPosition>,
}

/// One split's committed state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SplitPosition {
    /// Last stream sequence fully processed: every output of every message up to here is
    /// confirmed by the sink. 0 when nothing was processed.
    pub position: u64,
    /// The worker that committed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The assignment generation under which it was committed.
    #[serde(default)]
    pub generation: u64,
    /// The split reached its bound (bounded runs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub finished: bool,
    /// Set when the split stopped on a message that failed under `errors.policy: Stop`: which
    /// message, which step, and the error. The position is the last good message before it.
    /// The next commit of the split (once the steps or the data are fixed) clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// Set by an owner that stopped running the split (a graceful stop, or the split given to
    /// another worker) after it committed its final position: the next owner may start at once,
    /// without waiting for a release under its own generation. The next commit of the split
    /// (the new owner claiming it) clears it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub released: bool,
}

/// Why a checkpoint write was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MergeError {
    /// The write would move a split's position backwards.
    #[error("split {split}: position {proposed} is behind the committed position {committed}")]
    Backwards {
        /// The split.
        split: String,
        /// Committed position.
        committed: u64,
        /// Proposed position.
        proposed: u64,
    },
    /// The writer holds an older assignment than the one the split was committed under.
    #[error(
        "split {split}: assignment generation {proposed} is older than the committed generation {committed}"
    )]
    StaleGeneration {
        /// The split.
        split: String,
        /// Committed generation.
        committed: u64,
        /// The writer's generation.
        proposed: u64,
    },
}

impl MergeError {
    /// The split the write was refused for.
    pub fn split(&self) -> &str {
        match self {
            Self::Backwards { split, .. } | Self::StaleGeneration { split, .. } => split,
        }
    }
}

impl Checkpoint {
    /// Applies `updates` to this checkpoint, checking that no position moves backwards and no
    /// generation is older than the committed one, and returns the next checkpoint. Splits not
    /// in `updates` are kept as they are.
    pub fn merged(
        &self,
        updates: &BTreeMap<String, SplitPosition>,
        time: jiff::Timestamp,
    ) -> Result<Checkpoint, MergeError> {
        let mut next = self.clone();
        for (split, update) in updates {
            if let Some(current) = self.splits.get(split) {
                if update.generation < current.generation {
                    return Err(MergeError::StaleGeneration {
                        split: split.clone(),
                        committed: current.generation,
                        proposed: update.generation,
                    });
                }
                if update.position < current.position {
                    return Err(MergeError::Backwards {
                        split: split.clone(),
                        committed: current.position,
                        proposed: update.position,
                    });
                }
            }
            next.splits.insert(split.clone(), update.clone());
        }
        next.id = self.id + 1;
        next.time = Some(time);
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(position: u64, generation: u64) -> SplitPosition {
        SplitPosition {
            position,
            generation,
            ..Default::default()
        }
    }

    #[test]
    fn merge_refuses_backwards_and_stale_writes() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        let base = Checkpoint::default()
            .merged(&BTreeMap::from([("a".into(), pos(10, 2))]), now)
            .unwrap();
        assert_eq!(base.id, 1);
        let back = base.merged(&BTreeMap::from([("a".into(), pos(9, 2))]), now);
        assert!(matches!(back, Err(MergeError::Backwards { .. })));
        let stale = base.merged(&BTreeMap::from([("a".into(), pos(20, 1))]), now);
        assert!(matches!(stale, Err(MergeError::StaleGeneration { .. })));
        let next = base
            .merged(&BTreeMap::from([("a".into(), pos(20, 3))]), now)
            .unwrap();
        assert_eq!(next.splits["a"].position, 20);
        assert_eq!(next.id, 2);
    }
}
