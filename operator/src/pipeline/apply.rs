//! The Pipeline reconcile's effects: dereference (NATS facts), then, for a valid Pipeline, the
//! checkpoint ConfigMap (created once, replaced on reset), the splits and their consumers, the
//! split assignment, the child objects by server-side apply (written only when they differ),
//! a dead-letter Stream when dead letters would otherwise have no stream, and the status. The cleanup path removes the consumers; Kubernetes removes the owned objects;
//! the checkpoint ConfigMap stays.
//!
//! Apply order: RBAC and ConfigMaps before the Deployment, so that a worker never starts
//! without its configuration or its permissions.

use std::collections::{BTreeMap, BTreeSet};

use async_nats::jetstream::context::GetStreamErrorKind;
use futures::TryStreamExt;
use jetflow_crds::assignment::Assignment;
use jetflow_crds::checkpoint::{Checkpoint, SplitPosition};
use jetflow_crds::condition::types;
use jetflow_crds::split::{self, Split};
use jetflow_crds::{Pipeline, names, rewind};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::autoscale;
use super::build::{self, Inputs, configmap, dead_letters, deployment, rbac};
use super::consumers;
use super::status::{self, Observed};
use super::validate::{Facts, validate};
use crate::assignment::assign;
use crate::controller::Context;
use crate::controller::apply::{Outcome, apply as apply_object, contains, publish_status};
use crate::reasons::{self, EventAction};
use crate::{ConsumerAction, Error, FIELD_MANAGER, Result};

async fn get_stream(
    js: &async_nats::jetstream::Context,
    name: &str,
) -> Result<Option<async_nats::jetstream::stream::Stream>> {
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

/// The Degraded condition of `status` when it reports a stopped split.
fn split_stopped(
    status: Option<&jetflow_crds::PipelineStatus>,
) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    status
        .and_then(|s| jetflow_crds::condition::find(&s.conditions, types::DEGRADED))
        .filter(|c| c.status == "True" && c.reason == reasons::SPLIT_STOPPED)
}

/// The splits of the source: from the spec, or, with `splitBy: Subject`, the subjects found in
/// the stream under the filters.
async fn splits(
    p: &Pipeline,
    source: Option<&async_nats::jetstream::stream::Stream>,
) -> Result<Vec<Split>> {
    let (Some(stream), true) = (source, split::is_dynamic(&p.spec)) else {
        return Ok(split::static_splits(&p.spec));
    };
    let mut found = BTreeSet::new();
    for filter in split::static_splits(&p.spec) {
        let subjects: Vec<(String, usize)> = stream
            .info_with_subjects(&filter.subject)
            .await
            .map_err(|e| Error::StreamInfo {
                stream: stream.cached_info().config.name.clone(),
                source: Box::new(e),
            })?
            .try_collect()
            .await
            .map_err(|e| Error::StreamInfo {
                stream: stream.cached_info().config.name.clone(),
                source: Box::new(e),
            })?;
        found.extend(subjects.into_iter().map(|(s, _)| s));
    }
    Ok(found
        .into_iter()
        .map(|s| Split {
            name: s.clone(),
            subject: s,
        })
        .collect())
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

/// Reads the checkpoint ConfigMap, creating it (empty) when it does not exist. Returns it and
/// whether it already existed.
async fn checkpoint_config_map(
    cms: &Api<ConfigMap>,
    name: &str,
    ns: &str,
    reset: Option<&str>,
) -> Result<(ConfigMap, bool)> {
    let cm_name = names::checkpoint_config_map(name);
    let read = |source| Error::Read {
        kind: "ConfigMap",
        name: cm_name.clone(),
        source,
    };
    if let Some(cm) = cms.get_opt(&cm_name).await.map_err(read)? {
        return Ok((cm, true));
    }
    let fresh = configmap::checkpoint_config_map(name, ns, &Checkpoint::default(), reset)?;
    match cms.create(&PostParams::default(), &fresh).await {
        Ok(cm) => Ok((cm, false)),
        // Created by someone else meanwhile: use theirs.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            cms.get(&cm_name).await.map(|cm| (cm, true)).map_err(read)
        }
        Err(source) => Err(Error::Apply {
            kind: "ConfigMap",
            name: cm_name.clone(),
            source,
        }),
    }
}

/// Discards the checkpoint: every split to `position` (0 for a reset) under the new assignment
/// generation (so a worker still running with the old assignment cannot write its old positions
/// back), recorded with the new epoch, by a replace conditional on the version read.
#[allow(clippy::too_many_arguments)]
async fn reset_checkpoint(
    cms: &Api<ConfigMap>,
    live: &ConfigMap,
    name: &str,
    ns: &str,
    splits: &[String],
    position: u64,
    generation: u64,
    epoch: &str,
) -> Result<Checkpoint> {
    let checkpoint = Checkpoint {
        id: 0,
        time: None,
        splits: splits
            .iter()
            .map(|s| {
                (
                    s.clone(),
                    SplitPosition {
                        position,
                        generation,
                        ..Default::default()
                    },
                )
            })
            .collect(),
    };
    let mut cm = configmap::checkpoint_config_map(name, ns, &checkpoint, Some(epoch))?;
    cm.metadata.resource_version = live.metadata.resource_version.clone();
    let cm_name = cm.name_any();
    cms.replace(&cm_name, &PostParams::default(), &cm)
        .await
        .map_err(|source| Error::Apply {
            kind: "ConfigMap",
            name: cm_name,
            source,
        })?;
    Ok(checkpoint)
}

/// The first stream sequence stored at or after `time` (the last sequence + 1 when there is none),
/// as the server resolves a consumer's start time: read off a short-lived consumer.
async fn first_sequence_at(
    stream: &async_nats::jetstream::stream::Stream,
    time: jiff::Timestamp,
) -> Result<u64> {
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

/// The highest assignment generation any split of `checkpoint` was committed under.
fn generation_floor(checkpoint: &Checkpoint) -> u64 {
    checkpoint
        .splits
        .values()
        .map(|p| p.generation)
        .max()
        .unwrap_or(0)
}

/// The apply branch of the Pipeline reconcile.
pub async fn apply(p: &Pipeline, ns: &str, ctx: &Context, api: &Api<Pipeline>) -> Result<Action> {
    let name = p.name_any();
    let now = jiff::Timestamp::now();

    // Dereference: what NATS has of the streams the pipeline names.
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
    let facts = Facts {
        source_stream_exists: source.as_ref().map(Option::is_some),
        source_retention_unsupported: source.as_ref().and_then(Option::as_ref).and_then(|s| {
            jetflow_nats::stream::unsupported_source_retention(s.cached_info().config.retention)
        }),
        sink_duplicate_window: sink
            .as_ref()
            .map(|s| s.as_ref().map(|s| s.cached_info().config.duplicate_window)),
    };

    // Validate: an invalid pipeline is reported and waits for a change.
    let verdict = validate(p, &facts);
    if !verdict.errors.is_empty() {
        let status = status::invalid(p, &verdict, now);
        let before = p
            .status
            .as_ref()
            .and_then(|s| jetflow_crds::condition::find(&s.conditions, types::READY))
            .map(|c| c.reason.clone());
        if before.as_deref() != verdict.error_reason() {
            ctx.event(
                p,
                true,
                verdict.error_reason().unwrap_or(reasons::FAILED),
                EventAction::Validate,
                verdict.error_message(),
            )
            .await;
        }
        ctx.metrics.error(super::CONTROLLER, "invalid_spec");
        publish_status(api, p, p.status.as_ref(), status, "Pipeline").await?;
        return Ok(if verdict.needs_spec_change() {
            Action::await_change()
        } else {
            Action::requeue(ctx.settings.pipeline_resync)
        });
    }

    let owner = p
        .controller_owner_ref(&())
        .ok_or_else(|| Error::MissingMetadata {
            kind: "Pipeline",
            name: name.clone(),
            field: "uid",
        })?;
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let reset = p.annotations().get(names::RESET_ANNOTATION).cloned();
    let rewind = p.annotations().get(names::REWIND_ANNOTATION).cloned();

    // Splits, checkpoint and assignment.
    let splits = splits(p, source.as_ref().and_then(Option::as_ref)).await?;
    let split_names: Vec<String> = splits.iter().map(|s| s.name.clone()).collect();
    let (checkpoint_cm, existed) = checkpoint_config_map(
        &cms,
        &name,
        ns,
        rewind::join_epoch(reset.as_deref(), rewind.as_deref()).as_deref(),
    )
    .await?;
    let first_reconcile = p
        .status
        .as_ref()
        .is_none_or(|s| s.observed_generation.is_none());
    if existed && first_reconcile {
        ctx.event(
            p,
            false,
            reasons::ADOPTED,
            EventAction::Resume,
            format!(
                "adopted checkpoint ConfigMap {} left by an earlier Pipeline of this name; splits resume after its positions (annotate {} to start afresh)",
                checkpoint_cm.name_any(),
                names::RESET_ANNOTATION
            ),
        )
        .await;
    }
    let mut checkpoint: Checkpoint = decode(Some(&checkpoint_cm), names::CHECKPOINT_KEY)?;
    // The checkpoint's epoch records the last reset and the last rewind applied; a new value
    // of either annotation is applied once.
    let applied_epoch = checkpoint_cm
        .annotations()
        .get(build::RESET_APPLIED_ANNOTATION)
        .cloned();
    let (applied_reset, applied_rewind) = rewind::split_epoch(applied_epoch.as_deref());
    let resetting = reset.is_some() && reset.as_deref() != applied_reset;
    let rewind_target = match rewind.as_deref() {
        Some(value) if !resetting && Some(value) != applied_rewind => {
            match rewind::Target::parse(value) {
                Ok(target) => Some(target),
                Err(e) => {
                    ctx.event(
                        p,
                        true,
                        reasons::INVALID_REWIND,
                        EventAction::Rewind,
                        e.to_string(),
                    )
                    .await;
                    None
                }
            }
        }
        _ => None,
    };
    let new_epoch = if resetting {
        rewind::join_epoch(reset.as_deref(), rewind.as_deref())
    } else if rewind_target.is_some() {
        rewind::join_epoch(applied_reset, rewind.as_deref())
    } else {
        None
    };

    let assignment_name = names::assignment_config_map(&name);
    let assignment_cm = cms
        .get_opt(&assignment_name)
        .await
        .map_err(|source| Error::Read {
            kind: "ConfigMap",
            name: assignment_name.clone(),
            source,
        })?;
    let previous: Assignment = decode(assignment_cm.as_ref(), names::ASSIGNMENT_KEY)?;
    let workers = ready_workers(ctx, ns, &name).await?;
    let mut assignment = assign(&split_names, &workers, &previous);
    // The checkpoint may hold generations the assignment never reached: it outlives the
    // Pipeline and its assignment ConfigMap, so a Pipeline applied again starts its assignment
    // from nothing. Every commit under a generation below the checkpoint's would be refused as
    // stale: publish one above them all.
    let floor = generation_floor(&checkpoint);
    if previous.generation < floor {
        assignment.generation = assignment.generation.max(floor + 1);
    }

    if let Some(epoch) = new_epoch.as_deref() {
        assignment.generation = assignment.generation.max(previous.generation + 1);
        let stream = source.as_ref().and_then(Option::as_ref);
        if let (Some(js_source), Some(stream)) = (&p.spec.source.jetstream, stream) {
            consumers::remove_others(stream, &js_source.stream, ns, &name, &BTreeSet::new())
                .await?;
        }
        // Every split reads from `first` on: position first - 1 (0, nothing committed: the
        // spec's start).
        let first = match (&rewind_target, stream) {
            (Some(rewind::Target::Sequence(n)), _) => *n,
            (Some(rewind::Target::Time(t)), Some(stream)) => first_sequence_at(stream, *t).await?,
            _ => 0,
        };
        checkpoint = reset_checkpoint(
            &cms,
            &checkpoint_cm,
            &name,
            ns,
            &split_names,
            first.saturating_sub(1),
            assignment.generation,
            epoch,
        )
        .await?;
        let (reason, message) = match &rewind_target {
            None => (
                reasons::RESET,
                format!(
                    "{} changed to {:?}: checkpoint discarded, consumers recreated, workers restarted from spec.source start",
                    names::RESET_ANNOTATION,
                    reset.as_deref().unwrap_or_default()
                ),
            ),
            Some(rewind::Target::Start) => (
                reasons::REWOUND,
                format!(
                    "{} changed to {:?}: every split reads from spec.source.jetstream.start; consumers recreated, workers restarted",
                    names::REWIND_ANNOTATION,
                    rewind.as_deref().unwrap_or_default()
                ),
            ),
            Some(_) => (
                reasons::REWOUND,
                format!(
                    "{} changed to {:?}: every split reads from stream sequence {first} on; consumers recreated, workers restarted",
                    names::REWIND_ANNOTATION,
                    rewind.as_deref().unwrap_or_default()
                ),
            ),
        };
        ctx.event(p, false, reason, EventAction::Reset, message)
            .await;
    }

    // Consumers: one durable consumer per split of a JetStream source.
    let lags = match (
        &p.spec.source.jetstream,
        source.as_ref().and_then(Option::as_ref),
    ) {
        (Some(js_source), Some(stream)) => {
            ensure_consumers(p, ns, &js_source.stream, stream, &splits, &checkpoint).await?
        }
        _ => BTreeMap::new(),
    };

    // Autoscale: the workers the lag asks for, while the pipeline runs.
    let finished = status::finished(p, &split_names, Some(&checkpoint));
    let decision = p
        .spec
        .autoscaling
        .as_ref()
        .filter(|_| !p.spec.suspend && !finished)
        .map(|policy| {
            autoscale::decide(&autoscale::Observation {
                policy,
                parallelism: p.spec.parallelism,
                lag: (!lags.is_empty()).then(|| lags.values().sum()),
                splits: split_names.len(),
                previous: p.status.as_ref().and_then(|s| s.autoscaling.as_ref()),
                now,
            })
        });
    if let Some(d) = &decision {
        announce_scale(p, ctx, d).await;
    }

    // Build.
    let replicas = status::replicas(
        p,
        finished,
        decision.as_ref().map(|d| d.status.desired_parallelism),
    );
    let inputs = Inputs {
        pipeline: p,
        name: &name,
        namespace: ns,
        owner,
        worker_image: &ctx.settings.worker_image,
        default_nats_url: ctx.nats.default_url(),
        replicas,
    };
    // The checkpoint's epoch goes into the worker configuration: a worker that started before
    // a reset carries another one, and its store refuses to write into the fresh checkpoint.
    let epoch = new_epoch.or(applied_epoch);
    let config = configmap::worker_config(&inputs, epoch.as_deref())?;
    let hash = deployment::config_hash(&config);
    ensure_dead_letter_stream(p, ctx, &js, &inputs).await?;

    // Apply.
    let dep = apply_children(
        p,
        ctx,
        &inputs,
        &config,
        &hash,
        &assignment,
        assignment_cm.as_ref(),
    )
    .await?;

    // Status.
    let status = status::status(&Observed {
        pipeline: p,
        verdict: &verdict,
        deployment: Some(&dep),
        replicas,
        checkpoint: Some(&checkpoint),
        assignment: &assignment,
        splits: &split_names,
        lags: &lags,
        finished,
        autoscaling: decision.as_ref().map(|d| &d.status),
        min_stale: ctx.settings.min_checkpoint_stale,
        now,
    });
    // A split that stopped on a failed message is worth an Event the first time it shows.
    if let Some(now_stopped) = split_stopped(Some(&status))
        && split_stopped(p.status.as_ref()).is_none()
    {
        let message = now_stopped.message.clone();
        ctx.event(
            p,
            true,
            reasons::SPLIT_STOPPED,
            EventAction::ReadCheckpoint,
            message,
        )
        .await;
    }
    // So is a split that found its source stream recreated.
    for split in &status.splits {
        let Some(at) = &split.stream_recreated else {
            continue;
        };
        let before = p
            .status
            .as_ref()
            .and_then(|s| s.splits.iter().find(|b| b.name == split.name))
            .and_then(|b| b.stream_recreated.as_ref());
        if before != Some(at) {
            ctx.event(
                p,
                true,
                reasons::SOURCE_STREAM_RECREATED,
                EventAction::ReadCheckpoint,
                format!(
                    "split {}: the source stream was deleted and created again; the split started again at spec.source.jetstream.start on the new stream (now at position {})",
                    split.name, split.position
                ),
            )
            .await;
        }
    }
    publish_status(api, p, p.status.as_ref(), status, "Pipeline").await?;
    // With splits following the stream's subjects, look for new subjects as often as asked.
    let resync = match &p.spec.source.jetstream {
        Some(js) if split::is_dynamic(&p.spec) => ctx
            .settings
            .pipeline_resync
            .min(js.discovery_interval.get()),
        _ => ctx.settings.pipeline_resync,
    };
    // A scale down waiting for its stabilization window is looked at again when it is due.
    let resync = match (&decision, &p.spec.autoscaling) {
        (Some(d), Some(policy)) => autoscale::scale_down_due_in(&d.status, policy, now)
            .map_or(resync, |due| {
                resync.min(due + std::time::Duration::from_secs(1))
            }),
        _ => resync,
    };
    Ok(Action::requeue(resync))
}

/// Reports a change of the workers the autoscaler asks for in an Event and the log.
async fn announce_scale(p: &Pipeline, ctx: &Context, d: &autoscale::Decision) {
    let to = d.status.desired_parallelism;
    let (reason, from) = match d.change {
        Some(autoscale::Change::ScaledUp { from }) => (reasons::SCALED_UP, from),
        Some(autoscale::Change::ScaledDown { from }) => (reasons::SCALED_DOWN, from),
        None => return,
    };
    tracing::info!(pipeline = %p.name_any(), from, to, lag = d.status.lag, "{reason}");
    ctx.event(
        p,
        false,
        reason,
        EventAction::Autoscale,
        format!("workers {from} → {to}: {}", d.status.reason),
    )
    .await;
}

/// Under `errors.policy: Dlq`, makes sure a stream keeps the dead letters: when no stream
/// captures the dead-letter subject (or the one capturing it is the Pipeline's own), applies
/// the Pipeline's dead-letter Stream, which the Stream reconciler turns into a JetStream
/// stream. A stream of the user's that captures the subject is left to do so.
async fn ensure_dead_letter_stream(
    p: &Pipeline,
    ctx: &Context,
    js: &async_nats::jetstream::Context,
    inputs: &Inputs<'_>,
) -> Result<()> {
    if p.spec.errors.policy != jetflow_crds::pipeline::ErrorAction::Dlq {
        return Ok(());
    }
    let subject = p.dead_letter_subject();
    let ours = dead_letters::name(inputs.name);
    match js.stream_by_subject(subject.as_str()).await {
        Ok(stream) if stream != ours => return Ok(()),
        Ok(_) => {}
        Err(e)
            if e.kind() == async_nats::jetstream::context::GetStreamByNameErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::StreamInfo {
                stream: format!("(capturing {subject})"),
                source: Box::new(e),
            });
        }
    }
    let applied = apply_object(
        &Api::<jetflow_crds::Stream>::namespaced(ctx.client.clone(), inputs.namespace),
        &dead_letters::stream(inputs),
        "Stream",
    )
    .await?;
    if applied.outcome == Outcome::Created {
        ctx.event(
            p,
            false,
            reasons::CREATED,
            EventAction::DeadLetters,
            format!(
                "created Stream {ours} to keep the dead letters published to {subject} (no stream captured it; spec.errors.policy Dlq): kept {} or up to {}",
                dead_letters::MAX_AGE,
                dead_letters::MAX_BYTES
            ),
        )
        .await;
    }
    Ok(())
}

/// Ensures each split's consumer and removes the pipeline's others; returns each split's lag.
async fn ensure_consumers(
    p: &Pipeline,
    ns: &str,
    stream_name: &str,
    stream: &async_nats::jetstream::stream::Stream,
    splits: &[Split],
    checkpoint: &Checkpoint,
) -> Result<BTreeMap<String, u64>> {
    let name = p.name_any();
    let live =
        jiff::Timestamp::from_nanosecond(stream.cached_info().created.unix_timestamp_nanos()).ok();
    let desired = splits
        .iter()
        .map(|s| {
            // A position on another incarnation of the stream (deleted and created again)
            // means nothing on this one: the consumer starts as the spec says, as the worker
            // will.
            let position = checkpoint
                .splits
                .get(&s.name)
                .filter(|p| p.stream_created.is_none() || p.stream_created == live)
                .map(|p| p.position);
            consumers::config(ns, &name, &p.spec, s, position).map(|c| (s.name.clone(), c))
        })
        .collect::<Result<BTreeMap<String, _>>>()?;
    let ensured = consumers::ensure(stream, stream_name, &desired).await?;
    let keep: BTreeSet<String> = desired
        .values()
        .filter_map(|c| c.durable_name.clone())
        .collect();
    consumers::remove_others(stream, stream_name, ns, &name, &keep).await?;
    Ok(ensured
        .infos
        .iter()
        .map(|(split, info)| (split.clone(), consumers::lag(info)))
        .collect())
}

/// Applies the child objects in order (RBAC and ConfigMaps before the Deployment), publishes
/// the assignment when it changed, and reports what was created and rolled in Events. Returns
/// the live Deployment.
async fn apply_children(
    p: &Pipeline,
    ctx: &Context,
    inputs: &Inputs<'_>,
    config: &str,
    hash: &str,
    assignment: &Assignment,
    assignment_cm: Option<&ConfigMap>,
) -> Result<Deployment> {
    let name = inputs.name;
    let ns = inputs.namespace;
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let assignment_name = names::assignment_config_map(name);
    let mut created = Vec::new();
    let note = |created: &mut Vec<String>, outcome: Outcome, what: String| {
        if outcome == Outcome::Created {
            created.push(what);
        }
    };
    let sa = apply_object(
        &Api::namespaced(ctx.client.clone(), ns),
        &rbac::service_account(inputs),
        "ServiceAccount",
    )
    .await?;
    note(
        &mut created,
        sa.outcome,
        format!("ServiceAccount {}", names::workers(name)),
    );
    let role = apply_object(
        &Api::namespaced(ctx.client.clone(), ns),
        &rbac::role(inputs),
        "Role",
    )
    .await?;
    note(
        &mut created,
        role.outcome,
        format!("Role {}", names::workers(name)),
    );
    let binding = apply_object(
        &Api::namespaced(ctx.client.clone(), ns),
        &rbac::role_binding(inputs),
        "RoleBinding",
    )
    .await?;
    note(
        &mut created,
        binding.outcome,
        format!("RoleBinding {}", names::workers(name)),
    );
    let config_cm = apply_object(&cms, &configmap::config_map(inputs, config), "ConfigMap").await?;
    note(
        &mut created,
        config_cm.outcome,
        format!("ConfigMap {}", names::config_map(name)),
    );

    // The assignment is written only when it changed, conditional on the version read, so two
    // operator replicas (a leadership handover) never both publish a generation.
    let mut desired_assignment = configmap::assignment_config_map(inputs, assignment, None)?;
    let unchanged = assignment_cm.is_some_and(|live| {
        serde_json::to_value(live)
            .ok()
            .zip(serde_json::to_value(&desired_assignment).ok())
            .is_some_and(|(l, d)| contains(&l, &d))
    });
    if !unchanged {
        desired_assignment.metadata.resource_version = assignment_cm
            .as_ref()
            .and_then(|c| c.metadata.resource_version.clone());
        cms.patch(
            &assignment_name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired_assignment),
        )
        .await
        .map_err(|source| Error::Apply {
            kind: "ConfigMap",
            name: assignment_name.clone(),
            source,
        })?;
        if assignment_cm.is_none() {
            created.push(format!("ConfigMap {assignment_name}"));
        }
    }

    let deployments = Api::namespaced(ctx.client.clone(), ns);
    let dep = apply_object(
        &deployments,
        &deployment::deployment(inputs, hash),
        "Deployment",
    )
    .await?;
    note(
        &mut created,
        dep.outcome,
        format!("Deployment {}", names::workers(name)),
    );
    if !created.is_empty() {
        ctx.event(
            p,
            false,
            reasons::CREATED,
            EventAction::Create,
            format!("created {}", created.join(", ")),
        )
        .await;
    }
    if dep.outcome == Outcome::Updated {
        let old = dep.before.as_ref().and_then(deployment::hash_of);
        if old.is_some_and(|o| o != hash) {
            ctx.event(
                p,
                false,
                reasons::ROLLED,
                EventAction::Update,
                format!(
                    "configuration changed ({} → {hash}); the workers restart with it",
                    old.unwrap_or("none")
                ),
            )
            .await;
        }
    }

    Ok(dep.object)
}

/// How often a Pipeline being deleted is looked at again while its workers stop (a worker pod
/// going away also triggers a reconcile at once).
pub const STOPPING_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// The first step of deleting a Pipeline, before its consumers may go: scales the worker
/// Deployment to 0 and reports whether any worker pod of the pipeline still exists (running or
/// terminating, writing its final checkpoint). A consumer deleted while a worker still reads
/// it is only made again by that worker; so the finalizer's cleanup waits until no worker is
/// left.
pub async fn stop_workers(p: &Pipeline, ns: &str, ctx: &Context) -> Result<usize> {
    let name = p.name_any();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let deployment_name = names::workers(&name);
    let live = deployments
        .get_opt(&deployment_name)
        .await
        .map_err(|source| Error::Read {
            kind: "Deployment",
            name: deployment_name.clone(),
            source,
        })?;
    if live
        .as_ref()
        .is_some_and(|d| d.spec.as_ref().and_then(|s| s.replicas) != Some(0))
    {
        let patch = serde_json::json!({"spec": {"replicas": 0}});
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..Default::default()
        };
        deployments
            .patch(&deployment_name, &params, &Patch::Merge(&patch))
            .await
            .map_err(|source| Error::Apply {
                kind: "Deployment",
                name: deployment_name.clone(),
                source,
            })?;
        tracing::info!(pipeline = %name, namespace = %ns, "Pipeline deleted: stopping its workers before removing its consumers");
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let left = pods
        .list(&ListParams::default().labels(&build::selector_string(&name)))
        .await
        .map_err(|source| Error::ListPods {
            pipeline: name.clone(),
            source,
        })?
        .items
        .len();
    Ok(left)
}

/// The cleanup branch, once no worker is left ([`stop_workers`]): deletes the pipeline's consumers. The owned objects go with the
/// Pipeline (owner references); the checkpoint ConfigMap stays so that a Pipeline applied again
/// resumes where it stopped.
pub async fn cleanup(p: &Pipeline, ns: &str, ctx: &Context) -> Result<Action> {
    let name = p.name_any();
    if let Some(js_source) = &p.spec.source.jetstream {
        let js = ctx
            .nats
            .jetstream(&ctx.client, ns, p.spec.connection.as_ref())
            .await?;
        if let Some(stream) = get_stream(&js, &js_source.stream).await? {
            let removed =
                consumers::remove_others(&stream, &js_source.stream, ns, &name, &BTreeSet::new())
                    .await?;
            tracing::info!(pipeline = %name, namespace = %ns, consumers = removed.len(), "removed the pipeline's consumers");
        }
    }
    ctx.event(
        p,
        false,
        reasons::DELETED,
        EventAction::Delete,
        format!(
            "removed the consumers; kept ConfigMap {} so that applying the Pipeline again resumes (delete it to start afresh)",
            names::checkpoint_config_map(&name)
        ),
    )
    .await;
    Ok(Action::await_change())
}
