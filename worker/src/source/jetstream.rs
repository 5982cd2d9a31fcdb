//! The JetStream source: one durable pull consumer per split, read through the consumer's
//! message stream (batches with expiry and idle heartbeats).
//!
//! The consumer's configuration and the rule for keeping a live one are not defined here but in
//! `jetflow_nats::consumer`, shared with the operator (which creates the consumers before any
//! worker runs): on a `Limits` stream no acknowledgements at all (the server keeps no pending
//! state; [`consumer::Acks::None`]), on streams whose retention needs them cumulative acks after
//! each checkpoint; state in memory. Where a split starts comes from jetflow's checkpoint, not
//! from the consumer: a consumer that is missing, whose settings cannot be changed in place, or
//! whose state disagrees with the committed position (it delivered past it, so it would skip
//! messages, or holds redeliveries back) is deleted and created again at position + 1; one that
//! agrees (such as the operator's) is read as it is.
//!
//! A consumer without acks never sends a message twice, so a delivery lost on the way (the
//! connection dropped with messages in flight) must be noticed by the reader: every delivery
//! counts one consumer sequence, and a message whose consumer sequence is not the next one, or a
//! consumer that has counted more deliveries than arrived while the split is idle, means
//! messages were lost. The reader then makes the consumer again after the last message it
//! yielded (counted in `jetflow_worker_errors_total{category="lost_delivery"}`); nothing is
//! skipped.
//!
//! Errors are handled by kind: a missed heartbeat or a failed pull is counted and the stream
//! goes on; a deleted consumer (or an ended stream), found by the error or by the idle check,
//! makes the reader recreate the consumer (after the last message it yielded without acks, at
//! the committed position with them). Lookups that fail are retried with a capped backoff, so a
//! split rides out a JetStream restart. The reader drops every message at or below the last
//! position it yielded (redeliveries).
//!
//! Positions are stream sequences, and a stream deleted and created again under the same name
//! counts them anew. So every open looks the stream up afresh and compares its creation time
//! with the one the committed position counts in (kept in the checkpoint, or adopted from the
//! live stream for a checkpoint of an older release): on another incarnation the committed
//! position means nothing, and the split starts again at the spec's start on the new stream,
//! its messages marked as from a recreated stream ([`Incarnation::recreated`]) so that the
//! split task starts its position anew instead of taking them for redeliveries.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::consumer::pull::{self, MessagesErrorKind};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::message::Acker;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use jetflow_crds::pipeline::StartPosition;
use jetflow_crds::split::Split;
use jetflow_nats::consumer::{self, Acks, Verdict};
use tokio::time::Instant;

use super::{AckToken, GapSlot, Incarnation, SourceAcker, SourceError, SourceMessage, SplitReader};
use crate::budget::Budget;
use crate::metrics::SplitMetrics;
use jetflow_crds::checkpoint::RetentionGap;

pub use jetflow_nats::consumer::{MAX_ACK_PENDING, Start};

/// How long a split may go without a message before the reader asks its consumer whether
/// deliveries were lost or the consumer is gone.
const IDLE_CHECK: Duration = Duration::from_secs(2);

/// What a message may carry beyond the server's `max_payload` (its subject and reply subject)
/// in the server's count of a pull's bytes.
const PULL_MARGIN: usize = 64 << 10;

/// The byte limit of a pull that any message the server takes fits: a message larger than a
/// pull's limit is never delivered to it.
pub fn pull_bytes_for_any(max_payload: usize) -> usize {
    max_payload + PULL_MARGIN
}

/// Settings of a split's pulls, and the checkpoint interval its consumer is made for.
#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    /// The pipeline's checkpoint interval (the consumer's ack wait follows from it).
    pub checkpoint_interval: Duration,
    /// Messages per pull request.
    pub batch: usize,
    /// Expiry of a pull request.
    pub expires: Duration,
    /// Idle heartbeat of a pull request.
    pub heartbeat: Duration,
    /// The worker's byte budget: a pull asks for the split's share of it
    /// ([`Budget::pull_bytes`]).
    pub budget: Budget,
}

impl ConsumerSettings {
    /// The settings for a checkpoint interval and batch size, with pulls sized by `budget`.
    pub fn new(checkpoint_interval: Duration, batch: usize, budget: Budget) -> Self {
        Self {
            checkpoint_interval,
            batch: batch.max(1),
            expires: Duration::from_secs(10),
            heartbeat: Duration::from_secs(3),
            budget,
        }
    }
}

/// Makes sure the split's consumer exists and can be read on from `start`, as the shared rule
/// ([`consumer::judge`]) says: used as it is, updated in place, or deleted and created again at
/// `start`. The configuration is the shared one ([`consumer::config`]), so a consumer the
/// operator created is used as it is.
pub async fn ensure_consumer(
    js: &jetstream::Context,
    stream: &jetstream::stream::Stream,
    name: &str,
    split: &Split,
    start: &Start,
    settings: &ConsumerSettings,
) -> Result<PullConsumer, SourceError> {
    let acks = Acks::for_retention(stream.cached_info().config.retention);
    let config = consumer::config(name, split, start, acks, settings.checkpoint_interval)
        .map_err(|source| SourceError::ConsumerConfig { source })?;
    let create_error = |source| SourceError::CreateConsumer {
        split: split.name.clone(),
        consumer: name.to_owned(),
        source,
    };
    match stream.consumer_info(name).await {
        Ok(info) => match consumer::judge(&info, &config, start) {
            Verdict::Use => {
                tracing::debug!(split = %split.name, consumer = name, "consumer agrees with the checkpoint");
                let cached = consumer::update_of(&info.config, &config);
                return Ok(jetstream::consumer::Consumer::new(cached, info, js.clone()));
            }
            Verdict::Update => {
                tracing::info!(split = %split.name, consumer = name, "updating the consumer's settings in place");
                return stream
                    .update_consumer(consumer::update_of(&info.config, &config))
                    .await
                    .map_err(|source| SourceError::UpdateConsumer {
                        split: split.name.clone(),
                        consumer: name.to_owned(),
                        source,
                    });
            }
            Verdict::Recreate(why) => {
                tracing::info!(
                    split = %split.name,
                    consumer = name,
                    why,
                    ack_floor = info.ack_floor.stream_sequence,
                    delivered = info.delivered.stream_sequence,
                    start = ?start,
                    "consumer cannot be read on as it is; recreating it"
                );
                stream.delete_consumer(name).await.map_err(|source| {
                    SourceError::DeleteConsumer {
                        split: split.name.clone(),
                        consumer: name.to_owned(),
                        source,
                    }
                })?;
            }
        },
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {
            tracing::info!(split = %split.name, consumer = name, start = ?start, "creating consumer");
        }
        Err(source) => {
            return Err(SourceError::ConsumerInfo {
                split: split.name.clone(),
                consumer: name.to_owned(),
                source,
            });
        }
    }
    stream.create_consumer(config).await.map_err(create_error)
}

/// Reads one split of a JetStream source.
pub struct JetStreamReader {
    js: jetstream::Context,
    stream_name: String,
    stream: Option<jetstream::stream::Stream>,
    split: Split,
    consumer: String,
    settings: ConsumerSettings,
    spec_start: StartPosition,
    committed: Arc<AtomicU64>,
    committed_created: Arc<AtomicI64>,
    incarnation: Incarnation,
    messages: Option<pull::Stream>,
    acks: Acks,
    /// Deliveries received from the current consumer (its consumer sequence), shared with a
    /// bounded reader's end check.
    delivered: Arc<AtomicU64>,
    /// When the split last received a message or checked its consumer.
    quiet_since: Instant,
    last_seen: u64,
    first_seen: Option<u64>,
    metrics: SplitMetrics,
    failures: u32,
    /// The byte limit of the current pulls.
    pull_bytes: usize,
    /// Set once a message larger than the split's share of the pull budget held the split up:
    /// from then on its pulls fit any message the server takes.
    large_messages: bool,
    /// Messages waited at the last idle check while none arrived (a reader that was itself
    /// held up, behind a full channel, may meet its first check at once: a second says more).
    held_up: bool,
    /// Where the last retention gap found is recorded for the checkpoint.
    gap: GapSlot,
    /// The last sequence of the last gap reported (a gap is reported once).
    gap_reported: u64,
}

impl JetStreamReader {
    /// A reader of `split` in `stream_name` through the consumer `consumer`. `committed` is the
    /// split's committed position (0: none), updated by the runner after each checkpoint; the
    /// consumer is (re)created after it. `committed_created` is the creation time of the
    /// stream that position counts in ([`created_nanos`]; 0: unknown), stored by the runner
    /// after the position.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        js: jetstream::Context,
        stream_name: &str,
        split: Split,
        consumer: String,
        settings: ConsumerSettings,
        spec_start: StartPosition,
        committed: Arc<AtomicU64>,
        committed_created: Arc<AtomicI64>,
        metrics: SplitMetrics,
    ) -> Self {
        let last_seen = committed.load(Ordering::Acquire);
        let incarnation = Incarnation {
            created: from_nanos(committed_created.load(Ordering::Acquire)),
            recreated: false,
        };
        Self {
            js,
            stream_name: stream_name.to_owned(),
            stream: None,
            split,
            consumer,
            settings,
            spec_start,
            committed,
            committed_created,
            incarnation,
            messages: None,
            acks: Acks::None,
            delivered: Arc::default(),
            quiet_since: Instant::now(),
            last_seen,
            first_seen: None,
            metrics,
            failures: 0,
            pull_bytes: 0,
            large_messages: false,
            held_up: false,
            gap: GapSlot::default(),
            gap_reported: 0,
        }
    }

    /// Records the retention gaps this reader finds in `gap`.
    pub fn recording_gaps(mut self, gap: GapSlot) -> Self {
        self.gap = gap;
        self
    }

    /// Reports the messages the stream's retention removed between the position the split
    /// resumes after and the stream's first sequence: counted, logged with the range, and
    /// recorded for the checkpoint. The consumer starts at the first message left, so they
    /// are never read.
    fn retention_gap(&mut self, start: &Start, first_sequence: u64) {
        let Start::After(position) = start else {
            return;
        };
        let first = position + 1;
        if first >= first_sequence || first_sequence - 1 <= self.gap_reported {
            return;
        }
        let gap = RetentionGap {
            first: first.max(self.gap_reported + 1),
            last: first_sequence - 1,
            detected: jiff::Timestamp::now(),
        };
        self.gap_reported = gap.last;
        self.metrics.skipped_retention.inc_by(gap.len());
        tracing::warn!(
            split = %self.split.name,
            stream = %self.stream_name,
            first = gap.first,
            last = gap.last,
            sequences = gap.len(),
            "messages removed by the source stream's retention before the split read them (maxAge, maxMsgs, maxBytes or a purge): stream sequences {}..={} are skipped",
            gap.first,
            gap.last,
        );
        if let Ok(mut slot) = self.gap.lock() {
            *slot = Some(gap);
        }
    }

    /// The deliveries received from the current consumer (its consumer sequence), as they are
    /// counted.
    pub fn delivered(&self) -> Arc<AtomicU64> {
        self.delivered.clone()
    }

    /// Where the consumer must start now. Without acks: after the last message yielded, which
    /// is already on its way to the sink. With acks: after the committed position (the
    /// messages in flight come again and are dropped, so that their acks reach the new
    /// consumer); without one, at the first message this reader already saw (so a consumer
    /// lost before the first checkpoint does not skip ahead with `New`), else as the spec says.
    fn start(&self) -> Start {
        if self.acks == Acks::None && self.last_seen > 0 {
            // `last_seen` counts in the stream being read: `open` resets it on a recreation.
            return Start::After(self.last_seen);
        }
        // The creation time first: the runner stores it after the position, so a creation time
        // of this incarnation comes with a position of this incarnation.
        let created = self.committed_created.load(Ordering::Acquire);
        let committed = self.committed.load(Ordering::Acquire);
        let reading = self.incarnation.created.map(created_nanos);
        // A position committed on an earlier incarnation of the stream means nothing here.
        let ours = if self.incarnation.recreated {
            Some(created) == reading
        } else {
            created == 0 || Some(created) == reading
        };
        let committed = if ours { committed } else { 0 };
        match (committed, self.first_seen) {
            (0, Some(first)) => Start::After(first - 1),
            (0, None) => Start::Spec(self.spec_start.clone()),
            (position, _) => Start::After(position),
        }
    }

    async fn open(&mut self) -> Result<(), SourceError> {
        // Looked up afresh on every open: its creation time tells whether it is still the
        // stream the committed position counts in.
        let stream = self
            .js
            .get_stream(&self.stream_name)
            .await
            .map_err(|source| SourceError::GetStream {
                split: self.split.name.clone(),
                stream: self.stream_name.clone(),
                source,
            })?;
        let live = stream_created(stream.cached_info());
        match self.incarnation.created {
            // A new split, or a checkpoint without a creation time: adopted as it is.
            None => self.incarnation.created = Some(live),
            Some(known) if known != live => {
                self.metrics.stream_recreated.inc();
                tracing::warn!(
                    split = %self.split.name,
                    stream = %self.stream_name,
                    previous_created = %known,
                    created = %live,
                    position = self.committed.load(Ordering::Acquire),
                    start = ?self.spec_start,
                    "the source stream was deleted and created again: positions start anew; the split starts at the new stream's start (spec.source.jetstream.start)"
                );
                self.incarnation = Incarnation {
                    created: Some(live),
                    recreated: true,
                };
                self.last_seen = 0;
                self.first_seen = None;
            }
            Some(_) => {}
        }
        self.acks = Acks::for_retention(stream.cached_info().config.retention);
        self.stream = Some(stream.clone());
        let start = self.start();
        self.retention_gap(&start, stream.cached_info().state.first_sequence);
        let consumer = ensure_consumer(
            &self.js,
            &stream,
            &self.consumer,
            &self.split,
            &start,
            &self.settings,
        )
        .await?;
        self.delivered.store(
            consumer.cached_info().delivered.consumer_sequence,
            Ordering::Release,
        );
        let for_any = pull_bytes_for_any(self.js.client().server_info().max_payload);
        let share = self.settings.budget.pull_bytes();
        self.pull_bytes = if self.large_messages {
            share.max(for_any)
        } else {
            share
        };
        let messages = consumer
            .stream()
            .max_messages_per_batch(self.settings.batch)
            .max_bytes_per_batch(self.pull_bytes)
            .expires(self.settings.expires)
            .heartbeat(self.settings.heartbeat)
            .messages()
            .await
            .map_err(|source| SourceError::Pull {
                split: self.split.name.clone(),
                consumer: self.consumer.clone(),
                source,
            })?;
        self.messages = Some(messages);
        self.quiet_since = Instant::now();
        Ok(())
    }

    /// Opens the consumer, retrying with a capped backoff: JetStream may be restarting or the
    /// stream may not exist yet. A consumer the server refuses for a consumer limit (the
    /// stream's `max_consumers` or the account's) does not come back by itself: the split is
    /// blocked (`jetflow_worker_split_blocked`, errors of kind `consumer_limit`) and tried again
    /// at doubling intervals up to [`BLOCKED_RETRY_MAX`], its line logged at the 1st, 2nd,
    /// 4th, 8th … refusal, so that a thousand blocked splits neither flood the log nor the
    /// server. The other splits read on meanwhile.
    async fn open_with_retry(&mut self) {
        loop {
            match self.open().await {
                Ok(()) => {
                    if self.metrics.blocked.get() != 0 {
                        self.metrics.blocked.set(0);
                        tracing::info!(split = %self.split.name, attempts = self.failures + 1, "the split's consumer was created at last; the split reads on");
                    }
                    self.failures = 0;
                    return;
                }
                Err(e) => {
                    self.metrics.error(e.category());
                    self.failures = self.failures.saturating_add(1);
                    let delay = if e.consumer_limit() {
                        self.metrics.blocked.set(1);
                        let delay = blocked_retry(self.failures);
                        if self.failures.is_power_of_two() {
                            tracing::warn!(
                                split = %self.split.name,
                                error = %e,
                                refusals = self.failures,
                                retry_in = ?delay,
                                "split blocked: the server refuses its consumer for a consumer limit (the stream's max_consumers or the account's max consumers); it is not read until a consumer can be made (fewer splits, or a higher limit)"
                            );
                        }
                        delay
                    } else {
                        let delay = jetflow_nats::backoff(self.failures);
                        tracing::warn!(split = %self.split.name, error = %e, retry_in = ?delay, "cannot open split");
                        delay
                    };
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Whether the consumer being read can still serve: its stream not recreated (a consumer
    /// of the same name on a new stream is another consumer), the consumer not deleted,
    /// without acks no delivery lost (it counts no more deliveries than arrived), and nothing
    /// held up by the pulls' size: messages that wait at two idle checks in a row while none
    /// arrive (and acks do not hold them back) may be larger than the split's pulls, which are
    /// then sized for any message from the next open on. A lookup that fails says nothing: the
    /// consumer is kept.
    async fn consumer_serves(&mut self) -> bool {
        let Some(stream) = &self.stream else {
            return false;
        };
        if let Ok(live) = self.js.get_stream(&self.stream_name).await
            && Some(stream_created(live.cached_info())) != self.incarnation.created
        {
            return false;
        }
        match stream.consumer_info(&self.consumer).await {
            Err(e) => e.kind() != ConsumerInfoErrorKind::NotFound,
            Ok(info) => {
                let received = self.delivered.load(Ordering::Acquire);
                if self.acks == Acks::None && info.delivered.consumer_sequence > received {
                    self.lost(received + 1, info.delivered.consumer_sequence);
                    return false;
                }
                let for_any = pull_bytes_for_any(self.js.client().server_info().max_payload);
                let acks_hold = info.config.max_ack_pending > 0
                    && info.num_ack_pending as i64 >= info.config.max_ack_pending;
                let waiting = info.num_pending > 0
                    && !acks_hold
                    && !self.large_messages
                    && self.pull_bytes < for_any;
                if !waiting {
                    self.held_up = false;
                    return true;
                }
                if !self.held_up {
                    // The first sign: looked at again after the next idle period.
                    self.held_up = true;
                    return true;
                }
                tracing::warn!(
                    split = %self.split.name,
                    consumer = %self.consumer,
                    pending = info.num_pending,
                    pull_bytes = self.pull_bytes,
                    "messages wait but none arrive: the next may be larger than the split's pulls; its pulls fit any message from now on"
                );
                self.metrics.error("large_message");
                self.large_messages = true;
                false
            }
        }
    }

    /// Counts and logs deliveries `from..=to` (consumer sequences) that never arrived.
    fn lost(&self, from: u64, to: u64) {
        self.metrics.error("lost_delivery");
        tracing::warn!(
            split = %self.split.name,
            consumer = %self.consumer,
            deliveries = to + 1 - from,
            after = self.last_seen,
            "deliveries were lost on the way; making the consumer again after the last message read"
        );
    }
}

impl SplitReader for JetStreamReader {
    async fn next(&mut self) -> Result<Option<SourceMessage>, SourceError> {
        loop {
            let Some(messages) = self.messages.as_mut() else {
                self.open_with_retry().await;
                continue;
            };
            // The deadline outlives a cancelled call (a bounded reader waits in short steps).
            let next = tokio::time::timeout_at(self.quiet_since + IDLE_CHECK, messages.next());
            let Ok(next) = next.await else {
                self.quiet_since = Instant::now();
                if !self.consumer_serves().await {
                    self.messages = None;
                }
                continue;
            };
            match next {
                Some(Ok(message)) => {
                    self.quiet_since = Instant::now();
                    self.held_up = false;
                    let (seq, delivery, pending) = match message.info() {
                        Ok(info) => (info.stream_sequence, info.consumer_sequence, info.pending),
                        Err(e) => {
                            self.metrics.error("message_info");
                            tracing::warn!(split = %self.split.name, error = %e, "message without JetStream metadata; dropped");
                            continue;
                        }
                    };
                    let received = self.delivered.load(Ordering::Relaxed);
                    if self.acks == Acks::None && delivery != received + 1 {
                        // Deliveries between were lost, and a consumer without acks never
                        // sends them again: this one is dropped too, and read again in order.
                        self.lost(received + 1, delivery.saturating_sub(1).max(received + 1));
                        self.messages = None;
                        continue;
                    }
                    self.delivered.store(delivery, Ordering::Release);
                    if seq <= self.last_seen {
                        // A redelivery of a message already read: its outputs are in flight
                        // or committed.
                        continue;
                    }
                    self.last_seen = seq;
                    self.first_seen.get_or_insert(seq);
                    self.metrics
                        .lag
                        .set(i64::try_from(pending).unwrap_or(i64::MAX));
                    let message = message.message;
                    let ack = match self.acks {
                        Acks::None => AckToken(None),
                        Acks::AfterCheckpoint => AckToken(message.reply),
                    };
                    return Ok(Some(SourceMessage {
                        subject: message.subject,
                        headers: message.headers,
                        payload: message.payload,
                        seq,
                        ack,
                        stream: self.incarnation,
                    }));
                }
                Some(Err(e)) => match e.kind() {
                    MessagesErrorKind::MissingHeartbeat => {
                        self.metrics.error("missed_heartbeat");
                        tracing::warn!(split = %self.split.name, "missed idle heartbeat");
                        if !self.consumer_serves().await {
                            self.messages = None;
                        }
                    }
                    MessagesErrorKind::Pull | MessagesErrorKind::Other => {
                        self.metrics.error("pull");
                        tracing::warn!(split = %self.split.name, error = %e, "pull failed; going on");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    MessagesErrorKind::ConsumerDeleted
                    | MessagesErrorKind::NoResponders
                    | MessagesErrorKind::PushBasedConsumer
                    | MessagesErrorKind::RequestLimitExceeded => {
                        self.metrics.error("consumer_lost");
                        tracing::warn!(split = %self.split.name, error = %e, "consumer lost; recreating it at the checkpoint");
                        self.messages = None;
                    }
                },
                None => {
                    self.metrics.error("consumer_lost");
                    self.messages = None;
                }
            }
        }
    }
}

/// The longest wait between two attempts to create a consumer the server refused for a limit.
pub const BLOCKED_RETRY_MAX: Duration = Duration::from_secs(300);

/// The wait after the `refusals`-th refusal for a consumer limit: 1 s, doubling, up to
/// [`BLOCKED_RETRY_MAX`].
fn blocked_retry(refusals: u32) -> Duration {
    Duration::from_secs(1u64 << refusals.saturating_sub(1).min(9)).min(BLOCKED_RETRY_MAX)
}

/// A stream's creation time, as the checkpoint keeps it.
pub fn stream_created(info: &jetstream::stream::Info) -> jiff::Timestamp {
    jiff::Timestamp::from_nanosecond(info.created.unix_timestamp_nanos())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// A creation time as the runner shares it with the reader: Unix nanoseconds (0: unknown).
pub fn created_nanos(created: jiff::Timestamp) -> i64 {
    i64::try_from(created.as_nanosecond()).unwrap_or(i64::MAX)
}

fn from_nanos(nanos: i64) -> Option<jiff::Timestamp> {
    (nanos != 0)
        .then(|| jiff::Timestamp::from_nanosecond(i128::from(nanos)).ok())
        .flatten()
}

/// Acknowledges JetStream messages (cumulatively, for consumers with `AckPolicy::All`; the
/// messages of a consumer without acks carry no token, and nothing is sent for them).
pub struct JetStreamAcker {
    js: jetstream::Context,
    timeout: Duration,
}

impl JetStreamAcker {
    /// An acker on `js` that waits at most `timeout` for each confirmation.
    pub fn new(js: jetstream::Context, timeout: Duration) -> Self {
        Self { js, timeout }
    }
}

impl SourceAcker for JetStreamAcker {
    fn ack<'a>(&'a self, token: &'a AckToken) -> BoxFuture<'a, Result<(), SourceError>> {
        async move {
            if token.0.is_none() {
                return Ok(());
            }
            let acker = Acker::new(self.js.clone(), token.0.clone());
            match tokio::time::timeout(self.timeout, acker.double_ack()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(source)) => Err(SourceError::Ack { source }),
                Err(elapsed) => Err(SourceError::Ack {
                    source: Box::new(elapsed),
                }),
            }
        }
        .boxed()
    }
}
