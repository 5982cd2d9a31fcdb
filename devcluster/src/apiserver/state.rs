//! What every request handler shares: the store, the resources served, admission, the tokens
//! issued, and where the kubelet keeps pod logs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::resources::{Registry, ResourceInfo};
use super::store::Store;
use crate::admission::CrdAdmission;
use crate::rbac::UserInfo;

/// Shared server state.
pub struct State {
    /// Every object.
    pub store: Store,
    /// Served resources.
    pub registry: RwLock<Registry>,
    /// CRD admission.
    pub admission: RwLock<CrdAdmission>,
    /// Bearer tokens and whom they identify.
    pub tokens: RwLock<HashMap<String, UserInfo>>,
    /// The kubelet's folder (pod logs).
    pub kubelet_root: Option<PathBuf>,
    /// Cancelled on shutdown: ends watches and background loops.
    pub shutdown: CancellationToken,
}

/// The state, shared.
pub type Shared = Arc<State>;

impl State {
    /// The resource at `group`/`version`/`plural`.
    pub fn resource(&self, group: &str, version: &str, plural: &str) -> Option<ResourceInfo> {
        self.registry
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(group, version, plural)
            .cloned()
    }

    /// A snapshot of the served resources.
    pub fn registry(&self) -> Registry {
        self.registry
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Serves the resource a CRD declares, and admits its objects.
    pub fn register_crd(&self, crd: &Value) {
        if let Some(info) = ResourceInfo::from_crd(crd) {
            self.registry
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .add(info);
            self.admission
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .register(crd.clone());
        }
    }

    /// Stops serving the resource of a deleted CRD.
    pub fn unregister_crd(&self, crd: &Value) {
        if let Some(info) = ResourceInfo::from_crd(crd) {
            self.registry
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&info.group, &info.plural);
        }
    }

    /// Whom a bearer token identifies.
    pub fn user_for(&self, token: &str) -> Option<UserInfo> {
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }

    /// Remembers a token.
    pub fn add_token(&self, token: String, user: UserInfo) {
        self.tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token, user);
    }
}

/// A random token (two v4 UUIDs, hex).
pub fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}
