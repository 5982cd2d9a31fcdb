//! Throughput benchmark: jetflow-worker against a bare async-nats forwarder, side by side on
//! the same nats-server and the same messages.
//!
//! ```sh
//! cargo bench -p jetflow-worker --bench throughput -- [--messages 200000] [--size 256] [--batch 500]
//! ```
//!
//! It starts its own nats-server (`scripts/install-nats.sh` provides it), fills a source
//! stream with N messages, then measures
//! (a) the baseline: pull a batch, publish each message with a message id to a sink stream,
//!     wait for every publish ack, ack the batch; and
//! (b) the release `jetflow-worker` binary as a process on a pass-through pipeline with 1 s
//!     checkpoints (exactly once: message ids, deduplicating sink stream), and
//! (c) the same worker with one `map` step that reshapes the small JSON object each message
//!     carries,
//! and prints messages per second for each, the ratios to the baseline, the cost per message
//! of the map step and the worker's peak RSS (VmHWM). It prints figures; it asserts nothing.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use jetflow_testsupport::NatsServer;

struct Options {
    messages: usize,
    size: usize,
    batch: usize,
    rounds: usize,
}

fn options() -> Options {
    let mut o = Options {
        messages: 200_000,
        size: 256,
        batch: 500,
        rounds: 3,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{arg} needs a number"))
        };
        match arg.as_str() {
            "--messages" => o.messages = value(),
            "--size" => o.size = value(),
            "--batch" => o.batch = value(),
            "--rounds" => o.rounds = value(),
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
/// the same messages.
fn order_payload(size: usize) -> bytes::Bytes {
    let head = r#"{"order_id":"o-12345","qty":3,"price":9.5,"customer":{"name":"Ada","tier":"gold"},"note":""#;
    let tail = r#""}"#;
    let pad = size.saturating_sub(head.len() + tail.len());
    bytes::Bytes::from(format!("{head}{}{tail}", "x".repeat(pad)))
}

/// The map step of run (c): reshapes the order into a smaller object.
const MAP_STEP: &str = "{id: .order_id, total: (.qty * .price), customer: .customer.name}";

async fn fill(js: &jetstream::Context, count: usize, size: usize) {
    let payload = order_payload(size);
    let mut pending = std::collections::VecDeque::new();
    for _ in 0..count {
        pending.push_back(
            js.publish("src.data", payload.clone())
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

/// The baseline: stop-and-wait per batch.
async fn baseline(js: &jetstream::Context, count: usize, batch: usize, round: usize) -> f64 {
    let source = js.get_stream("src").await.expect("source stream");
    let consumer: consumer::PullConsumer = source
        .create_consumer(consumer::pull::Config {
            durable_name: Some(format!("baseline-{round}")),
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
fn cpu_seconds(pid: impl std::fmt::Display) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// The worker as a process, pass-through or with the map step; returns messages per second
/// and peak RSS in KiB.
async fn worker(
    server: &NatsServer,
    js: &jetstream::Context,
    count: usize,
    round: usize,
    map: bool,
) -> (f64, u64) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let manifest = dir.path().join("pipeline.yaml");
    let (name, steps) = if map {
        (
            format!("bench-map-{round}"),
            format!("  steps:\n    - map: '{MAP_STEP}'\n"),
        )
    } else {
        (format!("bench-{round}"), String::new())
    };
    std::fs::write(
        &manifest,
        format!("metadata: {{name: {name}}}\n")
            + r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
spec:
  source:
    jetstream: {stream: src, batchSize: 500}
  sink:
    jetstream: {stream: work, subject: "work.{{subject}}"}
  checkpoint: {interval: 1s}
"# + &steps,
    )
    .expect("write manifest");
    let started = Instant::now();
    // JETFLOW_BENCH_PERF=<file> records a CPU profile of the worker with `perf record`.
    let perf = std::env::var("JETFLOW_BENCH_PERF").ok();
    let mut command = match &perf {
        Some(file) => {
            let mut c = Command::new("perf");
            c.args(["record", "-F", "1999", "-g", "-o", file, "--"])
                .arg(env!("CARGO_BIN_EXE_jetflow-worker"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_jetflow-worker")),
    };
    let mut child = command
        .arg("run")
        .arg("-f")
        .arg(&manifest)
        .arg("--nats")
        .arg(server.url())
        .arg("--checkpoint-dir")
        .arg(dir.path().join("checkpoints"))
        .args(["--metrics-addr", "0"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("start jetflow-worker");
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
    if let Some(cpu) = cpu_seconds(pid) {
        println!(
            "  CPU per message: jetflow-worker ({name}) {:.1} µs",
            cpu * 1e6 / count as f64
        );
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    (rate, peak)
}

async fn recreate_stream(js: &jetstream::Context, name: &str, subject: &str) {
    let _ = js.delete_stream(name).await;
    create_stream(js, name, subject).await;
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let o = options();
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "src", "src.>").await;
    println!(
        "filling the source stream with {} messages of {} bytes",
        o.messages, o.size
    );
    fill(&js, o.messages, o.size).await;
    let spid = server_pid(&server).expect("nats-server process");
    let per_msg = |cpu: f64| cpu * 1e6 / o.messages as f64;

    // Rounds alternate the runs, so that a change in the machine's load hits all alike.
    let (mut bases, mut works, mut ratios, mut peak) = (vec![], vec![], vec![], 0);
    let (mut maps, mut map_ratios, mut step_costs) = (vec![], vec![], vec![]);
    for round in 1..=o.rounds {
        recreate_stream(&js, "base", "base.>").await;
        recreate_stream(&js, "work", "work.>").await;
        let (server0, self0) = (cpu_seconds(spid), cpu_seconds("self"));
        let base = baseline(&js, o.messages, o.batch, round).await;
        let (server1, self1) = (cpu_seconds(spid), cpu_seconds("self"));
        let (work, rss) = worker(&server, &js, o.messages, round, false).await;
        let server2 = cpu_seconds(spid);
        recreate_stream(&js, "work", "work.>").await;
        let (mapped, map_rss) = worker(&server, &js, o.messages, round, true).await;
        // The map step's cost per message: the extra time per message of the map run.
        let step_cost = (1.0 / mapped - 1.0 / work) * 1e6;
        println!(
            "round {round}: baseline {base:>8.0} msg/s, jetflow-worker {work:>8.0} msg/s, ratio {:.2}; with one map step {mapped:>8.0} msg/s, ratio {:.2}, step {step_cost:.1} µs/msg",
            work / base,
            mapped / base
        );
        if let (Some(s0), Some(s1), Some(s2), Some(b0), Some(b1)) =
            (server0, server1, server2, self0, self1)
        {
            println!(
                "         CPU per message: forwarder {:.1} µs + nats-server {:.1} µs; worker run: nats-server {:.1} µs",
                per_msg(b1 - b0),
                per_msg(s1 - s0),
                per_msg(s2 - s1)
            );
        }
        bases.push(base);
        works.push(work);
        ratios.push(work / base);
        maps.push(mapped);
        map_ratios.push(mapped / base);
        step_costs.push(step_cost);
        peak = peak.max(rss).max(map_rss);
    }
    println!(
        "baseline forwarder (batch {}):  {:>10.0} msg/s (median)",
        o.batch,
        median(bases)
    );
    println!(
        "jetflow-worker (1s checkpoints): {:>10.0} msg/s (median)",
        median(works)
    );
    println!(
        "ratio worker / baseline:         {:>10.2} (median of rounds)",
        median(ratios)
    );
    println!(
        "jetflow-worker, one map step:    {:>10.0} msg/s (median)",
        median(maps)
    );
    println!(
        "ratio map run / baseline:        {:>10.2} (median of rounds)",
        median(map_ratios)
    );
    println!(
        "map step cost per message:       {:>10.1} µs (median of rounds)",
        median(step_costs)
    );
    println!(
        "worker peak RSS (VmHWM):         {:>10.1} MiB",
        peak as f64 / 1024.0
    );
}
