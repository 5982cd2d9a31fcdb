//! The Pipeline reconcile's live branch, phase by phase: [`observe`] the streams →
//! [`validate`] → [`observe`] the splits, checkpoint, assignment and workers → [`desired`] →
//! [`apply`] → [`status`]; and the deletion: [`stop_workers`], then [`cleanup`].
//!
//! Only this file sequences the phases; observe and apply hold every call to Kubernetes and
//! NATS, desired, build and status are pure. Some writes depend on what an earlier write found
//! (the consumers' lags decide the autoscaler's workers), so desired and apply alternate in
//! that order.

use jetflow_nats::consumer::Acks;
use std::collections::BTreeSet;

use jetflow_crds::condition::types;
use jetflow_crds::{Pipeline, names};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::build::{self, Inputs};
use super::status::{self, Observed};
use super::validate::{Verdict, validate};
use super::{apply, autoscale, consumers, desired, observe};
use crate::controller::Context;
use crate::controller::ssa::publish_status;
use crate::reasons::{self, EventAction};
use crate::{Error, FIELD_MANAGER, Result};

/// The Degraded condition of `status` when it reports a stopped split.
fn split_stopped(
    status: Option<&jetflow_crds::PipelineStatus>,
) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    status
        .and_then(|s| jetflow_crds::condition::find(&s.conditions, types::DEGRADED))
        .filter(|c| c.status == "True" && c.reason == reasons::SPLIT_STOPPED)
}

/// Runs a live (not deleted) Pipeline's phases.
pub async fn run(p: &Pipeline, ns: &str, ctx: &Context, api: &Api<Pipeline>) -> Result<Action> {
    let name = p.name_any();
    let now = jiff::Timestamp::now();

    // Observe the streams, then validate: an invalid pipeline is reported and waits for a
    // change.
    let streams = observe::streams(p, ns, ctx).await?;
    let verdict = validate(p, &streams.facts());
    if !verdict.errors.is_empty() {
        return report_invalid(p, ctx, api, &verdict, now).await;
    }
    let source = streams.source();

    let owner = p
        .controller_owner_ref(&())
        .ok_or_else(|| Error::MissingMetadata {
            kind: "Pipeline",
            name: name.clone(),
            field: "uid",
        })?;
    let reset = p.annotations().get(names::RESET_ANNOTATION).cloned();
    let rewind = p.annotations().get(names::REWIND_ANNOTATION).cloned();

    // Observe the splits, the checkpoint, the assignment and the workers.
    let state = observe::state(
        p,
        ns,
        ctx,
        source,
        jetflow_crds::rewind::join_epoch(reset.as_deref(), rewind.as_deref()).as_deref(),
    )
    .await?;
    let split_names = state.split_names();
    let first_reconcile = p
        .status
        .as_ref()
        .is_none_or(|s| s.observed_generation.is_none());
    if state.checkpoint_foreign && first_reconcile {
        ctx.event(
            p,
            false,
            reasons::ADOPTED,
            EventAction::Resume,
            format!(
                "adopted checkpoint ConfigMap {} left by an earlier Pipeline of this name; splits resume after its positions (annotate {} to start afresh)",
                state.checkpoint_cm.name_any(),
                names::RESET_ANNOTATION
            ),
        )
        .await;
    }
    let checkpoint_cm = if state.checkpoint_foreign {
        apply::claim_checkpoint(p, ns, ctx, &state.checkpoint_cm).await?
    } else {
        state.checkpoint_cm.clone()
    };

    // Desired: the checkpoint's epoch (a reset or rewind to apply) and the assignment.
    // The checkpoint's epoch records the last reset and the last rewind applied; a new value
    // of either annotation is applied once.
    let applied_epoch = checkpoint_cm
        .annotations()
        .get(build::RESET_APPLIED_ANNOTATION)
        .cloned();
    let epochs = desired::epochs(
        reset.as_deref(),
        rewind.as_deref(),
        applied_epoch.as_deref(),
    );
    if let Some(e) = &epochs.invalid_rewind {
        ctx.event(
            p,
            true,
            reasons::INVALID_REWIND,
            EventAction::Rewind,
            e.to_string(),
        )
        .await;
    }
    let assignment = desired::assignment(
        &split_names,
        &state.workers,
        &state.assignment,
        &state.checkpoint,
        epochs.new.is_some(),
    );

    // Apply the reset or rewind.
    let checkpoint = match epochs.new.as_deref() {
        Some(epoch) => {
            apply::reset(
                p,
                ns,
                ctx,
                source,
                &checkpoint_cm,
                &split_names,
                &epochs,
                epoch,
                assignment.generation,
            )
            .await?
        }
        None => state.checkpoint.clone(),
    };

    // Consumers: one durable consumer per split of a JetStream source.
    let split_consumers = match (&p.spec.source.jetstream, source) {
        (Some(js_source), Some(stream)) => {
            let created = jiff::Timestamp::from_nanosecond(
                stream.cached_info().created.unix_timestamp_nanos(),
            )
            .ok();
            let acks = Acks::for_retention(stream.cached_info().config.retention);
            let wanted =
                desired::consumers(p, ns, &name, &state.splits, &checkpoint, created, acks)?;
            apply::consumers(p, ns, (&streams.js, &js_source.stream, stream), &wanted).await?
        }
        _ => apply::SplitConsumers::default(),
    };
    let lags = split_consumers.lags;
    let mut verdict = verdict;
    if let Some(finding) = status::splits_blocked(
        &split_consumers.blocked,
        split_names.len(),
        split_consumers.limit.as_ref(),
        p.spec
            .source
            .jetstream
            .as_ref()
            .map_or("", |js| js.stream.as_str()),
    ) {
        verdict.warnings.insert(0, finding);
    }

    // Desired: the workers the lag asks for, while the pipeline runs, and their configuration.
    let finished = status::finished(p, &split_names, Some(&checkpoint));
    let decision = desired::autoscale(p, finished, &lags, split_names.len(), now);
    if let Some(d) = &decision {
        announce_scale(p, ctx, d).await;
    }
    let replicas = desired::replicas(p, finished, decision.as_ref());
    let inputs = Inputs {
        pipeline: p,
        name: &name,
        namespace: ns,
        owner,
        worker_image: &ctx.settings.worker_image,
        default_nats_url: ctx.nats.default_url(),
        replicas,
    };
    let (config, hash) = desired::worker_config(&inputs, epochs.current())?;

    // Apply.
    apply::dead_letter_stream(p, ctx, &streams.js, &inputs).await?;
    let dep = apply::children(
        p,
        ctx,
        &inputs,
        &config,
        &hash,
        &assignment,
        state.assignment_cm.as_ref(),
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
    announce_findings(p, ctx, &status).await;
    publish_status(api, p, p.status.as_ref(), status, "Pipeline").await?;
    Ok(Action::requeue(desired::resync(
        p,
        ctx.settings.pipeline_resync,
        decision.as_ref(),
        now,
    )))
}

/// Reports an invalid pipeline in its status (and an Event when the reason is new); it waits
/// for a change of the spec, or, for a missing stream, looks again at the resync interval.
async fn report_invalid(
    p: &Pipeline,
    ctx: &Context,
    api: &Api<Pipeline>,
    verdict: &Verdict,
    now: jiff::Timestamp,
) -> Result<Action> {
    let status = status::invalid(p, verdict, now);
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
    Ok(if verdict.needs_spec_change() {
        Action::await_change()
    } else {
        Action::requeue(ctx.settings.pipeline_resync)
    })
}

/// Publishes an Event for a finding of `status` the first time it shows: a split that stopped
/// on a failed message, a split that found its source stream recreated.
async fn announce_findings(p: &Pipeline, ctx: &Context, status: &jetflow_crds::PipelineStatus) {
    if let Some(now_stopped) = split_stopped(Some(status))
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
        if let Some(stream) = observe::get_stream(&js, &js_source.stream).await? {
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
