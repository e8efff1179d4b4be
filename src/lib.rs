//! `kdr`: Kubernetes control-plane disaster recovery.
//!
//! This crate is a facade: it re-exports [`kdr_core`], the library, so that embedders depend on
//! one name (as kube-rs's `kube` does for `kube-client`/`kube-runtime`). It also owns the
//! workspace's top-level `examples/`, `benches/` and `tests/`.
pub use kdr_core::*;
