//! jetflow's API: the `Pipeline` and `Stream` custom resources (group `jetflow.io`, version
//! `v1alpha1`), their schemas with CEL validation rules, the Rust-side validation that the
//! operator and the worker call, and the formats both binaries share: the worker configuration
//! (a Pipeline manifest), split and consumer naming, checkpoints and split assignments.
//!
//! Nothing here does I/O beyond parsing text; the crate is safe to use from any context.

pub mod assignment;
pub mod checkpoint;
pub mod condition;
pub mod connection;
pub mod crdgen;
pub mod fields;
pub mod manifest;
pub mod names;
pub mod pipeline;
pub mod rewind;
pub mod routing;
pub mod split;
pub mod stream;
pub mod subject;
pub mod units;
pub mod validate;

pub use connection::{Connection, SecretKeyRef, TlsRef, UserPasswordRef};
pub use pipeline::{Pipeline, PipelineSpec, PipelineStatus};
pub use stream::{Stream, StreamSpec, StreamStatus};
pub use units::{ByteSize, Duration};

/// The API group of jetflow's resources.
pub const GROUP: &str = "jetflow.io";
/// The API version of jetflow's resources.
pub const VERSION: &str = "v1alpha1";
