//! jetflow end to end without a cluster: the pieces that the local end-to-end tests
//! (`tests/examples.rs`) and the local demo (`scripts/demo.sh`, through the
//! `jetflow-demo-tools` binary) share.
//!
//! - [`streams`] creates the JetStream streams an example's `Stream` manifests declare, with the
//!   same translation the operator uses (`jetflow_nats::stream_config`).
//! - [`output`] reads what a pipeline wrote: a stream's messages in order, or the messages a
//!   Core subscription hears.
//! - [`worker`] runs `jetflow-worker` as a real process and stops it with SIGTERM or SIGKILL.
//!
//! Nothing here is a double of NATS or of the worker: the tests drive a real nats-server and
//! real worker processes, and check what arrives.

pub mod output;
pub mod streams;
pub mod worker;

/// What went wrong in an end-to-end helper.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A manifest could not be read or does not validate.
    #[error("manifest {path}: {source}")]
    Manifest {
        /// The manifest file.
        path: String,
        /// Why (boxed: it is large, and errors travel through every `Result` here).
        source: Box<jetflow_crds::manifest::ManifestError>,
    },
    /// The connection to NATS failed.
    #[error("connecting to NATS: {0}")]
    Connect(#[from] jetflow_nats::ConnectError),
    /// A stream could not be created or updated.
    #[error("creating stream {stream}: {source}")]
    ApplyStream {
        /// The stream.
        stream: String,
        /// Why.
        source: async_nats::jetstream::context::CreateStreamError,
    },
    /// A stream's state could not be read.
    #[error("reading stream {stream}: {source}")]
    StreamInfo {
        /// The stream.
        stream: String,
        /// Why.
        source: async_nats::jetstream::context::GetStreamError,
    },
    /// A stream's state could not be read.
    #[error("reading the state of stream {stream}: {source}")]
    StreamState {
        /// The stream.
        stream: String,
        /// Why.
        source: async_nats::jetstream::context::RequestError,
    },
    /// A stored message could not be read.
    #[error("reading message {sequence} of stream {stream}: {source}")]
    ReadMessage {
        /// The stream.
        stream: String,
        /// The sequence.
        sequence: u64,
        /// Why.
        source: async_nats::jetstream::stream::RawMessageError,
    },
    /// A publish failed.
    #[error("publishing to {subject}: {source}")]
    Publish {
        /// The subject.
        subject: String,
        /// Why.
        source: async_nats::PublishError,
    },
    /// A subscription failed.
    #[error("subscribing to {subject}: {source}")]
    Subscribe {
        /// The subject.
        subject: String,
        /// Why.
        source: async_nats::SubscribeError,
    },
    /// The worker binary could not be started.
    #[error("starting {binary}: {source}")]
    SpawnWorker {
        /// The binary.
        binary: String,
        /// Why.
        source: std::io::Error,
    },
    /// Signalling or waiting for the worker failed.
    #[error("worker process {pid}: {source}")]
    WorkerProcess {
        /// The process id.
        pid: u32,
        /// Why.
        source: std::io::Error,
    },
    /// Something did not happen in time.
    #[error("timed out after {seconds:.1}s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        seconds: f64,
    },
}

/// The result of the helpers.
pub type Result<T, E = Error> = std::result::Result<T, E>;
