//! jetflow's operator: the Stream and Pipeline reconcilers, split assignment, leader election
//! and the operator's metrics.
//!
//! The layout follows the reconcile: [`controller`] holds the shared context, the error policy
//! and the controller wiring, [`controller::ssa`] the server-side apply; [`stream`] and
//! [`pipeline`] each reconcile one resource kind, in phases (observe → validate → desired →
//! apply → status) whose pure parts never touch a client; [`reasons`] holds every condition and
//! Event reason;
//! [`assignment`] is the pure split assignment; [`leader`] the coordination Lease loop;
//! [`permissions`] the one table of every Kubernetes API call the operator makes, which a test
//! compares with the Helm chart's RBAC.
//!
//! Errors: every failure is an [`Error`] variant named for what failed, keeping its source, with
//! a stable [`Error::category`] for metrics and Events. An invalid spec is not an error here:
//! it becomes a condition and the reconcile waits for the next change.

// kube::Error (kept whole as a source) makes the enum large; errors are rare and never on a
// hot path, so boxing every source would only add noise.
#![allow(clippy::result_large_err)]

pub mod assignment;
pub mod controller;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod permissions;
pub mod pipeline;
pub mod reasons;
pub mod stream;

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "jetflow-operator";
/// The finalizer the operator puts on Pipelines and Streams.
pub const FINALIZER: &str = "jetflow.io/cleanup";

/// What failed during a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading an object from the Kubernetes API failed.
    #[error("cannot read {kind} {name}: {source}")]
    Read {
        /// The object's kind.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// Listing the worker pods of a pipeline failed.
    #[error("cannot list the worker pods of pipeline {pipeline}: {source}")]
    ListPods {
        /// The pipeline.
        pipeline: String,
        /// The API error.
        source: kube::Error,
    },
    /// Creating or applying an object failed.
    #[error("cannot apply {kind} {name}: {source}")]
    Apply {
        /// The object's kind.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// Writing a resource's status failed.
    #[error("cannot write the status of {kind} {name}: {source}")]
    PublishStatus {
        /// The resource kind.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// Reading a Secret that a connection refers to failed.
    #[error("cannot read Secret {namespace}/{name} named by the connection: {source}")]
    ReadSecret {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// Connecting to NATS failed.
    #[error(transparent)]
    Connect(#[from] jetflow_nats::ConnectError),
    /// Reading a JetStream stream's configuration or state failed.
    #[error("stream {stream}: cannot read its configuration: {source}")]
    StreamInfo {
        /// The stream.
        stream: String,
        /// The NATS error.
        source: async_nats::Error,
    },
    /// Creating, updating or deleting a JetStream stream failed.
    #[error("stream {stream}: cannot {action} it: {source}")]
    WriteStream {
        /// The stream.
        stream: String,
        /// What was being done.
        action: StreamAction,
        /// The NATS error.
        source: async_nats::Error,
    },
    /// Reading, creating, updating or deleting a durable consumer failed.
    #[error("stream {stream}: cannot {action} consumer {consumer}: {source}")]
    Consumer {
        /// The source stream.
        stream: String,
        /// The consumer.
        consumer: String,
        /// What was being done.
        action: ConsumerAction,
        /// The NATS error.
        source: async_nats::Error,
    },
    /// Encoding an object (worker configuration, assignment, checkpoint) failed.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A stored document (checkpoint, assignment) cannot be read.
    #[error("ConfigMap {name}: key {key} is not valid: {source}")]
    Decode {
        /// The ConfigMap.
        name: String,
        /// The key.
        key: &'static str,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The object lacks metadata the operator relies on (a namespace, a uid).
    #[error("{kind} {name} has no {field}")]
    MissingMetadata {
        /// The object's kind.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The missing field.
        field: &'static str,
    },
    /// Adding or removing the finalizer failed, or its apply or cleanup branch did.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// Reading or writing the leader election Lease failed.
    #[error("leader election lease {name}: {source}")]
    Lease {
        /// The Lease.
        name: String,
        /// The API error.
        source: kube::Error,
    },
}

/// What the operator was doing to a JetStream stream when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamAction {
    /// Creating it.
    Create,
    /// Updating its configuration.
    Update,
    /// Deleting it.
    Delete,
}

impl std::fmt::Display for StreamAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
        })
    }
}

/// What the operator was doing to a durable consumer when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumerAction {
    /// Building its configuration from the spec.
    Configure,
    /// Reading its configuration and state.
    Read,
    /// Listing the stream's consumers.
    List,
    /// Creating it.
    Create,
    /// Updating its configuration.
    Update,
    /// Deleting it.
    Delete,
}

impl std::fmt::Display for ConsumerAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Configure => "configure",
            Self::Read => "read",
            Self::List => "list",
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
        })
    }
}

/// The result of the operator's fallible operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A stable, low-cardinality category for metrics labels and Events.
    pub fn category(&self) -> &'static str {
        if self.is_conflict() {
            return "conflict";
        }
        match self {
            Self::Read { .. } | Self::ListPods { .. } => "read",
            Self::Apply { .. } => "apply",
            Self::PublishStatus { .. } => "status",
            Self::ReadSecret { .. } => "secret",
            Self::Connect(e) => match e.category() {
                "authentication" => "nats_auth",
                "secret" => "secret",
                _ => "nats_connect",
            },
            Self::StreamInfo { .. } | Self::WriteStream { .. } => "stream",
            Self::Consumer { .. } => "consumer",
            Self::Encode { .. } | Self::Decode { .. } => "encode",
            Self::MissingMetadata { .. } => "metadata",
            Self::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.category(),
                _ => "finalizer",
            },
            Self::Lease { .. } => "lease",
        }
    }

    /// Whether the error is a write refused because the object changed since it was read (HTTP
    /// 409): retried promptly, as the next read sees the new version.
    pub fn is_conflict(&self) -> bool {
        let api = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 409);
        match self {
            Self::Apply { source, .. }
            | Self::PublishStatus { source, .. }
            | Self::Lease { source, .. } => api(source),
            Self::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.is_conflict(),
                kube::runtime::finalizer::Error::AddFinalizer(e)
                | kube::runtime::finalizer::Error::RemoveFinalizer(e) => api(e),
                _ => false,
            },
            _ => false,
        }
    }
}
