//! Names of the objects that belong to a pipeline, shared by the operator (which creates them)
//! and the worker (which reads and writes some of them).

/// The ConfigMap holding the worker configuration (`pipeline.yaml`).
pub fn config_map(pipeline: &str) -> String {
    format!("{pipeline}-config")
}

/// The ConfigMap holding the checkpoint (`checkpoint.json`). It outlives the Pipeline.
pub fn checkpoint_config_map(pipeline: &str) -> String {
    format!("{pipeline}-checkpoint")
}

/// The ConfigMap holding the split assignment (`assignment.json`).
pub fn assignment_config_map(pipeline: &str) -> String {
    format!("{pipeline}-assignment")
}

/// The worker Deployment and its ServiceAccount, Role and RoleBinding.
pub fn workers(pipeline: &str) -> String {
    format!("{pipeline}-worker")
}

/// Key of the worker configuration in its ConfigMap.
pub const CONFIG_KEY: &str = "pipeline.yaml";
/// Key of the checkpoint in its ConfigMap.
pub const CHECKPOINT_KEY: &str = "checkpoint.json";
/// Key of the assignment in its ConfigMap.
pub const ASSIGNMENT_KEY: &str = "assignment.json";

/// Label naming the pipeline on every object created for it.
pub const PIPELINE_LABEL: &str = "jetflow.io/pipeline";
/// Annotation on a Pipeline that, when its value changes, discards the checkpoint and starts
/// the pipeline afresh from `source.jetstream.start`.
pub const RESET_ANNOTATION: &str = "jetflow.io/reset";
/// Annotation on the checkpoint ConfigMap recording the last reset value applied to it (the
/// checkpoint's epoch). The operator also writes it into the worker configuration's metadata,
/// and a worker's checkpoint store refuses to write into a checkpoint of another epoch: a worker
/// that started before a reset can never write its old positions into the fresh checkpoint.
pub const RESET_APPLIED_ANNOTATION: &str = "jetflow.io/reset-applied";
/// Annotation on a Pipeline that, when its value changes, moves every split of a running
/// pipeline to a new position: `sequence=N`, `time=<RFC 3339>` or `start`, optionally followed by
/// `;` and anything else (a nonce, so that the same rewind can be asked for again). See
/// [`crate::rewind`].
pub const REWIND_ANNOTATION: &str = "jetflow.io/rewind";
