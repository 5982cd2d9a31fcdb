//! The local Kubernetes API server.
