//! The Helm chart `charts/jetflow` as Helm renders it: `scripts/render-chart.py` with the real
//! Helm SDK (the Python of `.tools/venv`, installed by `scripts/install-chart-tools.sh`, which
//! `scripts/test.sh` and so CI run before the tests).

use std::path::PathBuf;
use std::process::Command;

use crate::workspace_root;

/// The Python of the chart tools, if `scripts/install-chart-tools.sh` installed them.
pub fn python() -> Option<PathBuf> {
    let python = workspace_root().join(".tools/venv/bin/python");
    python.exists().then_some(python)
}

/// Why the chart tools are needed and how to get them, for a test that cannot run without.
pub const MISSING: &str = "the chart tools are not installed: run `bash scripts/install-chart-tools.sh` (scripts/test.sh does)";

/// The manifests of the chart installed as release `jetflow` in `namespace`, with `values`
/// (Helm's `--set` syntax), as one multi-document YAML. Panics when the chart tools are
/// missing or the chart does not render.
pub fn render(namespace: &str, values: &[String]) -> String {
    let python = python().unwrap_or_else(|| panic!("{MISSING}"));
    let mut command = Command::new(python);
    command
        .arg(workspace_root().join("scripts/render-chart.py"))
        .args(["--namespace", namespace, "--release", "jetflow"]);
    for value in values {
        command.args(["--set", value]);
    }
    let output = command.output().expect("running scripts/render-chart.py");
    assert!(
        output.status.success(),
        "render-chart.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 manifests")
}
