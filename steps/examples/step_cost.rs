//! Per-message cost of the steps, measured in one process without NATS: passthrough (no
//! steps), one `map` that reshapes a small JSON object, and a few other pipelines for
//! comparison. Prints nanoseconds per message and the messages per second one core sustains.
//! The figures are this thread's CPU time (from `/proc/thread-self/schedstat`, so other
//! processes on a busy machine do not inflate them), with wall-clock time beside them.
//!
//! `cargo run --release -p jetflow-steps --example step_cost [messages]`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use jetflow_crds::pipeline::Step;
use jetflow_steps::{Headers, Input, Steps};

/// The allocator `jetflow-worker` runs with, so the figures are the worker's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A 256-byte order, the size the worker's throughput benchmark uses.
fn payload(i: usize) -> Bytes {
    let mut text = format!(
        r#"{{"order_id":"o-{i:08}","qty":{},"price":12.5,"customer":{{"name":"Ada Lovelace","region":"eu","tier":"gold"}},"items":[{{"sku":"a-1","n":1}},{{"sku":"b-2","n":2}}],"note":""#,
        i % 7 + 1
    );
    while text.len() < 254 {
        text.push('x');
    }
    text.push_str("\"}");
    Bytes::from(text)
}

fn measure(label: &str, steps: &[Step], payloads: &[Bytes], rounds: usize) {
    let steps = Steps::compile(steps).expect("the benchmark's steps compile");
    let mut headers = Headers::new();
    headers.insert("Nats-Msg-Id", "abc");
    headers.insert("Trace", "t-1");
    let run = |n: usize| {
        let mut outputs = 0usize;
        for round in 0..n {
            for (i, payload) in payloads.iter().enumerate() {
                let out = steps
                    .apply(Input {
                        subject: "orders.eu.created",
                        headers: Some(&headers),
                        payload,
                        seq: (round * payloads.len() + i) as u64,
                    })
                    .expect("the benchmark's messages pass");
                outputs += black_box(out).len();
            }
        }
        outputs
    };
    run(1); // warm up
    let start = Instant::now();
    let cpu_start = thread_cpu_ns();
    let outputs = run(rounds);
    let cpu = thread_cpu_ns()
        .zip(cpu_start)
        .map(|(end, start)| end - start);
    let wall = start.elapsed().as_nanos() as u64;
    let messages = (rounds * payloads.len()) as f64;
    let ns = cpu.unwrap_or(wall) as f64 / messages;
    println!(
        "{label:<44} {ns:>7.0} ns/message {:>10.0} messages/s/core   (wall {:>6.0} ns; {outputs} outputs)",
        1e9 / ns,
        wall as f64 / messages,
    );
}

/// CPU time of the calling thread in nanoseconds (Linux), if available.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

fn step(f: impl FnOnce(&mut Step)) -> Step {
    let mut s = Step::default();
    f(&mut s);
    s
}

fn main() {
    let messages: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let payloads: Vec<Bytes> = (0..1000).map(payload).collect();
    let rounds = (messages / payloads.len()).max(1);
    println!(
        "{} messages of {} bytes per run",
        rounds * payloads.len(),
        payloads[0].len()
    );

    let reshape = "{id: .order_id, total: (.qty * .price), customer: .customer.name}";
    measure("passthrough (no steps)", &[], &payloads, rounds);
    measure(
        "map (reshape)",
        &[step(|s| s.map = Some(reshape.into()))],
        &payloads,
        rounds,
    );
    measure(
        "filter (.qty > 3)",
        &[step(|s| s.filter = Some(".qty > 3".into()))],
        &payloads,
        rounds,
    );
    measure(
        "setHeaders from tokens (payload not parsed)",
        &[step(|s| {
            s.set_headers = Some(BTreeMap::from([(
                "Region".to_owned(),
                "{{token(2)}}".to_owned(),
            )]))
        })],
        &payloads,
        rounds,
    );
    measure(
        "setSubject from a payload field",
        &[step(|s| {
            s.set_subject = Some("by-region.{{payload.customer.region}}".into())
        })],
        &payloads,
        rounds,
    );
    measure(
        "filter + map + setHeaders",
        &[
            step(|s| s.filter = Some(".qty > 3".into())),
            step(|s| s.map = Some(reshape.into())),
            step(|s| {
                s.set_headers = Some(BTreeMap::from([(
                    "Customer".to_owned(),
                    "{{payload.customer}}".to_owned(),
                )]))
            }),
        ],
        &payloads,
        rounds,
    );
    measure(
        "map with 2 outputs (.items[])",
        &[step(|s| {
            s.map = Some(".order_id as $id | .items[] | {sku, order: $id}".into())
        })],
        &payloads,
        rounds,
    );
}
