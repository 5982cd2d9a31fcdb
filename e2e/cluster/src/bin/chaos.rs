//! `jetflow-chaos`: one pipeline on the local control plane moves a million messages while its
//! workers are killed with SIGKILL every few seconds, nats-server is killed and started again a
//! few times, and the pipeline is scaled up and down. Then every source message is looked for
//! in the sink: it prints how many were lost and how many written more than once, and exits
//! with 1 unless both are 0.
//!
//! Run it with `scripts/chaos.sh` (which installs and builds what it needs); it is not part of
//! the test command.

use std::collections::BTreeMap;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};
use clap::Parser;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use jetflow_e2e_cluster::Cluster;
use jetflow_nats::source_header::{ParseError, Source};

const NS: &str = "chaos";
const PIPELINE: &str = "chaos";
const SELECTOR: &str = "jetflow.io/pipeline=chaos";
const SPLITS: usize = 6;

/// Runs a pipeline under SIGKILLs, nats-server restarts and scaling, and counts what was lost
/// and what was duplicated.
#[derive(Parser, Debug)]
#[command(name = "jetflow-chaos", version)]
struct Args {
    /// Messages published into the source stream.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Seconds between two worker kills (SIGKILL to one worker pod's process).
    #[arg(long, default_value_t = 4)]
    kill_every: u64,
    /// How many times nats-server is killed and started again (same port, same store).
    #[arg(long, default_value_t = 3)]
    nats_restarts: u32,
    /// Seconds between two scalings of the pipeline (1, 2 or 3 workers, in turn).
    #[arg(long, default_value_t = 15)]
    scale_every: u64,
    /// Seconds the chaos goes on at least (longer while messages are still being published).
    #[arg(long, default_value_t = 90)]
    chaos_seconds: u64,
    /// Seconds to wait, once the chaos stopped, for the sink to hold every message.
    #[arg(long, default_value_t = 600)]
    settle_seconds: u64,
}

fn manifest() -> String {
    let filters: Vec<String> = (0..SPLITS)
        .map(|i| format!("\"chaos.in.s{i}.>\""))
        .collect();
    format!(
        r#"apiVersion: jetflow.io/v1alpha1
kind: Stream
metadata: {{name: chaos-in}}
spec:
  subjects: ["chaos.in.>"]
  storage: File
---
apiVersion: jetflow.io/v1alpha1
kind: Stream
metadata: {{name: chaos-out}}
spec:
  subjects: ["chaos.out.>"]
  storage: File
  duplicateWindow: 10m
---
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata: {{name: {PIPELINE}}}
spec:
  source:
    jetstream:
      stream: chaos-in
      filterSubjects: [{filters}]
  sink:
    jetstream:
      stream: chaos-out
      subject: "chaos.out.{{{{subject}}}}"
  checkpoint:
    interval: 2s
  parallelism: 2
"#,
        filters = filters.join(", ")
    )
}

/// Publishes `total` messages round-robin over the splits' subjects, each with a message id so
/// a publish retried across a nats-server restart is stored once; returns the stream sequence
/// of each message.
async fn publish(js: jetstream::Context, total: u64, published: Arc<AtomicU64>) -> Vec<u64> {
    const WINDOW: usize = 512;
    let mut sequences = vec![0u64; total as usize];
    let mut next = 0u64;
    let mut retry: Vec<u64> = Vec::new();
    let mut in_flight = FuturesUnordered::new();
    let send = |i: u64| {
        let js = js.clone();
        async move {
            let subject = format!("chaos.in.s{}.m{}", i as usize % SPLITS, i % 97);
            let payload = format!(r#"{{"n":{i}}}"#);
            let publish = PublishMessage::build()
                .payload(payload.into())
                .message_id(format!("chaos-{i}"));
            let result = match js.send_publish(subject, publish).await {
                Ok(ack) => match tokio::time::timeout(Duration::from_secs(5), ack).await {
                    Ok(Ok(ack)) => Ok(ack.sequence),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no acknowledgement within 5 s".to_owned()),
                },
                Err(e) => Err(e.to_string()),
            };
            (i, result)
        }
    };
    let mut failures = 0u64;
    // After a failure (the server is restarting) no new publish starts for a moment; the ones
    // in flight still finish or fail meanwhile.
    let mut pause_until = tokio::time::Instant::now();
    loop {
        let now = tokio::time::Instant::now();
        while now >= pause_until && in_flight.len() < WINDOW {
            let i = match retry.pop() {
                Some(i) => i,
                None if next < total => {
                    next += 1;
                    next - 1
                }
                None => break,
            };
            in_flight.push(send(i));
        }
        if in_flight.is_empty() {
            if retry.is_empty() && next >= total {
                break;
            }
            tokio::time::sleep_until(pause_until).await;
            continue;
        }
        let Some((i, result)) = in_flight.next().await else {
            continue;
        };
        match result {
            Ok(sequence) => {
                sequences[i as usize] = sequence;
                published.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                failures += 1;
                if failures % 1000 == 1 {
                    eprintln!("chaos: publish of message {i} failed ({e}); retrying");
                }
                let now = tokio::time::Instant::now();
                if now >= pause_until {
                    pause_until = now + Duration::from_millis(200);
                }
                retry.push(i);
            }
        }
    }
    sequences
}

/// The source sequence (from `Jetflow-Source`) of every message of `stream`, read with an
/// ordered consumer.
async fn source_sequences(js: &jetstream::Context, stream: &str) -> anyhow::Result<Vec<u64>> {
    let stream = js.get_stream(stream).await?;
    let total = stream.get_info().await?.state.messages;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await?;
    let mut messages = consumer.messages().await?;
    let mut out = Vec::with_capacity(total as usize);
    while (out.len() as u64) < total {
        let message = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "no message from {} within 30 s",
                    stream.cached_info().config.name
                )
            })?
            .ok_or_else(|| anyhow::anyhow!("the ordered consumer ended"))??;
        let sequence = message
            .headers
            .as_ref()
            .ok_or(ParseError::Missing)
            .and_then(Source::of)
            .map_err(|e| anyhow::anyhow!("{}: {e}", message.subject))?
            .sequence;
        out.push(sequence);
    }
    Ok(out)
}

async fn sink_count(js: &jetstream::Context) -> u64 {
    match js.get_stream("chaos-out").await {
        Ok(s) => s.get_info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

/// SIGKILL to one worker pod's process, chosen at random; the pod's name, if one was killed.
async fn kill_a_worker(cluster: &Cluster) -> Option<String> {
    let pods: Vec<(String, u32)> = cluster
        .pods(NS, SELECTOR)
        .await
        .into_iter()
        .filter_map(|(name, pid)| Some((name, pid?)))
        .collect();
    if pods.is_empty() {
        return None;
    }
    let (name, pid) = &pods[fastrand::usize(..pods.len())];
    // The process may have gone since the list: a failed kill is no error here.
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    killed.then(|| name.clone())
}

fn scale(cluster: &Cluster, replicas: u32) {
    let output = cluster.kubectl(&[
        "scale",
        "pipeline",
        PIPELINE,
        "-n",
        NS,
        &format!("--replicas={replicas}"),
    ]);
    if !output.status.success() {
        eprintln!(
            "chaos: kubectl scale failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let started = Instant::now();
    let say = |what: &str| println!("[{:>6.1}s] {what}", started.elapsed().as_secs_f64());

    let mut cluster = Cluster::start().await;
    say(&format!(
        "control plane and operator up; nats-server at {}; cluster folder {}",
        cluster.nats.url(),
        cluster.dir().display()
    ));
    cluster.ensure_namespace(NS);
    cluster.kubectl_stdin_ok(
        &["apply", "--server-side", "-n", NS, "-f", "-"],
        &manifest(),
    );
    cluster.wait_condition(NS, PIPELINE, "Ready", "True").await;
    say("pipeline ready with 2 workers; publishing");

    let published = Arc::new(AtomicU64::new(0));
    let publisher = tokio::spawn(publish(
        cluster.nats.jetstream().await,
        args.messages,
        published.clone(),
    ));

    let chaos = Duration::from_secs(args.chaos_seconds);
    let restart_every = chaos / (args.nats_restarts + 1);
    let mut next_kill = Instant::now() + Duration::from_secs(args.kill_every);
    let mut next_scale = Instant::now() + Duration::from_secs(args.scale_every);
    let mut next_restart = Instant::now() + restart_every;
    let (mut kills, mut restarts, mut scalings) = (0u32, 0u32, 0u32);
    let sizes = [3u32, 1, 2];
    let chaos_started = Instant::now();
    while chaos_started.elapsed() < chaos || !publisher.is_finished() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = Instant::now();
        if now >= next_kill {
            next_kill = now + Duration::from_secs(args.kill_every);
            if let Some(pod) = kill_a_worker(&cluster).await {
                kills += 1;
                say(&format!(
                    "SIGKILL to {pod} ({} published)",
                    published.load(Ordering::Relaxed)
                ));
            }
        }
        if now >= next_scale {
            next_scale = now + Duration::from_secs(args.scale_every);
            let replicas = sizes[scalings as usize % sizes.len()];
            scalings += 1;
            say(&format!(
                "kubectl scale pipeline {PIPELINE} --replicas={replicas}"
            ));
            scale(&cluster, replicas);
        }
        if restarts < args.nats_restarts && now >= next_restart {
            next_restart = now + restart_every;
            restarts += 1;
            say("nats-server killed and started again");
            cluster.nats.restart();
        }
    }
    let sequences = publisher.await?;
    say(&format!(
        "chaos over: {kills} workers killed, {restarts} nats-server restarts, {scalings} scalings; {} messages published",
        sequences.len()
    ));

    // Let the pipeline finish with every split owned, then compare.
    scale(&cluster, 2);
    let js = cluster.nats.jetstream().await;
    let expected = sequences.len() as u64;
    let settle = Instant::now();
    let mut last = (0, Instant::now());
    loop {
        let n = sink_count(&js).await;
        if n != last.0 {
            last = (n, Instant::now());
        }
        // Everything there (or more: duplicates), and nothing new for a few seconds.
        if n >= expected && last.1.elapsed() > Duration::from_secs(10) {
            break;
        }
        if settle.elapsed() > Duration::from_secs(args.settle_seconds) {
            say(&format!(
                "the sink holds {n} of {expected} messages after {} s",
                args.settle_seconds
            ));
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let seen = source_sequences(&js, "chaos-out").await?;
    let mut times: BTreeMap<u64, u32> = BTreeMap::new();
    for s in &seen {
        *times.entry(*s).or_default() += 1;
    }
    let lost: Vec<u64> = sequences
        .iter()
        .copied()
        .filter(|s| !times.contains_key(s))
        .collect();
    let duplicated: u64 = times.values().map(|n| u64::from(n - 1)).sum();
    let mut sorted = sequences.clone();
    sorted.sort_unstable();
    let unexpected = times
        .keys()
        .filter(|s| sorted.binary_search(s).is_err())
        .count();
    println!("published:  {expected}");
    println!("in sink:    {}", seen.len());
    println!("lost:       {}", lost.len());
    println!("duplicated: {duplicated}");
    if !lost.is_empty() {
        println!(
            "first lost source sequences: {:?}",
            &lost[..lost.len().min(20)]
        );
    }
    if unexpected > 0 {
        println!("not published by this run: {unexpected}");
    }
    if lost.is_empty() && duplicated == 0 && unexpected == 0 {
        say("every message exactly once");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{}", cluster.diagnostics());
        Ok(ExitCode::FAILURE)
    }
}
