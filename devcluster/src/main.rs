//! `jetflow-devcluster`: starts the local API server and the local kubelet.

fn main() {}
