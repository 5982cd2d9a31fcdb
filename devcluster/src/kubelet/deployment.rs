//! The Deployment controller: keeps `spec.replicas` pods of each Deployment (all namespaces)
//! and its status current.
//!
//! Pods are owned by their Deployment directly (no ReplicaSets): labels of the template plus
//! `pod-template-hash` (a hash of the template), name `<deployment>-<hash>-<5 random>`,
//! `ownerReferences` to the Deployment (controller, blockOwnerDeletion), `nodeName: local`.
//! A changed template rolls out like `RollingUpdate` (maxSurge, default 25% rounded up;
//! maxUnavailable, default 25% rounded down; both 0 means maxUnavailable 1): a new pod is
//! created within the surge, an old pod is deleted once enough pods are ready; or, with
//! `Recreate`, every old pod goes before a new one is created. Scaling down deletes not-ready
//! pods first, then the newest. Pods of a Deployment that no longer exists are deleted.
//! `minReadySeconds`, `paused` and `revisionHistoryLimit` are ignored.
//!
//! Status (through the status subresource, only when it changes): observedGeneration,
//! replicas, updatedReplicas, readyReplicas, availableReplicas, unavailableReplicas and the
//! conditions `Available` and `Progressing` (with `ProgressDeadlineExceeded` after
//! `progressDeadlineSeconds` without progress), as `kubectl rollout status` reads them.
//! Failures of the API are logged; the next resync tries again.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};

use super::NODE_NAME;

/// The label that tells the pods of one template apart.
pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// The alphabet of Kubernetes' generated names (no vowels, no look-alikes).
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// The `pod-template-hash` of `template`.
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let text = serde_json::to_string(template).unwrap_or_default();
    fnv1a(text.as_bytes())
        .to_string()
        .bytes()
        .map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char)
        .collect()
}

fn random_suffix() -> String {
    (0..5)
        .map(|_| ALPHANUMS[fastrand::usize(..ALPHANUMS.len())] as char)
        .collect()
}

/// `value` of `total`: an int, or a percentage rounded up (`up`) or down.
fn scaled(value: Option<&IntOrString>, total: i32, default_percent: i32, up: bool) -> i32 {
    let percent = |p: i32| {
        let x = i64::from(p) * i64::from(total);
        (if up { (x + 99) / 100 } else { x / 100 }) as i32
    };
    match value {
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => s
            .trim_end_matches('%')
            .parse()
            .map(percent)
            .unwrap_or_else(|_| percent(default_percent)),
        None => percent(default_percent),
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn created(pod: &Pod) -> Option<jiff::Timestamp> {
    pod.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// What one pass decides for one Deployment.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Plan {
    /// How many pods of the current template to create.
    pub(crate) create: usize,
    /// Pods to delete, by name.
    pub(crate) delete: Vec<String>,
}

/// Orders `pods` for deletion: not ready first, then newest first.
fn deletion_order(pods: &mut [&Pod]) {
    pods.sort_by(|a, b| {
        is_ready(a)
            .cmp(&is_ready(b))
            .then_with(|| created(b).cmp(&created(a)))
            .then_with(|| b.metadata.name.cmp(&a.metadata.name))
    });
}

fn name_of(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// The plan for `deployment` whose live (not terminating) pods are `pods`; `terminating`
/// counts its pods being deleted.
pub(crate) fn plan(deployment: &Deployment, hash: &str, pods: &[&Pod], terminating: usize) -> Plan {
    let spec = deployment.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1).max(0) as usize;
    let is_new = |p: &&&Pod| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(TEMPLATE_HASH_LABEL))
            .map(String::as_str)
            == Some(hash)
    };
    let mut new: Vec<&Pod> = pods.iter().filter(is_new).copied().collect();
    let mut old: Vec<&Pod> = pods.iter().filter(|p| !is_new(p)).copied().collect();
    let mut plan = Plan::default();
    let strategy = spec.strategy.unwrap_or_default();
    if strategy.type_.as_deref() == Some("Recreate") {
        if !old.is_empty() {
            plan.delete = old.iter().map(|p| name_of(p)).collect();
        } else if terminating == 0 && new.len() < replicas {
            plan.create = replicas - new.len();
        } else if new.len() > replicas {
            deletion_order(&mut new);
            plan.delete = new[..new.len() - replicas]
                .iter()
                .map(|p| name_of(p))
                .collect();
        }
        return plan;
    }
    if old.is_empty() {
        if new.len() < replicas {
            plan.create = replicas - new.len();
        } else if new.len() > replicas {
            deletion_order(&mut new);
            plan.delete = new[..new.len() - replicas]
                .iter()
                .map(|p| name_of(p))
                .collect();
        }
        return plan;
    }
    let rolling = strategy.rolling_update.unwrap_or_default();
    let r = replicas as i32;
    let surge = scaled(rolling.max_surge.as_ref(), r, 25, true).max(0);
    let mut unavailable = scaled(rolling.max_unavailable.as_ref(), r, 25, false).max(0);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    let total = (new.len() + old.len()) as i32;
    // Scale the new pods up within the surge.
    let room = (r + surge - total).max(0);
    plan.create = room.min((r - new.len() as i32).max(0)) as usize;
    // Scale old pods down while enough pods stay available.
    let min_available = r - unavailable;
    let new_unavailable = new.iter().filter(|p| !is_ready(p)).count() as i32;
    let mut budget = total - min_available - new_unavailable;
    deletion_order(&mut old);
    let mut available = pods.iter().filter(|p| is_ready(p)).count() as i32;
    for pod in old {
        if budget <= 0 {
            break;
        }
        if is_ready(pod) {
            if available - 1 < min_available {
                break;
            }
            available -= 1;
        }
        plan.delete.push(name_of(pod));
        budget -= 1;
    }
    plan
}

fn owned_by(pod: &Pod) -> Option<&OwnerReference> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind == "Deployment")
}

/// A new pod of `deployment` for its template of hash `hash`.
pub(crate) fn new_pod(deployment: &Deployment, hash: &str) -> Pod {
    let spec = deployment.spec.clone().unwrap_or_default();
    let template = spec.template;
    let meta = template.metadata.unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(TEMPLATE_HASH_LABEL.to_owned(), hash.to_owned());
    let name = deployment.metadata.name.clone().unwrap_or_default();
    let mut pod_spec = template.spec.unwrap_or_default();
    pod_spec.node_name = Some(NODE_NAME.to_owned());
    if pod_spec
        .service_account_name
        .as_deref()
        .is_none_or(str::is_empty)
    {
        pod_spec.service_account_name = Some("default".into());
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{hash}-{}", random_suffix())),
            namespace: deployment.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: meta.annotations,
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name,
                uid: deployment.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(pod_spec),
        status: None,
    }
}

fn condition(
    previous: Option<&DeploymentStatus>,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    progressed: bool,
) -> DeploymentCondition {
    let status = if status { "True" } else { "False" };
    let now = Time(jiff::Timestamp::now());
    let old = previous
        .and_then(|p| p.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == type_));
    let same_status = old.filter(|c| c.status == status);
    let unchanged = old.filter(|c| {
        c.status == status
            && c.reason.as_deref() == Some(reason)
            && c.message.as_deref() == Some(&message)
    });
    DeploymentCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message),
        last_transition_time: same_status
            .and_then(|c| c.last_transition_time.clone())
            .or_else(|| Some(now.clone())),
        last_update_time: match unchanged {
            Some(c) if !progressed => c.last_update_time.clone(),
            _ => Some(now),
        },
    }
}

/// The status of `deployment` with live pods `pods` (of which `new` have the current
/// template).
pub(crate) fn status(deployment: &Deployment, hash: &str, pods: &[&Pod]) -> DeploymentStatus {
    let spec = deployment.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let previous = deployment.status.as_ref();
    let rs_name = format!(
        "{}-{hash}",
        deployment.metadata.name.as_deref().unwrap_or_default()
    );
    let count = |f: &dyn Fn(&Pod) -> bool| pods.iter().filter(|p| f(p)).count() as i32;
    let is_new = |p: &Pod| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(TEMPLATE_HASH_LABEL))
            .map(String::as_str)
            == Some(hash)
    };
    let total = pods.len() as i32;
    let updated = count(&is_new);
    let ready = count(&is_ready);
    let available = ready;
    let rolling = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let max_unavailable =
        if spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate") {
            0
        } else {
            scaled(
                rolling.and_then(|r| r.max_unavailable.as_ref()),
                replicas,
                25,
                false,
            )
        };
    let has_minimum = available >= replicas - max_unavailable;
    let complete = updated == replicas && total == replicas && available == replicas;
    let progressed = previous.is_none_or(|p| {
        p.updated_replicas.unwrap_or(0) != updated
            || p.ready_replicas.unwrap_or(0) != ready
            || p.available_replicas.unwrap_or(0) != available
            || p.replicas.unwrap_or(0) != total
    });
    let available_condition = if has_minimum {
        condition(
            previous,
            "Available",
            true,
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            false,
        )
    } else {
        condition(
            previous,
            "Available",
            false,
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            false,
        )
    };
    let mut progressing = if complete {
        condition(
            previous,
            "Progressing",
            true,
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
            false,
        )
    } else {
        condition(
            previous,
            "Progressing",
            true,
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{rs_name}\" is progressing."),
            progressed,
        )
    };
    let deadline = i64::from(spec.progress_deadline_seconds.unwrap_or(600));
    let stalled = !complete
        && progressing
            .last_update_time
            .as_ref()
            .is_some_and(|t| jiff::Timestamp::now().duration_since(t.0).as_secs() > deadline);
    if stalled {
        progressing = condition(
            previous,
            "Progressing",
            false,
            "ProgressDeadlineExceeded",
            format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
            false,
        );
    }
    DeploymentStatus {
        observed_generation: deployment.metadata.generation,
        replicas: Some(total),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((total.max(replicas) - available).max(0)),
        conditions: Some(vec![available_condition, progressing]),
        ..Default::default()
    }
}

/// Compares two statuses ignoring condition times.
fn same_status(a: &DeploymentStatus, b: &DeploymentStatus) -> bool {
    let strip = |s: &DeploymentStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_update_time = None;
            c.last_transition_time = None;
        }
        s
    };
    strip(a) == strip(b)
}

/// One pass over every Deployment and the pods of the cluster.
pub(crate) async fn sync(client: &kube::Client, deployments: &[Deployment], pods: &[Pod]) {
    let mut by_owner: HashMap<&str, Vec<&Pod>> = HashMap::new();
    let mut terminating: HashMap<&str, usize> = HashMap::new();
    for pod in pods {
        if let Some(owner) = owned_by(pod) {
            if pod.metadata.deletion_timestamp.is_some() {
                *terminating.entry(owner.uid.as_str()).or_default() += 1;
            } else {
                by_owner.entry(owner.uid.as_str()).or_default().push(pod);
            }
        }
    }
    let live: BTreeMap<&str, &Deployment> = deployments
        .iter()
        .filter_map(|d| Some((d.metadata.uid.as_deref()?, d)))
        .collect();
    for deployment in deployments {
        if deployment.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(uid) = deployment.metadata.uid.as_deref() else {
            continue;
        };
        let namespace = deployment
            .metadata
            .namespace
            .as_deref()
            .unwrap_or("default");
        let name = deployment.metadata.name.as_deref().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let owned = by_owner.get(uid).cloned().unwrap_or_default();
        let hash = template_hash(&deployment.spec.clone().unwrap_or_default().template);
        let plan = plan(
            deployment,
            &hash,
            &owned,
            terminating.get(uid).copied().unwrap_or(0),
        );
        for _ in 0..plan.create {
            let pod = new_pod(deployment, &hash);
            match api.create(&PostParams::default(), &pod).await {
                Ok(p) => {
                    tracing::info!(deployment = %name, %namespace, pod = ?p.metadata.name, "pod created")
                }
                Err(e) => {
                    tracing::warn!(deployment = %name, %namespace, error = %e, "creating a pod failed")
                }
            }
        }
        for pod in &plan.delete {
            match api.delete(pod, &DeleteParams::default()).await {
                Ok(_) => tracing::info!(deployment = %name, %namespace, %pod, "pod deleted"),
                Err(e) => {
                    tracing::warn!(deployment = %name, %namespace, %pod, error = %e, "deleting a pod failed")
                }
            }
        }
        let remaining: Vec<&Pod> = owned
            .iter()
            .filter(|p| !plan.delete.contains(&name_of(p)))
            .copied()
            .collect();
        let status = status(deployment, &hash, &remaining);
        if deployment
            .status
            .as_ref()
            .is_some_and(|old| same_status(old, &status))
        {
            continue;
        }
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
        let patch = serde_json::json!({ "status": status });
        if let Err(e) = deployments
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(deployment = %name, %namespace, error = %e, "writing deployment status failed");
        }
    }
    // Pods whose Deployment is gone (the garbage collector does this too).
    for (owner, owned) in &by_owner {
        if live.contains_key(owner) {
            continue;
        }
        for pod in owned {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
            let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
            let name = name_of(pod);
            if let Err(e) = api.delete(&name, &DeleteParams::default()).await {
                tracing::debug!(pod = %name, %namespace, error = %e, "deleting an orphaned pod failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};

    fn deployment(replicas: i32) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("d-1".into()),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn pod(name: &str, hash: &str, ready: bool, age: i64) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([(TEMPLATE_HASH_LABEL.into(), hash.into())])),
                creation_timestamp: Some(Time(
                    jiff::Timestamp::from_second(1_000_000 - age).unwrap(),
                )),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn scaling_creates_missing_pods_and_deletes_unready_then_newest() {
        let d = deployment(3);
        assert_eq!(plan(&d, "h", &[], 0).create, 3);
        let pods = [
            pod("a", "h", true, 30),
            pod("b", "h", true, 10),
            pod("c", "h", false, 40),
            pod("e", "h", true, 20),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let d1 = deployment(2);
        assert_eq!(plan(&d1, "h", &refs, 0).delete, vec!["c", "b"]);
    }

    #[test]
    fn a_rollout_replaces_one_pod_at_a_time() {
        let d = deployment(2);
        let old = [pod("o1", "old", true, 20), pod("o2", "old", true, 10)];
        let refs: Vec<&Pod> = old.iter().collect();
        // Surge 1, unavailable 0: one new pod, no old one deleted yet.
        assert_eq!(
            plan(&d, "new", &refs, 0),
            Plan {
                create: 1,
                delete: vec![]
            }
        );
        let with_new = [old[0].clone(), old[1].clone(), pod("n1", "new", false, 0)];
        let refs: Vec<&Pod> = with_new.iter().collect();
        assert_eq!(
            plan(&d, "new", &refs, 0),
            Plan::default(),
            "waits for the new pod"
        );
        let ready_new = [old[0].clone(), old[1].clone(), pod("n1", "new", true, 0)];
        let refs: Vec<&Pod> = ready_new.iter().collect();
        assert_eq!(
            plan(&d, "new", &refs, 0),
            Plan {
                create: 0,
                delete: vec!["o2".into()]
            }
        );
    }

    #[test]
    fn recreate_deletes_every_old_pod_before_creating_new_ones() {
        let mut d = deployment(2);
        d.spec.as_mut().unwrap().strategy = Some(k8s_openapi::api::apps::v1::DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        });
        let old = [pod("o1", "old", true, 20), pod("o2", "old", true, 10)];
        let refs: Vec<&Pod> = old.iter().collect();
        let first = plan(&d, "new", &refs, 0);
        assert_eq!((first.create, first.delete.len()), (0, 2));
        assert_eq!(
            plan(&d, "new", &[], 2),
            Plan::default(),
            "waits for the old pods to go"
        );
        assert_eq!(plan(&d, "new", &[], 0).create, 2);
    }

    #[test]
    fn the_template_hash_is_stable_and_follows_the_template() {
        let a = PodTemplateSpec::default();
        let b = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("x".into(), "y".into())])),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(template_hash(&a), template_hash(&a));
        assert_ne!(template_hash(&a), template_hash(&b));
        assert!(template_hash(&a).bytes().all(|c| ALPHANUMS.contains(&c)));
    }
}
