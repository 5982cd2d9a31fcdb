//! Opening a NATS connection from a [`Connection`] spec.
//!
//! Secrets are read from files laid out as `<dir>/<secret name>/<key>`: in a pod each
//! referenced Secret is mounted at `<dir>/<secret name>`, and locally a developer points the
//! worker at a folder of the same shape. The connection retries the first connect and
//! reconnects with a capped exponential backoff; an authentication failure is reported as such.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::{ConnectErrorKind, ConnectOptions};
use jetflow_crds::{Connection, SecretKeyRef};

/// Where the files of referenced Secrets are.
#[derive(Clone, Debug)]
pub struct Secrets {
    dir: PathBuf,
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
    /// The credentials file is not valid.
    #[error("connection.creds: invalid credentials file {path}: {source}")]
    Credentials {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: std::io::Error,
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
            Self::ReadSecret { .. } | Self::Credentials { .. } => "secret",
            Self::Authentication { .. } => "authentication",
            Self::Connect { .. } => "connect",
        }
    }
}

impl Secrets {
    /// Secrets under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of a Secret key.
    pub fn path(&self, r: &SecretKeyRef) -> PathBuf {
        self.dir.join(&r.name).join(&r.key)
    }

    fn read(&self, field: &'static str, name: &str, key: &str) -> Result<String, ConnectError> {
        let path = self.dir.join(name).join(key);
        std::fs::read_to_string(&path)
            .map(|s| s.trim().to_owned())
            .map_err(|source| ConnectError::ReadSecret {
                field,
                secret: name.to_owned(),
                key: key.to_owned(),
                path,
                source,
            })
    }

    fn file(&self, field: &'static str, r: &SecretKeyRef) -> Result<PathBuf, ConnectError> {
        let path = self.path(r);
        std::fs::metadata(&path).map_err(|source| ConnectError::ReadSecret {
            field,
            secret: r.name.clone(),
            key: r.key.clone(),
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }
}

/// Opens a connection. `conn` may be absent (no credentials); `default_url` applies when the
/// spec names no URL. `name` is the client name the server shows (`nats server report
/// connections`).
pub async fn connect(
    conn: Option<&Connection>,
    default_url: &str,
    secrets: &Secrets,
    name: &str,
) -> Result<async_nats::Client, ConnectError> {
    let url = conn
        .and_then(|c| c.url.clone())
        .unwrap_or_else(|| default_url.to_owned());
    install_crypto_provider();
    let (options, method) = options(conn, secrets).await?;
    let options = options
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .reconnect_delay_callback(|attempt| {
            // 100 ms doubling up to 5 s: quick after a blip, gentle on a server that is down.
            let shift = attempt.min(6) as u32;
            Duration::from_millis(100u64 << shift).min(Duration::from_secs(5))
        });
    match options.connect(url.as_str()).await {
        Ok(client) => Ok(client),
        Err(e) if e.kind() == ConnectErrorKind::AuthorizationViolation => {
            Err(ConnectError::Authentication { url, method })
        }
        Err(source) => Err(ConnectError::Connect { url, source }),
    }
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
        let path = secrets.file("connection.creds", creds)?;
        options = options
            .credentials_file(&path)
            .await
            .map_err(|source| ConnectError::Credentials { path, source })?;
        method = "creds";
    }
    if let Some(nkey) = &conn.nkey {
        options = options.nkey(secrets.read("connection.nkey", &nkey.name, &nkey.key)?);
        method = "nkey";
    }
    if let Some(up) = &conn.user_password {
        let user = secrets.read("connection.userPassword", &up.secret_name, &up.username_key)?;
        let pass = secrets.read("connection.userPassword", &up.secret_name, &up.password_key)?;
        options = options.user_and_password(user, pass);
        method = "userPassword";
    }
    if let Some(token) = &conn.token {
        options = options.token(secrets.read("connection.token", &token.name, &token.key)?);
        method = "token";
    }
    if let Some(tls) = &conn.tls {
        options = options.require_tls(true);
        if let Some(ca) = &tls.ca {
            options = options.add_root_certificates(secrets.file("connection.tls.ca", ca)?);
        }
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            options = options.add_client_certificate(
                secrets.file("connection.tls.cert", cert)?,
                secrets.file("connection.tls.key", key)?,
            );
        }
    }
    Ok((options, method))
}
