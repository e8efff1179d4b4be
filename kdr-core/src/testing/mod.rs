//! Test support (feature `test-util`): real etcd, S3 and sshd containers, fakes, mocks and the
//! conformance suites that every implementation of a trait runs.
//!
//! The containers use local images built by `scripts/setup-test-env.sh` (no registry is needed):
//! `kdr-test/etcd:3.5.16`, `kdr-test/etcd:3.4.23`, `kdr-test/s3s-fs:0.14.1` and
//! `kdr-test/node:bookworm`. `KDR_TEST_ETCD_IMAGE` and `KDR_TEST_S3_IMAGE` point the suite at
//! other images (upstream etcd, MinIO) for users with a registry.
pub mod conformance;
pub mod containers;
pub mod net;
pub mod remote;
