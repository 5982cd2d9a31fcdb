//! Shared test helpers: streams, bulk publishing, reading a sink back, checkpoints; worker
//! processes and metrics come from `jetflow_testsupport`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use jetflow_crds::checkpoint::Checkpoint;
use jetflow_nats::source_header::Source;
pub use jetflow_testsupport::worker::{Worker, worker_bin};

/// Creates a stream capturing `subjects`.
pub async fn create_stream(js: &jetstream::Context, name: &str, subjects: &[&str]) {
    js.create_stream(stream::Config {
        name: name.to_owned(),
        subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
        // Longer than any checkpoint interval here: replays after a crash are deduplicated.
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .expect("create stream");
}

/// Publishes `count` messages of `size` bytes, round-robin over `subjects`, with up to 2,000
/// publish acks outstanding. Returns, per subject, the stream sequences in publish order.
pub async fn publish(
    js: &jetstream::Context,
    subjects: &[&str],
    count: usize,
    size: usize,
) -> BTreeMap<String, Vec<u64>> {
    let mut pending = std::collections::VecDeque::new();
    let mut by_subject: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    for i in 0..count {
        let subject = subjects[i % subjects.len()];
        let ack = js
            .publish(subject.to_owned(), payload.clone())
            .await
            .expect("publish");
        pending.push_back((subject, ack));
        if pending.len() >= 2000 {
            let (s, ack) = pending.pop_front().unwrap();
            let seq = ack.await.expect("publish ack").sequence;
            by_subject.entry(s.to_owned()).or_default().push(seq);
        }
    }
    for (s, ack) in pending {
        let seq = ack.await.expect("publish ack").sequence;
        by_subject.entry(s.to_owned()).or_default().push(seq);
    }
    by_subject
}

/// Messages in a stream.
pub async fn stream_len(js: &jetstream::Context, name: &str) -> u64 {
    js.get_stream(name)
        .await
        .expect("stream")
        .info()
        .await
        .expect("stream info")
        .state
        .messages
}

/// Waits until `name` holds at least `count` messages.
pub async fn wait_for_len(js: &jetstream::Context, name: &str, count: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let len = stream_len(js, name).await;
        if len >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "stream {name} holds {len} of {count} messages after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One message read back from a sink stream.
#[derive(Clone, Debug)]
pub struct SinkRecord {
    pub subject: String,
    /// From the `Jetflow-Source` header (empty, `None` and 0 without one).
    pub source_stream: Option<String>,
    pub source_subject: String,
    pub source_seq: u64,
    pub msg_id: String,
    pub headers: async_nats::HeaderMap,
    pub payload: bytes::Bytes,
}

/// The source named by a message's `Jetflow-Source` header (panics without a valid one).
pub fn source_of(headers: &async_nats::HeaderMap) -> Source<'_> {
    Source::of(headers).unwrap_or_else(|e| panic!("{e}: {headers:?}"))
}

/// Reads every message of a stream in stream order.
pub async fn read_all(js: &jetstream::Context, name: &str) -> Vec<SinkRecord> {
    let total = stream_len(js, name).await as usize;
    let stream = js.get_stream(name).await.expect("stream");
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            ..Default::default()
        })
        .await
        .expect("ordered consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("message within 10s")
            .expect("stream open")
            .expect("message");
        let headers = m.headers.clone().unwrap_or_default();
        let get = |n: &str| {
            headers
                .get(n)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        };
        let source = Source::of(&headers).ok();
        out.push(SinkRecord {
            subject: m.subject.to_string(),
            source_stream: source.and_then(|s| s.stream).map(str::to_owned),
            source_subject: source.map(|s| s.subject.to_owned()).unwrap_or_default(),
            source_seq: source.map_or(0, |s| s.sequence),
            msg_id: get("Nats-Msg-Id"),
            headers: headers.clone(),
            payload: m.payload.clone(),
        });
    }
    out
}

/// Asserts every sequence in `expected` appears exactly once among `records`.
pub fn assert_exactly_once(records: &[SinkRecord], expected: impl Iterator<Item = u64>) {
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    for r in records {
        *seen.entry(r.source_seq).or_default() += 1;
    }
    let twice: Vec<u64> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, _)| *s)
        .collect();
    let expected: Vec<u64> = expected.collect();
    let missing: Vec<u64> = expected
        .iter()
        .copied()
        .filter(|s| !seen.contains_key(s))
        .collect();
    assert!(
        twice.is_empty(),
        "{} source messages arrived more than once, first: {:?}",
        twice.len(),
        &twice[..twice.len().min(10)]
    );
    assert!(
        missing.is_empty(),
        "{} source messages are missing, first: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(records.len(), expected.len(), "unexpected extra outputs");
}

/// Writes a pipeline manifest.
pub fn write_manifest(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, text).expect("write manifest");
    path
}

/// Reads the file checkpoint of `default/<name>`.
pub fn read_checkpoint(dir: &Path, name: &str) -> Checkpoint {
    let path = dir.join("default").join(format!("{name}.json"));
    match std::fs::read(&path) {
        Ok(text) => serde_json::from_slice(&text).expect("checkpoint JSON"),
        Err(_) => Checkpoint::default(),
    }
}

/// A small deterministic pseudo-random sequence (xorshift), seeded from the clock and printed,
/// so a failing run can be told apart.
pub struct Rng(u64);

impl Rng {
    pub fn from_clock() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        eprintln!("random seed {seed}");
        Self(seed)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Waits until the committed positions of pipeline `name` include each of `seqs` (the last
/// sequence of each split): every message, with outputs or without, is processed and committed.
pub async fn wait_for_positions(checkpoints: &Path, name: &str, seqs: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let positions: BTreeSet<u64> = read_checkpoint(checkpoints, name)
            .splits
            .values()
            .map(|p| p.position)
            .collect();
        if seqs.iter().all(|s| positions.contains(s)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "positions {positions:?} never reached {seqs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
