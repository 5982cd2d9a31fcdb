//! Authentication (bearer tokens: the admin's, and those issued by TokenRequest) and
//! authorization (the RBAC policy built from the stored Roles, ClusterRoles and bindings at
//! the time of each request).

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::state::{State, random_token};
use super::status::ApiError;
use crate::rbac::{Attributes, Decision, Policy, UserInfo};

/// The admin user's name.
pub const ADMIN_USER: &str = "jetflow-admin";

/// The admin identity.
pub fn admin() -> UserInfo {
    UserInfo {
        name: ADMIN_USER.into(),
        groups: vec!["system:masters".into(), "system:authenticated".into()],
    }
}

/// The identity of a ServiceAccount.
pub fn service_account(namespace: &str, name: &str) -> UserInfo {
    UserInfo {
        name: format!("system:serviceaccount:{namespace}:{name}"),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".into(),
        ],
    }
}

/// Whom the `Authorization` header names; 401 when nobody.
pub fn authenticate(state: &State, header: Option<&str>) -> Result<UserInfo, ApiError> {
    let token = header
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(ApiError::unauthorized)?;
    state.user_for(token).ok_or_else(ApiError::unauthorized)
}

/// Issues a token for a ServiceAccount.
pub fn issue_token(state: &State, namespace: &str, name: &str) -> String {
    let token = random_token();
    state.add_token(token.clone(), service_account(namespace, name));
    token
}

fn objects<T: DeserializeOwned>(state: &State, plural: &str) -> Vec<T> {
    let (items, _) = state.store.list("rbac.authorization.k8s.io", plural, None);
    items
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect()
}

/// The RBAC policy as stored now.
pub fn policy(state: &State) -> Policy {
    Policy {
        roles: objects(state, "roles"),
        cluster_roles: objects(state, "clusterroles"),
        role_bindings: objects(state, "rolebindings"),
        cluster_role_bindings: objects(state, "clusterrolebindings"),
    }
}

fn is_master(user: &UserInfo) -> bool {
    user.groups.iter().any(|g| g == "system:masters")
}

/// Authorizes a request; 403 with the authorizer's message when denied.
pub fn authorize(state: &State, user: &UserInfo, attributes: &Attributes) -> Result<(), ApiError> {
    if is_master(user) {
        return Ok(());
    }
    match policy(state).authorize(user, attributes) {
        Decision::Allow => Ok(()),
        Decision::Deny(message) => Err(ApiError::forbidden(message)),
    }
}

/// For writes of RBAC objects: refuses grants the user does not hold.
pub fn may_grant(state: &State, user: &UserInfo, object: &Value) -> Result<(), ApiError> {
    if is_master(user) {
        return Ok(());
    }
    match policy(state).may_grant(user, object) {
        Decision::Allow => Ok(()),
        Decision::Deny(message) => Err(ApiError::forbidden(message)),
    }
}
