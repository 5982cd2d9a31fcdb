//! A real nats-server for tests: started with JetStream on a free loopback port and a
//! temporary store, ready when its health endpoint says JetStream is up, and stopped when the
//! value is dropped (also when a test panics).
//!
//! The binary is `$JETFLOW_NATS_SERVER`, else `.tools/bin/nats-server` in the workspace
//! (installed by `scripts/install-nats.sh`), else `nats-server` on `PATH`.

pub mod chart;
pub mod http;
pub mod pod_security;
pub mod proxy;
pub mod worker;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A running nats-server owned by a test.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    http_port: u16,
    dir: TempDir,
    extra: String,
    jetstream: bool,
}

/// The nats-server binary tests use.
pub fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("JETFLOW_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let local = workspace_root().join(".tools/bin/nats-server");
    if local.exists() {
        return local;
    }
    PathBuf::from("nats-server")
}

/// The workspace root (the folder holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testsupport lives in the workspace")
        .to_owned()
}

/// The folder holding the binaries cargo built beside the running test or tool
/// (`<target>/<profile>/`), or `$JETFLOW_BIN_DIR`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("JETFLOW_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // A test runs from <target>/<profile>/deps/, a binary from <target>/<profile>/.
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl NatsServer {
    /// Starts a server with JetStream.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Starts a server with JetStream and `extra` appended to its configuration file (for
    /// authorization or TLS blocks). `{dir}` in `extra` is replaced by the server's folder.
    pub fn start_with(extra: &str) -> Self {
        Self::build(extra, true)
    }

    /// Starts a server without JetStream whose configuration is `config` (after the listen
    /// and monitoring addresses), for set-ups JetStream does not fit, such as operator mode
    /// with a memory resolver.
    pub fn start_with_config(config: &str) -> Self {
        Self::build(config, false)
    }

    fn build(extra: &str, jetstream: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("jetflow-nats-")
            .tempdir()
            .expect("a temporary folder");
        let extra = extra.replace("{dir}", &dir.path().display().to_string());
        Self::start_on(Self {
            child: None,
            port: free_port(),
            http_port: free_port(),
            dir,
            extra,
            jetstream,
        })
    }

    fn start_on(mut server: Self) -> Self {
        // A port found free can be taken by another process before the server binds it (tests
        // run in parallel): then the server exits at once, and new ports are tried.
        for attempt in 1.. {
            match server.launch() {
                Ok(()) => break,
                Err(log) if log.contains("address already in use") && attempt < 5 => {
                    let _ = std::fs::remove_file(server.log_path());
                    server.port = free_port();
                    server.http_port = free_port();
                }
                Err(log) => panic!("{log}"),
            }
        }
        server
    }

    /// Starts the server and waits until it is ready; an error is the server exiting while
    /// starting, with its log.
    fn launch(&mut self) -> Result<(), String> {
        let store = self.dir.path().join("jetstream");
        let jetstream = if self.jetstream {
            format!(
                "jetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 1GB\n  max_file_store: 20GB\n}}\n",
                store.display()
            )
        } else {
            String::new()
        };
        let config = format!(
            "listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{http}\nmax_payload: 8MB\n{jetstream}{extra}\n",
            port = self.port,
            http = self.http_port,
            extra = self.extra,
        );
        let config_path = self.dir.path().join("nats.conf");
        std::fs::write(&config_path, config).expect("write nats.conf");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open nats.log");
        let binary = nats_server_binary();
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e}; run scripts/install-nats.sh or set JETFLOW_NATS_SERVER",
                    binary.display()
                )
            });
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "nats-server exited with {status} while starting; log:\n{}",
                    std::fs::read_to_string(self.log_path()).unwrap_or_default()
                ));
            }
            if self.healthy() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "nats-server did not become ready within 20s; log:\n{}",
            std::fs::read_to_string(self.log_path()).unwrap_or_default()
        );
    }

    fn healthy(&self) -> bool {
        let path = if self.jetstream {
            "/healthz?js-enabled-only=true"
        } else {
            "/healthz"
        };
        http::get(&format!("127.0.0.1:{}", self.http_port), path).is_some_and(|r| r.is_ok())
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The monitoring port (`/varz`, `/jsz`, `/healthz`).
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The server's folder (configuration, log, JetStream store); removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    /// Connects a plain client.
    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.url())
            .await
            .expect("connect to the test nats-server")
    }

    /// Connects and returns a JetStream context.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(self.client().await)
    }

    /// Stops the server (SIGKILL) and starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(log) = self.launch() {
            panic!("{log}");
        }
    }

    /// Stops the server.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_taken_before_the_server_binds_it_is_replaced() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        let server = NatsServer::start_on(NatsServer {
            child: None,
            port: free_port(),
            http_port: taken_port,
            dir: tempfile::tempdir().unwrap(),
            extra: String::new(),
            jetstream: true,
        });
        assert_ne!(server.http_port(), taken_port);
        assert!(server.healthy());
    }
}
