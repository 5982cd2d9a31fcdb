//! `jetflow-devcluster up`: serves, writes the kubeconfig and the URL, prints its line, and
//! exits 0 on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn up_serves_writes_its_files_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster_dir = dir.path().join("cluster");
    let crds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/generated");
    let mut child = Command::new(env!("CARGO_BIN_EXE_jetflow-devcluster"))
        .args(["up", "--dir"])
        .arg(&cluster_dir)
        .arg("--crds")
        .arg(&crds)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("line");
    let url = std::fs::read_to_string(cluster_dir.join("url")).expect("url file");
    let kubeconfig = cluster_dir.canonicalize().expect("dir").join("kubeconfig");
    assert_eq!(
        line.trim(),
        format!(
            "jetflow-devcluster: API at {}, kubeconfig {}",
            url.trim(),
            kubeconfig.display()
        )
    );

    let out = Command::new("kubectl")
        .args(["get", "crd", "-o", "name"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crds = String::from_utf8_lossy(&out.stdout);
    assert!(
        crds.contains("pipelines.jetflow.io") && crds.contains("streams.jetflow.io"),
        "{crds}"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = child.wait().expect("exits");
    assert!(status.success(), "{status:?}");
}
