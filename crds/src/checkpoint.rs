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
    /// The creation time of the source stream the position counts in (JetStream's `created`):
    /// a stream deleted and created again under the same name starts its sequences anew, so a
    /// position means nothing on another incarnation. Absent in checkpoints of older releases
    /// (adopted as they are: the live stream is taken to be the one they were taken on) and
    /// for a NATS Core source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_created: Option<jiff::Timestamp>,
    /// Set when the split found its source stream recreated: the split started again at the
    /// new stream's start, and from then on its message ids carry the stream's creation time
    /// (so that they never collide with the ids of the earlier stream's outputs in the sink's
    /// duplicate window). Kept by every later commit; a later recreation replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recreated: Option<StreamRecreated>,
    /// The last stream sequence of a bounded `streamEnd` run, fixed the first time the split
    /// started (the stream's last sequence then), so that a restart ends where the run was
    /// meant to end instead of at the stream's end as it is by then. Kept by every later commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<u64>,
    /// The last gap the split found in its source: messages removed by the stream's retention
    /// (`maxAge`, `maxMsgs`, `maxBytes`, a purge) before the split read them. Kept by every
    /// later commit; a later gap replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_gap: Option<RetentionGap>,
    /// Set by the commit that ended a run of the split (a graceful stop, a release): every
    /// output emitted was confirmed and committed, so nothing past the position can be in the
    /// sink. Cleared by the next commit of a running split. A split resumed from an entry
    /// without it may replay outputs that are already in the sink.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drained: bool,
    /// Set when a worker resumed the split (or refused to) after its last commit had grown
    /// older than the sink stream's duplicate window: outputs emitted after that commit may be
    /// written to the sink again. Kept by every later commit; a later finding replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_exceeded: Option<WindowExceeded>,
}

/// A split resumed from a commit older than the sink stream's duplicate window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowExceeded {
    /// When the worker found it.
    pub detected: jiff::Timestamp,
    /// The age of the last commit then, in seconds.
    pub age_seconds: u64,
    /// The sink stream's duplicate window, in seconds.
    pub window_seconds: u64,
    /// Whether the worker refused to start the split (`checkpoint.mode: ExactlyOnce`) rather
    /// than resume it at least once; cleared by the next commit of the running split (the
    /// finding stays).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
}

/// Messages of a split's source removed by the stream's retention before the split read them:
/// stream sequences `first..=last` (the range counts every subject of the stream; only those
/// the split's filter matches were the split's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetentionGap {
    /// The first sequence removed.
    pub first: u64,
    /// The last sequence removed.
    pub last: u64,
    /// When the worker found it.
    pub detected: jiff::Timestamp,
}

impl RetentionGap {
    /// How many stream sequences the gap spans.
    pub fn len(&self) -> u64 {
        self.last.saturating_sub(self.first) + 1
    }

    /// Never true: a gap spans at least one sequence.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A source stream found recreated under a split.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamRecreated {
    /// When the worker found it.
    pub detected: jiff::Timestamp,
    /// The creation time of the stream the earlier position counted in (absent when the
    /// worker adopted an older checkpoint without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_created: Option<jiff::Timestamp>,
    /// The position reached on the earlier stream.
    pub previous_position: u64,
}

impl SplitPosition {
    /// Whether `self` counts in a later incarnation of the source stream than `other`: both
    /// creation times known and `self`'s later, or `other`'s unknown (an adopted older
    /// checkpoint) and `self` found the stream recreated. Its position starts anew and may be
    /// lower.
    pub fn on_newer_stream_than(&self, other: &SplitPosition) -> bool {
        match (self.stream_created, other.stream_created) {
            (Some(a), Some(b)) => a > b,
            (Some(_), None) => self.recreated.is_some(),
            _ => false,
        }
    }
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
    /// The write counts in an earlier incarnation of the source stream than the committed
    /// position (a writer that has not seen the stream recreated).
    #[error(
        "split {split}: the position counts in a source stream created at {proposed}, the committed one in a stream created at {committed}"
    )]
    OlderStream {
        /// The split.
        split: String,
        /// Creation time of the stream of the committed position.
        committed: jiff::Timestamp,
        /// Creation time of the stream of the proposed position.
        proposed: jiff::Timestamp,
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
            Self::Backwards { split, .. }
            | Self::StaleGeneration { split, .. }
            | Self::OlderStream { split, .. } => split,
        }
    }
}

impl Checkpoint {
    /// Applies `updates` to this checkpoint, checking that no position moves backwards and no
    /// generation is older than the committed one, and returns the next checkpoint. Splits not
    /// in `updates` are kept as they are. A position on a later incarnation of the source
    /// stream (see [`SplitPosition::stream_created`]) starts anew and may be lower; one on an
    /// earlier incarnation is refused.
    pub fn merged(
        &self,
        updates: &BTreeMap<String, SplitPosition>,
        time: jiff::Timestamp,
    ) -> Result<Checkpoint, MergeError> {
        let (next, mut refused) = self.merged_partly(updates, time);
        match refused.is_empty() {
            true => Ok(next),
            false => Err(refused.swap_remove(0)),
        }
    }

    /// Like [`Checkpoint::merged`], but a split whose update is refused does not refuse the
    /// others: the next checkpoint holds every update the rules allow (the refused splits keep
    /// their committed entries), and the refusals come with it, one per refused split.
    pub fn merged_partly(
        &self,
        updates: &BTreeMap<String, SplitPosition>,
        time: jiff::Timestamp,
    ) -> (Checkpoint, Vec<MergeError>) {
        let mut next = self.clone();
        let mut refused = Vec::new();
        for (split, update) in updates {
            if let Some(current) = self.splits.get(split)
                && let Err(e) = Self::check(split, current, update)
            {
                refused.push(e);
                continue;
            }
            next.splits.insert(split.clone(), update.clone());
        }
        // Wraps rather than panics: no pipeline commits 2^64 times, but a checkpoint edited by
        // hand may hold the largest id (a store's version then still changes).
        next.id = self.id.wrapping_add(1);
        next.time = Some(time);
        (next, refused)
    }

    /// Whether `update` may replace the committed entry `current` of `split`.
    fn check(
        split: &str,
        current: &SplitPosition,
        update: &SplitPosition,
    ) -> Result<(), MergeError> {
        if update.generation < current.generation {
            return Err(MergeError::StaleGeneration {
                split: split.to_owned(),
                committed: current.generation,
                proposed: update.generation,
            });
        }
        if current.on_newer_stream_than(update) {
            return Err(MergeError::OlderStream {
                split: split.to_owned(),
                committed: current.stream_created.unwrap_or_default(),
                proposed: update.stream_created.unwrap_or_default(),
            });
        }
        if update.position < current.position && !update.on_newer_stream_than(current) {
            return Err(MergeError::Backwards {
                split: split.to_owned(),
                committed: current.position,
                proposed: update.position,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the checkpoint fuzz target: a checkpoint holding the largest id panicked on
    /// its next commit (an overflow).
    #[test]
    fn a_checkpoint_at_the_largest_id_still_merges() {
        let committed = Checkpoint {
            id: u64::MAX,
            ..Default::default()
        };
        let next = committed
            .merged(&BTreeMap::new(), jiff::Timestamp::UNIX_EPOCH)
            .unwrap();
        assert_eq!(next.id, 0);
    }

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

    #[test]
    fn a_recreated_stream_starts_positions_anew_and_the_old_one_is_refused() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        let first: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let second: jiff::Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        let on = |position, created| SplitPosition {
            position,
            generation: 1,
            stream_created: created,
            ..Default::default()
        };
        let base = Checkpoint::default()
            .merged(&BTreeMap::from([("a".into(), on(100, Some(first)))]), now)
            .unwrap();
        let anew = base
            .merged(&BTreeMap::from([("a".into(), on(5, Some(second)))]), now)
            .unwrap();
        assert_eq!(anew.splits["a"].position, 5);
        let stale = anew.merged(&BTreeMap::from([("a".into(), on(200, Some(first)))]), now);
        assert!(matches!(stale, Err(MergeError::OlderStream { .. })));
        // Without creation times (an older checkpoint) the rules are as before.
        let old = Checkpoint::default()
            .merged(&BTreeMap::from([("a".into(), on(100, None))]), now)
            .unwrap();
        let back = old.merged(&BTreeMap::from([("a".into(), on(5, Some(second)))]), now);
        assert!(matches!(back, Err(MergeError::Backwards { .. })));
    }

    #[test]
    fn a_refused_split_does_not_refuse_the_others() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        let base = Checkpoint::default()
            .merged(
                &BTreeMap::from([("a".into(), pos(10, 2)), ("b".into(), pos(10, 2))]),
                now,
            )
            .unwrap();
        let updates = BTreeMap::from([
            ("a".into(), pos(20, 1)),
            ("b".into(), pos(30, 2)),
            ("c".into(), pos(5, 2)),
        ]);
        let (next, refused) = base.merged_partly(&updates, now);
        assert_eq!(next.id, 2);
        assert_eq!(next.splits["a"], base.splits["a"]);
        assert_eq!(next.splits["b"].position, 30);
        assert_eq!(next.splits["c"].position, 5);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].split(), "a");
        // The strict merge refuses the whole write.
        assert!(matches!(
            base.merged(&updates, now),
            Err(MergeError::StaleGeneration { .. })
        ));
    }

    #[test]
    fn the_fields_of_later_releases_are_optional_and_round_trip() {
        let old: Checkpoint =
            serde_json::from_str(r#"{"id": 3, "splits": {"a": {"position": 7, "generation": 1}}}"#)
                .unwrap();
        let a = &old.splits["a"];
        assert_eq!(
            (a.end, &a.retention_gap, a.drained, &a.window_exceeded),
            (None, &None, false, &None)
        );
        // Absent fields are not written, so older readers see the format they know.
        let text = serde_json::to_string(&old).unwrap();
        assert_eq!(
            text,
            r#"{"id":3,"splits":{"a":{"position":7,"generation":1}}}"#
        );
        let mut new = old.clone();
        let entry = new.splits.get_mut("a").unwrap();
        entry.end = Some(100);
        entry.drained = true;
        entry.retention_gap = Some(RetentionGap {
            first: 8,
            last: 20,
            detected: jiff::Timestamp::UNIX_EPOCH,
        });
        let text = serde_json::to_string(&new).unwrap();
        assert!(
            text.contains(r#""retentionGap":{"first":8,"last":20"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Checkpoint>(&text).unwrap(), new);
    }

    #[test]
    fn a_checkpoint_without_stream_creation_times_is_read() {
        let old: Checkpoint =
            serde_json::from_str(r#"{"id": 3, "splits": {"a": {"position": 7, "generation": 1}}}"#)
                .unwrap();
        assert_eq!(old.splits["a"].stream_created, None);
        assert_eq!(old.splits["a"].recreated, None);
    }
}
