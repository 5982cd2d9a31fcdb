//! Writes jetflow's CRD YAML into the repository (`crds/generated/` and the chart's `crds/`),
//! or with `--check` fails when the committed files differ from what the types generate.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut stale = Vec::new();
    for folder in jetflow_crds::crdgen::FOLDERS {
        let dir = root.join(folder);
        for (name, yaml) in jetflow_crds::crdgen::files() {
            let path = dir.join(name);
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current == yaml {
                continue;
            }
            if check {
                stale.push(format!("{folder}/{name}"));
                continue;
            }
            if let Err(e) =
                std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, &yaml))
            {
                eprintln!("crdgen: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            println!("wrote {folder}/{name}");
        }
    }
    if !stale.is_empty() {
        eprintln!(
            "crdgen: out of date: {}; run `cargo run -p jetflow-crds --bin crdgen`",
            stale.join(", ")
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
