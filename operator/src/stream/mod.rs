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
//! The reconcile in phases, run in order by [`reconcile::run`]: validate (the CRD's own rules)
//! → observe (the JetStream stream) → desired (the stream configuration the spec declares, and
//! its [`diff`] with the live one) → [`apply`] (create, adopt, update) → [`status`]. Diff and
//! status are pure.
//!
//! Errors (NATS unreachable, a refused update) are returned and retried with backoff; an invalid
//! spec becomes a condition and waits for the next change.

pub mod apply;
pub mod diff;
pub mod reconcile;
pub mod status;

use std::sync::Arc;

use jetflow_crds::Stream;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};

use crate::controller::{Context, key};
use crate::{Error, FINALIZER, Result};

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
            Finalizer::Apply(s) => reconcile::run(&s, &ns, &ctx, &api).await,
            Finalizer::Cleanup(s) => reconcile::cleanup(&s, &ns, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))?;
    ctx.succeeded(&object_key);
    Ok(action)
}
