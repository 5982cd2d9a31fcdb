//! The Pipeline reconciler, in phases: [`observe`] (what NATS and Kubernetes have) →
//! [`validate`] → [`desired`] (with [`autoscale`]) → [`build`] → [`apply`] → [`status`], run in
//! that order by [`reconcile`](mod@reconcile). Validate, desired, build and status are pure
//! and tested as plain functions; observe and apply hold every call to Kubernetes and NATS.
//! The reconcile runs inside kube-runtime's finalizer helper: its live branch makes the
//! pipeline run, its cleanup branch removes the consumers. A deleted Pipeline first has its workers stopped (the Deployment scaled to 0), and the
//! cleanup runs only once none of its pods is left, so no worker makes a consumer again.
//!
//! An invalid spec is reported in the SpecValid and Ready conditions (phase Failed) and the
//! reconcile waits for the next change; a missing stream is reported the same way and retried
//! at the resync interval; other failures are errors, retried with backoff.

pub mod apply;
pub mod autoscale;
pub mod build;
pub mod consumers;
pub mod desired;
pub mod observe;
pub mod reconcile;
pub mod status;
pub mod validate;

#[cfg(test)]
pub(crate) mod fixtures;

use std::sync::Arc;

use jetflow_crds::Pipeline;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};

use crate::controller::{Context, key};
use crate::{Error, FINALIZER, Result};

/// The controller's name in metrics and logs.
pub const CONTROLLER: &str = "pipeline";

/// Reconciles one Pipeline.
pub async fn reconcile(p: Arc<Pipeline>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let ns = p.namespace().ok_or_else(|| Error::MissingMetadata {
        kind: "Pipeline",
        name: p.name_any(),
        field: "namespace",
    })?;
    let api: Api<Pipeline> = Api::namespaced(ctx.client.clone(), &ns);
    let object_key = key(p.as_ref());
    if p.metadata.deletion_timestamp.is_some() && p.finalizers().iter().any(|f| f == FINALIZER) {
        let left = reconcile::stop_workers(&p, &ns, &ctx).await?;
        if left > 0 {
            tracing::info!(pipeline = %p.name_any(), namespace = %ns, pods = left, "waiting for the workers to stop before removing the consumers");
            ctx.succeeded(&object_key);
            return Ok(Action::requeue(reconcile::STOPPING_RECHECK));
        }
    }
    let action = finalizer(&api, FINALIZER, p, |event| async {
        match event {
            Finalizer::Apply(p) => reconcile::run(&p, &ns, &ctx, &api).await,
            Finalizer::Cleanup(p) => reconcile::cleanup(&p, &ns, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))?;
    ctx.succeeded(&object_key);
    Ok(action)
}
