//! The worker's integration tests, built and linked as one test binary (`--test it`): each
//! module is one area, run against a real nats-server, real `jetflow-worker` processes and, for
//! the in-cluster stores, an in-memory Kubernetes API. Run one area with
//! `cargo test -p jetflow-worker --test it passthrough`.

// Shared helpers.
mod common;
mod kube_support;
mod support;

mod auth;
mod bounded;
mod configmap_assignment;
mod configmap_flags;
mod configmap_pod;
mod configmap_runner;
mod configmap_store;
mod consumer_limit;
mod core_guarantees;
mod dynamic_splits;
mod hostile_checkpoint;
mod hostile_sink;
mod hostile_steps;
mod logs;
mod lost_deliveries;
mod operator_consumers;
mod ownership;
mod passthrough;
mod process;
mod recreated_stream;
mod replay_for;
mod routing;
mod shared_checkpoint;
mod sink_reconnect;
mod sink_refusals;
mod steps_e2e;
mod steps_errors;
mod steps_replay;
mod stuck_splits;
