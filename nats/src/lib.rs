//! NATS plumbing that the operator and the worker share: opening a connection from a
//! [`Connection`](jetflow_crds::Connection) spec, the one definition of how a split is read (its
//! consumer, [`consumer`]), and turning a [`StreamSpec`] into a JetStream
//! stream configuration and back.

pub mod connect;
pub mod consumer;
pub mod stream;

pub use connect::{ConnectError, SecretData, Secrets, connect, install_crypto_provider};
pub use stream::{stream_config, stream_state};
