//! The workers' identity and permissions: a ServiceAccount, and a Role that lets the workers
//! read their configuration and assignment ConfigMaps and read and write their checkpoint
//! ConfigMap, each by name. `create` cannot be limited by name in RBAC, so the workers get none:
//! the operator creates the checkpoint ConfigMap itself.

use jetflow_crds::names;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};

use super::{Inputs, owned_meta};

/// The worker ServiceAccount.
pub fn service_account(inputs: &Inputs<'_>) -> ServiceAccount {
    ServiceAccount {
        metadata: owned_meta(inputs, names::workers(inputs.name)),
        ..Default::default()
    }
}

/// The worker Role.
pub fn role(inputs: &Inputs<'_>) -> Role {
    let rule = |names: Vec<String>, verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["configmaps".into()]),
        resource_names: Some(names),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..Default::default()
    };
    Role {
        metadata: owned_meta(inputs, names::workers(inputs.name)),
        rules: Some(vec![
            rule(
                vec![
                    names::config_map(inputs.name),
                    names::assignment_config_map(inputs.name),
                ],
                &["get", "list", "watch"],
            ),
            rule(
                vec![names::checkpoint_config_map(inputs.name)],
                &["get", "list", "watch", "update", "patch"],
            ),
        ]),
    }
}

/// The RoleBinding of the worker Role to the worker ServiceAccount.
pub fn role_binding(inputs: &Inputs<'_>) -> RoleBinding {
    RoleBinding {
        metadata: owned_meta(inputs, names::workers(inputs.name)),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: names::workers(inputs.name),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: names::workers(inputs.name),
            namespace: Some(inputs.namespace.to_owned()),
            ..Default::default()
        }]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::build::golden;
    use crate::pipeline::fixtures;

    #[test]
    fn rbac_golden() {
        let p = fixtures::pipeline();
        let inputs = fixtures::inputs(&p);
        let yaml = [
            serde_yaml_ng::to_string(&service_account(&inputs)).unwrap(),
            serde_yaml_ng::to_string(&role(&inputs)).unwrap(),
            serde_yaml_ng::to_string(&role_binding(&inputs)).unwrap(),
        ]
        .join("---\n");
        golden::check("rbac.yaml", &yaml);
    }

    #[test]
    fn workers_can_write_only_their_checkpoint_and_create_nothing() {
        let p = fixtures::pipeline();
        let role = role(&fixtures::inputs(&p));
        for rule in role.rules.unwrap() {
            assert!(!rule.verbs.contains(&"create".to_owned()));
            assert!(!rule.resource_names.as_ref().unwrap().is_empty());
            if rule.verbs.contains(&"update".to_owned()) {
                assert_eq!(rule.resource_names.unwrap(), vec!["orders-copy-checkpoint"]);
            }
        }
    }
}
