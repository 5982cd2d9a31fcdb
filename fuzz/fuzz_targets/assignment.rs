//! Fuzz target: see `checks::assignment` (fuzz/checks/crds.rs) for the property checked.
#![no_main]

#[path = "../checks/crds.rs"]
#[allow(dead_code)]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::assignment(data));
