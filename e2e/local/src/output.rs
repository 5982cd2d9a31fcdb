//! Reading what a pipeline wrote: the messages of a stream in sequence order, waiting for a
//! stream to reach a message count, and collecting what a NATS Core subscription hears.

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream::RawMessageErrorKind};
use bytes::Bytes;
use futures::StreamExt;
use jetflow_nats::source_header::Source;

use crate::{Error, Result};

/// One stored or received message.
#[derive(Clone, Debug)]
pub struct Message {
    /// Its subject.
    pub subject: String,
    /// Its stream sequence (0 for a NATS Core message).
    pub sequence: u64,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its payload.
    pub payload: Bytes,
}

impl Message {
    /// A header's value, if set.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.as_str().to_owned())
    }

    /// The source named by its `Jetflow-Source` header (panics without a valid one: a test
    /// helper).
    pub fn source(&self) -> Source<'_> {
        Source::of(&self.headers).unwrap_or_else(|e| panic!("{}: {e}", self.subject))
    }

    /// The payload as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.payload).ok()
    }

    /// The payload as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// The number of messages a stream holds.
pub async fn count(js: &jetstream::Context, stream: &str) -> Result<u64> {
    let mut handle = js
        .get_stream(stream)
        .await
        .map_err(|source| Error::StreamInfo {
            stream: stream.to_owned(),
            source,
        })?;
    let info = handle.info().await.map_err(|source| Error::StreamState {
        stream: stream.to_owned(),
        source,
    })?;
    Ok(info.state.messages)
}

/// Waits until `stream` holds at least `expected` messages, and returns the count it saw.
pub async fn wait_for_count(
    js: &jetstream::Context,
    stream: &str,
    expected: u64,
    timeout: Duration,
) -> Result<u64> {
    let started = Instant::now();
    loop {
        let n = count(js, stream).await?;
        if n >= expected {
            return Ok(n);
        }
        if started.elapsed() > timeout {
            return Err(Error::Timeout {
                what: format!("{expected} messages in stream {stream} (it holds {n})"),
                seconds: timeout.as_secs_f64(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every message `stream` holds, in sequence order.
pub async fn messages(js: &jetstream::Context, stream: &str) -> Result<Vec<Message>> {
    let mut handle = js
        .get_stream(stream)
        .await
        .map_err(|source| Error::StreamInfo {
            stream: stream.to_owned(),
            source,
        })?;
    let state = handle
        .info()
        .await
        .map_err(|source| Error::StreamState {
            stream: stream.to_owned(),
            source,
        })?
        .state
        .clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return Ok(out);
    }
    for sequence in state.first_sequence..=state.last_sequence {
        match handle.get_raw_message(sequence).await {
            Ok(m) => out.push(Message {
                subject: m.subject.to_string(),
                sequence: m.sequence,
                headers: m.headers,
                payload: m.payload,
            }),
            // A gap left by a deleted message.
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => continue,
            Err(source) => {
                return Err(Error::ReadMessage {
                    stream: stream.to_owned(),
                    sequence,
                    source,
                });
            }
        }
    }
    Ok(out)
}

/// A NATS Core subscription whose messages are collected in the background.
pub struct Collector {
    received: std::sync::Arc<std::sync::Mutex<Vec<Message>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    /// Subscribes to `subject` and collects every message from now on. Returns once the
    /// server has the subscription (a flush), so nothing published afterwards is missed.
    pub async fn start(client: &async_nats::Client, subject: &str) -> Result<Self> {
        let mut subscriber = client
            .subscribe(subject.to_owned())
            .await
            .map_err(|source| Error::Subscribe {
                subject: subject.to_owned(),
                source,
            })?;
        let _ = client.flush().await;
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = received.clone();
        let task = tokio::spawn(async move {
            while let Some(m) = subscriber.next().await {
                let message = Message {
                    subject: m.subject.to_string(),
                    sequence: 0,
                    headers: m.headers.unwrap_or_default(),
                    payload: m.payload,
                };
                sink.lock().expect("collector lock").push(message);
            }
        });
        Ok(Self { received, task })
    }

    /// What was received so far.
    pub fn received(&self) -> Vec<Message> {
        self.received.lock().expect("collector lock").clone()
    }

    /// Waits until `check` holds for what was received.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&[Message]) -> bool,
    ) -> Result<Vec<Message>> {
        let started = Instant::now();
        loop {
            let received = self.received();
            if check(&received) {
                return Ok(received);
            }
            if started.elapsed() > timeout {
                return Err(Error::Timeout {
                    what: format!("{what} (received {})", received.len()),
                    seconds: timeout.as_secs_f64(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publishes `payload` to `subject` on NATS Core (flushed).
pub async fn publish(client: &async_nats::Client, subject: &str, payload: Bytes) -> Result<()> {
    client
        .publish(subject.to_owned(), payload)
        .await
        .map_err(|source| Error::Publish {
            subject: subject.to_owned(),
            source,
        })
}

/// Publishes to a JetStream subject and returns the stored sequence (panics on failure: a test
/// helper).
pub async fn publish_js(js: &jetstream::Context, subject: &str, payload: String) -> u64 {
    js.publish(subject.to_owned(), payload.into())
        .await
        .unwrap_or_else(|e| panic!("publish to {subject}: {e}"))
        .await
        .unwrap_or_else(|e| panic!("ack of {subject}: {e}"))
        .sequence
}

/// The source sequence (from `Jetflow-Source`) of each output, sorted: equal to the source
/// sequences when every source message arrived exactly once.
pub fn source_sequences(messages: &[Message]) -> Vec<u64> {
    let mut seqs: Vec<u64> = messages.iter().map(|m| m.source().sequence).collect();
    seqs.sort_unstable();
    seqs
}

/// The examples (`examples/*.yaml` under `root`, by file stem) that `covered` does not list:
/// each end-to-end suite keeps its own list honest with it.
pub fn examples_not_covered(root: &std::path::Path, covered: &[&str]) -> Vec<String> {
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root.join("examples")).expect("examples/") {
        let path = entry.expect("an entry of examples/").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !covered.contains(&name.as_str()) {
                missing.push(name);
            }
        }
    }
    missing
}
