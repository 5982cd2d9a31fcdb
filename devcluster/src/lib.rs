//! jetflow's local control plane: a test and demo environment, not a Kubernetes distribution.
//!
//! ```text
//!   kubectl ─┐                       ┌── admission: CRD schema, defaults, CEL rules
//!   operator ├─ HTTP ─▶ apiserver ───┼── rbac: Roles, ClusterRoles and bindings
//!   workers ─┘     (watch, tokens)   └── in-memory store with a watch log, garbage collector
//!                        ▲
//!                        └── kubelet: runs the pods of Deployments as local processes
//! ```
//!
//! The API server keeps every object in memory and serves the subset of the Kubernetes API that
//! jetflow, kube-rs and kubectl use. The kubelet is an ordinary client of that API.
//!
//! The store is its own (`apiserver::store`), not the `kube-fake-client` double the operator's
//! unit tests use: that double answers every list with resourceVersion "1" (so a watch cannot
//! resume from a list), registers only compiled Rust types as namespaced (a CRD from YAML, or
//! a cluster-scoped one, does not fit), reports a server-side apply conflict on a shared field
//! even when both managers set the same value, and never removes a field a manager stops
//! applying. Its label-selector parser is used.

pub mod admission;
pub mod apiserver;
pub mod kubelet;
pub mod rbac;
