//! `jetflow-worker` as a real process: started with `run -f <manifest> --nats <url>`, its
//! output kept in a log file, stopped with SIGTERM (graceful: a final checkpoint) or SIGKILL
//! (a crash). Dropping a [`WorkerProcess`] kills it, so a failing test leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// The `jetflow-worker` binary: `$JETFLOW_WORKER_BIN`, else the one cargo built beside the
/// running test or tool (`cargo build -p jetflow-worker`, which `scripts/test.sh` and
/// `scripts/demo.sh` run first).
pub use jetflow_testsupport::worker::worker_bin as worker_binary;

/// How to start a worker.
#[derive(Clone, Debug)]
pub struct WorkerCommand {
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl WorkerCommand {
    /// `jetflow-worker run -f <manifest> --nats <url> --checkpoint-dir <dir>`.
    pub fn run(manifest: &Path, nats: &str, checkpoint_dir: &Path) -> Self {
        Self {
            binary: worker_binary(),
            args: vec![
                "run".into(),
                "-f".into(),
                manifest.display().to_string(),
                "--nats".into(),
                nats.into(),
                "--checkpoint-dir".into(),
                checkpoint_dir.display().to_string(),
            ],
            env: vec![("RUST_LOG".into(), "info".into())],
        }
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts the worker; its stdout and stderr go to `log`.
    pub fn spawn(&self, log: &Path) -> Result<WorkerProcess> {
        let spawn_error = |source| Error::SpawnWorker {
            binary: self.binary.display().to_string(),
            source,
        };
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(spawn_error)?;
        let err = out.try_clone().map_err(spawn_error)?;
        let child = Command::new(&self.binary)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(spawn_error)?;
        Ok(WorkerProcess {
            child,
            log: log.to_owned(),
        })
    }
}

/// A running worker process.
pub struct WorkerProcess {
    child: Child,
    log: PathBuf,
}

impl WorkerProcess {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the worker printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Asks it to stop (SIGTERM): it stops reading, finishes what is in flight and takes a
    /// final checkpoint.
    pub fn terminate(&mut self) -> Result<()> {
        let pid = self.pid();
        // std has no portable signal API and the workspace forbids unsafe code: use kill(1).
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .map_err(|source| Error::WorkerProcess { pid, source })?;
        if !status.success() && self.running() {
            return Err(Error::WorkerProcess {
                pid,
                source: std::io::Error::other(format!("kill -TERM {pid} failed: {status}")),
            });
        }
        Ok(())
    }

    /// Kills it (SIGKILL), as a crash would.
    pub fn kill(&mut self) -> Result<()> {
        let pid = self.pid();
        match self.child.kill() {
            Ok(()) => {}
            // Already exited.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {}
            Err(source) => return Err(Error::WorkerProcess { pid, source }),
        }
        self.child
            .wait()
            .map(|_| ())
            .map_err(|source| Error::WorkerProcess { pid, source })
    }

    /// Waits for it to exit by itself, up to `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let pid = self.pid();
        let started = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) => {}
                Err(source) => return Err(Error::WorkerProcess { pid, source }),
            }
            if started.elapsed() > timeout {
                return Err(Error::Timeout {
                    what: format!("worker {pid} to exit"),
                    seconds: timeout.as_secs_f64(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits up to `timeout` until the worker has logged its start line (from then on a
    /// SIGTERM is a clean shutdown, not the signal's default action), or has exited.
    pub async fn started(&mut self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        while !self.log().contains("jetflow-worker starting") && self.running() {
            if started.elapsed() > timeout {
                return Err(Error::Timeout {
                    what: format!("worker {} to start", self.pid()),
                    seconds: timeout.as_secs_f64(),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// SIGTERM once the worker has started, then waits up to `timeout` for the exit.
    pub async fn stop(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.started(timeout).await?;
        self.terminate()?;
        self.wait(timeout).await
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
