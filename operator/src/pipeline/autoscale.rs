//! Autoscaling on lag (`spec.autoscaling`): from the lag the reconcile reads off the split
//! consumers, the workers a Pipeline asks for. Pure: the decision depends only on the policy,
//! the observation and the previous decision kept in `status.autoscaling`, so it is tested as a
//! plain function and an operator restart (or a leadership handover) continues where the last
//! one stopped.
//!
//! Up at once, down slowly: the lag asking for more workers than there are adds them at the
//! next reconcile; it asking for fewer removes them only once it has done so for the whole
//! scale-down stabilization window, and then down to what it asks for now. Never fewer than
//! `minParallelism`, never more than `maxParallelism` nor than the splits (a split is read by
//! one worker, so a worker more than the splits would idle).

use jetflow_crds::pipeline::{Autoscaling, AutoscalingStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// What the autoscaler decides from.
#[derive(Clone, Debug)]
pub struct Observation<'a> {
    /// The policy.
    pub policy: &'a Autoscaling,
    /// `spec.parallelism`: where the workers start before the first decision.
    pub parallelism: i32,
    /// The lag summed over the splits; `None` before the consumers report one.
    pub lag: Option<u64>,
    /// How many splits the source has now.
    pub splits: usize,
    /// The previous decision.
    pub previous: Option<&'a AutoscalingStatus>,
    /// Now.
    pub now: jiff::Timestamp,
}

/// A change of the workers asked for, worth an Event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// More workers.
    ScaledUp {
        /// Workers asked for before.
        from: i32,
    },
    /// Fewer workers.
    ScaledDown {
        /// Workers asked for before.
        from: i32,
    },
}

/// The decision: the new `status.autoscaling`, and the change it makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The state to report in `status.autoscaling`.
    pub status: AutoscalingStatus,
    /// Whether the workers asked for changed.
    pub change: Option<Change>,
}

/// The bounds in force: `minParallelism..=maxParallelism`, capped by the splits (at least one
/// worker, even before any split is known).
pub fn bounds(policy: &Autoscaling, splits: usize) -> (i32, i32) {
    let splits = i32::try_from(splits).unwrap_or(i32::MAX).max(1);
    let upper = policy.max_parallelism.min(splits).max(1);
    let lower = policy.min_parallelism.clamp(1, upper);
    (lower, upper)
}

/// The workers the lag asks for: lag / targetLagPerWorker rounded up, within the bounds.
pub fn recommend(policy: &Autoscaling, lag: u64, splits: usize) -> i32 {
    let (lower, upper) = bounds(policy, splits);
    let wanted = lag.div_ceil(policy.target_lag_per_worker.max(1));
    i32::try_from(wanted)
        .unwrap_or(i32::MAX)
        .clamp(lower, upper)
}

/// How long before the workers may be removed, when the lag asks for fewer; `None` when it does
/// not.
pub fn scale_down_due_in(
    status: &AutoscalingStatus,
    policy: &Autoscaling,
    now: jiff::Timestamp,
) -> Option<std::time::Duration> {
    let since = status.below_since.as_ref()?.0;
    let window = std::time::Duration::from_secs(u64::from(policy.scale_down_stabilization_seconds));
    let waited = now.duration_since(since).unsigned_abs();
    Some(window.saturating_sub(waited))
}

/// Decides the workers asked for.
pub fn decide(o: &Observation<'_>) -> Decision {
    let policy = o.policy;
    let (lower, upper) = bounds(policy, o.splits);
    let current = o
        .previous
        .map_or(o.parallelism, |p| p.desired_parallelism)
        .clamp(lower, upper);
    // The workers asked for before: the last decision, else spec.parallelism.
    let before = o.previous.map_or(o.parallelism, |p| p.desired_parallelism);
    let now = Time(whole_seconds(o.now));
    let Some(lag) = o.lag else {
        // No lag known yet (consumers not made): hold where the workers are.
        let mut status = o.previous.cloned().unwrap_or_default();
        status.desired_parallelism = current;
        status.recommended_parallelism = current;
        if status.reason.is_empty() {
            status.reason = "no lag reported yet; holding the workers".into();
        }
        return finish(status, before, now);
    };
    let recommended = recommend(policy, lag, o.splits);
    let target = policy.target_lag_per_worker;
    let mut status = AutoscalingStatus {
        desired_parallelism: current,
        recommended_parallelism: recommended,
        lag,
        below_since: None,
        last_scale_time: o.previous.and_then(|p| p.last_scale_time.clone()),
        reason: String::new(),
    };
    if recommended > current {
        status.desired_parallelism = recommended;
        status.reason = format!(
            "lag {lag} is above {target} per worker for {current} workers: {recommended} asked for"
        );
    } else if recommended < current {
        let since = o
            .previous
            .and_then(|p| p.below_since.clone())
            .unwrap_or_else(|| now.clone());
        let window = u64::from(policy.scale_down_stabilization_seconds);
        let waited = o
            .now
            .duration_since(since.0)
            .as_secs()
            .max(0)
            .unsigned_abs();
        if waited >= window {
            status.desired_parallelism = recommended;
            status.reason = format!(
                "lag {lag} has asked for {recommended} workers for {window}s (scaleDownStabilizationSeconds)"
            );
        } else {
            status.below_since = Some(since);
            status.reason = format!(
                "lag {lag} asks for {recommended} workers; keeping {current} until it has for {window}s (scaleDownStabilizationSeconds)"
            );
        }
    } else {
        status.reason = if current == upper && upper < policy.max_parallelism {
            format!("lag {lag}: {current} workers, one per split (no more than the splits)")
        } else {
            format!("lag {lag} is within {target} per worker for {current} workers")
        };
    }
    finish(status, before, now)
}

fn finish(mut status: AutoscalingStatus, from: i32, now: Time) -> Decision {
    let change = match status.desired_parallelism {
        d if d > from => Some(Change::ScaledUp { from }),
        d if d < from => Some(Change::ScaledDown { from }),
        _ => None,
    };
    if change.is_some() {
        status.last_scale_time = Some(now);
    }
    Decision { status, change }
}

/// Whole seconds: a Kubernetes Time keeps no more, so a finer value would never compare equal to
/// the status read back.
fn whole_seconds(t: jiff::Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_second(t.as_second()).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(min: i32, max: i32, target: u64, window: u32) -> Autoscaling {
        Autoscaling {
            min_parallelism: min,
            max_parallelism: max,
            target_lag_per_worker: target,
            scale_down_stabilization_seconds: window,
        }
    }

    fn at(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_000_000 + second).unwrap()
    }

    fn step(
        policy: &Autoscaling,
        previous: Option<&AutoscalingStatus>,
        lag: Option<u64>,
        splits: usize,
        second: i64,
    ) -> Decision {
        decide(&Observation {
            policy,
            parallelism: 1,
            lag,
            splits,
            previous,
            now: at(second),
        })
    }

    #[test]
    fn lag_above_the_target_adds_workers_at_once() {
        let p = policy(1, 4, 1000, 60);
        let first = step(&p, None, Some(0), 6, 0);
        assert_eq!(first.status.desired_parallelism, 1);
        assert_eq!(first.change, None);
        let up = step(&p, Some(&first.status), Some(2500), 6, 1);
        assert_eq!(up.status.desired_parallelism, 3);
        assert_eq!(up.change, Some(Change::ScaledUp { from: 1 }));
        assert_eq!(up.status.last_scale_time, Some(Time(at(1))));
        assert!(
            up.status.reason.contains("lag 2500"),
            "{}",
            up.status.reason
        );
    }

    #[test]
    fn never_more_workers_than_splits_nor_than_the_maximum() {
        let p = policy(1, 10, 100, 60);
        assert_eq!(
            step(&p, None, Some(1_000_000), 3, 0)
                .status
                .desired_parallelism,
            3
        );
        let p = policy(1, 2, 100, 60);
        assert_eq!(
            step(&p, None, Some(1_000_000), 6, 0)
                .status
                .desired_parallelism,
            2
        );
        // More minimum workers than splits: the splits win.
        let p = policy(4, 8, 100, 60);
        assert_eq!(step(&p, None, Some(0), 2, 0).status.desired_parallelism, 2);
        assert_eq!(bounds(&p, 0), (1, 1));
    }

    #[test]
    fn workers_are_removed_only_after_the_stabilization_window() {
        let p = policy(1, 4, 1000, 60);
        let up = step(&p, None, Some(4000), 4, 0);
        assert_eq!(up.status.desired_parallelism, 4);
        // The lag drains: the recommendation falls, the workers stay for the window.
        let low = step(&p, Some(&up.status), Some(0), 4, 10);
        assert_eq!(low.status.desired_parallelism, 4);
        assert_eq!(low.status.recommended_parallelism, 1);
        assert_eq!(low.status.below_since, Some(Time(at(10))));
        assert_eq!(low.change, None);
        let still = step(&p, Some(&low.status), Some(10), 4, 69);
        assert_eq!(still.status.desired_parallelism, 4);
        assert_eq!(still.status.below_since, Some(Time(at(10))));
        assert_eq!(
            scale_down_due_in(&still.status, &p, at(69)),
            Some(std::time::Duration::from_secs(1))
        );
        let down = step(&p, Some(&still.status), Some(10), 4, 70);
        assert_eq!(down.status.desired_parallelism, 1);
        assert_eq!(down.change, Some(Change::ScaledDown { from: 4 }));
        assert_eq!(down.status.below_since, None);
        assert_eq!(down.status.last_scale_time, Some(Time(at(70))));
    }

    #[test]
    fn a_lag_rising_again_restarts_the_window() {
        let p = policy(1, 4, 1000, 60);
        let up = step(&p, None, Some(4000), 4, 0);
        let low = step(&p, Some(&up.status), Some(0), 4, 10);
        let high = step(&p, Some(&low.status), Some(3900), 4, 50);
        assert_eq!(high.status.below_since, None);
        assert_eq!(high.status.desired_parallelism, 4);
        let low_again = step(&p, Some(&high.status), Some(0), 4, 80);
        assert_eq!(low_again.status.desired_parallelism, 4);
        assert_eq!(low_again.status.below_since, Some(Time(at(80))));
    }

    #[test]
    fn unknown_lag_holds_the_workers_and_a_resync_with_nothing_new_changes_nothing() {
        let p = policy(2, 4, 1000, 60);
        let first = step(&p, None, None, 4, 0);
        assert_eq!(
            first.status.desired_parallelism, 2,
            "spec.parallelism 1 raised to the minimum"
        );
        assert_eq!(first.change, Some(Change::ScaledUp { from: 1 }));
        let again = step(&p, Some(&first.status), None, 4, 30);
        assert_eq!(again.status, first.status);
        let steady = step(&p, Some(&first.status), Some(5), 4, 31);
        let resync = step(&p, Some(&steady.status), Some(5), 4, 60);
        assert_eq!(resync.status, steady.status);
        assert_eq!(resync.change, None);
    }

    #[test]
    fn fewer_splits_lower_the_workers_at_once() {
        let p = policy(1, 8, 10, 600);
        let up = step(&p, None, Some(1000), 6, 0);
        assert_eq!(up.status.desired_parallelism, 6);
        let fewer = step(&p, Some(&up.status), Some(1000), 3, 1);
        assert_eq!(fewer.status.desired_parallelism, 3);
        assert_eq!(fewer.change, Some(Change::ScaledDown { from: 6 }));
    }
}
