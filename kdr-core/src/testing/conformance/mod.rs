//! Conformance suites: every implementation of a trait (fakes included) runs the same checks of
//! the guarantees documented on the trait.
pub mod snapshot_store;
