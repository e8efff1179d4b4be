//! kdr-core: Kubernetes control-plane disaster recovery for self-managed (kubeadm) clusters.
//!
//! kdr turns the shell procedures teams use today (an `etcdctl snapshot save` uploaded by hand, a
//! bash loop deciding the primary is dead, a restore script that resets every worker in turn)
//! into tested software: streaming, verified backups to object storage; restores that never
//! destroy what they replace; a failover decision that cannot split-brain or fire twice; and
//! worker recovery in parallel.
//!
//! # Layout
//! One module per trait; the trait and its value types in the module's `mod.rs`, each default
//! implementation in a sibling file named after the technology it uses (as `object_store` does).
//!
//! | module | trait | default implementations |
//! | --- | --- | --- |
//! | [`backup`] | (entry point [`backup::backup`]) | one-pass etcd snapshot + bundle + manifest pipeline |
//! | [`snapshot`] | [`snapshot::SnapshotStore`] | `ObjectStoreSnapshotStore` (S3, GCS, Azure, local files, memory) |
//! | [`etcd`] | [`etcd::EtcdRestorer`] | [`etcd::EtcdutlRestorer`] (etcdutl, or etcdctl for 3.4); [`etcd::local::LocalEtcd`], a throwaway etcd |
//! | [`control_plane`] | [`control_plane::ControlPlaneInit`] | [`control_plane::KubeadmInit`] (kubeadm init with a configuration derived from the backed-up ClusterConfiguration) |
//! | [`fence`] | [`fence::Fencer`] | [`fence::ExecFencer`] (IPMI/cloud hook), [`fence::SshFencer`]; [`fence::NoFence`] only by a loud opt-in |
//! | [`remote`] | [`remote::NodeRemote`] | [`remote::SshNodeRemote`] (russh), [`remote::LocalNodeRemote`] |
//! | [`workers`] | [`workers::NodeReadiness`] | [`workers::recover_workers`] (rewire or rejoin, in parallel), [`workers::KubectlReadiness`] |
//! | [`health`] | [`health::HealthProbe`] | `ApiServerProbe` (HTTPS, reqwest+rustls), `TcpProbe`, `IcmpProbe` (surge-ping), `WitnessProbe` (via `NodeRemote`), `SelfProbe`; `ProbeSet` runs bounded rounds |
//! | [`failover`] | [`failover::DetectorPolicy`], [`failover::StateStore`] | `FailoverDetector` (a pure state machine), `SeedRulePolicy`; `FileStateStore`, `InMemoryStateStore`; `trace` (JSONL recording and replay) |
//!
//! [`restore`] is the verified restore flow (download, verify, restore beside the target, swap, bundle)
//! and restore drills; it composes the traits above. [`runbook`] is the promotion runbook
//! (`kdr failover`): claim the epoch in the store, hooks, fence, restore, control-plane init,
//! workers, post-checks, as journaled steps that resume after a crash. [`monitor`] is
//! `kdr-monitor`'s service (scheduled backups and drills, self-fence guard, detector loop and
//! promotion, metrics).
//!
//! [`error`] holds the one public [`Error`]; [`clock`] the injected time that logic uses instead
//! of reading the system clock. Every local child process is started through a crate-private
//! `process` module: in its own process group, which a timeout or cancellation kills whole.
//! [`shutdown`] is the signal both binaries stop on.
//!
//! # Features
//! | feature | what it adds |
//! | --- | --- |
//! | `s3` (default) | `s3://` stores (AWS S3, MinIO, Garage, any S3 API) |
//! | `gcs` (default) | `gs://` stores (Google Cloud Storage) |
//! | `azure` (default) | `az://` stores (Azure Blob Storage) |
//! | `test-util` | `testing`: real etcd, S3 and sshd containers (testcontainers), in-memory fakes, mockall mocks and the conformance suites every implementation runs |
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backup;
pub mod clock;
pub mod config;
pub mod control_plane;
pub mod error;
pub mod etcd;
pub mod failover;
pub mod fence;
pub mod health;
pub mod monitor;
mod process;
pub mod remote;
pub mod restore;
pub mod runbook;
pub mod shutdown;
pub mod snapshot;
pub mod workers;

#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use error::{Error, Result};
