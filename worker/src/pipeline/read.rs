//! A split's reader task: takes messages from the split's reader and hands them to the split
//! task through a bounded channel, until the token fires, the split ends or the reader fails.
//! The channel says which of the last two it was ([`Read::End`], [`Read::Failed`]): only an
//! ended split is committed as finished.
//!
//! The channel is bounded twice: in messages, and in the payload bytes it holds, the split's
//! share of the worker's read-ahead budget ([`Budget::read_ahead_bytes`]). Small messages run
//! ahead by count, large ones by bytes; a channel holding nothing always takes one message,
//! however large, so a split never waits for the bytes of another.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::budget::Budget;
use crate::metrics::SplitMetrics;
use crate::source::{Read, SplitReader};

/// The payload bytes in a split's reader channel, and the signal that the split task took some.
#[derive(Debug, Default)]
struct Held {
    bytes: AtomicUsize,
    taken: Notify,
}

/// A split's reader channel, holding at most `messages` messages and the split's share of
/// `budget`'s read-ahead bytes.
pub fn channel(messages: usize, budget: Budget) -> (ReadSender, Reads) {
    let (tx, rx) = mpsc::channel(messages);
    let held = Arc::new(Held::default());
    (
        ReadSender {
            tx,
            held: held.clone(),
            budget,
        },
        Reads { rx, held },
    )
}

/// The reader task's end of a split's reader channel.
pub struct ReadSender {
    tx: mpsc::Sender<Read>,
    held: Arc<Held>,
    budget: Budget,
}

impl ReadSender {
    /// Sends `read` once the channel has room for it, in messages and in bytes. Fails when the
    /// split task is gone.
    pub async fn send(&self, read: Read) -> Result<(), mpsc::error::SendError<Read>> {
        if let Read::Message(message) = &read {
            let size = message.payload.len();
            loop {
                let taken = self.held.taken.notified();
                let held = self.held.bytes.load(Ordering::Acquire);
                if held == 0 || held + size <= self.budget.read_ahead_bytes() {
                    break;
                }
                taken.await;
            }
            self.held.bytes.fetch_add(size, Ordering::AcqRel);
        }
        self.tx.send(read).await
    }
}

/// The split task's end of a split's reader channel.
pub struct Reads {
    rx: mpsc::Receiver<Read>,
    held: Arc<Held>,
}

impl Reads {
    /// Receives up to `limit` reads into `buf` (as [`mpsc::Receiver::recv_many`]: 0 once the
    /// channel is closed and empty), freeing their bytes for the reader. Cancel-safe.
    pub async fn recv_many(&mut self, buf: &mut Vec<Read>, limit: usize) -> usize {
        let from = buf.len();
        let received = self.rx.recv_many(buf, limit).await;
        let bytes: usize = buf[from..]
            .iter()
            .map(|read| match read {
                Read::Message(message) => message.payload.len(),
                Read::End | Read::Failed(_) => 0,
            })
            .sum();
        if bytes > 0 {
            self.held.bytes.fetch_sub(bytes, Ordering::AcqRel);
            self.held.taken.notify_one();
        }
        received
    }

    /// The payload bytes in the channel now.
    pub fn held_bytes(&self) -> usize {
        self.held.bytes.load(Ordering::Acquire)
    }
}

/// Reads `split` with `reader` into `tx` until `cancel` fires, the split ends or the reader
/// fails; the last two are sent on.
pub(crate) async fn read_split<R: SplitReader>(
    mut reader: R,
    tx: ReadSender,
    cancel: CancellationToken,
    split: String,
    metrics: SplitMetrics,
) {
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => break,
            next = reader.next() => next,
        };
        let (read, last) = match next {
            Ok(Some(message)) => (Read::Message(message), false),
            Ok(None) => (Read::End, true),
            Err(e) => {
                metrics.error(e.category());
                tracing::error!(split = %split, error = %e, "split reader failed");
                (Read::Failed(e), true)
            }
        };
        let sent = tokio::select! {
            _ = cancel.cancelled() => break,
            sent = tx.send(read) => sent,
        };
        if sent.is_err() || last {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use async_nats::jetstream::context::{GetStreamError, GetStreamErrorKind};
    use jetflow_crds::pipeline::ErrorAction;
    use jetflow_steps::Steps;
    use jetflow_testsupport::NatsServer;

    use super::*;
    use crate::budget::Budget;
    use crate::metrics::Metrics;
    use crate::sink::dead_letter::DeadLetters;
    use crate::sink::headers::MessageIds;
    use crate::sink::jetstream::ReplyTo;
    use crate::sink::{Confirmation, OutputMessage, Sink, SinkError, SubjectTemplate};
    use crate::source::{AckToken, Incarnation, SourceError, SourceMessage};
    use crate::split::{Shared, SplitError, SplitSnapshot, SplitTask};

    /// Yields `count` messages, then ends (`fail` false) or fails for good (`fail` true).
    struct Reader {
        next: u64,
        count: u64,
        fail: bool,
    }

    impl SplitReader for Reader {
        async fn next(&mut self) -> Result<Option<SourceMessage>, SourceError> {
            if self.next > self.count {
                if self.fail {
                    return Err(SourceError::GetStream {
                        split: "s".to_owned(),
                        stream: "orders".to_owned(),
                        source: GetStreamError::new(GetStreamErrorKind::Request),
                    });
                }
                return Ok(None);
            }
            self.next += 1;
            Ok(Some(SourceMessage {
                subject: "orders.eu".into(),
                headers: None,
                payload: self.next.to_string().into(),
                seq: self.next - 1,
                ack: AckToken(None),
                stream: Incarnation::default(),
            }))
        }
    }

    /// Keeps what it is sent; every send is confirmed at once.
    #[derive(Clone, Default)]
    struct Kept(Arc<Mutex<Vec<OutputMessage>>>);

    impl Sink for Kept {
        async fn send(
            &self,
            message: OutputMessage,
            _replies: Option<&ReplyTo>,
        ) -> Result<Confirmation, SinkError> {
            self.0.lock().unwrap().push(message);
            Ok(Confirmation::Done)
        }

        async fn round_trip(&self) -> Result<Option<u64>, SinkError> {
            Ok(None)
        }

        fn deduplicates(&self) -> bool {
            true
        }
    }

    /// Runs a pass-through split whose reader yields 3 messages and then ends or fails.
    async fn run_split(fail: bool) -> (Result<SplitSnapshot, SplitError>, usize) {
        let server = NatsServer::start();
        let client = async_nats::connect(server.url()).await.expect("connect");
        let (_pause, paused) = tokio::sync::watch::channel(false);
        let sink = Kept::default();
        let shared = Arc::new(Shared {
            source: jetflow_nats::source_header::Prefix::new("orders"),
            steps: Arc::new(Steps::compile(&[]).expect("no steps")),
            template: SubjectTemplate::compile_subject_only("out.{{subject}}").expect("template"),
            sink: sink.clone(),
            dead_letters: DeadLetters::new(client, "dlq").await,
            policy: ErrorAction::Stop,
            max_pending: 16,
            max_pending_bytes: usize::MAX,
            budget: Budget::new(),
            paused,
            pipeline: "default/p".to_owned(),
        });
        let metrics = Metrics::new().split("s");
        let task = SplitTask::new(
            shared,
            "s",
            MessageIds::new("default", "p", "s"),
            metrics.clone(),
            SplitSnapshot::default(),
            Duration::from_secs(5),
        );
        let (tx, rx) = channel(64, Budget::new());
        let (_control, control_rx) = mpsc::channel(4);
        let cancel = CancellationToken::new();
        let reader = Reader {
            next: 1,
            count: 3,
            fail,
        };
        tokio::spawn(read_split(
            reader,
            tx,
            cancel.clone(),
            "s".to_owned(),
            metrics,
        ));
        let result =
            tokio::time::timeout(Duration::from_secs(30), task.run(rx, control_rx, cancel))
                .await
                .expect("the split task ends");
        let delivered = sink.0.lock().unwrap().len();
        (result, delivered)
    }

    /// Yields messages of `size` bytes, `count` of them and then ends (without end: `None`),
    /// counting the bytes it has read.
    struct Large {
        seq: u64,
        size: usize,
        count: Option<u64>,
        read: Arc<AtomicUsize>,
    }

    impl SplitReader for Large {
        async fn next(&mut self) -> Result<Option<SourceMessage>, SourceError> {
            if self.count.is_some_and(|count| self.seq >= count) {
                return Ok(None);
            }
            self.seq += 1;
            self.read.fetch_add(self.size, Ordering::Relaxed);
            Ok(Some(SourceMessage {
                subject: "orders.eu".into(),
                headers: None,
                payload: bytes::Bytes::from(vec![b'x'; self.size]),
                seq: self.seq,
                ack: AckToken(None),
                stream: Incarnation::default(),
            }))
        }
    }

    /// Counts the payload bytes it is sent and never confirms them (its round trip never
    /// completes).
    #[derive(Clone, Default)]
    struct Unconfirmed(Arc<AtomicUsize>);

    impl Sink for Unconfirmed {
        async fn send(
            &self,
            message: OutputMessage,
            _replies: Option<&ReplyTo>,
        ) -> Result<Confirmation, SinkError> {
            self.0.fetch_add(message.payload.len(), Ordering::Relaxed);
            Ok(Confirmation::Sent { generation: 0 })
        }

        async fn round_trip(&self) -> Result<Option<u64>, SinkError> {
            std::future::pending().await
        }

        fn deduplicates(&self) -> bool {
            false
        }
    }

    /// What one split of [`run_splits`] read and sent, in payload bytes.
    struct Held {
        read: Arc<AtomicUsize>,
        sent: usize,
    }

    /// Runs `splits` pass-through splits in one worker (one budget, one sink), each reading
    /// messages of `size` bytes (`count` per split, or without end) through the worker's reader
    /// channel, until nothing moves any more (or every split ended). Returns what each split
    /// read and sent.
    async fn run_splits<S: Sink + Clone>(
        splits: usize,
        size: usize,
        count: Option<u64>,
        sink: S,
        sent: impl Fn(&S, usize) -> usize,
    ) -> Vec<Held> {
        let server = NatsServer::start();
        let client = async_nats::connect(server.url()).await.expect("connect");
        let (_pause, paused) = tokio::sync::watch::channel(false);
        let budget = Budget::new();
        let shared = Arc::new(Shared {
            source: jetflow_nats::source_header::Prefix::new("orders"),
            steps: Arc::new(Steps::compile(&[]).expect("no steps")),
            template: SubjectTemplate::compile_subject_only("out.{{subject}}").expect("template"),
            sink,
            dead_letters: DeadLetters::new(client, "dlq").await,
            policy: ErrorAction::Stop,
            max_pending: 1024,
            max_pending_bytes: crate::split::PENDING_BYTES,
            budget: budget.clone(),
            paused,
            pipeline: "default/p".to_owned(),
        });
        let members: Vec<_> = (0..splits).map(|_| budget.join()).collect();
        let cancel = CancellationToken::new();
        let mut reads = Vec::new();
        let mut tasks = Vec::new();
        for split in 0..splits {
            let name = format!("s{split}");
            let metrics = Metrics::new().split(&name);
            let task = SplitTask::new(
                shared.clone(),
                &name,
                MessageIds::new("default", "p", &name),
                metrics.clone(),
                SplitSnapshot::default(),
                Duration::from_secs(5),
            );
            let (tx, rx) = channel(crate::pipeline::READ_AHEAD, budget.clone());
            let (control, control_rx) = mpsc::channel(4);
            let read = Arc::new(AtomicUsize::new(0));
            let reader = Large {
                seq: 0,
                size,
                count,
                read: read.clone(),
            };
            tokio::spawn(read_split(reader, tx, cancel.clone(), name, metrics));
            tasks.push((
                tokio::spawn(task.run(rx, control_rx, cancel.clone())),
                control,
            ));
            reads.push(read);
        }
        // Until nothing was read or sent for half a second, or every split task ended.
        let moved = || {
            reads
                .iter()
                .map(|read| read.load(Ordering::Relaxed))
                .sum::<usize>()
                + sent(&shared.sink, usize::MAX)
        };
        let (mut last, mut still) = (moved(), 0);
        for _ in 0..300 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if tasks.iter().all(|(task, _)| task.is_finished()) {
                break;
            }
            let now = moved();
            still = if now == last { still + 1 } else { 0 };
            last = now;
            if still >= 5 {
                break;
            }
        }
        let held = reads
            .into_iter()
            .enumerate()
            .map(|(split, read)| Held {
                read,
                sent: sent(&shared.sink, split),
            })
            .collect();
        for (task, _) in tasks {
            task.abort();
        }
        drop(members);
        held
    }

    /// An [`Unconfirmed`] sink per split would be as good; one sink for all counts the total.
    fn unconfirmed_total(sink: &Unconfirmed, _split: usize) -> usize {
        sink.0.load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn a_split_behind_its_sink_holds_at_most_its_byte_budget_of_large_messages() {
        let size = 64 << 10;
        let held = run_splits(1, size, None, Unconfirmed::default(), unconfirmed_total).await;
        let sent = held[0].sent;
        assert!(sent > 0, "the split sent nothing");
        // The window fills; then nothing more is taken while nothing is confirmed.
        assert!(
            sent - size < crate::split::PENDING_BYTES,
            "{sent} bytes of unconfirmed outputs: more than the window's {} bytes allow",
            crate::split::PENDING_BYTES
        );
        let read = held[0].read.load(Ordering::Relaxed);
        assert!(
            read - sent <= crate::budget::READ_AHEAD_BYTES + size,
            "{} bytes read ahead of the window: more than the reader channel's {} bytes and the \
             one message the reader holds",
            read - sent,
            crate::budget::READ_AHEAD_BYTES
        );
    }

    #[tokio::test]
    async fn four_splits_behind_their_sink_hold_at_most_the_workers_byte_budget_together() {
        let (splits, size) = (4, 4 << 10);
        let held = run_splits(
            splits,
            size,
            None,
            Unconfirmed::default(),
            unconfirmed_total,
        )
        .await;
        let read: usize = held.iter().map(|h| h.read.load(Ordering::Relaxed)).sum();
        let sent = held[0].sent;
        for (split, h) in held.iter().enumerate() {
            assert!(
                h.read.load(Ordering::Relaxed) > 0,
                "split {split} read nothing"
            );
        }
        // Each split may overshoot its share of each budget by one message, and its reader
        // holds one more while it waits for room.
        let slack = splits * 3 * size;
        let budget = crate::budget::PENDING_BYTES + crate::budget::READ_AHEAD_BYTES;
        assert!(
            read <= budget + slack,
            "four splits read {read} bytes ({sent} of them sent and unconfirmed) while their sink \
             confirmed nothing: more than the worker's budget of {budget} bytes (windows {} and \
             reader channels {}) allows",
            crate::budget::PENDING_BYTES,
            crate::budget::READ_AHEAD_BYTES
        );
        assert!(
            sent <= crate::budget::PENDING_BYTES + splits * size,
            "{sent} bytes of unconfirmed outputs over four splits: more than the worker's {} \
             bytes of windows allow",
            crate::budget::PENDING_BYTES
        );
    }

    /// Keeps the payload bytes it is sent, per split; every send is confirmed at once.
    #[derive(Clone, Default)]
    struct Delivered(Arc<Mutex<std::collections::BTreeMap<String, usize>>>);

    impl Sink for Delivered {
        async fn send(
            &self,
            message: OutputMessage,
            _replies: Option<&ReplyTo>,
        ) -> Result<Confirmation, SinkError> {
            *self
                .0
                .lock()
                .unwrap()
                .entry(message.subject.to_string())
                .or_default() += message.payload.len();
            Ok(Confirmation::Done)
        }

        async fn round_trip(&self) -> Result<Option<u64>, SinkError> {
            Ok(None)
        }

        fn deduplicates(&self) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn splits_whose_messages_exceed_the_workers_budget_still_take_them_one_at_a_time() {
        // Each message is larger than the whole worker's read-ahead and window budgets: every
        // split still takes them, one at a time, and none waits for another's bytes.
        let size = crate::budget::PENDING_BYTES + 1;
        let held = run_splits(4, size, Some(3), Delivered::default(), |sink, _| {
            sink.0.lock().unwrap().values().sum()
        })
        .await;
        let delivered: usize = held[0].sent;
        assert_eq!(
            delivered,
            4 * 3 * size,
            "every message of every split is delivered"
        );
    }

    #[tokio::test]
    async fn a_reader_that_fails_fails_its_split_and_never_finishes_it() {
        let (result, delivered) = run_split(true).await;
        assert_eq!(
            delivered, 3,
            "what the reader read before it failed is processed"
        );
        match result {
            Ok(snapshot) => panic!(
                "the split ended without an error after its reader failed: finished {}, position {}",
                snapshot.finished, snapshot.position
            ),
            Err(e) => assert!(matches!(e, SplitError::Read { .. }), "{e}"),
        }
    }

    #[tokio::test]
    async fn a_reader_that_ends_finishes_its_split_at_its_last_message() {
        let (result, delivered) = run_split(false).await;
        assert_eq!(delivered, 3);
        let snapshot = result.expect("the split ends cleanly");
        assert!(snapshot.finished, "{snapshot:?}");
        assert_eq!(snapshot.position, 3);
    }
}
