//! The controllers' shared context, error policy and wiring.
//!
//! [`Context`] holds the Kubernetes client, the Event recorder, the metrics, the NATS
//! connections and the settings. [`run`] starts the Pipeline and Stream controllers (kube-runtime
//! watches with owned Deployments and worker pods) and returns when both stop (shutdown signal).
//! [`error_policy`] retries a failed reconcile with a per-object exponential backoff, short for
//! a write conflict; an invalid spec never reaches it, as reconcilers report it in a condition
//! and wait for a change.

pub mod nats;
pub mod ssa;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jetflow_crds::{Pipeline, Stream, names};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};

use crate::metrics::Metrics;
use crate::reasons::EventAction;
use crate::{Error, FIELD_MANAGER};

pub use nats::NatsPool;

/// Settings from the command line.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The worker image for Pipelines that name none.
    pub worker_image: String,
    /// How often a Pipeline is reconciled without a change (status refresh, assignment).
    pub pipeline_resync: Duration,
    /// How often a Stream is reconciled without a change (drift repair).
    pub stream_resync: Duration,
    /// How long after the last checkpoint a running pipeline counts as stale, at least.
    pub min_checkpoint_stale: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            worker_image: "ghcr.io/jetflow-io/jetflow:latest".into(),
            pipeline_resync: Duration::from_secs(15),
            stream_resync: Duration::from_secs(15),
            min_checkpoint_stale: Duration::from_secs(60),
        }
    }
}

/// What every reconcile needs.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Publishes Events on the reconciled resources.
    pub recorder: Recorder,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// NATS connections.
    pub nats: NatsPool,
    /// Settings.
    pub settings: Settings,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context; `instance` names this operator replica in Events (its pod name).
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        nats: NatsPool,
        settings: Settings,
        instance: Option<String>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance,
            },
        );
        Self {
            client,
            recorder,
            metrics,
            nats,
            settings,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes an Event on `obj`. A failure is logged, never fails the reconcile: Events are
    /// for people, and the status says the same.
    pub async fn event<K>(
        &self,
        obj: &K,
        warning: bool,
        reason: &str,
        action: EventAction,
        note: String,
    ) where
        K: Resource<DynamicType = ()>,
    {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: action.as_str().into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(%error, reason, "cannot publish event");
        }
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn succeeded(&self, key: &str) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(key);
        }
    }

    /// Counts a failure of `key` and returns how long to wait before the next attempt: 1 s for a
    /// conflict (the next read sees the new version), else 5 s doubling up to 5 minutes.
    pub fn backoff(&self, key: &str, error: &Error) -> Duration {
        if error.is_conflict() {
            return Duration::from_secs(1);
        }
        let n = self
            .failures
            .lock()
            .map(|mut f| {
                let n = f.entry(key.to_owned()).or_default();
                *n = n.saturating_add(1);
                *n
            })
            .unwrap_or(1);
        let secs = 5u64.saturating_mul(1 << n.saturating_sub(1).min(6));
        Duration::from_secs(secs.min(300))
    }
}

/// The key of an object in the failure counts.
pub fn key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or(""),
        obj.meta().name.as_deref().unwrap_or("")
    )
}

/// The error policy of both controllers: count the error, retry with backoff.
pub fn error_policy<K>(
    obj: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
    controller: &'static str,
) -> Action
where
    K: Resource<DynamicType = ()>,
{
    ctx.metrics.error(controller, error.category());
    let wait = ctx.backoff(&key(obj.as_ref()), error);
    tracing::warn!(
        controller,
        name = %obj.meta().name.as_deref().unwrap_or(""),
        namespace = %obj.meta().namespace.as_deref().unwrap_or(""),
        category = error.category(),
        %error,
        retry_in = ?wait,
        "reconcile failed"
    );
    Action::requeue(wait)
}

/// Runs the Pipeline and Stream controllers over `namespace` (every namespace when `None`)
/// until a shutdown signal.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let client = ctx.client.clone();
    let api = |c: &Client| -> (Api<Pipeline>, Api<Stream>, Api<Deployment>, Api<Pod>) {
        match &namespace {
            Some(ns) => (
                Api::namespaced(c.clone(), ns),
                Api::namespaced(c.clone(), ns),
                Api::namespaced(c.clone(), ns),
                Api::namespaced(c.clone(), ns),
            ),
            None => (
                Api::all(c.clone()),
                Api::all(c.clone()),
                Api::all(c.clone()),
                Api::all(c.clone()),
            ),
        }
    };
    let (pipelines, streams, deployments, pods) = api(&client);
    let managed = watcher::Config::default().labels(names::PIPELINE_LABEL);

    let pipeline_controller = Controller::new(pipelines, watcher::Config::default())
        .owns(deployments, managed.clone())
        // A worker pod becoming ready or going away changes the split assignment.
        .watches(pods, managed, |pod: Pod| {
            let pipeline = pod.labels().get(names::PIPELINE_LABEL)?.clone();
            Some(ObjectRef::<Pipeline>::new(&pipeline).within(&pod.namespace()?))
        })
        .shutdown_on_signal()
        .run(
            crate::pipeline::reconcile,
            |obj, err, ctx| error_policy(obj, err, ctx, crate::pipeline::CONTROLLER),
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));

    let stream_controller = Controller::new(streams, watcher::Config::default())
        .shutdown_on_signal()
        .run(
            crate::stream::reconcile,
            |obj, err, ctx| error_policy(obj, err, ctx, crate::stream::CONTROLLER),
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));

    tokio::join!(pipeline_controller, stream_controller);
}
