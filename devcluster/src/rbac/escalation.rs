//! Escalation prevention, as the RBAC storage of the API server does it on create and update:
//! a Role or ClusterRole is accepted when its author holds every rule it grants (in the role's
//! namespace, or cluster-wide for a ClusterRole) or may `escalate` it; a RoleBinding or
//! ClusterRoleBinding when its author holds every rule of the role it refers to (in the
//! binding's namespace) or may `bind` that role. Members of `system:masters` may do anything.

use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef};
use serde_json::Value;

use super::{Attributes, Decision, Lookup, MASTERS, Policy, UserInfo, aggregate, forbidden, rules};

const GROUP: &str = "rbac.authorization.k8s.io";

pub(super) fn may_grant(policy: &Policy, user: &UserInfo, object: &Value) -> Decision {
    if user.groups.iter().any(|g| g == MASTERS) {
        return Decision::Allow;
    }
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let cluster_scoped = kind.starts_with("Cluster");
    let namespace = if cluster_scoped {
        ""
    } else {
        object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let (resource, granted) = match kind {
        "Role" | "ClusterRole" => {
            let resource = if cluster_scoped {
                "clusterroles"
            } else {
                "roles"
            };
            let escalate = Attributes {
                verb: "escalate".into(),
                api_group: GROUP.into(),
                resource: resource.into(),
                subresource: String::new(),
                namespace: namespace.into(),
                name: name.into(),
            };
            if policy.authorize(user, &escalate) == Decision::Allow {
                return Decision::Allow;
            }
            let rules: Vec<PolicyRule> = object
                .get("rules")
                .cloned()
                .and_then(|r| serde_json::from_value(r).ok())
                .unwrap_or_default();
            (resource, rules)
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let resource = if cluster_scoped {
                "clusterrolebindings"
            } else {
                "rolebindings"
            };
            let Some(role_ref) = object
                .get("roleRef")
                .cloned()
                .and_then(|r| serde_json::from_value::<RoleRef>(r).ok())
            else {
                return Decision::Allow; // not a valid binding: validation refuses it
            };
            let role_resource = match role_ref.kind.as_str() {
                "ClusterRole" => Some("clusterroles"),
                "Role" => Some("roles"),
                _ => None,
            };
            if let Some(role_resource) = role_resource {
                let bind = Attributes {
                    verb: "bind".into(),
                    api_group: role_ref.api_group.clone(),
                    resource: role_resource.into(),
                    subresource: String::new(),
                    namespace: namespace.into(),
                    name: role_ref.name.clone(),
                };
                if policy.authorize(user, &bind) == Decision::Allow {
                    return Decision::Allow;
                }
            }
            match policy.role_ref_rules(&role_ref, namespace, Lookup::Registry) {
                Ok(rules) => (resource, rules.to_vec()),
                // The API server answers this one with the 404 of the missing role.
                Err(not_found) => return Decision::Deny(not_found),
            }
        }
        _ => return Decision::Allow,
    };
    match confirm_no_escalation(policy, user, namespace, &granted) {
        Ok(()) => Decision::Allow,
        Err(err) => Decision::Deny(forbidden(GROUP, resource, name, &err)),
    }
}

/// `ConfirmNoEscalation`: every rule in `granted` is covered by the rules `user` holds in
/// `namespace`; otherwise the server's message listing what is missing.
fn confirm_no_escalation(
    policy: &Policy,
    user: &UserInfo,
    namespace: &str,
    granted: &[PolicyRule],
) -> Result<(), String> {
    let mut owner = Vec::new();
    let mut errors = Vec::new();
    policy.visit_rules(user, namespace, Lookup::Registry, &mut errors, |rule| {
        owner.push(rule.clone());
        false
    });
    let missing = rules::uncovered(&owner, granted);
    if missing.is_empty() {
        return Ok(());
    }
    let mut descriptions: Vec<String> = rules::compact(missing)
        .iter()
        .map(rules::compact_string)
        .collect();
    descriptions.sort();
    descriptions.dedup();
    let mut msg = format!(
        "user {} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
        crate::admission::go_quote(&user.name),
        rules::go_string_list(&user.groups),
        descriptions.join("\n")
    );
    if !errors.is_empty() {
        msg.push_str(&format!("; resolution errors: [{}]", aggregate(&errors)));
    }
    Err(msg)
}
