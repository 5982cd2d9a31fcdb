//! The local Kubernetes API server: an in-memory store served over plain HTTP with the subset
//! of the Kubernetes API that kube-rs, kubectl and jetflow use (discovery, CRUD, patches,
//! server-side apply, watch, status and scale subresources, TokenRequest, pod logs, Tables),
//! CRD admission, RBAC, finalizers and garbage collection.
//!
//! [`Server::start`] binds, serves in the background and returns a [`Handle`];
//! [`Handle::shutdown`] ends every watch and the garbage collector, then stops the listener.
//! Request failures are answered with Kubernetes `Status` objects; only start-up fails with
//! [`StartError`].

mod auth;
mod gc;
mod http;
pub mod kubeconfig;
mod logs;
mod openapi;
mod ops;
mod patch;
mod protobuf;
pub mod resources;
mod selector;
mod state;
mod status;
mod store;
mod table;
mod tls;
mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use self::auth::{ADMIN_USER, admin, service_account};
use self::ops::WriteOptions;
use self::resources::Registry;
use self::state::{Shared, State, random_token};
pub use self::status::ApiError;
use crate::admission::CrdAdmission;

/// Now, as the API server writes times (RFC 3339, seconds).
pub(crate) fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// How to start the server.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// CustomResourceDefinitions (apiextensions.k8s.io/v1, as JSON) served from the start.
    pub crds: Vec<Value>,
    /// The kubelet's folder, for pod logs.
    pub kubelet_root: Option<PathBuf>,
    /// How often the garbage collector runs.
    pub gc_interval: Duration,
    /// How many changes the watch history keeps (older resourceVersions get 410 Gone).
    pub watch_history: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            crds: Vec::new(),
            kubelet_root: None,
            gc_interval: Duration::from_millis(200),
            watch_history: store::HISTORY,
        }
    }
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The TLS certificates could not be made.
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] tls::TlsError),
    /// A CRD or a built-in object could not be stored.
    #[error("cannot store {what}: {source}")]
    Seed {
        /// What.
        what: String,
        /// The cause.
        source: Box<ApiError>,
    },
}

/// Why a client for the server could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server's URL did not parse.
    #[error("the server URL is invalid: {0}")]
    Url(#[from] ::http::uri::InvalidUri),
    /// kube refused the configuration.
    #[error("the client could not be built: {0}")]
    Kube(#[from] kube::Error),
}

/// A running server.
pub struct Handle {
    /// `http://127.0.0.1:PORT` (plain HTTP; kube-rs sends its token over it).
    pub url: String,
    /// `https://127.0.0.1:PORT`: the same port with TLS, for kubectl (client-go sends
    /// credentials only over TLS).
    pub https_url: String,
    /// The CA of the server's certificate, PEM.
    pub ca_pem: String,
    /// The bound address.
    pub address: SocketAddr,
    /// The admin's bearer token (user `jetflow-admin`, group `system:masters`).
    pub admin_token: String,
    state: Shared,
    server: JoinHandle<()>,
    gc: JoinHandle<()>,
}

impl Handle {
    /// A kubeconfig for the admin (HTTPS with the server's CA), default namespace `default`.
    pub fn admin_kubeconfig(&self) -> String {
        self.kubeconfig(ADMIN_USER, &self.admin_token, "default")
    }

    /// A kubeconfig (HTTPS with the server's CA) for a bearer token.
    pub fn kubeconfig(&self, user: &str, token: &str, namespace: &str) -> String {
        kubeconfig::render(&self.https_url, Some(&self.ca_pem), user, token, namespace)
    }

    /// Writes the admin kubeconfig to `path`.
    pub fn write_kubeconfig(&self, path: &std::path::Path) -> std::io::Result<()> {
        kubeconfig::write(path, &self.admin_kubeconfig())
    }

    /// A kube client with the admin's identity.
    pub fn admin_client(&self) -> Result<kube::Client, ClientError> {
        self.client_with_token(&self.admin_token)
    }

    /// A kube client with a bearer token.
    pub fn client_with_token(&self, token: &str) -> Result<kube::Client, ClientError> {
        // kube's TLS stack wants a process-wide crypto provider even for plain HTTP.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let uri: ::http::Uri = self.url.parse()?;
        let mut config = kube::Config::new(uri);
        config.default_namespace = "default".into();
        config.auth_info.token = Some(token.to_string().into());
        Ok(kube::Client::try_from(config)?)
    }

    /// Issues a token for a ServiceAccount, as a TokenRequest does (the account need not
    /// exist).
    pub fn issue_token(&self, namespace: &str, name: &str) -> String {
        auth::issue_token(&self.state, namespace, name)
    }

    /// A token that is cancelled when the server shuts down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.state.shutdown.clone()
    }

    /// Ends every watch and the garbage collector, stops listening and waits for the server.
    pub async fn shutdown(self) {
        self.state.shutdown.cancel();
        let _ = self.gc.await;
        let _ = self.server.await;
    }
}

/// The server.
pub struct Server;

impl Server {
    /// Binds `config.listen`, seeds the namespaces `default` and `kube-system` (each with its
    /// `default` ServiceAccount), the `cluster-admin` ClusterRole bound to `system:masters`,
    /// and the CRDs, and serves in the background.
    pub async fn start(config: Config) -> Result<Handle, StartError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Bind {
                address: config.listen,
                source,
            })?;
        let address = listener.local_addr().map_err(|source| StartError::Bind {
            address: config.listen,
            source,
        })?;
        let admin_token = random_token();
        let state: Shared = Arc::new(State {
            store: store::Store::new(config.watch_history),
            registry: RwLock::new(Registry::builtin()),
            admission: RwLock::new(CrdAdmission::new(Vec::new())),
            tokens: RwLock::new(HashMap::from([(admin_token.clone(), admin())])),
            kubelet_root: config.kubelet_root.clone(),
            shutdown: CancellationToken::new(),
        });
        seed(&state, &config.crds)?;
        let tls = tls::generate()?;
        let app = axum::Router::new()
            .fallback(http::handle)
            .with_state(state.clone());
        let server = tokio::spawn(serve(
            listener,
            app,
            tls.acceptor.clone(),
            state.shutdown.clone(),
        ));
        let gc = tokio::spawn(gc::run(state.clone(), config.gc_interval));
        let url = format!("http://{address}");
        let https_url = format!("https://{address}");
        tracing::info!(%url, "API server serving");
        Ok(Handle {
            url,
            https_url,
            ca_pem: tls.ca_pem,
            address,
            admin_token,
            state,
            server,
            gc,
        })
    }
}

/// Accepts connections until `stop`: TLS when the first byte is a handshake record, plain
/// HTTP otherwise. Open connections end with `stop` too.
async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    acceptor: tokio_rustls::TlsAcceptor,
    stop: CancellationToken,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed");
                continue;
            }
        };
        let (app, acceptor, stop) = (app.clone(), acceptor.clone(), stop.clone());
        connections.spawn(async move {
            let mut first = [0u8; 1];
            let is_tls = matches!(stream.peek(&mut first).await, Ok(1) if first[0] == 0x16);
            let service = TowerToHyperService::new(app);
            let builder = Builder::new(TokioExecutor::new());
            let served = if is_tls {
                match acceptor.accept(stream).await {
                    Ok(tls) => {
                        let conn =
                            builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                        tokio::select! { r = conn => r, _ = stop.cancelled() => Ok(()) }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        Ok(())
                    }
                }
            } else {
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                tokio::select! { r = conn => r, _ = stop.cancelled() => Ok(()) }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
}

fn seed(state: &State, crds: &[Value]) -> Result<(), StartError> {
    let registry = Registry::builtin();
    let seed_err = |what: &str| {
        let what = what.to_string();
        move |source| StartError::Seed {
            what,
            source: Box::new(source),
        }
    };
    let ns_info = registry.get("", "v1", "namespaces").cloned();
    if let Some(info) = ns_info {
        for ns in ["default", "kube-system"] {
            let obj = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            ops::create(state, &info, "", obj, &WriteOptions::default()).map_err(seed_err(ns))?;
        }
    }
    // The `cluster-admin` ClusterRole and its binding to `system:masters`, as a real cluster
    // has them (charts and tests bind ServiceAccounts to `cluster-admin`).
    let rbac = "rbac.authorization.k8s.io";
    if let (Some(role), Some(binding)) = (
        registry.get(rbac, "v1", "clusterroles").cloned(),
        registry.get(rbac, "v1", "clusterrolebindings").cloned(),
    ) {
        let labels = serde_json::json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
        let admin = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "cluster-admin", "labels": labels},
            "rules": [
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                {"nonResourceURLs": ["*"], "verbs": ["*"]},
            ],
        });
        ops::create(state, &role, "", admin, &WriteOptions::default())
            .map_err(seed_err("cluster-admin"))?;
        let masters = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "cluster-admin", "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:masters"}],
        });
        ops::create(state, &binding, "", masters, &WriteOptions::default())
            .map_err(seed_err("cluster-admin"))?;
    }
    if let Some(info) = registry
        .get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .cloned()
    {
        for crd in crds {
            let name = crd
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("a CRD")
                .to_string();
            ops::create(state, &info, "", crd.clone(), &WriteOptions::default())
                .map_err(seed_err(&name))?;
        }
    }
    Ok(())
}
