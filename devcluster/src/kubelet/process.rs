//! Container processes: finding the program, starting it in a process group of its own with
//! its output appended to the container's log, and stopping it.
//!
//! The program is `command[0]`'s file name looked up in the kubelet's bin folders (first that
//! has it), else the path as written if it exists on this machine, else the file name in
//! `PATH`. The image is otherwise ignored. The process inherits only `PATH`, `HOME`, `USER`,
//! `LOGNAME`, `LANG`, `LC_ALL` and `TZ` from the kubelet, never its `KUBECONFIG` or other
//! settings: the rest comes from the pod.
//!
//! Signals go to the process group whose id is the pid of a process this kubelet started, and
//! only while that process has not been reaped, or right after reaping it to kill what it left
//! behind (a Linux pid cannot be reused while a member of its group lives).

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// Why a container's process could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProcessError {
    /// The container names no command (an image's entrypoint cannot be read here).
    #[error("container has no command: the local kubelet cannot read an image's entrypoint")]
    NoCommand,
    /// The program is in no bin folder, not on this machine and not in PATH.
    #[error("executable file {0:?} not found in the bin folders or $PATH")]
    NotFound(String),
    /// The log file could not be opened.
    #[error("opening log {path}: {source}")]
    Log { path: PathBuf, source: io::Error },
    /// The process could not be started.
    #[error("starting {program}: {source}")]
    Spawn { program: PathBuf, source: io::Error },
}

/// The variables a process inherits from the kubelet.
const INHERITED: &[&str] = &["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ"];

fn executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The program that runs `command` (see the module doc).
pub(crate) fn resolve_program(
    command: &str,
    bin_dirs: &[PathBuf],
) -> Result<PathBuf, ProcessError> {
    let path = Path::new(command);
    let name = path
        .file_name()
        .ok_or_else(|| ProcessError::NotFound(command.to_owned()))?;
    if let Some(found) = bin_dirs
        .iter()
        .map(|d| d.join(name))
        .find(|p| executable(p))
    {
        return Ok(found);
    }
    if command.contains('/') && executable(path) {
        return Ok(path.to_owned());
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| executable(p))
        .ok_or_else(|| ProcessError::NotFound(command.to_owned()))
}

/// What to start.
#[derive(Clone, Debug)]
pub(crate) struct Launch {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) cwd: PathBuf,
    pub(crate) log: PathBuf,
}

/// Starts `launch` in a new process group, stdout and stderr appended to its log.
pub(crate) fn spawn(launch: &Launch) -> Result<Child, ProcessError> {
    let log_err = |source| ProcessError::Log {
        path: launch.log.clone(),
        source,
    };
    if let Some(dir) = launch.log.parent() {
        std::fs::create_dir_all(dir).map_err(log_err)?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&launch.log)
        .map_err(log_err)?;
    let err = out.try_clone().map_err(log_err)?;
    let mut command = Command::new(&launch.program);
    command
        .args(&launch.args)
        .env_clear()
        .current_dir(&launch.cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(true);
    for name in INHERITED {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command.envs(launch.env.iter().map(|(k, v)| (OsString::from(k), v)));
    command.spawn().map_err(|source| ProcessError::Spawn {
        program: launch.program.clone(),
        source,
    })
}

fn signal_group(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid)
        && pid > 1
    {
        // ESRCH: the group is gone already.
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

/// Kills what the group of a reaped process left behind.
pub(crate) fn kill_leftovers(pid: u32) {
    signal_group(pid, Signal::SIGKILL);
}

/// Stops `child` (pid `pid`): SIGTERM to its group, SIGKILL at `deadline`, then its exit status.
pub(crate) async fn terminate(child: &mut Child, pid: u32, deadline: Instant) -> ExitStatus {
    if let Ok(Some(status)) = child.try_wait() {
        kill_leftovers(pid);
        return status;
    }
    signal_group(pid, Signal::SIGTERM);
    let status = match tokio::time::timeout_at(deadline, child.wait()).await {
        Ok(Ok(status)) => status,
        _ => {
            // Not reaped yet (timeout) or wait failed: the group is still ours.
            signal_group(pid, Signal::SIGKILL);
            match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
                Ok(Ok(status)) => status,
                _ => ExitStatus::from_raw(libc_sigkill_status()),
            }
        }
    };
    kill_leftovers(pid);
    status
}

/// The wait status of a process killed by SIGKILL.
fn libc_sigkill_status() -> i32 {
    Signal::SIGKILL as i32
}

/// The container exit code of `status`: the code, or 128 + the signal.
pub(crate) fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_is_found_in_the_bin_folders_first_then_path() {
        let dir = tempfile::tempdir().unwrap();
        let worker = dir.path().join("jetflow-worker");
        std::fs::write(&worker, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&worker, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bins = vec![PathBuf::from("/nonexistent"), dir.path().to_owned()];
        assert_eq!(
            resolve_program("/usr/local/bin/jetflow-worker", &bins).unwrap(),
            worker
        );
        let sh = resolve_program("sh", &bins).unwrap();
        assert!(sh.ends_with("sh") && sh.is_absolute());
        assert!(matches!(
            resolve_program("/opt/none/not-a-program-xyz", &bins),
            Err(ProcessError::NotFound(_))
        ));
    }

    #[test]
    fn exit_codes_follow_the_container_convention() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
    }
}
