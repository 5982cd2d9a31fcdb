//! `jetflow-devcluster up` as a user starts it by hand: from a folder of their own, with a
//! relative `--bin-dir`, its log redirected to a file.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Generous for a loaded machine; never slept whole.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A running `up`, stopped (SIGTERM) when dropped.
struct Up {
    child: Child,
    kubeconfig: PathBuf,
}

impl Up {
    /// Starts `up --dir cluster --crds ... ARGS` in `cwd`, its standard error into `log`.
    fn start(cwd: &Path, args: &[&str], log: &Path) -> Self {
        let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/generated");
        let child = Command::new(env!("CARGO_BIN_EXE_jetflow-devcluster"))
            .current_dir(cwd)
            .args(["up", "--dir", "cluster", "--crds"])
            .arg(&crds)
            .args(args)
            .env("RUST_LOG", "debug")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log file"))
            .spawn()
            .expect("starts");
        let kubeconfig = cwd.join("cluster/kubeconfig");
        let started = Instant::now();
        while !cwd.join("cluster/url").exists() {
            assert!(
                started.elapsed() < TIMEOUT,
                "up did not start: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, kubeconfig }
    }

    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        if let Some(text) = stdin {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write");
        }
        drop(child.stdin.take());
        child.wait_with_output().expect("kubectl output")
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) && started.elapsed() < TIMEOUT {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: sleeper, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: sleeper}}
  template:
    metadata: {labels: {app: sleeper}}
    spec:
      containers:
        - name: sleeper
          image: sleeper
          command: ["sleeper"]
"#;

#[test]
fn a_relative_bin_dir_runs_pods_from_their_own_folders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let script = bin.join("sleeper");
    std::fs::write(&script, "#!/bin/sh\nexec sleep 600\n").expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let log = dir.path().join("up.log");
    let up = Up::start(dir.path(), &["--bin-dir", "bin"], &log);
    let applied = up.kubectl(&["apply", "--server-side", "-f", "-"], Some(DEPLOYMENT));
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let started = Instant::now();
    loop {
        let out = up.kubectl(
            &[
                "get",
                "pods",
                "-l",
                "app=sleeper",
                "-o",
                "jsonpath={.items[*].status.phase}",
            ],
            None,
        );
        if String::from_utf8_lossy(&out.stdout).trim() == "Running" {
            break;
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "the pod did not run: phase {:?}; log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_missing_bin_dir_is_refused_with_its_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/generated");
    let log = dir.path().join("up.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_jetflow-devcluster"))
        .current_dir(dir.path())
        .args(["up", "--dir", "cluster", "--crds"])
        .arg(&crds)
        .args(["--bin-dir", "target/debug"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("runs");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "up serves with a missing --bin-dir; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = Output {
        status,
        stdout: Vec::new(),
        stderr: std::fs::read(&log).unwrap_or_default(),
    };
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--bin-dir target/debug") && stderr.contains("No such file"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("cluster/url").exists(),
        "nothing is served with a missing --bin-dir"
    );
}

#[test]
fn a_log_redirected_to_a_file_holds_no_colour_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("up.log");
    let up = Up::start(dir.path(), &[], &log);
    // Something to log about: the API at work.
    let out = up.kubectl(&["get", "namespaces"], None);
    assert!(out.status.success(), "{out:?}");
    drop(up);
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("DEBUG") || text.contains("INFO"),
        "the log holds lines: {text}"
    );
    assert!(!text.contains('\u{1b}'), "colour codes in the log:\n{text}");
}
