//! Step evaluation for one split, on a thread of its own, with a time budget per message.
//!
//! ```text
//!  split task ──a batch of messages──▶ evaluator thread: Steps::apply, one after another
//!      ▲          (shared, not copied)           │
//!      └──────── one outcome per message ────────┘   each awaited at most `budget`
//! ```
//!
//! The thread gets the split task's messages themselves (`Arc<SourceMessage>`): nothing of a
//! message is copied to evaluate it, and a batch the split received is handed over at once.
//!
//! A jq evaluation cannot be interrupted from outside: an expression that never ends
//! (`def f: f; f`) or builds a huge value (`[range(1e12)]`) keeps its thread busy. So the split
//! task never runs the steps itself: it waits for each message's outcome at most the budget
//! (`--step-timeout`). Past it the message fails with kind `timeout` (the pipeline's error
//! policy decides where it goes, as for any failed message), the busy thread is abandoned, and
//! the messages after it go to a new thread. The split, its snapshots and every other split go
//! on. An abandoned thread ends when its evaluation does; until then it is counted in
//! `jetflow_worker_runaway_evaluations` (only a restart of the worker ends one that never
//! finishes).
//!
//! The outcomes the thread has evaluated ahead of the split task are bounded in bytes: the
//! thread waits before handing over another while those it handed over hold more than the
//! split's share of the worker's budget ([`Budget::step_results_bytes`]), so a batch of
//! messages that each fan out to thousands of outputs is not held in memory at once. One outcome
//! is always let through, however large (the outputs of one message are held together, so that
//! the message can go out whole or fail whole).
//!
//! Shutdown: dropping the evaluator closes its thread's job channel; the thread ends after the
//! message it is evaluating.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use jetflow_steps::{FailureKind, Headers, Input, Output, StepFailure, Steps};
use prometheus::IntGauge;
use tokio::sync::mpsc;

use crate::budget::Budget;
use crate::source::SourceMessage;

/// The stack of an evaluator thread: jq recursion is deep before it is endless.
const STACK_SIZE: usize = 8 * 1024 * 1024;

/// A message to evaluate, with its id in the evaluator's order.
type Job = (u64, Arc<SourceMessage>);

/// One message's outcome: its outputs, or why it failed.
pub type Outcome = Result<Vec<Output>, StepFailure>;

/// What an output holds besides its payload and subject (its headers and the structures that
/// carry it), as counted against the byte budget.
const OUTPUT_OVERHEAD: usize = 128;

/// How often a thread waiting for the split task to take outcomes checks that the task still
/// wants them.
const HELD_POLL: Duration = Duration::from_millis(100);

/// The bytes an outcome holds, as counted against the budget.
fn weight(outcome: &Outcome) -> usize {
    match outcome {
        Ok(outputs) => outputs
            .iter()
            .map(|o| o.payload.len() + o.subject.len() + OUTPUT_OVERHEAD)
            .sum(),
        Err(failure) => failure.message.len() + OUTPUT_OVERHEAD,
    }
}

/// The bytes of the outcomes a thread handed over and the split task has not taken yet, and
/// the signal that it took some.
#[derive(Debug, Default)]
struct Held {
    bytes: Mutex<usize>,
    taken: Condvar,
    /// Whether the thread waits for the task to take outcomes.
    waiting: AtomicBool,
}

impl Held {
    /// The task took an outcome of `size` bytes.
    fn release(&self, size: usize) {
        let mut bytes = self.bytes.lock().expect("not poisoned");
        *bytes = bytes.saturating_sub(size);
        self.taken.notify_one();
    }

    /// The bytes held now.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        *self.bytes.lock().expect("not poisoned")
    }
}

/// A running evaluator thread, seen from the split task.
struct Thread {
    jobs: std::sync::mpsc::Sender<Vec<Job>>,
    results: mpsc::UnboundedReceiver<(u64, Outcome, usize)>,
    /// What the outcomes in `results` hold.
    held: Arc<Held>,
    /// The index of the step the thread runs now.
    current: Arc<AtomicUsize>,
    abandoned: Arc<AtomicBool>,
}

/// Runs one split's steps off its task, with a time budget per message.
pub struct Evaluator {
    steps: Arc<Steps>,
    budget: Duration,
    /// The worker's byte budget, for the outcomes held ahead of the task.
    bytes: Budget,
    split: String,
    runaway: IntGauge,
    thread: Option<Thread>,
    /// Submitted messages whose outcome was not taken yet, oldest first, with their ids.
    pending: VecDeque<Job>,
    next_id: u64,
}

impl Evaluator {
    /// An evaluator of `steps` for `split`, allowing each message `budget`, holding outcomes
    /// ahead of the split task within its share of `bytes`; abandoned evaluations still
    /// running are counted in `runaway`.
    pub fn new(
        steps: Arc<Steps>,
        budget: Duration,
        bytes: Budget,
        split: &str,
        runaway: IntGauge,
    ) -> Self {
        Self {
            steps,
            budget,
            bytes,
            split: split.to_owned(),
            runaway,
            thread: None,
            pending: VecDeque::new(),
            next_id: 0,
        }
    }

    /// Queues messages for evaluation, handed to the thread at once; outcomes come from
    /// [`Evaluator::next`] in order.
    pub fn submit<'m>(&mut self, messages: impl IntoIterator<Item = &'m Arc<SourceMessage>>) {
        let first = self.pending.len();
        for message in messages {
            self.pending.push_back((self.next_id, Arc::clone(message)));
            self.next_id += 1;
        }
        if self.pending.len() == first {
            return;
        }
        let batch = self.pending.range(first..).cloned().collect();
        let sent = self.thread().jobs.send(batch).is_ok();
        if !sent {
            self.restart();
        }
    }

    /// The outcome of the oldest queued message; `None` when nothing is queued.
    pub async fn next(&mut self) -> Option<Outcome> {
        let (id, job) = self.pending.front()?.clone();
        let budget = self.budget;
        loop {
            let thread = self.thread();
            match tokio::time::timeout(budget, thread.results.recv()).await {
                // An outcome of a message dropped by `discard`: not this one.
                Ok(Some((done, _, size))) if done != id => thread.held.release(size),
                Ok(Some((_, outcome, size))) => {
                    thread.held.release(size);
                    self.pending.pop_front();
                    return Some(outcome);
                }
                Ok(None) => {
                    // The thread ended without an outcome: the steps panicked on this message.
                    self.pending.pop_front();
                    self.restart();
                    return Some(Err(self.failure(
                        0,
                        FailureKind::Eval,
                        "the steps failed unexpectedly on this message".to_owned(),
                    )));
                }
                Err(_) => {
                    let step = thread.current.load(Ordering::Relaxed);
                    let abandoned = thread.abandoned.clone();
                    // Counted before the thread can see the mark (it uncounts itself at its end).
                    self.runaway.inc();
                    abandoned.store(true, Ordering::Release);
                    tracing::warn!(
                        split = %self.split,
                        seq = job.seq,
                        step,
                        budget = ?self.budget,
                        runaway = self.runaway.get(),
                        "the steps overran their time budget on a message; its evaluation is abandoned and the message goes to the error policy"
                    );
                    self.pending.pop_front();
                    self.restart();
                    return Some(Err(self.failure(
                        step,
                        FailureKind::Timeout,
                        format!(
                            "the steps did not finish within {:?} (--step-timeout)",
                            self.budget
                        ),
                    )));
                }
            }
        }
    }

    /// Forgets every queued message (the split stopped taking them); the thread that has them
    /// queued is let go, and ends after the message it is evaluating.
    pub fn discard(&mut self) {
        if !self.pending.is_empty() {
            self.pending.clear();
            self.thread = None;
        }
    }

    fn failure(&self, index: usize, kind: FailureKind, message: String) -> StepFailure {
        let name = self.steps.names().nth(index).unwrap_or("steps").to_owned();
        StepFailure {
            index,
            name,
            kind,
            message,
        }
    }

    fn thread(&mut self) -> &mut Thread {
        self.thread.get_or_insert_with(|| {
            spawn(
                self.steps.clone(),
                self.bytes.clone(),
                &self.split,
                self.runaway.clone(),
            )
        })
    }

    /// The bytes of outcomes evaluated ahead and not taken yet, and whether the thread waits
    /// for the task to take some.
    #[cfg(test)]
    fn held(&self) -> (usize, bool) {
        self.thread.as_ref().map_or((0, false), |t| {
            (t.held.bytes(), t.held.waiting.load(Ordering::Acquire))
        })
    }

    /// Replaces the thread, and hands it every message still queued.
    fn restart(&mut self) {
        self.thread = None;
        let pending: Vec<_> = self.pending.iter().cloned().collect();
        let thread = self.thread();
        if !pending.is_empty() {
            // A thread that ends at once is noticed by `next`.
            let _ = thread.jobs.send(pending);
        }
    }
}

/// Runs the steps over one message, storing in `current` the index of the step that runs. The
/// message's headers are converted for the steps only when a step uses them.
pub(crate) fn evaluate(steps: &Steps, message: &SourceMessage, current: &AtomicUsize) -> Outcome {
    let headers = if steps.uses_headers() {
        message.headers.as_ref().map(step_headers)
    } else {
        None
    };
    let input = Input {
        subject: &message.subject,
        headers: headers.as_ref(),
        payload: &message.payload,
        seq: message.seq,
    };
    steps.apply_observed(input, current)
}

/// NATS headers as the steps see them.
pub(crate) fn step_headers(headers: &HeaderMap) -> Headers {
    headers
        .iter()
        .flat_map(|(name, values)| {
            let name: &str = name.as_ref();
            values.iter().map(move |value| (name, value.as_str()))
        })
        .collect()
}

/// Headers the steps left, as NATS headers. Their names and values are valid NATS ones: names
/// from NATS headers or checked when the steps compiled, values from NATS headers or checked for
/// line breaks when rendered.
pub(crate) fn nats_headers(headers: &Headers) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers.iter() {
        map.append(name, value);
    }
    map
}

fn spawn(steps: Arc<Steps>, budget: Budget, split: &str, runaway: IntGauge) -> Thread {
    let (jobs, jobs_rx) = std::sync::mpsc::channel::<Vec<Job>>();
    let (results_tx, results) = mpsc::unbounded_channel();
    let current = Arc::new(AtomicUsize::new(0));
    let abandoned = Arc::new(AtomicBool::new(false));
    let held = Arc::new(Held::default());
    let (step, gone, handed) = (current.clone(), abandoned.clone(), held.clone());
    let spawned = std::thread::Builder::new()
        .name(format!("steps-{split}"))
        .stack_size(STACK_SIZE)
        .spawn(move || {
            'batches: while let Ok(batch) = jobs_rx.recv() {
                for (id, message) in batch {
                    let outcome = evaluate(&steps, &message, &step);
                    let size = weight(&outcome);
                    let mut bytes = handed.bytes.lock().expect("not poisoned");
                    // One outcome always goes; more only within the split's share.
                    while *bytes > 0 && *bytes + size > budget.step_results_bytes() {
                        handed.waiting.store(true, Ordering::Release);
                        bytes = handed
                            .taken
                            .wait_timeout(bytes, HELD_POLL)
                            .expect("not poisoned")
                            .0;
                        if results_tx.is_closed() {
                            break 'batches;
                        }
                    }
                    handed.waiting.store(false, Ordering::Release);
                    *bytes += size;
                    drop(bytes);
                    if results_tx.send((id, outcome, size)).is_err() {
                        break 'batches;
                    }
                }
            }
            if gone.load(Ordering::Acquire) {
                runaway.dec();
            }
        });
    if let Err(e) = spawned {
        // Without a thread every message fails (kind eval) and goes to the error policy.
        tracing::error!(split, error = %e, "cannot start a thread for the steps");
    }
    Thread {
        jobs,
        results,
        held,
        current,
        abandoned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetflow_crds::pipeline::Step;

    fn steps(map: &str) -> Arc<Steps> {
        let step: Step =
            serde_json::from_value(serde_json::json!({"name": "m", "map": map})).expect("step");
        Arc::new(Steps::compile(&[step]).expect("compiles"))
    }

    fn message(payload: &str, seq: u64) -> Arc<SourceMessage> {
        Arc::new(SourceMessage {
            subject: async_nats::Subject::from("in.x"),
            headers: None,
            payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
            seq,
            ack: Default::default(),
            stream: Default::default(),
        })
    }

    #[tokio::test]
    async fn a_runaway_message_times_out_and_the_next_ones_are_evaluated() {
        let runaway = IntGauge::new("runaway", "help").unwrap();
        let mut e = Evaluator::new(
            steps("if .n == 2 then (def f: f; f) else .n end"),
            Duration::from_millis(300),
            Budget::new(),
            "s",
            runaway.clone(),
        );
        let messages: Vec<_> = (1..=3)
            .map(|n| message(&format!(r#"{{"n": {n}}}"#), n))
            .collect();
        e.submit(&messages);
        assert_eq!(e.next().await.unwrap().unwrap()[0].payload, "1");
        let failed = e.next().await.unwrap().unwrap_err();
        assert_eq!(
            (failed.kind, failed.name.as_str()),
            (FailureKind::Timeout, "m")
        );
        assert_eq!(runaway.get(), 1);
        assert_eq!(e.next().await.unwrap().unwrap()[0].payload, "3");
        assert!(e.next().await.is_none());
    }

    #[tokio::test]
    async fn outcomes_evaluated_ahead_stay_within_the_byte_budget_and_all_arrive_in_order() {
        // 64 messages of 10,000 outputs each (about 1.4 MB of outcome each, counted): without a
        // bound the thread would hold all 64 at once.
        let runaway = IntGauge::new("runaway", "help").unwrap();
        let budget = Budget::new();
        let _member = budget.join();
        let mut e = Evaluator::new(
            steps("range(10000) | {i: ., n: $seq}"),
            Duration::from_secs(60),
            budget.clone(),
            "s",
            runaway,
        );
        let messages: Vec<_> = (1..=64).map(|n| message("{}", n)).collect();
        e.submit(&messages);
        let first = e.next().await.unwrap().unwrap();
        let one = weight(&Ok(first.clone()));
        // Until the thread waits for room (or holds more than it may).
        let limit = budget.step_results_bytes() + one;
        loop {
            let (held, waiting) = e.held();
            assert!(
                held <= limit,
                "{held} bytes of outcomes held ahead: more than the budget of {} bytes and one \
                 outcome of {one}",
                budget.step_results_bytes()
            );
            if waiting {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(first.len(), 10_000);
        for n in 2..=64u64 {
            let outputs = e.next().await.unwrap().unwrap();
            assert_eq!(outputs.len(), 10_000);
            let expected = format!(r#"{{"i":9999,"n":{n}}}"#);
            assert_eq!(outputs[9_999].payload, expected.as_bytes());
        }
        assert!(e.next().await.is_none());
        assert_eq!(e.held().0, 0);
    }

    #[test]
    fn headers_convert_both_ways_keeping_every_value() {
        let mut nats = HeaderMap::new();
        nats.insert("Trace", "t-1");
        nats.append("Multi", "1");
        nats.append("Multi", "2");
        let steps = step_headers(&nats);
        assert_eq!(steps.len(), 3);
        assert_eq!(steps.get_all("Multi").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(nats_headers(&steps), nats);
    }
}
