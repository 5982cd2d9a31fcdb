//! The Pipeline reconcile's first phase: what NATS and Kubernetes have now. The streams the
//! pipeline names come first (validation needs them); the splits, the checkpoint, the
//! assignment and the ready workers only for a valid pipeline.
//!
//! Reads only, with one exception: the checkpoint ConfigMap is created (empty) when it does not
//! exist, so that it outlives the Pipeline (no owner) and a reset can replace it conditionally
//! on the version read. Errors are returned as they are and retried with backoff.

use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::Stream;
use jetflow_crds::assignment::Assignment;
use jetflow_crds::checkpoint::Checkpoint;
use jetflow_crds::split::{self, Split};
use jetflow_crds::{Pipeline, names};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};

use super::build::{self, configmap};
use super::validate::Facts;
use crate::controller::Context;
use crate::{ConsumerAction, Error, Result};

/// The JetStream stream `name`, `None` when it does not exist.
pub(crate) async fn get_stream(
    js: &async_nats::jetstream::Context,
    name: &str,
) -> Result<Option<Stream>> {
    match js.get_stream(name).await {
        Ok(stream) => Ok(Some(stream)),
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(je)
                if je.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(None)
            }
            _ => Err(Error::StreamInfo {
                stream: name.to_owned(),
                source: Box::new(e),
            }),
        },
    }
}

/// What NATS has of the streams a pipeline names.
pub struct Streams {
    /// The JetStream context of the pipeline's connection.
    pub js: async_nats::jetstream::Context,
    /// The source stream (`Some(None)`: named but missing; `None`: no JetStream source).
    pub source: Option<Option<Stream>>,
    /// The sink stream, likewise.
    pub sink: Option<Option<Stream>>,
}

impl Streams {
    /// The source stream, when the pipeline names one and it exists.
    pub fn source(&self) -> Option<&Stream> {
        self.source.as_ref().and_then(Option::as_ref)
    }

    /// What validation needs to know of the streams.
    pub fn facts(&self) -> Facts {
        Facts {
            source_stream_exists: self.source.as_ref().map(Option::is_some),
            source_retention_unsupported: self.source().and_then(|s| {
                jetflow_nats::stream::unsupported_source_retention(s.cached_info().config.retention)
            }),
            sink_duplicate_window: self
                .sink
                .as_ref()
                .map(|s| s.as_ref().map(|s| s.cached_info().config.duplicate_window)),
            source_subjects: self
                .source()
                .map(|s| jetflow_nats::routing::stream_subjects(&s.cached_info().config)),
            sink_subjects: self
                .sink
                .as_ref()
                .and_then(Option::as_ref)
                .map(|s| jetflow_nats::routing::stream_subjects(&s.cached_info().config)),
        }
    }
}

/// Reads the streams the pipeline names.
pub async fn streams(p: &Pipeline, ns: &str, ctx: &Context) -> Result<Streams> {
    let js = ctx
        .nats
        .jetstream(&ctx.client, ns, p.spec.connection.as_ref())
        .await?;
    let source = match &p.spec.source.jetstream {
        Some(s) => Some(get_stream(&js, &s.stream).await?),
        None => None,
    };
    let sink = match &p.spec.sink.jetstream {
        Some(s) => Some(get_stream(&js, &s.stream).await?),
        None => None,
    };
    Ok(Streams { js, source, sink })
}

/// What Kubernetes and the source stream have of a valid pipeline's progress.
pub struct State {
    /// The splits of the source.
    pub splits: Vec<Split>,
    /// The checkpoint ConfigMap.
    pub checkpoint_cm: ConfigMap,
    /// Whether it was left by another Pipeline of this name: it existed before this reconcile
    /// and names another Pipeline UID, or none (made by an older release). One this Pipeline
    /// created, in this reconcile or in one that did not finish, is its own.
    pub checkpoint_foreign: bool,
    /// The checkpoint it holds.
    pub checkpoint: Checkpoint,
    /// The assignment ConfigMap, if any.
    pub assignment_cm: Option<ConfigMap>,
    /// The assignment it holds (empty without one).
    pub assignment: Assignment,
    /// The names of the worker pods that are ready and not going away, sorted.
    pub workers: Vec<String>,
}

impl State {
    /// The split names, in order.
    pub fn split_names(&self) -> Vec<String> {
        self.splits.iter().map(|s| s.name.clone()).collect()
    }
}

/// Reads the splits, the checkpoint (creating its ConfigMap, recording `epoch`, when missing),
/// the assignment and the ready workers.
pub async fn state(
    p: &Pipeline,
    ns: &str,
    ctx: &Context,
    source: Option<&Stream>,
    epoch: Option<&str>,
) -> Result<State> {
    let name = p.name_any();
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let splits = splits(p, source).await?;
    let uid = p.uid();
    let (checkpoint_cm, checkpoint_foreign) =
        checkpoint_config_map(&cms, &name, ns, epoch, uid.as_deref()).await?;
    let checkpoint: Checkpoint = decode(Some(&checkpoint_cm), names::CHECKPOINT_KEY)?;
    let assignment_name = names::assignment_config_map(&name);
    let assignment_cm = cms
        .get_opt(&assignment_name)
        .await
        .map_err(|source| Error::Read {
            kind: "ConfigMap",
            name: assignment_name.clone(),
            source,
        })?;
    let assignment: Assignment = decode(assignment_cm.as_ref(), names::ASSIGNMENT_KEY)?;
    let workers = ready_workers(ctx, ns, &name).await?;
    Ok(State {
        splits,
        checkpoint_cm,
        checkpoint_foreign,
        checkpoint,
        assignment_cm,
        assignment,
        workers,
    })
}

/// The splits of the source: from the spec, or, with `splitBy: Subject`, the subjects found in
/// the stream under the filters.
async fn splits(p: &Pipeline, source: Option<&Stream>) -> Result<Vec<Split>> {
    let (Some(stream), true) = (source, split::is_dynamic(&p.spec)) else {
        return Ok(split::static_splits(&p.spec));
    };
    let filters: Vec<String> = split::static_splits(&p.spec)
        .into_iter()
        .map(|s| s.subject)
        .collect();
    jetflow_nats::discovery::subjects(stream, &filters)
        .await
        .map_err(|e| Error::StreamInfo {
            stream: e.stream.clone(),
            source: Box::new(e),
        })
}

fn decode<T: serde::de::DeserializeOwned + Default>(
    cm: Option<&ConfigMap>,
    key: &'static str,
) -> Result<T> {
    let Some(text) = cm.and_then(|c| c.data.as_ref()).and_then(|d| d.get(key)) else {
        return Ok(T::default());
    };
    serde_json::from_str(text).map_err(|source| Error::Decode {
        name: cm.map(|c| c.name_any()).unwrap_or_default(),
        key,
        source,
    })
}

/// The names of the pipeline's worker pods that are ready and not going away.
async fn ready_workers(ctx: &Context, ns: &str, name: &str) -> Result<Vec<String>> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&build::selector_string(name)))
        .await
        .map_err(|source| Error::ListPods {
            pipeline: name.to_owned(),
            source,
        })?;
    let mut ready: Vec<String> = list
        .items
        .into_iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter(|pod| {
            pod.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .map(|pod| pod.name_any())
        .collect();
    ready.sort();
    Ok(ready)
}

/// Reads the checkpoint ConfigMap, creating it (empty, recording `uid`) when it does not exist.
/// Returns it and whether another Pipeline left it ([`State::checkpoint_foreign`]).
async fn checkpoint_config_map(
    cms: &Api<ConfigMap>,
    name: &str,
    ns: &str,
    reset: Option<&str>,
    uid: Option<&str>,
) -> Result<(ConfigMap, bool)> {
    let foreign = |cm: &ConfigMap| {
        cm.annotations()
            .get(build::PIPELINE_UID_ANNOTATION)
            .map(String::as_str)
            != uid
    };
    let cm_name = names::checkpoint_config_map(name);
    let read = |source| Error::Read {
        kind: "ConfigMap",
        name: cm_name.clone(),
        source,
    };
    if let Some(cm) = cms.get_opt(&cm_name).await.map_err(read)? {
        let foreign = foreign(&cm);
        return Ok((cm, foreign));
    }
    let fresh = configmap::checkpoint_config_map(name, ns, &Checkpoint::default(), reset, uid)?;
    match cms.create(&PostParams::default(), &fresh).await {
        Ok(cm) => Ok((cm, false)),
        // Created by someone else meanwhile: use theirs.
        Err(kube::Error::Api(s)) if s.code == 409 => cms
            .get(&cm_name)
            .await
            .map(|cm| {
                let foreign = foreign(&cm);
                (cm, foreign)
            })
            .map_err(read),
        Err(source) => Err(Error::Apply {
            kind: "ConfigMap",
            name: cm_name.clone(),
            source,
        }),
    }
}

/// The first stream sequence stored at or after `time` (the last sequence + 1 when there is none),
/// as the server resolves a consumer's start time: read off a short-lived consumer.
pub async fn first_sequence_at(stream: &Stream, time: jiff::Timestamp) -> Result<u64> {
    use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
    let stream_name = stream.cached_info().config.name.clone();
    let fail = |action: ConsumerAction| {
        let stream_name = stream_name.clone();
        move |e: Box<dyn std::error::Error + Send + Sync>| Error::Consumer {
            stream: stream_name,
            consumer: "(rewind probe)".into(),
            action,
            source: e,
        }
    };
    let start_time = async_nats::datetime::parse_rfc3339(&time.to_string())
        .map_err(|e| fail(ConsumerAction::Configure)(e))?;
    let mut consumer: async_nats::jetstream::consumer::Consumer<pull::Config> = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::ByStartTime { start_time },
            ack_policy: AckPolicy::None,
            inactive_threshold: std::time::Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .map_err(|e| fail(ConsumerAction::Create)(Box::new(e)))?;
    let info = consumer
        .info()
        .await
        .map_err(|e| fail(ConsumerAction::Read)(Box::new(e)))?
        .clone();
    // Gone by itself after the inactive threshold when this delete fails.
    let _ = stream.delete_consumer(&info.name).await;
    Ok(info.delivered.stream_sequence + 1)
}
