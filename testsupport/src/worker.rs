//! `jetflow-worker` as a real process for tests: started with its HTTP endpoints on a known
//! address, its log in a file; ready when `/readyz` answers 200; stopped with SIGTERM once its
//! signal handlers are installed (its `/healthz` answers: the worker installs them before it
//! serves), or killed. Dropping a [`Worker`] kills it, so a failing test leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::http;

/// The `jetflow-worker` binary: `$JETFLOW_WORKER_BIN` (a copy taken right after the build,
/// safe from a build directory shared with other checkouts), else the one in
/// [`crate::bin_dir`] (cargo builds it for the worker's own tests, `cargo build -p
/// jetflow-worker` for the others).
pub fn worker_bin() -> PathBuf {
    std::env::var_os("JETFLOW_WORKER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            crate::bin_dir().join(format!("jetflow-worker{}", std::env::consts::EXE_SUFFIX))
        })
}

/// A free loopback address for a worker's HTTP endpoints.
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", crate::free_port())
}

/// A worker process.
pub struct Worker {
    /// The process.
    pub child: Child,
    /// Its standard error (the log).
    pub log: PathBuf,
    /// Where it serves `/metrics`, `/healthz` and `/readyz`.
    pub metrics_addr: String,
}

impl Worker {
    /// `jetflow-worker run -f <manifest> --nats <nats> --checkpoint-dir <checkpoints>` with
    /// `extra` flags; `--worker-id` is `test-worker` and `--metrics-addr` a free address unless
    /// `extra` gives them. The log goes to `<dir of checkpoints>/<worker id>-<n>.log`.
    pub fn start(manifest: &Path, nats: &str, checkpoints: &Path, extra: &[&str]) -> Self {
        let flag = |name: &str| {
            extra
                .iter()
                .position(|a| *a == name)
                .and_then(|i| extra.get(i + 1))
                .map(|v| (*v).to_owned())
        };
        let worker_id = flag("--worker-id").unwrap_or_else(|| "test-worker".to_owned());
        let mut command = Self::command();
        command
            .arg("-f")
            .arg(manifest)
            .arg("--nats")
            .arg(nats)
            .arg("--checkpoint-dir")
            .arg(checkpoints);
        if flag("--worker-id").is_none() {
            command.args(["--worker-id", &worker_id]);
        }
        let metrics_addr = flag("--metrics-addr").unwrap_or_else(|| {
            let addr = free_addr();
            command.args(["--metrics-addr", &addr]);
            addr
        });
        command.args(extra);
        let dir = checkpoints.parent().unwrap_or(checkpoints);
        let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        Self::spawn(command, dir, &format!("{worker_id}-{n}"), &metrics_addr)
    }

    /// `jetflow-worker run` with `RUST_LOG=info`, for [`Worker::spawn`]; the caller adds the
    /// rest of the arguments (`--metrics-addr` among them).
    pub fn command() -> Command {
        let mut command = Command::new(worker_bin());
        command.arg("run").env("RUST_LOG", "info");
        command
    }

    /// Starts `command` (from [`Worker::command`], serving on `metrics_addr`); its log goes to
    /// `<dir>/<name>.log`, its standard output to `<dir>/<name>.out`.
    pub fn spawn(mut command: Command, dir: &Path, name: &str, metrics_addr: &str) -> Self {
        let log = dir.join(format!("{name}.log"));
        let child = command
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(log.with_extension("out")).expect("stdout file"))
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start jetflow-worker");
        Self {
            child,
            log,
            metrics_addr: metrics_addr.to_owned(),
        }
    }

    /// The process's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log without terminal colour codes (`ESC [ … m`).
    pub fn plain_log(&self) -> String {
        strip_ansi(&self.log_text())
    }

    /// What the process printed on standard output.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.log.with_extension("out")).unwrap_or_default()
    }

    /// The worker's `/metrics` text (panics when it does not answer).
    pub fn metrics(&self) -> String {
        http::get_ok(&self.metrics_addr, "/metrics").unwrap_or_else(|| {
            panic!(
                "no /metrics at {}; log:\n{}",
                self.metrics_addr,
                self.log_text()
            )
        })
    }

    /// The sum of the worker's samples of `name` whose labels contain each of `labels`.
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        http::metric_sum(&self.metrics(), name, labels)
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        http::get(&self.metrics_addr, "/readyz").is_some_and(|r| r.is_ok())
    }

    /// Waits (at most `timeout`) until `/readyz` answers 200: the worker reads every split it
    /// owns. Panics when the process exits first.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.is_ready() {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "worker exited with {status} before it was ready; log:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "worker not ready after {timeout:?}; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (at most `timeout`) until `/healthz` answers: from then on the worker's signal
    /// handlers are installed, so a SIGTERM is a clean shutdown rather than the signal's
    /// default action. Returns early when the process has exited.
    pub fn wait_started(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while http::get(&self.metrics_addr, "/healthz").is_none() {
            if self.child.try_wait().expect("try_wait").is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "worker did not start within {timeout:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` (`TERM`, `KILL`, `STOP`, `CONT`) to the process.
    pub fn signal(&self, signal: &str) {
        // std has no signal API and the workspace forbids unsafe code: kill(1).
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// SIGTERM once the worker has started, then waits for the exit (at most `timeout`).
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.wait_started(timeout);
        self.signal("TERM");
        self.wait(timeout)
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit (at most `timeout`; then kills it and panics).
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!(
                    "worker did not exit within {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// `text` without terminal colour codes (`ESC [ … m`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
