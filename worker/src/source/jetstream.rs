//! The JetStream source: one durable pull consumer per split, read through the consumer's
//! message stream (batches with expiry and idle heartbeats).
//!
//! The consumer acknowledges cumulatively (`AckPolicy::All`) and is made to hold everything read
//! between two checkpoints: unlimited ack pending, and an ack wait well above the checkpoint
//! interval. Where a split starts comes from jetflow's checkpoint, not from the consumer: when
//! the consumer is missing, or its state disagrees with the committed position (its ack floor or
//! its delivered sequence differ, so it would either skip messages or hold redeliveries back
//! until its ack wait runs out), it is deleted and created again at position + 1.
//!
//! Errors are handled by kind: a missed heartbeat or a failed pull is counted and the stream
//! goes on; a deleted consumer (or an ended stream) makes the reader recreate the consumer at
//! the committed position. Lookups that fail are retried with a capped backoff, so a split
//! rides out a JetStream restart. The reader drops every message at or below the last position
//! it yielded (redeliveries).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::pull::{self, MessagesErrorKind};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::message::Acker;
use async_nats::jetstream::{self, consumer};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use jetflow_crds::pipeline::{StartFrom, StartPosition};
use jetflow_crds::split::Split;

use super::{AckToken, SourceAcker, SourceError, SourceMessage, SplitReader};
use crate::metrics::SplitMetrics;

pub use jetflow_nats::consumer::MAX_ACK_PENDING;

/// Where a consumer starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// After a committed position (at position + 1).
    After(u64),
    /// As the spec says, for a split without a checkpoint.
    Spec(StartPosition),
}

/// Settings of a split's consumer and pulls.
#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    /// Ack wait: well above the checkpoint interval.
    pub ack_wait: Duration,
    /// Messages per pull request.
    pub batch: usize,
    /// Expiry of a pull request.
    pub expires: Duration,
    /// Idle heartbeat of a pull request.
    pub heartbeat: Duration,
}

impl ConsumerSettings {
    /// The settings for a checkpoint interval and batch size: ack wait 2 × interval + 30 s, the
    /// value the operator gives the consumers it creates (so neither side sees the other's
    /// consumer as drifted).
    pub fn new(checkpoint_interval: Duration, batch: usize) -> Self {
        Self {
            ack_wait: jetflow_nats::consumer::ack_wait(checkpoint_interval),
            batch: batch.max(1),
            expires: Duration::from_secs(10),
            heartbeat: Duration::from_secs(3),
        }
    }
}

/// The subject filter of a split, as the consumer takes it (none for the whole stream).
fn filter_of(split: &Split) -> String {
    if split.subject == ">" {
        String::new()
    } else {
        split.subject.clone()
    }
}

/// The deliver policy of a start.
pub fn deliver_policy(split: &str, start: &Start) -> Result<DeliverPolicy, SourceError> {
    Ok(match start {
        Start::After(position) => DeliverPolicy::ByStartSequence {
            start_sequence: position + 1,
        },
        Start::Spec(spec) => match spec.from {
            StartFrom::All => DeliverPolicy::All,
            StartFrom::New => DeliverPolicy::New,
            StartFrom::Sequence => DeliverPolicy::ByStartSequence {
                start_sequence: spec.sequence.unwrap_or(1).max(1),
            },
            StartFrom::Time => {
                let text = spec
                    .time
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_default();
                let start_time = async_nats::datetime::parse_rfc3339(&text).map_err(|source| {
                    SourceError::StartTime {
                        split: split.to_owned(),
                        time: text.clone(),
                        source,
                    }
                })?;
                DeliverPolicy::ByStartTime { start_time }
            }
        },
    })
}

/// The configuration of a split's durable consumer. The operator creates consumers with the
/// same function, so that the worker finds them as it wants them.
pub fn consumer_config(
    name: &str,
    split: &Split,
    start: &Start,
    settings: &ConsumerSettings,
) -> Result<pull::Config, SourceError> {
    Ok(pull::Config {
        durable_name: Some(name.to_owned()),
        description: Some(format!("jetflow split {}", split.name)),
        filter_subject: filter_of(split),
        ack_policy: AckPolicy::All,
        deliver_policy: deliver_policy(&split.name, start)?,
        ack_wait: settings.ack_wait,
        // Everything read between two checkpoints stays unacknowledged; a limit near
        // rate × interval would stall the split. The operator uses the same value.
        max_ack_pending: MAX_ACK_PENDING,
        max_deliver: -1,
        // Recovery comes from jetflow's checkpoint, not from the consumer's state, so the
        // server need not persist that state: with thousands of messages pending between two
        // checkpoints, writing it to disk would cost the server more than the messages.
        memory_storage: true,
        ..Default::default()
    })
}

/// Whether an existing consumer can be read on from `start` as it is.
fn agrees(info: &consumer::Info, split: &Split, start: &Start, wanted: &DeliverPolicy) -> bool {
    let config = &info.config;
    if config.ack_policy != AckPolicy::All
        || config.filter_subject != filter_of(split)
        || !config.filter_subjects.is_empty()
        || config.deliver_subject.is_some()
    {
        return false;
    }
    match start {
        Start::After(position) => {
            info.ack_floor.stream_sequence == *position
                && info.delivered.stream_sequence == *position
                && info.num_ack_pending == 0
        }
        // Without a checkpoint nothing was ever acknowledged: keep a consumer only if it has
        // delivered nothing yet and starts where the spec says.
        Start::Spec(_) => info.delivered.consumer_sequence == 0 && &config.deliver_policy == wanted,
    }
}

/// Makes sure the split's consumer exists and agrees with `start`, recreating it if needed.
pub async fn ensure_consumer(
    stream: &jetstream::stream::Stream,
    name: &str,
    split: &Split,
    start: &Start,
    settings: &ConsumerSettings,
) -> Result<PullConsumer, SourceError> {
    let mut config = consumer_config(name, split, start, settings)?;
    match stream.consumer_info(name).await {
        Ok(info) if agrees(&info, split, start, &config.deliver_policy) => {
            tracing::debug!(split = %split.name, consumer = name, "consumer agrees with the checkpoint");
            // Its ack floor is the position, but it was created with another start (the spec's,
            // or an older position): JetStream refuses to change a consumer's deliver policy, so
            // the update below keeps it and changes only what may change.
            config.deliver_policy = info.config.deliver_policy;
        }
        Ok(info) => {
            tracing::info!(
                split = %split.name,
                consumer = name,
                ack_floor = info.ack_floor.stream_sequence,
                delivered = info.delivered.stream_sequence,
                start = ?start,
                "consumer disagrees with the checkpoint; recreating it"
            );
            stream
                .delete_consumer(name)
                .await
                .map_err(|source| SourceError::DeleteConsumer {
                    split: split.name.clone(),
                    consumer: name.to_owned(),
                    source,
                })?;
        }
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
    stream
        .create_consumer(config)
        .await
        .map_err(|source| SourceError::CreateConsumer {
            split: split.name.clone(),
            consumer: name.to_owned(),
            source,
        })
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
    messages: Option<pull::Stream>,
    last_seen: u64,
    first_seen: Option<u64>,
    metrics: SplitMetrics,
    failures: u32,
}

impl JetStreamReader {
    /// A reader of `split` in `stream_name` through the consumer `consumer`. `committed` is the
    /// split's committed position (0: none), updated by the runner after each checkpoint; the
    /// consumer is (re)created after it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        js: jetstream::Context,
        stream_name: &str,
        split: Split,
        consumer: String,
        settings: ConsumerSettings,
        spec_start: StartPosition,
        committed: Arc<AtomicU64>,
        metrics: SplitMetrics,
    ) -> Self {
        let last_seen = committed.load(Ordering::Acquire);
        Self {
            js,
            stream_name: stream_name.to_owned(),
            stream: None,
            split,
            consumer,
            settings,
            spec_start,
            committed,
            messages: None,
            last_seen,
            first_seen: None,
            metrics,
            failures: 0,
        }
    }

    /// Where the consumer must start now: after the committed position; without one, at the
    /// first message this reader already saw (so a consumer lost before the first checkpoint
    /// does not skip ahead with `New`), else as the spec says.
    fn start(&self) -> Start {
        match (self.committed.load(Ordering::Acquire), self.first_seen) {
            (0, Some(first)) => Start::After(first - 1),
            (0, None) => Start::Spec(self.spec_start.clone()),
            (position, _) => Start::After(position),
        }
    }

    async fn open(&mut self) -> Result<(), SourceError> {
        let stream = match &self.stream {
            Some(s) => s.clone(),
            None => {
                let s = self
                    .js
                    .get_stream(&self.stream_name)
                    .await
                    .map_err(|source| SourceError::GetStream {
                        split: self.split.name.clone(),
                        stream: self.stream_name.clone(),
                        source,
                    })?;
                self.stream = Some(s.clone());
                s
            }
        };
        let start = self.start();
        let consumer =
            ensure_consumer(&stream, &self.consumer, &self.split, &start, &self.settings).await?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(self.settings.batch)
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
        Ok(())
    }

    /// Opens the consumer, retrying with a capped backoff: JetStream may be restarting or the
    /// stream may not exist yet.
    async fn open_with_retry(&mut self) {
        loop {
            match self.open().await {
                Ok(()) => {
                    self.failures = 0;
                    return;
                }
                Err(e) => {
                    self.metrics.error(e.category());
                    self.failures = self.failures.saturating_add(1);
                    let delay = Duration::from_millis(100u64 << self.failures.min(6))
                        .min(Duration::from_secs(5));
                    tracing::warn!(split = %self.split.name, error = %e, retry_in = ?delay, "cannot open split");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn consumer_exists(&self) -> bool {
        let Some(stream) = &self.stream else {
            return false;
        };
        !matches!(
            stream.consumer_info(&self.consumer).await,
            Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound
        )
    }
}

impl SplitReader for JetStreamReader {
    async fn next(&mut self) -> Result<Option<SourceMessage>, SourceError> {
        loop {
            let Some(messages) = self.messages.as_mut() else {
                self.open_with_retry().await;
                continue;
            };
            match messages.next().await {
                Some(Ok(message)) => {
                    let (seq, pending) = match message.info() {
                        Ok(info) => (info.stream_sequence, info.pending),
                        Err(e) => {
                            self.metrics.error("message_info");
                            tracing::warn!(split = %self.split.name, error = %e, "message without JetStream metadata; dropped");
                            continue;
                        }
                    };
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
                    return Ok(Some(SourceMessage {
                        subject: message.subject,
                        headers: message.headers,
                        payload: message.payload,
                        seq,
                        ack: AckToken(message.reply),
                    }));
                }
                Some(Err(e)) => match e.kind() {
                    MessagesErrorKind::MissingHeartbeat => {
                        self.metrics.error("missed_heartbeat");
                        tracing::warn!(split = %self.split.name, "missed idle heartbeat");
                        if !self.consumer_exists().await {
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

/// Acknowledges JetStream messages (cumulatively, the consumers use `AckPolicy::All`).
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
