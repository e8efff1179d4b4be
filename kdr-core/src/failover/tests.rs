//! Synchronous tables of (time, input) -> actions.
