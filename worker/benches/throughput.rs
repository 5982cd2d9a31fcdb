//! Throughput, latency and recovery benchmark: jetflow-worker against a bare async-nats
//! forwarder, side by side on the same nats-server and the same messages.
//!
//! ```sh
//! cargo bench -p jetflow-worker --bench throughput -- [--messages 200000] [--sizes 256,4096]
//!     [--batch 500] [--rounds 5] [--splits 4] [--latency-seconds 10] [--recoveries 5]
//!     [--latency-rate R] [--latency-dump FILE]
//! ```
//!
//! `--latency-rate` runs only the latency run (and the recoveries), at R messages per second
//! of the first size; `--latency-dump` writes its publish time and latency per output, with
//! the latency's parts (to the source stream, through the worker to the sink stream, to the
//! subscriber).
//!
//! It starts its own nats-server (`scripts/install-nats.sh` provides it) and, for each message
//! size, fills a source stream with N messages over four subjects (N / 4 for sizes above 1 KiB),
//! then measures in alternating rounds
//! (a) the baseline: pull a batch, publish each message with a message id to a sink stream,
//!     wait for every publish ack, ack the batch;
//! (b) the release `jetflow-worker` binary as a process on a pass-through pipeline with 1 s
//!     checkpoints (exactly once: message ids, deduplicating sink stream), one split;
//! (c) the same worker with one `map` step that reshapes the small JSON object each message
//!     carries;
//! (d) the pass-through worker reading the four subjects as four splits;
//! and prints messages per second, ratios to the baseline, CPU per message of each process and
//! of nats-server, and the worker's peak RSS (VmHWM). Then, for the first size: end-to-end
//! latency (p50, p99: from the publish into the source to the output's arrival at a
//! subscriber of the sink subject) with messages published at half the pass-through rate, and
//! recovery time (from a SIGKILL of the worker, restarted at once, to its first output). It
//! prints figures; it asserts nothing.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use jetflow_testsupport::NatsServer;

struct Options {
    messages: usize,
    sizes: Vec<usize>,
    batch: usize,
    rounds: usize,
    splits: usize,
    latency_seconds: u64,
    /// The latency run's rate; set, the throughput rounds are skipped.
    latency_rate: Option<f64>,
    /// Where the latency run writes one line per output: publish time (ms since the run's
    /// first publish) and latency (ms).
    latency_dump: Option<std::path::PathBuf>,
    /// How the latency run publishes into the source.
    latency_publish: PublishMode,
    recoveries: usize,
}

/// `--latency-publish`: `jetstream` (default) or `core`.
#[derive(Clone, Copy, Debug)]
enum PublishMode {
    JetStream,
    Core,
}

fn options() -> Options {
    let mut o = Options {
        messages: 200_000,
        sizes: vec![256, 4096],
        batch: 500,
        rounds: 5,
        splits: 4,
        latency_seconds: 10,
        latency_rate: None,
        latency_dump: None,
        latency_publish: PublishMode::JetStream,
        recoveries: 5,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        let number = |v: String| -> usize {
            v.parse()
                .unwrap_or_else(|_| panic!("{v:?} is not a number"))
        };
        match arg.as_str() {
            "--messages" => o.messages = number(value()),
            "--size" | "--sizes" => {
                o.sizes = value().split(',').map(|v| number(v.to_owned())).collect();
            }
            "--batch" => o.batch = number(value()),
            "--rounds" => o.rounds = number(value()).max(1),
            "--splits" => o.splits = number(value()).max(1),
            "--latency-seconds" => o.latency_seconds = number(value()) as u64,
            "--latency-rate" => {
                let v = value();
                o.latency_rate = Some(v.parse().unwrap_or_else(|_| panic!("{v:?} is not a rate")));
            }
            "--latency-dump" => o.latency_dump = Some(value().into()),
            "--latency-publish" => {
                o.latency_publish = match value().as_str() {
                    "jetstream" => PublishMode::JetStream,
                    "core" => PublishMode::Core,
                    other => panic!("--latency-publish {other:?}: jetstream or core"),
                }
            }
            "--recoveries" => o.recoveries = number(value()),
            // cargo bench passes --bench; anything else is ignored.
            _ => {}
        }
    }
    o
}

async fn create_stream(js: &jetstream::Context, name: &str, subject: &str) {
    js.create_stream(stream::Config {
        name: name.to_owned(),
        subjects: vec![subject.to_owned()],
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .expect("create stream");
}

/// A small JSON order padded to `size` bytes, so that the pass-through and the map runs move
/// the same messages. `sent` (nanoseconds since the epoch) is the publish time, for latency.
fn order_payload(size: usize, sent: u128) -> bytes::Bytes {
    let head = format!(
        r#"{{"order_id":"o-12345","qty":3,"price":9.5,"customer":{{"name":"Ada","tier":"gold"}},"sent":{sent},"note":""#
    );
    let tail = r#""}"#;
    let pad = size.saturating_sub(head.len() + tail.len());
    bytes::Bytes::from(format!("{head}{}{tail}", "x".repeat(pad)))
}

/// The map step of run (c): reshapes the order into a smaller object.
const MAP_STEP: &str = "{id: .order_id, total: (.qty * .price), customer: .customer.name}";

/// The subject of message `i` of the source: four subjects, one per split of run (d).
fn source_subject(i: usize, splits: usize) -> String {
    format!("src.s{}", i % splits)
}

async fn fill(js: &jetstream::Context, count: usize, size: usize, splits: usize) {
    let payload = order_payload(size, 0);
    let mut pending = std::collections::VecDeque::new();
    for i in 0..count {
        pending.push_back(
            js.publish(source_subject(i, splits), payload.clone())
                .await
                .expect("publish"),
        );
        if pending.len() >= 4000 {
            pending.pop_front().unwrap().await.expect("publish ack");
        }
    }
    for ack in pending {
        ack.await.expect("publish ack");
    }
}

async fn stream_len(js: &jetstream::Context, name: &str) -> u64 {
    js.get_stream(name)
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .state
        .messages
}

/// The rate a stream takes publishes with message ids from one connection that keeps 1,024
/// acks in flight (as a split's window does) and reads nothing: the most any forwarder into one
/// sink stream could reach on this server.
async fn ceiling(js: &jetstream::Context, count: usize, size: usize, round: usize) -> f64 {
    let payload = order_payload(size, 0);
    let mut pending = std::collections::VecDeque::with_capacity(1024);
    let started = Instant::now();
    for i in 0..count {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("ceiling-{round}-{i}").as_str());
        pending.push_back(
            js.publish_with_headers(format!("ceil.s{}", i % 4), headers, payload.clone())
                .await
                .expect("publish"),
        );
        if pending.len() >= 1024 {
            pending.pop_front().unwrap().await.expect("publish ack");
        }
    }
    for ack in pending {
        ack.await.expect("publish ack");
    }
    count as f64 / started.elapsed().as_secs_f64()
}

/// The rate the source stream delivers to one pull consumer without acks when nothing is
/// published: the most any reader of one split could reach on this server.
async fn read_ceiling(js: &jetstream::Context, count: usize, name: &str) -> f64 {
    let source = js.get_stream("src").await.expect("source stream");
    let consumer: consumer::PullConsumer = source
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name.to_owned()),
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("read consumer");
    let started = Instant::now();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(500)
        .max_bytes_per_batch(1 << 20)
        .messages()
        .await
        .expect("messages");
    for _ in 0..count {
        messages
            .next()
            .await
            .expect("a message")
            .expect("a message, no error");
    }
    count as f64 / started.elapsed().as_secs_f64()
}

/// The baseline: stop-and-wait per batch.
async fn baseline(js: &jetstream::Context, count: usize, batch: usize, name: &str) -> f64 {
    let source = js.get_stream("src").await.expect("source stream");
    let consumer: consumer::PullConsumer = source
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name.to_owned()),
            ack_policy: consumer::AckPolicy::All,
            ..Default::default()
        })
        .await
        .expect("baseline consumer");
    let started = Instant::now();
    let mut moved = 0;
    while moved < count {
        let mut messages = consumer
            .fetch()
            .max_messages(batch)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .expect("fetch");
        let mut acks = Vec::with_capacity(batch);
        let mut last = None;
        while let Some(message) = messages.next().await {
            let message = message.expect("message");
            let seq = message.info().expect("info").stream_sequence;
            let publish = jetstream::message::PublishMessage::build()
                .payload(message.payload.clone())
                .message_id(format!("baseline:{seq}"));
            let subject = format!("base.{}", message.subject);
            acks.push(js.send_publish(subject, publish).await.expect("publish"));
            last = Some(message);
        }
        for ack in acks.drain(..) {
            ack.await.expect("publish ack");
            moved += 1;
        }
        if let Some(last) = last {
            last.ack().await.expect("ack");
        }
    }
    let _ = source.delete_consumer(name).await;
    count as f64 / started.elapsed().as_secs_f64()
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// The nats-server process of `server` (found by its configuration file).
fn server_pid(server: &NatsServer) -> Option<u32> {
    let config = server.dir().join("nats.conf").display().to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(&config)
                .then_some(pid)
        })
}

/// User plus system CPU seconds of a process so far (`self` for this one).
fn cpu_seconds(pid: impl std::fmt::Display) -> f64 {
    let read = || -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) / 100.0)
    };
    read().unwrap_or(0.0)
}

/// A pipeline the worker runs: pass-through or with the map step, one split or one per source
/// subject.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    PassThrough,
    Map,
    Splits(usize),
}

impl Shape {
    fn label(self) -> String {
        match self {
            Self::PassThrough => "pass-through".into(),
            Self::Map => "one map step".into(),
            Self::Splits(n) => format!("pass-through, {n} splits"),
        }
    }

    fn manifest(self, name: &str, sink: &str) -> String {
        let filters = match self {
            Self::Splits(n) => format!(
                ", filterSubjects: [{}]",
                (0..n)
                    .map(|i| format!("\"src.s{i}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => String::new(),
        };
        let steps = if self == Self::Map {
            format!("  steps:\n    - map: '{MAP_STEP}'\n")
        } else {
            String::new()
        };
        format!(
            "apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata: {{name: {name}}}
spec:
  source:
    jetstream: {{stream: src, batchSize: 500{filters}}}
  sink:
    jetstream: {{stream: {sink}, subject: \"{sink}.{{{{subject}}}}\"}}
  checkpoint: {{interval: 1s}}
{steps}"
        )
    }
}

/// Starts the release worker on `manifest` with its checkpoints in `dir`.
fn start_worker(server: &NatsServer, manifest: &std::path::Path, dir: &std::path::Path) -> Child {
    // JETFLOW_BENCH_PERF=<file> records a CPU profile of the worker with `perf record`.
    let mut command = match std::env::var("JETFLOW_BENCH_PERF").ok() {
        Some(file) => {
            let mut c = Command::new("perf");
            c.args(["record", "-F", "1999", "-g", "-o", &file, "--"])
                .arg(env!("CARGO_BIN_EXE_jetflow-worker"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_jetflow-worker")),
    };
    command
        .arg("run")
        .arg("-f")
        .arg(manifest)
        .arg("--nats")
        .arg(server.url())
        .arg("--checkpoint-dir")
        .arg(dir.join("checkpoints"))
        .args(["--metrics-addr", "0"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("start jetflow-worker")
}

fn stop(child: &mut Child, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// What one run measured.
struct Run {
    rate: f64,
    rss_kib: u64,
    /// CPU seconds of the process that moved the messages.
    cpu: f64,
    /// CPU seconds of nats-server meanwhile.
    server_cpu: f64,
}

/// The worker as a process on `shape`, until the sink holds `count` messages.
async fn worker(
    server: &NatsServer,
    spid: u32,
    js: &jetstream::Context,
    count: usize,
    name: &str,
    shape: Shape,
) -> Run {
    let dir = tempfile::tempdir().expect("temporary folder");
    let manifest = dir.path().join("pipeline.yaml");
    std::fs::write(&manifest, shape.manifest(name, "work")).expect("write manifest");
    let server0 = cpu_seconds(spid);
    let started = Instant::now();
    let mut child = start_worker(server, &manifest, dir.path());
    let pid = child.id();
    let mut peak = 0;
    loop {
        peak = peak.max(peak_rss_kib(pid).unwrap_or(0));
        let len = stream_len(js, "work").await;
        if std::env::var_os("JETFLOW_BENCH_PROGRESS").is_some() {
            println!("{:>8.3}s {len}", started.elapsed().as_secs_f64());
        }
        if len >= count as u64 {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("jetflow-worker exited early: {status}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    peak = peak.max(peak_rss_kib(pid).unwrap_or(0));
    let cpu = cpu_seconds(pid);
    let server_cpu = cpu_seconds(spid) - server0;
    stop(&mut child, "TERM");
    Run {
        rate,
        rss_kib: peak,
        cpu,
        server_cpu,
    }
}

async fn recreate_stream(js: &jetstream::Context, name: &str, subject: &str) {
    let _ = js.delete_stream(name).await;
    create_stream(js, name, subject).await;
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// The `sent` field of an order payload.
fn sent_of(payload: &[u8]) -> Option<u128> {
    let text = std::str::from_utf8(payload).ok()?;
    let from = text.find(r#""sent":"#)? + 7;
    let to = from + text[from..].find(',')?;
    text[from..to].parse().ok()
}

/// Publishes `rate` messages per second into `lat.in` for `seconds`, in 1 ms ticks, each
/// carrying its publish time; waits for the acks in the background.
async fn paced_publish(js: jetstream::Context, rate: f64, seconds: u64, size: usize) -> u64 {
    paced(Publisher::JetStream(js), rate, seconds, size).await
}

/// How the latency run publishes into the source stream.
#[derive(Clone)]
enum Publisher {
    /// JetStream publishes, each ack awaited in the background (what a producer that must know
    /// its message is stored does).
    JetStream(jetstream::Context),
    /// Core NATS publishes on the stream's subject, which the stream stores without an ack:
    /// the same messages at the same rate, without the 2 × rate ack messages that the server
    /// sends and the benchmark process handles on the same two cores.
    Core(async_nats::Client),
}

/// Publishes `rate` messages per second into `lat.in` for `seconds`, in 1 ms ticks, each
/// carrying its publish time.
async fn paced(publisher: Publisher, rate: f64, seconds: u64, size: usize) -> u64 {
    let js = match publisher {
        Publisher::JetStream(js) => js,
        Publisher::Core(client) => {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let started = Instant::now();
            let mut sent = 0u64;
            while started.elapsed() < Duration::from_secs(seconds) {
                tick.tick().await;
                let due = (started.elapsed().as_secs_f64() * rate) as u64;
                while sent < due {
                    client
                        .publish("lat.in", order_payload(size, now_nanos()))
                        .await
                        .expect("publish");
                    sent += 1;
                }
            }
            client.flush().await.expect("flush");
            return sent;
        }
    };
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut sent = 0u64;
    let (acks_tx, mut acks_rx) = tokio::sync::mpsc::channel(65_536);
    let acker = tokio::spawn(async move {
        while let Some(ack) = acks_rx.recv().await {
            let ack: jetstream::context::PublishAckFuture = ack;
            ack.await.expect("publish ack");
        }
    });
    while started.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            let ack = js
                .publish("lat.in", order_payload(size, now_nanos()))
                .await
                .expect("publish");
            acks_tx.send(ack).await.expect("ack queue");
            sent += 1;
        }
    }
    drop(acks_tx);
    acker.await.expect("acks");
    sent
}

/// When each message of stream `name` was stored (the server's time, Unix ns) and its stream
/// sequence, by the `sent` field of its payload.
async fn stored_times(
    js: &jetstream::Context,
    name: &str,
) -> std::collections::HashMap<u128, (u128, u64)> {
    let total = stream_len(js, name).await as usize;
    let consumer = js
        .get_stream(name)
        .await
        .expect("stream")
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await
        .expect("ordered consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut stored = std::collections::HashMap::with_capacity(total);
    for _ in 0..total {
        let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_secs(10), messages.next()).await
        else {
            break;
        };
        let info = message.info().expect("info");
        let at = u128::try_from(info.published.unix_timestamp_nanos()).unwrap_or(0);
        if let Some(sent) = sent_of(&message.payload) {
            stored.insert(sent, (at, info.stream_sequence));
        }
    }
    stored
}

/// Writes one line per output, in publish order: its publish time in ms since the first
/// publish, its latency (publish to arrival), and the latency's parts: publish to its storage
/// in the source stream, to the output's storage in the sink stream, to its arrival (ms; the
/// server and the benchmark share the machine's clock).
async fn write_timeline(
    js: &jetstream::Context,
    path: &std::path::Path,
    timeline: &[(u128, u128)],
) {
    let (source, sink) = (
        stored_times(js, "lat").await,
        stored_times(js, "latout").await,
    );
    let mut sorted = timeline.to_vec();
    sorted.sort_unstable();
    let Some(&(first, _)) = sorted.first() else {
        return;
    };
    let ms = |from: u128, to: u128| to.saturating_sub(from) as f64 / 1e6;
    let mut text = String::with_capacity(sorted.len() * 40);
    for (sent, arrived) in sorted {
        let (Some(&(read, seq)), Some(&(written, _))) = (source.get(&sent), sink.get(&sent)) else {
            continue;
        };
        text.push_str(&format!(
            "{:.3} {:.3} {:.3} {:.3} {:.3} {seq}\n",
            ms(first, sent),
            ms(sent, arrived),
            ms(sent, read),
            ms(read, written),
            ms(written, arrived),
        ));
    }
    std::fs::write(path, text).expect("write the latency dump");
}

/// End-to-end latency of the pass-through worker at `rate` messages per second: the time from
/// the publish into the source to the output's arrival at a subscriber of the sink subject.
async fn latency(
    server: &NatsServer,
    js: &jetstream::Context,
    rate: f64,
    seconds: u64,
    size: usize,
    publish: PublishMode,
    dump: Option<&std::path::Path>,
) -> (f64, f64, usize) {
    recreate_stream(js, "lat", "lat.in").await;
    recreate_stream(js, "latout", "latout.>").await;
    let dir = tempfile::tempdir().expect("temporary folder");
    let manifest = dir.path().join("pipeline.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata: {name: bench-latency}
spec:
  source:
    jetstream: {stream: lat, batchSize: 500}
  sink:
    jetstream: {stream: latout, subject: \"latout.{{subject}}\"}
  checkpoint: {interval: 1s}
",
    )
    .expect("write manifest");
    let client = server.client().await;
    let mut outputs = client.subscribe("latout.>").await.expect("subscribe");
    client.flush().await.expect("flush");
    let mut child = start_worker(server, &manifest, dir.path());
    // Ready once a first message goes through.
    js.publish("lat.in", order_payload(size, now_nanos()))
        .await
        .expect("publish")
        .await
        .expect("ack");
    tokio::time::timeout(Duration::from_secs(30), outputs.next())
        .await
        .expect("the worker's first output");
    // CPU of the three processes while the messages flow: how busy the machine's cores are.
    let spid = server_pid(server).expect("nats-server process");
    let cpu0 = [
        cpu_seconds(child.id()),
        cpu_seconds(spid),
        cpu_seconds("self"),
    ];
    let flowing = Instant::now();
    let publisher = match publish {
        PublishMode::JetStream => Publisher::JetStream(js.clone()),
        PublishMode::Core => Publisher::Core(server.client().await),
    };
    let mut publisher = tokio::spawn(paced(publisher, rate, seconds, size));
    let mut latencies = Vec::new();
    // (publish, arrival) of every output, in arrival order, for `dump`.
    let mut timeline: Vec<(u128, u128)> = Vec::new();
    let mut published: Option<u64> = None;
    loop {
        if published.is_none() && publisher.is_finished() {
            published = Some((&mut publisher).await.expect("publisher"));
        }
        if published.is_some_and(|n| latencies.len() as u64 >= n) {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(5), outputs.next()).await {
            Ok(Some(message)) => {
                if let Some(sent) = sent_of(&message.payload) {
                    let arrived = now_nanos();
                    latencies.push(arrived.saturating_sub(sent) as f64 / 1e6);
                    if dump.is_some() {
                        timeline.push((sent, arrived));
                    }
                }
            }
            // Nothing for 5 s: what is missing is not coming.
            Ok(None) | Err(_) if published.is_some() => break,
            Ok(None) => break,
            Err(_) => {}
        }
    }
    let wall = flowing.elapsed().as_secs_f64();
    let cpu1 = [
        cpu_seconds(child.id()),
        cpu_seconds(spid),
        cpu_seconds("self"),
    ];
    println!(
        "CPU while publishing at {rate:.0} msg/s: worker {:.0}%, nats-server {:.0}%, benchmark {:.0}% of one core",
        (cpu1[0] - cpu0[0]) / wall * 100.0,
        (cpu1[1] - cpu0[1]) / wall * 100.0,
        (cpu1[2] - cpu0[2]) / wall * 100.0,
    );
    stop(&mut child, "TERM");
    if let Some(path) = dump {
        write_timeline(js, path, &timeline).await;
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let received = latencies.len();
    assert!(received > 0, "no output arrived");
    (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        received,
    )
}

/// Recovery time: a worker with 1 s checkpoints under steady traffic gets SIGKILL and is
/// started again at once; the time from the kill to its first output.
async fn recovery(server: &NatsServer, js: &jetstream::Context, size: usize) -> f64 {
    recreate_stream(js, "lat", "lat.in").await;
    recreate_stream(js, "latout", "latout.>").await;
    let dir = tempfile::tempdir().expect("temporary folder");
    let manifest = dir.path().join("pipeline.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata: {name: bench-recovery}
spec:
  source:
    jetstream: {stream: lat, batchSize: 500}
  sink:
    jetstream: {stream: latout, subject: \"latout.{{subject}}\"}
  checkpoint: {interval: 1s}
",
    )
    .expect("write manifest");
    let client = server.client().await;
    let mut outputs = client.subscribe("latout.>").await.expect("subscribe");
    client.flush().await.expect("flush");
    let publisher = tokio::spawn(paced_publish(js.clone(), 2000.0, 8, size));
    let mut child = start_worker(server, &manifest, dir.path());
    tokio::time::timeout(Duration::from_secs(30), outputs.next())
        .await
        .expect("the worker's first output");
    // Several checkpoints in, then the kill.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let killed = Instant::now();
    stop(&mut child, "KILL");
    let mut again = start_worker(server, &manifest, dir.path());
    // Drop what the killed worker published before it died (all of it has arrived after a
    // few milliseconds; the new process needs longer than that to connect).
    tokio::time::sleep(Duration::from_millis(20)).await;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::ZERO, outputs.next()).await {}
    let first = tokio::time::timeout(Duration::from_secs(30), outputs.next())
        .await
        .expect("an output after the restart");
    assert!(first.is_some());
    let took = killed.elapsed().as_secs_f64();
    stop(&mut again, "TERM");
    let _ = publisher.await;
    took
}

/// Figures of one kind of run over the rounds.
#[derive(Default)]
struct Series {
    rates: Vec<f64>,
    ratios: Vec<f64>,
    cpu: Vec<f64>,
    server_cpu: Vec<f64>,
}

impl Series {
    fn push(&mut self, rate: f64, base: f64, cpu_per_msg: f64, server_per_msg: f64) {
        self.rates.push(rate);
        self.ratios.push(rate / base);
        self.cpu.push(cpu_per_msg);
        self.server_cpu.push(server_per_msg);
    }

    fn row(&self, size: usize, label: &str) -> String {
        format!(
            "| {size} B | {label} | {:.0} | {:.2} | {:.1} + {:.1} = {:.1} |",
            median(self.rates.clone()),
            median(self.ratios.clone()),
            median(self.cpu.clone()),
            median(self.server_cpu.clone()),
            median(self.cpu.clone()) + median(self.server_cpu.clone()),
        )
    }
}

#[tokio::main]
async fn main() {
    let o = options();
    let server = NatsServer::start();
    let js = server.jetstream().await;
    let spid = server_pid(&server).expect("nats-server process");
    let mut table = vec![
        "| size | run | msg/s (median) | ratio to baseline | CPU µs/msg process + nats-server |"
            .to_owned(),
        "| --- | --- | ---: | ---: | --- |".to_owned(),
    ];
    let mut peak = 0;
    let mut first_pass_through = None;
    // `--latency-rate` runs the latency run alone, at that rate.
    let sizes = if o.latency_rate.is_some() {
        &[][..]
    } else {
        &o.sizes[..]
    };
    for &size in sizes {
        // Large messages: a quarter as many, so every size moves a similar number of bytes
        // within reason.
        let count = if size > 1024 {
            o.messages / 4
        } else {
            o.messages
        };
        recreate_stream(&js, "src", "src.>").await;
        println!("filling the source stream with {count} messages of {size} bytes");
        fill(&js, count, size, o.splits).await;
        let per_msg = |cpu: f64| cpu * 1e6 / count as f64;
        let shapes = [Shape::PassThrough, Shape::Map, Shape::Splits(o.splits)];
        let mut base_series = Series::default();
        let mut series: Vec<Series> = shapes.iter().map(|_| Series::default()).collect();
        let mut step_costs = Vec::new();
        // Rounds alternate the runs, so that a change in the machine's load hits all alike.
        for round in 1..=o.rounds {
            recreate_stream(&js, "base", "base.>").await;
            let (server0, self0) = (cpu_seconds(spid), cpu_seconds("self"));
            let base = baseline(&js, count, o.batch, &format!("baseline-{size}-{round}")).await;
            let (server1, self1) = (cpu_seconds(spid), cpu_seconds("self"));
            base_series.push(
                base,
                base,
                per_msg(self1 - self0),
                per_msg(server1 - server0),
            );
            let mut line = format!("{size} B round {round}: baseline {base:.0} msg/s");
            let mut rates = Vec::new();
            for (i, shape) in shapes.iter().enumerate() {
                recreate_stream(&js, "work", "work.>").await;
                let name = format!("bench-{i}-{size}-{round}");
                let run = worker(&server, spid, &js, count, &name, *shape).await;
                peak = peak.max(run.rss_kib);
                series[i].push(run.rate, base, per_msg(run.cpu), per_msg(run.server_cpu));
                line.push_str(&format!(
                    "; {} {:.0} msg/s ({:.2}, CPU {:.1} + {:.1} µs/msg, RSS {:.1} MiB)",
                    shape.label(),
                    run.rate,
                    run.rate / base,
                    per_msg(run.cpu),
                    per_msg(run.server_cpu),
                    run.rss_kib as f64 / 1024.0
                ));
                rates.push(run.rate);
            }
            // The map step's cost: the extra wall time per message of the map run.
            step_costs.push((1.0 / rates[1] - 1.0 / rates[0]) * 1e6);
            println!("{line}");
        }
        table.push(base_series.row(size, "baseline forwarder"));
        for (shape, s) in shapes.iter().zip(&series) {
            table.push(s.row(size, &format!("jetflow-worker, {}", shape.label())));
        }
        println!(
            "{size} B: map step cost {:.1} µs/msg of wall time (median)",
            median(step_costs)
        );
        // What the sink stream takes at most: publishes with message ids and nothing to read.
        let mut ceilings = Vec::new();
        for round in 1..=3 {
            recreate_stream(&js, "ceil", "ceil.>").await;
            ceilings.push(ceiling(&js, count, size, round).await);
        }
        let (ceiling, pass_through) = (median(ceilings), median(series[0].rates.clone()));
        println!(
            "{size} B: the sink stream's ingest alone (publishes with message ids, 1,024 acks in flight, median of 3): {ceiling:.0} msg/s; the pass-through median is {:.2} of it",
            pass_through / ceiling
        );
        let mut reads = Vec::new();
        for round in 1..=3 {
            reads.push(read_ceiling(&js, count, &format!("read-{size}-{round}")).await);
        }
        let reads = median(reads);
        println!(
            "{size} B: the source stream's delivery alone (a pull consumer without acks, nothing published, median of 3): {reads:.0} msg/s; the pass-through median is {:.2} of it",
            pass_through / reads
        );
        first_pass_through.get_or_insert((size, pass_through));
    }
    if !sizes.is_empty() {
        println!();
        for line in &table {
            println!("{line}");
        }
        println!(
            "worker peak RSS (VmHWM) over all runs: {:.1} MiB",
            peak as f64 / 1024.0
        );
    }

    let (size, rate, which) = match (o.latency_rate, first_pass_through) {
        (Some(rate), _) => (o.sizes[0], rate, "as asked"),
        (None, Some((size, max_rate))) => (size, max_rate / 2.0, "half the pass-through rate"),
        (None, None) => return,
    };
    if o.latency_seconds > 0 {
        let (p50, p99, n) = latency(
            &server,
            &js,
            rate,
            o.latency_seconds,
            size,
            o.latency_publish,
            o.latency_dump.as_deref(),
        )
        .await;
        println!(
            "latency at {rate:.0} msg/s ({size} B, {which}, {:?} publishes; {n} outputs): p50 {p50:.2} ms, p99 {p99:.2} ms",
            o.latency_publish
        );
    }
    if o.recoveries > 0 {
        let mut times = Vec::new();
        for _ in 0..o.recoveries {
            times.push(recovery(&server, &js, size).await);
        }
        println!(
            "recovery from SIGKILL to the first output (1 s checkpoints): median {:.2} s, max {:.2} s over {}",
            median(times.clone()),
            times.iter().copied().fold(0.0, f64::max),
            times.len()
        );
    }
}
