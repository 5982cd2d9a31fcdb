//! RBAC as the API server enforces it: a request is allowed when a RoleBinding in its namespace
//! or a ClusterRoleBinding grants the caller (user, group or service account) a rule that
//! matches its verb, API group, resource, subresource and name; `system:masters` may do
//! anything. Creating or updating a Role or ClusterRole, or a binding, is refused unless the
//! caller holds every permission it grants (escalation prevention).
//!
//! (interface stub: the implementation replaces the body, keeping the signatures)

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};

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
    pub fn authorize(&self, _user: &UserInfo, _attributes: &Attributes) -> Decision {
        Decision::Allow
    }

    /// Whether `user` may create or update the RBAC object `object` (a Role, ClusterRole,
    /// RoleBinding or ClusterRoleBinding as JSON): refused when it would grant a permission
    /// `user` does not hold itself (and holds no `escalate` / `bind` on it).
    pub fn may_grant(&self, _user: &UserInfo, _object: &serde_json::Value) -> Decision {
        Decision::Allow
    }
}
