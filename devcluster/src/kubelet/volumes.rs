//! A pod's volumes, materialized under `<pod dir>/volumes/<volume>/`, and its kubeconfig.
//!
//! - `configMap` and `secret`: every key as a file (or the `items` mapping), `defaultMode` and
//!   per-item `mode`, `optional`; `downwardAPI` (`fieldRef` items) and `projected` (configMap,
//!   secret, downwardAPI and serviceAccountToken sources) likewise; `emptyDir` (and any kind the
//!   local kubelet does not know) is an empty folder; `hostPath` is the host's own path.
//! - Files are replaced atomically as the real kubelet does: the content goes into a fresh
//!   `..<stamp>` folder, the `..data` symlink is swapped to it with a rename, and each top-level
//!   name is a symlink through `..data`; a reader sees the old set of files or the new one.
//!   The pod worker calls [`VolumeSet::sync`] periodically, so a changed ConfigMap or Secret
//!   reaches a running container within about a second.
//! - A process cannot have a mount namespace of its own here, so a container sees its volumes
//!   at host paths: [`MountMap::rewrite`] turns every argument, environment value and working
//!   directory that starts with a `mountPath` (longest match, at a path boundary; also the value
//!   of a `--flag=/path` argument) into the volume's host folder (plus `subPath`). A path that is
//!   a parent of mount paths (`--secrets-dir /etc/jetflow/secrets` with a Secret mounted at
//!   `/etc/jetflow/secrets/nats`) becomes the same path under `<pod dir>/rootfs/<container>/`,
//!   a tree of folders with a symlink at each mount path ([`MountMap::link`]).
//!
//! A missing ConfigMap or Secret that is not `optional` fails the first sync ([`VolumeError`]):
//! the pod stays `ContainerCreating` and is tried again; a failed refresh keeps the old files.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Container, DownwardAPIVolumeFile, KeyToPath, Pod, Volume};

use super::env::{EnvError, Sources, field_value};

/// Why a volume or the kubeconfig could not be written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum VolumeError {
    /// A ConfigMap or Secret the volume needs could not be read.
    #[error("volume {volume}: {source}")]
    Source {
        volume: String,
        #[source]
        source: EnvError,
    },
    /// A file of the volume could not be written.
    #[error("volume {volume}: writing {path}: {source}")]
    Write {
        volume: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The pod asks for a service account token but none could be obtained.
    #[error("volume {volume}: no service account token")]
    NoToken { volume: String },
}

/// One file of a volume: content and mode.
type Files = BTreeMap<String, (Vec<u8>, u32)>;

/// The volumes of one pod and what was last written into each.
pub(crate) struct VolumeSet {
    dir: PathBuf,
    written: BTreeMap<String, Files>,
}

/// The folder that holds a pod's volume `name`.
pub(crate) fn volume_dir(pod_dir: &Path, volume: &Volume) -> PathBuf {
    match &volume.host_path {
        Some(host) => PathBuf::from(&host.path),
        None => pod_dir.join("volumes").join(&volume.name),
    }
}

impl VolumeSet {
    pub(crate) fn new(pod_dir: &Path) -> Self {
        Self {
            dir: pod_dir.to_owned(),
            written: BTreeMap::new(),
        }
    }

    /// Writes every volume of `pod` whose content changed since the last sync.
    pub(crate) async fn sync(
        &mut self,
        sources: &mut Sources,
        pod: &Pod,
        pod_ip: &str,
        token: Option<&str>,
    ) -> Result<(), VolumeError> {
        let volumes = pod.spec.as_ref().and_then(|s| s.volumes.clone());
        for volume in volumes.iter().flatten() {
            let dir = volume_dir(&self.dir, volume);
            let write_err = |path: &Path, source| VolumeError::Write {
                volume: volume.name.clone(),
                path: path.to_owned(),
                source,
            };
            if volume.host_path.is_some() {
                continue;
            }
            let Some(files) = desired(sources, pod, volume, pod_ip, token).await? else {
                tokio::fs::create_dir_all(&dir)
                    .await
                    .map_err(|e| write_err(&dir, e))?;
                continue;
            };
            if self.written.get(&volume.name) == Some(&files) {
                continue;
            }
            let target = dir.clone();
            let content = files.clone();
            tokio::task::spawn_blocking(move || write_atomic(&target, &content))
                .await
                .map_err(|e| write_err(&dir, io::Error::other(e)))?
                .map_err(|e| write_err(&dir, e))?;
            self.written.insert(volume.name.clone(), files);
        }
        Ok(())
    }
}

fn mode_of(mode: Option<i32>, default: Option<i32>) -> u32 {
    mode.or(default).unwrap_or(0o644) as u32 & 0o777
}

fn keyed_files(
    files: &mut Files,
    data: &BTreeMap<String, String>,
    items: &Option<Vec<KeyToPath>>,
    default_mode: Option<i32>,
) -> Result<(), String> {
    match items {
        Some(items) if !items.is_empty() => {
            for item in items {
                let value = data.get(&item.key).ok_or_else(|| item.key.clone())?;
                files.insert(
                    item.path.clone(),
                    (value.clone().into_bytes(), mode_of(item.mode, default_mode)),
                );
            }
        }
        _ => {
            for (k, v) in data {
                files.insert(
                    k.clone(),
                    (v.clone().into_bytes(), mode_of(None, default_mode)),
                );
            }
        }
    }
    Ok(())
}

fn downward_files(
    files: &mut Files,
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
    pod_ip: &str,
) -> Result<(), EnvError> {
    for item in items {
        let Some(field) = &item.field_ref else {
            continue;
        };
        let map = |m: &Option<BTreeMap<String, String>>| {
            m.iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v:?}\n"))
                .collect::<String>()
        };
        let value = match field.field_path.as_str() {
            "metadata.labels" => map(&pod.metadata.labels),
            "metadata.annotations" => map(&pod.metadata.annotations),
            path => field_value(pod, path, pod_ip)?,
        };
        files.insert(
            item.path.clone(),
            (value.into_bytes(), mode_of(item.mode, default_mode)),
        );
    }
    Ok(())
}

/// A ConfigMap (false) or Secret (true) source: name, items, optional, default mode.
type Keyed = (bool, String, Option<Vec<KeyToPath>>, bool, Option<i32>);

/// The files volume `volume` should hold, `None` for a plain folder.
async fn desired(
    sources: &mut Sources,
    pod: &Pod,
    volume: &Volume,
    pod_ip: &str,
    token: Option<&str>,
) -> Result<Option<Files>, VolumeError> {
    let name = &volume.name;
    let src_err = |source| VolumeError::Source {
        volume: name.clone(),
        source,
    };
    let mut files = Files::new();
    // (secret?, object name, items, optional, default mode)
    let mut keyed: Vec<Keyed> = Vec::new();
    if let Some(c) = &volume.config_map {
        keyed.push((
            false,
            c.name.clone(),
            c.items.clone(),
            c.optional.unwrap_or(false),
            c.default_mode,
        ));
    } else if let Some(s) = &volume.secret {
        keyed.push((
            true,
            s.secret_name.clone().unwrap_or_default(),
            s.items.clone(),
            s.optional.unwrap_or(false),
            s.default_mode.or(Some(0o644)),
        ));
    } else if let Some(d) = &volume.downward_api {
        downward_files(
            &mut files,
            pod,
            d.items.as_deref().unwrap_or_default(),
            d.default_mode,
            pod_ip,
        )
        .map_err(src_err)?;
    } else if let Some(p) = &volume.projected {
        for source in p.sources.iter().flatten() {
            if let Some(c) = &source.config_map {
                keyed.push((
                    false,
                    c.name.clone(),
                    c.items.clone(),
                    c.optional.unwrap_or(false),
                    p.default_mode,
                ));
            }
            if let Some(s) = &source.secret {
                keyed.push((
                    true,
                    s.name.clone(),
                    s.items.clone(),
                    s.optional.unwrap_or(false),
                    p.default_mode,
                ));
            }
            if let Some(d) = &source.downward_api {
                downward_files(
                    &mut files,
                    pod,
                    d.items.as_deref().unwrap_or_default(),
                    p.default_mode,
                    pod_ip,
                )
                .map_err(src_err)?;
            }
            if let Some(t) = &source.service_account_token {
                let token = token.ok_or_else(|| VolumeError::NoToken {
                    volume: name.clone(),
                })?;
                files.insert(
                    t.path.clone(),
                    (token.as_bytes().to_vec(), mode_of(None, p.default_mode)),
                );
            }
        }
    } else {
        return Ok(None);
    }
    for (secret, object, items, optional, default_mode) in keyed {
        let data = sources.data(secret, &object).await.map_err(src_err)?;
        let Some(data) = data else {
            if optional {
                continue;
            }
            return Err(src_err(EnvError::SourceMissing {
                kind: if secret { "secret" } else { "configmap" },
                name: object,
            }));
        };
        keyed_files(&mut files, &data, &items, default_mode).map_err(|key| {
            src_err(EnvError::KeyMissing {
                kind: if secret { "Secret" } else { "ConfigMap" },
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                name: object.clone(),
                key,
            })
        })?;
    }
    Ok(Some(files))
}

static STAMP: AtomicU64 = AtomicU64::new(0);

/// Replaces the files of `dir` by `files` atomically (the kubelet's `..data` symlink swap).
fn write_atomic(dir: &Path, files: &Files) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let stamp = format!(
        "..{}_{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
        STAMP.fetch_add(1, Ordering::Relaxed)
    );
    let fresh = dir.join(&stamp);
    std::fs::create_dir(&fresh)?;
    let mut top = BTreeSet::new();
    for (path, (content, mode)) in files {
        let rel = Path::new(path);
        if rel.is_absolute() || rel.components().any(|c| c.as_os_str() == "..") {
            continue;
        }
        let file = fresh.join(rel);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, content)?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode))?;
        if let Some(first) = rel.components().next() {
            top.insert(first.as_os_str().to_owned());
        }
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, dir.join("..data"))?;
    for name in &top {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..data").join(name), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let text = name.to_string_lossy();
        if text == "..data" || name == *stamp.as_str() {
            continue;
        }
        if text.starts_with("..") {
            let _ = std::fs::remove_dir_all(entry.path());
        } else if !top.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// Where a container's mount paths are on the host.
#[derive(Clone, Debug, Default)]
pub(crate) struct MountMap {
    /// (mount path, host path), longest mount path first.
    mounts: Vec<(String, String)>,
    /// The container's tree of symlinks to its mounts.
    rootfs: String,
}

impl MountMap {
    /// The mounts of `container` in pod `pod` (folder `pod_dir`).
    pub(crate) fn new(pod: &Pod, container: &Container, pod_dir: &Path) -> Self {
        let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
        let mut mounts = Vec::new();
        for m in container.volume_mounts.iter().flatten() {
            let Some(volume) = volumes.and_then(|v| v.iter().find(|v| v.name == m.name)) else {
                continue;
            };
            let mut host = volume_dir(pod_dir, volume);
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                host = host.join(sub);
            }
            let path = m.mount_path.trim_end_matches('/');
            if path.is_empty() {
                continue;
            }
            mounts.push((path.to_owned(), host.to_string_lossy().into_owned()));
        }
        mounts.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        let rootfs = pod_dir.join("rootfs").join(&container.name);
        Self {
            mounts,
            rootfs: rootfs.to_string_lossy().into_owned(),
        }
    }

    /// Makes the container's rootfs tree: a symlink to the host folder at each mount path.
    pub(crate) fn link(&self) -> io::Result<()> {
        for (mount, host) in &self.mounts {
            let link = PathBuf::from(format!("{}{mount}", self.rootfs));
            if std::fs::read_link(&link).is_ok_and(|t| t == Path::new(host)) {
                continue;
            }
            if let Some(parent) = link.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let _ = std::fs::remove_file(&link);
            symlink(host, &link)?;
        }
        Ok(())
    }

    fn rewrite_path(&self, value: &str) -> Option<String> {
        let inside = self.mounts.iter().find_map(|(mount, host)| {
            let rest = value.strip_prefix(mount.as_str())?;
            (rest.is_empty() || rest.starts_with('/')).then(|| format!("{host}{rest}"))
        });
        inside.or_else(|| {
            let dir = value.trim_end_matches('/');
            let parent = value.starts_with('/')
                && self.mounts.iter().any(|(mount, _)| {
                    mount
                        .strip_prefix(dir)
                        .is_some_and(|rest| rest.starts_with('/'))
                });
            parent.then(|| format!("{}{value}", self.rootfs))
        })
    }

    /// `value` with a leading mount path (or that of a `--flag=` value) turned into its host
    /// path.
    pub(crate) fn rewrite(&self, value: &str) -> String {
        if let Some(v) = self.rewrite_path(value) {
            return v;
        }
        if value.starts_with('-')
            && let Some((flag, rest)) = value.split_once('=')
            && let Some(v) = self.rewrite_path(rest)
        {
            return format!("{flag}={v}");
        }
        value.to_owned()
    }
}

/// A service account token and when it should be renewed.
#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub(crate) token: String,
    pub(crate) renew_at: std::time::Instant,
}

/// How long the kubelet asks its tokens to live.
const TOKEN_SECONDS: i64 = 86_400;

/// Asks the API for a token of service account `account` (TokenRequest, as
/// `kubectl create token` does).
pub(crate) async fn request_token(
    client: &kube::Client,
    namespace: &str,
    account: &str,
) -> Result<Token, kube::Error> {
    let body = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(TOKEN_SECONDS),
            ..Default::default()
        },
        ..Default::default()
    };
    let bytes = serde_json::to_vec(&body).map_err(kube::Error::SerdeError)?;
    let request = http::Request::post(format!(
        "/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token"
    ))
    .header(http::header::CONTENT_TYPE, "application/json")
    .body(bytes)
    .map_err(|e| kube::Error::BuildRequest(kube::core::request::Error::BuildRequest(e)))?;
    let answer: TokenRequest = client.request(request).await?;
    let Some(status) = answer.status else {
        return Err(kube::Error::Api(Box::new(kube::core::Status::failure(
            "the TokenRequest answer has no status",
            "InternalError",
        ))));
    };
    // Renew at 80% of the lifetime, as the real kubelet does.
    let lifetime = status
        .expiration_timestamp
        .0
        .duration_since(jiff::Timestamp::now())
        .as_secs()
        .clamp(60, TOKEN_SECONDS);
    Ok(Token {
        token: status.token,
        renew_at: std::time::Instant::now()
            + std::time::Duration::from_secs(lifetime as u64 * 4 / 5),
    })
}

/// Writes `<pod dir>/kubeconfig` (atomically, mode 0600) for `server` in `namespace`, with
/// `token` when there is one (anonymous otherwise).
pub(crate) async fn write_kubeconfig(
    path: &Path,
    server: &str,
    namespace: &str,
    user: &str,
    token: Option<&str>,
) -> io::Result<()> {
    let mut user_entry = serde_json::json!({});
    if let Some(token) = token {
        user_entry["token"] = serde_json::json!(token);
    }
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "jetflow-dev", "cluster": {"server": server}}],
        "users": [{"name": user, "user": user_entry}],
        "contexts": [{"name": "jetflow-dev", "context": {
            "cluster": "jetflow-dev", "user": user, "namespace": namespace}}],
        "current-context": "jetflow-dev",
    });
    let text = serde_yaml_ng::to_string(&config).map_err(io::Error::other)?;
    let tmp = path.with_extension("tmp");
    tokio::fs::write(&tmp, text).await?;
    tokio::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).await?;
    tokio::fs::rename(&tmp, path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(pairs: &[(&str, &str)]) -> Files {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (v.as_bytes().to_vec(), 0o644)))
            .collect()
    }

    #[test]
    fn an_atomic_write_swaps_the_whole_set_of_files() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("config");
        write_atomic(&vol, &files(&[("a.yaml", "one"), ("sub/b", "two")])).unwrap();
        assert_eq!(std::fs::read_to_string(vol.join("a.yaml")).unwrap(), "one");
        assert_eq!(std::fs::read_to_string(vol.join("sub/b")).unwrap(), "two");
        write_atomic(&vol, &files(&[("a.yaml", "uno"), ("c", "three")])).unwrap();
        assert_eq!(std::fs::read_to_string(vol.join("a.yaml")).unwrap(), "uno");
        assert_eq!(std::fs::read_to_string(vol.join("c")).unwrap(), "three");
        assert!(!vol.join("sub").exists());
        let stamps = std::fs::read_dir(&vol)
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name();
                let n = n.to_string_lossy();
                n.starts_with("..") && n != "..data"
            })
            .count();
        assert_eq!(stamps, 1, "old generations are removed");
    }

    #[test]
    fn mount_paths_are_rewritten_at_path_boundaries_longest_first() {
        let map = MountMap {
            mounts: vec![
                ("/etc/jetflow/secrets/x".into(), "/h/secret-x".into()),
                ("/etc/jetflow/config".into(), "/h/config".into()),
                ("/tmp".into(), "/h/tmp".into()),
            ],
            rootfs: "/h/rootfs/worker".into(),
        };
        assert_eq!(
            map.rewrite("/etc/jetflow/secrets"),
            "/h/rootfs/worker/etc/jetflow/secrets"
        );
        assert_eq!(map.rewrite("/etc"), "/h/rootfs/worker/etc");
        assert_eq!(map.rewrite("/etc/other"), "/etc/other");
        assert_eq!(
            map.rewrite("/etc/jetflow/config/pipeline.yaml"),
            "/h/config/pipeline.yaml"
        );
        assert_eq!(map.rewrite("/etc/jetflow/config"), "/h/config");
        assert_eq!(map.rewrite("/etc/jetflow/configs"), "/etc/jetflow/configs");
        assert_eq!(
            map.rewrite("/etc/jetflow/secrets/x/creds"),
            "/h/secret-x/creds"
        );
        assert_eq!(map.rewrite("--dir=/tmp/a"), "--dir=/h/tmp/a");
        assert_eq!(map.rewrite("/tmpfoo"), "/tmpfoo");
        assert_eq!(map.rewrite("run"), "run");
    }
}
