//! Watches: newline-delimited JSON `WatchEvent`s streamed until the timeout, the client's
//! disconnection or the server's shutdown. Events after the given resourceVersion come from the
//! store's history; a resourceVersion older than that history gets one `ERROR` event with a 410
//! `Expired` Status (kube-runtime then lists again); none or `0` starts with the current
//! objects as `ADDED`. A watcher that falls behind the live stream also gets the 410.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::resources::ResourceInfo;
use super::selector::Filter;
use super::state::Shared;
use super::status::ApiError;
use super::store::{Event, EventType, Subscription};
use super::table;

/// What a watch asks for beyond the resource.
#[derive(Clone, Debug, Default)]
pub struct WatchParams {
    /// `resourceVersion`.
    pub rv: Option<String>,
    /// `sendInitialEvents=true`.
    pub initial_events: bool,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
    /// `timeoutSeconds`.
    pub timeout: Option<u64>,
    /// `includeObject` when the client asked for Tables.
    pub table: Option<String>,
    /// The client asked for `PartialObjectMetadata` (kube-rs `metadata_watcher`).
    pub partial: bool,
}

fn line(type_: &str, object: Value) -> Bytes {
    let mut s = serde_json::to_vec(&json!({"type": type_, "object": object})).unwrap_or_default();
    s.push(b'\n');
    Bytes::from(s)
}

fn encode(info: &ResourceInfo, params: &WatchParams, type_: &str, obj: &Value) -> Bytes {
    match &params.table {
        Some(include) => {
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(json!(""));
            line(
                type_,
                table::table(info, &[obj], include, json!({"resourceVersion": rv})),
            )
        }
        None if params.partial => line(
            type_,
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))}),
        ),
        None => line(type_, obj.clone()),
    }
}

fn bookmark(info: &ResourceInfo, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        json!({"kind": info.kind, "apiVersion": info.api_version(), "metadata": meta}),
    )
}

/// What one change means for this watch: the event type to send, if any.
fn translate(
    event: &Event,
    info: &ResourceInfo,
    namespace: Option<&str>,
    filter: &Filter,
) -> Option<&'static str> {
    if event.key.group != info.group || event.key.plural != info.plural {
        return None;
    }
    if namespace.is_some_and(|ns| event.key.namespace != ns) {
        return None;
    }
    let now = filter.matches(&event.object);
    match event.type_ {
        EventType::Added => now.then_some("ADDED"),
        EventType::Deleted => now.then_some("DELETED"),
        EventType::Modified => {
            let before = event.old.as_deref().is_some_and(|o| filter.matches(o));
            match (before, now) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            }
        }
    }
}

/// The watch's body.
pub fn watch(
    state: Shared,
    info: ResourceInfo,
    namespace: Option<String>,
    filter: Filter,
    params: WatchParams,
) -> Result<impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static, ApiError> {
    let from_now =
        matches!(params.rv.as_deref(), None | Some("") | Some("0")) || params.initial_events;
    let (initial, sub): (Vec<Value>, Result<Subscription, ApiError>) = if from_now {
        let (items, sub) = state
            .store
            .snapshot(&info.group, &info.plural, namespace.as_deref());
        (items, Ok(sub))
    } else {
        let rv = params
            .rv
            .as_deref()
            .unwrap_or("0")
            .parse::<u64>()
            .map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid resourceVersion: {}",
                    params.rv.as_deref().unwrap_or("")
                ))
            })?;
        (Vec::new(), state.store.subscribe_after(rv))
    };
    let timeout = Duration::from_secs(params.timeout.unwrap_or(1800).max(1));
    Ok(async_stream::stream! {
        let mut sub = match sub {
            Ok(sub) => sub,
            Err(e) => {
                yield Ok(line("ERROR", e.to_status()));
                return;
            }
        };
        for obj in initial.iter().filter(|o| filter.matches(o)) {
            yield Ok(encode(&info, &params, "ADDED", obj));
        }
        let mut last_rv = sub.rv;
        if params.initial_events && params.bookmarks {
            yield Ok(bookmark(&info, last_rv, true));
        }
        for event in std::mem::take(&mut sub.backlog) {
            last_rv = event.rv;
            if let Some(t) = translate(&event, &info, namespace.as_deref(), &filter) {
                yield Ok(encode(&info, &params, t, &event.object));
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(Duration::from_secs(30));
        ticker.tick().await;
        loop {
            let event: Arc<Event> = tokio::select! {
                _ = &mut deadline => break,
                _ = state.shutdown.cancelled() => break,
                _ = ticker.tick() => {
                    if params.bookmarks {
                        yield Ok(bookmark(&info, last_rv, false));
                    }
                    continue;
                }
                received = sub.live.recv() => match received {
                    Ok(e) => e,
                    Err(RecvError::Lagged(_)) => {
                        yield Ok(line("ERROR", ApiError::expired(&last_rv.to_string()).to_status()));
                        break;
                    }
                    Err(RecvError::Closed) => break,
                },
            };
            if event.rv <= last_rv {
                continue;
            }
            last_rv = event.rv;
            if let Some(t) = translate(&event, &info, namespace.as_deref(), &filter) {
                yield Ok(encode(&info, &params, t, &event.object));
            }
        }
    })
}
