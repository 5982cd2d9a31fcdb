//! One split's task: messages from its reader pass through the steps into the sink, and a
//! bounded, ordered window of unconfirmed outputs decides how far the split has got.
//!
//! ```text
//!  reader task ──(bounded channel)──▶ split task: steps ─▶ sink.send ─▶ window ─▶ position
//!                                            │ (failure)                   ▲
//!                                            └─▶ error policy: dead letter ┘ / skip / stop
//! ```
//!
//! While the runner's checkpoints keep failing it pauses every split ([`Shared::paused`]): the
//! task stops taking messages (its reader blocks on the full channel) until a checkpoint is
//! committed again.
//!
//! The position is the last source sequence whose outputs, and those of every message before
//! it, are confirmed by the sink; with its ack token it is what a checkpoint takes from the
//! split ([`Control::Snapshot`]). Taking it never stops the split: outputs after it simply stay
//! in the window. The window holds at most `max_pending` outputs and at most
//! `max_pending_bytes` of the payloads they keep alive ([`PENDING_BYTES`]), less where the
//! worker's budget divided among its running splits allows less ([`crate::budget`]), so a slow
//! sink slows the reader rather than growing memory, whatever the message size.
//!
//! The steps run on a thread of the split's own ([`crate::evaluator`]), each message within a
//! time budget: one that overruns it fails (kind `timeout`) and goes to the error policy, so a
//! runaway expression costs its message, not the split.
//!
//! Before any output of a message is published, all of them are checked: subjects that can be
//! published on, that the sink takes (a JetStream sink: its stream captures them), and for a
//! fan-out each output's size against the server's `max_payload`; one that fails makes the
//! whole message a failure of the step `sink` under the error policy, with none of its outputs
//! published. A refusal only the server can make comes after some outputs of the message may
//! be stored: the message gets one outcome of the policy, and no more of its outputs are
//! published. A fan-out fills the window one output at a time, waiting for confirmations while
//! the window is full, so one message of thousands of outputs stays within the window's bounds.
//!
//! An output whose publish fails, or whose ack is an error, is published again (same message
//! id, so the sink keeps one copy) a few times with a backoff; if it still fails the split ends
//! with an error and its position stays before that message, so nothing after it is ever
//! acknowledged to the source. An output the sink refuses for good (see
//! [`crate::sink::Refusal`]) is not retried: its source message goes to the error policy, as a
//! failure of the step `sink`.
//!
//! A Core publish (a Core sink's output, a dead letter no stream captures) stays in the window
//! until a round trip on its connection confirms it: when the window is full, before a
//! snapshot, and when draining. One sent before the connection was replaced (a reconnect, a
//! nats-server restart) is published again, so what the old connection lost is not lost for
//! good; a snapshot never reports a position past an unconfirmed Core publish.
//!
//! A message from a recreated source stream ([`Incarnation::recreated`], a new creation time)
//! starts the position anew: the task first waits until every output of the earlier stream is
//! confirmed, then counts positions on the new stream from zero and gives its outputs message
//! ids that carry the stream's creation time, so that the sink's duplicate window does not
//! take them for the earlier stream's outputs of the same sequences.
//!
//! Shutdown: when the split's token is cancelled the task stops taking messages, waits for
//! every output in the window to be confirmed and returns its final snapshot.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use futures::StreamExt;
use jetflow_crds::checkpoint::StreamRecreated;
use jetflow_crds::pipeline::ErrorAction;
use jetflow_nats::replay;
use jetflow_nats::source_header::Prefix;
use jetflow_steps::{OutputHeaders, Steps};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::budget::Budget;
use crate::evaluator::{Evaluator, evaluate, nats_headers};
use crate::metrics::SplitMetrics;
use crate::pipeline::read::Reads;
use crate::sink::dead_letter::{DeadLetters, Failure};
use crate::sink::headers::{MessageIds, output_headers, wire_len};
use crate::sink::jetstream::{Replies, ReplyTo};
use crate::sink::{
    Confirmation, OutputMessage, Refusal, Sink, SinkError, SubjectTemplate, check_publish_subject,
    quoted,
};
use crate::source::{AckToken, Incarnation, Read, SourceError, SourceMessage};

/// How often a failed publish is tried again before the split gives up.
const PUBLISH_ATTEMPTS: u32 = 4;
/// How often Core publishes are sent again after a failed round trip before the split gives
/// up: with the back-off capped at 5 s, about half a minute without a working connection.
const ROUND_TRIP_ATTEMPTS: u32 = 10;
/// Payload bytes a split's unconfirmed outputs keep alive at most (besides `maxPending`
/// outputs): enough in flight to keep the sink busy, without holding megabytes of messages per
/// split.
pub const PENDING_BYTES: usize = 1 << 20;
/// At most this many messages are taken from the reader at once.
const RECEIVE_CHUNK: usize = 256;
/// Skipped messages are logged at most this often (with a count).
const SKIP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What a pipeline's split tasks share.
pub struct Shared<S> {
    /// The `<stream>/` every output's `Jetflow-Source` header begins with (empty stream for a
    /// NATS Core source), built once.
    pub source: Prefix,
    /// The compiled steps.
    pub steps: Arc<Steps>,
    /// The sink's subject template.
    pub template: SubjectTemplate,
    /// The sink.
    pub sink: S,
    /// Where failed messages go under the `Dlq` policy.
    pub dead_letters: DeadLetters,
    /// The error policy.
    pub policy: ErrorAction,
    /// Outputs awaiting confirmation, at most.
    pub max_pending: usize,
    /// Payload bytes the unconfirmed outputs may keep alive before the split stops taking
    /// messages (at least one message is always taken); less where the worker's budget,
    /// divided among its running splits, allows less.
    pub max_pending_bytes: usize,
    /// The worker's byte budget, shared by its splits.
    pub budget: Budget,
    /// True while the splits must not take messages (checkpoints keep failing).
    pub paused: tokio::sync::watch::Receiver<bool>,
    /// `<namespace>/<pipeline>`: a replayed dead letter whose `Jetflow-Replay-For` header names
    /// another pipeline is skipped ([`jetflow_nats::replay`]).
    pub pipeline: String,
}

/// A split's state as a checkpoint takes it.
#[derive(Clone, Debug, Default)]
pub struct SplitSnapshot {
    /// Last source sequence fully processed and confirmed (0: none since the start).
    pub position: u64,
    /// Acknowledges the message at `position` (and, cumulatively, all before it).
    pub ack: AckToken,
    /// Set when the split stopped on a failed message (error policy `Stop`).
    pub stopped: Option<String>,
    /// The reader ended (a bounded split reached its bound).
    pub finished: bool,
    /// The creation time of the source stream the position counts in.
    pub stream_created: Option<jiff::Timestamp>,
    /// Set once the split found its source stream recreated (kept from the checkpoint).
    pub recreated: Option<StreamRecreated>,
}

/// Requests to a split task.
#[derive(Debug)]
pub enum Control {
    /// Flush the sink and report the split's snapshot.
    Snapshot(oneshot::Sender<Result<SplitSnapshot, SplitError>>),
}

/// Why a split task failed.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    /// The split's reader failed for good.
    #[error("split {split}: the reader failed: {source}")]
    Read {
        /// The split.
        split: String,
        /// The reader's error.
        source: SourceError,
    },
    /// The split's reader task ended without saying whether the split ended or failed.
    #[error("split {split}: the reader ended without an end of split")]
    ReaderLost {
        /// The split.
        split: String,
    },
    /// An output could not be delivered after retries.
    #[error("split {split}: message {seq} could not be delivered: {source}")]
    Deliver {
        /// The split.
        split: String,
        /// The source sequence.
        seq: u64,
        /// The last error.
        source: SinkError,
    },
    /// Core publishes could not be confirmed by a round trip.
    #[error("split {split}: {source}")]
    Flush {
        /// The split.
        split: String,
        /// The sink's error.
        source: SinkError,
    },
}

type AckFuture = Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send>>;

/// How an entry's confirmation comes.
enum Confirm {
    /// A future that resolves with it (a dead letter's publish ack).
    Future(AckFuture),
    /// The ack with this token on the split's reply inbox ([`Acks`]).
    Reply(u64),
}

/// Hashes a reply token as itself: tokens count up, so they spread over the table as they are.
#[derive(Default)]
struct TokenHasher(u64);

impl Hasher for TokenHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A split's publish acks: its reply inbox (none for a sink that confirms otherwise), the acks
/// that arrived for entries not yet at the head of the window, and the clock that tells when
/// the head's ack is overdue.
#[derive(Default)]
struct Acks {
    replies: Option<Replies>,
    arrived: HashMap<u64, Result<(), PublishError>, BuildHasherDefault<TokenHasher>>,
    /// Ticks once a second while the head waits for its ack: an ack counts as lost at the
    /// first tick after its deadline.
    lapse: Option<tokio::time::Interval>,
}

impl Acks {
    fn reply_to(&self) -> Option<&ReplyTo> {
        self.replies.as_ref().map(|r| &r.to)
    }

    /// Takes every ack that has arrived (registering for the next one).
    fn receive(&mut self, cx: &mut Context<'_>) {
        let Some(replies) = self.replies.as_mut() else {
            return;
        };
        while let Poll::Ready(Some(ack)) = replies.acks.poll_next_unpin(cx) {
            if let Some((token, outcome)) = replies.outcome(&ack) {
                self.arrived.insert(token, outcome);
            }
        }
    }

    /// Whether `deadline` has passed, checked once a second (registering for the next check).
    fn lapsed(&mut self, deadline: Option<tokio::time::Instant>, cx: &mut Context<'_>) -> bool {
        let lapse = self.lapse.get_or_insert_with(|| {
            let mut lapse = tokio::time::interval(Duration::from_secs(1));
            lapse.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            lapse
        });
        let mut ticked = false;
        while lapse.poll_tick(cx).is_ready() {
            ticked = true;
        }
        ticked && deadline.is_some_and(|d| d <= tokio::time::Instant::now())
    }

    /// Drops acks nothing waits for any more (for outputs published again since, whose first
    /// ack came late), once they outnumber the window.
    fn prune(&mut self, window: &Window) {
        if self.arrived.len() <= 2 * window.len() + 64 {
            return;
        }
        let live: std::collections::HashSet<u64> = window
            .iter()
            .filter_map(|e| match e.confirm {
                Some(Confirm::Reply(token)) => Some(token),
                _ => None,
            })
            .collect();
        self.arrived.retain(|token, _| live.contains(token));
    }

    /// Waits for the ack with `token` until `deadline`.
    async fn wait(
        &mut self,
        token: u64,
        deadline: tokio::time::Instant,
    ) -> Result<(), PublishError> {
        let arrival = std::future::poll_fn(|cx| {
            self.receive(cx);
            match self.arrived.remove(&token) {
                Some(outcome) => Poll::Ready(outcome),
                None => Poll::Pending,
            }
        });
        tokio::time::timeout_at(deadline, arrival)
            .await
            .unwrap_or_else(|_elapsed| Err(PublishError::new(PublishErrorKind::TimedOut)))
    }
}

/// What publishing an entry again came to: confirmed, or refused for good by the sink.
type Redelivered = Result<Result<InFlight, (InFlight, Refusal, SinkError)>, SplitError>;

/// One unconfirmed output (or the marker of a message without outputs).
struct InFlight {
    seq: u64,
    /// The last entry of its source message: confirming it completes the message.
    last: bool,
    ack: AckToken,
    kind: Kind,
    confirm: Option<Confirm>,
    /// When a JetStream ack still awaited counts as lost.
    deadline: Option<tokio::time::Instant>,
    /// A Core publish made at this connection generation, awaiting a round trip.
    sent: Option<u64>,
}

impl InFlight {
    /// An entry for a source message, or its last part, without an output to confirm (filtered,
    /// skipped, or replayed for another pipeline).
    fn marker(seq: u64, last: bool, ack: AckToken) -> Self {
        Self {
            seq,
            last,
            ack,
            kind: Kind::Marker,
            confirm: None,
            deadline: None,
            sent: None,
        }
    }
}

/// One output of a source message, kept until confirmed.
struct Output {
    index: usize,
    /// The source message (a refusal by the sink dead-letters it).
    source: Arc<SourceMessage>,
    subject: Subject,
    /// Headers from the steps, or `None` for the source message's own (a passthrough); the
    /// output's own are added when sending.
    carried: Option<Option<HeaderMap>>,
    payload: Bytes,
}

/// What to publish again if the confirmation fails.
enum Kind {
    /// A message without outputs (filtered or skipped).
    Marker,
    Output(Output),
    DeadLetter {
        message: Arc<SourceMessage>,
        step: String,
        kind: &'static str,
        error: String,
    },
}

impl InFlight {
    /// Records how `confirmation` will come.
    fn awaits(&mut self, confirmation: Confirmation) {
        self.deadline = None;
        (self.confirm, self.sent) = match confirmation {
            Confirmation::Done => (None, None),
            Confirmation::Sent { generation } => (None, Some(generation)),
            Confirmation::Reply { token, deadline } => {
                self.deadline = Some(deadline);
                (Some(Confirm::Reply(token)), None)
            }
            Confirmation::Ack { deadline, .. } => {
                self.deadline = Some(deadline);
                let future: AckFuture = Box::pin(confirmation.wait());
                (Some(Confirm::Future(future)), None)
            }
        };
    }
}

/// The payload bytes an entry keeps alive: its output's payload, plus the source message's
/// payload for the first output of a message when the output is not that payload itself (a
/// pass-through output shares it), or the failed message of a dead letter. A marker keeps
/// nothing.
fn weight(kind: &Kind) -> usize {
    match kind {
        Kind::Marker => 0,
        Kind::Output(output) => {
            let source = &output.source.payload;
            let shared = output.payload.as_ptr() == source.as_ptr();
            output.payload.len()
                + if output.index == 0 && !shared {
                    source.len()
                } else {
                    0
                }
        }
        Kind::DeadLetter { message, .. } => message.payload.len(),
    }
}

/// The split's unconfirmed entries, in order, with the payload bytes they keep alive.
#[derive(Default)]
struct Window {
    entries: VecDeque<InFlight>,
    bytes: usize,
}

impl Window {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: VecDeque::with_capacity(capacity),
            bytes: 0,
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn front(&self) -> Option<&InFlight> {
        self.entries.front()
    }

    fn front_mut(&mut self) -> Option<&mut InFlight> {
        self.entries.front_mut()
    }

    fn push_back(&mut self, entry: InFlight) {
        self.bytes += weight(&entry.kind);
        self.entries.push_back(entry);
    }

    fn push_front(&mut self, entry: InFlight) {
        self.bytes += weight(&entry.kind);
        self.entries.push_front(entry);
    }

    fn pop_front(&mut self) -> Option<InFlight> {
        let entry = self.entries.pop_front()?;
        self.bytes -= weight(&entry.kind);
        Some(entry)
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    fn iter(&self) -> impl Iterator<Item = &InFlight> {
        self.entries.iter()
    }

    /// Entries are changed in place only in how they await confirmation, never in what they
    /// weigh.
    fn iter_mut(&mut self) -> impl Iterator<Item = &mut InFlight> {
        self.entries.iter_mut()
    }
}

impl std::ops::Index<usize> for Window {
    type Output = InFlight;

    fn index(&self, index: usize) -> &InFlight {
        &self.entries[index]
    }
}

impl std::ops::IndexMut<usize> for Window {
    fn index_mut(&mut self, index: usize) -> &mut InFlight {
        &mut self.entries[index]
    }
}

/// What the window yielded.
#[derive(Default)]
struct Confirmed {
    advanced: Option<(u64, AckToken)>,
    outputs: u64,
    bytes: u64,
    failed: Option<Box<(InFlight, PublishError)>>,
}

/// Pops every confirmed entry at the head of the window.
fn poll_window(window: &mut Window, acks: &mut Acks, cx: &mut Context<'_>) -> Poll<Confirmed> {
    let mut done = Confirmed::default();
    let mut popped = false;
    acks.receive(cx);
    acks.prune(window);
    while let Some(head) = window.front_mut() {
        if head.sent.is_some() {
            // Waits for a round trip (see `SplitTask::round_trip`).
            break;
        }
        let outcome = match head.confirm.as_mut() {
            None => Poll::Ready(Ok(())),
            Some(Confirm::Future(future)) => future.as_mut().poll(cx),
            Some(Confirm::Reply(token)) => match acks.arrived.remove(token) {
                Some(outcome) => Poll::Ready(outcome),
                None if acks.lapsed(head.deadline, cx) => {
                    Poll::Ready(Err(PublishError::new(PublishErrorKind::TimedOut)))
                }
                None => Poll::Pending,
            },
        };
        match outcome {
            Poll::Pending => break,
            Poll::Ready(Err(e)) => {
                let entry = window.pop_front().expect("the head exists");
                done.failed = Some(Box::new((entry, e)));
                return Poll::Ready(done);
            }
            Poll::Ready(Ok(())) => {}
        }
        let entry = window.pop_front().expect("the head exists");
        popped = true;
        complete(&mut done, entry);
    }
    if popped {
        Poll::Ready(done)
    } else {
        Poll::Pending
    }
}

fn complete(done: &mut Confirmed, entry: InFlight) {
    if let Kind::Output(output) = &entry.kind {
        done.outputs += 1;
        done.bytes += output.payload.len() as u64;
    }
    if entry.last {
        done.advanced = Some((entry.seq, entry.ack));
    }
}

enum Event {
    Window(Confirmed),
    Control(Control),
    Cancel,
    /// Reading may go on (checkpoints are committed again).
    Resumed,
    Received(usize),
}

/// A split task's state.
pub struct SplitTask<S> {
    shared: Arc<Shared<S>>,
    name: String,
    ids: MessageIds,
    metrics: SplitMetrics,
    window: Window,
    snapshot: SplitSnapshot,
    /// Runs the steps with a time budget per message (none without steps).
    evaluator: Option<Evaluator>,
    skipped_since_log: u64,
    last_skip_log: Option<Instant>,
    /// The payload size of the last message taken, to count the byte budget in messages.
    last_size: usize,
    /// The split's publish acks.
    acks: Acks,
    /// The source sequence of the last message an output of which the sink refused: the
    /// message gets one outcome of the error policy, however many of its outputs are refused.
    refused: Option<u64>,
    /// The subject the sink last admitted for a pass-through output: most outputs of a split
    /// repeat it, and are not checked again (their acks still are).
    admitted: Option<Subject>,
}

impl<S: Sink> SplitTask<S> {
    /// A task for split `name` whose committed state is `committed` (its position, and the
    /// source stream it counts in); the steps get `step_timeout` per message.
    pub fn new(
        shared: Arc<Shared<S>>,
        name: &str,
        ids: MessageIds,
        metrics: SplitMetrics,
        committed: SplitSnapshot,
        step_timeout: Duration,
    ) -> Self {
        let capacity = shared.max_pending.min(4096);
        let evaluator = (!shared.steps.is_passthrough()).then(|| {
            Evaluator::new(
                shared.steps.clone(),
                step_timeout,
                shared.budget.clone(),
                name,
                metrics.runaway_evaluations.clone(),
            )
        });
        Self {
            evaluator,
            shared,
            name: name.to_owned(),
            ids,
            metrics,
            window: Window::with_capacity(capacity),
            snapshot: committed,
            skipped_since_log: 0,
            last_skip_log: None,
            last_size: 0,
            acks: Acks::default(),
            refused: None,
            admitted: None,
        }
    }

    /// Runs until `cancel` fires (or the reader ends the split), then drains the window and
    /// returns the final snapshot. A reader that fails fails the split at once
    /// ([`SplitError::Read`]): what it read is not committed, and the split is not finished.
    pub async fn run(
        mut self,
        mut messages: Reads,
        mut control: mpsc::Receiver<Control>,
        cancel: CancellationToken,
    ) -> Result<SplitSnapshot, SplitError> {
        let mut buf: Vec<Read> = Vec::with_capacity(RECEIVE_CHUNK);
        // The received messages, shared with the evaluator thread rather than copied to it.
        let mut received: Vec<Arc<SourceMessage>> = Vec::with_capacity(RECEIVE_CHUNK);
        let mut draining = false;
        let mut paused = self.shared.paused.clone();
        self.acks.replies = self.shared.sink.replies().await;
        loop {
            let room = self.room();
            // Core publishes at the head of the window wait for a round trip: taken when
            // nothing else could move the window on (full, or draining).
            if (room == 0 || draining) && self.window.front().is_some_and(|e| e.sent.is_some()) {
                self.round_trip().await?;
                if draining && self.window.is_empty() {
                    break;
                }
                continue;
            }
            let pause = *paused.borrow_and_update();
            let accepting = !draining && self.snapshot.stopped.is_none() && room > 0 && !pause;
            let (window, acks) = (&mut self.window, &mut self.acks);
            let event = tokio::select! {
                biased;
                done = std::future::poll_fn(|cx| poll_window(window, acks, cx)), if !window.is_empty() => Event::Window(done),
                Some(request) = control.recv() => Event::Control(request),
                _ = cancel.cancelled(), if !draining => Event::Cancel,
                Ok(()) = paused.changed(), if pause => Event::Resumed,
                n = messages.recv_many(&mut buf, room.min(RECEIVE_CHUNK)), if accepting => Event::Received(n),
                else => Event::Cancel,
            };
            match event {
                Event::Resumed => {}
                Event::Window(done) => self.confirmed(done).await?,
                Event::Control(Control::Snapshot(reply)) => {
                    let _ = reply.send(self.take_snapshot().await);
                }
                Event::Cancel => draining = true,
                Event::Received(0) => {
                    // The channel closed without an end of split or a failure (the reader
                    // task panicked): nothing says the split is finished.
                    return Err(SplitError::ReaderLost {
                        split: self.name.clone(),
                    });
                }
                Event::Received(_) => {
                    let (mut end, mut failed) = (false, None);
                    for read in buf.drain(..) {
                        match read {
                            Read::Message(message) => {
                                self.last_size = message.payload.len();
                                received.push(Arc::new(message));
                            }
                            // The split is finished once its window drains.
                            Read::End => end = true,
                            // What was read before the failure is processed first.
                            Read::Failed(source) => {
                                failed = Some(source);
                                break;
                            }
                        }
                    }
                    if let Some(evaluator) = self.evaluator.as_mut() {
                        // Messages replayed for another pipeline are never evaluated: `process`
                        // skips them with the same test.
                        let pipeline = &self.shared.pipeline;
                        evaluator.submit(
                            received
                                .iter()
                                .filter(|m| !replay::for_other(m.headers.as_ref(), pipeline)),
                        );
                    }
                    for message in received.drain(..) {
                        self.process(message).await?;
                        if self.snapshot.stopped.is_some() {
                            break;
                        }
                    }
                    if let Some(source) = failed {
                        return Err(SplitError::Read {
                            split: self.name.clone(),
                            source,
                        });
                    }
                    if end && self.snapshot.stopped.is_none() {
                        self.snapshot.finished = true;
                        draining = true;
                    }
                    received.clear();
                    if let Some(evaluator) = self.evaluator.as_mut() {
                        evaluator.discard();
                    }
                }
            }
            if draining && self.window.is_empty() {
                break;
            }
        }
        self.take_snapshot().await
    }

    /// What sending an entry needs (see [`Sender`]).
    fn sender(&self) -> Sender<'_, S> {
        Sender {
            shared: &self.shared,
            ids: &self.ids,
            replies: self.acks.reply_to(),
        }
    }

    /// How many more messages the window takes now: bounded by `max_pending` entries and by
    /// the split's share of the worker's pending bytes (at most `max_pending_bytes`), the
    /// latter counted in messages of the size last seen. An empty window always takes one.
    fn room(&self) -> usize {
        let entries = self.shared.max_pending.saturating_sub(self.window.len());
        let budget = self
            .shared
            .budget
            .pending_bytes(self.shared.max_pending_bytes)
            .max(1);
        if self.window.bytes >= budget {
            return 0;
        }
        // One message first, to learn their size.
        let bytes = match self.last_size {
            0 => 1,
            size => (budget - self.window.bytes).div_ceil(size),
        };
        entries.min(bytes)
    }

    async fn take_snapshot(&mut self) -> Result<SplitSnapshot, SplitError> {
        // Core publishes count once a round trip confirmed them (dead letters are JetStream
        // publishes, confirmed by their acks in the window).
        self.round_trip().await?;
        Ok(self.snapshot.clone())
    }

    /// Confirms the Core publishes in the window by round trips on their connections, and
    /// moves the position past what they complete. A publish made on an earlier connection
    /// (the connection was replaced since) is sent again and confirmed by the next round trip;
    /// after [`ROUND_TRIP_ATTEMPTS`] failed rounds the split fails.
    async fn round_trip(&mut self) -> Result<(), SplitError> {
        let mut attempt = 0;
        loop {
            if !self.window.iter().any(|e| e.sent.is_some()) {
                return Ok(());
            }
            let sink = self.shared.sink.round_trip().await;
            let mut unconfirmed = 0usize;
            for entry in self.window.iter_mut() {
                let Some(generation) = entry.sent else {
                    continue;
                };
                if matches!(&sink, Ok(Some(g)) if *g == generation) {
                    entry.sent = None;
                } else {
                    unconfirmed += 1;
                }
            }
            // What the window completed now counts (also when some entries must go again).
            let (window, acks) = (&mut self.window, &mut self.acks);
            if let Poll::Ready(done) =
                std::future::poll_fn(|cx| Poll::Ready(poll_window(window, acks, cx))).await
            {
                self.confirmed(done).await?;
            }
            if unconfirmed == 0 {
                return Ok(());
            }
            let error = match sink {
                Err(e) => e,
                Ok(_) => SinkError::Reconnected,
            };
            attempt += 1;
            self.metrics.error(error.category());
            if attempt >= ROUND_TRIP_ATTEMPTS {
                return Err(SplitError::Flush {
                    split: self.name.clone(),
                    source: error,
                });
            }
            tracing::warn!(split = %self.name, unconfirmed, attempt, error = %error, "Core publishes not confirmed; publishing them again");
            tokio::time::sleep(jetflow_nats::backoff(attempt)).await;
            for index in 0..self.window.len() {
                if self.window[index].sent.is_none() {
                    continue;
                }
                let (seq, kind) = (self.window[index].seq, &self.window[index].kind);
                match self.sender().send(seq, kind).await {
                    Ok(confirmation) => self.window[index].awaits(confirmation),
                    // Stays unconfirmed (at its old generation): the next round sends it again.
                    Err(e) => {
                        self.metrics.error(e.category());
                        tracing::warn!(split = %self.name, seq, error = %e, "Core publish failed");
                    }
                }
            }
        }
    }

    async fn confirmed(&mut self, mut done: Confirmed) -> Result<(), SplitError> {
        if let Some(failed) = done.failed.take() {
            let (entry, error) = *failed;
            self.metrics.error("publish_ack");
            let error = unconfirmed(&self.shared, &entry.kind, error).await;
            let delivered = match error.refusal() {
                Some(refusal) => Err((entry, refusal, error)),
                None => {
                    tracing::warn!(split = %self.name, seq = entry.seq, error = %error, "publish not confirmed; publishing again");
                    self.resend_lapsed().await;
                    self.redeliver(entry, error).await?
                }
            };
            let entry = match delivered {
                Ok(entry) => Some(entry),
                Err((entry, refusal, error)) => {
                    let replacement = self.refused(entry, refusal, error).await?;
                    if replacement.is_none() {
                        // Stopped: nothing after the refused message may count as processed.
                        self.window.clear();
                    }
                    replacement
                }
            };
            match entry {
                // Still to be confirmed (a round trip, a dead letter's ack): it stays the head.
                Some(entry) if entry.sent.is_some() || entry.confirm.is_some() => {
                    self.window.push_front(entry);
                }
                Some(entry) => complete(&mut done, entry),
                None => {}
            }
        }
        self.metrics.messages_out.inc_by(done.outputs);
        self.metrics.bytes_out.inc_by(done.bytes);
        if let Some((seq, ack)) = done.advanced {
            self.snapshot.position = seq;
            self.snapshot.ack = ack;
        }
        Ok(())
    }

    /// Publishes again, at once, every output in the window whose ack is overdue: after a
    /// dropped connection none of them will come, and waiting for each in turn at the head of
    /// the window would take one ack timeout per output. (Publishing one whose ack was merely
    /// late is harmless: the sink stream drops it as a duplicate.) One that cannot be sent
    /// keeps its lapsed confirmation and is published again when it reaches the head.
    async fn resend_lapsed(&mut self) {
        let now = tokio::time::Instant::now();
        let mut resent = 0u64;
        for index in 0..self.window.len() {
            if self.window[index].deadline.is_none_or(|d| d > now) {
                continue;
            }
            let (seq, kind) = (self.window[index].seq, &self.window[index].kind);
            match self.sender().send(seq, kind).await {
                Ok(confirmation) => {
                    self.window[index].awaits(confirmation);
                    resent += 1;
                }
                Err(e) => {
                    self.metrics.error(e.category());
                    break;
                }
            }
        }
        if resent > 0 {
            tracing::info!(split = %self.name, resent, "published again every output whose ack was overdue");
        }
    }

    /// Publishes a failed entry again until it is confirmed (`Ok(Ok)`), refused for good
    /// (`Ok(Err)`: for the error policy), or gives up (an error).
    async fn redeliver(&mut self, mut entry: InFlight, mut last: SinkError) -> Redelivered {
        let shared = Arc::clone(&self.shared);
        for attempt in 1..=PUBLISH_ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(100u64 << attempt)).await;
            match self.sender().send(entry.seq, &entry.kind).await {
                Ok(confirmation @ Confirmation::Sent { .. }) => {
                    // A Core publish: confirmed by the window's next round trip.
                    entry.awaits(confirmation);
                    return Ok(Ok(entry));
                }
                Ok(confirmation) => {
                    let confirmed = match confirmation {
                        // Its ack comes to the split's reply inbox.
                        Confirmation::Reply { token, deadline } => {
                            self.acks.wait(token, deadline).await
                        }
                        confirmation => confirmation.wait().await,
                    };
                    match confirmed {
                        Ok(()) => {
                            entry.confirm = None;
                            entry.sent = None;
                            return Ok(Ok(entry));
                        }
                        Err(source) => last = unconfirmed(&shared, &entry.kind, source).await,
                    }
                }
                Err(e) => last = e,
            }
            self.metrics.error(last.category());
            if let Some(refusal) = last.refusal() {
                return Ok(Err((entry, refusal, last)));
            }
            tracing::warn!(split = %self.name, seq = entry.seq, attempt, error = %last, "publish failed again");
        }
        Err(SplitError::Deliver {
            split: self.name.clone(),
            seq: entry.seq,
            source: last,
        })
    }

    /// Sends an entry; a publish that cannot even be sent is retried like a failed ack.
    async fn push(&mut self, mut entry: InFlight) -> Result<(), SplitError> {
        match self.sender().send(entry.seq, &entry.kind).await {
            Ok(confirmation) => entry.awaits(confirmation),
            Err(e) => {
                self.metrics.error(e.category());
                let delivered = match e.refusal() {
                    Some(refusal) => Err((entry, refusal, e)),
                    None if matches!(e, SinkError::Publish { .. } | SinkError::Confirm { .. }) => {
                        self.redeliver(entry, e).await?
                    }
                    None => {
                        return Err(SplitError::Deliver {
                            split: self.name.clone(),
                            seq: entry.seq,
                            source: e,
                        });
                    }
                };
                entry = match delivered {
                    Ok(entry) => entry,
                    Err((entry, refusal, error)) => {
                        match self.refused(entry, refusal, error).await? {
                            Some(replacement) => replacement,
                            None => return Ok(()),
                        }
                    }
                };
            }
        }
        self.window.push_back(entry);
        Ok(())
    }

    /// Takes a message from another incarnation of the source stream: adopted when the
    /// committed position has no stream on record and the reader found nothing recreated,
    /// otherwise the position starts anew once the earlier stream's outputs are confirmed.
    async fn switch_stream(&mut self, stream: Incarnation) -> Result<(), SplitError> {
        if self.snapshot.stream_created.is_none() && !stream.recreated {
            self.snapshot.stream_created = stream.created;
            return Ok(());
        }
        let Some(created) = stream.created else {
            return Ok(());
        };
        while !self.window.is_empty() {
            let (window, acks) = (&mut self.window, &mut self.acks);
            let done = std::future::poll_fn(|cx| poll_window(window, acks, cx)).await;
            self.confirmed(done).await?;
        }
        tracing::warn!(
            split = %self.name,
            previous_position = self.snapshot.position,
            created = %created,
            "source stream recreated: the position starts anew on the new stream"
        );
        self.snapshot.recreated = Some(StreamRecreated {
            detected: jiff::Timestamp::now(),
            previous_created: self.snapshot.stream_created,
            previous_position: self.snapshot.position,
        });
        self.snapshot.position = 0;
        self.snapshot.ack = AckToken::default();
        self.snapshot.stream_created = Some(created);
        self.ids = self.ids.on_stream(created);
        Ok(())
    }

    /// Applies the error policy to the source message of an output the sink refused for good
    /// (it will never take it: too large, or its stream is full and discards new messages).
    /// Returns what stands for the message in the window instead: its dead letter (`Dlq`), a
    /// marker (`Skip`), or nothing (`Stop`: the split stops before the message, recorded in its
    /// snapshot).
    async fn refused(
        &mut self,
        entry: InFlight,
        refusal: Refusal,
        error: SinkError,
    ) -> Result<Option<InFlight>, SplitError> {
        let InFlight {
            seq,
            last,
            ack,
            kind,
            ..
        } = entry;
        let Kind::Output(output) = kind else {
            // A dead letter the sink refused: nowhere left to set the message aside.
            return Err(SplitError::Deliver {
                split: self.name.clone(),
                seq,
                source: error,
            });
        };
        if self.refused == Some(seq) {
            // Another output of a message already set aside (a fan-out): it stands for nothing.
            tracing::debug!(split = %self.name, seq, index = output.index, kind = refusal.kind(), "another output of a refused message refused");
            return Ok(Some(InFlight::marker(seq, last, ack)));
        }
        self.refused = Some(seq);
        // The sink's routing may have changed: subjects are checked afresh.
        self.admitted = None;
        self.metrics.error("sink_refused");
        let text = error.to_string();
        match self.shared.policy {
            ErrorAction::Dlq => {
                tracing::warn!(split = %self.name, seq, kind = refusal.kind(), error = %text, "the sink refused a message; sending it to the dead-letter subject");
                self.metrics.error("dead_letter");
                let mut dead = InFlight {
                    seq,
                    last,
                    ack,
                    kind: Kind::DeadLetter {
                        message: output.source,
                        step: "sink".to_owned(),
                        kind: refusal.kind(),
                        error: text,
                    },
                    confirm: None,
                    deadline: None,
                    sent: None,
                };
                match self.sender().send(seq, &dead.kind).await {
                    Ok(confirmation) => dead.awaits(confirmation),
                    Err(source) => {
                        return Err(SplitError::Deliver {
                            split: self.name.clone(),
                            seq,
                            source,
                        });
                    }
                }
                Ok(Some(dead))
            }
            ErrorAction::Skip => {
                self.metrics.error("skipped");
                tracing::warn!(split = %self.name, seq, kind = refusal.kind(), error = %text, "the sink refused a message; skipping it");
                Ok(Some(InFlight::marker(seq, last, ack)))
            }
            ErrorAction::Stop => {
                tracing::error!(split = %self.name, seq, kind = refusal.kind(), error = %text, "split stopped: the sink refused a message and the error policy is Stop; the last good position is kept");
                self.metrics.stopped.set(1);
                self.snapshot.stopped = Some(format!(
                    "message {seq} refused by the sink: {}: {text}",
                    refusal.kind()
                ));
                Ok(None)
            }
        }
    }

    async fn process(&mut self, message: Arc<SourceMessage>) -> Result<(), SplitError> {
        if message.stream.created != self.snapshot.stream_created {
            self.switch_stream(message.stream).await?;
        }
        self.metrics.messages_in.inc();
        self.metrics.bytes_in.inc_by(message.payload.len() as u64);
        let shared = Arc::clone(&self.shared);
        if replay::for_other(message.headers.as_ref(), &shared.pipeline) {
            // A dead letter replayed for the pipeline it came from: processed here without
            // outputs, as a filtered message.
            self.metrics.skipped_replay.inc();
            self.window
                .push_back(InFlight::marker(message.seq, true, message.ack.clone()));
            return Ok(());
        }
        if shared.steps.is_passthrough() {
            // Bytes pass through untouched: no parse, no copy.
            let rendered = if shared.template.is_identity() {
                Ok(message.subject.clone())
            } else {
                shared
                    .template
                    .render_subject(&message.subject)
                    .map(Subject::from)
            };
            let subject = match rendered {
                Ok(s) => s,
                Err(e) => {
                    let text = e.to_string();
                    return self.failed(message, "sink.subject", "template", text).await;
                }
            };
            if self.admitted.as_ref() != Some(&subject) {
                if let Err(error) = admit(&shared.sink, &subject).await {
                    return self.refuse(message, error).await;
                }
                self.admitted = Some(subject.clone());
            }
            let (seq, ack, payload) = (message.seq, message.ack.clone(), message.payload.clone());
            return self
                .push(InFlight {
                    seq,
                    last: true,
                    ack,
                    kind: Kind::Output(Output {
                        index: 0,
                        source: message,
                        subject,
                        carried: None,
                        payload,
                    }),
                    confirm: None,
                    deadline: None,
                    sent: None,
                })
                .await;
        }

        let outputs = match self.evaluator.as_mut() {
            Some(evaluator) => evaluator.next().await.expect("every message was submitted"),
            None => evaluate(&shared.steps, &message, &AtomicUsize::new(0)),
        };
        let outputs = match outputs {
            Ok(outputs) => outputs,
            Err(failure) => {
                return self
                    .failed(
                        message,
                        &failure.name,
                        failure.kind.as_str(),
                        failure.message,
                    )
                    .await;
            }
        };
        // Render every subject first, so a message either goes out whole or fails whole.
        let mut rendered = Vec::with_capacity(outputs.len());
        for output in &outputs {
            // A sink template never reads the payload.
            match shared
                .template
                .render(&output.subject, &[])
                .map(Subject::from)
            {
                Ok(s) => rendered.push(s),
                Err(e) => {
                    let text = e.to_string();
                    return self.failed(message, "sink.subject", "template", text).await;
                }
            }
        }
        if outputs.is_empty() {
            // Filtered out: processed once everything before it is.
            self.window
                .push_back(InFlight::marker(message.seq, true, message.ack.clone()));
            return Ok(());
        }
        // Every output is checked before any is published (subjects, routing, sizes), so
        // that what the worker can tell fails the message whole; see `admit_all`.
        if let Err(error) = Self::admit_all(&shared, &self.ids, &message, &outputs, &rendered).await
        {
            return self.refuse(message, error).await;
        }
        let count = outputs.len();
        for (index, (output, subject)) in outputs.into_iter().zip(rendered).enumerate() {
            // A fan-out fills the window one output at a time, within its bounds.
            self.make_room().await?;
            if self.snapshot.stopped.is_some() || self.refused == Some(message.seq) {
                // An earlier output was refused: the message has had its outcome.
                break;
            }
            let last = index + 1 == count;
            self.push(InFlight {
                seq: message.seq,
                last,
                ack: if last {
                    message.ack.clone()
                } else {
                    AckToken::default()
                },
                kind: Kind::Output(Output {
                    index,
                    source: message.clone(),
                    subject,
                    carried: match output.headers {
                        OutputHeaders::Unchanged => None,
                        OutputHeaders::Changed(headers) => Some(headers.as_ref().map(nats_headers)),
                    },
                    payload: output.payload,
                }),
                confirm: None,
                deadline: None,
                sent: None,
            })
            .await?;
        }
        Ok(())
    }

    /// Checks every output of a message before any is published: its subject can be
    /// published on and the sink takes it ([`Sink::admit`]: the sink stream captures it), and,
    /// for a message of several outputs, each fits the sink's size limit with its headers (the
    /// server's `max_payload`, or the sink stream's `maxMsgSize` as last read; a single output
    /// that does not is refused when sent, which fails its message whole as well). Refusals only
    /// the server can make (a full sink stream, an ack from another stream) come after some
    /// outputs may have been stored: see [`SplitTask::refused`].
    async fn admit_all(
        shared: &Shared<S>,
        ids: &MessageIds,
        message: &SourceMessage,
        outputs: &[jetflow_steps::Output],
        subjects: &[Subject],
    ) -> Result<(), SinkError> {
        let mut previous: Option<&Subject> = None;
        for subject in subjects {
            // Fan-outs mostly repeat one subject: checked once.
            if previous != Some(subject) {
                admit(&shared.sink, subject).await?;
                previous = Some(subject);
            }
        }
        let Some(limit) = shared.sink.size_limit() else {
            return Ok(());
        };
        if outputs.len() < 2 {
            return Ok(());
        }
        let source_headers = message.headers.as_ref().map_or(0, wire_len);
        for (index, output) in outputs.iter().enumerate() {
            let carried = match &output.headers {
                OutputHeaders::Unchanged => source_headers,
                OutputHeaders::Changed(None) => 0,
                OutputHeaders::Changed(Some(headers)) => headers
                    .iter()
                    .map(|(name, value)| name.len() + value.len() + 4)
                    .sum::<usize>(),
            };
            // jetflow's own headers (message id, source) take far less than this: only an
            // output near the limit has its headers built to be measured.
            let bound = output.payload.len() + carried + 1024 + 2 * message.subject.len();
            if bound <= limit.bytes {
                continue;
            }
            let own = match &output.headers {
                OutputHeaders::Unchanged => None,
                OutputHeaders::Changed(headers) => Some(headers.as_ref().map(nats_headers)),
            };
            let headers = output_headers(
                own.as_ref()
                    .map_or(message.headers.as_ref(), Option::as_ref),
                ids.id(message.seq, index),
                &shared.source,
                &message.subject,
                message.seq,
            );
            let size = output.payload.len() + wire_len(&headers);
            if size > limit.bytes {
                return Err(SinkError::TooLarge { index, size, limit });
            }
        }
        Ok(())
    }

    /// Applies the error policy to a message whose outputs the sink refused before any was
    /// published: a failure of the step `sink` with the refusal's kind.
    async fn refuse(
        &mut self,
        message: Arc<SourceMessage>,
        error: SinkError,
    ) -> Result<(), SplitError> {
        let kind = error.refusal().map_or("publish", Refusal::kind);
        tracing::warn!(split = %self.name, seq = message.seq, kind, error = %error, policy = ?self.shared.policy, "the sink refuses a message's output; the error policy applies to the message");
        self.failed(message, "sink", kind, error.to_string()).await
    }

    /// Waits until the window has room for one more output (in entries and in bytes), taking
    /// the confirmations that make it: a fan-out (one message, many outputs) stays within the
    /// window's bounds as a stream of single messages does. An empty window always has room.
    async fn make_room(&mut self) -> Result<(), SplitError> {
        loop {
            let bytes = self
                .shared
                .budget
                .pending_bytes(self.shared.max_pending_bytes)
                .max(1);
            if self.window.is_empty()
                || (self.window.len() < self.shared.max_pending && self.window.bytes < bytes)
            {
                return Ok(());
            }
            if self.window.front().is_some_and(|e| e.sent.is_some()) {
                // Core publishes: confirmed by a round trip.
                self.round_trip().await?;
                continue;
            }
            let (window, acks) = (&mut self.window, &mut self.acks);
            let done = std::future::poll_fn(|cx| poll_window(window, acks, cx)).await;
            self.confirmed(done).await?;
        }
    }

    /// Applies the error policy to a message that failed.
    async fn failed(
        &mut self,
        message: Arc<SourceMessage>,
        step: &str,
        kind: &'static str,
        error: String,
    ) -> Result<(), SplitError> {
        self.metrics.error(match kind {
            "parse" => "step_parse",
            "eval" => "step_eval",
            "timeout" => "step_timeout",
            "template" => "template",
            // A refusal found before publishing (see `refuse`).
            _ => "sink_refused",
        });
        match self.shared.policy {
            ErrorAction::Dlq => {
                tracing::debug!(split = %self.name, seq = message.seq, step, kind, error = %error, "message failed; sending it to the dead-letter subject");
                self.metrics.error("dead_letter");
                let seq = message.seq;
                let ack = message.ack.clone();
                self.push(InFlight {
                    seq,
                    last: true,
                    ack,
                    kind: Kind::DeadLetter {
                        message,
                        step: step.to_owned(),
                        kind,
                        error,
                    },
                    confirm: None,
                    deadline: None,
                    sent: None,
                })
                .await
            }
            ErrorAction::Skip => {
                self.metrics.error("skipped");
                self.skipped_since_log += 1;
                let due = self
                    .last_skip_log
                    .is_none_or(|t| t.elapsed() >= SKIP_LOG_INTERVAL);
                if due {
                    tracing::warn!(split = %self.name, seq = message.seq, step, kind, error = %error, skipped = self.skipped_since_log, "skipping messages that fail");
                    self.skipped_since_log = 0;
                    self.last_skip_log = Some(Instant::now());
                }
                self.window
                    .push_back(InFlight::marker(message.seq, true, message.ack.clone()));
                Ok(())
            }
            ErrorAction::Stop => {
                let reason = format!(
                    "message {} failed in step {step}: {kind}: {error}",
                    message.seq
                );
                tracing::error!(split = %self.name, seq = message.seq, step, kind, error = %error, "split stopped: a message failed and the error policy is Stop; the last good position is kept");
                self.metrics.stopped.set(1);
                self.snapshot.stopped = Some(reason);
                Ok(())
            }
        }
    }
}

/// What sending an entry needs, borrowed from the task's fields rather than `&SplitTask`: the
/// task's window holds futures that are `Send` but not `Sync`, so `&SplitTask` cannot cross an
/// await.
struct Sender<'a, S> {
    shared: &'a Shared<S>,
    ids: &'a MessageIds,
    replies: Option<&'a ReplyTo>,
}

impl<S: Sink> Sender<'_, S> {
    /// Sends (again) what an entry stands for.
    async fn send(self, seq: u64, kind: &Kind) -> Result<Confirmation, SinkError> {
        let Self {
            shared,
            ids,
            replies,
        } = self;
        match kind {
            Kind::Marker => Ok(Confirmation::Done),
            Kind::Output(output) => send_output(shared, ids, replies, seq, output).await,
            Kind::DeadLetter {
                message,
                step,
                kind,
                error,
            } => {
                let failure = Failure {
                    step,
                    kind,
                    message: error,
                };
                shared
                    .dead_letters
                    .send(
                        message,
                        &shared.source,
                        ids.dead_letter_id(message.seq),
                        failure,
                    )
                    .await
            }
        }
    }
}

async fn send_output<S: Sink>(
    shared: &Shared<S>,
    ids: &MessageIds,
    replies: Option<&ReplyTo>,
    seq: u64,
    output: &Output,
) -> Result<Confirmation, SinkError> {
    let carried = match &output.carried {
        Some(own) => own.as_ref(),
        None => output.source.headers.as_ref(),
    };
    let headers = output_headers(
        carried,
        ids.id(seq, output.index),
        &shared.source,
        &output.source.subject,
        seq,
    );
    shared
        .sink
        .send(
            OutputMessage {
                subject: output.subject.clone(),
                headers,
                payload: output.payload.clone(),
            },
            replies,
        )
        .await
}

/// Checks that an output on `subject` can be published and that the sink takes it.
async fn admit<S: Sink>(sink: &S, subject: &str) -> Result<(), SinkError> {
    check_publish_subject(subject).map_err(|reason| SinkError::InvalidSubject {
        subject: quoted(subject),
        reason,
    })?;
    sink.admit(subject).await
}

/// The error of an entry whose confirmation failed with `source`: for an output, as the sink
/// names it (a refusal where it can never take it); for a dead letter, "no stream" named as
/// such.
async fn unconfirmed<S: Sink>(shared: &Shared<S>, kind: &Kind, source: PublishError) -> SinkError {
    match kind {
        Kind::DeadLetter { .. } => shared.dead_letters.publish_error(source),
        Kind::Output(output) => shared.sink.unconfirmed(&output.subject, source).await,
        Kind::Marker => SinkError::Confirm {
            subject: String::new(),
            source,
        },
    }
}

#[cfg(test)]
mod tests;
