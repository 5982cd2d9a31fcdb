//! NATS connections for the reconcilers, one per distinct connection spec, kept open between
//! reconciles.
//!
//! A connection that names Secrets is opened with their keys, read through the Kubernetes API
//! and written to a private folder in the layout `jetflow_nats::connect` reads
//! (`<dir>/<secret name>/<key>`), so the operator reaches NATS exactly as the workers do. The
//! cache key includes the Secrets' resource versions: a rotated credential opens a new
//! connection. A connection that fails is not cached; the next reconcile tries again.

use std::collections::HashMap;
use std::path::PathBuf;

use jetflow_crds::Connection;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use tokio::sync::Mutex;

use crate::{Error, Result};

/// Open NATS connections by connection spec.
pub struct NatsPool {
    default_url: String,
    dir: tempfile::TempDir,
    clients: Mutex<HashMap<String, async_nats::Client>>,
}

impl NatsPool {
    /// A pool that connects to `default_url` when a connection names no URL, keeping Secret
    /// material in a private temporary folder.
    pub fn new(default_url: impl Into<String>) -> std::io::Result<Self> {
        Ok(Self {
            default_url: default_url.into(),
            dir: tempfile::Builder::new()
                .prefix("jetflow-operator-secrets-")
                .tempdir()?,
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// The default NATS URL.
    pub fn default_url(&self) -> &str {
        &self.default_url
    }

    /// A JetStream context for `conn` of a resource in `namespace`.
    pub async fn jetstream(
        &self,
        client: &Client,
        namespace: &str,
        conn: Option<&Connection>,
    ) -> Result<async_nats::jetstream::Context> {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let mut key = format!(
            "{}|{}",
            conn.and_then(|c| c.url.as_deref())
                .unwrap_or(&self.default_url),
            serde_json::to_string(&conn).unwrap_or_default()
        );
        let folder: PathBuf = self.dir.path().join(namespace);
        let names = conn.map(Connection::secret_names).unwrap_or_default();
        let mut fetched = Vec::new();
        for name in &names {
            let secret = secrets
                .get(name)
                .await
                .map_err(|source| Error::ReadSecret {
                    namespace: namespace.to_owned(),
                    name: (*name).to_owned(),
                    source,
                })?;
            key.push_str(&format!(
                "|{namespace}/{name}@{}",
                secret.metadata.resource_version.as_deref().unwrap_or("")
            ));
            fetched.push(secret);
        }

        let mut clients = self.clients.lock().await;
        // A cached client reconnects on its own; a request made while it is away fails and the
        // reconcile is retried with backoff.
        if let Some(client) = clients.get(&key) {
            return Ok(async_nats::jetstream::new(client.clone()));
        }
        for secret in &fetched {
            let name = secret.metadata.name.clone().unwrap_or_default();
            let dir = folder.join(&name);
            let store = |source| Error::StoreSecret {
                name: name.clone(),
                source,
            };
            std::fs::create_dir_all(&dir).map_err(store)?;
            for (k, v) in secret.data.iter().flatten() {
                std::fs::write(dir.join(k), &v.0).map_err(store)?;
            }
            for (k, v) in secret.string_data.iter().flatten() {
                std::fs::write(dir.join(k), v).map_err(store)?;
            }
        }
        let nats = jetflow_nats::connect(
            conn,
            &self.default_url,
            &jetflow_nats::Secrets::new(folder),
            "jetflow-operator",
        )
        .await?;
        clients.insert(key, nats.clone());
        Ok(async_nats::jetstream::new(nats))
    }
}
