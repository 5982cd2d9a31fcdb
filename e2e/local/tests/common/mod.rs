//! What every end-to-end example test needs: a nats-server, the example's streams, a folder for
//! checkpoints, Secrets and logs, and the worker command for the example.

#![allow(dead_code)] // each test file uses its own part of it

use std::path::{Path, PathBuf};
use std::time::Duration;

use jetflow_crds::checkpoint::Checkpoint;
use jetflow_e2e::streams;
use jetflow_e2e::worker::WorkerCommand;
use jetflow_nats::Secrets;
use jetflow_testsupport::NatsServer;
use tempfile::TempDir;

/// Upper bound for every wait; generous for a loaded 2-core CI machine, never slept.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// One example set up against its own nats-server.
pub struct Example {
    /// The example's name (its file name without `.yaml`).
    pub name: String,
    /// Its manifest.
    pub manifest: PathBuf,
    /// The server.
    pub server: NatsServer,
    /// Checkpoints (`checkpoints/`), Secrets (`secrets/`) and logs.
    pub dir: TempDir,
}

impl Example {
    /// Starts a server with JetStream and creates the example's streams.
    pub async fn start(name: &str) -> Self {
        Self::start_with_server(name, "", &[]).await
    }

    /// Starts a server with `conf` added to its configuration, writes `secrets` (Secret name,
    /// key, value) into the Secrets folder, and creates the example's streams with them.
    pub async fn start_with_server(name: &str, conf: &str, secrets: &[(&str, &str, &str)]) -> Self {
        let server = NatsServer::start_with(conf);
        let dir = tempfile::Builder::new()
            .prefix(&format!("jetflow-e2e-{name}-"))
            .tempdir()
            .expect("a temporary folder");
        for (secret, key, value) in secrets {
            write_secret(&dir.path().join("secrets"), secret, key, value);
        }
        let manifest = jetflow_testsupport::workspace_root()
            .join("examples")
            .join(format!("{name}.yaml"));
        let example = Self {
            name: name.to_owned(),
            manifest,
            server,
            dir,
        };
        streams::apply_manifest(
            &example.manifest,
            &example.server.url(),
            &Secrets::new(example.secrets_dir()),
        )
        .await
        .unwrap_or_else(|e| panic!("creating the streams of {name}: {e}"));
        example
    }

    /// The Secrets folder (`<dir>/<secret name>/<key>`).
    pub fn secrets_dir(&self) -> PathBuf {
        self.dir.path().join("secrets")
    }

    /// A client without credentials.
    pub async fn client(&self) -> async_nats::Client {
        self.server.client().await
    }

    /// A JetStream context without credentials.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        self.server.jetstream().await
    }

    /// `jetflow-worker run` on the example, with this example's checkpoint and Secrets folders
    /// and a free metrics port.
    pub fn worker(&self) -> WorkerCommand {
        self.worker_with_secrets(&self.secrets_dir())
    }

    /// The same with another Secrets folder.
    pub fn worker_with_secrets(&self, secrets: &Path) -> WorkerCommand {
        WorkerCommand::run(
            &self.manifest,
            &self.server.url(),
            &self.dir.path().join("checkpoints"),
        )
        .args(["--secrets-dir".to_owned(), secrets.display().to_string()])
        .args(["--metrics-addr", "0"])
    }

    /// A log file for a process of this test.
    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// The committed checkpoint of `pipeline` (namespace `default`, as locally).
    pub fn checkpoint(&self, pipeline: &str) -> Checkpoint {
        let path = self
            .dir
            .path()
            .join("checkpoints/default")
            .join(format!("{pipeline}.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
}

/// Writes one key of a Secret as the worker reads it locally.
pub fn write_secret(dir: &Path, secret: &str, key: &str, value: &str) {
    let folder = dir.join(secret);
    std::fs::create_dir_all(&folder).expect("secret folder");
    std::fs::write(folder.join(key), value).expect("secret file");
}

pub use jetflow_e2e::output::{publish_js, source_sequences};
