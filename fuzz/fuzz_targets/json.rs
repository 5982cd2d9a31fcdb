//! Fuzz target: see `checks::json` (fuzz/checks/steps.rs) for the property checked.
#![no_main]

#[path = "../checks/steps.rs"]
#[allow(dead_code)]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::json(data));
