//! A container's environment: `envFrom`, `env` (`value` with `$(VAR)` expansion,
//! `valueFrom.fieldRef`, `configMapKeyRef`, `secretKeyRef`), resolved through the API each time
//! the container starts, as the real kubelet does; and Kubernetes' `$(VAR)` expansion of
//! commands and arguments.
//!
//! A missing ConfigMap, Secret or key that is not `optional` is an [`EnvError`]: the container
//! waits with reason `CreateContainerConfigError` and is tried again after its back-off.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::Api;

/// Why a container's environment could not be resolved.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EnvError {
    /// A ConfigMap or Secret the container needs does not exist.
    #[error("{kind} \"{name}\" not found")]
    SourceMissing { kind: &'static str, name: String },
    /// The key is not in the ConfigMap or Secret.
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    KeyMissing {
        kind: &'static str,
        namespace: String,
        name: String,
        key: String,
    },
    /// The field path of a `fieldRef` is not one the kubelet knows.
    #[error("unsupported fieldPath {0}")]
    UnsupportedField(String),
    /// Reading a ConfigMap or Secret failed.
    #[error("reading {kind} \"{name}\": {source}")]
    Read {
        kind: &'static str,
        name: String,
        source: Box<kube::Error>,
    },
}

/// Kubernetes' `$(VAR)` expansion: a defined `$(VAR)` becomes its value, an undefined one stays
/// as written, `$$` is a `$`.
pub(crate) fn expand(input: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let advance = match rest.as_bytes()[0] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match rest.find(')') {
                    Some(close) => {
                        let name = &rest[1..close];
                        match vars(name) {
                            Some(value) => out.push_str(&value),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        close + 1
                    }
                    None => {
                        out.push_str("$(");
                        1
                    }
                },
                _ => {
                    // An operator that starts no expression: keep it and the next character.
                    let c = rest.chars().next().map_or(1, char::len_utf8);
                    out.push('$');
                    out.push_str(&rest[..c]);
                    c
                }
            };
            cursor += advance + 1;
            checkpoint = cursor;
        } else {
            cursor += 1;
        }
    }
    out.push_str(&input[checkpoint.min(input.len())..]);
    out
}

/// The value of a `fieldRef` of `pod` (whose IP is `pod_ip`).
pub(crate) fn field_value(pod: &Pod, path: &str, pod_ip: &str) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let keyed = |prefix: &str, map: &Option<BTreeMap<String, String>>| {
        let key = path
            .strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")?;
        Some(
            map.as_ref()
                .and_then(|m| m.get(key))
                .cloned()
                .unwrap_or_default(),
        )
    };
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => service_account(pod).to_owned(),
        "status.podIP" | "status.podIPs" => pod_ip.to_owned(),
        "status.hostIP" | "status.hostIPs" => "127.0.0.1".to_owned(),
        _ => keyed("metadata.labels", &meta.labels)
            .or_else(|| keyed("metadata.annotations", &meta.annotations))
            .ok_or_else(|| EnvError::UnsupportedField(path.to_owned()))?,
    };
    Ok(value)
}

/// The pod's service account, `default` when unset.
pub(crate) fn service_account(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
}

/// Reads ConfigMaps and Secrets of one namespace, each once per resolution.
pub(crate) struct Sources {
    config_maps: Api<ConfigMap>,
    secrets: Api<Secret>,
    namespace: String,
    cache: BTreeMap<(bool, String), Option<BTreeMap<String, String>>>,
}

impl Sources {
    pub(crate) fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            config_maps: Api::namespaced(client.clone(), namespace),
            secrets: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            cache: BTreeMap::new(),
        }
    }

    /// The data of a ConfigMap (`secret` false) or Secret (decoded), `None` when it does not
    /// exist. Binary ConfigMap data and non-UTF-8 Secret values are read lossily.
    pub(crate) async fn data(
        &mut self,
        secret: bool,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, EnvError> {
        let key = (secret, name.to_owned());
        if let Some(hit) = self.cache.get(&key) {
            return Ok(hit.clone());
        }
        let kind = if secret { "secret" } else { "configmap" };
        let read_err = |source| EnvError::Read {
            kind,
            name: name.to_owned(),
            source: Box::new(source),
        };
        let data = if secret {
            self.secrets
                .get_opt(name)
                .await
                .map_err(read_err)?
                .map(|s| {
                    let mut out: BTreeMap<String, String> = s.string_data.unwrap_or_default();
                    for (k, v) in s.data.unwrap_or_default() {
                        out.insert(k, String::from_utf8_lossy(&v.0).into_owned());
                    }
                    out
                })
        } else {
            self.config_maps
                .get_opt(name)
                .await
                .map_err(read_err)?
                .map(|c| {
                    let mut out = c.data.unwrap_or_default();
                    for (k, v) in c.binary_data.unwrap_or_default() {
                        out.insert(k, String::from_utf8_lossy(&v.0).into_owned());
                    }
                    out
                })
        };
        self.cache.insert(key, data.clone());
        Ok(data)
    }

    async fn key(
        &mut self,
        secret: bool,
        name: &str,
        key: &str,
        optional: bool,
    ) -> Result<Option<String>, EnvError> {
        let kind = if secret { "secret" } else { "configmap" };
        let Some(data) = self.data(secret, name).await? else {
            return if optional {
                Ok(None)
            } else {
                Err(EnvError::SourceMissing {
                    kind,
                    name: name.to_owned(),
                })
            };
        };
        match data.get(key) {
            Some(v) => Ok(Some(v.clone())),
            None if optional => Ok(None),
            None => Err(EnvError::KeyMissing {
                kind: if secret { "Secret" } else { "ConfigMap" },
                namespace: self.namespace.clone(),
                name: name.to_owned(),
                key: key.to_owned(),
            }),
        }
    }
}

/// The environment the pod declares for `container`, in order (later entries override).
pub(crate) async fn resolve(
    sources: &mut Sources,
    pod: &Pod,
    container: &Container,
    pod_ip: &str,
) -> Result<Vec<(String, String)>, EnvError> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let set = |vars: &mut Vec<(String, String)>, k: String, v: String| {
        vars.retain(|(n, _)| *n != k);
        vars.push((k, v));
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (secret, name, optional) = match (&from.config_map_ref, &from.secret_ref) {
            (Some(c), _) => (false, c.name.clone(), c.optional.unwrap_or(false)),
            (None, Some(s)) => (true, s.name.clone(), s.optional.unwrap_or(false)),
            (None, None) => continue,
        };
        match sources.data(secret, &name).await? {
            Some(data) => {
                for (k, v) in data {
                    set(&mut vars, format!("{prefix}{k}"), v);
                }
            }
            None if optional => {}
            None => {
                return Err(EnvError::SourceMissing {
                    kind: if secret { "secret" } else { "configmap" },
                    name,
                });
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (_, Some(from)) => {
                if let Some(field) = &from.field_ref {
                    Some(field_value(pod, &field.field_path, pod_ip)?)
                } else if let Some(r) = &from.config_map_key_ref {
                    sources
                        .key(false, &r.name, &r.key, r.optional.unwrap_or(false))
                        .await?
                } else if let Some(r) = &from.secret_key_ref {
                    sources
                        .key(true, &r.name, &r.key, r.optional.unwrap_or(false))
                        .await?
                } else {
                    // resourceFieldRef: the local kubelet sets no resource limits.
                    tracing::warn!(var = %var.name, "resourceFieldRef is not supported; the variable is left unset");
                    None
                }
            }
            (Some(v), None) => {
                let defined = vars.clone();
                Some(expand(v, &|name| {
                    defined
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                }))
            }
            (None, None) => Some(String::new()),
        };
        if let Some(value) = value {
            set(&mut vars, var.name.clone(), value);
        }
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "POD_NAME" => Some("w-1".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expansion_follows_kubernetes_rules() {
        assert_eq!(expand("--id=$(POD_NAME)", &vars), "--id=w-1");
        assert_eq!(expand("$(POD_NAME)$(POD_NAME)", &vars), "w-1w-1");
        assert_eq!(expand("$(UNSET)", &vars), "$(UNSET)");
        assert_eq!(expand("$$(POD_NAME)", &vars), "$(POD_NAME)");
        assert_eq!(expand("a$$b", &vars), "a$b");
        assert_eq!(expand("$(POD_NAME", &vars), "$(POD_NAME");
        assert_eq!(expand("cost $5", &vars), "cost $5");
        assert_eq!(expand("end$", &vars), "end$");
        assert_eq!(expand("x$(EMPTY)y", &vars), "xy");
        assert_eq!(expand("ü$(POD_NAME)é", &vars), "üw-1é");
    }
}
