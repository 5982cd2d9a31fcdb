//! The Stream reconciler: makes a JetStream stream match its Stream resource, or, in Observe
//! mode, only reports it.
//!
//! Managed mode creates the stream, adopts an existing stream of the same name, updates it in
//! place, keeps what JetStream cannot change (storage, and retention where the server refuses)
//! and reports it in the Degraded condition. Every resync (and every change) compares the
//! stream with the spec: a stream deleted behind the operator's back (a manual delete, a
//! memory-storage server restart) is recreated, a stream edited by hand is set back and the
//! edit reported in an Event. Deleting the Stream deletes the JetStream stream only with
//! `deletionPolicy: Delete` (finalizer). Observe mode never writes to NATS.
//!
//! Errors (NATS unreachable, a refused update) are returned and retried with backoff; an invalid
//! spec becomes a condition and waits for the next change.

pub mod diff;

use std::sync::Arc;

use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::Info;
use jetflow_crds::condition::{self, Condition, types};
use jetflow_crds::stream::{DeletionPolicy, StreamMode};
use jetflow_crds::{Stream, StreamStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};

use crate::controller::apply::publish_status;
use crate::controller::{Context, key};
use crate::reasons::{self, EventAction};
use crate::{Error, FINALIZER, Result, StreamAction};

/// The controller's name in metrics and logs.
pub const CONTROLLER: &str = "stream";

/// Reconciles one Stream.
pub async fn reconcile(stream: Arc<Stream>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let ns = stream.namespace().ok_or_else(|| Error::MissingMetadata {
        kind: "Stream",
        name: stream.name_any(),
        field: "namespace",
    })?;
    let api: Api<Stream> = Api::namespaced(ctx.client.clone(), &ns);
    let object_key = key(stream.as_ref());
    let action = finalizer(&api, FINALIZER, stream, |event| async {
        match event {
            Finalizer::Apply(s) => apply(&s, &ns, &ctx, &api).await,
            Finalizer::Cleanup(s) => cleanup(&s, &ns, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))?;
    ctx.succeeded(&object_key);
    Ok(action)
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

async fn get_stream(js: &async_nats::jetstream::Context, name: &str) -> Result<Option<Info>> {
    match js.get_stream(name).await {
        Ok(stream) => Ok(Some(stream.cached_info().clone())),
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

async fn apply(s: &Stream, ns: &str, ctx: &Context, api: &Api<Stream>) -> Result<Action> {
    let name = s.stream_name();
    let generation = s.metadata.generation;
    let old = s.status.clone().unwrap_or_default();
    let mut status = StreamStatus {
        observed_generation: generation,
        stream_name: Some(name.clone()),
        conditions: old.conditions.clone(),
        state: old.state.clone(),
    };
    let cond = |t: &str, ok: bool, reason: &str, msg: String| {
        condition::new(t, ok, reason, msg, generation, now())
    };

    if let Err(invalid) = jetflow_crds::validate::stream(s) {
        let was_invalid = condition::find(&old.conditions, types::SPEC_VALID)
            .is_some_and(|c| c.status == "False");
        let message = invalid.to_string();
        for c in [
            cond(
                types::SPEC_VALID,
                false,
                reasons::INVALID_SPEC,
                message.clone(),
            ),
            cond(types::READY, false, reasons::INVALID_SPEC, message.clone()),
            cond(types::STALLED, true, reasons::INVALID_SPEC, message.clone()),
        ] {
            condition::merge(&mut status.conditions, c);
        }
        if !was_invalid {
            ctx.event(
                s,
                true,
                reasons::INVALID_SPEC,
                EventAction::Validate,
                message,
            )
            .await;
        }
        publish_status(api, s, s.status.as_ref(), status, "Stream").await?;
        return Ok(Action::await_change());
    }
    condition::merge(
        &mut status.conditions,
        cond(
            types::SPEC_VALID,
            true,
            reasons::VALID,
            "the spec is valid".into(),
        ),
    );
    status.conditions.retain(|c| c.type_ != types::STALLED);

    let js = ctx
        .nats
        .jetstream(&ctx.client, ns, s.spec.connection.as_ref())
        .await?;
    let found = get_stream(&js, &name).await?;

    match s.spec.mode {
        StreamMode::Observe => match found {
            Some(info) => {
                status.state = Some(jetflow_nats::stream_state(&info));
                condition::merge(
                    &mut status.conditions,
                    cond(
                        types::READY,
                        true,
                        reasons::OBSERVED,
                        format!("stream {name} exists; observed read-only"),
                    ),
                );
            }
            None => {
                status.state = None;
                condition::merge(
                    &mut status.conditions,
                    cond(
                        types::READY,
                        false,
                        reasons::STREAM_NOT_FOUND,
                        format!(
                            "stream {name} does not exist; a Stream in Observe mode never creates it"
                        ),
                    ),
                );
            }
        },
        StreamMode::Managed => {
            let (info, fixed) = manage(s, &name, &js, ctx, found, &old).await?;
            status.state = Some(jetflow_nats::stream_state(&info));
            merge_managed_conditions(&mut status.conditions, &name, &fixed, generation);
        }
    }
    publish_status(api, s, s.status.as_ref(), status, "Stream").await?;
    Ok(Action::requeue(ctx.settings.stream_resync))
}

/// Creates, adopts or updates the stream; returns its state and what could not be changed.
async fn manage(
    s: &Stream,
    name: &str,
    js: &async_nats::jetstream::Context,
    ctx: &Context,
    found: Option<Info>,
    old: &StreamStatus,
) -> Result<(Info, Vec<diff::Fixed>)> {
    let desired = jetflow_nats::stream_config(name, &s.spec);
    let known = old.stream_name.is_some();
    let write = |action: StreamAction| {
        move |e: async_nats::jetstream::context::CreateStreamError| Error::WriteStream {
            stream: name.to_owned(),
            action,
            source: Box::new(e),
        }
    };
    let Some(info) = found else {
        let created = js
            .create_stream(desired)
            .await
            .map_err(write(StreamAction::Create))?;
        let info = created.cached_info().clone();
        if known {
            ctx.event(
                s,
                true,
                reasons::RECREATED,
                EventAction::Create,
                format!(
                    "stream {name} was missing (deleted, or lost with a memory store); recreated"
                ),
            )
            .await;
        } else {
            ctx.event(
                s,
                false,
                reasons::CREATED,
                EventAction::Create,
                format!("created stream {name}"),
            )
            .await;
        }
        return Ok((info, Vec::new()));
    };
    if !known {
        ctx.event(
            s,
            false,
            reasons::ADOPTED,
            EventAction::Adopt,
            format!("adopted the existing stream {name}; its data is kept"),
        )
        .await;
    }
    let d = diff::diff(&desired, &info.config);
    let mut fixed = d.fixed.clone();
    if d.mutable.is_empty() {
        return Ok((info, fixed));
    }
    let update = diff::updatable(&desired, &info.config, false);
    let updated = match js.update_stream(&update).await {
        Ok(updated) => updated,
        Err(first) if d.mutable.contains(&"retention") => {
            // The server refuses this retention change; bring the rest in line and report it.
            let keep = diff::updatable(&desired, &info.config, true);
            let updated = js
                .update_stream(&keep)
                .await
                .map_err(write(StreamAction::Update))?;
            fixed.push(diff::Fixed {
                field: "retention",
                actual: format!(
                    "{:?} (the server refused the change: {first})",
                    info.config.retention
                ),
                desired: format!("{:?}", desired.retention),
            });
            updated
        }
        Err(e) => return Err(write(StreamAction::Update)(e)),
    };
    let fields = d.mutable.join(", ");
    let hand_edit = known && old.observed_generation == s.metadata.generation;
    if hand_edit {
        ctx.event(
            s,
            true,
            reasons::REVERTED,
            EventAction::Update,
            format!("stream {name} was changed outside jetflow ({fields}); set back to the declared configuration"),
        )
        .await;
    } else {
        ctx.event(
            s,
            false,
            reasons::UPDATED,
            EventAction::Update,
            format!("updated stream {name}: {fields}"),
        )
        .await;
    }
    Ok((updated, fixed))
}

fn merge_managed_conditions(
    conditions: &mut Vec<Condition>,
    name: &str,
    fixed: &[diff::Fixed],
    generation: Option<i64>,
) {
    condition::merge(
        conditions,
        condition::new(
            types::READY,
            true,
            reasons::SYNCED,
            format!("stream {name} exists and is managed"),
            generation,
            now(),
        ),
    );
    let degraded = if fixed.is_empty() {
        condition::new(
            types::DEGRADED,
            false,
            reasons::AS_DECLARED,
            "the stream matches the declared configuration",
            generation,
            now(),
        )
    } else {
        let parts: Vec<String> = fixed
            .iter()
            .map(|f| {
                format!(
                    "{} cannot be changed on an existing stream (it is {}, the spec asks for {})",
                    f.field, f.actual, f.desired
                )
            })
            .collect();
        condition::new(
            types::DEGRADED,
            true,
            reasons::CANNOT_CHANGE,
            format!(
                "{}; to change it, create a new stream (or delete this one, losing its data) and apply again",
                parts.join("; ")
            ),
            generation,
            now(),
        )
    };
    condition::merge(conditions, degraded);
}

async fn cleanup(s: &Stream, ns: &str, ctx: &Context) -> Result<Action> {
    let name = s.stream_name();
    if s.spec.mode == StreamMode::Managed && s.spec.deletion_policy == DeletionPolicy::Delete {
        let js = ctx
            .nats
            .jetstream(&ctx.client, ns, s.spec.connection.as_ref())
            .await?;
        if get_stream(&js, &name).await?.is_some() {
            js.delete_stream(&name)
                .await
                .map_err(|e| Error::WriteStream {
                    stream: name.clone(),
                    action: StreamAction::Delete,
                    source: Box::new(e),
                })?;
        }
        ctx.event(
            s,
            false,
            reasons::DELETED,
            EventAction::Delete,
            format!("deleted stream {name} (deletionPolicy: Delete)"),
        )
        .await;
    } else {
        ctx.event(
            s,
            false,
            reasons::RETAINED,
            EventAction::Delete,
            format!("kept stream {name} and its data (deletionPolicy: Retain or mode: Observe)"),
        )
        .await;
    }
    Ok(Action::await_change())
}
