//! The Stream reconcile's live branch, phase by phase, and its cleanup.

use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::Info;
use jetflow_crds::Stream;
use jetflow_crds::condition::{self, types};
use jetflow_crds::stream::{DeletionPolicy, StreamMode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::controller::Action;

use super::{apply, status};
use crate::controller::Context;
use crate::controller::ssa::publish_status;
use crate::reasons::{self, EventAction};
use crate::{Error, Result, StreamAction};

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// The JetStream stream `name`, `None` when it does not exist.
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

/// Runs a live (not deleted) Stream's phases.
pub async fn run(s: &Stream, ns: &str, ctx: &Context, api: &Api<Stream>) -> Result<Action> {
    let name = s.stream_name();
    let old = s.status.clone().unwrap_or_default();

    // Validate: an invalid Stream is reported and waits for a change.
    if let Err(invalid) = jetflow_crds::validate::stream(s) {
        let was_invalid = condition::find(&old.conditions, types::SPEC_VALID)
            .is_some_and(|c| c.status == "False");
        let message = invalid.to_string();
        let status = status::invalid(s, &name, &message, now());
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

    // Observe.
    let js = ctx
        .nats
        .jetstream(&ctx.client, ns, s.spec.connection.as_ref())
        .await?;
    let found = get_stream(&js, &name).await?;

    // Desired, apply and status.
    let status = match s.spec.mode {
        StreamMode::Observe => status::observed(
            s,
            &name,
            found.as_ref().map(jetflow_nats::stream_state),
            now(),
        ),
        StreamMode::Managed => {
            let desired = jetflow_nats::stream_config(&name, &s.spec);
            let (info, fixed) = apply::manage(s, &name, &js, ctx, desired, found, &old).await?;
            status::managed(s, &name, jetflow_nats::stream_state(&info), &fixed, now())
        }
    };
    publish_status(api, s, s.status.as_ref(), status, "Stream").await?;
    Ok(Action::requeue(ctx.settings.stream_resync))
}

/// The cleanup branch: deletes the JetStream stream with `deletionPolicy: Delete`, keeps it
/// otherwise.
pub async fn cleanup(s: &Stream, ns: &str, ctx: &Context) -> Result<Action> {
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
