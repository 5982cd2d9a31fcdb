//! The `Stream` resource: a JetStream stream declared in Kubernetes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::{ByteSize, Connection, Duration};

/// The schema pattern of a JetStream stream or consumer name: no whitespace, dots, `*`, `>`,
/// path separators or non-printable characters.
pub const STREAM_NAME_PATTERN: &str = r"^[^.*>/\\\s]+$";

/// A JetStream stream. The operator creates it, updates it in place where JetStream allows,
/// adopts an existing stream of the same name, and deletes it only when `deletionPolicy` is
/// `Delete`.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "jetflow.io",
    version = "v1alpha1",
    kind = "Stream",
    doc = "A JetStream stream managed (or observed) by jetflow.",
    namespaced,
    status = "StreamStatus",
    shortname = "jfs",
    category = "jetflow",
    cel,
    printcolumn = r#"{"name":"Stream","type":"string","jsonPath":".status.streamName"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Messages","type":"integer","jsonPath":".status.state.messages"}"#,
    printcolumn = r#"{"name":"Bytes","type":"integer","jsonPath":".status.state.bytes"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode != 'Observe' || self.deletionPolicy != 'Delete'")
    .message("deletionPolicy: Delete is not allowed for a Stream in Observe mode, which never writes to the stream"))]
#[x_kube(validation = Rule::new("self.retention != 'WorkQueue' || self.discard != 'New' || has(self.maxMsgs) || has(self.maxBytes)")
    .message("discard: New on a WorkQueue stream needs maxMsgs or maxBytes to have an effect"))]
pub struct StreamSpec {
    /// Name of the JetStream stream. Defaults to the resource's name. Cannot be changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[^.*>/\\\s]+$"), length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("name cannot be changed"))]
    pub name: Option<String>,

    /// Managed (the default): the operator creates and updates the stream. Observe: the
    /// operator only reads an existing stream's state into status and never writes to it.
    #[serde(default)]
    pub mode: StreamMode,

    /// A description stored with the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,

    /// Subjects the stream captures; wildcards (`orders.*`, `orders.>`) allowed.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub subjects: Vec<String>,

    /// Where messages are kept: File (the default) or Memory. Cannot be changed on an existing
    /// stream; the operator reports such a change in the Ready condition.
    #[serde(default)]
    pub storage: Storage,

    /// When messages are removed: Limits (the default), Interest or WorkQueue.
    #[serde(default)]
    pub retention: Retention,

    /// Oldest message age kept, such as `24h`. Unlimited when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,

    /// Total size of the stream, such as `10Gi`. Unlimited when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<ByteSize>,

    /// Number of messages kept. Unlimited when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_msgs: Option<i64>,

    /// Largest message accepted, such as `1Mi`. The server's limit when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_msg_size: Option<ByteSize>,

    /// Messages kept per subject. Unlimited when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_msgs_per_subject: Option<i64>,

    /// Number of copies in a clustered JetStream (1, 3 or 5 in practice).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 5))]
    pub replicas: i32,

    /// What happens when a limit is reached: Old (the default) removes the oldest messages,
    /// New refuses new ones.
    #[serde(default)]
    pub discard: Discard,

    /// How long message ids are remembered for deduplication; defaults to the server's 2m. A
    /// Pipeline's sink stream needs a window longer than the pipeline's checkpoint interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_window: Option<Duration>,

    /// A subject transform applied to messages as they are stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_transform: Option<SubjectTransform>,

    /// How to reach NATS. Defaults to the operator's default URL without credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<Connection>,

    /// What deleting this resource does to the stream: Retain (the default) keeps the stream
    /// and its data; Delete removes the stream.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

fn default_replicas() -> i32 {
    1
}

/// Whether the operator manages the stream or only observes it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum StreamMode {
    /// Create, update and (by deletion policy) delete the stream.
    #[default]
    Managed,
    /// Read an existing stream's state; never write.
    Observe,
}

/// JetStream storage type.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum Storage {
    /// On disk.
    #[default]
    File,
    /// In memory; lost when the server restarts.
    Memory,
}

/// JetStream retention policy.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum Retention {
    /// Keep messages until a limit is reached.
    #[default]
    Limits,
    /// Keep messages while a consumer has yet to acknowledge them.
    Interest,
    /// Remove each message once acknowledged.
    WorkQueue,
}

/// JetStream discard policy.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum Discard {
    /// Remove the oldest messages.
    #[default]
    Old,
    /// Refuse new messages.
    New,
}

/// What deleting the resource does to the stream.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum DeletionPolicy {
    /// Keep the stream and its data.
    #[default]
    Retain,
    /// Delete the stream.
    Delete,
}

/// A subject transform: messages stored under `source` are stored as `destination`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubjectTransform {
    /// Subject filter the transform applies to.
    #[schemars(length(min = 1))]
    pub source: String,
    /// Destination mapping, such as `archive.{{wildcard(1)}}`.
    #[schemars(length(min = 1))]
    pub destination: String,
}

/// What the operator observed of the stream.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Name of the JetStream stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_name: Option<String>,
    /// Ready, Degraded and friends, in the Kubernetes conventions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The stream's state at the last reconcile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StreamState>,
}

/// A stream's state as JetStream reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamState {
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Sequence of the first stored message.
    pub first_sequence: u64,
    /// Sequence of the last stored message.
    pub last_sequence: u64,
    /// Number of consumers.
    pub consumer_count: u64,
}

impl Stream {
    /// The JetStream stream name: `spec.name`, or the resource's name.
    pub fn stream_name(&self) -> String {
        self.spec
            .name
            .clone()
            .unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }
}
