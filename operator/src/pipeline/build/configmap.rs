//! The pipeline's ConfigMaps: the worker configuration (the Pipeline manifest the worker runs,
//! under `pipeline.yaml`), the split assignment (`assignment.json`), and the checkpoint
//! (`checkpoint.json`), which has no owner so that it outlives the Pipeline.
//!
//! The worker configuration holds only what a worker reads (connection, source, steps, sink,
//! checkpoint, errors) and the checkpoint's epoch (the reset value applied to it): its hash rolls
//! the workers, so `parallelism`, `suspend` and the worker template stay out of it. A scale
//! changes the replicas and the assignment, never the configuration of the pods that stay.

use std::collections::BTreeMap;

use jetflow_crds::assignment::Assignment;
use jetflow_crds::checkpoint::Checkpoint;
use jetflow_crds::pipeline::{CheckpointSpec, ErrorPolicy, Sink, Source, Step};
use jetflow_crds::{Connection, names};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
#[cfg(test)]
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde::Serialize;

use super::{Inputs, PIPELINE_UID_ANNOTATION, RESET_APPLIED_ANNOTATION, labels, owned_meta};
use crate::{Error, Result};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    api_version: &'a str,
    kind: &'a str,
    metadata: Metadata<'a>,
    spec: WorkerSpec<'a>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    name: &'a str,
    namespace: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<&'static str, &'a str>>,
}

/// The part of a Pipeline's spec that a worker reads, in the spec's field order.
#[derive(Serialize)]
struct WorkerSpec<'a> {
    connection: Connection,
    source: &'a Source,
    #[serde(skip_serializing_if = "<[Step]>::is_empty")]
    steps: &'a [Step],
    sink: &'a Sink,
    checkpoint: &'a CheckpointSpec,
    errors: &'a ErrorPolicy,
}

/// The worker configuration: a Pipeline manifest (apiVersion, kind, name, namespace, the spec's
/// fields a worker reads), with the operator's default NATS URL written in when the connection
/// names none, so the worker needs no other source of it, and the checkpoint's epoch
/// (`reset_applied`, the reset value the checkpoint ConfigMap records) as the annotation
/// [`RESET_APPLIED_ANNOTATION`], which the worker's checkpoint store checks on every write.
pub fn worker_config(inputs: &Inputs<'_>, reset_applied: Option<&str>) -> Result<String> {
    let spec = &inputs.pipeline.spec;
    let mut connection = spec.connection.clone().unwrap_or_default();
    if connection.url.is_none() {
        connection.url = Some(inputs.default_nats_url.to_owned());
    }
    let manifest = Manifest {
        api_version: "jetflow.io/v1alpha1",
        kind: "Pipeline",
        metadata: Metadata {
            name: inputs.name,
            namespace: inputs.namespace,
            annotations: reset_applied.map(|r| BTreeMap::from([(RESET_APPLIED_ANNOTATION, r)])),
        },
        spec: WorkerSpec {
            connection,
            source: &spec.source,
            steps: &spec.steps,
            sink: &spec.sink,
            checkpoint: &spec.checkpoint,
            errors: &spec.errors,
        },
    };
    serde_yaml_ng::to_string(&manifest).map_err(|source| Error::Encode {
        what: "worker configuration",
        source: Box::new(source),
    })
}

/// The ConfigMap holding the worker configuration.
pub fn config_map(inputs: &Inputs<'_>, config: &str) -> ConfigMap {
    ConfigMap {
        metadata: owned_meta(inputs, names::config_map(inputs.name)),
        data: Some(BTreeMap::from([(
            names::CONFIG_KEY.to_owned(),
            config.to_owned(),
        )])),
        ..Default::default()
    }
}

/// The ConfigMap publishing the split assignment. `resource_version`, when given, makes the
/// apply conditional on the version read, so two writers never both bump the generation.
pub fn assignment_config_map(
    inputs: &Inputs<'_>,
    assignment: &Assignment,
    resource_version: Option<String>,
) -> Result<ConfigMap> {
    let json = serde_json::to_string(assignment).map_err(|source| Error::Encode {
        what: "assignment",
        source: Box::new(source),
    })?;
    let mut metadata = owned_meta(inputs, names::assignment_config_map(inputs.name));
    metadata.resource_version = resource_version;
    Ok(ConfigMap {
        metadata,
        data: Some(BTreeMap::from([(names::ASSIGNMENT_KEY.to_owned(), json)])),
        ..Default::default()
    })
}

/// The checkpoint ConfigMap as the operator creates it: no owner (it outlives the Pipeline),
/// holding `checkpoint`, the reset value it reflects and the UID of the Pipeline it belongs to
/// ([`PIPELINE_UID_ANNOTATION`]).
pub fn checkpoint_config_map(
    name: &str,
    namespace: &str,
    checkpoint: &Checkpoint,
    reset: Option<&str>,
    uid: Option<&str>,
) -> Result<ConfigMap> {
    let json = serde_json::to_string(checkpoint).map_err(|source| Error::Encode {
        what: "checkpoint",
        source: Box::new(source),
    })?;
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(names::checkpoint_config_map(name)),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels(name)),
            annotations: Some(
                reset
                    .map(|r| (RESET_APPLIED_ANNOTATION, r))
                    .into_iter()
                    .chain(uid.map(|u| (PIPELINE_UID_ANNOTATION, u)))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            )
            .filter(|a: &BTreeMap<String, String>| !a.is_empty()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(names::CHECKPOINT_KEY.to_owned(), json)])),
        ..Default::default()
    })
}

/// An owner reference for tests and golden files.
#[cfg(test)]
pub(crate) fn test_owner() -> OwnerReference {
    OwnerReference {
        api_version: "jetflow.io/v1alpha1".into(),
        kind: "Pipeline".into(),
        name: "orders-copy".into(),
        uid: "7d6b2f0e-0000-4000-8000-000000000001".into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::build::golden;
    use crate::pipeline::fixtures;

    #[test]
    fn config_map_golden() {
        let p = fixtures::pipeline();
        let inputs = fixtures::inputs(&p);
        let config = worker_config(&inputs, None).unwrap();
        let cm = config_map(&inputs, &config);
        golden::check("configmap.yaml", &serde_yaml_ng::to_string(&cm).unwrap());
    }

    #[test]
    fn worker_config_is_a_loadable_pipeline_manifest_with_the_default_url() {
        let p = fixtures::pipeline();
        let config = worker_config(&fixtures::inputs(&p), Some("7")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipeline.yaml");
        std::fs::write(&path, &config).unwrap();
        let loaded = jetflow_crds::manifest::load_pipeline(&path, None).unwrap();
        assert_eq!(loaded.metadata.name.as_deref(), Some("orders-copy"));
        assert_eq!(loaded.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(
            loaded.spec.connection.unwrap().url.as_deref(),
            Some("nats://nats.nats.svc:4222")
        );
        assert_eq!(loaded.spec.source, p.spec.source);
        assert_eq!(
            loaded.metadata.annotations.unwrap()[RESET_APPLIED_ANNOTATION],
            "7"
        );
    }

    #[test]
    fn scale_suspend_and_the_worker_template_leave_the_worker_configuration_alone() {
        let p = fixtures::pipeline();
        let before = worker_config(&fixtures::inputs(&p), None).unwrap();
        let mut scaled = p.clone();
        scaled.spec.parallelism = 7;
        scaled.spec.suspend = true;
        scaled.spec.worker = Some(jetflow_crds::pipeline::WorkerTemplate {
            image: Some("other:1".into()),
            ..Default::default()
        });
        let after = worker_config(&fixtures::inputs(&scaled), None).unwrap();
        assert_eq!(before, after);
        let mut edited = p.clone();
        edited.spec.checkpoint.interval = jetflow_crds::Duration::from_secs(9);
        assert_ne!(
            before,
            worker_config(&fixtures::inputs(&edited), None).unwrap()
        );
    }

    #[test]
    fn checkpoint_config_map_has_no_owner() {
        let cm = checkpoint_config_map("p", "ns", &Checkpoint::default(), Some("1"), Some("u-1"))
            .unwrap();
        assert!(cm.metadata.owner_references.is_none());
        assert_eq!(cm.metadata.name.as_deref(), Some("p-checkpoint"));
        let json = &cm.data.unwrap()[names::CHECKPOINT_KEY];
        let back: Checkpoint = serde_json::from_str(json).unwrap();
        assert_eq!(back, Checkpoint::default());
    }
}
