//! The Stream reconcile's writes: the JetStream stream created, adopted or updated to the
//! declared configuration, each reported in an Event. What JetStream cannot change is returned
//! for the status to report.

use async_nats::jetstream::stream::{Config, Info};
use jetflow_crds::{Stream, StreamStatus};

use super::diff;
use crate::controller::Context;
use crate::reasons::{self, EventAction};
use crate::{Error, Result, StreamAction};

/// Creates, adopts or updates the stream; returns its state and what could not be changed.
pub async fn manage(
    s: &Stream,
    name: &str,
    js: &async_nats::jetstream::Context,
    ctx: &Context,
    desired: Config,
    found: Option<Info>,
    old: &StreamStatus,
) -> Result<(Info, Vec<diff::Fixed>)> {
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
