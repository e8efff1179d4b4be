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

// ---------------------------------------------------------------------------------------------
// HealthProbe: each default probe against real endpoints.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Behaviour, HEALTHY, LOOPBACK, https_server, new_pki};
use kdr_core::health::{
    ApiServerProbe, IcmpProbe, ProbeRole, ProbeStatus, SelfProbe, TcpProbe, WitnessProbe,
};
use kdr_core::remote::{LocalNodeRemote, NodeRemote, RemoteCommand};
use kdr_core::testing::conformance::health_probe;
use tokio::net::TcpListener;

const T: Duration = Duration::from_millis(800);

/// A port nothing listens on (bound, then released).
async fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn api_server_probe_conforms() {
    let pki = new_pki();
    let up = https_server(&pki, LOOPBACK, HEALTHY).await;
    let failing =
        https_server(&pki, LOOPBACK, Behaviour { status: 500, body: "etcd failed", ..HEALTHY }).await;
    let slow = https_server(&pki, LOOPBACK, Behaviour { delay: Duration::from_secs(30), ..HEALTHY }).await;
    let closed = closed_port().await;
    let probe = |port: u16| {
        ApiServerProbe::builder(format!("https://127.0.0.1:{port}/healthz"))
            .ca_pem(pki.ca_pem.clone())
            .timeout(T)
            .build()
            .unwrap()
    };
    health_probe::check(&ProbeRole::Api, &probe(up.port()), ProbeStatus::Up).await;
    health_probe::check(&ProbeRole::Api, &probe(failing.port()), ProbeStatus::Down).await;
    health_probe::check(&ProbeRole::Api, &probe(closed), ProbeStatus::Down).await;
    health_probe::check(&ProbeRole::Api, &probe(slow.port()), ProbeRole::Api.overrun_status()).await;
}

#[tokio::test]
async fn tcp_icmp_and_self_probes_conform() {
    let open = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open = open.local_addr().unwrap().to_string();
    let closed = format!("127.0.0.1:{}", closed_port().await);
    health_probe::check(&ProbeRole::Host, &TcpProbe::new(open.clone(), T), ProbeStatus::Up).await;
    health_probe::check(&ProbeRole::Host, &TcpProbe::new(closed.clone(), T), ProbeStatus::Down).await;
    health_probe::check(&ProbeRole::Host, &IcmpProbe::new("127.0.0.1".parse().unwrap(), T), ProbeStatus::Up)
        .await;
    let gateway = SelfProbe::gateway("127.0.0.1".parse().unwrap(), T);
    health_probe::check(&ProbeRole::SelfCheck, &gateway, ProbeStatus::Up).await;
    health_probe::check(&ProbeRole::SelfCheck, &SelfProbe::dns("localhost", T), ProbeStatus::Up).await;
    health_probe::check(&ProbeRole::SelfCheck, &SelfProbe::tcp(open, T), ProbeStatus::Up).await;
    health_probe::check(&ProbeRole::SelfCheck, &SelfProbe::tcp(closed, T), ProbeStatus::Down).await;
}

/// A witness asked through a real process boundary (the local host's own curl, as a worker's
/// sshd would run it): up, down, a probe that cannot tell (unknown), and one that hangs past its
/// timeout (unknown, never down).
#[tokio::test]
async fn witness_probe_conforms() {
    let pki = new_pki();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let up = https_server(&pki, LOOPBACK, HEALTHY).await;
    let closed = closed_port().await;
    let local: Arc<dyn NodeRemote> = Arc::new(LocalNodeRemote::new("worker-1"));
    let role = ProbeRole::Witness("w1".into());
    let healthz = |port: u16, ca: &std::path::Path| {
        WitnessProbe::api_healthz(
            "w1",
            local.clone(),
            &format!("https://127.0.0.1:{port}/healthz"),
            &ca.display().to_string(),
            T,
        )
    };
    health_probe::check(&role, &healthz(up.port(), &ca), ProbeStatus::Up).await;
    health_probe::check(&role, &healthz(closed, &ca), ProbeStatus::Down).await;
    // curl cannot read the CA file (exit 77): the witness cannot tell.
    health_probe::check(&role, &healthz(up.port(), &dir.path().join("missing.crt")), ProbeStatus::Unknown)
        .await;
    let hangs = WitnessProbe::new("w1", local.clone(), RemoteCommand::new("sleep 30", T));
    health_probe::check(&role, &hangs, ProbeStatus::Unknown).await;
    assert_eq!(role.overrun_status(), ProbeStatus::Unknown);
}
