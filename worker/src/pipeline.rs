//! Running a pipeline: a set of splits, each one straight line from source to sink, and the
//! checkpoints that commit their positions.
//!
//! ```text
//!   JetStream stream
//!     │  one durable pull consumer per split (AckPolicy::All)
//!     ▼
//!   split reader task ── bounded channel ──▶ split task ──────────────────────▶ sink
//!   (pull batches, drop redeliveries)        steps, error policy,       (publish, acks
//!                                            window of unconfirmed       awaited in order)
//!                                            outputs → position
//!                                                    │ snapshot (position, ack token)
//!                                                    ▼
//!                                    checkpoint (every interval, in the runner):
//!                                    barrier → positions confirmed by the sink
//!                                    → compare-and-swap write to the store
//!                                    → cumulative ack of the source at each position
//! ```
//!
//! The [`Runner`] owns the split set and can grow or shrink it at run time
//! ([`Runner::start_split`], [`Runner::stop_split`]): a split that leaves is drained, its final
//! position committed and acknowledged before it is forgotten; a split that arrives starts at
//! its committed position. [`Membership`] decides the set ([`Runner::run_with`]): the source's
//! splits (its filters, or the subjects found in the stream), those the assignment gives this
//! worker, less those that reached their bound. The source is JetStream (bounded or not) or
//! NATS Core, the sink JetStream or NATS Core; see [`crate::source::readers`] and
//! [`crate::sink::core`]. Every checkpoint write carries the worker's id and its assignment
//! generation ([`Runner::set_generation`]).
//!
//! A checkpoint waits for each split's snapshot at most the checkpoint interval (at least 2 s):
//! a split that does not answer (stuck in a step, or behind its sink) is left out, its
//! committed position kept, and the others are committed. A split whose position the
//! checkpoint refuses (another owner moved it on) is stopped here, and the others are still
//! committed. When checkpoints keep failing on the store, the runner pauses every split's
//! reading until one is committed again, so that the worker never runs far ahead of its last
//! commit; a NATS Core source is not paused (the server keeps nothing for it: a paused split
//! would only make the client drop what arrives). Before a split resumes, [`window`] checks
//! that the sink's duplicate window still covers a replay.
//!
//! Shutdown ([`Runner::run`] when its token fires): stop pulling, let each split confirm what
//! it has in flight, take a final checkpoint, acknowledge, return. A worker following an
//! assignment marks every split it ran released in that final checkpoint, so that the next
//! owner (a rolling update moves every split of a stopped pod) starts at once instead of
//! waiting out its handover timeout. A split that stopped on a
//! failed message (error policy `Stop`) keeps its last good position; when every split has
//! stopped the run ends with [`RunOutcome::Stopped`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::future::join_all;
use jetflow_crds::Pipeline;
use jetflow_crds::checkpoint::{MergeError, SplitPosition, WindowExceeded};
use jetflow_crds::pipeline::DeliveryMode;
use jetflow_crds::split::{Split, consumer_name};
use jetflow_nats::source_header::Prefix;
use jetflow_steps::Steps;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::budget::{Budget, Member};
use crate::checkpoint::{CheckpointStore, Committer, StoreError};
use crate::http::Health;
use crate::metrics::Metrics;
use crate::sink::core::{CoreSink, PipelineSink};
use crate::sink::dead_letter::DeadLetters;
use crate::sink::headers::MessageIds;
use crate::sink::jetstream::JetStreamSink;
use crate::sink::{Sink, SubjectTemplate, TemplateError};
use crate::source::GapSlot;
use crate::source::SourceAcker;
use crate::source::bounded::{BoundError, BoundSpec};
use crate::source::core::CoreSource;
use crate::source::jetstream::ConsumerSettings;
use crate::source::readers::{Readers, Resume};
use crate::split::{Control, Shared, SplitError, SplitSnapshot, SplitTask};

mod control;
pub mod read;
mod window;

/// How long the steps may run on one message by default (`--step-timeout`).
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(1);

/// A checkpoint waits for each split's snapshot at most the checkpoint interval, and never less
/// than this.
const SNAPSHOT_TIMEOUT_MIN: Duration = Duration::from_secs(2);

/// A split that keeps missing its snapshots is logged at most this often.
const LATE_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// After this many checkpoints in a row failed on the store, the splits stop taking messages
/// until one is committed.
const PAUSE_AFTER_FAILURES: u32 = 3;

/// Messages a split's reader may have handed over before its split task takes them (and at most
/// the split's share of the worker's read-ahead bytes, [`crate::budget`]): the channel only
/// decouples the two (the pulls and the window hold what is in flight).
pub(crate) const READ_AHEAD: usize = 256;

pub use control::{Change, Membership, SplitSummary};

/// Why a pipeline could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The pipeline uses something this worker does not run.
    #[error("{0}")]
    Unsupported(&'static str),
    /// A step does not compile.
    #[error(transparent)]
    Steps(#[from] jetflow_steps::CompileError),
    /// The sink's subject template is invalid.
    #[error("spec.sink.jetstream.subject: {0}")]
    Template(#[from] TemplateError),
    /// The source's bound is invalid.
    #[error(transparent)]
    Bound(#[from] BoundError),
    /// The source stream's retention is not one jetflow reads.
    #[error(transparent)]
    Retention(#[from] jetflow_nats::stream::UnsupportedRetention),
    /// The checkpoint store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A split failed.
    #[error(transparent)]
    Split(#[from] SplitError),
    /// A split task ended unexpectedly.
    #[error("split {split}: its task ended unexpectedly")]
    SplitLost {
        /// The split.
        split: String,
    },
    /// The splits did not drain within the shutdown deadline.
    #[error("splits {splits:?} did not finish within the shutdown deadline")]
    ShutdownTimeout {
        /// The splits still running.
        splits: Vec<String>,
    },
}

/// A split's committed position as its reader sees it (see [`SplitHandle::committed`]), and
/// the last retention gap its reader found (committed with the next checkpoint).
#[derive(Clone)]
struct Committed {
    position: Arc<AtomicU64>,
    created: Arc<AtomicI64>,
    gap: GapSlot,
}

impl Committed {
    /// Stores a newly committed position: the creation time after the position, since the
    /// reader reads them the other way round.
    fn store(&self, snapshot: &SplitSnapshot) {
        self.position.store(snapshot.position, Ordering::Release);
        if let Some(created) = snapshot.stream_created {
            self.created.store(
                crate::source::jetstream::created_nanos(created),
                Ordering::Release,
            );
        }
    }
}

/// A snapshot's stream, as a checkpoint entry, for [`SplitPosition::on_newer_stream_than`].
fn as_position(s: &SplitSnapshot) -> SplitPosition {
    SplitPosition {
        stream_created: s.stream_created,
        recreated: s.recreated.clone(),
        ..Default::default()
    }
}

impl SplitHandle {
    fn committed(&self) -> Committed {
        Committed {
            position: self.committed.clone(),
            created: self.committed_created.clone(),
            gap: self.gap.clone(),
        }
    }
}

/// How a commit relates to the run of its splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// A checkpoint of running splits.
    Running,
    /// The final commit of splits that stopped running: every entry is marked drained.
    Drained,
    /// The final commit of a worker that follows an assignment: drained and released.
    Released,
}

impl RunError {
    /// A stable category for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Unsupported(_) => "unsupported",
            Self::Steps(_) => "steps",
            Self::Template(_) => "template",
            Self::Bound(_) => "bound",
            Self::Retention(_) => "retention",
            Self::Store(e) => e.category(),
            Self::Split(_) | Self::SplitLost { .. } => "split",
            Self::ShutdownTimeout { .. } => "shutdown_timeout",
        }
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// Stopped on request (or every split finished), after a final checkpoint.
    Completed,
    /// Splits stopped on failed messages (error policy `Stop`), with the reasons.
    Stopped(BTreeMap<String, String>),
    /// A bounded run: every owned split reached its bound (or had done so in an earlier run).
    Finished(Vec<SplitSummary>),
}

/// The worker's identity and settings for one pipeline run.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// The pipeline (validated).
    pub pipeline: Pipeline,
    /// This worker's id: the owner written into checkpoints.
    pub worker_id: String,
    /// The assignment generation the worker holds (0 locally).
    pub generation: u64,
    /// How long a shutdown may take before the run gives up on draining.
    pub shutdown_timeout: Duration,
}

struct SplitHandle {
    control: mpsc::Sender<Control>,
    cancel: CancellationToken,
    task: JoinHandle<Result<SplitSnapshot, SplitError>>,
    reader: JoinHandle<()>,
    committed: Arc<AtomicU64>,
    /// The creation time of the source stream `committed` counts in (Unix ns, 0: unknown),
    /// stored after `committed` (the reader reads it first).
    committed_created: Arc<AtomicI64>,
    /// The last retention gap the reader found.
    gap: GapSlot,
    stopped: Option<String>,
    /// Counts the split in the worker's byte budget while it runs.
    _member: Member,
}

/// Runs one pipeline's splits and checkpoints them.
pub struct Runner<S: Sink> {
    shared: Arc<Shared<S>>,
    readers: Readers,
    acker: Arc<dyn SourceAcker>,
    committer: Committer,
    metrics: Metrics,
    health: Arc<Health>,
    namespace: String,
    name: String,
    interval: Duration,
    worker_id: String,
    generation: u64,
    shutdown_timeout: Duration,
    step_timeout: Duration,
    /// Whether the splits stop taking messages (checkpoints keep failing); shared with them.
    paused: watch::Sender<bool>,
    failed_checkpoints: u32,
    late_logged: Option<Instant>,
    splits: BTreeMap<String, SplitHandle>,
    /// Splits stopped because the checkpoint refused their positions (another owner moved
    /// them on), with the generation this worker held then: not started again until it holds
    /// another one.
    taken: BTreeMap<String, u64>,
    /// Splits this worker refused to start, with why (see [`window`]): reported as stopped.
    held: BTreeMap<String, String>,
    /// Checks resumes against the sink's duplicate window (JetStream to JetStream only).
    window: Option<window::WindowGuard>,
    cancel: CancellationToken,
}

/// Refuses a source stream whose retention jetflow does not read, before any consumer is made
/// on it. A stream that cannot be looked up now is left to the readers, which wait for it.
async fn refuse_unsupported_retention(
    js: &jetstream::Context,
    stream: &str,
) -> Result<(), jetflow_nats::stream::UnsupportedRetention> {
    let Ok(found) = js.get_stream(stream).await else {
        return Ok(());
    };
    let retention = found.cached_info().config.retention;
    match jetflow_nats::stream::unsupported_source_retention(retention) {
        None => Ok(()),
        Some(retention) => Err(jetflow_nats::stream::UnsupportedRetention {
            stream: stream.to_owned(),
            retention,
        }),
    }
}

impl Runner<PipelineSink> {
    /// Prepares a run of a pipeline (JetStream or Core source, JetStream or Core sink): compiles
    /// the steps and the sink's subject template, finds where dead letters go, and reads the
    /// checkpoint. No message moves until splits are started.
    pub async fn new(
        config: RunnerConfig,
        client: async_nats::Client,
        store: Arc<dyn CheckpointStore>,
        metrics: Metrics,
        health: Arc<Health>,
    ) -> Result<Self, RunError> {
        let pipeline = &config.pipeline;
        let spec = &pipeline.spec;
        let interval = spec.checkpoint.interval.get();
        let budget = Budget::new();
        let (readers, source_stream) = match (&spec.source.jetstream, &spec.source.core) {
            (Some(source), _) => {
                let settings =
                    ConsumerSettings::new(interval, source.batch_size as usize, budget.clone());
                let js = jetstream::new(client.clone());
                refuse_unsupported_retention(&js, &source.stream).await?;
                let readers = Readers::JetStream {
                    js,
                    stream: source.stream.clone(),
                    settings,
                    start: source.start.clone(),
                    bound: spec.source.bound.as_ref().map(BoundSpec::new).transpose()?,
                };
                (readers, source.stream.clone())
            }
            (None, Some(core)) if spec.source.bound.is_none() => {
                let readers = Readers::Core(CoreSource {
                    client: client.clone(),
                    queue_group: core.queue_group.clone(),
                    subscribed: Arc::default(),
                });
                // A Core source has no stream: the stream part of `Jetflow-Source` stays empty.
                (readers, String::new())
            }
            (None, Some(_)) => {
                return Err(RunError::Unsupported(
                    "spec.source.bound: only a JetStream source can be bounded",
                ));
            }
            (None, None) => {
                return Err(RunError::Unsupported(
                    "spec.source: set source.jetstream or source.core",
                ));
            }
        };
        let (sink, template, max_pending) = match (&spec.sink.jetstream, &spec.sink.core) {
            (Some(sink), _) => {
                let jetstream = JetStreamSink::new(client.clone(), &sink.stream);
                // The subjects outputs are checked against before they are published.
                jetstream.refresh().await;
                (
                    PipelineSink::JetStream(Box::new(jetstream)),
                    &sink.subject,
                    sink.max_pending,
                )
            }
            (None, Some(sink)) => (
                PipelineSink::Core(CoreSink::new(client.clone())),
                &sink.subject,
                1024,
            ),
            (None, None) => {
                return Err(RunError::Unsupported(
                    "spec.sink: set sink.jetstream or sink.core",
                ));
            }
        };
        let window = match (&spec.source.jetstream, &spec.sink.jetstream) {
            (Some(source), Some(sink)) => Some(window::WindowGuard {
                js: jetstream::new(client.clone()),
                source: source.stream.clone(),
                sink: sink.stream.clone(),
                exactly_once: spec.checkpoint.mode == Some(DeliveryMode::ExactlyOnce),
                window: Arc::default(),
            }),
            _ => None,
        };
        let steps = Steps::compile(&spec.steps)?;
        let template = SubjectTemplate::compile_subject_only(template)?;
        let max_pending = usize::try_from(max_pending).unwrap_or(1024).max(1);
        let dead_letters = DeadLetters::new(client.clone(), &pipeline.dead_letter_subject()).await;
        let committer = Committer::open(store).await?;
        let (paused, reading_paused) = watch::channel(false);
        let shared = Arc::new(Shared {
            paused: reading_paused,
            source: Prefix::new(&source_stream),
            steps: Arc::new(steps),
            template,
            sink,
            dead_letters,
            policy: spec.errors.policy,
            max_pending,
            max_pending_bytes: crate::split::PENDING_BYTES,
            budget,
            pipeline: jetflow_nats::replay::target(
                pipeline.metadata.namespace.as_deref().unwrap_or("default"),
                pipeline.metadata.name.as_deref().unwrap_or("pipeline"),
            ),
        });
        Ok(Self {
            shared,
            acker: readers.acker(),
            readers,
            committer,
            metrics,
            health,
            namespace: pipeline
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_owned()),
            name: pipeline
                .metadata
                .name
                .clone()
                .unwrap_or_else(|| "pipeline".to_owned()),
            interval,
            worker_id: config.worker_id,
            generation: config.generation,
            shutdown_timeout: config.shutdown_timeout,
            step_timeout: DEFAULT_STEP_TIMEOUT,
            paused,
            failed_checkpoints: 0,
            late_logged: None,
            splits: BTreeMap::new(),
            taken: BTreeMap::new(),
            held: BTreeMap::new(),
            window,
            cancel: CancellationToken::new(),
        })
    }
}

impl<S: Sink> Runner<S> {
    /// The splits running now, by name.
    pub fn splits(&self) -> impl Iterator<Item = &str> {
        self.splits.keys().map(String::as_str)
    }

    /// The last committed checkpoint.
    pub fn checkpoint_state(&self) -> &jetflow_crds::checkpoint::Checkpoint {
        self.committer.checkpoint()
    }

    /// Sets the time budget of the steps on one message, for the splits started from now on
    /// (default [`DEFAULT_STEP_TIMEOUT`]).
    pub fn set_step_timeout(&mut self, budget: Duration) {
        self.step_timeout = budget;
    }

    /// Sets the assignment generation written with the next checkpoints.
    pub fn set_generation(&mut self, generation: u64) {
        self.generation = generation;
    }

    /// Starts reading `split` at its committed position (or the spec's start without one).
    pub fn start_split(&mut self, split: Split) {
        if self.splits.contains_key(&split.name) {
            return;
        }
        let entry = self.committer.checkpoint().splits.get(&split.name);
        let position = entry.map_or(0, |p| p.position);
        let stream_created = entry.and_then(|p| p.stream_created);
        let recreated = entry.and_then(|p| p.recreated.clone());
        let end = entry.and_then(|p| p.end);
        let committed = Arc::new(AtomicU64::new(position));
        let committed_created = Arc::new(AtomicI64::new(
            stream_created.map_or(0, crate::source::jetstream::created_nanos),
        ));
        let metrics = self.metrics.split(&split.name);
        metrics
            .position
            .set(i64::try_from(position).unwrap_or(i64::MAX));
        let cancel = self.cancel.child_token();
        let consumer = consumer_name(&self.namespace, &self.name, &split.name);
        tracing::info!(split = %split.name, consumer, position, "starting split");
        // Every line the split's tasks log carries the split's name.
        let span = tracing::info_span!("split", split = %split.name);

        let gap = GapSlot::default();
        let resume = Resume {
            committed: committed.clone(),
            committed_created: committed_created.clone(),
            end,
            gap: gap.clone(),
        };
        let reader = self.readers.open(&split, consumer, resume, metrics.clone());
        let member = self.shared.budget.join();
        let (tx, rx) = read::channel(READ_AHEAD, self.shared.budget.clone());
        let read = read::read_split(
            reader,
            tx,
            cancel.clone(),
            split.name.clone(),
            metrics.clone(),
        );
        let reader_task = tokio::spawn(read.instrument(span.clone()));

        let (control_tx, control_rx) = mpsc::channel(4);
        let mut ids = MessageIds::new(&self.namespace, &self.name, &split.name);
        if let (Some(created), Some(_)) = (stream_created, &recreated) {
            ids = ids.on_stream(created);
        }
        let start = SplitSnapshot {
            position,
            stream_created,
            recreated,
            ..Default::default()
        };
        let task = SplitTask::new(
            self.shared.clone(),
            &split.name,
            ids,
            metrics,
            start,
            self.step_timeout,
        );
        let task = tokio::spawn(task.run(rx, control_rx, cancel.clone()).instrument(span));
        self.splits.insert(
            split.name.clone(),
            SplitHandle {
                control: control_tx,
                cancel,
                task,
                reader: reader_task,
                committed,
                committed_created,
                gap,
                stopped: None,
                _member: member,
            },
        );
    }

    /// Stops a split: drains it, commits and acknowledges its final position, forgets it.
    pub async fn stop_split(&mut self, name: &str) -> Result<(), RunError> {
        let Some(handle) = self.splits.remove(name) else {
            return Ok(());
        };
        handle.cancel.cancel();
        let committed = handle.committed();
        let _ = handle.reader.await;
        let snapshot = handle.task.await.map_err(|_| RunError::SplitLost {
            split: name.to_owned(),
        })??;
        let finals = BTreeMap::from([(name.to_owned(), (snapshot, committed))]);
        self.commit_and_ack(finals, Instant::now(), Ending::Drained)
            .await?;
        self.metrics.remove_split(name);
        Ok(())
    }

    /// Takes a checkpoint of every split: asks each for its confirmed position, commits the
    /// positions that moved, then acknowledges the source up to them.
    pub async fn checkpoint(&mut self) -> Result<(), RunError> {
        let started = Instant::now();
        let mut waiting = Vec::with_capacity(self.splits.len());
        for (name, handle) in &self.splits {
            let (tx, rx) = oneshot::channel();
            // Never waits: a split that has not answered earlier requests is not asked again.
            let sent = handle.control.try_send(Control::Snapshot(tx));
            waiting.push((name.clone(), sent, rx));
        }
        // A split that does not answer in time (stuck in a step, or behind a sink that does not
        // take its outputs) is left out of this checkpoint: its committed position stays, and
        // the other splits commit theirs.
        let deadline = tokio::time::Instant::now() + self.interval.max(SNAPSHOT_TIMEOUT_MIN);
        let mut snapshots = BTreeMap::new();
        for (name, sent, rx) in waiting {
            let result = match sent {
                Ok(()) => match tokio::time::timeout_at(deadline, rx).await {
                    Ok(answer) => answer.ok(),
                    Err(_) => {
                        self.late_snapshot(&name);
                        continue;
                    }
                },
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.late_snapshot(&name);
                    continue;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => None,
            };
            match result {
                Some(Ok(mut snapshot)) => {
                    // Only a split whose task ended is finished; a live one may still be
                    // draining up to its bound.
                    snapshot.finished = false;
                    let handle = self.splits.get_mut(&name).expect("split present");
                    if let (Some(reason), None) = (&snapshot.stopped, &handle.stopped) {
                        handle.stopped = Some(reason.clone());
                    }
                    snapshots.insert(name.clone(), (snapshot, handle.committed()));
                }
                Some(Err(e)) => return Err(e.into()),
                None => {
                    // The task ended: a bounded split that reached its bound is committed as
                    // finished; any other end is an error.
                    let handle = self.splits.remove(&name).expect("split present");
                    handle.cancel.cancel();
                    let committed = handle.committed();
                    let _ = handle.reader.await;
                    match handle.task.await {
                        Ok(Ok(snapshot)) if snapshot.finished => {
                            tracing::info!(split = %name, position = snapshot.position, "split reached its bound");
                            snapshots.insert(name, (snapshot, committed));
                        }
                        Ok(Err(e)) => return Err(e.into()),
                        _ => return Err(RunError::SplitLost { split: name }),
                    }
                }
            }
        }
        self.commit_and_ack(snapshots, started, Ending::Running)
            .await
    }

    /// A split that did not answer a checkpoint in time: logged at most once per
    /// [`LATE_LOG_INTERVAL`] for the worker, and counted.
    fn late_snapshot(&mut self, name: &str) {
        self.metrics.split(name).error("snapshot_timeout");
        if self
            .late_logged
            .is_none_or(|at| at.elapsed() >= LATE_LOG_INTERVAL)
        {
            self.late_logged = Some(Instant::now());
            tracing::warn!(split = %name, "split did not answer the checkpoint in time; its committed position stays, the other splits are committed");
        }
    }

    /// Counts a checkpoint that failed on the store, and pauses reading after
    /// [`PAUSE_AFTER_FAILURES`] in a row (back-pressure: the splits stop taking messages, so the
    /// worker does not run ahead of its last commit).
    ///
    /// A NATS Core source is never paused: the server keeps nothing for it, so a split that
    /// stops taking messages only fills the client's subscription buffer, which then drops
    /// what arrives; and its checkpoint acknowledges nothing, so running ahead of the last
    /// commit loses nothing that a pause would keep.
    fn checkpoint_failed(&mut self) {
        self.failed_checkpoints += 1;
        if self.readers.core().is_some() {
            if self.failed_checkpoints == PAUSE_AFTER_FAILURES {
                tracing::warn!(
                    failed = self.failed_checkpoints,
                    "checkpoints keep failing; a NATS Core source keeps reading (a pause would drop what the server sends meanwhile)"
                );
            }
            return;
        }
        if self.failed_checkpoints >= PAUSE_AFTER_FAILURES && !*self.paused.borrow() {
            tracing::warn!(
                failed = self.failed_checkpoints,
                "checkpoints keep failing; reading paused until one is committed"
            );
            self.paused.send_replace(true);
            self.metrics.reading_paused.set(1);
        }
    }

    /// Resumes reading after a committed checkpoint.
    fn checkpoint_succeeded(&mut self) {
        self.failed_checkpoints = 0;
        if *self.paused.borrow() {
            tracing::info!("checkpoint committed; reading resumed");
            self.paused.send_replace(false);
            self.metrics.reading_paused.set(0);
        }
    }

    /// Commits the positions of `snapshots` that moved (or finished, or stopped, or found a
    /// retention gap), then acknowledges the source up to them. A final commit (`ending` not
    /// [`Ending::Running`]) marks every split drained; with [`Ending::Released`] also released
    /// (the worker stops running it: its next owner may start at once), unless the checkpoint
    /// shows that a newer owner has moved it on already.
    ///
    /// A split whose position the checkpoint refuses (another owner committed it under a newer
    /// assignment, or moved it past this worker's position, or on a later incarnation of the
    /// stream) does not hold the others back: they are committed, and the refused split is
    /// stopped, not acknowledged, logged and counted
    /// (`jetflow_worker_errors_total{kind="checkpoint_refused"}`); it is not started again
    /// until this worker holds a new assignment.
    async fn commit_and_ack(
        &mut self,
        snapshots: BTreeMap<String, (SplitSnapshot, Committed)>,
        started: Instant,
        ending: Ending,
    ) -> Result<(), RunError> {
        let core = self.readers.core().is_some();
        let draining = ending != Ending::Running;
        let mut moved = std::collections::BTreeSet::new();
        let mut updates: BTreeMap<String, SplitPosition> = BTreeMap::new();
        for (name, (s, committed)) in &snapshots {
            let entry = self.committer.checkpoint().splits.get(name);
            let gap = committed.gap.lock().map(|g| g.clone()).unwrap_or_default();
            // A position on a recreated source stream starts anew: it is committed however it
            // compares with the earlier stream's (the checkpoint keeps the creation time).
            let new_stream = s.stream_created.is_some()
                && entry.is_none_or(|c| c.stream_created != s.stream_created);
            let new_gap = gap.is_some() && entry.is_none_or(|c| c.retention_gap != gap);
            let changed = s.position > committed.position.load(Ordering::Acquire)
                || new_stream
                || new_gap
                || s.finished
                // A split that just stopped on a failed message: the reason is recorded once,
                // for the operator to report.
                || s.stopped.is_some() && entry.is_none_or(|c| c.stopped != s.stopped);
            // Workers sharing a Core subject in a queue group each count their own messages:
            // one whose count is behind what another committed leaves the position alone
            // (nothing is acknowledged to a Core source, and the ids stay unique per worker).
            let write = changed && (!core || entry.is_none_or(|c| s.position > c.position));
            // What a final commit marks (drained, released) is for a split nobody newer has
            // taken on: not committed under a later generation, nor (from a stream) past this
            // worker's position.
            let ours = entry.is_none_or(|c| {
                c.generation <= self.generation
                    && (core || c.position <= s.position || as_position(s).on_newer_stream_than(c))
            });
            let release = ending == Ending::Released && ours;
            // A split that ends its run without having moved still records that nothing past
            // its position was emitted.
            let drain = draining && !core && ours && entry.is_some_and(|c| !c.drained);
            if !write && !release && !drain {
                continue;
            }
            if write {
                moved.insert(name.clone());
            }
            let (position, finished, stopped, stream_created, recreated) = if write {
                (
                    s.position,
                    s.finished,
                    s.stopped.clone(),
                    s.stream_created,
                    s.recreated.clone(),
                )
            } else {
                (
                    entry.map_or(s.position, |c| c.position.max(s.position)),
                    s.finished || entry.is_some_and(|c| c.finished),
                    s.stopped
                        .clone()
                        .or_else(|| entry.and_then(|c| c.stopped.clone())),
                    entry.and_then(|c| c.stream_created).or(s.stream_created),
                    entry
                        .and_then(|c| c.recreated.clone())
                        .or_else(|| s.recreated.clone()),
                )
            };
            updates.insert(
                name.clone(),
                SplitPosition {
                    position,
                    owner: Some(self.worker_id.clone()),
                    generation: self.generation,
                    finished,
                    stopped,
                    released: release,
                    stream_created,
                    recreated,
                    end: entry.and_then(|c| c.end),
                    retention_gap: gap.or_else(|| entry.and_then(|c| c.retention_gap.clone())),
                    drained: draining && ours,
                    // The split runs: a refusal to start it (see `window`) is over.
                    window_exceeded: entry.and_then(|c| c.window_exceeded.clone()).map(|w| {
                        WindowExceeded {
                            refused: false,
                            ..w
                        }
                    }),
                },
            );
        }
        if !updates.is_empty() {
            let refused = match self.committer.commit_partly(&updates).await {
                Ok(refused) => refused,
                Err(e) => {
                    self.metrics.checkpoint_failures.inc();
                    return Err(e.into());
                }
            };
            for refusal in &refused {
                let split = refusal.split().to_owned();
                moved.remove(&split);
                updates.remove(&split);
                if core {
                    // Workers sharing Core subjects in a queue group each run every split and
                    // count their own messages: another worker's count ahead of this one's
                    // owns nothing, and there is nothing to acknowledge.
                    tracing::debug!(split = %split, error = %refusal, "another worker's count of the Core split is ahead; not committed");
                    continue;
                }
                self.give_up_split(&split, refusal).await;
            }
            let id = self.committer.checkpoint().id;
            // Only now, with the positions durable, may the source forget the messages.
            let acks = moved.iter().map(|name| {
                let (snapshot, committed) = &snapshots[name];
                committed.store(snapshot);
                let metrics = self.metrics.split(name);
                metrics
                    .position
                    .set(i64::try_from(snapshot.position).unwrap_or(i64::MAX));
                let acker = self.acker.clone();
                async move {
                    if let Err(e) = acker.ack(&snapshot.ack).await {
                        // Not fatal: recovery comes from the checkpoint; the consumer is
                        // recreated at the position if it disagrees.
                        metrics.error("ack");
                        tracing::warn!(split = %name, error = %e, "acknowledgement not confirmed");
                    }
                }
            });
            join_all(acks).await;
            if !updates.is_empty() {
                self.metrics.checkpoint_committed(id);
                tracing::debug!(id, splits = updates.len(), "checkpoint committed");
            }
        } else {
            // Nothing moved: the committed checkpoint is still current.
            self.metrics.last_checkpoint.set(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or_default(),
            );
        }
        self.metrics
            .checkpoint_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Stops a split whose position the checkpoint refused: another owner has it now. Its
    /// outputs since the last commit are confirmed by the sink, but its position is not
    /// committed nor the source acknowledged; the owner that moved it on reads on from its own
    /// position. Not started again until this worker holds a new assignment generation.
    async fn give_up_split(&mut self, split: &str, refusal: &MergeError) {
        self.metrics.split(split).error("checkpoint_refused");
        tracing::warn!(
            split = %split,
            error = %refusal,
            generation = self.generation,
            "checkpoint refused the split's position: another owner has moved it on; the split is stopped on this worker, the other splits are committed"
        );
        self.taken.insert(split.to_owned(), self.generation);
        if let Some(handle) = self.splits.remove(split) {
            handle.cancel.cancel();
            let _ = handle.reader.await;
            let _ = handle.task.await;
            self.metrics.remove_split(split);
        }
    }

    /// The splits stopped on a failed message, and those this worker refused to start.
    fn stopped(&self) -> BTreeMap<String, String> {
        self.splits
            .iter()
            .filter_map(|(name, h)| h.stopped.clone().map(|r| (name.clone(), r)))
            .chain(self.held.iter().map(|(n, r)| (n.clone(), r.clone())))
            .collect()
    }

    /// Whether every split of the run stopped (on a failed message, or refused to start).
    fn all_stopped(&self) -> bool {
        let all = self.splits.len() + self.held.len();
        all > 0 && self.stopped().len() == all
    }

    /// Runs `splits` until `cancel` fires or every split has stopped, checkpointing at the
    /// pipeline's interval, then shuts down with a final checkpoint.
    pub async fn run(
        self,
        splits: Vec<Split>,
        cancel: CancellationToken,
    ) -> Result<RunOutcome, RunError> {
        self.run_with(Membership::fixed(splits), cancel).await
    }

    /// Like [`Runner::run`], with a split set that changes while it runs (new subjects, a new
    /// assignment; see [`Membership`]). A bounded run ends when every owned split finished.
    pub async fn run_with(
        mut self,
        mut membership: Membership,
        cancel: CancellationToken,
    ) -> Result<RunOutcome, RunError> {
        self.reconcile(&mut membership).await?;
        self.wait_subscribed(Duration::from_secs(10)).await;
        self.health.set_ready(true);
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut failure = None;
        let bounded = self.readers.is_bounded();
        loop {
            if self.bounded_done(&mut membership) {
                tracing::info!("every split reached its bound");
                break;
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = ticker.tick() => {}
                wake = membership.wake(bounded) => {
                    let result = match wake {
                        control::Wake::Change(change) => self.change_membership(&mut membership, change).await,
                        control::Wake::Poll => self.poll(&mut membership).await,
                        control::Wake::Retry => self.reconcile(&mut membership).await,
                    };
                    match result {
                        Ok(()) => {}
                        Err(RunError::Store(e)) => {
                            // Nothing else may come to apply it (the next change can be far
                            // off, or never come): try again with back-off until it is applied.
                            let wait = membership.failed();
                            tracing::warn!(error = %e, retry_in = ?wait, "split set change not applied; trying again");
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "split failed; shutting down");
                            failure = Some(e);
                            break;
                        }
                    }
                    continue;
                }
            }
            match self.checkpoint().await {
                Ok(()) => self.checkpoint_succeeded(),
                Err(RunError::Store(e)) => {
                    // The next interval tries again; nothing is acknowledged meanwhile.
                    tracing::warn!(error = %e, "checkpoint failed");
                    self.checkpoint_failed();
                }
                Err(e) => {
                    tracing::error!(error = %e, "split failed; shutting down");
                    failure = Some(e);
                    break;
                }
            }
            if self.all_stopped() {
                tracing::error!(
                    "every split stopped (on a failed message, or refused to start); shutting down"
                );
                break;
            }
        }
        self.health.set_ready(false);
        let deadline = self.shutdown_timeout;
        // Following an assignment, the final checkpoint releases every split, so that their
        // next owners (a rolling update's new pods) start at once.
        let shutdown = self.shutdown(membership.follows_assignment());
        let result = tokio::time::timeout(deadline, shutdown).await;
        match (failure, result) {
            (Some(e), _) => Err(e),
            (None, Err(_)) => Err(RunError::ShutdownTimeout { splits: Vec::new() }),
            (None, Ok(Ok(RunOutcome::Completed))) if bounded => {
                Ok(RunOutcome::Finished(self.summary(&membership)))
            }
            (None, Ok(result)) => result,
        }
    }

    /// Drains every split and takes the final checkpoint; with `release`, the same write marks
    /// every split released.
    async fn shutdown(&mut self, release: bool) -> Result<RunOutcome, RunError> {
        let started = Instant::now();
        self.cancel.cancel();
        let stopped = self.stopped();
        let splits = std::mem::take(&mut self.splits);
        let mut finals = BTreeMap::new();
        let mut error = None;
        for (name, handle) in splits {
            let committed = handle.committed();
            let _ = handle.reader.await;
            match handle.task.await {
                Ok(Ok(snapshot)) => {
                    finals.insert(name, (snapshot, committed));
                }
                Ok(Err(e)) => {
                    tracing::error!(split = %name, error = %e, "split failed while draining");
                    error.get_or_insert(RunError::Split(e));
                }
                Err(_) => {
                    error.get_or_insert(RunError::SplitLost { split: name });
                }
            }
        }
        let mut stopped_now: BTreeMap<String, String> = finals
            .iter()
            .filter_map(|(n, (s, _))| s.stopped.clone().map(|r| (n.clone(), r)))
            .collect();
        stopped_now.extend(stopped);
        let ending = if release {
            Ending::Released
        } else {
            Ending::Drained
        };
        match self.commit_and_ack(finals, started, ending).await {
            Ok(()) => {}
            // The checkpoint was reset after this worker started: its positions belong to
            // nothing any more, and the stop is clean.
            Err(RunError::Store(e @ StoreError::Superseded { .. })) => {
                tracing::warn!(error = %e, "final checkpoint not written");
            }
            Err(e) => return Err(e),
        }
        tracing::info!(
            checkpoint = self.committer.checkpoint().id,
            "final checkpoint taken"
        );
        if let Some(e) = error {
            return Err(e);
        }
        if stopped_now.is_empty() {
            Ok(RunOutcome::Completed)
        } else {
            Ok(RunOutcome::Stopped(stopped_now))
        }
    }
}
