//! Bounded runs: a split reader that ends at the pipeline's `source.bound`.
//!
//! The bound becomes an end sequence, the last stream sequence the split may process:
//!
//! - `sequence: N`: N;
//! - `streamEnd: true`: the stream's last sequence when the split first starts, recorded in the
//!   checkpoint (`end`) before the split reads anything, so that a restarted run (a crash, a
//!   rolling update) ends where the run was meant to end, not at the stream's end as it is by
//!   then ([`BoundSpec::fixed_end`] and [`BoundedReader::ending_at`]);
//! - `time: T`: the last sequence stored at or before T, found by a binary search over the
//!   stream (one message lookup per step). While T is still in the future the split reads on
//!   unbounded, because everything it reads was stored before T; the search runs once T has
//!   passed.
//!
//! A message past the end is not yielded: the reader ends ([`SplitReader::next`] returns
//! `Ok(None)`), the split task drains and reports itself finished, and the runner commits the
//! final position with `finished: true`. Since the split's consumer only delivers what its
//! filter matches, the last message up to the end may lie well before it: when nothing arrives
//! for a moment, the reader asks the consumer whether anything matching is still pending and,
//! if not and the stream has reached the end, ends. A split whose filter holds nothing up to
//! the bound therefore finishes at once.
//!
//! The worker reports ready only once every split it started has looked its end up, so that
//! with `streamEnd: true` what is stored after the worker reports ready is beyond the end.
//!
//! Errors: lookups that fail are logged and tried again at the next idle moment; the inner
//! reader's errors pass through.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use jetflow_crds::pipeline::Bound;

use super::core::Subscribed;
use super::{SourceError, SourceMessage, SplitReader};

/// How long the reader waits for a message before it checks whether the split is done.
const IDLE_CHECK: Duration = Duration::from_millis(300);

/// Where a bound ends, as the runner configures it.
#[derive(Clone, Debug)]
pub struct BoundSpec {
    kind: BoundKind,
    /// Counts the splits that looked their end up (shared by every split of the run), so that
    /// the worker reports ready only once `streamEnd` means the stream's end as it was then.
    fixed: Arc<Subscribed>,
}

#[derive(Clone, Debug)]
enum BoundKind {
    Sequence(u64),
    StreamEnd,
    Time(async_nats::datetime::DateTime),
}

/// Why a bound cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BoundError {
    /// `bound.time` is not an RFC 3339 time.
    #[error("spec.source.bound.time: {time:?} is not an RFC 3339 time: {source}")]
    Time {
        /// The text.
        time: String,
        /// The parse error.
        source: async_nats::Error,
    },
    /// None of the bound's fields is set.
    #[error("spec.source.bound: set exactly one of sequence, time and streamEnd: true")]
    Empty,
}

impl BoundSpec {
    /// The end of `bound`.
    pub fn new(bound: &Bound) -> Result<Self, BoundError> {
        let kind = if let Some(sequence) = bound.sequence {
            BoundKind::Sequence(sequence)
        } else if let Some(time) = &bound.time {
            let text = time.0.to_string();
            let time = async_nats::datetime::parse_rfc3339(&text)
                .map_err(|source| BoundError::Time { time: text, source })?;
            BoundKind::Time(time)
        } else if bound.stream_end == Some(true) {
            BoundKind::StreamEnd
        } else {
            return Err(BoundError::Empty);
        };
        Ok(Self {
            kind,
            fixed: Arc::default(),
        })
    }

    /// Whether the end is the stream's last sequence when the split first starts: the runner
    /// records it in the checkpoint then ([`BoundSpec::fixed_end`]).
    pub fn is_stream_end(&self) -> bool {
        matches!(self.kind, BoundKind::StreamEnd)
    }

    /// For a `streamEnd` bound, the stream's last sequence now: the end of the splits that
    /// start now for the first time. `None` for other bounds, or when the stream cannot be
    /// looked up (the splits then look it up as they start).
    pub async fn fixed_end(&self, js: &jetstream::Context, stream: &str) -> Option<u64> {
        if !self.is_stream_end() {
            return None;
        }
        match js.get_stream(stream).await {
            Ok(found) => Some(found.cached_info().state.last_sequence),
            Err(e) => {
                tracing::warn!(stream, error = %e, "cannot look up the stream's end for the bound");
                None
            }
        }
    }

    /// Waits until at least `n` splits looked up their end (a time bound still ahead counts:
    /// its end is looked up once the time has passed).
    pub async fn wait_fixed(&self, n: usize) {
        self.fixed.wait_for(n).await;
    }
}

/// Looks up what the bound needs in the stream and the split's consumer.
struct Lookup {
    js: jetstream::Context,
    stream_name: String,
    consumer: String,
    split: String,
    /// Deliveries the inner reader received from the consumer (its consumer sequence).
    received: Arc<AtomicU64>,
}

/// Reads a split up to its bound, then ends.
pub struct BoundedReader<R> {
    inner: R,
    lookup: Lookup,
    bound: BoundSpec,
    end: Option<u64>,
    /// The last position yielded (or committed before the start).
    last: u64,
    done: bool,
    /// Whether this split counted itself in [`BoundSpec::wait_fixed`].
    counted: bool,
}

impl<R: SplitReader> BoundedReader<R> {
    /// Wraps `inner`, the reader of `split` through `consumer` in `stream_name`, which resumes
    /// after the committed position `committed` and counts the deliveries it received in
    /// `received`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        inner: R,
        js: jetstream::Context,
        stream_name: &str,
        consumer: String,
        split: &str,
        bound: BoundSpec,
        committed: u64,
        received: Arc<AtomicU64>,
    ) -> Self {
        Self {
            inner,
            lookup: Lookup {
                js,
                stream_name: stream_name.to_owned(),
                consumer,
                split: split.to_owned(),
                received,
            },
            bound,
            end: None,
            last: committed,
            done: false,
            counted: false,
        }
    }

    /// Ends at `end`, the end a `streamEnd` run recorded in the checkpoint when the split first
    /// started (ignored for other bounds: a bound changed in the spec since applies).
    pub fn ending_at(mut self, end: Option<u64>) -> Self {
        if let (Some(end), true) = (end, self.bound.is_stream_end()) {
            tracing::info!(split = %self.lookup.split, end, "bounded split ends at the sequence recorded when it first started");
            self.end = Some(end);
        }
        self
    }

    /// Fixes the end sequence when it can be known; `None` while a time bound lies ahead.
    async fn resolve(&mut self) -> Option<u64> {
        if self.end.is_some() {
            return self.end;
        }
        let end = match &self.bound.kind {
            BoundKind::Sequence(n) => Some(*n),
            BoundKind::StreamEnd => self.lookup.last_sequence().await,
            BoundKind::Time(time) => {
                let time = *time;
                if async_nats::datetime::now() <= time {
                    return None;
                }
                self.lookup.last_stored_at_or_before(time).await
            }
        };
        if let Some(end) = end {
            tracing::info!(split = %self.lookup.split, end, "bounded split ends at sequence");
        }
        self.end = end;
        end
    }

    /// Whether everything the split's filter holds up to the end has been yielded.
    async fn reached(&mut self) -> bool {
        let Some(end) = self.resolve().await else {
            return false;
        };
        if self.last >= end {
            return true;
        }
        if self
            .lookup
            .last_sequence()
            .await
            .is_none_or(|last| last < end)
        {
            // The stream has not reached a sequence bound yet: more may come.
            return false;
        }
        self.lookup.nothing_pending().await
    }
}

impl Lookup {
    /// The stream, with its info as of now.
    async fn stream(&self) -> Option<jetstream::stream::Stream> {
        match self.js.get_stream(&self.stream_name).await {
            Ok(stream) => Some(stream),
            Err(e) => {
                tracing::warn!(split = %self.split, error = %e, "cannot look up the stream for the bound");
                None
            }
        }
    }

    async fn last_sequence(&self) -> Option<u64> {
        let stream = self.stream().await?;
        Some(stream.cached_info().state.last_sequence)
    }

    /// Binary search for the last sequence stored at or before `time`. Invariant: every message
    /// below `lo` was stored at or before `time`, every message at or above `hi` after it.
    async fn last_stored_at_or_before(&self, time: async_nats::datetime::DateTime) -> Option<u64> {
        let stream = self.stream().await?;
        let state = stream.cached_info().state.clone();
        if state.messages == 0 {
            return Some(state.last_sequence);
        }
        let (mut lo, mut hi) = (state.first_sequence, state.last_sequence + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match stream.get_first_raw_message_by_subject(">", mid).await {
                Ok(message) if message.time <= time => lo = message.sequence + 1,
                Ok(_) => hi = mid,
                // Nothing at or after `mid` any more (removed meanwhile): the end is below.
                Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {
                    hi = mid
                }
                Err(e) => {
                    tracing::warn!(split = %self.split, error = %e, "cannot look up a message for the time bound");
                    return None;
                }
            }
        }
        Some(lo - 1)
    }

    /// Whether the consumer has nothing left to deliver, and everything it delivered arrived
    /// (a delivery lost on the way is read again by the inner reader, so the split is not done
    /// yet). Its delivered stream sequence says nothing here: the server moves it past messages
    /// the filter skips; its consumer sequence counts deliveries only.
    async fn nothing_pending(&self) -> bool {
        let Some(stream) = self.stream().await else {
            return false;
        };
        match stream.consumer_info(&self.consumer).await {
            Ok(info) => {
                info.num_pending == 0
                    && info.delivered.consumer_sequence <= self.received.load(Ordering::Acquire)
            }
            Err(e) => {
                tracing::debug!(split = %self.split, error = %e, "consumer not readable yet");
                false
            }
        }
    }
}

impl<R: SplitReader> SplitReader for BoundedReader<R> {
    async fn next(&mut self) -> Result<Option<SourceMessage>, SourceError> {
        if self.done {
            return Ok(None);
        }
        let end = self.resolve().await;
        if !self.counted {
            self.counted = true;
            self.bound.fixed.add();
        }
        if let Some(end) = end
            && self.last >= end
        {
            self.done = true;
            return Ok(None);
        }
        loop {
            match tokio::time::timeout(IDLE_CHECK, self.inner.next()).await {
                Ok(Ok(Some(message))) => {
                    let end = match self.end {
                        Some(end) => Some(end),
                        None => self.resolve().await,
                    };
                    if let Some(end) = end {
                        if message.seq > end {
                            // Not processed, not acknowledged: the split ends before it.
                            self.done = true;
                            return Ok(None);
                        }
                        if message.seq == end {
                            self.done = true;
                        }
                    }
                    self.last = message.seq;
                    return Ok(Some(message));
                }
                Ok(other) => return other,
                Err(_idle) => {
                    if self.reached().await {
                        self.done = true;
                        return Ok(None);
                    }
                }
            }
        }
    }
}
