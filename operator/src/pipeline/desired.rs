//! The Pipeline reconcile's desired state, decided from what was observed: whether the
//! checkpoint is reset or rewound (and to what), the split assignment, each split's consumer,
//! the workers asked for, the worker configuration and its hash, and when to look again.
//!
//! Pure: nothing here touches a client, so every decision is tested as a plain function. The
//! [`super::build`] builders turn the decisions into Kubernetes objects.

use jetflow_nats::consumer::Acks;
use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use jetflow_crds::assignment::Assignment;
use jetflow_crds::checkpoint::{Checkpoint, SplitPosition};
use jetflow_crds::split::{self, Split};
use jetflow_crds::{Pipeline, names, rewind};

use super::autoscale;
use super::build::{Inputs, configmap, deployment};
use super::consumers;
use super::status;
use crate::Result;
use crate::assignment::assign;
use crate::reasons;

/// What the reset and rewind annotations ask of the checkpoint.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Epochs {
    /// The epoch the checkpoint records now (the last reset and rewind applied).
    pub applied: Option<String>,
    /// The epoch to record when the checkpoint is to be discarded now (a new reset or rewind
    /// value); `None` when it stays.
    pub new: Option<String>,
    /// Where a rewind moves the splits (`None` for a reset: the spec's start).
    pub rewind: Option<rewind::Target>,
    /// A new rewind value that is not a rewind: reported, otherwise ignored.
    pub invalid_rewind: Option<rewind::ParseError>,
}

impl Epochs {
    /// The epoch the workers are to carry: a worker that started before a reset carries
    /// another one, and its store refuses to write into the fresh checkpoint.
    pub fn current(&self) -> Option<&str> {
        self.new.as_deref().or(self.applied.as_deref())
    }
}

/// Decides from the `reset` and `rewind` annotations and the epoch the checkpoint records
/// (`applied`) whether the checkpoint is discarded now. A new value of either annotation is
/// applied once; a reset wins over a rewind that comes with it.
pub fn epochs(reset: Option<&str>, rewind: Option<&str>, applied: Option<&str>) -> Epochs {
    let (applied_reset, applied_rewind) = rewind::split_epoch(applied);
    let resetting = reset.is_some() && reset != applied_reset;
    let mut invalid_rewind = None;
    let rewind_target = match rewind {
        Some(value) if !resetting && Some(value) != applied_rewind => {
            match rewind::Target::parse(value) {
                Ok(target) => Some(target),
                Err(e) => {
                    invalid_rewind = Some(e);
                    None
                }
            }
        }
        _ => None,
    };
    let new = if resetting {
        rewind::join_epoch(reset, rewind)
    } else if rewind_target.is_some() {
        rewind::join_epoch(applied_reset, rewind)
    } else {
        None
    };
    Epochs {
        applied: applied.map(str::to_owned),
        new,
        rewind: rewind_target,
        invalid_rewind,
    }
}

/// The highest assignment generation any split of `checkpoint` was committed under.
fn generation_floor(checkpoint: &Checkpoint) -> u64 {
    checkpoint
        .splits
        .values()
        .map(|p| p.generation)
        .max()
        .unwrap_or(0)
}

/// The split assignment: `splits` over the ready `workers`, as stable as `previous` allows,
/// under a generation no commit in `checkpoint` could hold, and a new one when the checkpoint
/// is being discarded (so a worker still on the old assignment cannot write its positions
/// back).
pub fn assignment(
    splits: &[String],
    workers: &[String],
    previous: &Assignment,
    checkpoint: &Checkpoint,
    discarding: bool,
) -> Assignment {
    let mut assignment = assign(splits, workers, previous);
    // The checkpoint may hold generations the assignment never reached: it outlives the
    // Pipeline and its assignment ConfigMap, so a Pipeline applied again starts its assignment
    // from nothing. Every commit under a generation below the checkpoint's would be refused as
    // stale: publish one above them all.
    let floor = generation_floor(checkpoint);
    if previous.generation < floor {
        assignment.generation = assignment.generation.max(floor + 1);
    }
    if discarding {
        assignment.generation = assignment.generation.max(previous.generation + 1);
    }
    assignment
}

/// The checkpoint that replaces a discarded one: every split at `position` (0 for a reset)
/// under the new assignment `generation`.
pub fn reset_checkpoint(splits: &[String], position: u64, generation: u64) -> Checkpoint {
    Checkpoint {
        id: 0,
        time: None,
        splits: splits
            .iter()
            .map(|s| {
                (
                    s.clone(),
                    SplitPosition {
                        position,
                        generation,
                        ..Default::default()
                    },
                )
            })
            .collect(),
    }
}

/// The Event reason and message of a checkpoint discarded by a reset (`target` none) or a
/// rewind to `target` (every split reads from sequence `first` on).
pub fn reset_event(
    target: Option<&rewind::Target>,
    reset: Option<&str>,
    rewind: Option<&str>,
    first: u64,
) -> (&'static str, String) {
    match target {
        None => (
            reasons::RESET,
            format!(
                "{} changed to {:?}: checkpoint discarded, consumers recreated, workers restarted from spec.source start",
                names::RESET_ANNOTATION,
                reset.unwrap_or_default()
            ),
        ),
        Some(rewind::Target::Start) => (
            reasons::REWOUND,
            format!(
                "{} changed to {:?}: every split reads from spec.source.jetstream.start; consumers recreated, workers restarted",
                names::REWIND_ANNOTATION,
                rewind.unwrap_or_default()
            ),
        ),
        Some(_) => (
            reasons::REWOUND,
            format!(
                "{} changed to {:?}: every split reads from stream sequence {first} on; consumers recreated, workers restarted",
                names::REWIND_ANNOTATION,
                rewind.unwrap_or_default()
            ),
        ),
    }
}

/// Each split's consumer, by split name. `stream_created` is when the live source stream was
/// created: a position on another incarnation of the stream (deleted and created again) means
/// nothing on this one, so that split's consumer starts as the spec says, as the worker will.
/// `acks` is what the source stream's retention calls for ([`Acks::for_retention`]).
pub fn consumers(
    p: &Pipeline,
    ns: &str,
    name: &str,
    splits: &[Split],
    checkpoint: &Checkpoint,
    stream_created: Option<jiff::Timestamp>,
    acks: Acks,
) -> Result<BTreeMap<String, pull::Config>> {
    splits
        .iter()
        .map(|s| {
            let position = checkpoint
                .splits
                .get(&s.name)
                .filter(|p| p.stream_created.is_none() || p.stream_created == stream_created)
                .map(|p| p.position);
            consumers::config(ns, name, &p.spec, s, position, acks).map(|c| (s.name.clone(), c))
        })
        .collect()
}

/// The autoscaler's decision from the consumers' `lags`, while the pipeline runs (not
/// suspended, not `finished`); `None` without `spec.autoscaling`.
pub fn autoscale(
    p: &Pipeline,
    finished: bool,
    lags: &BTreeMap<String, u64>,
    splits: usize,
    now: jiff::Timestamp,
) -> Option<autoscale::Decision> {
    p.spec
        .autoscaling
        .as_ref()
        .filter(|_| !p.spec.suspend && !finished)
        .map(|policy| {
            autoscale::decide(&autoscale::Observation {
                policy,
                parallelism: p.spec.parallelism,
                lag: (!lags.is_empty()).then(|| lags.values().sum()),
                splits,
                previous: p.status.as_ref().and_then(|s| s.autoscaling.as_ref()),
                now,
            })
        })
}

/// The workers the Deployment asks for.
pub fn replicas(p: &Pipeline, finished: bool, decision: Option<&autoscale::Decision>) -> i32 {
    status::replicas(p, finished, decision.map(|d| d.status.desired_parallelism))
}

/// The worker configuration (carrying the checkpoint's `epoch`) and its hash, which the
/// Deployment's pod template carries so that a new configuration rolls the workers.
pub fn worker_config(inputs: &Inputs<'_>, epoch: Option<&str>) -> Result<(String, String)> {
    let config = configmap::worker_config(inputs, epoch)?;
    let hash = deployment::config_hash(&config);
    Ok((config, hash))
}

/// When to reconcile again without a change: at the resync interval, as often as new subjects
/// are looked for with splits following the stream's subjects, and when a scale down waiting
/// for its stabilization window is due.
pub fn resync(
    p: &Pipeline,
    interval: Duration,
    decision: Option<&autoscale::Decision>,
    now: jiff::Timestamp,
) -> Duration {
    let resync = match &p.spec.source.jetstream {
        Some(js) if split::is_dynamic(&p.spec) => interval.min(js.discovery_interval.get()),
        _ => interval,
    };
    match (decision, &p.spec.autoscaling) {
        (Some(d), Some(policy)) => autoscale::scale_down_due_in(&d.status, policy, now)
            .map_or(resync, |due| resync.min(due + Duration::from_secs(1))),
        _ => resync,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::fixtures;

    #[test]
    fn a_new_reset_value_discards_the_checkpoint_once() {
        let e = epochs(Some("r1"), None, None);
        assert_eq!(e.new.as_deref(), Some("r1"));
        assert_eq!(e.rewind, None);
        assert_eq!(e.current(), Some("r1"));
        let applied = epochs(Some("r1"), None, Some("r1"));
        assert_eq!(applied.new, None, "applied once");
        assert_eq!(applied.current(), Some("r1"));
        assert_eq!(epochs(None, None, None), Epochs::default());
    }

    #[test]
    fn a_reset_wins_over_a_rewind_that_comes_with_it() {
        let e = epochs(Some("r2"), Some("sequence=5"), Some("r1"));
        assert_eq!(e.rewind, None);
        assert_eq!(e.new.as_deref(), Some("r2|rewind=sequence=5"));
    }

    #[test]
    fn a_new_rewind_value_keeps_the_applied_reset_in_the_epoch() {
        let e = epochs(Some("r1"), Some("sequence=5"), Some("r1"));
        assert_eq!(e.rewind, Some(rewind::Target::Sequence(5)));
        assert_eq!(e.new.as_deref(), Some("r1|rewind=sequence=5"));
        let again = epochs(Some("r1"), Some("sequence=5"), Some("r1|rewind=sequence=5"));
        assert_eq!(again.new, None, "applied once");
        assert_eq!(again.rewind, None);
    }

    #[test]
    fn an_invalid_rewind_is_reported_and_changes_nothing() {
        let e = epochs(None, Some("sequence=0"), None);
        assert!(e.invalid_rewind.is_some());
        assert_eq!((e.new, e.rewind), (None, None));
    }

    #[test]
    fn the_assignment_generation_rises_above_the_checkpoint_and_on_a_reset() {
        let splits = vec!["a".to_owned(), "b".to_owned()];
        let workers = vec!["w-0".to_owned()];
        let previous = Assignment::default();
        let fresh = assignment(&splits, &workers, &previous, &Checkpoint::default(), false);
        let old = reset_checkpoint(&splits, 10, 7);
        let above = assignment(&splits, &workers, &previous, &old, false);
        assert!(above.generation > 7, "{}", above.generation);
        assert!(above.generation >= fresh.generation);
        let settled = assignment(&splits, &workers, &above, &old, false);
        assert_eq!(
            settled.generation, above.generation,
            "stable without a change"
        );
        let discarded = assignment(&splits, &workers, &above, &old, true);
        assert_eq!(discarded.generation, above.generation + 1);
    }

    #[test]
    fn a_position_on_another_incarnation_of_the_stream_is_not_a_consumer_start() {
        let p = fixtures::pipeline();
        let splits = split::static_splits(&p.spec);
        let created = jiff::Timestamp::from_second(1_000).unwrap();
        let mut checkpoint = reset_checkpoint(&[splits[0].name.clone()], 41, 1);
        let mut old = checkpoint.clone();
        for position in old.splits.values_mut() {
            position.stream_created = Some(jiff::Timestamp::from_second(5).unwrap());
        }
        for position in checkpoint.splits.values_mut() {
            position.stream_created = Some(created);
        }
        let on_this = consumers(
            &p,
            "shop",
            "orders-copy",
            &splits,
            &checkpoint,
            Some(created),
            Acks::None,
        )
        .unwrap();
        let on_other = consumers(
            &p,
            "shop",
            "orders-copy",
            &splits,
            &old,
            Some(created),
            Acks::None,
        )
        .unwrap();
        let none = consumers(
            &p,
            "shop",
            "orders-copy",
            &splits,
            &Checkpoint::default(),
            Some(created),
            Acks::None,
        )
        .unwrap();
        let first = &splits[0].name;
        assert_ne!(
            on_this[first].deliver_policy, none[first].deliver_policy,
            "starts after the checkpointed position"
        );
        assert_eq!(on_other[first].deliver_policy, none[first].deliver_policy);
        assert_eq!(on_this.len(), splits.len());
    }

    #[test]
    fn suspended_pipelines_ask_for_no_workers_and_resync_at_the_interval() {
        let mut p = fixtures::pipeline();
        assert_eq!(replicas(&p, false, None), p.spec.parallelism);
        p.spec.suspend = true;
        assert_eq!(replicas(&p, false, None), 0);
        let now = jiff::Timestamp::from_second(1_000).unwrap();
        assert_eq!(
            resync(&p, Duration::from_secs(15), None, now),
            Duration::from_secs(15)
        );
        assert!(autoscale(&p, false, &BTreeMap::new(), 2, now).is_none());
    }
}
