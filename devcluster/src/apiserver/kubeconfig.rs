//! Kubeconfigs: one cluster, one user, one context, the cluster and context named
//! `jetflow-dev`.

use std::path::Path;

use base64::Engine;

/// A kubeconfig for `server` with a bearer `token` and default namespace `namespace`; `ca_pem`
/// is the CA to trust for an HTTPS server.
pub fn render(
    server: &str,
    ca_pem: Option<&str>,
    user: &str,
    token: &str,
    namespace: &str,
) -> String {
    let ca = ca_pem
        .map(|pem| {
            format!(
                "    certificate-authority-data: {}\n",
                base64::engine::general_purpose::STANDARD.encode(pem)
            )
        })
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: jetflow-dev\n  cluster:\n    server: {server}\n{ca}users:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: jetflow-dev\n  context:\n    cluster: jetflow-dev\n    user: {user}\n    namespace: {namespace}\ncurrent-context: jetflow-dev\npreferences: {{}}\n"
    )
}

/// Writes a kubeconfig to `path` (mode 0600).
pub fn write(path: &Path, content: &str) -> std::io::Result<()> {
    std::fs::write(path, content)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
