//! The conformance suites (`kdr_core::testing::conformance`) run by each implementation of a
//! trait: the fakes, and the real implementations against real services (etcd 3.5.16 and 3.4.23
//! in containers with their own restore tools, the local filesystem).
//!
//! `SnapshotStore` and `NodeRemote` run theirs in `tests/backup.rs` and `tests/promotion/`.
use std::io::Write;
use std::path::{Path, PathBuf};

use kdr_core::etcd::EtcdutlRestorer;
use kdr_core::failover::{FileStateStore, InMemoryStateStore, StateStore};
use kdr_core::testing::conformance::{etcd_restorer, state_store};
use kdr_core::testing::containers::{EtcdContainer, EtcdVersion};

#[test]
fn in_memory_state_store_conforms() {
    state_store::run_all(&mut InMemoryStateStore::default());
}

#[test]
fn file_state_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    state_store::run_all(&mut FileStateStore::new(dir.path().join("state.json")));
    let dir = tempfile::tempdir().unwrap();
    let open = |p: &Path| -> Box<dyn StateStore> { Box::new(FileStateStore::new(p)) };
    state_store::file_crash_safety(&dir.path().join("detector-state.json"), &open);
}

fn bin_dir(var: &str) -> PathBuf {
    PathBuf::from(std::env::var_os(var).unwrap_or_else(|| {
        panic!("{var} is not set: run `make test`, or `. .tools/env` after scripts/setup-test-env.sh")
    }))
}

/// A snapshot taken over the Snapshot RPC (what `etcdctl snapshot save` writes) from a real etcd
/// of `version` holding a few hundred keys.
async fn snapshot_of(version: EtcdVersion, path: &Path) {
    let etcd = EtcdContainer::start(version).await.unwrap();
    let mut client = etcd.client().await.unwrap();
    for i in 0..300 {
        client
            .put(format!("/registry/configmaps/conformance/cm-{i:03}"), vec![b'x'; 512], None)
            .await
            .unwrap();
    }
    let mut stream = client.snapshot().await.unwrap();
    let mut file = std::fs::File::create(path).unwrap();
    while let Some(part) = stream.message().await.unwrap() {
        file.write_all(part.blob()).unwrap();
    }
    file.sync_all().unwrap();
}

#[tokio::test]
async fn etcdutl_3_5_16_restorer_conforms() {
    let work = tempfile::tempdir().unwrap();
    let snapshot = work.path().join("snapshot.db");
    snapshot_of(EtcdVersion::V3_5_16, &snapshot).await;
    let restorer = EtcdutlRestorer::new().with_bin_dir(bin_dir("KDR_ETCD_3_5_DIR"));
    etcd_restorer::run_all(&restorer, &snapshot, work.path()).await;
}

#[tokio::test]
async fn etcdctl_3_4_23_restorer_conforms() {
    let work = tempfile::tempdir().unwrap();
    let snapshot = work.path().join("snapshot.db");
    snapshot_of(EtcdVersion::V3_4_23, &snapshot).await;
    // etcd 3.4 has no etcdutl: the restorer falls back to its etcdctl.
    let restorer = EtcdutlRestorer::new().with_bin_dir(bin_dir("KDR_ETCD_3_4_DIR"));
    etcd_restorer::run_all(&restorer, &snapshot, work.path()).await;
}

#[tokio::test]
async fn a_restorer_without_tools_is_not_found() {
    let work = tempfile::tempdir().unwrap();
    let snapshot = work.path().join("snapshot.db");
    std::fs::write(&snapshot, vec![0u8; 8192]).unwrap();
    let restorer = EtcdutlRestorer::new().with_bin_dir(work.path().join("no-bin"));
    etcd_restorer::missing_tool_is_not_found(&restorer, &snapshot, work.path()).await;
}
