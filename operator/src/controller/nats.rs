//! NATS connections for the reconcilers, one per connection identity, kept open between
//! reconciles.
//!
//! A connection that names Secrets is opened with their data, read through the Kubernetes API
//! and held in memory only ([`jetflow_nats::Secrets::memory`]); the operator writes no Secret to
//! disk. A connection's identity is the namespace, the URL and the connection spec; the Secrets'
//! resource versions say which credentials its client was opened with. When they change (a
//! rotated credential) the next reconcile opens a client with the new data, puts it in the old
//! one's place and closes the old one. No lock is held while connecting; a connection that fails
//! is not kept, and the next reconcile tries again.

use std::collections::HashMap;
use std::sync::Mutex;

use jetflow_crds::Connection;
use jetflow_nats::SecretData;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::{Error, Result};

/// An open client and the Secret versions it was opened with.
struct Open {
    versions: String,
    client: async_nats::Client,
}

/// Open NATS connections by connection identity.
pub struct NatsPool {
    default_url: String,
    clients: Mutex<HashMap<String, Open>>,
}

impl NatsPool {
    /// A pool that connects to `default_url` when a connection names no URL.
    pub fn new(default_url: impl Into<String>) -> Self {
        Self {
            default_url: default_url.into(),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The default NATS URL.
    pub fn default_url(&self) -> &str {
        &self.default_url
    }

    /// How many clients are open (one per connection identity).
    pub fn open_clients(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Open>> {
        // A panic while holding the lock leaves a map that is still consistent.
        self.clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A JetStream context for `conn` of a resource in `namespace`.
    pub async fn jetstream(
        &self,
        client: &Client,
        namespace: &str,
        conn: Option<&Connection>,
    ) -> Result<async_nats::jetstream::Context> {
        let url = conn
            .and_then(|c| c.url.as_deref())
            .unwrap_or(&self.default_url);
        let identity = format!(
            "{namespace}|{url}|{}",
            serde_json::to_string(&conn).unwrap_or_default()
        );
        let (versions, data) = read_secrets(client, namespace, conn).await?;
        if let Some(open) = self.lock().get(&identity)
            && open.versions == versions
        {
            // A kept client reconnects on its own; a request made while it is away fails and
            // the reconcile is retried with backoff.
            return Ok(async_nats::jetstream::new(open.client.clone()));
        }

        let opened = jetflow_nats::connect(
            conn,
            &self.default_url,
            &jetflow_nats::Secrets::memory(data),
            "jetflow-operator",
        )
        .await?;
        let (client, replaced) = {
            let mut clients = self.lock();
            match clients.get(&identity) {
                // Another reconcile opened the same one meanwhile: keep that, close this.
                Some(open) if open.versions == versions => (open.client.clone(), Some(opened)),
                _ => {
                    let old = clients.insert(
                        identity,
                        Open {
                            versions,
                            client: opened.clone(),
                        },
                    );
                    (opened, old.map(|o| o.client))
                }
            }
        };
        if let Some(old) = replaced {
            tracing::info!(
                namespace,
                url,
                "NATS credentials changed; closing the old connection"
            );
            tokio::spawn(async move {
                // Drain closes the connection once what is in flight is sent.
                let _ = old.drain().await;
            });
        }
        Ok(async_nats::jetstream::new(client))
    }
}

/// The data of the Secrets `conn` names, and their resource versions in a fixed order.
async fn read_secrets(
    client: &Client,
    namespace: &str,
    conn: Option<&Connection>,
) -> Result<(String, SecretData)> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut versions = String::new();
    let mut data = SecretData::new();
    for name in conn.map(Connection::secret_names).unwrap_or_default() {
        let secret = secrets
            .get(name)
            .await
            .map_err(|source| Error::ReadSecret {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                source,
            })?;
        versions.push_str(&format!(
            "{name}@{};",
            secret.metadata.resource_version.as_deref().unwrap_or("")
        ));
        let keys = data.entry(name.to_owned()).or_default();
        for (k, v) in secret.data.into_iter().flatten() {
            keys.insert(k, v.0);
        }
        for (k, v) in secret.string_data.into_iter().flatten() {
            keys.insert(k, v.into_bytes());
        }
    }
    Ok((versions, data))
}
