//! Server-side apply that writes only when something would change.
//!
//! Every child object is read first and applied (force, field manager `jetflow-operator`) only
//! when the desired object is not already contained in the live one. So a reconcile of a
//! Pipeline whose objects are as desired makes no writes at all, and an object edited by hand
//! in a field the operator owns is set back. Fields the operator does not set (defaults filled
//! in by the API server, fields other managers own) never count as a difference.

use std::fmt::Debug;

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Error, FIELD_MANAGER, Result};

/// What [`apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The object did not exist and was created.
    Created,
    /// The object existed and differed; it was applied.
    Updated,
    /// The object was as desired; nothing was written.
    Unchanged,
}

/// Whether every field set in `desired` has the same value in `live`: objects by key, arrays
/// element by element (same length), scalars by equality.
pub fn contains(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => d
            .iter()
            .all(|(k, dv)| dv.is_null() || l.get(k).is_some_and(|lv| contains(lv, dv))),
        (Value::Array(l), Value::Array(d)) => {
            l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| contains(lv, dv))
        }
        _ => live == desired,
    }
}

/// Reads the object `desired` names, and applies `desired` when the live object lacks any of
/// its fields. Returns the outcome and the live object afterwards, and the one before (if any).
pub async fn apply<K>(api: &Api<K>, desired: &K, kind: &'static str) -> Result<Applied<K>>
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
    let desired_value = to_value(desired, kind)?;
    if let Some(live) = &before
        && contains(&to_value(live, kind)?, &desired_value)
    {
        return Ok(Applied {
            outcome: Outcome::Unchanged,
            object: live.clone(),
            before,
        });
    }
    let object = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired_value),
        )
        .await
        .map_err(|source| Error::Apply {
            kind,
            name: name.clone(),
            source,
        })?;
    let outcome = if before.is_some() {
        Outcome::Updated
    } else {
        Outcome::Created
    };
    Ok(Applied {
        outcome,
        object,
        before,
    })
}

/// The result of [`apply`].
#[derive(Debug)]
pub struct Applied<K> {
    /// What was done.
    pub outcome: Outcome,
    /// The live object afterwards.
    pub object: K,
    /// The live object before, if it existed.
    pub before: Option<K>,
}

fn to_value<K: Serialize>(object: &K, kind: &'static str) -> Result<Value> {
    serde_json::to_value(object).map_err(|source| Error::Encode {
        what: kind,
        source: Box::new(source),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_added_by_the_server_are_not_differences() {
        let live = json!({"spec": {"replicas": 2, "strategy": {"type": "RollingUpdate"}}});
        assert!(contains(&live, &json!({"spec": {"replicas": 2}})));
        assert!(!contains(&live, &json!({"spec": {"replicas": 3}})));
        assert!(!contains(&live, &json!({"spec": {"paused": true}})));
    }

    #[test]
    fn arrays_compare_element_by_element() {
        let live = json!({"a": [{"name": "x", "value": "1", "extra": true}]});
        assert!(contains(
            &live,
            &json!({"a": [{"name": "x", "value": "1"}]})
        ));
        assert!(!contains(
            &live,
            &json!({"a": [{"name": "x", "value": "2"}]})
        ));
        assert!(!contains(&live, &json!({"a": []})));
    }
}
