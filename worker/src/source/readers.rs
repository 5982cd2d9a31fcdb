//! Which reader a split gets: JetStream (bounded or not) or NATS Core, chosen once from the
//! pipeline's `source` and applied to every split the runner starts.
//!
//! [`PipelineReader`] dispatches with one match per message; each connector stays in its own
//! file ([`super::jetstream`], [`super::core`], [`super::bounded`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use async_nats::jetstream;
use jetflow_crds::pipeline::StartPosition;
use jetflow_crds::split::Split;

use super::bounded::{BoundSpec, BoundedReader};
use super::core::{CoreAcker, CoreReader, CoreSource};
use super::jetstream::{ConsumerSettings, JetStreamAcker, JetStreamReader};
use super::{GapSlot, SourceAcker, SourceError, SourceMessage, SplitReader};
use crate::metrics::SplitMetrics;

/// How long an acknowledgement may take to be confirmed.
const ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A pipeline's source, as the runner needs it to open split readers.
#[derive(Clone, Debug)]
pub enum Readers {
    /// A JetStream stream, read through one durable consumer per split.
    JetStream {
        /// The context.
        js: jetstream::Context,
        /// The stream.
        stream: String,
        /// Consumer settings.
        settings: ConsumerSettings,
        /// Where a split without a checkpoint starts.
        start: StartPosition,
        /// Where each split stops, for a bounded run.
        bound: Option<BoundSpec>,
    },
    /// NATS Core subjects.
    Core(CoreSource),
}

/// What a split's reader resumes from, and shares with the runner.
pub struct Resume {
    /// The committed position, updated by the runner after each checkpoint.
    pub committed: Arc<AtomicU64>,
    /// The creation time of the stream the position counts in ([`super::jetstream::created_nanos`]; 0: unknown).
    pub committed_created: Arc<AtomicI64>,
    /// The end a bounded run recorded in the checkpoint when the split first started.
    pub end: Option<u64>,
    /// Where the reader records a retention gap it finds.
    pub gap: GapSlot,
}

impl Readers {
    /// A reader of `split` through `consumer` (JetStream), resuming after the committed
    /// position if it counts in the stream created at the committed creation time (see
    /// [`JetStreamReader::new`]).
    pub fn open(
        &self,
        split: &Split,
        consumer: String,
        resume: Resume,
        metrics: SplitMetrics,
    ) -> PipelineReader {
        let Resume {
            committed,
            committed_created,
            end,
            gap,
        } = resume;
        match self {
            Self::JetStream {
                js,
                stream,
                settings,
                start,
                bound,
            } => {
                let position = committed.load(Ordering::Acquire);
                let reader = JetStreamReader::new(
                    js.clone(),
                    stream,
                    split.clone(),
                    consumer.clone(),
                    settings.clone(),
                    start.clone(),
                    committed,
                    committed_created,
                    metrics,
                )
                .recording_gaps(gap);
                let received = reader.delivered();
                match bound {
                    None => PipelineReader::JetStream(Box::new(reader)),
                    Some(bound) => PipelineReader::Bounded(Box::new(
                        BoundedReader::new(
                            reader,
                            js.clone(),
                            stream,
                            consumer,
                            &split.name,
                            bound.clone(),
                            position,
                            received,
                        )
                        .ending_at(end),
                    )),
                }
            }
            Self::Core(source) => PipelineReader::Core(Box::new(CoreReader::new(
                source.clone(),
                split.clone(),
                committed.load(Ordering::Acquire),
                metrics,
            ))),
        }
    }

    /// Deletes the durable consumer of a split whose subject left the stream (a retired
    /// dynamic split). Returns whether there was one; nothing to do for a Core source.
    pub async fn remove_consumer(&self, split: &str, consumer: &str) -> Result<bool, SourceError> {
        let Self::JetStream { js, stream, .. } = self else {
            return Ok(false);
        };
        match js.delete_consumer_from_stream(consumer, stream).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(source) => Err(SourceError::DeleteConsumer {
                split: split.to_owned(),
                consumer: consumer.to_owned(),
                source,
            }),
        }
    }

    /// What acknowledges the source after a checkpoint.
    pub fn acker(&self) -> Arc<dyn SourceAcker> {
        match self {
            Self::JetStream { js, .. } => Arc::new(JetStreamAcker::new(js.clone(), ACK_TIMEOUT)),
            Self::Core(_) => Arc::new(CoreAcker),
        }
    }

    /// The Core source, if this is one.
    pub fn core(&self) -> Option<&CoreSource> {
        match self {
            Self::Core(source) => Some(source),
            Self::JetStream { .. } => None,
        }
    }

    /// The bound of a bounded JetStream source.
    pub fn bound(&self) -> Option<&BoundSpec> {
        match self {
            Self::JetStream { bound, .. } => bound.as_ref(),
            Self::Core(_) => None,
        }
    }

    /// For a `streamEnd` bound, the end of splits starting now for the first time (see
    /// [`BoundSpec::fixed_end`]).
    pub async fn fixed_end(&self) -> Option<u64> {
        match self {
            Self::JetStream {
                js,
                stream,
                bound: Some(bound),
                ..
            } => bound.fixed_end(js, stream).await,
            _ => None,
        }
    }

    /// Whether splits end at a bound.
    pub fn is_bounded(&self) -> bool {
        matches!(self, Self::JetStream { bound: Some(_), .. })
    }
}

/// One split's reader, whichever the source.
pub enum PipelineReader {
    /// An unbounded JetStream split.
    JetStream(Box<JetStreamReader>),
    /// A JetStream split that ends at a bound.
    Bounded(Box<BoundedReader<JetStreamReader>>),
    /// A NATS Core split.
    Core(Box<CoreReader>),
}

impl SplitReader for PipelineReader {
    async fn next(&mut self) -> Result<Option<SourceMessage>, SourceError> {
        match self {
            Self::JetStream(reader) => reader.next().await,
            Self::Bounded(reader) => reader.next().await,
            Self::Core(reader) => reader.next().await,
        }
    }
}

fn is_not_found(e: &jetstream::stream::ConsumerError) -> bool {
    matches!(
        e.kind(),
        jetstream::stream::ConsumerErrorKind::JetStream(je)
            if je.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND
    )
}
