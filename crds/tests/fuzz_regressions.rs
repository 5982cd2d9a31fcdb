//! The fuzz targets' committed inputs as regression tests: every file under
//! `fuzz/regressions/<target>/` and `fuzz/corpus/<target>/` goes through the very check its
//! fuzz target runs, so a plain `cargo test` catches a regression without the fuzzer.

#[path = "../../fuzz/checks/crds.rs"]
mod checks;

#[path = "../../fuzz/checks/inputs.rs"]
mod inputs;

#[test]
fn checkpoint_inputs() {
    inputs::check_all("checkpoint", checks::checkpoint);
}

#[test]
fn assignment_inputs() {
    inputs::check_all("assignment", checks::assignment);
}
