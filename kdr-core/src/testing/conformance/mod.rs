//! Conformance suites: the behaviour every implementation of a trait must show. Each real
//! implementation runs its suite against a real server; each fake runs it too.
pub mod etcd_restorer;
pub mod health_probe;
pub mod node_remote;
pub mod snapshot_store;
pub mod state_store;
