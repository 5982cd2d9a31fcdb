//! The NATS Core source: one subscription per split (a subject, wildcards allowed), optionally
//! in a queue group so that several workers share a subject's messages.
//!
//! NATS Core keeps nothing: a message published while no worker is subscribed is never seen,
//! and one a worker received but had not delivered when it crashed is gone. The source is at
//! most once, and nothing is acknowledged ([`CoreAcker`] does nothing).
//!
//! Messages have no stream sequence, so a split's position is a counter of the messages it
//! received. Each run starts the counter at the wall clock in nanoseconds (or after the
//! committed position, when that is later): the `Nats-Msg-Id` of an output derives from the
//! position, and a counter that began at 1 again after a restart would repeat the ids of the
//! previous run, which a JetStream sink would then drop as duplicates.
//!
//! Errors: a subscription that cannot be made, or one the connection ended, is made again with
//! a capped backoff; the reader never ends on its own (a Core split has no bound).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use jetflow_crds::split::Split;
use tokio::sync::Notify;

use super::{AckToken, Incarnation, SourceAcker, SourceError, SourceMessage, SplitReader};
use crate::metrics::SplitMetrics;

/// Counts the Core splits whose subscription the server has registered, so that the worker
/// reports ready only once it receives what is published (and, the same way, the bounded
/// splits that looked their end up).
#[derive(Debug, Default)]
pub struct Subscribed {
    count: AtomicUsize,
    notify: Notify,
}

impl Subscribed {
    pub(crate) fn add(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_waiters();
    }

    /// Waits until at least `n` subscriptions were registered.
    pub async fn wait_for(&self, n: usize) {
        loop {
            // Created before the check, so an `add` in between still wakes it.
            let notified = self.notify.notified();
            if self.count.load(Ordering::Acquire) >= n {
                return;
            }
            notified.await;
        }
    }
}

/// What every Core split of a pipeline shares.
#[derive(Clone, Debug)]
pub struct CoreSource {
    /// The connection subscribed on.
    pub client: async_nats::Client,
    /// The queue group, if the workers share the subjects.
    pub queue_group: Option<String>,
    /// Registered subscriptions.
    pub subscribed: Arc<Subscribed>,
}

/// Where a Core split's counter starts: after the committed position or at the clock, whichever
/// is later.
pub fn first_position(committed: u64) -> u64 {
    let clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or_default();
    committed.max(clock)
}

/// Why a Core split could not subscribe (retried with back-off).
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The subscription was refused by the client (the connection is closed).
    #[error("cannot subscribe to {subject}: {source}")]
    Subscribe {
        /// The split's subject.
        subject: String,
        /// The client's error.
        source: async_nats::SubscribeError,
    },
    /// The server did not confirm the subscription.
    #[error("subscription not confirmed by the server: {source}")]
    Flush {
        /// The client's error.
        source: async_nats::client::FlushError,
    },
}

/// Reads one split of a Core source.
pub struct CoreReader {
    source: CoreSource,
    split: Split,
    subscriber: Option<async_nats::Subscriber>,
    position: u64,
    metrics: SplitMetrics,
    failures: u32,
}

impl CoreReader {
    /// A reader of `split` whose committed position is `committed` (0: none).
    pub fn new(source: CoreSource, split: Split, committed: u64, metrics: SplitMetrics) -> Self {
        Self {
            source,
            split,
            subscriber: None,
            position: first_position(committed),
            metrics,
            failures: 0,
        }
    }

    async fn subscribe(&mut self) -> Result<async_nats::Subscriber, SubscribeError> {
        let client = &self.source.client;
        let subject = self.split.subject.clone();
        let subscriber = match &self.source.queue_group {
            Some(group) => client.queue_subscribe(subject, group.clone()).await,
            None => client.subscribe(subject).await,
        }
        .map_err(|source| SubscribeError::Subscribe {
            subject: self.split.subject.clone(),
            source,
        })?;
        // The flush returns once the server processed the SUB: from here on nothing published
        // on the subject passes this split by.
        client
            .flush()
            .await
            .map_err(|source| SubscribeError::Flush { source })?;
        Ok(subscriber)
    }

    async fn subscribe_with_retry(&mut self) {
        loop {
            match self.subscribe().await {
                Ok(subscriber) => {
                    tracing::info!(split = %self.split.name, queue_group = ?self.source.queue_group, "subscribed");
                    self.subscriber = Some(subscriber);
                    self.failures = 0;
                    self.source.subscribed.add();
                    return;
                }
                Err(error) => {
                    self.metrics.error("subscribe");
                    self.failures = self.failures.saturating_add(1);
                    let delay = jetflow_nats::backoff(self.failures);
                    tracing::warn!(split = %self.split.name, error = %error, retry_in = ?delay, "cannot subscribe");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

impl SplitReader for CoreReader {
    async fn next(&mut self) -> Result<Option<SourceMessage>, SourceError> {
        loop {
            let Some(subscriber) = self.subscriber.as_mut() else {
                self.subscribe_with_retry().await;
                continue;
            };
            match subscriber.next().await {
                Some(message) => {
                    self.position += 1;
                    return Ok(Some(SourceMessage {
                        subject: message.subject,
                        headers: message.headers,
                        payload: message.payload,
                        seq: self.position,
                        ack: AckToken(None),
                        stream: Incarnation::default(),
                    }));
                }
                None => {
                    self.metrics.error("subscription_closed");
                    tracing::warn!(split = %self.split.name, "subscription ended; subscribing again");
                    self.subscriber = None;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// The acknowledger of a Core source: there is nothing to acknowledge.
#[derive(Clone, Copy, Debug, Default)]
pub struct CoreAcker;

impl SourceAcker for CoreAcker {
    fn ack<'a>(&'a self, _token: &'a AckToken) -> BoxFuture<'a, Result<(), SourceError>> {
        async { Ok(()) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_starts_after_the_later_of_checkpoint_and_clock() {
        let clock = first_position(0);
        assert!(clock > 1_700_000_000_000_000_000, "{clock}");
        assert_eq!(first_position(u64::MAX - 5), u64::MAX - 5);
        assert!(first_position(5) >= clock);
    }
}
