//! Every authentication method of a `connection`, against a nats-server configured for it:
//! creds file (operator/account/user JWTs made in the test), NKey seed, user and password,
//! token, TLS with a CA generated in the test (with and without a client certificate), and a
//! wrong password, which must be reported as an authentication failure.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt;
use jetflow_crds::Connection;
use jetflow_nats::{ConnectError, Secrets, connect};
use jetflow_testsupport::NatsServer;

/// Writes `<dir>/<secret>/<key>` like a mounted Secret.
fn put_secret(dir: &Path, secret: &str, key: &str, value: &str) {
    std::fs::create_dir_all(dir.join(secret)).unwrap();
    std::fs::write(dir.join(secret).join(key), value).unwrap();
}

fn connection(yaml: &str) -> Connection {
    serde_yaml_ng::from_str(yaml).unwrap()
}

/// A request/reply through the server proves the connection is authenticated and working.
async fn round_trip(client: &async_nats::Client) {
    let mut sub = client.subscribe("auth.check").await.unwrap();
    let responder = client.clone();
    tokio::spawn(async move {
        if let Some(msg) = sub.next().await {
            responder
                .publish(msg.reply.unwrap(), "pong".into())
                .await
                .unwrap();
        }
    });
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        client.request("auth.check", "ping".into()),
    )
    .await
    .expect("reply in time")
    .expect("request succeeds");
    assert_eq!(&reply.payload[..], b"pong");
}

#[tokio::test]
async fn user_and_password_from_a_secret() {
    let server =
        NatsServer::start_with("authorization { users = [ { user: app, password: s3cret } ] }");
    let secrets = tempfile::tempdir().unwrap();
    put_secret(secrets.path(), "nats-user", "username", "app");
    put_secret(secrets.path(), "nats-user", "password", "s3cret\n");
    let conn = connection("userPassword: {secretName: nats-user}");
    let client = connect(
        Some(&conn),
        &server.url(),
        &Secrets::new(secrets.path()),
        "t",
    )
    .await
    .unwrap();
    round_trip(&client).await;
}

#[tokio::test]
async fn wrong_password_is_an_authentication_error() {
    let server =
        NatsServer::start_with("authorization { users = [ { user: app, password: s3cret } ] }");
    let secrets = tempfile::tempdir().unwrap();
    put_secret(secrets.path(), "nats-user", "username", "app");
    put_secret(secrets.path(), "nats-user", "password", "wrong");
    let conn = connection("userPassword: {secretName: nats-user}");
    let err = connect(
        Some(&conn),
        &server.url(),
        &Secrets::new(secrets.path()),
        "t",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            ConnectError::Authentication {
                method: "userPassword",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.category(), "authentication");
    assert!(err.to_string().contains("connection.userPassword"), "{err}");
}

#[tokio::test]
async fn token_from_a_secret() {
    let server = NatsServer::start_with("authorization { token: t0ken-abc }");
    let secrets = tempfile::tempdir().unwrap();
    put_secret(secrets.path(), "nats-token", "token", "t0ken-abc");
    let conn = connection("token: {name: nats-token, key: token}");
    let client = connect(
        Some(&conn),
        &server.url(),
        &Secrets::new(secrets.path()),
        "t",
    )
    .await
    .unwrap();
    round_trip(&client).await;

    // Without the token the same server refuses the connection.
    let err = connect(None, &server.url(), &Secrets::new(secrets.path()), "t")
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::Authentication { .. }), "{err}");
}

#[tokio::test]
async fn nkey_seed_from_a_secret() {
    let user = nkeys::KeyPair::new_user();
    let server = NatsServer::start_with(&format!(
        "authorization {{ users = [ {{ nkey: {} }} ] }}",
        user.public_key()
    ));
    let secrets = tempfile::tempdir().unwrap();
    put_secret(secrets.path(), "nats-nkey", "seed", &user.seed().unwrap());
    let conn = connection("nkey: {name: nats-nkey, key: seed}");
    let client = connect(
        Some(&conn),
        &server.url(),
        &Secrets::new(secrets.path()),
        "t",
    )
    .await
    .unwrap();
    round_trip(&client).await;
}

/// A NATS JWT signed by `issuer`.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": format!("jetflow-test-{subject}"),
        "iat": 1_700_000_000,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{body}");
    let signature = URL_SAFE_NO_PAD.encode(issuer.sign(signing_input.as_bytes()).unwrap());
    format!("{signing_input}.{signature}")
}

#[tokio::test]
async fn creds_file_from_a_secret() {
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let system = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let limits = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1
    });
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "jetflow-test",
        serde_json::json!({"type": "operator", "version": 2, "system_account": system.public_key()}),
    );
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        "app",
        serde_json::json!({"type": "account", "version": 2, "limits": limits}),
    );
    let system_jwt = jwt(
        &operator,
        &system.public_key(),
        "SYS",
        serde_json::json!({"type": "account", "version": 2, "limits": limits}),
    );
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        "app-user",
        serde_json::json!({"type": "user", "version": 2, "pub": {}, "sub": {},
                           "subs": -1, "data": -1, "payload": -1}),
    );
    // Operator mode has no JetStream here; the test is about authentication.
    let server = NatsServer::start_with_config(&format!(
        "operator: {operator_jwt}\nsystem_account: {sys}\nresolver: MEMORY\n\
         resolver_preload: {{\n  {acc}: {account_jwt}\n  {sys}: {system_jwt}\n}}\n",
        sys = system.public_key(),
        acc = account.public_key(),
    ));
    let creds = format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user.seed().unwrap()
    );
    let secrets = tempfile::tempdir().unwrap();
    put_secret(secrets.path(), "nats-creds", "user.creds", &creds);
    let conn = connection("creds: {name: nats-creds, key: user.creds}");
    let client = connect(
        Some(&conn),
        &server.url(),
        &Secrets::new(secrets.path()),
        "t",
    )
    .await
    .unwrap();
    round_trip(&client).await;

    // A user signed by an account the server does not know is refused.
    let stranger = nkeys::KeyPair::new_account();
    let bad_jwt = jwt(
        &stranger,
        &user.public_key(),
        "stranger",
        serde_json::json!({"type": "user", "version": 2, "pub": {}, "sub": {}}),
    );
    let bad = creds.replace(&user_jwt, &bad_jwt);
    put_secret(secrets.path(), "nats-creds", "user.creds", &bad);
    let err = connect(
        Some(&conn),
        &server.url(),
        &Secrets::new(secrets.path()),
        "t",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            ConnectError::Authentication {
                method: "creds",
                ..
            }
        ),
        "{err}"
    );
}

struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "jetflow test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let server_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(vec!["jetflow-worker".to_owned()]).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "jetflow-worker");
    let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();

    Pki {
        ca: ca_cert.pem(),
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client_cert.pem(),
        client_key: client_key.serialize_pem(),
    }
}

fn tls_server(pki: &Pki, verify_clients: bool) -> (NatsServer, tempfile::TempDir) {
    let files = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("ca.pem", &pki.ca),
        ("server.pem", &pki.server_cert),
        ("server-key.pem", &pki.server_key),
    ] {
        std::fs::write(files.path().join(name), text).unwrap();
    }
    let dir = files.path().display();
    let server = NatsServer::start_with(&format!(
        "tls {{\n  cert_file: \"{dir}/server.pem\"\n  key_file: \"{dir}/server-key.pem\"\n  \
         ca_file: \"{dir}/ca.pem\"\n  verify: {verify_clients}\n  timeout: 5\n}}"
    ));
    (server, files)
}

#[tokio::test]
async fn tls_with_a_generated_ca() {
    let pki = pki();
    let (server, _files) = tls_server(&pki, false);
    let secrets = tempfile::tempdir().unwrap();
    put_secret(secrets.path(), "nats-tls", "ca.crt", &pki.ca);
    let conn = connection("tls: {ca: {name: nats-tls, key: ca.crt}}");
    let url = format!("tls://localhost:{}", server.port());
    let client = connect(Some(&conn), &url, &Secrets::new(secrets.path()), "t")
        .await
        .unwrap();
    round_trip(&client).await;

    // Without the CA the server's certificate is not trusted.
    let err = connect(None, &url, &Secrets::new(secrets.path()), "t").await;
    assert!(
        err.is_err(),
        "an untrusted certificate must not be accepted"
    );
}

#[tokio::test]
async fn tls_with_a_client_certificate() {
    let pki = pki();
    let (server, _files) = tls_server(&pki, true);
    let secrets = tempfile::tempdir().unwrap();
    put_secret(secrets.path(), "nats-tls", "ca.crt", &pki.ca);
    put_secret(secrets.path(), "nats-tls", "tls.crt", &pki.client_cert);
    put_secret(secrets.path(), "nats-tls", "tls.key", &pki.client_key);
    let url = format!("tls://localhost:{}", server.port());

    let full = connection(
        "tls: {ca: {name: nats-tls, key: ca.crt}, cert: {name: nats-tls, key: tls.crt}, key: {name: nats-tls, key: tls.key}}",
    );
    let client = connect(Some(&full), &url, &Secrets::new(secrets.path()), "t")
        .await
        .unwrap();
    round_trip(&client).await;

    let ca_only = connection("tls: {ca: {name: nats-tls, key: ca.crt}}");
    let err = connect(Some(&ca_only), &url, &Secrets::new(secrets.path()), "t").await;
    assert!(
        err.is_err(),
        "a server that verifies clients must refuse one without a certificate"
    );
}

/// Secrets held in memory, as the operator reads them through the API: by name, then key.
fn in_memory(entries: &[(&str, &str, &str)]) -> Secrets {
    let mut data = jetflow_nats::SecretData::new();
    for (secret, key, value) in entries {
        data.entry((*secret).to_owned())
            .or_default()
            .insert((*key).to_owned(), value.as_bytes().to_vec());
    }
    Secrets::memory(data)
}

#[tokio::test]
async fn secrets_held_in_memory_authenticate_like_mounted_ones() {
    let server =
        NatsServer::start_with("authorization { users = [ { user: app, password: s3cret } ] }");
    let conn = connection("userPassword: {secretName: nats-user}");
    let secrets = in_memory(&[
        ("nats-user", "username", "app"),
        ("nats-user", "password", "s3cret\n"),
    ]);
    let client = connect(Some(&conn), &server.url(), &secrets, "t")
        .await
        .unwrap();
    round_trip(&client).await;

    // A key the Secret does not have is named, with the field that refers to it.
    let err = connect(
        Some(&conn),
        &server.url(),
        &in_memory(&[("nats-user", "username", "app")]),
        "t",
    )
    .await
    .unwrap_err();
    assert!(err.is_secret(), "{err}");
    assert_eq!(
        err.to_string(),
        "connection.userPassword: secret nats-user has no key password"
    );
}

#[tokio::test]
async fn tls_with_a_client_certificate_held_in_memory() {
    let pki = pki();
    let (server, _files) = tls_server(&pki, true);
    let url = format!("tls://localhost:{}", server.port());
    let full = connection(
        "tls: {ca: {name: nats-tls, key: ca.crt}, cert: {name: nats-tls, key: tls.crt}, key: {name: nats-tls, key: tls.key}}",
    );
    let secrets = in_memory(&[
        ("nats-tls", "ca.crt", &pki.ca),
        ("nats-tls", "tls.crt", &pki.client_cert),
        ("nats-tls", "tls.key", &pki.client_key),
    ]);
    let client = connect(Some(&full), &url, &secrets, "t").await.unwrap();
    round_trip(&client).await;

    // A certificate that is not PEM is refused before connecting, naming the field.
    let broken = in_memory(&[
        ("nats-tls", "ca.crt", "not a certificate"),
        ("nats-tls", "tls.crt", &pki.client_cert),
        ("nats-tls", "tls.key", &pki.client_key),
    ]);
    let err = connect(Some(&full), &url, &broken, "t").await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("connection.tls.ca: invalid certificate in secret nats-tls/ca.crt"),
        "{err}"
    );
}
