//! jetflow's data plane: runs one Pipeline's splits, from a JetStream source through the steps
//! to a sink, and checkpoints their positions.
//!
//! ```text
//!  source/ ──▶ split/ (steps, error policy, window) ──▶ sink/ ──▶ checkpoint/
//!  read a split      pass each message through          publish,     commit positions
//!  in batches        the steps; failed messages go      confirm in   with compare-and-swap,
//!                    to dead letters, skip or stop      order        then ack the source
//! ```
//!
//! [`pipeline`] draws the whole topology and owns the split set; `main.rs` only parses flags and
//! wires the runner, the HTTP endpoints ([`http`]) and the signals together. Nothing here spawns
//! a task per message or queues without bound: every channel and window has a capacity.

pub mod assignment;
pub mod budget;
pub mod checkpoint;
pub mod cluster;
pub mod discovery;
pub mod evaluator;
pub mod http;
/// The log setup (shared with the operator).
pub use jetflow_logs as logs;
pub mod metrics;
pub mod pipeline;
pub mod sink;
pub mod source;
pub mod split;

pub use checkpoint::{CheckpointStore, Committer, FileStore};
pub use metrics::Metrics;
pub use pipeline::{RunError, RunOutcome, Runner, RunnerConfig};
