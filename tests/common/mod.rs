//! Helpers shared by the integration tests (each test binary uses a subset).
#![allow(dead_code)]

pub mod backup;
pub mod bins;
pub mod data;
pub mod kubeadm;
pub mod wait;
