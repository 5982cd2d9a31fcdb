//! The assignment the operator publishes in a cluster: the `assignment.json` key of the
//! ConfigMap `<pipeline>-assignment`, read with the worker's own client (its Role allows `get`
//! on that name).
//!
//! [`super::watch`] polls it like the file: one `GET` of one small object per interval, the
//! same code path in a pod and in tests against an in-memory API (which has no watch). The
//! resourceVersion of the last read is kept, so an unchanged ConfigMap is not decoded again.
//!
//! A ConfigMap that does not exist yet, or has no key, is no assignment: the worker owns
//! nothing, stays ready, and the operator, which assigns splits only to ready pods, gives it
//! some. A read the API refuses (permissions, the API server unreachable) is an error that the
//! watch logs; the assignment in force stays.

use std::sync::Mutex;

use futures::FutureExt;
use futures::future::BoxFuture;
use jetflow_crds::assignment::Assignment;
use jetflow_crds::names;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

use super::{AssignmentError, AssignmentSource};

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

impl AssignmentSource for ConfigMapAssignment {
    fn load(&self) -> BoxFuture<'_, Result<Option<Assignment>, AssignmentError>> {
        self.read().boxed()
    }

    fn location(&self) -> String {
        ConfigMapAssignment::location(self)
    }
}
