//! jetflow's local control plane: a test and demo environment, not a Kubernetes distribution.
//!
//! ```text
//!   kubectl ─┐                       ┌── admission: CRD schema, defaults, CEL rules
//!   operator ├─ HTTP ─▶ apiserver ───┼── rbac: Roles, ClusterRoles and bindings
//!   workers ─┘     (watch, tokens)   └── in-memory store (kube-fake-client), garbage collector
//!                        ▲
//!                        └── kubelet: runs the pods of Deployments as local processes
//! ```
//!
//! The API server keeps every object in memory and serves the subset of the Kubernetes API that
//! jetflow, kube-rs and kubectl use. The kubelet is an ordinary client of that API.

pub mod admission;
pub mod apiserver;
pub mod kubelet;
pub mod rbac;
