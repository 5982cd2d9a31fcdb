//! Server-side apply of the operator's objects and statuses.
//!
//! Every child object is applied on every reconcile (force, field manager `jetflow-operator`):
//! the API server compares the applied configuration with the live object itself (quantities
//! in canonical form, defaults filled in, fields other managers own), and an apply that changes
//! nothing is no write there (same resourceVersion, no watch event). An object edited by hand
//! in a field the operator owns is set back. A status is written only when it differs from the
//! one read, so a resync that finds nothing new sends no status write.

use std::fmt::Debug;

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, FIELD_MANAGER, Result};

/// What [`patch_apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The object did not exist and was created.
    Created,
    /// The object existed and differed; it was applied.
    Updated,
    /// The object was as desired; nothing was written.
    Unchanged,
}

/// Applies `desired` (force, field manager `jetflow-operator`). Returns the outcome, the live
/// object afterwards, and the one before (if any), read first to tell a creation and to let the
/// caller compare (the Deployment's configuration hash).
pub async fn patch_apply<K>(api: &Api<K>, desired: &K, kind: &'static str) -> Result<Applied<K>>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    let name = desired.name_any();
    let before = api.get_opt(&name).await.map_err(|source| Error::Read {
        kind,
        name: name.clone(),
        source,
    })?;
    let object = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(desired),
        )
        .await
        .map_err(|source| Error::Apply {
            kind,
            name: name.clone(),
            source,
        })?;
    let outcome = match &before {
        None => Outcome::Created,
        Some(live) if live.meta().resource_version == object.meta().resource_version => {
            Outcome::Unchanged
        }
        Some(_) => Outcome::Updated,
    };
    Ok(Applied {
        outcome,
        object,
        before,
    })
}

/// The result of [`patch_apply`].
#[derive(Debug)]
pub struct Applied<K> {
    /// What was done.
    pub outcome: Outcome,
    /// The live object afterwards.
    pub object: K,
    /// The live object before, if it existed.
    pub before: Option<K>,
}

/// Writes a resource's status by server-side apply, only when it differs from `current`, so
/// that a resync which finds nothing new writes nothing.
pub(crate) async fn publish_status<K, S>(
    api: &Api<K>,
    obj: &K,
    current: Option<&S>,
    status: S,
    kind: &'static str,
) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize + PartialEq,
{
    if current == Some(&status) {
        return Ok(());
    }
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::PublishStatus {
        kind,
        name: obj.name_any(),
        source,
    })?;
    Ok(())
}
