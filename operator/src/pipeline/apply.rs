//! The Pipeline reconcile's writes, in the order the reconcile makes them: the checkpoint
//! discarded on a reset or rewind, the splits' consumers, the dead-letter Stream, and the child
//! objects by server-side apply (no write where nothing changed). Each takes what
//! [`super::desired`] decided and reports what it did in Events.
//!
//! Apply order: RBAC and ConfigMaps before the Deployment, so that a worker never starts
//! without its configuration or its permissions.

use std::collections::{BTreeMap, BTreeSet};

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::stream::Stream;
use jetflow_crds::assignment::Assignment;
use jetflow_crds::checkpoint::Checkpoint;
use jetflow_crds::{Pipeline, names, rewind};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};

use super::build::{Inputs, configmap, dead_letters, deployment, rbac};
use super::consumers;
use super::desired;
use super::observe::first_sequence_at;
use crate::controller::Context;
use crate::controller::ssa::{Outcome, patch_apply};
use crate::reasons::{self, EventAction};
use crate::{Error, FIELD_MANAGER, Result};

/// Discards the checkpoint for a new reset or rewind (`epochs.new`): removes the pipeline's
/// consumers (made again from the new positions), moves every split to the rewind's target
/// (the spec's start for a reset) under `generation`, and reports it in an Event. Returns the
/// new checkpoint.
#[allow(clippy::too_many_arguments)]
pub async fn reset(
    p: &Pipeline,
    ns: &str,
    ctx: &Context,
    source: Option<&Stream>,
    checkpoint_cm: &ConfigMap,
    splits: &[String],
    epochs: &desired::Epochs,
    epoch: &str,
    generation: u64,
) -> Result<Checkpoint> {
    let name = p.name_any();
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    if let (Some(js_source), Some(stream)) = (&p.spec.source.jetstream, source) {
        consumers::remove_others(stream, &js_source.stream, ns, &name, &BTreeSet::new()).await?;
    }
    // Every split reads from `first` on: position first - 1 (0, nothing committed: the
    // spec's start).
    let first = match (&epochs.rewind, source) {
        (Some(rewind::Target::Sequence(n)), _) => *n,
        (Some(rewind::Target::Time(t)), Some(stream)) => first_sequence_at(stream, *t).await?,
        _ => 0,
    };
    let checkpoint = desired::reset_checkpoint(splits, first.saturating_sub(1), generation);
    let uid = p.uid();
    write_checkpoint(
        &cms,
        checkpoint_cm,
        (&name, ns, uid.as_deref()),
        &checkpoint,
        epoch,
    )
    .await?;
    let annotations = p.annotations();
    let (reason, message) = desired::reset_event(
        epochs.rewind.as_ref(),
        annotations.get(names::RESET_ANNOTATION).map(String::as_str),
        annotations
            .get(names::REWIND_ANNOTATION)
            .map(String::as_str),
        first,
    );
    ctx.event(p, false, reason, EventAction::Reset, message)
        .await;
    Ok(checkpoint)
}

/// Replaces the checkpoint with `checkpoint`, recorded with the new epoch, conditional on the
/// version read: a worker still running with the old assignment cannot write its old positions
/// back.
async fn write_checkpoint(
    cms: &Api<ConfigMap>,
    live: &ConfigMap,
    (name, ns, uid): (&str, &str, Option<&str>),
    checkpoint: &Checkpoint,
    epoch: &str,
) -> Result<()> {
    let mut cm = configmap::checkpoint_config_map(name, ns, checkpoint, Some(epoch), uid)?;
    cm.metadata.resource_version = live.metadata.resource_version.clone();
    let cm_name = cm.name_any();
    cms.replace(&cm_name, &PostParams::default(), &cm)
        .await
        .map_err(|source| Error::Apply {
            kind: "ConfigMap",
            name: cm_name,
            source,
        })?;
    Ok(())
}

/// Records the Pipeline's UID on a checkpoint ConfigMap another Pipeline of its name left, once
/// it is adopted (reported by the caller), so that it is this Pipeline's own from then on.
/// Conditional on the version read, as every write of the checkpoint is. Returns the ConfigMap
/// as written.
pub async fn claim_checkpoint(
    p: &Pipeline,
    ns: &str,
    ctx: &Context,
    live: &ConfigMap,
) -> Result<ConfigMap> {
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let mut cm = live.clone();
    cm.annotations_mut().insert(
        super::build::PIPELINE_UID_ANNOTATION.to_owned(),
        p.uid().unwrap_or_default(),
    );
    let cm_name = cm.name_any();
    cms.replace(&cm_name, &PostParams::default(), &cm)
        .await
        .map_err(|source| Error::Apply {
            kind: "ConfigMap",
            name: cm_name,
            source,
        })
}

/// What [`consumers`] found.
#[derive(Debug, Default)]
pub struct SplitConsumers {
    /// Each split's lag, for the splits that have a consumer.
    pub lags: BTreeMap<String, u64>,
    /// Splits without a consumer: a consumer limit leaves no room (see [`consumers::ensure`]).
    pub blocked: Vec<String>,
    /// The limit, when one the server shows left no room.
    pub limit: Option<consumers::Limit>,
}

/// Ensures each split's consumer (`desired`, by split) and removes the pipeline's others;
/// returns each split's lag and the splits a consumer limit leaves without one. The limits are
/// read first (the stream's `max_consumers`, the account's), so that the consumers beyond them
/// are never asked for; an account that cannot be read counts as unlimited there.
pub async fn consumers(
    p: &Pipeline,
    ns: &str,
    (js, stream_name, stream): (&async_nats::jetstream::Context, &str, &Stream),
    desired: &BTreeMap<String, pull::Config>,
) -> Result<SplitConsumers> {
    let name = p.name_any();
    let keep: BTreeSet<String> = desired
        .values()
        .filter_map(|c| c.durable_name.clone())
        .collect();
    // The pipeline's consumers that are no longer wanted go first: they make room.
    consumers::remove_others(stream, stream_name, ns, &name, &keep).await?;
    let account = match js.query_account().await {
        Ok(account) => Some(account),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the account's JetStream limits");
            None
        }
    };
    let mut info = stream.cached_info().clone();
    if let Ok(live) = js.get_stream(stream_name).await {
        info = live.cached_info().clone();
    }
    let limit = consumers::tightest_limit(&info, account.as_ref());
    let ensured = consumers::ensure(stream, stream_name, desired, limit).await?;
    if !ensured.blocked.is_empty() {
        tracing::warn!(pipeline = %name, namespace = %ns, stream = stream_name, blocked = ensured.blocked.len(), limit = ?ensured.limit, "splits have no consumer: a consumer limit leaves no room");
    }
    Ok(SplitConsumers {
        lags: ensured
            .infos
            .iter()
            .map(|(split, info)| (split.clone(), consumers::lag(info)))
            .collect(),
        blocked: ensured.blocked,
        limit: ensured.limit,
    })
}

/// Under `errors.policy: Dlq`, makes sure a stream keeps the dead letters: when no stream
/// captures the dead-letter subject (or the one capturing it is the Pipeline's own), applies
/// the Pipeline's dead-letter Stream, which the Stream reconciler turns into a JetStream
/// stream. A stream of the user's that captures the subject is left to do so.
pub async fn dead_letter_stream(
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
    let applied = patch_apply(
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

/// Applies the child objects in order (RBAC and ConfigMaps before the Deployment), publishes
/// the assignment (conditional on the version read), and reports what was created and rolled
/// in Events. Returns the live Deployment.
pub async fn children(
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
    let sa = patch_apply(
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
    let role = patch_apply(
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
    let binding = patch_apply(
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
    let config_cm = patch_apply(&cms, &configmap::config_map(inputs, config), "ConfigMap").await?;
    note(
        &mut created,
        config_cm.outcome,
        format!("ConfigMap {}", names::config_map(name)),
    );

    // The assignment is applied conditional on the version read, so two operator replicas (a
    // leadership handover) never both publish a generation; unchanged, the apply is no write.
    let mut desired_assignment = configmap::assignment_config_map(inputs, assignment, None)?;
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

    let deployments = Api::namespaced(ctx.client.clone(), ns);
    let dep = patch_apply(
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
