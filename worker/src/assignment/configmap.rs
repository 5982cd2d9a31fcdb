//! The assignment the operator publishes in a cluster: the `assignment.json` key of the
//! ConfigMap `<pipeline>-assignment`, read with the worker's own client (its Role allows `get`,
//! `list` and `watch` on that name).
//!
//! [`ConfigMapAssignment::follow`] watches that one ConfigMap (a list and watch with
//! `fieldSelector=metadata.name=<pipeline>-assignment`, through kube-runtime's watcher) and
//! hands every new assignment to the runner the moment the API server reports it. While the
//! watch is broken (the watch request fails, the connection drops, the API answers 410 Gone and
//! the watcher lists again, with backoff) the worker falls back to reading the ConfigMap with
//! one `GET` every [`crate::cluster::CONFIG_MAP_POLL_INTERVAL`], and stops polling as soon as a
//! list or a watch event comes through again. The in-memory API of the tests has no watch, so
//! the tests that run on it exercise the fallback; the local control plane (devcluster), which
//! serves watches, exercises the watch.
//!
//! The resourceVersion of the last `GET` is kept, so an unchanged ConfigMap is not decoded
//! again. A ConfigMap that does not exist yet, or has no key, is no assignment: the worker owns
//! nothing, stays ready, and the operator, which assigns splits only to ready pods, gives it
//! some. A deleted ConfigMap leaves the assignment in force. A read the API refuses
//! (permissions, the API server unreachable) or a document that does not decode is logged once
//! per run of failures; the assignment in force stays. [`ConfigMapAssignment::follow`] ends when
//! its token is cancelled or the runner is gone.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use jetflow_crds::assignment::Assignment;
use jetflow_crds::names;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{AssignmentError, AssignmentSource};
use crate::pipeline::Change;

/// The assignment ConfigMap of a pipeline.
pub struct ConfigMapAssignment {
    api: Api<ConfigMap>,
    namespace: String,
    name: String,
    /// The resourceVersion of the last read and what it held.
    last: Mutex<Option<(String, Option<Assignment>)>>,
}

impl std::fmt::Debug for ConfigMapAssignment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigMapAssignment")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ConfigMapAssignment {
    /// The assignment of pipeline `pipeline` in `namespace`: the ConfigMap
    /// [`names::assignment_config_map`].
    pub fn new(client: kube::Client, namespace: &str, pipeline: &str) -> Self {
        Self::named(client, namespace, &names::assignment_config_map(pipeline))
    }

    /// The assignment in the ConfigMap `name` in `namespace`.
    pub fn named(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            last: Mutex::new(None),
        }
    }

    fn location(&self) -> String {
        format!("ConfigMap {}/{}", self.namespace, self.name)
    }

    fn decode(&self, cm: &ConfigMap) -> Result<Option<Assignment>, AssignmentError> {
        cm.data
            .as_ref()
            .and_then(|d| d.get(names::ASSIGNMENT_KEY))
            .filter(|t| !t.trim().is_empty())
            .map(|t| {
                serde_json::from_str(t).map_err(|source| AssignmentError::Decode {
                    location: self.location(),
                    source,
                })
            })
            .transpose()
    }

    async fn read(&self) -> Result<Option<Assignment>, AssignmentError> {
        let cm = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|source| AssignmentError::Backend {
                location: self.location(),
                source: Box::new(source),
            })?;
        let Some(cm) = cm else {
            return Ok(None);
        };
        let version = cm.metadata.resource_version.clone().unwrap_or_default();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, assignment)) = last.as_ref()
            && !version.is_empty()
            && *seen == version
        {
            return Ok(assignment.clone());
        }
        let assignment = self.decode(&cm)?;
        *last = Some((version, assignment.clone()));
        Ok(assignment)
    }
}

impl ConfigMapAssignment {
    /// Follows the ConfigMap with a watch, polling it every `poll_interval` only while the
    /// watch is broken, and sends each assignment that differs from the last one seen
    /// (starting from `current`) as [`Change::Assignment`].
    pub fn follow(
        self: Arc<Self>,
        mut current: Assignment,
        poll_interval: Duration,
        changes: mpsc::Sender<Change>,
        cancel: CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            let config = watcher::Config::default().fields(&format!("metadata.name={}", self.name));
            let mut events = watcher::watcher(self.api.clone(), config)
                .default_backoff()
                .boxed();
            let mut poll = tokio::time::interval(poll_interval);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Whether a list went through with no watch error since: only then is the
            // ConfigMap not polled.
            let mut watching = false;
            let mut said_broken = false;
            let mut read_failing = false;
            loop {
                let read = tokio::select! {
                    _ = cancel.cancelled() => return,
                    event = events.next() => match event {
                        Some(Ok(Event::InitApply(cm))) => self.decode(&cm),
                        Some(Ok(Event::Apply(cm))) => {
                            watching = true;
                            self.decode(&cm)
                        }
                        Some(Ok(Event::InitDone)) => {
                            if !watching {
                                tracing::info!(assignment = %self.location(), "watching the assignment");
                            }
                            watching = true;
                            said_broken = false;
                            continue;
                        }
                        Some(Ok(Event::Init)) => continue,
                        Some(Ok(Event::Delete(_))) => {
                            tracing::warn!(assignment = %self.location(), "the assignment ConfigMap was deleted; keeping the assignment in force");
                            continue;
                        }
                        Some(Err(e)) => {
                            if !said_broken {
                                tracing::warn!(assignment = %self.location(), error = %e, interval = ?poll_interval, "cannot watch the assignment; reading it at each interval until the watch is back");
                                said_broken = true;
                            }
                            watching = false;
                            continue;
                        }
                        // The watcher never ends; should it, polling goes on.
                        None => {
                            watching = false;
                            events = futures::stream::pending().boxed();
                            continue;
                        }
                    },
                    _ = poll.tick(), if !watching => self.read().await,
                };
                match read {
                    Ok(Some(next)) if next != current => {
                        read_failing = false;
                        current = next.clone();
                        if changes.send(Change::Assignment(next)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => read_failing = false,
                    Err(e) => {
                        if !read_failing {
                            tracing::warn!(error = %e, "cannot read the assignment; keeping the one in force");
                        }
                        read_failing = true;
                    }
                }
            }
        })
    }
}

impl AssignmentSource for ConfigMapAssignment {
    fn load(&self) -> BoxFuture<'_, Result<Option<Assignment>, AssignmentError>> {
        self.read().boxed()
    }

    fn location(&self) -> String {
        ConfigMapAssignment::location(self)
    }
}
