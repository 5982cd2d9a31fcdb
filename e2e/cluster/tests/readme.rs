//! The README's "Start it by hand" for the local control plane, run as written: the commands
//! are read from README.md itself (so the test follows every edit of them), with only the
//! folder (`/tmp/jf`), the NATS URL and the build folder swapped for the test's own; the
//! example pipeline they apply must become Ready, which needs the operator pod that
//! `--bin-dir target/debug` (relative) points the kubelet at.

use std::process::Command;

use jetflow_testsupport::NatsServer;

/// The `sh` block that follows "Start it by hand" in README.md.
fn by_hand_commands() -> String {
    let readme =
        std::fs::read_to_string(jetflow_e2e_cluster::root().join("README.md")).expect("README.md");
    let after = readme
        .split_once("Start it by hand")
        .expect("README.md has \"Start it by hand\"")
        .1;
    let block = after
        .split_once("```sh\n")
        .expect("a sh block after \"Start it by hand\"")
        .1;
    block
        .split_once("```")
        .expect("the block ends")
        .0
        .to_owned()
}

#[test]
fn the_readme_by_hand_commands_start_a_control_plane_that_runs_the_example() {
    let commands = by_hand_commands();
    for expected in [
        "--bin-dir target/debug",
        "examples/passthrough.yaml",
        "kill %1",
    ] {
        assert!(
            commands.contains(expected),
            "the README's commands changed; update this test: {commands}"
        );
    }
    let root = jetflow_e2e_cluster::root();
    let bin = jetflow_e2e_cluster::bin_dir();
    let bin = bin
        .strip_prefix(&root)
        .expect("the binaries are built under the workspace")
        .to_string_lossy()
        .into_owned();
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = dir.path().join("jf");
    let script = commands
        .replace("/tmp/jf", &folder.to_string_lossy())
        .replace("nats://127.0.0.1:4222", &nats.url())
        .replace("target/debug", &bin)
        // Before the README's own `kill %1`: the example's Pipeline runs.
        .replace(
            "kill %1",
            "kubectl wait --for=condition=Ready pipeline/orders-copy --timeout=180s\nkill %1",
        );
    let script = format!(
        "set -euo pipefail\ntrap 'kill %1 2>/dev/null || true; wait' EXIT\n{script}\nwait\n"
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .current_dir(&root)
        .env_remove("KUBECONFIG")
        .output()
        .expect("bash");
    let pods = std::fs::read_dir(folder.join("kubelet"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path().display().to_string())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    assert!(
        out.status.success(),
        "the README's commands failed ({}):\n{script}\nstdout:\n{}\nstderr:\n{}\npod folders: {pods:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
