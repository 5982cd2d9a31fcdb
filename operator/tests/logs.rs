//! The operator's logs as a pod or a redirected file gets them: standard output is not a
//! terminal, so no colour codes.

use std::process::{Command, Stdio};

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    // No reachable API: the operator logs its start, then fails to reach Kubernetes and exits.
    let output = Command::new(env!("CARGO_BIN_EXE_jetflow-operator"))
        .env("KUBECONFIG", dir.path().join("missing-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("JETFLOW_LOG_FORMAT")
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .env("HOME", dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run jetflow-operator");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("jetflow-operator starting"),
        "no start line; stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !stdout.contains("\x1b["),
        "terminal colour codes in a log that is not a terminal:\n{stdout:?}"
    );
}
