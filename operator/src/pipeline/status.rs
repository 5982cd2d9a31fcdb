//! The Pipeline's status, computed from what the reconcile observed. Pure: the same
//! observations give the same status, and conditions are merged so that `lastTransitionTime`
//! moves only when a condition's status changes; nothing in a message changes with the clock,
//! so a resync that finds nothing new computes an equal status and writes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use jetflow_crds::assignment::Assignment;
use jetflow_crds::checkpoint::Checkpoint;
use jetflow_crds::condition::{self, types};
use jetflow_crds::pipeline::{CheckpointStatus, PipelinePhase, SplitStatus};
use jetflow_crds::{Pipeline, PipelineStatus};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::build;
use super::validate::{Finding, Verdict, join};
use crate::reasons;

/// Everything the status is computed from.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    /// The Pipeline, with its previous status.
    pub pipeline: &'a Pipeline,
    /// Validation warnings (errors take [`invalid`] instead).
    pub verdict: &'a Verdict,
    /// The live worker Deployment.
    pub deployment: Option<&'a Deployment>,
    /// The replicas asked for.
    pub replicas: i32,
    /// The committed checkpoint.
    pub checkpoint: Option<&'a Checkpoint>,
    /// The published assignment.
    pub assignment: &'a Assignment,
    /// The current splits, by name.
    pub splits: &'a [String],
    /// Lag per split, where known.
    pub lags: &'a BTreeMap<String, u64>,
    /// A bounded run finished on every split.
    pub finished: bool,
    /// The autoscaler's decision, when it decided (autoscaling on, the pipeline running).
    pub autoscaling: Option<&'a jetflow_crds::pipeline::AutoscalingStatus>,
    /// The least time without a checkpoint that counts as stale.
    pub min_stale: Duration,
    /// Now.
    pub now: jiff::Timestamp,
}

/// Whether a bounded pipeline has finished every split in `checkpoint`.
pub fn finished(p: &Pipeline, splits: &[String], checkpoint: Option<&Checkpoint>) -> bool {
    let Some(cp) = checkpoint else { return false };
    p.spec.source.bound.is_some()
        && !splits.is_empty()
        && splits
            .iter()
            .all(|s| cp.splits.get(s).is_some_and(|pos| pos.finished))
}

/// The workers a Pipeline asks for: what the autoscaler decided when `spec.autoscaling` is
/// set, else `parallelism`; none when suspended or when a bounded run finished every split.
/// Worker pods of a bounded run do not exit when their splits finish (the Deployment would
/// start them again); they stay up, idle, until this scales them to 0.
pub fn replicas(p: &Pipeline, finished: bool, autoscaled: Option<i32>) -> i32 {
    if p.spec.suspend || finished {
        0
    } else {
        autoscaled.unwrap_or(p.spec.parallelism)
    }
}

/// How long a running pipeline may go without a checkpoint before it counts as stale: three
/// intervals, at least `min_stale`.
pub fn stale_after(p: &Pipeline, min_stale: Duration) -> Duration {
    (p.spec.checkpoint.interval.get() * 3).max(min_stale)
}

/// The worker pods' label selector as the scale subresource gives it (`status.selector`):
/// the worker Deployment's own selector, written as `key=value,...`.
pub fn selector(p: &Pipeline) -> String {
    build::selector_string(&p.name_any())
}

fn previous(p: &Pipeline) -> PipelineStatus {
    p.status.clone().unwrap_or_default()
}

/// The status of a Pipeline that cannot run: phase Failed, SpecValid and Ready false with the
/// first error's reason.
pub fn invalid(p: &Pipeline, verdict: &Verdict, now: jiff::Timestamp) -> PipelineStatus {
    let mut status = previous(p);
    let generation = p.metadata.generation;
    let reason = verdict.error_reason().unwrap_or(reasons::INVALID);
    let message = verdict.error_message();
    let spec_valid = if verdict.spec_invalid() {
        condition::new(
            types::SPEC_VALID,
            false,
            reason,
            message.clone(),
            generation,
            Time(now),
        )
    } else {
        condition::new(
            types::SPEC_VALID,
            true,
            reasons::VALID,
            "the spec is valid",
            generation,
            Time(now),
        )
    };
    let stalled = verdict
        .needs_spec_change()
        .then(|| (reason, message.clone()));
    for c in [
        spec_valid,
        condition::new(types::READY, false, reason, message, generation, Time(now)),
    ] {
        condition::merge(&mut status.conditions, c);
    }
    condition::set_stalled(&mut status.conditions, stalled, generation, Time(now));
    // The scale subresource answers for an invalid pipeline too, with the selector its pods
    // have (any still running, of a spec that was valid before) or would have.
    status.selector = Some(selector(p));
    status.phase = Some(if verdict.spec_invalid() {
        PipelinePhase::Failed
    } else {
        PipelinePhase::Pending
    });
    status.observed_generation = generation;
    status
}

/// How many stopped splits the Degraded condition's message names (each reason may be about a
/// KiB of error text, and a condition message is limited to 32 KiB).
const MAX_STOPPED_IN_MESSAGE: usize = 3;

/// The splits of the source whose checkpoint says they stopped on a failed message, with why.
fn stopped_splits<'a>(o: &'a Observed<'_>) -> impl Iterator<Item = (&'a str, &'a str)> {
    o.splits.iter().filter_map(|split| {
        let why = o.checkpoint?.splits.get(split)?.stopped.as_deref()?;
        Some((split.as_str(), why))
    })
}

/// How long a recreated source stream is reported in the Degraded condition.
pub const RECREATED_REPORTED_FOR: Duration = Duration::from_secs(3600);

/// The splits whose checkpoint says they found their source stream recreated within
/// [`RECREATED_REPORTED_FOR`].
fn recreated_splits<'a>(
    o: &'a Observed<'_>,
) -> impl Iterator<Item = (&'a str, &'a jetflow_crds::checkpoint::StreamRecreated)> {
    o.splits.iter().filter_map(|split| {
        let r = o.checkpoint?.splits.get(split)?.recreated.as_ref()?;
        let age = o.now.duration_since(r.detected).unsigned_abs();
        (age < RECREATED_REPORTED_FOR).then_some((split.as_str(), r))
    })
}

/// What the workers recorded in the checkpoint about a split's guarantee: a split refused to
/// start because exactly once could not hold (for as long as it is refused), a split resumed
/// at least once past the sink's duplicate window, and messages the source's retention removed
/// before a split read them (both for [`RECREATED_REPORTED_FOR`] after they were found).
fn checkpoint_findings(o: &Observed<'_>) -> Vec<Finding> {
    let recent =
        |at: jiff::Timestamp| o.now.duration_since(at).unsigned_abs() < RECREATED_REPORTED_FOR;
    let second = |at: jiff::Timestamp| jiff::Timestamp::from_second(at.as_second()).unwrap_or(at);
    // Refusals first: nothing moves on those splits until someone acts.
    let (mut refused, mut findings) = (Vec::new(), Vec::new());
    for split in o.splits.iter() {
        let Some(entry) = o.checkpoint.and_then(|c| c.splits.get(split)) else {
            continue;
        };
        if let Some(w) = &entry.window_exceeded {
            if w.refused {
                refused.push(Finding {
                    reason: reasons::DUPLICATE_WINDOW_EXCEEDED,
                    message: format!(
                        "split {split} not started: its last commit was {}s old, older than the sink stream's duplicate window ({}s), so exactly once cannot hold; raise the sink Stream's duplicateWindow above that, or set spec.checkpoint.mode: AtLeastOnce to resume with duplicates",
                        w.age_seconds, w.window_seconds
                    ),
                });
            } else if recent(w.detected) {
                findings.push(Finding {
                    reason: reasons::DUPLICATE_WINDOW_EXCEEDED,
                    message: format!(
                        "split {split} resumed at {} after its last commit had grown {}s old, older than the sink stream's duplicate window ({}s): outputs emitted after that commit may be in the sink twice",
                        second(w.detected),
                        w.age_seconds,
                        w.window_seconds
                    ),
                });
            }
        }
        if let Some(gap) = entry.retention_gap.as_ref().filter(|g| recent(g.detected)) {
            findings.push(Finding {
                reason: reasons::MESSAGES_EXPIRED,
                message: format!(
                    "split {split}: stream sequences {}..={} were removed by the source stream's retention (maxAge, maxMsgs, maxBytes or a purge) before the split read them (found at {})",
                    gap.first,
                    gap.last,
                    second(gap.detected)
                ),
            });
        }
    }
    refused.append(&mut findings);
    refused.truncate(MAX_STOPPED_IN_MESSAGE);
    refused
}

/// The Degraded finding for splits a consumer limit leaves without a consumer (none when every
/// split has one): how many of `total`, the first few by name, the limit, and what to do.
/// Nothing in it changes while the same splits stay blocked under the same limit.
pub fn splits_blocked(
    blocked: &[String],
    total: usize,
    limit: Option<&super::consumers::Limit>,
    stream: &str,
) -> Option<Finding> {
    if blocked.is_empty() {
        return None;
    }
    let mut names = blocked
        .iter()
        .take(MAX_STOPPED_IN_MESSAGE)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if blocked.len() > MAX_STOPPED_IN_MESSAGE {
        names.push_str(&format!(
            " and {} more",
            blocked.len() - MAX_STOPPED_IN_MESSAGE
        ));
    }
    let why = match limit {
        Some(l) => format!(
            "{} of stream {stream} is {} and {} consumers count against it",
            l.what, l.max, l.used
        ),
        None => format!(
            "the server refuses more consumers on stream {stream} (JetStream error 10026: its max consumers per stream, or the account's)"
        ),
    };
    Some(Finding {
        reason: reasons::SPLITS_BLOCKED,
        message: format!(
            "{} of {total} splits have no consumer and are not read ({names}): {why}; use fewer splits (spec.source.jetstream.filterSubjects, splitBy) or raise the limit",
            blocked.len()
        ),
    })
}

/// The status of a Pipeline that passed validation.
pub fn status(o: &Observed<'_>) -> PipelineStatus {
    let p = o.pipeline;
    let generation = p.metadata.generation;
    let now = Time(o.now);
    let mut st = previous(p);
    let cond = |t: &str, ok: bool, reason: &str, msg: String| {
        condition::new(t, ok, reason, msg, generation, now.clone())
    };

    let dep_status = o
        .deployment
        .and_then(|d| d.status.clone())
        .unwrap_or_default();
    let ready = dep_status.ready_replicas.unwrap_or(0);
    let updated = dep_status.updated_replicas.unwrap_or(0);
    let current = dep_status.replicas.unwrap_or(0);
    let dep_generation = o.deployment.and_then(|d| d.metadata.generation);
    let rolled = o.deployment.is_some()
        && dep_status.observed_generation >= dep_generation
        && updated >= o.replicas
        && ready >= o.replicas
        && current <= o.replicas;

    let phase = if p.spec.suspend {
        PipelinePhase::Suspended
    } else if o.finished {
        PipelinePhase::Succeeded
    } else if o.replicas > 0 && ready >= o.replicas {
        PipelinePhase::Running
    } else {
        PipelinePhase::Pending
    };

    condition::merge(
        &mut st.conditions,
        cond(
            types::SPEC_VALID,
            true,
            reasons::VALID,
            "the spec is valid".into(),
        ),
    );
    condition::set_stalled(&mut st.conditions, None, None, now.clone());
    let ready_cond = match phase {
        PipelinePhase::Suspended => cond(
            types::READY,
            false,
            reasons::SUSPENDED,
            "spec.suspend is true: no workers run and positions are kept; set it to false to resume".into(),
        ),
        PipelinePhase::Succeeded => cond(
            types::READY,
            true,
            reasons::SUCCEEDED,
            "every split reached its bound; the workers were stopped".into(),
        ),
        PipelinePhase::Running => cond(
            types::READY,
            true,
            reasons::RUNNING,
            format!("{ready} of {} workers ready", o.replicas),
        ),
        _ => cond(
            types::READY,
            false,
            reasons::WORKERS_NOT_READY,
            format!(
                "{ready} of {} workers ready; see the worker pods' events and logs if this lasts",
                o.replicas
            ),
        ),
    };
    condition::merge(&mut st.conditions, ready_cond);

    condition::merge(
        &mut st.conditions,
        if rolled {
            cond(
                types::PROGRESSING,
                false,
                reasons::ROLLED_OUT,
                "every worker runs the current configuration".into(),
            )
        } else {
            cond(
                types::PROGRESSING,
                true,
                reasons::ROLLING_OUT,
                format!(
                    "workers are being updated: {updated} updated, {ready} ready, {} asked for",
                    o.replicas
                ),
            )
        },
    );

    // Splits stopped on a failed message (errors.policy Stop) come first: nothing moves on
    // them until someone acts.
    // The first few are spelled out (a condition's message has a size limit); every one is in
    // status.splits[].stopped.
    let stopped: Vec<(&str, &str)> = stopped_splits(o).collect();
    let mut findings: Vec<Finding> = stopped
        .iter()
        .take(MAX_STOPPED_IN_MESSAGE)
        .map(|(split, why)| Finding {
            reason: reasons::SPLIT_STOPPED,
            message: format!(
                "split {split} stopped (spec.errors.policy Stop): {why}; fix the steps or the data and the split resumes at that message (or use policy Dlq or Skip)"
            ),
        })
        .collect();
    if stopped.len() > MAX_STOPPED_IN_MESSAGE {
        findings.push(Finding {
            reason: reasons::SPLIT_STOPPED,
            message: format!(
                "{} more splits stopped (see status.splits)",
                stopped.len() - MAX_STOPPED_IN_MESSAGE
            ),
        });
    }
    // Splits that found their source stream recreated, for an hour after: they started again
    // at the new stream's start, which the user may not have expected.
    let recreated: Vec<Finding> = recreated_splits(o)
        .take(MAX_STOPPED_IN_MESSAGE)
        .map(|(split, r)| Finding {
            reason: reasons::SOURCE_STREAM_RECREATED,
            message: format!(
                "split {split}: the source stream was deleted and created again (found at {}); its sequences start anew, so the split started again at spec.source.jetstream.start on the new stream after position {} on the old one",
                jiff::Timestamp::from_second(r.detected.as_second()).unwrap_or(r.detected),
                r.previous_position
            ),
        })
        .collect();
    findings.extend(recreated);
    findings.extend(checkpoint_findings(o));
    findings.extend(o.verdict.warnings.iter().cloned());
    condition::merge(
        &mut st.conditions,
        match findings.first() {
            Some(first) => cond(types::DEGRADED, true, first.reason, join(&findings)),
            None => cond(
                types::DEGRADED,
                false,
                reasons::AS_EXPECTED,
                "nothing needs attention".into(),
            ),
        },
    );

    let threshold = stale_after(p, o.min_stale);
    let stale = if phase == PipelinePhase::Running {
        // Since the last checkpoint, or since the workers became ready when there is none yet.
        let since = o.checkpoint.and_then(|c| c.time).or_else(|| {
            condition::find(&st.conditions, types::READY)
                .filter(|c| c.status == "True")
                .map(|c| c.last_transition_time.0)
        });
        let age = since.map(|t| o.now.duration_since(t).unsigned_abs());
        if age.is_some_and(|a| a > threshold) {
            cond(
                types::CHECKPOINT_STALE,
                true,
                reasons::NO_RECENT_CHECKPOINT,
                format!(
                    "no checkpoint for more than {}s (3 × spec.checkpoint.interval {}); check the workers' logs and their access to the checkpoint ConfigMap and to NATS",
                    threshold.as_secs(),
                    p.spec.checkpoint.interval
                ),
            )
        } else {
            cond(
                types::CHECKPOINT_STALE,
                false,
                reasons::RECENT,
                format!("a checkpoint was taken within {}s", threshold.as_secs()),
            )
        }
    } else {
        cond(
            types::CHECKPOINT_STALE,
            false,
            reasons::NOT_RUNNING,
            "the pipeline is not running".into(),
        )
    };
    condition::merge(&mut st.conditions, stale);

    st.splits = o
        .splits
        .iter()
        .map(|split| {
            let pos = o.checkpoint.and_then(|c| c.splits.get(split));
            SplitStatus {
                name: split.clone(),
                owner: o.assignment.owners.get(split).cloned(),
                position: pos.map_or(0, |p| p.position),
                lag: o.lags.get(split).copied(),
                finished: pos.is_some_and(|p| p.finished),
                stopped: pos.and_then(|p| p.stopped.clone()),
                stream_recreated: pos
                    .and_then(|p| p.recreated.as_ref())
                    .and_then(|r| jiff::Timestamp::from_second(r.detected.as_second()).ok())
                    .map(Time),
            }
        })
        .collect();
    st.lag = (!o.lags.is_empty()).then(|| o.lags.values().sum());
    st.last_checkpoint = o.checkpoint.and_then(|c| {
        // Whole seconds: a Kubernetes Time keeps no more, so a finer value would never compare
        // equal to the status read back and every resync would write it again.
        c.time
            .filter(|_| c.id > 0)
            .and_then(|t| jiff::Timestamp::from_second(t.as_second()).ok())
            .map(|t| CheckpointStatus {
                id: c.id,
                time: Time(t),
            })
    });
    st.phase = Some(phase);
    st.observed_generation = generation;
    // What a scale client reads as the current replicas: the worker pods there are, as a
    // Deployment's own scale reports them (the pods asked for are spec.parallelism).
    st.replicas = current;
    st.ready_replicas = ready;
    st.selector = Some(selector(p));
    st.assignment_generation = Some(o.assignment.generation);
    // Suspended or finished, the last decision stays for when the pipeline runs again.
    if p.spec.autoscaling.is_none() {
        st.autoscaling = None;
    } else if let Some(decision) = o.autoscaling {
        st.autoscaling = Some(decision.clone());
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::fixtures;
    use jetflow_crds::checkpoint::SplitPosition;
    use k8s_openapi::api::apps::v1::DeploymentStatus;

    fn deployment(ready: i32) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.generation = Some(1);
        d.status = Some(DeploymentStatus {
            observed_generation: Some(1),
            replicas: Some(ready),
            ready_replicas: Some(ready),
            updated_replicas: Some(ready),
            ..Default::default()
        });
        d
    }

    fn observe<'a>(
        p: &'a Pipeline,
        d: &'a Deployment,
        cp: Option<&'a Checkpoint>,
        a: &'a Assignment,
        splits: &'a [String],
        lags: &'a BTreeMap<String, u64>,
        now: jiff::Timestamp,
    ) -> PipelineStatus {
        static NO_FINDINGS: std::sync::LazyLock<Verdict> =
            std::sync::LazyLock::new(Verdict::default);
        status(&Observed {
            pipeline: p,
            verdict: &NO_FINDINGS,
            deployment: Some(d),
            replicas: p.spec.parallelism,
            checkpoint: cp,
            assignment: a,
            splits,
            lags,
            finished: finished(p, splits, cp),
            autoscaling: None,
            min_stale: Duration::from_secs(60),
            now,
        })
    }

    #[test]
    fn running_pipeline_reports_positions_lag_and_owners() {
        let p = fixtures::pipeline();
        let now = jiff::Timestamp::from_second(1_000_000).unwrap();
        let cp = Checkpoint {
            id: 7,
            time: Some(now - jiff::SignedDuration::from_secs(2)),
            splits: BTreeMap::from([(
                "orders.eu".into(),
                SplitPosition {
                    position: 40,
                    ..Default::default()
                },
            )]),
        };
        let a = Assignment {
            generation: 3,
            owners: BTreeMap::from([("orders.eu".into(), "w-0".into())]),
        };
        let splits = vec!["orders.eu".to_owned(), "orders.us".to_owned()];
        let lags = BTreeMap::from([("orders.eu".into(), 5), ("orders.us".into(), 2)]);
        let d = deployment(2);
        let st = observe(&p, &d, Some(&cp), &a, &splits, &lags, now);
        assert_eq!(st.phase, Some(PipelinePhase::Running));
        assert_eq!(st.lag, Some(7));
        assert_eq!(st.splits[0].position, 40);
        assert_eq!(st.splits[0].owner.as_deref(), Some("w-0"));
        assert_eq!(st.last_checkpoint.as_ref().unwrap().id, 7);
        assert!(condition::is_true(&st.conditions, types::READY));
        assert!(!condition::is_true(&st.conditions, types::CHECKPOINT_STALE));
        assert!(!condition::is_true(&st.conditions, types::PROGRESSING));
        assert_eq!(st.assignment_generation, Some(3));
    }

    #[test]
    fn a_refused_resume_and_a_retention_gap_degrade_the_pipeline_and_say_why() {
        let p = fixtures::pipeline();
        let now = jiff::Timestamp::from_second(1_000_000).unwrap();
        let exceeded = |refused| jetflow_crds::checkpoint::WindowExceeded {
            detected: now,
            age_seconds: 300,
            window_seconds: 120,
            refused,
        };
        let cp = Checkpoint {
            id: 7,
            time: Some(now),
            splits: BTreeMap::from([
                (
                    "orders.eu".into(),
                    SplitPosition {
                        position: 5,
                        retention_gap: Some(jetflow_crds::checkpoint::RetentionGap {
                            first: 6,
                            last: 90,
                            detected: now,
                        }),
                        ..Default::default()
                    },
                ),
                (
                    "orders.us".into(),
                    SplitPosition {
                        position: 5,
                        window_exceeded: Some(exceeded(true)),
                        ..Default::default()
                    },
                ),
            ]),
        };
        let (a, lags) = (Assignment::default(), BTreeMap::new());
        let splits = vec!["orders.eu".to_owned(), "orders.us".to_owned()];
        let d = deployment(2);
        let st = observe(&p, &d, Some(&cp), &a, &splits, &lags, now);
        let degraded = condition::find(&st.conditions, types::DEGRADED).unwrap();
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "DuplicateWindowExceeded")
        );
        let m = &degraded.message;
        assert!(
            m.starts_with("split orders.us not started: its last commit was 300s old"),
            "{m}"
        );
        assert!(
            m.contains("split orders.eu: stream sequences 6..=90 were removed"),
            "{m}"
        );
        // A refusal stays until the split runs again; a gap is reported for a while.
        let later = now + RECREATED_REPORTED_FOR;
        let st = observe(&p, &d, Some(&cp), &a, &splits, &lags, later);
        let degraded = condition::find(&st.conditions, types::DEGRADED).unwrap();
        assert!(
            !degraded.message.contains("stream sequences"),
            "{}",
            degraded.message
        );
        assert!(
            degraded.message.contains("not started"),
            "{}",
            degraded.message
        );
        let mut resumed = cp.clone();
        resumed.splits.get_mut("orders.us").unwrap().window_exceeded = Some(exceeded(false));
        let st = observe(&p, &d, Some(&resumed), &a, &splits, &lags, later);
        let degraded = condition::find(&st.conditions, types::DEGRADED).unwrap();
        assert_eq!(degraded.status, "False", "{}", degraded.message);
    }

    #[test]
    fn a_recreated_source_stream_degrades_the_pipeline_for_a_while() {
        let p = fixtures::pipeline();
        let now = jiff::Timestamp::from_second(1_000_000).unwrap();
        let cp = Checkpoint {
            id: 7,
            time: Some(now),
            splits: BTreeMap::from([(
                "orders.eu".into(),
                SplitPosition {
                    position: 5,
                    stream_created: Some(now),
                    recreated: Some(jetflow_crds::checkpoint::StreamRecreated {
                        detected: now,
                        previous_created: None,
                        previous_position: 100,
                    }),
                    ..Default::default()
                },
            )]),
        };
        let (a, lags) = (Assignment::default(), BTreeMap::new());
        let splits = vec!["orders.eu".to_owned()];
        let d = deployment(2);
        let st = observe(&p, &d, Some(&cp), &a, &splits, &lags, now);
        let degraded = condition::find(&st.conditions, types::DEGRADED).unwrap();
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "SourceStreamRecreated")
        );
        assert!(
            degraded.message.contains("after position 100"),
            "{}",
            degraded.message
        );
        assert_eq!(st.splits[0].stream_recreated, Some(Time(now)));
        let later = now + RECREATED_REPORTED_FOR;
        let st = observe(&p, &d, Some(&cp), &a, &splits, &lags, later);
        let degraded = condition::find(&st.conditions, types::DEGRADED).unwrap();
        assert_eq!(degraded.status, "False");
        assert_eq!(st.splits[0].stream_recreated, Some(Time(now)));
    }

    #[test]
    fn a_split_stopped_on_a_failed_message_degrades_the_pipeline_and_says_why() {
        let p = fixtures::pipeline();
        let now = jiff::Timestamp::from_second(1_000_000).unwrap();
        let why = "message 41 failed in step extract: eval: cannot index string with \"b\"";
        let mut cp = Checkpoint {
            id: 7,
            time: Some(now),
            splits: BTreeMap::from([
                (
                    "orders.eu".into(),
                    SplitPosition {
                        position: 40,
                        stopped: Some(why.into()),
                        ..Default::default()
                    },
                ),
                (
                    "orders.us".into(),
                    SplitPosition {
                        position: 12,
                        ..Default::default()
                    },
                ),
            ]),
        };
        let (a, lags) = (Assignment::default(), BTreeMap::new());
        let splits = vec!["orders.eu".to_owned(), "orders.us".to_owned()];
        let d = deployment(2);
        let st = observe(&p, &d, Some(&cp), &a, &splits, &lags, now);
        let degraded = condition::find(&st.conditions, types::DEGRADED).unwrap();
        assert_eq!(degraded.status, "True");
        assert_eq!(degraded.reason, "SplitStopped");
        assert!(
            degraded.message.starts_with("split orders.eu stopped")
                && degraded.message.contains(why),
            "{}",
            degraded.message
        );
        assert_eq!(st.splits[0].stopped.as_deref(), Some(why));
        assert_eq!(st.splits[1].stopped, None);
        // The other splits run on: the pipeline stays Running and Ready.
        assert_eq!(st.phase, Some(PipelinePhase::Running));

        // Many stopped splits: the message names the first few and stays short.
        let mut many = cp.clone();
        let long = "x".repeat(1000);
        let names: Vec<String> = (0..50).map(|i| format!("orders.{i:02}")).collect();
        for name in &names {
            many.splits.insert(
                name.clone(),
                SplitPosition {
                    stopped: Some(format!("message 1 failed in step map[0]: eval: {long}")),
                    ..Default::default()
                },
            );
        }
        let st = observe(&p, &d, Some(&many), &a, &names, &lags, now);
        let degraded = condition::find(&st.conditions, types::DEGRADED).unwrap();
        assert_eq!(degraded.reason, "SplitStopped");
        assert!(
            degraded.message.len() < 8 * 1024,
            "{}",
            degraded.message.len()
        );
        assert!(
            degraded
                .message
                .ends_with("47 more splits stopped (see status.splits)")
        );
        assert!(st.splits.iter().all(|s| s.stopped.is_some()));

        // Fixed: the split's next commit clears the record, and the condition with it.
        cp.splits.get_mut("orders.eu").unwrap().stopped = None;
        let st = observe(&p, &d, Some(&cp), &a, &splits, &lags, now);
        let degraded = condition::find(&st.conditions, types::DEGRADED).unwrap();
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("False", "AsExpected")
        );
        assert_eq!(st.splits[0].stopped, None);
    }

    #[test]
    fn an_old_checkpoint_is_stale_and_the_status_is_stable() {
        let mut p = fixtures::pipeline();
        let now = jiff::Timestamp::from_second(1_000_000).unwrap();
        let cp = Checkpoint {
            id: 1,
            time: Some(now - jiff::SignedDuration::from_secs(3600)),
            splits: BTreeMap::new(),
        };
        let (a, splits, lags) = (Assignment::default(), vec![], BTreeMap::new());
        let d = deployment(2);
        let first = observe(&p, &d, Some(&cp), &a, &splits, &lags, now);
        let stale = condition::find(&first.conditions, types::CHECKPOINT_STALE).unwrap();
        assert_eq!(stale.status, "True");
        assert_eq!(stale.reason, "NoRecentCheckpoint");
        p.status = Some(first.clone());
        let later = now + jiff::SignedDuration::from_secs(30);
        let second = observe(&p, &d, Some(&cp), &a, &splits, &lags, later);
        assert_eq!(
            first, second,
            "a resync with nothing new computes the same status"
        );
    }

    /// The selector of the worker Deployment the operator builds, written as a label
    /// selector string.
    fn deployment_selector(p: &Pipeline) -> String {
        let built = crate::pipeline::build::deployment::deployment(&fixtures::inputs(p), "h");
        let labels = built.spec.unwrap().selector.match_labels.unwrap();
        labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    #[test]
    fn status_carries_the_worker_deployments_selector_for_the_scale_subresource() {
        let p = fixtures::pipeline();
        let now = jiff::Timestamp::from_second(1_000_000).unwrap();
        let (a, splits, lags) = (Assignment::default(), vec![], BTreeMap::new());
        let st = observe(&p, &deployment(2), None, &a, &splits, &lags, now);
        assert_eq!(
            st.selector.as_deref(),
            Some(deployment_selector(&p).as_str())
        );
        assert_eq!(
            st.selector.as_deref(),
            Some("app.kubernetes.io/name=jetflow-worker,jetflow.io/pipeline=orders-copy")
        );

        // An invalid pipeline answers a scale read too, with the same selector.
        let verdict = Verdict {
            errors: vec![Finding {
                reason: "InvalidSpec",
                message: "spec.source: set exactly one of core and jetstream".into(),
            }],
            ..Default::default()
        };
        let st = invalid(&p, &verdict, now);
        assert_eq!(
            st.selector.as_deref(),
            Some(deployment_selector(&p).as_str())
        );

        // The status as JSON, where the scale subresource reads it (`.status.selector`).
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["selector"], deployment_selector(&p).as_str());
    }

    #[test]
    fn status_replicas_counts_the_worker_pods_there_are_as_a_scale_client_expects() {
        let p = fixtures::pipeline();
        assert_eq!(p.spec.parallelism, 2);
        let now = jiff::Timestamp::from_second(1_000_000).unwrap();
        let (a, splits, lags) = (Assignment::default(), vec![], BTreeMap::new());

        // Scaled up to 2 from 1: one pod so far, not the two asked for.
        let mut d = deployment(1);
        d.metadata.generation = Some(2);
        let st = observe(&p, &d, None, &a, &splits, &lags, now);
        assert_eq!((st.replicas, st.ready_replicas), (1, 1));
        assert_eq!(st.phase, Some(PipelinePhase::Pending));

        // Scaled down to 2 from 3: the third pod counts until it is gone.
        let st = observe(&p, &deployment(3), None, &a, &splits, &lags, now);
        assert_eq!(st.replicas, 3);

        // Settled.
        let st = observe(&p, &deployment(2), None, &a, &splits, &lags, now);
        assert_eq!((st.replicas, st.ready_replicas), (2, 2));
        assert_eq!(st.phase, Some(PipelinePhase::Running));
    }

    #[test]
    fn bounded_run_succeeds_when_every_split_finished() {
        let mut p = fixtures::pipeline();
        p.spec.source.bound = Some(jetflow_crds::pipeline::Bound {
            stream_end: Some(true),
            ..Default::default()
        });
        let splits = vec!["a".to_owned()];
        let done = Checkpoint {
            id: 2,
            time: None,
            splits: BTreeMap::from([(
                "a".into(),
                SplitPosition {
                    position: 9,
                    finished: true,
                    ..Default::default()
                },
            )]),
        };
        assert!(finished(&p, &splits, Some(&done)));
        assert!(!finished(&p, &["a".into(), "b".into()], Some(&done)));

        // Every split finished: the workers are scaled to 0 and the phase is Succeeded, with
        // the Deployment already down to no pod.
        assert_eq!(replicas(&p, true, None), 0);
        let (a, lags) = (Assignment::default(), BTreeMap::new());
        let now = jiff::Timestamp::from_second(1_000_000).unwrap();
        let st = status(&Observed {
            pipeline: &p,
            verdict: &Verdict::default(),
            deployment: Some(&deployment(0)),
            replicas: replicas(&p, true, None),
            checkpoint: Some(&done),
            assignment: &a,
            splits: &splits,
            lags: &lags,
            finished: true,
            autoscaling: None,
            min_stale: Duration::from_secs(60),
            now,
        });
        assert_eq!(st.phase, Some(PipelinePhase::Succeeded));
        assert_eq!(st.replicas, 0);
        let ready = condition::find(&st.conditions, types::READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Succeeded")
        );
        assert!(st.splits[0].finished);

        // Not every split finished yet: the workers run (and wait for their assignment).
        let (two, parallelism) = (["a".to_owned(), "b".to_owned()], p.spec.parallelism);
        assert!(!finished(&p, &two, Some(&done)));
        assert_eq!(replicas(&p, false, None), parallelism);
        assert!(parallelism > 0);
        p.spec.source.bound = None;
        assert!(!finished(&p, &splits, Some(&done)));
    }
}
