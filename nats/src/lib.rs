//! NATS plumbing that the operator and the worker share: opening a connection from a
//! [`Connection`](jetflow_crds::Connection) spec, the one definition of how a split is read (its
//! consumer, [`consumer`]), the subjects that make a `splitBy: Subject` source's splits
//! ([`discovery`]), and turning a [`StreamSpec`] into a JetStream
//! stream configuration and back, and the `Jetflow-Source` header every output carries
//! ([`source_header`]: written by the worker, read by `kubectl jetflow` and the tests), and the
//! `Jetflow-Replay-For` header of a replayed dead letter ([`replay`]).

pub mod connect;
pub mod consumer;
pub mod discovery;
pub mod replay;
pub mod routing;
pub mod source_header;
pub mod stream;

pub use connect::{
    ConnectError, EventHook, SecretData, Secrets, connect, connect_observed,
    install_crypto_provider,
};
pub use stream::{stream_config, stream_state};

/// The wait before retry number `attempt` (from 1) of something NATS-bound: 100 ms doubling up
/// to 5 s, quick after a blip and gentle on a server that is down. The one retry policy of the
/// client's reconnects, the split readers' opens and the Core sink's round trips.
pub fn backoff(attempt: u32) -> std::time::Duration {
    std::time::Duration::from_millis(100u64 << attempt.min(6))
        .min(std::time::Duration::from_secs(5))
}
