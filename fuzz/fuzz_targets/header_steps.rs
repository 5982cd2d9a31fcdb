//! Fuzz target: see `checks::header_steps` (fuzz/checks/steps.rs) for the property checked.
#![no_main]

#[path = "../checks/steps.rs"]
#[allow(dead_code)]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::header_steps(data));
