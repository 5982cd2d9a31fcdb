//! Opening a NATS connection from a [`Connection`] spec.
//!
//! The values of the Secrets a connection names come from a [`Secrets`] source: files laid out
//! as `<dir>/<secret name>/<key>` (in a pod each referenced Secret is mounted at
//! `<dir>/<secret name>`; locally a developer points the worker at a folder of the same shape),
//! or Secrets' data held in memory (the operator reads them through the Kubernetes API and
//! writes nothing to disk). The connection retries the first connect and reconnects with a
//! capped exponential backoff; an authentication failure is reported as such.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{ConnectErrorKind, ConnectOptions};
use jetflow_crds::{Connection, SecretKeyRef};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The data of Secrets by name, then by key.
pub type SecretData = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

/// Where the values of referenced Secrets come from.
#[derive(Clone, Debug)]
pub enum Secrets {
    /// Files laid out as `<dir>/<secret name>/<key>`.
    Files(PathBuf),
    /// Secrets' data in memory.
    Memory(Arc<SecretData>),
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A referenced Secret key has no file.
    #[error("{field}: cannot read secret {secret}/{key} at {path}: {source}")]
    ReadSecret {
        /// The connection field that refers to it.
        field: &'static str,
        /// Secret name.
        secret: String,
        /// Key in the Secret.
        key: String,
        /// The file looked for.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A referenced Secret, or its key, is not there.
    #[error("{field}: secret {secret} has no key {key}")]
    MissingSecretKey {
        /// The connection field that refers to it.
        field: &'static str,
        /// Secret name.
        secret: String,
        /// Key in the Secret.
        key: String,
    },
    /// The credentials are not valid.
    #[error("connection.creds: invalid credentials in secret {secret}/{key}: {source}")]
    Credentials {
        /// Secret name.
        secret: String,
        /// Key in the Secret.
        key: String,
        /// The parse error.
        source: std::io::Error,
    },
    /// A TLS certificate or key is not valid PEM, or they do not go together.
    #[error("{field}: invalid {what} in secret {secret}/{key}: {reason}")]
    Tls {
        /// The connection field.
        field: &'static str,
        /// What was expected (`certificate`, `private key`).
        what: &'static str,
        /// Secret name.
        secret: String,
        /// Key in the Secret.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// The server refused the credentials.
    #[error(
        "NATS at {url} refused the credentials (authorization violation): check connection.{method}"
    )]
    Authentication {
        /// The URL.
        url: String,
        /// The authentication method in use.
        method: &'static str,
    },
    /// An entry of the URL list is not a NATS server address.
    #[error(
        "connection.url: entry {entry} of {count} ({url}) is not a NATS server address: {reason}"
    )]
    InvalidUrl {
        /// 1-based position of the entry in the comma-separated list.
        entry: usize,
        /// How many entries the list has.
        count: usize,
        /// The entry, credentials redacted.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The server could not be reached or the handshake failed.
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// The client's error.
        source: async_nats::ConnectError,
    },
}

impl ConnectError {
    /// A stable category for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            Self::ReadSecret { .. }
            | Self::MissingSecretKey { .. }
            | Self::Credentials { .. }
            | Self::Tls { .. } => "secret",
            Self::Authentication { .. } => "authentication",
            Self::InvalidUrl { .. } => "url",
            Self::Connect { .. } => "connect",
        }
    }

    /// Whether the connection's Secrets are wrong (missing, unreadable or invalid), rather than
    /// the server unreachable or refusing.
    pub fn is_secret(&self) -> bool {
        self.category() == "secret"
    }
}

impl Secrets {
    /// Secrets as files under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::Files(dir.into())
    }

    /// Secrets' data held in memory.
    pub fn memory(data: SecretData) -> Self {
        Self::Memory(Arc::new(data))
    }

    /// The value of a Secret key.
    fn bytes(&self, field: &'static str, name: &str, key: &str) -> Result<Vec<u8>, ConnectError> {
        match self {
            Self::Files(dir) => {
                let path = dir.join(name).join(key);
                std::fs::read(&path).map_err(|source| ConnectError::ReadSecret {
                    field,
                    secret: name.to_owned(),
                    key: key.to_owned(),
                    path,
                    source,
                })
            }
            Self::Memory(data) => data
                .get(name)
                .and_then(|keys| keys.get(key))
                .cloned()
                .ok_or_else(|| ConnectError::MissingSecretKey {
                    field,
                    secret: name.to_owned(),
                    key: key.to_owned(),
                }),
        }
    }

    /// The value of a Secret key as text, trimmed.
    fn text(&self, field: &'static str, name: &str, key: &str) -> Result<String, ConnectError> {
        let bytes = self.bytes(field, name, key)?;
        Ok(String::from_utf8_lossy(&bytes).trim().to_owned())
    }

    fn key_ref(&self, field: &'static str, r: &SecretKeyRef) -> Result<Vec<u8>, ConnectError> {
        self.bytes(field, &r.name, &r.key)
    }
}

/// Called with every event of a connection (a slow consumer, a disconnect), after the client
/// logged it; see [`connect_observed`].
pub type EventHook = std::sync::Arc<dyn Fn(&async_nats::Event) + Send + Sync>;

/// Opens a connection. `conn` may be absent (no credentials); `default_url` applies when the
/// spec names no URL. `name` is the client name the server shows (`nats server report
/// connections`).
pub async fn connect(
    conn: Option<&Connection>,
    default_url: &str,
    secrets: &Secrets,
    name: &str,
) -> Result<async_nats::Client, ConnectError> {
    connect_observed(conn, default_url, secrets, name, None).await
}

/// Like [`connect`], with `hook` called on every event of the connection: a subscription
/// whose buffer was full when a message arrived (`Event::SlowConsumer`: the client dropped the
/// message) is only reported this way.
pub async fn connect_observed(
    conn: Option<&Connection>,
    default_url: &str,
    secrets: &Secrets,
    name: &str,
    hook: Option<EventHook>,
) -> Result<async_nats::Client, ConnectError> {
    let url = conn
        .and_then(|c| c.url.clone())
        .unwrap_or_else(|| default_url.to_owned());
    let servers = server_addrs(&url)?;
    // What errors name: never a password or token of the URL.
    let url = jetflow_crds::connection::redact_url(&url);
    install_crypto_provider();
    let (mut options, method) = options(conn, secrets).await?;
    if let Some(hook) = hook {
        options = options.event_callback(move |event| {
            hook(&event);
            async {}
        });
    }
    let options = options
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .reconnect_delay_callback(|attempt| {
            crate::backoff(u32::try_from(attempt).unwrap_or(u32::MAX))
        });
    match options.connect(servers.as_slice()).await {
        Ok(client) => Ok(client),
        Err(e) if e.kind() == ConnectErrorKind::AuthorizationViolation => {
            Err(ConnectError::Authentication { url, method })
        }
        Err(source) => Err(ConnectError::Connect { url, source }),
    }
}

/// The servers of a URL or of a comma-separated list of them (`nats://a:4222,nats://b:4222`,
/// spaces around the commas allowed), as the NATS tools take it; the client tries them in
/// turn. An entry that is not a server address is named by its position.
pub fn server_addrs(urls: &str) -> Result<Vec<async_nats::ServerAddr>, ConnectError> {
    let entries: Vec<&str> = urls.split(',').map(str::trim).collect();
    let count = entries.len();
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let invalid = |reason: String| ConnectError::InvalidUrl {
                entry: i + 1,
                count,
                url: jetflow_crds::connection::redact_url(entry),
                reason,
            };
            if entry.is_empty() {
                return Err(invalid("empty".to_owned()));
            }
            entry
                .parse::<async_nats::ServerAddr>()
                .map_err(|e| invalid(e.to_string()))
        })
        .collect()
}

/// Makes ring the process's TLS crypto provider unless one is installed already. rustls picks
/// a provider by itself only when exactly one of its backends is compiled in; a binary whose
/// dependency graph enables two (one crate asking for ring, another for aws-lc-rs, as a
/// workspace test build does) would otherwise fail at the first TLS handshake, NATS's or the
/// Kubernetes client's. Both binaries call it first thing.
pub fn install_crypto_provider() {
    // An error only says a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn options(
    conn: Option<&Connection>,
    secrets: &Secrets,
) -> Result<(ConnectOptions, &'static str), ConnectError> {
    let mut options = ConnectOptions::new();
    let mut method = "url";
    let Some(conn) = conn else {
        return Ok((options, method));
    };
    if let Some(creds) = &conn.creds {
        // As the file is: the creds format's parser needs its line ends.
        let bytes = secrets.key_ref("connection.creds", creds)?;
        let text = String::from_utf8_lossy(&bytes);
        options = options
            .credentials(&text)
            .map_err(|source| ConnectError::Credentials {
                secret: creds.name.clone(),
                key: creds.key.clone(),
                source,
            })?;
        method = "creds";
    }
    if let Some(nkey) = &conn.nkey {
        options = options.nkey(secrets.text("connection.nkey", &nkey.name, &nkey.key)?);
        method = "nkey";
    }
    if let Some(up) = &conn.user_password {
        let user = secrets.text("connection.userPassword", &up.secret_name, &up.username_key)?;
        let pass = secrets.text("connection.userPassword", &up.secret_name, &up.password_key)?;
        options = options.user_and_password(user, pass);
        method = "userPassword";
    }
    if let Some(token) = &conn.token {
        options = options.token(secrets.text("connection.token", &token.name, &token.key)?);
        method = "token";
    }
    if let Some(tls) = &conn.tls {
        options = options.require_tls(true);
        if tls.ca.is_some() || tls.cert.is_some() {
            options = options.tls_client_config(tls_config(tls, secrets)?);
        }
    }
    Ok((options, method))
}

/// A TLS client configuration from the connection's PEM values: the CA's certificates as the
/// only roots (the system's roots without one), and the client certificate and key if given.
fn tls_config(
    tls: &jetflow_crds::TlsRef,
    secrets: &Secrets,
) -> Result<rustls::ClientConfig, ConnectError> {
    let certificates = |field: &'static str, r: &SecretKeyRef| {
        let pem = secrets.key_ref(field, r)?;
        let invalid = |reason: String| ConnectError::Tls {
            field,
            what: "certificate",
            secret: r.name.clone(),
            key: r.key.clone(),
            reason,
        };
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(e.to_string()))?;
        if certs.is_empty() {
            return Err(invalid("no PEM certificate".to_owned()));
        }
        Ok(certs)
    };
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca {
        Some(ca) => {
            for cert in certificates("connection.tls.ca", ca)? {
                roots.add(cert).map_err(|e| ConnectError::Tls {
                    field: "connection.tls.ca",
                    what: "certificate",
                    secret: ca.name.clone(),
                    key: ca.key.clone(),
                    reason: e.to_string(),
                })?;
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let chain = certificates("connection.tls.cert", cert)?;
            let pem = secrets.key_ref("connection.tls.key", key)?;
            let invalid = |reason: String| ConnectError::Tls {
                field: "connection.tls.key",
                what: "private key",
                secret: key.name.clone(),
                key: key.key.clone(),
                reason,
            };
            let private =
                PrivateKeyDer::from_pem_slice(&pem).map_err(|e| invalid(e.to_string()))?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(|e| invalid(e.to_string()))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_list_is_split_and_a_malformed_entry_named_without_its_password() {
        let servers = server_addrs("nats://a:4222, nats://b:4223").unwrap();
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[1].port(), 4223);
        let e = server_addrs("nats://a:4222,nats://alice:s3cret@b:42x2").unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("connection.url: entry 2 of 2 (nats://alice:***@b:42x2) is not a NATS server address"),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
        assert_eq!(e.category(), "url");
        assert!(server_addrs("nats://a:4222,").is_err());
    }
}
