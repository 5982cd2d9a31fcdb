//! The worker Deployment: `parallelism` replicas (0 when suspended or finished), the
//! configuration and every Secret the connection names mounted read-only, health probes on
//! the worker's metrics port, a non-root read-only container that meets the `restricted` Pod
//! Security Standard (so it runs in a namespace that enforces it), JSON logs, and the
//! configuration hash on the pod template so that a change of the pipeline rolls the workers.
//!
//! The worker's command line here is the contract with `jetflow-worker run`.

use std::collections::BTreeMap;

use jetflow_crds::names;
use jetflow_crds::split::fnv1a;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    CONFIG_DIR, CONFIG_HASH_ANNOTATION, Inputs, METRICS_PORT, SECRETS_DIR, labels, owned_meta,
    selector,
};

/// The worker binary in the jetflow image.
pub const WORKER_BINARY: &str = "/usr/local/bin/jetflow-worker";
/// The non-root user of the jetflow image (distroless `nonroot`).
pub const WORKER_UID: i64 = 65532;

/// The hash of everything that should restart the workers when it changes: the worker
/// configuration, which holds what a worker reads and the checkpoint's epoch (the reset value
/// applied), and nothing else: a change of `parallelism` or `suspend` rolls no pod.
pub fn config_hash(config: &str) -> String {
    format!("{:016x}", fnv1a(config.as_bytes()))
}

/// The worker's arguments.
pub fn worker_args() -> Vec<String> {
    [
        "run",
        "-f",
        &format!("{CONFIG_DIR}/{}", names::CONFIG_KEY),
        "--checkpoint-store",
        "configmap",
        "--assignment-store",
        "configmap",
        "--worker-id",
        "$(POD_NAME)",
        "--secrets-dir",
        SECRETS_DIR,
        "--metrics-addr",
        &format!("0.0.0.0:{METRICS_PORT}"),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn probe(path: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("metrics".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

/// A volume name for a Secret: names of Secrets may be longer than volume names allow.
fn secret_volume(secret: &str) -> String {
    format!("secret-{:08x}", fnv1a(secret.as_bytes()) as u32)
}

/// The worker Deployment; `hash` is [`config_hash`] of the configuration it runs.
pub fn deployment(inputs: &Inputs<'_>, hash: &str) -> Deployment {
    let template = inputs.pipeline.spec.worker.clone().unwrap_or_default();
    let secrets: Vec<String> = inputs
        .pipeline
        .spec
        .connection
        .as_ref()
        .map(|c| c.secret_names().into_iter().map(str::to_owned).collect())
        .unwrap_or_default();

    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        // One flat JSON object per line (pipeline, worker and split fields) for log collectors;
        // a Pipeline's `spec.worker.env` may set it back to `text`.
        EnvVar {
            name: "JETFLOW_LOG_FORMAT".into(),
            value: Some("json".into()),
            ..Default::default()
        },
    ];
    env.extend(template.env.iter().cloned());

    let mut mounts = vec![
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        },
    ];
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names::config_map(inputs.name),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    ];
    for secret in &secrets {
        mounts.push(VolumeMount {
            name: secret_volume(secret),
            mount_path: format!("{SECRETS_DIR}/{secret}"),
            read_only: Some(true),
            ..Default::default()
        });
        volumes.push(Volume {
            name: secret_volume(secret),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                ..Default::default()
            }),
            ..Default::default()
        });
    }

    let container = Container {
        name: "worker".into(),
        image: Some(
            template
                .image
                .clone()
                .unwrap_or_else(|| inputs.worker_image.to_owned()),
        ),
        command: Some(vec![WORKER_BINARY.into()]),
        args: Some(worker_args()),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".into()),
            container_port: METRICS_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        readiness_probe: Some(probe("/readyz", 5)),
        liveness_probe: Some(probe("/healthz", 10)),
        resources: template.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    };

    Deployment {
        metadata: owned_meta(inputs, names::workers(inputs.name)),
        spec: Some(DeploymentSpec {
            replicas: Some(inputs.replicas),
            revision_history_limit: Some(3),
            selector: LabelSelector {
                match_labels: Some(selector(inputs.name)),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(inputs.name)),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_owned(),
                        hash.to_owned(),
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(names::workers(inputs.name)),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(WORKER_UID),
                        run_as_group: Some(WORKER_UID),
                        fs_group: Some(WORKER_UID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    volumes: Some(volumes),
                    node_selector: (!template.node_selector.is_empty())
                        .then(|| template.node_selector.clone()),
                    tolerations: (!template.tolerations.is_empty())
                        .then(|| template.tolerations.clone()),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The configuration hash on a live Deployment's pod template.
pub fn hash_of(deployment: &Deployment) -> Option<&str> {
    deployment
        .spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(CONFIG_HASH_ANNOTATION)
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::build::golden;
    use crate::pipeline::fixtures;
    use jetflow_crds::{Connection, SecretKeyRef, UserPasswordRef};

    #[test]
    fn deployment_golden() {
        let mut p = fixtures::pipeline();
        p.spec.connection = Some(Connection {
            url: Some("tls://nats.nats.svc:4222".into()),
            creds: Some(SecretKeyRef {
                name: "orders-creds".into(),
                key: "user.creds".into(),
            }),
            ..Default::default()
        });
        let inputs = fixtures::inputs(&p);
        let d = deployment(&inputs, &config_hash("config"));
        golden::check("deployment.yaml", &serde_yaml_ng::to_string(&d).unwrap());
    }

    #[test]
    fn every_secret_of_the_connection_is_mounted_by_name() {
        let mut p = fixtures::pipeline();
        p.spec.connection = Some(Connection {
            user_password: Some(UserPasswordRef {
                secret_name: "nats-user".into(),
                username_key: "u".into(),
                password_key: "p".into(),
            }),
            tls: Some(jetflow_crds::TlsRef {
                ca: Some(SecretKeyRef {
                    name: "nats-ca".into(),
                    key: "ca.crt".into(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let d = deployment(&fixtures::inputs(&p), "h");
        let pod = d.spec.unwrap().template.spec.unwrap();
        let mounts: Vec<String> = pod.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.clone())
            .collect();
        assert!(mounts.contains(&"/etc/jetflow/secrets/nats-user".to_owned()));
        assert!(mounts.contains(&"/etc/jetflow/secrets/nats-ca".to_owned()));
        assert_eq!(pod.volumes.unwrap().len(), 4);
    }

    #[test]
    fn worker_pods_meet_the_restricted_pod_security_standard() {
        let plain = fixtures::pipeline();
        let mut secrets = fixtures::pipeline();
        secrets.spec.connection = Some(Connection {
            creds: Some(SecretKeyRef {
                name: "orders-creds".into(),
                key: "user.creds".into(),
            }),
            ..Default::default()
        });
        let mut template = fixtures::pipeline();
        template.spec.worker = Some(
            serde_json::from_value(serde_json::json!({
                "image": "registry.example.com/jetflow:1",
                "env": [{"name": "RUST_LOG", "value": "debug"}],
                "resources": {"limits": {"memory": "256Mi"}},
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            }))
            .expect("a worker template"),
        );
        for (what, p) in [
            ("default", &plain),
            ("connection secrets", &secrets),
            ("worker template", &template),
        ] {
            let d = deployment(&fixtures::inputs(p), "h");
            let pod = serde_json::to_value(d.spec.unwrap().template.spec.unwrap()).unwrap();
            let violations = jetflow_testsupport::pod_security::restricted(&pod);
            assert!(
                violations.is_empty(),
                "{what}: the worker pod breaks the restricted profile: {violations:#?}"
            );
        }
    }

    #[test]
    fn the_hash_follows_the_configuration() {
        assert_eq!(config_hash("a"), config_hash("a"));
        assert_ne!(config_hash("a"), config_hash("b"));
    }

    #[test]
    fn suspended_means_zero_replicas() {
        // The replicas the reconcile builds the Deployment with (`status::replicas`), for a
        // suspended pipeline with parallelism 3, with and without an autoscaler's decision.
        let mut p = fixtures::pipeline();
        p.spec.parallelism = 3;
        p.spec.suspend = true;
        for autoscaled in [None, Some(2)] {
            let mut inputs = fixtures::inputs(&p);
            inputs.replicas = crate::pipeline::status::replicas(&p, false, autoscaled);
            let replicas = deployment(&inputs, "h").spec.unwrap().replicas;
            assert_eq!(replicas, Some(0), "suspended, autoscaled {autoscaled:?}");
        }
        // Resumed, the same pipeline runs its parallelism again.
        p.spec.suspend = false;
        let mut inputs = fixtures::inputs(&p);
        inputs.replicas = crate::pipeline::status::replicas(&p, false, None);
        assert_eq!(deployment(&inputs, "h").spec.unwrap().replicas, Some(3));
    }
}
