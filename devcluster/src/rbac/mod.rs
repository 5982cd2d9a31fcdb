//! RBAC as the API server enforces it: a request is allowed when a RoleBinding in its namespace
//! or a ClusterRoleBinding grants the caller (user, group or service account) a rule that
//! matches its verb, API group, resource, subresource and name; `system:masters` may do
//! anything. Creating or updating a Role or ClusterRole, or a binding, is refused unless the
//! caller holds every permission it grants, or may `escalate` the role / `bind` the role
//! (escalation prevention).
//!
//! Pure code over a snapshot of the RBAC objects: no I/O, nothing to shut down. A refusal is
//! the message of the API server's 403, worded as it words it (see [`forbidden_status`]).
//! Non-resource URLs (`/healthz`, `/api`) are not covered: the API server decides those itself.

mod bootstrap;
mod escalation;
mod rules;

pub use bootstrap::bootstrap_objects;

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};

use crate::admission::go_quote;

/// Who makes a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    /// `system:serviceaccount:jetflow-system:jetflow`, `jetflow-admin`.
    pub name: String,
    /// `system:serviceaccounts`, `system:serviceaccounts:<ns>`, `system:authenticated`, `system:masters`.
    pub groups: Vec<String>,
}

/// What a request does, as RBAC sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// `""` for the core group.
    pub api_group: String,
    /// The plural resource, `configmaps`.
    pub resource: String,
    /// `status`, `scale`, `token`, or empty.
    pub subresource: String,
    /// Empty for cluster-scoped resources and for requests across all namespaces.
    pub namespace: String,
    /// Empty for lists, watches and creates.
    pub name: String,
}

/// The RBAC objects of the cluster, as read from the store at the time of the request.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Every Role.
    pub roles: Vec<Role>,
    /// Every ClusterRole.
    pub cluster_roles: Vec<ClusterRole>,
    /// Every RoleBinding.
    pub role_bindings: Vec<RoleBinding>,
    /// Every ClusterRoleBinding.
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
}

/// The answer for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Some binding grants it.
    Allow,
    /// Nothing grants it; the text is the API server's 403 message:
    /// `configmaps "x" is forbidden: User "system:serviceaccount:shop:w" cannot update resource "configmaps" in API group "" in the namespace "shop"`.
    Deny(String),
}

impl Policy {
    /// Whether `user` may do `attributes`.
    pub fn authorize(&self, user: &UserInfo, attributes: &Attributes) -> Decision {
        if user.groups.iter().any(|g| g == MASTERS) {
            return Decision::Allow;
        }
        let mut errors = Vec::new();
        let allowed = self.visit_rules(
            user,
            &attributes.namespace,
            Lookup::Lister,
            &mut errors,
            |rule| rules::allows(rule, attributes),
        );
        if allowed {
            return Decision::Allow;
        }
        let reason = if errors.is_empty() {
            String::new()
        } else {
            format!("RBAC: {}", aggregate(&errors))
        };
        Decision::Deny(forbidden_message(user, attributes, &reason))
    }

    /// Whether `user` may create or update the RBAC object `object` (a Role, ClusterRole,
    /// RoleBinding or ClusterRoleBinding as JSON): refused when it would grant a permission
    /// `user` does not hold itself (and holds no `escalate` / `bind` on it).
    pub fn may_grant(&self, user: &UserInfo, object: &serde_json::Value) -> Decision {
        escalation::may_grant(self, user, object)
    }

    /// Calls `visit` with every rule granted to `user` in `namespace` (ClusterRoleBindings, then
    /// the RoleBindings of the namespace), until it returns true; collects the errors of
    /// bindings whose role is missing. Returns whether `visit` returned true.
    fn visit_rules(
        &self,
        user: &UserInfo,
        namespace: &str,
        lookup: Lookup,
        errors: &mut Vec<String>,
        mut visit: impl FnMut(&PolicyRule) -> bool,
    ) -> bool {
        for binding in &self.cluster_role_bindings {
            if !applies(user, binding.subjects.as_deref().unwrap_or_default(), "") {
                continue;
            }
            match self.role_ref_rules(&binding.role_ref, "", lookup) {
                Ok(rules) => {
                    if rules.iter().any(&mut visit) {
                        return true;
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if namespace.is_empty() {
            return false;
        }
        for binding in self
            .role_bindings
            .iter()
            .filter(|b| b.metadata.namespace.as_deref() == Some(namespace))
        {
            if !applies(
                user,
                binding.subjects.as_deref().unwrap_or_default(),
                namespace,
            ) {
                continue;
            }
            match self.role_ref_rules(&binding.role_ref, namespace, lookup) {
                Ok(rules) => {
                    if rules.iter().any(&mut visit) {
                        return true;
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        false
    }

    /// The rules of the role a binding refers to (`GetRoleReferenceRules`).
    fn role_ref_rules(
        &self,
        role_ref: &RoleRef,
        namespace: &str,
        lookup: Lookup,
    ) -> Result<&[PolicyRule], String> {
        let not_found = |resource: &str| {
            let resource = match lookup {
                Lookup::Lister => resource.to_owned(),
                Lookup::Registry => format!("{resource}s"),
            };
            format!(
                "{resource}.rbac.authorization.k8s.io {} not found",
                go_quote(&role_ref.name)
            )
        };
        match role_ref.kind.as_str() {
            "Role" => self
                .roles
                .iter()
                .find(|r| {
                    r.metadata.namespace.as_deref() == Some(namespace)
                        && r.metadata.name.as_deref() == Some(&role_ref.name)
                })
                .map(|r| r.rules.as_deref().unwrap_or_default())
                .ok_or_else(|| not_found("role")),
            "ClusterRole" => self
                .cluster_roles
                .iter()
                .find(|r| r.metadata.name.as_deref() == Some(&role_ref.name))
                .map(|r| r.rules.as_deref().unwrap_or_default())
                .ok_or_else(|| not_found("clusterrole")),
            other => Err(format!(
                "unsupported role reference kind: {}",
                go_quote(other)
            )),
        }
    }
}

/// The group whose members may do anything (`system:masters`).
pub const MASTERS: &str = "system:masters";

/// How a missing role is named: the authorizer reads roles through listers
/// (`role.rbac.authorization.k8s.io "x" not found`), escalation checks through the registry
/// (`roles.rbac.authorization.k8s.io "x" not found`).
#[derive(Clone, Copy, Debug)]
enum Lookup {
    Lister,
    Registry,
}

/// Whether one of the binding's subjects is `user` (`appliesToUser`); a ServiceAccount
/// subject without a namespace means the binding's namespace.
fn applies(user: &UserInfo, subjects: &[Subject], namespace: &str) -> bool {
    subjects.iter().any(|s| match s.kind.as_str() {
        "User" => user.name == s.name,
        "Group" => user.groups.contains(&s.name),
        "ServiceAccount" => {
            let ns = s
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(namespace);
            !ns.is_empty() && user.name == format!("system:serviceaccount:{ns}:{}", s.name)
        }
        _ => false,
    })
}

/// `utilerrors.NewAggregate(errs).Error()`: one message bare, several deduplicated in brackets.
fn aggregate(errors: &[String]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for e in errors {
        if !seen.contains(&e.as_str()) {
            seen.push(e);
        }
    }
    if seen.len() == 1 {
        seen[0].to_owned()
    } else {
        format!("[{}]", seen.join(", "))
    }
}

/// The resource as `schema.GroupResource` prints it: `configmaps`, `pipelines.jetflow.io`.
fn group_resource(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    }
}

/// `apierrors.NewForbidden(groupResource, name, err).Error()`.
fn forbidden(group: &str, resource: &str, name: &str, err: &str) -> String {
    if group.is_empty() && resource.is_empty() {
        format!("forbidden: {err}")
    } else if name.is_empty() {
        format!("{} is forbidden: {err}", group_resource(group, resource))
    } else {
        format!(
            "{} {} is forbidden: {err}",
            group_resource(group, resource),
            go_quote(name)
        )
    }
}

/// The API server's 403 message for a request RBAC did not allow (`ForbiddenStatusError`).
fn forbidden_message(user: &UserInfo, a: &Attributes, reason: &str) -> String {
    let resource = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_owned()
    } else {
        format!("in the namespace {}", go_quote(&a.namespace))
    };
    let msg = format!(
        "User {} cannot {} resource {} in API group {} {scope}",
        go_quote(&user.name),
        a.verb,
        go_quote(&resource),
        go_quote(&a.api_group)
    )
    .replace('&', "&amp;")
    .replace('<', "&lt;")
    .replace('>', "&gt;");
    let err = if reason.is_empty() {
        msg
    } else {
        format!("{msg}: {reason}")
    };
    forbidden(&a.api_group, &a.resource, &a.name, &err)
}

/// The `Status` of a 403 for `attributes` refused with `message` (a [`Decision::Deny`] text),
/// as the API server sends it: reason `Forbidden`, details naming the resource and object.
pub fn forbidden_status(attributes: &Attributes, message: &str) -> serde_json::Value {
    let mut details = serde_json::Map::new();
    for (key, value) in [
        ("name", &attributes.name),
        ("group", &attributes.api_group),
        ("kind", &attributes.resource),
    ] {
        if !value.is_empty() {
            details.insert(key.into(), serde_json::json!(value));
        }
    }
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "Forbidden",
        "details": details,
        "code": 403,
    })
}
