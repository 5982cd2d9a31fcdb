//! The `Pipeline` resource: one dataflow from a source through steps to a sink, with
//! checkpoints, an error policy and a number of parallel workers.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::{Connection, Duration};

/// A pipeline: reads a source split by split, passes each message through the steps, writes
/// the results to the sink, and checkpoints its positions at an interval.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "jetflow.io",
    version = "v1alpha1",
    kind = "Pipeline",
    doc = "A jetflow Pipeline: a dataflow from a NATS or JetStream source through steps to a sink, run by worker pods with checkpoints.",
    namespaced,
    status = "PipelineStatus",
    shortname = "jfp",
    category = "jetflow",
    scale(
        spec_replicas_path = ".spec.parallelism",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    cel,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Parallelism","type":"integer","jsonPath":".spec.parallelism"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Lag","type":"integer","jsonPath":".status.lag"}"#,
    printcolumn = r#"{"name":"Last Checkpoint","type":"date","jsonPath":".status.lastCheckpoint.time"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.checkpoint) || !has(self.checkpoint.mode) || self.checkpoint.mode != 'ExactlyOnce' || (has(self.source.jetstream) && has(self.sink.jetstream))"
).message("checkpoint.mode: ExactlyOnce needs a JetStream source and a JetStream sink"))]
#[x_kube(validation = Rule::new(
    "!has(self.source.bound) || !has(self.source.jetstream) || self.source.jetstream.start.from != 'New'"
).message("source.bound cannot be combined with source.jetstream.start.from: New"))]
#[x_kube(validation = Rule::new("!has(self.autoscaling) || has(self.source.jetstream)")
    .message("autoscaling needs a JetStream source (source.jetstream): a NATS Core source has no lag to scale on"))]
#[x_kube(validation = Rule::new(
    r"!has(self.sink.jetstream) || (has(self.steps) && self.steps.exists(s, has(s.setSubject))) || (has(self.sink.jetstream.subject) && !self.sink.jetstream.subject.matches('^\\{\\{\\s*subject\\s*\\}\\}$'))"
).field_path(".sink.jetstream.subject")
    .message("{{subject}} (the default) with no setSubject step writes each output to the subject it was read from, which the source reads: the outputs come back as input, for ever; set a subject the sink stream captures, such as \"copy.{{subject}}\""))]
#[x_kube(validation = Rule::new(
    r"!has(self.sink.core) || (has(self.steps) && self.steps.exists(s, has(s.setSubject))) || (has(self.sink.core.subject) && !self.sink.core.subject.matches('^\\{\\{\\s*subject\\s*\\}\\}$'))"
).field_path(".sink.core.subject")
    .message("{{subject}} (the default) with no setSubject step publishes each output to the subject it was read from, which the source reads: the outputs come back as input, for ever; set another subject, such as \"copy.{{subject}}\""))]
pub struct PipelineSpec {
    /// How to reach NATS, for the source, the sink and the dead-letter subject. Defaults to the
    /// operator's default URL without credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<Connection>,

    /// Where messages come from: exactly one of `core` and `jetstream`.
    pub source: Source,

    /// Transformations applied in order to each message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,

    /// Where messages go: exactly one of `core` and `jetstream`.
    pub sink: Sink,

    /// How often positions are committed, and the delivery guarantee asked for.
    #[serde(default)]
    pub checkpoint: CheckpointSpec,

    /// What happens to a message that cannot be decoded or transformed.
    #[serde(default)]
    pub errors: ErrorPolicy,

    /// Number of worker pods sharing the pipeline's splits.
    #[serde(default = "default_parallelism")]
    #[x_kube(validation = Rule::new("self >= 1").message("parallelism must be at least 1"))]
    pub parallelism: i32,

    /// Scales the workers on the source's lag, between `minParallelism` and `maxParallelism`
    /// and never above the number of splits. While set, the operator decides the number of
    /// workers and `parallelism` only sets where it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,

    /// Stops the workers (0 replicas) while keeping positions; set back to false to resume.
    #[serde(default)]
    pub suspend: bool,

    /// The worker pods' image, resources, environment and placement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerTemplate>,
}

fn default_parallelism() -> i32 {
    1
}

/// Autoscaling on lag: the operator adds workers as soon as the lag per worker exceeds the
/// target, and removes them once it has stayed below for the stabilization window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minParallelism <= self.maxParallelism")
    .message("autoscaling.minParallelism must not exceed autoscaling.maxParallelism"))]
pub struct Autoscaling {
    /// The fewest workers, also when there is no lag.
    #[serde(default = "default_min_parallelism")]
    #[x_kube(validation = Rule::new("self >= 1").message("autoscaling.minParallelism must be at least 1"))]
    pub min_parallelism: i32,

    /// The most workers; the number of splits caps it too (a split is read by one worker).
    #[x_kube(validation = Rule::new("self >= 1").message("autoscaling.maxParallelism must be at least 1"))]
    pub max_parallelism: i32,

    /// Messages of lag one worker is expected to carry: the workers wanted are the lag (summed
    /// over the splits) divided by this, rounded up.
    #[x_kube(validation = Rule::new("self >= 1").message("autoscaling.targetLagPerWorker must be at least 1"))]
    pub target_lag_per_worker: u64,

    /// How long the lag must have asked for fewer workers before they are removed; a scale up
    /// happens at once.
    #[serde(default = "default_scale_down_stabilization")]
    #[schemars(range(max = 86400))]
    pub scale_down_stabilization_seconds: u32,
}

fn default_min_parallelism() -> i32 {
    1
}

fn default_scale_down_stabilization() -> u32 {
    300
}

/// The source of a pipeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.core) != has(self.jetstream)")
    .message("source: set exactly one of source.core and source.jetstream"))]
#[x_kube(validation = Rule::new("!has(self.bound) || has(self.jetstream)")
    .message("source.bound is only allowed with a JetStream source (source.jetstream)"))]
pub struct Source {
    /// Subscribe to NATS Core subjects (at most once: messages published while no worker runs
    /// are not seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core: Option<CoreSource>,

    /// Read a JetStream stream through durable pull consumers, one per split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jetstream: Option<JetStreamSource>,

    /// Stop each split at a bound and finish, for backfill and batch runs. JetStream only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<Bound>,
}

/// A NATS Core source: one split per subject.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoreSource {
    /// Subjects to subscribe to; wildcards allowed. Each subject is one split.
    #[schemars(length(min = 1))]
    pub subjects: Vec<String>,

    /// A queue group, so that several workers share each subject's messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_group: Option<String>,
}

/// A JetStream source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct JetStreamSource {
    /// Name of the JetStream stream to read.
    #[schemars(regex(pattern = r"^[^.*>/\\\s]+$"), length(min = 1))]
    pub stream: String,

    /// Subject filters within the stream. Empty means the whole stream. Filters must not
    /// overlap (no subject matched by two of them): each would read, and the sink write, the
    /// same message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(min = 1, max = 512)))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, b == a))")
        .message("source.jetstream.filterSubjects must not overlap: a filter is listed twice"))]
    #[x_kube(validation = Rule::new("size(self) < 2 || !self.exists(a, a == '>')")
        .message("source.jetstream.filterSubjects must not overlap: '>' matches every other filter"))]
    pub filter_subjects: Vec<String>,

    /// How the source becomes splits: Filter (the default) makes one split per filter subject
    /// (one split for the whole stream when there is no filter); Subject makes one split per
    /// distinct subject found in the stream under the filters, and starts new splits as new
    /// subjects appear.
    #[serde(default)]
    pub split_by: SplitBy,

    /// How often to look for new subjects when `splitBy` is Subject.
    #[serde(default = "default_discovery_interval")]
    pub discovery_interval: Duration,

    /// Where a split with no checkpoint starts reading.
    #[serde(default)]
    pub start: StartPosition,

    /// Messages fetched per pull request.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 10000))]
    pub batch_size: u32,
}

fn default_discovery_interval() -> Duration {
    Duration::from_secs(30)
}

fn default_batch_size() -> u32 {
    500
}

/// How a JetStream source becomes splits.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum SplitBy {
    /// One split per filter subject.
    #[default]
    Filter,
    /// One split per distinct subject in the stream.
    Subject,
}

/// Where a split with no checkpoint starts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(self.from == 'Sequence') == has(self.sequence)")
    .message("start.sequence is required when start.from is Sequence, and only then"))]
#[x_kube(validation = Rule::new("(self.from == 'Time') == has(self.time)")
    .message("start.time is required when start.from is Time, and only then"))]
pub struct StartPosition {
    /// All (the default): from the first message; New: only messages stored after the split
    /// starts; Sequence: from `sequence`; Time: from the first message at or after `time`.
    #[serde(default)]
    pub from: StartFrom,
    /// First stream sequence to read, with `from: Sequence`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub sequence: Option<u64>,
    /// First time to read (RFC 3339), with `from: Time`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}

/// The kinds of start position.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum StartFrom {
    /// From the first message in the stream.
    #[default]
    All,
    /// Only new messages.
    New,
    /// From a stream sequence.
    Sequence,
    /// From a point in time.
    Time,
}

/// Where a bounded run stops. Exactly one of the fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "(has(self.sequence) ? 1 : 0) + (has(self.time) ? 1 : 0) + (has(self.streamEnd) && self.streamEnd ? 1 : 0) == 1"
).message("source.bound: set exactly one of sequence, time and streamEnd: true"))]
pub struct Bound {
    /// Stop after this stream sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub sequence: Option<u64>,
    /// Stop after the last message stored before this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// Stop at the stream's last sequence as it was when the split started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_end: Option<bool>,
}

/// One transformation. Exactly one of the kinds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "(has(self.filter) ? 1 : 0) + (has(self.map) ? 1 : 0) + (has(self.setSubject) ? 1 : 0) + (has(self.setHeaders) ? 1 : 0) + (has(self.dropHeaders) ? 1 : 0) == 1"
).message("each step sets exactly one of filter, map, setSubject, setHeaders and dropHeaders"))]
pub struct Step {
    /// A name for logs, metrics and dead-letter headers. Defaults to the step's kind and index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,

    /// A jq expression over the JSON payload; the message is kept when its first output is
    /// `true`, dropped on `false`, `null` or no output; any other value fails the message.
    /// `$subject`, `$headers` (header name to first value) and `$seq` are available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub filter: Option<String>,

    /// A jq expression whose output replaces the payload; several outputs make several
    /// messages, in order, each with its output index in its message id; no output drops the
    /// message. `$subject`, `$headers` (header name to first value) and `$seq` are available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub map: Option<String>,

    /// A subject template: `{{subject}}`, `{{token(N)}}` (1-based subject token) and
    /// `{{payload.field}}` (a field of the JSON payload) are replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub set_subject: Option<String>,

    /// Headers to set (replacing existing values); values may use the subject template forms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_headers: Option<BTreeMap<String, String>>,

    /// Names of headers to remove.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_headers: Option<Vec<String>>,
}

/// The sink of a pipeline.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.core) != has(self.jetstream)")
    .message("sink: set exactly one of sink.core and sink.jetstream"))]
pub struct Sink {
    /// Publish to NATS Core (at least once: flushed at each checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core: Option<CoreSink>,

    /// Publish to a JetStream stream, deduplicated by message id (exactly once from a
    /// JetStream source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jetstream: Option<JetStreamSink>,
}

/// A NATS Core sink.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoreSink {
    /// Subject template for the output; `{{subject}}` (the default) keeps the message's subject.
    #[serde(default = "default_subject_template")]
    #[schemars(length(min = 1))]
    pub subject: String,
}

/// A JetStream sink.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct JetStreamSink {
    /// Name of the stream written to; its subjects must capture the output subjects.
    #[schemars(regex(pattern = r"^[^.*>/\\\s]+$"), length(min = 1))]
    pub stream: String,

    /// Subject template for the output; `{{subject}}` (the default) keeps the message's subject.
    #[serde(default = "default_subject_template")]
    #[schemars(length(min = 1))]
    pub subject: String,

    /// Publishes awaiting their acknowledgement at once.
    #[serde(default = "default_max_pending")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_pending: u32,
}

fn default_subject_template() -> String {
    "{{subject}}".into()
}

fn default_max_pending() -> u32 {
    1024
}

/// Checkpointing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointSpec {
    /// Time between checkpoints. Messages are acknowledged to the source only at a checkpoint,
    /// so this bounds how much is replayed after a crash.
    #[serde(default = "default_checkpoint_interval")]
    pub interval: Duration,

    /// The delivery guarantee asked for. When omitted, the strongest that the source and sink
    /// allow: ExactlyOnce from JetStream to JetStream, AtLeastOnce into NATS Core, AtMostOnce
    /// from NATS Core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<DeliveryMode>,
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        Self {
            interval: default_checkpoint_interval(),
            mode: None,
        }
    }
}

fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(5)
}

/// Delivery guarantees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum DeliveryMode {
    /// Every source message's outputs are in the sink once.
    ExactlyOnce,
    /// Outputs may repeat after a crash; none are lost.
    AtLeastOnce,
    /// Outputs may be lost; none repeat.
    AtMostOnce,
}

/// What happens to a message that cannot be decoded or transformed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorPolicy {
    /// Dlq (the default): publish the original message to the dead-letter subject with the
    /// error in headers. Skip: drop it, count it and log it. Stop: stop the split, keep the last
    /// good checkpoint and report the failure.
    #[serde(default)]
    pub policy: ErrorAction,

    /// Subject for dead letters; defaults to `jetflow.dlq.<pipeline name>`. When a stream
    /// captures it, each dead letter is confirmed by JetStream before the message counts as
    /// processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub dead_letter_subject: Option<String>,
}

/// The error actions.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum ErrorAction {
    /// Send to the dead-letter subject.
    #[default]
    Dlq,
    /// Drop and count.
    Skip,
    /// Stop the split.
    Stop,
}

/// The worker pods' template.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerTemplate {
    /// Container image; defaults to the operator's worker image (Helm value `worker.image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU and memory requests and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra environment variables (`RUST_LOG`, for example).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Node labels the pods must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of node taints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}

/// What the operator observed of the pipeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStatus {
    /// Pending, Running, Suspended, Succeeded (a bounded run finished) or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PipelinePhase>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Progressing, Degraded and CheckpointStale, in the Kubernetes conventions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Worker pods there are: the worker Deployment's `status.replicas` (pods not terminating,
    /// old and new during a rollout). The scale subresource's `status.replicas`; the pods asked
    /// for are `spec.parallelism` (none while suspended or finished).
    #[serde(default)]
    pub replicas: i32,
    /// Worker pods ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// The label selector of the worker pods, as a string (`key=value,...`): the worker
    /// Deployment's selector. The scale subresource's `status.selector`, which an autoscaler
    /// uses to find the pods whose metrics it reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Messages not yet processed, summed over the splits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
    /// Each split's owner, committed position and lag.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub splits: Vec<SplitStatus>,
    /// The last completed checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<CheckpointStatus>,
    /// The generation of the split assignment published to the workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_generation: Option<u64>,
    /// What the autoscaler decided, when `spec.autoscaling` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingStatus>,
}

/// The autoscaler's state: the workers it asks for and why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingStatus {
    /// The workers asked for.
    pub desired_parallelism: i32,
    /// The workers the lag last asked for (before the scale-down stabilization).
    pub recommended_parallelism: i32,
    /// The lag the decision was made on.
    #[serde(default)]
    pub lag: u64,
    /// Since when the lag has asked for fewer workers than there are; the workers are removed
    /// once this is `scaleDownStabilizationSeconds` old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below_since: Option<Time>,
    /// When the autoscaler last changed the workers asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// Why the workers asked for are what they are.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// Pipeline phases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum PipelinePhase {
    /// Objects are being created or workers are starting.
    Pending,
    /// Workers are moving messages.
    Running,
    /// `spec.suspend` is true.
    Suspended,
    /// A bounded run reached its bound on every split.
    Succeeded,
    /// The spec is invalid or a split stopped on an error.
    Failed,
}

/// One split's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SplitStatus {
    /// Split name (its subject filter).
    pub name: String,
    /// The worker pod that owns the split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Last stream sequence fully processed and committed.
    #[serde(default)]
    pub position: u64,
    /// Messages after the position still to process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
    /// The split reached its bound.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub finished: bool,
    /// Why the split stopped, when a message failed under `errors.policy: Stop`; it resumes at
    /// that message once the steps or the data are fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// When a worker found the split's source stream deleted and created again (its sequences
    /// counted anew): the split started again at `spec.source.jetstream.start` on the new
    /// stream, and `position` counts in the new stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_recreated: Option<Time>,
}

/// A completed checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointStatus {
    /// Checkpoint id, increasing.
    pub id: u64,
    /// When it completed.
    pub time: Time,
}

impl PipelineSpec {
    /// The delivery guarantee in force: the one asked for, else the strongest the source and
    /// sink allow.
    pub fn delivery_mode(&self) -> DeliveryMode {
        if let Some(mode) = self.checkpoint.mode {
            return mode;
        }
        match (&self.source.jetstream, &self.sink.jetstream) {
            (Some(_), Some(_)) => DeliveryMode::ExactlyOnce,
            (Some(_), None) => DeliveryMode::AtLeastOnce,
            (None, _) => DeliveryMode::AtMostOnce,
        }
    }
}

impl Pipeline {
    /// The dead-letter subject: the one configured, else `jetflow.dlq.<pipeline name>`.
    pub fn dead_letter_subject(&self) -> String {
        self.spec
            .errors
            .dead_letter_subject
            .clone()
            .unwrap_or_else(|| {
                format!(
                    "jetflow.dlq.{}",
                    self.metadata.name.as_deref().unwrap_or("pipeline")
                )
            })
    }
}
