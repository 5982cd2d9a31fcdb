//! Which splits this worker runs, and how the set changes while it runs.
//!
//! ```text
//!   discovery task ──Change::Splits──┐
//!   (splitBy: Subject)               ├──▶ Membership ──▶ runner: start_split / release
//!   assignment source ─Change::Assignment┘   owned = candidates ∩ assigned to this worker
//!   (--assignment-file)                              − splits finished (bounded runs)
//! ```
//!
//! The candidates are the source's splits (the filters, or the subjects found in the stream);
//! the assignment, when there is one, says which of them this worker owns; without one the
//! worker owns them all. On every change the runner reconciles:
//!
//! - a split it runs but no longer owns (given to another worker, or whose subject left the
//!   stream) is drained, its final position committed and acknowledged, and a release record
//!   written, all before it is forgotten: the record is the split's position committed under
//!   the new assignment generation, which tells the new owner that the old one has stopped;
//! - a split it gains starts at its committed position, read from the store again, but only
//!   once the worker that held it last released it: its checkpoint entry is a release record
//!   (`released`) written by that worker, at whatever generation. The last holder comes from
//!   every assignment this worker has seen, not only the one before the current: a later
//!   generation that keeps the split with this worker while it waits changes nothing, and a
//!   release by an earlier owner does not count. Without any other holder in that history
//!   (the first assignment this worker sees), the worker that committed the split last is the
//!   one to wait for. A previous owner that never answers (it was killed, or is frozen) is
//!   given up on after the handover timeout, counted from when the split was given to this
//!   worker, and from then on the generation check of the checkpoint refuses whatever that
//!   stale owner might still try to commit. A worker that stops (SIGTERM) marks every split it
//!   ran `released` in its final checkpoint, which releases them whatever generation it knew;
//!   the new owner claims such a split (one write clearing the mark) as it starts it.
//!
//! A change that cannot be applied because the checkpoint store failed is tried again with
//! back-off (0.5 s doubling to 30 s) until it is applied, not only when the next change comes.
//!
//! A bounded run ends when every owned split is finished; the outcome carries a summary. A
//! worker pod's run ([`Membership::stay_up`]) does not end there: it owns nothing until the
//! operator's assignment names it, so it waits for splits (ready meanwhile), runs them to their
//! bound, and then stays up, idle, until SIGTERM, when the operator scales the workers to 0
//! once every split of the pipeline is finished.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use jetflow_crds::assignment::Assignment;
use jetflow_crds::checkpoint::SplitPosition;
use jetflow_crds::split::{Split, consumer_name};
use tokio::sync::mpsc;

use super::{RunError, Runner};
use crate::checkpoint::Committer;
use crate::sink::Sink;

/// How often a worker waiting for a split's release reads the checkpoint again, and how often
/// a bounded run looks for splits that reached their bound.
const POLL: Duration = Duration::from_millis(200);

/// The first wait before a failed split set change is tried again; it doubles on each failure
/// up to [`RETRY_MAX`], and starts over once a change is applied.
const RETRY_FIRST: Duration = Duration::from_millis(500);
/// The longest wait between two attempts at a failed split set change.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// A change of the splits a worker may run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The source's splits now (all of them, not a difference).
    Splits(Vec<Split>),
    /// A new assignment of splits to workers.
    Assignment(Assignment),
}

/// One split's result at the end of a bounded run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitSummary {
    /// The split.
    pub split: String,
    /// Messages this run processed.
    pub messages: u64,
    /// The final committed position.
    pub position: u64,
    /// Whether the split reached its bound.
    pub finished: bool,
}

/// The split set of a run: candidates, assignment, splits waiting for their release.
pub struct Membership {
    candidates: BTreeMap<String, Split>,
    assignment: Option<Assignment>,
    /// Per split, the worker the assignments seen so far gave it to last.
    holders: BTreeMap<String, String>,
    /// Per split, the worker that held it before its current holder: the one whose release
    /// record a gaining worker waits for, however many assignments came in between.
    handed_from: BTreeMap<String, String>,
    changes: Option<mpsc::Receiver<Change>>,
    waiting: BTreeMap<String, Instant>,
    handover_timeout: Duration,
    started: bool,
    /// A bounded run stays up once its splits finished (a pod following the operator's
    /// assignment), instead of ending.
    stay_up: bool,
    /// Whether "every owned split finished" was logged since the last change.
    idle_logged: bool,
    /// A split set change that failed (the checkpoint store could not be read or written):
    /// when to try again, and the back-off that led there. Cleared once a reconcile succeeds.
    retry: Option<(Instant, Duration)>,
}

/// What the run loop woke up for.
pub(super) enum Wake {
    Change(Change),
    Poll,
    /// Time to try a failed split set change again.
    Retry,
}

impl Membership {
    /// A fixed set of splits, all owned.
    pub fn fixed(splits: Vec<Split>) -> Self {
        Self::new(splits, None, None, Duration::ZERO)
    }

    /// Candidates `splits`, the `assignment` in force (none: this worker owns every split),
    /// later changes from `changes`, and how long a gained split waits for its previous owner
    /// to release it.
    pub fn new(
        splits: Vec<Split>,
        assignment: Option<Assignment>,
        changes: Option<mpsc::Receiver<Change>>,
        handover_timeout: Duration,
    ) -> Self {
        let holders = assignment
            .as_ref()
            .map(|a| a.owners.clone())
            .unwrap_or_default();
        Self {
            candidates: splits.into_iter().map(|s| (s.name.clone(), s)).collect(),
            assignment,
            holders,
            handed_from: BTreeMap::new(),
            changes,
            waiting: BTreeMap::new(),
            handover_timeout,
            started: false,
            stay_up: false,
            idle_logged: false,
            retry: None,
        }
    }

    /// Records that the latest split set change was not applied, and schedules another attempt
    /// with back-off. Returns the wait until that attempt.
    pub(super) fn failed(&mut self) -> Duration {
        let backoff = self
            .retry
            .map_or(RETRY_FIRST, |(_, last)| (last * 2).min(RETRY_MAX));
        self.retry = Some((Instant::now() + backoff, backoff));
        backoff
    }

    /// Makes a bounded run stay up, idle, once every split it owns has finished, until it is
    /// stopped (SIGTERM), instead of ending: what a worker pod does. It owns nothing until the
    /// operator's assignment names it, and the operator scales the Deployment to 0 once every
    /// split of the pipeline finished; a pod that exited would only be started again.
    pub fn stay_up(mut self) -> Self {
        self.stay_up = true;
        self
    }

    /// Whether the worker follows an assignment (and so releases its splits when it stops).
    pub(super) fn follows_assignment(&self) -> bool {
        self.assignment.is_some()
    }

    fn owns(&self, worker: &str, split: &str) -> bool {
        self.assignment
            .as_ref()
            .is_none_or(|a| a.owners.get(split).is_some_and(|owner| owner == worker))
    }

    /// The splits this worker should run now, given what the checkpoint says is finished.
    fn desired(&self, worker: &str, finished: &BTreeSet<&str>) -> BTreeMap<String, Split> {
        self.candidates
            .iter()
            .filter(|(name, _)| self.owns(worker, name) && !finished.contains(name.as_str()))
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect()
    }

    /// Whether `split`, gained under the current assignment, may start: the worker that held
    /// it last released it, there was none, or the handover timed out.
    fn released(&self, worker: &str, split: &str, entry: Option<&SplitPosition>) -> bool {
        let last_holder = match self.handed_from.get(split) {
            Some(holder) => Some(holder.as_str()),
            // No other holder in the assignments seen: whoever committed last may still run it,
            // unless its entry is a release.
            None => match entry {
                Some(e) if e.released => None,
                Some(e) => e.owner.as_deref(),
                None => None,
            },
        };
        let Some(last_holder) = last_holder.filter(|holder| *holder != worker) else {
            return true;
        };
        if entry.is_some_and(|e| e.released && e.owner.as_deref() == Some(last_holder)) {
            return true;
        }
        self.waiting
            .get(split)
            .is_some_and(|since| since.elapsed() >= self.handover_timeout)
    }

    pub(super) async fn wake(&mut self, polling: bool) -> Wake {
        let poll = async {
            if polling || !self.waiting.is_empty() {
                tokio::time::sleep(POLL).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let changes = async {
            match self.changes.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let retry = async {
            match self.retry {
                Some((at, _)) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = retry => Wake::Retry,
            change = changes => match change {
                Some(change) => Wake::Change(change),
                None => {
                    // The sources of changes ended: keep the last state.
                    self.changes = None;
                    Wake::Poll
                }
            },
            _ = poll => Wake::Poll,
        }
    }

    fn apply(&mut self, change: Change) {
        match change {
            Change::Splits(splits) => {
                self.candidates = splits.into_iter().map(|s| (s.name.clone(), s)).collect();
            }
            Change::Assignment(assignment) => {
                if let Some(current) = &self.assignment
                    && current.generation >= assignment.generation
                {
                    if *current != assignment {
                        tracing::warn!(
                            generation = assignment.generation,
                            "ignoring an assignment that is not newer than the one in force"
                        );
                    }
                    return;
                }
                for (split, owner) in &assignment.owners {
                    match self.holders.insert(split.clone(), owner.clone()) {
                        Some(before) if before != *owner => {
                            self.handed_from.insert(split.clone(), before);
                        }
                        _ => {}
                    }
                }
                self.assignment = Some(assignment);
            }
        }
    }
}

impl<S: Sink> Runner<S> {
    /// Applies a change to the split set and reconciles.
    pub(super) async fn change_membership(
        &mut self,
        membership: &mut Membership,
        change: Change,
    ) -> Result<(), RunError> {
        if let Change::Assignment(a) = &change {
            tracing::info!(
                generation = a.generation,
                owned = a.splits_of(&self.worker_id).count(),
                "assignment changed"
            );
        }
        membership.apply(change);
        self.reconcile(membership).await
    }

    /// Starts the splits this worker should run and releases those it should not.
    pub(super) async fn reconcile(&mut self, membership: &mut Membership) -> Result<(), RunError> {
        // Splits leaving are committed under the generation they were run under; the new one
        // is taken only once they are released.
        let generation = membership
            .assignment
            .as_ref()
            .map_or(self.generation, |a| a.generation);
        let initial = !membership.started;
        membership.started = true;
        // Positions may have moved under other owners: read them again (not needed for the
        // first start, the committer was just opened).
        if !initial {
            self.committer = Committer::open(self.committer.store().clone()).await?;
        }
        let checkpoint = self.committer.checkpoint().clone();
        let finished: BTreeSet<&str> = checkpoint
            .splits
            .iter()
            .filter(|(_, p)| p.finished)
            .map(|(n, _)| n.as_str())
            .collect();
        let desired = membership.desired(&self.worker_id, &finished);

        let leaving: Vec<String> = self
            .splits
            .keys()
            .filter(|name| !desired.contains_key(*name))
            .cloned()
            .collect();
        for name in leaving {
            let released = self.release_split(&name, generation).await;
            // A split that left the source (its subject holds no messages any more), not just
            // this worker: its consumer goes too. Its position stays in the checkpoint, so a
            // subject that comes back resumes after it, through a new consumer.
            if released && !membership.candidates.contains_key(&name) {
                self.remove_consumer(&name).await;
            }
        }
        self.set_generation(generation);
        membership
            .waiting
            .retain(|name, _| desired.contains_key(name));

        // A split stopped because another owner moved it on waits for a new assignment.
        self.taken.retain(|_, at| *at >= generation);
        let mut started = 0;
        let mut claims = BTreeMap::new();
        let mut starting = Vec::new();
        for (name, split) in desired {
            if self.splits.contains_key(&name)
                || self.taken.contains_key(&name)
                || self.held.contains_key(&name)
            {
                continue;
            }
            let entry = self.committer.checkpoint().splits.get(&name);
            if initial && membership.assignment.is_none()
                || membership.released(&self.worker_id, &name, entry)
            {
                if membership.waiting.remove(&name).is_some() {
                    tracing::info!(split = %name, "previous owner released the split (or timed out)");
                }
                // A released split is claimed: its release must not let a later owner start
                // while this worker still runs it.
                if let Some(entry) = entry.filter(|e| e.released) {
                    claims.insert(
                        name.clone(),
                        SplitPosition {
                            owner: Some(self.worker_id.clone()),
                            generation,
                            released: false,
                            ..entry.clone()
                        },
                    );
                }
                starting.push(split);
            } else {
                membership.waiting.entry(name.clone()).or_insert_with(|| {
                    tracing::info!(split = %name, "waiting for the previous owner to release the split");
                    Instant::now()
                });
            }
        }
        // A `streamEnd` run fixes each split's end in the checkpoint before the split reads
        // anything: a restart ends where the run was meant to end.
        self.record_ends(&starting, generation).await?;
        for split in starting {
            if self.refuse_resume(&split, generation).await.is_some() {
                continue;
            }
            self.start_split(split);
            started += 1;
        }
        if started > 0 && !initial {
            tracing::info!(started, running = self.splits.len(), "splits started");
        }
        if membership.retry.take().is_some() {
            tracing::info!("split set change applied after a retry");
        }
        // Claimed as started, with what the start recorded (the end of a bounded run).
        claims.retain(|name, _| self.splits.contains_key(name));
        for (name, claim) in &mut claims {
            if let Some(entry) = self.committer.checkpoint().splits.get(name) {
                claim.end = entry.end;
                claim.window_exceeded = entry.window_exceeded.clone();
            }
        }
        if !claims.is_empty()
            && let Err(e) = self.committer.commit(&claims).await
        {
            tracing::warn!(error = %e, splits = claims.len(), "released splits not claimed");
        }
        Ok(())
    }

    /// Records the end of a `streamEnd` run in the checkpoint for the splits of `starting`
    /// that start for the first time (their entry has none): the stream's last sequence now.
    async fn record_ends(&mut self, starting: &[Split], generation: u64) -> Result<(), RunError> {
        let checkpoint = self.committer.checkpoint();
        let new: Vec<&Split> = starting
            .iter()
            .filter(|s| {
                checkpoint
                    .splits
                    .get(&s.name)
                    .is_none_or(|e| e.end.is_none())
            })
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let Some(end) = self.readers.fixed_end().await else {
            return Ok(());
        };
        let updates: BTreeMap<String, SplitPosition> = new
            .iter()
            .map(|s| {
                let entry = checkpoint.splits.get(&s.name).cloned().unwrap_or_default();
                let record = SplitPosition {
                    owner: Some(self.worker_id.clone()),
                    generation,
                    end: Some(end),
                    ..entry
                };
                (s.name.clone(), record)
            })
            .collect();
        for refusal in self.committer.commit_partly(&updates).await? {
            // Moved on by a newer owner: its running commits are refused too.
            tracing::warn!(error = %refusal, "end of the bounded run not recorded");
        }
        tracing::info!(
            end,
            splits = updates.len(),
            "end of the bounded run recorded in the checkpoint"
        );
        Ok(())
    }

    /// Stops a split this worker no longer owns: drained, committed and acknowledged under the
    /// generation it ran under, then a release record under `generation` written, before it is
    /// forgotten. Failures are logged, not returned: the split is stopped either way, and a new
    /// owner that sees no release takes the split after its handover timeout. Returns whether
    /// its final position was committed.
    async fn release_split(&mut self, name: &str, generation: u64) -> bool {
        tracing::info!(split = %name, generation, "releasing split");
        if let Err(e) = self.stop_split(name).await {
            tracing::warn!(split = %name, error = %e, "final position of a released split not committed");
            return false;
        }
        let entry = self.committer.checkpoint().splits.get(name).cloned();
        tracing::info!(
            split = %name,
            position = entry.as_ref().map_or(0, |e| e.position),
            "split stopped, committed and acknowledged; writing its release record"
        );
        if entry.as_ref().is_none_or(|e| e.generation < generation) {
            let record = SplitPosition {
                position: entry.as_ref().map_or(0, |e| e.position),
                owner: Some(self.worker_id.clone()),
                generation,
                finished: entry.as_ref().is_some_and(|e| e.finished),
                stopped: entry.as_ref().and_then(|e| e.stopped.clone()),
                released: true,
                stream_created: entry.as_ref().and_then(|e| e.stream_created),
                recreated: entry.as_ref().and_then(|e| e.recreated.clone()),
                end: entry.as_ref().and_then(|e| e.end),
                retention_gap: entry.as_ref().and_then(|e| e.retention_gap.clone()),
                drained: entry.as_ref().is_some_and(|e| e.drained),
                window_exceeded: entry.as_ref().and_then(|e| e.window_exceeded.clone()),
            };
            let updates = BTreeMap::from([(name.to_owned(), record)]);
            if let Err(e) = self.committer.commit(&updates).await {
                // A newer owner already moved it on: nothing left to release.
                tracing::warn!(split = %name, error = %e, "release record not written");
            }
        }
        true
    }

    /// Deletes the consumer of a retired split; a failure is logged (the consumer stays, and
    /// the operator removes it in a cluster).
    async fn remove_consumer(&self, name: &str) {
        let consumer = consumer_name(&self.namespace, &self.name, name);
        match self.readers.remove_consumer(name, &consumer).await {
            Ok(true) => tracing::info!(split = %name, consumer, "split retired; consumer deleted"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(split = %name, error = %e, "consumer of a retired split not deleted")
            }
        }
    }

    /// Whether a bounded run is over: every split this worker owns has finished, and the run
    /// does not stay up for more (see [`Membership::stay_up`]).
    pub(super) fn bounded_done(&self, membership: &mut Membership) -> bool {
        if !self.readers.is_bounded()
            || !self.splits.is_empty()
            || !membership.waiting.is_empty()
            || membership.retry.is_some()
        {
            membership.idle_logged = false;
            return false;
        }
        let finished: BTreeSet<&str> = self
            .committer
            .checkpoint()
            .splits
            .iter()
            .filter(|(_, p)| p.finished)
            .map(|(n, _)| n.as_str())
            .collect();
        let done = membership.desired(&self.worker_id, &finished).is_empty();
        if done && membership.stay_up {
            if !membership.idle_logged {
                membership.idle_logged = true;
                tracing::info!(
                    finished = finished.len(),
                    "every split this worker owns has reached its bound (or it owns none yet); staying up for the assignment until stopped"
                );
            }
            return false;
        }
        done
    }

    /// Between checkpoints: commits splits that reached their bound, and starts gained splits
    /// whose previous owner has released them.
    pub(super) async fn poll(&mut self, membership: &mut Membership) -> Result<(), RunError> {
        if self.splits.values().any(|h| h.task.is_finished()) {
            self.checkpoint().await?;
        }
        if !membership.waiting.is_empty() {
            self.reconcile(membership).await?;
        }
        Ok(())
    }

    /// Per owned split: messages processed in this run and the committed position.
    pub(super) fn summary(&self, membership: &Membership) -> Vec<SplitSummary> {
        let checkpoint = self.committer.checkpoint();
        membership
            .candidates
            .keys()
            .filter(|name| membership.owns(&self.worker_id, name))
            .map(|name| {
                let entry = checkpoint.splits.get(name);
                SplitSummary {
                    split: name.clone(),
                    messages: self.metrics.split(name).messages_in.get(),
                    position: entry.map_or(0, |e| e.position),
                    finished: entry.is_some_and(|e| e.finished),
                }
            })
            .collect()
    }

    /// Waits (at most `timeout`) until every Core split's subscription is registered, so that
    /// readiness means that what is published now is received; for a bounded source, until
    /// every split looked its end up, so that what is stored from now on is beyond a
    /// `streamEnd` bound.
    pub(super) async fn wait_subscribed(&self, timeout: Duration) {
        if let Some(bound) = self.readers.bound() {
            let n = self.splits.len();
            if tokio::time::timeout(timeout, bound.wait_fixed(n))
                .await
                .is_err()
            {
                tracing::warn!(splits = n, "not every split looked its bound up in time");
            }
        }
        if let Some(core) = self.readers.core() {
            let n = self.splits.len();
            if tokio::time::timeout(timeout, core.subscribed.wait_for(n))
                .await
                .is_err()
            {
                tracing::warn!(splits = n, "not every subscription registered in time");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(name: &str) -> Split {
        Split {
            name: name.into(),
            subject: name.into(),
        }
    }

    fn assignment(generation: u64, owners: &[(&str, &str)]) -> Assignment {
        Assignment {
            generation,
            owners: owners
                .iter()
                .map(|(s, w)| ((*s).to_owned(), (*w).to_owned()))
                .collect(),
        }
    }

    fn entry(owner: &str, generation: u64) -> SplitPosition {
        SplitPosition {
            position: 10,
            owner: Some(owner.into()),
            generation,
            ..Default::default()
        }
    }

    #[test]
    fn a_worker_runs_only_what_it_owns_and_not_what_finished() {
        let m = Membership::new(
            vec![split("a"), split("b"), split("c")],
            Some(assignment(1, &[("a", "w1"), ("b", "w2"), ("c", "w1")])),
            None,
            Duration::from_secs(1),
        );
        let finished = BTreeSet::from(["c"]);
        assert_eq!(m.desired("w1", &finished).keys().collect::<Vec<_>>(), ["a"]);
        let all = Membership::fixed(vec![split("a"), split("b")]);
        assert_eq!(all.desired("w9", &BTreeSet::new()).len(), 2);
    }

    #[test]
    fn a_gained_split_waits_for_its_previous_owner() {
        let mut m = Membership::new(
            vec![split("a")],
            Some(assignment(1, &[("a", "w1")])),
            None,
            Duration::from_secs(3600),
        );
        m.apply(Change::Assignment(assignment(2, &[("a", "w2")])));
        // w1 committed under generation 1 and has not released it yet.
        assert!(!m.released("w2", "a", Some(&entry("w1", 1))));
        // w1's release record.
        assert!(m.released("w2", "a", Some(&release("w1", 2))));
        // A split nobody owned before starts at once.
        m.apply(Change::Assignment(assignment(
            3,
            &[("a", "w2"), ("b", "w2")],
        )));
        assert!(m.released("w2", "b", None));
    }

    fn release(owner: &str, generation: u64) -> SplitPosition {
        SplitPosition {
            released: true,
            ..entry(owner, generation)
        }
    }

    #[test]
    fn a_later_assignment_keeping_the_split_still_waits_for_the_owner_before() {
        let mut m = Membership::new(
            vec![split("a"), split("b")],
            Some(assignment(1, &[("a", "w1"), ("b", "w3")])),
            None,
            Duration::from_secs(3600),
        );
        m.apply(Change::Assignment(assignment(
            2,
            &[("a", "w2"), ("b", "w3")],
        )));
        m.apply(Change::Assignment(assignment(
            3,
            &[("a", "w2"), ("b", "w2")],
        )));
        // Generation 3 left `a` with w2: w1 still has to release it.
        assert!(!m.released("w2", "a", Some(&entry("w1", 1))));
        assert!(m.released("w2", "a", Some(&release("w1", 3))));
        // `b` came from w3.
        assert!(!m.released("w2", "b", Some(&entry("w3", 2))));
    }

    #[test]
    fn a_release_by_an_earlier_owner_does_not_release_the_split() {
        let mut m = Membership::new(
            vec![split("a")],
            Some(assignment(1, &[("a", "w1")])),
            None,
            Duration::from_secs(3600),
        );
        m.apply(Change::Assignment(assignment(2, &[("a", "w2")])));
        m.apply(Change::Assignment(assignment(3, &[("a", "w3")])));
        // w1 released it to w2 (whose claim was not written): w2 may be running it.
        assert!(!m.released("w3", "a", Some(&release("w1", 2))));
        assert!(m.released("w3", "a", Some(&release("w2", 3))));
    }

    #[test]
    fn a_split_its_stopped_owner_released_starts_at_once() {
        let mut m = Membership::new(
            vec![split("a")],
            Some(assignment(1, &[("a", "w1")])),
            None,
            Duration::from_secs(3600),
        );
        m.apply(Change::Assignment(assignment(2, &[("a", "w2")])));
        // w1 was stopped (SIGTERM) before it saw generation 2: its final checkpoint, under
        // generation 1, marks the split released.
        let released = SplitPosition {
            released: true,
            ..entry("w1", 1)
        };
        assert!(m.released("w2", "a", Some(&released)));
    }

    #[test]
    fn a_silent_previous_owner_is_given_up_on_after_the_timeout() {
        let mut m = Membership::new(
            vec![split("a")],
            Some(assignment(1, &[("a", "w1")])),
            None,
            Duration::ZERO,
        );
        m.apply(Change::Assignment(assignment(2, &[("a", "w2")])));
        assert!(!m.released("w2", "a", Some(&entry("w1", 1))));
        m.waiting.insert("a".into(), Instant::now());
        assert!(m.released("w2", "a", Some(&entry("w1", 1))));
    }

    #[test]
    fn an_older_assignment_is_ignored() {
        let mut m = Membership::new(
            vec![split("a")],
            Some(assignment(5, &[("a", "w1")])),
            None,
            Duration::ZERO,
        );
        m.apply(Change::Assignment(assignment(4, &[("a", "w2")])));
        assert!(m.owns("w1", "a"));
    }
}
