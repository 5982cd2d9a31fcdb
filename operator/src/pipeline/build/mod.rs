//! The objects the operator creates for a Pipeline, one builder per object. Pure: the same
//! inputs give the same objects, field for field and in the same order, so a reconcile with
//! nothing new compares equal and writes nothing.
//!
//! | object | name | owner |
//! | --- | --- | --- |
//! | worker configuration ConfigMap | `<pipeline>-config` | the Pipeline |
//! | split assignment ConfigMap | `<pipeline>-assignment` | the Pipeline |
//! | checkpoint ConfigMap | `<pipeline>-checkpoint` | none: it outlives the Pipeline |
//! | ServiceAccount, Role, RoleBinding | `<pipeline>-worker` | the Pipeline |
//! | worker Deployment | `<pipeline>-worker` | the Pipeline |
//! | dead-letter Stream (policy `Dlq`, when no stream captures the subject) | `<pipeline>-dlq` | the Pipeline |

pub mod configmap;
pub mod dead_letters;
pub mod deployment;
pub mod rbac;

use std::collections::BTreeMap;

use jetflow_crds::{Pipeline, names};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// Where the worker configuration is mounted.
pub const CONFIG_DIR: &str = "/etc/jetflow/config";
/// Where each referenced Secret is mounted, as `<dir>/<secret name>/<key>`.
pub const SECRETS_DIR: &str = "/etc/jetflow/secrets";
/// The worker's metrics and health port.
pub const METRICS_PORT: i32 = 9090;
/// Pod template annotation holding the configuration hash; a new value rolls the workers.
pub const CONFIG_HASH_ANNOTATION: &str = "jetflow.io/config-hash";
/// Annotation on the checkpoint ConfigMap (and the worker configuration) recording the last
/// reset value applied.
pub use jetflow_crds::names::RESET_APPLIED_ANNOTATION;
/// Annotation on the checkpoint ConfigMap naming the UID of the Pipeline that created (or last
/// adopted) it: a checkpoint of another UID was left by an earlier Pipeline of the same name,
/// one of this UID is the Pipeline's own, even when the reconcile that created it did not
/// finish.
pub const PIPELINE_UID_ANNOTATION: &str = "jetflow.io/pipeline-uid";
/// The `app.kubernetes.io/name` of worker pods.
pub const WORKER_APP: &str = "jetflow-worker";

/// Everything a builder needs.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    /// The Pipeline.
    pub pipeline: &'a Pipeline,
    /// Its name.
    pub name: &'a str,
    /// Its namespace.
    pub namespace: &'a str,
    /// The owner reference put on owned objects.
    pub owner: OwnerReference,
    /// The worker image when the Pipeline names none.
    pub worker_image: &'a str,
    /// The NATS URL written into the worker configuration when the connection names none.
    pub default_nats_url: &'a str,
    /// Worker replicas: `parallelism`, or 0 when suspended or finished.
    pub replicas: i32,
}

/// Labels on every object created for a pipeline.
pub fn labels(pipeline: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/component".into(), "worker".into()),
        (
            "app.kubernetes.io/managed-by".into(),
            crate::FIELD_MANAGER.into(),
        ),
        ("app.kubernetes.io/name".into(), WORKER_APP.into()),
        ("app.kubernetes.io/part-of".into(), "jetflow".into()),
        (names::PIPELINE_LABEL.into(), pipeline.into()),
    ])
}

/// The labels that select a pipeline's worker pods (never changed: a Deployment's selector is
/// immutable).
pub fn selector(pipeline: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), WORKER_APP.into()),
        (names::PIPELINE_LABEL.into(), pipeline.into()),
    ])
}

/// The label selector string of a pipeline's worker pods.
pub fn selector_string(pipeline: &str) -> String {
    selector(pipeline)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Metadata of an owned object.
pub fn owned_meta(inputs: &Inputs<'_>, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(inputs.namespace.to_owned()),
        labels: Some(labels(inputs.name)),
        owner_references: Some(vec![inputs.owner.clone()]),
        ..Default::default()
    }
}

#[cfg(test)]
pub(crate) mod golden {
    //! Golden YAML: `UPDATE_GOLDEN=1 cargo test -p jetflow-operator` rewrites the files.

    use std::path::PathBuf;

    /// Compares `actual` with `golden/<file>`.
    pub fn check(file: &str, actual: &str) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("src/pipeline/build/golden")
            .join(file);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, actual).expect("write golden file");
            return;
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_GOLDEN=1", path.display()));
        assert_eq!(
            actual,
            expected,
            "{} differs; if the change is intended, run with UPDATE_GOLDEN=1",
            path.display()
        );
    }
}
