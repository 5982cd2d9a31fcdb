//! How a Pipeline or a Stream reaches NATS: a URL and optional credentials and TLS material,
//! always by reference to a Kubernetes Secret, never inline.
//!
//! In a pod the referenced Secrets are mounted as files; locally the worker reads the same
//! references from a directory laid out as `<dir>/<secret name>/<key>`.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// A NATS connection: the server URL and, optionally, one authentication method and TLS.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "(has(self.creds) ? 1 : 0) + (has(self.nkey) ? 1 : 0) + (has(self.userPassword) ? 1 : 0) + (has(self.token) ? 1 : 0) <= 1"
).message("connection: set at most one of creds, nkey, userPassword and token"))]
pub struct Connection {
    /// NATS server URL, or several separated by commas (`nats://nats.nats.svc:4222`,
    /// `nats://a:4222,nats://b:4222`), tried in turn as by the NATS tools. When
    /// omitted, the operator's default URL (Helm value `nats.url`) is used, or the worker's
    /// `--nats` flag when it runs locally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^(nats|tls|ws|wss)://[^\s,]+(\s*,\s*(nats|tls|ws|wss)://[^\s,]+)*$"
    ))]
    pub url: Option<String>,

    /// A NATS credentials file (JWT and NKey seed), as produced by `nsc`, in a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creds: Option<SecretKeyRef>,

    /// An NKey seed (`SU...`) in a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nkey: Option<SecretKeyRef>,

    /// A user name and password in a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_password: Option<UserPasswordRef>,

    /// An authentication token in a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretKeyRef>,

    /// TLS: a CA to verify the server and, optionally, a client certificate and key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsRef>,
}

/// One key of a Secret in the resource's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// A user name and a password, both in one Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserPasswordRef {
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub secret_name: String,
    /// Key of the user name in the Secret.
    #[serde(default = "default_username_key")]
    pub username_key: String,
    /// Key of the password in the Secret.
    #[serde(default = "default_password_key")]
    pub password_key: String,
}

fn default_username_key() -> String {
    "username".into()
}

fn default_password_key() -> String {
    "password".into()
}

/// TLS material, each part in a Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.cert) == has(self.key)")
    .message("connection.tls: cert and key must be set together"))]
pub struct TlsRef {
    /// The CA certificate (PEM) that signed the server's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<SecretKeyRef>,
    /// The client certificate (PEM), for servers that verify clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<SecretKeyRef>,
    /// The client certificate's private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<SecretKeyRef>,
}

impl Connection {
    /// Every Secret this connection refers to, by name, without repeats, in a fixed order.
    pub fn secret_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = [&self.creds, &self.nkey, &self.token]
            .into_iter()
            .flatten()
            .map(|r| r.name.as_str())
            .chain(self.user_password.iter().map(|u| u.secret_name.as_str()))
            .chain(self.tls.iter().flat_map(|t| {
                [&t.ca, &t.cert, &t.key]
                    .into_iter()
                    .flatten()
                    .map(|r| r.name.as_str())
            }))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// `url` with the password or token of its user information (`nats://user:pass@host`,
/// `nats://token@host`) replaced by `***`, in each entry of a comma-separated list: what an
/// error message or a log line may show.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|entry| {
            let (scheme, rest) = match entry.find("://") {
                Some(i) => entry.split_at(i + 3),
                None => ("", entry),
            };
            let host_start = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..host_start].rfind('@') {
                Some(at) => {
                    let user = match rest[..at].split_once(':') {
                        Some((user, _)) => format!("{user}:***"),
                        None => "***".to_owned(),
                    };
                    format!("{scheme}{user}{}", &rest[at..])
                }
                None => entry.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn credentials_in_urls_are_redacted() {
        assert_eq!(
            redact_url("nats://alice:s3cret@a:4222, tls://tok@b:4222,nats://c:4222"),
            "nats://alice:***@a:4222, tls://***@b:4222,nats://c:4222"
        );
        assert_eq!(redact_url("nats://a:4222"), "nats://a:4222");
    }
}
