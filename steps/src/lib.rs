//! jetflow's pipeline steps.
