//! A split's reader task: takes messages from the split's reader and hands them to the split
//! task through a bounded channel, until the token fires, the split ends or the reader fails.
//! The channel says which of the last two it was ([`Read::End`], [`Read::Failed`]): only an
//! ended split is committed as finished.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::SplitMetrics;
use crate::source::{Read, SplitReader};

/// Reads `split` with `reader` into `tx` until `cancel` fires, the split ends or the reader
/// fails; the last two are sent on.
pub(crate) async fn read_split<R: SplitReader>(
    mut reader: R,
    tx: mpsc::Sender<Read>,
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
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use async_nats::jetstream::context::{GetStreamError, GetStreamErrorKind};
    use jetflow_crds::pipeline::ErrorAction;
    use jetflow_steps::Steps;
    use jetflow_testsupport::NatsServer;

    use super::*;
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
            paused,
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
        let (tx, rx) = mpsc::channel(64);
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

    /// Yields 64 KiB messages without end.
    struct Large(u64);

    impl SplitReader for Large {
        async fn next(&mut self) -> Result<Option<SourceMessage>, SourceError> {
            self.0 += 1;
            Ok(Some(SourceMessage {
                subject: "orders.eu".into(),
                headers: None,
                payload: bytes::Bytes::from(vec![b'x'; 64 << 10]),
                seq: self.0,
                ack: AckToken(None),
                stream: Incarnation::default(),
            }))
        }
    }

    /// Counts what it is sent and never confirms it (its round trip never completes).
    #[derive(Clone, Default)]
    struct Unconfirmed(Arc<Mutex<usize>>);

    impl Sink for Unconfirmed {
        async fn send(
            &self,
            _message: OutputMessage,
            _replies: Option<&ReplyTo>,
        ) -> Result<Confirmation, SinkError> {
            *self.0.lock().unwrap() += 1;
            Ok(Confirmation::Sent { generation: 0 })
        }

        async fn round_trip(&self) -> Result<Option<u64>, SinkError> {
            std::future::pending().await
        }

        fn deduplicates(&self) -> bool {
            false
        }
    }

    #[tokio::test]
    async fn a_split_behind_its_sink_holds_at_most_its_byte_budget_of_large_messages() {
        let server = NatsServer::start();
        let client = async_nats::connect(server.url()).await.expect("connect");
        let (_pause, paused) = tokio::sync::watch::channel(false);
        let sink = Unconfirmed::default();
        let shared = Arc::new(Shared {
            source: jetflow_nats::source_header::Prefix::new("orders"),
            steps: Arc::new(Steps::compile(&[]).expect("no steps")),
            template: SubjectTemplate::compile_subject_only("out.{{subject}}").expect("template"),
            sink: sink.clone(),
            dead_letters: DeadLetters::new(client, "dlq").await,
            policy: ErrorAction::Stop,
            max_pending: 1024,
            max_pending_bytes: crate::split::PENDING_BYTES,
            paused,
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
        let (tx, rx) = mpsc::channel(4);
        let (_control, control_rx) = mpsc::channel(4);
        let cancel = CancellationToken::new();
        tokio::spawn(read_split(
            Large(0),
            tx,
            cancel.clone(),
            "s".to_owned(),
            metrics,
        ));
        let task = tokio::spawn(task.run(rx, control_rx, cancel));
        // The window fills at once; then nothing more is taken while nothing is confirmed.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let sent = *sink.0.lock().unwrap();
        task.abort();
        assert!(sent > 0, "the split sent nothing");
        assert!(
            (sent - 1) * (64 << 10) < crate::split::PENDING_BYTES,
            "{sent} unconfirmed outputs of 64 KiB: more than the window's {} bytes allow",
            crate::split::PENDING_BYTES
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
