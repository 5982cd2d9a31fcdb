//! Reading the committed fuzz inputs of a target, for the regression tests.

use std::path::{Path, PathBuf};

/// Every file under `fuzz/regressions/<target>/` and `fuzz/corpus/<target>/`.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files = Vec::new();
    for dir in ["regressions", "corpus"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_file() {
                let data = std::fs::read(&path).expect("readable");
                files.push((path, data));
            }
        }
    }
    files.sort();
    files
}

/// Runs `check` on every committed input of `target`, naming the file of a failure.
pub fn check_all(target: &str, check: fn(&[u8])) {
    let inputs = inputs(target);
    assert!(
        !inputs.is_empty(),
        "no committed inputs for fuzz target {target}"
    );
    for (path, data) in &inputs {
        if std::panic::catch_unwind(|| check(data)).is_err() {
            panic!("fuzz input {} fails its check (see above)", path.display());
        }
    }
}
